//! The shared audit sink: one hash chain in PostgreSQL that every gateway
//! instance appends to (the one module of the audit core that uses tokio
//! and the database).
//!
//! The table `maskgate_audit_lines` holds every line — records and signed
//! checkpoints — exactly as the file log would, in order of `pos`;
//! `maskgate_audit_head` holds the chain's head and the newest checkpoint
//! line (the file log's `audit-head.json`). An instance's writer task takes
//! every record queued (up to 4096: group commit) and, in one transaction,
//! locks the head row (`SELECT … FOR UPDATE`, so instances append one batch
//! at a time), seals the records with the same [`Chain`] code as the file
//! log (next seq, previous hash, checkpoints by count and by time, signed
//! with the audit signing key every instance shares), inserts the lines,
//! moves the head and commits. Only after `COMMIT` returns does any `done`
//! get its [`AuditReceipt`]: the record is in the database before the first
//! clear byte of its response leaves. How durable a commit is, is the
//! database's `synchronous_commit` (see `docs/deployment.md`).
//!
//! Verification needs only the public key: [`PgAuditLog::export`] copies
//! the lines and the head checkpoint into the file log's layout and the
//! file verifier, query and report run on that copy, so the PostgreSQL log
//! is checked by exactly the same code. A finding's "line N" is the row
//! with `pos = N`.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::audit::chain::{parse_checkpoint_line, Chain, ChainHead, CheckpointPolicy};
use crate::audit::file::{
    create_dir, log_file_name, read_witness, Clock, Done, SlotFile, HEAD_FILE, WITNESS_FILE,
};
use crate::audit::keys::{PublicKey, SigningKey};
use crate::audit::query::{QueryError, Scan};
use crate::audit::record::{DraftError, RecordDraft};
use crate::audit::verify::{VerifyError, VerifyReport};
use crate::audit::{AuditError, AuditReceipt, AuditSink, Filter};
use crate::pg::{Db, PgError};

/// Most records one transaction takes.
const MAX_BATCH: usize = 4096;
/// Lines fetched per statement when exporting.
const EXPORT_PAGE: i64 = 5000;
/// What a finding names instead of the exported file's name.
pub const LINES_TABLE: &str = "maskgate_audit_lines";
/// What a finding names instead of the head file.
pub const HEAD_TABLE: &str = "maskgate_audit_head";

enum Msg {
    Append(Box<RecordDraft>, Done),
    Tick,
}

#[derive(Default)]
struct Shared {
    healthy: AtomicBool,
    cause: Mutex<Option<String>>,
    records: AtomicU64,
    batches: AtomicU64,
    checkpoints: AtomicU64,
}

impl Shared {
    fn set_health(&self, r: Result<(), String>) {
        match r {
            Ok(()) => self.healthy.store(true, Ordering::Release),
            Err(cause) => {
                if let Ok(mut c) = self.cause.lock() {
                    *c = Some(cause);
                }
                self.healthy.store(false, Ordering::Release);
            }
        }
    }
}

/// Counters of this instance's sink since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgAuditStats {
    /// Records this instance committed.
    pub records: u64,
    /// Transactions that carried records.
    pub batches: u64,
    /// Checkpoints this instance signed.
    pub checkpoints: u64,
}

/// The audit log in the shared database. Share it by `Arc`; it needs a
/// tokio runtime (its writer is a task).
pub struct PgAuditLog {
    db: Db,
    tx: mpsc::UnboundedSender<Msg>,
    shared: Arc<Shared>,
    public_key: PublicKey,
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for PgAuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgAuditLog")
            .field("db", &self.db)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn unavailable(e: &PgError) -> AuditError {
    AuditError::Unavailable(e.to_string())
}

fn ms_of(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn time_of_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The head row, as read under its lock.
struct Head {
    head: ChainHead,
    sealed_seq: u64,
    last_checkpoint_at: OffsetDateTime,
    next_pos: i64,
    has_checkpoint: bool,
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn read_head(tx: &deadpool_postgres::Transaction<'_>, lock: bool) -> Result<Head, PgError> {
    let sql = if lock {
        "SELECT seq, hash, sealed_seq, last_checkpoint_ms, next_pos, checkpoint_line IS NOT NULL \
         FROM maskgate_audit_head WHERE id = 1 FOR UPDATE"
    } else {
        "SELECT seq, hash, sealed_seq, last_checkpoint_ms, next_pos, checkpoint_line IS NOT NULL \
         FROM maskgate_audit_head WHERE id = 1"
    };
    let row = tx.query_one(sql, &[]).await?;
    let hash: Vec<u8> = row.get(1);
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| PgError::Corrupt("the audit head's hash is not 32 bytes".into()))?;
    Ok(Head {
        head: ChainHead {
            seq: u64_of(row.get(0)),
            hash,
        },
        sealed_seq: u64_of(row.get(2)),
        last_checkpoint_at: time_of_ms(row.get(3)),
        next_pos: row.get(4),
        has_checkpoint: row.get(5),
    })
}

/// What one committed batch produced, per draft in order.
type Sealed = Vec<Result<(u64, [u8; 32]), DraftError>>;

/// The writer: one per instance, a tokio task.
struct Writer {
    db: Db,
    chain: Chain,
    clock: Clock,
    shared: Arc<Shared>,
    policy: CheckpointPolicy,
    witness: Option<SlotFile>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            self.process(&mut batch).await;
        }
        // Closed: seal what this instance left unsealed (best effort).
        let now = self.clock.now();
        let _ = self.commit(&[], now).await;
    }

    async fn process(&mut self, batch: &mut Vec<Msg>) {
        let now = self.clock.now();
        let mut drafts = Vec::new();
        let mut dones = Vec::new();
        for msg in batch.drain(..) {
            match msg {
                Msg::Append(d, done) => {
                    drafts.push(d);
                    dones.push(done);
                }
                Msg::Tick => {}
            }
        }
        if drafts.is_empty() {
            // A tick: checkpoint when due (checked without the lock first,
            // so idle instances only read the head once a second).
            let r = self.tick(now).await;
            self.shared.set_health(r.map_err(|e| e.to_string()));
            return;
        }
        match self.commit(&drafts, now).await {
            Ok(sealed) => {
                self.shared.set_health(Ok(()));
                let key = Arc::clone(self.chain.key());
                let ok = sealed.iter().filter(|r| r.is_ok()).count() as u64;
                self.shared.records.fetch_add(ok, Ordering::Relaxed);
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                for (done, r) in dones.into_iter().zip(sealed) {
                    call(
                        done,
                        r.map(|(seq, hash)| AuditReceipt::new(seq, hash, Arc::clone(&key)))
                            .map_err(AuditError::Draft),
                    );
                }
            }
            Err(e) => {
                self.shared.set_health(Err(e.to_string()));
                let err = unavailable(&e);
                for done in dones {
                    call(done, Err(err.clone()));
                }
            }
        }
    }

    async fn tick(&mut self, now: OffsetDateTime) -> Result<(), PgError> {
        let every = self.chain_policy_every();
        let due = self
            .db
            .run(move |c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    let h = read_head(&tx, false).await?;
                    tx.commit().await?;
                    Ok(h.head.seq > h.sealed_seq
                        && (now - h.last_checkpoint_at).unsigned_abs() >= every)
                })
            })
            .await?;
        if due {
            self.commit(&[], now).await?;
        }
        Ok(())
    }

    fn chain_policy_every(&self) -> std::time::Duration {
        self.policy.every
    }

    /// Seals `drafts` onto the shared chain and commits them, ending with a
    /// signed checkpoint whenever records are unsealed.
    async fn commit(
        &mut self,
        drafts: &[Box<RecordDraft>],
        now: OffsetDateTime,
    ) -> Result<Sealed, PgError> {
        let mut client = self.db.client().await?;
        let chain = &mut self.chain;
        let shared = &self.shared;
        let r = self
            .db
            .bounded(async {
                let tx = client.transaction().await?;
                let h = read_head(&tx, true).await?;
                chain.continue_at(h.head, h.sealed_seq, h.last_checkpoint_at);
                let mut pos = h.next_pos;
                let mut positions: Vec<i64> = Vec::new();
                let mut seqs: Vec<Option<i64>> = Vec::new();
                let mut lines: Vec<String> = Vec::new();
                let mut head_line: Option<String> = None;
                let mut checkpoints = 0u64;
                let mut out = Vec::with_capacity(drafts.len());
                let mut push = |seq: Option<u64>, line: Vec<u8>| -> Result<(), PgError> {
                    let mut text = String::from_utf8(line)
                        .map_err(|_| PgError::Corrupt("an audit line is not UTF-8".into()))?;
                    if text.ends_with('\n') {
                        text.pop();
                    }
                    positions.push(pos);
                    seqs.push(seq.map(i64_of));
                    lines.push(text);
                    pos += 1;
                    Ok(())
                };
                let checkpoint =
                    |chain: &mut Chain,
                     push: &mut dyn FnMut(Option<u64>, Vec<u8>) -> Result<(), PgError>|
                     -> Result<String, PgError> {
                        let (_, line) = chain.checkpoint(now).map_err(|e| {
                            PgError::Corrupt(format!("cannot sign a checkpoint: {e}"))
                        })?;
                        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                        push(None, line)?;
                        Ok(text)
                    };
                if !h.has_checkpoint {
                    // A new log starts with a signed checkpoint of the empty
                    // chain: the head anchors the log from the start.
                    head_line = Some(checkpoint(chain, &mut push)?);
                    checkpoints += 1;
                }
                for draft in drafts {
                    match chain.seal(draft, now) {
                        Ok(s) => {
                            push(Some(s.seq), s.line)?;
                            out.push(Ok((s.seq, s.hash)));
                            if chain.checkpoint_due_by_count() {
                                head_line = Some(checkpoint(chain, &mut push)?);
                                checkpoints += 1;
                            }
                        }
                        Err(e) => out.push(Err(e)),
                    }
                }
                // No unsigned released record: every transaction that
                // carries records ends with a checkpoint.
                if chain.unsealed() > 0 {
                    head_line = Some(checkpoint(chain, &mut push)?);
                    checkpoints += 1;
                }
                if lines.is_empty() {
                    tx.rollback().await?;
                    return Ok((out, None));
                }
                tx.execute(
                    "INSERT INTO maskgate_audit_lines (pos, seq, line) \
                     SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[], $3::TEXT[])",
                    &[&positions, &seqs, &lines],
                )
                .await?;
                let head = chain.head();
                tx.execute(
                    "UPDATE maskgate_audit_head SET seq = $1, hash = $2, sealed_seq = $3, \
                     last_checkpoint_ms = $4, next_pos = $5, \
                     checkpoint_line = coalesce($6, checkpoint_line) WHERE id = 1",
                    &[
                        &i64_of(head.seq),
                        &head.hash.as_slice(),
                        &i64_of(chain.sealed_seq()),
                        &ms_of(chain.last_checkpoint_at()),
                        &pos,
                        &head_line,
                    ],
                )
                .await?;
                tx.commit().await?;
                shared.checkpoints.fetch_add(checkpoints, Ordering::Relaxed);
                Ok((out, head_line))
            })
            .await;
        self.db.release(client, &r);
        let (out, head_line) = r?;
        // The witness follows the database before anyone hears of the batch.
        if let (Some(w), Some(line)) = (&mut self.witness, head_line) {
            w.write(format!("{line}\n").as_bytes())
                .map_err(|e| PgError::Corrupt(format!("the audit witness: {e}")))?;
        }
        Ok(out)
    }
}

/// Calls `done`, keeping a panicking callback from taking the writer down.
fn call(done: Done, result: Result<AuditReceipt, AuditError>) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(result)));
}

impl PgAuditLog {
    /// Opens the shared log over `db` (migrating it if needed) and starts
    /// this instance's writer task. A new log gets its first (empty)
    /// checkpoint. Must be called inside a tokio runtime.
    pub async fn open(
        db: Db,
        key: SigningKey,
        policy: CheckpointPolicy,
        clock: Clock,
    ) -> Result<PgAuditLog, AuditError> {
        PgAuditLog::open_with_witness(db, key, policy, clock, None).await
    }

    /// [`PgAuditLog::open`] with a witness directory (outside the database,
    /// one per instance) that keeps the newest checkpoint this instance
    /// signed. Opening refuses a database log shorter than its witness.
    pub async fn open_with_witness(
        db: Db,
        key: SigningKey,
        policy: CheckpointPolicy,
        clock: Clock,
        witness: Option<PathBuf>,
    ) -> Result<PgAuditLog, AuditError> {
        let public_key = key.public_key().clone();
        let runtime = tokio::runtime::Handle::current();
        let shared = Arc::new(Shared::default());
        let now = clock.now();
        let chain = Chain::new(key, policy, ChainHead::GENESIS, 0, now);
        let mut writer = Writer {
            db: db.clone(),
            chain,
            clock,
            shared: Arc::clone(&shared),
            policy,
            witness: None,
        };
        // Start the chain (or check it can be reached) before serving.
        writer.commit(&[], now).await.map_err(|e| unavailable(&e))?;
        if let Some(dir) = &witness {
            writer.witness = Some(check_witness(&db, dir, &public_key).await?);
        }
        let found = last_checkpoint_key(&db)
            .await
            .map_err(|e| unavailable(&e))?;
        if let Some(id) = found.filter(|id| id != public_key.key_id()) {
            tracing::warn!(target: "maskgate::audit", previous_key = %id, key = %public_key.key_id(), "the shared audit log's last checkpoint was signed by another key: verify with both public keys");
        }
        shared.set_health(Ok(()));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer.run(rx));
        Ok(PgAuditLog {
            db,
            tx,
            shared,
            public_key,
            runtime,
        })
    }

    /// The pool.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Counters since open.
    pub fn stats(&self) -> PgAuditStats {
        PgAuditStats {
            records: self.shared.records.load(Ordering::Relaxed),
            batches: self.shared.batches.load(Ordering::Relaxed),
            checkpoints: self.shared.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Appends and waits until the record is committed.
    pub async fn append_wait(&self, draft: RecordDraft) -> Result<AuditReceipt, AuditError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        AuditSink::append(
            self,
            draft,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Copies the log into `dir` in the file log's layout (see the module
    /// docs). Blocks; call off the runtime's worker threads.
    pub fn export_blocking(&self, dir: &Path) -> Result<(), PgError> {
        self.runtime.block_on(export(&self.db, dir))
    }
}

/// Refuses a database log whose newest checkpoint is behind the witness in
/// `dir` (rows were deleted), and brings a witness that is behind forward.
async fn check_witness(db: &Db, dir: &Path, key: &PublicKey) -> Result<SlotFile, AuditError> {
    create_dir(dir)?;
    let path = dir.join(WITNESS_FILE);
    let witness = read_witness(dir).map_err(|problem| AuditError::Corrupt {
        path: path.clone(),
        problem,
    })?;
    let line: Option<String> = db
        .run(|c| {
            Box::pin(async move {
                Ok(c.query_one(
                    "SELECT checkpoint_line FROM maskgate_audit_head WHERE id = 1",
                    &[],
                )
                .await?
                .get(0))
            })
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let current = line
        .as_deref()
        .and_then(|l| parse_checkpoint_line(l.as_bytes()).ok());
    let mut file = SlotFile::open(&path)?;
    let Some(current) = current else {
        return Ok(file);
    };
    if let Some(w) = &witness {
        let (w, c) = (&w.checkpoint, &current.checkpoint);
        if w.key_id == key.key_id()
            && witness
                .as_ref()
                .is_some_and(|w| w.verify(std::slice::from_ref(key)).is_err())
        {
            return Err(AuditError::Corrupt {
                path,
                problem: "the witness's signature does not verify: it was altered".into(),
            });
        }
        if w.count > c.seq || (w.seq == c.seq && w.head != c.head) {
            return Err(AuditError::Corrupt {
                path,
                problem: format!(
                    "the signed witness says the shared log holds {} records but its newest \
                     checkpoint covers {}: rows were deleted or rewritten. Run `maskgate audit \
                     verify --postgres … --witness {}`",
                    w.count,
                    c.seq,
                    dir.display()
                ),
            });
        }
    }
    if witness
        .as_ref()
        .is_none_or(|w| w.checkpoint.seq < current.checkpoint.seq)
    {
        if let Some(l) = &line {
            file.write(format!("{l}\n").as_bytes())?;
        }
    }
    Ok(file)
}

async fn last_checkpoint_key(db: &Db) -> Result<Option<String>, PgError> {
    let line: Option<String> = db
        .run(|c| {
            Box::pin(async move {
                Ok(c.query_one(
                    "SELECT checkpoint_line FROM maskgate_audit_head WHERE id = 1",
                    &[],
                )
                .await?
                .get(0))
            })
        })
        .await?;
    Ok(line
        .and_then(|l| parse_checkpoint_line(l.as_bytes()).ok())
        .map(|c| c.checkpoint.key_id))
}

/// Copies the shared log into `dir` as the file log would hold it:
/// `audit-000001.log` (every line, by `pos`) and `audit-head.json` (the
/// head checkpoint), read in one consistent snapshot.
pub async fn export(db: &Db, dir: &Path) -> Result<(), PgError> {
    let io = |what: &str, e: std::io::Error| PgError::Corrupt(format!("cannot write {what}: {e}"));
    let mut client = db.client().await?;
    // No client-side limit here: a long log takes long. Each statement is
    // still bounded by the server's statement_timeout.
    let r = async {
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let head: Option<String> = tx
            .query_one(
                "SELECT checkpoint_line FROM maskgate_audit_head WHERE id = 1",
                &[],
            )
            .await?
            .get(0);
        let log_path = dir.join(log_file_name(1));
        let file = std::fs::File::create(&log_path).map_err(|e| io("the export", e))?;
        let mut out = std::io::BufWriter::new(file);
        let mut after = 0i64;
        loop {
            let rows = tx
                .query(
                    "SELECT pos, line FROM maskgate_audit_lines WHERE pos > $1 \
                     ORDER BY pos LIMIT $2",
                    &[&after, &EXPORT_PAGE],
                )
                .await?;
            for row in &rows {
                let pos: i64 = row.get(0);
                let line: &str = row.get(1);
                // A gap in pos shows as a missing line, which verify reports
                // (as a deletion) by seq.
                out.write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|e| io("the export", e))?;
                after = pos;
            }
            if (rows.len() as i64) < EXPORT_PAGE {
                break;
            }
        }
        out.flush().map_err(|e| io("the export", e))?;
        tx.commit().await?;
        if let Some(line) = head {
            std::fs::write(dir.join(HEAD_FILE), format!("{line}\n"))
                .map_err(|e| io("the export", e))?;
        }
        Ok(())
    }
    .await;
    db.release(client, &r);
    r
}

/// A private temporary directory removed on drop.
struct ExportDir(PathBuf);

impl ExportDir {
    fn new() -> std::io::Result<ExportDir> {
        use ring::rand::SecureRandom as _;
        let mut raw = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| std::io::Error::other("random number generator failed"))?;
        let dir = std::env::temp_dir().join(format!("maskgate-audit-export-{}", hex::encode(raw)));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&dir)?;
        Ok(ExportDir(dir))
    }
}

impl Drop for ExportDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `f` on a fresh export of the log; `Err` carries why the export
/// failed.
pub fn with_export<T>(
    export: impl FnOnce(&Path) -> Result<(), PgError>,
    f: impl FnOnce(&Path) -> T,
) -> Result<T, String> {
    let dir = ExportDir::new().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    export(&dir.0).map_err(|e| e.to_string())?;
    Ok(f(&dir.0))
}

/// Renames the exported file names in a report or finding text to the
/// tables they came from.
pub fn name_tables(text: &str) -> String {
    text.replace(
        &format!("{} line", log_file_name(1)),
        &format!("{LINES_TABLE} pos"),
    )
    .replace(&log_file_name(1), LINES_TABLE)
    .replace(HEAD_FILE, HEAD_TABLE)
}

fn relabel(mut report: VerifyReport) -> VerifyReport {
    if let Some(f) = &mut report.problem {
        f.file = if f.file == HEAD_FILE {
            HEAD_TABLE.to_owned()
        } else {
            LINES_TABLE.to_owned()
        };
        f.detail = name_tables(&f.detail);
    }
    report
}

impl AuditSink for PgAuditLog {
    fn append(&self, draft: RecordDraft, done: Done) {
        if let Err(mpsc::error::SendError(Msg::Append(_, done))) =
            self.tx.send(Msg::Append(Box::new(draft), done))
        {
            call(done, Err(AuditError::Closed));
        }
    }

    fn tick(&self) {
        let _ = self.tx.send(Msg::Tick);
    }

    fn health(&self) -> Result<(), AuditError> {
        if self.shared.healthy.load(Ordering::Acquire) {
            Ok(())
        } else {
            let cause = self
                .shared
                .cause
                .lock()
                .ok()
                .and_then(|c| c.clone())
                .unwrap_or_default();
            Err(AuditError::Unavailable(cause))
        }
    }

    fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    fn query(&self, filter: &Filter) -> Result<Scan, QueryError> {
        with_export(
            |dir| self.export_blocking(dir),
            |dir| super::query::query(dir, filter),
        )
        .map_err(|e| QueryError::Io {
            path: PathBuf::from(LINES_TABLE),
            source: Arc::new(std::io::Error::other(e)),
        })?
    }

    fn verify(&self) -> Result<VerifyReport, VerifyError> {
        with_export(
            |dir| self.export_blocking(dir),
            |dir| {
                super::verify::verify_live(dir, std::slice::from_ref(&self.public_key)).map(relabel)
            },
        )
        .map_err(|e| VerifyError::Io {
            path: PathBuf::from(LINES_TABLE),
            source: Arc::new(std::io::Error::other(e)),
        })?
    }
}

/// Verifies the shared log with `keys` (the CLI): the report names the
/// tables. Blocks on its own runtime.
pub fn verify_db(
    config: &crate::config::PostgresConfig,
    keys: &[PublicKey],
) -> Result<VerifyReport, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let db = Db::connect(config).map_err(|e| e.to_string())?;
    with_export(
        |dir| rt.block_on(export(&db, dir)),
        |dir| super::verify::verify_with_keys(dir, keys).map(relabel),
    )?
    .map_err(|e| e.to_string())
}

/// Runs `f` on an export of the shared log (the CLI's query and report).
pub fn with_db_export<T>(
    config: &crate::config::PostgresConfig,
    f: impl FnOnce(&Path) -> T,
) -> Result<T, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let db = Db::connect(config).map_err(|e| e.to_string())?;
    with_export(|dir| rt.block_on(export(&db, dir)), f)
}
