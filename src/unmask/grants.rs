//! Decrypt grants: what one is, the checks on issuing and using one, and
//! the [`GrantBackend`] trait a store implements.
//!
//! The checks are pure functions ([`check_issue`], [`check_use`],
//! [`check_revoke`]) so that every backend (the JSON file store
//! [`crate::unmask::GrantStore`], a later PostgreSQL one) applies the same
//! rules; a backend adds only atomicity and persistence.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::request::check_reason;
use crate::class::FieldClass;
use crate::config::{is_encrypted_class, Policy, Principal};

/// Most account ids in one grant's scope.
pub const MAX_SCOPE_ACCOUNTS: usize = 100;
/// Longest account id, in bytes.
pub const MAX_ACCOUNT_ID_LEN: usize = 128;
/// Shortest reason an approver may give for a grant, in characters.
pub const MIN_GRANT_REASON_CHARS: usize = 12;

/// What a grant covers: some accounts (on any route), or one route (any
/// account).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// Requests about these account ids: those whose route has an account
    /// id (`/accounts/{id}`) equal to one of them. A list route, which
    /// names no single account, is not covered.
    Accounts {
        /// The account ids, compared exactly.
        accounts: Vec<String>,
    },
    /// Any request on this route (by name, as in the policy).
    Route {
        /// The route's name.
        route: String,
    },
}

impl Scope {
    /// True when a request on `route_name` about `account_id` is covered.
    pub fn covers(&self, route_name: &str, account_id: Option<&str>) -> bool {
        match self {
            Scope::Accounts { accounts } => {
                account_id.is_some_and(|id| accounts.iter().any(|a| a == id))
            }
            Scope::Route { route } => route == route_name,
        }
    }

    /// The account ids (empty for a route scope), for audit records.
    pub fn accounts(&self) -> &[String] {
        match self {
            Scope::Accounts { accounts } => accounts,
            Scope::Route { .. } => &[],
        }
    }
}

/// Who revoked a grant, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// The principal who revoked it.
    pub by: String,
    /// When.
    #[serde(with = "time_ms")]
    pub at: SystemTime,
}

/// A decrypt grant as stored.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// 128 random bits as 32 lower-case hex characters.
    pub id: String,
    /// The principal who issued it.
    pub approver: String,
    /// The only principal who may use it.
    pub grantee: String,
    /// What it covers.
    pub scope: Scope,
    /// The classes it lets the grantee decrypt (encrypted classes, in
    /// [`FieldClass::ALL`] order, at least one).
    #[serde(with = "class_names")]
    pub classes: Vec<FieldClass>,
    /// The approver's reason.
    pub reason: String,
    /// When it was issued.
    #[serde(with = "time_ms")]
    pub issued_at: SystemTime,
    /// When it stops working.
    #[serde(with = "time_ms")]
    pub expires_at: SystemTime,
    /// How many requests it allows.
    pub max_uses: u32,
    /// How many requests have used it.
    pub uses: u32,
    /// Set when revoked.
    pub revoked: Option<Revocation>,
    /// True once [`GrantBackend::sweep_expired`] has reported its expiry.
    #[serde(default)]
    pub expiry_reported: bool,
}

/// Debug shows the id shortened: the full id is for the grantee.
impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("id", &format_args!("{}…", self.id.get(..8).unwrap_or("")))
            .field("approver", &self.approver)
            .field("grantee", &self.grantee)
            .field("scope", &self.scope)
            .field("classes", &self.classes)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("max_uses", &self.max_uses)
            .field("uses", &self.uses)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// Where a grant stands at some time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// Usable.
    Active,
    /// Past its expiry.
    Expired,
    /// Every use taken.
    UsedUp,
    /// Revoked.
    Revoked,
}

impl GrantStatus {
    /// The name used in JSON and reports.
    pub const fn name(self) -> &'static str {
        match self {
            GrantStatus::Active => "active",
            GrantStatus::Expired => "expired",
            GrantStatus::UsedUp => "used_up",
            GrantStatus::Revoked => "revoked",
        }
    }
}

impl Grant {
    /// The status at `now`: revoked, else used up, else expired, else active.
    pub fn status(&self, now: SystemTime) -> GrantStatus {
        if self.revoked.is_some() {
            GrantStatus::Revoked
        } else if self.uses >= self.max_uses {
            GrantStatus::UsedUp
        } else if now >= self.expires_at {
            GrantStatus::Expired
        } else {
            GrantStatus::Active
        }
    }

    /// Uses left (0 when used up; not counting expiry or revocation).
    pub fn uses_left(&self) -> u32 {
        self.max_uses.saturating_sub(self.uses)
    }

    /// The class names, for audit records.
    pub fn class_names(&self) -> Vec<&'static str> {
        self.classes.iter().map(|c| c.name()).collect()
    }
}

/// A grant with its status at the time it was listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListedGrant {
    /// The grant.
    pub grant: Grant,
    /// Its status when listed.
    pub status: GrantStatus,
}

/// One successful use of a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantUse {
    /// The grant's id.
    pub grant_id: String,
    /// Its grantee (the caller).
    pub grantee: String,
    /// Its approver.
    pub approver: String,
    /// The classes the grant covers (a superset of those asked for).
    pub classes: Vec<FieldClass>,
    /// Uses counted so far, this one included.
    pub uses: u32,
    /// The grant's maximum.
    pub max_uses: u32,
    /// When the grant expires.
    pub expires_at: SystemTime,
}

/// Someone acting on grants: a principal's name and roles (for a person
/// calling through an application, the person).
#[derive(Clone, Copy, Debug)]
pub struct Actor<'a> {
    /// The principal's name.
    pub name: &'a str,
    /// The roles it holds.
    pub roles: &'a [String],
}

impl<'a> Actor<'a> {
    /// True when the actor holds `role`.
    pub fn holds(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl<'a> From<&'a Principal> for Actor<'a> {
    fn from(p: &'a Principal) -> Actor<'a> {
        Actor {
            name: &p.name,
            roles: &p.roles,
        }
    }
}

fn default_max_uses() -> u32 {
    1
}

/// What an approver asks for (the body of `POST /_maskgate/grants`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// The principal who may use the grant.
    pub grantee: String,
    /// What it covers.
    pub scope: Scope,
    /// The classes it lets the grantee decrypt, by name.
    #[serde(with = "class_names")]
    pub classes: Vec<FieldClass>,
    /// Why; recorded. At least [`MIN_GRANT_REASON_CHARS`] characters, and no
    /// red-flag value (the rules of [`check_reason`]).
    pub reason: String,
    /// How long it is valid, in minutes (1 to `[grants] max_validity_minutes`).
    pub validity_minutes: u32,
    /// How many requests it allows (1 to `[grants] max_uses`); default 1.
    #[serde(default = "default_max_uses")]
    pub max_uses: u32,
}

/// Why a grant could not be issued, used or revoked. [`GrantError::code`]
/// is the audit record's `why` and, for uses, the [`super::Denial`] code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No grant has this id.
    #[error("no such grant")]
    Unknown,
    /// The grant has expired.
    #[error("the grant has expired")]
    Expired,
    /// Every use of the grant is taken.
    #[error("the grant is used up")]
    UsedUp,
    /// The grant was revoked.
    #[error("the grant was revoked")]
    Revoked,
    /// The caller is not the grantee.
    #[error("the grant was issued to another principal")]
    WrongPrincipal,
    /// The request's route or account is outside the grant's scope.
    #[error("the grant does not cover this route or account")]
    Scope,
    /// A class asked for is not in the grant.
    #[error("the grant does not cover every class asked for")]
    Class,
    /// The issuer or revoker does not hold the approver role.
    #[error("only a holder of role `{0}` may issue or revoke grants")]
    NotApprover(String),
    /// The approver named themselves as grantee.
    #[error("an approver may not grant to themselves (two-person rule)")]
    SelfGrant,
    /// The grantee is not a principal of the policy.
    #[error("the grantee is not a known principal")]
    GranteeUnknown,
    /// The grantee does not hold the grantee role, or is revoked.
    #[error("the grantee does not hold role `{0}` or is revoked")]
    GranteeNotEligible(String),
    /// The validity is 0 or above the policy's maximum.
    #[error("validity_minutes must be 1 to {max}")]
    Validity {
        /// The policy's maximum.
        max: u32,
    },
    /// The use count is 0 or above the policy's maximum.
    #[error("max_uses must be 1 to {max}")]
    Uses {
        /// The policy's maximum.
        max: u32,
    },
    /// No class was named.
    #[error("a grant needs at least one class")]
    NoClass,
    /// A class that is not stored encrypted cannot be granted.
    #[error("class `{0}` cannot be granted: grants decrypt card_number, card_expiry and bank_account only")]
    NotGrantable(FieldClass),
    /// The scope is malformed.
    #[error("bad scope: {0}")]
    BadScope(&'static str),
    /// The reason is missing, too short or not acceptable.
    #[error("bad reason: {0}")]
    BadReason(&'static str),
    /// The store could not read or write its state.
    #[error("the grant store failed: {0}")]
    Storage(String),
}

impl GrantError {
    /// A short stable code (`grant_used_up`, `two_person_rule`).
    pub const fn code(&self) -> &'static str {
        match self {
            GrantError::Unknown => "grant_unknown",
            GrantError::Expired => "grant_expired",
            GrantError::UsedUp => "grant_used_up",
            GrantError::Revoked => "grant_revoked",
            GrantError::WrongPrincipal => "grant_wrong_principal",
            GrantError::Scope => "grant_scope",
            GrantError::Class => "grant_class",
            GrantError::NotApprover(_) => "not_approver",
            GrantError::SelfGrant => "two_person_rule",
            GrantError::GranteeUnknown => "grantee_unknown",
            GrantError::GranteeNotEligible(_) => "grantee_not_eligible",
            GrantError::Validity { .. } => "grant_validity",
            GrantError::Uses { .. } => "grant_max_uses",
            GrantError::NoClass => "grant_no_class",
            GrantError::NotGrantable(_) => "grant_class_not_encrypted",
            GrantError::BadScope(_) => "grant_bad_scope",
            GrantError::BadReason(_) => "grant_bad_reason",
            GrantError::Storage(_) => "grant_store_failed",
        }
    }

    /// True when the caller's request was at fault (HTTP 4xx); false for
    /// [`GrantError::Storage`] (HTTP 503).
    pub const fn is_refusal(&self) -> bool {
        !matches!(self, GrantError::Storage(_))
    }
}

/// What [`check_issue`] settled: the grant to store, given an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedIssue {
    /// Classes, sorted and deduplicated.
    pub classes: Vec<FieldClass>,
    /// The scope, account ids deduplicated.
    pub scope: Scope,
    /// The trimmed reason.
    pub reason: String,
    /// Expiry.
    pub expires_at: SystemTime,
    /// Use count.
    pub max_uses: u32,
}

impl CheckedIssue {
    /// The grant with id `id`, issued by `approver` at `now`.
    pub fn into_grant(self, id: String, approver: &str, grantee: &str, now: SystemTime) -> Grant {
        Grant {
            id,
            approver: approver.to_owned(),
            grantee: grantee.to_owned(),
            scope: self.scope,
            classes: self.classes,
            reason: self.reason,
            issued_at: now,
            expires_at: self.expires_at,
            max_uses: self.max_uses,
            uses: 0,
            revoked: None,
            expiry_reported: false,
        }
    }
}

/// The rules for issuing, in this order: the approver holds
/// `[grants] approver_role`; the grantee is not the approver (two-person
/// rule); the grantee is a principal of `policy`, not revoked, holding
/// `grantee_role`; validity and uses within the policy's maxima; at least
/// one class, each encrypted; a well-formed scope (1 to
/// [`MAX_SCOPE_ACCOUNTS`] account ids of printable ASCII without `/`,
/// none shaped like a red-flag value, or a route the policy defines); a
/// reason of at least [`MIN_GRANT_REASON_CHARS`] characters.
pub fn check_issue(
    policy: &Policy,
    approver: &Actor<'_>,
    req: &IssueRequest,
    now: SystemTime,
) -> Result<CheckedIssue, GrantError> {
    let rules = &policy.grants;
    if !approver.holds(&rules.approver_role) {
        return Err(GrantError::NotApprover(rules.approver_role.clone()));
    }
    if req.grantee == approver.name {
        return Err(GrantError::SelfGrant);
    }
    let grantee = policy
        .principal(&req.grantee)
        .ok_or(GrantError::GranteeUnknown)?;
    if grantee.revoked || !grantee.roles.contains(&rules.grantee_role) {
        return Err(GrantError::GranteeNotEligible(rules.grantee_role.clone()));
    }
    if !(1..=rules.max_validity_minutes).contains(&req.validity_minutes) {
        return Err(GrantError::Validity {
            max: rules.max_validity_minutes,
        });
    }
    if !(1..=rules.max_uses).contains(&req.max_uses) {
        return Err(GrantError::Uses {
            max: rules.max_uses,
        });
    }
    let mut classes = req.classes.clone();
    classes.sort_unstable();
    classes.dedup();
    if classes.is_empty() {
        return Err(GrantError::NoClass);
    }
    if let Some(&c) = classes.iter().find(|&&c| !is_encrypted_class(c)) {
        return Err(GrantError::NotGrantable(c));
    }
    let scope = check_scope(policy, &req.scope)?;
    let reason = match check_reason(&req.reason) {
        Ok(Some(r)) if r.chars().count() >= MIN_GRANT_REASON_CHARS => r,
        Ok(_) => return Err(GrantError::BadReason("give at least 12 characters")),
        Err(e) => return Err(GrantError::BadReason(reason_problem(e))),
    };
    let expires_at = now
        .checked_add(Duration::from_secs(u64::from(req.validity_minutes) * 60))
        .ok_or(GrantError::Validity {
            max: rules.max_validity_minutes,
        })?;
    Ok(CheckedIssue {
        classes,
        scope,
        reason,
        expires_at,
        max_uses: req.max_uses,
    })
}

fn reason_problem(e: super::UnmaskError) -> &'static str {
    use super::UnmaskError as E;
    match e {
        E::ReasonTooLong => "longer than 512 characters",
        E::ReasonRedFlag => {
            "it holds digits shaped like an SSN, tax id, card or account number; give a reference instead"
        }
        _ => "it holds a control character",
    }
}

fn check_scope(policy: &Policy, scope: &Scope) -> Result<Scope, GrantError> {
    match scope {
        Scope::Route { route } => {
            if policy.routes.iter().any(|r| r.name == *route) {
                Ok(scope.clone())
            } else {
                Err(GrantError::BadScope(
                    "the route is not defined in the policy",
                ))
            }
        }
        Scope::Accounts { accounts } => {
            let mut out: Vec<String> = Vec::new();
            for a in accounts {
                let ok = !a.is_empty()
                    && a.len() <= MAX_ACCOUNT_ID_LEN
                    && a.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
                if !ok {
                    return Err(GrantError::BadScope(
                        "an account id must be 1 to 128 printable ASCII characters without '/'",
                    ));
                }
                if !matches!(check_reason(a), Ok(Some(_))) {
                    return Err(GrantError::BadScope(
                        "an account id is shaped like a red-flag value; use the account number, not an SSN or card number",
                    ));
                }
                if !out.contains(a) {
                    out.push(a.clone());
                }
            }
            if out.is_empty() {
                return Err(GrantError::BadScope("name at least one account id"));
            }
            if out.len() > MAX_SCOPE_ACCOUNTS {
                return Err(GrantError::BadScope("at most 100 account ids"));
            }
            Ok(Scope::Accounts { accounts: out })
        }
    }
}

/// The rules for using a grant, in this order (so that a stranger learns
/// nothing but "not yours"): `principal` is the grantee; not revoked; not
/// used up; not expired (`now < expires_at`); the scope covers the route
/// and account; the grant covers every class asked for.
pub fn check_use(
    grant: &Grant,
    principal: &str,
    route_name: &str,
    account_id: Option<&str>,
    classes: &[FieldClass],
    now: SystemTime,
) -> Result<(), GrantError> {
    if grant.grantee != principal {
        return Err(GrantError::WrongPrincipal);
    }
    match grant.status(now) {
        GrantStatus::Revoked => return Err(GrantError::Revoked),
        GrantStatus::UsedUp => return Err(GrantError::UsedUp),
        GrantStatus::Expired => return Err(GrantError::Expired),
        GrantStatus::Active => {}
    }
    if !grant.scope.covers(route_name, account_id) {
        return Err(GrantError::Scope);
    }
    if classes.is_empty() || !classes.iter().all(|c| grant.classes.contains(c)) {
        return Err(GrantError::Class);
    }
    Ok(())
}

/// The rules for revoking: `by` issued the grant or holds the approver
/// role; the grant is not already revoked. An expired or used-up grant may
/// still be revoked.
pub fn check_revoke(policy: &Policy, grant: &Grant, by: &Actor<'_>) -> Result<(), GrantError> {
    let role = &policy.grants.approver_role;
    if by.name != grant.approver && !by.holds(role) {
        return Err(GrantError::NotApprover(role.clone()));
    }
    if grant.revoked.is_some() {
        return Err(GrantError::Revoked);
    }
    Ok(())
}

/// A place grants are kept. Each method is atomic: two concurrent uses of a
/// single-use grant succeed once. A method that changes a grant returns
/// only after the change is durable.
#[async_trait::async_trait]
pub trait GrantBackend: Send + Sync + fmt::Debug {
    /// Issues a grant ([`check_issue`]'s rules) with a fresh random id.
    async fn issue(
        &self,
        policy: &Policy,
        approver: &Actor<'_>,
        req: &IssueRequest,
        now: SystemTime,
    ) -> Result<Grant, GrantError>;

    /// Uses grant `id` once ([`check_use`]'s rules), counting the use.
    async fn use_grant(
        &self,
        id: &str,
        principal: &str,
        route_name: &str,
        account_id: Option<&str>,
        classes: &[FieldClass],
        now: SystemTime,
    ) -> Result<GrantUse, GrantError>;

    /// Revokes grant `id` ([`check_revoke`]'s rules); returns it revoked.
    async fn revoke(
        &self,
        policy: &Policy,
        id: &str,
        by: &Actor<'_>,
        now: SystemTime,
    ) -> Result<Grant, GrantError>;

    /// The grant with this id.
    async fn get(&self, id: &str) -> Result<Option<Grant>, GrantError>;

    /// Every grant kept, oldest first, with its status at `now`.
    async fn list(&self, now: SystemTime) -> Result<Vec<ListedGrant>, GrantError>;

    /// The grants that expired (not revoked, not used up) and were not
    /// reported yet, marked reported: each is returned once, for its
    /// `grant_expired` record. Also forgets grants that ended more than
    /// [`GRANT_RETENTION`] ago.
    async fn sweep_expired(&self, now: SystemTime) -> Result<Vec<Grant>, GrantError>;
}

/// How long an ended grant (expired, used up or revoked) is kept for
/// listing; the audit log keeps its history for good.
pub const GRANT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Serde for times as Unix milliseconds.
mod time_ms {
    use super::super::clock::{from_unix_millis, unix_millis};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(unix_millis(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        u64::deserialize(d).map(from_unix_millis)
    }
}

/// Serde for class lists as policy names.
mod class_names {
    use crate::class::FieldClass;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(classes: &[FieldClass], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(classes.iter().map(|c| c.name()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<FieldClass>, D::Error> {
        let names = Vec::<String>::deserialize(d)?;
        names
            .iter()
            .map(|n| {
                FieldClass::from_name(n).ok_or_else(|| {
                    D::Error::custom("unknown class; the classes are ssn, tin, dln, passport, card_number, card_expiry, bank_account, bank_routing, dob")
                })
            })
            .collect()
    }
}
