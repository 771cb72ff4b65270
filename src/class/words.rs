//! Field names classified by their words.
//!
//! A name is split into words (snake, kebab, spaces, camelCase, letters and
//! digits apart: `primaryHolderSSN_no` is `primary holder ssn no`), each word
//! is folded to its canonical spelling (`no`, `num`, `nbr` are `number`;
//! `licence` is `license`; plurals lose their `s`), and a word that is none
//! of the vocabulary's words is split into vocabulary words where it can
//! (`socialsecuritynumber`, `acctno`). The words are then matched against
//! each class's phrases:
//!
//! - a **word phrase** (`social security`, `routing number`) matches anywhere
//!   in the name, with any words before it, unless a *qualifier* follows it
//!   (`ssn_verified`, `card_type`, `bank_name`: the field says something
//!   about the value, it does not hold it);
//! - a **whole phrase** (`expiry`, `license`) matches only the whole name,
//!   owner words (`customer`, `primary`, `holder` …) allowed in front;
//! - an **ambiguous phrase** (`account number`, `acct no`, `number`) is
//!   matched like a whole phrase and marked ambiguous: it is masked unless
//!   the policy declares the name as the utility's own identifier;
//! - a **container phrase** (`bank`, `cards`) classes only an object or array.
//!
//! When several phrases match, the one ending last wins (the head of an
//! English compound is its last word: `card_expiry` is an expiry, not a
//! card), then the longer one. Pure core: no I/O.

use std::collections::{HashMap, HashSet};

use super::FieldClass;

/// Longest name (in bytes) that is split into words; longer names are
/// classified by exact names and paths only.
pub const MAX_NAME_BYTES: usize = 128;
/// Most words of a name that are looked at.
const MAX_WORDS: usize = 16;
/// Longest unknown word that is split into vocabulary words.
const MAX_SPLIT_LEN: usize = 40;

/// How a phrase may match a name.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum PhraseKind {
    /// Anywhere in the name, unless a qualifier follows.
    Word,
    /// The whole name (owner words allowed before).
    Whole,
    /// The whole name, and the name may be the utility's own identifier.
    Ambiguous,
    /// Anywhere, but only for containers (objects, arrays).
    Container,
}

impl PhraseKind {
    /// The name of the phrase list in policy files.
    pub const fn list_name(self) -> &'static str {
        match self {
            PhraseKind::Word => "words",
            PhraseKind::Whole => "whole_words",
            PhraseKind::Ambiguous => "ambiguous",
            PhraseKind::Container => "containers",
        }
    }
}

/// What a field's name says about its value.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NameVerdict {
    /// The class of a scalar value (or of a list of scalars).
    pub class: Option<FieldClass>,
    /// The class came from an ambiguous phrase.
    pub ambiguous: bool,
    /// The class of a container value (objects and arrays); includes `class`.
    pub container_class: Option<FieldClass>,
    /// The name is a generic value holder (`value`, `number`, `id` …): in an
    /// object that says what it holds (`{"type":"ssn","value":…}`) it takes
    /// that class.
    pub generic_value: bool,
    /// The name is a descriptor (`type`, `kind`, `label` …): its string value
    /// may name the class of the object's generic value.
    pub descriptor: bool,
}

/// Why a vocabulary could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VocabularyError {
    /// A phrase with no letters.
    #[error("phrase `{0}` has no words")]
    EmptyPhrase(String),
    /// A spelling given to two canonical words.
    #[error("spelling `{spelling}` is a synonym of both `{first}` and `{second}`")]
    SynonymConflict {
        /// The spelling.
        spelling: String,
        /// The canonical word it was given first.
        first: String,
        /// The canonical word it was given later.
        second: String,
    },
    /// One phrase given to two classes.
    #[error("phrase `{phrase}` is given to both {first} and {second}")]
    PhraseConflict {
        /// The phrase, in canonical words.
        phrase: String,
        /// The class it was given first.
        first: FieldClass,
        /// The class it was given later.
        second: FieldClass,
    },
}

/// Builds a [`Vocabulary`].
#[derive(Debug, Default, Clone)]
pub struct VocabularyBuilder {
    synonyms: Vec<(String, String)>,
    phrases: Vec<(String, FieldClass, PhraseKind)>,
    qualifiers: Vec<String>,
    owner_words: Vec<String>,
    generic_value: Vec<String>,
    descriptors: Vec<String>,
}

impl VocabularyBuilder {
    /// An empty vocabulary.
    pub fn new() -> VocabularyBuilder {
        VocabularyBuilder::default()
    }

    /// `spelling` is another way to write `canonical` (`no` for `number`).
    pub fn synonym(&mut self, canonical: &str, spelling: &str) -> &mut Self {
        self.synonyms.push((
            canonical.to_ascii_lowercase(),
            spelling.to_ascii_lowercase(),
        ));
        self
    }

    /// Names holding `phrase` are of `class`, as `kind` says.
    pub fn phrase(&mut self, phrase: &str, class: FieldClass, kind: PhraseKind) -> &mut Self {
        self.phrases.push((phrase.to_owned(), class, kind));
        self
    }

    /// A word that, after a class phrase, says the field is about the value
    /// rather than the value (`type`, `state`, `verified`).
    pub fn qualifier(&mut self, word: &str) -> &mut Self {
        self.qualifiers.push(word.to_ascii_lowercase());
        self
    }

    /// A word that may stand before a whole or ambiguous phrase (`customer`).
    pub fn owner_word(&mut self, word: &str) -> &mut Self {
        self.owner_words.push(word.to_ascii_lowercase());
        self
    }

    /// A name (one or more words) of a generic value holder (`value`).
    pub fn generic_value(&mut self, name: &str) -> &mut Self {
        self.generic_value.push(name.to_owned());
        self
    }

    /// A name of a descriptor member (`type`, `kind`).
    pub fn descriptor(&mut self, name: &str) -> &mut Self {
        self.descriptors.push(name.to_owned());
        self
    }

    /// Compiles the vocabulary, reporting every conflict.
    pub fn build(&self) -> Result<Vocabulary, Vec<VocabularyError>> {
        let mut errors = Vec::new();
        let mut v = Vocabulary::default();
        // Canonical words first, so a spelling that is itself canonical keeps its id.
        let mut canonical_of: HashMap<String, String> = HashMap::new();
        for (canonical, spelling) in &self.synonyms {
            match canonical_of.get(spelling) {
                Some(first) if first != canonical => {
                    errors.push(VocabularyError::SynonymConflict {
                        spelling: spelling.clone(),
                        first: first.clone(),
                        second: canonical.clone(),
                    });
                }
                _ => {
                    canonical_of.insert(spelling.clone(), canonical.clone());
                }
            }
        }
        for (spelling, canonical) in &canonical_of {
            let id = v.intern(canonical);
            v.spellings.insert(spelling.clone(), id);
        }
        let mut seen: HashMap<(Vec<u16>, PhraseKind), FieldClass> = HashMap::new();
        for (text, class, kind) in &self.phrases {
            let words = v.define_words(text);
            if words.is_empty() {
                errors.push(VocabularyError::EmptyPhrase(text.clone()));
                continue;
            }
            match seen.get(&(words.clone(), *kind)) {
                Some(first) if first != class => {
                    errors.push(VocabularyError::PhraseConflict {
                        phrase: v.spell(&words),
                        first: *first,
                        second: *class,
                    });
                    continue;
                }
                Some(_) => continue,
                None => {}
            }
            seen.insert((words.clone(), *kind), *class);
            let index = v.phrases.len();
            v.by_first.entry(words[0]).or_default().push(index);
            v.phrases.push(Phrase {
                words,
                class: *class,
                kind: *kind,
            });
        }
        for q in &self.qualifiers {
            let ids = v.define_words(q);
            v.qualifiers.extend(ids);
        }
        for o in &self.owner_words {
            let ids = v.define_words(o);
            v.owner_words.extend(ids);
        }
        for g in &self.generic_value {
            let ids = v.define_words(g);
            if !ids.is_empty() {
                v.generic_value.insert(ids);
            }
        }
        for d in &self.descriptors {
            let ids = v.define_words(d);
            if !ids.is_empty() {
                v.descriptors.insert(ids);
            }
        }
        if errors.is_empty() {
            Ok(v)
        } else {
            Err(errors)
        }
    }
}

#[derive(Debug, Clone)]
struct Phrase {
    words: Vec<u16>,
    class: FieldClass,
    kind: PhraseKind,
}

/// The compiled vocabulary: immutable, shared by every role.
#[derive(Debug, Default, Clone)]
pub struct Vocabulary {
    /// Canonical words by id.
    words: Vec<String>,
    /// Every known spelling (canonical words included) → canonical id.
    spellings: HashMap<String, u16>,
    phrases: Vec<Phrase>,
    /// Phrases by their first word.
    by_first: HashMap<u16, Vec<usize>>,
    qualifiers: HashSet<u16>,
    owner_words: HashSet<u16>,
    generic_value: HashSet<Vec<u16>>,
    descriptors: HashSet<Vec<u16>>,
}

/// A word no phrase holds.
const UNKNOWN: u16 = u16::MAX;

impl Vocabulary {
    fn intern(&mut self, canonical: &str) -> u16 {
        if let Some(&id) = self.spellings.get(canonical) {
            return id;
        }
        let id = self.words.len().min(usize::from(UNKNOWN - 1)) as u16;
        self.words.push(canonical.to_owned());
        self.spellings.insert(canonical.to_owned(), id);
        id
    }

    /// The ids of a phrase's words, defining words not seen yet.
    fn define_words(&mut self, text: &str) -> Vec<u16> {
        let mut raw = Vec::new();
        split_words(text.as_bytes(), &mut raw);
        raw.iter()
            .map(|w| {
                let w = String::from_utf8_lossy(w).into_owned();
                match self.lookup_spelling(&w) {
                    Some(id) => id,
                    None => self.intern(&w),
                }
            })
            .collect()
    }

    fn spell(&self, ids: &[u16]) -> String {
        ids.iter()
            .map(|&i| self.words.get(usize::from(i)).map_or("?", String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn lookup_spelling(&self, w: &str) -> Option<u16> {
        if let Some(&id) = self.spellings.get(w) {
            return Some(id);
        }
        // Plurals: `cards`, `numbers`, `accounts`, `addresses`.
        let singular = w
            .strip_suffix("es")
            .filter(|s| s.ends_with("ss") || s.ends_with('x'))
            .or_else(|| w.strip_suffix('s'))?;
        if singular.len() < 2 {
            return None;
        }
        self.spellings.get(singular).copied()
    }

    /// Folds a name into canonical word ids (at most [`MAX_WORDS`]).
    fn name_words(&self, name: &[u8], ids: &mut Vec<u16>) {
        ids.clear();
        let mut raw = Vec::new();
        split_words(name, &mut raw);
        for w in raw {
            if ids.len() >= MAX_WORDS {
                break;
            }
            if w.iter().all(u8::is_ascii_digit) {
                continue;
            }
            let Ok(text) = std::str::from_utf8(&w) else {
                ids.push(UNKNOWN);
                continue;
            };
            match self.lookup_spelling(text) {
                Some(id) => ids.push(id),
                None => {
                    if !self.split_compound(text, ids) {
                        ids.push(UNKNOWN);
                    }
                }
            }
        }
    }

    /// Splits a run-together word (`socialsecuritynumber`, `acctno`) into
    /// known spellings of two letters or more; fewest pieces wins. Pushes the
    /// pieces' ids and returns true when the whole word is covered.
    fn split_compound(&self, w: &str, ids: &mut Vec<u16>) -> bool {
        let n = w.len();
        if !(4..=MAX_SPLIT_LEN).contains(&n) || !w.is_ascii() {
            return false;
        }
        // best[i]: (pieces, previous cut) covering w[..i].
        let mut best: Vec<Option<(u8, usize)>> = vec![None; n + 1];
        best[0] = Some((0, 0));
        for i in 0..n {
            let Some((pieces, _)) = best[i] else { continue };
            for j in (i + 2)..=n {
                if self.lookup_spelling(&w[i..j]).is_none() {
                    continue;
                }
                let better = match best[j] {
                    None => true,
                    Some((p, _)) => pieces + 1 < p,
                };
                if better {
                    best[j] = Some((pieces + 1, i));
                }
            }
        }
        let Some((pieces, _)) = best[n] else {
            return false;
        };
        if !(2..=4).contains(&pieces) {
            return false;
        }
        let mut cuts = Vec::with_capacity(usize::from(pieces));
        let mut j = n;
        while j > 0 {
            let Some((_, i)) = best[j] else { return false };
            cuts.push((i, j));
            j = i;
        }
        for &(i, j) in cuts.iter().rev() {
            if ids.len() >= MAX_WORDS {
                break;
            }
            ids.push(self.lookup_spelling(&w[i..j]).unwrap_or(UNKNOWN));
        }
        true
    }

    /// What a field's name says about its value.
    pub fn classify(&self, name: &[u8]) -> NameVerdict {
        if name.len() > MAX_NAME_BYTES {
            return NameVerdict::default();
        }
        let mut ids = Vec::with_capacity(8);
        self.name_words(name, &mut ids);
        if ids.is_empty() {
            return NameVerdict::default();
        }
        let mut verdict = NameVerdict {
            generic_value: self.generic_value.contains(&ids),
            descriptor: self.descriptors.contains(&ids),
            ..NameVerdict::default()
        };
        // (end, len, class, ambiguous) of the best scalar and container matches.
        let mut scalar: Option<(usize, usize, FieldClass, bool)> = None;
        let mut container: Option<(usize, usize, FieldClass)> = None;
        for start in 0..ids.len() {
            let Some(candidates) = self.by_first.get(&ids[start]) else {
                continue;
            };
            for &p in candidates {
                let phrase = &self.phrases[p];
                let end = start + phrase.words.len();
                if end > ids.len() || ids[start..end] != phrase.words[..] {
                    continue;
                }
                let owners_before = ids[..start].iter().all(|w| self.owner_words.contains(w));
                let ok = match phrase.kind {
                    PhraseKind::Word | PhraseKind::Container => {
                        !ids[end..].iter().any(|w| self.qualifiers.contains(w))
                    }
                    PhraseKind::Whole | PhraseKind::Ambiguous => end == ids.len() && owners_before,
                };
                if !ok {
                    continue;
                }
                let len = phrase.words.len();
                let better =
                    |cur: Option<(usize, usize)>| cur.is_none_or(|(e, l)| (end, len) > (e, l));
                if phrase.kind != PhraseKind::Container && better(scalar.map(|(e, l, _, _)| (e, l)))
                {
                    scalar = Some((end, len, phrase.class, phrase.kind == PhraseKind::Ambiguous));
                }
                if phrase.kind != PhraseKind::Ambiguous && better(container.map(|(e, l, _)| (e, l)))
                {
                    container = Some((end, len, phrase.class));
                }
            }
        }
        if let Some((_, _, class, ambiguous)) = scalar {
            verdict.class = Some(class);
            verdict.ambiguous = ambiguous;
        }
        verdict.container_class = container.map(|(_, _, c)| c);
        verdict
    }

    /// The class a descriptor's value names (`"SSN"`, `"Driver's License"`,
    /// `"checking account"`), if any.
    pub fn classify_label(&self, label: &str) -> Option<FieldClass> {
        let v = self.classify(label.as_bytes());
        v.class.or(v.container_class)
    }
}

/// Splits a name into lower-case ASCII words: at every byte that is not an
/// ASCII letter or digit, between a lower-case letter and an upper-case one
/// (`ssnNumber`), before the last capital of a capital run followed by a
/// lower-case letter (`SSNNumber` is `ssn number`), and between letters and
/// digits. Apostrophes inside a word are dropped (`driver's` is `drivers`).
pub fn split_words(name: &[u8], out: &mut Vec<Vec<u8>>) {
    out.clear();
    let mut word: Vec<u8> = Vec::new();
    let flush = |word: &mut Vec<u8>, out: &mut Vec<Vec<u8>>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        // Apostrophes (ASCII and U+2019) inside a word vanish.
        if b == b'\'' && !word.is_empty() {
            i += 1;
            continue;
        }
        if name[i..].starts_with(&[0xE2, 0x80, 0x99]) && !word.is_empty() {
            i += 3;
            continue;
        }
        if !b.is_ascii_alphanumeric() {
            flush(&mut word, out);
            i += 1;
            continue;
        }
        if let Some(&prev) = name.get(i.wrapping_sub(1)).filter(|_| i > 0) {
            let boundary = (prev.is_ascii_lowercase() && b.is_ascii_uppercase())
                || (prev.is_ascii_alphabetic() && b.is_ascii_digit())
                || (prev.is_ascii_digit() && b.is_ascii_alphabetic())
                || (prev.is_ascii_uppercase()
                    && b.is_ascii_uppercase()
                    && name.get(i + 1).is_some_and(u8::is_ascii_lowercase));
            if boundary {
                flush(&mut word, out);
            }
        }
        word.push(b.to_ascii_lowercase());
        i += 1;
    }
    flush(&mut word, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocabulary {
        let mut b = VocabularyBuilder::new();
        for (c, s) in [
            ("number", "no"),
            ("number", "num"),
            ("number", "nbr"),
            ("account", "acct"),
            ("license", "licence"),
            ("license", "lic"),
            ("driver", "drivers"),
        ] {
            b.synonym(c, s);
        }
        b.phrase("ssn", FieldClass::Ssn, PhraseKind::Word)
            .phrase("social security", FieldClass::Ssn, PhraseKind::Word)
            .phrase("card", FieldClass::CardNumber, PhraseKind::Word)
            .phrase("card expiry", FieldClass::CardExpiry, PhraseKind::Word)
            .phrase("expiry", FieldClass::CardExpiry, PhraseKind::Whole)
            .phrase("driver license", FieldClass::Dln, PhraseKind::Word)
            .phrase(
                "account number",
                FieldClass::BankAccount,
                PhraseKind::Ambiguous,
            )
            .phrase("bank account", FieldClass::BankAccount, PhraseKind::Word)
            .phrase("bank", FieldClass::BankAccount, PhraseKind::Container)
            .qualifier("type")
            .qualifier("holder")
            .qualifier("name")
            .qualifier("last")
            .qualifier("expiry")
            .owner_word("customer")
            .generic_value("value")
            .descriptor("type");
        b.build().unwrap()
    }

    fn class(v: &Vocabulary, name: &str) -> Option<FieldClass> {
        v.classify(name.as_bytes()).class
    }

    #[test]
    fn words_split_every_common_way() {
        let mut out = Vec::new();
        split_words(b"primaryHolderSSN_no", &mut out);
        assert_eq!(out, [&b"primary"[..], b"holder", b"ssn", b"no"]);
        split_words(b"SSNNumber2", &mut out);
        assert_eq!(out, [&b"ssn"[..], b"number", b"2"]);
        split_words(b"Driver's License", &mut out);
        assert_eq!(out, [&b"drivers"[..], b"license"]);
    }

    #[test]
    fn phrases_match_with_words_around_them() {
        let v = vocab();
        for name in [
            "ssn",
            "SSN",
            "primary_holder_ssn",
            "ssn_no",
            "socialSecurityNumber",
            "SOCIALSECURITY",
            "social-security-no",
            "Social Security",
        ] {
            assert_eq!(class(&v, name), Some(FieldClass::Ssn), "{name}");
        }
        assert_eq!(class(&v, "ssn_last"), None);
        assert_eq!(class(&v, "card_type"), None);
        assert_eq!(class(&v, "cardholder"), None);
        assert_eq!(class(&v, "card_expiry"), Some(FieldClass::CardExpiry));
        assert_eq!(class(&v, "customer_expiry"), Some(FieldClass::CardExpiry));
        assert_eq!(class(&v, "contract_expiry"), None);
        assert_eq!(class(&v, "drivers_licence_no"), Some(FieldClass::Dln));
        assert_eq!(class(&v, "company"), None);
    }

    #[test]
    fn ambiguous_and_container_phrases() {
        let v = vocab();
        let acct = v.classify(b"acct_no");
        assert_eq!(acct.class, Some(FieldClass::BankAccount));
        assert!(acct.ambiguous);
        assert_eq!(class(&v, "phone_number"), None);
        assert_eq!(class(&v, "bank"), None);
        assert_eq!(
            v.classify(b"bank").container_class,
            Some(FieldClass::BankAccount)
        );
        assert!(!v.classify(b"bank_account_no").ambiguous);
        assert!(v.classify(b"value").generic_value);
        assert!(v.classify(b"Type").descriptor);
        assert_eq!(
            v.classify_label("Social Security Number"),
            Some(FieldClass::Ssn)
        );
    }

    #[test]
    fn conflicts_are_reported() {
        let mut b = VocabularyBuilder::new();
        b.synonym("number", "no").synonym("north", "no");
        b.phrase("pan", FieldClass::CardNumber, PhraseKind::Word)
            .phrase("pan", FieldClass::Ssn, PhraseKind::Word);
        let errors = b.build().unwrap_err();
        assert_eq!(errors.len(), 2);
    }
}
