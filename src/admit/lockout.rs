//! Lockout: repeated failed authentications of one identity lock it.
//!
//! `max_failures` failures within `window` (gateway `[lockout]`) lock the
//! identity for `lock`; a locked identity is refused (401) until the lock
//! ends or a security auditor lifts it ([`Lockout::unlock`]). The gateway
//! checks every identity an attempt carries ([`attempt_identities`]) before
//! it authenticates, and counts a failure against each of them.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::shadow::Shadow;
use super::state::{IdentityKey, LockEntry, StateError, StateStore};
use crate::config::LockoutConfig;
use crate::identity::PeerCertificate;

/// Where an identity stands after a failed authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// Not locked: `failures` of the `max_failures` allowed within the window.
    Counting {
        /// Failures within the window, this one included.
        failures: u32,
        /// Failures that lock.
        max_failures: u32,
    },
    /// Locked until `until`.
    Locked {
        /// When the lock ends by itself.
        until: SystemTime,
        /// True for the failure that started the lock: the caller records
        /// the lockout (audit, log) exactly once.
        new: bool,
    },
}

/// Why [`Lockout::check`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The identity is locked (401).
    #[error("{identity} is locked out")]
    Locked {
        /// The locked identity.
        identity: IdentityKey,
        /// When the lock ends by itself.
        until: SystemTime,
    },
    /// The state store failed (503: fail closed).
    #[error(transparent)]
    Store(#[from] StateError),
}

/// The lockout rule over a [`StateStore`], with a [`Shadow`] that holds
/// it while the store is away. Cheap to clone; thread-safe.
#[derive(Clone, Debug)]
pub struct Lockout {
    store: Arc<dyn StateStore>,
    config: LockoutConfig,
    shadow: Arc<Shadow>,
}

impl Lockout {
    /// The rule `config` over `store`, shadowed in `shadow`.
    pub fn new(store: Arc<dyn StateStore>, config: LockoutConfig, shadow: Arc<Shadow>) -> Lockout {
        Lockout {
            store,
            config,
            shadow,
        }
    }

    /// [`Lockout::check_all`] while the store is away: the locks last seen
    /// in the store and those started here since.
    pub fn check_all_shadow(
        &self,
        identities: &[IdentityKey],
        now: SystemTime,
    ) -> Result<(), LockError> {
        for id in identities {
            if let Some(lock) = self.shadow.lock_of(id, now) {
                return Err(LockError::Locked {
                    identity: lock.identity,
                    until: lock.until,
                });
            }
        }
        Ok(())
    }

    /// [`Lockout::record_failure`] while the store is away: counted here
    /// (failures before the outage are not known), locking when this
    /// gateway alone saw `max_failures` within the window.
    pub fn record_failure_shadow(&self, identity: &IdentityKey, now: SystemTime) -> LockState {
        if let Some(lock) = self.shadow.lock_of(identity, now) {
            return LockState::Locked {
                until: lock.until,
                new: false,
            };
        }
        let failures = self.shadow.add_failure(identity, now, self.config.window);
        if failures < self.config.max_failures {
            return LockState::Counting {
                failures,
                max_failures: self.config.max_failures,
            };
        }
        let until = lock_end(now, self.config.lock);
        let new = self.shadow.lock(identity, now, until);
        LockState::Locked { until, new }
    }

    /// Pushes the failures and locks the shadow kept while the store was
    /// away; on a failure they stay for the next call.
    pub async fn reconcile(&self) -> Result<(), StateError> {
        let (failures, locks) = self.shadow.take_pending_lockouts();
        let mut failed = None;
        let mut left_failures = Vec::new();
        for (identity, times) in failures {
            if failed.is_some() {
                left_failures.push((identity, times));
                continue;
            }
            for (i, t) in times.iter().enumerate() {
                if let Err(e) = self
                    .store
                    .add_failure(&identity, *t, self.config.window)
                    .await
                {
                    failed = Some(e);
                    left_failures.push((identity.clone(), times[i..].to_vec()));
                    break;
                }
            }
        }
        let mut left_locks = Vec::new();
        for lock in locks {
            if failed.is_some() {
                left_locks.push(lock);
                continue;
            }
            if let Err(e) = self
                .store
                .lock(&lock.identity, lock.since, lock.until)
                .await
            {
                failed = Some(e);
                left_locks.push(lock);
            }
        }
        match failed {
            None => Ok(()),
            Some(e) => {
                self.shadow
                    .restore_pending_lockouts(left_failures, left_locks);
                Err(e)
            }
        }
    }

    /// The rule's settings.
    pub fn config(&self) -> &LockoutConfig {
        &self.config
    }

    /// `Err(Locked)` when `identity` is locked at `now`.
    pub async fn check(&self, identity: &IdentityKey, now: SystemTime) -> Result<(), LockError> {
        let lock = self.store.lock_of(identity, now).await?;
        self.shadow.learn_lock(identity, lock.as_ref());
        match lock {
            Some(lock) => Err(LockError::Locked {
                identity: lock.identity,
                until: lock.until,
            }),
            None => Ok(()),
        }
    }

    /// [`Lockout::check`] of each identity; the first locked one is the error.
    pub async fn check_all(
        &self,
        identities: &[IdentityKey],
        now: SystemTime,
    ) -> Result<(), LockError> {
        for id in identities {
            self.check(id, now).await?;
        }
        Ok(())
    }

    /// Counts a failed authentication of `identity` at `now`. The failure
    /// that reaches `max_failures` within the window locks the identity for
    /// `lock` ([`LockState::Locked`] with `new`); failures of an identity
    /// locked already change nothing (the lock is not extended).
    pub async fn record_failure(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<LockState, StateError> {
        if let Some(lock) = self.store.lock_of(identity, now).await? {
            return Ok(LockState::Locked {
                until: lock.until,
                new: false,
            });
        }
        let failures = self
            .store
            .add_failure(identity, now, self.config.window)
            .await?;
        if failures < self.config.max_failures {
            return Ok(LockState::Counting {
                failures,
                max_failures: self.config.max_failures,
            });
        }
        let until = lock_end(now, self.config.lock);
        let new = self.store.lock(identity, now, until).await?;
        let until = match self.store.lock_of(identity, now).await? {
            Some(lock) => lock.until,
            None => until,
        };
        Ok(LockState::Locked { until, new })
    }

    /// A successful authentication of `identity`: its failures are forgotten.
    pub async fn record_success(&self, identity: &IdentityKey) -> Result<(), StateError> {
        self.shadow.clear_failures(identity);
        self.store.clear_failures(identity).await
    }

    /// Lifts the lock on `identity` (the admin API, by a security auditor)
    /// and forgets its failures; returns the lock that was in force.
    pub async fn unlock(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<Option<LockEntry>, StateError> {
        let lifted = self.store.unlock(identity, now).await?;
        self.shadow.forget(identity);
        Ok(lifted)
    }

    /// Every lock in force at `now`.
    pub async fn locks(&self, now: SystemTime) -> Result<Vec<LockEntry>, StateError> {
        self.store.locks(now).await
    }
}

/// When a lock that starts at `now` ends: year 9999 if `now + lock` does
/// not fit (it always does in practice).
fn lock_end(now: SystemTime, lock: Duration) -> SystemTime {
    now.checked_add(lock)
        .unwrap_or(UNIX_EPOCH + Duration::from_secs(253_402_300_799))
}

/// The identities an authentication attempt is checked under and counted
/// against: the source address always (so that guessing keys or presenting
/// unknown certificates from one address locks that address), the client
/// certificate's subject name when there is one, and the API key's id when
/// one was sent.
pub fn attempt_identities(
    cert: Option<&PeerCertificate>,
    api_key_sha256: Option<&[u8; 32]>,
    source: IpAddr,
) -> Vec<IdentityKey> {
    let mut out = vec![IdentityKey::source(source)];
    out.extend(cert.and_then(IdentityKey::cert));
    out.extend(api_key_sha256.map(IdentityKey::api_key_hash));
    out
}
