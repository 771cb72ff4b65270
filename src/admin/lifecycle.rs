//! Access-lifecycle endpoints: account freezes (the freeze role, default
//! `privacy-officer`), lockouts (the security team) and configuration
//! reload (IT data management or the security team).
//!
//! | endpoint | who |
//! |---|---|
//! | `GET /_maskgate/freezes` | freeze role, `security-auditor` |
//! | `POST /_maskgate/freezes/{account}` | freeze role |
//! | `DELETE /_maskgate/freezes/{account}` | freeze role |
//! | `GET /_maskgate/lockouts` | `security-auditor` |
//! | `DELETE /_maskgate/lockouts/{identity}` | `security-auditor` |
//! | `POST /_maskgate/reload` | `it-data-management`, `security-auditor` |

use std::sync::Arc;

use http::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;

use crate::admit::{FreezeChange, IdentityKey};
use crate::audit::{Kind, Outcome, RecordDraft};
use crate::identity::Caller;
use crate::proxy::{GatewayBody, GatewayError, Shared};
use crate::unmask::unix_secs;

use super::{holds, json};

/// Roles that may ask for a configuration reload.
pub const RELOAD_ROLES: [&str; 2] = ["it-data-management", "security-auditor"];

/// Roles that read the lockouts and lift them.
const LOCKOUT_ROLE: &str = "security-auditor";

fn path_item(path: &str, prefix: &str) -> Result<String, GatewayError> {
    let raw = path.trim_start_matches(prefix);
    let item = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| GatewayError::BadRequest("bad_path"))?;
    if item.is_empty() || item.contains('/') {
        return Err(GatewayError::BadRequest("bad_path"));
    }
    Ok(item.into_owned())
}

async fn record(shared: &Shared, draft: RecordDraft) -> Result<(), GatewayError> {
    match &shared.audit {
        Some(audit) => crate::proxy::audit::append(audit, draft).await.map(|_| ()),
        None => Ok(()),
    }
}

fn store_error(e: crate::admit::StateError) -> GatewayError {
    match e {
        crate::admit::StateError::Invalid { why, .. } => GatewayError::Refused {
            code: "invalid_account",
            detail: format!("account id {why}"),
        },
        crate::admit::StateError::Storage(_) => GatewayError::Unavailable("state_unavailable"),
    }
}

/// Serves the lifecycle endpoints; `None` when `path` is not one of them.
pub async fn route(
    shared: &Arc<Shared>,
    caller: &Caller,
    path: &str,
    method: &Method,
    id: &str,
) -> Option<Result<Response<GatewayBody>, GatewayError>> {
    let result = if path == "/_maskgate/freezes" || path.starts_with("/_maskgate/freezes/") {
        freezes(shared, caller, path, method, id).await
    } else if path == "/_maskgate/lockouts" || path.starts_with("/_maskgate/lockouts/") {
        lockouts(shared, caller, path, method, id).await
    } else if path == "/_maskgate/reload" {
        reload(shared, caller, method, id).await
    } else {
        return None;
    };
    Some(result)
}

async fn freezes(
    shared: &Arc<Shared>,
    caller: &Caller,
    path: &str,
    method: &Method,
    id: &str,
) -> Result<Response<GatewayBody>, GatewayError> {
    let config = shared.config();
    let officer = holds(caller, &config.policy.admit.freeze_role);
    if path == "/_maskgate/freezes" {
        if *method != Method::GET || !(officer || holds(caller, LOCKOUT_ROLE)) {
            return Err(GatewayError::Forbidden);
        }
        let list = shared.state.list_freezes().await.map_err(store_error)?;
        let freezes: Vec<_> = list
            .iter()
            .map(|f| serde_json::json!({ "account": f.account, "by": f.by, "at_unix": unix_secs(f.at) }))
            .collect();
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "freezes": freezes }),
            id,
        ));
    }
    if !officer {
        return Err(GatewayError::Forbidden);
    }
    let account = path_item(path, "/_maskgate/freezes/")?;
    let now = shared.clock.now();
    let base = |why: &str| {
        RecordDraft::new(
            Kind::Alert,
            caller.principal.name.clone(),
            Outcome::Granted,
            why,
        )
        .request_id(id)
        .roles(caller.principal.roles.iter().cloned())
        .accounts([account.clone()])
    };
    match *method {
        Method::POST => {
            let change = shared
                .state
                .freeze(&account, &caller.principal.name, now)
                .await
                .map_err(store_error)?;
            let created = matches!(change, FreezeChange::Frozen(_));
            if created {
                shared.metrics.event("freeze");
                tracing::warn!(target: "maskgate::admit", request_id = id, by = %caller.principal.name, "account frozen");
                record(shared, base("account_frozen")).await?;
            }
            // Best effort: the next request re-reads the store for this
            // account anyway; lists follow within a second.
            let _ = shared.refresh_frozen().await;
            let f = change.freeze();
            Ok(json(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                &serde_json::json!({ "account": f.account, "by": f.by, "at_unix": unix_secs(f.at), "frozen": true }),
                id,
            ))
        }
        Method::DELETE => {
            let lifted = shared.state.unfreeze(&account).await.map_err(store_error)?;
            let _ = shared.refresh_frozen().await;
            match lifted {
                Some(_) => {
                    shared.metrics.event("unfreeze");
                    tracing::warn!(target: "maskgate::admit", request_id = id, by = %caller.principal.name, "account unfrozen");
                    record(shared, base("account_unfrozen")).await?;
                    Ok(json(
                        StatusCode::OK,
                        &serde_json::json!({ "account": account, "frozen": false }),
                        id,
                    ))
                }
                None => Err(GatewayError::Refused {
                    code: "not_frozen",
                    detail: "this account is not frozen".to_owned(),
                }),
            }
        }
        _ => Err(GatewayError::Refused {
            code: "method_not_allowed",
            detail: "use POST to freeze, DELETE to unfreeze".to_owned(),
        }),
    }
}

async fn lockouts(
    shared: &Arc<Shared>,
    caller: &Caller,
    path: &str,
    method: &Method,
    id: &str,
) -> Result<Response<GatewayBody>, GatewayError> {
    if !holds(caller, LOCKOUT_ROLE) {
        return Err(GatewayError::Forbidden);
    }
    let live = shared.live();
    let now = shared.clock.now();
    if path == "/_maskgate/lockouts" {
        if *method != Method::GET {
            return Err(GatewayError::Forbidden);
        }
        let locks = live.lockout.locks(now).await.map_err(store_error)?;
        let locks: Vec<_> = locks
            .iter()
            .map(|l| {
                serde_json::json!({
                    "identity": l.identity.to_string(),
                    "since_unix": unix_secs(l.since),
                    "until_unix": unix_secs(l.until),
                })
            })
            .collect();
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "lockouts": locks }),
            id,
        ));
    }
    if *method != Method::DELETE {
        return Err(GatewayError::Refused {
            code: "method_not_allowed",
            detail: "use DELETE to unlock".to_owned(),
        });
    }
    let identity: IdentityKey = path_item(path, "/_maskgate/lockouts/")?
        .parse()
        .map_err(|_| GatewayError::BadRequest("bad_identity"))?;
    let lifted = live
        .lockout
        .unlock(&identity, now)
        .await
        .map_err(store_error)?;
    match lifted {
        Some(_) => {
            shared.metrics.event("unlock");
            tracing::warn!(target: "maskgate::auth", request_id = id, identity = %identity, by = %caller.principal.name, "lockout lifted");
            let draft = RecordDraft::new(
                Kind::Unlock,
                caller.principal.name.clone(),
                Outcome::Granted,
                "unlocked",
            )
            .request_id(id)
            .roles(caller.principal.roles.iter().cloned())
            .on_behalf_of(identity.to_string());
            record(shared, draft).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "identity": identity.to_string(), "locked": false }),
                id,
            ))
        }
        None => Err(GatewayError::Refused {
            code: "not_locked",
            detail: "this identity is not locked".to_owned(),
        }),
    }
}

async fn reload(
    shared: &Arc<Shared>,
    caller: &Caller,
    method: &Method,
    id: &str,
) -> Result<Response<GatewayBody>, GatewayError> {
    if !RELOAD_ROLES.iter().any(|r| holds(caller, r)) {
        return Err(GatewayError::Forbidden);
    }
    if *method != Method::POST {
        return Err(GatewayError::Refused {
            code: "method_not_allowed",
            detail: "use POST".to_owned(),
        });
    }
    let result = crate::proxy::reload_audited(shared, &caller.principal.name, Some(id)).await?;
    match result {
        Ok(report) => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "reloaded": true, "needs_restart": report.needs_restart }),
            id,
        )),
        Err(errors) => {
            let list: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
            Ok(json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({
                    "reloaded": false,
                    "error": { "code": "invalid_configuration", "message": "the new configuration has errors; the old one stays in force", "request_id": id },
                    "errors": list,
                }),
                id,
            ))
        }
    }
}
