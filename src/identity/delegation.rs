//! `X-On-Behalf-Of`: the person a delegating application calls for.
//!
//! The name is the application's claim, not an identity the gateway has
//! verified. So it is checked against the principal's `delegates` (a list
//! and/or a pattern), refused when it could hold a red-flag number, and
//! never keys a limit or stands in for a grantee: rate limits, record and
//! unmask budgets and grants stay the principal's. A refused name is never
//! repeated in a log line, an error or a record.

use http::HeaderMap;

use crate::config::{Delegates, Principal};

use super::ON_BEHALF_OF;

/// Why an `X-On-Behalf-Of` was refused (403). The codes name the rule, never
/// the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegateError {
    /// The header was sent more than once.
    #[error("X-On-Behalf-Of was sent more than once")]
    Repeated,
    /// Not 1 to 128 ASCII letters, digits, spaces or `@._-+`.
    #[error("X-On-Behalf-Of is not a well-formed person name")]
    Malformed,
    /// More than [`Delegates::MAX_DIGITS`] digits: shaped like an SSN, card
    /// or account number.
    #[error("X-On-Behalf-Of holds a number shaped like a red-flag value")]
    NumberShaped,
    /// Neither listed in nor matching the principal's `delegates`.
    #[error("X-On-Behalf-Of names nobody this principal may call for")]
    NotADelegate,
}

impl DelegateError {
    /// A short stable code for logs and the 403 body.
    pub fn code(self) -> &'static str {
        match self {
            DelegateError::Repeated => "delegate_repeated",
            DelegateError::Malformed => "delegate_malformed",
            DelegateError::NumberShaped => "delegate_number_shaped",
            DelegateError::NotADelegate => "delegate_not_allowed",
        }
    }
}

/// The person `principal` calls for: `Ok(None)` when it sent no
/// `X-On-Behalf-Of` or may not delegate (the header is then ignored and
/// removed before the upstream); the checked name otherwise.
pub fn person(principal: &Principal, headers: &HeaderMap) -> Result<Option<String>, DelegateError> {
    let Some(delegates) = principal
        .delegates
        .as_ref()
        .filter(|_| principal.may_delegate)
    else {
        return Ok(None);
    };
    let mut values = headers.get_all(ON_BEHALF_OF).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(DelegateError::Repeated);
    }
    let name = value.to_str().map_err(|_| DelegateError::Malformed)?.trim();
    check(delegates, name).map(|()| Some(name.to_owned()))
}

/// Checks one name against `delegates`.
pub fn check(delegates: &Delegates, name: &str) -> Result<(), DelegateError> {
    if name.bytes().filter(u8::is_ascii_digit).count() > Delegates::MAX_DIGITS {
        return Err(DelegateError::NumberShaped);
    }
    if !Delegates::well_formed(name) {
        return Err(DelegateError::Malformed);
    }
    if !delegates.admits(name) {
        return Err(DelegateError::NotADelegate);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delegates() -> Delegates {
        Delegates {
            names: ["j.doe".to_owned()].into_iter().collect(),
            pattern: Some((
                "[a-z]+@city".to_owned(),
                regex::Regex::new("^(?:[a-z]+@city)$").expect("pattern"),
            )),
            max_per_day: 10,
        }
    }

    #[test]
    fn listed_and_matching_names_pass_others_are_refused() {
        let d = delegates();
        assert_eq!(check(&d, "j.doe"), Ok(()));
        assert_eq!(check(&d, "ann@city"), Ok(()));
        assert_eq!(check(&d, "ann@city.evil"), Err(DelegateError::NotADelegate));
        assert_eq!(check(&d, "j.doe2"), Err(DelegateError::NotADelegate));
        assert_eq!(check(&d, ""), Err(DelegateError::Malformed));
        assert_eq!(check(&d, "ann\u{7f}@city"), Err(DelegateError::Malformed));
    }

    #[test]
    fn number_shaped_names_are_refused_before_anything_else() {
        let d = delegates();
        for v in [
            "123-45-6789",
            "123456789",
            "4111 1111 1111 1111",
            "ssn 123.45.6789",
        ] {
            assert_eq!(check(&d, v), Err(DelegateError::NumberShaped), "{v}");
        }
        assert_eq!(check(&d, "emp12345678"), Err(DelegateError::NotADelegate));
    }
}
