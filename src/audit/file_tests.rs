// Compiled only under #[cfg(test)] (see the parent module).
//! Tests of the file sink: appends, group commit, a checkpoint ending
//! every batch, recovery that moves an unsigned tail aside, failure and
//! reopening, rotation, the head file and the witness.

use std::collections::BTreeSet;
use std::fs;
use std::sync::mpsc;
use std::sync::Arc;

use time::macros::datetime;

use super::*;
use crate::audit::chain::CheckpointPolicy;
use crate::audit::chain::{Chain, Sealed};
use crate::audit::keys::PublicKey;
use crate::audit::record::{Kind, Outcome, RECORD_KEYS};
use crate::audit::testutil::{FakeClock, TempDir};
use crate::audit::verify::{verify, FindingKind, VerifyOptions};

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
    // Each append was its own batch, and each batch ends with a checkpoint.
    assert_eq!(lines.len(), 10);
    for (i, line) in lines.iter().enumerate() {
        let is_checkpoint = line.starts_with(&format!("{{\"checkpoint\":{{\"seq\":{},", i / 2 + 1));
        assert_eq!(is_checkpoint, i % 2 == 1, "line {}: {line}", i + 1);
    }
    let head = read_head(dir.path()).ok().flatten().expect("head");
    assert_eq!(head.to_line().expect("line"), lines[9].as_bytes());

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
        (6, 6, 0)
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

    // Verify before restart names the torn line (four records, four checkpoints).
    let before = verify(dir.path(), &public).expect("verify");
    let finding = before.problem.expect("torn found");
    assert_eq!(finding.kind, FindingKind::Torn);
    assert_eq!((finding.line, finding.seq), (9, Some(5)));

    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("reopen");
    let report = log.open_report().clone();
    let tail = report.torn.expect("torn reported");
    assert_eq!(tail.offset, whole.len() as u64);
    assert_eq!(tail.len, half.len() as u64);
    assert_eq!((tail.records, tail.chains, tail.after_seq), (0, false, 4));
    assert_eq!(fs::read(&tail.saved_to).expect("saved"), half);
    assert_eq!(report.last_seq, 4);
    assert!(fs::read(&path).expect("read").starts_with(&whole));
    // The incident is the log's next record; then the chain goes on.
    assert_eq!(log.incidents().len(), 1);
    assert_eq!(log.append_sync(draft(5)).expect("append").seq(), 6);
    log.close().expect("close");
    let after = verify(dir.path(), &public).expect("verify");
    assert!(after.is_ok(), "{}", after.render());
    assert_eq!(after.records, 6);
    let incident = crate::audit::query::query(dir.path(), &crate::audit::Filter::default())
        .expect("query")
        .records
        .into_iter()
        .find(|r| r.seq == 5)
        .expect("record 5");
    assert_eq!(
        (incident.kind, incident.why.as_str()),
        (Kind::Alert, "audit_tail_set_aside")
    );
    assert!(
        incident
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("torn line"),
        "{incident:?}"
    );
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
    assert_eq!(log.append_sync(draft(4)).expect("append").seq(), 5);
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
    // Every batch ends with a checkpoint; big batches hold more.
    assert!(stats.checkpoints >= stats.batches, "{stats:?}");
    assert!(stats.checkpoints >= 10, "{stats:?}");
    let log = Arc::try_unwrap(log).expect("sole owner");
    log.close().expect("close");
    let report = verify(dir.path(), &public).expect("verify");
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(
        (report.records, report.checkpoints),
        (1000, stats.checkpoints)
    );
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
fn no_batch_is_released_without_its_checkpoint() {
    let dir = TempDir::new("file-tick");
    let (der, public) = new_key();
    let clock = FakeClock::new(datetime!(2026-07-01 08:00 UTC));
    let opts = AuditOptions {
        clock: clock.clock(),
        ..options(1000)
    };
    let log = AuditLog::open(dir.path(), key(&der), opts).expect("open");
    log.append_sync(draft(1)).expect("append");
    // By the time a receipt arrives, a checkpoint covering it is durable,
    // and the head file holds it.
    assert_eq!(log.stats().checkpoints, 1);
    let head = read_head(dir.path()).ok().flatten().expect("head");
    assert_eq!(head.checkpoint.seq, 1);
    // Ticks with nothing unsealed add nothing.
    clock.advance_secs(120);
    log.tick();
    log.append_sync(draft(2)).expect("append"); // a round trip: ticks are done
    assert_eq!(log.stats().checkpoints, 2);
    std::mem::forget(log); // a crash after the receipt
    let report = verify(dir.path(), &public).expect("verify");
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!((report.sealed_seq, report.unsealed), (2, 0));
}

/// Appends `lines` to the log file as someone with write access would.
fn append_raw(dir: &Path, lines: &[Vec<u8>]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(log_path(dir))
        .expect("open");
    for l in lines {
        f.write_all(l).expect("write");
    }
}

/// A record that continues the chain at `head`, hashed correctly, as a
/// forger would write it (they know the format; they lack the key).
fn forged_record(head: ChainHead, principal: &str) -> Sealed {
    let mut chain = Chain::new(
        SigningKey::generate().expect("key"),
        CheckpointPolicy::default(),
        head,
        head.seq,
        datetime!(2026-07-01 08:00 UTC),
    );
    chain
        .seal(
            &RecordDraft::new(Kind::Unmask, principal, Outcome::Granted, "ok"),
            datetime!(2026-07-01 08:00 UTC),
        )
        .expect("seal")
}

fn chain_head(dir: &Path, public: &PublicKey) -> ChainHead {
    let report = verify(dir, public).expect("verify");
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&report.head, &mut hash).expect("hex");
    ChainHead {
        seq: report.last_seq,
        hash,
    }
}

#[test]
fn a_forged_record_that_chains_is_moved_aside_not_signed() {
    let dir = TempDir::new("file-forged");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    for n in 0..3 {
        log.append_sync(draft(n)).expect("append");
    }
    log.close().expect("close");
    let forged = forged_record(chain_head(dir.path(), &public), "mallory");
    append_raw(dir.path(), std::slice::from_ref(&forged.line));
    // Verify: nothing signs it.
    let report = verify(dir.path(), &public).expect("verify");
    assert_eq!(report.problem.map(|f| f.kind), Some(FindingKind::Unsealed));

    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("reopen");
    let tail = log.open_report().torn.clone().expect("moved aside");
    assert_eq!((tail.records, tail.chains, tail.after_seq), (1, true, 3));
    assert_eq!(fs::read(&tail.saved_to).expect("saved"), forged.line);
    assert!(tail.describe().contains("chain but no checkpoint signs"));
    log.close().expect("close");
    let records = crate::audit::query::query(dir.path(), &crate::audit::Filter::default())
        .expect("query")
        .records;
    assert!(records.iter().all(|r| r.principal != "mallory"));
    assert_eq!(
        records.last().map(|r| r.why.as_str()),
        Some("audit_tail_set_aside")
    );
    assert!(verify(dir.path(), &public).expect("verify").is_ok());
}

#[test]
fn a_forged_checkpoint_is_no_anchor() {
    let dir = TempDir::new("file-forged-cp");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    log.append_sync(draft(1)).expect("append");
    log.close().expect("close");
    let head = chain_head(dir.path(), &public);
    let forged = forged_record(head, "mallory");
    // A checkpoint naming the real key id, signed by another key.
    let other = SigningKey::generate().expect("key");
    let mut cp = Checkpoint {
        seq: forged.seq,
        head: hex::encode(forged.hash),
        count: forged.seq,
        time: datetime!(2026-07-01 08:00 UTC),
        key_id: public.key_id().to_owned(),
    }
    .sign(&other)
    .expect("sign");
    cp.checkpoint.key_id = public.key_id().to_owned();
    let mut cp_line = cp.to_line().expect("line");
    cp_line.push(b'\n');
    append_raw(dir.path(), &[forged.line.clone(), cp_line]);
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("reopen");
    let tail = log.open_report().torn.clone().expect("moved aside");
    assert_eq!((tail.records, tail.chains, tail.after_seq), (2, false, 1));
    log.close().expect("close");
    assert!(verify(dir.path(), &public).expect("verify").is_ok());
}

#[test]
fn the_witness_catches_a_cut_that_a_restored_head_file_hides() {
    let dir = TempDir::new("file-witness");
    let witness = TempDir::new("file-witness-w");
    let (der, public) = new_key();
    let opts = AuditOptions {
        witness: Some(witness.path().to_path_buf()),
        ..options(1000)
    };
    let log = AuditLog::open(dir.path(), key(&der), opts.clone()).expect("open");
    assert!(log.open_report().witness_created);
    let mut receipts = String::new();
    for n in 0..6 {
        let r = log.append_sync(draft(n)).expect("append");
        receipts.push_str(&r.signed().expect("signed").to_header_value());
        receipts.push('\n');
        if n == 2 {
            // The attacker keeps an old head file and the log's length.
            fs::copy(dir.path().join(HEAD_FILE), dir.path().join("old-head")).expect("copy");
        }
    }
    log.close().expect("close");
    let receipts_file = witness.path().join("receipts.txt");
    fs::write(&receipts_file, &receipts).expect("write");
    let with_anchors = VerifyOptions {
        witnesses: vec![witness.path().to_path_buf()],
        receipts: vec![receipts_file.clone()],
    };
    let keys = std::slice::from_ref(&public);
    let whole = crate::audit::verify::verify_with(dir.path(), keys, &with_anchors).expect("verify");
    assert!(whole.is_ok(), "{}", whole.render());
    assert_eq!((whole.witnesses, whole.receipts), (1, 6));

    // Cut records 4..=6 (whole batches) and put the old head file back.
    let text = fs::read_to_string(log_path(dir.path())).expect("read");
    let kept: Vec<&str> = text.lines().take(6).collect();
    fs::write(log_path(dir.path()), kept.join("\n") + "\n").expect("write");
    fs::rename(dir.path().join("old-head"), dir.path().join(HEAD_FILE)).expect("restore");
    assert!(
        verify(dir.path(), &public).expect("verify").is_ok(),
        "the directory alone cannot tell"
    );
    let cut = crate::audit::verify::verify_with(dir.path(), keys, &with_anchors).expect("verify");
    let f = cut.problem.clone().expect("cut found");
    assert_eq!((f.kind, f.seq), (FindingKind::CutOff, Some(4)));
    assert!(f.detail.contains("witness"), "{f}");
    let missing: Vec<(u64, Option<u64>)> = cut
        .receipts_missing
        .iter()
        .map(|f| (f.line, f.seq))
        .collect();
    assert_eq!(missing, [(4, Some(4)), (5, Some(5)), (6, Some(6))]);
    assert_eq!(cut.exit_code(), 1);
    // A restart with the witness refuses to sign over the cut.
    let err = AuditLog::open(dir.path(), key(&der), opts).expect_err("refused");
    assert!(
        err.to_string().contains("records 4..=6 were cut off"),
        "{err}"
    );
}

#[test]
fn a_failed_log_reopens_itself_once_writes_succeed() {
    let dir = TempDir::new("file-reopen");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(1000)).expect("open");
    log.append_sync(draft(1)).expect("append");
    log.fail_writes_for_test(true);
    let err = log.append_sync(draft(2)).expect_err("disk full");
    assert!(matches!(err, AuditError::Io { op: "write", .. }), "{err}");
    assert!(log.health().is_err());
    // Still full: ticks try and fail; appends are refused at once.
    log.tick();
    assert!(matches!(
        log.append_sync(draft(3)),
        Err(AuditError::Poisoned { .. })
    ));
    log.fail_writes_for_test(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while log.health().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the log did not reopen"
        );
        log.tick();
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(log.stats().reopened, 1);
    let incidents = log.incidents();
    assert!(
        incidents[0].starts_with("audit log failed"),
        "{incidents:?}"
    );
    assert!(
        incidents[1].contains("reopened itself without a restart"),
        "{incidents:?}"
    );
    // Record 2 never reached the log; the incident is seq 2.
    assert_eq!(log.append_sync(draft(4)).expect("append").seq(), 3);
    log.close().expect("close");
    let report = verify(dir.path(), &public).expect("verify");
    assert!(report.is_ok(), "{}", report.render());
    let records = crate::audit::query::query(dir.path(), &crate::audit::Filter::default())
        .expect("query")
        .records;
    assert_eq!(records[1].why, "audit_sink_reopened");
    assert!(records[1]
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("append(s) were refused"));
}

#[test]
fn slot_files_survive_a_torn_slot_and_read_plain_lines() {
    let dir = TempDir::new("file-slots");
    let key = SigningKey::generate().expect("key");
    let line = |seq: u64| {
        let mut l = Checkpoint {
            seq,
            head: GENESIS.to_string(),
            count: seq,
            time: datetime!(2026-07-01 08:00 UTC),
            key_id: key.key_id().to_owned(),
        }
        .sign(&key)
        .expect("sign")
        .to_line()
        .expect("line");
        l.push(b'\n');
        l
    };
    let path = dir.path().join("anchor");
    fs::write(&path, line(1)).expect("plain line");
    assert_eq!(
        read_anchor_file(&path)
            .ok()
            .flatten()
            .map(|c| c.checkpoint.seq),
        Some(1)
    );
    let mut slots = SlotFile::open(&path).expect("open");
    slots.write(&line(2)).expect("write");
    slots.write(&line(3)).expect("write");
    assert_eq!(
        read_anchor_file(&path)
            .ok()
            .flatten()
            .map(|c| c.checkpoint.seq),
        Some(3)
    );
    // Tear the newest slot: the one before it still reads.
    let mut bytes = fs::read(&path).expect("read");
    let newest = bytes
        .windows(9)
        .position(|w| w == b"\"seq\":3,\"")
        .expect("slot");
    bytes[newest] = b'#';
    fs::write(&path, &bytes).expect("write");
    assert_eq!(
        read_anchor_file(&path)
            .ok()
            .flatten()
            .map(|c| c.checkpoint.seq),
        Some(2)
    );
    let mut reopened = SlotFile::open(&path).expect("open");
    reopened.write(&line(4)).expect("write");
    assert_eq!(
        read_anchor_file(&path)
            .ok()
            .flatten()
            .map(|c| c.checkpoint.seq),
        Some(4)
    );
    let mut bytes = fs::read(&path).expect("read");
    bytes.fill(b'#');
    fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        read_anchor_file(&path),
        Err(HeadProblem::Unreadable(_))
    ));
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
    // Keep records 1..=5 and their checkpoints.
    let kept: Vec<&str> = text.lines().take(10).collect();
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
fn recovery_reads_back_as_far_as_the_last_checkpoint() {
    // Over 3 MiB of records that chain but that no checkpoint signs (a
    // log of an older version cut by a crash, or a forger's), then a torn
    // line: recovery reads windows back until it finds the genesis, moves
    // all of it aside, and the log starts from the empty chain.
    let dir = TempDir::new("file-large");
    let (der, public) = new_key();
    let log = AuditLog::open(dir.path(), key(&der), options(100_000)).expect("open");
    log.close().expect("close");
    let mut chain = Chain::new(
        key(&der),
        CheckpointPolicy::default(),
        ChainHead::GENESIS,
        0,
        datetime!(2026-07-01 08:00 UTC),
    );
    let n = 9000;
    let mut lines = Vec::new();
    for i in 0..n {
        lines.push(
            chain
                .seal(&draft(i), datetime!(2026-07-01 08:00 UTC))
                .expect("seal")
                .line,
        );
    }
    lines.push(b"{\"seq\":9001,\"kind\":\"unm".to_vec());
    append_raw(dir.path(), &lines);
    let len = fs::metadata(log_path(dir.path())).expect("stat").len();
    assert!(len > 3 * RECOVERY_WINDOW, "{len}");

    let log = AuditLog::open(dir.path(), key(&der), options(100_000)).expect("reopen");
    let report = log.open_report().clone();
    let tail = report.torn.expect("moved aside");
    assert_eq!((tail.offset, tail.len), (0, len));
    assert_eq!(
        (tail.records, tail.chains, report.last_seq),
        (n as u64, false, 0)
    );
    assert_eq!(log.append_sync(draft(n)).expect("append").seq(), 2);
    log.close().expect("close");
    let after = verify(dir.path(), &public).expect("verify");
    assert!(after.is_ok(), "{}", after.render());
    assert_eq!(after.records, 2);
}
