//! Value transforms: format-preserving masks, redaction tokens, JSON string
//! encoding and decoding, and the card envelope's public part.

use std::borrow::Cow;

/// Fewest letters and digits a value must have before `last4` shows any of
/// them: below this, showing four would reveal most of the value, so every
/// character is masked.
pub const LAST4_MIN_ALNUM: usize = 8;

/// How many characters a masked envelope shows as stars before its last four.
const ENVELOPE_MASK_STARS: usize = 12;

/// Masks every letter and digit of `value` with `*` except the last four,
/// keeping separators (`123-45-6789` → `***-**-6789`). Values with fewer than
/// [`LAST4_MIN_ALNUM`] letters and digits are masked completely.
pub fn last4(value: &str, out: &mut String) {
    let alnum = value.chars().filter(|c| c.is_alphanumeric()).count();
    let keep_from = if alnum >= LAST4_MIN_ALNUM {
        alnum - 4
    } else {
        usize::MAX
    };
    let mut seen = 0;
    for c in value.chars() {
        if c.is_alphanumeric() {
            out.push(if seen >= keep_from { c } else { '*' });
            seen += 1;
        } else {
            out.push(c);
        }
    }
}

/// [`last4`] for the raw content of a JSON string that has no escapes and
/// only ASCII bytes, written straight out as a JSON string. Returns false
/// (writing nothing) for anything else.
pub fn last4_ascii_json(inner: &[u8], out: &mut Vec<u8>) -> bool {
    if !inner.is_ascii() || memchr::memchr(b'\\', inner).is_some() {
        return false;
    }
    let alnum = inner.iter().filter(|b| b.is_ascii_alphanumeric()).count();
    let hide = if alnum >= LAST4_MIN_ALNUM {
        alnum - 4
    } else {
        alnum
    };
    out.push(b'"');
    let start = out.len();
    out.extend_from_slice(inner);
    let mut left = hide;
    for b in &mut out[start..] {
        if left == 0 {
            break;
        }
        if b.is_ascii_alphanumeric() {
            *b = b'*';
            left -= 1;
        }
    }
    out.push(b'"');
    true
}

/// The public parts of an `mg1.` or `mg2.` card envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeView<'a> {
    /// Key id.
    pub key_id: &'a str,
    /// Last four characters of the plaintext, stored outside the ciphertext.
    pub last4: &'a str,
}

/// The prefix of an unbound envelope.
pub const ENVELOPE_PREFIX: &str = "mg1.";
/// The prefix of an envelope bound to its account.
pub const BOUND_ENVELOPE_PREFIX: &str = "mg2.";

/// True when `value` claims to be an envelope (it may still be damaged).
pub fn looks_like_envelope(value: &str) -> bool {
    starts_like_envelope(value.as_bytes())
}

/// True when `bytes` start like an envelope of either version.
pub fn starts_like_envelope(bytes: &[u8]) -> bool {
    bytes.starts_with(ENVELOPE_PREFIX.as_bytes())
        || bytes.starts_with(BOUND_ENVELOPE_PREFIX.as_bytes())
}

/// Splits an envelope's public parts without touching a key. Returns `None`
/// for anything malformed (which the caller masks and counts as an integrity
/// error, never shows raw).
pub fn envelope_view(value: &str) -> Option<EnvelopeView<'_>> {
    let rest = value
        .strip_prefix(ENVELOPE_PREFIX)
        .or_else(|| value.strip_prefix(BOUND_ENVELOPE_PREFIX))?;
    let mut parts = rest.split('.');
    let key_id = parts.next()?;
    let last4 = parts.next()?;
    let body = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let key_id_ok = !key_id.is_empty()
        && key_id.len() <= 64
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let last4_ok = last4.len() == 4 && last4.bytes().all(|b| b.is_ascii_alphanumeric());
    let body_ok = body.len() >= 40
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (key_id_ok && last4_ok && body_ok).then_some(EnvelopeView { key_id, last4 })
}

/// The masked display of a well-formed envelope: `************1111`.
pub fn masked_envelope(view: &EnvelopeView<'_>, out: &mut String) {
    out.extend(std::iter::repeat_n('*', ENVELOPE_MASK_STARS));
    out.push_str(view.last4);
}

/// The masked display of a damaged envelope: nothing of it is shown.
pub const DAMAGED_ENVELOPE_MASK: &str = "****************";

/// Appends `s` to `out` as a JSON string literal (with quotes).
pub fn write_json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Why a JSON string's content could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

fn hex4(b: &[u8]) -> Option<u32> {
    if b.len() < 4 {
        return None;
    }
    let mut v = 0u32;
    for &c in &b[..4] {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

/// Decodes the content of a JSON string (between the quotes). Escapes are
/// resolved; an unpaired surrogate becomes U+FFFD. Content without a backslash
/// is borrowed.
pub fn decode_json_string(raw: &[u8]) -> Result<Cow<'_, str>, DecodeError> {
    if memchr::memchr(b'\\', raw).is_none() {
        return std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|_| DecodeError);
    }
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let next = memchr::memchr(b'\\', &raw[i..]).map_or(raw.len(), |j| i + j);
        out.push_str(std::str::from_utf8(&raw[i..next]).map_err(|_| DecodeError)?);
        if next == raw.len() {
            break;
        }
        let esc = *raw.get(next + 1).ok_or(DecodeError)?;
        i = next + 2;
        let c = match esc {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(&raw[i..]).ok_or(DecodeError)?;
                i += 4;
                if (0xD800..0xDC00).contains(&hi) {
                    let lo = if raw.get(i) == Some(&b'\\') && raw.get(i + 1) == Some(&b'u') {
                        hex4(&raw[i + 2..]).filter(|lo| (0xDC00..0xE000).contains(lo))
                    } else {
                        None
                    };
                    match lo {
                        Some(lo) => {
                            i += 6;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
                                .unwrap_or('\u{FFFD}')
                        }
                        None => '\u{FFFD}',
                    }
                } else {
                    char::from_u32(hi).unwrap_or('\u{FFFD}')
                }
            }
            _ => return Err(DecodeError),
        };
        out.push(c);
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> String {
        let mut out = String::new();
        last4(s, &mut out);
        out
    }

    #[test]
    fn last4_keeps_shape() {
        assert_eq!(m("123-45-6789"), "***-**-6789");
        assert_eq!(m("4111 1111 1111 1111"), "**** **** **** 1111");
        assert_eq!(m("A1234567"), "****4567");
        assert_eq!(m("123456789"), "*****6789");
        assert_eq!(m("12/27"), "**/**");
        assert_eq!(m("1234"), "****");
        assert_eq!(m(""), "");
    }

    #[test]
    fn ascii_fast_path_agrees_with_last4() {
        for s in [
            "123-45-6789",
            "4111 1111 1111 1111",
            "A1234567",
            "12/27",
            "",
            "a b",
        ] {
            let mut fast = Vec::new();
            assert!(last4_ascii_json(s.as_bytes(), &mut fast));
            let mut slow = Vec::new();
            write_json_string(&m(s), &mut slow);
            assert_eq!(fast, slow, "{s}");
        }
        let mut out = Vec::new();
        assert!(!last4_ascii_json("é1234567".as_bytes(), &mut out));
        assert!(!last4_ascii_json(br"12\n34", &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn envelopes_parse_only_when_well_formed() {
        let body = "A".repeat(60);
        let good = format!("mg1.k1.1111.{body}");
        let v = envelope_view(&good).unwrap();
        assert_eq!(v.last4, "1111");
        let mut s = String::new();
        masked_envelope(&v, &mut s);
        assert_eq!(s, "************1111");
        for bad in [
            "mg1.k1.1111".to_owned(),
            format!("mg1..1111.{body}"),
            format!("mg1.k1.111.{body}"),
            format!("mg1.k1.1111.{body}.x"),
            format!("mg1.k1.1111.{}", "A".repeat(10)),
            format!("mg1.k 1.1111.{body}"),
        ] {
            assert!(envelope_view(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn strings_round_trip() {
        for s in ["plain", "q\"b\\s\n\t\u{1}\u{7f}é😀", ""] {
            let mut enc = Vec::new();
            write_json_string(s, &mut enc);
            let back: String = serde_json::from_slice(&enc).unwrap();
            assert_eq!(back, s);
            let dec = decode_json_string(&enc[1..enc.len() - 1]).unwrap();
            assert_eq!(dec, s);
        }
        assert_eq!(decode_json_string(br"\ud83d\ude00").unwrap(), "😀");
        assert_eq!(decode_json_string(br"\ud83d").unwrap(), "\u{FFFD}");
        assert_eq!(decode_json_string(br"\u0031\u0032").unwrap(), "12");
        assert!(decode_json_string(br"\x").is_err());
    }
}
