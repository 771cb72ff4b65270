//! The durable file sink: one writer thread, group commit, torn-line
//! recovery, rotation and the head file.
//!
//! [`AuditLog::append`] hands a draft to the writer thread. The writer takes
//! everything queued (up to 4096 messages), seals the records into one
//! buffer (with a checkpoint line wherever one is due), writes it, calls
//! `File::sync_data` once, and only then calls each `done` with an
//! [`AuditReceipt`]. If the write or the fsync fails, every record of that
//! batch gets the error and the log stays failed (poisoned): every later
//! append fails until the log is reopened, which cuts the partial write back.
//!
//! On open, the last file's tail is read. Bytes after the last newline, and a
//! last whole line that does not parse as a record or checkpoint, are a torn
//! line from a crash: they are saved to `audit-NNNNNN.log.torn-OFFSET`,
//! reported in [`OpenReport::torn`], and cut off; the chain continues from
//! the last whole record. Any other unreadable line refuses the open
//! ([`AuditError::Corrupt`]): `audit verify` and a person decide.
//!
//! The head file (`audit-head.json`) holds the newest checkpoint line,
//! replaced by write-fsync-rename after each checkpoint is durable in the
//! log. It is written first of all when a log is created. Opening refuses a
//! log whose head file is missing, unreadable, or counts more records than
//! the log holds (the log was cut), so a restart cannot quietly paper over a
//! truncation. A head file older than the log's last checkpoint (a crash
//! between the two writes) is brought forward.
//!
//! Startup reads the whole last file (bounded by
//! [`AuditOptions::rotate_bytes`]). One writer per directory: this module
//! does not lock the directory; run one gateway per data directory.

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
use crate::audit::record::{RecordDraft, GENESIS};
use crate::audit::{AuditError, AuditReceipt};

/// The head file's name.
pub const HEAD_FILE: &str = "audit-head.json";
const HEAD_TMP: &str = "audit-head.json.tmp";
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
    /// When checkpoints are written.
    pub checkpoint: CheckpointPolicy,
    /// Start a new file once the current one reaches this size (default
    /// 64 MiB); `None` keeps one file.
    pub rotate_bytes: Option<u64>,
    /// Record times.
    pub clock: Clock,
}

impl Default for AuditOptions {
    fn default() -> AuditOptions {
        AuditOptions {
            group_commit: true,
            checkpoint: CheckpointPolicy::default(),
            rotate_bytes: Some(64 << 20),
            clock: Clock::system(),
        }
    }
}

/// A torn last line found and cut off on open.
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
    /// Records a checkpoint covers.
    pub sealed_seq: u64,
    /// A torn last line that was cut off.
    pub torn: Option<TornTail>,
    /// The head file was behind the log's last checkpoint and was brought forward.
    pub head_repaired: bool,
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
    /// fsync calls.
    pub fsyncs: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
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
}

#[derive(Default)]
struct Shared {
    failed: AtomicBool,
    cause: Mutex<Option<String>>,
    durable_seq: AtomicU64,
    records: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    checkpoints: AtomicU64,
}

impl Shared {
    fn poisoned(&self) -> AuditError {
        let cause = self
            .cause
            .lock()
            .map(|c| c.clone().unwrap_or_default())
            .unwrap_or_default();
        AuditError::Poisoned { cause }
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

impl AuditLog {
    /// Opens (or creates) the log in `dir`, recovers a torn last line, and
    /// starts the writer thread. See the module docs for what refuses an open.
    pub fn open(
        dir: impl AsRef<Path>,
        key: SigningKey,
        options: AuditOptions,
    ) -> Result<AuditLog, AuditError> {
        let dir = dir.as_ref().to_path_buf();
        create_dir(&dir)?;
        let now = options.clock.now();
        let rec = recover(&dir, &key, now)?;
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
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("maskgate-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| AuditError::io("start writer thread for", &dir, e))?;
        Ok(AuditLog {
            dir,
            tx: Some(tx),
            thread: Some(thread),
            shared,
            report: rec.report,
            public_key,
        })
    }

    /// What opening found (a torn line cut, a repaired head file, a new key).
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
    /// [`CheckpointPolicy::every`] has passed with unsealed records. Call it
    /// every second or so.
    pub fn tick(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Tick);
        }
    }

    /// `Ok` while the log accepts records; the first failure otherwise.
    pub fn health(&self) -> Result<(), AuditError> {
        if self.shared.failed.load(Ordering::Acquire) {
            Err(self.shared.poisoned())
        } else {
            Ok(())
        }
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

    fn fail(&mut self, e: AuditError) {
        if self.failed.is_none() {
            if let Ok(mut cause) = self.shared.cause.lock() {
                *cause = Some(e.to_string());
            }
            self.shared.failed.store(true, Ordering::Release);
            self.failed = Some(e);
        }
    }

    /// Seals, writes and fsyncs one batch, then answers it.
    fn process(&mut self, batch: &mut Vec<Msg>) -> Option<SyncSender<Result<(), AuditError>>> {
        let now = self.clock.now();
        let mut out = BatchOut::default();
        let mut sealed: Vec<(Done, u64, [u8; 32])> = Vec::new();
        let mut refused: Vec<(Done, AuditError)> = Vec::new();
        let mut close = None;
        for msg in batch.drain(..) {
            match msg {
                Msg::Append(draft, done) => {
                    if self.failed.is_some() {
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
                Msg::Tick => {
                    if self.failed.is_none() && self.chain.checkpoint_due_by_time(now) {
                        out.checkpoint(&mut self.chain, now);
                    }
                }
                Msg::Close(reply) => close = Some(reply),
                #[cfg(test)]
                Msg::SwapFile(file) => self.file = file,
            }
        }
        if self.failed.is_none() && self.chain.checkpoint_due_by_time(now) {
            out.checkpoint(&mut self.chain, now);
        }
        let result = match out.error.take() {
            Some(e) => Err(e),
            None if out.buf.is_empty() => Ok(()),
            None => self.write_durable(&out.buf),
        };
        // The head file follows the log before anyone hears of the batch.
        // A failure here poisons the log, but the batch itself is durable.
        let head_result = match (&result, &out.last_checkpoint) {
            (Ok(()), Some(line)) => write_head(&self.dir, line),
            _ => Ok(()),
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
                for (done, seq, hash) in sealed {
                    call(done, Ok(AuditReceipt::new(seq, hash)));
                }
            }
            Err(e) => {
                self.fail(e.clone());
                for (done, _, _) in sealed {
                    call(done, Err(e.clone()));
                }
            }
        }
        for (done, e) in refused {
            call(done, Err(e));
        }
        if let Err(e) = head_result {
            self.fail(e);
        }
        if self.failed.is_none() && self.rotate_bytes.is_some_and(|max| self.file_len >= max) {
            if let Err(e) = self.rotate(now) {
                self.fail(e);
            }
        }
        close
    }

    fn path(&self) -> PathBuf {
        self.dir.join(log_file_name(self.file_no))
    }

    fn write_durable(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
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

    /// Seals and durably writes a checkpoint if records are unsealed.
    fn seal_now(&mut self, now: OffsetDateTime) -> Result<(), AuditError> {
        if self.chain.unsealed() == 0 {
            return Ok(());
        }
        let (_, line) = self.chain.checkpoint(now)?;
        self.write_durable(&line)?;
        self.shared.checkpoints.fetch_add(1, Ordering::Relaxed);
        write_head(&self.dir, &line)
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
            self.fail(e.clone());
        }
        result
    }
}

fn create_dir(dir: &Path) -> Result<(), AuditError> {
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

/// Replaces the head file with `line` (write, fsync, rename).
fn write_head(dir: &Path, line: &[u8]) -> Result<(), AuditError> {
    let tmp = dir.join(HEAD_TMP);
    let mut file = private_file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| AuditError::io("create", &tmp, e))?;
    file.write_all(line)
        .and_then(|()| file.sync_data())
        .map_err(|e| AuditError::io("write", &tmp, e))?;
    let head = dir.join(HEAD_FILE);
    fs::rename(&tmp, &head).map_err(|e| AuditError::io("rename", &head, e))
}

/// Reads the head file: `None` when there is none.
pub(crate) fn read_head(dir: &Path) -> Result<Option<SignedCheckpoint>, HeadProblem> {
    let path = dir.join(HEAD_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HeadProblem::Io(e)),
    };
    let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    parse_checkpoint_line(line)
        .map(Some)
        .map_err(|e| HeadProblem::Unreadable(e.to_string()))
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
}

fn corrupt(path: &Path, problem: impl Into<String>) -> AuditError {
    AuditError::Corrupt {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn recover(dir: &Path, key: &SigningKey, now: OffsetDateTime) -> Result<Recovered, AuditError> {
    let files = list_log_files(dir)?;
    let head_path = dir.join(HEAD_FILE);
    let head_file = match read_head(dir) {
        Ok(head) => head,
        Err(HeadProblem::Io(e)) => return Err(AuditError::io("read", &head_path, e)),
        Err(HeadProblem::Unreadable(why)) => {
            return Err(corrupt(
                &head_path,
                format!(
                    "the head file is unreadable ({why}); run `maskgate audit verify` and \
                     restore it from a backup before restarting"
                ),
            ))
        }
    };
    if let Some(head) = &head_file {
        if head.checkpoint.key_id == key.key_id()
            && head.verify(std::slice::from_ref(key.public_key())).is_err()
        {
            return Err(corrupt(
                &head_path,
                "the head file's signature does not verify: it was altered; run \
                 `maskgate audit verify`",
            ));
        }
    }
    let Some((last_no, last_path)) = files.last().cloned() else {
        return create_new_log(dir, key, now, head_file.as_ref());
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

    // Only the end of the log is read: the torn tail, the last record and
    // the last checkpoint are all near it (memory stays flat however large
    // the segment grew). The window grows until both are found or the
    // file is read whole.
    let (tail, tail_start) = read_tail(&last_path, RECOVERY_WINDOW)?;
    let cut = torn_cut(&tail);
    let mut file_len = tail_start + cut as u64;
    if cut < tail.len() {
        report.torn = Some(cut_torn_tail(dir, &last_path, &tail[cut..], file_len)?);
    }
    drop(tail);

    // Walk back to the last record and the last checkpoint.
    let mut last_record: Option<(u64, [u8; 32])> = None;
    let mut last_checkpoint: Option<(SignedCheckpoint, Vec<u8>)> = None;
    let mut index = files.len();
    loop {
        let path = &files[index - 1].1;
        let end = if index == files.len() {
            Some(file_len)
        } else {
            None
        };
        scan_file_back(path, end, &mut last_record, &mut last_checkpoint)?;
        if (last_record.is_some() && last_checkpoint.is_some()) || index == 1 {
            break;
        }
        index -= 1;
    }
    // Unchanged when no torn tail was cut.
    file_len = file_len.min(
        fs::symlink_metadata(&last_path)
            .map_err(|e| AuditError::io("stat", &last_path, e))?
            .len(),
    );

    let head = match last_record {
        Some((seq, hash)) => ChainHead { seq, hash },
        None => ChainHead::GENESIS,
    };
    let mut sealed_seq = 0;
    let mut last_checkpoint_at = now;
    if let Some((cp, line)) = &last_checkpoint {
        let c = &cp.checkpoint;
        let head_matches = if c.seq == 0 {
            c.head == GENESIS
        } else {
            c.seq != head.seq || c.head == head.hash_hex()
        };
        if c.seq > head.seq || !head_matches {
            return Err(corrupt(
                &last_path,
                format!(
                    "the last checkpoint (seq {}) does not match the last record (seq {}); \
                     run `maskgate audit verify`",
                    c.seq, head.seq
                ),
            ));
        }
        sealed_seq = c.seq;
        last_checkpoint_at = c.time;
        if c.key_id != key.key_id() {
            report.key_changed = Some(c.key_id.clone());
        }
        if c.seq > head_file.checkpoint.seq {
            let mut line = line.clone();
            line.push(b'\n');
            write_head(dir, &line)?;
            report.head_repaired = true;
        }
    } else if head_file.checkpoint.key_id != key.key_id() {
        report.key_changed = Some(head_file.checkpoint.key_id.clone());
    }
    if head_file.checkpoint.count > head.seq {
        return Err(corrupt(
            &head_path,
            format!(
                "the signed head says the log holds {} records but it ends at seq {}: records \
                 {}..={} were cut off. Run `maskgate audit verify`; to start a log anyway, move \
                 the directory away",
                head_file.checkpoint.count,
                head.seq,
                head.seq + 1,
                head_file.checkpoint.count
            ),
        ));
    }
    report.last_seq = head.seq;
    report.sealed_seq = sealed_seq;
    Ok(Recovered {
        path: last_path,
        file_no: last_no,
        file_len,
        head,
        sealed_seq,
        last_checkpoint_at,
        report,
    })
}

/// A new log: the genesis head file first, then the first log file.
fn create_new_log(
    dir: &Path,
    key: &SigningKey,
    now: OffsetDateTime,
    head_file: Option<&SignedCheckpoint>,
) -> Result<Recovered, AuditError> {
    match head_file {
        Some(head) if head.checkpoint.count > 0 => {
            return Err(corrupt(
                &dir.join(HEAD_FILE),
                format!(
                    "the head file says the log holds {} records but there are no log files: \
                     the log was removed; restore it, or move the directory away to start anew",
                    head.checkpoint.count
                ),
            ))
        }
        Some(_) => {}
        None => {
            let genesis = Checkpoint {
                seq: 0,
                head: GENESIS.to_string(),
                count: 0,
                time: now,
                key_id: key.key_id().to_string(),
            }
            .sign(key)?;
            let mut line = genesis.to_line()?;
            line.push(b'\n');
            write_head(dir, &line)?;
        }
    }
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
            ..OpenReport::default()
        },
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

/// [`scan_back`] over a file's lines up to `end` (its whole length when
/// `None`), reading windows from the end that grow until the last record
/// and the last checkpoint are both found or the start is reached.
fn scan_file_back(
    path: &Path,
    end: Option<u64>,
    last_record: &mut Option<(u64, [u8; 32])>,
    last_checkpoint: &mut Option<(SignedCheckpoint, Vec<u8>)>,
) -> Result<(), AuditError> {
    let mut window = RECOVERY_WINDOW;
    loop {
        let (mut bytes, start) = read_tail(path, window)?;
        if let Some(end) = end {
            bytes.truncate(usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX));
        }
        let (mut record, mut checkpoint) = (*last_record, last_checkpoint.clone());
        scan_back(path, &bytes, &mut record, &mut checkpoint)?;
        if (record.is_some() && checkpoint.is_some()) || start == 0 {
            *last_record = record;
            *last_checkpoint = checkpoint;
            return Ok(());
        }
        window = window.saturating_mul(4);
    }
}

/// Where a torn tail starts: after the last newline, or at the start of the
/// last whole line when that line does not parse. `bytes.len()` when whole.
fn torn_cut(bytes: &[u8]) -> usize {
    let mut cut = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if cut > 0 {
        let start = bytes[..cut - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        if parse_line(&bytes[start..cut - 1]).is_err() {
            cut = start;
        }
    }
    cut
}

fn cut_torn_tail(dir: &Path, path: &Path, torn: &[u8], cut: u64) -> Result<TornTail, AuditError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut saved_to = dir.join(format!("{name}.torn-{cut}"));
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
                saved_to = dir.join(format!("{name}.torn-{cut}-{attempt}"));
            }
            Err(e) => return Err(AuditError::io("create", &saved_to, e)),
        }
    };
    saved
        .write_all(torn)
        .and_then(|()| saved.sync_all())
        .map_err(|e| AuditError::io("write", &saved_to, e))?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| AuditError::io("open", path, e))?;
    file.set_len(cut)
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::io("truncate", path, e))?;
    sync_dir(dir)?;
    let preview: String = String::from_utf8_lossy(&torn[..torn.len().min(80)])
        .escape_debug()
        .collect();
    Ok(TornTail {
        file: path.to_path_buf(),
        offset: cut,
        len: torn.len() as u64,
        saved_to,
        preview,
    })
}

/// Scans `bytes` (whole lines) from the end, filling in the last record and
/// the last checkpoint not yet found. Every line looked at must parse.
fn scan_back(
    path: &Path,
    bytes: &[u8],
    last_record: &mut Option<(u64, [u8; 32])>,
    last_checkpoint: &mut Option<(SignedCheckpoint, Vec<u8>)>,
) -> Result<(), AuditError> {
    if bytes.is_empty() {
        return Ok(());
    }
    let Some(body) = bytes.strip_suffix(b"\n") else {
        return Err(corrupt(
            path,
            "the file does not end with a newline but is not the last file; run \
             `maskgate audit verify`",
        ));
    };
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    for (i, line) in lines.iter().enumerate().rev() {
        if last_record.is_some() && last_checkpoint.is_some() {
            break;
        }
        match parse_line(line) {
            Ok(Line::Record(r)) => {
                if last_record.is_none() {
                    let mut hash = [0u8; 32];
                    hex::decode_to_slice(&r.hash, &mut hash)
                        .map_err(|_| corrupt(path, format!("line {}: bad hash encoding", i + 1)))?;
                    *last_record = Some((r.seq, hash));
                }
            }
            Ok(Line::Checkpoint(cp)) => {
                if last_checkpoint.is_none() {
                    *last_checkpoint = Some((cp, line.to_vec()));
                }
            }
            Err(e) => {
                return Err(corrupt(
                    path,
                    format!(
                        "line {} is unreadable ({e}) and is not the last line, so it is not a \
                         torn write; run `maskgate audit verify`",
                        i + 1
                    ),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "file_tests.rs"]
mod tests;
