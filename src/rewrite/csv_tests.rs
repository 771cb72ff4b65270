// Compiled only under #[cfg(test)] (see the parent module).
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::{DetectorSet, Detectors};
use crate::rewrite::{rewrite_all, Limits, RewriteSpec, RulesBuilder};

fn spec_with(build: impl FnOnce(&mut RulesBuilder), actions: ActionTable) -> RewriteSpec {
    let mut b = RulesBuilder::new();
    build(&mut b);
    RewriteSpec {
        rules: Arc::new(b.build()),
        actions,
        detectors: Arc::new(Detectors::new()),
        limits: Limits::default(),
        opener: None,
        drop_accounts: None,
    }
}

fn city_rules(b: &mut RulesBuilder) {
    b.class_name("ssn", FieldClass::Ssn).unwrap();
    b.class_name("card_number", FieldClass::CardNumber).unwrap();
    b.class_name("dob", FieldClass::Dob).unwrap();
}

fn masked() -> RewriteSpec {
    spec_with(city_rules, ActionTable::uniform(Action::Last4))
}

fn with_detectors() -> RewriteSpec {
    spec_with(
        |b| {
            city_rules(b);
            b.detectors(DetectorSet::ALL);
        },
        ActionTable::uniform(Action::Last4),
    )
}

fn run(spec: &RewriteSpec, input: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut rw = CsvRewriter::new(spec.clone());
    rewrite_all(&mut rw, input)
}

fn run_counts(spec: &RewriteSpec, input: &[u8]) -> (String, Counts) {
    let mut rw = CsvRewriter::new(spec.clone());
    let out = rewrite_all(&mut rw, input).unwrap();
    (String::from_utf8(out).unwrap(), rw.counts().clone())
}

fn run_chunks(spec: &RewriteSpec, input: &[u8], sizes: &[usize]) -> Result<Vec<u8>, RewriteError> {
    let mut rw = CsvRewriter::new(spec.clone());
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

/// An independent RFC 4180 reader for checking output: records of fields
/// (blank lines skipped). Panics on malformed input.
fn parse(text: &str) -> Vec<Vec<String>> {
    let b = text.as_bytes();
    let mut records = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\n' {
            i += 1;
            continue;
        }
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 2;
            continue;
        }
        let mut rec = Vec::new();
        loop {
            let mut field = Vec::new();
            if b.get(i) == Some(&b'"') {
                i += 1;
                loop {
                    match b[i] {
                        b'"' if b.get(i + 1) == Some(&b'"') => {
                            field.push(b'"');
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        c => {
                            field.push(c);
                            i += 1;
                        }
                    }
                }
            } else {
                while i < b.len() && !matches!(b[i], b',' | b'\n' | b'\r') {
                    assert_ne!(b[i], b'"', "quote in unquoted field");
                    field.push(b[i]);
                    i += 1;
                }
            }
            rec.push(String::from_utf8(field).unwrap());
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'\r') => {
                    assert_eq!(b.get(i + 1), Some(&b'\n'));
                    i += 2;
                    break;
                }
                Some(b'\n') => {
                    i += 1;
                    break;
                }
                None => break,
                Some(c) => panic!("unexpected byte {c}"),
            }
        }
        records.push(rec);
    }
    records
}

#[test]
fn masks_a_named_column_and_keeps_everything_else() {
    let input = "id,SSN,name\r\n1,123-45-6789,Ann\r\n2,987-65-4321,\"Lee, Bo\"\r\n";
    let (out, counts) = run_counts(&masked(), input.as_bytes());
    assert_eq!(
        out,
        "id,SSN,name\r\n1,***-**-6789,Ann\r\n2,***-**-4321,\"Lee, Bo\"\r\n"
    );
    assert_eq!(counts.records, 2);
    assert_eq!(counts.get(FieldClass::Ssn, Action::Last4), 2);
}

#[test]
fn quoting_edge_cases() {
    // Embedded comma, doubled quotes, CRLF and LF inside quotes, empty fields.
    let input = concat!(
        "name,ssn,note\n",
        "\"Doe, Jane\",\"123-45-6789\",\"said \"\"hi\"\"\r\nthen left\"\n",
        ",,\n",
        "\"\",\"\",\"\"\n",
        "plain,\"1234-5678-9012\",\"a\nb\nc\"\n",
    );
    let out = run(&masked(), input.as_bytes()).unwrap();
    assert_eq!(
        s(&out),
        concat!(
            "name,ssn,note\n",
            "\"Doe, Jane\",***-**-6789,\"said \"\"hi\"\"\r\nthen left\"\n",
            ",,\n",
            "\"\",,\"\"\n",
            "plain,****-****-9012,\"a\nb\nc\"\n",
        )
    );
    let rows = parse(s(&out));
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[1][2], "said \"hi\"\r\nthen left");
    assert!(rows.iter().all(|r| r.len() == 3));
}

#[test]
fn changed_cells_are_quoted_only_when_needed() {
    let spec = spec_with(
        |b| {
            city_rules(b);
            b.redact_token("[RED, \"X\"]");
        },
        ActionTable::uniform(Action::Redact),
    );
    let out = run(&spec, b"ssn,dob\n\"123-45-6789\",1990-01-02\n").unwrap();
    assert_eq!(
        s(&out),
        "ssn,dob\n\"[RED, \"\"X\"\"]\",\"[RED, \"\"X\"\"]\"\n"
    );
    assert_eq!(parse(s(&out))[1], vec!["[RED, \"X\"]", "[RED, \"X\"]"]);

    let spec = spec_with(city_rules, ActionTable::uniform(Action::Redact));
    let out = run(&spec, b"ssn,x\n\"123-45-6789\",\"1\"\n").unwrap();
    assert_eq!(s(&out), "ssn,x\n[REDACTED],\"1\"\n");
}

#[test]
fn clear_keeps_cells_byte_for_byte() {
    let spec = spec_with(city_rules, ActionTable::uniform(Action::Clear));
    let input = "ssn,card_number\n\"123-45-6789\",4111111111111111\n";
    let (out, counts) = run_counts(&spec, input.as_bytes());
    assert_eq!(out, input);
    assert_eq!(counts.get(FieldClass::Ssn, Action::Clear), 1);
    assert_eq!(counts.clear_released(), 2);
}

#[test]
fn remove_drops_the_whole_column() {
    let mut actions = ActionTable::uniform(Action::Last4);
    actions.set(FieldClass::Ssn, Action::Remove);
    let spec = spec_with(city_rules, actions);
    for (input, want) in [
        ("ssn,a,b\n1,2,3\n4,5,6\n", "a,b\n2,3\n5,6\n"),
        ("a,ssn,b\n1,2,3\n4,5,6\n", "a,b\n1,3\n4,6\n"),
        ("a,b,ssn\r\n1,2,\"3,\"\"\"\r\n4,5,6", "a,b\r\n1,2\r\n4,5"),
        ("ssn\n1\n2\n", "\n\n\n"),
        ("a,ssn\n,1\n", "a\n\"\"\n"),
        ("ssn,Social_Security_Number\n1,2\n", "\n\n"),
    ] {
        let spec = if input.contains("Social") {
            spec_with(
                |b| {
                    city_rules(b);
                    b.class_name("social_security_number", FieldClass::Ssn)
                        .unwrap();
                },
                actions,
            )
        } else {
            spec.clone()
        };
        let (out, counts) = run_counts(&spec, input.as_bytes());
        assert_eq!(out, want, "{input:?}");
        assert!(counts.get(FieldClass::Ssn, Action::Remove) >= 1);
    }
    let (_, counts) = run_counts(&spec, b"a,ssn\n1,2\n3,4\n5,6\n");
    assert_eq!(counts.get(FieldClass::Ssn, Action::Remove), 3);
    assert_eq!(counts.records, 3);
}

#[test]
fn allowlist_keeps_only_allowed_columns() {
    let spec = spec_with(
        |b| {
            city_rules(b);
            b.allow_name("id").unwrap();
            b.allow_name("name").unwrap();
            b.allow_name("ssn").unwrap();
        },
        ActionTable::uniform(Action::Last4),
    );
    let input = "ID,secret,Name,SSN,notes\n7,x,Ann,123-45-6789,\"a,b\"\n8,y,Bo,987-65-4321,c\n";
    let (out, counts) = run_counts(&spec, input.as_bytes());
    assert_eq!(out, "ID,Name,SSN\n7,Ann,***-**-6789\n8,Bo,***-**-4321\n");
    assert_eq!(counts.not_allowed, 4);
    assert_eq!(counts.records, 2);
    // Allowed by path too (a root-level path names a column).
    let spec = spec_with(
        |b| {
            b.allow_path("/id").unwrap();
        },
        ActionTable::uniform(Action::Last4),
    );
    assert_eq!(s(&run(&spec, b"id,x\n1,2\n").unwrap()), "id\n1\n");
}

#[test]
fn envelopes_in_card_columns() {
    let env = format!("mg1.k1.1111.{}", "A".repeat(60));
    let input = format!("card_number,other\n{env},{env}\nmg1.broken,x\n");
    let (out, counts) = run_counts(&masked(), input.as_bytes());
    assert_eq!(
        out,
        "card_number,other\n************1111,************1111\n****************,x\n"
    );
    assert_eq!(counts.integrity_errors, 1);
    let spec = spec_with(city_rules, ActionTable::uniform(Action::Clear));
    let (out, _) = run_counts(&spec, input.as_bytes());
    assert_eq!(out, input);
}

#[test]
fn detectors_mask_free_text_cells_and_names() {
    let input =
        "id,note\n1,\"call re SSN 123-45-6789, card 4111 1111 1111 1111\"\n2,nothing here\n";
    let (out, counts) = run_counts(&with_detectors(), input.as_bytes());
    assert_eq!(
        out,
        "id,note\n1,\"call re SSN ***-**-6789, card **** **** **** 1111\"\n2,nothing here\n"
    );
    assert_eq!(counts.detected, 2);
    assert_eq!(counts.get(FieldClass::Ssn, Action::Last4), 1);
    assert_eq!(counts.get(FieldClass::CardNumber, Action::Last4), 1);
    // A changed cell that no longer needs quotes is written bare.
    let out = run(&with_detectors(), b"n\n\"123-45-6789\"\n").unwrap();
    assert_eq!(s(&out), "n\n***-**-6789\n");
    // A header name holding a value is masked too.
    let out = run(&with_detectors(), b"123-45-6789,x\n1,2\n").unwrap();
    assert_eq!(s(&out), "***-**-6789,x\n1,2\n");
}

#[test]
fn malformed_csv_is_refused_with_its_line() {
    let csv_err = |input: &[u8]| match run(&masked(), input) {
        Err(RewriteError::Csv { line, reason }) => (line, reason),
        other => panic!("{input:?}: {other:?}"),
    };
    assert_eq!(csv_err(b"a,b\n1,2\n3\n").0, 3);
    assert_eq!(csv_err(b"a,b\n1,2\n3,4,5\n").0, 3);
    assert_eq!(csv_err(b"a,b\n\"x\ny\",2\n1,2,3").0, 4);
    assert_eq!(csv_err(b"a,b\n1,x\"y\n").0, 2);
    assert_eq!(csv_err(b"a,b\n1,\"x\"y\n").0, 2);
    assert_eq!(csv_err(b"a,b\n1,\"xy\n").0, 2);
    assert_eq!(csv_err(b"a,b\n1,2\r3,4\n").0, 2);
    assert_eq!(csv_err(b"a,b\n1,2\r").0, 2);
    assert_eq!(csv_err(b"a,b\n1,\xff\n").1, "invalid UTF-8");
    assert!(csv_err(b"a,b\n1,\"x\ny").1.contains("unterminated"));
    // A failed rewriter stays failed.
    let mut rw = CsvRewriter::new(masked());
    let mut out = Vec::new();
    assert!(rw.write(b"a,b\n1,2,3\n", &mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(rw.write(b"1,2\n", &mut out), Err(RewriteError::Poisoned));
    assert_eq!(rw.finish(&mut out), Err(RewriteError::Poisoned));
}

#[test]
fn empty_bodies_blank_lines_last_record_and_bom() {
    assert_eq!(run(&masked(), b"").unwrap(), b"");
    let (out, counts) = run_counts(&masked(), b"ssn,a\n");
    assert_eq!((out.as_str(), counts.records), ("ssn,a\n", 0));
    let (out, counts) = run_counts(&masked(), b"ssn,a\n\n123-45-6789,1\n\r\n");
    assert_eq!(out, "ssn,a\n\n***-**-6789,1\n\r\n");
    assert_eq!(counts.records, 1);
    assert_eq!(
        s(&run(&masked(), b"ssn,a\n123456789,1").unwrap()),
        "ssn,a\n*****6789,1"
    );
    assert_eq!(s(&run(&masked(), b"a,ssn\n1,").unwrap()), "a,ssn\n1,");
    let out = run(&masked(), b"\xEF\xBB\xBFssn,a\n123-45-6789,1\n").unwrap();
    assert_eq!(out, b"\xEF\xBB\xBFssn,a\n***-**-6789,1\n");
    let out = run(&masked(), b"\xEF\xBB\xBF\"ssn\",a\n123-45-6789,1\n").unwrap();
    assert_eq!(out, b"\xEF\xBB\xBF\"ssn\",a\n***-**-6789,1\n");
    // A BOM split across chunks, and a short body that only looks like one.
    for sizes in [[1usize], [2], [4]] {
        let out = run_chunks(&masked(), b"\xEF\xBB\xBFssn\n123-45-6789\n", &sizes).unwrap();
        assert_eq!(out, b"\xEF\xBB\xBFssn\n***-**-6789\n");
    }
    assert!(matches!(
        run(&masked(), b"\xEF\xBB"),
        Err(RewriteError::Csv { .. })
    ));
    assert_eq!(s(&run(&masked(), b"a").unwrap()), "a");
}

#[test]
fn records_past_the_token_limit_are_refused() {
    let mut spec = masked();
    spec.limits.max_token_bytes = 16;
    assert!(run(&spec, b"a,b\n1234567,12345678\n").is_ok());
    assert!(run(&spec, b"a,b\r\n1234567,12345678\r\n").is_ok());
    for sizes in [[1usize], [3], [100]] {
        assert_eq!(
            run_chunks(&spec, b"a,b\n1234567,123456789\n", &sizes),
            Err(RewriteError::TokenTooLarge { limit: 16 })
        );
        assert!(run_chunks(&spec, b"a,b\r\n1234567,12345678\r\n", &sizes).is_ok());
    }
    let mut rw = CsvRewriter::new(spec.clone());
    let mut out = Vec::new();
    rw.write(b"a,b\n", &mut out).unwrap();
    // A record that never ends is refused once it is past the limit.
    assert!(rw.write(&[b'x'; 18], &mut out).is_err());
    spec.limits.max_body_bytes = 10;
    assert_eq!(
        run(&spec, b"a,b\n1,2\n3,4\n"),
        Err(RewriteError::BodyTooLarge { limit: 10 })
    );
}

#[test]
fn records_are_written_as_soon_as_complete() {
    let mut rw = CsvRewriter::new(masked());
    let mut out = Vec::new();
    rw.write(b"ssn,a\n123-45-", &mut out).unwrap();
    assert_eq!(s(&out), "ssn,a\n");
    rw.write(b"6789,x\n9", &mut out).unwrap();
    assert_eq!(s(&out), "ssn,a\n***-**-6789,x\n");
    rw.write(b"87654321,y", &mut out).unwrap();
    rw.finish(&mut out).unwrap();
    assert_eq!(s(&out), "ssn,a\n***-**-6789,x\n*****4321,y");
}

const DOCS: &[&str] = &[
    "id,SSN,note\r\n1,123-45-6789,\"a,\"\"b\"\"\r\nc\"\r\n2,\"987-65-4321\",plain\r\n",
    "\u{FEFF}card_number,dob,x\n4111111111111111,1990-01-02,\"é,ü\"\n\n,,\n4012888888881881,\"2000-12-31\",last",
    "ssn\n\"123-45-6789\"\n\"\"\n",
];

fn doc_specs() -> Vec<RewriteSpec> {
    let mut remove = ActionTable::uniform(Action::Last4);
    remove.set(FieldClass::Dob, Action::Remove);
    vec![
        masked(),
        spec_with(city_rules, remove),
        spec_with(city_rules, ActionTable::uniform(Action::Redact)),
    ]
}

#[test]
fn output_does_not_depend_on_chunking() {
    for spec in doc_specs() {
        for doc in DOCS {
            let doc = doc.as_bytes();
            let whole = run(&spec, doc).unwrap();
            for i in 0..=doc.len() {
                for j in i..=doc.len() {
                    let mut rw = CsvRewriter::new(spec.clone());
                    let mut out = Vec::new();
                    rw.write(&doc[..i], &mut out).unwrap();
                    rw.write(&doc[i..j], &mut out).unwrap();
                    rw.write(&doc[j..], &mut out).unwrap();
                    rw.finish(&mut out).unwrap();
                    assert_eq!(s(&out), s(&whole), "split at {i},{j}");
                }
            }
        }
    }
}

fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z ]{0,6}",
        "[a-z,\"\n]{0,6}",
        Just("123-45-6789".to_owned()),
        Just("4111 1111 1111 1111".to_owned()),
        Just("é\r\nü".to_owned()),
    ]
}

fn encode(cell: &str, force_quotes: bool) -> String {
    if force_quotes || cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

fn document() -> impl Strategy<Value = (String, usize)> {
    (1usize..5).prop_flat_map(|cols| {
        (
            prop::collection::vec(prop::collection::vec((cell(), any::<bool>()), cols), 0..6),
            prop::sample::subsequence(vec!["id", "ssn", "card_number", "dob", "note"], cols),
            any::<bool>(),
        )
            .prop_map(move |(rows, names, crlf)| {
                let nl = if crlf { "\r\n" } else { "\n" };
                let mut doc = names.join(",") + nl;
                for row in rows {
                    let cells: Vec<String> = row.iter().map(|(c, q)| encode(c, *q)).collect();
                    doc.push_str(&cells.join(","));
                    doc.push_str(nl);
                }
                (doc, cols)
            })
    })
}

proptest! {
    #[test]
    fn chunking_never_changes_output_and_output_is_csv(
        (doc, cols) in document(),
        sizes in prop::collection::vec(1usize..12, 1..6),
        which in 0usize..3,
    ) {
        let spec = doc_specs().swap_remove(which);
        let whole = run(&spec, doc.as_bytes()).unwrap();
        let chunked = run_chunks(&spec, doc.as_bytes(), &sizes).unwrap();
        prop_assert_eq!(s(&chunked), s(&whole));
        let input_rows = parse(&doc);
        let kept = if which == 1 {
            input_rows[0].iter().filter(|n| *n != "dob").count()
        } else {
            cols
        };
        if kept == 0 {
            // Every column removed: only line ends are left.
            prop_assert!(whole.iter().all(|&b| b == b'\r' || b == b'\n'));
            return Ok(());
        }
        let output_rows = parse(s(&whole));
        prop_assert_eq!(input_rows.len(), output_rows.len());
        for (inp, outp) in input_rows.iter().zip(&output_rows) {
            prop_assert_eq!(outp.len(), kept);
            // Columns no rule names come through unchanged.
            for (name, value) in input_rows[0].iter().zip(inp) {
                if name == "id" || name == "note" {
                    let at = output_rows[0].iter().position(|n| n == name).unwrap();
                    prop_assert_eq!(&outp[at], value);
                }
            }
        }
    }
}

#[test]
fn semicolon_tab_and_pipe_separated_headers_set_the_separator() {
    for (delim, quoted) in [(';', "\"a;b\""), ('\t', "\"a\tb\""), ('|', "\"a|b\"")] {
        let body = format!(
            "\u{feff}name{d}SSN{d}Card Number{d}note\r\nAna{d}123-45-6789{d}4111111111111111{d}{quoted}\r\n",
            d = delim
        );
        let mut rw = CsvRewriter::new(masked());
        let out = rewrite_all(&mut rw, body.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "\u{feff}name{d}SSN{d}Card Number{d}note\r\nAna{d}***-**-6789{d}************1111{d}{quoted}\r\n",
                d = delim
            ),
            "separator {delim:?}"
        );
    }
}

#[test]
fn a_comma_in_the_header_keeps_the_comma() {
    // Semicolons inside cells of a comma-separated body are data.
    let body = "name,ssn\n\"Lopez; Ana\",123-45-6789\n";
    let mut rw = CsvRewriter::new(masked());
    let out = rewrite_all(&mut rw, body.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "name,ssn\n\"Lopez; Ana\",***-**-6789\n"
    );
    assert_eq!(sniff_delimiter(b"a;b;c,d"), Some(b','));
    assert_eq!(sniff_delimiter(b"\"a,b\";c"), Some(b';'));
    assert_eq!(sniff_delimiter(b"a\tb;c\td"), Some(b'\t'));
    assert_eq!(sniff_delimiter(b"just one name"), None);
}

proptest! {
    /// The separator is found whatever the chunking of the header line.
    #[test]
    fn separator_sniffing_is_split_invariant(at in 0usize..60) {
        let body = b"\xef\xbb\xbfid;ssn;notes\n1;123-45-6789;x\n2;234-56-7890;y\n";
        let at = at.min(body.len());
        let mut rw = CsvRewriter::new(masked());
        let mut out = Vec::new();
        rw.write(&body[..at], &mut out).unwrap();
        rw.write(&body[at..], &mut out).unwrap();
        rw.finish(&mut out).unwrap();
        prop_assert_eq!(
            String::from_utf8(out).unwrap(),
            "\u{feff}id;ssn;notes\n1;***-**-6789;x\n2;***-**-7890;y\n"
        );
    }
}
