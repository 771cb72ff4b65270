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
    b.class_name("tin", FieldClass::Tin).unwrap();
    b.class_path("/accounts/*/bank/account_number", FieldClass::BankAccount)
        .unwrap();
    b.record_path("/accounts/*").unwrap();
    b.record_path("/").unwrap();
}

fn masked() -> RewriteSpec {
    spec_with(city_rules, ActionTable::uniform(Action::Last4))
}

fn run(spec: &RewriteSpec, input: &[u8]) -> Result<Vec<u8>, RewriteError> {
    let mut rw = JsonRewriter::new(spec.clone());
    rewrite_all(&mut rw, input)
}

fn run_chunks(spec: &RewriteSpec, input: &[u8], sizes: &[usize]) -> Result<Vec<u8>, RewriteError> {
    let mut rw = JsonRewriter::new(spec.clone());
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

#[test]
fn masks_named_fields_keeping_everything_else() {
    let input = br#"{"accounts": [ {"id":"A1", "SSN" : "123-45-6789", "card_number":4111111111111111, "bank":{"account_number":"000123456789"}} ], "total" : 1}"#;
    let out = run(&masked(), input).unwrap();
    assert_eq!(
        s(&out),
        r#"{"accounts": [ {"id":"A1", "SSN" : "***-**-6789", "card_number":"************1111", "bank":{"account_number":"********6789"}} ], "total" : 1}"#
    );
}

#[test]
fn remove_keeps_commas_valid() {
    let mut actions = ActionTable::uniform(Action::Last4);
    actions.set(FieldClass::Ssn, Action::Remove);
    let spec = spec_with(city_rules, actions);
    for (input, want) in [
        (r#"{"ssn":"1","a":1}"#, r#"{"a":1}"#),
        (r#"{"a":1,"ssn":"1"}"#, r#"{"a":1}"#),
        (r#"{"a":1, "ssn":"1", "b":2}"#, r#"{"a":1, "b":2}"#),
        (r#"{"ssn":"1"}"#, r#"{}"#),
        (r#"{"ssn":{"x":[1,2,{"y":"z"}]},"b":[]}"#, r#"{"b":[]}"#),
        (r#"[{"ssn":1},{"ssn":2,"k":3}]"#, r#"[{},{"k":3}]"#),
        (r#"{ "ssn" : "1" , "ssn":"2" }"#, r#"{   }"#),
    ] {
        let out = run(&spec, input.as_bytes()).unwrap();
        assert_eq!(s(&out), want, "{input}");
        serde_json::from_slice::<serde_json::Value>(&out).unwrap();
    }
}

#[test]
fn redact_and_clear() {
    let mut actions = ActionTable::uniform(Action::Redact);
    actions.set(FieldClass::Tin, Action::Clear);
    let spec = spec_with(city_rules, actions);
    let out = run(
        &spec,
        br#"{"ssn":"123-45-6789","tin":"12-3456789","n":[1]}"#,
    )
    .unwrap();
    assert_eq!(
        s(&out),
        r#"{"ssn":"[REDACTED]","tin":"12-3456789","n":[1]}"#
    );
    let mut rw = JsonRewriter::new(spec);
    rewrite_all(&mut rw, br#"{"ssn":"1","tin":"2"}"#).unwrap();
    assert_eq!(rw.counts().get(FieldClass::Ssn, Action::Redact), 1);
    assert_eq!(rw.counts().get(FieldClass::Tin, Action::Clear), 1);
    assert_eq!(rw.counts().clear_released(), 1);
}

#[test]
fn escaped_keys_and_values_are_decoded_before_matching() {
    let input = br#"{"\u0073\u0053n":"123\u002d45-6789","s\u0073n":"12\"34\\56789"}"#;
    let out = run(&masked(), input).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["sSn"], "***-**-6789");
    assert_eq!(v["ssn"], "**\"**\\*6789");
}

#[test]
fn classed_containers_mask_everything_inside() {
    let out = run(
        &masked(),
        br#"{"ssn":{"value":"123456789","alt":[123456789,null,true]}}"#,
    )
    .unwrap();
    assert_eq!(
        s(&out),
        r#"{"ssn":{"value":"*****6789","alt":["*****6789",null,true]}}"#
    );
}

#[test]
fn allowlist_removes_everything_not_named() {
    let spec = spec_with(
        |b| {
            city_rules(b);
            for n in ["id", "name", "accounts", "total"] {
                b.allow_name(n).unwrap();
            }
            b.allow_path("/meta/page").unwrap();
        },
        ActionTable::uniform(Action::Remove),
    );
    let input = br#"{"accounts":[{"id":"A1","name":"Ann","ssn":"123-45-6789","notes":"x","phones":["1","2"],"bank":{"routing":"1"}}],"total":1,"secret":2,"meta":{"page":{"n":1},"other":3}}"#;
    let out = run(&spec, input).unwrap();
    assert_eq!(
        s(&out),
        r#"{"accounts":[{"id":"A1","name":"Ann"}],"total":1,"meta":{"page":{"n":1}}}"#
    );
}

#[test]
fn records_are_counted() {
    let spec = masked();
    let mut rw = JsonRewriter::new(spec.clone());
    rewrite_all(&mut rw, br#"{"accounts":[{"a":1},{"a":2},{"a":3}]}"#).unwrap();
    assert_eq!(rw.counts().records, 3);
    let mut rw = JsonRewriter::new(spec.clone());
    rewrite_all(&mut rw, br#"{"id":"A1"}"#).unwrap();
    assert_eq!(rw.counts().records, 1);
    let mut rw = JsonRewriter::ndjson(spec);
    rewrite_all(&mut rw, b"{\"a\":1}\n{\"ssn\":\"123456789\"}\n\n").unwrap();
    assert_eq!(rw.counts().records, 2);
}

#[test]
fn ndjson_rewrites_each_line() {
    let mut rw = JsonRewriter::ndjson(masked());
    let out = rewrite_all(
        &mut rw,
        b"{\"ssn\":\"123456789\"}\r\n{\"ssn\":\"987654321\"}\n",
    )
    .unwrap();
    assert_eq!(
        s(&out),
        "{\"ssn\":\"*****6789\"}\r\n{\"ssn\":\"*****4321\"}\n"
    );
    let mut rw = JsonRewriter::ndjson(masked());
    assert!(matches!(
        rewrite_all(&mut rw, b"{} {}"),
        Err(RewriteError::Syntax {
            kind: SyntaxError::ValuesOnOneLine,
            ..
        })
    ));
    let mut rw = JsonRewriter::ndjson(masked());
    assert_eq!(rewrite_all(&mut rw, b"").unwrap(), b"");
}

#[test]
fn limits_are_errors_not_truncations() {
    let mut spec = masked();
    spec.limits.max_depth = 3;
    assert!(run(&spec, b"[[[1]]]").is_ok());
    assert_eq!(
        run(&spec, b"[[[[1]]]]"),
        Err(RewriteError::TooDeep { limit: 3 })
    );
    let mut spec = masked();
    spec.limits.max_body_bytes = 10;
    assert_eq!(
        run(&spec, b"[1,2,3,4,5,6]"),
        Err(RewriteError::BodyTooLarge { limit: 10 })
    );
    let mut spec = masked();
    spec.limits.max_token_bytes = 8;
    assert!(run(&spec, br#"{"ssn":"1234567"}"#).is_ok());
    let long = format!(r#"{{"ssn":"{}"}}"#, "1".repeat(100));
    assert!(matches!(
        run_chunks(&spec, long.as_bytes(), &[3]),
        Err(RewriteError::TokenTooLarge { .. })
    ));
    // unclaimed strings stream through whatever their size
    let long = format!(r#"{{"note":"{}"}}"#, "x".repeat(100));
    assert!(run_chunks(&spec, long.as_bytes(), &[3]).is_ok());
}

#[test]
fn a_failed_rewriter_stays_failed_and_emits_nothing_more() {
    let mut rw = JsonRewriter::new(masked());
    let mut out = Vec::new();
    rw.write(br#"{"a":"#, &mut out).unwrap();
    let before = out.len();
    assert!(rw.write(br#"x"ssn":"123-45-6789"}"#, &mut out).is_err());
    assert_eq!(out.len(), before);
    assert_eq!(rw.write(b"1}", &mut out), Err(RewriteError::Poisoned));
    assert_eq!(rw.finish(&mut out), Err(RewriteError::Poisoned));
}

#[test]
fn truncated_and_empty_bodies_are_errors() {
    for bad in [
        &b""[..],
        b" ",
        b"{",
        b"{\"a\"",
        b"{\"a\":",
        b"[1,",
        b"\"abc",
        b"tru",
        b"-",
        b"1.",
    ] {
        assert!(run(&masked(), bad).is_err(), "{:?}", s(bad));
    }
    let mut rw = JsonRewriter::new(masked()).allow_empty(true);
    assert_eq!(rewrite_all(&mut rw, b"").unwrap(), b"");
}

/// Valid and invalid texts in the manner of JSONTestSuite.
#[test]
fn conformance_cases() {
    let valid: &[&[u8]] = &[
        b"0",
        b"-0",
        b"1.5e+10",
        b"-1E-2",
        b"0.0",
        b"1e5",
        b"[]",
        b"{}",
        b" [ ] ",
        b"\"\"",
        b"true",
        b"false",
        b"null",
        b"[1,2,3]",
        b"{\"a\":{\"b\":[{}]}}",
        b"\"\\u0000\\ud800\\udc00\\\\\\/\\b\\f\\n\\r\\t\"",
        b"\"\\ud800\"",
        "\"é😀\u{7f}\"".as_bytes(),
        b"\t\n\r [\n1\n]\r\n",
        b"{\"\":0}",
        b"[-0.0e-0]",
        b"[\"\xc2\x80\", \"\xef\xbf\xbf\", \"\xf4\x8f\xbf\xbf\"]",
    ];
    let invalid: &[&[u8]] = &[
        b"01",
        b"-01",
        b"1.",
        b".1",
        b"+1",
        b"1e",
        b"1e+",
        b"0x1",
        b"NaN",
        b"Infinity",
        b"[1,]",
        b"{\"a\":1,}",
        b"[,1]",
        b"{,}",
        b"{\"a\" 1}",
        b"{\"a\":}",
        b"{1:2}",
        b"{'a':1}",
        b"['a']",
        b"\"a\x01\"",
        b"\"\t\"",
        b"\"\\x\"",
        b"\"\\u12\"",
        b"\"\\u12g4\"",
        b"[1] [2]",
        b"{} x",
        b"[}",
        b"{]",
        b"]",
        b"}",
        b"nul",
        b"truex",
        b"[true false]",
        b"\xef\xbb\xbf{}",
        b"\"\xff\"",
        b"\"\xc0\xaf\"",
        b"\"\xed\xa0\x80\"",
        b"\"\xf4\x90\x80\x80\"",
        b"\"\xe2\x82\"",
        b"[\"a\"\"b\"]",
        b"{\"a\":1\"b\":2}",
        b"[1 2]",
        b"[0 1]",
        b"-",
        b"[-]",
        b"[1e1.0]",
        b"\"abc",
        b"[\"\\\"]",
    ];
    for v in valid {
        assert!(
            run(&masked(), v).is_ok(),
            "should accept {:?}",
            String::from_utf8_lossy(v)
        );
        assert_eq!(
            run(&spec_with(|_| {}, ActionTable::default()), v).unwrap(),
            *v
        );
    }
    for v in invalid {
        assert!(
            run(&masked(), v).is_err(),
            "should reject {:?}",
            String::from_utf8_lossy(v)
        );
    }
}

#[test]
fn every_split_gives_the_same_output() {
    let docs: Vec<&[u8]> = vec![
        br#"{"accounts": [ {"id":"A1", "SSN" : "123-45-6789", "card_number":4111111111111111, "bank":{"account_number":"000123456789"}} ], "total" : 1}"#,
        r#"{"s\u0073n":"123\u002d45-6789","n":-1.5e-3,"x":[true,false,null,"\ud83d\ude00é"]}"#.as_bytes(),
        br#"[{"ssn":{"a":[1,{"b":"987654321"}]}}, "tail"]"#,
    ];
    let mut remove = ActionTable::uniform(Action::Remove);
    remove.set(FieldClass::Tin, Action::Redact);
    for spec in [masked(), spec_with(city_rules, remove)] {
        for doc in &docs {
            let whole = run(&spec, doc).unwrap();
            for cut in 0..=doc.len() {
                let mut rw = JsonRewriter::new(spec.clone());
                let mut out = Vec::new();
                rw.write(&doc[..cut], &mut out).unwrap();
                rw.write(&doc[cut..], &mut out).unwrap();
                rw.finish(&mut out).unwrap();
                assert_eq!(s(&out), s(&whole), "cut at {cut}");
            }
            for size in 1..8 {
                assert_eq!(run_chunks(&spec, doc, &[size, size + 3]).unwrap(), whole);
            }
        }
    }
}

#[test]
fn unselected_bodies_pass_byte_for_byte() {
    let spec = spec_with(|_| {}, ActionTable::default());
    let input = b" {\"a\" :\t[1 ,2.50e+3, \"x\\ny\", {}] ,\n\"b\":null }\n";
    assert_eq!(run(&spec, input).unwrap(), input);
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[ -~é😀\\n\"\\\\]{0,12}".prop_map(Value::String),
        "[0-9]{3}-[0-9]{2}-[0-9]{4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        "[a-z_]{1,8}",
                        Just("ssn".to_owned()),
                        Just("SSN".to_owned()),
                        Just("card_number".to_owned())
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Every value under a selected key, as serde_json sees it.
fn selected_strings(v: &serde_json::Value, under: bool, out: &mut Vec<String>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let sel = under || matches!(k.to_ascii_lowercase().as_str(), "ssn" | "card_number");
                selected_strings(v, sel, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| selected_strings(v, under, out)),
        Value::String(s) if under => out.push(s.clone()),
        Value::Number(n) if under => out.push(n.to_string()),
        _ => {}
    }
}

fn strip_selected(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.to_ascii_lowercase().as_str(), "ssn" | "card_number"))
                .map(|(k, v)| (k.clone(), strip_selected(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_selected).collect()),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random documents, pretty or compact, cut into random chunks: output is
    /// valid JSON, equal to the input apart from selected values, and the
    /// same for every split.
    #[test]
    fn random_documents(doc in arb_json(), pretty in any::<bool>(), sizes in prop::collection::vec(1usize..64, 1..6)) {
        let text = if pretty { serde_json::to_vec_pretty(&doc).unwrap() } else { serde_json::to_vec(&doc).unwrap() };
        let mut remove = ActionTable::uniform(Action::Remove);
        remove.set(FieldClass::Tin, Action::Last4);
        for spec in [masked(), spec_with(city_rules, remove)] {
            let whole = run(&spec, &text).unwrap();
            let chunked = run_chunks(&spec, &text, &sizes).unwrap();
            prop_assert_eq!(&whole, &chunked);
            let out: serde_json::Value = serde_json::from_slice(&whole).unwrap();
            let reparsed: serde_json::Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(strip_selected(&out), strip_selected(&reparsed));
        }
        // no value under a selected key survives in a masked output unless too short to mask
        let out = run(&masked(), &text).unwrap();
        let outv: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut before = Vec::new();
        selected_strings(&doc, false, &mut before);
        let mut after = Vec::new();
        selected_strings(&outv, false, &mut after);
        for v in &before {
            let alnum = v.chars().filter(|c| c.is_alphanumeric()).count();
            if alnum > 0 {
                prop_assert!(!after.contains(v) || v.chars().all(|c| !c.is_alphanumeric()), "survived: {}", v);
            }
        }
    }

    /// Acceptance agrees with serde_json on arbitrary near-JSON bytes
    /// (serde_json rejects lone surrogate escapes, which RFC 8259's grammar allows).
    #[test]
    fn acceptance_matches_serde_json(bytes in prop::collection::vec(prop::sample::select(b"{}[]:,\"\\ u0123456789abcdefEtrnls.-+\n\xc3\xa9\x01".to_vec()), 0..40)) {
        let ours = run(&masked(), &bytes).is_ok();
        let theirs = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
        let text = String::from_utf8_lossy(&bytes);
        let surrogate = text.to_ascii_lowercase().contains("\\ud");
        if !surrogate {
            prop_assert_eq!(ours, theirs, "{:?}", text);
        }
    }
}

#[test]
fn detectors_none_means_unnamed_strings_stream() {
    let mut spec = masked();
    let mut b = RulesBuilder::new();
    city_rules(&mut b);
    b.detectors(DetectorSet::NONE);
    spec.rules = Arc::new(b.build());
    let out = run(&spec, br#"{"note":"123-45-6789"}"#).unwrap();
    assert_eq!(s(&out), r#"{"note":"123-45-6789"}"#);
}

/// A sealer with a visible, fake envelope format, for request-mode tests.
struct FakeSealer;

impl crate::rewrite::EnvelopeSealer for FakeSealer {
    fn seal(
        &self,
        class: FieldClass,
        plaintext: &str,
    ) -> Result<String, crate::rewrite::SealError> {
        let digits: String = plaintext
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        if digits.len() < 4 {
            return Err(crate::rewrite::SealError::Unsealable);
        }
        Ok(format!(
            "mg1.k1.{}.{}",
            &digits[digits.len() - 4..],
            format!("{}{}", class.name(), "A".repeat(40)).replace('_', "-")
        ))
    }
    fn blind_index(
        &self,
        _class: FieldClass,
        value: &str,
    ) -> Result<String, crate::rewrite::SealError> {
        Ok(format!(
            "bidx1.{}",
            value.chars().filter(char::is_ascii_digit).count()
        ))
    }
    fn verify(&self, _class: FieldClass, envelope: &str) -> bool {
        // The fake envelopes carry their class name in the body.
        envelope.starts_with("mg1.k1.")
    }
}

fn protection(detected: crate::rewrite::DetectedCard) -> Arc<crate::rewrite::RequestProtection> {
    let mut encrypt = [false; FieldClass::COUNT];
    encrypt[FieldClass::CardNumber.index()] = true;
    Arc::new(crate::rewrite::RequestProtection {
        sealer: Some(Arc::new(FakeSealer)),
        encrypt,
        blind_index: encrypt,
        detected_card: detected,
    })
}

fn request_spec() -> RewriteSpec {
    let mut b = RulesBuilder::new();
    city_rules(&mut b);
    b.detectors(DetectorSet::ALL);
    RewriteSpec {
        rules: Arc::new(b.build()),
        actions: ActionTable::uniform(Action::Clear),
        detectors: Arc::new(Detectors::new()),
        limits: Limits::default(),
        opener: None,
        drop_accounts: None,
    }
}

#[test]
fn writes_seal_card_numbers_and_add_blind_indexes() {
    let input = br#"{"name":"A","ssn":"123-45-6789","cards":[{"card_number":"4111 1111 1111 1111","card_number_bidx":"forged"},{"card_number":4012888888881881}]}"#;
    let mut rw = JsonRewriter::for_request(
        request_spec(),
        protection(crate::rewrite::DetectedCard::Refuse),
    );
    let out = rewrite_all(&mut rw, input).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["ssn"], "123-45-6789",
        "other classes are written as they are"
    );
    let c0 = v["cards"][0]["card_number"].as_str().unwrap();
    assert!(c0.starts_with("mg1.k1.1111."), "{c0}");
    assert_eq!(
        v["cards"][0]["card_number_bidx"], "bidx1.16",
        "the forged index is replaced"
    );
    assert!(v["cards"][1]["card_number"]
        .as_str()
        .unwrap()
        .starts_with("mg1.k1.1881."));
    assert!(!String::from_utf8_lossy(&out).contains("4111"));
    assert_eq!(rw.counts().sealed, 2);
    // every split gives the same body
    for cut in 0..input.len() {
        let mut rw = JsonRewriter::for_request(
            request_spec(),
            protection(crate::rewrite::DetectedCard::Refuse),
        );
        let mut o = Vec::new();
        rw.write(&input[..cut], &mut o).unwrap();
        rw.write(&input[cut..], &mut o).unwrap();
        rw.finish(&mut o).unwrap();
        assert_eq!(o, out, "cut {cut}");
    }
}

#[test]
fn writes_with_a_card_in_a_note_are_refused_naming_the_field() {
    let input = br#"{"accounts":[{"notes":["ok","paid by card 4111 1111 1111 1111"]}]}"#;
    let mut rw = JsonRewriter::for_request(
        request_spec(),
        protection(crate::rewrite::DetectedCard::Refuse),
    );
    match rewrite_all(&mut rw, input) {
        Err(RewriteError::ClearCardInRequest { path }) => assert_eq!(path, "/accounts/0/notes/1"),
        other => panic!("{other:?}"),
    }
    let mut rw = JsonRewriter::for_request(
        request_spec(),
        protection(crate::rewrite::DetectedCard::Encrypt),
    );
    let out = rewrite_all(&mut rw, input).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("paid by card mg1.k1.1111."), "{text}");
    // without a sealer, a card value cannot be stored at all
    let mut p = (*protection(crate::rewrite::DetectedCard::Refuse)).clone();
    p.sealer = None;
    let mut rw = JsonRewriter::for_request(request_spec(), Arc::new(p));
    assert!(matches!(
        rewrite_all(&mut rw, br#"{"card_number":"4111111111111111"}"#),
        Err(RewriteError::CannotEncrypt { .. })
    ));
    // a damaged envelope is not stored either
    let mut rw = JsonRewriter::for_request(
        request_spec(),
        protection(crate::rewrite::DetectedCard::Refuse),
    );
    assert!(matches!(
        rewrite_all(&mut rw, br#"{"card_number":"mg1.broken"}"#),
        Err(RewriteError::CannotEncrypt { .. })
    ));
}

#[test]
fn account_ids_of_records_are_collected() {
    let mut b = RulesBuilder::new();
    city_rules(&mut b);
    b.record_id_name("id").unwrap();
    let spec = RewriteSpec {
        rules: Arc::new(b.build()),
        ..masked()
    };
    let mut rw = JsonRewriter::new(spec.clone());
    rewrite_all(
        &mut rw,
        br#"{"accounts":[{"id":"ACC-1","x":{"id":"not-a-record"}},{"id":2}],"id":"wrapper"}"#,
    )
    .unwrap();
    assert_eq!(
        rw.counts().account_ids,
        vec!["ACC-1".to_owned(), "2".to_owned()]
    );
    let mut rw = JsonRewriter::new(spec);
    rewrite_all(&mut rw, br#"{"id":"ACC-9","ssn":"123456789"}"#).unwrap();
    assert_eq!(rw.counts().account_ids, vec!["ACC-9".to_owned()]);
}

fn planted_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (701u16..=728, 1u8..=99, 1u16..=9999).prop_map(|(a, g, s)| format!("{a:03}-{g:02}-{s:04}")),
        (701u16..=728, 1u8..=99, 1u16..=9999).prop_map(|(a, g, s)| format!("{a:03}{g:02}{s:04}")),
        prop::sample::select(vec![
            "4111111111111111",
            "4111 1111 1111 1111",
            "5555555555554444",
            "5555-5555-5555-4444",
            "378282246310005",
            "4012888888881881",
        ])
        .prop_map(str::to_owned),
        (0usize..4, 1_000_000u32..9_999_999)
            .prop_map(|(p, n)| format!("{}-{n:07}", ["94", "77", "20", "26"][p])),
    ]
}

fn all_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|e| all_strings(e, out)),
        serde_json::Value::Object(m) => {
            for (k, e) in m {
                out.push(k.clone());
                all_strings(e, out);
            }
        }
        _ => {}
    }
}

/// A document with planted red-flag values anywhere: in note values, array
/// elements, keys, with some digits written as `\u` escapes.
fn planted_document() -> impl Strategy<Value = (String, Vec<String>)> {
    let word = prop::sample::select(vec![
        "paid", "call", "note", "ok", "x", "re:", "ssn", "card", "on file",
    ]);
    let text = (
        prop::collection::vec(word.clone(), 0..3),
        planted_value(),
        prop::collection::vec(word, 0..3),
    )
        .prop_map(|(a, v, b)| (format!("{} {} {}", a.join(" "), v, b.join(" ")), v));
    (prop::collection::vec((text, 0u8..4), 1..6), any::<u64>()).prop_map(|(items, seed)| {
        let mut planted = Vec::new();
        let mut obj = serde_json::Map::new();
        let mut arr = Vec::new();
        for (i, ((text, value), place)) in items.into_iter().enumerate() {
            planted.push(value);
            match place {
                0 => {
                    obj.insert(format!("note{i}"), serde_json::Value::String(text));
                }
                1 => arr.push(serde_json::Value::String(text)),
                2 => {
                    obj.insert(text, serde_json::Value::from(i));
                }
                _ => {
                    obj.insert(
                        format!("n{i}"),
                        serde_json::json!({ "deep": [ { "comment": text } ] }),
                    );
                }
            }
        }
        obj.insert("list".to_owned(), serde_json::Value::Array(arr));
        let mut json = serde_json::to_string(&serde_json::Value::Object(obj)).unwrap();
        // Write one digit of some planted values as a \u escape.
        let mut escaped = std::collections::HashSet::new();
        for (k, v) in planted.iter().enumerate() {
            if (seed >> (k % 64)) & 1 == 1 && escaped.insert(v.clone()) {
                if let Some(pos) = json.find(v.as_str()) {
                    let d = json.as_bytes()[pos];
                    json.replace_range(pos..pos + 1, &format!("\\u{:04x}", d));
                }
            }
        }
        (json, planted)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Planted SSNs, cards and EINs never survive for a role that may not
    /// see them, wherever they are and however they are written; the output
    /// stays valid JSON; a role that may see them gets them unchanged.
    #[test]
    fn planted_values_never_survive((json, planted) in planted_document(), sizes in prop::collection::vec(1usize..40, 1..4)) {
        let mut b = RulesBuilder::new();
        city_rules(&mut b);
        b.detectors(DetectorSet::ALL);
        let rules = Arc::new(b.build());
        let spec = RewriteSpec { rules: Arc::clone(&rules), ..masked() };
        let out = run_chunks(&spec, json.as_bytes(), &sizes).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut strings = Vec::new();
        all_strings(&v, &mut strings);
        for p in &planted {
            prop_assert!(!strings.iter().any(|s| s.contains(p.as_str())), "{} survived in {}", p, String::from_utf8_lossy(&out));
        }
        let clear = RewriteSpec { rules, actions: ActionTable::uniform(Action::Clear), ..masked() };
        let out = run_chunks(&clear, json.as_bytes(), &sizes).unwrap();
        prop_assert_eq!(out, json.as_bytes());
    }
}

fn vocabulary_rules(b: &mut RulesBuilder) {
    use crate::class::words::{PhraseKind, VocabularyBuilder};
    let mut v = VocabularyBuilder::new();
    v.synonym("number", "no")
        .phrase("ssn", FieldClass::Ssn, PhraseKind::Word)
        .phrase("passport", FieldClass::Passport, PhraseKind::Word)
        .phrase("card", FieldClass::CardNumber, PhraseKind::Word)
        .phrase("bank", FieldClass::BankAccount, PhraseKind::Container)
        .phrase("number", FieldClass::BankAccount, PhraseKind::Ambiguous)
        .qualifier("holder")
        .generic_value("value")
        .generic_value("number")
        .generic_value("id")
        .descriptor("type")
        .descriptor("kind")
        .descriptor("label");
    b.vocabulary(Arc::new(v.build().unwrap()));
    b.identifier_name("id").unwrap();
    b.record_path("/accounts/*").unwrap();
}

fn vocabulary_spec(actions: ActionTable) -> RewriteSpec {
    spec_with(vocabulary_rules, actions)
}

/// Every split of `input` into two chunks gives `want`.
fn assert_all_splits(spec: &RewriteSpec, input: &str, want: &str) {
    for cut in 0..=input.len() {
        let mut rw = JsonRewriter::new(spec.clone());
        let mut out = Vec::new();
        rw.write(&input.as_bytes()[..cut], &mut out).unwrap();
        rw.write(&input.as_bytes()[cut..], &mut out).unwrap();
        rw.finish(&mut out).unwrap();
        assert_eq!(s(&out), want, "split at {cut}");
    }
}

#[test]
fn type_value_objects_mask_the_value_whatever_the_member_order() {
    let spec = vocabulary_spec(ActionTable::uniform(Action::Last4));
    assert_all_splits(
        &spec,
        r#"{"ids":[{"type":"passport","value":"X12345678"},{"value":"Y98765432","kind":"Passport No"},{"value":"Z1","kind":"loyalty"}]}"#,
        r#"{"ids":[{"type":"passport","value":"*****5678"},{"value":"*****5432","kind":"Passport No"},{"value":"Z1","kind":"loyalty"}]}"#,
    );
    // A number value, and a descriptor after a nested container.
    assert_all_splits(
        &spec,
        r#"[{"id":4111111111111111,"meta":{"a":[1,2]},"type":"card"}]"#,
        r#"[{"id":"************1111","meta":{"a":[1,2]},"type":"card"}]"#,
    );
}

#[test]
fn customer_records_keep_their_ids_and_names() {
    let spec = vocabulary_spec(ActionTable::uniform(Action::Last4));
    let body = r#"{"accounts":[{"id":"A1001","name":"Passport Office","value":"12"}]}"#;
    assert_eq!(s(&run(&spec, body.as_bytes()).unwrap()), body);
}

#[test]
fn named_containers_pass_their_class_to_generic_members() {
    let spec = vocabulary_spec(ActionTable::uniform(Action::Last4));
    assert_all_splits(
        &spec,
        r#"{"bank":{"number":"000123456789","holder":"Jo"},"ssns":["123-45-6789"]}"#,
        r#"{"bank":{"number":"********6789","holder":"Jo"},"ssns":["***-**-6789"]}"#,
    );
    let removed = vocabulary_spec(ActionTable::uniform(Action::Remove));
    assert_eq!(
        s(&run(
            &removed,
            br#"{"bank":{"number":"0001234567"},"cards":[{"x":1}],"a":1}"#
        )
        .unwrap()),
        r#"{"a":1}"#
    );
}

#[test]
fn allowlists_drop_red_flag_containers_whole() {
    let spec = spec_with(
        |b| {
            vocabulary_rules(b);
            b.allow_name("name").unwrap();
        },
        ActionTable::uniform(Action::Remove),
    );
    assert_eq!(
        s(&run(
            &spec,
            br#"{"name":"Jo","cards":[{"holder":"Jo"}],"bank":{},"other":{"x":1}}"#
        )
        .unwrap()),
        r#"{"name":"Jo"}"#
    );
    // Any container the allowlist empties goes whole, at every split, its
    // comma with it; one that keeps something stays.
    assert_all_splits(
        &spec,
        r#"{"identity":{"ssn":"123-45-6789","docs":[{"n":1}]},"name":"Jo","kyc":[{"x":1},{"y":2}],"keep":[{"name":"Al"},{"z":1}],"was_empty":{}}"#,
        r#"{"name":"Jo","keep":[{"name":"Al"}],"was_empty":{}}"#,
    );
}

fn detecting() -> RewriteSpec {
    spec_with(
        |b| {
            vocabulary_rules(b);
            b.detectors(DetectorSet::ALL);
        },
        ActionTable::uniform(Action::Last4),
    )
}

#[test]
fn values_are_found_however_they_are_written() {
    let spec = detecting();
    let cases: &[(&str, &str)] = &[
        // Unicode digit forms and separators.
        (
            r#"{"n":"１２３－４５－６７８９"}"#,
            r#"{"n":"***-**-6789"}"#,
        ),
        (r#"{"n":"SSN ١٢٣٤٥٦٧٨٩"}"#, r#"{"n":"SSN *****6789"}"#),
        (r#"{"n":"१२३ ४५ ६७८९"}"#, r#"{"n":"*** ** 6789"}"#),
        // Escaped digits.
        (
            r#"{"n":"\u0031\u0032\u0033-45-6789"}"#,
            r#"{"n":"***-**-6789"}"#,
        ),
        // Glued and dotted.
        (r#"{"n":"x123.45.6789y"}"#, r#"{"n":"x***.**.6789y"}"#),
        // Card numbers as JSON numbers in exponent and fraction form.
        (
            r#"{"n":4.111111111111111e15}"#,
            r#"{"n":"************1111"}"#,
        ),
        (r#"{"n":4111111111111111.0}"#, r#"{"n":"************1111"}"#),
        (r#"{"n":1.5e3}"#, r#"{"n":1.5e3}"#),
    ];
    for (input, want) in cases {
        assert_eq!(s(&run(&spec, input.as_bytes()).unwrap()), *want, "{input}");
    }
}

#[test]
fn encoded_payloads_are_looked_into() {
    use base64::Engine as _;
    let spec = detecting();
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let b64url = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
    // JSON in a string, twice encoded, names included.
    let inner = serde_json::to_string(r#"{"passport":"X1234567"}"#).unwrap();
    let twice = serde_json::to_string(&inner).unwrap();
    for body in [
        format!(r#"{{"payload":{inner}}}"#),
        format!(r#"{{"payload":{twice}}}"#),
    ] {
        let out = String::from_utf8(run(&spec, body.as_bytes()).unwrap()).unwrap();
        assert!(!out.contains("X1234567"), "{out}");
        assert!(out.contains("4567"), "{out}");
    }
    let jwt = format!(
        "{}.{}.c2lnbmF0dXJl",
        b64url(r#"{"alg":"none"}"#),
        b64url(r#"{"sub":"u1","ssn":"123-45-6789"}"#)
    );
    for encoded in [
        b64("SSN 123-45-6789"),
        b64url(r#"{"card":"4111 1111 1111 1111"}"#),
        format!(
            "data:application/json;base64,{}",
            b64(r#"{"dl":"D1234567"}"#)
        ),
        jwt,
    ] {
        let body = format!(r#"{{"blob":"{encoded}"}}"#);
        let out = String::from_utf8(run(&spec, body.as_bytes()).unwrap()).unwrap();
        assert!(out.contains("[REDACTED]"), "{body} -> {out}");
        assert!(!out.contains(&encoded), "{out}");
    }
    // Benign payloads pass unchanged.
    for benign in [
        b64("just a note about the meter"),
        "550e8400-e29b-41d4-a716-446655440000".to_owned(),
        "Administration".to_owned(),
    ] {
        let body = format!(r#"{{"blob":"{benign}"}}"#);
        assert_eq!(s(&run(&spec, body.as_bytes()).unwrap()), body);
    }
}

#[test]
fn a_descriptor_naming_nothing_red_flag_keeps_an_ambiguous_value() {
    let spec = vocabulary_spec(ActionTable::uniform(Action::Last4));
    assert_all_splits(
        &spec,
        r#"[{"label":"zip","number":"91288-3877"},{"number":"INV2423825","label":"meter"},{"number":"000123456789"},{"number":"000123456789","x":1}]"#,
        r#"[{"label":"zip","number":"91288-3877"},{"number":"INV2423825","label":"meter"},{"number":"********6789"},{"number":"********6789","x":1}]"#,
    );
}
