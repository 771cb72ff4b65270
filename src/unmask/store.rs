//! The embedded grant store: every grant in one JSON file under the data
//! directory, rewritten atomically (private temp file, fsync, rename, fsync
//! of the directory) on every change, before the change is reported.
//!
//! One gateway process owns the file; several instances share grants
//! through a database backend instead (see [`GrantBackend`]).

use crate::fsutil::{create_private_dir, replace_atomically};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::grants::{
    check_issue, check_revoke, check_use, Actor, Grant, GrantBackend, GrantError, GrantStatus,
    GrantUse, IssueRequest, ListedGrant, GRANT_RETENTION,
};
use crate::class::FieldClass;
use crate::config::Policy;

/// The file's format version.
const VERSION: u32 = 1;

/// The file's contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    grants: Vec<Grant>,
}

/// Decrypt grants kept in `<data dir>/grants.json` (mode 0600).
#[derive(Debug)]
pub struct GrantStore {
    path: PathBuf,
    grants: Mutex<Vec<Grant>>,
    rng: SystemRandom,
}

fn storage(what: &str, path: &Path, e: impl std::fmt::Display) -> GrantError {
    GrantError::Storage(format!("{what} {}: {e}", path.display()))
}

impl GrantStore {
    /// The file's name in the data directory.
    pub const FILE_NAME: &'static str = "grants.json";

    /// Opens the store in `data_dir`, creating the directory (mode 0700)
    /// when missing. A missing file is an empty store; a file that cannot
    /// be read or parsed is an error (the gateway does not start with
    /// grants it cannot see).
    pub fn open(data_dir: &Path) -> Result<GrantStore, GrantError> {
        create_private_dir(data_dir).map_err(|e| storage("cannot create", data_dir, e))?;
        let path = data_dir.join(GrantStore::FILE_NAME);
        let grants = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: StoreFile = serde_json::from_slice(&bytes)
                    .map_err(|e| storage("cannot parse", &path, e))?;
                if file.version != VERSION {
                    return Err(storage(
                        "cannot read",
                        &path,
                        format!(
                            "format version {} (this gateway reads {VERSION})",
                            file.version
                        ),
                    ));
                }
                file.grants
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(storage("cannot read", &path, e)),
        };
        Ok(GrantStore {
            path,
            grants: Mutex::new(grants),
            rng: SystemRandom::new(),
        })
    }

    /// The file the grants are kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Grant>> {
        self.grants.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `grants` durably, replacing the file.
    fn persist(&self, grants: &[Grant]) -> Result<(), GrantError> {
        let file = StoreFile {
            version: VERSION,
            grants: grants.to_vec(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file)
            .map_err(|e| storage("cannot encode", &self.path, e))?;
        bytes.push(b'\n');
        let mut suffix = [0u8; 8];
        self.rng
            .fill(&mut suffix)
            .map_err(|_| storage("cannot write", &self.path, "random number generator failed"))?;
        replace_atomically(&self.path, &bytes, &hex::encode(suffix))
            .map_err(|e| storage("cannot write", &self.path, e))
    }

    /// Applies `change` to a copy of the grants, persists the copy, and
    /// only then makes it current. The lock is held throughout, so changes
    /// are serialized and a failed write changes nothing.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Vec<Grant>) -> Result<T, GrantError>,
    ) -> Result<T, GrantError> {
        let mut current = self.lock();
        let mut next = current.clone();
        let out = change(&mut next)?;
        self.persist(&next)?;
        *current = next;
        Ok(out)
    }

    fn new_id(&self, taken: &[Grant]) -> Result<String, GrantError> {
        loop {
            let mut raw = [0u8; 16];
            self.rng
                .fill(&mut raw)
                .map_err(|_| GrantError::Storage("random number generator failed".to_owned()))?;
            let id = hex::encode(raw);
            if !taken.iter().any(|g| g.id == id) {
                return Ok(id);
            }
        }
    }
}

#[async_trait::async_trait]
impl GrantBackend for GrantStore {
    async fn issue(
        &self,
        policy: &Policy,
        approver: &Actor<'_>,
        req: &IssueRequest,
        now: SystemTime,
    ) -> Result<Grant, GrantError> {
        let checked = check_issue(policy, approver, req, now)?;
        self.update(|grants| {
            let id = self.new_id(grants)?;
            let grant = checked.into_grant(id, approver.name, &req.grantee, now);
            grants.push(grant.clone());
            Ok(grant)
        })
    }

    async fn use_grant(
        &self,
        id: &str,
        principal: &str,
        route_name: &str,
        account_id: Option<&str>,
        classes: &[FieldClass],
        now: SystemTime,
    ) -> Result<GrantUse, GrantError> {
        self.update(|grants| {
            let grant = grants
                .iter_mut()
                .find(|g| g.id == id)
                .ok_or(GrantError::Unknown)?;
            check_use(grant, principal, route_name, account_id, classes, now)?;
            grant.uses += 1;
            Ok(GrantUse {
                grant_id: grant.id.clone(),
                grantee: grant.grantee.clone(),
                approver: grant.approver.clone(),
                classes: grant.classes.clone(),
                uses: grant.uses,
                max_uses: grant.max_uses,
                expires_at: grant.expires_at,
            })
        })
    }

    async fn revoke(
        &self,
        policy: &Policy,
        id: &str,
        by: &Actor<'_>,
        now: SystemTime,
    ) -> Result<Grant, GrantError> {
        self.update(|grants| {
            let grant = grants
                .iter_mut()
                .find(|g| g.id == id)
                .ok_or(GrantError::Unknown)?;
            check_revoke(policy, grant, by)?;
            grant.revoked = Some(super::grants::Revocation {
                by: by.name.to_owned(),
                at: now,
            });
            Ok(grant.clone())
        })
    }

    async fn get(&self, id: &str) -> Result<Option<Grant>, GrantError> {
        Ok(self.lock().iter().find(|g| g.id == id).cloned())
    }

    async fn list(&self, now: SystemTime) -> Result<Vec<ListedGrant>, GrantError> {
        let mut out: Vec<ListedGrant> = self
            .lock()
            .iter()
            .map(|g| ListedGrant {
                status: g.status(now),
                grant: g.clone(),
            })
            .collect();
        out.sort_by_key(|l| l.grant.issued_at);
        Ok(out)
    }

    async fn sweep_expired(&self, now: SystemTime) -> Result<Vec<Grant>, GrantError> {
        let mut current = self.lock();
        let mut next = current.clone();
        let mut reported = Vec::new();
        for g in &mut next {
            if g.status(now) == GrantStatus::Expired && !g.expiry_reported {
                g.expiry_reported = true;
                reported.push(g.clone());
            }
        }
        let before = next.len();
        next.retain(|g| {
            let ended = match (&g.revoked, g.status(now)) {
                (Some(r), _) => Some(r.at.min(g.expires_at)),
                (None, GrantStatus::Active) => None,
                (None, _) => Some(g.expires_at),
            };
            // A grant is kept for the retention time after its expiry (or
            // revocation), and never dropped before its expiry is reported.
            let expired_unreported = g.status(now) == GrantStatus::Expired && !g.expiry_reported;
            expired_unreported
                || ended.is_none_or(|t| {
                    now.duration_since(t)
                        .map_or(true, |age| age <= GRANT_RETENTION)
                })
        });
        if reported.is_empty() && next.len() == before {
            return Ok(reported);
        }
        self.persist(&next)?;
        *current = next;
        Ok(reported)
    }
}
