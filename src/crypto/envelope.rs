//! Card envelopes: `mg2.<key-id>.<last4>.<base64url-no-pad(nonce ‖ ciphertext ‖ tag)>`
//! (bound to an account) and the older, unbound `mg1.` form.
//!
//! AES-256-GCM (the `aes-gcm` crate) with a 96-bit nonce from a
//! [`NonceSource`] (ring's `SystemRandom` in production). The associated data
//! binds the format version, the field class, the key id and the last four, so
//! changing any of them, or any bit of the nonce, ciphertext or tag, makes
//! [`open`] fail with [`EnvelopeError::Integrity`]; nothing is ever returned
//! from an envelope that did not authenticate.
//!
//! The associated data is the byte string
//! `"maskgate-envelope-v1" 0x00 <class name> 0x00 <key id> 0x00 <last4>`
//! for `mg1.`, and
//! `"maskgate-envelope-v2" 0x00 <class name> 0x00 <key id> 0x00 <last4> 0x00 <account id>`
//! for `mg2.`: an `mg2.` envelope opens only for the account it was sealed
//! for ([`seal_bound`], [`open_bound`]), so one moved to another customer's
//! record does not open. No component can contain a 0x00 byte (class names
//! are fixed, key ids and last four are checked ASCII, account ids are
//! checked by [`valid_account_id`]), so the encoding is injective. `mg1.`
//! envelopes still open (for any account) until rewrapped to `mg2.`.
//!
//! **Last four.** The envelope keeps four characters outside the ciphertext so
//! masked display needs no key. They are the last four ASCII letters or digits
//! of the plaintext when it has at least [`LAST4_MIN_ALNUM`] of them; shorter
//! values (a card expiry `12/27`, a short account number) would show most of
//! themselves that way, so their envelope carries [`HIDDEN_LAST4`] instead.
//! Plaintexts with fewer than four ASCII letters or digits are refused
//! ([`EnvelopeError::PlaintextTooShort`]): they are not card data, and the
//! refusal keeps every envelope body at least 43 characters long. [`open`]
//! checks that the decrypted plaintext gives the envelope's last four.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::class::FieldClass;

/// The prefix of unbound envelopes (format version 1).
pub const PREFIX: &str = "mg1.";
/// The prefix of envelopes bound to an account (format version 2).
pub const PREFIX_BOUND: &str = "mg2.";
/// Longest account id an envelope can be bound to.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;
/// Bytes in a nonce (96 bits).
pub const NONCE_LEN: usize = 12;
/// Bytes in an AES-GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes in a data key (AES-256).
pub const KEY_LEN: usize = 32;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Longest plaintext [`seal`] accepts, in bytes.
pub const MAX_PLAINTEXT_LEN: usize = 1024;
/// Fewest ASCII letters and digits a plaintext must have.
pub const MIN_PLAINTEXT_ALNUM: usize = 4;
/// Fewest ASCII letters and digits a plaintext must have for its envelope to
/// show its real last four (the rewriter's `last4` uses the same threshold).
pub const LAST4_MIN_ALNUM: usize = 8;
/// The last four of an envelope whose plaintext is too short to show any.
pub const HIDDEN_LAST4: &str = "xxxx";
/// Longest envelope [`parse`] looks at; anything longer is malformed.
pub const MAX_ENVELOPE_LEN: usize =
    PREFIX.len() + MAX_KEY_ID_LEN + 1 + 4 + 1 + b64_len(NONCE_LEN + MAX_PLAINTEXT_LEN + TAG_LEN);

const AAD_LABEL: &[u8] = b"maskgate-envelope-v1";
const AAD_LABEL_BOUND: &[u8] = b"maskgate-envelope-v2";

/// True for an account id an envelope can be bound to: 1 to
/// [`MAX_ACCOUNT_ID_LEN`] bytes, no control character.
pub fn valid_account_id(account: &str) -> bool {
    !account.is_empty()
        && account.len() <= MAX_ACCOUNT_ID_LEN
        && !account.chars().any(char::is_control)
}

const fn b64_len(bytes: usize) -> usize {
    (bytes * 4).div_ceil(3)
}

/// What is wrong with the shape of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformation {
    /// It does not start with `mg<version>.`.
    NotAnEnvelope,
    /// It is longer than [`MAX_ENVELOPE_LEN`].
    TooLong,
    /// Fewer than the four dot-separated parts.
    MissingPart,
    /// More than the four dot-separated parts.
    TrailingPart,
    /// The key id is empty, too long, or has a character outside `[A-Za-z0-9_-]`.
    BadKeyId,
    /// The last four is not exactly four ASCII letters or digits.
    BadLast4,
    /// The body is not base64url without padding.
    BadBase64,
    /// The body is base64url but not in its one canonical spelling.
    NonCanonicalBase64,
    /// The decoded body is too short to hold a nonce, a minimal ciphertext and a tag.
    BodyTooShort,
}

impl fmt::Display for Malformation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformation::NotAnEnvelope => "not an envelope",
            Malformation::TooLong => "envelope too long",
            Malformation::MissingPart => "envelope has missing parts",
            Malformation::TrailingPart => "envelope has trailing parts",
            Malformation::BadKeyId => "bad key id",
            Malformation::BadLast4 => "bad last four",
            Malformation::BadBase64 => "body is not base64url",
            Malformation::NonCanonicalBase64 => "body is not canonical base64url",
            Malformation::BodyTooShort => "body too short",
        })
    }
}

/// Why an envelope could not be sealed, opened or rewrapped. Never carries
/// key bytes or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope's shape is wrong.
    #[error("malformed envelope: {0}")]
    Malformed(Malformation),
    /// The envelope names a format version this build does not read.
    #[error("unknown envelope format version")]
    UnknownVersion,
    /// No key in the keyring has the envelope's key id.
    #[error("unknown envelope key id")]
    UnknownKeyId,
    /// The envelope's key is retired: it no longer decrypts.
    #[error("envelope key is retired")]
    KeyRetired,
    /// The envelope's key is marked compromised: anything under it may be forged.
    #[error("envelope key is compromised")]
    KeyCompromised,
    /// The envelope's key was destroyed.
    #[error("envelope key was destroyed")]
    KeyDestroyed,
    /// Authentication failed: tampered with, bound to another class, key or
    /// account, or forged.
    #[error("envelope failed its integrity check")]
    Integrity,
    /// The account id to bind to (or open for) is empty, too long or has a
    /// control character.
    #[error("account id cannot be bound to an envelope")]
    BadAccountId,
    /// The plaintext has fewer than four ASCII letters or digits.
    #[error("value has fewer than {MIN_PLAINTEXT_ALNUM} letters or digits")]
    PlaintextTooShort,
    /// The plaintext is longer than [`MAX_PLAINTEXT_LEN`].
    #[error("value longer than {MAX_PLAINTEXT_LEN} bytes")]
    PlaintextTooLong,
    /// The keyring has no active key to encrypt with.
    #[error("no active data key: run `maskgate keys rotate`")]
    NoActiveKey,
    /// The current key reached its encryption limit and automatic rotation is off.
    #[error("data key {key_id} reached its encryption limit: run `maskgate keys rotate`")]
    EncryptionLimitReached {
        /// The exhausted key's id.
        key_id: String,
    },
    /// The random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// The keyring file could not be updated (counter reservation or rotation).
    #[error("keyring update failed: {0}")]
    Keyring(Box<crate::crypto::keyring::KeyringError>),
}

/// A data key's id: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Checks and wraps `id`.
    pub fn new(id: &str) -> Option<KeyId> {
        valid_key_id(id).then(|| KeyId(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The keyring's id for its `seq`-th key: `k<seq>`.
    pub(crate) fn numbered(seq: u32) -> KeyId {
        KeyId(format!("k{seq}"))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A 256-bit data key with its id. The key bytes are zeroed on drop and never
/// printed.
///
/// The expanded AES key schedule inside the cipher is zeroed on drop only when
/// the `aes` crate is built with its `zeroize` feature.
pub struct DataKey {
    id: KeyId,
    secret: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl DataKey {
    /// A key from its bytes (known-answer tests, keyring loading).
    pub fn from_bytes(id: KeyId, bytes: &[u8; KEY_LEN]) -> DataKey {
        let secret = Zeroizing::new(*bytes);
        let cipher = Aes256Gcm::new(secret.as_ref().into());
        DataKey { id, secret, cipher }
    }

    /// A fresh random key from ring's `SystemRandom`.
    pub fn generate(id: KeyId, rng: &dyn SecureRandom) -> Result<DataKey, EnvelopeError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill(bytes.as_mut())
            .map_err(|_| EnvelopeError::Random)?;
        Ok(DataKey::from_bytes(id, &bytes))
    }

    /// The key's id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The key bytes, for writing the keyring file.
    pub(crate) fn secret(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Where nonces come from. Production uses [`SystemNonces`]; a nonce must
/// never repeat under one key.
pub trait NonceSource: Send + Sync {
    /// A fresh 96-bit nonce.
    fn nonce(&self) -> Result<[u8; NONCE_LEN], EnvelopeError>;
}

/// Random nonces from ring's `SystemRandom`.
#[derive(Debug)]
pub struct SystemNonces(SystemRandom);

impl Default for SystemNonces {
    fn default() -> Self {
        SystemNonces::new()
    }
}

impl SystemNonces {
    /// The system random source.
    pub fn new() -> SystemNonces {
        SystemNonces(SystemRandom::new())
    }
}

impl NonceSource for SystemNonces {
    fn nonce(&self) -> Result<[u8; NONCE_LEN], EnvelopeError> {
        let mut n = [0u8; NONCE_LEN];
        self.0.fill(&mut n).map_err(|_| EnvelopeError::Random)?;
        Ok(n)
    }
}

pub mod dangerous {
    //! Deterministic nonces for known-answer tests only. Sealing two values
    //! under one key with the same nonce destroys AES-GCM's confidentiality
    //! and authenticity: never use these outside tests.

    use super::{EnvelopeError, NonceSource, NONCE_LEN};

    /// Returns the same nonce on every call.
    #[derive(Debug, Clone, Copy)]
    pub struct FixedNonce(pub [u8; NONCE_LEN]);

    impl NonceSource for FixedNonce {
        fn nonce(&self) -> Result<[u8; NONCE_LEN], EnvelopeError> {
            Ok(self.0)
        }
    }
}

/// The last four an envelope of `plaintext` shows: its last four ASCII
/// letters or digits, or [`HIDDEN_LAST4`] when it has fewer than
/// [`LAST4_MIN_ALNUM`]. `None` when it has fewer than [`MIN_PLAINTEXT_ALNUM`].
pub fn public_last4(plaintext: &str) -> Option<[u8; 4]> {
    let alnum = plaintext
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric())
        .count();
    if alnum < MIN_PLAINTEXT_ALNUM {
        return None;
    }
    let mut out = [0u8; 4];
    if alnum < LAST4_MIN_ALNUM {
        out.copy_from_slice(HIDDEN_LAST4.as_bytes());
        return Some(out);
    }
    let mut i = 4;
    for b in plaintext
        .bytes()
        .rev()
        .filter(|b| b.is_ascii_alphanumeric())
    {
        i -= 1;
        out[i] = b;
        if i == 0 {
            break;
        }
    }
    Some(out)
}

/// The associated data of an envelope (see the module docs): `account` is
/// `Some` exactly for `mg2.`.
fn aad(class: FieldClass, key_id: &str, last4: &[u8], account: Option<&str>) -> Vec<u8> {
    let label = if account.is_some() {
        AAD_LABEL_BOUND
    } else {
        AAD_LABEL
    };
    let extra = account.map_or(0, |a| a.len() + 1);
    let mut a = Vec::with_capacity(label.len() + 3 + 16 + key_id.len() + 4 + extra);
    a.extend_from_slice(label);
    a.push(0);
    a.extend_from_slice(class.name().as_bytes());
    a.push(0);
    a.extend_from_slice(key_id.as_bytes());
    a.push(0);
    a.extend_from_slice(last4);
    if let Some(account) = account {
        a.push(0);
        a.extend_from_slice(account.as_bytes());
    }
    a
}

/// Seals `plaintext` of `class` under `key` with a nonce from `nonces`, as
/// an unbound `mg1.` envelope (see [`seal_bound`]).
pub fn seal(
    key: &DataKey,
    class: FieldClass,
    plaintext: &str,
    nonces: &dyn NonceSource,
) -> Result<String, EnvelopeError> {
    seal_with(key, class, plaintext, None, nonces)
}

/// Seals `plaintext` of `class` for `account` as an `mg2.` envelope: it
/// opens only for that account.
pub fn seal_bound(
    key: &DataKey,
    class: FieldClass,
    plaintext: &str,
    account: &str,
    nonces: &dyn NonceSource,
) -> Result<String, EnvelopeError> {
    if !valid_account_id(account) {
        return Err(EnvelopeError::BadAccountId);
    }
    seal_with(key, class, plaintext, Some(account), nonces)
}

fn seal_with(
    key: &DataKey,
    class: FieldClass,
    plaintext: &str,
    account: Option<&str>,
    nonces: &dyn NonceSource,
) -> Result<String, EnvelopeError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(EnvelopeError::PlaintextTooLong);
    }
    let last4 = public_last4(plaintext).ok_or(EnvelopeError::PlaintextTooShort)?;
    let nonce = nonces.nonce()?;
    let n = plaintext.len();
    // Capacity is exact, so the buffer never reallocates and leaves no stray
    // copy of the plaintext; the plaintext is overwritten in place and the
    // buffer is zeroed on drop anyway.
    let mut buf = Zeroizing::new(Vec::with_capacity(NONCE_LEN + n + TAG_LEN));
    buf.extend_from_slice(&nonce);
    buf.extend_from_slice(plaintext.as_bytes());
    let tag = key
        .cipher
        .encrypt_in_place_detached(
            Nonce::from_slice(&nonce),
            &aad(class, key.id.as_str(), &last4, account),
            &mut buf[NONCE_LEN..],
        )
        .map_err(|_| EnvelopeError::PlaintextTooLong)?;
    buf.extend_from_slice(&tag);
    let mut out = String::with_capacity(PREFIX.len() + key.id.0.len() + 6 + b64_len(buf.len()));
    out.push_str(if account.is_some() {
        PREFIX_BOUND
    } else {
        PREFIX
    });
    out.push_str(key.id.as_str());
    out.push('.');
    // last4 holds ASCII letters and digits only.
    out.extend(last4.iter().map(|&b| char::from(b)));
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&buf[..], &mut out);
    Ok(out)
}

/// An envelope whose shape has been checked; nothing is authenticated yet.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedEnvelope<'a> {
    /// Bound to an account (`mg2.`).
    bound: bool,
    key_id: &'a str,
    last4: &'a str,
    /// nonce ‖ ciphertext ‖ tag.
    body: Vec<u8>,
}

impl<'a> ParsedEnvelope<'a> {
    /// True for an `mg2.` envelope, which opens only for its account.
    pub fn is_bound(&self) -> bool {
        self.bound
    }

    /// The key id (unauthenticated until opened).
    pub fn key_id(&self) -> &'a str {
        self.key_id
    }

    /// The last four (unauthenticated until opened).
    pub fn last4(&self) -> &'a str {
        self.last4
    }
}

impl fmt::Debug for ParsedEnvelope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedEnvelope")
            .field("bound", &self.bound)
            .field("key_id", &self.key_id)
            .field("last4", &self.last4)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A checked left-to-right reader over the envelope text.
struct Reader<'a> {
    rest: &'a str,
}

impl<'a> Reader<'a> {
    /// The text up to the next `.`, consuming the dot.
    fn field(&mut self) -> Result<&'a str, EnvelopeError> {
        let (field, rest) = self
            .rest
            .split_once('.')
            .ok_or(EnvelopeError::Malformed(Malformation::MissingPart))?;
        self.rest = rest;
        Ok(field)
    }

    /// Everything left, which must not hold another `.`.
    fn last_field(self) -> Result<&'a str, EnvelopeError> {
        if self.rest.contains('.') {
            return Err(EnvelopeError::Malformed(Malformation::TrailingPart));
        }
        Ok(self.rest)
    }
}

/// Checks an envelope's shape and decodes its body, without a key.
pub fn parse(envelope: &str) -> Result<ParsedEnvelope<'_>, EnvelopeError> {
    let malformed = |m| Err(EnvelopeError::Malformed(m));
    let (bound, rest) = match envelope.strip_prefix(PREFIX_BOUND) {
        Some(rest) => (true, rest),
        None => match envelope.strip_prefix(PREFIX) {
            Some(rest) => (false, rest),
            None => return Err(version_error(envelope)),
        },
    };
    if envelope.len() > MAX_ENVELOPE_LEN {
        return malformed(Malformation::TooLong);
    }
    let mut r = Reader { rest };
    let key_id = r.field()?;
    let last4 = r.field()?;
    let body = r.last_field()?;
    if !valid_key_id(key_id) {
        return malformed(Malformation::BadKeyId);
    }
    if last4.len() != 4 || !last4.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return malformed(Malformation::BadLast4);
    }
    if body.is_empty() {
        return malformed(Malformation::MissingPart);
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return malformed(Malformation::BadBase64);
    }
    let decoded = match URL_SAFE_NO_PAD.decode(body) {
        Ok(d) => d,
        Err(base64::DecodeError::InvalidLastSymbol(..)) => {
            return malformed(Malformation::NonCanonicalBase64)
        }
        Err(_) => return malformed(Malformation::BadBase64),
    };
    // Belt and braces: the body must be the one spelling of its bytes.
    if URL_SAFE_NO_PAD.encode(&decoded) != body {
        return malformed(Malformation::NonCanonicalBase64);
    }
    if decoded.len() < NONCE_LEN + MIN_PLAINTEXT_ALNUM + TAG_LEN {
        return malformed(Malformation::BodyTooShort);
    }
    Ok(ParsedEnvelope {
        bound,
        key_id,
        last4,
        body: decoded,
    })
}

/// `mgN.` with another N is an unknown version; anything else is not an envelope.
fn version_error(envelope: &str) -> EnvelopeError {
    let digits = envelope
        .strip_prefix("mg")
        .and_then(|r| r.split_once('.'))
        .map(|(v, _)| v);
    match digits {
        Some(v) if !v.is_empty() && v.len() <= 9 && v.bytes().all(|b| b.is_ascii_digit()) => {
            EnvelopeError::UnknownVersion
        }
        _ => EnvelopeError::Malformed(Malformation::NotAnEnvelope),
    }
}

/// Opens a parsed envelope of `class` with `key`, which must be the key the
/// envelope names. Returns the plaintext only when it authenticates. An
/// `mg2.` envelope opens only for the `account` it was sealed for (`None`:
/// it does not open); an `mg1.` envelope ignores `account`.
pub fn open_parsed(
    key: &DataKey,
    class: FieldClass,
    env: &ParsedEnvelope<'_>,
    account: Option<&str>,
) -> Result<Zeroizing<String>, EnvelopeError> {
    if key.id.as_str() != env.key_id {
        return Err(EnvelopeError::UnknownKeyId);
    }
    let account = match (env.bound, account) {
        (false, _) => None,
        (true, Some(a)) if valid_account_id(a) => Some(a),
        (true, _) => return Err(EnvelopeError::Integrity),
    };
    let (nonce, rest) = env
        .body
        .split_first_chunk::<NONCE_LEN>()
        .ok_or(EnvelopeError::Malformed(Malformation::BodyTooShort))?;
    let (ct, tag) = rest
        .split_last_chunk::<TAG_LEN>()
        .ok_or(EnvelopeError::Malformed(Malformation::BodyTooShort))?;
    let mut buf = Zeroizing::new(ct.to_vec());
    key.cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            &aad(class, env.key_id, env.last4.as_bytes(), account),
            &mut buf[..],
            Tag::from_slice(tag),
        )
        .map_err(|_| EnvelopeError::Integrity)?;
    let text = std::str::from_utf8(&buf).map_err(|_| EnvelopeError::Integrity)?;
    // Authenticated, so this only fails for an envelope a faulty sealer made
    // with the right key; such a value is not trusted either.
    if public_last4(text).as_ref().map(|l| &l[..]) != Some(env.last4.as_bytes()) {
        return Err(EnvelopeError::Integrity);
    }
    Ok(Zeroizing::new(text.to_owned()))
}

/// Parses and opens an unbound (`mg1.`) `envelope` of `class` with `key`.
pub fn open(
    key: &DataKey,
    class: FieldClass,
    envelope: &str,
) -> Result<Zeroizing<String>, EnvelopeError> {
    open_parsed(key, class, &parse(envelope)?, None)
}

/// Parses and opens `envelope` of `class` with `key` for `account`.
pub fn open_bound(
    key: &DataKey,
    class: FieldClass,
    envelope: &str,
    account: Option<&str>,
) -> Result<Zeroizing<String>, EnvelopeError> {
    open_parsed(key, class, &parse(envelope)?, account)
}

#[cfg(test)]
mod tests;
