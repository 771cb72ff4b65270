//! Unmask requests and decrypt grants: the pure decision of whether a
//! request may see some red-flag classes in the clear, how many records,
//! and under which grant.
//!
//! The flow the gateway follows for a request with `X-Unmask`:
//!
//! 1. [`UnmaskRequest::from_headers`] reads the headers (400 on error).
//! 2. [`evaluate`] checks the caller's role's [`UnmaskRule`] (classes,
//!    route, reason, limits) and, for encrypted classes, uses the decrypt
//!    grant (`X-Unmask-Grant`) in the [`GrantBackend`]. A [`Denial`] is a
//!    403 with its `why` code and a denied audit record.
//! 3. On success [`UnmaskGrant::apply`] turns the role's [`ActionTable`]
//!    into the response's; at most [`UnmaskGrant::record_limit`] records
//!    may be unmasked; the audit record is written; then
//!    [`UnmaskGrant::commit`] counts the records released against the
//!    principal's hourly and daily budget ([`RateCounters`]).
//!
//! Nothing here knows of hyper or tokio; time comes from a [`Clock`].
//! Audit records are the caller's: every [`Denial`], [`UnmaskError`] and
//! [`GrantError`] has a short code for the record's `why`.

mod clock;
mod grants;
mod rate;
mod request;
mod store;
#[cfg(test)]
mod tests;

pub(crate) use clock::unix_secs;
pub use clock::{Clock, ManualClock, SystemClock};
pub use grants::{
    check_issue, check_revoke, check_use, Actor, CheckedIssue, Grant, GrantBackend, GrantError,
    GrantStatus, GrantUse, IssueRequest, ListedGrant, Revocation, Scope, GRANT_RETENTION,
    MAX_ACCOUNT_ID_LEN, MAX_SCOPE_ACCOUNTS, MIN_GRANT_REASON_CHARS,
};
pub use rate::{Budget, RateCounters, Reservation};
pub use request::{
    check_reason, UnmaskError, UnmaskRequest, GRANT_ID_HEX_LEN, HEADER_GRANT, HEADER_REASON,
    HEADER_UNMASK,
};
pub use store::GrantStore;

use crate::class::{Action, ActionTable, FieldClass};
use crate::config::{is_encrypted_class, Role, UnmaskRule};

/// Why an unmask request was refused: a short snake_case code for the 403
/// body and the audit record's `why`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("unmask refused: {why}")]
pub struct Denial {
    /// The code, one of the constants of this type.
    pub why: &'static str,
}

impl Denial {
    /// The role has no `unmask` rule.
    pub const NO_UNMASK_RIGHT: Denial = Denial {
        why: "no_unmask_right",
    };
    /// A class asked for is not in the role's rule.
    pub const CLASS_NOT_ALLOWED: Denial = Denial {
        why: "class_not_allowed",
    };
    /// The route is not in the role's rule.
    pub const ROUTE_NOT_ALLOWED: Denial = Denial {
        why: "route_not_allowed",
    };
    /// No reason was given and the rule needs one.
    pub const REASON_MISSING: Denial = Denial {
        why: "reason_missing",
    };
    /// The reason is shorter than `reason_min_len`.
    pub const REASON_TOO_SHORT: Denial = Denial {
        why: "reason_too_short",
    };
    /// The reason does not match `reason_pattern`.
    pub const REASON_PATTERN: Denial = Denial {
        why: "reason_pattern",
    };
    /// The principal's hourly budget is spent.
    pub const OVER_HOURLY_LIMIT: Denial = Denial {
        why: "over_hourly_limit",
    };
    /// The principal's daily budget is spent.
    pub const OVER_DAILY_LIMIT: Denial = Denial {
        why: "over_daily_limit",
    };
    /// The rule needs a grant and none was given.
    pub const GRANT_REQUIRED: Denial = Denial {
        why: "grant_required",
    };
    /// Every code, for documentation and tests; grant codes come from
    /// [`GrantError::code`] (`grant_unknown`, `grant_expired`,
    /// `grant_used_up`, `grant_revoked`, `grant_wrong_principal`,
    /// `grant_scope`, `grant_class`, and `grant_store_failed` when the
    /// store fails, which the gateway should answer with 503).
    pub const POLICY_CODES: [&'static str; 9] = [
        "no_unmask_right",
        "class_not_allowed",
        "route_not_allowed",
        "reason_missing",
        "reason_too_short",
        "reason_pattern",
        "over_hourly_limit",
        "over_daily_limit",
        "grant_required",
    ];

    /// A sentence for the 403 body: what is wrong and what to do.
    pub fn message(self) -> &'static str {
        match self.why {
            "no_unmask_right" => "your role may not unmask any field",
            "class_not_allowed" => "your role may not unmask one of the classes asked for",
            "route_not_allowed" => "your role may not unmask on this route",
            "reason_missing" => "give a reason in X-Unmask-Reason",
            "reason_too_short" => "the reason in X-Unmask-Reason is too short",
            "reason_pattern" => {
                "the reason in X-Unmask-Reason does not name the required reference"
            }
            "over_hourly_limit" => "your hourly unmask budget is spent; try again later",
            "over_daily_limit" => "your daily unmask budget is spent",
            "grant_required" => "decrypting needs a grant: send X-Unmask-Grant",
            "grant_unknown" => "the grant in X-Unmask-Grant does not exist",
            "grant_expired" => "the grant has expired; ask an approver for a new one",
            "grant_used_up" => "the grant is used up; ask an approver for a new one",
            "grant_revoked" => "the grant was revoked",
            "grant_wrong_principal" => "the grant was issued to someone else",
            "grant_scope" => "the grant does not cover this route or account",
            "grant_class" => "the grant does not cover every class asked for",
            "grant_store_failed" => "the grant store is unavailable; try again later",
            _ => "unmask refused",
        }
    }

    /// True when the denial is the gateway's fault (the grant store
    /// failed): answer 503, not 403.
    pub fn is_unavailable(self) -> bool {
        self.why == "grant_store_failed"
    }
}

impl From<GrantError> for Denial {
    fn from(e: GrantError) -> Denial {
        Denial { why: e.code() }
    }
}

/// What [`evaluate`] needs besides the role and the request.
#[derive(Clone, Copy, Debug)]
pub struct EvalContext<'a> {
    /// The principal the budget is charged to and who must be a grant's
    /// grantee: the person (`X-On-Behalf-Of`) when there is one, else the
    /// caller.
    pub principal: &'a str,
    /// The matched route's name (grants scope routes by name).
    pub route_name: &'a str,
    /// The account the request is about (the route's `{id}`), if any.
    pub account_id: Option<&'a str>,
    /// The per-principal budgets.
    pub counters: &'a RateCounters,
    /// The grant store.
    pub grants: &'a dyn GrantBackend,
    /// The time.
    pub clock: &'a dyn Clock,
}

/// An allowed unmask: which classes the response shows, for how many
/// records, under which grant. Holds the record reservation; see
/// [`UnmaskGrant::commit`].
#[derive(Debug)]
#[must_use = "commit the grant with the number of records unmasked"]
pub struct UnmaskGrant {
    /// The classes asked for with their new action: [`Action::Decrypt`] for
    /// encrypted classes (under a grant), [`Action::Clear`] for the others.
    pub classes: Vec<(FieldClass, Action)>,
    /// Most records this response may unmask: the smaller of the rule's
    /// per-request limit and the principal's remaining hourly and daily
    /// budget (at least 1). Records past it stay masked.
    pub record_limit: u32,
    /// The grant use, when the rule requires a grant.
    pub grant: Option<GrantUse>,
    /// The records reserved against the budget.
    pub reservation: Reservation,
}

impl UnmaskGrant {
    /// `base` (the role's actions) with the granted classes set to
    /// `Clear` or `Decrypt`; every other class keeps its action.
    pub fn apply(&self, base: ActionTable) -> ActionTable {
        let mut table = base;
        for &(class, action) in &self.classes {
            table.set(class, action);
        }
        table
    }

    /// The class names, for the audit record.
    pub fn class_names(&self) -> Vec<&'static str> {
        self.classes.iter().map(|(c, _)| c.name()).collect()
    }

    /// Counts the `released` records (those that carried a clear value;
    /// at most [`UnmaskGrant::record_limit`]) against the budget. Dropping
    /// the grant without committing counts nothing.
    pub fn commit(self, released: u32) {
        self.reservation.commit(released);
    }
}

/// Decides an unmask request of a principal holding `role` on the route
/// with index `route_index` ([`crate::config::Policy::match_route`]).
///
/// The checks, in order (the first failing one is the denial):
/// the role has an unmask rule (`no_unmask_right`); every class asked for
/// is in it (`class_not_allowed`); the route is in it
/// (`route_not_allowed`); the reason is present, long enough and matches
/// the pattern (`reason_missing`, `reason_too_short`, `reason_pattern`;
/// with `reason_min_len = 0` and no pattern a reason is optional); a grant
/// id is given when the rule requires one (`grant_required`); the
/// principal has budget left (`over_daily_limit`, `over_hourly_limit`);
/// then, when the rule requires a grant, one use of it is taken
/// (`grant_*` codes; the use is counted even if the response later fails).
/// A grant id sent to a rule without `grant_required` is ignored.
pub async fn evaluate(
    role: &Role,
    route_index: usize,
    req: &UnmaskRequest,
    ctx: &EvalContext<'_>,
) -> Result<UnmaskGrant, Denial> {
    let rule = role.unmask.as_ref().ok_or(Denial::NO_UNMASK_RIGHT)?;
    if req.classes.is_empty() || !req.classes.iter().all(|&c| rule.covers_class(c)) {
        return Err(Denial::CLASS_NOT_ALLOWED);
    }
    if !rule.covers_route(route_index) {
        return Err(Denial::ROUTE_NOT_ALLOWED);
    }
    check_reason_against(rule, req.reason.as_deref())?;
    let grant_id = match (&req.grant_id, rule.grant_required) {
        (Some(id), true) => Some(id.as_str()),
        (None, true) => return Err(Denial::GRANT_REQUIRED),
        (_, false) => None,
    };
    let now = ctx.clock.now();
    let reservation = ctx.counters.reserve(
        ctx.principal,
        rule.max_records_per_request,
        rule.into(),
        now,
    )?;
    let grant = match grant_id {
        None => None,
        Some(id) => Some(
            ctx.grants
                .use_grant(
                    id,
                    ctx.principal,
                    ctx.route_name,
                    ctx.account_id,
                    &req.classes,
                    now,
                )
                .await?,
        ),
    };
    let classes = req
        .classes
        .iter()
        .map(|&c| {
            let action = if rule.grant_required && is_encrypted_class(c) {
                Action::Decrypt
            } else {
                Action::Clear
            };
            (c, action)
        })
        .collect();
    Ok(UnmaskGrant {
        classes,
        record_limit: reservation.granted(),
        grant,
        reservation,
    })
}

fn check_reason_against(rule: &UnmaskRule, reason: Option<&str>) -> Result<(), Denial> {
    let needed = rule.reason_min_len > 0 || rule.reason_pattern.is_some();
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return if needed {
            Err(Denial::REASON_MISSING)
        } else {
            Ok(())
        };
    };
    if reason.chars().count() < rule.reason_min_len {
        return Err(Denial::REASON_TOO_SHORT);
    }
    if let Some(p) = &rule.reason_pattern {
        if !p.is_match(reason.as_bytes()) {
            return Err(Denial::REASON_PATTERN);
        }
    }
    Ok(())
}
