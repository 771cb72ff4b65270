//! Step 8: audit, then release. An unmask or decrypt request is recorded —
//! durably, before any clear value leaves — whether it is granted or denied.
//! The only way to send an unmasked body is with the [`AuditReceipt`] that a
//! durable append returns; the answer carries it, signed, in the
//! `X-Maskgate-Audit-Receipt` header ([`add_receipt_header`]).

use std::sync::Arc;

use crate::audit::record::{Kind, Outcome, RecordDraft};
use crate::audit::AuditReceipt;
use crate::audit::AuditSink;
use crate::class::{Action, FieldClass};
use crate::identity::Caller;
use crate::unmask::{EvalContext, UnmaskGrant, UnmaskRequest};

use super::authorize::Authorized;
use super::error::GatewayError;
use super::Shared;

/// An unmask request that passed its policy, waiting for its response.
#[derive(Debug)]
pub struct Unmasking {
    /// The decision (classes, record limit, grant use, budget reservation).
    pub grant: UnmaskGrant,
    /// The request as the caller made it.
    pub request: UnmaskRequest,
}

impl Unmasking {
    /// `decrypt` when a grant opens envelopes, else `unmask`.
    pub fn kind(&self) -> Kind {
        if self
            .grant
            .classes
            .iter()
            .any(|(_, a)| *a == Action::Decrypt)
        {
            Kind::Decrypt
        } else {
            Kind::Unmask
        }
    }
}

/// Puts the signed receipt of the answer's audit record in its headers:
/// whoever keeps it can later prove the record was in the log.
pub fn add_receipt_header(receipt: &AuditReceipt, headers: &mut http::HeaderMap) {
    let Some(signed) = receipt.signed() else {
        return;
    };
    if let Ok(v) = http::HeaderValue::from_str(&signed.to_header_value()) {
        headers.insert(crate::audit::RECEIPT_HEADER, v);
    }
}

/// Appends one record and waits until it is durable.
pub async fn append(
    audit: &Arc<dyn AuditSink>,
    draft: RecordDraft,
) -> Result<AuditReceipt, GatewayError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    audit.append(
        draft,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    match rx.await {
        Ok(Ok(receipt)) => Ok(receipt),
        Ok(Err(e)) => {
            tracing::error!(target: "maskgate::audit", error = %e, "audit append failed; nothing released");
            Err(GatewayError::Unavailable("audit_unavailable"))
        }
        Err(_) => Err(GatewayError::Unavailable("audit_unavailable")),
    }
}

/// A record about this request, filled with who, what and where.
pub fn draft(
    kind: Kind,
    caller: &Caller,
    auth: &Authorized,
    method: &http::Method,
    request_id: &str,
    outcome: Outcome,
    why: &str,
) -> RecordDraft {
    let mut d = RecordDraft::new(kind, caller.principal.name.clone(), outcome, why)
        .request_id(request_id)
        .roles(caller.principal.roles.iter().cloned())
        .request(method.as_str(), auth.route_name.to_string());
    if let Some(obo) = &caller.on_behalf_of {
        d = d.on_behalf_of(obo.clone());
    }
    d
}

fn class_names(classes: &[FieldClass]) -> Vec<String> {
    classes.iter().map(|c| c.name().to_owned()).collect()
}

/// Decides an unmask request. A refusal is recorded before it is returned;
/// an allowed request is recorded later, with its counts, before release.
pub async fn decide(
    shared: &Shared,
    caller: &Caller,
    auth: &Authorized,
    method: &http::Method,
    request_id: &str,
    request: UnmaskRequest,
) -> Result<Unmasking, GatewayError> {
    // No audit log, no unmask: a clear value must never leave unrecorded.
    let audit = shared
        .audit
        .as_ref()
        .ok_or(GatewayError::Unavailable("audit_unavailable"))?;
    let config = shared.config();
    let route = config.policy.routes.get(auth.route_index);
    let account = route.and_then(|r| r.params(&auth.path)).and_then(|params| {
        params
            .into_iter()
            .find(|(k, _)| *k == "id")
            .map(|(_, v)| v.to_owned())
    });
    // Unmask budgets and grants belong to the principal: a delegated
    // person's name is the caller's claim, never a grantee nor a bucket.
    let ctx = EvalContext {
        principal: &caller.principal.name,
        route_name: &auth.route_name,
        account_id: account.as_deref(),
        counters: &shared.unmask_counters,
        grants: shared.grants.as_ref(),
        clock: shared.clock.as_ref(),
    };
    let kind = if request.grant_id.is_some() {
        Kind::Decrypt
    } else {
        Kind::Unmask
    };
    match crate::unmask::evaluate(&auth.role, auth.route_index, &request, &ctx).await {
        Ok(grant) => {
            // The use is spent now: it is recorded now, so that a response
            // that never reaches the release (HEAD, 204/304, an upstream
            // error, a later refusal) still leaves its trace.
            if let Some(used) = &grant.grant {
                let d = draft(
                    Kind::GrantUsed,
                    caller,
                    auth,
                    method,
                    request_id,
                    Outcome::Granted,
                    "ok",
                )
                .classes(class_names(&request.classes))
                .accounts(account.clone())
                .grant_id(used.grant_id.clone());
                append(audit, d).await?;
            }
            Ok(Unmasking { grant, request })
        }
        Err(denial) => {
            let mut d = draft(
                kind,
                caller,
                auth,
                method,
                request_id,
                Outcome::Denied,
                denial.why,
            )
            .classes(class_names(&request.classes))
            .accounts(account.clone());
            if let Some(reason) = &request.reason {
                d = d.reason(reason.clone());
            }
            if let Some(g) = &request.grant_id {
                d = d.grant_id(g.clone());
            }
            append(audit, d).await?;
            if denial.is_unavailable() {
                return Err(GatewayError::Unavailable("grant_store_unavailable"));
            }
            Err(GatewayError::Refused {
                code: "unmask_denied",
                detail: format!("{}: {}", denial.why, denial.message()),
            })
        }
    }
}
