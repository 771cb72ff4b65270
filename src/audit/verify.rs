//! `audit verify`: checks a log with nothing but the public key.
//!
//! Every line is read; none is skipped. A line that does not parse, a
//! record whose bytes do not match its hash, a break in the seq/prev chain,
//! a checkpoint whose signature does not verify or that is signed by another
//! key, a checkpoint that disagrees with the chain, a missing file, and a log
//! that ends before its signed head (`audit-head.json`) are each reported as
//! the first [`Finding`], naming the file, line and seq.
//!
//! Records after the newest checkpoint are a finding ([`FindingKind::Unsealed`]):
//! the gateway ends every batch with a checkpoint before it releases
//! anything, so unsigned records are a batch that crashed before its
//! checkpoint (never released) or lines someone added, and nothing vouches
//! for them. (A live log, [`verify_live`], may be between the two writes.)
//!
//! What the log directory alone cannot show: whole batches cut off the end
//! together with the head file restored from an older copy. The anchors
//! outside it catch that ([`VerifyOptions`]): a witness directory (its
//! `audit-witness.json`, written after every batch) and signed receipts
//! kept by clients. A log that ends before a witness's checkpoint, or that
//! lacks a receipt's record, is tampered.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::chain::{
    parse_line, Checkpoint, Line, SignatureProblem, SignedCheckpoint, CHECKPOINT_PREFIX,
};
use crate::audit::file::{
    list_log_files, log_file_name, read_anchor_file, read_head, HeadProblem, HEAD_FILE,
    WITNESS_FILE,
};
use crate::audit::keys::PublicKey;
use crate::audit::receipt::SignedReceipt;
use crate::audit::record::{format_time, LineError, Record, GENESIS};
use crate::audit::AuditError;

/// How far ahead (in lines) a break in the chain is examined to tell a
/// deletion from a reordering or an inserted copy.
const LOOKAHEAD: usize = 100_000;
/// Records remembered to recognise an inserted copy of an earlier record.
const RECENT: usize = 4096;

/// What kind of damage was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindingKind {
    /// A line that is not a record or checkpoint at all.
    Malformed,
    /// A record whose bytes do not match its hash, or are not canonical.
    Edited,
    /// Records missing from the chain (a seq gap, or records a checkpoint
    /// covers that are not before it).
    Deleted,
    /// A record that does not belong where it is (a copy, or a second record
    /// with a seq already used).
    Inserted,
    /// Records out of order.
    Reordered,
    /// A record whose `prev` is not the previous record's hash (a record
    /// before it was replaced and re-hashed).
    BrokenLink,
    /// A checkpoint whose head or count disagrees with the chain (records
    /// were rewritten).
    CheckpointMismatch,
    /// A checkpoint whose signature does not verify.
    SignatureInvalid,
    /// A checkpoint signed by a key that is not trusted.
    KeyReplaced,
    /// The log ends before the records its signed head covers.
    CutOff,
    /// The last line has no newline (a crash mid-write, before restart).
    Torn,
    /// A log file is missing from the numbered sequence.
    MissingFile,
    /// The head file is missing or unreadable.
    HeadMissing,
    /// Records after the last checkpoint: no signature vouches for them.
    Unsealed,
    /// A signed receipt whose record the log does not hold.
    ReceiptMissing,
}

impl FindingKind {
    /// A short name (`edited`, `cut_off`).
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Malformed => "malformed",
            FindingKind::Edited => "edited",
            FindingKind::Deleted => "deleted",
            FindingKind::Inserted => "inserted",
            FindingKind::Reordered => "reordered",
            FindingKind::BrokenLink => "broken_link",
            FindingKind::CheckpointMismatch => "checkpoint_mismatch",
            FindingKind::SignatureInvalid => "signature_invalid",
            FindingKind::KeyReplaced => "key_replaced",
            FindingKind::CutOff => "cut_off",
            FindingKind::Torn => "torn",
            FindingKind::MissingFile => "missing_file",
            FindingKind::HeadMissing => "head_missing",
            FindingKind::Unsealed => "unsealed",
            FindingKind::ReceiptMissing => "receipt_missing",
        }
    }
}

/// The first damage found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// What kind.
    pub kind: FindingKind,
    /// The file (name within the log directory).
    pub file: String,
    /// The line (from 1; 0 for the file as a whole).
    pub line: u64,
    /// The record concerned: the seq the line claims, or the first seq
    /// missing, or the seq expected where nothing readable is.
    pub seq: Option<u64>,
    /// What exactly, in words.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, " line {}", self.line)?;
        }
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}: {}", self.kind.name(), self.detail)
    }
}

/// The outcome of a verification that could read the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Log files read.
    pub files: usize,
    /// Records verified (before the first finding, if any).
    pub records: u64,
    /// Checkpoints verified.
    pub checkpoints: u64,
    /// The last good record's seq.
    pub last_seq: u64,
    /// Its hash.
    pub head: String,
    /// Records covered by a verified checkpoint.
    pub sealed_seq: u64,
    /// The newest verified checkpoint.
    pub last_checkpoint: Option<Checkpoint>,
    /// Records after the newest checkpoint: normal while the gateway runs
    /// (sealed within a minute); after a clean shutdown, a sign of a crash
    /// or of a cut.
    pub unsealed: u64,
    /// Bytes of an unfinished last line ignored by [`verify_live`] (a write
    /// in progress); always 0 for [`verify`].
    pub in_progress_bytes: u64,
    /// The first damage, if any.
    pub problem: Option<Finding>,
    /// Witnesses compared with the log.
    pub witnesses: usize,
    /// Receipts checked against the log.
    pub receipts: u64,
    /// Every receipt whose record the log does not hold.
    pub receipts_missing: Vec<Finding>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none() && self.receipts_missing.is_empty()
    }

    /// 0 when OK, 1 when tampered (as ripgrep's match/no-match; 2 is for errors).
    pub fn exit_code(&self) -> u8 {
        if self.is_ok() {
            0
        } else {
            1
        }
    }

    /// A few lines for a person.
    pub fn render(&self) -> String {
        let mut out = String::new();
        match self.problem.as_ref().or(self.receipts_missing.first()) {
            None => out.push_str("audit log OK\n"),
            Some(f) => out.push_str(&format!("audit log TAMPERED: {f}\n")),
        }
        for f in self
            .receipts_missing
            .iter()
            .skip(usize::from(self.problem.is_none()))
        {
            out.push_str(&format!("  also: {f}\n"));
        }
        if self.witnesses > 0 || self.receipts > 0 {
            out.push_str(&format!(
                "  compared with {} witness(es) and {} receipt(s)\n",
                self.witnesses, self.receipts
            ));
        }
        let verb = if self.is_ok() { "" } else { " before it" };
        out.push_str(&format!(
            "  {} file(s), {} record(s) and {} checkpoint(s) verified{verb}; last seq {}\n",
            self.files, self.records, self.checkpoints, self.last_seq
        ));
        match &self.last_checkpoint {
            Some(c) => out.push_str(&format!(
                "  sealed through seq {} by checkpoint of {} (key {}), head {}\n",
                c.seq,
                format_time(c.time).unwrap_or_default(),
                c.key_id,
                c.head
            )),
            None => out.push_str("  no checkpoint verified\n"),
        }
        if self.is_ok() && self.unsealed > 0 {
            out.push_str(&format!(
                "  {} record(s) after the last checkpoint are not sealed yet (normal while the \
                 gateway runs; after a clean shutdown they mean a crash or a cut)\n",
                self.unsealed
            ));
        }
        out
    }
}

/// Why verification could not run (exit code 2).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Reading failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The directory holds no log files.
    #[error("{0} holds no audit log files (audit-NNNNNN.log)")]
    NoLog(PathBuf),
    /// No public key was given.
    #[error("no public key to verify with")]
    NoKey,
    /// A witness or receipt given to compare with could not be used.
    #[error("{0}")]
    Anchor(String),
}

/// What to compare the log with besides its own head file.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Witness directories (each holding `audit-witness.json`).
    pub witnesses: Vec<PathBuf>,
    /// Files of receipts, one `X-Maskgate-Audit-Receipt` value per line.
    pub receipts: Vec<PathBuf>,
}

/// One receipt to check, from `file` line `line`.
struct ReceiptCheck {
    file: String,
    line: u64,
    receipt: SignedReceipt,
}

/// Reads and checks the signatures of the receipts in `path`.
fn read_receipts(path: &Path, keys: &[PublicKey]) -> Result<Vec<ReceiptCheck>, VerifyError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    let name = path.display().to_string();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let mut line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name
                .trim()
                .eq_ignore_ascii_case(crate::audit::receipt::RECEIPT_HEADER)
            {
                line = value.trim();
            }
        }
        let receipt = SignedReceipt::parse(line)
            .and_then(|r| r.verify(keys).map(|()| r))
            .map_err(|e| VerifyError::Anchor(format!("{name} line {}: {e}", i + 1)))?;
        out.push(ReceiptCheck {
            file: name.clone(),
            line: i as u64 + 1,
            receipt,
        });
    }
    Ok(out)
}

/// Reads and checks the signature of a witness.
fn read_witness_checked(
    dir: &Path,
    keys: &[PublicKey],
) -> Result<(String, SignedCheckpoint), VerifyError> {
    let path = dir.join(WITNESS_FILE);
    let name = path.display().to_string();
    let witness = match read_anchor_file(&path) {
        Ok(Some(w)) => w,
        Ok(None) => {
            return Err(VerifyError::Anchor(format!(
                "{name}: no witness file there"
            )))
        }
        Err(HeadProblem::Io(e)) => return Err(io_error(&path, e)),
        Err(HeadProblem::Unreadable(why)) => {
            return Err(VerifyError::Anchor(format!("{name}: unreadable: {why}")))
        }
    };
    witness
        .verify(keys)
        .map_err(|e| VerifyError::Anchor(format!("{name}: the witness {e}")))?;
    Ok((name, witness))
}

fn io_error(path: &Path, e: std::io::Error) -> VerifyError {
    VerifyError::Io {
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

/// Verifies the log in `dir` with one public key.
pub fn verify(dir: &Path, key: &PublicKey) -> Result<VerifyReport, VerifyError> {
    verify_with_keys(dir, std::slice::from_ref(key))
}

/// Verifies the log in `dir`; a checkpoint may be signed by any of `keys`
/// (the old and the new key after a key change).
pub fn verify_with_keys(dir: &Path, keys: &[PublicKey]) -> Result<VerifyReport, VerifyError> {
    run(dir, keys, false, &VerifyOptions::default())
}

/// [`verify_with_keys`], also comparing the log with witnesses and receipts.
pub fn verify_with(
    dir: &Path,
    keys: &[PublicKey],
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    run(dir, keys, false, options)
}

/// Verifies a log a gateway is writing to (the admin API): as
/// [`verify_with_keys`], except that an unfinished last line of the last
/// file is taken for a write in progress and left out
/// ([`VerifyReport::in_progress_bytes`]) instead of reported as torn.
pub fn verify_live(dir: &Path, keys: &[PublicKey]) -> Result<VerifyReport, VerifyError> {
    run(dir, keys, true, &VerifyOptions::default())
}

fn run(
    dir: &Path,
    keys: &[PublicKey],
    live: bool,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    if keys.is_empty() {
        return Err(VerifyError::NoKey);
    }
    let mut witnesses = Vec::new();
    for w in &options.witnesses {
        witnesses.push(read_witness_checked(w, keys)?);
    }
    let mut receipts = Vec::new();
    for r in &options.receipts {
        receipts.extend(read_receipts(r, keys)?);
    }
    let mut watched: HashSet<u64> = witnesses.iter().map(|(_, w)| w.checkpoint.seq).collect();
    watched.extend(receipts.iter().map(|r| r.receipt.seq));
    let files = list_log_files(dir).map_err(|e| match e {
        AuditError::Io { source, path, .. } => VerifyError::Io { path, source },
        other => VerifyError::Io {
            path: dir.to_path_buf(),
            source: Arc::new(std::io::Error::other(other.to_string())),
        },
    })?;
    if files.is_empty() {
        // Every file gone: tampering if a signed anchor says records existed.
        let head_count = read_head(dir)
            .ok()
            .flatten()
            .map_or(0, |h| h.checkpoint.count);
        let anchored = witnesses
            .iter()
            .map(|(_, w)| w.checkpoint.count)
            .chain([head_count])
            .max()
            .unwrap_or(0);
        if anchored == 0 {
            return Err(VerifyError::NoLog(dir.to_path_buf()));
        }
        let problem = Finding {
            kind: FindingKind::MissingFile,
            file: log_file_name(1),
            line: 0,
            seq: Some(1),
            detail: format!(
                "every log file is missing, but a signed anchor covers {anchored} records"
            ),
        };
        return Ok(VerifyReport {
            files: 0,
            records: 0,
            checkpoints: 0,
            last_seq: 0,
            head: GENESIS.to_string(),
            sealed_seq: 0,
            last_checkpoint: None,
            unsealed: 0,
            in_progress_bytes: 0,
            problem: Some(problem),
            witnesses: witnesses.len(),
            receipts: receipts.len() as u64,
            receipts_missing: Vec::new(),
        });
    }
    let head = match read_head(dir) {
        Ok(head) => Ok(head),
        Err(HeadProblem::Io(e)) => return Err(io_error(&dir.join(HEAD_FILE), e)),
        Err(HeadProblem::Unreadable(why)) => Err(why),
    };
    let anchor_seq = match &head {
        Ok(Some(h)) => Some(h.checkpoint.seq),
        _ => None,
    };
    let mut v = Verifier {
        keys,
        last_seq: 0,
        head: GENESIS.to_string(),
        records: 0,
        checkpoints: 0,
        sealed_seq: 0,
        last_checkpoint: None,
        recent: VecDeque::new(),
        anchor_seq,
        anchor_hash: None,
        last_file: String::new(),
        last_line: 0,
        live,
        in_progress_bytes: 0,
        watched,
        seen: HashMap::new(),
        unsealed_from: None,
    };
    let mut problem = None;
    for (expected_no, (no, path)) in (1u32..).zip(&files) {
        if *no != expected_no {
            problem = Some(Finding {
                kind: FindingKind::MissingFile,
                file: log_file_name(expected_no),
                line: 0,
                seq: Some(v.last_seq + 1),
                detail: format!(
                    "log file {} is missing (the next present is {})",
                    log_file_name(expected_no),
                    log_file_name(*no)
                ),
            });
            break;
        }
        problem = v.check_file(path, expected_no as usize == files.len())?;
        if problem.is_some() {
            break;
        }
    }
    let scanned_whole = problem.is_none();
    if problem.is_none() && !live && v.last_seq > v.sealed_seq {
        let (file, line) = v.unsealed_from.clone().unwrap_or_default();
        problem = Some(Finding {
            kind: FindingKind::Unsealed,
            file,
            line,
            seq: Some(v.sealed_seq + 1),
            detail: format!(
                "records {}..={} follow the last checkpoint and no signature covers them: a \
                 batch cut short by a crash (never released) or records someone appended. \
                 Restarting the gateway moves them aside and records an incident",
                v.sealed_seq + 1,
                v.last_seq
            ),
        });
    }
    if problem.is_none() {
        problem = v.check_head(head);
    }
    if problem.is_none() {
        problem = witnesses
            .iter()
            .find_map(|(name, w)| v.check_anchor(name, w));
    }
    let receipts_missing: Vec<Finding> = receipts
        .iter()
        .filter_map(|r| v.check_receipt(r, scanned_whole))
        .collect();
    Ok(VerifyReport {
        files: files.len(),
        records: v.records,
        checkpoints: v.checkpoints,
        last_seq: v.last_seq,
        head: v.head,
        sealed_seq: v.sealed_seq,
        unsealed: v.last_seq - v.sealed_seq,
        last_checkpoint: v.last_checkpoint,
        in_progress_bytes: v.in_progress_bytes,
        problem,
        witnesses: witnesses.len(),
        receipts: receipts.len() as u64,
        receipts_missing,
    })
}

struct Seen {
    seq: u64,
    hash: String,
    file: String,
    line: u64,
}

struct Verifier<'k> {
    keys: &'k [PublicKey],
    last_seq: u64,
    head: String,
    records: u64,
    checkpoints: u64,
    sealed_seq: u64,
    last_checkpoint: Option<Checkpoint>,
    recent: VecDeque<Seen>,
    anchor_seq: Option<u64>,
    anchor_hash: Option<String>,
    last_file: String,
    last_line: u64,
    live: bool,
    in_progress_bytes: u64,
    /// Seqs whose hashes a witness or receipt names.
    watched: HashSet<u64>,
    seen: HashMap<u64, String>,
    /// Where the first record after the last checkpoint is.
    unsealed_from: Option<(String, u64)>,
}

impl Verifier<'_> {
    /// A witness: the log must reach its checkpoint and hold its head.
    fn check_anchor(&self, name: &str, w: &SignedCheckpoint) -> Option<Finding> {
        let c = &w.checkpoint;
        if c.count > self.last_seq || c.seq > self.last_seq {
            return Some(Finding {
                kind: FindingKind::CutOff,
                file: self.last_file.clone(),
                line: self.last_line + 1,
                seq: Some(self.last_seq + 1),
                detail: format!(
                    "the log ends at seq {} but the witness {name} signed {} records: records \
                     {}..={} were cut off",
                    self.last_seq,
                    c.count,
                    self.last_seq + 1,
                    c.count
                ),
            });
        }
        let held = if c.seq == 0 {
            Some(GENESIS)
        } else {
            self.seen.get(&c.seq).map(String::as_str)
        };
        if held != Some(c.head.as_str()) {
            return Some(Finding {
                kind: FindingKind::CheckpointMismatch,
                file: name.to_owned(),
                line: 0,
                seq: Some(c.seq),
                detail: format!(
                    "the witness names another hash for seq {} than the log holds: the log was \
                     rewritten",
                    c.seq
                ),
            });
        }
        None
    }

    /// A receipt: the log must hold its record, with its hash.
    fn check_receipt(&self, r: &ReceiptCheck, scanned_whole: bool) -> Option<Finding> {
        let seq = r.receipt.seq;
        let detail = match self.seen.get(&seq) {
            Some(hash) if *hash == r.receipt.hash => return None,
            Some(_) => format!(
                "the receipt for seq {seq} names hash {}, but the log holds another record at \
                 seq {seq}",
                r.receipt.hash
            ),
            None if seq > self.last_seq && scanned_whole => format!(
                "the receipt for seq {seq} (hash {}) is signed, but the log ends at seq {}: the \
                 record was cut off",
                r.receipt.hash, self.last_seq
            ),
            // Not reached: the first finding stopped the scan before it.
            None => return None,
        };
        Some(Finding {
            kind: FindingKind::ReceiptMissing,
            file: r.file.clone(),
            line: r.line,
            seq: Some(seq),
            detail,
        })
    }

    fn check_file(&mut self, path: &Path, last: bool) -> Result<Option<Finding>, VerifyError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.last_file.clone_from(&name);
        self.last_line = 0;
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| io_error(path, e))?;
            if n == 0 {
                return Ok(None);
            }
            line_no += 1;
            self.last_line = line_no;
            let finding = |kind, seq, detail: String| Finding {
                kind,
                file: name.clone(),
                line: line_no,
                seq,
                detail,
            };
            let expected = self.last_seq + 1;
            let Some(line) = buf.strip_suffix(b"\n") else {
                if self.live && last {
                    self.in_progress_bytes = buf.len() as u64;
                    self.last_line = line_no - 1;
                    return Ok(None);
                }
                return Ok(Some(finding(
                    FindingKind::Torn,
                    Some(expected),
                    format!(
                        "the last line has no newline ({} bytes): a write torn by a crash, or a \
                         cut; restarting the gateway cuts it off and saves it",
                        buf.len()
                    ),
                )));
            };
            let parsed = match parse_line(line) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let what = if line.starts_with(CHECKPOINT_PREFIX) {
                        "checkpoint"
                    } else {
                        "record"
                    };
                    let (kind, seq) = match e {
                        LineError::Malformed(_) => (FindingKind::Malformed, Some(expected)),
                        LineError::NotCanonical => (FindingKind::Edited, Some(expected)),
                        LineError::HashMismatch { seq } => (FindingKind::Edited, Some(seq)),
                    };
                    return Ok(Some(finding(kind, seq, format!("{what} line: {e}"))));
                }
            };
            let record = match parsed {
                Line::Checkpoint(cp) => {
                    if let Some((kind, seq, detail)) = self.check_checkpoint(&cp) {
                        return Ok(Some(finding(kind, Some(seq), detail)));
                    }
                    continue;
                }
                Line::Record(r) => r,
            };
            if record.seq == expected {
                if record.prev != self.head {
                    return Ok(Some(finding(
                        FindingKind::BrokenLink,
                        Some(record.seq),
                        format!(
                            "its prev is not the hash of record seq {}: that record (or this \
                             one) was replaced and re-hashed",
                            self.last_seq
                        ),
                    )));
                }
                self.accept(&record, &name, line_no);
                continue;
            }
            if record.seq < expected {
                let detail = match self.recent.iter().find(|s| s.seq == record.seq) {
                    Some(s) if s.hash == record.hash => format!(
                        "a copy of record seq {} ({} line {}) inserted after seq {}",
                        s.seq, s.file, s.line, self.last_seq
                    ),
                    Some(s) => format!(
                        "a second record claiming seq {} (the first is {} line {})",
                        s.seq, s.file, s.line
                    ),
                    None => format!(
                        "record seq {} appears after seq {}: inserted or moved back",
                        record.seq, self.last_seq
                    ),
                };
                return Ok(Some(finding(
                    FindingKind::Inserted,
                    Some(record.seq),
                    detail,
                )));
            }
            // record.seq > expected: look ahead to tell a deletion from a
            // reordering or an early copy of a later record.
            let ahead = look_ahead(&mut reader, line_no, &record, expected)
                .map_err(|e| io_error(path, e))?;
            let found = match ahead {
                Ahead::Copy(at) => finding(
                    FindingKind::Inserted,
                    Some(record.seq),
                    format!(
                        "a copy of record seq {} (which also appears at line {at}) inserted \
                         where seq {expected} belongs",
                        record.seq
                    ),
                ),
                Ahead::Expected(at) => finding(
                    FindingKind::Reordered,
                    Some(record.seq),
                    format!(
                        "record seq {} comes before seq {expected}, which is at line {at}",
                        record.seq
                    ),
                ),
                Ahead::Neither => finding(
                    FindingKind::Deleted,
                    Some(expected),
                    format!(
                        "records {expected}..={} are missing: the line holds seq {}",
                        record.seq - 1,
                        record.seq
                    ),
                ),
            };
            return Ok(Some(found));
        }
    }

    fn accept(&mut self, record: &Record, file: &str, line: u64) {
        if self.last_seq == self.sealed_seq {
            self.unsealed_from = Some((file.to_string(), line));
        }
        if self.watched.contains(&record.seq) {
            self.seen.insert(record.seq, record.hash.clone());
        }
        self.last_seq = record.seq;
        self.head.clone_from(&record.hash);
        self.records += 1;
        if self.anchor_seq == Some(record.seq) {
            self.anchor_hash = Some(record.hash.clone());
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(Seen {
            seq: record.seq,
            hash: record.hash.clone(),
            file: file.to_string(),
            line,
        });
    }

    /// Checks a checkpoint against the keys and the chain so far.
    fn check_checkpoint(&mut self, cp: &SignedCheckpoint) -> Option<(FindingKind, u64, String)> {
        let c = &cp.checkpoint;
        if let Err(problem) = cp.verify(self.keys) {
            let kind = match problem {
                SignatureProblem::UnknownKey { .. } => FindingKind::KeyReplaced,
                SignatureProblem::BadSignature(_) => FindingKind::SignatureInvalid,
            };
            return Some((kind, c.seq, format!("checkpoint {problem}")));
        }
        if c.count != c.seq {
            return Some((
                FindingKind::CheckpointMismatch,
                c.seq,
                format!(
                    "checkpoint count {} differs from its seq {}",
                    c.count, c.seq
                ),
            ));
        }
        if c.seq > self.last_seq {
            return Some((
                FindingKind::Deleted,
                self.last_seq + 1,
                format!(
                    "the signed checkpoint covers {} records but only {} precede it: records \
                     {}..={} are missing",
                    c.count,
                    self.last_seq,
                    self.last_seq + 1,
                    c.seq
                ),
            ));
        }
        if c.seq < self.last_seq {
            return Some((
                FindingKind::CheckpointMismatch,
                c.seq + 1,
                format!(
                    "the checkpoint covers records up to seq {} but seq {} precedes it: records \
                     were added before it",
                    c.seq, self.last_seq
                ),
            ));
        }
        if c.head != self.head {
            return Some((
                FindingKind::CheckpointMismatch,
                self.sealed_seq + 1,
                format!(
                    "the signed head of seq {} differs from the chain: records {}..={} were \
                     rewritten",
                    c.seq,
                    self.sealed_seq + 1,
                    c.seq
                ),
            ));
        }
        self.sealed_seq = c.seq;
        self.checkpoints += 1;
        self.last_checkpoint = Some(c.clone());
        None
    }

    /// Checks the head file against the verified chain.
    fn check_head(&mut self, head: Result<Option<SignedCheckpoint>, String>) -> Option<Finding> {
        let finding = |kind, line, seq, detail| {
            Some(Finding {
                kind,
                file: HEAD_FILE.to_string(),
                line,
                seq,
                detail,
            })
        };
        let head = match head {
            Err(why) => {
                return finding(
                    FindingKind::HeadMissing,
                    1,
                    None,
                    format!("the head file is unreadable: {why}"),
                )
            }
            Ok(None) => {
                return finding(
                    FindingKind::HeadMissing,
                    0,
                    None,
                    "the head file is missing, so a log cut after a checkpoint cannot be told \
                     from a whole one"
                        .to_string(),
                )
            }
            Ok(Some(head)) => head,
        };
        let c = &head.checkpoint;
        if let Err(problem) = head.verify(self.keys) {
            let kind = match problem {
                SignatureProblem::UnknownKey { .. } => FindingKind::KeyReplaced,
                SignatureProblem::BadSignature(_) => FindingKind::SignatureInvalid,
            };
            return finding(kind, 1, Some(c.seq), format!("head {problem}"));
        }
        if c.count > self.last_seq || c.seq > self.last_seq {
            return Some(Finding {
                kind: FindingKind::CutOff,
                file: self.last_file.clone(),
                line: self.last_line + 1,
                seq: Some(self.last_seq + 1),
                detail: format!(
                    "the log ends at seq {} but its signed head ({HEAD_FILE}) covers {} records: \
                     records {}..={} were cut off",
                    self.last_seq,
                    c.count,
                    self.last_seq + 1,
                    c.count
                ),
            });
        }
        let expected_head = if c.seq == 0 {
            Some(GENESIS.to_string())
        } else {
            self.anchor_hash.clone()
        };
        if expected_head.as_deref() != Some(c.head.as_str()) {
            return finding(
                FindingKind::CheckpointMismatch,
                1,
                Some(c.seq),
                format!(
                    "the signed head names a different hash for seq {} than the log holds",
                    c.seq
                ),
            );
        }
        None
    }
}

enum Ahead {
    /// The same record (same hash) appears again at this line.
    Copy(u64),
    /// The expected seq appears at this line.
    Expected(u64),
    Neither,
}

fn look_ahead(
    reader: &mut BufReader<File>,
    line_no: u64,
    record: &Record,
    expected: u64,
) -> std::io::Result<Ahead> {
    let mut buf = Vec::new();
    let mut expected_at = None;
    for offset in 1..=LOOKAHEAD as u64 {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if let Ok(Line::Record(r)) = parse_line(line) {
            if r.hash == record.hash {
                return Ok(Ahead::Copy(line_no + offset));
            }
            if r.seq == expected && expected_at.is_none() {
                expected_at = Some(line_no + offset);
            }
        }
    }
    Ok(expected_at.map_or(Ahead::Neither, Ahead::Expected))
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
