//! Selectors compiled once into a small program the rewriters run per key.
//!
//! Two kinds of selector pick values out of a document:
//! - a *field name*, matched case- and separator-insensitively at any depth
//!   (`SSN`, `ssn`, `social_security_number`, `socialSecurityNumber` all
//!   normalize to the same name);
//! - a *path* such as `/accounts/*/ssn`: one step per nesting level, `*`
//!   matching any key or array index.
//!
//! Paths compile into a trie; the set of trie nodes reachable at a nesting
//! level is a bitset, so one key costs one hash lookup plus a few mask ops.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use std::sync::Arc;

use crate::class::words::Vocabulary;
use crate::class::FieldClass;
use crate::detect::DetectorSet;

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<rustc_hash::FxHasher>>;

/// Most trie nodes all path selectors of one role may use together.
pub const MAX_PATH_NODES: usize = 128;
/// Longest field name (after normalization) a selector may name.
pub const MAX_NAME_LEN: usize = 128;

/// Why a selector could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// A path selector must start with `/`.
    #[error("path selector must start with '/'")]
    PathNotAbsolute,
    /// `a//b`: a step with no name.
    #[error("path selector has an empty step")]
    EmptyStep,
    /// The name has no letter or digit, so it can match nothing.
    #[error("selector name has no letters or digits")]
    EmptyName,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("selector name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    /// The path selectors together need more than [`MAX_PATH_NODES`] nodes.
    #[error("path selectors need more than {MAX_PATH_NODES} steps in all")]
    TooManyPathSteps,
    /// Two selectors give the same name or path different classes.
    #[error("selector is given two different classes ({first} and {second})")]
    ConflictingClass {
        /// The class given first.
        first: FieldClass,
        /// The class given later.
        second: FieldClass,
    },
}

/// Normalizes a field name for matching: ASCII letters lower-cased, digits
/// kept, every other byte (separators, punctuation) dropped; non-ASCII bytes
/// kept as they are. Writes into `out` (cleared first). Returns false when the
/// name is longer than [`MAX_NAME_LEN`] after normalization.
pub fn normalize_name(name: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    for &b in name {
        if b.is_ascii_alphanumeric() {
            out.push(b.to_ascii_lowercase());
        } else if b >= 0x80 {
            out.push(b);
        }
        if out.len() > MAX_NAME_LEN {
            return false;
        }
    }
    true
}

/// A set of path-trie nodes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NodeSet(pub(crate) u128);

impl NodeSet {
    /// No node: no path selector can match below this point.
    pub const EMPTY: NodeSet = NodeSet(0);
    /// True when no path selector is active.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[derive(Clone, Debug, Default)]
struct PathNode {
    class: Option<FieldClass>,
    allow: bool,
    record: bool,
}

/// What the rules say about one member (a key and its value, or an array element).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MemberMatch {
    /// The class named by a selector for this member, if any.
    pub class: Option<FieldClass>,
    /// An allowlist path names this member: it and everything below it are kept.
    pub allowed_subtree: bool,
    /// An allowlist name or path names this member: a scalar value is kept
    /// (a container is always kept and its children filtered one by one).
    pub allowed_value: bool,
    /// A record selector names this member: it counts as one record.
    pub record: bool,
    /// The member is named like a record's id field.
    pub record_id: bool,
    /// Path-trie nodes active for this member's children.
    pub nodes: NodeSet,
    /// The class the member's name says by its words (no exact name or path
    /// named it; not one of the utility's own identifiers). Applies to a
    /// scalar value; a container takes it as what its members hold.
    pub word_class: Option<FieldClass>,
    /// The class the name's words give a container value (`bank`, `cards`).
    pub container_class: Option<FieldClass>,
    /// The name is a generic value holder (`value`, `number`).
    pub generic_value: bool,
    /// The name is a descriptor (`type`, `kind`, `label`).
    pub descriptor: bool,
}

/// Builds [`Rules`].
#[derive(Debug, Default)]
pub struct RulesBuilder {
    names: FastMap<Vec<u8>, FieldClass>,
    allowed_names: FastMap<Vec<u8>, ()>,
    id_names: FastMap<Vec<u8>, ()>,
    allowlist: bool,
    nodes: Vec<PathNode>,
    edges: Vec<(usize, Step, usize)>,
    detectors: DetectorSet,
    redact_token: Option<String>,
    root_record: bool,
    vocabulary: Option<Arc<Vocabulary>>,
    identifier_names: FastMap<Vec<u8>, ()>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Any,
    Name(Vec<u8>),
}

impl RulesBuilder {
    /// An empty rule set: no selectors, no detectors, no allowlist.
    pub fn new() -> RulesBuilder {
        RulesBuilder {
            nodes: vec![PathNode::default()],
            ..RulesBuilder::default()
        }
    }

    fn normalized(name: &str) -> Result<Vec<u8>, SelectorError> {
        let mut out = Vec::new();
        if !normalize_name(name.as_bytes(), &mut out) {
            return Err(SelectorError::NameTooLong);
        }
        if out.is_empty() {
            return Err(SelectorError::EmptyName);
        }
        Ok(out)
    }

    /// Values of fields named `name` (at any depth) are of `class`.
    pub fn class_name(&mut self, name: &str, class: FieldClass) -> Result<(), SelectorError> {
        let key = Self::normalized(name)?;
        match self.names.get(&key) {
            Some(&first) if first != class => Err(SelectorError::ConflictingClass {
                first,
                second: class,
            }),
            _ => {
                self.names.insert(key, class);
                Ok(())
            }
        }
    }

    /// Values at `path` (such as `/accounts/*/ssn`) are of `class`.
    pub fn class_path(&mut self, path: &str, class: FieldClass) -> Result<(), SelectorError> {
        let node = self.insert_path(path)?;
        match self.nodes[node].class {
            Some(first) if first != class => Err(SelectorError::ConflictingClass {
                first,
                second: class,
            }),
            _ => {
                self.nodes[node].class = Some(class);
                Ok(())
            }
        }
    }

    /// Turns on allowlist mode: scalar values whose field is not allowed are removed.
    pub fn allowlist(&mut self) {
        self.allowlist = true;
    }

    /// In allowlist mode, scalar values of fields named `name` are kept. A
    /// container is never kept wholesale by name: its children are filtered.
    pub fn allow_name(&mut self, name: &str) -> Result<(), SelectorError> {
        self.allowlist = true;
        let key = Self::normalized(name)?;
        self.allowed_names.insert(key, ());
        Ok(())
    }

    /// In allowlist mode, the value at `path` (with everything below it) is kept.
    pub fn allow_path(&mut self, path: &str) -> Result<(), SelectorError> {
        self.allowlist = true;
        let node = self.insert_path(path)?;
        self.nodes[node].allow = true;
        Ok(())
    }

    /// Values at `path` count as customer records (`/` is the whole document).
    pub fn record_path(&mut self, path: &str) -> Result<(), SelectorError> {
        if path == "/" {
            self.root_record = true;
            return Ok(());
        }
        let node = self.insert_path(path)?;
        self.nodes[node].record = true;
        Ok(())
    }

    /// A record's field named `name` holds its id (account ids touched are
    /// collected from it).
    pub fn record_id_name(&mut self, name: &str) -> Result<(), SelectorError> {
        let key = Self::normalized(name)?;
        self.id_names.insert(key, ());
        Ok(())
    }

    /// Field names are also classified by their words with `vocabulary`.
    pub fn vocabulary(&mut self, vocabulary: Arc<Vocabulary>) {
        self.vocabulary = Some(vocabulary);
    }

    /// Fields named `name` are the utility's own identifiers: never classed
    /// by their words (an exact name or path still applies).
    pub fn identifier_name(&mut self, name: &str) -> Result<(), SelectorError> {
        let key = Self::normalized(name)?;
        self.identifier_names.insert(key, ());
        Ok(())
    }

    /// Detectors to run on every string value no selector claimed.
    pub fn detectors(&mut self, set: DetectorSet) {
        self.detectors = set;
    }

    /// The token `redact` writes (default `[REDACTED]`).
    pub fn redact_token(&mut self, token: &str) {
        self.redact_token = Some(token.to_owned());
    }

    fn insert_path(&mut self, path: &str) -> Result<usize, SelectorError> {
        let rest = path
            .strip_prefix('/')
            .ok_or(SelectorError::PathNotAbsolute)?;
        let mut node = 0;
        for raw in rest.split('/') {
            if raw.is_empty() {
                return Err(SelectorError::EmptyStep);
            }
            let step = if raw == "*" {
                Step::Any
            } else {
                Step::Name(Self::normalized(raw)?)
            };
            let existing = self
                .edges
                .iter()
                .find(|(from, s, _)| *from == node && *s == step)
                .map(|&(_, _, to)| to);
            node = match existing {
                Some(to) => to,
                None => {
                    if self.nodes.len() >= MAX_PATH_NODES {
                        return Err(SelectorError::TooManyPathSteps);
                    }
                    self.nodes.push(PathNode::default());
                    let to = self.nodes.len() - 1;
                    self.edges.push((node, step, to));
                    to
                }
            };
        }
        Ok(node)
    }

    /// Compiles the rules.
    pub fn build(self) -> Rules {
        let mut any_children = vec![0u128; self.nodes.len()];
        let mut name_edges: FastMap<Vec<u8>, Vec<(u32, u32)>> = FastMap::default();
        for (from, step, to) in &self.edges {
            match step {
                Step::Any => any_children[*from] |= 1u128 << to,
                Step::Name(name) => name_edges
                    .entry(name.clone())
                    .or_default()
                    .push((*from as u32, *to as u32)),
            }
        }
        let mut class_mask = [0u128; FieldClass::COUNT];
        let mut allow_mask = 0u128;
        let mut record_mask = 0u128;
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(class) = node.class {
                class_mask[class.index()] |= 1u128 << i;
            }
            if node.allow {
                allow_mask |= 1u128 << i;
            }
            if node.record {
                record_mask |= 1u128 << i;
            }
        }
        let mut names: FastMap<Vec<u8>, NameEntry> = FastMap::default();
        for (name, class) in self.names {
            names.entry(name).or_default().class = Some(class);
        }
        for (name, ()) in self.allowed_names {
            names.entry(name).or_default().allowed = true;
        }
        for (name, ()) in self.id_names {
            names.entry(name).or_default().record_id = true;
        }
        for (name, ()) in self.identifier_names {
            names.entry(name).or_default().identifier = true;
        }
        for (name, edges) in name_edges {
            names.entry(name).or_default().edges = edges;
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Rules {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            names: NameTable::new(names),
            any_children,
            class_mask,
            allow_mask,
            record_mask,
            has_paths: self.nodes.len() > 1,
            allowlist: self.allowlist,
            detectors: self.detectors,
            redact_token: self.redact_token.unwrap_or_else(|| "[REDACTED]".to_owned()),
            root_record: self.root_record,
            vocabulary: self.vocabulary,
        }
    }
}

/// Hashes a normalized name eight bytes at a time, packing bytes into a
/// register as they come (no store-then-load of the name).
#[derive(Default)]
struct NameHasher {
    h: u64,
    word: u64,
    n: usize,
}

impl NameHasher {
    #[inline]
    fn push(&mut self, c: u8) {
        self.word |= u64::from(c) << (8 * (self.n & 7));
        self.n += 1;
        if self.n & 7 == 0 {
            self.mix();
        }
    }

    #[inline]
    fn mix(&mut self) {
        self.h = (self.h.rotate_left(5) ^ self.word).wrapping_mul(0x517c_c1b7_2722_0a95);
        self.word = 0;
    }

    #[inline]
    fn finish(mut self) -> u64 {
        if self.n & 7 != 0 {
            self.mix();
        }
        (self.h ^ self.n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

fn hash_name(name: &[u8]) -> u64 {
    let mut hasher = NameHasher::default();
    for &c in name {
        hasher.push(c);
    }
    hasher.finish()
}

/// A table slot: hash, normalized name, entry.
type Slot = (u64, Box<[u8]>, NameEntry);

/// Normalized names in an open-addressing table, probed with a hash computed
/// while normalizing, so a key costs one pass over its bytes; a length mask
/// rejects most keys before any probe.
#[derive(Debug)]
struct NameTable {
    slots: Vec<Option<Slot>>,
    mask: usize,
    lengths: u128,
}

impl NameTable {
    fn new(entries: FastMap<Vec<u8>, NameEntry>) -> NameTable {
        let size = (entries.len() * 4).next_power_of_two().max(16);
        let mut slots: Vec<Option<Slot>> = (0..size).map(|_| None).collect();
        let mut lengths = 0u128;
        for (name, entry) in entries {
            let h = hash_name(&name);
            if name.len() < 128 {
                lengths |= 1u128 << name.len();
            }
            let mut i = h as usize & (size - 1);
            while slots[i].is_some() {
                i = (i + 1) & (size - 1);
            }
            slots[i] = Some((h, name.into_boxed_slice(), entry));
        }
        NameTable {
            slots,
            mask: size - 1,
            lengths,
        }
    }

    fn lookup(&self, key: &[u8]) -> Option<&NameEntry> {
        let mut buf = [0u8; MAX_NAME_LEN];
        let mut hasher = NameHasher::default();
        for &b in key {
            let c = if b.is_ascii_alphanumeric() {
                b | 0x20
            } else if b >= 0x80 {
                b
            } else {
                continue;
            };
            if hasher.n == MAX_NAME_LEN {
                return None;
            }
            buf[hasher.n] = c;
            hasher.push(c);
        }
        let n = hasher.n;
        if n >= 128 || self.lengths & (1u128 << n) == 0 {
            return None;
        }
        let h = hasher.finish();
        let name = &buf[..n];
        let mut i = h as usize & self.mask;
        loop {
            match &self.slots[i] {
                None => return None,
                Some((hh, stored, entry)) if *hh == h && **stored == *name => return Some(entry),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct NameEntry {
    class: Option<FieldClass>,
    allowed: bool,
    record_id: bool,
    /// One of the utility's own identifiers: not classed by its words.
    identifier: bool,
    /// Path-trie edges taken by this name: (from node, to node).
    edges: Vec<(u32, u32)>,
}

/// Keys up to this long are remembered per thread.
const CACHED_KEY_LEN: usize = 32;
/// Slots in the per-thread key cache.
const KEY_CACHE_SLOTS: usize = 256;

/// One remembered key: which rule set, under which parent nodes, gave what.
#[derive(Clone, Copy)]
struct CachedKey {
    rules_id: u64,
    parent: u128,
    len: u8,
    head: u64,
    tail: u64,
    key: [u8; CACHED_KEY_LEN],
    result: MemberMatch,
}

thread_local! {
    /// Responses repeat the same keys record after record; remembering the
    /// last result per (rule set, parent, raw key) skips normalization,
    /// hashing and the trie step. Rule ids are never reused, so a reloaded
    /// policy cannot hit an old entry.
    static KEY_CACHE: std::cell::RefCell<Box<[CachedKey]>> = std::cell::RefCell::new(
        vec![
            CachedKey {
                rules_id: 0,
                parent: 0,
                len: 0,
                head: 0,
                tail: 0,
                key: [0; CACHED_KEY_LEN],
                result: MemberMatch::default(),
            };
            KEY_CACHE_SLOTS
        ]
        .into_boxed_slice()
    );
}

/// The first and last (up to) eight bytes of a key as words: for keys of at
/// most 16 bytes, equal length and equal words mean equal keys.
#[inline]
fn key_words(key: &[u8]) -> (u64, u64) {
    let mut head = [0u8; 8];
    let n = key.len().min(8);
    head[..n].copy_from_slice(&key[..n]);
    let mut tail = [0u8; 8];
    tail[..n].copy_from_slice(&key[key.len() - n..]);
    (u64::from_le_bytes(head), u64::from_le_bytes(tail))
}

#[inline]
fn cache_slot(rules_id: u64, len: usize, head: u64, tail: u64, parent: NodeSet) -> usize {
    let h = (head ^ tail.rotate_left(29) ^ len as u64)
        .wrapping_add(rules_id.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        ^ (parent.0 as u64).wrapping_mul(0x517c_c1b7_2722_0a95)
        ^ ((parent.0 >> 64) as u64);
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize % KEY_CACHE_SLOTS
}

/// Compiled selectors for one role: immutable, shared by every response.
#[derive(Debug)]
pub struct Rules {
    /// Unique per compiled rule set (the key cache must never mix two).
    id: u64,
    names: NameTable,
    any_children: Vec<u128>,
    class_mask: [u128; FieldClass::COUNT],
    allow_mask: u128,
    record_mask: u128,
    has_paths: bool,
    allowlist: bool,
    detectors: DetectorSet,
    redact_token: String,
    root_record: bool,
    vocabulary: Option<Arc<Vocabulary>>,
}

impl Rules {
    /// Rules that select nothing and detect nothing: every body passes unchanged
    /// (apart from validation).
    pub fn empty() -> Rules {
        RulesBuilder::new().build()
    }

    /// The path-trie nodes active at the document root.
    pub fn root_nodes(&self) -> NodeSet {
        if self.has_paths {
            NodeSet(1)
        } else {
            NodeSet::EMPTY
        }
    }

    /// True in allowlist mode.
    pub fn is_allowlist(&self) -> bool {
        self.allowlist
    }

    /// The detectors this role runs.
    pub fn detector_set(&self) -> DetectorSet {
        self.detectors
    }

    /// The token `redact` writes.
    pub fn redact_token(&self) -> &str {
        &self.redact_token
    }

    /// True when the whole document counts as one record.
    pub fn root_is_record(&self) -> bool {
        self.root_record
    }

    /// Matches an object member by its decoded key.
    pub fn match_key(&self, key: &[u8], parent: NodeSet) -> MemberMatch {
        if key.len() > CACHED_KEY_LEN {
            return self.key_match(key, parent);
        }
        let (head, tail) = key_words(key);
        KEY_CACHE.with(|cache| {
            let Ok(mut cache) = cache.try_borrow_mut() else {
                return self.step(self.names.lookup(key), parent);
            };
            let slot = cache_slot(self.id, key.len(), head, tail, parent);
            let entry = &mut cache[slot];
            if entry.rules_id == self.id
                && entry.parent == parent.0
                && usize::from(entry.len) == key.len()
                && entry.head == head
                && entry.tail == tail
                && (key.len() <= 16 || entry.key[..key.len()] == *key)
            {
                return entry.result;
            }
            let result = self.key_match(key, parent);
            entry.rules_id = self.id;
            entry.parent = parent.0;
            entry.len = key.len() as u8;
            entry.head = head;
            entry.tail = tail;
            entry.key[..key.len()].copy_from_slice(key);
            entry.result = result;
            result
        })
    }

    fn key_match(&self, key: &[u8], parent: NodeSet) -> MemberMatch {
        let entry = self.names.lookup(key);
        let mut m = self.step(entry, parent);
        let named = entry.is_some_and(|e| e.class.is_some());
        if let (Some(vocabulary), false) = (&self.vocabulary, named) {
            let verdict = vocabulary.classify(key);
            if !entry.is_some_and(|e| e.identifier) {
                m.word_class = verdict.class;
                m.container_class = verdict.container_class;
            }
            m.generic_value = verdict.generic_value;
            m.descriptor = verdict.descriptor;
        }
        m
    }

    /// The class a descriptor's value names (`"SSN"`), by the vocabulary.
    pub fn classify_label(&self, label: &str) -> Option<FieldClass> {
        self.vocabulary.as_ref()?.classify_label(label)
    }

    /// True when the rules classify field names by their words.
    pub fn has_vocabulary(&self) -> bool {
        self.vocabulary.is_some()
    }

    /// Matches an array element (only `*` steps match an index).
    pub fn match_index(&self, parent: NodeSet) -> MemberMatch {
        self.step(None, parent)
    }

    fn step(&self, entry: Option<&NameEntry>, parent: NodeSet) -> MemberMatch {
        if entry.is_none() && parent.is_empty() {
            return MemberMatch::default();
        }
        let mut nodes = 0u128;
        if !parent.is_empty() {
            let mut bits = parent.0;
            while bits != 0 {
                let from = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if let Some(children) = self.any_children.get(from) {
                    nodes |= children;
                }
            }
            if let Some(entry) = entry {
                for &(from, to) in &entry.edges {
                    if parent.0 & (1u128 << from) != 0 {
                        nodes |= 1u128 << to;
                    }
                }
            }
        }
        let mut class = None;
        if nodes != 0 {
            for c in FieldClass::ALL {
                if self.class_mask[c.index()] & nodes != 0 {
                    class = Some(c);
                    break;
                }
            }
        }
        if class.is_none() {
            class = entry.and_then(|e| e.class);
        }
        MemberMatch {
            class,
            allowed_subtree: self.allow_mask & nodes != 0,
            allowed_value: entry.is_some_and(|e| e.allowed) || self.allow_mask & nodes != 0,
            record: self.record_mask & nodes != 0,
            record_id: entry.is_some_and(|e| e.record_id),
            nodes: NodeSet(nodes),
            ..MemberMatch::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        let mut b = RulesBuilder::new();
        b.class_name("ssn", FieldClass::Ssn).unwrap();
        b.class_name("social_security_number", FieldClass::Ssn)
            .unwrap();
        b.class_path("/accounts/*/card/number", FieldClass::CardNumber)
            .unwrap();
        b.record_path("/accounts/*").unwrap();
        b.build()
    }

    #[test]
    fn names_match_case_and_separator_insensitively() {
        let r = rules();
        for k in [
            "SSN",
            "ssn",
            "Social-Security-Number",
            "socialSecurityNumber",
            "social_security_number",
        ] {
            assert_eq!(
                r.match_key(k.as_bytes(), r.root_nodes()).class,
                Some(FieldClass::Ssn),
                "{k}"
            );
        }
        assert_eq!(r.match_key(b"ssn_last", r.root_nodes()).class, None);
    }

    #[test]
    fn paths_follow_wildcards_and_names() {
        let r = rules();
        let accounts = r.match_key(b"accounts", r.root_nodes());
        assert!(!accounts.record);
        let elem = r.match_index(accounts.nodes);
        assert!(elem.record);
        let card = r.match_key(b"Card", elem.nodes);
        assert_eq!(card.class, None);
        let number = r.match_key(b"number", card.nodes);
        assert_eq!(number.class, Some(FieldClass::CardNumber));
        // the same name elsewhere is not selected
        let other = r.match_key(b"number", r.root_nodes());
        assert_eq!(other.class, None);
    }

    #[test]
    fn bad_selectors_are_refused() {
        let mut b = RulesBuilder::new();
        assert_eq!(
            b.class_path("accounts", FieldClass::Ssn),
            Err(SelectorError::PathNotAbsolute)
        );
        assert_eq!(
            b.class_path("/a//b", FieldClass::Ssn),
            Err(SelectorError::EmptyStep)
        );
        assert_eq!(
            b.class_name("__", FieldClass::Ssn),
            Err(SelectorError::EmptyName)
        );
        b.class_name("x", FieldClass::Ssn).unwrap();
        assert!(matches!(
            b.class_name("X", FieldClass::Tin),
            Err(SelectorError::ConflictingClass { .. })
        ));
    }
}
