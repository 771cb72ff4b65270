//! The unmask request a caller makes with headers: which classes
//! (`X-Unmask`), why (`X-Unmask-Reason`) and under which decrypt grant
//! (`X-Unmask-Grant`).
//!
//! Nothing here repeats a header value in an error: a caller who pastes an
//! SSN into a header must not find it in a log line.

use http::header::{HeaderMap, HeaderName};

use crate::audit::record::{clean_reason, fold_digits, MAX_REASON_CHARS};
use crate::class::FieldClass;

/// `X-Unmask: ssn, card_number`: the classes asked for.
pub const HEADER_UNMASK: HeaderName = HeaderName::from_static("x-unmask");
/// `X-Unmask-Reason: <text>`: why; recorded in the audit log.
pub const HEADER_REASON: HeaderName = HeaderName::from_static("x-unmask-reason");
/// `X-Unmask-Grant: <id>`: the decrypt grant to use.
pub const HEADER_GRANT: HeaderName = HeaderName::from_static("x-unmask-grant");

/// Length of a grant id: 128 random bits as lower-case hex.
pub const GRANT_ID_HEX_LEN: usize = 32;

/// A parsed, well-formed unmask request. Whether it is *allowed* is
/// [`crate::unmask::evaluate`]'s question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// The classes asked for: at least one, no duplicates, in
    /// [`FieldClass::ALL`] order.
    pub classes: Vec<FieldClass>,
    /// The reason, trimmed; `None` when absent or blank. Printable, at most
    /// [`MAX_REASON_CHARS`] characters, and free of SSN/EIN/ITIN- or
    /// card-shaped digit runs and of runs of 9 or more digits.
    pub reason: Option<String>,
    /// The decrypt grant id, lower-case hex, when one was given.
    pub grant_id: Option<String>,
}

/// Why the unmask headers could not be read. The gateway answers 400; no
/// variant carries the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnmaskError {
    /// A header was sent more than once.
    #[error("header {0} was sent more than once; send it once (list classes comma-separated)")]
    Repeated(&'static str),
    /// `X-Unmask-Reason` or `X-Unmask-Grant` without `X-Unmask`.
    #[error("X-Unmask-Reason and X-Unmask-Grant need X-Unmask naming the classes to unmask")]
    WithoutUnmask,
    /// A header value is not text (not UTF-8, or non-ASCII where only ASCII
    /// is allowed).
    #[error("header {0} is not valid text")]
    NotText(&'static str),
    /// `X-Unmask` names no class.
    #[error("X-Unmask names no class; list class names such as `ssn, card_number`")]
    NoClasses,
    /// `X-Unmask` names something that is not a class (not repeated here).
    #[error("X-Unmask names an unknown class; the classes are ssn, tin, dln, passport, card_number, card_expiry, bank_account, bank_routing, dob")]
    UnknownClass,
    /// The reason holds a control character.
    #[error("X-Unmask-Reason holds a control character; send printable text")]
    ReasonNotPrintable,
    /// The reason is longer than [`MAX_REASON_CHARS`].
    #[error("X-Unmask-Reason is longer than 512 characters; shorten it")]
    ReasonTooLong,
    /// The reason holds what looks like a red-flag value.
    #[error("X-Unmask-Reason holds digits shaped like an SSN, tax id, card or account number; give a case or ticket reference instead, never the value")]
    ReasonRedFlag,
    /// `X-Unmask-Grant` is not a grant id (32 hexadecimal characters).
    #[error("X-Unmask-Grant is not a grant id (32 hexadecimal characters)")]
    BadGrantId,
}

impl UnmaskError {
    /// A short stable code for the JSON error body and the audit record.
    pub const fn code(self) -> &'static str {
        match self {
            UnmaskError::Repeated(_) => "unmask_header_repeated",
            UnmaskError::WithoutUnmask => "unmask_header_missing",
            UnmaskError::NotText(_) => "unmask_header_not_text",
            UnmaskError::NoClasses => "unmask_no_class",
            UnmaskError::UnknownClass => "unmask_unknown_class",
            UnmaskError::ReasonNotPrintable => "reason_not_printable",
            UnmaskError::ReasonTooLong => "reason_too_long",
            UnmaskError::ReasonRedFlag => "reason_red_flag_value",
            UnmaskError::BadGrantId => "grant_id_malformed",
        }
    }
}

/// The single value of header `name`, if any.
fn single<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    shown: &'static str,
) -> Result<Option<&'h [u8]>, UnmaskError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(UnmaskError::Repeated(shown));
    }
    Ok(first.map(|v| v.as_bytes()))
}

impl UnmaskRequest {
    /// Reads the unmask headers. `Ok(None)` when there is no `X-Unmask`
    /// (and neither of the other two): an ordinary, masked request.
    ///
    /// Class names are compared ASCII case-insensitively and may repeat;
    /// empty list items are skipped. A blank reason counts as none. The
    /// grant id is trimmed and lower-cased.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<UnmaskRequest>, UnmaskError> {
        let unmask = single(headers, &HEADER_UNMASK, "X-Unmask")?;
        let reason = single(headers, &HEADER_REASON, "X-Unmask-Reason")?;
        let grant = single(headers, &HEADER_GRANT, "X-Unmask-Grant")?;
        let Some(unmask) = unmask else {
            if reason.is_some() || grant.is_some() {
                return Err(UnmaskError::WithoutUnmask);
            }
            return Ok(None);
        };
        let classes = parse_classes(unmask)?;
        let reason = match reason {
            None => None,
            Some(bytes) => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| UnmaskError::NotText("X-Unmask-Reason"))?;
                check_reason(text)?
            }
        };
        let grant_id = grant.map(parse_grant_id).transpose()?;
        Ok(Some(UnmaskRequest {
            classes,
            reason,
            grant_id,
        }))
    }

    /// The class names, for audit records.
    pub fn class_names(&self) -> Vec<&'static str> {
        self.classes.iter().map(|c| c.name()).collect()
    }
}

fn parse_classes(bytes: &[u8]) -> Result<Vec<FieldClass>, UnmaskError> {
    if !bytes.is_ascii() {
        return Err(UnmaskError::NotText("X-Unmask"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| UnmaskError::NotText("X-Unmask"))?;
    let mut classes = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let class =
            FieldClass::from_name(&item.to_ascii_lowercase()).ok_or(UnmaskError::UnknownClass)?;
        if !classes.contains(&class) {
            classes.push(class);
        }
    }
    if classes.is_empty() {
        return Err(UnmaskError::NoClasses);
    }
    classes.sort_unstable();
    Ok(classes)
}

/// Checks a grant id's shape and lower-cases it.
pub(crate) fn parse_grant_id(bytes: &[u8]) -> Result<String, UnmaskError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| UnmaskError::BadGrantId)?
        .trim();
    if text.len() != GRANT_ID_HEX_LEN || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UnmaskError::BadGrantId);
    }
    Ok(text.to_ascii_lowercase())
}

/// Checks a reason (from a header, or given with a grant): trims it; `None`
/// when blank. Refuses control characters, more than [`MAX_REASON_CHARS`]
/// characters, and red-flag-shaped digits: anything the audit core's
/// [`clean_reason`] would scrub (whatever a detector finds, and any run of
/// 9 or more digits joined by `-`, `.`, `/` or spaces, in any script's
/// digits). A reference such as `COLL-2026-00042` passes. Returns the
/// reason with its digits folded to ASCII ([`fold_digits`]).
pub fn check_reason(raw: &str) -> Result<Option<String>, UnmaskError> {
    let text = raw.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().any(char::is_control) {
        return Err(UnmaskError::ReasonNotPrintable);
    }
    if text.chars().count() > MAX_REASON_CHARS {
        return Err(UnmaskError::ReasonTooLong);
    }
    // Compared in the folded form clean_reason writes: only its scrubbing
    // counts, not the folding of full-width digits.
    let folded = fold_digits(text);
    if has_long_digit_run(&folded, 9) || clean_reason(text) != folded {
        return Err(UnmaskError::ReasonRedFlag);
    }
    Ok(Some(folded))
}

/// True when `text` has `n` or more consecutive ASCII digits.
fn has_long_digit_run(text: &str, n: usize) -> bool {
    let mut run = 0;
    for b in text.bytes() {
        if b.is_ascii_digit() {
            run += 1;
            if run >= n {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(list: &[(&HeaderName, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in list {
            h.append((*name).clone(), HeaderValue::from_bytes(value).unwrap());
        }
        h
    }

    fn parse(list: &[(&HeaderName, &[u8])]) -> Result<Option<UnmaskRequest>, UnmaskError> {
        UnmaskRequest::from_headers(&headers(list))
    }

    #[test]
    fn no_unmask_header_is_an_ordinary_request() {
        assert_eq!(parse(&[]), Ok(None));
        let other = HeaderName::from_static("x-other");
        assert_eq!(parse(&[(&other, b"ssn")]), Ok(None));
        assert_eq!(
            parse(&[(&HEADER_REASON, b"COLL-2026-00042 transfer")]),
            Err(UnmaskError::WithoutUnmask)
        );
        assert_eq!(
            parse(&[(&HEADER_GRANT, b"00112233445566778899aabbccddeeff")]),
            Err(UnmaskError::WithoutUnmask)
        );
    }

    #[test]
    fn classes_reason_and_grant_are_read() {
        let r = parse(&[
            (&HEADER_UNMASK, b" Card_Number, ssn,,ssn "),
            (&HEADER_REASON, b"  COLL-2026-00042 agency transfer  "),
            (&HEADER_GRANT, b" 00112233445566778899AABBCCDDEEFF "),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(r.classes, [FieldClass::Ssn, FieldClass::CardNumber]);
        assert_eq!(r.class_names(), ["ssn", "card_number"]);
        assert_eq!(r.reason.as_deref(), Some("COLL-2026-00042 agency transfer"));
        assert_eq!(
            r.grant_id.as_deref(),
            Some("00112233445566778899aabbccddeeff")
        );
        let r = parse(&[(&HEADER_UNMASK, b"ssn"), (&HEADER_REASON, b"   ")])
            .unwrap()
            .unwrap();
        assert_eq!(r.reason, None);
        assert_eq!(r.grant_id, None);
        // UTF-8 reasons are fine
        let r = parse(&[
            (&HEADER_UNMASK, b"ssn"),
            (&HEADER_REASON, "COLL-2026-00042 cobro, señor".as_bytes()),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(r.reason.as_deref(), Some("COLL-2026-00042 cobro, señor"));
    }

    #[test]
    fn malformed_headers_are_refused_without_echo() {
        type Case<'a> = (&'a [(&'a HeaderName, &'a [u8])], UnmaskError);
        let cases: &[Case<'_>] = &[
            (&[(&HEADER_UNMASK, b"")], UnmaskError::NoClasses),
            (&[(&HEADER_UNMASK, b" , ,")], UnmaskError::NoClasses),
            (
                &[(&HEADER_UNMASK, b"ssn, 123-45-6789")],
                UnmaskError::UnknownClass,
            ),
            (&[(&HEADER_UNMASK, b"cvv")], UnmaskError::UnknownClass),
            (
                &[(&HEADER_UNMASK, b"ssn\xff")],
                UnmaskError::NotText("X-Unmask"),
            ),
            (
                &[(&HEADER_UNMASK, b"ssn"), (&HEADER_UNMASK, b"dob")],
                UnmaskError::Repeated("X-Unmask"),
            ),
            (
                &[
                    (&HEADER_UNMASK, b"ssn"),
                    (&HEADER_REASON, b"a"),
                    (&HEADER_REASON, b"b"),
                ],
                UnmaskError::Repeated("X-Unmask-Reason"),
            ),
            (
                &[(&HEADER_UNMASK, b"ssn"), (&HEADER_REASON, b"bad \xff\xfe")],
                UnmaskError::NotText("X-Unmask-Reason"),
            ),
            (
                &[(&HEADER_UNMASK, b"ssn"), (&HEADER_REASON, b"tab\there")],
                UnmaskError::ReasonNotPrintable,
            ),
            (
                &[(&HEADER_UNMASK, b"ssn"), (&HEADER_GRANT, b"xyz")],
                UnmaskError::BadGrantId,
            ),
            (
                &[
                    (&HEADER_UNMASK, b"ssn"),
                    (&HEADER_GRANT, b"00112233445566778899aabbccddeeff00"),
                ],
                UnmaskError::BadGrantId,
            ),
            (
                &[
                    (&HEADER_UNMASK, b"ssn"),
                    (&HEADER_GRANT, b"g0112233445566778899aabbccddeeff"),
                ],
                UnmaskError::BadGrantId,
            ),
        ];
        for (list, want) in cases {
            let got = parse(list);
            assert_eq!(got, Err(*want), "{list:?}");
            let text = want.to_string();
            assert!(!text.contains("123"), "{text}");
            assert!(want
                .code()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        let long = format!("COLL-2026-00042 {}", "x".repeat(500));
        assert_eq!(
            parse(&[(&HEADER_UNMASK, b"ssn"), (&HEADER_REASON, long.as_bytes())]),
            Err(UnmaskError::ReasonTooLong)
        );
    }

    #[test]
    fn reasons_with_red_flag_values_are_refused() {
        for bad in [
            "customer 123-45-6789 asked",
            "ssn 123 45 6789",
            "tin 12-3456789",
            "number 123456789",
            "acct 0012345678901",
            "card 4111 1111 1111 1111 declined",
            "card 4111-1111-1111-1111",
            "card 4111111111111111",
        ] {
            assert_eq!(check_reason(bad), Err(UnmaskError::ReasonRedFlag), "{bad}");
        }
        for good in [
            "COLL-2026-00042 agency transfer",
            "COLL-2026-00042",
            "ticket INC 12345 678",
            "phone 555-1234 callback 2026-07-01",
            "12345678 is eight digits",
            "card ending 1111",
        ] {
            assert_eq!(check_reason(good), Ok(Some(good.to_owned())), "{good}");
        }
        assert_eq!(check_reason(" \t "), Ok(None));
        assert_eq!(
            check_reason("a\u{7f}b"),
            Err(UnmaskError::ReasonNotPrintable)
        );
        assert_eq!(check_reason("   "), Ok(None));
        let exactly = "y".repeat(MAX_REASON_CHARS);
        assert_eq!(check_reason(&exactly), Ok(Some(exactly.clone())));
    }
}
