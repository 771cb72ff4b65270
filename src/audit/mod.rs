//! The tamper-evident unmask audit log.
//!
//! Every unmask or decrypt request, granted or denied, and every grant,
//! lockout and alert event is one JSON line ([`record`]). Records form a
//! SHA-256 hash chain and are sealed by Ed25519-signed checkpoints
//! ([`chain`], [`keys`]). The file sink ([`file`](mod@file)) appends them
//! with fsync, many records to one fsync under load (group commit), and
//! proves each durable append with an [`AuditReceipt`].
//! [`verify`](mod@verify) needs only the public key; [`query`] and
//! [`report`] serve the security team; [`cli`] holds the `maskgate audit …`
//! entry points.
//!
//! Pure core: no hyper, no tokio, and no other maskgate module. The sink runs
//! one std writer thread; the caller drives time-based checkpoints with
//! [`AuditLog::tick`].
//!
//! # On disk
//!
//! A log directory holds `audit-000001.log`, `audit-000002.log`, … (the
//! chain runs on across files; a file is closed with a checkpoint and a new
//! one started once it passes [`AuditOptions::rotate_bytes`]) and
//! `audit-head.json`, a copy of the newest checkpoint line replaced
//! atomically. The head file anchors the log's length: a log cut back after
//! a checkpoint no longer reaches the head's count, and `verify` says so.
//! Files named `audit-NNNNNN.log.torn-OFFSET` keep the bytes of torn last
//! lines cut off on open.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub mod bench;
pub mod chain;
pub mod cli;
pub mod file;
pub mod keys;
pub mod pg;
pub mod query;
pub mod receipt;
pub mod record;
pub mod report;
pub mod sink;
pub mod verify;

#[cfg(test)]
mod testutil;

pub use chain::{Checkpoint, CheckpointPolicy, SignedCheckpoint};
pub use file::{
    read_witness, AuditLog, AuditOptions, AuditStats, Clock, Done, OpenReport, TornTail,
    WITNESS_FILE,
};
pub use keys::{generate_signing_key, KeyError, PublicKey, SigningKey};
pub use query::Filter;
pub use receipt::{SignedReceipt, RECEIPT_HEADER};
pub use record::{DraftError, Kind, Outcome, Record, RecordDraft};
pub use report::{Report, ReportOptions};
pub use sink::AuditSink;
pub use verify::{
    verify, verify_live, verify_with, verify_with_keys, Finding, FindingKind, VerifyError,
    VerifyOptions, VerifyReport,
};

/// Proof that a record is durable in the audit log: written and fsynced,
/// behind a signed checkpoint.
///
/// Only the audit sinks create receipts, so an API that takes
/// `&AuditReceipt` cannot be called before the audit append succeeded.
#[derive(Clone)]
pub struct AuditReceipt {
    seq: u64,
    hash: [u8; 32],
    key: Option<Arc<SigningKey>>,
}

impl PartialEq for AuditReceipt {
    fn eq(&self, other: &AuditReceipt) -> bool {
        self.seq == other.seq && self.hash == other.hash
    }
}

impl Eq for AuditReceipt {}

impl AuditReceipt {
    /// Private: only code in this module tree (the sinks) makes receipts.
    fn new(seq: u64, hash: [u8; 32], key: Arc<SigningKey>) -> AuditReceipt {
        AuditReceipt {
            seq,
            hash,
            key: Some(key),
        }
    }

    /// The receipt signed by the audit key, for the client (signed here,
    /// on the caller's thread, not on the log's writer).
    pub fn signed(&self) -> Option<SignedReceipt> {
        self.key
            .as_ref()
            .map(|key| SignedReceipt::sign(key, self.seq, &self.hash))
    }

    /// The record's seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The record's hash.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The record's hash in hex (as in the log).
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

impl fmt::Debug for AuditReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditReceipt(seq {}, {})", self.seq, self.hash_hex())
    }
}

/// Why an audit append (or opening the log) failed. The gateway answers an
/// unmask whose append failed with 503 and releases nothing.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file operation failed.
    #[error("audit log: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// An earlier write or fsync failed; nothing is accepted until the log is reopened.
    #[error("audit log failed earlier and accepts no records until it is reopened: {cause}")]
    Poisoned {
        /// The first failure.
        cause: String,
    },
    /// The log was closed (or its writer thread ended).
    #[error("audit log is closed")]
    Closed,
    /// The shared (database) log could not be reached in time; nothing of
    /// the batch was committed. Later appends retry.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// The draft was refused.
    #[error("audit record refused: {0}")]
    Draft(#[from] DraftError),
    /// The signing key could not be used.
    #[error("audit signing key: {0}")]
    Key(#[from] KeyError),
    /// The log on disk is damaged somewhere other than a torn last line, or
    /// disagrees with its head file. Opening refuses to write on top of it.
    #[error("audit log {path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
}

impl AuditError {
    /// A stable error code for the wire and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::Io { .. } => "audit_io_error",
            AuditError::Poisoned { .. } => "audit_log_failed",
            AuditError::Closed => "audit_log_closed",
            AuditError::Unavailable(_) => "audit_log_unavailable",
            AuditError::Draft(_) => "audit_record_refused",
            AuditError::Key(_) => "audit_key_error",
            AuditError::Corrupt { .. } => "audit_log_corrupt",
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, e: std::io::Error) -> AuditError {
        AuditError::Io {
            op,
            path: path.into(),
            source: Arc::new(e),
        }
    }
}
