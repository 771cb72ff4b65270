//! Which rewriter a response body gets, from its `Content-Type` and
//! `Content-Encoding`.
//!
//! Fail closed: a body whose type maskgate cannot rewrite (or whose type is
//! missing, malformed, or in a charset other than UTF-8) is refused by the
//! gateway, unless the role lists its type as passed through unread.

use super::csv::CsvRewriter;
use super::encoding::DecodingRewriter;
pub use super::encoding::{parse_content_encoding, Coding, DecodeLimits};
use super::sniff::{Declared, SniffingRewriter};
use super::{BodyRewriter, RewriteSpec};

/// How a body is rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// One JSON document (an empty body is allowed).
    Json,
    /// Newline-delimited JSON values.
    Ndjson,
    /// CSV with a header row.
    Csv,
    /// Plain text: detectors only.
    Text,
    /// A type the role passes through unread.
    Passthrough,
}

/// Why a body's `Content-Type` cannot be rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsupportedContentType {
    /// The response has no `Content-Type`.
    #[error("response has no content type")]
    Missing,
    /// The `Content-Type` is not a valid media type.
    #[error("content type is malformed")]
    Malformed,
    /// The media type is one maskgate cannot rewrite and the role does not
    /// pass through.
    #[error("content type cannot be rewritten")]
    Type,
    /// The `charset` parameter names something other than UTF-8 (or US-ASCII),
    /// or is given twice.
    #[error("content type charset is not UTF-8")]
    Charset,
    /// A CSV body declared to have no header row (`header=absent`): its
    /// columns cannot be named.
    #[error("CSV without a header row")]
    CsvWithoutHeader,
}

/// A parsed media type: lower-cased type and subtype, and the parameters
/// that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
struct MediaType {
    ty: String,
    subtype: String,
    charset: Option<String>,
    charsets: usize,
    csv_header: Option<String>,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Reads a token starting at `*i`; returns it (empty when there is none).
fn token<'a>(s: &'a str, i: &mut usize) -> &'a str {
    let start = *i;
    while s.as_bytes().get(*i).is_some_and(|&b| is_tchar(b)) {
        *i += 1;
    }
    s.get(start..*i).unwrap_or("")
}

/// Parses `type "/" subtype *( OWS ";" OWS [ name "=" value ] )` (RFC 9110
/// §8.3.1), values being tokens or quoted strings.
fn parse_media_type(s: &str) -> Option<MediaType> {
    let s = s.trim_matches([' ', '\t']);
    let b = s.as_bytes();
    let mut i = 0;
    let ty = token(s, &mut i);
    if ty.is_empty() || b.get(i) != Some(&b'/') {
        return None;
    }
    i += 1;
    let subtype = token(s, &mut i);
    if subtype.is_empty() {
        return None;
    }
    let mut mt = MediaType {
        ty: ty.to_ascii_lowercase(),
        subtype: subtype.to_ascii_lowercase(),
        ..MediaType::default()
    };
    loop {
        while b.get(i).is_some_and(|&c| is_ows(c)) {
            i += 1;
        }
        match b.get(i) {
            None => return Some(mt),
            Some(b';') => i += 1,
            Some(_) => return None,
        }
        while b.get(i).is_some_and(|&c| is_ows(c)) {
            i += 1;
        }
        if matches!(b.get(i), None | Some(b';')) {
            continue;
        }
        let name = token(s, &mut i).to_ascii_lowercase();
        if name.is_empty() || b.get(i) != Some(&b'=') {
            return None;
        }
        i += 1;
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = String::new();
            loop {
                match b.get(i) {
                    None => return None,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let &c = b.get(i + 1)?;
                        if !(c == b'\t' || (0x20..0x7f).contains(&c)) {
                            return None;
                        }
                        v.push(char::from(c));
                        i += 2;
                    }
                    Some(&c) => {
                        if !(c == b'\t' || (0x20..0x7f).contains(&c)) {
                            return None;
                        }
                        v.push(char::from(c));
                        i += 1;
                    }
                }
            }
            v
        } else {
            let v = token(s, &mut i);
            if v.is_empty() {
                return None;
            }
            v.to_owned()
        };
        match name.as_str() {
            "charset" => {
                mt.charsets += 1;
                mt.charset = Some(value.to_ascii_lowercase());
            }
            "header" => mt.csv_header = Some(value.to_ascii_lowercase()),
            _ => {}
        }
    }
}

/// True when the passthrough entry `pattern` (`type/subtype` or `type/*`,
/// parameters ignored) names `mt`.
fn passthrough_matches(pattern: &str, mt: &MediaType) -> bool {
    let Some(p) = parse_media_type(pattern) else {
        return false;
    };
    p.ty == mt.ty && (p.subtype == "*" || p.subtype == mt.subtype)
}

/// Every media type maskgate rewrites, and how: the one table both the
/// response path ([`body_kind`]) and the policy check on pass-through types
/// ([`may_carry_red_flags`]) read. Besides these, `application/*+json` (such
/// as `application/problem+json`, `application/vnd.api+json`) is JSON.
const MEDIA_TYPES: [(&str, &str, BodyKind); 14] = [
    ("application", "json", BodyKind::Json),
    ("text", "json", BodyKind::Json),
    ("application", "x-ndjson", BodyKind::Ndjson),
    ("application", "ndjson", BodyKind::Ndjson),
    ("application", "jsonl", BodyKind::Ndjson),
    ("application", "jsonlines", BodyKind::Ndjson),
    ("application", "x-jsonlines", BodyKind::Ndjson),
    ("text", "x-ndjson", BodyKind::Ndjson),
    ("text", "csv", BodyKind::Csv),
    ("application", "csv", BodyKind::Csv),
    ("text", "x-csv", BodyKind::Csv),
    ("text", "tab-separated-values", BodyKind::Csv),
    ("text", "plain", BodyKind::Text),
    ("text", "x-log", BodyKind::Text),
];

/// How a body of media type `ty`/`subtype` (lower case) is rewritten, if
/// maskgate rewrites it.
fn rewritable_kind(ty: &str, subtype: &str) -> Option<BodyKind> {
    if let Some(&(_, _, kind)) = MEDIA_TYPES
        .iter()
        .find(|(t, s, _)| *t == ty && *s == subtype)
    {
        return Some(kind);
    }
    (ty == "application" && subtype.len() > "+json".len() && subtype.ends_with("+json"))
        .then_some(BodyKind::Json)
}

/// True when a body of `media_type` (`type/subtype`, parameters ignored)
/// can carry red-flag values readably: a type maskgate rewrites, or any
/// other `text/*`. Such a type may not pass through a red-flag route
/// unrewritten.
pub fn may_carry_red_flags(media_type: &str) -> bool {
    match parse_media_type(media_type) {
        Some(mt) => mt.ty == "text" || rewritable_kind(&mt.ty, &mt.subtype).is_some(),
        // Not a media type at all: no pass-through entry can match it.
        None => false,
    }
}

/// The kind of rewriting a body of `content_type` gets.
///
/// Type and subtype are case-insensitive and parameters other than `charset`
/// (and CSV's `header`) are ignored. The types in `MEDIA_TYPES` and
/// `application/*+json` are rewritten (JSON, NDJSON, CSV or text; a body
/// whose declared type is wrong is caught by sniffing, see
/// [`super::sniff`]); a type named in `passthrough_types` (`type/subtype`
/// or `type/*`) is [`BodyKind::Passthrough`] (the rewritable types are
/// rewritten even if listed there).
///
/// A rewritable type with a `charset` other than `utf-8` or `us-ascii` is
/// refused, as is a missing, malformed or any other type.
pub fn body_kind(
    content_type: Option<&str>,
    passthrough_types: &[String],
) -> Result<BodyKind, UnsupportedContentType> {
    let raw = content_type.ok_or(UnsupportedContentType::Missing)?;
    let mt = parse_media_type(raw).ok_or(UnsupportedContentType::Malformed)?;
    let Some(kind) = rewritable_kind(&mt.ty, &mt.subtype) else {
        return if passthrough_types
            .iter()
            .any(|p| passthrough_matches(p, &mt))
        {
            Ok(BodyKind::Passthrough)
        } else {
            Err(UnsupportedContentType::Type)
        };
    };
    if mt.charsets > 1
        || mt
            .charset
            .as_deref()
            .is_some_and(|c| c != "utf-8" && c != "us-ascii")
    {
        return Err(UnsupportedContentType::Charset);
    }
    if kind == BodyKind::Csv && mt.csv_header.as_deref() == Some("absent") {
        return Err(UnsupportedContentType::CsvWithoutHeader);
    }
    Ok(kind)
}

/// Builds the rewriter for a body of `kind` whose `Content-Encoding` is
/// `codings` (in the order applied, as [`parse_content_encoding`] returns
/// them): the kind's rewriter wrapped in one [`DecodingRewriter`] per
/// coding, the last applied coding outermost. `None` for
/// [`BodyKind::Passthrough`]. JSON, NDJSON and text bodies are sniffed
/// ([`super::sniff`]): one whose declared type is wrong is rewritten by the
/// rewriter that can read it.
pub fn rewriter_for(
    kind: BodyKind,
    spec: RewriteSpec,
    codings: &[Coding],
    decode_limits: DecodeLimits,
) -> Option<Box<dyn BodyRewriter>> {
    let mut rw: Box<dyn BodyRewriter> = match kind {
        BodyKind::Json => Box::new(SniffingRewriter::new(Declared::Json, spec)),
        BodyKind::Ndjson => Box::new(SniffingRewriter::new(Declared::Ndjson, spec)),
        BodyKind::Csv => Box::new(CsvRewriter::new(spec)),
        BodyKind::Text => Box::new(SniffingRewriter::new(Declared::Text, spec)),
        BodyKind::Passthrough => return None,
    };
    for &coding in codings {
        rw = Box::new(DecodingRewriter::new(coding, rw, decode_limits));
    }
    Some(rw)
}

#[cfg(test)]
#[path = "content_tests.rs"]
mod tests;
