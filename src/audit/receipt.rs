//! Signed receipts: a client's proof that a record is in the log.
//!
//! Every unmask or decrypt answer carries one in the
//! `X-Maskgate-Audit-Receipt` header:
//!
//! ```text
//! v1; seq=1234; hash=<64 hex>; key=ed25519:<id>; sig=<base64>
//! ```
//!
//! The signature is Ed25519 by the audit signing key over
//! [`RECEIPT_CONTEXT`] followed by `seq`, `hash` and `key` as written in the
//! header, each ending in `\n`. Only the sinks can sign one (they hold the
//! key), and only for a record that is durable behind a signed checkpoint.
//! Whoever keeps receipts (the collections system, an auditor sampling
//! answers) can prove a record existed: `maskgate audit verify --receipts
//! FILE` names every receipt whose record the log no longer holds.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::audit::keys::{PublicKey, SigningKey};

/// The response header that carries the receipt.
pub const RECEIPT_HEADER: &str = "x-maskgate-audit-receipt";

/// Domain separation for receipt signatures (never a checkpoint's).
pub const RECEIPT_CONTEXT: &[u8] = b"maskgate audit receipt v1\n";

/// A receipt: a record's seq and hash, signed by the audit key.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The record's seq.
    pub seq: u64,
    /// The record's hash, hex.
    pub hash: String,
    /// The signing key's id.
    pub key_id: String,
    /// The Ed25519 signature.
    pub sig: Vec<u8>,
}

impl fmt::Debug for SignedReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedReceipt({})", self.to_header_value())
    }
}

/// Why a receipt line could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not in the `v1; seq=…; hash=…; key=…; sig=…` form.
    #[error("not a receipt: {0}")]
    Malformed(String),
    /// Signed by a key that is not trusted.
    #[error("signed by key {0}, which is not trusted")]
    UnknownKey(String),
    /// The signature does not verify: the receipt was altered or forged.
    #[error("the signature does not verify under key {0}")]
    BadSignature(String),
}

fn message(seq: u64, hash: &str, key_id: &str) -> Vec<u8> {
    let mut m = RECEIPT_CONTEXT.to_vec();
    m.extend_from_slice(format!("{seq}\n{hash}\n{key_id}\n").as_bytes());
    m
}

impl SignedReceipt {
    /// Signs a receipt for record `seq` whose hash is `hash`.
    pub(crate) fn sign(key: &SigningKey, seq: u64, hash: &[u8; 32]) -> SignedReceipt {
        let hash = hex::encode(hash);
        let sig = key.sign(&message(seq, &hash, key.key_id()));
        SignedReceipt {
            seq,
            hash,
            key_id: key.key_id().to_owned(),
            sig,
        }
    }

    /// The header value (also one line of a receipts file).
    pub fn to_header_value(&self) -> String {
        format!(
            "v1; seq={}; hash={}; key={}; sig={}",
            self.seq,
            self.hash,
            self.key_id,
            STANDARD.encode(&self.sig)
        )
    }

    /// Parses a header value or receipts-file line.
    pub fn parse(text: &str) -> Result<SignedReceipt, ReceiptError> {
        let bad = |why: &str| ReceiptError::Malformed(why.to_owned());
        let mut parts = text.trim().split("; ");
        if parts.next() != Some("v1") {
            return Err(bad("it does not start with `v1; `"));
        }
        let mut field = |name: &str| -> Result<&str, ReceiptError> {
            parts
                .next()
                .and_then(|p| p.strip_prefix(name))
                .and_then(|p| p.strip_prefix('='))
                .ok_or_else(|| bad(&format!("`{name}=` missing or out of order")))
        };
        let seq = field("seq")?
            .parse::<u64>()
            .map_err(|_| bad("seq is not a number"))?;
        let hash = field("hash")?.to_owned();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("hash is not 64 hex digits"));
        }
        let key_id = field("key")?.to_owned();
        let sig = STANDARD
            .decode(field("sig")?)
            .map_err(|_| bad("sig is not base64"))?;
        if sig.len() != 64 || parts.next().is_some() {
            return Err(bad("sig is not 64 bytes, or something follows it"));
        }
        Ok(SignedReceipt {
            seq,
            hash: hash.to_ascii_lowercase(),
            key_id,
            sig,
        })
    }

    /// Checks the signature with whichever of `trusted` the receipt names.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<(), ReceiptError> {
        let key = trusted
            .iter()
            .find(|k| k.key_id() == self.key_id)
            .ok_or_else(|| ReceiptError::UnknownKey(self.key_id.clone()))?;
        if key.verifies(&message(self.seq, &self.hash, &self.key_id), &self.sig) {
            Ok(())
        } else {
            Err(ReceiptError::BadSignature(self.key_id.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_refuse_edits() {
        let key = SigningKey::generate().expect("key");
        let other = SigningKey::generate().expect("key");
        let trusted = [key.public_key().clone()];
        let r = SignedReceipt::sign(&key, 42, &[7u8; 32]);
        let text = r.to_header_value();
        assert!(text.starts_with("v1; seq=42; hash=0707"), "{text}");
        let parsed = SignedReceipt::parse(&text).expect("parse");
        assert_eq!(parsed, r);
        assert_eq!(parsed.verify(&trusted), Ok(()));

        let moved = text.replacen("seq=42", "seq=41", 1);
        let moved = SignedReceipt::parse(&moved).expect("parse");
        assert!(matches!(
            moved.verify(&trusted),
            Err(ReceiptError::BadSignature(_))
        ));
        let foreign = SignedReceipt::sign(&other, 42, &[7u8; 32]);
        assert!(matches!(
            foreign.verify(&trusted),
            Err(ReceiptError::UnknownKey(_))
        ));
        for bad in [
            "",
            "v2; seq=1",
            "v1; seq=x; hash=00",
            &text.replacen("; key=", "; kid=", 1),
            &format!("{text}; extra=1"),
        ] {
            assert!(SignedReceipt::parse(bad).is_err(), "{bad}");
        }
    }
}
