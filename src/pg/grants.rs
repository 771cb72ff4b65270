//! [`GrantBackend`] in PostgreSQL. The rules are the shared pure checks
//! ([`check_issue`], [`check_use`], [`check_revoke`]); this store adds
//! atomicity across instances: a use or a revocation locks the grant's row
//! (`SELECT … FOR UPDATE`) for the check and the update, so two concurrent
//! uses of a single-use grant, through any instances, succeed once.

use std::time::SystemTime;

use ring::rand::{SecureRandom, SystemRandom};

use super::{to_ms, Db, PgError};
use crate::class::FieldClass;
use crate::config::Policy;
use crate::unmask::{
    check_issue, check_revoke, check_use, Actor, Grant, GrantBackend, GrantError, GrantStatus,
    GrantUse, IssueRequest, ListedGrant, Revocation, GRANT_RETENTION,
};

/// Decrypt grants in the shared database (table `maskgate_grants`).
#[derive(Debug)]
pub struct PgGrantStore {
    db: Db,
    rng: SystemRandom,
}

impl PgGrantStore {
    /// A store over `db` (opened and migrated by [`Db::open`]).
    pub fn new(db: Db) -> PgGrantStore {
        PgGrantStore {
            db,
            rng: SystemRandom::new(),
        }
    }
}

fn storage(e: PgError) -> GrantError {
    GrantError::Storage(e.to_string())
}

fn encode(g: &Grant) -> Result<String, PgError> {
    serde_json::to_string(g).map_err(|e| PgError::Corrupt(format!("cannot encode a grant: {e}")))
}

fn decode(json: &str) -> Result<Grant, PgError> {
    // serde's message may quote a field; say only which kind of row failed.
    serde_json::from_str(json).map_err(|_| PgError::Corrupt("a grant row does not parse".into()))
}

/// A grant operation's result: the store failing, or the rules refusing.
enum Step<T> {
    Done(T),
    Refused(GrantError),
}

fn finish<T>(r: Result<Step<T>, PgError>) -> Result<T, GrantError> {
    match r {
        Ok(Step::Done(t)) => Ok(t),
        Ok(Step::Refused(e)) => Err(e),
        Err(e) => Err(storage(e)),
    }
}

#[async_trait::async_trait]
impl GrantBackend for PgGrantStore {
    async fn issue(
        &self,
        policy: &Policy,
        approver: &Actor<'_>,
        req: &IssueRequest,
        now: SystemTime,
    ) -> Result<Grant, GrantError> {
        let checked = check_issue(policy, approver, req, now)?;
        let mut raw = [0u8; 16];
        self.rng
            .fill(&mut raw)
            .map_err(|_| GrantError::Storage("random number generator failed".to_owned()))?;
        let grant = checked.into_grant(hex::encode(raw), approver.name, &req.grantee, now);
        let json = encode(&grant).map_err(storage)?;
        let (id, issued) = (grant.id.clone(), to_ms(grant.issued_at));
        self.db
            .run(|c| {
                Box::pin(async move {
                    // 128 random bits: a collision is an error, not a retry.
                    c.execute(
                        "INSERT INTO maskgate_grants (id, issued_at_ms, grant_json) \
                         VALUES ($1, $2, $3)",
                        &[&id, &issued, &json],
                    )
                    .await?;
                    Ok(())
                })
            })
            .await
            .map_err(storage)?;
        Ok(grant)
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
        let id = id.to_owned();
        let principal = principal.to_owned();
        let route = route_name.to_owned();
        let account = account_id.map(str::to_owned);
        let classes = classes.to_vec();
        let r = self
            .db
            .run(|c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    let Some(row) = tx
                        .query_opt(
                            "SELECT grant_json FROM maskgate_grants WHERE id = $1 FOR UPDATE",
                            &[&id],
                        )
                        .await?
                    else {
                        return Ok(Step::Refused(GrantError::Unknown));
                    };
                    let mut grant = decode(row.get(0))?;
                    if let Err(e) = check_use(
                        &grant,
                        &principal,
                        &route,
                        account.as_deref(),
                        &classes,
                        now,
                    ) {
                        return Ok(Step::Refused(e));
                    }
                    grant.uses += 1;
                    tx.execute(
                        "UPDATE maskgate_grants SET grant_json = $2 WHERE id = $1",
                        &[&id, &encode(&grant)?],
                    )
                    .await?;
                    tx.commit().await?;
                    Ok(Step::Done(GrantUse {
                        grant_id: grant.id,
                        grantee: grant.grantee,
                        approver: grant.approver,
                        classes: grant.classes,
                        uses: grant.uses,
                        max_uses: grant.max_uses,
                        expires_at: grant.expires_at,
                    }))
                })
            })
            .await;
        finish(r)
    }

    async fn revoke(
        &self,
        policy: &Policy,
        id: &str,
        by: &Actor<'_>,
        now: SystemTime,
    ) -> Result<Grant, GrantError> {
        let mut client = self.db.client().await.map_err(storage)?;
        let r = self
            .db
            .bounded(async {
                let tx = client.transaction().await?;
                let Some(row) = tx
                    .query_opt(
                        "SELECT grant_json FROM maskgate_grants WHERE id = $1 FOR UPDATE",
                        &[&id],
                    )
                    .await?
                else {
                    return Ok(Step::Refused(GrantError::Unknown));
                };
                let mut grant = decode(row.get(0))?;
                if let Err(e) = check_revoke(policy, &grant, by) {
                    return Ok(Step::Refused(e));
                }
                grant.revoked = Some(Revocation {
                    by: by.name.to_owned(),
                    at: now,
                });
                tx.execute(
                    "UPDATE maskgate_grants SET grant_json = $2 WHERE id = $1",
                    &[&id, &encode(&grant)?],
                )
                .await?;
                tx.commit().await?;
                Ok(Step::Done(grant))
            })
            .await;
        self.db.release(client, &r);
        finish(r)
    }

    async fn get(&self, id: &str) -> Result<Option<Grant>, GrantError> {
        let id = id.to_owned();
        self.db
            .run(|c| {
                Box::pin(async move {
                    match c
                        .query_opt(
                            "SELECT grant_json FROM maskgate_grants WHERE id = $1",
                            &[&id],
                        )
                        .await?
                    {
                        Some(row) => Ok(Some(decode(row.get(0))?)),
                        None => Ok(None),
                    }
                })
            })
            .await
            .map_err(storage)
    }

    async fn list(&self, now: SystemTime) -> Result<Vec<ListedGrant>, GrantError> {
        self.db
            .run(|c| {
                Box::pin(async move {
                    let rows = c
                        .query(
                            "SELECT grant_json FROM maskgate_grants ORDER BY issued_at_ms, id",
                            &[],
                        )
                        .await?;
                    rows.iter()
                        .map(|r| {
                            let grant = decode(r.get(0))?;
                            Ok(ListedGrant {
                                status: grant.status(now),
                                grant,
                            })
                        })
                        .collect()
                })
            })
            .await
            .map_err(storage)
    }

    async fn sweep_expired(&self, now: SystemTime) -> Result<Vec<Grant>, GrantError> {
        self.db
            .run(|c| {
                Box::pin(async move {
                    let tx = c.transaction().await?;
                    // Only grants that may have ended: issued before now.
                    // Rows are locked in id order (no deadlock between two
                    // instances sweeping at once); the second sees them
                    // reported already.
                    let rows = tx
                        .query(
                            "SELECT grant_json FROM maskgate_grants ORDER BY id FOR UPDATE",
                            &[],
                        )
                        .await?;
                    let mut reported = Vec::new();
                    for row in &rows {
                        let mut g = decode(row.get(0))?;
                        let status = g.status(now);
                        if status == GrantStatus::Expired && !g.expiry_reported {
                            g.expiry_reported = true;
                            tx.execute(
                                "UPDATE maskgate_grants SET grant_json = $2 WHERE id = $1",
                                &[&g.id, &encode(&g)?],
                            )
                            .await?;
                            reported.push(g);
                            continue;
                        }
                        let ended = match (&g.revoked, status) {
                            (Some(r), _) => Some(r.at.min(g.expires_at)),
                            (None, GrantStatus::Active) => None,
                            (None, _) => Some(g.expires_at),
                        };
                        let old = ended.is_some_and(|t| {
                            now.duration_since(t).is_ok_and(|age| age > GRANT_RETENTION)
                        });
                        if old {
                            tx.execute("DELETE FROM maskgate_grants WHERE id = $1", &[&g.id])
                                .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(reported)
                })
            })
            .await
            .map_err(storage)
    }
}
