//! The demo database's storage: accounts in memory, persisted as a JSON-lines
//! file that every successful write rewrites atomically (temp file + fsync +
//! rename).
//!
//! The file holds exactly what the API received — the gateway encrypts card
//! numbers on their way in, so after the seed data, stored card fields are
//! whatever envelopes the gateway wrote.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value};

use super::data;

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No account has this id.
    #[error("no account {0}")]
    NotFound(String),
    /// An account with this id exists already.
    #[error("account {0} exists already")]
    Conflict(String),
    /// The body is not acceptable (not an object, bad id, …).
    #[error("{0}")]
    Invalid(String),
    /// The file could not be written; the change was rolled back.
    #[error("storage error: {0}")]
    Io(#[from] io::Error),
}

/// In-memory accounts backed by a JSON-lines file.
pub struct Store {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Clone, Default)]
struct Inner {
    /// Accounts in insertion order.
    accounts: Vec<Arc<Value>>,
    /// id → position in `accounts`.
    index: HashMap<String, usize>,
    /// The number the next assigned id gets.
    next_number: u64,
}

impl Inner {
    fn from_accounts(accounts: Vec<Value>, origin: &Path) -> io::Result<Inner> {
        let mut inner = Inner {
            next_number: data::FIRST_ACCOUNT_NUMBER,
            ..Inner::default()
        };
        for (i, account) in accounts.into_iter().enumerate() {
            let id = account_id_of(&account).ok_or_else(|| {
                invalid_data(format!(
                    "{}: record {}: not an object with a string \"id\"",
                    origin.display(),
                    i + 1
                ))
            })?;
            if inner.index.contains_key(&id) {
                return Err(invalid_data(format!(
                    "{}: record {}: duplicate id {id}",
                    origin.display(),
                    i + 1
                )));
            }
            inner.push(id, account);
        }
        Ok(inner)
    }

    fn push(&mut self, id: String, account: Value) {
        if let Some(n) = data::account_number(&id) {
            self.next_number = self.next_number.max(n.saturating_add(1));
        }
        self.index.insert(id, self.accounts.len());
        self.accounts.push(Arc::new(account));
    }
}

fn account_id_of(v: &Value) -> Option<String> {
    v.as_object()?.get("id")?.as_str().map(str::to_string)
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Store {
    /// Opens the store at `path`: loads the JSON-lines file if it exists,
    /// else creates it (and its parent directory) from `seed_with()`.
    ///
    /// A line that is not a JSON object with a string `"id"`, or a duplicate
    /// id, is an `InvalidData` error naming the line.
    pub fn open(path: &Path, seed_with: impl FnOnce() -> Vec<Value>) -> io::Result<Store> {
        let inner = match fs::File::open(path) {
            Ok(file) => {
                let mut accounts = Vec::new();
                for (n, line) in BufReader::new(file).lines().enumerate() {
                    let line = line?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let value: Value = serde_json::from_str(&line).map_err(|e| {
                        invalid_data(format!(
                            "{}:{}: malformed JSON at column {}",
                            path.display(),
                            n + 1,
                            e.column()
                        ))
                    })?;
                    if account_id_of(&value).is_none() {
                        return Err(invalid_data(format!(
                            "{}:{}: not an object with a string \"id\"",
                            path.display(),
                            n + 1
                        )));
                    }
                    accounts.push(value);
                }
                Inner::from_accounts(accounts, path)?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let inner = Inner::from_accounts(seed_with(), path)?;
                if let Some(parent) = path.parent() {
                    if !parent.as_os_str().is_empty() {
                        fs::create_dir_all(parent)?;
                    }
                }
                write_file(path, &inner.accounts)?;
                inner
            }
            Err(e) => return Err(e),
        };
        Ok(Store {
            path: path.to_path_buf(),
            inner: Mutex::new(inner),
        })
    }

    /// The file this store persists to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-updated
        // (writes build the new state first), so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of accounts.
    pub fn len(&self) -> usize {
        self.lock().accounts.len()
    }

    /// True if the store holds no account.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One page of accounts (insertion order) and the total count.
    pub fn page(&self, offset: usize, limit: usize) -> (Vec<Arc<Value>>, usize) {
        let inner = self.lock();
        let total = inner.accounts.len();
        let page = inner
            .accounts
            .iter()
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        (page, total)
    }

    /// The account with this id.
    pub fn get(&self, id: &str) -> Option<Arc<Value>> {
        let inner = self.lock();
        inner.index.get(id).map(|&i| Arc::clone(&inner.accounts[i]))
    }

    /// A consistent snapshot of every account (cheap: shares the values).
    pub fn snapshot(&self) -> Vec<Arc<Value>> {
        self.lock().accounts.clone()
    }

    /// Adds an account. Without an `"id"` it gets the next free `ACC-` id.
    /// Returns the stored object.
    pub fn insert(&self, account: Value) -> Result<Arc<Value>, StoreError> {
        let Value::Object(mut map) = account else {
            return Err(StoreError::Invalid(
                "an account must be a JSON object".into(),
            ));
        };
        let mut inner = self.lock();
        let id = match map.get("id") {
            None | Some(Value::Null) => {
                let id = data::account_id(inner.next_number);
                map.insert("id".into(), Value::String(id.clone()));
                id
            }
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(_) => {
                return Err(StoreError::Invalid(
                    "\"id\" must be a non-empty string".into(),
                ))
            }
        };
        if inner.index.contains_key(&id) {
            return Err(StoreError::Conflict(id));
        }
        let mut next = inner.clone();
        next.push(id.clone(), Value::Object(map));
        self.commit(&mut inner, next)?;
        let stored = inner
            .index
            .get(&id)
            .map(|&i| Arc::clone(&inner.accounts[i]))
            .ok_or(StoreError::NotFound(id))?;
        Ok(stored)
    }

    /// Merges `patch`'s top-level fields into the account (RFC 7396 at the
    /// top level: a `null` value removes the field). `"id"` may be repeated
    /// but not changed.
    pub fn patch(&self, id: &str, patch: Value) -> Result<Arc<Value>, StoreError> {
        let Value::Object(patch) = patch else {
            return Err(StoreError::Invalid("a patch must be a JSON object".into()));
        };
        check_id(id, &patch)?;
        self.update(id, |current| {
            let mut merged = current.clone();
            for (key, value) in patch {
                if value.is_null() {
                    merged.remove(&key);
                } else {
                    merged.insert(key, value);
                }
            }
            merged.insert("id".into(), Value::String(id.to_string()));
            merged
        })
    }

    /// Replaces the account with `account` (whose `"id"`, if present, must
    /// match).
    pub fn replace(&self, id: &str, account: Value) -> Result<Arc<Value>, StoreError> {
        let Value::Object(mut account) = account else {
            return Err(StoreError::Invalid(
                "an account must be a JSON object".into(),
            ));
        };
        check_id(id, &account)?;
        account.insert("id".into(), Value::String(id.to_string()));
        self.update(id, move |_| account)
    }

    fn update(
        &self,
        id: &str,
        f: impl FnOnce(&Map<String, Value>) -> Map<String, Value>,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let Some(&pos) = inner.index.get(id) else {
            return Err(StoreError::NotFound(id.to_string()));
        };
        let empty = Map::new();
        let current = inner.accounts[pos].as_object().unwrap_or(&empty);
        let updated = Arc::new(Value::Object(f(current)));
        let mut next = inner.clone();
        next.accounts[pos] = Arc::clone(&updated);
        self.commit(&mut inner, next)?;
        Ok(updated)
    }

    /// Writes `next` to disk, then makes it the current state. On a write
    /// error the current state is left as it was.
    fn commit(&self, current: &mut Inner, next: Inner) -> io::Result<()> {
        write_file(&self.path, &next.accounts)?;
        *current = next;
        Ok(())
    }
}

fn check_id(id: &str, body: &Map<String, Value>) -> Result<(), StoreError> {
    match body.get("id") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s == id => Ok(()),
        Some(_) => Err(StoreError::Invalid(format!(
            "\"id\" in the body must be {id:?}"
        ))),
    }
}

/// Writes the accounts as JSON lines to a temporary file beside `path`
/// (mode 0600), fsyncs it, renames it over `path` and fsyncs the directory.
fn write_file(path: &Path, accounts: &[Arc<Value>]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "store path has no file name")
    })?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&tmp)?;
        let mut w = io::BufWriter::with_capacity(1 << 16, file);
        let mut line = Vec::with_capacity(4096);
        for account in accounts {
            line.clear();
            data::write_account(&mut line, account).map_err(io::Error::other)?;
            line.push(b'\n');
            w.write_all(&line)?;
        }
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        #[cfg(unix)]
        fs::File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::test_util::temp_dir;
    use super::*;
    use serde_json::json;

    #[test]
    fn seeds_then_reloads_and_persists_writes() {
        let dir = temp_dir("store");
        let path = dir.join("db").join("accounts.jsonl");
        let store = Store::open(&path, || data::generate(7, 25)).unwrap();
        assert_eq!(store.len(), 25);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 25);
        assert!(text.starts_with("{\"id\":\"ACC-100001\""));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }

        // Writes: insert (id assigned), patch (merge + null removes), replace.
        let added = store
            .insert(json!({"name": "Test, \"Quoted\" Person", "cards": []}))
            .unwrap();
        assert_eq!(added["id"], "ACC-100026");
        let patched = store
            .patch(
                "ACC-100001",
                json!({"status": "closed", "passport": null, "id": "ACC-100001"}),
            )
            .unwrap();
        assert_eq!(patched["status"], "closed");
        assert!(patched.get("passport").is_none());
        assert!(patched.get("ssn").is_some() || patched.get("tin").is_some());
        let replaced = store
            .replace("ACC-100002", json!({"name": "Only Name"}))
            .unwrap();
        assert_eq!(*replaced, json!({"id": "ACC-100002", "name": "Only Name"}));

        // Refusals leave the state alone.
        assert!(matches!(
            store.insert(json!({"id": "ACC-100003"})),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.insert(json!([1])),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.insert(json!({"id": 5})),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.patch("ACC-999999", json!({})),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.patch("ACC-100001", json!({"id": "ACC-100002"})),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.len(), 26);
        drop(store);

        // Reload: the seed closure must not run, every write is there.
        let again = Store::open(&path, || panic!("must not reseed")).unwrap();
        assert_eq!(again.len(), 26);
        assert_eq!(
            again.get("ACC-100026").unwrap()["name"],
            "Test, \"Quoted\" Person"
        );
        assert_eq!(again.get("ACC-100001").unwrap()["status"], "closed");
        assert_eq!(
            *again.get("ACC-100002").unwrap(),
            json!({"id": "ACC-100002", "name": "Only Name"})
        );
        let next = again.insert(json!({})).unwrap();
        assert_eq!(next["id"], "ACC-100027");
        // No temp files are left behind.
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stores_exactly_what_it_received() {
        let dir = temp_dir("store-exact");
        let path = dir.join("a.jsonl");
        let store = Store::open(&path, Vec::new).unwrap();
        assert!(store.is_empty());
        let envelope = "mg1.k1.1111.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        store
            .insert(json!({"id": "X-1", "cards": [{"card_number": envelope}]}))
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("{{\"id\":\"X-1\",\"cards\":[{{\"card_number\":\"{envelope}\"}}]}}\n")
        );
        // Custom ids do not disturb id assignment.
        assert_eq!(store.insert(json!({})).unwrap()["id"], "ACC-100001");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_corrupt_files_naming_the_line() {
        let dir = temp_dir("store-bad");
        let path = dir.join("bad.jsonl");
        fs::write(&path, "{\"id\":\"A\"}\n{not json\n").unwrap();
        let err = Store::open(&path, Vec::new).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(":2:"), "{err}");
        fs::write(&path, "{\"id\":\"A\"}\n{\"id\":\"A\"}\n").unwrap();
        let err = Store::open(&path, Vec::new).err().unwrap();
        assert!(err.to_string().contains("duplicate"), "{err}");
        fs::write(&path, "[1,2]\n").unwrap();
        assert!(Store::open(&path, Vec::new).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
