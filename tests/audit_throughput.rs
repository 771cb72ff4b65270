//! Durable unmask records per second: the shared PostgreSQL log written by
//! two gateway instances (two sinks, two connection pools, one database)
//! against the file log, in the same run on the same disk.
//!
//! `cargo test --release --test audit_throughput -- --ignored --nocapture`
//! (a throwaway cluster with fsync and synchronous_commit on, or
//! `MASKGATE_TEST_PG_URL`; the numbers go to docs/benchmarks.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use maskgate::audit::{AuditSink, CheckpointPolicy, Kind, Outcome, RecordDraft, SigningKey};
use maskgate::config::PostgresConfig;
use maskgate::pg::testing::{Cluster, Options, URL_ENV};
use maskgate::pg::Db;

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

/// `appenders` tasks spread over `sinks`, each keeping `in_flight` appends
/// outstanding, `records` in all; durable records per second.
async fn run(
    sinks: &[Arc<dyn AuditSink>],
    appenders: usize,
    in_flight: usize,
    records: usize,
) -> f64 {
    let per = records / appenders;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..appenders {
        let sink = Arc::clone(&sinks[a % sinks.len()]);
        tasks.push(tokio::spawn(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(in_flight));
            let mut pending = Vec::new();
            for n in 0..per {
                let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
                let (tx, rx) = tokio::sync::oneshot::channel();
                sink.append(
                    draft(a, n),
                    Box::new(move |r| {
                        drop(permit);
                        let _ = tx.send(r);
                    }),
                );
                pending.push(rx);
            }
            for rx in pending {
                rx.await.unwrap().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (per * appenders) as f64 / start.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn durable_unmask_records_per_second_postgres_vs_file() {
    let dir = std::env::temp_dir().join(format!("maskgate-throughput-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k.pem");
    maskgate::audit::generate_signing_key(&key, &dir.join("k.pub")).unwrap();
    let policy = CheckpointPolicy::default();
    let (_cluster, url) = match std::env::var(URL_ENV) {
        Ok(u) if !u.is_empty() => {
            let name = format!("maskgate_bench_{}", std::process::id());
            maskgate::pg::testing::create_database(&u, &name).await;
            (None, maskgate::pg::testing::with_database(&u, &name))
        }
        _ => {
            let c = Cluster::start(Options {
                durable: true,
                ..Options::default()
            });
            let url = c.new_database().await;
            (Some(c), url)
        }
    };
    let mut config = PostgresConfig::new(url);
    config.statement_timeout = Duration::from_secs(30);
    let a = Db::connect(&config).unwrap();
    let b = Db::connect(&config).unwrap();
    a.migrate().await.unwrap();
    let open = |db: Db| {
        maskgate::audit::pg::PgAuditLog::open(
            db,
            SigningKey::load(&key).unwrap(),
            policy,
            Default::default(),
        )
    };
    let pg: Vec<Arc<dyn AuditSink>> = vec![
        Arc::new(open(a).await.unwrap()),
        Arc::new(open(b).await.unwrap()),
    ];
    let file_log = maskgate::audit::AuditLog::open(
        dir.join("file"),
        SigningKey::load(&key).unwrap(),
        maskgate::audit::AuditOptions::default(),
    )
    .unwrap();
    let file: Vec<Arc<dyn AuditSink>> = vec![Arc::new(file_log)];
    let records = 20_000;
    println!("| backend | appenders × outstanding | durable records/s |");
    println!("|---|---|---:|");
    for (appenders, in_flight) in [(16, 1), (16, 32)] {
        for round in 0..3 {
            let p = run(&pg, appenders, in_flight, records).await;
            let f = run(&file, appenders, in_flight, records).await;
            println!(
                "| PostgreSQL, 2 instances (round {round}) | {appenders} × {in_flight} | {p:.0} |"
            );
            println!("| file log (round {round}) | {appenders} × {in_flight} | {f:.0} |");
        }
    }
    // Both logs verify afterwards.
    let v = tokio::task::spawn_blocking(move || (pg[0].verify(), file[0].verify()))
        .await
        .unwrap();
    let (pv, fv) = (v.0.unwrap(), v.1.unwrap());
    assert!(pv.is_ok(), "{}", pv.render());
    assert!(fv.is_ok(), "{}", fv.render());
    println!(
        "PostgreSQL log: {} records verified; file log: {}",
        pv.records, fv.records
    );
    let _ = std::fs::remove_dir_all(&dir);
}
