//! The request path as one chain of named steps:
//! identify → authorize → protect request → upstream → rewrite response.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use crate::identity::Caller;
use crate::rewrite::content::{
    body_kind, parse_content_encoding, rewriter_for, BodyKind, DecodeLimits,
};
use crate::rewrite::{Limits as RewriteLimits, RewriteSpec};

use super::admit::{
    admit_caller, admit_card_search, admit_request, charge_records, is_masked_read,
};
use super::audit;
use super::authorize::{authorize, Authorized};
use super::edge_body::TimedOut;
use super::error::{error_response, GatewayError};
use super::headers::{protect_request_headers, protect_response_headers, request_id};
use super::protect_request::{
    has_body, is_write, protect_body, protect_path_and_headers, protect_query,
};
use super::rewrite_response::{BodyError, BodyOutcome, RewriteBody, PREBUFFER_BYTES};
use super::upstream::UpstreamBody;
use super::{ConnInfo, GatewayBody, Live, RequestBody, Shared};
use crate::audit::Outcome;
use crate::unmask::UnmaskRequest;

/// Serves one request. Never fails: every refusal is a JSON response.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<RequestBody>,
) -> Result<Response<GatewayBody>, Infallible> {
    let started = Instant::now();
    let id = request_id(req.headers());
    if req.uri().path().starts_with(crate::admin::PREFIX) {
        return Ok(crate::admin::handle(&shared, &conn, req, &id).await);
    }
    let mut log = AccessLog {
        id: id.clone(),
        method: req.method().clone(),
        principal: None,
        role: None,
        route: None,
        on_behalf_of: None,
        timed_out: req.extensions().get::<TimedOut>().cloned(),
    };
    match proxy(&shared, &conn, req, &mut log, started).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            shared.metrics.refused(e.code());
            let status = e.status();
            log.finish(&shared, status, started, None);
            Ok(refuse_error(&e, &id))
        }
    }
}

/// What the access log line says about a request: names only, never values,
/// never the raw path or query.
#[derive(Clone, Debug)]
struct AccessLog {
    id: String,
    method: Method,
    principal: Option<Arc<str>>,
    role: Option<Arc<str>>,
    route: Option<Arc<str>>,
    on_behalf_of: Option<String>,
    /// Set when the edge answered 408 in this request's stead.
    timed_out: Option<TimedOut>,
}

impl AccessLog {
    fn finish(
        &self,
        shared: &Shared,
        status: StatusCode,
        started: Instant,
        outcome: Option<&BodyOutcome>,
    ) {
        let elapsed = started.elapsed();
        // A body dropped because the edge gave up on it: the client got
        // the edge's 408, and that is what happened.
        let cut_off = matches!(outcome, Some(BodyOutcome::Dropped))
            && self.timed_out.as_ref().is_some_and(TimedOut::is_set);
        let status = if cut_off {
            StatusCode::REQUEST_TIMEOUT
        } else {
            status
        };
        let role = self.role.as_deref().unwrap_or("-");
        let route = self.route.as_deref().unwrap_or("-");
        shared
            .metrics
            .request(role, route, status.as_u16(), elapsed);
        let (masked, clear, records, detected, body) = match outcome {
            Some(BodyOutcome::Complete(c)) => {
                shared.metrics.rewritten(c);
                (
                    c.protected(),
                    c.clear_released(),
                    c.records,
                    c.detected,
                    "complete",
                )
            }
            Some(BodyOutcome::Failed(_)) => {
                shared.metrics.rewrite_failed();
                (0, 0, 0, 0, "aborted")
            }
            Some(BodyOutcome::Dropped) if cut_off => (0, 0, 0, 0, "request_timeout"),
            Some(BodyOutcome::Dropped) => (0, 0, 0, 0, "client_gone"),
            None => (0, 0, 0, 0, "none"),
        };
        let error = match outcome {
            Some(BodyOutcome::Failed(e)) => e.to_string(),
            _ => String::new(),
        };
        super::access_log::write(&super::access_log::Line {
            request_id: &self.id,
            method: self.method.as_str(),
            principal: self.principal.as_deref().unwrap_or("-"),
            on_behalf_of: self.on_behalf_of.as_deref().unwrap_or("-"),
            role,
            route,
            status: status.as_u16(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            masked,
            clear_released: clear,
            records,
            detected,
            body,
            error: &error,
        });
    }
}

async fn proxy(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    req: Request<RequestBody>,
    log: &mut AccessLog,
    started: Instant,
) -> Result<Response<GatewayBody>, GatewayError> {
    // One snapshot for the whole request: a reload meanwhile does not
    // change the policy it runs under.
    let live = shared.live();
    let config = Arc::clone(&live.config);
    let policy = &config.policy;

    // identify and admit the caller: lockouts, revocations (checked on
    // every request, so they reach connections already open), windows
    let masked_read = is_masked_read(req.method(), req.headers());
    let caller: Caller = admit_caller(shared, &live, conn, &req, &log.id, masked_read).await?;
    log.principal = Some(Arc::from(caller.principal.name.as_str()));
    log.on_behalf_of.clone_from(&caller.on_behalf_of);

    // authorize
    let auth: Authorized = authorize(policy, &caller, req.method(), req.uri().path())?;
    log.role = Some(Arc::from(auth.role.name.as_str()));
    log.route = Some(Arc::clone(&auth.route_name));

    // admit the request: export rule, rate limits, budget, frozen accounts
    let unmask_request = UnmaskRequest::from_headers(req.headers())
        .map_err(|e| GatewayError::BadRequest(e.code()))?;
    let allowance = admit_request(shared, &live, &caller, &auth, &log.id, masked_read).await?;

    // unmask: decided (and, when refused, recorded) before anything else
    let unmasking = match unmask_request {
        Some(request) => {
            Some(audit::decide(shared, &caller, &auth, req.method(), &log.id, request).await?)
        }
        None => None,
    };

    // protect request
    let (parts, body) = req.into_parts();
    let limit = config.limits.max_request_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::PayloadTooLarge);
    }
    // Decided before hygiene removes Transfer-Encoding.
    let body_present = has_body(&parts.headers);
    // The client's own id is checked like any header; one the gateway made is not.
    let generated_request_id = parts
        .headers
        .get("x-request-id")
        .is_none_or(|client| client.as_bytes() != log.id.as_bytes());
    let mut headers = parts.headers;
    protect_request_headers(&mut headers, auth.red_flag);
    if let Ok(v) = HeaderValue::from_str(&log.id) {
        headers.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&caller.principal.name) {
        headers.insert("x-maskgate-principal", v);
    }
    if let Ok(v) = HeaderValue::from_str(&auth.role.name) {
        headers.insert("x-maskgate-role", v);
    }
    if let Some(obo) = caller
        .on_behalf_of
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert("x-maskgate-on-behalf-of", obo);
    }
    super::headers::set_forwarded(&mut headers, conn.remote.ip(), parts.extensions.get());
    super::headers::set_client_cert_headers(
        &mut headers,
        conn.cert.as_ref(),
        &config.upstream.client_cert_headers,
    );
    let query = match parts.uri.query() {
        Some(q) => {
            // Page sizes above the route's cap are clamped before the upstream.
            let capped = policy
                .routes
                .get(auth.route_index)
                .and_then(|route| crate::admit::page_cap(route, q));
            let q = capped.as_deref().unwrap_or(q);
            let protected =
                protect_query(q, &auth.role.rules, &shared.detectors, &shared.protection)?;
            if !protected.searched.is_empty() {
                admit_card_search(
                    shared,
                    &live,
                    &caller,
                    &auth,
                    &parts.method,
                    &log.id,
                    &protected.searched,
                )
                .await?;
            }
            Some(protected.query)
        }
        None => None,
    };
    let uri = shared.upstream.uri(&auth.path, query.as_deref())?;
    protect_path_and_headers(
        &auth.path,
        &headers,
        &shared.detectors,
        generated_request_id,
    )?;
    let upstream_body: UpstreamBody = if is_write(&parts.method) || body_present {
        let limits = RewriteLimits {
            max_depth: config.limits.max_json_depth,
            max_body_bytes: limit,
            max_token_bytes: config.limits.max_token_bytes,
        };
        let path_account = policy
            .routes
            .get(auth.route_index)
            .and_then(|route| route.params(&auth.path))
            .and_then(|params| params.into_iter().find(|(k, _)| *k == "id"))
            .map(|(_, v)| v.to_owned());
        let protected = protect_body(
            &headers,
            body,
            &auth.role.rules,
            &shared.detectors,
            &shared.protection,
            limits,
            path_account.as_deref(),
        )
        .await?;
        headers.remove(header::CONTENT_ENCODING);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(protected.len()));
        Full::new(protected).map_err(never).boxed()
    } else {
        Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
            .map_err(|e| e as Box<dyn std::error::Error + Send + Sync>)
            .boxed()
    };
    let mut upstream_req = Request::new(upstream_body);
    *upstream_req.method_mut() = parts.method.clone();
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;

    // upstream
    let resp = shared.upstream.send(upstream_req).await?;

    // rewrite response
    let (mut parts_out, upstream_body) = resp.into_parts();
    let spec = RewriteSpec {
        rules: Arc::clone(&auth.role.rules),
        actions: unmasking
            .as_ref()
            .map_or(auth.role.actions, |u| u.grant.apply(auth.role.actions)),
        detectors: Arc::clone(&shared.detectors),
        limits: RewriteLimits {
            max_depth: config.limits.max_json_depth,
            max_body_bytes: config.limits.max_response_body_bytes,
            max_token_bytes: config.limits.max_token_bytes,
        },
        // Decrypts only for an audited unmask; otherwise it only checks
        // envelopes before their last four are shown.
        opener: shared.keyring.clone().map(|k| {
            if unmasking.is_some() {
                k as Arc<dyn crate::rewrite::EnvelopeOpener>
            } else {
                Arc::new(crate::crypto::VerifyOnly(k)) as Arc<dyn crate::rewrite::EnvelopeOpener>
            }
        }),
        drop_accounts: allowance
            .hide_accounts
            .clone()
            .map(|set| set as Arc<dyn crate::rewrite::AccountFilter>),
    };
    let no_body = parts.method == Method::HEAD
        || parts_out.status == StatusCode::NO_CONTENT
        || parts_out.status == StatusCode::NOT_MODIFIED
        || parts_out.status.is_informational();
    if no_body {
        protect_response_headers(&mut parts_out.headers, true, &spec);
        set_request_id(&mut parts_out.headers, &log.id);
        log.finish(shared, parts_out.status, started, None);
        return Ok(Response::from_parts(
            parts_out,
            Full::new(Bytes::new()).map_err(never).boxed_unsync(),
        ));
    }
    let route = policy
        .routes
        .get(auth.route_index)
        .ok_or(GatewayError::Internal)?;
    let content_type = parts_out
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .map_err(|_| GatewayError::UpstreamResponseInvalid("upstream_content_type"))
        })
        .transpose()?;
    let kind = body_kind(content_type, &route.passthrough_types)
        .map_err(|_| GatewayError::UpstreamResponseInvalid("upstream_content_type"))?;
    if parts_out.status == StatusCode::PARTIAL_CONTENT && kind != BodyKind::Passthrough {
        return Err(GatewayError::UpstreamResponseInvalid(
            "upstream_partial_content",
        ));
    }
    let codings = match parts_out.headers.get(header::CONTENT_ENCODING) {
        None => Vec::new(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| parse_content_encoding(v).ok())
            .ok_or(GatewayError::UpstreamResponseInvalid(
                "upstream_content_encoding",
            ))?,
    };
    let decode_limits = DecodeLimits {
        max_decompressed_bytes: config.limits.max_decompressed_bytes,
        max_ratio: u64::from(config.limits.max_decompression_ratio),
    };
    let rewriter = rewriter_for(kind, spec.clone(), &codings, decode_limits);
    let rewritten = rewriter.is_some();
    let status = parts_out.status;
    let end_log = log.clone();
    let end_shared = Arc::clone(shared);
    // Records of a streamed body are charged when it ends (the hook);
    // a body sent whole is charged here, before it is sent.
    let streamed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let budget_charge = auth.role.record_budget_per_day.map(|_| {
        (
            Arc::clone(&streamed),
            Arc::clone(&live),
            caller.clone(),
            auth.clone(),
            parts.method.clone(),
        )
    });
    let mut body = RewriteBody::new(
        upstream_body,
        rewriter,
        config.limits.max_response_body_bytes,
        Box::new(move |outcome| {
            end_log.finish(&end_shared, status, started, Some(&outcome));
            let Some((streamed, live, caller, auth, method)) = budget_charge else {
                return;
            };
            if !streamed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let records = match &outcome {
                BodyOutcome::Complete(c) => c.records,
                BodyOutcome::Failed(BodyError::RecordLimit { limit }) => *limit,
                _ => return,
            };
            tokio::spawn(async move {
                charge_records(
                    &end_shared,
                    &live,
                    &caller,
                    &auth,
                    &method,
                    &end_log.id,
                    records,
                )
                .await;
            });
        }),
    )
    .with_record_limit(allowance.records_left);
    if let Some(unmasking) = unmasking {
        return audit_then_release(
            shared,
            &live,
            &caller,
            &auth,
            &parts.method,
            &log.id,
            unmasking,
            parts_out,
            body,
            rewritten,
            &spec,
        )
        .await;
    }
    let complete = match body.fill(PREBUFFER_BYTES).await {
        Ok(complete) => complete,
        Err(BodyError::RecordLimit { limit }) => {
            drop(body);
            charge_records(shared, &live, &caller, &auth, &parts.method, &log.id, limit).await;
            return Err(budget_used_up(&auth));
        }
        // A single record of a frozen account reached by a route without
        // an `{id}` (the list filter withheld it): the same answer as the
        // single-record route.
        Err(BodyError::Rewrite(crate::rewrite::RewriteError::RecordWithheld)) => {
            drop(body);
            return Err(GatewayError::AccountFrozen);
        }
        Err(e) => {
            tracing::warn!(target: "maskgate::rewrite", request_id = %log.id, error = %e, "response refused");
            // The body's end hook already logged and counted this request.
            drop(body);
            return Ok(refuse_error(
                &GatewayError::UpstreamResponseInvalid("upstream_body_invalid"),
                &log.id,
            ));
        }
    };
    protect_response_headers(&mut parts_out.headers, rewritten, &spec);
    set_request_id(&mut parts_out.headers, &log.id);
    if complete {
        let records = body.counts_ref().map_or(0, |c| c.records);
        charge_records(
            shared,
            &live,
            &caller,
            &auth,
            &parts.method,
            &log.id,
            records,
        )
        .await;
        let bytes = body.take_buffered();
        parts_out
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        drop(body);
        return Ok(Response::from_parts(
            parts_out,
            Full::new(bytes).map_err(never).boxed_unsync(),
        ));
    }
    streamed.store(true, std::sync::atomic::Ordering::Release);
    Ok(Response::from_parts(
        parts_out,
        body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .boxed_unsync(),
    ))
}

/// The refusal once a response would take a principal past its budget.
fn budget_used_up(auth: &Authorized) -> GatewayError {
    GatewayError::Refused {
        code: "record_budget_exceeded",
        detail: format!(
            "this response would pass the daily record budget of the {} role; no more data today",
            auth.role.name
        ),
    }
}

/// Largest unmasked response: it is rewritten whole, recorded, then sent.
const UNMASK_MAX_BYTES: usize = 4 << 20;

/// Step 8 for an unmask request: the whole response is rewritten first; it
/// is refused if it holds more records than the request may unmask; then
/// its record (with the count of clear values and the accounts) is written
/// durably; only then does any of it leave.
#[allow(clippy::too_many_arguments)]
async fn audit_then_release(
    shared: &Arc<Shared>,
    live: &Live,
    caller: &Caller,
    auth: &Authorized,
    method: &Method,
    id: &str,
    unmasking: audit::Unmasking,
    mut parts_out: http::response::Parts,
    mut body: RewriteBody,
    rewritten: bool,
    spec: &RewriteSpec,
) -> Result<Response<GatewayBody>, GatewayError> {
    let log_audit = shared
        .audit
        .as_ref()
        .ok_or(GatewayError::Unavailable("audit_unavailable"))?;
    let kind = unmasking.kind();
    let request = &unmasking.request;
    let base = |outcome, why: &str| {
        let mut d = audit::draft(kind, caller, auth, method, id, outcome, why)
            .classes(request.classes.iter().map(|c| c.name().to_owned()));
        if let Some(r) = &request.reason {
            d = d.reason(r.clone());
        }
        if let Some(g) = &unmasking.grant.grant {
            d = d.grant_id(g.grant_id.clone());
        }
        d
    };
    let refused = match body.fill(UNMASK_MAX_BYTES).await {
        Ok(true) => None,
        Ok(false) => Some((
            "response_too_large",
            GatewayError::Refused {
                code: "unmask_denied",
                detail:
                    "response_too_large: an unmasked response must be small; ask for fewer records"
                        .to_owned(),
            },
        )),
        Err(BodyError::RecordLimit { limit }) => {
            charge_records(shared, live, caller, auth, method, id, limit).await;
            Some(("record_budget_exceeded", budget_used_up(auth)))
        }
        Err(BodyError::Rewrite(crate::rewrite::RewriteError::RecordWithheld)) => {
            Some(("account_frozen", GatewayError::AccountFrozen))
        }
        Err(_) => Some((
            "upstream_body_invalid",
            GatewayError::UpstreamResponseInvalid("upstream_body_invalid"),
        )),
    };
    let counts = body.counts();
    let over = counts.records > u64::from(unmasking.grant.record_limit);
    let refused = refused
        .or_else(|| uncountable_release(&counts, rewritten))
        .or_else(|| outside_grant_account(&counts, &unmasking, live, auth))
        .or_else(|| {
            over.then(|| {
                (
                    "over_record_limit",
                    GatewayError::Refused {
                        code: "unmask_denied",
                        detail: format!(
                "over_record_limit: this request may unmask at most {} record(s); ask for fewer",
                unmasking.grant.record_limit
            ),
                    },
                )
            })
        });
    if let Some((why, err)) = refused {
        drop(body);
        audit::append(
            log_audit,
            base(Outcome::Denied, why).accounts(counts.account_ids.clone()),
        )
        .await?;
        return Err(err);
    }
    let released = counts.clear_released();
    let receipt = audit::append(
        log_audit,
        base(Outcome::Granted, "ok")
            .accounts(counts.account_ids.clone())
            .released(released),
    )
    .await?;
    unmasking
        .grant
        .commit(u32::try_from(counts.records).unwrap_or(u32::MAX));
    charge_records(shared, live, caller, auth, method, id, counts.records).await;
    let bytes = body.take_buffered();
    drop(body);
    protect_response_headers(&mut parts_out.headers, rewritten, spec);
    set_request_id(&mut parts_out.headers, id);
    Ok(release(&receipt, parts_out, bytes))
}

/// Most clear values of one class a single customer record may release
/// (a record holds up to two cards, and its notes may repeat a value).
pub const MAX_CLEAR_PER_RECORD: u64 = 4;

/// Refuses an unmask whose clear values the record limit cannot bound,
/// whatever the response's shape: a body that was not rewritten
/// (pass-through), clear values outside any counted record (a top-level
/// array, text, values beside the records), or more clear values of one
/// class in a record than one customer has (`{"items":[…]}` read as a
/// single record). So an unmask of at most `n` records releases at most
/// `n` × [`MAX_CLEAR_PER_RECORD`] values of each class.
fn uncountable_release(
    counts: &crate::rewrite::Counts,
    rewritten: bool,
) -> Option<(&'static str, GatewayError)> {
    let refuse = |why: &'static str, detail: &str| {
        Some((
            why,
            GatewayError::Refused {
                code: "unmask_uncountable",
                detail: format!("{why}: {detail}"),
            },
        ))
    };
    if !rewritten {
        return refuse(
            "records_uncountable",
            "this response is not rewritten, so its records cannot be counted",
        );
    }
    for class in crate::class::FieldClass::ALL {
        let clear = counts.clear_of(class);
        if clear > counts.clear_in_records[class.index()] {
            return refuse(
                "records_uncountable",
                "clear values outside the customer records cannot be counted; ask a record route",
            );
        }
        if counts.most_clear_in_a_record[class.index()] > MAX_CLEAR_PER_RECORD {
            return refuse(
                "too_many_values_per_record",
                "a record holds more values of one class than one customer has",
            );
        }
    }
    None
}

/// A decrypt under a grant on a route that names one account (`{id}`, the
/// account the grant's scope was checked against) releases nothing unless
/// every record of the response is that account's: a record the upstream
/// returns for another account, or without an id, is refused.
fn outside_grant_account(
    counts: &crate::rewrite::Counts,
    unmasking: &audit::Unmasking,
    live: &Live,
    auth: &Authorized,
) -> Option<(&'static str, GatewayError)> {
    unmasking.grant.grant.as_ref()?;
    let params = live
        .config
        .policy
        .routes
        .get(auth.route_index)?
        .params(&auth.path)?;
    let account = params.into_iter().find(|(k, _)| *k == "id")?.1;
    let all_of_it = counts.account_ids.len() as u64 == counts.records
        && counts.account_ids.iter().all(|a| a == account);
    (!all_of_it).then(|| {
        (
            "account_outside_grant",
            GatewayError::Refused {
                code: "unmask_denied",
                detail: "account_outside_grant: the response holds records of accounts the grant does not cover".to_owned(),
            },
        )
    })
}

/// Sends an unmasked body: only with the receipt of its durable audit record.
fn release(
    receipt: &crate::audit::AuditReceipt,
    mut parts: http::response::Parts,
    bytes: Bytes,
) -> Response<GatewayBody> {
    audit::add_receipt_header(receipt, &mut parts.headers);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Response::from_parts(parts, Full::new(bytes).map_err(never).boxed_unsync())
}

fn set_request_id(headers: &mut http::HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert("x-request-id", v);
    }
}

fn never(e: Infallible) -> Box<dyn std::error::Error + Send + Sync> {
    match e {}
}

/// The JSON response for a gateway error.
pub fn refuse_error(e: &GatewayError, id: &str) -> Response<GatewayBody> {
    let resp: Response<Full<Bytes>> = e.to_response(id);
    resp.map(|b| b.map_err(never).boxed_unsync())
}

/// A JSON error response as a gateway body.
pub fn refuse(status: StatusCode, code: &str, message: &str, id: &str) -> Response<GatewayBody> {
    let resp: Response<Full<Bytes>> = error_response(status, code, message, id);
    resp.map(|b| b.map_err(never).boxed_unsync())
}
