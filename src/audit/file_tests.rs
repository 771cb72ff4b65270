// Compiled only under #[cfg(test)] (see the parent module).
//! Tests of the file sink: appends, group commit, torn-line recovery,
//! failure and poisoning, rotation, the head file.

use std::collections::BTreeSet;
use std::fs;
use std::sync::mpsc;
use std::sync::Arc;

use time::macros::datetime;

use super::*;
use crate::audit::chain::CheckpointPolicy;
use crate::audit::keys::PublicKey;
use crate::audit::record::{Kind, Outcome, RECORD_KEYS};
use crate::audit::testutil::{FakeClock, TempDir};
use crate::audit::verify::{verify, FindingKind};

fn draft(n: usize) -> RecordDraft {
    RecordDraft::new(
        Kind::Unmask,
        format!("collections-{}", n % 5),
        Outcome::Granted,
        "ok",
    )
    .request_id(format!("req-{n}"))
    .roles(["collections"])
    .request("GET", "accounts.get")
    .accounts([format!("A-{n}")])
    .classes(["ssn"])
    .reason("COLL-2026-00123 skip trace")
    .released(1)
}

fn options(every_records: u64) -> AuditOptions {
    AuditOptions {
        checkpoint: CheckpointPolicy {
            every_records,
            ..CheckpointPolicy::default()
        },
        ..AuditOptions::default()
    }
}

fn new_key() -> (Vec<u8>, PublicKey) {
    let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .expect("generate");
    let der = doc.as_ref().to_vec();
    let public = SigningKey::from_pkcs8(&der)
        .expect("key")
        .public_key()
        .clone();
    (der, public)
}

fn key(der: &[u8]) -> SigningKey {
    SigningKey::from_pkcs8(der).expect("key")
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join(log_file_name(1))
}

#[test]
fn appends_are_sequential_and_close_seals() {
    let dir = TempDir::new("file-basic");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    assert!(log.open_report().created);
    for n in 1..=5u64 {
        let receipt = log.append_sync(draft(n as usize)).expect("append");
        assert_eq!(receipt.seq(), n);
    }
    assert_eq!(log.stats().durable_seq, 5);
    log.close().expect("close");
    let text = fs::read_to_string(log_path(dir.path())).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6);
    assert!(lines[5].starts_with("{\"checkpoint\":{\"seq\":5,"));
    let head = fs::read_to_string(dir.path().join(HEAD_FILE)).expect("head");
    assert_eq!(head.trim_end(), lines[5]);

    let report = verify(dir.path(), &public).expect("verify");
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!((report.records, report.unsealed), (5, 0));

    // Reopen: the chain continues.
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("reopen");
    assert_eq!(log.open_report().last_seq, 5);
    assert_eq!(log.open_report().sealed_seq, 5);
    assert_eq!(log.append_sync(draft(6)).expect("append").seq(), 6);
    drop(log); // dropping closes with a checkpoint too
    let report = verify(dir.path(), &public).expect("verify");
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(
        (report.records, report.checkpoints, report.unsealed),
        (6, 2, 0)
    );
}

#[test]
fn every_line_has_only_the_fixed_keys() {
    let dir = TempDir::new("file-keys");
    let (der, _) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(3)).expect("open");
    for n in 0..7 {
        log.append_sync(draft(n)).expect("append");
    }
    log.close().expect("close");
    let text = fs::read_to_string(log_path(dir.path())).expect("read");
    let record_keys: BTreeSet<&str> = RECORD_KEYS.into_iter().collect();
    let mut records = 0;
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("json");
        let keys: BTreeSet<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        if keys.contains("checkpoint") {
            assert_eq!(keys, BTreeSet::from(["checkpoint", "sig"]));
            let inner: BTreeSet<&str> = value["checkpoint"]
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(
                inner,
                BTreeSet::from(["seq", "head", "count", "time", "key_id"])
            );
        } else {
            assert_eq!(keys, record_keys);
            records += 1;
        }
    }
    assert_eq!(records, 7);
}

#[test]
fn torn_last_line_is_cut_saved_and_the_chain_continues() {
    let dir = TempDir::new("file-torn");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    for n in 0..4 {
        log.append_sync(draft(n)).expect("append");
    }
    // A crash: no clean close, so no final checkpoint.
    std::mem::forget(log);
    let path = log_path(dir.path());
    let whole = fs::read(&path).expect("read");
    let last_line = whole[..whole.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let half = whole[last_line..whole.len() / 2 + last_line / 2].to_vec();
    let mut torn = whole.clone();
    torn.extend_from_slice(&half);
    fs::write(&path, &torn).expect("write torn");

    // Verify before restart names the torn line.
    let before = verify(dir.path(), &public).expect("verify");
    let finding = before.problem.expect("torn found");
    assert_eq!(finding.kind, FindingKind::Torn);
    assert_eq!((finding.line, finding.seq), (5, Some(5)));

    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("reopen");
    let report = log.open_report().clone();
    let tail = report.torn.expect("torn reported");
    assert_eq!(tail.offset, whole.len() as u64);
    assert_eq!(tail.len, half.len() as u64);
    assert_eq!(fs::read(&tail.saved_to).expect("saved"), half);
    assert_eq!(report.last_seq, 4);
    assert_eq!(fs::read(&path).expect("read"), whole);
    assert_eq!(log.append_sync(draft(5)).expect("append").seq(), 5);
    log.close().expect("close");
    let after = verify(dir.path(), &public).expect("verify");
    assert!(after.is_ok(), "{}", after.render());
    assert_eq!(after.records, 5);
}

#[test]
fn unparsable_last_whole_line_is_torn_but_a_middle_one_refuses_open() {
    let dir = TempDir::new("file-torn2");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    for n in 0..3 {
        log.append_sync(draft(n)).expect("append");
    }
    std::mem::forget(log);
    let path = log_path(dir.path());
    let whole = fs::read(&path).expect("read");
    let mut garbage = whole.clone();
    garbage.extend_from_slice(b"\0\0\0\0{\"seq\":4,\"ti\n");
    fs::write(&path, &garbage).expect("write");
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("reopen");
    assert_eq!(
        log.open_report().torn.as_ref().map(|t| t.offset),
        Some(whole.len() as u64)
    );
    assert_eq!(log.append_sync(draft(4)).expect("append").seq(), 4);
    log.close().expect("close");
    assert!(verify(dir.path(), &public).expect("verify").is_ok());

    // Damage before the last line is not a torn write: refuse to open.
    // (Open reads back only as far as the last record and checkpoint;
    // damage further back is left for `audit verify`.)
    let text = fs::read_to_string(&path).expect("read");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let before_last = lines.len() - 2;
    lines[before_last] = "{\"seq\":4,broken".to_string();
    fs::write(&path, lines.join("\n") + "\n").expect("write");
    let err = AuditLog::open(dir.path(), key(&der), options(1000)).expect_err("refused");
    assert!(matches!(err, AuditError::Corrupt { .. }), "{err}");
    assert_eq!(err.code(), "audit_log_corrupt");
}

#[test]
fn concurrent_appends_group_commit() {
    let dir = TempDir::new("file-group");
    let (der, public) = new_key();
    let log = Arc::new(AuditLog::open(dir.path(), key(&der), options(100)).expect("open"));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..100)
                    .map(|n| log.append_sync(draft(t * 1000 + n)).expect("append").seq())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=800).collect::<Vec<u64>>());
    // The callback API from many threads at once, too.
    let (tx, rx) = mpsc::channel();
    for n in 0..200 {
        let tx = tx.clone();
        log.append(
            draft(n),
            Box::new(move |r| {
                let _ = tx.send(r.map(|r| r.seq()));
            }),
        );
    }
    drop(tx);
    let mut more: Vec<u64> = rx.iter().map(|r| r.expect("append")).collect();
    more.sort_unstable();
    assert_eq!(more, (801..=1000).collect::<Vec<u64>>());
    let stats = log.stats();
    assert_eq!(stats.records, 1000);
    assert!(stats.checkpoints >= 10);
    let log = Arc::try_unwrap(log).expect("sole owner");
    log.close().expect("close");
    let report = verify(dir.path(), &public).expect("verify");
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!((report.records, report.checkpoints), (1000, 10));
}

#[test]
fn write_failure_fails_the_batch_and_poisons_the_log() {
    let dir = TempDir::new("file-fail");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    log.append_sync(draft(1)).expect("append");
    // The writer's handle becomes read-only: the next write fails (EBADF).
    let read_only = File::open(log_path(dir.path())).expect("open read-only");
    log.swap_file_for_test(read_only);
    let err = log.append_sync(draft(2)).expect_err("write fails");
    assert!(
        matches!(err, AuditError::Io { op: "write", .. }),
        "unexpected {err}"
    );
    let again = log.append_sync(draft(3)).expect_err("poisoned");
    assert!(matches!(again, AuditError::Poisoned { .. }), "{again}");
    assert!(log.health().is_err());
    let (tx, rx) = mpsc::channel();
    log.append(
        draft(4),
        Box::new(move |r| {
            let _ = tx.send(r.is_err());
        }),
    );
    assert_eq!(rx.recv().ok(), Some(true));
    assert!(log.close().is_err());
    // Nothing unacknowledged reached the file; reopening works and verifies.
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("reopen");
    assert_eq!(log.open_report().last_seq, 1);
    assert_eq!(log.append_sync(draft(2)).expect("append").seq(), 2);
    log.close().expect("close");
    assert!(verify(dir.path(), &public).expect("verify").is_ok());
}

#[test]
fn rotation_failure_poisons_the_log() {
    let dir = TempDir::new("file-fail-rotate");
    let (der, _) = new_key();
    let opts = AuditOptions {
        rotate_bytes: Some(2000),
        ..options(1000)
    };
    let log = AuditLog::open(dir.path(), key(&der), opts).expect("open");
    // Something occupies the next file's name: creating it fails.
    fs::create_dir(dir.path().join(log_file_name(2))).expect("mkdir");
    let mut first_error = None;
    for n in 0..20 {
        if let Err(e) = log.append_sync(draft(n)) {
            first_error = Some((n, e));
            break;
        }
    }
    let (n, err) = first_error.expect("the log fails once the file is full");
    assert!(n > 0);
    assert!(matches!(err, AuditError::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("audit-000002.log"), "{err}");
}

#[test]
fn refused_draft_does_not_poison() {
    let dir = TempDir::new("file-draft");
    let (der, _) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    let bad = draft(1).request("GET", "/accounts/1?x=1");
    assert!(matches!(log.append_sync(bad), Err(AuditError::Draft(_))));
    assert_eq!(log.append_sync(draft(2)).expect("append").seq(), 1);
    assert!(log.health().is_ok());
}

#[test]
fn panicking_callback_does_not_stop_the_writer() {
    let dir = TempDir::new("file-panic");
    let (der, _) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    log.append(draft(1), Box::new(|_| panic!("callback bug")));
    assert_eq!(log.append_sync(draft(2)).expect("append").seq(), 2);
}

#[test]
fn rotation_continues_the_chain_across_files() {
    let dir = TempDir::new("file-rotate");
    let (der, public) = new_key();
    let opts = AuditOptions {
        rotate_bytes: Some(4000),
        ..options(1000)
    };
    let log = AuditLog::open(dir.path(), key(&der), opts.clone()).expect("open");
    for n in 0..60 {
        log.append_sync(draft(n)).expect("append");
    }
    log.close().expect("close");
    let files = list_log_files(dir.path()).expect("list");
    assert!(files.len() >= 3, "{} files", files.len());
    // Each closed file ends with a checkpoint.
    for (_, path) in &files[..files.len() - 1] {
        let text = fs::read_to_string(path).expect("read");
        assert!(text
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("{\"checkpoint\"")));
    }
    let log = AuditLog::open(dir.path(), key(&der), opts).expect("reopen");
    assert_eq!(log.open_report().last_seq, 60);
    assert_eq!(log.append_sync(draft(61)).expect("append").seq(), 61);
    log.close().expect("close");
    let report = verify(dir.path(), &public).expect("verify");
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(report.records, 61);
    assert_eq!(
        report.files,
        list_log_files(dir.path()).expect("list").len()
    );
}

#[test]
fn reopen_finds_the_chain_in_an_earlier_file() {
    let dir = TempDir::new("file-rotate-empty");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    for n in 0..4 {
        log.append_sync(draft(n)).expect("append");
    }
    log.close().expect("close");
    // A crash right after a rotation created the next file.
    fs::write(dir.path().join(log_file_name(2)), b"").expect("create");
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("reopen");
    assert_eq!(log.open_report().files, 2);
    assert_eq!(log.open_report().last_seq, 4);
    assert_eq!(log.open_report().sealed_seq, 4);
    assert_eq!(log.append_sync(draft(5)).expect("append").seq(), 5);
    log.close().expect("close");
    let text = fs::read_to_string(dir.path().join(log_file_name(2))).expect("read");
    assert!(text.starts_with("{\"seq\":5,"));
    assert!(verify(dir.path(), &public).expect("verify").is_ok());
}

#[test]
fn tick_writes_time_driven_checkpoints() {
    let dir = TempDir::new("file-tick");
    let (der, public) = new_key();
    let clock = FakeClock::new(datetime!(2026-07-01 08:00 UTC));
    let opts = AuditOptions {
        clock: clock.clock(),
        ..options(1000)
    };
    let log = AuditLog::open(dir.path(), key(&der), opts).expect("open");
    log.append_sync(draft(1)).expect("append");
    log.tick();
    clock.advance_secs(30);
    log.tick();
    log.append_sync(draft(2)).expect("append"); // a round trip: ticks are done
    assert_eq!(log.stats().checkpoints, 0);
    clock.advance_secs(31);
    log.tick();
    log.append_sync(draft(3)).expect("append");
    assert_eq!(log.stats().checkpoints, 1);
    let head = read_head(dir.path()).ok().flatten().expect("head");
    assert_eq!(head.checkpoint.seq, 2);
    std::mem::forget(log);
    let report = verify(dir.path(), &public).expect("verify");
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!((report.sealed_seq, report.unsealed), (2, 1));
}

#[test]
fn open_refuses_a_log_cut_behind_its_head_or_without_head() {
    let dir = TempDir::new("file-cut");
    let (der, _) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(5)).expect("open");
    for n in 0..12 {
        log.append_sync(draft(n)).expect("append");
    }
    log.close().expect("close");
    let path = log_path(dir.path());
    let text = fs::read_to_string(&path).expect("read");
    // Keep records 1..=5 and their checkpoint.
    let kept: Vec<&str> = text.lines().take(6).collect();
    fs::write(&path, kept.join("\n") + "\n").expect("write");
    let err = AuditLog::open(dir.path(), key(&der), options(5)).expect_err("refused");
    assert!(
        err.to_string().contains("records 6..=12 were cut off"),
        "{err}"
    );
    fs::remove_file(dir.path().join(HEAD_FILE)).expect("rm head");
    let err = AuditLog::open(dir.path(), key(&der), options(5)).expect_err("refused");
    assert!(err.to_string().contains("head file is missing"), "{err}");
}

#[test]
fn new_key_is_reported_and_both_keys_verify() {
    let dir = TempDir::new("file-newkey");
    let (der1, public1) = new_key();
    let (der2, public2) = new_key();
    let log = AuditLog::open(dir.path(), key(&der1), options(1000)).expect("open");
    log.append_sync(draft(1)).expect("append");
    log.close().expect("close");
    let log = AuditLog::open(dir.path(), key(&der2), options(1000)).expect("open");
    assert_eq!(
        log.open_report().key_changed.as_deref(),
        Some(public1.key_id())
    );
    log.append_sync(draft(2)).expect("append");
    log.close().expect("close");
    let both = crate::audit::verify::verify_with_keys(dir.path(), &[public1, public2.clone()])
        .expect("verify");
    assert!(both.is_ok(), "{}", both.render());
    let only_new = verify(dir.path(), &public2).expect("verify");
    assert_eq!(
        only_new.problem.map(|f| f.kind),
        Some(FindingKind::KeyReplaced)
    );
}

#[test]
fn log_and_receipt_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<AuditLog>();
    send_sync::<AuditReceipt>();
    send_sync::<AuditError>();
}

#[test]
fn file_names_parse() {
    assert_eq!(parse_log_file_name("audit-000001.log"), Some(1));
    assert_eq!(parse_log_file_name("audit-1234567.log"), Some(1_234_567));
    assert_eq!(parse_log_file_name("audit-000001.log.torn-5"), None);
    assert_eq!(parse_log_file_name("audit-01.log"), None);
    assert_eq!(parse_log_file_name(HEAD_FILE), None);
    assert_eq!(log_file_name(7), "audit-000007.log");
}

#[test]
fn recovery_reads_only_the_end_of_a_large_log() {
    // Over 3 MiB of records (several recovery windows) with the last
    // checkpoint far from the end, then a torn line: recovery still finds
    // the last checkpoint, the last record and the torn tail.
    let dir = TempDir::new("file-large");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(100_000)).expect("open");
    let n = 9000;
    for i in 0..n {
        log.append_sync(draft(i)).expect("append");
    }
    std::mem::forget(log);
    let path = log_path(dir.path());
    let whole = fs::read(&path).expect("read");
    assert!(whole.len() as u64 > 3 * RECOVERY_WINDOW, "{}", whole.len());
    let mut torn = whole.clone();
    torn.extend_from_slice(b"{\"seq\":9001,\"kind\":\"unm");
    fs::write(&path, &torn).expect("write torn");

    let log = AuditLog::open(dir.path(), key(&der), options(100_000)).expect("reopen");
    let report = log.open_report().clone();
    let tail = report.torn.expect("torn reported");
    assert_eq!(tail.offset, whole.len() as u64);
    assert_eq!(report.last_seq, n as u64);
    assert_eq!(fs::read(&path).expect("read"), whole);
    assert_eq!(
        log.append_sync(draft(n)).expect("append").seq(),
        n as u64 + 1
    );
    log.close().expect("close");
    let after = verify(dir.path(), &public).expect("verify");
    assert!(after.is_ok(), "{}", after.render());
    assert_eq!(after.records, n as u64 + 1);
}
