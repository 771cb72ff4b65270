//! Card data at rest: envelopes, the keyring, rewrap and blind indexes.
//!
//! Pure core: no async, no HTTP. Files are touched only by the keyring (its
//! one encrypted file, written atomically) and the KEK reader.
//!
//! - [`envelope`]: `mg2.<key-id>.<last4>.<base64url(nonce ‖ ciphertext ‖ tag)>`,
//!   AES-256-GCM with associated data binding version, class, key id, last
//!   four and the record's account (`mg1.`: without the account).
//! - [`keyring`]: data keys with states and counted encryptions, rotation,
//!   retirement, rewrap, the blind index key; [`Keyring`] implements the
//!   rewriter's [`EnvelopeOpener`](crate::rewrite::EnvelopeOpener).
//! - [`kek`]: the key-encryption key that wraps the keyring file.
//! - [`blind_index`]: HMAC-SHA-256 search tokens.
//! - [`cli`]: what `maskgate keys init|rotate|rotate-index|list|retire` do.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod blind_index;
pub mod cli;
pub mod envelope;
mod fsutil;
pub mod kek;
pub mod keyring;

#[cfg(test)]
mod testutil;

pub use blind_index::{BlindIndexError, BlindIndexKey};
pub use envelope::{DataKey, EnvelopeError, KeyId, NonceSource, SystemNonces};
pub use kek::{Kek, KekError};
pub use keyring::{
    open_error, KeyInfo, KeyState, Keyring, KeyringError, KeyringOptions, VerifyOnly,
};

use crate::class::FieldClass;

/// Measures envelopes sealed and opened per second on one thread: a 16-digit
/// card number, AES-256-GCM with system-random nonces, `iterations` of each.
/// Returns `(seal_per_sec, open_per_sec)`.
pub fn bench(iterations: u64) -> (f64, f64) {
    use std::hint::black_box;
    use std::time::Instant;

    let key = DataKey::from_bytes(KeyId::numbered(1), &[0x42; envelope::KEY_LEN]);
    let nonces = SystemNonces::new();
    let iterations = iterations.max(1);
    let pan = "4111 1111 1111 1111";
    let mut last = String::new();
    let start = Instant::now();
    for _ in 0..iterations {
        if let Ok(env) = envelope::seal(&key, FieldClass::CardNumber, black_box(pan), &nonces) {
            last = env;
        }
    }
    let seal_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut opened = 0u64;
    for _ in 0..iterations {
        if envelope::open(&key, FieldClass::CardNumber, black_box(&last)).is_ok() {
            opened += 1;
        }
    }
    let open_secs = start.elapsed().as_secs_f64();
    black_box(opened);
    let rate = |secs: f64| iterations as f64 / secs.max(1e-9);
    (rate(seal_secs), rate(open_secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_reports_positive_rates() {
        let (seal, open) = super::bench(50);
        assert!(seal > 0.0 && open > 0.0);
    }

    /// `cargo test --release -- --ignored --nocapture envelope_throughput`
    #[test]
    #[ignore]
    fn envelope_throughput() {
        let (seal, open) = super::bench(200_000);
        println!("envelopes per second, one core: seal {seal:.0}, open {open:.0}");
    }
}
