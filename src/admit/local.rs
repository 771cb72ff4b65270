//! The embedded state store: files under the data directory, for one
//! gateway process.
//!
//! | what | kept | file |
//! |---|---|---|
//! | locks | memory + file, written on every lock and unlock | `lockouts.json` |
//! | freezes | memory + file, written on every change | `freezes.json` |
//! | record counts (today and yesterday) | memory; written best-effort every [`LocalStateStore::BUDGET_FLUSH_EVERY`] additions, on [`LocalStateStore::flush_budgets`] and on drop | `budgets.json` |
//! | failed authentications | memory only (a restart forgets them) | — |
//!
//! Each file is replaced atomically (a private 0600 temp file beside it,
//! fsync, rename, fsync of the directory). A change that restricts (a lock,
//! a freeze) takes effect in memory even when writing it fails (the error
//! is still returned); a change that lifts a restriction (unlock, unfreeze)
//! takes effect only once it is written. A missing file is empty state; a
//! file that cannot be read or parsed stops [`LocalStateStore::open`]: the
//! gateway does not start without knowing its locks and freezes.

use crate::fsutil::{create_private_dir, replace_atomically};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom as _, SystemRandom};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::state::{
    check_account_id, unix_millis, Freeze, FreezeChange, IdentityKey, LockEntry, StateError,
    StateStore,
};

/// The files' format version.
const VERSION: u32 = 1;

/// Most failure times kept per identity (the largest `max_failures`).
const MAX_FAILURES_KEPT: usize = 1000;

/// Most identities whose failures are tracked at once; past it the oldest
/// are forgotten first (after those outside the window).
const MAX_TRACKED: usize = 100_000;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocksFile {
    version: u32,
    locks: Vec<StoredLock>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredLock {
    identity: IdentityKey,
    #[serde(with = "unix_millis")]
    since: SystemTime,
    #[serde(with = "unix_millis")]
    until: SystemTime,
}

impl StoredLock {
    fn entry(&self) -> LockEntry {
        LockEntry {
            identity: self.identity.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezesFile {
    version: u32,
    freezes: Vec<Freeze>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetsFile {
    version: u32,
    /// day → principal → records.
    days: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Default)]
struct Auth {
    failures: HashMap<IdentityKey, VecDeque<SystemTime>>,
    locks: BTreeMap<IdentityKey, StoredLock>,
}

#[derive(Default)]
struct Budgets {
    /// day → principal → records; at most the two latest days.
    days: BTreeMap<String, HashMap<String, u64>>,
    /// Additions since the last write.
    unsaved: u64,
}

/// Lockouts, freezes and budget counters in files under the data directory
/// (see the module docs for what is kept where). Thread-safe.
#[derive(Debug)]
pub struct LocalStateStore {
    dir: PathBuf,
    auth: Mutex<Auth>,
    freezes: Mutex<BTreeMap<String, Freeze>>,
    budgets: Mutex<Budgets>,
    next_tmp: AtomicU64,
    rng: SystemRandom,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tracked", &self.failures.len())
            .field("locks", &self.locks.len())
            .finish()
    }
}

impl std::fmt::Debug for Budgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budgets")
            .field("days", &self.days.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn storage(what: &str, path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError::Storage(format!("{what} {}: {e}", path.display()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads a state file: `None` when it does not exist.
fn read_file<T: DeserializeOwned>(
    path: &Path,
    version: impl Fn(&T) -> u32,
) -> Result<Option<T>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(storage("cannot read", path, e)),
    };
    let file: T = serde_json::from_slice(&bytes).map_err(|e| storage("cannot parse", path, e))?;
    let found = version(&file);
    if found != VERSION {
        return Err(storage(
            "cannot read",
            path,
            format!("format version {found} (this gateway reads {VERSION})"),
        ));
    }
    Ok(Some(file))
}

impl LocalStateStore {
    /// The locks file's name in the data directory.
    pub const LOCKS_FILE: &'static str = "lockouts.json";
    /// The freezes file's name.
    pub const FREEZES_FILE: &'static str = "freezes.json";
    /// The budget counters file's name.
    pub const BUDGETS_FILE: &'static str = "budgets.json";
    /// The budget counters are written after this many additions.
    pub const BUDGET_FLUSH_EVERY: u64 = 64;

    /// Opens the store in `data_dir`, creating the directory (mode 0700)
    /// when missing, and reads the locks, freezes and budget counters
    /// written before.
    pub fn open(data_dir: &Path) -> Result<LocalStateStore, StateError> {
        create_private_dir(data_dir).map_err(|e| storage("cannot create", data_dir, e))?;
        let mut auth = Auth::default();
        if let Some(file) = read_file::<LocksFile>(&data_dir.join(Self::LOCKS_FILE), |f| f.version)?
        {
            for l in file.locks {
                auth.locks.insert(l.identity.clone(), l);
            }
        }
        let mut freezes = BTreeMap::new();
        if let Some(file) =
            read_file::<FreezesFile>(&data_dir.join(Self::FREEZES_FILE), |f| f.version)?
        {
            for f in file.freezes {
                freezes.insert(f.account.clone(), f);
            }
        }
        let mut budgets = Budgets::default();
        if let Some(file) =
            read_file::<BudgetsFile>(&data_dir.join(Self::BUDGETS_FILE), |f| f.version)?
        {
            for (day, counts) in file.days {
                budgets.days.insert(day, counts.into_iter().collect());
            }
            budgets.keep_two_days();
        }
        Ok(LocalStateStore {
            dir: data_dir.to_path_buf(),
            auth: Mutex::new(auth),
            freezes: Mutex::new(freezes),
            budgets: Mutex::new(budgets),
            next_tmp: AtomicU64::new(0),
            rng: SystemRandom::new(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the budget counters now. Call it on shutdown and, if wanted,
    /// periodically; additions also write every
    /// [`LocalStateStore::BUDGET_FLUSH_EVERY`] times, ignoring errors.
    pub fn flush_budgets(&self) -> Result<(), StateError> {
        let mut budgets = lock(&self.budgets);
        self.write_budgets(&budgets)?;
        budgets.unsaved = 0;
        Ok(())
    }

    fn write_budgets(&self, budgets: &Budgets) -> Result<(), StateError> {
        let file = BudgetsFile {
            version: VERSION,
            days: budgets
                .days
                .iter()
                .map(|(d, m)| (d.clone(), m.iter().map(|(k, v)| (k.clone(), *v)).collect()))
                .collect(),
        };
        self.write(Self::BUDGETS_FILE, &file)
    }

    fn write_locks(&self, locks: &BTreeMap<IdentityKey, StoredLock>) -> Result<(), StateError> {
        let file = LocksFile {
            version: VERSION,
            locks: locks.values().cloned().collect(),
        };
        self.write(Self::LOCKS_FILE, &file)
    }

    fn write_freezes(&self, freezes: &BTreeMap<String, Freeze>) -> Result<(), StateError> {
        let file = FreezesFile {
            version: VERSION,
            freezes: freezes.values().cloned().collect(),
        };
        self.write(Self::FREEZES_FILE, &file)
    }

    fn write(&self, name: &str, value: &impl Serialize) -> Result<(), StateError> {
        let path = self.dir.join(name);
        let mut bytes =
            serde_json::to_vec_pretty(value).map_err(|e| storage("cannot encode", &path, e))?;
        bytes.push(b'\n');
        // A counter and random bytes: a temp file left by a crashed process
        // of the same id cannot collide.
        let mut random = [0u8; 8];
        self.rng
            .fill(&mut random)
            .map_err(|_| storage("cannot write", &path, "random number generator failed"))?;
        let unique = format!(
            "{}-{}",
            self.next_tmp.fetch_add(1, Ordering::Relaxed),
            hex::encode(random)
        );
        replace_atomically(&path, &bytes, &unique).map_err(|e| storage("cannot write", &path, e))
    }
}

impl Budgets {
    /// Forgets every day but the two latest (`YYYY-MM-DD` sorts by date).
    fn keep_two_days(&mut self) {
        while self.days.len() > 2 {
            self.days.pop_first();
        }
    }
}

impl Auth {
    /// Makes room for one more tracked identity: forgets those without a
    /// failure within `window`, then the longest quiet ones.
    fn make_room(&mut self, now: SystemTime, window: Duration) {
        if self.failures.len() < MAX_TRACKED {
            return;
        }
        self.failures
            .retain(|_, times| times.back().is_some_and(|t| within(*t, now, window)));
        if self.failures.len() < MAX_TRACKED {
            return;
        }
        let mut last: Vec<(SystemTime, IdentityKey)> = self
            .failures
            .iter()
            .filter_map(|(k, times)| times.back().map(|t| (*t, k.clone())))
            .collect();
        last.sort_unstable_by_key(|a| a.0);
        let excess = self.failures.len() - MAX_TRACKED * 9 / 10;
        for (_, key) in last.into_iter().take(excess) {
            self.failures.remove(&key);
        }
    }

    /// Forgets locks that ended before `now`.
    fn prune_locks(&mut self, now: SystemTime) -> bool {
        let before = self.locks.len();
        self.locks.retain(|_, l| l.until > now);
        self.locks.len() != before
    }
}

/// True when `t` is within `window` before `now` (or after it: a clock that
/// went back does not forget failures).
fn within(t: SystemTime, now: SystemTime, window: Duration) -> bool {
    now.duration_since(t).map_or(true, |age| age < window)
}

#[async_trait::async_trait]
impl StateStore for LocalStateStore {
    async fn add_failure(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
        window: Duration,
    ) -> Result<u32, StateError> {
        let mut auth = lock(&self.auth);
        if !auth.failures.contains_key(identity) {
            auth.make_room(now, window);
        }
        let times = auth.failures.entry(identity.clone()).or_default();
        times.retain(|t| within(*t, now, window));
        if times.len() >= MAX_FAILURES_KEPT {
            times.pop_front();
        }
        times.push_back(now);
        Ok(u32::try_from(times.len()).unwrap_or(u32::MAX))
    }

    async fn clear_failures(&self, identity: &IdentityKey) -> Result<(), StateError> {
        lock(&self.auth).failures.remove(identity);
        Ok(())
    }

    async fn lock(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StateError> {
        let mut auth = lock(&self.auth);
        auth.failures.remove(identity);
        if auth.locks.get(identity).is_some_and(|l| l.until > now) {
            return Ok(false);
        }
        auth.prune_locks(now);
        auth.locks.insert(
            identity.clone(),
            StoredLock {
                identity: identity.clone(),
                since: now,
                until,
            },
        );
        // In force even if the write fails: a lock fails closed.
        self.write_locks(&auth.locks)?;
        Ok(true)
    }

    async fn lock_of(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<Option<LockEntry>, StateError> {
        Ok(lock(&self.auth)
            .locks
            .get(identity)
            .filter(|l| l.until > now)
            .map(StoredLock::entry))
    }

    async fn unlock(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<Option<LockEntry>, StateError> {
        let mut auth = lock(&self.auth);
        let Some(current) = auth.locks.get(identity).cloned() else {
            auth.failures.remove(identity);
            return Ok(None);
        };
        let mut next = auth.locks.clone();
        next.remove(identity);
        next.retain(|_, l| l.until > now);
        // Lifted only once written: an unlock that is not saved would come
        // back after a restart, so it is refused as a whole.
        self.write_locks(&next)?;
        auth.locks = next;
        auth.failures.remove(identity);
        Ok((current.until > now).then(|| current.entry()))
    }

    async fn locks(&self, now: SystemTime) -> Result<Vec<LockEntry>, StateError> {
        Ok(lock(&self.auth)
            .locks
            .values()
            .filter(|l| l.until > now)
            .map(StoredLock::entry)
            .collect())
    }

    async fn freeze(
        &self,
        account: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<FreezeChange, StateError> {
        check_account_id(account)?;
        let mut freezes = lock(&self.freezes);
        if let Some(existing) = freezes.get(account) {
            return Ok(FreezeChange::AlreadyFrozen(existing.clone()));
        }
        let freeze = Freeze {
            account: account.to_owned(),
            by: by.to_owned(),
            // Stored with millisecond precision; keep the value returned
            // equal to the one read back after a restart.
            at: unix_millis::from_millis(unix_millis::to_millis(now)),
        };
        freezes.insert(account.to_owned(), freeze.clone());
        // In force even if the write fails: a freeze fails closed.
        self.write_freezes(&freezes)?;
        Ok(FreezeChange::Frozen(freeze))
    }

    async fn unfreeze(&self, account: &str) -> Result<Option<Freeze>, StateError> {
        let mut freezes = lock(&self.freezes);
        let Some(existing) = freezes.get(account).cloned() else {
            return Ok(None);
        };
        let mut next = freezes.clone();
        next.remove(account);
        self.write_freezes(&next)?;
        *freezes = next;
        Ok(Some(existing))
    }

    async fn is_frozen(&self, account: &str) -> Result<bool, StateError> {
        Ok(lock(&self.freezes).contains_key(account))
    }

    async fn list_freezes(&self) -> Result<Vec<Freeze>, StateError> {
        Ok(lock(&self.freezes).values().cloned().collect())
    }

    async fn add_records(&self, principal: &str, day: &str, n: u64) -> Result<u64, StateError> {
        let mut budgets = lock(&self.budgets);
        let total = {
            let count = budgets
                .days
                .entry(day.to_owned())
                .or_default()
                .entry(principal.to_owned())
                .or_insert(0);
            *count = count.saturating_add(n);
            *count
        };
        budgets.keep_two_days();
        budgets.unsaved += 1;
        if budgets.unsaved >= Self::BUDGET_FLUSH_EVERY {
            // Best effort: the counts in memory are what counts.
            if self.write_budgets(&budgets).is_ok() {
                budgets.unsaved = 0;
            }
        }
        Ok(total)
    }

    async fn records(&self, principal: &str, day: &str) -> Result<u64, StateError> {
        Ok(lock(&self.budgets)
            .days
            .get(day)
            .and_then(|m| m.get(principal))
            .copied()
            .unwrap_or(0))
    }
}

impl Drop for LocalStateStore {
    /// Writes unsaved budget counters, best effort.
    fn drop(&mut self) {
        let budgets = lock(&self.budgets);
        if budgets.unsaved > 0 {
            let _ = self.write_budgets(&budgets);
        }
    }
}
