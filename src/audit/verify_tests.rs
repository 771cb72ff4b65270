// Compiled only under #[cfg(test)] (see the parent module).
//! Tamper tests: each kind of damage is caught and named by file, line and seq.
//!
//! The log: 25 records, a checkpoint every 10, a final checkpoint (one
//! group commit of 25 records, written straight with the chain code).
//! Lines 1–10 are records 1–10, line 11 the checkpoint of seq 10, lines
//! 12–21 records 11–20, line 22 the checkpoint of seq 20, lines 23–27
//! records 21–25, line 28 the checkpoint of seq 25.

use std::fs;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::*;
use crate::audit::chain::{parse_checkpoint_line, CheckpointPolicy};
use crate::audit::file::{AuditLog, AuditOptions};
use crate::audit::keys::SigningKey;
use crate::audit::record::{parse_record_line, sha256, with_hash, Kind, Outcome, RecordDraft};
use crate::audit::testutil::TempDir;

struct Fixture {
    dir: TempDir,
    public: PublicKey,
}

/// Writes `records` records as one batch would, with a checkpoint every
/// `every` records and (when `seal`) one at the end, and the head file.
fn write_log(dir: &Path, key: SigningKey, records: u64, every: u64, seal: bool) {
    use crate::audit::chain::{Chain, ChainHead};
    use time::macros::datetime;
    let now = datetime!(2026-07-01 08:00 UTC);
    let mut chain = Chain::new(
        key,
        CheckpointPolicy {
            every_records: every,
            ..CheckpointPolicy::default()
        },
        ChainHead::GENESIS,
        0,
        now,
    );
    let (_, mut head) = chain.checkpoint(now).expect("genesis");
    let mut log = Vec::new();
    for n in 1..=records {
        let d = RecordDraft::new(
            Kind::Unmask,
            format!("clerk{}", n % 3),
            Outcome::Granted,
            "ok",
        )
        .request_id(format!("req-{n}"))
        .roles(["collections"])
        .request("GET", "accounts.get")
        .accounts([format!("A-{n}")])
        .classes(["ssn"])
        .reason("COLL-7 skip trace")
        .released(1);
        log.extend_from_slice(&chain.seal(&d, now).expect("seal").line);
        if chain.checkpoint_due_by_count() {
            head = chain.checkpoint(now).expect("checkpoint").1;
            log.extend_from_slice(&head);
        }
    }
    if seal && chain.unsealed() > 0 {
        head = chain.checkpoint(now).expect("checkpoint").1;
        log.extend_from_slice(&head);
    }
    fs::write(dir.join("audit-000001.log"), log).expect("write log");
    fs::write(dir.join(HEAD_FILE), head).expect("write head");
}

fn fixture(tag: &str) -> Fixture {
    let dir = TempDir::new(tag);
    let key = SigningKey::generate().expect("key");
    let public = key.public_key().clone();
    write_log(dir.path(), key, 25, 10, true);
    Fixture { dir, public }
}

impl Fixture {
    fn path(&self) -> PathBuf {
        self.dir.path().join("audit-000001.log")
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(self.path())
            .expect("read")
            .lines()
            .map(String::from)
            .collect()
    }

    fn write(&self, lines: &[String]) {
        fs::write(self.path(), lines.join("\n") + "\n").expect("write");
    }

    fn verify(&self) -> VerifyReport {
        verify(self.dir.path(), &self.public).expect("verify runs")
    }

    fn finding(&self) -> Finding {
        let report = self.verify();
        report.problem.expect("damage found")
    }
}

fn assert_finding(f: &Finding, kind: FindingKind, line: u64, seq: u64) {
    assert_eq!((f.kind, f.line, f.seq), (kind, line, Some(seq)), "got: {f}");
}

/// Re-hashes a record line after `edit`, as a forger who knows the format would.
fn rehash(line: &str, edit: impl Fn(&mut Record)) -> String {
    let mut r = parse_record_line(line.as_bytes()).expect("record");
    edit(&mut r);
    let no_hash = r.to_line().expect("line");
    let body = no_hash
        .rsplit_once(",\"hash\":")
        .map(|(b, _)| format!("{b}}}"))
        .expect("hash field");
    String::from_utf8(with_hash(
        body.as_bytes(),
        &hex::encode(sha256(body.as_bytes())),
    ))
    .expect("utf8")
}

#[test]
fn untouched_log_verifies() {
    let fx = fixture("verify-ok");
    let report = fx.verify();
    assert!(report.is_ok(), "{}", report.render());
    assert_eq!(
        (
            report.records,
            report.checkpoints,
            report.last_seq,
            report.unsealed
        ),
        (25, 3, 25, 0)
    );
    assert_eq!(report.exit_code(), 0);
    assert!(report.render().starts_with("audit log OK"));
    assert_eq!(fx.lines().len(), 28);
}

#[test]
fn edited_byte_is_caught() {
    let fx = fixture("verify-edit");
    let mut lines = fx.lines();
    lines[4] = lines[4].replacen("clerk2", "clerk0", 1);
    fx.write(&lines);
    let f = fx.finding();
    assert_finding(&f, FindingKind::Edited, 5, 5);
    assert_eq!(f.file, "audit-000001.log");
    assert_eq!(fx.verify().exit_code(), 1);
}

#[test]
fn edited_byte_that_breaks_json_is_caught() {
    let fx = fixture("verify-edit-json");
    let mut bytes = fs::read(fx.path()).expect("read");
    let lines = fx.lines();
    let offset: usize = lines[..6].iter().map(|l| l.len() + 1).sum();
    bytes[offset] = b'[';
    fs::write(fx.path(), bytes).expect("write");
    assert_finding(&fx.finding(), FindingKind::Malformed, 7, 7);
}

#[test]
fn edited_hash_and_edited_seq_are_caught() {
    let fx = fixture("verify-edit-hash");
    let mut lines = fx.lines();
    let at = lines[2].rfind("\"}").expect("end") - 1;
    let mut bytes = lines[2].clone().into_bytes();
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    lines[2] = String::from_utf8(bytes).expect("utf8");
    fx.write(&lines);
    assert_finding(&fx.finding(), FindingKind::Edited, 3, 3);

    let fx = fixture("verify-edit-seq");
    let mut lines = fx.lines();
    lines[2] = lines[2].replacen("{\"seq\":3,", "{\"seq\":4,", 1);
    fx.write(&lines);
    assert_finding(&fx.finding(), FindingKind::Edited, 3, 4);
}

#[test]
fn deleted_line_is_caught() {
    let fx = fixture("verify-delete");
    let mut lines = fx.lines();
    lines.remove(4);
    fx.write(&lines);
    let f = fx.finding();
    assert_finding(&f, FindingKind::Deleted, 5, 5);
    assert!(f.detail.contains("records 5..=5 are missing"), "{f}");
}

#[test]
fn deleted_record_before_a_checkpoint_is_caught() {
    let fx = fixture("verify-delete-before-cp");
    let mut lines = fx.lines();
    lines.remove(9); // record 10; the checkpoint of seq 10 follows
    fx.write(&lines);
    let f = fx.finding();
    assert_finding(&f, FindingKind::Deleted, 10, 10);
    assert!(
        f.detail.contains("signed checkpoint covers 10 records"),
        "{f}"
    );
}

#[test]
fn deleted_last_records_are_caught_by_the_final_checkpoint() {
    let fx = fixture("verify-delete-tail");
    let mut lines = fx.lines();
    lines.remove(26); // record 25, just before the final checkpoint
    fx.write(&lines);
    assert_finding(&fx.finding(), FindingKind::Deleted, 27, 25);
}

#[test]
fn swapped_lines_are_caught() {
    let fx = fixture("verify-swap");
    let mut lines = fx.lines();
    lines.swap(4, 5);
    fx.write(&lines);
    let f = fx.finding();
    assert_finding(&f, FindingKind::Reordered, 5, 6);
    assert!(f.detail.contains("before seq 5, which is at line 6"), "{f}");
}

#[test]
fn inserted_copy_is_caught() {
    let fx = fixture("verify-insert");
    let mut lines = fx.lines();
    let copy = lines[2].clone();
    lines.insert(7, copy); // a copy of record 3 after record 7
    fx.write(&lines);
    let f = fx.finding();
    assert_finding(&f, FindingKind::Inserted, 8, 3);
    assert!(
        f.detail
            .contains("a copy of record seq 3 (audit-000001.log line 3)"),
        "{f}"
    );
}

#[test]
fn inserted_copy_of_a_later_record_is_caught() {
    let fx = fixture("verify-insert-early");
    let mut lines = fx.lines();
    let copy = lines[7].clone(); // record 8
    lines.insert(4, copy); // before record 5
    fx.write(&lines);
    assert_finding(&fx.finding(), FindingKind::Inserted, 5, 8);
}

#[test]
fn inserted_garbage_line_is_not_skipped() {
    let fx = fixture("verify-garbage");
    let mut lines = fx.lines();
    lines.insert(3, "hello".to_string());
    fx.write(&lines);
    assert_finding(&fx.finding(), FindingKind::Malformed, 4, 4);

    let fx = fixture("verify-blank");
    let mut lines = fx.lines();
    lines.insert(3, String::new());
    fx.write(&lines);
    assert_finding(&fx.finding(), FindingKind::Malformed, 4, 4);
}

#[test]
fn rehashed_record_breaks_the_next_link() {
    let fx = fixture("verify-rehash");
    let mut lines = fx.lines();
    lines[4] = rehash(&lines[4], |r| r.principal = "someone-else".into());
    fx.write(&lines);
    assert_finding(&fx.finding(), FindingKind::BrokenLink, 6, 6);
}

#[test]
fn rewritten_chain_is_caught_by_the_checkpoint() {
    let fx = fixture("verify-rewrite");
    let mut lines = fx.lines();
    // A forger edits record 5 and re-hashes it and every record after it up
    // to the checkpoint, so the chain itself is consistent.
    let mut prev = parse_record_line(lines[3].as_bytes())
        .expect("record 4")
        .hash;
    for (i, line) in lines.iter_mut().enumerate().take(10).skip(4) {
        let new = rehash(line, |r| {
            if i == 4 {
                r.released = 0;
            }
            r.prev.clone_from(&prev);
        });
        prev = parse_record_line(new.as_bytes()).expect("rehashed").hash;
        *line = new;
    }
    fx.write(&lines);
    let f = fx.finding();
    assert_finding(&f, FindingKind::CheckpointMismatch, 11, 1);
    assert!(f.detail.contains("records 1..=10 were rewritten"), "{f}");
}

#[test]
fn cut_after_a_checkpoint_is_caught() {
    let fx = fixture("verify-cut");
    let lines = fx.lines();
    fx.write(&lines[..22]); // through the checkpoint of seq 20
    let f = fx.finding();
    assert_finding(&f, FindingKind::CutOff, 23, 21);
    assert!(f.detail.contains("records 21..=25 were cut off"), "{f}");
}

#[test]
fn cut_mid_record_is_torn() {
    let fx = fixture("verify-cut-mid");
    let bytes = fs::read(fx.path()).expect("read");
    fs::write(fx.path(), &bytes[..bytes.len() - 40]).expect("write");
    assert_finding(&fx.finding(), FindingKind::Torn, 28, 26);
}

#[test]
fn live_verify_skips_a_write_in_progress_only() {
    let fx = fixture("verify-live");
    let mut bytes = fs::read(fx.path()).expect("read");
    let partial = b"{\"seq\":26,\"time\":";
    bytes.extend_from_slice(partial);
    fs::write(fx.path(), &bytes).expect("write");
    let live = verify_live(fx.dir.path(), std::slice::from_ref(&fx.public)).expect("verify");
    assert!(live.is_ok(), "{}", live.render());
    assert_eq!(live.in_progress_bytes, partial.len() as u64);
    assert_finding(&fx.finding(), FindingKind::Torn, 29, 26);
    // Damage is still damage.
    let mut lines = fx.lines();
    lines[3] = lines[3].replacen("clerk1", "clerk2", 1);
    fx.write(&lines);
    let live = verify_live(fx.dir.path(), std::slice::from_ref(&fx.public)).expect("verify");
    assert_eq!(
        live.problem.map(|f| (f.kind, f.line)),
        Some((FindingKind::Edited, 4))
    );
}

#[test]
fn replaced_key_is_caught() {
    let fx = fixture("verify-key");
    let mut lines = fx.lines();
    let other = SigningKey::generate().expect("key");
    let mut cp = parse_checkpoint_line(lines[10].as_bytes()).expect("checkpoint");
    cp.checkpoint.key_id = other.key_id().to_string();
    let resigned = cp.checkpoint.sign(&other).expect("sign");
    lines[10] = String::from_utf8(resigned.to_line().expect("line")).expect("utf8");
    fx.write(&lines);
    let f = fx.finding();
    assert_finding(&f, FindingKind::KeyReplaced, 11, 10);
    assert!(f.detail.contains(other.key_id()), "{f}");
}

#[test]
fn replaced_key_everywhere_is_caught() {
    // The forger re-signs every checkpoint and the head file with a new key.
    let fx = fixture("verify-key-all");
    let other = SigningKey::generate().expect("key");
    let resign = |line: &str| {
        let mut cp = parse_checkpoint_line(line.as_bytes()).expect("checkpoint");
        cp.checkpoint.key_id = other.key_id().to_string();
        String::from_utf8(
            cp.checkpoint
                .sign(&other)
                .expect("sign")
                .to_line()
                .expect("line"),
        )
        .expect("utf8")
    };
    let lines: Vec<String> = fx
        .lines()
        .iter()
        .map(|l| {
            if l.starts_with("{\"checkpoint\"") {
                resign(l)
            } else {
                l.clone()
            }
        })
        .collect();
    fx.write(&lines);
    let head_path = fx.dir.path().join(HEAD_FILE);
    let head = fs::read_to_string(&head_path).expect("head");
    fs::write(&head_path, resign(head.trim_end()) + "\n").expect("write head");
    assert_finding(&fx.finding(), FindingKind::KeyReplaced, 11, 10);
    // With the forger's key it verifies: the public key is what is trusted.
    assert!(verify(fx.dir.path(), other.public_key())
        .expect("verify")
        .is_ok());
}

#[test]
fn bad_signature_is_caught() {
    let fx = fixture("verify-sig");
    let mut lines = fx.lines();
    let mut cp = parse_checkpoint_line(lines[21].as_bytes()).expect("checkpoint");
    cp.sig[10] ^= 0x01;
    lines[21] = String::from_utf8(cp.to_line().expect("line")).expect("utf8");
    assert_ne!(
        STANDARD.encode(&cp.sig),
        parse_checkpoint_line(fx.lines()[21].as_bytes())
            .map(|c| STANDARD.encode(c.sig))
            .expect("original")
    );
    fx.write(&lines);
    assert_finding(&fx.finding(), FindingKind::SignatureInvalid, 22, 20);
}

#[test]
fn missing_head_file_is_caught() {
    let fx = fixture("verify-head");
    fs::remove_file(fx.dir.path().join(HEAD_FILE)).expect("rm");
    let f = fx.finding();
    assert_eq!(f.kind, FindingKind::HeadMissing);
    assert_eq!(f.file, HEAD_FILE);
}

#[test]
fn missing_file_is_caught() {
    let dir = TempDir::new("verify-files");
    let key = SigningKey::generate().expect("key");
    let public = key.public_key().clone();
    let options = AuditOptions {
        rotate_bytes: Some(3000),
        ..AuditOptions::default()
    };
    let log = AuditLog::open(dir.path(), key, options).expect("open");
    for n in 0..40 {
        log.append_sync(RecordDraft::new(
            Kind::Unmask,
            format!("p{n}"),
            Outcome::Granted,
            "ok",
        ))
        .expect("append");
    }
    log.close().expect("close");
    assert!(verify(dir.path(), &public).expect("verify").is_ok());
    fs::remove_file(dir.path().join("audit-000002.log")).expect("rm");
    let f = verify(dir.path(), &public)
        .expect("verify")
        .problem
        .expect("found");
    assert_eq!(
        (f.kind, f.file.as_str()),
        (FindingKind::MissingFile, "audit-000002.log")
    );
}

#[test]
fn unsealed_tail_is_a_finding_except_live() {
    let dir = TempDir::new("verify-unsealed");
    let key = SigningKey::generate().expect("key");
    let public = key.public_key().clone();
    // A batch cut short before its checkpoint, or records someone added:
    // nothing signs records 11..=14.
    write_log(dir.path(), key, 14, 10, false);
    let report = verify(dir.path(), &public).expect("verify");
    let f = report.problem.clone().expect("unsealed found");
    assert_finding(&f, FindingKind::Unsealed, 12, 11);
    assert!(f.detail.contains("records 11..=14"), "{f}");
    assert_eq!(report.exit_code(), 1);
    assert_eq!(
        (report.records, report.sealed_seq, report.unsealed),
        (14, 10, 4)
    );
    // A live log may be between writing a batch and its checkpoint.
    let live = verify_live(dir.path(), std::slice::from_ref(&public)).expect("verify");
    assert!(live.is_ok(), "{}", live.render());
    assert!(live
        .render()
        .contains("4 record(s) after the last checkpoint"));
}

#[test]
fn verify_errors_are_not_tamper_findings() {
    let dir = TempDir::new("verify-empty");
    let key = SigningKey::generate().expect("key");
    assert!(matches!(
        verify(dir.path(), key.public_key()),
        Err(VerifyError::NoLog(_))
    ));
    assert!(matches!(
        verify_with_keys(dir.path(), &[]),
        Err(VerifyError::NoKey)
    ));
    assert!(matches!(
        verify(&dir.path().join("absent"), key.public_key()),
        Err(VerifyError::Io { .. })
    ));
}

/// The golden log: a fixed (test-only) key, a fixed clock, fixed records.
/// Ed25519 signatures are deterministic, so the bytes are too. A change to
/// them is a change of the on-disk format: old logs would stop verifying.
/// Regenerate (after deciding that is right) with
/// `MASKGATE_AUDIT_BLESS=1 cargo test golden`.
const GOLDEN_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
                          MC4CAQAwBQYDK2VwBCIEINq/dfl4JPWvQJZIjkijbjvfjBWkbNztadTNdjeCSx2+\n\
                          -----END PRIVATE KEY-----\n";
const GOLDEN_LOG: &[u8] = include_bytes!("../../tests/data/audit/golden/audit-000001.log");
const GOLDEN_HEAD: &[u8] = include_bytes!("../../tests/data/audit/golden/audit-head.json");
const GOLDEN_PUB: &[u8] = include_bytes!("../../tests/data/audit/golden.pub");

fn write_golden(dir: &Path) -> PublicKey {
    use crate::audit::testutil::FakeClock;
    use time::macros::datetime;
    let b64: String = GOLDEN_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(b64).expect("base64");
    let key = SigningKey::from_pkcs8(&der).expect("key");
    let public = key.public_key().clone();
    let clock = FakeClock::new(datetime!(2026-07-14 09:30:00 UTC));
    let options = AuditOptions {
        checkpoint: CheckpointPolicy {
            every_records: 3,
            ..CheckpointPolicy::default()
        },
        clock: clock.clock(),
        ..AuditOptions::default()
    };
    let log = AuditLog::open(dir, key, options).expect("open");
    let drafts = [
        RecordDraft::new(Kind::Unmask, "collections", Outcome::Granted, "ok")
            .request_id("req-0001")
            .roles(["collections"])
            .request("GET", "accounts.get")
            .accounts(["100234"])
            .classes(["ssn"])
            .reason("COLL-2026-00123 skip trace")
            .released(1),
        RecordDraft::new(
            Kind::Unmask,
            "customer-service",
            Outcome::Denied,
            "role_not_allowed",
        )
        .request_id("req-0002")
        .roles(["customer-service"])
        .request("GET", "accounts.get")
        .accounts(["100234"])
        .classes(["ssn"]),
        RecordDraft::new(Kind::GrantIssued, "pmo-approver", Outcome::Granted, "ok")
            .request_id("req-0003")
            .roles(["pmo-approver"])
            .on_behalf_of("data-management")
            .request("POST", "_maskgate.grants")
            .accounts(["100234"])
            .classes(["card_number"])
            .reason("CHG-0042 refund \"dispute\" é")
            .grant_id("g-7f3a"),
        RecordDraft::new(Kind::Decrypt, "data-management", Outcome::Granted, "ok")
            .request_id("req-0004")
            .roles(["it-data-management"])
            .request("GET", "accounts.card")
            .accounts(["100234"])
            .classes(["card_number"])
            .reason("CHG-0042 refund")
            .grant_id("g-7f3a")
            .released(1),
        RecordDraft::new(
            Kind::GrantRefused,
            "data-management",
            Outcome::Denied,
            "grant_used_up",
        )
        .request_id("req-0005")
        .roles(["it-data-management"])
        .request("GET", "accounts.card")
        .grant_id("g-7f3a"),
    ];
    for d in drafts {
        log.append_sync(d).expect("append");
        clock.advance_secs(20);
    }
    log.close().expect("close");
    public
}

#[test]
fn golden_log_is_stable_and_verifies() {
    let dir = TempDir::new("golden");
    let public = write_golden(dir.path());
    let log = fs::read(dir.path().join("audit-000001.log")).expect("log");
    let head = fs::read(dir.path().join(HEAD_FILE)).expect("head");
    if std::env::var_os("MASKGATE_AUDIT_BLESS").is_some() {
        let data = Path::new(file!())
            .parent()
            .expect("dir")
            .join("../../tests/data/audit");
        fs::create_dir_all(data.join("golden")).expect("mkdir");
        fs::write(data.join("golden/audit-000001.log"), &log).expect("bless");
        fs::write(data.join("golden/audit-head.json"), &head).expect("bless");
        fs::write(data.join("golden.pub"), public.to_pem()).expect("bless");
        return;
    }
    assert_eq!(
        String::from_utf8_lossy(&log),
        String::from_utf8_lossy(GOLDEN_LOG)
    );
    assert_eq!(head, GOLDEN_HEAD);
    // The checked-in log verifies with the checked-in public key alone.
    let golden = TempDir::new("golden-copy");
    fs::write(golden.path().join("audit-000001.log"), GOLDEN_LOG).expect("copy");
    fs::write(golden.path().join(HEAD_FILE), GOLDEN_HEAD).expect("copy");
    let key = PublicKey::from_bytes(GOLDEN_PUB).expect("public key");
    assert_eq!(key, public);
    let report = verify(golden.path(), &key).expect("verify");
    assert!(report.is_ok(), "{}", report.render());
    // Five appends, five group commits: each ends with its checkpoint.
    assert_eq!((report.records, report.checkpoints), (5, 5));
}
