//! Response header values: a short list of headers whose values say
//! nothing about a customer passes after a detector scan; every other value
//! (custom `X-*` headers, `Location` and other URLs, `Set-Cookie`,
//! `Content-Disposition` file names, `Link`, `Warning` …) is read as text
//! the way a body is, and what it holds is masked, or the header dropped.
//!
//! Pure core: a value in, a verdict out.
//!
//! How a value is read:
//! - Percent escapes are undone first (`123%2D45%2D6789` is an SSN), and a
//!   masked value that had escapes is written back escaped.
//! - The detectors run over `Name: value` with URL and cookie punctuation
//!   (`_ = & ? ; + , < > " '` and brackets) read as spaces, so keywords in
//!   the header's name (`X-Holder-DL`) or in a query or cookie key
//!   (`routing_number=`) anchor the keyword detectors.
//! - A header whose name names a class (`X-SSN`, after the `x-` prefix) is
//!   that class as a whole, and so is the value of every `key=value` pair
//!   (query parameter, cookie, `Link` parameter) whose key names a class.
//!
//! - Then the per-value core ([`super::value`]) looks into what the value may
//!   encode: a cookie or token holding base64, a JWT-like token or JSON with
//!   a red-flag value inside is replaced by the redaction token.
//!
//! Headers never release a clear value: a role whose action for the class is
//! `clear` or `decrypt` still gets `last4` in a header (the unmask audit
//! record counts body values only); `redact` writes the redaction token and
//! `remove` drops the header. A value that is not visible ASCII text, or that
//! would not be a valid header value once masked, is dropped.

use super::mask;
use super::{Counts, RewriteSpec};
use crate::class::{Action, FieldClass};
use crate::detect::Finding;

/// Headers passed as they are once the detectors find nothing in them:
/// their values are dates, sizes, tokens and lists of names.
const PLAIN_HEADERS: [&str; 16] = [
    "accept-ranges",
    "age",
    "cache-control",
    "content-encoding",
    "content-language",
    "content-length",
    "content-type",
    "date",
    "etag",
    "expires",
    "last-modified",
    "pragma",
    "retry-after",
    "strict-transport-security",
    "vary",
    "x-request-id",
];

/// What happens to one header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderVerdict {
    /// Sent as it is.
    Keep,
    /// Sent with this value instead.
    Replace(String),
    /// Not sent.
    Drop,
}

/// True when `name` (lower case) is on the short list of headers whose
/// values are only scanned by the detectors.
pub fn is_plain_header(name: &str) -> bool {
    PLAIN_HEADERS.contains(&name)
}

/// A value with its percent escapes undone: the decoded bytes, and for
/// each of them the range of raw bytes it came from.
struct Decoded {
    bytes: Vec<u8>,
    raw: Vec<(usize, usize)>,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(raw: &[u8]) -> Decoded {
    let mut d = Decoded {
        bytes: Vec::with_capacity(raw.len()),
        raw: Vec::with_capacity(raw.len()),
    };
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            if let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) {
                d.bytes.push(h << 4 | l);
                d.raw.push((i, i + 3));
                i += 3;
                continue;
            }
        }
        d.bytes.push(raw[i]);
        d.raw.push((i, i + 1));
        i += 1;
    }
    d
}

/// Punctuation read as a space by the detectors (one byte for one byte, so
/// offsets are kept).
fn separator(b: u8) -> bool {
    matches!(
        b,
        b'_' | b'='
            | b'&'
            | b'?'
            | b';'
            | b'+'
            | b','
            | b'<'
            | b'>'
            | b'"'
            | b'\''
            | b'('
            | b')'
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'|'
            | b'/'
            | b'\\'
    )
}

/// A stretch of the decoded value to mask, and its class.
#[derive(Clone, Copy, Debug)]
struct Hit {
    start: usize,
    end: usize,
    class: FieldClass,
}

/// The class a header name, query key or cookie name names, if any.
fn named_class(spec: &RewriteSpec, name: &[u8]) -> Option<FieldClass> {
    let rules = &spec.rules;
    let m = rules.match_key(name, rules.root_nodes());
    if m.class.is_some() {
        return m.class;
    }
    let lower = name.to_ascii_lowercase();
    let stripped = lower.strip_prefix(b"x-")?;
    rules.match_key(stripped, rules.root_nodes()).class
}

/// The values of `key=value` pairs whose key names a class.
fn named_pairs(spec: &RewriteSpec, decoded: &[u8], hits: &mut Vec<Hit>) {
    let is_break = |b: u8| matches!(b, b'&' | b'?' | b';' | b',' | b' ' | b'\t' | b'<' | b'>');
    let mut i = 0;
    while i < decoded.len() {
        while i < decoded.len() && is_break(decoded[i]) {
            i += 1;
        }
        let start = i;
        while i < decoded.len() && !is_break(decoded[i]) {
            i += 1;
        }
        let token = &decoded[start..i];
        let Some(eq) = token.iter().position(|&b| b == b'=') else {
            continue;
        };
        let key = &token[..eq];
        let mut v_start = start + eq + 1;
        let mut v_end = i;
        while v_start < v_end && decoded[v_start] == b'"' {
            v_start += 1;
        }
        while v_end > v_start && decoded[v_end - 1] == b'"' {
            v_end -= 1;
        }
        if v_start == v_end || key.is_empty() {
            continue;
        }
        if let Some(class) = named_class(spec, key) {
            hits.push(Hit {
                start: v_start,
                end: v_end,
                class,
            });
        }
    }
}

/// The action a header gets for `class`: never clear.
fn header_action(spec: &RewriteSpec, class: FieldClass) -> Action {
    match spec.actions.get(class) {
        Action::Clear | Action::Decrypt | Action::Last4 => Action::Last4,
        other => other,
    }
}

/// `spec` with every class's action as a header gets it.
fn header_spec(spec: &RewriteSpec) -> RewriteSpec {
    let mut s = spec.clone();
    for class in FieldClass::ALL {
        s.actions.set(class, header_action(spec, class));
    }
    s
}

/// The value after the per-value core has looked into what it may encode
/// (base64 and JWT-like tokens, JSON): `None` when it changed nothing.
fn mask_encoded(spec: &RewriteSpec, value: &str) -> Option<String> {
    if !super::value::may_hide_value(value.as_bytes()) {
        return None;
    }
    let spec = header_spec(spec);
    let mut findings = Vec::new();
    let mut counts = Counts::default();
    let mut out = String::new();
    super::value::mask_unnamed(
        &spec,
        value,
        &mut findings,
        &mut counts,
        &mut out,
        super::json::rewrite_nested,
    )
    .then_some(out)
}

/// Decides what happens to the value of response header `name` (lower
/// case); see the module docs.
pub fn protect_header(spec: &RewriteSpec, name: &str, value: &[u8]) -> HeaderVerdict {
    let verdict = protect_header_text(spec, name, value);
    if is_plain_header(name) {
        return verdict;
    }
    let current = match &verdict {
        HeaderVerdict::Drop => return verdict,
        HeaderVerdict::Replace(v) => v.as_str(),
        HeaderVerdict::Keep => match std::str::from_utf8(value) {
            Ok(v) => v,
            Err(_) => return HeaderVerdict::Drop,
        },
    };
    match mask_encoded(spec, current) {
        None => verdict,
        Some(masked)
            if masked
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) =>
        {
            HeaderVerdict::Replace(masked)
        }
        Some(_) => HeaderVerdict::Drop,
    }
}

fn protect_header_text(spec: &RewriteSpec, name: &str, value: &[u8]) -> HeaderVerdict {
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return HeaderVerdict::Drop;
    }
    let plain = is_plain_header(name);
    if plain && !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
        // A size or a delay in seconds.
        return HeaderVerdict::Keep;
    }
    let decoded = if plain {
        Decoded {
            bytes: value.to_vec(),
            raw: (0..value.len()).map(|i| (i, i + 1)).collect(),
        }
    } else {
        percent_decode(value)
    };
    let mut hits: Vec<Hit> = Vec::new();
    if !plain {
        if let Some(class) = named_class(spec, name.as_bytes()) {
            if !decoded.bytes.is_empty() {
                hits.push(Hit {
                    start: 0,
                    end: decoded.bytes.len(),
                    class,
                });
            }
        }
        named_pairs(spec, &decoded.bytes, &mut hits);
    }
    // Detectors over "Name: value", punctuation read as spaces.
    let mut text: Vec<u8> = name
        .bytes()
        .map(|b| if b == b'-' { b' ' } else { b })
        .collect();
    text.extend_from_slice(b": ");
    let offset = text.len();
    text.extend(
        decoded
            .bytes
            .iter()
            .map(|&b| if !plain && separator(b) { b' ' } else { b }),
    );
    let mut findings: Vec<Finding> = Vec::new();
    spec.detectors
        .scan(&text, spec.rules.detector_set(), &mut findings);
    for f in findings {
        if f.start >= offset {
            hits.push(Hit {
                start: f.start - offset,
                end: f.end - offset,
                class: f.class(),
            });
        }
    }
    if hits.is_empty() {
        return HeaderVerdict::Keep;
    }
    if hits
        .iter()
        .any(|h| header_action(spec, h.class) == Action::Remove)
    {
        return HeaderVerdict::Drop;
    }
    // Overlapping hits merge; the first one's class decides the action.
    hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    let mut merged: Vec<Hit> = Vec::with_capacity(hits.len());
    for h in hits {
        match merged.last_mut() {
            Some(last) if h.start < last.end => last.end = last.end.max(h.end),
            _ => merged.push(h),
        }
    }
    let mut out = String::with_capacity(value.len());
    let mut raw_at = 0;
    for h in merged {
        let (Some(&(raw_start, _)), Some(&(_, raw_end))) =
            (decoded.raw.get(h.start), decoded.raw.get(h.end - 1))
        else {
            return HeaderVerdict::Drop;
        };
        let Some(before) = value.get(raw_at..raw_start) else {
            return HeaderVerdict::Drop;
        };
        out.push_str(&String::from_utf8_lossy(before));
        let shown = String::from_utf8_lossy(&decoded.bytes[h.start..h.end]);
        let mut masked = String::new();
        match header_action(spec, h.class) {
            Action::Redact => masked.push_str(spec.rules.redact_token()),
            _ => mask::last4(&shown, &mut masked),
        }
        let escaped = raw_end - raw_start != h.end - h.start;
        for c in masked.chars() {
            if escaped && !(c.is_ascii_alphanumeric() || c == '*') {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            } else {
                out.push(c);
            }
        }
        raw_at = raw_end;
    }
    out.push_str(&String::from_utf8_lossy(value.get(raw_at..).unwrap_or(b"")));
    if !out.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return HeaderVerdict::Drop;
    }
    HeaderVerdict::Replace(out)
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
