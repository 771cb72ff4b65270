//! [`StateStore`] in PostgreSQL: every method is one statement or one
//! short transaction, so all instances see the same locks, failures,
//! freezes and budget counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::{from_ms, to_ms, Db, PgError};
use crate::admit::{
    check_account_id, Freeze, FreezeChange, IdentityKey, LockEntry, StateError, StateStore,
};

/// Most failure times kept per identity (as the local store).
const MAX_FAILURES_KEPT: i32 = 1000;

/// Budget rows older than two days are deleted every this many additions.
const BUDGET_PRUNE_EVERY: u64 = 1000;

/// Lockouts, failures, freezes and budget counters in the shared database.
#[derive(Debug)]
pub struct PgStateStore {
    db: Db,
    adds: AtomicU64,
}

impl PgStateStore {
    /// A store over `db` (opened and migrated by [`Db::open`]).
    pub fn new(db: Db) -> PgStateStore {
        PgStateStore {
            db,
            adds: AtomicU64::new(0),
        }
    }

    /// The pool.
    pub fn db(&self) -> &Db {
        &self.db
    }
}

fn err(e: PgError) -> StateError {
    StateError::Storage(e.to_string())
}

fn window_ms(window: Duration) -> i64 {
    i64::try_from(window.as_millis()).unwrap_or(i64::MAX)
}

fn lock_entry(identity: &str, since: i64, until: i64) -> Result<LockEntry, StateError> {
    Ok(LockEntry {
        identity: identity.parse().map_err(|_| {
            StateError::Storage("the database holds an unreadable identity".to_owned())
        })?,
        since: from_ms(since),
        until: from_ms(until),
    })
}

#[async_trait::async_trait]
impl StateStore for PgStateStore {
    async fn add_failure(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
        window: Duration,
    ) -> Result<u32, StateError> {
        let id = identity.to_string();
        let now = to_ms(now);
        // Kept: failures with now - t < window (as the local store).
        let after = now.saturating_sub(window_ms(window));
        let n: i32 = self
            .db
            .run(|c| {
                Box::pin(async move {
                    let row = c
                        .query_one(
                            "INSERT INTO maskgate_auth_failures AS f (identity, times) \
                             VALUES ($1, ARRAY[$2::BIGINT]) \
                             ON CONFLICT (identity) DO UPDATE SET times = (\
                               SELECT coalesce(array_agg(t ORDER BY t), '{}') FROM (\
                                 SELECT t FROM unnest(f.times) AS t WHERE t > $3 \
                                 ORDER BY t DESC LIMIT $4) AS kept\
                             ) || $2::BIGINT \
                             RETURNING cardinality(times)",
                            &[&id, &now, &after, &i64::from(MAX_FAILURES_KEPT - 1)],
                        )
                        .await?;
                    Ok(row.get(0))
                })
            })
            .await
            .map_err(err)?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    async fn clear_failures(&self, identity: &IdentityKey) -> Result<(), StateError> {
        let id = identity.to_string();
        self.db
            .run(|c| {
                Box::pin(async move {
                    c.execute(
                        "DELETE FROM maskgate_auth_failures WHERE identity = $1",
                        &[&id],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
            .map_err(err)
    }

    async fn lock(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
        until: SystemTime,
    ) -> Result<bool, StateError> {
        let id = identity.to_string();
        let (now, until) = (to_ms(now), to_ms(until));
        self.db
            .run(|c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    tx.execute(
                        "DELETE FROM maskgate_auth_failures WHERE identity = $1",
                        &[&id],
                    )
                    .await?;
                    // A lock in force is kept; an expired one is replaced.
                    let started = tx
                        .query_opt(
                            "INSERT INTO maskgate_locks AS l (identity, since_ms, until_ms) \
                             VALUES ($1, $2, $3) \
                             ON CONFLICT (identity) DO UPDATE \
                               SET since_ms = EXCLUDED.since_ms, until_ms = EXCLUDED.until_ms \
                               WHERE l.until_ms <= $2 \
                             RETURNING 1",
                            &[&id, &now, &until],
                        )
                        .await?
                        .is_some();
                    tx.execute("DELETE FROM maskgate_locks WHERE until_ms <= $1", &[&now])
                        .await?;
                    tx.commit().await?;
                    Ok(started)
                })
            })
            .await
            .map_err(err)
    }

    async fn lock_of(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<Option<LockEntry>, StateError> {
        let id = identity.to_string();
        let now = to_ms(now);
        let row = self
            .db
            .run(|c| {
                Box::pin(async move {
                    Ok(c.query_opt(
                        "SELECT since_ms, until_ms FROM maskgate_locks \
                         WHERE identity = $1 AND until_ms > $2",
                        &[&id, &now],
                    )
                    .await?
                    .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1))))
                })
            })
            .await
            .map_err(err)?;
        Ok(row.map(|(since, until)| LockEntry {
            identity: identity.clone(),
            since: from_ms(since),
            until: from_ms(until),
        }))
    }

    async fn unlock(
        &self,
        identity: &IdentityKey,
        now: SystemTime,
    ) -> Result<Option<LockEntry>, StateError> {
        let id = identity.to_string();
        let now = to_ms(now);
        let row = self
            .db
            .run(|c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    tx.execute(
                        "DELETE FROM maskgate_auth_failures WHERE identity = $1",
                        &[&id],
                    )
                    .await?;
                    let row = tx
                        .query_opt(
                            "DELETE FROM maskgate_locks WHERE identity = $1 \
                             RETURNING since_ms, until_ms",
                            &[&id],
                        )
                        .await?
                        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
                    tx.commit().await?;
                    Ok(row)
                })
            })
            .await
            .map_err(err)?;
        Ok(row
            .filter(|(_, until)| *until > now)
            .map(|(since, until)| LockEntry {
                identity: identity.clone(),
                since: from_ms(since),
                until: from_ms(until),
            }))
    }

    async fn locks(&self, now: SystemTime) -> Result<Vec<LockEntry>, StateError> {
        let now = to_ms(now);
        let rows = self
            .db
            .run(|c| {
                Box::pin(async move {
                    Ok(c.query(
                        "SELECT identity, since_ms, until_ms FROM maskgate_locks \
                         WHERE until_ms > $1",
                        &[&now],
                    )
                    .await?
                    .iter()
                    .map(|r| {
                        (
                            r.get::<_, String>(0),
                            r.get::<_, i64>(1),
                            r.get::<_, i64>(2),
                        )
                    })
                    .collect::<Vec<_>>())
                })
            })
            .await
            .map_err(err)?;
        let mut out = rows
            .iter()
            .map(|(id, since, until)| lock_entry(id, *since, *until))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(out)
    }

    async fn freeze(
        &self,
        account: &str,
        by: &str,
        now: SystemTime,
    ) -> Result<FreezeChange, StateError> {
        check_account_id(account)?;
        let (key, by, at) = (account.to_owned(), by.to_owned(), to_ms(now));
        let (inserted, by, at) = self
            .db
            .run(|c| {
                Box::pin(async move {
                    // Insert, or read the freeze in force; the upsert that
                    // changes nothing still returns the existing row.
                    let row = c
                        .query_one(
                            "INSERT INTO maskgate_freezes AS f (account, frozen_by, at_ms) \
                             VALUES ($1, $2, $3) \
                             ON CONFLICT (account) DO UPDATE SET account = f.account \
                             RETURNING (xmax = 0), frozen_by, at_ms",
                            &[&key, &by, &at],
                        )
                        .await?;
                    Ok((
                        row.get::<_, bool>(0),
                        row.get::<_, String>(1),
                        row.get::<_, i64>(2),
                    ))
                })
            })
            .await
            .map_err(err)?;
        let freeze = Freeze {
            account: account.to_owned(),
            by,
            at: from_ms(at),
        };
        Ok(if inserted {
            FreezeChange::Frozen(freeze)
        } else {
            FreezeChange::AlreadyFrozen(freeze)
        })
    }

    async fn unfreeze(&self, account: &str) -> Result<Option<Freeze>, StateError> {
        let account = account.to_owned();
        self.db
            .run(|c| {
                Box::pin(async move {
                    Ok(c.query_opt(
                        "DELETE FROM maskgate_freezes WHERE account = $1 \
                         RETURNING account, frozen_by, at_ms",
                        &[&account],
                    )
                    .await?
                    .map(|r| Freeze {
                        account: r.get(0),
                        by: r.get(1),
                        at: from_ms(r.get(2)),
                    }))
                })
            })
            .await
            .map_err(err)
    }

    async fn is_frozen(&self, account: &str) -> Result<bool, StateError> {
        let account = account.to_owned();
        self.db
            .run(|c| {
                Box::pin(async move {
                    Ok(c.query_opt(
                        "SELECT 1 FROM maskgate_freezes WHERE account = $1",
                        &[&account],
                    )
                    .await?
                    .is_some())
                })
            })
            .await
            .map_err(err)
    }

    async fn list_freezes(&self) -> Result<Vec<Freeze>, StateError> {
        self.db
            .run(|c| {
                Box::pin(async move {
                    Ok(c.query(
                        "SELECT account, frozen_by, at_ms FROM maskgate_freezes \
                         ORDER BY account COLLATE \"C\"",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| Freeze {
                        account: r.get(0),
                        by: r.get(1),
                        at: from_ms(r.get(2)),
                    })
                    .collect())
                })
            })
            .await
            .map_err(err)
    }

    async fn add_records(&self, principal: &str, day: &str, n: u64) -> Result<u64, StateError> {
        let (principal, day) = (principal.to_owned(), day.to_owned());
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let prune = self.adds.fetch_add(1, Ordering::Relaxed) % BUDGET_PRUNE_EVERY == 0;
        let total: i64 = self
            .db
            .run(|c| {
                Box::pin(async move {
                    let row = c
                        .query_one(
                            "INSERT INTO maskgate_budgets AS b (principal, day, records) \
                             VALUES ($1, $2, $3) \
                             ON CONFLICT (principal, day) DO UPDATE \
                               SET records = b.records + EXCLUDED.records \
                             RETURNING records",
                            &[&principal, &day, &n],
                        )
                        .await?;
                    if prune {
                        // Days are YYYY-MM-DD: keep today and yesterday.
                        c.execute(
                            "DELETE FROM maskgate_budgets WHERE day < $1 AND day NOT IN (\
                               SELECT DISTINCT day FROM maskgate_budgets \
                               ORDER BY day DESC LIMIT 2)",
                            &[&day],
                        )
                        .await?;
                    }
                    Ok(row.get(0))
                })
            })
            .await
            .map_err(err)?;
        Ok(u64::try_from(total).unwrap_or(0))
    }

    async fn records(&self, principal: &str, day: &str) -> Result<u64, StateError> {
        let (principal, day) = (principal.to_owned(), day.to_owned());
        let total: Option<i64> = self
            .db
            .run(|c| {
                Box::pin(async move {
                    Ok(c.query_opt(
                        "SELECT records FROM maskgate_budgets WHERE principal = $1 AND day = $2",
                        &[&principal, &day],
                    )
                    .await?
                    .map(|r| r.get(0)))
                })
            })
            .await
            .map_err(err)?;
        Ok(total.map_or(0, |t| u64::try_from(t).unwrap_or(0)))
    }
}
