//! The keyring: data keys, their states and encryption counts, and the blind
//! index key, stored in one file encrypted under the key-encryption key.
//!
//! # File format
//!
//! One line: `mgkr1.` + base64url-no-pad(nonce ‖ ciphertext ‖ tag) + `\n`,
//! AES-256-GCM under the KEK with a random 96-bit nonce per write and the
//! associated data `maskgate-keyring-v1`. The plaintext is JSON:
//!
//! ```json
//! {"format":1,"keyring_id":"<32 hex>","created":1700000000,"index_key":"<64 hex>",
//!  "keys":[{"id":"k1","seq":1,"state":"active","created":1700000000,
//!           "state_changed":1700000000,"reserved":65536,"secret":"<64 hex>"}]}
//! ```
//!
//! Unknown fields are refused. A destroyed key keeps its record without
//! `secret`. The file must be accessible to its owner only; every write goes
//! to a private temp file that is fsynced and renamed over the old one.
//!
//! # Key states
//!
//! `pre-active` → `active` → `retired` → `destroyed`; `pre-active`, `active`
//! and `retired` may become `compromised`, which may become `destroyed`. Any
//! other change is refused. New envelopes use the newest active key (the
//! *current* key); pre-active and active keys open envelopes; retired,
//! compromised and destroyed keys do not (anything under a compromised key
//! may be forged, so it is not trusted even for rewrap).
//!
//! # Encryption counts
//!
//! Random 96-bit nonces stay safe for about 2^32 encryptions under one key.
//! Each key counts its encryptions; the file holds a *reservation* ahead of
//! the count (blocks of [`KeyringOptions::reserve_block`]), so the count
//! survives restarts without a write per encryption. After a restart the
//! count resumes from the reservation (an upper bound; [`Keyring::flush`] on
//! a clean shutdown writes the exact count back). At
//! [`KeyringOptions::soft_limit`] the keyring rotates to a new key, or
//! refuses to encrypt when automatic rotation is off.
//!
//! # Several writers
//!
//! The gateway and the `maskgate keys` commands may use one keyring file at
//! the same time. Every write holds the lock file `<keyring>.lock`, re-reads
//! the file, merges it with what this process holds (union of keys, the later
//! state, the larger reservation; a reservation another process made moves
//! this process's count past it) and writes the result, so no writer undoes
//! another's rotation or retirement and no two processes use the same counts.
//! [`Keyring::reload`] picks up changes without writing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::blind_index::{BlindIndexError, BlindIndexKey, INDEX_KEY_LEN};
use super::envelope::{
    self, DataKey, EnvelopeError, KeyId, SystemNonces, KEY_LEN, MAX_PLAINTEXT_LEN, NONCE_LEN,
    TAG_LEN,
};
use super::fsutil::{self, FileLock};
use super::kek::Kek;
use crate::class::FieldClass;
use crate::rewrite::{EnvelopeOpener, EnvelopeSealer, OpenError, SealError};

/// The first characters of a keyring file.
pub const FILE_PREFIX: &str = "mgkr1.";
const FILE_AAD: &[u8] = b"maskgate-keyring-v1";
const FORMAT: u32 = 1;
/// Largest keyring file read.
const MAX_FILE_LEN: u64 = 4 << 20;

/// The AES-GCM bound for random 96-bit nonces: no key may ever go past it.
pub const HARD_LIMIT: u64 = 1 << 32;
/// The default soft limit: rotate at 2^31 encryptions, half the hard bound.
pub const DEFAULT_SOFT_LIMIT: u64 = 1 << 31;
/// The default reservation block.
pub const DEFAULT_RESERVE_BLOCK: u64 = 1 << 16;

/// The lifecycle state of a data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Made and distributed, not yet used for new envelopes; opens envelopes.
    PreActive,
    /// Opens envelopes; the newest active key seals new ones.
    Active,
    /// Opens nothing; kept so it can be destroyed deliberately.
    Retired,
    /// Suspected known to others: opens nothing.
    Compromised,
    /// Key bytes erased; only the record is left.
    Destroyed,
}

impl KeyState {
    /// The name used in the keyring file and by `maskgate keys list`.
    pub const fn name(self) -> &'static str {
        match self {
            KeyState::PreActive => "pre-active",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Compromised => "compromised",
            KeyState::Destroyed => "destroyed",
        }
    }

    /// True when a key may go from `self` to `to`.
    pub const fn can_become(self, to: KeyState) -> bool {
        use KeyState::*;
        matches!(
            (self, to),
            (PreActive, Active)
                | (Active, Retired)
                | (PreActive | Active | Retired, Compromised)
                | (Retired | Compromised, Destroyed)
        )
    }

    /// Whether envelopes under a key in this state may be opened.
    fn check_opens(self) -> Result<(), EnvelopeError> {
        match self {
            KeyState::PreActive | KeyState::Active => Ok(()),
            KeyState::Retired => Err(EnvelopeError::KeyRetired),
            KeyState::Compromised => Err(EnvelopeError::KeyCompromised),
            KeyState::Destroyed => Err(EnvelopeError::KeyDestroyed),
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a loaded keyring behaves. None of this is secret; it comes from the
/// gateway's config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyringOptions {
    /// Encryptions after which a key is no longer used for new envelopes
    /// (1 to [`HARD_LIMIT`]; default [`DEFAULT_SOFT_LIMIT`]).
    pub soft_limit: u64,
    /// At the soft limit, make and use a new key (true) or refuse to encrypt.
    pub auto_rotate: bool,
    /// Counts reserved in the file ahead of use (default [`DEFAULT_RESERVE_BLOCK`]).
    pub reserve_block: u64,
    /// How long a write waits for another process's lock.
    pub lock_wait: Duration,
}

impl Default for KeyringOptions {
    fn default() -> Self {
        KeyringOptions {
            soft_limit: DEFAULT_SOFT_LIMIT,
            auto_rotate: true,
            reserve_block: DEFAULT_RESERVE_BLOCK,
            lock_wait: fsutil::LOCK_WAIT,
        }
    }
}

/// Why a keyring could not be created, loaded or changed. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// No keyring file at the path.
    #[error("no keyring at {}: create one with `maskgate keys init`", path.display())]
    NotFound {
        /// The keyring path.
        path: PathBuf,
    },
    /// `init` found a file already there.
    #[error("a keyring already exists at {}; `maskgate keys init` never overwrites one", path.display())]
    AlreadyExists {
        /// The keyring path.
        path: PathBuf,
    },
    /// The path is not a regular file.
    #[error("keyring path {} is not a regular file", path.display())]
    NotAFile {
        /// The keyring path.
        path: PathBuf,
    },
    /// The keyring file is accessible to group or others.
    #[error(
        "keyring file {} is accessible to group or others (mode {mode:03o}); refusing to use it: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    PermissionsTooOpen {
        /// The keyring path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Authentication of the file failed under the KEK given.
    #[error("wrong key-encryption key or damaged keyring {}", path.display())]
    WrongKekOrDamaged {
        /// The keyring path.
        path: PathBuf,
    },
    /// The file is not a keyring file, or its content is inconsistent.
    #[error("keyring file {} is damaged: {reason}", path.display())]
    Damaged {
        /// The keyring path.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// The file now holds another keyring than the one loaded.
    #[error("keyring file {} now holds a different keyring than the one loaded; restart with the right file", path.display())]
    Replaced {
        /// The keyring path.
        path: PathBuf,
    },
    /// Another process held the lock for too long.
    #[error("keyring is locked by another process ({}); if no maskgate process is running, remove that file", lock_path.display())]
    Locked {
        /// The lock file.
        lock_path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// No key has this id.
    #[error("no key {id} in the keyring")]
    UnknownKeyId {
        /// The id asked for.
        id: String,
    },
    /// Retiring the key new writes use is refused.
    #[error("{id} is the key new writes use: run `maskgate keys rotate` first, rewrap its envelopes, then retire it")]
    CurrentKey {
        /// The key.
        id: String,
    },
    /// A state change the lifecycle does not allow.
    #[error("key {id} cannot go from {from} to {to}")]
    Transition {
        /// The key.
        id: String,
        /// Its state.
        from: KeyState,
        /// The state asked for.
        to: KeyState,
    },
    /// No active key to seal with.
    #[error("no active data key: run `maskgate keys rotate`")]
    NoActiveKey,
    /// The current key is at its soft limit and automatic rotation is off.
    #[error("data key {key_id} reached its encryption limit: run `maskgate keys rotate`")]
    EncryptionLimitReached {
        /// The exhausted key.
        key_id: String,
    },
    /// Options out of range.
    #[error("keyring options: {reason}")]
    BadOptions {
        /// What is wrong.
        reason: &'static str,
    },
    /// The random number generator failed.
    #[error("random number generator failed")]
    Random,
}

impl From<KeyringError> for EnvelopeError {
    fn from(e: KeyringError) -> Self {
        match e {
            KeyringError::NoActiveKey => EnvelopeError::NoActiveKey,
            KeyringError::EncryptionLimitReached { key_id } => {
                EnvelopeError::EncryptionLimitReached { key_id }
            }
            KeyringError::Random => EnvelopeError::Random,
            other => EnvelopeError::Keyring(Box::new(other)),
        }
    }
}

/// What `maskgate keys list` shows of a key: never key bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Key id (`k1`, `k2`, …).
    pub id: String,
    /// Lifecycle state.
    pub state: KeyState,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Time of the last state change, seconds since the Unix epoch.
    pub state_changed_unix: u64,
    /// Encryptions counted (an upper bound: counts reserved by a process that
    /// stopped without [`Keyring::flush`] are included).
    pub encryptions: u64,
    /// True for the key new envelopes use.
    pub current: bool,
}

impl fmt::Display for KeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<6} {:<12} {}  {:>12}{}",
            self.id,
            self.state.name(),
            rfc3339(self.created_unix),
            self.encryptions,
            if self.current { "  (new writes)" } else { "" }
        )
    }
}

/// Shared across snapshots of one key in this process.
#[derive(Debug, Default)]
struct Counter {
    /// Encryptions counted (slots taken).
    used: AtomicU64,
    /// Slots this process may take without writing the file.
    reserved: AtomicU64,
}

#[derive(Clone)]
struct Slot {
    seq: u32,
    id: KeyId,
    state: KeyState,
    created: u64,
    state_changed: u64,
    key: Option<Arc<DataKey>>,
    counter: Arc<Counter>,
    /// The reservation to write (in a snapshot being updated).
    reserve: u64,
    /// The reservation the file held when last read.
    file_reserved: u64,
}

#[derive(Clone)]
struct Ring {
    keyring_id: String,
    created: u64,
    index: Arc<BlindIndexKey>,
    /// The index key's generation (see `keys rotate-index`).
    index_generation: u32,
    /// Sorted by `seq`.
    slots: Vec<Slot>,
}

impl Ring {
    fn current_pos(&self) -> Option<usize> {
        self.slots.iter().rposition(|s| s.state == KeyState::Active)
    }

    fn current(&self) -> Option<&Slot> {
        self.current_pos().map(|i| &self.slots[i])
    }

    fn find(&self, id: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.id.as_str() == id)
    }

    fn find_pos(&self, id: &str) -> Result<usize, KeyringError> {
        self.slots
            .iter()
            .position(|s| s.id.as_str() == id)
            .ok_or_else(|| KeyringError::UnknownKeyId { id: id.to_owned() })
    }

    fn info(&self, slot: &Slot) -> KeyInfo {
        KeyInfo {
            id: slot.id.to_string(),
            state: slot.state,
            created_unix: slot.created,
            state_changed_unix: slot.state_changed,
            encryptions: slot.counter.used.load(Ordering::Acquire),
            current: self.current().map(|c| c.seq) == Some(slot.seq),
        }
    }

    /// Adds a fresh key in `state` with the next sequence number.
    fn add_key(&mut self, state: KeyState, rng: &dyn SecureRandom) -> Result<usize, KeyringError> {
        let seq = match self.slots.last() {
            Some(s) => s.seq.checked_add(1).ok_or(KeyringError::Random)?,
            None => 1,
        };
        let id = key_id_for(seq);
        let key = DataKey::generate(id.clone(), rng).map_err(|_| KeyringError::Random)?;
        let now = unix_now();
        self.slots.push(Slot {
            seq,
            id,
            state,
            created: now,
            state_changed: now,
            key: Some(Arc::new(key)),
            counter: Arc::default(),
            reserve: 0,
            file_reserved: 0,
        });
        Ok(self.slots.len() - 1)
    }

    fn set_state(&mut self, pos: usize, to: KeyState) -> Result<(), KeyringError> {
        let slot = &mut self.slots[pos];
        if !slot.state.can_become(to) {
            return Err(KeyringError::Transition {
                id: slot.id.to_string(),
                from: slot.state,
                to,
            });
        }
        slot.state = to;
        slot.state_changed = unix_now();
        if to == KeyState::Destroyed {
            slot.key = None;
        }
        Ok(())
    }
}

fn key_id_for(seq: u32) -> KeyId {
    KeyId::numbered(seq)
}

/// Data keys, their states and counts, and the blind index key, loaded from a
/// keyring file. `Send + Sync`: seal and open from any number of threads.
pub struct Keyring {
    path: PathBuf,
    kek: Kek,
    options: KeyringOptions,
    nonces: SystemNonces,
    rng: SystemRandom,
    ring: RwLock<Arc<Ring>>,
    /// Serializes this process's writers (the lock file serializes processes).
    writer: Mutex<()>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("options", &self.options)
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Creates a new keyring file at `path` (mode 0600) with one active data
    /// key `k1` and a blind index key. Refuses if any file is there.
    pub fn create(
        path: &Path,
        kek: &Kek,
        options: KeyringOptions,
    ) -> Result<Keyring, KeyringError> {
        check_options(&options)?;
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(KeyringError::AlreadyExists {
                path: path.to_owned(),
            });
        }
        let rng = SystemRandom::new();
        let mut id = [0u8; 16];
        rng.fill(&mut id).map_err(|_| KeyringError::Random)?;
        let mut index = Zeroizing::new([0u8; INDEX_KEY_LEN]);
        rng.fill(index.as_mut()).map_err(|_| KeyringError::Random)?;
        let mut ring = Ring {
            keyring_id: hex::encode(id),
            created: unix_now(),
            index: Arc::new(BlindIndexKey::from_bytes(&index)),
            index_generation: first_index_generation(),
            slots: Vec::new(),
        };
        ring.add_key(KeyState::Active, &rng)?;
        let bytes = seal_file(&ring, kek, &rng)?;
        fsutil::create_atomically(path, &bytes).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyringError::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                io_error("write", path, source)
            }
        })?;
        Ok(Keyring::new(path, kek.clone(), options, ring))
    }

    /// Loads the keyring at `path`. Refuses when the file is missing, not
    /// owner-only, damaged, or does not authenticate under `kek`.
    pub fn load(path: &Path, kek: Kek, options: KeyringOptions) -> Result<Keyring, KeyringError> {
        check_options(&options)?;
        let ring = read_file(path, &kek)?;
        for s in &ring.slots {
            s.counter.used.store(s.reserve, Ordering::Release);
            s.counter.reserved.store(s.reserve, Ordering::Release);
        }
        Ok(Keyring::new(path, kek, options, ring))
    }

    fn new(path: &Path, kek: Kek, options: KeyringOptions, ring: Ring) -> Keyring {
        Keyring {
            path: path.to_owned(),
            kek,
            options,
            nonces: SystemNonces::new(),
            rng: SystemRandom::new(),
            ring: RwLock::new(Arc::new(ring)),
            writer: Mutex::new(()),
        }
    }

    /// The keyring file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options this keyring was loaded with.
    pub fn options(&self) -> &KeyringOptions {
        &self.options
    }

    fn read(&self) -> RwLockReadGuard<'_, Arc<Ring>> {
        // A panic elsewhere cannot leave a half-installed ring: installs swap an Arc.
        self.ring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Every key's public facts, oldest first.
    pub fn keys(&self) -> Vec<KeyInfo> {
        let ring = self.read();
        ring.slots.iter().map(|s| ring.info(s)).collect()
    }

    /// The id of the key new envelopes use.
    pub fn current_key_id(&self) -> Option<String> {
        self.read().current().map(|s| s.id.to_string())
    }

    /// Seals `plaintext` of `class` under the current key as an unbound
    /// `mg1.` envelope, counting the encryption (rotating or refusing at the
    /// soft limit). [`Keyring::seal_for`] binds it to an account.
    pub fn seal(&self, class: FieldClass, plaintext: &str) -> Result<String, EnvelopeError> {
        self.seal_for(class, plaintext, None)
    }

    /// [`Keyring::seal`], bound to `account` (an `mg2.` envelope) when one is given.
    pub fn seal_for(
        &self,
        class: FieldClass,
        plaintext: &str,
        account: Option<&str>,
    ) -> Result<String, EnvelopeError> {
        if account.is_some_and(|a| !envelope::valid_account_id(a)) {
            return Err(EnvelopeError::BadAccountId);
        }
        // Refuse bad values before they use up a count.
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(EnvelopeError::PlaintextTooLong);
        }
        if envelope::public_last4(plaintext).is_none() {
            return Err(EnvelopeError::PlaintextTooShort);
        }
        loop {
            let key = {
                let ring = self.read();
                // Active keys always hold their bytes (checked on load).
                ring.current()
                    .filter(|s| s.key.is_some() && take_count(&s.counter, self.options.soft_limit))
                    .and_then(|s| s.key.clone())
            };
            match key {
                Some(key) => {
                    return match account {
                        Some(account) => {
                            envelope::seal_bound(&key, class, plaintext, account, &self.nonces)
                        }
                        None => envelope::seal(&key, class, plaintext, &self.nonces),
                    }
                }
                None => self.make_room()?,
            }
        }
    }

    /// Reserves more counts for the current key, or rotates at the soft limit.
    fn make_room(&self) -> Result<(), EnvelopeError> {
        let limit = self.options.soft_limit;
        let block = self.options.reserve_block;
        self.update(|ring| {
            let pos = ring.current_pos().ok_or(KeyringError::NoActiveKey)?;
            let slot = &mut ring.slots[pos];
            let used = slot.counter.used.load(Ordering::Acquire);
            if used < slot.reserve.min(limit) {
                return Ok(((), false)); // another thread made room
            }
            if used >= limit {
                if !self.options.auto_rotate {
                    return Err(KeyringError::EncryptionLimitReached {
                        key_id: slot.id.to_string(),
                    });
                }
                ring.add_key(KeyState::Active, &self.rng)?;
                return Ok(((), true));
            }
            slot.reserve = used.saturating_add(block).min(limit);
            Ok(((), true))
        })
        .map_err(EnvelopeError::from)
    }

    /// Opens `envelope` of `class` under whichever key it names, if that key
    /// may open envelopes. An `mg2.` envelope does not open here (it needs
    /// its account: [`Keyring::open_for`]).
    pub fn open(
        &self,
        class: FieldClass,
        envelope: &str,
    ) -> Result<Zeroizing<String>, EnvelopeError> {
        self.open_for(class, envelope, None)
    }

    /// Opens `envelope` of `class` found in `account`'s record: an `mg2.`
    /// envelope opens only for the account it was sealed for, an `mg1.`
    /// envelope for any.
    pub fn open_for(
        &self,
        class: FieldClass,
        envelope: &str,
        account: Option<&str>,
    ) -> Result<Zeroizing<String>, EnvelopeError> {
        let env = envelope::parse(envelope)?;
        let key = self.opening_key(env.key_id())?.0;
        envelope::open_parsed(&key, class, &env, account)
    }

    /// The key that opens envelopes under `id`, and whether it is current.
    fn opening_key(&self, id: &str) -> Result<(Arc<DataKey>, bool), EnvelopeError> {
        let ring = self.read();
        let slot = ring.find(id).ok_or(EnvelopeError::UnknownKeyId)?;
        slot.state.check_opens()?;
        let key = slot.key.clone().ok_or(EnvelopeError::KeyDestroyed)?;
        Ok((key, ring.current().map(|c| c.seq) == Some(slot.seq)))
    }

    /// Moves `envelope` of `class` to the current key without showing its
    /// plaintext: opens it under any pre-active or active key and seals it
    /// again. An envelope already under the current key is checked and
    /// returned unchanged.
    pub fn rewrap(&self, class: FieldClass, envelope: &str) -> Result<String, EnvelopeError> {
        self.rewrap_for(class, envelope, None)
    }

    /// [`Keyring::rewrap`] for an envelope of `account`'s record: the result
    /// is bound to `account` (`mg2.`), so this also migrates `mg1.`
    /// envelopes. An `mg2.` envelope opens only for its own account. Without
    /// an account, an `mg1.` envelope stays `mg1.`.
    pub fn rewrap_for(
        &self,
        class: FieldClass,
        envelope: &str,
        account: Option<&str>,
    ) -> Result<String, EnvelopeError> {
        let env = envelope::parse(envelope)?;
        let (key, current) = self.opening_key(env.key_id())?;
        let plaintext = envelope::open_parsed(&key, class, &env, account)?;
        let bound_to = if env.is_bound() { account } else { None };
        if current && bound_to == account {
            return Ok(envelope.to_owned());
        }
        self.seal_for(class, &plaintext, account)
    }

    /// The blind index of `value` of `class` under this keyring's index key.
    pub fn blind_index(&self, class: FieldClass, value: &str) -> Result<String, BlindIndexError> {
        let index = Arc::clone(&self.read().index);
        index.index(class, value)
    }

    /// Replaces the blind index key with a fresh one (PCI DSS 3.7.4 at the
    /// end of its cryptoperiod, 3.7.5 when it may be known to others). The
    /// old key is not kept: stored indexes stop matching searches until they
    /// are recomputed ([`Keyring::rewrap_and_index`]). Returns the new
    /// generation.
    pub fn rotate_index(&self) -> Result<u32, KeyringError> {
        self.update(|ring| {
            let mut bytes = Zeroizing::new([0u8; INDEX_KEY_LEN]);
            self.rng
                .fill(bytes.as_mut())
                .map_err(|_| KeyringError::Random)?;
            ring.index = Arc::new(BlindIndexKey::from_bytes(&bytes));
            ring.index_generation = ring
                .index_generation
                .checked_add(1)
                .ok_or(KeyringError::Random)?;
            Ok((ring.index_generation, true))
        })
    }

    /// The blind index key's generation.
    pub fn index_generation(&self) -> u32 {
        self.read().index_generation
    }

    /// [`Keyring::rewrap_for`], and the blind index of the plaintext under
    /// the current index key: the re-indexing step after
    /// [`Keyring::rotate_index`]. The plaintext never leaves the keyring.
    pub fn rewrap_and_index(
        &self,
        class: FieldClass,
        envelope: &str,
        account: Option<&str>,
    ) -> Result<(String, String), EnvelopeError> {
        let env = envelope::parse(envelope)?;
        let key = self.opening_key(env.key_id())?.0;
        let plaintext = envelope::open_parsed(&key, class, &env, account)?;
        let index = self
            .blind_index(class, &plaintext)
            .map_err(|_| EnvelopeError::PlaintextTooShort)?;
        Ok((self.rewrap_for(class, envelope, account)?, index))
    }

    /// Makes a new active key; new envelopes use it from now on.
    pub fn rotate(&self) -> Result<KeyInfo, KeyringError> {
        self.update(|ring| {
            let pos = ring.add_key(KeyState::Active, &self.rng)?;
            Ok((pos, true))
        })
        .map(|pos| {
            let ring = self.read();
            ring.info(&ring.slots[pos])
        })
    }

    /// Makes a new pre-active key: it opens envelopes but seals none until
    /// [`Keyring::activate`]. Lets every instance learn a key before any uses it.
    pub fn add_pre_active(&self) -> Result<KeyInfo, KeyringError> {
        self.update(|ring| Ok((ring.add_key(KeyState::PreActive, &self.rng)?, true)))
            .map(|pos| {
                let ring = self.read();
                ring.info(&ring.slots[pos])
            })
    }

    /// Activates a pre-active key.
    pub fn activate(&self, id: &str) -> Result<(), KeyringError> {
        self.transition(id, KeyState::Active)
    }

    /// Retires `id`: its envelopes no longer open. Refuses the current key
    /// (rotate first), and so always the only active key.
    pub fn retire(&self, id: &str) -> Result<(), KeyringError> {
        self.transition(id, KeyState::Retired)
    }

    /// Marks `id` compromised: its envelopes no longer open, even for rewrap.
    pub fn compromise(&self, id: &str) -> Result<(), KeyringError> {
        self.transition(id, KeyState::Compromised)
    }

    /// Erases the bytes of a retired or compromised key from the file.
    pub fn destroy(&self, id: &str) -> Result<(), KeyringError> {
        self.transition(id, KeyState::Destroyed)
    }

    fn transition(&self, id: &str, to: KeyState) -> Result<(), KeyringError> {
        self.update(|ring| {
            let pos = ring.find_pos(id)?;
            if to == KeyState::Retired && ring.current_pos() == Some(pos) {
                return Err(KeyringError::CurrentKey { id: id.to_owned() });
            }
            ring.set_state(pos, to)?;
            Ok(((), true))
        })
    }

    /// Writes the exact counts back, releasing reservations this process did
    /// not use (call on a clean shutdown). Reservations another process made
    /// since are left alone.
    pub fn flush(&self) -> Result<(), KeyringError> {
        self.update(|ring| {
            let mut changed = false;
            for s in &mut ring.slots {
                let ours = s.counter.reserved.load(Ordering::Acquire);
                let used = s.counter.used.load(Ordering::Acquire);
                if s.file_reserved == ours && used < ours {
                    s.reserve = used;
                    changed = true;
                }
            }
            Ok(((), changed))
        })
    }

    /// Re-reads the file and adopts what other processes changed (new keys,
    /// retirements), without writing.
    pub fn reload(&self) -> Result<(), KeyringError> {
        self.update(|_| Ok(((), false)))
    }

    /// Under both locks: reads the file, merges it into this process's state,
    /// applies `f`, writes the result if `f` says it changed, and installs it.
    fn update<R>(
        &self,
        f: impl FnOnce(&mut Ring) -> Result<(R, bool), KeyringError>,
    ) -> Result<R, KeyringError> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let _lock = FileLock::acquire(&self.path, self.options.lock_wait)
            .map_err(|e| io_error("lock", &FileLock::path_for(&self.path), e))?
            .ok_or_else(|| KeyringError::Locked {
                lock_path: FileLock::path_for(&self.path),
            })?;
        let on_disk = read_file(&self.path, &self.kek)?;
        let mine = Arc::clone(&self.read());
        let mut merged = merge(&self.path, &mine, on_disk)?;
        let (r, changed) = f(&mut merged)?;
        if changed {
            let bytes = seal_file(&merged, &self.kek, &self.rng)?;
            fsutil::replace_atomically(&self.path, &bytes)
                .map_err(|e| io_error("write", &self.path, e))?;
            for s in &mut merged.slots {
                s.file_reserved = s.reserve;
            }
        }
        for s in &merged.slots {
            s.counter.reserved.store(s.reserve, Ordering::Release);
        }
        *self.ring.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(merged);
        Ok(r)
    }
}

/// Takes one count if the reservation and the soft limit allow.
fn take_count(counter: &Counter, soft_limit: u64) -> bool {
    let cap = counter.reserved.load(Ordering::Acquire).min(soft_limit);
    let mut cur = counter.used.load(Ordering::Acquire);
    loop {
        if cur >= cap {
            return false;
        }
        match counter
            .used
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

/// Merges the file's state into this process's (see the module docs).
fn merge(path: &Path, mine: &Ring, disk: Ring) -> Result<Ring, KeyringError> {
    let same_index = disk.index_generation != mine.index_generation
        || disk.index.secret() == mine.index.secret();
    if disk.keyring_id != mine.keyring_id || !same_index {
        return Err(KeyringError::Replaced {
            path: path.to_owned(),
        });
    }
    let mut out = mine.clone();
    if disk.index_generation > mine.index_generation {
        // Another process rotated the index key: searches and new writes
        // use the new one from now on.
        out.index = Arc::clone(&disk.index);
        out.index_generation = disk.index_generation;
    }
    for s in &mut out.slots {
        s.reserve = s.counter.reserved.load(Ordering::Acquire);
    }
    for d in disk.slots {
        match out.slots.iter_mut().find(|s| s.seq == d.seq) {
            Some(s) => {
                if let (Some(a), Some(b)) = (&s.key, &d.key) {
                    if a.secret() != b.secret() || s.id != d.id {
                        return Err(KeyringError::Replaced {
                            path: path.to_owned(),
                        });
                    }
                }
                if d.state > s.state {
                    s.state = d.state;
                    s.state_changed = d.state_changed;
                    if d.state == KeyState::Destroyed {
                        s.key = None;
                    }
                }
                if d.reserve > s.reserve {
                    // Another process reserved counts past ours: skip them.
                    s.counter.used.fetch_max(d.reserve, Ordering::AcqRel);
                    s.reserve = d.reserve;
                }
                s.file_reserved = d.reserve;
            }
            None => {
                d.counter.used.store(d.reserve, Ordering::Release);
                d.counter.reserved.store(d.reserve, Ordering::Release);
                out.slots.push(d);
            }
        }
    }
    out.slots.sort_by_key(|s| s.seq);
    Ok(out)
}

fn check_options(o: &KeyringOptions) -> Result<(), KeyringError> {
    let bad = |reason| Err(KeyringError::BadOptions { reason });
    if o.soft_limit == 0 || o.soft_limit > HARD_LIMIT {
        return bad("soft_limit must be between 1 and 2^32");
    }
    if o.reserve_block == 0 {
        return bad("reserve_block must be at least 1");
    }
    Ok(())
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> KeyringError {
    KeyringError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the Unix epoch.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

// ---- the file ----

/// 32 secret bytes written as hex; zeroed on drop.
struct SecretHex(Zeroizing<[u8; KEY_LEN]>);

impl Serialize for SecretHex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Zeroizing::new([0u8; 2 * KEY_LEN]);
        hex::encode_to_slice(self.0.as_ref(), buf.as_mut()).map_err(serde::ser::Error::custom)?;
        let text = std::str::from_utf8(buf.as_ref()).map_err(serde::ser::Error::custom)?;
        s.serialize_str(text)
    }
}

impl<'de> Deserialize<'de> for SecretHex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretHex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretHex, E> {
                let mut out = Zeroizing::new([0u8; KEY_LEN]);
                hex::decode_to_slice(v, out.as_mut())
                    .map_err(|_| E::custom("a secret is not 64 hex digits"))?;
                Ok(SecretHex(out))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    format: u32,
    keyring_id: String,
    created: u64,
    index_key: SecretHex,
    /// Generation of the blind index key: 1 from `keys init`, one more per
    /// `keys rotate-index`. Files written before rotation existed have none.
    #[serde(default = "first_index_generation")]
    index_generation: u32,
    keys: Vec<FileKey>,
}

const fn first_index_generation() -> u32 {
    1
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    id: String,
    seq: u32,
    state: KeyState,
    created: u64,
    state_changed: u64,
    reserved: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<SecretHex>,
}

/// The encrypted file bytes for `ring`.
fn seal_file(ring: &Ring, kek: &Kek, rng: &SystemRandom) -> Result<Vec<u8>, KeyringError> {
    let file = FileV1 {
        format: FORMAT,
        keyring_id: ring.keyring_id.clone(),
        created: ring.created,
        index_key: SecretHex(Zeroizing::new(*ring.index.secret())),
        index_generation: ring.index_generation,
        keys: ring
            .slots
            .iter()
            .map(|s| FileKey {
                id: s.id.to_string(),
                seq: s.seq,
                state: s.state,
                created: s.created,
                state_changed: s.state_changed,
                reserved: s.reserve,
                secret: s
                    .key
                    .as_ref()
                    .map(|k| SecretHex(Zeroizing::new(*k.secret()))),
            })
            .collect(),
    };
    // Room for the whole document up front, so serde_json never reallocates
    // and leaves copies of secrets behind.
    let mut json = Zeroizing::new(Vec::with_capacity(
        NONCE_LEN + 256 + 320 * file.keys.len() + TAG_LEN,
    ));
    json.extend_from_slice(&[0u8; NONCE_LEN]);
    let internal = |what| io_error("encode", Path::new("keyring"), std::io::Error::other(what));
    serde_json::to_writer(&mut *json, &file).map_err(|_| internal("serialization failed"))?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| KeyringError::Random)?;
    json[..NONCE_LEN].copy_from_slice(&nonce);
    let cipher = Aes256Gcm::new(kek.bytes().into());
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), FILE_AAD, &mut json[NONCE_LEN..])
        .map_err(|_| internal("encryption failed"))?;
    json.extend_from_slice(&tag);
    let mut out = String::with_capacity(FILE_PREFIX.len() + json.len() * 4 / 3 + 4);
    out.push_str(FILE_PREFIX);
    URL_SAFE_NO_PAD.encode_string(&json[..], &mut out);
    out.push('\n');
    Ok(out.into_bytes())
}

/// Reads, checks and decrypts the keyring file.
fn read_file(path: &Path, kek: &Kek) -> Result<Ring, KeyringError> {
    let meta = std::fs::metadata(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            KeyringError::NotFound {
                path: path.to_owned(),
            }
        } else {
            io_error("read", path, e)
        }
    })?;
    if !meta.is_file() {
        return Err(KeyringError::NotAFile {
            path: path.to_owned(),
        });
    }
    if let Some(mode) = fsutil::too_open(&meta) {
        return Err(KeyringError::PermissionsTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let damaged = |reason| KeyringError::Damaged {
        path: path.to_owned(),
        reason,
    };
    if meta.len() > MAX_FILE_LEN {
        return Err(damaged("file too large"));
    }
    let bytes = std::fs::read(path).map_err(|e| io_error("read", path, e))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| damaged("not a keyring file"))?;
    let body = text
        .strip_prefix(FILE_PREFIX)
        .ok_or(damaged("not a keyring file"))?
        .strip_suffix('\n')
        .ok_or(damaged("truncated"))?;
    let mut buf = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| damaged("not base64url"))?,
    );
    if buf.len() < NONCE_LEN + TAG_LEN {
        return Err(damaged("truncated"));
    }
    let (nonce, rest) = buf.split_at_mut(NONCE_LEN);
    let ct_len = rest.len() - TAG_LEN;
    let (ct, tag) = rest.split_at_mut(ct_len);
    let cipher = Aes256Gcm::new(kek.bytes().into());
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(nonce), FILE_AAD, ct, Tag::from_slice(tag))
        .map_err(|_| KeyringError::WrongKekOrDamaged {
            path: path.to_owned(),
        })?;
    let file: FileV1 =
        serde_json::from_slice(ct).map_err(|_| damaged("contents are not a keyring"))?;
    ring_from_file(file).map_err(damaged)
}

fn ring_from_file(file: FileV1) -> Result<Ring, &'static str> {
    if file.format != FORMAT {
        return Err("unknown keyring format version");
    }
    if file.keyring_id.len() != 32 || !file.keyring_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("bad keyring id");
    }
    if file.keys.is_empty() {
        return Err("no keys");
    }
    let mut slots = Vec::with_capacity(file.keys.len());
    let mut last_seq = 0;
    for k in file.keys {
        if k.seq <= last_seq {
            return Err("keys out of order");
        }
        last_seq = k.seq;
        let id = key_id_for(k.seq);
        if id.as_str() != k.id {
            return Err("key id does not match its sequence number");
        }
        let key = match (k.state, k.secret) {
            (KeyState::Destroyed, None) => None,
            (KeyState::Destroyed, Some(_)) => return Err("destroyed key still has key bytes"),
            (_, None) => return Err("key bytes missing"),
            (_, Some(secret)) => Some(Arc::new(DataKey::from_bytes(id.clone(), &secret.0))),
        };
        slots.push(Slot {
            seq: k.seq,
            id,
            state: k.state,
            created: k.created,
            state_changed: k.state_changed,
            key,
            counter: Arc::default(),
            reserve: k.reserved,
            file_reserved: k.reserved,
        });
    }
    Ok(Ring {
        keyring_id: file.keyring_id,
        created: file.created,
        index: Arc::new(BlindIndexKey::from_bytes(&file.index_key.0)),
        index_generation: file.index_generation,
        slots,
    })
}

/// Maps an envelope error to what the response rewriter needs: a key that is
/// unknown or no longer opens envelopes, or anything else (an integrity error).
pub fn open_error(e: &EnvelopeError) -> OpenError {
    match e {
        EnvelopeError::UnknownKeyId
        | EnvelopeError::KeyRetired
        | EnvelopeError::KeyCompromised
        | EnvelopeError::KeyDestroyed => OpenError::UnknownKey,
        _ => OpenError::Integrity,
    }
}

impl EnvelopeOpener for Keyring {
    fn open(
        &self,
        class: FieldClass,
        envelope: &str,
        account: Option<&str>,
    ) -> Result<Zeroizing<String>, OpenError> {
        Keyring::open_for(self, class, envelope, account).map_err(|e| open_error(&e))
    }

    fn verify(
        &self,
        class: FieldClass,
        envelope: &str,
        account: Option<&str>,
    ) -> Result<(), OpenError> {
        Keyring::open_for(self, class, envelope, account)
            .map(drop)
            .map_err(|e| open_error(&e))
    }
}

/// The keyring as a verifier only: masked display checks envelopes with it
/// ([`EnvelopeOpener::verify`]) but nothing is ever decrypted for display.
#[derive(Debug)]
pub struct VerifyOnly(pub Arc<Keyring>);

impl EnvelopeOpener for VerifyOnly {
    fn open(
        &self,
        _class: FieldClass,
        _envelope: &str,
        _account: Option<&str>,
    ) -> Result<Zeroizing<String>, OpenError> {
        Err(OpenError::NotAllowed)
    }

    fn verify(
        &self,
        class: FieldClass,
        envelope: &str,
        account: Option<&str>,
    ) -> Result<(), OpenError> {
        EnvelopeOpener::verify(self.0.as_ref(), class, envelope, account)
    }
}

impl EnvelopeSealer for Keyring {
    fn seal(&self, class: FieldClass, plaintext: &str) -> Result<String, SealError> {
        Keyring::seal(self, class, plaintext).map_err(|e| match e {
            EnvelopeError::PlaintextTooShort | EnvelopeError::PlaintextTooLong => {
                SealError::Unsealable
            }
            _ => SealError::NoKey,
        })
    }

    fn blind_index(&self, class: FieldClass, value: &str) -> Result<String, SealError> {
        Keyring::blind_index(self, class, value).map_err(|_| SealError::Unsealable)
    }

    fn verify(&self, class: FieldClass, envelope: &str) -> bool {
        Keyring::open(self, class, envelope).is_ok()
    }

    fn seal_for(
        &self,
        class: FieldClass,
        plaintext: &str,
        account: Option<&str>,
    ) -> Result<String, SealError> {
        Keyring::seal_for(self, class, plaintext, account).map_err(|e| match e {
            EnvelopeError::PlaintextTooShort
            | EnvelopeError::PlaintextTooLong
            | EnvelopeError::BadAccountId => SealError::Unsealable,
            _ => SealError::NoKey,
        })
    }

    fn verify_for(&self, class: FieldClass, envelope: &str, account: Option<&str>) -> bool {
        Keyring::open_for(self, class, envelope, account).is_ok()
    }
}

#[cfg(test)]
mod tests;
