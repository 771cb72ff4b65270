//! `maskgate bench rewrite`: the rewriter against a serde_json baseline on
//! the same bytes in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::class::{Action, ActionTable};
use crate::detect::{DetectorSet, Detectors};
use crate::rewrite::{BodyRewriter, JsonRewriter, Limits, RewriteSpec, Rules, RulesBuilder};

/// The corpus: `{"accounts":[…]}` of synthetic customer records, about `size` bytes.
pub fn corpus(size: usize) -> Vec<u8> {
    let accounts = crate::demo::data::generate(7, 1000);
    let mut out = Vec::with_capacity(size + 4096);
    out.extend_from_slice(b"{\"accounts\":[");
    let mut i = 0;
    while out.len() < size {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &accounts[i % accounts.len()]);
        i += 1;
    }
    out.extend_from_slice(b"]}");
    out
}

/// Field rules like the default policy's, with or without detectors.
pub fn bench_rules(detectors: bool) -> Rules {
    let mut b = RulesBuilder::new();
    let classes = [
        (
            crate::class::FieldClass::Ssn,
            &["ssn", "social_security_number"][..],
        ),
        (crate::class::FieldClass::Tin, &["tin", "ein"][..]),
        (
            crate::class::FieldClass::CardNumber,
            &["card_number", "pan"][..],
        ),
        (crate::class::FieldClass::CardExpiry, &["card_expiry"][..]),
        (crate::class::FieldClass::Dob, &["dob"][..]),
        (crate::class::FieldClass::Passport, &["passport"][..]),
        (
            crate::class::FieldClass::BankRouting,
            &["routing_number"][..],
        ),
    ];
    for (class, names) in classes {
        for n in names {
            let _ = b.class_name(n, class);
        }
    }
    let _ = b.class_path(
        "/accounts/*/drivers_license/number",
        crate::class::FieldClass::Dln,
    );
    let _ = b.class_path(
        "/accounts/*/bank/account_number",
        crate::class::FieldClass::BankAccount,
    );
    let _ = b.record_path("/accounts/*");
    if detectors {
        b.detectors(DetectorSet::ALL);
    }
    b.build()
}

fn spec(detectors: bool) -> RewriteSpec {
    RewriteSpec {
        rules: Arc::new(bench_rules(detectors)),
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

/// Rewrites `input` in 64 KiB chunks; returns output length.
pub fn rewrite_once(spec: &RewriteSpec, input: &[u8]) -> usize {
    let mut rw = JsonRewriter::new(spec.clone());
    let mut out = Vec::with_capacity(128 * 1024);
    let mut total = 0;
    for chunk in input.chunks(64 * 1024) {
        if rw.write(chunk, &mut out).is_err() {
            return 0;
        }
        total += out.len();
        out.clear();
    }
    if rw.finish(&mut out).is_err() {
        return 0;
    }
    total + out.len()
}

/// The naive rewriter: parse to `Value`, walk, mask named fields, serialize.
pub fn serde_baseline(input: &[u8]) -> usize {
    fn walk(v: &mut serde_json::Value, masked: bool) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    let name: String = k
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric())
                        .map(|c| c.to_ascii_lowercase())
                        .collect();
                    let hit = matches!(
                        name.as_str(),
                        "ssn"
                            | "tin"
                            | "cardnumber"
                            | "cardexpiry"
                            | "dob"
                            | "passport"
                            | "routingnumber"
                            | "accountnumber"
                            | "number"
                    );
                    walk(v, masked || hit);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| walk(v, masked)),
            serde_json::Value::String(s) if masked => {
                let mut out = String::new();
                crate::rewrite::mask::last4(s, &mut out);
                *s = out;
            }
            _ => {}
        }
    }
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(input) else {
        return 0;
    };
    walk(&mut v, false);
    serde_json::to_vec(&v).map_or(0, |o| o.len())
}

/// One measurement.
#[derive(Debug, Clone)]
pub struct Measure {
    /// What ran.
    pub name: &'static str,
    /// Megabytes (10^6 bytes) of input per second.
    pub mb_per_s: f64,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    /// Corpus size in bytes.
    pub bytes: usize,
    /// Each measurement.
    pub measures: Vec<Measure>,
}

fn time(bytes: usize, f: &dyn Fn() -> usize) -> f64 {
    // Warm up once, then take the best of several runs of at least 0.5 s in all.
    let _ = f();
    let mut best = Duration::MAX;
    let mut spent = Duration::ZERO;
    let mut runs = 0;
    while runs < 3 || (spent < Duration::from_millis(500) && runs < 50) {
        let t = Instant::now();
        std::hint::black_box(f());
        let d = t.elapsed();
        best = best.min(d);
        spent += d;
        runs += 1;
    }
    bytes as f64 / best.as_secs_f64() / 1e6
}

/// Runs the benchmark on a corpus of about `size` bytes.
pub fn run(size: usize) -> Report {
    run_only(size, None)
}

/// Runs one measurement (`fields`, `detectors` or `baseline`), or all.
pub fn run_only(size: usize, only: Option<&str>) -> Report {
    let input = corpus(size);
    let fields = spec(false);
    let all = spec(true);
    let wanted = |name: &str| only.is_none_or(|o| name.contains(o));
    let mut measures = Vec::new();
    let runs: [(&'static str, &dyn Fn() -> usize); 3] = [
        ("rewriter, field rules only", &|| {
            rewrite_once(&fields, &input)
        }),
        ("rewriter, all detectors", &|| rewrite_once(&all, &input)),
        ("serde_json Value baseline", &|| serde_baseline(&input)),
    ];
    for (name, f) in runs {
        // Unselected runs report 0 so the table keeps its rows.
        let mb_per_s = if wanted(name) {
            time(input.len(), f)
        } else {
            0.0
        };
        measures.push(Measure { name, mb_per_s });
    }
    Report {
        bytes: input.len(),
        measures,
    }
}

impl Report {
    fn get(&self, i: usize) -> f64 {
        self.measures.get(i).map_or(0.0, |m| m.mb_per_s)
    }

    /// A text table with ratios against the baseline.
    pub fn to_table(&self) -> String {
        let base = self.get(2);
        let mut s = format!("corpus: {} bytes of customer records\n", self.bytes);
        for m in &self.measures {
            s.push_str(&format!(
                "{:<32} {:>9.1} MB/s  {:>5.2}x baseline\n",
                m.name,
                m.mb_per_s,
                if base > 0.0 { m.mb_per_s / base } else { 0.0 }
            ));
        }
        s
    }

    /// One JSON object.
    pub fn to_json(&self) -> String {
        let base = self.get(2);
        serde_json::json!({
            "bytes": self.bytes,
            "fields_mb_s": self.get(0),
            "detectors_mb_s": self.get(1),
            "serde_baseline_mb_s": base,
            "fields_ratio": if base > 0.0 { self.get(0) / base } else { 0.0 },
            "detectors_ratio": if base > 0.0 { self.get(1) / base } else { 0.0 },
        })
        .to_string()
    }
}

/// Peak resident memory of this process so far, in KiB (Linux `VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Streams a generated `{"accounts":[…]}` body of about `total` bytes
/// through the rewriter in 64 KiB chunks without ever holding it whole.
/// Returns (input bytes, output bytes, records seen).
pub fn stream(
    total: u64,
    detectors: bool,
) -> Result<(u64, u64, u64), crate::rewrite::RewriteError> {
    let spec = spec(detectors);
    let block = {
        let one = corpus(256 * 1024);
        // The records between the wrapper's brackets, repeated as the body.
        one[b"{\"accounts\":[".len()..one.len() - 2].to_vec()
    };
    let mut rw = JsonRewriter::new(spec);
    let mut out = Vec::with_capacity(256 * 1024);
    let mut fed = 0u64;
    let mut written = 0u64;
    rw.write(b"{\"accounts\":[", &mut out)?;
    let mut first = true;
    while fed < total {
        if !first {
            rw.write(b",", &mut out)?;
        }
        first = false;
        for chunk in block.chunks(64 * 1024) {
            rw.write(chunk, &mut out)?;
            written += out.len() as u64;
            out.clear();
        }
        fed += block.len() as u64;
    }
    rw.write(b"]}", &mut out)?;
    rw.finish(&mut out)?;
    written += out.len() as u64;
    Ok((fed, written, rw.counts().records))
}
