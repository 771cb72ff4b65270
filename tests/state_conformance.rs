//! One conformance suite for the state, grant and audit backends, run
//! against the local files and against PostgreSQL.
//!
//! Each check takes two handles on "the same" store: for the local backend
//! the same object twice (one process owns the files); for PostgreSQL two
//! independent connection pools on one database, as two gateway instances
//! would have. The PostgreSQL half needs a server: `MASKGATE_TEST_PG_URL`,
//! or the PostgreSQL binaries (a throwaway cluster is started); without
//! either it fails.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use maskgate::admit::{FreezeChange, IdentityKey, LocalStateStore, StateStore};
use maskgate::audit::{AuditSink, CheckpointPolicy, Kind, Outcome, RecordDraft, SigningKey};
use maskgate::class::FieldClass;
use maskgate::config::{Config, PostgresConfig};
use maskgate::pg::testing::TestPg;
use maskgate::pg::{Db, PgGrantStore, PgStateStore};
use maskgate::unmask::{Actor, GrantBackend, GrantError, GrantStore, IssueRequest, Scope};

fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "maskgate-conf-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_784_142_000 + secs)
}

/// The store under test.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    Postgres,
}

/// Two handles on one store, and what keeps it alive.
struct Stores<T: ?Sized> {
    a: Arc<T>,
    b: Arc<T>,
    _dir: PathBuf,
}

async fn pg_config() -> PostgresConfig {
    let url = TestPg::get().new_database().await;
    let mut c = PostgresConfig::new(url);
    c.pool_size = 16;
    c
}

/// Two independent pools on one database (two instances).
async fn two_pools() -> (Db, Db) {
    let config = pg_config().await;
    let a = Db::connect(&config).unwrap();
    let b = Db::connect(&config).unwrap();
    // Both migrate at once: the advisory lock makes that safe.
    let (ra, rb) = tokio::join!(a.migrate(), b.migrate());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.len() + rb.len(),
        maskgate::pg::MIGRATIONS.len(),
        "each migration applied once in total"
    );
    assert!(a.migrate().await.unwrap().is_empty(), "idempotent");
    (a, b)
}

async fn state_stores(backend: Backend) -> Stores<dyn StateStore> {
    let dir = temp_dir("state");
    match backend {
        Backend::Local => {
            let s: Arc<dyn StateStore> = Arc::new(LocalStateStore::open(&dir).unwrap());
            Stores {
                a: Arc::clone(&s),
                b: s,
                _dir: dir,
            }
        }
        Backend::Postgres => {
            let (a, b) = two_pools().await;
            Stores {
                a: Arc::new(PgStateStore::new(a)),
                b: Arc::new(PgStateStore::new(b)),
                _dir: dir,
            }
        }
    }
}

async fn grant_stores(backend: Backend) -> Stores<dyn GrantBackend> {
    let dir = temp_dir("grants");
    match backend {
        Backend::Local => {
            let s: Arc<dyn GrantBackend> = Arc::new(GrantStore::open(&dir).unwrap());
            Stores {
                a: Arc::clone(&s),
                b: s,
                _dir: dir,
            }
        }
        Backend::Postgres => {
            let (a, b) = two_pools().await;
            Stores {
                a: Arc::new(PgGrantStore::new(a)),
                b: Arc::new(PgGrantStore::new(b)),
                _dir: dir,
            }
        }
    }
}

fn key() -> IdentityKey {
    IdentityKey::api_key(b"conformance-key")
}

async fn locks(backend: Backend) {
    let s = state_stores(backend).await;
    let id = key();
    assert!(
        s.a.lock(&id, at(0), at(900)).await.unwrap(),
        "starts a lock"
    );
    assert!(!s.b.lock(&id, at(10), at(910)).await.unwrap(), "kept");
    let l = s.b.lock_of(&id, at(20)).await.unwrap().expect("locked");
    assert_eq!(
        (l.since, l.until),
        (at(0), at(900)),
        "the first lock is kept"
    );
    assert!(s.a.lock_of(&id, at(900)).await.unwrap().is_none(), "ended");
    let other = IdentityKey::source("10.0.0.7".parse().unwrap());
    assert!(s.b.lock(&other, at(30), at(600)).await.unwrap());
    let all = s.a.locks(at(40)).await.unwrap();
    let ids: Vec<_> = all.iter().map(|l| l.identity.clone()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ordered by identity");
    assert_eq!(ids.len(), 2);
    let lifted = s.b.unlock(&id, at(50)).await.unwrap().expect("was locked");
    assert_eq!(lifted.identity, id);
    assert!(s.a.lock_of(&id, at(51)).await.unwrap().is_none());
    assert!(s.a.unlock(&id, at(52)).await.unwrap().is_none());
    // An expired lock is replaced by a new one.
    assert!(s.a.lock(&other, at(700), at(800)).await.unwrap());
    let l =
        s.b.lock_of(&other, at(701))
            .await
            .unwrap()
            .expect("locked again");
    assert_eq!(l.since, at(700));
}

async fn failures(backend: Backend) {
    let s = state_stores(backend).await;
    let id = IdentityKey::Cert("cn-somebody".into());
    let w = Duration::from_secs(60);
    // Failures through either handle count together.
    assert_eq!(s.a.add_failure(&id, at(0), w).await.unwrap(), 1);
    assert_eq!(s.b.add_failure(&id, at(1), w).await.unwrap(), 2);
    assert_eq!(s.a.add_failure(&id, at(2), w).await.unwrap(), 3);
    // Outside the window: only those within 60 s of now count (at(2) and
    // this one; at(0) and at(1) are 61 and 60 s old).
    assert_eq!(s.b.add_failure(&id, at(61), w).await.unwrap(), 2);
    assert_eq!(s.b.add_failure(&id, at(200), w).await.unwrap(), 1);
    s.a.clear_failures(&id).await.unwrap();
    assert_eq!(s.b.add_failure(&id, at(201), w).await.unwrap(), 1);
    // A lock forgets the failures.
    assert!(s.a.lock(&id, at(202), at(300)).await.unwrap());
    assert_eq!(s.b.add_failure(&id, at(203), w).await.unwrap(), 1);
    // Concurrent failures from both handles: every one counted.
    let other = IdentityKey::source("192.0.2.1".parse().unwrap());
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let store = if i % 2 == 0 {
            Arc::clone(&s.a)
        } else {
            Arc::clone(&s.b)
        };
        let other = other.clone();
        tasks.push(tokio::spawn(async move {
            store
                .add_failure(&other, at(400 + i / 10), w)
                .await
                .unwrap()
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=20).collect::<Vec<u32>>(),
        "each failure counted once"
    );
}

async fn freezes(backend: Backend) {
    let s = state_stores(backend).await;
    let f =
        s.a.freeze("ACCT-0042", "privacy-officer", at(0))
            .await
            .unwrap();
    assert!(matches!(f, FreezeChange::Frozen(_)));
    let again =
        s.b.freeze("ACCT-0042", "someone-else", at(5))
            .await
            .unwrap();
    match again {
        FreezeChange::AlreadyFrozen(f) => {
            assert_eq!(f.by, "privacy-officer");
            assert_eq!(f.at, at(0));
        }
        other => panic!("expected AlreadyFrozen, got {other:?}"),
    }
    assert!(s.b.is_frozen("ACCT-0042").await.unwrap());
    assert!(!s.b.is_frozen("ACCT-0043").await.unwrap());
    s.b.freeze("ACCT-0001", "privacy-officer", at(6))
        .await
        .unwrap();
    let list = s.a.list_freezes().await.unwrap();
    let accounts: Vec<_> = list.iter().map(|f| f.account.as_str()).collect();
    assert_eq!(accounts, ["ACCT-0001", "ACCT-0042"]);
    let lifted =
        s.b.unfreeze("ACCT-0042")
            .await
            .unwrap()
            .expect("was frozen");
    assert_eq!(lifted.by, "privacy-officer");
    assert!(!s.a.is_frozen("ACCT-0042").await.unwrap());
    assert!(s.a.unfreeze("ACCT-0042").await.unwrap().is_none());
    assert!(s.a.freeze("", "p", at(7)).await.is_err(), "bad account id");
    assert!(s.a.freeze("has space", "p", at(7)).await.is_err());
}

async fn budgets(backend: Backend) {
    let s = state_stores(backend).await;
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let store = if i % 2 == 0 {
            Arc::clone(&s.a)
        } else {
            Arc::clone(&s.b)
        };
        tasks.push(tokio::spawn(async move {
            store
                .add_records("collections", "2026-07-15", i + 1)
                .await
                .unwrap()
        }));
    }
    let mut totals = Vec::new();
    for t in tasks {
        totals.push(t.await.unwrap());
    }
    let expected: u64 = (1..=40).sum();
    assert_eq!(totals.iter().max(), Some(&expected), "no addition lost");
    totals.sort_unstable();
    totals.dedup();
    assert_eq!(totals.len(), 40, "each addition saw its own total");
    assert_eq!(
        s.b.records("collections", "2026-07-15").await.unwrap(),
        expected
    );
    assert_eq!(s.a.records("collections", "2026-07-16").await.unwrap(), 0);
    assert_eq!(s.a.records("billing", "2026-07-15").await.unwrap(), 0);
    assert_eq!(
        s.a.add_records("collections", "2026-07-16", 5)
            .await
            .unwrap(),
        5
    );
}

fn policy_config() -> Config {
    let dir = temp_dir("policy");
    let policy_dir = dir.join("policies");
    maskgate::demo::run::ensure_policy(&policy_dir).unwrap();
    let names = maskgate::demo::run::ROLES.to_vec();
    maskgate::demo::certs::generate(&dir.join("certs"), &names).unwrap();
    let path = maskgate::demo::config::write_config(
        &dir,
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
        &policy_dir,
    )
    .unwrap();
    maskgate::config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

async fn grants_single_use(backend: Backend) {
    let s = grant_stores(backend).await;
    let config = policy_config();
    let approver_roles = vec!["pmo-approver".to_owned()];
    let approver = Actor {
        name: "pmo-approver",
        roles: &approver_roles,
    };
    let req = IssueRequest {
        grantee: "it-data-management".into(),
        scope: Scope::Accounts {
            accounts: vec!["ACCT-7".into()],
        },
        classes: vec![FieldClass::CardNumber],
        reason: "chargeback investigation ticket 4411".into(),
        validity_minutes: 30,
        max_uses: 1,
    };
    let grant =
        s.a.issue(&config.policy, &approver, &req, at(0))
            .await
            .unwrap();
    let seen =
        s.b.get(&grant.id)
            .await
            .unwrap()
            .expect("visible to the other handle");
    assert_eq!(seen.id, grant.id);
    // 16 concurrent uses through both handles: exactly one succeeds.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 {
            Arc::clone(&s.a)
        } else {
            Arc::clone(&s.b)
        };
        let id = grant.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .use_grant(
                    &id,
                    "it-data-management",
                    "account",
                    Some("ACCT-7"),
                    &[FieldClass::CardNumber],
                    at(10),
                )
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(u) => {
                ok += 1;
                assert_eq!((u.uses, u.max_uses), (1, 1));
            }
            Err(GrantError::UsedUp) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1, "a single-use grant is used exactly once");
    // The rules are the shared ones.
    let wrong =
        s.b.use_grant(
            &grant.id,
            "collections",
            "account",
            Some("ACCT-7"),
            &[FieldClass::CardNumber],
            at(11),
        )
        .await;
    assert_eq!(wrong.unwrap_err(), GrantError::WrongPrincipal);
    let unknown = s.a.use_grant("00", "x", "r", None, &[], at(11)).await;
    assert_eq!(unknown.unwrap_err(), GrantError::Unknown);
    // Revoke through one handle; the other sees it.
    let g2 =
        s.a.issue(
            &config.policy,
            &approver,
            &IssueRequest {
                max_uses: 3,
                ..req.clone()
            },
            at(20),
        )
        .await
        .unwrap();
    let revoked =
        s.b.revoke(&config.policy, &g2.id, &approver, at(21))
            .await
            .unwrap();
    assert!(revoked.revoked.is_some());
    let use_revoked =
        s.a.use_grant(
            &g2.id,
            "it-data-management",
            "account",
            Some("ACCT-7"),
            &[FieldClass::CardNumber],
            at(22),
        )
        .await;
    assert_eq!(use_revoked.unwrap_err(), GrantError::Revoked);
    assert_eq!(
        s.a.revoke(&config.policy, &g2.id, &approver, at(23))
            .await
            .unwrap_err(),
        GrantError::Revoked
    );
    // Expiry is reported once, whichever handle sweeps.
    let g3 =
        s.a.issue(
            &config.policy,
            &approver,
            &IssueRequest {
                validity_minutes: 1,
                ..req.clone()
            },
            at(30),
        )
        .await
        .unwrap();
    let later = at(30 + 61);
    let (ra, rb) = tokio::join!(s.a.sweep_expired(later), s.b.sweep_expired(later));
    let reported: Vec<_> = ra
        .unwrap()
        .into_iter()
        .chain(rb.unwrap())
        .map(|g| g.id)
        .collect();
    assert_eq!(reported, vec![g3.id.clone()]);
    let listed = s.b.list(later).await.unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed
        .windows(2)
        .all(|w| w[0].grant.issued_at <= w[1].grant.issued_at));
}

/// Two audit sinks on one log (PostgreSQL: two instances; file: one log
/// shared by two threads, as one process shares it).
async fn audit_concurrent(backend: Backend) {
    let dir = temp_dir("audit");
    let key_path = dir.join("audit.key");
    let pub_path = dir.join("audit.pub");
    maskgate::audit::generate_signing_key(&key_path, &pub_path).unwrap();
    let policy = CheckpointPolicy {
        every_records: 50,
        every: Duration::from_secs(60),
    };
    let (a, b): (Arc<dyn AuditSink>, Arc<dyn AuditSink>) = match backend {
        Backend::Local => {
            let log = maskgate::audit::AuditLog::open(
                dir.join("log"),
                SigningKey::load(&key_path).unwrap(),
                maskgate::audit::AuditOptions {
                    checkpoint: policy,
                    ..Default::default()
                },
            )
            .unwrap();
            let log: Arc<dyn AuditSink> = Arc::new(log);
            (Arc::clone(&log), log)
        }
        Backend::Postgres => {
            let (da, db) = two_pools().await;
            let open = |db: Db| {
                maskgate::audit::pg::PgAuditLog::open(
                    db,
                    SigningKey::load(&key_path).unwrap(),
                    policy,
                    Default::default(),
                )
            };
            let (la, lb) = tokio::join!(open(da), open(db));
            (Arc::new(la.unwrap()), Arc::new(lb.unwrap()))
        }
    };
    const N: usize = 300;
    let mut tasks = Vec::new();
    for i in 0..N {
        let sink = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            sink.append(
                RecordDraft::new(Kind::Unmask, format!("p{}", i % 7), Outcome::Granted, "ok"),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
            rx.await.unwrap().unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().seq());
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=N as u64).collect::<Vec<_>>(),
        "one chain, no gaps, no duplicates"
    );
    let (va, vb) = tokio::task::spawn_blocking(move || (a.verify(), b.verify()))
        .await
        .unwrap();
    for v in [va.unwrap(), vb.unwrap()] {
        assert!(v.is_ok(), "{}", v.render());
        assert_eq!(v.records, N as u64);
        assert!(v.checkpoints >= (N as u64) / 50, "{}", v.render());
    }
}

/// Tampering with a committed PostgreSQL record is found with the public key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_audit_tampering_is_found() {
    let dir = temp_dir("tamper");
    let key_path = dir.join("audit.key");
    let pub_path = dir.join("audit.pub");
    maskgate::audit::generate_signing_key(&key_path, &pub_path).unwrap();
    let config = pg_config().await;
    let db = Db::open(&config).await.unwrap();
    let log = maskgate::audit::pg::PgAuditLog::open(
        db,
        SigningKey::load(&key_path).unwrap(),
        CheckpointPolicy {
            every_records: 5,
            every: Duration::from_secs(60),
        },
        Default::default(),
    )
    .await
    .unwrap();
    for i in 0..12 {
        log.append_wait(RecordDraft::new(
            Kind::Unmask,
            format!("p{i}"),
            Outcome::Granted,
            "ok",
        ))
        .await
        .unwrap();
    }
    let keys = vec![maskgate::audit::PublicKey::load(&pub_path).unwrap()];
    let good = {
        let (config, keys) = (config.clone(), keys.clone());
        tokio::task::spawn_blocking(move || maskgate::audit::pg::verify_db(&config, &keys))
            .await
            .unwrap()
            .unwrap()
    };
    assert!(good.is_ok(), "{}", good.render());
    assert_eq!(good.records, 12);
    // Edit record seq 3 behind the gateway's back (the table is
    // append-only for ordinary statements: the owner lifts the trigger).
    let (client, conn) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "ALTER TABLE maskgate_audit_lines DISABLE TRIGGER maskgate_audit_lines_append_only;
             UPDATE maskgate_audit_lines SET line = replace(line, '\"p2\"', '\"px\"') WHERE seq = 3;",
        )
        .await
        .unwrap();
    let bad = tokio::task::spawn_blocking(move || maskgate::audit::pg::verify_db(&config, &keys))
        .await
        .unwrap()
        .unwrap();
    let problem = bad.problem.expect("tampering found");
    assert_eq!(problem.seq, Some(3), "{problem}");
    assert_eq!(problem.file, "maskgate_audit_lines");
}

/// Rows cut off the shared log, with the head row rolled back to match,
/// look whole to the database alone; the witness directory outside it
/// catches the cut, and a restart with it refuses to sign over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_audit_witness_catches_a_consistent_cut() {
    let dir = temp_dir("pg-witness");
    let key_path = dir.join("audit.key");
    let pub_path = dir.join("audit.pub");
    maskgate::audit::generate_signing_key(&key_path, &pub_path).unwrap();
    let witness = dir.join("witness");
    let config = pg_config().await;
    let open = |witness: Option<PathBuf>| {
        let config = config.clone();
        let key = SigningKey::load(&key_path).unwrap();
        async move {
            let db = Db::open(&config).await.unwrap();
            maskgate::audit::pg::PgAuditLog::open_with_witness(
                db,
                key,
                CheckpointPolicy::default(),
                Default::default(),
                witness,
            )
            .await
        }
    };
    let log = open(Some(witness.clone())).await.unwrap();
    for i in 0..6 {
        let r = log
            .append_wait(RecordDraft::new(
                Kind::Unmask,
                format!("p{i}"),
                Outcome::Granted,
                "ok",
            ))
            .await
            .unwrap();
        assert!(r.signed().is_some());
    }
    drop(log);
    let keys = vec![maskgate::audit::PublicKey::load(&pub_path).unwrap()];
    let verify = |with_witness: bool| {
        let (config, keys, witness) = (config.clone(), keys.clone(), witness.clone());
        tokio::task::spawn_blocking(move || {
            let options = maskgate::audit::VerifyOptions {
                witnesses: if with_witness {
                    vec![witness]
                } else {
                    Vec::new()
                },
                receipts: Vec::new(),
            };
            maskgate::audit::pg::with_db_export(&config, |d| {
                maskgate::audit::verify_with(d, &keys, &options).unwrap()
            })
            .unwrap()
        })
    };
    assert!(verify(true).await.unwrap().is_ok());
    // Cut records 4..=6 and roll the head row back to checkpoint 3.
    let (client, conn) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "ALTER TABLE maskgate_audit_lines DISABLE TRIGGER maskgate_audit_lines_append_only;
             CREATE TEMP TABLE cp AS SELECT pos, line FROM maskgate_audit_lines
                 WHERE seq IS NULL AND line LIKE '{\"checkpoint\":{\"seq\":3,%';
             DELETE FROM maskgate_audit_lines WHERE pos > (SELECT pos FROM cp);
             UPDATE maskgate_audit_head SET seq = 3, sealed_seq = 3,
                 hash = (SELECT decode(substring(line from '\"hash\":\"([0-9a-f]{64})\"'), 'hex')
                         FROM maskgate_audit_lines WHERE seq = 3),
                 next_pos = (SELECT pos + 1 FROM cp),
                 checkpoint_line = (SELECT line FROM cp);",
        )
        .await
        .unwrap();
    let alone = verify(false).await.unwrap();
    assert!(
        alone.is_ok(),
        "the database alone cannot tell: {}",
        alone.render()
    );
    let cut = verify(true).await.unwrap();
    let f = cut.problem.clone().expect("cut found");
    assert_eq!(
        (f.kind, f.seq),
        (maskgate::audit::FindingKind::CutOff, Some(4)),
        "{f}"
    );
    let err = open(Some(witness.clone()))
        .await
        .expect_err("a restart signs over the cut");
    assert_eq!(err.code(), "audit_log_corrupt", "{err}");
}

/// The append-only trigger refuses an ordinary UPDATE or DELETE.
#[tokio::test]
async fn pg_audit_lines_are_append_only() {
    let config = pg_config().await;
    let db = Db::open(&config).await.unwrap();
    drop(db);
    let (client, conn) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("INSERT INTO maskgate_audit_lines VALUES (100, NULL, 'x')")
        .await
        .unwrap();
    assert!(client
        .batch_execute("DELETE FROM maskgate_audit_lines")
        .await
        .is_err());
    assert!(client
        .batch_execute("UPDATE maskgate_audit_lines SET line = 'y'")
        .await
        .is_err());
}

macro_rules! conformance {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn locks() {
                super::locks($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn failures() {
                super::failures($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn freezes() {
                super::freezes($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn budgets() {
                super::budgets($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn grants_single_use() {
                super::grants_single_use($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn audit_concurrent() {
                super::audit_concurrent($backend).await;
            }
        }
    };
}

conformance!(local, Backend::Local);
conformance!(postgres, Backend::Postgres);
