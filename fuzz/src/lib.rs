//! Shared pieces of the maskgate fuzz targets: the input layout, the policies
//! the targets rewrite with, a driver that feeds a rewriter in chunks and
//! checks the streaming contract, and the JSON/NDJSON oracles.
//!
//! # Input layout (all rewriter targets)
//!
//! ```text
//! byte 0      header: bits 0-2 = n, the number of split bytes that follow;
//!             bits 3-4 = policy variant (see `spec`); bits 5-7 = target-specific
//! bytes 1..=n chunk sizes (0-255 each), used in a cycle until the body is used up
//! rest        the body
//! ```
//!
//! A header of `b' '` (0x20) means "no splits, variant 0", so a seed file can
//! be a space followed by a readable body.
//!
//! The JSON, NDJSON and CSV targets use the low two target-specific bits
//! (`extra & 3`) for record dropping (see [`DropMode`]); a `b' '` header
//! leaves it off.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use maskgate::class::{Action, ActionTable, FieldClass};
use maskgate::detect::{DetectorKind, DetectorSet, Detectors, Finding};
use maskgate::rewrite::{
    AccountFilter, BodyRewriter, Counts, Limits, RewriteError, RewriteSpec, Rules, RulesBuilder,
};
use serde_json::value::RawValue;

/// A decoded fuzz input.
#[derive(Debug)]
pub struct Input<'a> {
    /// Policy variant, 0-3.
    pub variant: u8,
    /// Target-specific bits, 0-7.
    pub extra: u8,
    /// Chunk sizes, cycled.
    pub sizes: &'a [u8],
    /// The body.
    pub body: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits `data` per the layout above; `None` when it is too short.
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (&head, rest) = data.split_first()?;
        let n = usize::from(head & 7);
        if rest.len() < n {
            return None;
        }
        let (sizes, body) = rest.split_at(n);
        Some(Input {
            variant: (head >> 3) & 3,
            extra: head >> 5,
            sizes,
            body,
        })
    }

    /// The body cut into chunks (sizes cycled; empty chunks kept; the rest at
    /// the end). With no sizes, one chunk.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        split(self.body, self.sizes)
    }
}

/// Cuts `body` into chunks of the sizes in `sizes`, cycled.
pub fn split<'a>(body: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = body;
    if sizes.iter().all(|&s| s == 0) {
        // Empty chunks only: put them in front, then the whole body.
        chunks.extend(sizes.iter().map(|_| &body[..0]));
        chunks.push(rest);
        return chunks;
    }
    'outer: loop {
        for &s in sizes {
            let n = usize::from(s).min(rest.len());
            let (head, tail) = rest.split_at(n);
            chunks.push(head);
            rest = tail;
            if rest.is_empty() {
                break 'outer;
            }
        }
    }
    chunks
}

/// The compiled detectors, shared by every spec.
pub fn detectors() -> Arc<Detectors> {
    static DET: OnceLock<Arc<Detectors>> = OnceLock::new();
    DET.get_or_init(|| Arc::new(Detectors::new())).clone()
}

/// The fuzzing policy: name selectors, two path selectors, a record path and
/// every detector. Variant bit 0 turns on allowlist mode (a few names and a
/// path allowed); bit 1 picks the second action table.
pub fn rules(variant: u8) -> Rules {
    rules_with(variant, false)
}

/// [`rules`], optionally with the document root as a record too.
fn rules_with(variant: u8, root_record: bool) -> Rules {
    let mut b = RulesBuilder::new();
    for id in ["id", "account_id"] {
        b.record_id_name(id).expect("id name");
    }
    if root_record {
        b.record_path("/").expect("record path");
    }
    let names: [(&str, FieldClass); 11] = [
        ("ssn", FieldClass::Ssn),
        ("social_security_number", FieldClass::Ssn),
        ("tin", FieldClass::Tin),
        ("card_number", FieldClass::CardNumber),
        ("pan", FieldClass::CardNumber),
        ("card_expiry", FieldClass::CardExpiry),
        ("dob", FieldClass::Dob),
        ("passport", FieldClass::Passport),
        ("routing_number", FieldClass::BankRouting),
        ("dl", FieldClass::Dln),
        ("acct", FieldClass::BankAccount),
    ];
    for (name, class) in names {
        b.class_name(name, class).expect("name selector");
    }
    b.class_path("/accounts/*/bank/account_number", FieldClass::BankAccount)
        .expect("path selector");
    b.class_path("/a/*/n", FieldClass::Dln)
        .expect("path selector");
    b.record_path("/accounts/*").expect("record path");
    b.detectors(DetectorSet::ALL);
    if variant & 1 != 0 {
        b.allowlist();
        for name in ["id", "name", "notes", "note", "ssn", "card_number"] {
            b.allow_name(name).expect("allow name");
        }
        b.allow_path("/accounts/*/address").expect("allow path");
        b.allow_path("/a/*").expect("allow path");
    }
    b.build()
}

/// The action table of a variant. Both use `last4`, `remove` and `redact`;
/// the second also `clear` and `decrypt` (without an opener: masked).
pub fn actions(variant: u8) -> ActionTable {
    let mut t = ActionTable::uniform(Action::Last4);
    if variant & 2 == 0 {
        t.set(FieldClass::CardNumber, Action::Remove);
        t.set(FieldClass::Passport, Action::Remove);
        t.set(FieldClass::Dob, Action::Redact);
        t.set(FieldClass::BankAccount, Action::Redact);
        t.set(FieldClass::BankRouting, Action::Redact);
    } else {
        t.set(FieldClass::Ssn, Action::Remove);
        t.set(FieldClass::Tin, Action::Redact);
        t.set(FieldClass::CardNumber, Action::Decrypt);
        t.set(FieldClass::CardExpiry, Action::Clear);
        t.set(FieldClass::Dln, Action::Remove);
    }
    t
}

/// The rewrite spec of a variant (default limits), compiled once.
pub fn spec(variant: u8) -> RewriteSpec {
    static SPECS: OnceLock<Vec<RewriteSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        (0..4)
            .map(|v| RewriteSpec {
                rules: Arc::new(rules(v)),
                actions: actions(v),
                detectors: detectors(),
                limits: Limits::default(),
                opener: None,
                drop_accounts: None,
            })
            .collect()
    })[usize::from(variant & 3)]
    .clone()
}

/// A spec that selects and detects nothing: every valid body passes unchanged.
pub fn empty_spec() -> RewriteSpec {
    static EMPTY: OnceLock<Arc<Rules>> = OnceLock::new();
    RewriteSpec {
        rules: EMPTY.get_or_init(|| Arc::new(Rules::empty())).clone(),
        actions: ActionTable::uniform(Action::Clear),
        detectors: detectors(),
        limits: Limits::default(),
        opener: None,
        drop_accounts: None,
    }
}

/// How a target uses record dropping (`extra & 3`: 2 drops, 3 keeps all,
/// 0 and 1 are off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropMode {
    /// No drop filter, the plain spec (as before drop filters existed).
    Off,
    /// The root is a record too, and a filter drops the accounts in
    /// [`DROPPED_ACCOUNTS`].
    Drop,
    /// The root is a record too, and a filter drops nothing: the result
    /// must equal that of the same rules without a filter.
    KeepAll,
}

impl DropMode {
    /// The mode the target-specific bits pick.
    pub fn of(extra: u8) -> DropMode {
        // 0 and 1 are off, so seeds written with a `b' '` header stay off.
        match extra & 3 {
            2 => DropMode::Drop,
            3 => DropMode::KeepAll,
            _ => DropMode::Off,
        }
    }
}

/// Accounts the `Drop` mode leaves out (short, so the fuzzer finds them).
pub const DROPPED_ACCOUNTS: [&str; 5] = ["1", "A", "x", "ACC-1", ""];

/// The spec of a variant for a drop mode; the second spec is the same rules
/// without a filter (what `KeepAll` must match).
pub fn drop_specs(variant: u8, mode: DropMode) -> (RewriteSpec, RewriteSpec) {
    static RULES: OnceLock<Vec<Arc<Rules>>> = OnceLock::new();
    let base = spec(variant);
    if mode == DropMode::Off {
        return (base.clone(), base);
    }
    let rules = RULES.get_or_init(|| (0..4).map(|v| Arc::new(rules_with(v, true))).collect())
        [usize::from(variant & 3)]
    .clone();
    let filter: HashSet<String> = match mode {
        DropMode::Drop => DROPPED_ACCOUNTS.iter().map(|s| (*s).to_owned()).collect(),
        _ => HashSet::new(),
    };
    let plain = RewriteSpec { rules, ..base };
    let filtered = RewriteSpec {
        drop_accounts: Some(Arc::new(filter) as Arc<dyn AccountFilter>),
        ..plain.clone()
    };
    (filtered, plain)
}

/// True when `result` is an error a drop filter may cause on a valid body.
pub fn withheld(mode: DropMode, result: &Outcome) -> bool {
    mode == DropMode::Drop && matches!(result, Err(RewriteError::RecordWithheld))
}

/// What one run of a rewriter gave.
pub type Outcome = Result<(Vec<u8>, Counts), RewriteError>;

/// Feeds `chunks` to `rw` and finishes it, checking the streaming contract:
/// a failing call leaves `out` as it was, and every call after a failure
/// returns [`RewriteError::Poisoned`].
pub fn drive(rw: &mut dyn BodyRewriter, chunks: &[&[u8]]) -> Outcome {
    let mut out = Vec::new();
    for chunk in chunks {
        let mark = out.len();
        if let Err(e) = rw.write(chunk, &mut out) {
            assert_eq!(out.len(), mark, "a failing write emitted bytes ({e:?})");
            check_poisoned(rw);
            return Err(e);
        }
    }
    let mark = out.len();
    if let Err(e) = rw.finish(&mut out) {
        assert_eq!(out.len(), mark, "a failing finish emitted bytes ({e:?})");
        check_poisoned(rw);
        return Err(e);
    }
    Ok((out, rw.counts().clone()))
}

fn check_poisoned(rw: &mut dyn BodyRewriter) {
    let mut out = Vec::new();
    assert_eq!(rw.write(b"{}\n", &mut out), Err(RewriteError::Poisoned));
    assert_eq!(rw.finish(&mut out), Err(RewriteError::Poisoned));
    assert!(out.is_empty(), "a poisoned rewriter emitted bytes");
}

/// True when nothing was acted on, detected or removed.
pub fn untouched(c: &Counts) -> bool {
    c.acted.iter().flatten().all(|&n| n == 0)
        && c.detected == 0
        && c.integrity_errors == 0
        && c.not_allowed == 0
        && c.dropped_records == 0
}

/// Deepest nesting of `[`/`{` outside strings (exact for valid JSON).
pub fn json_depth(b: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_str, mut esc) = (false, false);
    for &c in b {
        if in_str {
            if esc {
                esc = false;
            } else if c == b'\\' {
                esc = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// RFC 8259 validity of one document, as far as serde_json checks it with
/// `RawValue` (numbers by syntax only, lone surrogate escapes accepted), at
/// any depth.
pub fn json_valid(b: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(b);
    de.disable_recursion_limit();
    let ok = <Box<RawValue> as serde::Deserialize>::deserialize(&mut de).is_ok();
    ok && de.end().is_ok()
}

/// Strict serde_json parse into a `Value` (rejects lone surrogates and
/// out-of-range numbers).
pub fn json_strict(b: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(b);
    de.disable_recursion_limit();
    let ok = <serde_json::Value as serde::Deserialize>::deserialize(&mut de).is_ok();
    ok && de.end().is_ok()
}

/// NDJSON validity: valid JSON values separated by whitespace that holds a
/// line feed between any two values; an empty or blank body is valid.
pub fn ndjson_valid(b: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(b);
    de.disable_recursion_limit();
    let mut it = de.into_iter::<Box<RawValue>>();
    let mut prev_end: Option<usize> = None;
    loop {
        let before = it.byte_offset();
        match it.next() {
            None => return true,
            Some(Err(_)) => return false,
            Some(Ok(_)) => {
                if let Some(end) = prev_end {
                    let gap = &b[end..];
                    let ws = gap
                        .iter()
                        .position(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
                        .unwrap_or(gap.len());
                    if !gap[..ws].contains(&b'\n') {
                        return false;
                    }
                }
                let _ = before;
                prev_end = Some(it.byte_offset());
            }
        }
    }
}

/// The strict variant of [`ndjson_valid`]: every value parses as a `Value`.
pub fn ndjson_strict(b: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(b);
    de.disable_recursion_limit();
    de.into_iter::<serde_json::Value>().all(|r| r.is_ok())
}

/// Checks the findings contract of [`Detectors::scan`]: each finding is
/// non-empty, in bounds, on ASCII bytes, and they are sorted and do not overlap.
pub fn check_findings(text: &[u8], f: &[Finding]) {
    for x in f {
        assert!(x.start < x.end, "empty finding {x:?}");
        assert!(
            x.end <= text.len(),
            "finding {x:?} past the end ({})",
            text.len()
        );
        assert!(
            text[x.start..x.end].is_ascii(),
            "finding {x:?} holds non-ASCII bytes"
        );
    }
    for w in f.windows(2) {
        assert!(
            w[0].end <= w[1].start,
            "findings unsorted or overlapping: {w:?}"
        );
    }
}

/// The detector set with the kinds whose bits are set in `mask`.
pub fn set_from_bits(mask: u8) -> DetectorSet {
    DetectorKind::ALL
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .fold(DetectorSet::NONE, |s, (_, k)| s.with(k))
}

/// True when `t` is `ddd-dd-dddd` and a valid SSN by SSA rules.
pub fn is_valid_dashed_ssn(t: &[u8]) -> bool {
    if t.len() != 11 || t[3] != b'-' || t[6] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| {
        t[r].iter().try_fold(0u16, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u16::from(c - b'0'))
        })
    };
    match (digits(0..3), digits(4..6), digits(7..11)) {
        (Some(a), Some(g), Some(s)) => maskgate::detect::ssn_valid(a, g as u8, s),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_cycles() {
        assert_eq!(split(b"abcdef", &[2]), vec![&b"ab"[..], b"cd", b"ef"]);
        assert_eq!(split(b"abcde", &[0, 3]), vec![&b""[..], b"abc", b"", b"de"]);
        assert_eq!(split(b"ab", &[0]), vec![&b""[..], b"ab"]);
        assert_eq!(split(b"", &[]), vec![&b""[..]]);
    }

    #[test]
    fn oracles() {
        assert!(json_valid(br#"{"a":"\ud800"}"#));
        assert!(!json_strict(br#"{"a":"\ud800"}"#));
        assert!(json_valid(b"1e999"));
        assert!(!json_valid(b"01"));
        assert!(!json_valid(b"{} {}"));
        assert!(ndjson_valid(b""));
        assert!(ndjson_valid(b" \n"));
        assert!(ndjson_valid(b"{}\n{}\n"));
        assert!(ndjson_valid(b"1\n2"));
        assert!(!ndjson_valid(b"1 2"));
        assert!(!ndjson_valid(b"{}{}"));
        assert_eq!(json_depth(br#"[[{"a":"[["}]]"#), 3);
        assert!(is_valid_dashed_ssn(b"123-45-6789"));
        assert!(!is_valid_dashed_ssn(b"000-45-6789"));
    }
}
