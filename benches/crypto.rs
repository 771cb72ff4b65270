//! Criterion benchmarks of card encryption: `cargo bench --bench crypto`.
//!
//! - `envelope/seal` and `envelope/open`: one 16-digit card number sealed
//!   into (opened from) an `mg1.` envelope by a real [`Keyring`] (AES-256-GCM,
//!   system-random nonces, counted encryptions), one thread; the throughput
//!   column is envelopes per second per core. `envelope/blind_index` is the
//!   HMAC-SHA-256 search token of the same number.
//! - `write_path/encrypt` and `write_path/clear`: a 100-account JSON write
//!   body (`{"accounts":[…]}`, demo accounts with cards and notes) through
//!   [`JsonRewriter::for_request`] with the keyring (card numbers sealed, a
//!   blind index added, cards in notes sealed in place), against the same
//!   body through [`JsonRewriter::new`] with the same rules and detectors and
//!   every action `clear` (no encryption). The ratio of the two is printed
//!   at the end as the write-path overhead of encryption.
//!
//! Settings are quick: 20 samples, 2 s of measurement per benchmark.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkGroup, Criterion, Throughput};
use maskgate::bench::bench_rules;
use maskgate::class::{Action, ActionTable, FieldClass};
use maskgate::crypto::{Kek, Keyring, KeyringOptions};
use maskgate::detect::Detectors;
use maskgate::rewrite::{
    BodyRewriter, DetectedCard, JsonRewriter, Limits, RequestProtection, RewriteSpec,
};

const CARD: &str = "4111111111111111";
const ACCOUNTS: usize = 100;

/// A fresh keyring in a temporary directory (removed first if left over).
fn keyring() -> Arc<Keyring> {
    let dir = std::env::temp_dir().join(format!("maskgate-bench-crypto-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let kek = Kek::generate().expect("KEK");
    Arc::new(
        Keyring::create(&dir.join("keyring.mgkr"), &kek, KeyringOptions::default())
            .expect("keyring"),
    )
}

/// `{"accounts":[…]}` of `ACCOUNTS` demo accounts.
fn write_body() -> Vec<u8> {
    let accounts = maskgate::demo::data::generate(maskgate::demo::run::DEMO_SEED, ACCOUNTS);
    serde_json::to_vec(&serde_json::json!({ "accounts": accounts })).expect("serialize")
}

fn spec() -> RewriteSpec {
    RewriteSpec {
        rules: Arc::new(bench_rules(true)),
        actions: ActionTable::uniform(Action::Clear),
        detectors: Arc::new(Detectors::new()),
        limits: Limits {
            max_body_bytes: u64::MAX,
            ..Limits::default()
        },
        opener: None,
        drop_accounts: None,
    }
}

fn protection(ring: &Arc<Keyring>) -> Arc<RequestProtection> {
    let mut encrypt = [false; FieldClass::COUNT];
    encrypt[FieldClass::CardNumber.index()] = true;
    Arc::new(RequestProtection {
        sealer: Some(ring.clone()),
        encrypt,
        blind_index: encrypt,
        detected_card: DetectedCard::Encrypt,
    })
}

/// The whole body through `rw` in one call; returns the output.
fn run(mut rw: impl BodyRewriter, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 2);
    rw.write(body, &mut out).expect("rewrite");
    rw.finish(&mut out).expect("finish");
    out
}

fn encrypted(spec: &RewriteSpec, protect: &Arc<RequestProtection>, body: &[u8]) -> Vec<u8> {
    run(
        JsonRewriter::for_request(spec.clone(), protect.clone()),
        body,
    )
}

fn clear(spec: &RewriteSpec, body: &[u8]) -> Vec<u8> {
    run(JsonRewriter::new(spec.clone()), body)
}

fn quick(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));
}

fn benches(c: &mut Criterion) {
    let ring = keyring();
    let envelope = ring.seal(FieldClass::CardNumber, CARD).expect("seal");
    assert_eq!(
        ring.open(FieldClass::CardNumber, &envelope)
            .expect("open")
            .as_str(),
        CARD
    );

    let mut g = c.benchmark_group("envelope");
    quick(&mut g);
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal", |b| {
        b.iter(|| {
            ring.seal(FieldClass::CardNumber, black_box(CARD))
                .expect("seal")
        })
    });
    g.bench_function("open", |b| {
        b.iter(|| {
            ring.open(FieldClass::CardNumber, black_box(&envelope))
                .expect("open")
        })
    });
    g.bench_function("blind_index", |b| {
        b.iter(|| {
            ring.blind_index(FieldClass::CardNumber, black_box(CARD))
                .expect("index")
        })
    });
    g.finish();

    let body = write_body();
    let spec = spec();
    let protect = protection(&ring);
    // The encrypting rewriter must seal every card and leave none in the
    // clear, or its timing means nothing.
    let sealed = encrypted(&spec, &protect, &body);
    let text = String::from_utf8(sealed).expect("utf-8");
    assert!(!text.contains(CARD) && text.matches("mg1.").count() >= ACCOUNTS / 2);
    assert_eq!(
        clear(&spec, &body),
        body,
        "clear actions leave the body as it is"
    );

    let mut g = c.benchmark_group("write_path");
    quick(&mut g);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("encrypt", |b| {
        b.iter(|| encrypted(&spec, &protect, black_box(&body)))
    });
    g.bench_function("clear", |b| b.iter(|| clear(&spec, black_box(&body))));
    g.finish();
}

/// Mean time per call of `f` over about `budget`.
fn mean(budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..10 {
        f();
    }
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < budget {
        f();
        n += 1;
    }
    started.elapsed() / n.max(1)
}

/// Prints envelopes per second per core and the write-path ratio in one
/// line each, for `docs/benchmarks.md`.
fn summary() {
    let ring = keyring();
    let envelope = ring.seal(FieldClass::CardNumber, CARD).expect("seal");
    let seal = mean(Duration::from_secs(1), || {
        black_box(
            ring.seal(FieldClass::CardNumber, black_box(CARD))
                .expect("seal"),
        );
    });
    let open = mean(Duration::from_secs(1), || {
        black_box(
            ring.open(FieldClass::CardNumber, black_box(&envelope))
                .expect("open"),
        );
    });
    let body = write_body();
    let spec = spec();
    let protect = protection(&ring);
    let with = mean(Duration::from_secs(2), || {
        black_box(encrypted(&spec, &protect, black_box(&body)));
    });
    let without = mean(Duration::from_secs(2), || {
        black_box(clear(&spec, black_box(&body)));
    });
    println!(
        "summary: envelopes per second per core: seal {:.0}, open {:.0}",
        1.0 / seal.as_secs_f64(),
        1.0 / open.as_secs_f64()
    );
    println!(
        "summary: {ACCOUNTS}-account write body ({} bytes): encrypt {:.1} µs, clear {:.1} µs, overhead ratio {:.2}x",
        body.len(),
        with.as_secs_f64() * 1e6,
        without.as_secs_f64() * 1e6,
        with.as_secs_f64() / without.as_secs_f64()
    );
}

criterion_group!(crypto, benches);

fn main() {
    crypto();
    // `cargo test --benches` runs this binary without `--bench`: keep that quick.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
    Criterion::default().configure_from_args().final_summary();
}
