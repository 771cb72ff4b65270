//! The local shadow of the state store: what admission keeps in memory so
//! that record budgets and lockouts still hold while a shared store is
//! away (`[state] on_unavailable = "serve_masked"`), and what it pushes to
//! the store once it is back.
//!
//! While the store answers, the shadow only learns: each principal's
//! record count of the day as last read, and each lock as last seen. While
//! it does not, the gateway counts records and failed sign-ons here and
//! enforces budgets and locks from what it learned plus what it counted.
//! [`Budget::reconcile`](super::Budget::reconcile) and
//! [`Lockout::reconcile`](super::Lockout::reconcile) push the counts when
//! the store answers again (the gateway tries once a second, and a budget
//! check pushes its principal's count first).
//!
//! What the shadow cannot know is what other instances counted meanwhile,
//! or the count of a principal not seen since the gateway started (it
//! starts from 0): `docs/security.md` lists what degrades.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::state::{IdentityKey, LockEntry};

/// Most entries each table keeps; past it, learned entries are dropped
/// first (counts not yet pushed are kept).
const MAX_ENTRIES: usize = 100_000;

/// One principal's records on one day.
#[derive(Clone, Copy, Debug, Default)]
struct Records {
    /// The total the store last reported.
    stored: u64,
    /// Counted here while the store was away, not yet pushed.
    pending: u64,
}

#[derive(Debug, Default)]
struct Tables {
    /// (principal, day) → records.
    records: HashMap<(String, String), Records>,
    /// Failed sign-ons counted while the store was away, not yet pushed.
    failures: HashMap<IdentityKey, Vec<SystemTime>>,
    /// Locks as last seen in the store, and locks started here.
    locks: HashMap<IdentityKey, ShadowLock>,
}

#[derive(Clone, Debug)]
struct ShadowLock {
    entry: LockEntry,
    /// Started here while the store was away: to be pushed.
    pending: bool,
}

/// The shadow. One per gateway (kept across reloads); thread-safe.
#[derive(Debug, Default)]
pub struct Shadow {
    tables: Mutex<Tables>,
}

impl Shadow {
    /// An empty shadow.
    pub fn new() -> Shadow {
        Shadow::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True while counts wait to be pushed.
    pub fn has_pending(&self) -> bool {
        let t = self.tables();
        t.records.values().any(|r| r.pending > 0)
            || !t.failures.is_empty()
            || t.locks.values().any(|l| l.pending)
    }

    // ------------------------------------------------------------ records

    /// The store says `principal` received `total` records on `day`.
    pub(super) fn learn_records(&self, principal: &str, day: &str, total: u64) {
        let mut t = self.tables();
        if t.records.len() >= MAX_ENTRIES {
            t.records.retain(|_, r| r.pending > 0);
        }
        t.records
            .entry((principal.to_owned(), day.to_owned()))
            .or_default()
            .stored = total;
    }

    /// The records of `principal` on `day` as far as this gateway knows:
    /// the store's last total plus what was counted here since.
    pub(super) fn records(&self, principal: &str, day: &str) -> u64 {
        self.tables()
            .records
            .get(&(principal.to_owned(), day.to_owned()))
            .map_or(0, |r| r.stored.saturating_add(r.pending))
    }

    /// Counts `n` records of `principal` on `day` while the store is away;
    /// returns the new total as far as this gateway knows.
    pub(super) fn add_records(&self, principal: &str, day: &str, n: u64) -> u64 {
        let mut t = self.tables();
        let r = t
            .records
            .entry((principal.to_owned(), day.to_owned()))
            .or_default();
        r.pending = r.pending.saturating_add(n);
        r.stored.saturating_add(r.pending)
    }

    /// Takes the records of `principal` on `day` waiting to be pushed.
    pub(super) fn take_pending_records(&self, principal: &str, day: &str) -> u64 {
        self.tables()
            .records
            .get_mut(&(principal.to_owned(), day.to_owned()))
            .map_or(0, |r| std::mem::take(&mut r.pending))
    }

    /// Puts back records whose push failed.
    pub(super) fn restore_pending_records(&self, principal: &str, day: &str, n: u64) {
        let mut t = self.tables();
        let r = t
            .records
            .entry((principal.to_owned(), day.to_owned()))
            .or_default();
        r.pending = r.pending.saturating_add(n);
    }

    /// Every (principal, day) with records waiting to be pushed.
    pub(super) fn pending_record_keys(&self) -> Vec<(String, String)> {
        self.tables()
            .records
            .iter()
            .filter(|(_, r)| r.pending > 0)
            .map(|(k, _)| k.clone())
            .collect()
    }

    // ------------------------------------------------------------ lockouts

    /// The store says `identity` is locked by `lock` (or not, `None`).
    pub(super) fn learn_lock(&self, identity: &IdentityKey, lock: Option<&LockEntry>) {
        let mut t = self.tables();
        match lock {
            Some(entry) => {
                if t.locks.len() >= MAX_ENTRIES {
                    t.locks.retain(|_, l| l.pending);
                }
                t.locks.insert(
                    identity.clone(),
                    ShadowLock {
                        entry: entry.clone(),
                        pending: false,
                    },
                );
            }
            None => {
                if t.locks.get(identity).is_some_and(|l| !l.pending) {
                    t.locks.remove(identity);
                }
            }
        }
    }

    /// The lock on `identity` in force at `now` as far as this gateway knows.
    pub(super) fn lock_of(&self, identity: &IdentityKey, now: SystemTime) -> Option<LockEntry> {
        self.tables()
            .locks
            .get(identity)
            .filter(|l| l.entry.until > now)
            .map(|l| l.entry.clone())
    }

    /// Counts a failed sign-on of `identity` at `now` while the store is
    /// away; returns the failures counted here within `window`.
    pub(super) fn add_failure(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
        window: Duration,
    ) -> u32 {
        let mut t = self.tables();
        if t.failures.len() >= MAX_ENTRIES && !t.failures.contains_key(identity) {
            // Bounded: an identity past the table's size is not tracked;
            // the source address of the attempt still is (it is counted
            // first, and addresses are few).
            return 0;
        }
        let times = t.failures.entry(identity.clone()).or_default();
        times.push(now);
        let since = now.checked_sub(window);
        let recent = times
            .iter()
            .filter(|t| since.is_none_or(|s| **t > s))
            .count();
        u32::try_from(recent).unwrap_or(u32::MAX)
    }

    /// Locks `identity` from `now` until `until` while the store is away;
    /// `true` when this starts the lock.
    pub(super) fn lock(&self, identity: &IdentityKey, now: SystemTime, until: SystemTime) -> bool {
        let mut t = self.tables();
        if t.locks.get(identity).is_some_and(|l| l.entry.until > now) {
            return false;
        }
        t.locks.insert(
            identity.clone(),
            ShadowLock {
                entry: LockEntry {
                    identity: identity.clone(),
                    since: now,
                    until,
                },
                pending: true,
            },
        );
        true
    }

    /// Forgets the lock and failures of `identity` (a security auditor
    /// lifted its lock).
    pub(super) fn forget(&self, identity: &IdentityKey) {
        let mut t = self.tables();
        t.locks.remove(identity);
        t.failures.remove(identity);
    }

    /// Forgets the failures of `identity` (a successful sign-on).
    pub(super) fn clear_failures(&self, identity: &IdentityKey) {
        self.tables().failures.remove(identity);
    }

    /// Takes the failures and locks waiting to be pushed.
    pub(super) fn take_pending_lockouts(
        &self,
    ) -> (Vec<(IdentityKey, Vec<SystemTime>)>, Vec<LockEntry>) {
        let mut t = self.tables();
        let failures = t.failures.drain().collect();
        let locks = t
            .locks
            .values_mut()
            .filter(|l| l.pending)
            .map(|l| {
                l.pending = false;
                l.entry.clone()
            })
            .collect();
        (failures, locks)
    }

    /// Puts back failures and locks whose push failed.
    pub(super) fn restore_pending_lockouts(
        &self,
        failures: Vec<(IdentityKey, Vec<SystemTime>)>,
        locks: Vec<LockEntry>,
    ) {
        let mut t = self.tables();
        for (id, times) in failures {
            t.failures.entry(id).or_default().extend(times);
        }
        for entry in locks {
            t.locks.insert(
                entry.identity.clone(),
                ShadowLock {
                    entry,
                    pending: true,
                },
            );
        }
    }
}
