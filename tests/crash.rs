//! A gateway killed with SIGKILL at random moments under concurrent unmask
//! load: every unmask response a client received has its record in the log
//! and a signed receipt; then the log is tampered with, on copies, in the
//! three ways issue 15 names — the last 1..N released records dropped, the
//! newest segment holding released records deleted, a forged record
//! appended — and every time `maskgate audit verify` with the witness and
//! the receipts exits 1, and a restart refuses to sign over it. At the end
//! a restart on the untampered log works and the log verifies.
//!
//! The kill points and the N come from a seed (`MASKGATE_CRASH_SEED`,
//! default below), printed in every failure message. A tampering always
//! removes at least one released record: bytes of a batch that crashed
//! before its checkpoint were never released, hide nothing, and a restart
//! moves them aside on its own.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const REASON: &str = "COLL-2026-00042 skip trace for agency";
const DEFAULT_SEED: u64 = 0x5eed_0015_2026;
const ROUNDS: usize = 3;

/// xorshift64*: small, and the same sequence for a seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The log files of `dir`, oldest first.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(maskgate::audit::file::parse_log_file_name)
                .is_some()
        })
        .collect();
    files.sort();
    files
}

/// The file holding record `seq`, and the offset of its line.
fn find_record(dir: &Path, seq: u64) -> (usize, usize) {
    let files = log_files(dir);
    for (i, path) in files.iter().enumerate().rev() {
        let bytes = std::fs::read(path).unwrap();
        let mut at = 0;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            if maskgate::audit::record::parse_record_line(text).is_ok_and(|r| r.seq == seq) {
                return (i, at);
            }
            at += line.len();
        }
    }
    panic!("record {seq} not in {}", dir.display());
}

#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Drop the last n released records (and everything after them).
    DropTail(u64),
    /// Delete the segment holding the newest released record (and any newer).
    DeleteNewestSegment,
    /// Append a record that chains, hashed right, signed by no one.
    AppendForged,
}

/// Tampers with the log in `dir`; `released` is the newest seq a client
/// holds a receipt for.
fn tamper(dir: &Path, how: Tamper, released: u64) {
    let files = log_files(dir);
    match how {
        Tamper::DropTail(n) => {
            let (i, cut) = find_record(dir, released + 1 - n.clamp(1, released));
            let bytes = std::fs::read(&files[i]).unwrap();
            std::fs::write(&files[i], &bytes[..cut]).unwrap();
            for newer in &files[i + 1..] {
                std::fs::remove_file(newer).unwrap();
            }
        }
        Tamper::DeleteNewestSegment => {
            let (i, _) = find_record(dir, released);
            for f in &files[i..] {
                std::fs::remove_file(f).unwrap();
            }
        }
        Tamper::AppendForged => {
            let last = files.last().unwrap();
            let mut bytes = std::fs::read(last).unwrap();
            // Whatever ends the file (a torn write included) stays; the
            // forgery follows it as its own line.
            if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                bytes.push(b'\n');
            }
            let prev = std::fs::read_to_string(last)
                .unwrap()
                .lines()
                .rev()
                .find_map(|l| maskgate::audit::record::parse_record_line(l.as_bytes()).ok())
                .map(|r| (r.seq, r.hash))
                .unwrap_or((0, "0".repeat(64)));
            let forged = maskgate::audit::RecordDraft::new(
                maskgate::audit::Kind::Unmask,
                "mallory",
                maskgate::audit::Outcome::Granted,
                "ok",
            )
            .request("GET", "accounts.get")
            .classes(["ssn"]);
            // Hashed and chained as the gateway would; no key signs it.
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&prev.1, &mut hash).unwrap();
            let head = maskgate::audit::chain::ChainHead { seq: prev.0, hash };
            let now = time::OffsetDateTime::now_utc();
            let mut chain = maskgate::audit::chain::Chain::new(
                maskgate::audit::SigningKey::generate().unwrap(),
                maskgate::audit::CheckpointPolicy::default(),
                head,
                prev.0,
                now,
            );
            bytes.extend_from_slice(&chain.seal(&forged, now).unwrap().line);
            std::fs::write(last, bytes).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_at_random_moments_leave_no_tampering_unseen() {
    let seed = std::env::var("MASKGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = Rng(seed | 1);
    let dir = temp_dir("crash");
    let upstream = demo_upstream(&dir, 40).await;
    let mut names: Vec<&str> = ROLES.to_vec();
    names.push("nobody");
    maskgate::demo::certs::generate(&dir.join("certs"), &names).unwrap();
    // The shipped policy, with collections' budgets raised for a load test.
    let policy_dir = dir.join("policies");
    maskgate::demo::run::ensure_policy(&policy_dir).unwrap();
    let roles = std::fs::read_to_string(policy_dir.join("roles.toml")).unwrap();
    let roles = roles
        .replace("max_records_per_hour = 50", "max_records_per_hour = 100000")
        .replace("max_records_per_day = 200", "max_records_per_day = 1000000");
    std::fs::write(policy_dir.join("roles.toml"), roles).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config =
        maskgate::demo::run::write_full_config(&dir, listen, upstream.addr, &policy_dir).unwrap();
    // `[audit]` is the config's last section: a witness outside the log
    // directory, and small segments so the log spans several files.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("witness_dir = \"witness\"\nrotate_bytes = 16384\n");
    std::fs::write(&config, text).unwrap();
    let audit_dir = dir.join("data").join("audit");
    let witness_dir = dir.join("witness");
    let public_key = dir.join("keys/audit-signing.pub");
    let ssn_account = maskgate::demo::data::generate(2016, 40)
        .into_iter()
        .find(|a| a["ssn"].is_string())
        .and_then(|a| a["id"].as_str().map(str::to_owned))
        .unwrap();

    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_maskgate"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let wait_up = || async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(listen).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "gateway did not start (seed {seed})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Clients with the collections certificate, unmasking concurrently.
    let client_for = || {
        let certs = dir.join("certs");
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut std::fs::read(certs.join("ca.pem")).unwrap().as_slice())
        {
            roots.add(c.unwrap()).unwrap();
        }
        tls_client(
            roots,
            Some((certs.join("collections.pem"), certs.join("collections.key"))),
            listen,
            false,
        )
    };
    let verify = |log: &Path, witness: &Path, receipts: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_maskgate"))
            .args(["audit", "verify", "--dir"])
            .arg(log)
            .arg("--public-key")
            .arg(&public_key)
            .arg("--witness")
            .arg(witness)
            .arg("--receipts")
            .arg(receipts)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };

    for round in 0..ROUNDS {
        let mut child = spawn();
        wait_up().await;
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let client = client_for();
            let received = received.clone();
            let stop = stop.clone();
            let path = format!("/accounts/{ssn_account}");
            tasks.push(tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(r) = client
                        .get_with_result(&path, &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)])
                        .await
                    {
                        if r.status == 200
                            && r.json()["ssn"].as_str().is_some_and(|s| !s.contains('*'))
                        {
                            let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
                            let receipt = r
                                .headers
                                .get(maskgate::audit::RECEIPT_HEADER)
                                .map(|v| v.to_str().unwrap().to_owned())
                                .unwrap_or_default();
                            received.lock().unwrap().push((id, receipt));
                        }
                    }
                }
            }));
        }
        // A random kill point: after 20..200 answers, plus 0..40 ms.
        let answers = 20 + rng.below(180) as usize;
        let extra = Duration::from_millis(rng.below(40));
        let deadline = Instant::now() + Duration::from_secs(30);
        while received.lock().unwrap().len() < answers && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(extra).await;
        Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .unwrap();
        let _ = child.wait();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        let received = received.lock().unwrap().clone();
        let context = format!(
            "seed {seed}, round {round}, killed after {} answers",
            received.len()
        );
        assert!(
            received.len() >= 20,
            "too little load before the kill ({context})"
        );

        // Every response a client got has its durable record and a receipt.
        let records =
            maskgate::audit::query::query(&audit_dir, &maskgate::audit::Filter::default())
                .unwrap()
                .records;
        let logged: std::collections::HashSet<String> = records
            .iter()
            .filter(|r| r.outcome == maskgate::audit::Outcome::Granted)
            .filter_map(|r| r.request_id.clone())
            .collect();
        let mut receipts = String::new();
        let mut released = 0;
        for (id, receipt) in &received {
            assert!(
                logged.contains(id),
                "request {id} was answered but has no audit record ({context})"
            );
            let parsed = maskgate::audit::SignedReceipt::parse(receipt)
                .unwrap_or_else(|e| panic!("request {id}: receipt {receipt:?}: {e} ({context})"));
            released = released.max(parsed.seq);
            receipts.push_str(receipt);
            receipts.push('\n');
        }
        let receipts_file = dir.join(format!("receipts-{round}.txt"));
        std::fs::write(&receipts_file, receipts).unwrap();

        let scenarios = [
            Tamper::DropTail(1 + rng.below(8)),
            Tamper::DeleteNewestSegment,
            Tamper::AppendForged,
        ];
        for (i, how) in scenarios.into_iter().enumerate() {
            let copy = dir.join(format!("tampered-{round}-{i}"));
            let (log, witness) = (copy.join("audit"), copy.join("witness"));
            copy_dir(&audit_dir, &log);
            copy_dir(&witness_dir, &witness);
            tamper(&log, how, released);
            let (code, out) = verify(&log, &witness, &receipts_file);
            assert_eq!(code, Some(1), "{how:?} went unseen ({context}):\n{out}");
            // A restart never signs over it.
            let key =
                maskgate::audit::SigningKey::load(&dir.join("keys/audit-signing.key")).unwrap();
            let options = maskgate::audit::AuditOptions {
                witness: Some(witness.clone()),
                ..Default::default()
            };
            match how {
                Tamper::DropTail(_) | Tamper::DeleteNewestSegment => {
                    let err = maskgate::audit::AuditLog::open(&log, key, options)
                        .expect_err(&format!("a restart signed over {how:?} ({context})"));
                    assert_eq!(err.code(), "audit_log_corrupt", "{err} ({context})");
                }
                Tamper::AppendForged => {
                    let reopened = maskgate::audit::AuditLog::open(&log, key, options).unwrap();
                    let tail =
                        reopened.open_report().torn.clone().unwrap_or_else(|| {
                            panic!("the forgery was not moved aside ({context})")
                        });
                    assert!(tail.records >= 1, "{tail:?} ({context})");
                    reopened.close().unwrap();
                    let records =
                        maskgate::audit::query::query(&log, &maskgate::audit::Filter::default())
                            .unwrap()
                            .records;
                    assert!(
                        records.iter().all(|r| r.principal != "mallory"),
                        "the forgery was signed ({context})"
                    );
                    let (code, out) = verify(&log, &witness, &receipts_file);
                    assert_eq!(code, Some(0), "after the restart ({context}):\n{out}");
                }
            }
        }
    }

    // Restart on the untampered log: what no checkpoint signs is moved
    // aside, the chain continues, and the log verifies with everything.
    let mut child = spawn();
    wait_up().await;
    let client = client_for();
    let r = client
        .get_with(
            &format!("/accounts/{ssn_account}"),
            &[("x-unmask", "ssn"), ("x-unmask-reason", REASON)],
        )
        .await;
    assert_eq!(r.status, 200, "seed {seed}");
    let last_receipts = dir.join(format!("receipts-{}.txt", ROUNDS - 1));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    let (code, out) = verify(&audit_dir, &witness_dir, &last_receipts);
    assert_eq!(code, Some(0), "seed {seed}:\n{out}");
}
