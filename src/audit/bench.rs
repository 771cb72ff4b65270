//! Durable append throughput: group commit against one fsync per record,
//! in the same run and on the same disk.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::audit::file::{AuditLog, AuditOptions};
use crate::audit::keys::SigningKey;
use crate::audit::record::{Kind, Outcome, RecordDraft};
use crate::audit::AuditError;

/// One benchmark run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Appending threads.
    pub appenders: usize,
    /// Appends each thread keeps outstanding (1: each waits for its
    /// receipt, as one request handler does).
    pub in_flight: usize,
    /// Records in all.
    pub records: usize,
    /// Group commit on, or one fsync per record.
    pub group_commit: bool,
    /// A witness directory beside the log directory (one more slot write
    /// and `fdatasync` per batch).
    pub witness: bool,
}

/// What a run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BenchResult {
    /// The run.
    pub options: BenchOptions,
    /// Records made durable.
    pub records: u64,
    /// Wall time.
    pub seconds: f64,
    /// Durable records per second.
    pub per_second: f64,
    /// fsync calls.
    pub fsyncs: u64,
    /// Mean records per write.
    pub mean_batch: f64,
}

/// A typical unmask record.
fn draft(appender: usize, n: usize) -> RecordDraft {
    RecordDraft::new(
        Kind::Unmask,
        format!("collections-{appender}"),
        Outcome::Granted,
        "ok",
    )
    .request_id(format!("req-{appender}-{n}"))
    .roles(["collections"])
    .request("GET", "accounts.get")
    .accounts([format!("A-{:06}", n % 100_000)])
    .classes(["ssn"])
    .reason("COLL-2026-00123 skip trace")
    .released(1)
}

/// Appends `options.records` records to a new log in `dir` and measures
/// durable records per second.
pub fn bench(dir: &Path, options: BenchOptions) -> Result<BenchResult, AuditError> {
    let key = SigningKey::generate()?;
    let log = Arc::new(AuditLog::open(
        dir,
        key,
        AuditOptions {
            group_commit: options.group_commit,
            witness: options.witness.then(|| dir.with_extension("witness")),
            ..AuditOptions::default()
        },
    )?);
    let appenders = options.appenders.max(1);
    let per_thread = options.records / appenders;
    let failed = Arc::new(Mutex::new(None::<AuditError>));
    let start = Instant::now();
    let mut threads = Vec::new();
    for a in 0..appenders {
        let log = Arc::clone(&log);
        let failed = Arc::clone(&failed);
        let in_flight = options.in_flight.max(1);
        threads.push(std::thread::spawn(move || {
            let permits = Arc::new((Mutex::new(0usize), Condvar::new()));
            let stop = Arc::new(AtomicBool::new(false));
            for n in 0..per_thread {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                {
                    let (count, cv) = &*permits;
                    let mut c = count.lock().unwrap_or_else(|e| e.into_inner());
                    while *c >= in_flight {
                        c = cv.wait(c).unwrap_or_else(|e| e.into_inner());
                    }
                    *c += 1;
                }
                let permits = Arc::clone(&permits);
                let failed = Arc::clone(&failed);
                let stop = Arc::clone(&stop);
                log.append(
                    draft(a, n),
                    Box::new(move |result| {
                        if let Err(e) = result {
                            stop.store(true, Ordering::Relaxed);
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                        }
                        let (count, cv) = &*permits;
                        let mut c = count.lock().unwrap_or_else(|e| e.into_inner());
                        *c -= 1;
                        cv.notify_one();
                    }),
                );
            }
            let (count, cv) = &*permits;
            let mut c = count.lock().unwrap_or_else(|e| e.into_inner());
            while *c > 0 {
                c = cv.wait(c).unwrap_or_else(|e| e.into_inner());
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(e) = failed.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    let stats = log.stats();
    let log = Arc::try_unwrap(log).map_err(|_| AuditError::Closed)?;
    log.close()?;
    Ok(BenchResult {
        options,
        records: stats.records,
        seconds,
        per_second: stats.records as f64 / seconds.max(1e-9),
        fsyncs: stats.fsyncs,
        mean_batch: stats.records as f64 / (stats.batches.max(1)) as f64,
    })
}

/// Runs the standard comparison under `base` (one new directory per run)
/// and returns a Markdown table: 8 appenders each waiting for its receipt,
/// 8 appenders with 32 appends outstanding each (a gateway with 256
/// concurrent unmask requests), both again with a witness directory, and
/// one fsync per record.
pub fn compare(base: &Path, records: usize) -> Result<(Vec<BenchResult>, String), AuditError> {
    let runs = [
        (
            "group commit, 8 appenders × 1 outstanding",
            8,
            1,
            true,
            false,
            records,
        ),
        (
            "group commit, 8 appenders × 32 outstanding",
            8,
            32,
            true,
            false,
            records,
        ),
        (
            "group commit + witness, 8 appenders × 1 outstanding",
            8,
            1,
            true,
            true,
            records,
        ),
        (
            "group commit + witness, 8 appenders × 32 outstanding",
            8,
            32,
            true,
            true,
            records,
        ),
        (
            "one fsync per record, 8 appenders",
            8,
            1,
            false,
            false,
            (records / 10).max(200),
        ),
    ];
    let mut results = Vec::new();
    let mut table = String::from(
        "| mode | records | seconds | durable records/s | fsyncs | records per fsync |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for (i, (label, appenders, in_flight, group_commit, witness, n)) in runs.into_iter().enumerate()
    {
        let dir = base.join(format!("run-{i}"));
        let r = bench(
            &dir,
            BenchOptions {
                appenders,
                in_flight,
                records: n,
                group_commit,
                witness,
            },
        )?;
        table.push_str(&format!(
            "| {label} | {} | {:.2} | {:.0} | {} | {:.1} |\n",
            r.records, r.seconds, r.per_second, r.fsyncs, r.mean_batch
        ));
        results.push(r);
    }
    Ok((results, table))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testutil::TempDir;

    /// Small and quick: every mode runs and its log verifies.
    #[test]
    fn bench_runs_in_every_mode() {
        let dir = TempDir::new("bench-small");
        for (i, group_commit) in [true, false].into_iter().enumerate() {
            let r = bench(
                &dir.path().join(format!("m{i}")),
                BenchOptions {
                    appenders: 4,
                    in_flight: 4,
                    records: 80,
                    group_commit,
                    witness: group_commit,
                },
            )
            .expect("bench");
            assert_eq!(r.records, 80);
            if !group_commit {
                assert!((r.mean_batch - 1.0).abs() < 1e-9, "{r:?}");
            }
        }
    }

    /// `cargo test --release -- --ignored --nocapture throughput`
    #[test]
    #[ignore = "measures the disk; run with --release --ignored --nocapture"]
    fn throughput() {
        let base = std::env::var_os("MASKGATE_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(format!("maskgate-audit-bench-{}", std::process::id()));
        let (results, table) = compare(&base, 20_000).expect("bench");
        println!("{table}");
        for (i, _) in results.iter().enumerate() {
            let dir = base.join(format!("run-{i}"));
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_dir_all(dir.with_extension("witness"));
        }
        let _ = std::fs::remove_dir_all(&base);
        // What a receipt header costs the request task that signs it.
        let key = std::sync::Arc::new(SigningKey::generate().expect("key"));
        let receipt = crate::audit::AuditReceipt::new(1, [7; 32], key);
        let n = 20_000;
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(receipt.signed());
        }
        println!(
            "receipt signature: {:.1} µs each",
            start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        );
        assert!(results[0].per_second > results[4].per_second);
    }
}
