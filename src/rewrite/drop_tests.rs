// Compiled only under #[cfg(test)] (see the parent module).
//! Dropping the records of given accounts (`RewriteSpec::drop_accounts`) in
//! JSON, NDJSON and CSV bodies.
use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;

use super::csv::CsvRewriter;
use super::*;
use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::Detectors;

fn rules(record_paths: &[&str], extra: impl FnOnce(&mut RulesBuilder)) -> Arc<Rules> {
    let mut b = RulesBuilder::new();
    b.class_name("ssn", FieldClass::Ssn).unwrap();
    b.class_name("card_number", FieldClass::CardNumber).unwrap();
    for p in record_paths {
        b.record_path(p).unwrap();
    }
    for id in ["id", "account_id"] {
        b.record_id_name(id).unwrap();
    }
    extra(&mut b);
    Arc::new(b.build())
}

fn spec_for(rules: Arc<Rules>, frozen: &[&str]) -> RewriteSpec {
    let set: HashSet<String> = frozen.iter().map(|s| (*s).to_owned()).collect();
    RewriteSpec {
        rules,
        actions: ActionTable::uniform(Action::Last4),
        detectors: Arc::new(Detectors::new()),
        limits: Limits::default(),
        opener: None,
        drop_accounts: Some(Arc::new(set)),
    }
}

/// Records are the elements of `/accounts/*` (and the root of a body that
/// has none, as the default policy's shared selectors say).
fn spec(frozen: &[&str]) -> RewriteSpec {
    spec_for(rules(&["/accounts/*", "/"], |_| {}), frozen)
}

fn no_filter(spec: &RewriteSpec) -> RewriteSpec {
    RewriteSpec {
        drop_accounts: None,
        ..spec.clone()
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Json,
    Ndjson,
    Csv,
}

fn rewriter(kind: Kind, spec: &RewriteSpec) -> Box<dyn BodyRewriter> {
    match kind {
        Kind::Json => Box::new(JsonRewriter::new(spec.clone())),
        Kind::Ndjson => Box::new(JsonRewriter::ndjson(spec.clone())),
        Kind::Csv => Box::new(CsvRewriter::new(spec.clone())),
    }
}

/// Rewrites `input` cut at `cuts` (offsets, any order, out of range ignored).
fn run_cut(
    kind: Kind,
    spec: &RewriteSpec,
    input: &[u8],
    cuts: &[usize],
) -> Result<(Vec<u8>, Counts), RewriteError> {
    let mut cuts: Vec<usize> = cuts.iter().copied().filter(|&c| c <= input.len()).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    let mut rw = rewriter(kind, spec);
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        rw.write(&input[at..c], &mut out)?;
        at = c;
    }
    rw.finish(&mut out)?;
    Ok((out, rw.counts().clone()))
}

/// Rewrites `input` whole, then checks that every single cut and a
/// byte-at-a-time run give the same result.
fn run_all_splits(
    kind: Kind,
    spec: &RewriteSpec,
    input: &[u8],
) -> Result<(Vec<u8>, Counts), RewriteError> {
    let whole = run_cut(kind, spec, input, &[]);
    for cut in 0..=input.len() {
        assert_eq!(
            run_cut(kind, spec, input, &[cut]),
            whole,
            "cut at {cut} of {}",
            String::from_utf8_lossy(input)
        );
    }
    let every: Vec<usize> = (0..input.len()).collect();
    assert_eq!(run_cut(kind, spec, input, &every), whole, "byte at a time");
    whole
}

fn json_out(frozen: &[&str], input: &str) -> Result<(String, Counts), RewriteError> {
    run_all_splits(Kind::Json, &spec(frozen), input.as_bytes())
        .map(|(o, c)| (String::from_utf8(o).unwrap(), c))
}

fn json_ok(frozen: &[&str], input: &str) -> String {
    let (out, _) = json_out(frozen, input).unwrap();
    serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    out
}

#[test]
fn hash_sets_are_account_filters() {
    let set: HashSet<String> = ["A1".to_owned()].into_iter().collect();
    let f: &dyn AccountFilter = &set;
    assert!(f.drops("A1"));
    assert!(!f.drops("a1"));
    assert!(!f.drops("A"));
    // The spec's Debug shows whether a filter is set, never the ids.
    let dbg = format!("{:?}", spec(&["SECRET-ID"]));
    assert!(dbg.contains("drop_accounts: true"), "{dbg}");
    assert!(!dbg.contains("SECRET-ID"), "{dbg}");
}

#[test]
fn array_records_are_dropped_with_their_commas() {
    let cases = [
        // first, middle, last, only, all, none
        (
            r#"{"accounts":[{"id":"X"},{"id":"A"},{"id":"B"}]}"#,
            r#"{"accounts":[{"id":"A"},{"id":"B"}]}"#,
        ),
        (
            r#"{"accounts":[{"id":"A"},{"id":"X"},{"id":"B"}]}"#,
            r#"{"accounts":[{"id":"A"},{"id":"B"}]}"#,
        ),
        (
            r#"{"accounts":[{"id":"A"},{"id":"B"},{"id":"X"}]}"#,
            r#"{"accounts":[{"id":"A"},{"id":"B"}]}"#,
        ),
        (r#"{"accounts":[{"id":"X"}]}"#, r#"{"accounts":[]}"#),
        (
            r#"{"accounts":[{"id":"X"},{"id":"Y"},{"id":"X"}]}"#,
            r#"{"accounts":[]}"#,
        ),
        (
            r#"{"accounts":[{"id":"A"},{"id":"B"}]}"#,
            r#"{"accounts":[{"id":"A"},{"id":"B"}]}"#,
        ),
        (
            r#"{"accounts":[{"id":"X"},{"id":"Y"},{"id":"A"},{"id":"X"},{"id":"B"},{"id":"Y"}]}"#,
            r#"{"accounts":[{"id":"A"},{"id":"B"}]}"#,
        ),
        // whitespace everywhere
        (
            "{ \"accounts\" : [ {\"id\":\"X\"} , {\"id\":\"A\"} ,\n {\"id\":\"Y\"} ] }",
            "{ \"accounts\" : [   {\"id\":\"A\"}  ] }",
        ),
        (
            "{\"accounts\":[ {\"id\":\"A\"} , {\"id\":\"X\"}\n]\n}",
            "{\"accounts\":[ {\"id\":\"A\"} \n]\n}",
        ),
        // not at the record path: not records
        (
            "[\n{\"accounts\":[ {\"id\":\"A\"} , {\"id\":\"X\"} ]}\n]",
            "[\n{\"accounts\":[ {\"id\":\"A\"} , {\"id\":\"X\"} ]}\n]",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(json_ok(&["X", "Y"], input), want, "{input}");
    }
}

#[test]
fn the_whole_record_goes_and_the_rest_is_masked_as_before() {
    let input = r#"{"page":1,"accounts":[{"name":"Al","ssn":"123-45-6789","id":"A1","bank":{"id":"B-9"}},{"id":"X1","ssn":"987-65-4321","notes":["x"]},{"card_number":"4111111111111111","id":"A2"}],"next":null}"#;
    let (out, counts) = json_out(&["X1", "B-9", "A2x"], input).unwrap();
    assert_eq!(
        out,
        r#"{"page":1,"accounts":[{"name":"Al","ssn":"***-**-6789","id":"A1","bank":{"id":"B-9"}},{"card_number":"************1111","id":"A2"}],"next":null}"#,
        "only the id of the record itself decides"
    );
    assert_eq!(counts.records, 2);
    assert_eq!(counts.dropped_records, 1);
    assert_eq!(counts.account_ids, vec!["A1".to_owned(), "A2".to_owned()]);
    assert_eq!(counts.get(FieldClass::Ssn, Action::Last4), 1);
    assert_eq!(counts.get(FieldClass::CardNumber, Action::Last4), 1);
    // Without a filter the same body is untouched by this change.
    let (plain, plain_counts) =
        run_cut(Kind::Json, &no_filter(&spec(&[])), input.as_bytes(), &[]).unwrap();
    assert_eq!(plain_counts.records, 3);
    assert_eq!(plain_counts.dropped_records, 0);
    assert_eq!(plain_counts.get(FieldClass::Ssn, Action::Last4), 2);
    let (empty_set, empty_counts) = run_cut(Kind::Json, &spec(&[]), input.as_bytes(), &[]).unwrap();
    assert_eq!(
        empty_set, plain,
        "a filter that drops nothing changes nothing"
    );
    assert_eq!(empty_counts, plain_counts);
}

#[test]
fn ids_are_strings_numbers_or_escaped_and_a_missing_id_keeps_the_record() {
    let input = r#"{"accounts":[{"id":7},{"id":"7"},{"id":70},{"id":"A\u0031"},{"id":"A1x"},{"name":"no id"},{"id":null},{"id":{"v":"X"}},{"id":["X"]},{"id":true},{"id":-1.5e3},{"id":"\"q\""}]}"#;
    let out = json_ok(&["7", "A1", "X", "-1.5e3", "\"q\""], input);
    assert_eq!(
        out,
        r#"{"accounts":[{"id":70},{"id":"A1x"},{"name":"no id"},{"id":null},{"id":{"v":"X"}},{"id":["X"]},{"id":true}]}"#
    );
    // A number id is its text as written: 7.0 is not 7.
    assert_eq!(
        json_ok(&["7"], r#"{"accounts":[{"id":7.0},{"id":7}]}"#),
        r#"{"accounts":[{"id":7.0}]}"#
    );
    // `account_id` names the account too, and the id may come last.
    assert_eq!(
        json_ok(
            &["X"],
            r#"{"accounts":[{"ssn":"123456789","Account_ID":"X"},{"a":1,"accountId":"B"}]}"#
        ),
        r#"{"accounts":[{"a":1,"accountId":"B"}]}"#
    );
    // An escaped key is the id field too.
    assert_eq!(
        json_ok(&["X"], r#"{"accounts":[{"\u0069d":"X"},{"id":"B"}]}"#),
        r#"{"accounts":[{"id":"B"}]}"#
    );
}

#[test]
fn records_may_be_object_members() {
    let s = spec_for(rules(&["/accounts/*"], |_| {}), &["X"]);
    for (input, want) in [
        (
            r#"{"accounts":{"k1":{"id":"X"},"k2":{"id":"A"}}}"#,
            r#"{"accounts":{"k2":{"id":"A"}}}"#,
        ),
        (
            r#"{"accounts":{"k1":{"id":"A"},"k2":{"id":"X"}}}"#,
            r#"{"accounts":{"k1":{"id":"A"}}}"#,
        ),
        (
            r#"{"accounts":{"k1":{"id":"X"}},"more":true}"#,
            r#"{"accounts":{},"more":true}"#,
        ),
    ] {
        let (out, _) = run_all_splits(Kind::Json, &s, input.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
    // A record that is not an object has no id: it is kept.
    let (out, c) =
        run_all_splits(Kind::Json, &s, br#"{"accounts":["X",1,null,[{"id":"X"}]]}"#).unwrap();
    assert_eq!(out, br#"{"accounts":["X",1,null,[{"id":"X"}]]}"#);
    assert_eq!((c.records, c.dropped_records), (4, 0));
}

#[test]
fn nested_records_are_decided_one_by_one() {
    let s = spec_for(
        rules(&["/accounts/*", "/accounts/*/linked/*"], |_| {}),
        &["X"],
    );
    let input = r#"{"accounts":[{"id":"A","linked":[{"id":"X"},{"id":"B","ssn":"123456789"}]},{"linked":[{"id":"C"}],"id":"X"},{"id":"D","linked":[{"id":"X"}]}]}"#;
    let (out, c) = run_all_splits(Kind::Json, &s, input.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"accounts":[{"id":"A","linked":[{"id":"B","ssn":"*****6789"}]},{"id":"D","linked":[]}]}"#
    );
    assert_eq!(c.dropped_records, 3);
    assert_eq!(c.records, 3, "A, B, D");
    assert_eq!(c.account_ids, ["A", "B", "D"]);
    assert_eq!(c.get(FieldClass::Ssn, Action::Last4), 1);
}

#[test]
fn a_removed_id_still_decides() {
    // Allowlist without the id: the id is not shown, yet it drops its record.
    let r = rules(&["/accounts/*"], |b| b.allow_name("name").unwrap());
    let s = spec_for(r, &["X"]);
    let input = r#"{"accounts":[{"id":"X","name":"x"},{"name":"a","id":"A"},{"id":7,"name":"n"}]}"#;
    let (out, c) = run_all_splits(Kind::Json, &s, input.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"accounts":[{"name":"a"},{"name":"n"}]}"#
    );
    assert_eq!((c.records, c.dropped_records, c.not_allowed), (2, 1, 2));
    // The id's class says `remove`.
    let r = rules(&["/accounts/*"], |b| {
        b.class_name("id", FieldClass::Tin).unwrap()
    });
    let mut s = spec_for(r, &["X"]);
    s.actions.set(FieldClass::Tin, Action::Remove);
    let (out, c) = run_all_splits(
        Kind::Json,
        &s,
        br#"{"accounts":[{"a":1,"id":"X"},{"a":2,"id":"A"},{"id":"X"},{"id":{"n":1}}]}"#,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"accounts":[{"a":2},{}]}"#
    );
    assert_eq!((c.records, c.dropped_records), (2, 2));
    assert_eq!(c.get(FieldClass::Tin, Action::Remove), 2);
}

#[test]
fn a_root_record_of_a_dropped_account_is_withheld() {
    for input in [
        r#"{"id":"X","ssn":"123456789"}"#,
        r#"{"ssn":"123456789","nested":{"a":[1,2]},"id":"X"}"#,
        r#"  {"account_id":"X"}  "#,
    ] {
        assert_eq!(json_out(&["X"], input), Err(RewriteError::RecordWithheld));
    }
    assert_eq!(
        json_ok(&["X"], r#"{"id":"A","ssn":"123456789"}"#),
        r#"{"id":"A","ssn":"*****6789"}"#
    );
    // A wrapper's own id does not make it a record once it holds records.
    assert_eq!(
        json_ok(&["X"], r#"{"id":"X","accounts":[{"id":"A"}]}"#),
        r#"{"id":"X","accounts":[{"id":"A"}]}"#
    );
    assert_eq!(
        json_ok(&["X"], r#"{"accounts":[{"id":"X"}],"id":"X"}"#),
        r#"{"accounts":[],"id":"X"}"#
    );
    let (_, c) = json_out(&["X"], r#"{"accounts":[{"id":"X"}],"id":"W"}"#).unwrap();
    assert_eq!(
        (c.records, c.dropped_records),
        (0, 1),
        "the wrapper is no record"
    );
    assert!(c.account_ids.is_empty());
    // A second id member: the first decides until the second says otherwise.
    assert_eq!(
        json_out(&["X"], r#"{"accounts":[{"id":"A","x":1,"id":"X"}]}"#),
        Err(RewriteError::RecordWithheld),
        "already released in part: fail, never send it whole"
    );
    assert_eq!(
        json_ok(&["X"], r#"{"accounts":[{"id":"X","id":"A"},{"id":"B"}]}"#),
        r#"{"accounts":[{"id":"B"}]}"#
    );
}

fn small_limit(mut s: RewriteSpec, limit: usize) -> RewriteSpec {
    s.limits.max_token_bytes = limit;
    s
}

#[test]
fn a_record_held_past_the_limit_fails_whatever_the_chunking() {
    let s = small_limit(spec(&["X"]), 40);
    let late = r#"{"accounts":[{"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","id":"A"}]}"#;
    assert_eq!(
        run_all_splits(Kind::Json, &s, late.as_bytes()),
        Err(RewriteError::RecordTooLarge { limit: 40 })
    );
    // An id that comes first releases the record: the rest streams.
    let early = r#"{"accounts":[{"id":"A","name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]}"#;
    let (out, _) = run_all_splits(Kind::Json, &s, early.as_bytes()).unwrap();
    assert_eq!(out, early.as_bytes());
    // A big dropped record inside a held one counts at its peak.
    let s = small_limit(
        spec_for(
            rules(&["/accounts/*", "/accounts/*/linked/*"], |_| {}),
            &["X"],
        ),
        60,
    );
    let peak = r#"{"accounts":[{"linked":[{"id":"X","pad":"pppppppppppppppppppppppppppppppppppppppppppppppppp"}],"id":"A"}]}"#;
    assert_eq!(
        run_all_splits(Kind::Json, &s, peak.as_bytes()),
        Err(RewriteError::RecordTooLarge { limit: 60 })
    );
    // A top-level object is held as a possible record until its id, or
    // until it turns out to hold records.
    let s = small_limit(spec(&["X"]), 40);
    let wrapper = r#"{"pad":"pppppppppppppppppppppppppppppppppppppppp","accounts":[{"id":"A"}]}"#;
    assert_eq!(
        run_all_splits(Kind::Json, &s, wrapper.as_bytes()),
        Err(RewriteError::RecordTooLarge { limit: 40 })
    );
    let wrapper =
        r#"{"id":"W","pad":"pppppppppppppppppppppppppppppppppppppppp","accounts":[{"id":"A"}]}"#;
    let (out, _) = run_all_splits(Kind::Json, &s, wrapper.as_bytes()).unwrap();
    assert_eq!(out, wrapper.as_bytes());
    // Without a filter nothing is held, so there is no such limit.
    let (out, _) = run_cut(
        Kind::Json,
        &no_filter(&small_limit(spec(&[]), 40)),
        late.as_bytes(),
        &[],
    )
    .unwrap();
    assert_eq!(out, late.as_bytes());
}

#[test]
fn nothing_of_a_failed_chunk_leaves_and_the_rewriter_stays_poisoned() {
    let s = spec(&["X"]);
    let mut rw = JsonRewriter::new(s);
    let mut out = Vec::new();
    rw.write(br#"{"id":"X","a":"#, &mut out).unwrap();
    assert!(
        out.is_empty(),
        "a root record is held until its id is known"
    );
    assert_eq!(rw.write(b"1}", &mut out), Err(RewriteError::RecordWithheld));
    assert!(out.is_empty());
    assert_eq!(rw.write(b" ", &mut out), Err(RewriteError::Poisoned));
    assert_eq!(rw.finish(&mut out), Err(RewriteError::Poisoned));
}

#[test]
fn held_output_streams_once_the_id_is_known() {
    let s = spec(&["X"]);
    let mut rw = JsonRewriter::new(s);
    let mut out = Vec::new();
    rw.write(br#"{"accounts":[{"id":"A","#, &mut out).unwrap();
    // (the comma waits for the next member, as always)
    assert_eq!(out, br#"{"accounts":[{"id":"A""#);
    out.clear();
    rw.write(br#""n":1},{"ssn":"1234"#, &mut out).unwrap();
    assert_eq!(out, br#","n":1}"#, "the next record is held until its id");
    out.clear();
    rw.write(br#"56789","id":"X"},{"id":"B"}]}"#, &mut out)
        .unwrap();
    rw.finish(&mut out).unwrap();
    assert_eq!(out, br#",{"id":"B"}]}"#);
}

#[test]
fn ndjson_lines_of_dropped_accounts_go_with_their_line_breaks() {
    let s = spec(&["X"]);
    for (input, want) in [
        (
            "{\"id\":\"X\"}\n{\"id\":\"A\"}\n{\"id\":\"X\"}\n{\"id\":\"B\"}\n",
            "{\"id\":\"A\"}\n{\"id\":\"B\"}\n",
        ),
        (
            "{\"id\":\"A\"}\r\n{\"id\":\"X\",\"ssn\":\"123456789\"}\r\n{\"id\":\"B\"}",
            "{\"id\":\"A\"}\r\n{\"id\":\"B\"}",
        ),
        ("{\"id\":\"A\"}\n{\"id\":\"X\"}", "{\"id\":\"A\"}\n"),
        ("{\"id\":\"X\"}\n{\"id\":\"X\"}\n", ""),
        (
            "{\"id\":\"X\"}  \t \n\n{\"id\":\"A\"}\n",
            "\n{\"id\":\"A\"}\n",
        ),
        // not records: kept
        (
            "[{\"id\":\"X\"}]\n\"X\"\n7\n",
            "[{\"id\":\"X\"}]\n\"X\"\n7\n",
        ),
        // records inside a line are dropped as in JSON, the line stays
        (
            "{\"accounts\":[{\"id\":\"X\"},{\"id\":\"A\"}]}\n{\"id\":\"X\"}\n",
            "{\"accounts\":[{\"id\":\"A\"}]}\n",
        ),
    ] {
        let (out, _) = run_all_splits(Kind::Ndjson, &s, input.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), want, "{input:?}");
    }
    let (_, c) = run_cut(
        Kind::Ndjson,
        &s,
        b"{\"id\":\"X\",\"ssn\":\"123456789\"}\n{\"id\":\"A\",\"ssn\":\"123456789\"}\n",
        &[],
    )
    .unwrap();
    assert_eq!((c.records, c.dropped_records), (1, 1));
    assert_eq!(c.account_ids, ["A"]);
    assert_eq!(c.get(FieldClass::Ssn, Action::Last4), 1);
    // Two values on a line stay an error.
    assert!(run_cut(Kind::Ndjson, &s, b"{\"id\":\"X\"} {}\n", &[]).is_err());
}

fn csv_out(frozen: &[&str], input: &str) -> (String, Counts) {
    let s = spec_for(rules(&[], |_| {}), frozen);
    let (out, c) = run_all_splits(Kind::Csv, &s, input.as_bytes()).unwrap();
    (String::from_utf8(out).unwrap(), c)
}

#[test]
fn csv_rows_of_dropped_accounts_go_with_their_line_breaks() {
    for (input, want) in [
        (
            "id,name,ssn\r\nX,x,123456789\r\nA,a,123456789\r\nX,y,1\r\n",
            "id,name,ssn\r\nA,a,*****6789\r\n",
        ),
        ("name,ID\nx,X\na,A\ny,X", "name,ID\na,A\n"),
        (
            "Account_ID,n\n\"X\",\"multi\nline\"\n\"A\",1\n",
            "Account_ID,n\n\"A\",1\n",
        ),
        ("id\n\"X\"\"\"\nA\n", "id\nA\n"),
        ("id,n\nX,1\n\nA,2\n", "id,n\n\nA,2\n"),
        // no id column: nothing to decide on
        ("name,n\nX,1\n", "name,n\nX,1\n"),
        // only a header
        ("id\r\n", "id\r\n"),
    ] {
        let (out, _) = csv_out(&["X", "X\""], input);
        assert_eq!(out, want, "{input:?}");
    }
    let (_, c) = csv_out(&["X"], "id,ssn\nX,123456789\nA,123456789\nX,1\n");
    assert_eq!((c.records, c.dropped_records), (1, 2));
    assert_eq!(c.get(FieldClass::Ssn, Action::Last4), 1);
    // A removed id column still decides.
    let r = rules(&[], |b| b.allow_name("name").unwrap());
    let s = spec_for(r, &["X"]);
    let (out, c) = run_all_splits(Kind::Csv, &s, b"id,name\nX,x\nA,a\n").unwrap();
    assert_eq!(out, b"name\na\n");
    assert_eq!((c.records, c.dropped_records), (1, 1));
    // A dropped row with a wrong field count is still an error.
    assert!(run_cut(
        Kind::Csv,
        &spec_for(rules(&[], |_| {}), &["X"]),
        b"id,n\nX\n",
        &[]
    )
    .is_err());
}

// ---- property tests: every chunking, against a serde_json reference ----

/// An id: a string (some characters written as `\u` escapes), a number, or
/// none at all.
#[derive(Clone, Debug)]
enum Id {
    Str(String, bool),
    Num(u32),
    Missing,
    Null,
}

impl Id {
    fn key(&self) -> Option<String> {
        match self {
            Id::Str(s, _) => Some(s.clone()),
            Id::Num(n) => Some(n.to_string()),
            Id::Missing | Id::Null => None,
        }
    }

    fn json(&self) -> Option<String> {
        match self {
            Id::Str(s, false) => Some(serde_json::to_string(s).unwrap()),
            Id::Str(s, true) => {
                let mut o = String::from("\"");
                for c in s.chars() {
                    o.push_str(&format!("\\u{:04x}", c as u32));
                }
                o.push('"');
                Some(o)
            }
            Id::Num(n) => Some(n.to_string()),
            Id::Missing => None,
            Id::Null => Some("null".to_owned()),
        }
    }
}

fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        4 => ("[A-C][0-2]?", any::<bool>()).prop_map(|(s, e)| Id::Str(s, e)),
        2 => (0u32..5).prop_map(Id::Num),
        1 => Just(Id::Missing),
        1 => Just(Id::Null),
    ]
}

/// One account record as JSON text: its id member somewhere among others
/// (a masked ssn, a nested object with an `id` of its own that is not an
/// account, a note).
fn record() -> impl Strategy<Value = (Id, String)> {
    (id(), 0usize..4, "[a-z ]{0,12}", 0u32..1000).prop_map(|(id, at, note, n)| {
        let mut members = vec![
            format!("\"ssn\":\"123-45-{:04}\"", 1000 + n),
            format!("\"bank\":{{\"id\":\"A{}\",\"n\":[1,2]}}", n % 3),
            format!("\"note\":{}", serde_json::to_string(&note).unwrap()),
        ];
        if let Some(v) = id.json() {
            members.insert(at.min(members.len()), format!("\"id\":{v}"));
        }
        (id, format!("{{{}}}", members.join(", ")))
    })
}

/// Ids the frozen sets are drawn from: the same few the records use, so
/// that most bodies drop some records and keep others.
const FROZEN: &str = "[A-C][0-2]?|[0-4]";

fn body() -> impl Strategy<Value = (Vec<(Id, String)>, Vec<String>)> {
    (
        prop::collection::vec(record(), 0..8),
        prop::collection::vec(FROZEN, 0..6),
    )
}

fn frozen_set(frozen: &[String]) -> Vec<&str> {
    frozen.iter().map(String::as_str).collect()
}

fn dropped(id: &Id, frozen: &[String]) -> bool {
    id.key().is_some_and(|k| frozen.contains(&k))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// JSON: the output (any chunking) is the masked body without the
    /// dropped records, compared structurally with serde_json; the counts
    /// are those of masking the kept records alone.
    #[test]
    fn json_drops_exactly_the_frozen_records(
        (records, frozen) in body(),
        cuts in prop::collection::vec(0usize..2000, 0..6),
    ) {
        let input = format!(
            "{{\"page\":1, \"accounts\": [{}], \"id\":\"W\"}}",
            records.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>().join(" ,\n")
        );
        let s = spec(&frozen_set(&frozen));
        let (out, counts) = run_cut(Kind::Json, &s, input.as_bytes(), &cuts).unwrap();
        // Reference: mask without a filter, then leave out the dropped records.
        let plain = no_filter(&s);
        let (masked, _) = run_cut(Kind::Json, &plain, input.as_bytes(), &[]).unwrap();
        let mut want: Value = serde_json::from_slice(&masked).unwrap();
        let kept: Vec<Value> = want["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&records)
            .filter(|(_, (id, _))| !dropped(id, &frozen))
            .map(|(v, _)| v.clone())
            .collect();
        want["accounts"] = Value::Array(kept);
        let got: Value = serde_json::from_slice(&out)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&out))))?;
        prop_assert_eq!(&got, &want);
        // Counts equal those of the kept records rewritten alone.
        let kept_input = format!(
            "{{\"page\":1, \"accounts\": [{}], \"id\":\"W\"}}",
            records
                .iter()
                .filter(|(id, _)| !dropped(id, &frozen))
                .map(|(_, r)| r.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        let (_, mut want_counts) = run_cut(Kind::Json, &plain, kept_input.as_bytes(), &[]).unwrap();
        if want_counts.account_ids.last().is_some_and(|id| id == "W") && !records.is_empty() {
            // With every record dropped, the wrapper is still no record.
            want_counts.records -= 1;
            want_counts.account_ids.pop();
        }
        want_counts.dropped_records = records.iter().filter(|(id, _)| dropped(id, &frozen)).count() as u64;
        prop_assert_eq!(counts, want_counts);
        // The same holds one byte at a time.
        let every: Vec<usize> = (0..input.len()).collect();
        let (bytewise, _) = run_cut(Kind::Json, &s, input.as_bytes(), &every).unwrap();
        prop_assert_eq!(bytewise, out);
    }

    /// NDJSON: one record per line; dropped lines vanish with their breaks.
    #[test]
    fn ndjson_drops_exactly_the_frozen_lines(
        (records, frozen) in body(),
        cuts in prop::collection::vec(0usize..2000, 0..6),
        crlf in any::<bool>(),
        last_break in any::<bool>(),
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let mut input = records.iter().map(|(_, r)| r.as_str()).collect::<Vec<_>>().join(nl);
        if last_break && !records.is_empty() {
            input.push_str(nl);
        }
        let s = spec(&frozen_set(&frozen));
        let (out, counts) = run_cut(Kind::Ndjson, &s, input.as_bytes(), &cuts).unwrap();
        let plain = no_filter(&s);
        let kept: Vec<&str> = records
            .iter()
            .filter(|(id, _)| !dropped(id, &frozen))
            .map(|(_, r)| r.as_str())
            .collect();
        let text = String::from_utf8(out).unwrap();
        let got: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        prop_assert_eq!(text.lines().filter(|l| l.trim().is_empty()).count(), 0, "no blank line left: {:?}", text);
        let mut want = Vec::new();
        let mut want_counts = Counts::default();
        for r in &kept {
            let (o, c) = run_cut(Kind::Ndjson, &plain, r.as_bytes(), &[]).unwrap();
            want.push(serde_json::from_slice::<Value>(&o).unwrap());
            want_counts.records += c.records;
            want_counts.account_ids.extend(c.account_ids);
            for (a, b) in want_counts.acted.iter_mut().zip(c.acted) {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
            }
        }
        prop_assert_eq!(got, want);
        want_counts.dropped_records = (records.len() - kept.len()) as u64;
        prop_assert_eq!(counts, want_counts);
    }

    /// CSV: rows whose id cell is frozen vanish with their line breaks.
    #[test]
    fn csv_drops_exactly_the_frozen_rows(
        rows in prop::collection::vec((FROZEN, any::<bool>(), "[a-z ,]{0,6}"), 0..8),
        frozen in prop::collection::vec(FROZEN, 0..6),
        cuts in prop::collection::vec(0usize..400, 0..6),
        crlf in any::<bool>(),
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let line = |(id, quoted, note): &(String, bool, String)| {
            let id = if *quoted { format!("\"{id}\"") } else { id.clone() };
            format!("{id},\"{note}\",123456789{nl}")
        };
        let input: String = std::iter::once(format!("ID,note,ssn{nl}"))
            .chain(rows.iter().map(line))
            .collect();
        let s = spec_for(rules(&[], |_| {}), &frozen_set(&frozen));
        let (out, counts) = run_cut(Kind::Csv, &s, input.as_bytes(), &cuts).unwrap();
        let kept: String = std::iter::once(format!("ID,note,ssn{nl}"))
            .chain(rows.iter().filter(|(id, _, _)| !frozen.contains(id)).map(line))
            .collect();
        let (want, mut want_counts) = run_cut(Kind::Csv, &no_filter(&s), kept.as_bytes(), &[]).unwrap();
        prop_assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(want).unwrap());
        want_counts.dropped_records = rows.iter().filter(|(id, _, _)| frozen.contains(id)).count() as u64;
        prop_assert_eq!(counts, want_counts);
    }

    /// Arbitrary bodies (valid or not): the filtered rewriter's result does
    /// not depend on chunking, and with a filter that drops nothing it equals
    /// the unfiltered one.
    #[test]
    fn any_body_is_chunking_independent(
        body in prop::collection::vec(prop::sample::select(br#"{}[],:"id X A 1\u0058nacouts/"#.to_vec()), 0..80),
        cuts in prop::collection::vec(0usize..80, 0..5),
    ) {
        let dropping = spec_for(rules(&["/accounts/*", "/accounts/*/*", "/"], |_| {}), &["X", "1"]);
        let nothing = spec_for(rules(&["/accounts/*", "/accounts/*/*", "/"], |_| {}), &[]);
        for kind in [Kind::Json, Kind::Ndjson] {
            let whole = run_cut(kind, &dropping, &body, &[]);
            prop_assert_eq!(run_cut(kind, &dropping, &body, &cuts), whole.clone());
            if let Ok((out, _)) = &whole {
                if kind_is_json(kind) {
                    prop_assert!(serde_json::from_slice::<Value>(out).is_ok(), "{}", String::from_utf8_lossy(out));
                }
            }
            let a = run_cut(kind, &nothing, &body, &cuts);
            let b = run_cut(kind, &no_filter(&nothing), &body, &cuts);
            prop_assert_eq!(a, b);
        }
    }
}

fn kind_is_json(kind: Kind) -> bool {
    matches!(kind, Kind::Json)
}

#[test]
fn generated_ids_match_their_reference_keys() {
    // The property tests' escaping is what the rewriter decodes.
    let id = Id::Str("B7".to_owned(), true);
    let text = format!("{{\"accounts\":[{{\"id\":{}}}]}}", id.json().unwrap());
    assert_eq!(text, r#"{"accounts":[{"id":"\u0042\u0037"}]}"#);
    assert_eq!(json_ok(&["B7"], &text), r#"{"accounts":[]}"#);
    assert_eq!(id.key().as_deref(), Some("B7"));
}
