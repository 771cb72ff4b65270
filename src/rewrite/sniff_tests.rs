// Compiled only under #[cfg(test)] (see the parent module).
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::{DetectorSet, Detectors};
use crate::rewrite::{rewrite_all, Limits, RewriteSpec, RulesBuilder};

fn spec() -> RewriteSpec {
    let mut b = RulesBuilder::new();
    b.detectors(DetectorSet::ALL);
    b.class_name("drivers_license", FieldClass::Dln).unwrap();
    b.class_name("bank_account", FieldClass::BankAccount)
        .unwrap();
    RewriteSpec {
        rules: Arc::new(b.build()),
        actions: ActionTable::uniform(Action::Last4),
        detectors: Arc::new(Detectors::new()),
        limits: Limits::default(),
        opener: None,
        drop_accounts: None,
    }
}

fn run(declared: Declared, input: &str) -> Result<String, RewriteError> {
    let mut rw = SniffingRewriter::new(declared, spec());
    rewrite_all(&mut rw, input.as_bytes()).map(|o| String::from_utf8(o).unwrap())
}

fn run_split(declared: Declared, input: &str, at: usize) -> Result<String, RewriteError> {
    let mut rw = SniffingRewriter::new(declared, spec());
    let mut out = Vec::new();
    rw.write(&input.as_bytes()[..at], &mut out)?;
    rw.write(&input.as_bytes()[at..], &mut out)?;
    rw.finish(&mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

const JSON: &str = "{\n  \"id\": \"1000234\",\n  \"drivers_license\": \"D1234567\",\n  \"notes\": \"ssn 123-45-6789\"\n}\n";
const JSON_MASKED: &str = "{\n  \"id\": \"1000234\",\n  \"drivers_license\": \"****4567\",\n  \"notes\": \"ssn ***-**-6789\"\n}\n";

#[test]
fn json_sent_as_text_or_ndjson_is_read_as_json() {
    assert_eq!(run(Declared::Text, JSON).unwrap(), JSON_MASKED);
    assert_eq!(run(Declared::Ndjson, JSON).unwrap(), JSON_MASKED);
    assert_eq!(run(Declared::Json, JSON).unwrap(), JSON_MASKED);
}

#[test]
fn ndjson_sent_as_json_or_text_is_read_as_ndjson() {
    let body = "{\"bank_account\":\"12345678\"}\n{\"bank_account\":\"87654321\"}\n";
    let masked = "{\"bank_account\":\"****5678\"}\n{\"bank_account\":\"****4321\"}\n";
    assert_eq!(run(Declared::Json, body).unwrap(), masked);
    assert_eq!(run(Declared::Text, body).unwrap(), masked);
}

#[test]
fn csv_sent_as_text_is_read_as_csv_and_as_text() {
    let body = "id;Drivers License;notes\n1000234;D1234567;ssn 123-45-6789\n";
    assert_eq!(
        run(Declared::Text, body).unwrap(),
        "id;Drivers License;notes\n1000234;****4567;ssn ***-**-6789\n"
    );
}

#[test]
fn text_that_is_neither_stays_text() {
    for body in [
        "[INFO] started at 2026-07-15\nssn 123-45-6789 on file\n",
        "{customer} called about SSN 123-45-6789\n",
        "Dear customer, your SSN 123-45-6789 is on file.\nThanks, the team\n\nP.S. call (650) 555-0123\n",
        "",
        "\n\n",
        "no newline at all, SSN 123-45-6789",
    ] {
        let out = run(Declared::Text, body).unwrap();
        let mut text = crate::rewrite::text::TextRewriter::new(spec());
        let expected = String::from_utf8(rewrite_all(&mut text, body.as_bytes()).unwrap()).unwrap();
        assert_eq!(out, expected, "{body:?}");
    }
}

#[test]
fn invalid_json_declared_as_json_still_fails() {
    assert!(run(Declared::Json, "{\"a\":1").is_err());
    assert!(run(Declared::Ndjson, "{\"a\":1}{").is_err());
}

#[test]
fn limits_and_refusals_are_final_not_a_reason_to_try_text() {
    let mut s = spec();
    s.limits.max_depth = 2;
    let mut rw = SniffingRewriter::new(Declared::Text, s);
    let r = rewrite_all(&mut rw, b"[[[[\"123-45-6789\"]]]]\n");
    assert!(matches!(r, Err(RewriteError::TooDeep { .. })), "{r:?}");
}

#[test]
fn a_body_past_the_window_keeps_the_candidate_chosen() {
    let mut body = String::from("[\n");
    while body.len() < SNIFF_BYTES + 1000 {
        body.push_str("{\"drivers_license\":\"D1234567\"},\n");
    }
    body.push_str("{}]\n");
    let out = run(Declared::Text, &body).unwrap();
    assert!(!out.contains("D1234567"));
    assert!(out.contains("****4567"));
    // Broken after the window: the chosen JSON rewriter fails the body.
    let broken = body.replace("{}]\n", "{}] trailing\n");
    assert!(run(Declared::Text, &broken).is_err());
}

proptest! {
    /// Where the body is split changes nothing.
    #[test]
    fn split_anywhere_same_output(at in 0usize..JSON.len()) {
        prop_assert_eq!(run_split(Declared::Text, JSON, at).unwrap(), JSON_MASKED);
        let csv = "id,drivers_license\n1000234,D1234567\n";
        prop_assert_eq!(
            run_split(Declared::Text, csv, at.min(csv.len())).unwrap(),
            "id,drivers_license\n1000234,****4567\n"
        );
    }
}
