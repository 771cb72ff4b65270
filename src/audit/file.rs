//! The durable file sink: one writer thread, group commit, a signed
//! checkpoint at the end of every batch, recovery that never signs over
//! what it cannot vouch for, rotation, the head file and the witness.
//!
//! [`AuditLog::append`] hands a draft to the writer thread. The writer takes
//! everything queued (up to 4096 messages), seals the records into one
//! buffer and ends it with a signed checkpoint (more checkpoints inside a
//! batch over [`CheckpointPolicy::every_records`]), writes it, calls
//! `File::sync_data` once, brings the head file and the witness to that
//! checkpoint, and only then calls each `done` with an [`AuditReceipt`]: no
//! record is released that a signature does not cover. If any of that
//! fails, every record of the batch gets the error and the log stays failed:
//! every later append fails at once. Each [`AuditLog::tick`] then tries to
//! reopen it: cut back what the failed write may have left, write an
//! `audit_sink_reopened` incident record under a new checkpoint, and accept
//! records again, without a restart.
//!
//! On open, the last signed checkpoint is found from the end (its signature
//! checked). Whatever follows it — records of a batch that crashed before
//! its checkpoint, a torn line, or lines someone appended — was never
//! released, and no key vouches for it: it is saved to
//! `audit-NNNNNN.log.unsealed-OFFSET`, cut off, reported in
//! [`OpenReport::torn`] (chaining or not), and an `audit_tail_set_aside`
//! incident record says so in the log. The chain continues from the
//! checkpoint.
//!
//! The head file (`audit-head.json`) and, when configured, the witness
//! (`audit-witness.json` in a directory outside the log directory) hold the
//! newest checkpoint line, in one of two slots overwritten in turn
//! ([`SlotFile`]). Opening refuses a log whose head file is missing,
//! unreadable, or altered, and a log whose last checkpoint is behind the
//! head file or the witness (records were cut off): a restart never signs
//! over a truncation. An anchor behind the log (a crash between the writes)
//! is brought forward.
//!
//! Startup reads the end of the last file (growing windows until a
//! checkpoint is found). One writer per directory: this module does not
//! lock the directory; run one gateway per data directory.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use time::OffsetDateTime;

use crate::audit::chain::{
    parse_checkpoint_line, parse_line, Chain, ChainHead, Checkpoint, CheckpointPolicy, Line,
    SignedCheckpoint,
};
use crate::audit::keys::{PublicKey, SigningKey};
use crate::audit::record::{Kind, Outcome, RecordDraft, GENESIS};
use crate::audit::{AuditError, AuditReceipt};

/// The head file's name.
pub const HEAD_FILE: &str = "audit-head.json";
/// The witness file's name (in the witness directory).
pub const WITNESS_FILE: &str = "audit-witness.json";
/// Most messages one batch takes from the queue.
const MAX_BATCH: usize = 4096;

/// `audit-000042.log`.
pub fn log_file_name(n: u32) -> String {
    format!("audit-{n:06}.log")
}

/// The number in a log file name; `None` for any other name.
pub fn parse_log_file_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".log")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log files of `dir`, in order.
pub fn list_log_files(dir: &Path) -> Result<Vec<(u32, PathBuf)>, AuditError> {
    let entries = fs::read_dir(dir).map_err(|e| AuditError::io("read directory", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| AuditError::io("read directory", dir, e))?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_log_file_name) {
            files.push((n, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Where record times come from.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> OffsetDateTime + Send + Sync>);

impl Clock {
    /// The system clock, UTC.
    pub fn system() -> Clock {
        Clock(Arc::new(OffsetDateTime::now_utc))
    }

    /// A clock that asks `f` (tests, replays).
    pub fn from_fn(f: impl Fn() -> OffsetDateTime + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    /// The time now.
    pub fn now(&self) -> OffsetDateTime {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}

/// How the sink behaves.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// Many records per fsync under concurrency (default). `false`: one
    /// write and one fsync per record (for comparison).
    pub group_commit: bool,
    /// When checkpoints are written besides the one that ends every batch.
    pub checkpoint: CheckpointPolicy,
    /// Start a new file once the current one reaches this size (default
    /// 64 MiB); `None` keeps one file.
    pub rotate_bytes: Option<u64>,
    /// Record times.
    pub clock: Clock,
    /// A directory outside the log directory (another disk) that keeps a
    /// copy of the newest checkpoint ([`WITNESS_FILE`]).
    pub witness: Option<PathBuf>,
}

impl Default for AuditOptions {
    fn default() -> AuditOptions {
        AuditOptions {
            group_commit: true,
            checkpoint: CheckpointPolicy::default(),
            rotate_bytes: Some(64 << 20),
            clock: Clock::system(),
            witness: None,
        }
    }
}

/// Bytes after the last checkpoint, moved aside on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The log file.
    pub file: PathBuf,
    /// Where the cut was made (the file's new length).
    pub offset: u64,
    /// How many bytes were cut.
    pub len: u64,
    /// Where the cut bytes were saved.
    pub saved_to: PathBuf,
    /// The first bytes, escaped, for the operator's log.
    pub preview: String,
    /// The seq of the checkpoint the log now ends with.
    pub after_seq: u64,
    /// Whole record lines among the cut bytes.
    pub records: u64,
    /// True when those lines are records that continue the chain from the
    /// checkpoint (a batch that crashed before its checkpoint); false when
    /// anything does not (a forged or damaged line, a torn write).
    pub chains: bool,
}

impl TornTail {
    /// One sentence for stderr, health and the incident record.
    pub fn describe(&self) -> String {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let what = if self.records == 0 {
            "a torn line".to_owned()
        } else if self.chains {
            format!(
                "{} record line(s) that chain but no checkpoint signs",
                self.records
            )
        } else {
            format!("{} line(s) that do not continue the chain", self.records)
        };
        format!(
            "{} byte(s) after the last signed checkpoint (seq {}) of {}, {what}, were moved \
             aside to {} and not signed: a write cut short by a crash, or lines added by \
             someone else",
            self.len,
            self.after_seq,
            name(&self.file),
            name(&self.saved_to)
        )
    }
}

/// What opening the log found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// A new log was created.
    pub created: bool,
    /// Log files present.
    pub files: usize,
    /// The last record's seq (0: none).
    pub last_seq: u64,
    /// Records a checkpoint covers (always `last_seq` after open).
    pub sealed_seq: u64,
    /// Bytes after the last signed checkpoint that were moved aside.
    pub torn: Option<TornTail>,
    /// The head file was behind the log's last checkpoint and was brought forward.
    pub head_repaired: bool,
    /// The witness file was missing (a witness newly configured) and was written.
    pub witness_created: bool,
    /// The log's last checkpoint was signed by another key (this key id):
    /// verify with both public keys.
    pub key_changed: Option<String>,
}

/// Counters of the sink since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// The last record known durable.
    pub durable_seq: u64,
    /// Records made durable.
    pub records: u64,
    /// Writes that carried records.
    pub batches: u64,
    /// fsync calls of the log file.
    pub fsyncs: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Times the log reopened itself after a failure.
    pub reopened: u64,
}

/// Called once with the append's result, on the writer thread. It must not
/// block (and must not call [`AuditLog::append_sync`]).
pub type Done = Box<dyn FnOnce(Result<AuditReceipt, AuditError>) + Send>;

enum Msg {
    Append(Box<RecordDraft>, Done),
    Tick,
    Close(SyncSender<Result<(), AuditError>>),
    #[cfg(test)]
    SwapFile(File),
    #[cfg(test)]
    FailWrites(bool),
}

#[derive(Default)]
struct Shared {
    failed: AtomicBool,
    cause: Mutex<Option<String>>,
    incidents: Mutex<Vec<String>>,
    refused_while_failed: AtomicU64,
    durable_seq: AtomicU64,
    records: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    checkpoints: AtomicU64,
    reopened: AtomicU64,
}

/// Incidents kept for health, newest last.
const MAX_INCIDENTS: usize = 16;

impl Shared {
    fn poisoned(&self) -> AuditError {
        let cause = self
            .cause
            .lock()
            .map(|c| c.clone().unwrap_or_default())
            .unwrap_or_default();
        AuditError::Poisoned { cause }
    }

    fn incident(&self, text: String) {
        if let Ok(mut list) = self.incidents.lock() {
            if list.len() == MAX_INCIDENTS {
                list.remove(0);
            }
            list.push(text);
        }
    }
}

/// The audit log of one directory, with its writer thread. Share it by
/// `Arc`; dropping the last handle closes it (with a final checkpoint).
pub struct AuditLog {
    dir: PathBuf,
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    report: OpenReport,
    public_key: PublicKey,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The record that tells readers of the log what the log itself went through.
fn incident_draft(why: &'static str, text: &str) -> RecordDraft {
    RecordDraft::new(Kind::Alert, "maskgate", Outcome::Denied, why).reason(text.to_owned())
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, moves aside whatever follows the
    /// last signed checkpoint (recording an incident when it does), and
    /// starts the writer thread. See the module docs for what refuses an open.
    pub fn open(
        dir: impl AsRef<Path>,
        key: SigningKey,
        options: AuditOptions,
    ) -> Result<AuditLog, AuditError> {
        let dir = dir.as_ref().to_path_buf();
        create_dir(&dir)?;
        if let Some(w) = &options.witness {
            create_dir(w)?;
        }
        let now = options.clock.now();
        let rec = recover(&dir, options.witness.as_deref(), &key, now)?;
        let public_key = key.public_key().clone();
        let file = open_append(&rec.path)?;
        let chain = Chain::new(
            key,
            options.checkpoint,
            rec.head,
            rec.sealed_seq,
            rec.last_checkpoint_at,
        );
        let shared = Arc::new(Shared::default());
        shared.durable_seq.store(rec.head.seq, Ordering::Relaxed);
        let writer = Writer {
            dir: dir.clone(),
            chain,
            file,
            file_no: rec.file_no,
            file_len: rec.file_len,
            group_commit: options.group_commit,
            rotate_bytes: options.rotate_bytes,
            clock: options.clock,
            shared: Arc::clone(&shared),
            failed: None,
            rollback: None,
            head: rec.head_file,
            witness: rec.witness_file,
            #[cfg(test)]
            fail_writes: false,
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("maskgate-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io("start writer thread for", &dir, e))?;
        let log = AuditLog {
            dir,
            tx: Some(tx),
            thread: Some(thread),
            shared,
            report: rec.report,
            public_key,
        };
        if let Some(torn) = &log.report.torn {
            let text = torn.describe();
            log.append_sync(incident_draft("audit_tail_set_aside", &text))?;
            log.shared.incident(text);
        }
        Ok(log)
    }

    /// What opening found (a tail moved aside, a repaired head file, a new key).
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The public half of the signing key (for
    /// [`verify_live`](crate::audit::verify::verify_live) from the admin API).
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Queues a record; `done` gets a receipt once it is durable, or the
    /// error. Never blocks on I/O.
    pub fn append(&self, draft: RecordDraft, done: Done) {
        if self.shared.failed.load(Ordering::Acquire) {
            self.shared
                .refused_while_failed
                .fetch_add(1, Ordering::Relaxed);
            call(done, Err(self.shared.poisoned()));
            return;
        }
        let Some(tx) = &self.tx else {
            call(done, Err(AuditError::Closed));
            return;
        };
        if let Err(mpsc::SendError(Msg::Append(_, done))) =
            tx.send(Msg::Append(Box::new(draft), done))
        {
            call(done, Err(AuditError::Closed));
        }
    }

    /// Appends and waits until the record is durable.
    pub fn append_sync(&self, draft: RecordDraft) -> Result<AuditReceipt, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append(
            draft,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv().unwrap_or(Err(AuditError::Closed))
    }

    /// Offers the writer the time: it writes a checkpoint if
    /// [`CheckpointPolicy::every`] has passed with unsealed records, and a
    /// failed log tries to reopen itself. Call it every second or so.
    pub fn tick(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Tick);
        }
    }

    /// `Ok` while the log accepts records; the failure otherwise.
    pub fn health(&self) -> Result<(), AuditError> {
        if self.shared.failed.load(Ordering::Acquire) {
            Err(self.shared.poisoned())
        } else {
            Ok(())
        }
    }

    /// What the log went through since it was opened (a tail moved aside,
    /// a failure and the reopening after it), oldest first.
    pub fn incidents(&self) -> Vec<String> {
        self.shared
            .incidents
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Counters since open.
    pub fn stats(&self) -> AuditStats {
        let s = &self.shared;
        AuditStats {
            durable_seq: s.durable_seq.load(Ordering::Acquire),
            records: s.records.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            checkpoints: s.checkpoints.load(Ordering::Relaxed),
            reopened: s.reopened.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued, seals the log with a checkpoint and stops the
    /// writer. Fails if the log had failed.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), AuditError> {
        let Some(tx) = self.tx.take() else {
            return Ok(());
        };
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let sent = tx.send(Msg::Close(reply_tx)).is_ok();
        drop(tx);
        let result = if sent {
            reply_rx.recv().unwrap_or(Err(AuditError::Closed))
        } else {
            Err(AuditError::Closed)
        };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        result
    }

    /// Replaces the writer's file handle (tests: a read-only handle makes
    /// the next write fail).
    #[cfg(test)]
    pub(crate) fn swap_file_for_test(&self, file: File) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::SwapFile(file));
        }
    }

    /// Makes every log write fail as on a full disk until called with `false`.
    #[cfg(test)]
    pub(crate) fn fail_writes_for_test(&self, fail: bool) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::FailWrites(fail));
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Calls `done`, keeping a panicking callback from taking the writer down.
fn call(done: Done, result: Result<AuditReceipt, AuditError>) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(move || done(result)));
}

/// The bytes of one batch and the checkpoints among them.
#[derive(Default)]
struct BatchOut {
    buf: Vec<u8>,
    last_checkpoint: Option<Vec<u8>>,
    checkpoints: u64,
    error: Option<AuditError>,
}

impl BatchOut {
    fn checkpoint(&mut self, chain: &mut Chain, now: OffsetDateTime) {
        match chain.checkpoint(now) {
            Ok((_, line)) => {
                self.buf.extend_from_slice(&line);
                self.last_checkpoint = Some(line);
                self.checkpoints += 1;
            }
            Err(e) => self.error = Some(e.into()),
        }
    }
}

/// Where the log stood before a write that failed: reopening cuts the file
/// back to it (nothing of the failed batch was released).
#[derive(Clone, Copy)]
struct Rollback {
    file_len: u64,
    head: ChainHead,
    sealed_seq: u64,
    last_checkpoint_at: OffsetDateTime,
}

struct Writer {
    dir: PathBuf,
    chain: Chain,
    file: File,
    file_no: u32,
    file_len: u64,
    group_commit: bool,
    rotate_bytes: Option<u64>,
    clock: Clock,
    shared: Arc<Shared>,
    failed: Option<AuditError>,
    rollback: Option<Rollback>,
    head: SlotFile,
    witness: Option<SlotFile>,
    #[cfg(test)]
    fail_writes: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        let mut batch = Vec::new();
        loop {
            match rx.recv() {
                Ok(msg) => batch.push(msg),
                Err(_) => {
                    let _ = self.finish();
                    return;
                }
            }
            if self.group_commit {
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(msg) => batch.push(msg),
                        Err(_) => break,
                    }
                }
            }
            if let Some(reply) = self.process(&mut batch) {
                let _ = reply.send(self.finish());
                return;
            }
        }
    }

    fn fail(&mut self, e: AuditError, rollback: Option<Rollback>) {
        if self.failed.is_none() {
            if let Ok(mut cause) = self.shared.cause.lock() {
                *cause = Some(e.to_string());
            }
            self.shared.incident(format!("audit log failed: {e}"));
            self.shared.failed.store(true, Ordering::Release);
            self.failed = Some(e);
        }
        if self.rollback.is_none() {
            self.rollback = rollback;
        }
    }

    fn snapshot(&self) -> Rollback {
        Rollback {
            file_len: self.file_len,
            head: self.chain.head(),
            sealed_seq: self.chain.sealed_seq(),
            last_checkpoint_at: self.chain.last_checkpoint_at(),
        }
    }

    /// Seals, writes and fsyncs one batch, ending it with a signed
    /// checkpoint, brings the head file and the witness to that checkpoint,
    /// and only then answers it.
    fn process(&mut self, batch: &mut Vec<Msg>) -> Option<SyncSender<Result<(), AuditError>>> {
        let now = self.clock.now();
        if self.failed.is_some() && batch.iter().any(|m| matches!(m, Msg::Tick)) {
            self.try_reopen(now);
        }
        let before = self.snapshot();
        let mut out = BatchOut::default();
        let mut sealed: Vec<(Done, u64, [u8; 32])> = Vec::new();
        let mut refused: Vec<(Done, AuditError)> = Vec::new();
        let mut close = None;
        for msg in batch.drain(..) {
            match msg {
                Msg::Append(draft, done) => {
                    if self.failed.is_some() {
                        self.shared
                            .refused_while_failed
                            .fetch_add(1, Ordering::Relaxed);
                        refused.push((done, self.shared.poisoned()));
                        continue;
                    }
                    match self.chain.seal(&draft, now) {
                        Ok(s) => {
                            out.buf.extend_from_slice(&s.line);
                            sealed.push((done, s.seq, s.hash));
                            if self.chain.checkpoint_due_by_count() {
                                out.checkpoint(&mut self.chain, now);
                            }
                        }
                        Err(e) => refused.push((done, AuditError::Draft(e))),
                    }
                }
                Msg::Tick => {}
                Msg::Close(reply) => close = Some(reply),
                #[cfg(test)]
                Msg::SwapFile(file) => self.file = file,
                #[cfg(test)]
                Msg::FailWrites(fail) => self.fail_writes = fail,
            }
        }
        // No unsigned released record: every batch ends with a checkpoint.
        if self.failed.is_none() && self.chain.unsealed() > 0 {
            out.checkpoint(&mut self.chain, now);
        }
        let result = match out.error.take() {
            Some(e) => Err(e),
            None if out.buf.is_empty() => Ok(()),
            None => self.write_durable(&out.buf),
        };
        let result = match result {
            Err(e) => {
                self.fail(e.clone(), Some(before));
                Err(e)
            }
            // The head file and the witness follow the log before anyone
            // hears of the batch. If they cannot, nothing is released; the
            // log itself holds the batch, so reopening only retries them.
            Ok(()) => match &out.last_checkpoint {
                Some(line) => {
                    let line = line.clone();
                    self.write_anchors(&line).inspect_err(|e| {
                        self.fail(e.clone(), None);
                    })
                }
                None => Ok(()),
            },
        };
        match result {
            Ok(()) => {
                let s = &self.shared;
                if !sealed.is_empty() {
                    s.durable_seq
                        .store(self.chain.head().seq, Ordering::Release);
                    s.records.fetch_add(sealed.len() as u64, Ordering::Relaxed);
                    s.batches.fetch_add(1, Ordering::Relaxed);
                }
                s.checkpoints.fetch_add(out.checkpoints, Ordering::Relaxed);
                let key = self.chain.key();
                for (done, seq, hash) in sealed {
                    call(done, Ok(AuditReceipt::new(seq, hash, Arc::clone(key))));
                }
            }
            Err(e) => {
                for (done, _, _) in sealed {
                    call(done, Err(e.clone()));
                }
            }
        }
        for (done, e) in refused {
            call(done, Err(e));
        }
        if self.failed.is_none() && self.rotate_bytes.is_some_and(|max| self.file_len >= max) {
            if let Err(e) = self.rotate(now) {
                self.fail(e, None);
            }
        }
        close
    }

    /// A failed log tries again: it cuts back what a failed write may have
    /// left, writes an incident record under a new checkpoint, and brings
    /// the head file and the witness to it. Success makes it accept records
    /// again, without a restart.
    fn try_reopen(&mut self, now: OffsetDateTime) {
        let Some(cause) = self.failed.as_ref().map(ToString::to_string) else {
            return;
        };
        let refused = self.shared.refused_while_failed.load(Ordering::Relaxed);
        let attempt = (|| -> Result<(), AuditError> {
            if let Some(back) = self.rollback {
                let path = self.path();
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| AuditError::io("open", &path, e))?;
                file.set_len(back.file_len)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| AuditError::io("truncate", &path, e))?;
                self.file = open_append(&path)?;
                self.file_len = back.file_len;
                self.chain
                    .continue_at(back.head, back.sealed_seq, back.last_checkpoint_at);
                self.rollback = None;
            }
            let before = self.snapshot();
            let text = format!(
                "the audit log failed ({cause}) and reopened itself without a restart; \
                 {refused} append(s) were refused meanwhile and nothing of them was released"
            );
            let written = (|| {
                let s = self
                    .chain
                    .seal(&incident_draft("audit_sink_reopened", &text), now)?;
                let (_, line) = self.chain.checkpoint(now)?;
                let mut buf = s.line;
                buf.extend_from_slice(&line);
                self.write_durable(&buf)?;
                Ok::<_, AuditError>((line, s.seq))
            })();
            let (line, seq) = match written {
                Ok(w) => w,
                Err(e) => {
                    self.rollback = Some(before);
                    return Err(e);
                }
            };
            self.write_anchors(&line)?;
            self.shared.durable_seq.store(seq, Ordering::Release);
            self.shared.incident(text);
            Ok(())
        })();
        if attempt.is_ok() {
            self.failed = None;
            self.shared
                .refused_while_failed
                .fetch_sub(refused, Ordering::Relaxed);
            self.shared.reopened.fetch_add(1, Ordering::Relaxed);
            self.shared.failed.store(false, Ordering::Release);
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(log_file_name(self.file_no))
    }

    fn write_durable(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        #[cfg(test)]
        if self.fail_writes {
            return Err(AuditError::io(
                "write",
                self.path(),
                std::io::Error::from(std::io::ErrorKind::StorageFull),
            ));
        }
        self.file
            .write_all(bytes)
            .map_err(|e| AuditError::io("write", self.path(), e))?;
        self.file_len += bytes.len() as u64;
        self.file
            .sync_data()
            .map_err(|e| AuditError::io("fsync", self.path(), e))?;
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the newest checkpoint line to the head file and (durably) the witness.
    fn write_anchors(&mut self, line: &[u8]) -> Result<(), AuditError> {
        self.head.write_cached(line)?;
        if let Some(w) = &mut self.witness {
            w.write(line)?;
        }
        Ok(())
    }

    /// Seals and durably writes a checkpoint if records are unsealed.
    fn seal_now(&mut self, now: OffsetDateTime) -> Result<(), AuditError> {
        if self.chain.unsealed() == 0 {
            return Ok(());
        }
        let (_, line) = self.chain.checkpoint(now)?;
        self.write_durable(&line)?;
        self.shared.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.write_anchors(&line)
    }

    /// Closes the current file with a checkpoint and starts the next.
    fn rotate(&mut self, now: OffsetDateTime) -> Result<(), AuditError> {
        self.seal_now(now)?;
        let next = self.file_no + 1;
        let path = self.dir.join(log_file_name(next));
        let file = create_log_file(&path)?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.file_no = next;
        self.file_len = 0;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AuditError> {
        if let Some(e) = &self.failed {
            return Err(AuditError::Poisoned {
                cause: e.to_string(),
            });
        }
        let now = self.clock.now();
        let result = self.seal_now(now);
        if let Err(e) = &result {
            self.fail(e.clone(), None);
        }
        result
    }
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), AuditError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| AuditError::io("create directory", dir, e))
}

fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| AuditError::io("fsync directory", dir, e))
}

fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn create_log_file(path: &Path) -> Result<File, AuditError> {
    private_file_options()
        .append(true)
        .create_new(true)
        .open(path)
        .map_err(|e| AuditError::io("create", path, e))
}

fn open_append(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| AuditError::io("open", path, e))
}

/// The size of one slot of the head and witness files.
const SLOT: u64 = 512;

/// A file that keeps the newest checkpoint line in one of two slots,
/// overwritten in turn in place (one write and one `fdatasync`, no rename):
/// a write torn by a crash spoils only the slot being written, and the
/// other still holds the checkpoint before it. Readers take the slot with
/// the highest seq ([`parse_slots`]); a file holding one plain line (older
/// versions, the PostgreSQL export) reads the same way.
pub(crate) struct SlotFile {
    path: PathBuf,
    file: File,
    next: u64,
}

impl SlotFile {
    /// Opens (creating) `path`; the next write goes to the slot that does
    /// not hold the newest checkpoint.
    pub(crate) fn open(path: &Path) -> Result<SlotFile, AuditError> {
        let file = private_file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| AuditError::io("open", path, e))?;
        let bytes = fs::read(path).map_err(|e| AuditError::io("read", path, e))?;
        let next = match parse_slots(&bytes) {
            Ok(Some((_, at))) if at < SLOT as usize => 1,
            _ => 0,
        };
        Ok(SlotFile {
            path: path.to_path_buf(),
            file,
            next,
        })
    }

    /// Writes `line` (a checkpoint line ending in `\n`) durably.
    pub(crate) fn write(&mut self, line: &[u8]) -> Result<(), AuditError> {
        self.put(line, true)
    }

    /// Writes `line` to the page cache only. The head file is written so
    /// after every batch: it is written after the log's fsync, so it can
    /// lag the log after a power loss (and is brought forward on open) but
    /// never run ahead of it, and it survives a killed process. The
    /// witness, the anchor that counts, is always written durably.
    pub(crate) fn write_cached(&mut self, line: &[u8]) -> Result<(), AuditError> {
        self.put(line, false)
    }

    fn put(&mut self, line: &[u8], sync: bool) -> Result<(), AuditError> {
        use std::os::unix::fs::FileExt as _;
        let mut slot = vec![b' '; SLOT as usize];
        if line.len() >= slot.len() {
            return Err(corrupt(
                &self.path,
                "a checkpoint line is longer than a slot",
            ));
        }
        slot[..line.len()].copy_from_slice(line);
        slot[SLOT as usize - 1] = b'\n';
        let at = (self.next % 2) * SLOT;
        self.file
            .write_all_at(&slot, at)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) })
            .map_err(|e| AuditError::io("write", &self.path, e))?;
        self.next += 1;
        Ok(())
    }
}

/// The newest readable checkpoint line of a head or witness file, and the
/// offset it starts at. `Ok(None)`: the file holds nothing; `Err`: it holds
/// bytes but no checkpoint line.
pub(crate) fn parse_slots(bytes: &[u8]) -> Result<Option<(SignedCheckpoint, usize)>, String> {
    let mut best: Option<(SignedCheckpoint, usize)> = None;
    let mut first_error = None;
    let mut start = 0;
    for piece in bytes.split(|&b| b == b'\n') {
        let at = start;
        start += piece.len() + 1;
        let Some(from) = piece.iter().position(|b| !b" \t\r\0".contains(b)) else {
            continue;
        };
        let to = piece
            .iter()
            .rposition(|b| !b" \t\r\0".contains(b))
            .map_or(from, |i| i + 1);
        match parse_checkpoint_line(&piece[from..to]) {
            Ok(cp) => {
                if best
                    .as_ref()
                    .is_none_or(|(b, _)| cp.checkpoint.seq > b.checkpoint.seq)
                {
                    best = Some((cp, at + from));
                }
            }
            Err(e) => {
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    match (best, first_error) {
        (Some(b), _) => Ok(Some(b)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(None),
    }
}

/// Reads a head or witness file: `None` when there is none.
pub(crate) fn read_anchor_file(path: &Path) -> Result<Option<SignedCheckpoint>, HeadProblem> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HeadProblem::Io(e)),
    };
    parse_slots(&bytes)
        .map(|best| best.map(|(cp, _)| cp))
        .map_err(HeadProblem::Unreadable)
}

/// Reads the head file: `None` when there is none.
pub(crate) fn read_head(dir: &Path) -> Result<Option<SignedCheckpoint>, HeadProblem> {
    read_anchor_file(&dir.join(HEAD_FILE))
}

/// Reads a witness directory's file: `None` when there is none.
pub fn read_witness(dir: &Path) -> Result<Option<SignedCheckpoint>, String> {
    let path = dir.join(WITNESS_FILE);
    read_anchor_file(&path).map_err(|e| match e {
        HeadProblem::Io(e) => format!("cannot read {}: {e}", path.display()),
        HeadProblem::Unreadable(why) => format!("{} is unreadable: {why}", path.display()),
    })
}

/// Why the head file could not be read.
#[derive(Debug)]
pub(crate) enum HeadProblem {
    Io(std::io::Error),
    Unreadable(String),
}

/// What recovery found: where to continue.
struct Recovered {
    path: PathBuf,
    file_no: u32,
    file_len: u64,
    head: ChainHead,
    sealed_seq: u64,
    last_checkpoint_at: OffsetDateTime,
    report: OpenReport,
    head_file: SlotFile,
    witness_file: Option<SlotFile>,
}

fn corrupt(path: &Path, problem: impl Into<String>) -> AuditError {
    AuditError::Corrupt {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Reads an anchor (the head file, a witness) and checks its signature when
/// it names this key.
fn read_checked_anchor(
    path: &Path,
    key: &SigningKey,
    what: &str,
) -> Result<Option<SignedCheckpoint>, AuditError> {
    let anchor = match read_anchor_file(path) {
        Ok(a) => a,
        Err(HeadProblem::Io(e)) => return Err(AuditError::io("read", path, e)),
        Err(HeadProblem::Unreadable(why)) => {
            return Err(corrupt(
                path,
                format!(
                    "the {what} is unreadable ({why}); run `maskgate audit verify` and \
                     restore it from a backup before restarting"
                ),
            ))
        }
    };
    if let Some(a) = &anchor {
        if a.checkpoint.key_id == key.key_id()
            && a.verify(std::slice::from_ref(key.public_key())).is_err()
        {
            return Err(corrupt(
                path,
                format!(
                    "the {what}'s signature does not verify: it was altered; run `maskgate \
                     audit verify`"
                ),
            ));
        }
    }
    Ok(anchor)
}

/// Refuses a log that ends before what `anchor` (the head file or a
/// witness) signed: records were cut off, and signing on would hide it.
fn check_not_cut(
    path: &Path,
    what: &str,
    anchor: &SignedCheckpoint,
    last: &Checkpoint,
) -> Result<(), AuditError> {
    let a = &anchor.checkpoint;
    if a.count > last.seq {
        return Err(corrupt(
            path,
            format!(
                "the signed {what} says the log holds {} records but its last signed \
                 checkpoint is at seq {}: records {}..={} were cut off. Run `maskgate audit \
                 verify`; to start a log anyway, move the directory away",
                a.count,
                last.seq,
                last.seq + 1,
                a.count
            ),
        ));
    }
    if a.seq == last.seq && a.head != last.head {
        return Err(corrupt(
            path,
            format!(
                "the signed {what} names another hash for seq {} than the log's last \
                 checkpoint: the log was rewritten; run `maskgate audit verify`",
                a.seq
            ),
        ));
    }
    Ok(())
}

fn recover(
    dir: &Path,
    witness_dir: Option<&Path>,
    key: &SigningKey,
    now: OffsetDateTime,
) -> Result<Recovered, AuditError> {
    let files = list_log_files(dir)?;
    let head_path = dir.join(HEAD_FILE);
    let head_file = read_checked_anchor(&head_path, key, "head file")?;
    let witness_path = witness_dir.map(|w| w.join(WITNESS_FILE));
    let witness = match &witness_path {
        Some(p) => read_checked_anchor(p, key, "witness")?,
        None => None,
    };
    let Some((last_no, last_path)) = files.last().cloned() else {
        return create_new_log(
            dir,
            witness_path.as_deref(),
            key,
            now,
            head_file.as_ref(),
            witness.as_ref(),
        );
    };
    let Some(head_file) = head_file else {
        return Err(corrupt(
            &head_path,
            "the head file is missing while log files exist, so a cut-off log could not be \
             told from a whole one; run `maskgate audit verify`, and if the log is sound \
             restore the head file from a backup",
        ));
    };
    let mut report = OpenReport {
        files: files.len(),
        ..OpenReport::default()
    };

    let anchor = find_anchor(&files, key)?;
    let last = match &anchor {
        Some(a) => a.checkpoint.checkpoint.clone(),
        None => Checkpoint {
            seq: 0,
            head: GENESIS.to_string(),
            count: 0,
            time: now,
            key_id: key.key_id().to_string(),
        },
    };
    // Nothing is written before the anchors agree: a refused open changes nothing.
    check_not_cut(&head_path, "head file", &head_file, &last)?;
    if let (Some(w), Some(p)) = (&witness, &witness_path) {
        check_not_cut(p, "witness", w, &last)?;
    }
    if last.key_id != key.key_id() {
        report.key_changed = Some(last.key_id.clone());
    }
    let mut hash = [0u8; 32];
    if last.seq > 0 {
        hex::decode_to_slice(&last.head, &mut hash)
            .map_err(|_| corrupt(&last_path, "the last checkpoint's head is not hex"))?;
    }
    let head = ChainHead {
        seq: last.seq,
        hash,
    };

    // Whatever follows the anchor no key vouches for: move it aside.
    let last_len = fs::symlink_metadata(&last_path)
        .map_err(|e| AuditError::io("stat", &last_path, e))?
        .len();
    let tail_start = match &anchor {
        Some(a) if a.file_index + 1 == files.len() => a.end,
        _ => 0,
    };
    if tail_start < last_len {
        report.torn = Some(set_aside(dir, &last_path, tail_start, last_len, head)?);
    }

    let mut head_slots = SlotFile::open(&head_path)?;
    if let Some(a) = &anchor {
        let mut line = a.line.clone();
        line.push(b'\n');
        if a.checkpoint.checkpoint.seq > head_file.checkpoint.seq {
            head_slots.write(&line)?;
            report.head_repaired = true;
        }
    }
    let witness_file = match &witness_path {
        Some(p) => {
            let mut w = SlotFile::open(p)?;
            let behind = witness.as_ref().is_none_or(|w| w.checkpoint.seq < last.seq);
            if witness.is_none() {
                report.witness_created = true;
            }
            if behind {
                let mut line = match &anchor {
                    Some(a) => a.line.clone(),
                    None => genesis_line(key, now)?,
                };
                line.push(b'\n');
                w.write(&line)?;
                if let Some(parent) = p.parent() {
                    sync_dir(parent)?;
                }
            }
            Some(w)
        }
        None => None,
    };
    report.last_seq = head.seq;
    report.sealed_seq = head.seq;
    Ok(Recovered {
        path: last_path,
        file_no: last_no,
        file_len: tail_start.min(last_len),
        head,
        sealed_seq: head.seq,
        last_checkpoint_at: if anchor.is_some() { last.time } else { now },
        report,
        head_file: head_slots,
        witness_file,
    })
}

fn genesis_line(key: &SigningKey, now: OffsetDateTime) -> Result<Vec<u8>, AuditError> {
    let genesis = Checkpoint {
        seq: 0,
        head: GENESIS.to_string(),
        count: 0,
        time: now,
        key_id: key.key_id().to_string(),
    }
    .sign(key)?;
    Ok(genesis.to_line()?)
}

/// A new log: the genesis head file (and witness) first, then the first log file.
fn create_new_log(
    dir: &Path,
    witness_path: Option<&Path>,
    key: &SigningKey,
    now: OffsetDateTime,
    head_file: Option<&SignedCheckpoint>,
    witness: Option<&SignedCheckpoint>,
) -> Result<Recovered, AuditError> {
    for (what, path, anchor) in [
        ("head file", dir.join(HEAD_FILE), head_file),
        (
            "witness",
            witness_path.map(Path::to_path_buf).unwrap_or_default(),
            witness,
        ),
    ] {
        if let Some(a) = anchor.filter(|a| a.checkpoint.count > 0) {
            return Err(corrupt(
                &path,
                format!(
                    "the {what} says the log holds {} records but there are no log files: \
                     the log was removed; restore it, or move the directory away to start anew",
                    a.checkpoint.count
                ),
            ));
        }
    }
    let mut line = genesis_line(key, now)?;
    line.push(b'\n');
    let mut head_slots = SlotFile::open(&dir.join(HEAD_FILE))?;
    if head_file.is_none() {
        head_slots.write(&line)?;
    }
    let witness_file = match witness_path {
        Some(p) => {
            let mut w = SlotFile::open(p)?;
            if witness.is_none() {
                w.write(&line)?;
                if let Some(parent) = p.parent() {
                    sync_dir(parent)?;
                }
            }
            Some(w)
        }
        None => None,
    };
    let path = dir.join(log_file_name(1));
    create_log_file(&path)?;
    sync_dir(dir)?;
    Ok(Recovered {
        path,
        file_no: 1,
        file_len: 0,
        head: ChainHead::GENESIS,
        sealed_seq: 0,
        last_checkpoint_at: now,
        report: OpenReport {
            created: true,
            files: 1,
            witness_created: witness_path.is_some() && witness.is_none(),
            ..OpenReport::default()
        },
        head_file: head_slots,
        witness_file,
    })
}

/// The first window recovery reads from the end of a log file.
const RECOVERY_WINDOW: u64 = 1 << 20;

/// The end of a log file: at most `window` bytes, starting at a line start
/// (after the first newline of the window, unless the window reaches the
/// start of the file), and the offset where they start.
fn read_tail(path: &Path, window: u64) -> Result<(Vec<u8>, u64), AuditError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let meta = fs::symlink_metadata(path).map_err(|e| AuditError::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(corrupt(path, "not a regular file"));
    }
    let len = meta.len();
    let mut file = fs::File::open(path).map_err(|e| AuditError::io("open", path, e))?;
    let from = len.saturating_sub(window);
    file.seek(SeekFrom::Start(from))
        .map_err(|e| AuditError::io("read", path, e))?;
    let mut bytes = Vec::with_capacity(usize::try_from(len - from).unwrap_or(0));
    file.take(len - from)
        .read_to_end(&mut bytes)
        .map_err(|e| AuditError::io("read", path, e))?;
    if from == 0 {
        return Ok((bytes, 0));
    }
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => {
            bytes.drain(..=i);
            Ok((bytes, from + i as u64 + 1))
        }
        // One line longer than the window: no line starts in it.
        None => Ok((Vec::new(), len)),
    }
}

/// The last checkpoint the log can vouch for.
struct Anchor {
    checkpoint: SignedCheckpoint,
    /// Its line, without newline.
    line: Vec<u8>,
    /// Which of the log files holds it.
    file_index: usize,
    /// The offset just after its line.
    end: u64,
}

/// A checkpoint recovery may continue from: signed by this key, or by
/// another (a key change, reported; `audit verify` needs both keys).
fn trusted(cp: &SignedCheckpoint, key: &SigningKey) -> bool {
    cp.checkpoint.key_id != key.key_id()
        || cp.verify(std::slice::from_ref(key.public_key())).is_ok()
}

/// The whole lines of `bytes` from the end: (start, end) of each, newest first.
fn lines_back(bytes: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    std::iter::from_fn(move || {
        if pos == 0 {
            return None;
        }
        let end = pos - 1;
        let start = bytes[..end]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        pos = start;
        Some((start, end))
    })
}

/// Finds the last trusted checkpoint: in the last file (reading windows
/// from its end that grow until one is found), or as the last line of the
/// file before it (a rotation ends a file with a checkpoint). `None`: a
/// single file with no checkpoint at all. The record line before the
/// checkpoint must be the one it signs.
fn find_anchor(files: &[(u32, PathBuf)], key: &SigningKey) -> Result<Option<Anchor>, AuditError> {
    let last_index = files.len() - 1;
    let path = &files[last_index].1;
    let mut window = RECOVERY_WINDOW;
    loop {
        let (bytes, start) = read_tail(path, window)?;
        if let Some(a) = anchor_in(path, &bytes, start, last_index, key, false)? {
            return Ok(Some(a));
        }
        if start == 0 {
            break;
        }
        window = window.saturating_mul(4);
    }
    if last_index == 0 {
        return Ok(None);
    }
    let path = &files[last_index - 1].1;
    let (bytes, start) = read_tail(path, RECOVERY_WINDOW)?;
    match anchor_in(path, &bytes, start, last_index - 1, key, true)? {
        Some(a) => Ok(Some(a)),
        None => Err(corrupt(
            path,
            "the newest log file holds no signed checkpoint and this file does not end with \
             one; run `maskgate audit verify`",
        )),
    }
}

fn anchor_in(
    path: &Path,
    bytes: &[u8],
    start: u64,
    file_index: usize,
    key: &SigningKey,
    last_line_only: bool,
) -> Result<Option<Anchor>, AuditError> {
    if last_line_only && !bytes.is_empty() && !bytes.ends_with(b"\n") {
        return Ok(None);
    }
    let mut lines = lines_back(bytes);
    while let Some((from, to)) = lines.next() {
        let found = match parse_line(&bytes[from..to]) {
            Ok(Line::Checkpoint(cp)) if trusted(&cp, key) => Some(cp),
            _ => None,
        };
        let Some(cp) = found else {
            if last_line_only {
                return Ok(None);
            }
            continue;
        };
        if let Some((pf, pt)) = lines.next() {
            let c = &cp.checkpoint;
            let ok = match parse_line(&bytes[pf..pt]) {
                Ok(Line::Record(r)) => r.seq == c.seq && r.hash == c.head,
                Ok(Line::Checkpoint(_)) => true,
                Err(_) => false,
            };
            if !ok {
                return Err(corrupt(
                    path,
                    format!(
                        "the line before the last signed checkpoint (seq {}) is not the record \
                         it signs: the log was damaged or edited; run `maskgate audit verify`",
                        c.seq
                    ),
                ));
            }
        }
        let mut line = bytes[from..to].to_vec();
        line.shrink_to_fit();
        return Ok(Some(Anchor {
            checkpoint: cp,
            line,
            file_index,
            end: start + to as u64 + 1,
        }));
    }
    Ok(None)
}

/// Moves the bytes `from..to` of `path` aside (saved, then cut off) and
/// describes them; `head` is the checkpoint the log ends with.
fn set_aside(
    dir: &Path,
    path: &Path,
    from: u64,
    to: u64,
    head: ChainHead,
) -> Result<TornTail, AuditError> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut tail = Vec::new();
    let mut file = File::open(path).map_err(|e| AuditError::io("open", path, e))?;
    file.seek(SeekFrom::Start(from))
        .and_then(|_| file.take(to - from).read_to_end(&mut tail))
        .map_err(|e| AuditError::io("read", path, e))?;
    // Do the whole lines continue the chain from the checkpoint?
    let whole = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut records = 0u64;
    let mut chains = whole == tail.len();
    let (mut seq, mut prev) = (head.seq, head.hash_hex());
    if head.seq == 0 {
        prev = GENESIS.to_string();
    }
    for line in tail[..whole.saturating_sub(1)].split(|&b| b == b'\n') {
        if whole == 0 {
            break;
        }
        records += 1;
        match parse_line(line) {
            Ok(Line::Record(r)) if r.seq == seq + 1 && r.prev == prev => {
                seq = r.seq;
                prev = r.hash.clone();
            }
            _ => chains = false,
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut saved_to = dir.join(format!("{name}.unsealed-{from}"));
    let mut attempt = 1;
    let mut saved = loop {
        match private_file_options()
            .write(true)
            .create_new(true)
            .open(&saved_to)
        {
            Ok(file) => break file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => {
                attempt += 1;
                saved_to = dir.join(format!("{name}.unsealed-{from}-{attempt}"));
            }
            Err(e) => return Err(AuditError::io("create", &saved_to, e)),
        }
    };
    saved
        .write_all(&tail)
        .and_then(|()| saved.sync_all())
        .map_err(|e| AuditError::io("write", &saved_to, e))?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| AuditError::io("open", path, e))?;
    file.set_len(from)
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::io("truncate", path, e))?;
    sync_dir(dir)?;
    let preview: String = String::from_utf8_lossy(&tail[..tail.len().min(80)])
        .escape_debug()
        .collect();
    Ok(TornTail {
        file: path.to_path_buf(),
        offset: from,
        len: tail.len() as u64,
        saved_to,
        preview,
        after_seq: head.seq,
        records,
        chains: chains && records > 0,
    })
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
