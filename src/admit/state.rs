//! The state admission keeps between requests — failed authentications and
//! lockouts, frozen accounts, record budget counters — behind one small
//! trait, so that a shared store can replace the local files without the
//! request path changing.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Why the state store failed. The gateway answers 503 (fail closed): it
/// does not admit a request whose lockout or freeze it could not check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the store failed.
    #[error("state store: {0}")]
    Storage(String),
    /// An argument the store refuses (an account id too long or empty).
    #[error("invalid {what}: {why}")]
    Invalid {
        /// What was refused (`account id`, `identity`).
        what: &'static str,
        /// Why.
        why: &'static str,
    },
}

/// Longest certificate subject name an identity key keeps, in bytes.
pub const MAX_IDENTITY_NAME_LEN: usize = 256;

/// Longest account id a freeze accepts, in bytes.
pub const MAX_FREEZE_ACCOUNT_LEN: usize = 128;

/// Bytes of an API key's SHA-256 an identity key keeps (hex: twice as many
/// characters). Enough to tell keys apart, not the whole hash.
pub const KEY_ID_BYTES: usize = 8;

/// Who failed to authenticate: what failures are counted against and what
/// a lock applies to.
///
/// Written as `key:<16 hex digits>` (the first [`KEY_ID_BYTES`] of the API
/// key's SHA-256: never the key, never its whole hash), `cert:<subject
/// name>` or `ip:<address>` (callers the gateway could not identify are
/// counted per source address). [`IdentityKey::from_str`] reads that form
/// back (the admin API's unlock path).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKey {
    /// An API key, by the hex of its hash's first bytes.
    ApiKey(String),
    /// A client certificate, by its subject name (CN, else first DNS SAN).
    Cert(String),
    /// A source address.
    Source(IpAddr),
}

impl IdentityKey {
    /// The identity of an API key given its SHA-256
    /// ([`crate::identity::api_key_hash`]).
    pub fn api_key_hash(sha256: &[u8; 32]) -> IdentityKey {
        IdentityKey::ApiKey(hex::encode(&sha256[..KEY_ID_BYTES]))
    }

    /// The identity of an API key as the client sent it.
    pub fn api_key(key: &[u8]) -> IdentityKey {
        IdentityKey::api_key_hash(&crate::identity::api_key_hash(key))
    }

    /// The identity of a client certificate: its first name (the subject
    /// CN, else the first DNS SAN). `None` when it has none, or when the name
    /// is longer than [`MAX_IDENTITY_NAME_LEN`] or has control characters.
    pub fn cert(cert: &crate::identity::PeerCertificate) -> Option<IdentityKey> {
        let name = cert.names.first()?;
        valid_name(name).then(|| IdentityKey::Cert(name.clone()))
    }

    /// The identity of a source address. IPv4-mapped IPv6 addresses count
    /// as the IPv4 address.
    pub fn source(ip: IpAddr) -> IdentityKey {
        IdentityKey::Source(ip.to_canonical())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_IDENTITY_NAME_LEN && !name.chars().any(char::is_control)
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityKey::ApiKey(id) => write!(f, "key:{id}"),
            IdentityKey::Cert(name) => write!(f, "cert:{name}"),
            IdentityKey::Source(ip) => write!(f, "ip:{ip}"),
        }
    }
}

/// Why a string is not an [`IdentityKey`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an identity: write key:<16 hex digits>, cert:<subject name> or ip:<address>")]
pub struct BadIdentity;

impl FromStr for IdentityKey {
    type Err = BadIdentity;

    fn from_str(s: &str) -> Result<IdentityKey, BadIdentity> {
        let (kind, value) = s.split_once(':').ok_or(BadIdentity)?;
        match kind {
            "key" => {
                let ok =
                    value.len() == 2 * KEY_ID_BYTES && value.bytes().all(|b| b.is_ascii_hexdigit());
                ok.then(|| IdentityKey::ApiKey(value.to_ascii_lowercase()))
                    .ok_or(BadIdentity)
            }
            "cert" if valid_name(value) => Ok(IdentityKey::Cert(value.to_owned())),
            "ip" => value
                .parse::<IpAddr>()
                .map(IdentityKey::source)
                .map_err(|_| BadIdentity),
            _ => Err(BadIdentity),
        }
    }
}

impl Serialize for IdentityKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IdentityKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A lock in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEntry {
    /// Who is locked.
    pub identity: IdentityKey,
    /// When the lock started.
    pub since: SystemTime,
    /// When it ends by itself.
    pub until: SystemTime,
}

/// A frozen account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// The account id (as the routes' `{id}` and records' `id` carry it).
    pub account: String,
    /// Who froze it (the principal).
    pub by: String,
    /// When.
    #[serde(with = "unix_millis")]
    pub at: SystemTime,
}

/// What [`StateStore::freeze`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FreezeChange {
    /// The account was not frozen and now is.
    Frozen(Freeze),
    /// It was frozen already (by this earlier freeze, which is kept).
    AlreadyFrozen(Freeze),
}

impl FreezeChange {
    /// The freeze in force.
    pub fn freeze(&self) -> &Freeze {
        match self {
            FreezeChange::Frozen(f) | FreezeChange::AlreadyFrozen(f) => f,
        }
    }
}

/// Checks an account id a freeze is asked for: 1 to
/// [`MAX_FREEZE_ACCOUNT_LEN`] bytes, printable ASCII without spaces.
pub fn check_account_id(account: &str) -> Result<(), StateError> {
    let invalid = |why| StateError::Invalid {
        what: "account id",
        why,
    };
    if account.is_empty() || account.len() > MAX_FREEZE_ACCOUNT_LEN {
        return Err(invalid("must be 1 to 128 characters"));
    }
    if !account.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("must be printable ASCII without spaces"));
    }
    Ok(())
}

/// The state admission keeps: failed authentications and lockouts, frozen
/// accounts, and per-principal daily record counts.
///
/// Each method is one atomic step, so a shared (database) store can give
/// several gateway instances the same answers. Times are passed in (from a
/// [`crate::unmask::Clock`]); the store never reads the clock itself.
#[async_trait::async_trait]
pub trait StateStore: Send + Sync + fmt::Debug {
    /// Counts one failed authentication of `identity` at `now`; returns how
    /// many failures it has within `window` up to `now` (this one included).
    async fn add_failure(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
        window: Duration,
    ) -> Result<u32, StateError>;

    /// Forgets the failures of `identity` (after a successful
    /// authentication).
    async fn clear_failures(&self, identity: &IdentityKey) -> Result<(), StateError>;

    /// Locks `identity` from `now` until `until` and forgets its failures.
    /// `Ok(true)` when this starts a lock (to be audited); `Ok(false)` when a
    /// lock was in force already (it is kept as it was).
    async fn lock(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StateError>;

    /// The lock on `identity` in force at `now`, if any.
    async fn lock_of(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<Option<LockEntry>, StateError>;

    /// Lifts the lock on `identity` and forgets its failures; returns the
    /// lock that was in force at `now`, if any.
    async fn unlock(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<Option<LockEntry>, StateError>;

    /// Every lock in force at `now`, ordered by identity.
    async fn locks(&self, now: SystemTime) -> Result<Vec<LockEntry>, StateError>;

    /// Freezes `account` ([`check_account_id`]); `by` is the principal.
    async fn freeze(
        &self,
        account: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<FreezeChange, StateError>;

    /// Lifts the freeze on `account`; returns it, or `None` when the account
    /// was not frozen.
    async fn unfreeze(&self, account: &str) -> Result<Option<Freeze>, StateError>;

    /// True when `account` is frozen.
    async fn is_frozen(&self, account: &str) -> Result<bool, StateError>;

    /// Every freeze, ordered by account id.
    async fn list_freezes(&self) -> Result<Vec<Freeze>, StateError>;

    /// Adds `n` records to what `principal` received on `day` (a calendar
    /// date, `YYYY-MM-DD`); returns the new total.
    async fn add_records(&self, principal: &str, day: &str, n: u64) -> Result<u64, StateError>;

    /// The records `principal` received on `day`.
    async fn records(&self, principal: &str, day: &str) -> Result<u64, StateError>;
}

/// `SystemTime` as milliseconds since the Unix epoch, in the state files.
pub(crate) mod unix_millis {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    /// Milliseconds since the epoch (0 before it; saturating).
    pub fn to_millis(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The time `ms` milliseconds after the epoch.
    pub fn from_millis(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(to_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(d).map(from_millis)
    }
}
