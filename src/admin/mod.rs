//! The `/_maskgate/` admin API: health, readiness and metrics.

pub mod health;
pub mod lifecycle;
pub mod metrics;

pub use metrics::Metrics;

/// Path prefix of the admin API.
pub const PREFIX: &str = "/_maskgate/";

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::audit::{Kind, Outcome, RecordDraft};
use crate::identity::Caller;
use crate::proxy::pipeline::refuse_error;
use crate::proxy::{ConnInfo, GatewayBody, GatewayError, RequestBody, Shared};

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    id: &str,
) -> Response<GatewayBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-request-id", v);
    }
    resp
}

/// Reads a small JSON body (admin requests).
async fn json_body<T: serde::de::DeserializeOwned>(
    req: Request<RequestBody>,
) -> Result<T, GatewayError> {
    let bytes = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map_err(|_| GatewayError::PayloadTooLarge)?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|_| GatewayError::BadRequest("invalid_body"))
}

fn json(status: StatusCode, value: &serde_json::Value, id: &str) -> Response<GatewayBody> {
    text(status, "application/json", value.to_string(), id)
}

fn holds(caller: &Caller, role: &str) -> bool {
    caller.principal.roles.iter().any(|r| r == role)
}

/// Serves `/_maskgate/…`. Health needs no identity and shows no data;
/// everything else needs an identified caller holding the right role.
pub async fn handle(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    req: Request<RequestBody>,
    id: &str,
) -> Response<GatewayBody> {
    match route(shared, conn, req, id).await {
        Ok(resp) => resp,
        Err(e) => {
            shared.metrics.refused(e.code());
            refuse_error(&e, id)
        }
    }
}

async fn route(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    req: Request<RequestBody>,
    id: &str,
) -> Result<Response<GatewayBody>, GatewayError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    if path == "/_maskgate/health" || path == "/_maskgate/ready" {
        return if get {
            let components = health::components(shared).await;
            let (all_ok, body) = health::health_body(&components);
            let ok = if path == "/_maskgate/ready" {
                health::can_unmask(&components)
            } else {
                all_ok
            };
            let code = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            Ok(json(code, &body, id))
        } else {
            Err(GatewayError::Refused {
                code: "method_not_allowed",
                detail: "use GET".to_owned(),
            })
        };
    }
    let live = shared.live();
    let config = Arc::clone(&live.config);
    let caller = crate::proxy::admit::admit_caller(shared, &live, conn, &req, id, false).await?;
    if let Some(result) = lifecycle::route(shared, &caller, &path, &method, id).await {
        return result;
    }
    let grants = &config.policy.grants;
    match (path.as_str(), &method) {
        ("/_maskgate/metrics", _) if get => {
            // Counts by role, route and refusal tell an attacker what is
            // watched: only the roles `[admit] metrics_roles` names read them.
            if !config
                .policy
                .admit
                .metrics_roles
                .iter()
                .any(|r| holds(&caller, r))
            {
                return Err(GatewayError::Forbidden);
            }
            Ok(text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                shared.metrics.render(),
                id,
            ))
        }
        ("/_maskgate/grants", &Method::POST) => {
            if !holds(&caller, &grants.approver_role) {
                return Err(GatewayError::Forbidden);
            }
            let audit = shared
                .audit
                .clone()
                .ok_or(GatewayError::Unavailable("audit_unavailable"))?;
            let request: crate::unmask::IssueRequest = json_body(req).await?;
            let actor = crate::unmask::Actor::from(caller.principal.as_ref());
            let now = shared.clock.now();
            let classes: Vec<String> = request
                .classes
                .iter()
                .map(|c| c.name().to_owned())
                .collect();
            match shared
                .grants
                .issue(&config.policy, &actor, &request, now)
                .await
            {
                Ok(grant) => {
                    let draft = RecordDraft::new(
                        Kind::GrantIssued,
                        caller.principal.name.clone(),
                        Outcome::Granted,
                        "ok",
                    )
                    .request_id(id)
                    .roles(caller.principal.roles.iter().cloned())
                    .on_behalf_of(grant.grantee.clone())
                    .classes(classes)
                    .reason(grant.reason.clone())
                    .grant_id(grant.id.clone());
                    crate::proxy::audit::append(&audit, draft).await?;
                    Ok(json(
                        StatusCode::CREATED,
                        &serde_json::json!({ "grant": grant }),
                        id,
                    ))
                }
                Err(e) => {
                    let draft = RecordDraft::new(
                        Kind::GrantRefused,
                        caller.principal.name.clone(),
                        Outcome::Denied,
                        e.code(),
                    )
                    .request_id(id)
                    .roles(caller.principal.roles.iter().cloned())
                    .on_behalf_of(request.grantee.clone())
                    .classes(classes);
                    crate::proxy::audit::append(&audit, draft).await?;
                    Err(GatewayError::Refused {
                        code: e.code(),
                        detail: e.to_string(),
                    })
                }
            }
        }
        ("/_maskgate/grants", _) if get => {
            if !holds(&caller, &grants.approver_role) && !holds(&caller, "security-auditor") {
                return Err(GatewayError::Forbidden);
            }
            let list = shared
                .grants
                .list(shared.clock.now())
                .await
                .map_err(|_| GatewayError::Unavailable("grant_store_unavailable"))?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "grants": list }),
                id,
            ))
        }
        (p, &Method::DELETE) if p.starts_with("/_maskgate/grants/") => {
            if !holds(&caller, &grants.approver_role) {
                return Err(GatewayError::Forbidden);
            }
            let audit = shared
                .audit
                .clone()
                .ok_or(GatewayError::Unavailable("audit_unavailable"))?;
            let grant_id = p.trim_start_matches("/_maskgate/grants/");
            let actor = crate::unmask::Actor::from(caller.principal.as_ref());
            let result = shared
                .grants
                .revoke(&config.policy, grant_id, &actor, shared.clock.now())
                .await;
            let (outcome, why) = match &result {
                Ok(_) => (Outcome::Granted, "ok"),
                Err(e) => (Outcome::Denied, e.code()),
            };
            let mut draft = RecordDraft::new(
                Kind::GrantRevoked,
                caller.principal.name.clone(),
                outcome,
                why,
            )
            .request_id(id)
            .roles(caller.principal.roles.iter().cloned());
            if grant_id.len() == 32 && grant_id.bytes().all(|b| b.is_ascii_hexdigit()) {
                draft = draft.grant_id(grant_id.to_owned());
            }
            crate::proxy::audit::append(&audit, draft).await?;
            match result {
                Ok(grant) => Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "grant": grant }),
                    id,
                )),
                Err(e) => Err(GatewayError::Refused {
                    code: e.code(),
                    detail: e.to_string(),
                }),
            }
        }
        ("/_maskgate/audit", _) if get => {
            if !holds(&caller, "security-auditor") {
                return Err(GatewayError::Forbidden);
            }
            let audit = shared
                .audit
                .clone()
                .ok_or(GatewayError::Unavailable("audit_unavailable"))?;
            let filter = audit_filter(req.uri().query())?;
            let scan = tokio::task::spawn_blocking(move || audit.query(&filter))
                .await
                .map_err(|_| GatewayError::Internal)?
                .map_err(|_| GatewayError::Unavailable("audit_unavailable"))?;
            Ok(text(
                StatusCode::OK,
                "application/x-ndjson",
                crate::audit::query::render_json_lines(&scan.records),
                id,
            ))
        }
        ("/_maskgate/audit/verify", _) if get => {
            if !holds(&caller, "security-auditor") {
                return Err(GatewayError::Forbidden);
            }
            let audit = shared
                .audit
                .clone()
                .ok_or(GatewayError::Unavailable("audit_unavailable"))?;
            let report = tokio::task::spawn_blocking(move || audit.verify())
                .await
                .map_err(|_| GatewayError::Internal)?
                .map_err(|_| GatewayError::Unavailable("audit_unavailable"))?;
            let problem = report.problem.as_ref().map(|f| {
                serde_json::json!({ "file": f.file, "line": f.line, "seq": f.seq, "detail": f.detail })
            });
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "ok": report.is_ok(),
                    "records": report.records,
                    "checkpoints": report.checkpoints,
                    "last_seq": report.last_seq,
                    "sealed_seq": report.sealed_seq,
                    "unsealed": report.unsealed,
                    "problem": problem,
                }),
                id,
            ))
        }
        ("/_maskgate/rewrap", &Method::POST) => {
            if !holds(&caller, &grants.grantee_role) {
                return Err(GatewayError::Forbidden);
            }
            let keyring = shared
                .keyring
                .clone()
                .ok_or(GatewayError::Unavailable("encryption_not_configured"))?;
            let request: RewrapRequest = json_body(req).await?;
            let class = crate::class::FieldClass::from_name(&request.class)
                .ok_or(GatewayError::BadRequest("unknown_class"))?;
            if request.envelopes.len() > 1000 {
                return Err(GatewayError::PayloadTooLarge);
            }
            // Plaintext never leaves the keyring: each envelope is opened and
            // resealed under the newest key inside it.
            if request
                .accounts
                .as_ref()
                .is_some_and(|a| a.len() != request.envelopes.len() || request.account.is_some())
            {
                return Err(GatewayError::BadRequest("rewrap_accounts_mismatch"));
            }
            if request.reindex {
                // Index under the newest index key, even one rotated by
                // `maskgate keys rotate-index` since this gateway started.
                keyring
                    .reload()
                    .map_err(|_| GatewayError::Unavailable("keyring_unavailable"))?;
            }
            let account_of = |i: usize| match &request.accounts {
                Some(accounts) => accounts.get(i).map(String::as_str),
                None => request.account.as_deref(),
            };
            let mut rewrapped = 0u64;
            let results: Vec<serde_json::Value> = request
                .envelopes
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let done = if request.reindex {
                        keyring.rewrap_and_index(class, e, account_of(i)).map(|(new, index)| {
                            serde_json::json!({ "envelope": new, "blind_index": index })
                        })
                    } else {
                        keyring
                            .rewrap_for(class, e, account_of(i))
                            .map(|new| serde_json::json!({ "envelope": new }))
                    };
                    match done {
                    Ok(result) => {
                        rewrapped += 1;
                        result
                    }
                    Err(err) => serde_json::json!({ "error": crate::crypto::keyring::open_error(&err).to_string() }),
                    }
                })
                .collect();
            // Who moved how many envelopes of which class: recorded before
            // the new envelopes are handed out (no envelope in the record).
            if let Some(audit) = &shared.audit {
                let draft = RecordDraft::new(
                    Kind::Admin,
                    caller.principal.name.clone(),
                    Outcome::Granted,
                    "rewrap",
                )
                .request_id(id)
                .roles(caller.principal.roles.iter().cloned())
                .request(method.as_str(), "rewrap")
                .classes([class.name()])
                .reason(format!(
                    "{rewrapped} of {} envelopes rewrapped",
                    request.envelopes.len()
                ));
                crate::proxy::audit::append(audit, draft).await?;
            }
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "results": results,
                    "index_generation": keyring.index_generation(),
                }),
                id,
            ))
        }
        _ => Err(GatewayError::Refused {
            code: "not_found",
            detail: "no such admin endpoint, or not with this method".to_owned(),
        }),
    }
}

/// `POST /_maskgate/rewrap` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RewrapRequest {
    class: String,
    envelopes: Vec<String>,
    /// The account whose record holds the envelopes: they come back bound
    /// to it (`mg2.`), which migrates `mg1.` envelopes.
    #[serde(default)]
    account: Option<String>,
    /// Instead of `account`: each envelope's account, in the same order.
    #[serde(default)]
    accounts: Option<Vec<String>>,
    /// Also return each value's blind index under the current index key
    /// (re-indexing after `maskgate keys rotate-index`).
    #[serde(default)]
    reindex: bool,
}

fn audit_filter(query: Option<&str>) -> Result<crate::audit::Filter, GatewayError> {
    let mut f = crate::audit::Filter::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| GatewayError::BadRequest("bad_query"))?
            .into_owned();
        let time = |v: &str| {
            crate::audit::record::parse_time(v).ok_or(GatewayError::BadRequest("bad_time"))
        };
        match k {
            "since" => f.since = Some(time(&v)?),
            "until" => f.until = Some(time(&v)?),
            "principal" => f.principal = Some(v),
            "role" => f.role = Some(v),
            "class" => f.class = Some(v),
            "account" => f.account = Some(v),
            "grant_id" => f.grant_id = Some(v),
            "outcome" => {
                f.outcome = Some(
                    v.parse()
                        .map_err(|_| GatewayError::BadRequest("bad_outcome"))?,
                )
            }
            "kind" => {
                f.kind = Some(
                    v.parse()
                        .map_err(|_| GatewayError::BadRequest("bad_kind"))?,
                )
            }
            _ => return Err(GatewayError::BadRequest("unknown_filter")),
        }
    }
    Ok(f)
}
