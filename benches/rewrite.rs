//! Criterion benchmarks of the streaming rewriters against baselines on the
//! same bytes: `cargo bench --bench rewrite`.
//!
//! The corpus is `maskgate::bench::corpus(4 << 20)` (about 4 MB of synthetic
//! customer accounts, as `maskgate bench rewrite` uses), and the same
//! accounts as NDJSON (one per line) and as CSV (a few columns). Each format
//! has its own baseline:
//!
//! - JSON: `serde_json::Value` parse + walk + mask + serialize
//!   (`baseline/serde_json_value`), and a `memchr2` scan for `"` and `\`,
//!   the least any byte-level JSON scanner must do (`baseline/memchr_quote_scan`);
//! - NDJSON: the same serde_json baseline, one line at a time;
//! - CSV: a plain copy of the bytes in 64 KiB chunks.
//!
//! The `drop` group runs the same bodies with a drop filter
//! (`RewriteSpec::drop_accounts`): one that names no account of the corpus
//! (every record is still held until its id is read) and one that drops
//! every tenth account.
//!
//! Sample sizes and measurement times are small so the whole run stays
//! well under two minutes.

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use maskgate::bench::{bench_rules, corpus, rewrite_once, serde_baseline};
use maskgate::class::{Action, ActionTable, FieldClass};
use maskgate::detect::{DetectorSet, Detectors};
use maskgate::rewrite::csv::CsvRewriter;
use maskgate::rewrite::{
    AccountFilter, BodyRewriter, JsonRewriter, Limits, RewriteSpec, Rules, RulesBuilder,
};
use serde_json::Value;

/// Input is fed in chunks of this size, as the proxy would.
const CHUNK: usize = 64 * 1024;

fn spec(rules: Rules) -> RewriteSpec {
    RewriteSpec {
        rules: Arc::new(rules),
        actions: ActionTable::uniform(Action::Last4),
        detectors: Arc::new(Detectors::new()),
        limits: Limits {
            max_body_bytes: u64::MAX,
            ..Limits::default()
        },
        opener: None,
        drop_accounts: None,
    }
}

/// The field rules of [`bench_rules`] for a body whose root is one account
/// (an NDJSON line or a CSV record): the same names, the paths re-rooted.
fn record_rules(detectors: bool) -> Rules {
    let mut b = RulesBuilder::new();
    let classes = [
        (FieldClass::Ssn, &["ssn", "social_security_number"][..]),
        (FieldClass::Tin, &["tin", "ein"][..]),
        (FieldClass::CardNumber, &["card_number", "pan"][..]),
        (FieldClass::CardExpiry, &["card_expiry"][..]),
        (FieldClass::Dob, &["dob"][..]),
        (FieldClass::Passport, &["passport"][..]),
        (FieldClass::BankRouting, &["routing_number"][..]),
    ];
    for (class, names) in classes {
        for n in names {
            b.class_name(n, class).expect("name selector");
        }
    }
    b.class_path("/drivers_license/number", FieldClass::Dln)
        .expect("path selector");
    b.class_path("/bank/account_number", FieldClass::BankAccount)
        .expect("path selector");
    b.record_path("/").expect("record path");
    if detectors {
        b.detectors(DetectorSet::ALL);
    }
    b.build()
}

/// The field rules of [`bench_rules`] (without detectors) with records at
/// `record` (`/accounts/*`, or `/` for an NDJSON line or a CSV row) whose
/// `id` names the account.
fn rules_with_ids(record: &str) -> Rules {
    let root = if record == "/" { "" } else { record };
    let mut b = RulesBuilder::new();
    let classes = [
        (FieldClass::Ssn, &["ssn", "social_security_number"][..]),
        (FieldClass::Tin, &["tin", "ein"][..]),
        (FieldClass::CardNumber, &["card_number", "pan"][..]),
        (FieldClass::CardExpiry, &["card_expiry"][..]),
        (FieldClass::Dob, &["dob"][..]),
        (FieldClass::Passport, &["passport"][..]),
        (FieldClass::BankRouting, &["routing_number"][..]),
    ];
    for (class, names) in classes {
        for n in names {
            b.class_name(n, class).expect("name selector");
        }
    }
    b.class_path(&format!("{root}/drivers_license/number"), FieldClass::Dln)
        .expect("path selector");
    b.class_path(
        &format!("{root}/bank/account_number"),
        FieldClass::BankAccount,
    )
    .expect("path selector");
    b.record_path(record).expect("record path");
    b.record_id_name("id").expect("id name");
    b.build()
}

/// `spec(rules)` with a drop filter.
fn dropping(rules: Rules, filter: Option<Arc<dyn AccountFilter>>) -> RewriteSpec {
    RewriteSpec {
        drop_accounts: filter,
        ..spec(rules)
    }
}

/// Runs `input` through `rw` in [`CHUNK`]-byte chunks; returns the output length.
fn stream(mut rw: impl BodyRewriter, input: &[u8]) -> usize {
    let mut out = Vec::with_capacity(2 * CHUNK);
    let mut total = 0;
    for chunk in input.chunks(CHUNK) {
        rw.write(chunk, &mut out).expect("rewrite");
        total += out.len();
        out.clear();
    }
    rw.finish(&mut out).expect("finish");
    total + out.len()
}

/// The accounts of the JSON corpus.
fn accounts(json: &[u8]) -> Vec<Value> {
    let mut doc: Value = serde_json::from_slice(json).expect("corpus is JSON");
    match doc.get_mut("accounts").map(Value::take) {
        Some(Value::Array(a)) => a,
        _ => panic!("corpus has no accounts array"),
    }
}

/// One account per line.
fn ndjson(accounts: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in accounts {
        serde_json::to_writer(&mut out, a).expect("serialize");
        out.push(b'\n');
    }
    out
}

/// Columns of the CSV corpus.
const CSV_COLUMNS: &[&str] = &["id", "name", "phone", "email", "dob", "ssn", "tin", "notes"];

/// A few columns of each account as CSV (quoted only where needed).
fn csv(accounts: &[Value]) -> Vec<u8> {
    fn cell(v: Option<&Value>, out: &mut Vec<u8>) {
        let s = match v {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        if s.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(s.as_bytes());
        }
    }
    let mut out = CSV_COLUMNS.join(",").into_bytes();
    out.extend_from_slice(b"\r\n");
    for a in accounts {
        for (i, col) in CSV_COLUMNS.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            cell(a.get(col), &mut out);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Small, quick settings: every group finishes in a few seconds.
fn configure(g: &mut BenchmarkGroup<'_, WallTime>, bytes: usize) {
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
}

fn benches(c: &mut Criterion) {
    let json = corpus(4 << 20);
    let accounts = accounts(&json);
    let ndjson = ndjson(&accounts);
    let csv = csv(&accounts);

    let fields = spec(bench_rules(false));
    let all = spec(bench_rules(true));
    // The rewriter must accept the corpus, or the numbers mean nothing.
    assert!(rewrite_once(&fields, &json) > 0 && rewrite_once(&all, &json) > 0);

    let mut g = c.benchmark_group("json");
    configure(&mut g, json.len());
    g.bench_function("fields_only", |b| {
        b.iter(|| rewrite_once(&fields, black_box(&json)))
    });
    g.bench_function("all_detectors", |b| {
        b.iter(|| rewrite_once(&all, black_box(&json)))
    });
    g.finish();

    let mut g = c.benchmark_group("baseline");
    configure(&mut g, json.len());
    g.bench_function("serde_json_value", |b| {
        b.iter(|| serde_baseline(black_box(&json)))
    });
    g.bench_function("memchr_quote_scan", |b| {
        b.iter(|| memchr::memchr2_iter(b'"', b'\\', black_box(&json)).count())
    });
    g.finish();

    let fields = spec(record_rules(false));
    let all = spec(record_rules(true));
    let mut g = c.benchmark_group("ndjson");
    configure(&mut g, ndjson.len());
    g.bench_function("fields_only", |b| {
        b.iter(|| stream(JsonRewriter::ndjson(fields.clone()), black_box(&ndjson)))
    });
    g.bench_function("all_detectors", |b| {
        b.iter(|| stream(JsonRewriter::ndjson(all.clone()), black_box(&ndjson)))
    });
    g.bench_function("baseline_serde_json_per_line", |b| {
        b.iter(|| {
            black_box(&ndjson)
                .split(|&c| c == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| serde_baseline(line) + 1)
                .sum::<usize>()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("csv");
    configure(&mut g, csv.len());
    g.bench_function("fields_only", |b| {
        b.iter(|| stream(CsvRewriter::new(fields.clone()), black_box(&csv)))
    });
    g.bench_function("all_detectors", |b| {
        b.iter(|| stream(CsvRewriter::new(all.clone()), black_box(&csv)))
    });
    g.bench_function("baseline_byte_copy", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(CHUNK);
            let mut total = 0;
            for chunk in black_box(&csv).chunks(CHUNK) {
                out.extend_from_slice(chunk);
                total += black_box(&out).len();
                out.clear();
            }
            total
        })
    });
    g.finish();
}

fn drop_benches(c: &mut Criterion) {
    let json = corpus(4 << 20);
    let accounts = accounts(&json);
    let ndjson = ndjson(&accounts);
    let csv = csv(&accounts);
    let ids: Vec<String> = accounts
        .iter()
        .filter_map(|a| a.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let none: Arc<dyn AccountFilter> = Arc::new(
        (0..100)
            .map(|i| format!("NOT-{i}"))
            .collect::<HashSet<String>>(),
    );
    let tenth: HashSet<String> = ids.iter().step_by(10).cloned().collect();
    let tenth: Arc<dyn AccountFilter> = Arc::new(tenth);

    let variants = [
        ("no_filter", None),
        ("keep_all", Some(Arc::clone(&none))),
        ("drop_tenth", Some(Arc::clone(&tenth))),
    ];
    let mut g = c.benchmark_group("drop");
    configure(&mut g, json.len());
    for (name, filter) in variants.clone() {
        let spec = dropping(rules_with_ids("/accounts/*"), filter);
        assert!(rewrite_once(&spec, &json) > 0, "{name}");
        g.bench_function(format!("json_{name}"), |b| {
            b.iter(|| rewrite_once(&spec, black_box(&json)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("drop");
    configure(&mut g, ndjson.len());
    for (name, filter) in variants.clone() {
        let spec = dropping(rules_with_ids("/"), filter);
        g.bench_function(format!("ndjson_{name}"), |b| {
            b.iter(|| stream(JsonRewriter::ndjson(spec.clone()), black_box(&ndjson)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("drop");
    configure(&mut g, csv.len());
    for (name, filter) in variants {
        let spec = dropping(rules_with_ids("/"), filter);
        g.bench_function(format!("csv_{name}"), |b| {
            b.iter(|| stream(CsvRewriter::new(spec.clone()), black_box(&csv)))
        });
    }
    g.finish();
}

criterion_group!(rewrite, benches, drop_benches);
criterion_main!(rewrite);
