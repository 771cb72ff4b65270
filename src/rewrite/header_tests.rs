// Compiled only under #[cfg(test)] (see the parent module).
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::{DetectorSet, Detectors};
use crate::rewrite::{Limits, RewriteSpec, RulesBuilder};

fn spec(actions: ActionTable) -> RewriteSpec {
    let mut b = RulesBuilder::new();
    b.detectors(DetectorSet::ALL);
    b.class_name("ssn", FieldClass::Ssn).unwrap();
    b.class_name("bank_account", FieldClass::BankAccount)
        .unwrap();
    RewriteSpec {
        rules: Arc::new(b.build()),
        actions,
        detectors: Arc::new(Detectors::new()),
        limits: Limits::default(),
        opener: None,
        drop_accounts: None,
    }
}

fn masked() -> RewriteSpec {
    spec(ActionTable::uniform(Action::Last4))
}

fn verdict(name: &str, value: &str) -> HeaderVerdict {
    protect_header(&masked(), name, value.as_bytes())
}

fn replaced(name: &str, value: &str) -> String {
    match verdict(name, value) {
        HeaderVerdict::Replace(v) => v,
        other => panic!("{name}: {value} gave {other:?}"),
    }
}

#[test]
fn custom_header_values_are_masked() {
    assert_eq!(replaced("x-customer-ssn", "123-45-6789"), "***-**-6789");
    assert_eq!(
        replaced("x-debug-info", "card 4111 1111 1111 1111 declined"),
        "card **** **** **** 1111 declined"
    );
    // The header's name is the keyword a detector needs.
    assert_eq!(replaced("x-holder-dl", "D1234567"), "****4567");
}

#[test]
fn a_header_named_after_a_class_is_that_class() {
    // No detector finds a bare 8-digit run; the name says what it is.
    assert_eq!(replaced("x-bank-account", "12345678"), "****5678");
    assert_eq!(replaced("ssn", "12345678"), "****5678");
}

#[test]
fn urls_are_read_with_escapes_undone_and_keys_as_names() {
    assert_eq!(
        replaced("location", "/accounts/1000234?ssn=123-45-6789&view=full"),
        "/accounts/1000234?ssn=***-**-6789&view=full"
    );
    assert_eq!(
        replaced("location", "https://db/lookup?ssn=123%2D45%2D6789"),
        "https://db/lookup?ssn=***%2D**%2D6789"
    );
    // A named key masks what no detector finds.
    assert_eq!(
        replaced(
            "link",
            "</accounts?bank_account=12345678&page=2>; rel=\"next\""
        ),
        "</accounts?bank_account=****5678&page=2>; rel=\"next\""
    );
    // A path segment is read like a word.
    assert_eq!(
        replaced(
            "content-location",
            "/accounts/1000234/cards/4111111111111111"
        ),
        "/accounts/1000234/cards/************1111"
    );
    // A keyword inside a query key anchors the keyword detectors.
    assert_eq!(
        replaced("link", "</accounts?routing_number=021000021>; rel=\"next\""),
        "</accounts?routing_number=*****0021>; rel=\"next\""
    );
}

#[test]
fn cookies_and_file_names_are_masked() {
    assert_eq!(
        replaced("set-cookie", "last_card=4111111111111111; Path=/; HttpOnly"),
        "last_card=************1111; Path=/; HttpOnly"
    );
    assert_eq!(
        replaced(
            "content-disposition",
            "attachment; filename=\"statement 123-45-6789.pdf\""
        ),
        "attachment; filename=\"statement ***-**-6789.pdf\""
    );
}

#[test]
fn encoded_payloads_in_cookies_and_tokens_are_masked() {
    use base64::Engine;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"sub":"1000234","ssn":"123-45-6789"}"#);
    let jwt = format!("eyJhbGciOiJIUzI1NiJ9.{claims}.c2lnbmF0dXJlLWJ5dGVz");
    let out = replaced("set-cookie", &format!("token={jwt}; Path=/; Secure"));
    assert!(!out.contains(&claims), "{out}");
    assert!(out.ends_with("; Path=/; Secure"), "{out}");
    let payload = base64::engine::general_purpose::STANDARD.encode(b"ssn 123-45-6789");
    let out = replaced("x-payload", &payload);
    assert!(!out.contains(&payload), "{out}");
    // A token with nothing inside is left alone.
    let benign = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(br#"{"sub":"1000234","phone":"(650) 555-0123"}"#);
    assert_eq!(verdict("x-token", &benign), HeaderVerdict::Keep);
}

#[test]
fn benign_values_pass_unchanged() {
    for (name, value) in [
        ("location", "/accounts/1000234?page=2&view=full"),
        ("link", "</accounts?offset=100&limit=50>; rel=\"next\""),
        (
            "set-cookie",
            "session=2f1c9a7e-44b1-4c2d-a1b2-0c9d8e7f6a5b; Path=/; HttpOnly; Secure",
        ),
        (
            "content-disposition",
            "attachment; filename=\"statement 2026-07-15.pdf\"",
        ),
        ("warning", "299 - \"call (650) 555-0123 to confirm\""),
        ("x-customer-ref", "ORD-2026-004512"),
        ("date", "Wed, 15 Jul 2026 19:00:00 GMT"),
        ("content-length", "123456789"),
        ("etag", "\"33a64df551425fcc55e4d42a148795d9f25f89d4\""),
        ("content-type", "application/json; charset=utf-8"),
        ("x-zip", "94301-1234"),
    ] {
        assert_eq!(verdict(name, value), HeaderVerdict::Keep, "{name}: {value}");
    }
}

#[test]
fn plain_headers_are_still_scanned() {
    assert_eq!(
        replaced("content-language", "en 123-45-6789"),
        "en ***-**-6789"
    );
}

#[test]
fn opaque_bytes_and_removed_classes_drop_the_header() {
    assert_eq!(
        protect_header(&masked(), "x-note", b"caf\xc3\xa9 123-45-6789"),
        HeaderVerdict::Drop
    );
    let removing = spec(ActionTable::uniform(Action::Remove));
    assert_eq!(
        protect_header(&removing, "x-customer-ssn", b"123-45-6789"),
        HeaderVerdict::Drop
    );
    assert_eq!(
        protect_header(&removing, "x-note", b"nothing here"),
        HeaderVerdict::Keep
    );
}

#[test]
fn a_header_never_releases_a_clear_value() {
    let clear = spec(ActionTable::uniform(Action::Clear));
    assert_eq!(
        protect_header(&clear, "x-customer-ssn", b"123-45-6789"),
        HeaderVerdict::Replace("***-**-6789".into())
    );
    let redact = spec(ActionTable::uniform(Action::Redact));
    match protect_header(&redact, "x-note", b"ssn 123-45-6789") {
        HeaderVerdict::Replace(v) => assert!(!v.contains("6789"), "{v}"),
        other => panic!("{other:?}"),
    }
}

proptest! {
    /// A planted SSN survives no escape form: every byte of it may be
    /// percent-encoded, in any query position.
    #[test]
    fn escaped_ssn_never_survives(
        mask in proptest::collection::vec(any::<bool>(), 11),
        upper in any::<bool>(),
        before in "[a-z]{1,8}",
    ) {
        let ssn = "123-45-6789";
        let mut written = String::new();
        for (c, esc) in ssn.chars().zip(&mask) {
            if *esc {
                let e = format!("%{:02x}", c as u32);
                written.push_str(&if upper { e.to_uppercase() } else { e });
            } else {
                written.push(c);
            }
        }
        let value = format!("/accounts?{before}=1&q={written}");
        let out = match protect_header(&masked(), "location", value.as_bytes()) {
            HeaderVerdict::Replace(v) => v,
            HeaderVerdict::Drop => String::new(),
            HeaderVerdict::Keep => value.clone(),
        };
        let decoded = super::percent_decode(out.as_bytes()).bytes;
        let decoded = String::from_utf8_lossy(&decoded);
        prop_assert!(!decoded.contains("123-45-6789"), "{} -> {}", value, out);
        prop_assert!(!decoded.contains("123456789"), "{} -> {}", value, out);
    }
}
