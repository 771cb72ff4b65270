//! The audit log as the gateway sees it: somewhere records are appended
//! durably and read back. The file log ([`AuditLog`]) is one sink; a shared
//! database log is another. Appends never block (the result arrives through
//! `done`); the reading methods block and are run off the request threads.

use std::fmt;

use super::file::{AuditLog, Done};
use super::keys::PublicKey;
use super::query::{QueryError, Scan};
use super::record::RecordDraft;
use super::verify::{VerifyError, VerifyReport};
use super::{AuditError, Filter};

/// A durable, verifiable audit log.
pub trait AuditSink: Send + Sync + fmt::Debug {
    /// Queues a record; `done` gets a receipt once it is durable, or the
    /// error. Never blocks on I/O.
    fn append(&self, draft: RecordDraft, done: Done);

    /// Offers the sink the time (time-driven checkpoints). Called about
    /// once a second.
    fn tick(&self);

    /// `Ok` while the sink accepts records; the failure otherwise.
    fn health(&self) -> Result<(), AuditError>;

    /// What the sink went through since it was opened (a tail moved aside
    /// at startup, a failure and the reopening after it), oldest first.
    fn incidents(&self) -> Vec<String> {
        Vec::new()
    }

    /// The public half of the key that signs the log's checkpoints.
    fn public_key(&self) -> &PublicKey;

    /// The records `filter` selects, in log order. Blocks.
    fn query(&self, filter: &Filter) -> Result<Scan, QueryError>;

    /// Verifies the whole log with only the public key (a live log: an
    /// unsealed tail is reported, not a failure). Blocks.
    fn verify(&self) -> Result<VerifyReport, VerifyError>;
}

impl AuditSink for AuditLog {
    fn append(&self, draft: RecordDraft, done: Done) {
        AuditLog::append(self, draft, done);
    }

    fn tick(&self) {
        AuditLog::tick(self);
    }

    fn health(&self) -> Result<(), AuditError> {
        AuditLog::health(self)
    }

    fn incidents(&self) -> Vec<String> {
        AuditLog::incidents(self)
    }

    fn public_key(&self) -> &PublicKey {
        AuditLog::public_key(self)
    }

    fn query(&self, filter: &Filter) -> Result<Scan, QueryError> {
        super::query::query(self.dir(), filter)
    }

    fn verify(&self) -> Result<VerifyReport, VerifyError> {
        super::verify::verify_live(self.dir(), std::slice::from_ref(self.public_key()))
    }
}
