//! Blind indexes: search by card number without storing it.
//!
//! `bidx1.` + base64url-no-pad of the first 16 bytes of
//! HMAC-SHA-256(index key, `"bidx1" 0x00 <class name> 0x00 <normalized value>`).
//!
//! - **Separate key.** The index key lives in the keyring file beside the data
//!   keys and is never used for encryption.
//! - **Class in the input.** The same digits as a card number and as a bank
//!   account give unrelated indexes, so the two columns cannot be joined.
//! - **Normalization.** Classes made of digits (card number, card expiry, SSN,
//!   TIN, bank account and routing, date of birth) keep ASCII digits only, so
//!   `4111 1111 1111 1111` and `4111111111111111` match; the others (driver's
//!   license, passport) keep ASCII letters and digits, upper-cased. Spaces,
//!   `-`, `.` and `/` are separators; any other character is refused rather
//!   than silently dropped.
//! - **Truncation to 128 bits.** Collisions stay negligible for any table
//!   (birthday bound near 2^64 rows) while the stored column is 28
//!   characters. Truncation does not weaken secrecy: card numbers have few
//!   enough candidates that the index is only as strong as the key's secrecy,
//!   at any length.
//! - **Rotation.** `maskgate keys rotate-index` replaces the key (the keyring
//!   counts its generation); stored indexes are then recomputed through
//!   `POST /_maskgate/rewrap` with `"reindex": true` (docs/security.md).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;
use zeroize::Zeroizing;

use crate::class::FieldClass;

/// The prefix of every blind index of this version.
pub const PREFIX: &str = "bidx1.";
/// Bytes of the HMAC output kept.
pub const INDEX_BYTES: usize = 16;
/// Bytes in an index key.
pub const INDEX_KEY_LEN: usize = 32;
/// Longest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = 256;

/// Why a value could not be indexed. Never carries the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlindIndexError {
    /// Nothing is left after normalization.
    #[error("value has nothing to index")]
    Empty,
    /// A character that is neither part of the value nor a separator.
    #[error("value has a character that does not belong to a {0} value")]
    UnexpectedCharacter(FieldClass),
    /// Longer than [`MAX_VALUE_LEN`].
    #[error("value longer than {MAX_VALUE_LEN} bytes")]
    TooLong,
}

/// The HMAC key for blind indexes. Zeroed on drop; never printed.
pub struct BlindIndexKey {
    secret: Zeroizing<[u8; INDEX_KEY_LEN]>,
    key: hmac::Key,
}

impl BlindIndexKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8; INDEX_KEY_LEN]) -> BlindIndexKey {
        BlindIndexKey {
            secret: Zeroizing::new(*bytes),
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    pub(crate) fn secret(&self) -> &[u8; INDEX_KEY_LEN] {
        &self.secret
    }

    /// The blind index of `value` of `class`.
    pub fn index(&self, class: FieldClass, value: &str) -> Result<String, BlindIndexError> {
        let norm = normalize(class, value)?;
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"bidx1\0");
        ctx.update(class.name().as_bytes());
        ctx.update(b"\0");
        ctx.update(&norm);
        let tag = ctx.sign();
        let mut out = String::with_capacity(PREFIX.len() + 22);
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&tag.as_ref()[..INDEX_BYTES], &mut out);
        Ok(out)
    }
}

impl fmt::Debug for BlindIndexKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndexKey(..)")
    }
}

/// True for classes whose values are digits and separators.
fn digits_only(class: FieldClass) -> bool {
    !matches!(class, FieldClass::Dln | FieldClass::Passport)
}

/// The normalized bytes of `value` (see the module docs).
pub fn normalize(class: FieldClass, value: &str) -> Result<Zeroizing<Vec<u8>>, BlindIndexError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(BlindIndexError::TooLong);
    }
    let digits = digits_only(class);
    let mut out = Zeroizing::new(Vec::with_capacity(value.len()));
    for b in value.bytes() {
        match b {
            b'0'..=b'9' => out.push(b),
            b'a'..=b'z' | b'A'..=b'Z' if !digits => out.push(b.to_ascii_uppercase()),
            b' ' | b'-' | b'.' | b'/' => {}
            _ => return Err(BlindIndexError::UnexpectedCharacter(class)),
        }
    }
    if out.is_empty() {
        return Err(BlindIndexError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> BlindIndexKey {
        BlindIndexKey::from_bytes(&[b; INDEX_KEY_LEN])
    }

    #[test]
    fn separators_do_not_matter() {
        let k = key(7);
        let a = k
            .index(FieldClass::CardNumber, "4111 1111 1111 1111")
            .unwrap();
        let b = k.index(FieldClass::CardNumber, "4111111111111111").unwrap();
        let c = k
            .index(FieldClass::CardNumber, "4111-1111-1111-1111")
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 22);
        assert_ne!(
            a,
            k.index(FieldClass::CardNumber, "4111111111111112").unwrap()
        );
    }

    #[test]
    fn deterministic_and_matches_independent_hmac() {
        let k = key(9);
        let got = k
            .index(FieldClass::CardNumber, "4111 1111 1111 1111")
            .unwrap();
        assert_eq!(
            got,
            k.index(FieldClass::CardNumber, "4111 1111 1111 1111")
                .unwrap()
        );
        // Independent computation: one-shot HMAC over the documented input.
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &[9u8; 32]),
            b"bidx1\0card_number\x004111111111111111",
        );
        let want = format!("bidx1.{}", URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16]));
        assert_eq!(got, want);
        // Pinned, so a change of the format cannot go unnoticed.
        assert_eq!(got, "bidx1.88jnv6SoyJLau2dUbhROJA");
    }

    #[test]
    fn differs_per_key_and_class() {
        let v = "4111111111111111";
        let a = key(1).index(FieldClass::CardNumber, v).unwrap();
        let b = key(2).index(FieldClass::CardNumber, v).unwrap();
        let c = key(1).index(FieldClass::BankAccount, v).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn normalization_rules() {
        let k = key(3);
        assert_eq!(
            k.index(FieldClass::Passport, "ab 12-34").unwrap(),
            k.index(FieldClass::Passport, "AB1234").unwrap()
        );
        assert_eq!(
            k.index(FieldClass::CardNumber, "4111x1111"),
            Err(BlindIndexError::UnexpectedCharacter(FieldClass::CardNumber))
        );
        assert_eq!(
            k.index(FieldClass::CardNumber, " - "),
            Err(BlindIndexError::Empty)
        );
        assert_eq!(
            k.index(FieldClass::CardNumber, "１２３４"),
            Err(BlindIndexError::UnexpectedCharacter(FieldClass::CardNumber))
        );
        assert_eq!(
            k.index(FieldClass::CardNumber, &"1".repeat(MAX_VALUE_LEN + 1)),
            Err(BlindIndexError::TooLong)
        );
    }
}
