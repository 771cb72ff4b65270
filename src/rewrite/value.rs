//! One value no selector named: what the detectors find in it, however it is
//! written.
//!
//! Every rewriter (JSON strings and keys, CSV cells, text lines, header
//! values) hands such text here. Before the detectors run, digits and
//! separators written in other scripts or forms (full-width, Arabic-Indic,
//! Devanagari, mathematical, superscript …; en dashes, no-break spaces) are
//! folded to ASCII, so `１２３-４５-６７８９` is found like `123-45-6789`.
//! Text that finds nothing is looked into where it may be an encoding of
//! something else, at most [`MAX_DECODE_DEPTH`] levels deep and
//! [`MAX_DECODED_BYTES`] bytes a payload:
//!
//! - JSON inside the string (`"{\"ssn\":\"…\"}"`, double and triple encoded):
//!   rewritten by the JSON rewriter with the same rules, names included, and
//!   written back as a string;
//! - base64 and base64url runs (data: URIs, JWT-like `a.b.c` tokens, bare
//!   payloads): decoded, inspected the same way, and when anything red-flag
//!   is inside, the whole encoded run is replaced by the redaction token (a
//!   masked payload cannot be re-encoded meaningfully).
//!
//! Pure core: no I/O.

use std::borrow::Cow;

use base64::Engine as _;

use super::{mask, Counts, RewriteSpec};
use crate::class::{Action, ActionTable};
use crate::detect::Finding;

/// Rewrites JSON found inside a value `depth` encodings deep with the same
/// rules (the JSON rewriter's [`super::json::rewrite_nested`]): the bytes and
/// their counts, `None` when the text is not JSON.
pub(crate) type NestedJson = fn(&RewriteSpec, &str, u8) -> Option<(Vec<u8>, Counts)>;

/// Most levels of encoding looked through (JSON in base64 in JSON …).
pub const MAX_DECODE_DEPTH: u8 = 4;
/// Largest encoded payload decoded.
pub const MAX_DECODED_BYTES: usize = 64 * 1024;
/// Shortest base64 run decoded: nine bytes (a bare SSN) encode to twelve.
const MIN_BASE64_RUN: usize = 12;

/// True when `text` might hide a red-flag value from a plain digit count:
/// non-ASCII bytes (digits of other scripts), a JSON text, or a run that may
/// be base64. A cheap look, so that plain strings cost one pass.
pub(crate) fn may_hide_value(text: &[u8]) -> bool {
    if matches!(text.trim_ascii_start().first(), Some(b'{' | b'[' | b'"')) {
        return true;
    }
    if !text.is_ascii() {
        return true;
    }
    // An encoded run has two capitals at least: most text is ruled out by
    // one vectorized count before any run is looked at.
    if text.len() < MIN_BASE64_RUN || text.iter().filter(|b| b.is_ascii_uppercase()).count() < 2 {
        return false;
    }
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if BASE64_CLASS[usize::from(b)] == 0 {
            i += 1;
            continue;
        }
        let (end, encoded) = scan_run(text, i);
        if encoded {
            return true;
        }
        i = end;
    }
    false
}

const B64: u8 = 1;
const MARK: u8 = 2;
const UPPER: u8 = 4;
const LOWER: u8 = 8;

/// Per byte: base64(url) byte, a mark that words do not have (digit, `+`,
/// `/`, `-`, `_`, `=`), upper or lower case.
static BASE64_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() || matches!(c, b'+' | b'/' | b'-' | b'_' | b'=') {
            B64 | MARK
        } else if c.is_ascii_uppercase() {
            B64 | UPPER
        } else if c.is_ascii_lowercase() {
            B64 | LOWER
        } else if c == b'.' {
            B64
        } else {
            0
        };
        b += 1;
    }
    t
};

/// The end of the run starting at `start` and whether it looks encoded
/// (see [`base64_runs`]).
#[inline]
fn scan_run(text: &[u8], start: usize) -> (usize, bool) {
    let (mut i, mut marks, mut upper, mut lower) = (start, false, 0u32, 0u32);
    while let Some(&b) = text.get(i) {
        let class = BASE64_CLASS[usize::from(b)];
        if class == 0 {
            break;
        }
        marks |= class & MARK != 0;
        upper += u32::from(class & UPPER != 0);
        lower += u32::from(class & LOWER != 0);
        i += 1;
    }
    let len = i - start;
    // Base64 of text is mostly letters of both cases; dates, phone numbers,
    // hex ids and UUIDs (digits, one case) are not worth a decode.
    let letters = (upper + lower) as usize;
    let encoded = (MIN_BASE64_RUN..=MAX_DECODED_BYTES * 2).contains(&len)
        && upper >= 2
        && lower >= 1
        && letters * 2 >= len
        && (marks || lower >= 2);
    (i, encoded)
}

/// Runs the role's detectors over `text` (digits folded first) and looks
/// into encoded payloads; writes the masked text into `out` (cleared first)
/// and returns true when anything was changed (otherwise `out` is
/// unspecified).
pub(crate) fn mask_unnamed(
    spec: &RewriteSpec,
    text: &str,
    findings: &mut Vec<Finding>,
    counts: &mut Counts,
    out: &mut String,
    nested: NestedJson,
) -> bool {
    mask_at_depth(spec, text, findings, counts, out, 0, nested)
}

/// [`mask_unnamed`] for text found `depth` encodings deep.
pub(crate) fn mask_unnamed_at(
    spec: &RewriteSpec,
    text: &str,
    findings: &mut Vec<Finding>,
    counts: &mut Counts,
    out: &mut String,
    depth: u8,
    nested: NestedJson,
) -> bool {
    mask_at_depth(spec, text, findings, counts, out, depth, nested)
}

fn mask_at_depth(
    spec: &RewriteSpec,
    text: &str,
    findings: &mut Vec<Finding>,
    counts: &mut Counts,
    out: &mut String,
    depth: u8,
    nested: NestedJson,
) -> bool {
    let set = spec.rules.detector_set();
    if set.is_empty() {
        return false;
    }
    let folded = fold_digits(text);
    findings.clear();
    spec.detectors.scan(folded.as_bytes(), set, findings);
    if !findings.is_empty() {
        out.clear();
        let changed = apply_findings(
            &folded,
            findings,
            &spec.actions,
            spec.rules.redact_token(),
            counts,
            out,
        );
        if changed {
            return true;
        }
    }
    if depth >= MAX_DECODE_DEPTH || !may_hide_value(text.as_bytes()) {
        return false;
    }
    if let Some(rewritten) = embedded_json(spec, text, counts, depth, nested) {
        out.clear();
        out.push_str(&rewritten);
        return true;
    }
    encoded_runs(spec, text, findings, counts, out, depth, nested)
}

/// JSON inside a string: rewritten with the same rules. `Some` only when
/// the rewrite changed it.
fn embedded_json(
    spec: &RewriteSpec,
    text: &str,
    counts: &mut Counts,
    depth: u8,
    nested: NestedJson,
) -> Option<String> {
    let trimmed = text.trim_start();
    if !matches!(trimmed.as_bytes().first(), Some(b'{' | b'[' | b'"'))
        || text.len() > MAX_DECODED_BYTES
    {
        return None;
    }
    let (rewritten, inner_counts) = nested(spec, text, depth + 1)?;
    if rewritten == text.as_bytes() {
        return None;
    }
    merge_counts(counts, &inner_counts);
    String::from_utf8(rewritten).ok()
}

fn merge_counts(into: &mut Counts, from: &Counts) {
    for (a, b) in into.acted.iter_mut().zip(from.acted.iter()) {
        for (x, y) in a.iter_mut().zip(b.iter()) {
            *x += y;
        }
    }
    into.detected += from.detected;
    into.integrity_errors += from.integrity_errors;
    into.not_allowed += from.not_allowed;
}

/// Base64 runs of `text` whose decoded content holds a red-flag value are
/// replaced, whole, by the redaction token.
fn encoded_runs(
    spec: &RewriteSpec,
    text: &str,
    findings: &mut Vec<Finding>,
    counts: &mut Counts,
    out: &mut String,
    depth: u8,
    nested: NestedJson,
) -> bool {
    let mut changed = false;
    let mut last = 0;
    let mut rebuilt = String::new();
    let mut inner_out = String::new();
    for (start, end) in base64_runs(text.as_bytes()) {
        let run = &text[start..end];
        let holds = run.split('.').any(|segment| {
            let Some(decoded) = decode_base64(segment) else {
                return false;
            };
            let Ok(decoded) = std::str::from_utf8(&decoded) else {
                return false;
            };
            mask_at_depth(
                spec,
                decoded,
                findings,
                counts,
                &mut inner_out,
                depth + 1,
                nested,
            )
        });
        if holds {
            rebuilt.push_str(&text[last..start]);
            rebuilt.push_str(spec.rules.redact_token());
            last = end;
            changed = true;
        }
    }
    if changed {
        rebuilt.push_str(&text[last..]);
        out.clear();
        out.push_str(&rebuilt);
    }
    changed
}

/// Maximal runs of base64 / base64url bytes (dots included, for JWT-like
/// tokens) at least [`MIN_BASE64_RUN`] long that look encoded: at least half
/// letters, of both cases, and a digit, `+`, `/`, `-`, `_` or `=` or a
/// second lower-case letter.
fn base64_runs(text: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < text.len() {
            if BASE64_CLASS[usize::from(text[i])] == 0 {
                i += 1;
                continue;
            }
            let start = i;
            let (end, encoded) = scan_run(text, start);
            i = end;
            if encoded {
                return Some((start, end));
            }
        }
        None
    })
}

/// Decodes standard or URL-safe base64, padded or not; `None` when the text
/// is neither or decodes to nothing.
fn decode_base64(segment: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let trimmed = segment.trim_end_matches('=');
    if trimmed.len() < MIN_BASE64_RUN - 2 || trimmed.len() > MAX_DECODED_BYTES * 2 {
        return None;
    }
    let decoded = if trimmed.contains(['-', '_']) {
        URL_SAFE_NO_PAD.decode(trimmed).ok()
    } else {
        STANDARD_NO_PAD
            .decode(trimmed)
            .ok()
            .or_else(|| STANDARD.decode(segment).ok())
            .or_else(|| URL_SAFE.decode(segment).ok())
    }?;
    (!decoded.is_empty()).then_some(decoded)
}

/// The ASCII digit a Unicode decimal digit (or superscript/subscript digit)
/// stands for.
fn digit_value(c: char) -> Option<u8> {
    const ZEROS: &[u32] = &[
        0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6,
        0x0D66, 0x0DE6, 0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0,
        0x1A80, 0x1A90, 0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0,
        0xAA50, 0xABF0, 0xFF10, 0x104A0, 0x11066, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6,
        0x1E950, 0x1FBF0, 0x2080,
    ];
    let cp = u32::from(c);
    for &zero in ZEROS {
        if (zero..zero + 10).contains(&cp) {
            return Some((cp - zero) as u8);
        }
    }
    match cp {
        0x2070 => Some(0),
        0x00B9 => Some(1),
        0x00B2 => Some(2),
        0x00B3 => Some(3),
        0x2074..=0x2079 => Some((cp - 0x2070) as u8),
        _ => None,
    }
}

/// Separators of other forms that join digit groups like their ASCII
/// counterparts.
fn separator_value(c: char) -> Option<char> {
    match c {
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => Some('-'),
        '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => Some(' '),
        '\u{FF0E}' | '\u{2024}' => Some('.'),
        '\u{FF0F}' | '\u{2215}' => Some('/'),
        _ => None,
    }
}

/// `text` with other digit forms and separators folded to ASCII; borrowed
/// when there is nothing to fold.
pub fn fold_digits(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut folded: Option<String> = None;
    for (i, c) in text.char_indices() {
        let ascii = digit_value(c)
            .map(|d| char::from(b'0' + d))
            .or_else(|| separator_value(c));
        match (ascii, &mut folded) {
            (Some(a), Some(f)) => f.push(a),
            (Some(a), None) => {
                let mut f = String::with_capacity(text.len());
                f.push_str(&text[..i]);
                f.push(a);
                folded = Some(f);
            }
            (None, Some(f)) => f.push(c),
            (None, None) => {}
        }
    }
    match folded {
        Some(f) => Cow::Owned(f),
        None => Cow::Borrowed(text),
    }
}

/// The action taken on a clear (not enveloped) value: `decrypt` has nothing
/// to decrypt there, so it masks.
pub(crate) fn effective_plain(action: Action) -> Action {
    match action {
        Action::Decrypt => Action::Last4,
        a => a,
    }
}

/// Writes `text` into `out` with every finding handled per `actions`.
/// Returns true when anything was changed.
pub(crate) fn apply_findings(
    text: &str,
    findings: &[Finding],
    actions: &ActionTable,
    redact: &str,
    counts: &mut Counts,
    out: &mut String,
) -> bool {
    let mut last = 0;
    let mut changed = false;
    for f in findings {
        let class = f.class();
        counts.detected += 1;
        let action = effective_plain(actions.get(class));
        counts.add(class, action);
        if action == Action::Clear {
            continue;
        }
        let (Some(before), Some(value)) = (text.get(last..f.start), text.get(f.start..f.end))
        else {
            // A finding off a character boundary: fail closed, hide the whole text.
            out.clear();
            out.push_str(redact);
            return true;
        };
        out.push_str(before);
        match action {
            Action::Redact | Action::Remove => out.push_str(redact),
            _ => mask::last4(value, out),
        }
        last = f.end;
        changed = true;
    }
    out.push_str(text.get(last..).unwrap_or(""));
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_digit_forms_fold_to_ascii() {
        assert_eq!(fold_digits("１２３－４５－６７８９"), "123-45-6789");
        assert_eq!(fold_digits("١٢٣-٤٥-٦٧٨٩"), "123-45-6789");
        assert_eq!(fold_digits("१२३ ४५ ६७८९"), "123 45 6789");
        assert_eq!(fold_digits("𝟏𝟐𝟑–𝟒𝟓–𝟔𝟕𝟖𝟗"), "123-45-6789");
        assert_eq!(fold_digits("née 12"), "née 12");
        assert!(matches!(fold_digits("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn base64_runs_skip_words_and_keep_tokens() {
        let text = b"Administration and eyJzc24iOiIxMjMtNDUtNjc4OSJ9 ok";
        let runs: Vec<_> = base64_runs(text).collect();
        assert_eq!(runs.len(), 1);
        let (s, e) = runs[0];
        let decoded = decode_base64(std::str::from_utf8(&text[s..e]).unwrap()).unwrap();
        assert_eq!(decoded, br#"{"ssn":"123-45-6789"}"#);
        assert!(may_hide_value(b"eyJzc24iOiIxMjMtNDUtNjc4OSJ9"));
        assert!(!may_hide_value(b"Jane Doe, 12 Elm St"));
    }
}
