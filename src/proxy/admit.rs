//! Steps 2–4 of the request path, admission: who may even be heard
//! (lockouts), who is still allowed (revocations, validity windows), and how
//! much they may take (export rule, rate limits, record budgets, frozen
//! accounts). The rules are the pure [`crate::admit`] core; this step runs
//! them for one request, answers each refusal and records what must be
//! recorded.

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use crate::admit::{attempt_identities, IdentityKey, LockError, LockState, StateError};
use crate::audit::{Kind, Outcome, RecordDraft};
use crate::identity::{identify_hashed, presented_key_hash, Caller};

use super::authorize::Authorized;
use super::error::GatewayError;
use super::{ConnInfo, Live, Shared};

/// What the state store's failure means for this request: refused (503)
/// unless the deployment serves masked reads while the store is away and
/// this is one.
fn state_failure(
    shared: &Shared,
    live: &Live,
    e: &StateError,
    masked_read: bool,
) -> Result<(), GatewayError> {
    shared.metrics.event("state_unavailable");
    tracing::warn!(target: "maskgate::state", error = %e, "state store unavailable");
    if masked_read && live.config.state.serve_masked_when_unavailable {
        Ok(())
    } else {
        Err(GatewayError::Unavailable("state_unavailable"))
    }
}

/// Identifies the caller, refusing locked identities first and counting a
/// failed authentication against every identity the attempt carried; then
/// checks revocations and the principal's validity window. `masked_read`:
/// the request reads without unmasking (see [`is_masked_read`]).
pub async fn admit_caller(
    shared: &Shared,
    live: &Live,
    conn: &ConnInfo,
    req: &http::Request<super::edge_body::RequestBody>,
    request_id: &str,
    masked_read: bool,
) -> Result<Caller, GatewayError> {
    let headers = req.headers();
    let policy = &live.config.policy;
    let now = shared.clock.now();
    let key_hash = presented_key_hash(headers);
    let source = source_address(conn, req);
    let mut identities = attempt_identities(conn.cert.as_ref(), key_hash.as_ref(), source);
    // The source address stands in for callers without a certificate the
    // policy knows (key guessers, unknown certificates). A verified
    // certificate of a known principal is not refused, nor counted, for
    // its address: the security team unlocking from a shared host is not
    // locked out by a guesser there.
    let known_cert = conn.cert.as_ref().is_some_and(|c| {
        c.names
            .iter()
            .any(|n| policy.principal_by_cert_name(n).is_some())
    });
    if known_cert {
        identities.retain(|id| !matches!(id, IdentityKey::Source(_)));
    }
    match live.lockout.check_all(&identities, now).await {
        Ok(()) => {}
        Err(LockError::Locked { identity, .. }) => {
            tracing::info!(target: "maskgate::auth", request_id, identity = %identity, "locked out");
            return Err(GatewayError::LockedOut);
        }
        // A lock that cannot be checked may be in force: refused, unless
        // the deployment keeps masked reads flowing while the store is
        // away; then the locks this gateway knows of still hold.
        Err(LockError::Store(e)) => {
            state_failure(shared, live, &e, masked_read)?;
            if let Err(LockError::Locked { identity, .. }) =
                live.lockout.check_all_shadow(&identities, now)
            {
                tracing::info!(target: "maskgate::auth", request_id, identity = %identity, "locked out (as far as this gateway knows: the state store is away)");
                return Err(GatewayError::LockedOut);
            }
        }
    }
    let mut caller = match identify_hashed(policy, conn.cert.as_ref(), headers, key_hash) {
        Ok(caller) => caller,
        Err(e) => {
            tracing::info!(target: "maskgate::auth", request_id, reason = %e, "authentication failed");
            // A request without any credential is no sign-on attempt
            // (probes, a browser's first try): refused, not counted.
            if e != crate::identity::IdentifyError::NoCredentials {
                count_failure(shared, live, &identities, source, request_id).await;
            }
            return Err(GatewayError::Unauthenticated);
        }
    };
    // A success forgets the failures of the credential used (not of the
    // source address: guesses interleaved with good requests still count).
    for id in identities
        .iter()
        .filter(|id| !matches!(id, IdentityKey::Source(_)))
    {
        if let Err(e) = live.lockout.record_success(id).await {
            tracing::warn!(target: "maskgate::state", error = %e, "cannot clear failed authentications");
        }
    }
    crate::admit::revoke::check(
        policy,
        &caller.principal,
        caller.api_key_sha256.as_ref(),
        conn.cert.as_ref(),
    )
    .map_err(|r| {
        tracing::info!(target: "maskgate::auth", request_id, reason = r.code(), "revoked credential");
        GatewayError::Unauthenticated
    })?;
    if let Err(outside) = crate::admit::window::check(&caller.principal.window, now) {
        shared.metrics.event("window_refusal");
        tracing::warn!(target: "maskgate::admit", request_id, principal = %caller.principal.name, why = outside.code(), "outside the access window");
        if let Some(audit_log) = &shared.audit {
            let draft = RecordDraft::new(
                Kind::Alert,
                caller.principal.name.clone(),
                Outcome::Denied,
                outside.code(),
            )
            .request_id(request_id)
            .roles(caller.principal.roles.iter().cloned());
            super::audit::append(audit_log, draft).await?;
        }
        return Err(GatewayError::Refused {
            code: "outside_access_window",
            detail: outside.to_string(),
        });
    }
    caller.on_behalf_of = delegated_person(shared, live, &caller, headers, request_id)?;
    Ok(caller)
}

/// The person a delegating principal calls for, checked against its
/// `delegates` and its daily cap on distinct persons. A refusal is logged
/// and answered by its code only: the name sent is never repeated.
fn delegated_person(
    shared: &Shared,
    live: &Live,
    caller: &Caller,
    headers: &HeaderMap,
    request_id: &str,
) -> Result<Option<String>, GatewayError> {
    let refused = |code: &'static str, detail: String| {
        shared.metrics.event("delegate_refused");
        tracing::warn!(target: "maskgate::auth", request_id, principal = %caller.principal.name, why = code, "X-On-Behalf-Of refused");
        GatewayError::Refused { code, detail }
    };
    let person = crate::identity::delegation::person(&caller.principal, headers)
        .map_err(|e| refused(e.code(), e.to_string()))?;
    let (Some(person), Some(delegates)) = (person, caller.principal.delegates.as_ref()) else {
        return Ok(None);
    };
    let day = live.budget.day(shared.clock.now());
    shared
        .delegates
        .note(&caller.principal.name, &person, &day, delegates.max_per_day)
        .map_err(|e| refused("too_many_delegates", e.to_string()))?;
    Ok(Some(person))
}

/// Counts one failed authentication against each identity; a lock that
/// starts now is logged, counted and recorded in the audit log.
async fn count_failure(
    shared: &Shared,
    live: &Live,
    identities: &[IdentityKey],
    source: IpAddr,
    request_id: &str,
) {
    for identity in identities {
        let now = shared.clock.now();
        let state = match live.lockout.record_failure(identity, now).await {
            Ok(state) => state,
            // Counted here until the store is back: guessing does not get
            // easier while it is away.
            Err(e) => {
                shared.metrics.event("state_unavailable");
                tracing::warn!(target: "maskgate::state", error = %e, "cannot count a failed authentication in the state store; counted locally");
                live.lockout.record_failure_shadow(identity, now)
            }
        };
        if let LockState::Locked { until, new: true } = state {
            shared.metrics.event("lockout");
            let until = crate::unmask::unix_secs(until);
            tracing::warn!(target: "maskgate::auth", request_id, identity = %identity, source = %source, until_unix = until, "identity locked out after repeated failed authentications");
            if let Some(audit_log) = &shared.audit {
                let draft = RecordDraft::new(
                    Kind::Lockout,
                    identity.to_string(),
                    Outcome::Denied,
                    "too_many_failed_authentications",
                )
                .request_id(request_id);
                if super::audit::append(audit_log, draft).await.is_err() {
                    tracing::error!(target: "maskgate::audit", "lockout could not be recorded");
                }
            }
        }
    }
}

/// The address failed sign-ons are counted for: the peer's, or — when the
/// peer is a trusted proxy (`[server] trusted_proxies`) — the client address
/// it appended last to `X-Forwarded-For`. Behind a trusted load balancer,
/// one guesser then locks only itself, not every caller behind it.
pub fn source_address(
    conn: &ConnInfo,
    req: &http::Request<super::edge_body::RequestBody>,
) -> IpAddr {
    req.extensions()
        .get::<super::headers::ForwardedChain>()
        .and_then(|chain| chain.x_forwarded_for.as_ref())
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|last| last.trim().parse::<IpAddr>().ok())
        .unwrap_or_else(|| conn.remote.ip())
}

/// True for a request that only reads masked data: not a write, no unmask
/// or grant header. Only those may be served while the state store is away
/// (`[state] on_unavailable = "serve_masked"`).
pub fn is_masked_read(method: &http::Method, headers: &HeaderMap) -> bool {
    !super::protect_request::is_write(method)
        && !headers.contains_key(crate::unmask::HEADER_UNMASK)
        && !headers.contains_key(crate::unmask::HEADER_GRANT)
        && !headers.contains_key(crate::unmask::HEADER_REASON)
}

/// Whom a request's rate limits and record budget are counted for: the
/// principal, also when it calls for a person (a name in `X-On-Behalf-Of`
/// is a claim; a new name must not open a new bucket).
pub fn counted_principal(caller: &Caller) -> &str {
    &caller.principal.name
}

/// The account a single-record route is about (its `{id}`).
pub fn route_account(live: &Live, auth: &Authorized) -> Option<String> {
    let route = live.config.policy.routes.get(auth.route_index)?;
    route
        .params(&auth.path)?
        .into_iter()
        .find(|(k, _)| *k == "id")
        .map(|(_, v)| v.to_owned())
}

/// What admission lets a request take.
#[derive(Debug, Clone)]
pub struct Allowance {
    /// Records the principal may still receive today; `None` without a
    /// budget.
    pub records_left: Option<u64>,
    /// Frozen accounts whose records must be left out of the response;
    /// `None` when there are none or the caller is the freeze officer.
    pub hide_accounts: Option<Arc<std::collections::HashSet<String>>>,
}

/// After authorization: the export rule, rate limits, the record budget and
/// frozen accounts.
pub async fn admit_request(
    shared: &Shared,
    live: &Live,
    caller: &Caller,
    auth: &Authorized,
    request_id: &str,
    masked_read: bool,
) -> Result<Allowance, GatewayError> {
    let policy = &live.config.policy;
    let route = policy
        .routes
        .get(auth.route_index)
        .ok_or(GatewayError::Internal)?;
    crate::admit::export_allowed(&auth.role, route).map_err(|e| GatewayError::Refused {
        code: "export_not_allowed",
        detail: e.to_string(),
    })?;
    let principal = counted_principal(caller);
    live.rates
        .check(principal, &auth.role.name, auth.route_index)
        .map_err(|wait| {
            tracing::info!(target: "maskgate::admit", request_id, principal, role = %auth.role.name, route = %auth.route_name, "rate limited");
            GatewayError::TooManyRequests {
                retry_after_secs: wait.header_secs(),
            }
        })?;
    let now = shared.clock.now();
    let records_left = match live
        .budget
        .check(principal, auth.role.record_budget_per_day, now)
        .await
    {
        Ok(r) => r.remaining(),
        Err(crate::admit::BudgetError::Exceeded(e)) => {
            return Err(GatewayError::Refused {
                code: "record_budget_exceeded",
                detail: format!(
                    "the daily record budget of {} records is used up; more data tomorrow",
                    e.limit
                ),
            })
        }
        // While the store is away, the budget this gateway knows of holds.
        Err(crate::admit::BudgetError::Store(e)) => {
            state_failure(shared, live, &e, masked_read)?;
            match live
                .budget
                .check_shadow(principal, auth.role.record_budget_per_day, now)
            {
                Ok(r) => r.remaining(),
                Err(e) => {
                    return Err(GatewayError::Refused {
                        code: "record_budget_exceeded",
                        detail: format!(
                            "the daily record budget of {} records is used up; more data tomorrow",
                            e.limit
                        ),
                    })
                }
            }
        }
    };
    let officer = crate::admit::freeze::is_freeze_officer(&policy.admit, &caller.principal.roles);
    if !officer {
        if let Some(account) = route_account(live, auth) {
            match crate::admit::freeze::check(
                shared.state.as_ref(),
                &policy.admit,
                &caller.principal.roles,
                &account,
            )
            .await
            {
                Ok(()) => {}
                Err(crate::admit::FreezeError::Frozen) => return Err(GatewayError::AccountFrozen),
                Err(crate::admit::FreezeError::Store(e)) => {
                    // The last list read is the fallback: a known freeze
                    // still holds while the store is away.
                    if shared.frozen.load().contains(&account) {
                        return Err(GatewayError::AccountFrozen);
                    }
                    state_failure(shared, live, &e, masked_read)?;
                }
            }
        }
    }
    let frozen = shared.frozen.load_full();
    let hide_accounts = (!officer && !frozen.is_empty()).then_some(frozen);
    Ok(Allowance {
        records_left,
        hide_accounts,
    })
}

/// Counts `records` received by the request's principal against its daily
/// budget; the charge that uses the budget up raises the alert (log,
/// metric, audit record) exactly once.
pub async fn charge_records(
    shared: &Shared,
    live: &Live,
    caller: &Caller,
    auth: &Authorized,
    method: &http::Method,
    request_id: &str,
    records: u64,
) {
    let limit = auth.role.record_budget_per_day;
    if limit.is_none() || records == 0 {
        return;
    }
    let principal = counted_principal(caller);
    let now = shared.clock.now();
    let charged = match live.budget.charge(principal, limit, records, now).await {
        Ok(r) => Ok(r),
        Err(crate::admit::BudgetError::Exceeded(e)) => Err(e),
        // Counted here until the store is back.
        Err(crate::admit::BudgetError::Store(e)) => {
            shared.metrics.event("state_unavailable");
            tracing::warn!(target: "maskgate::state", error = %e, "cannot count records in the state store; counted locally");
            live.budget.charge_shadow(principal, limit, records, now)
        }
    };
    match charged {
        Ok(_) => {}
        Err(e) if e.alert => {
            shared.metrics.event("budget_alert");
            tracing::warn!(target: "maskgate::admit", request_id, principal, role = %auth.role.name, limit = e.limit, used = e.used, "record budget used up: further data refused today");
            if let Some(audit_log) = &shared.audit {
                let draft = RecordDraft::new(
                    Kind::Alert,
                    caller.principal.name.clone(),
                    Outcome::Denied,
                    "record_budget_exceeded",
                )
                .request_id(request_id)
                .roles(caller.principal.roles.iter().cloned())
                .request(method.as_str(), auth.route_name.to_string());
                let draft = match &caller.on_behalf_of {
                    Some(obo) => draft.on_behalf_of(obo.clone()),
                    None => draft,
                };
                if super::audit::append(audit_log, draft).await.is_err() {
                    tracing::error!(target: "maskgate::audit", "budget alert could not be recorded");
                }
            }
        }
        Err(_) => {}
    }
}

/// A search by blind index (`?card_number=…`): allowed only to roles with
/// `may_search_cards`, within their `card_search_rate`; each search costs
/// one record of the principal's budget (a search that finds nothing still
/// tells whether a card is on file), and each — allowed or refused — is an
/// audit record, durable before the search reaches the upstream. Neither
/// the number nor its index is in the record.
pub async fn admit_card_search(
    shared: &Shared,
    live: &Live,
    caller: &Caller,
    auth: &Authorized,
    method: &http::Method,
    request_id: &str,
    classes: &[crate::class::FieldClass],
) -> Result<(), GatewayError> {
    let audit_log = shared
        .audit
        .as_ref()
        .ok_or(GatewayError::Unavailable("audit_unavailable"))?;
    let record = |outcome, why: &str| {
        super::audit::draft(
            Kind::CardSearch,
            caller,
            auth,
            method,
            request_id,
            outcome,
            why,
        )
        .classes(classes.iter().map(|c| c.name()))
    };
    let principal = counted_principal(caller);
    let refusal = if !auth.role.may_search_cards {
        Some((
            "card_search_not_allowed",
            GatewayError::Refused {
                code: "card_search_not_allowed",
                detail: format!("the {} role may not search by card number", auth.role.name),
            },
        ))
    } else {
        live.rates
            .check_card_search(principal, &auth.role.name)
            .err()
            .map(|wait| {
                (
                    "card_search_rate_limited",
                    GatewayError::TooManyRequests {
                        retry_after_secs: wait.header_secs(),
                    },
                )
            })
    };
    if let Some((why, err)) = refusal {
        shared.metrics.event("card_search_refused");
        tracing::info!(target: "maskgate::admit", request_id, principal, role = %auth.role.name, why, "card search refused");
        super::audit::append(audit_log, record(Outcome::Denied, why)).await?;
        return Err(err);
    }
    super::audit::append(audit_log, record(Outcome::Granted, "ok")).await?;
    charge_records(shared, live, caller, auth, method, request_id, 1).await;
    Ok(())
}
