// Compiled only under #[cfg(test)] (see the parent module).
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::{DetectorSet, Detectors};
use crate::rewrite::{rewrite_all, Limits, RewriteSpec, RulesBuilder};

fn spec(actions: ActionTable) -> RewriteSpec {
    let mut b = RulesBuilder::new();
    b.detectors(DetectorSet::ALL);
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

fn run(spec: &RewriteSpec, input: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut rw = TextRewriter::new(spec.clone());
    rewrite_all(&mut rw, input)
}

fn run_chunks(spec: &RewriteSpec, input: &[u8], sizes: &[usize]) -> Result<Vec<u8>, RewriteError> {
    let mut rw = TextRewriter::new(spec.clone());
    let mut out = Vec::new();
    let mut rest = input;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes[k % sizes.len()].clamp(1, rest.len());
        k += 1;
        rw.write(&rest[..n], &mut out)?;
        rest = &rest[n..];
    }
    rw.finish(&mut out)?;
    Ok(out)
}

fn s(v: &[u8]) -> &str {
    std::str::from_utf8(v).unwrap()
}

const LETTER: &str = "Dear customer,\r\nyour SSN 123-45-6789 is on file.\n\
Card 4111 1111 1111 1111 was charged $12.50 on 2024-01-02.\n\
Account 1234, meter 55 — no change.\nlast line 078-05-1121 without newline";

#[test]
fn ssn_and_card_in_text_are_masked() {
    let mut rw = TextRewriter::new(masked());
    let out = rewrite_all(&mut rw, LETTER.as_bytes()).unwrap();
    assert_eq!(
        s(&out),
        "Dear customer,\r\nyour SSN ***-**-6789 is on file.\n\
Card **** **** **** 1111 was charged $12.50 on 2024-01-02.\n\
Account 1234, meter 55 — no change.\nlast line ***-**-1121 without newline"
    );
    let counts = rw.counts();
    assert_eq!(counts.get(FieldClass::Ssn, Action::Last4), 2);
    assert_eq!(counts.get(FieldClass::CardNumber, Action::Last4), 1);
    assert_eq!(counts.detected, 3);
}

#[test]
fn actions_apply_to_detected_classes() {
    let mut actions = ActionTable::uniform(Action::Redact);
    actions.set(FieldClass::CardNumber, Action::Clear);
    let out = run(&spec(actions), b"ssn 123-45-6789 card 4111111111111111\n").unwrap();
    assert_eq!(s(&out), "ssn [REDACTED] card 4111111111111111\n");
}

#[test]
fn text_without_findings_is_copied() {
    let input = "nothing to see\n\nhere 12 34\r\n";
    assert_eq!(s(&run(&masked(), input.as_bytes()).unwrap()), input);
    assert_eq!(run(&masked(), b"").unwrap(), b"");
}

#[test]
fn split_at_every_offset_gives_identical_output() {
    let input = LETTER.as_bytes();
    let whole = run(&masked(), input).unwrap();
    for i in 0..=input.len() {
        let mut rw = TextRewriter::new(masked());
        let mut out = Vec::new();
        rw.write(&input[..i], &mut out).unwrap();
        rw.write(&input[i..], &mut out).unwrap();
        rw.finish(&mut out).unwrap();
        assert_eq!(s(&out), s(&whole), "split at {i}");
    }
    for size in 1..8 {
        assert_eq!(run_chunks(&masked(), input, &[size]).unwrap(), whole);
    }
}

#[test]
fn lines_are_written_as_soon_as_complete() {
    let mut rw = TextRewriter::new(masked());
    let mut out = Vec::new();
    rw.write(b"a 123-45-", &mut out).unwrap();
    assert!(out.is_empty());
    rw.write(b"6789\nb", &mut out).unwrap();
    assert_eq!(s(&out), "a ***-**-6789\n");
    rw.finish(&mut out).unwrap();
    assert_eq!(s(&out), "a ***-**-6789\nb");
}

#[test]
fn invalid_utf8_and_long_lines_fail_closed() {
    assert_eq!(
        run(&masked(), b"ok\nbad \xff here\n"),
        Err(RewriteError::NotText { offset: 7 })
    );
    for size in 1..5 {
        assert_eq!(
            run_chunks(&masked(), b"ok\nbad \xc3", &[size]),
            Err(RewriteError::NotText { offset: 7 })
        );
    }
    let mut spec = masked();
    spec.limits.max_token_bytes = 8;
    assert!(run(&spec, b"12345678\n12345678").is_ok());
    for size in [1, 3, 100] {
        assert_eq!(
            run_chunks(&spec, b"12345678\n123456789\n", &[size]),
            Err(RewriteError::TokenTooLarge { limit: 8 })
        );
    }
    // A line that never ends is refused before it is all held.
    let mut rw = TextRewriter::new(spec.clone());
    let mut out = Vec::new();
    rw.write(b"12345", &mut out).unwrap();
    assert!(rw.write(b"6789", &mut out).is_err());
    assert_eq!(rw.write(b"\n", &mut out), Err(RewriteError::Poisoned));
    spec.limits.max_body_bytes = 4;
    assert_eq!(
        run(&spec, b"12345"),
        Err(RewriteError::BodyTooLarge { limit: 4 })
    );
}

proptest! {
    #[test]
    fn chunking_never_changes_output(
        parts in prop::collection::vec(prop_oneof![
            Just("123-45-6789"), Just("4111 1111 1111 1111"), Just(" "), Just("\n"),
            Just("\r\n"), Just("ssn"), Just("é"), Just("x1"), Just("0"),
        ], 0..30),
        sizes in prop::collection::vec(1usize..10, 1..5),
    ) {
        let text: String = parts.concat();
        let whole = run(&masked(), text.as_bytes()).unwrap();
        let chunked = run_chunks(&masked(), text.as_bytes(), &sizes).unwrap();
        prop_assert_eq!(s(&chunked), s(&whole));
    }
}
