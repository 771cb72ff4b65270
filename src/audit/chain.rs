//! The hash chain and its signed checkpoints. Pure: no I/O, no clock (the
//! caller passes `now`).
//!
//! The writer gives each record the next `seq` (from 1) and the previous
//! record's hash as `prev` ([`GENESIS`] for the first), and computes its
//! `hash`. Every [`CheckpointPolicy::every_records`] records, when
//! [`CheckpointPolicy::every`] has passed since the last checkpoint (checked
//! when the caller offers a time), and at a clean close, it writes a
//! checkpoint line:
//!
//! ```text
//! {"checkpoint":{"seq":1000,"head":"<hash of record 1000>","count":1000,"time":"…","key_id":"ed25519:…"},"sig":"<base64>"}
//! ```
//!
//! `seq` is the last record covered, `head` its hash, `count` the number of
//! records from the start of the log (equal to `seq`, as seqs have no gaps).
//! The signature is Ed25519 over [`CHECKPOINT_CONTEXT`] followed by the
//! canonical bytes of the `checkpoint` object. Checkpoints are not chained
//! themselves: they vouch for the record chain.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use crate::audit::keys::{PublicKey, SigningKey};
use crate::audit::record::{
    format_time, parse_record_line, parse_time, sha256, with_hash, DraftError, LineError, Record,
    RecordDraft, GENESIS,
};

/// Domain separation for checkpoint signatures.
pub const CHECKPOINT_CONTEXT: &[u8] = b"maskgate audit checkpoint v1\n";

/// The opening bytes of every checkpoint line.
pub(crate) const CHECKPOINT_PREFIX: &[u8] = b"{\"checkpoint\":";

/// When checkpoints are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// After this many records (default 1000). 0 disables count-driven checkpoints.
    pub every_records: u64,
    /// After this much time with unsealed records (default 60 s), checked
    /// whenever the writer is offered a time (each batch and each `tick`).
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> CheckpointPolicy {
        CheckpointPolicy {
            every_records: 1000,
            every: Duration::from_secs(60),
        }
    }
}

/// The signed statement of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last record covered (0 for an empty log).
    pub seq: u64,
    /// That record's hash ([`GENESIS`] for an empty log).
    pub head: String,
    /// Records covered from the start of the log.
    pub count: u64,
    /// When it was written.
    pub time: OffsetDateTime,
    /// The signing key's id.
    pub key_id: String,
}

#[derive(Serialize)]
struct CheckpointBody<'a> {
    seq: u64,
    head: &'a str,
    count: u64,
    time: &'a str,
    key_id: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpoint {
    seq: u64,
    head: String,
    count: u64,
    time: String,
    key_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckpointLine {
    checkpoint: RawCheckpoint,
    sig: String,
}

impl Checkpoint {
    /// The canonical bytes the signature covers (after [`CHECKPOINT_CONTEXT`]).
    fn body_bytes(&self) -> Result<Vec<u8>, DraftError> {
        let time = format_time(self.time)?;
        serde_json::to_vec(&CheckpointBody {
            seq: self.seq,
            head: &self.head,
            count: self.count,
            time: &time,
            key_id: &self.key_id,
        })
        .map_err(|e| DraftError::Encode(e.to_string()))
    }

    fn signed_message(body: &[u8]) -> Vec<u8> {
        let mut message = CHECKPOINT_CONTEXT.to_vec();
        message.extend_from_slice(body);
        message
    }

    /// Signs this checkpoint and returns its line (without newline).
    pub fn sign(&self, key: &SigningKey) -> Result<SignedCheckpoint, DraftError> {
        let body = self.body_bytes()?;
        let sig = key.sign(&Checkpoint::signed_message(&body));
        Ok(SignedCheckpoint {
            checkpoint: self.clone(),
            sig,
        })
    }
}

/// A checkpoint and its signature, as read from a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The statement.
    pub checkpoint: Checkpoint,
    /// The Ed25519 signature.
    pub sig: Vec<u8>,
}

/// Why a checkpoint does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    /// Signed by a key that is not trusted (the key was replaced).
    #[error("signed by key {found}, which is not the trusted key {trusted}")]
    UnknownKey {
        /// The key id the checkpoint names.
        found: String,
        /// The trusted key ids.
        trusted: String,
    },
    /// The signature does not verify under the named (trusted) key.
    #[error("the signature does not verify under key {0}")]
    BadSignature(String),
}

impl SignedCheckpoint {
    /// The line (without newline).
    pub fn to_line(&self) -> Result<Vec<u8>, DraftError> {
        let body = self.checkpoint.body_bytes()?;
        let mut line = CHECKPOINT_PREFIX.to_vec();
        line.extend_from_slice(&body);
        line.extend_from_slice(b",\"sig\":\"");
        line.extend_from_slice(STANDARD.encode(&self.sig).as_bytes());
        line.extend_from_slice(b"\"}");
        Ok(line)
    }

    /// Checks the signature with whichever of `trusted` the checkpoint names.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<(), SignatureProblem> {
        let Some(key) = trusted
            .iter()
            .find(|k| k.key_id() == self.checkpoint.key_id)
        else {
            let ids: Vec<&str> = trusted.iter().map(PublicKey::key_id).collect();
            return Err(SignatureProblem::UnknownKey {
                found: self.checkpoint.key_id.clone(),
                trusted: ids.join(", "),
            });
        };
        let ok = self
            .checkpoint
            .body_bytes()
            .map(|body| key.verifies(&Checkpoint::signed_message(&body), &self.sig))
            .unwrap_or(false);
        if ok {
            Ok(())
        } else {
            Err(SignatureProblem::BadSignature(key.key_id().to_string()))
        }
    }
}

/// Parses a checkpoint line (without newline), checking its canonical form;
/// the signature is checked by [`SignedCheckpoint::verify`].
pub fn parse_checkpoint_line(line: &[u8]) -> Result<SignedCheckpoint, LineError> {
    let raw: RawCheckpointLine =
        serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    let time = parse_time(&raw.checkpoint.time)
        .ok_or_else(|| LineError::Malformed(format!("bad time {:?}", raw.checkpoint.time)))?;
    let sig = STANDARD
        .decode(raw.sig.as_bytes())
        .map_err(|e| LineError::Malformed(format!("bad signature encoding: {e}")))?;
    if sig.len() != 64 {
        return Err(LineError::Malformed(format!(
            "signature is {} bytes, not 64",
            sig.len()
        )));
    }
    let signed = SignedCheckpoint {
        checkpoint: Checkpoint {
            seq: raw.checkpoint.seq,
            head: raw.checkpoint.head,
            count: raw.checkpoint.count,
            time,
            key_id: raw.checkpoint.key_id,
        },
        sig,
    };
    match signed.to_line() {
        Ok(canonical) if canonical == line => Ok(signed),
        _ => Err(LineError::NotCanonical),
    }
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// An audit record.
    Record(Box<Record>),
    /// A signed checkpoint.
    Checkpoint(SignedCheckpoint),
}

/// Parses one line (without newline): a checkpoint when it starts with
/// `{"checkpoint":`, a record otherwise.
pub fn parse_line(line: &[u8]) -> Result<Line, LineError> {
    if line.starts_with(CHECKPOINT_PREFIX) {
        parse_checkpoint_line(line).map(Line::Checkpoint)
    } else {
        parse_record_line(line).map(|r| Line::Record(Box::new(r)))
    }
}

/// Where the chain stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// The last record's seq (0 when there is none).
    pub seq: u64,
    /// The last record's hash (all zeros when there is none).
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty log.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: [0; 32],
    };

    /// The hash in hex.
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

/// A record the chain sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: [u8; 32],
    /// The line, ending in `\n`.
    pub line: Vec<u8>,
}

/// The writer's chain state: assigns seq and prev, hashes, and signs checkpoints.
#[derive(Debug)]
pub struct Chain {
    key: Arc<SigningKey>,
    policy: CheckpointPolicy,
    head: ChainHead,
    sealed_seq: u64,
    last_checkpoint_at: OffsetDateTime,
}

impl Chain {
    /// Continues a chain at `head`, whose records up to `sealed_seq` a
    /// checkpoint written at `last_checkpoint_at` covers.
    pub fn new(
        key: SigningKey,
        policy: CheckpointPolicy,
        head: ChainHead,
        sealed_seq: u64,
        last_checkpoint_at: OffsetDateTime,
    ) -> Chain {
        Chain {
            key: Arc::new(key),
            policy,
            head,
            sealed_seq: sealed_seq.min(head.seq),
            last_checkpoint_at,
        }
    }

    /// Moves the chain to `head`, sealed up to `sealed_seq` by a checkpoint
    /// written at `last_checkpoint_at` (a shared log: another writer may
    /// have appended since this one last did).
    pub fn continue_at(
        &mut self,
        head: ChainHead,
        sealed_seq: u64,
        last_checkpoint_at: OffsetDateTime,
    ) {
        self.head = head;
        self.sealed_seq = sealed_seq.min(head.seq);
        self.last_checkpoint_at = last_checkpoint_at;
    }

    /// Records up to this seq are covered by a checkpoint.
    pub fn sealed_seq(&self) -> u64 {
        self.sealed_seq
    }

    /// When the last checkpoint was written.
    pub fn last_checkpoint_at(&self) -> OffsetDateTime {
        self.last_checkpoint_at
    }

    /// The last record sealed.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// Records after the last checkpoint.
    pub fn unsealed(&self) -> u64 {
        self.head.seq - self.sealed_seq
    }

    /// The signing key's id.
    pub fn key_id(&self) -> &str {
        self.key.key_id()
    }

    /// The signing key, shared (receipts are signed with it on demand).
    pub fn key(&self) -> &Arc<SigningKey> {
        &self.key
    }

    /// Seals a draft as the next record. A refused draft leaves the chain as it was.
    pub fn seal(&mut self, draft: &RecordDraft, now: OffsetDateTime) -> Result<Sealed, DraftError> {
        let checked = draft.checked()?;
        let seq = self.head.seq + 1;
        let body = checked.body_bytes(seq, now, &self.head.hash_hex())?;
        let hash = sha256(&body);
        let mut line = with_hash(&body, &hex::encode(hash));
        line.push(b'\n');
        self.head = ChainHead { seq, hash };
        Ok(Sealed { seq, hash, line })
    }

    /// True when the count policy asks for a checkpoint now.
    pub fn checkpoint_due_by_count(&self) -> bool {
        self.policy.every_records > 0 && self.unsealed() >= self.policy.every_records
    }

    /// True when there are unsealed records and the time policy has run out.
    pub fn checkpoint_due_by_time(&self, now: OffsetDateTime) -> bool {
        self.unsealed() > 0 && (now - self.last_checkpoint_at).unsigned_abs() >= self.policy.every
    }

    /// Signs a checkpoint of the current head; returns the signed checkpoint
    /// and its line (ending in `\n`).
    pub fn checkpoint(
        &mut self,
        now: OffsetDateTime,
    ) -> Result<(SignedCheckpoint, Vec<u8>), DraftError> {
        let head = if self.head.seq == 0 {
            GENESIS.to_string()
        } else {
            self.head.hash_hex()
        };
        let signed = Checkpoint {
            seq: self.head.seq,
            head,
            count: self.head.seq,
            time: now,
            key_id: self.key.key_id().to_string(),
        }
        .sign(&self.key)?;
        let mut line = signed.to_line()?;
        line.push(b'\n');
        self.sealed_seq = self.head.seq;
        self.last_checkpoint_at = now;
        Ok((signed, line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{Kind, Outcome};
    use time::macros::datetime;

    fn draft(n: u64) -> RecordDraft {
        RecordDraft::new(Kind::Unmask, format!("p{n}"), Outcome::Granted, "ok")
    }

    fn chain(every_records: u64) -> Chain {
        let key = SigningKey::generate().expect("key");
        Chain::new(
            key,
            CheckpointPolicy {
                every_records,
                every: Duration::from_secs(60),
            },
            ChainHead::GENESIS,
            0,
            datetime!(2026-07-01 00:00 UTC),
        )
    }

    #[test]
    fn records_link_and_checkpoints_sign() {
        let mut c = chain(3);
        let now = datetime!(2026-07-01 00:00:01 UTC);
        let mut prev = GENESIS.to_string();
        for n in 1..=3 {
            let s = c.seal(&draft(n), now).expect("seal");
            assert_eq!(s.seq, n);
            let line = s.line.strip_suffix(b"\n").expect("newline");
            let rec = parse_record_line(line).expect("parse");
            assert_eq!(rec.prev, prev);
            assert_eq!(rec.hash, hex::encode(s.hash));
            prev = rec.hash;
        }
        assert!(c.checkpoint_due_by_count());
        let (signed, line) = c.checkpoint(now).expect("checkpoint");
        assert_eq!(c.unsealed(), 0);
        assert_eq!(signed.checkpoint.head, prev);
        assert_eq!(signed.checkpoint.count, 3);
        let parsed = parse_line(line.strip_suffix(b"\n").expect("nl")).expect("parse");
        let Line::Checkpoint(parsed) = parsed else {
            panic!("not a checkpoint")
        };
        assert_eq!(parsed, signed);
        let key = c.key.public_key().clone();
        assert_eq!(parsed.verify(std::slice::from_ref(&key)), Ok(()));
        let other = SigningKey::generate().expect("key");
        assert!(matches!(
            parsed.verify(&[other.public_key().clone()]),
            Err(SignatureProblem::UnknownKey { .. })
        ));
        // Same key id, another key's signature.
        let mut forged = parsed.checkpoint.clone().sign(&other).expect("sign");
        forged.checkpoint.key_id = key.key_id().to_string();
        assert!(matches!(
            forged.verify(&[key]),
            Err(SignatureProblem::BadSignature(_))
        ));
    }

    #[test]
    fn time_policy_needs_unsealed_records() {
        let mut c = chain(0);
        let later = datetime!(2026-07-01 00:02 UTC);
        assert!(!c.checkpoint_due_by_time(later));
        c.seal(&draft(1), later).expect("seal");
        assert!(!c.checkpoint_due_by_count());
        assert!(c.checkpoint_due_by_time(later));
        c.checkpoint(later).expect("cp");
        c.seal(&draft(2), later).expect("seal");
        assert!(!c.checkpoint_due_by_time(datetime!(2026-07-01 00:02:59 UTC)));
        assert!(c.checkpoint_due_by_time(datetime!(2026-07-01 00:03 UTC)));
    }

    #[test]
    fn refused_draft_leaves_chain_alone() {
        let mut c = chain(10);
        let now = datetime!(2026-07-01 00:00:01 UTC);
        c.seal(&draft(1), now).expect("seal");
        let head = c.head();
        let bad = RecordDraft::new(Kind::Unmask, "p", Outcome::Granted, "Bad Why");
        assert!(c.seal(&bad, now).is_err());
        assert_eq!(c.head(), head);
        assert_eq!(c.seal(&draft(2), now).expect("seal").seq, 2);
    }

    #[test]
    fn checkpoint_lines_are_canonical() {
        let mut c = chain(10);
        let (_, line) = c.checkpoint(datetime!(2026-07-01 00:00 UTC)).expect("cp");
        let line = line.strip_suffix(b"\n").expect("nl");
        let text = String::from_utf8(line.to_vec()).expect("utf8");
        assert!(text.starts_with("{\"checkpoint\":{\"seq\":0,\"head\":\"0000"));
        let spaced = text.replacen("\"sig\":", "\"sig\": ", 1);
        assert_eq!(
            parse_checkpoint_line(spaced.as_bytes()),
            Err(LineError::NotCanonical)
        );
        let extra = text.replacen("{\"seq\":0", "{\"extra\":1,\"seq\":0", 1);
        assert!(matches!(
            parse_checkpoint_line(extra.as_bytes()),
            Err(LineError::Malformed(_))
        ));
    }
}
