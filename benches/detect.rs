//! Criterion benchmarks of `Detectors::scan` with every detector enabled:
//! `cargo bench --bench detect`.
//!
//! Three inputs, each scanned one line at a time (as the text rewriter and
//! the JSON rewriter's string values use the detectors):
//!
//! - `notes`: the `notes` and address fields of the synthetic accounts that
//!   `maskgate bench rewrite` uses (ordinary text, a few red-flag values);
//! - `digit_dense`: generated lines packed with meter readings, amounts,
//!   dates, phone numbers, ids and a few real-looking values;
//! - `false_positives`: the lines of `tests/data/detect/false_positives.txt`.
//!
//! The baseline (`<input>/baseline_digit_count`) counts ASCII digits over the
//! same lines: a floor for any scanner that must look at every byte.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use maskgate::detect::{DetectorSet, Detectors, Finding};
use serde_json::Value;

/// The notes and addresses of the corpus accounts, one per line.
fn notes() -> Vec<Vec<u8>> {
    let json = maskgate::bench::corpus(4 << 20);
    let doc: Value = serde_json::from_slice(&json).expect("corpus is JSON");
    let accounts = doc["accounts"].as_array().expect("accounts array");
    let mut lines = Vec::new();
    for a in accounts {
        for key in ["notes", "service_address", "mailing_address", "name"] {
            match a.get(key) {
                Some(Value::String(s)) => lines.push(s.as_bytes().to_vec()),
                Some(Value::Array(items)) => lines.extend(
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|s| s.as_bytes().to_vec()),
                ),
                _ => {}
            }
        }
    }
    lines
}

/// splitmix64: deterministic input without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }
}

/// About `size` bytes of digit-heavy lines.
fn digit_dense(size: usize) -> Vec<Vec<u8>> {
    let mut r = Rng(7);
    let mut lines = Vec::new();
    let mut total = 0;
    while total < size {
        let mut line = String::new();
        for _ in 0..8 {
            let piece = match r.below(12) {
                0 => format!(
                    "meter {} read {}.{} kWh",
                    r.digits(9),
                    r.digits(5),
                    r.digits(2)
                ),
                1 => format!("invoice #{}", r.digits(10)),
                2 => format!("${}.{}", r.digits(3), r.digits(2)),
                3 => format!(
                    "20{}-{:02}-{:02}",
                    r.digits(2),
                    1 + r.below(12),
                    1 + r.below(28)
                ),
                4 => format!("({}) {}-{}", r.digits(3), r.digits(3), r.digits(4)),
                5 => format!("order {}", r.digits(9)),
                6 => format!(
                    "{} {} {} {}",
                    r.digits(4),
                    r.digits(4),
                    r.digits(4),
                    r.digits(4)
                ),
                7 => format!("{}-{}-{}", r.digits(3), r.digits(2), r.digits(4)),
                8 => format!("10.{}.{}.{}", r.below(256), r.below(256), r.below(256)),
                9 => {
                    let n = 1 + r.below(20) as usize;
                    r.digits(n)
                }
                10 => format!("acct {} zip {}-{}", r.digits(8), r.digits(5), r.digits(4)),
                _ => format!("{}:{}:{}", r.digits(2), r.digits(2), r.digits(2)),
            };
            line.push_str(&piece);
            line.push_str(", ");
        }
        total += line.len() + 1;
        lines.push(line.into_bytes());
    }
    lines
}

/// The case lines of the false-positive corpus (comments and blanks skipped).
fn false_positives() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/detect/false_positives.txt"
    );
    let text = std::fs::read(path).expect("false-positive corpus");
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect()
}

fn scan_all(det: &Detectors, lines: &[Vec<u8>], out: &mut Vec<Finding>) -> usize {
    let mut found = 0;
    for line in lines {
        out.clear();
        det.scan(line, DetectorSet::ALL, out);
        found += out.len();
    }
    found
}

fn digit_count(lines: &[Vec<u8>]) -> usize {
    lines
        .iter()
        .map(|l| l.iter().filter(|b| b.is_ascii_digit()).count())
        .sum()
}

fn benches(c: &mut Criterion) {
    let det = Detectors::new();
    let inputs = [
        ("notes", notes()),
        ("digit_dense", digit_dense(1 << 20)),
        ("false_positives", false_positives()),
    ];
    for (name, lines) in &inputs {
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        let mut g = c.benchmark_group(*name);
        g.throughput(Throughput::Bytes(bytes as u64));
        g.sample_size(20);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(2));
        let mut out = Vec::new();
        g.bench_function("scan_all", |b| {
            b.iter(|| scan_all(&det, black_box(lines), &mut out))
        });
        g.bench_function("baseline_digit_count", |b| {
            b.iter(|| digit_count(black_box(lines)))
        });
        g.finish();
    }
}

criterion_group!(detect, benches);
criterion_main!(detect);
