//! The compiled policy: roles, routes and principals, and the lookups the
//! gateway makes per request. Built by `compile.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use http::Method;

use super::access::{AccessWindow, AdmitSettings, Revocations, RouteRate};
use super::route::Route;
use crate::class::{ActionTable, FieldClass};
use crate::rewrite::rules::Rules;

/// The compiled policy: who may call which routes with which methods, and what
/// each role's responses reveal.
#[derive(Debug)]
pub struct Policy {
    /// Roles by name.
    pub roles: BTreeMap<String, Arc<Role>>,
    /// Routes in definition order; a route's index here is what
    /// [`Policy::match_route`] returns and [`Role::allows`] takes.
    pub routes: Vec<Route>,
    /// Principals in definition order.
    pub principals: Vec<Arc<Principal>>,
    /// `[grants]`: limits and roles of decrypt grants, defaults filled in.
    pub grants: GrantPolicy,
    /// `[revocations]` of every policy file together.
    pub revocations: Revocations,
    /// `[admit]`, defaults filled in.
    pub admit: AdmitSettings,
    /// Route indexes, most specific first.
    pub(super) route_order: Vec<usize>,
    /// Principal indexes by name, cert name and key hash.
    pub(super) by_name: HashMap<String, usize>,
    pub(super) by_cert_name: HashMap<String, usize>,
    pub(super) by_key_hash: HashMap<[u8; 32], usize>,
}

impl Policy {
    /// The route for a request path (already normalized by the proxy, without
    /// query: `/accounts/42`) and its index in [`Policy::routes`]. The most
    /// specific matching route wins: compared segment by segment from the
    /// left, a literal segment beats a `{param}`, which beats a trailing `*`.
    /// Two routes that could tie are refused at load time.
    pub fn match_route(&self, path: &str) -> Option<(usize, &Route)> {
        self.route_order
            .iter()
            .map(|&i| (i, &self.routes[i]))
            .find(|(_, r)| r.matches(path))
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&Arc<Role>> {
        self.roles.get(name)
    }

    /// The principal a client certificate name (CN or DNS SAN) identifies;
    /// compared exactly.
    pub fn principal_by_cert_name(&self, name: &str) -> Option<&Arc<Principal>> {
        self.by_cert_name.get(name).map(|&i| &self.principals[i])
    }

    /// The principal whose API key has this SHA-256.
    pub fn principal_by_key_hash(&self, sha256: &[u8; 32]) -> Option<&Arc<Principal>> {
        self.by_key_hash.get(sha256).map(|&i| &self.principals[i])
    }

    /// The principal named `name`.
    pub fn principal(&self, name: &str) -> Option<&Arc<Principal>> {
        self.by_name.get(name).map(|&i| &self.principals[i])
    }
}

/// Method bits of a grant.
pub(super) const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];
pub(super) const GET: u8 = 1;
pub(super) const HEAD: u8 = 2;

pub(super) fn method_bit(method: &Method) -> Option<u8> {
    METHODS.iter().position(|m| m == method).map(|i| 1 << i)
}

/// A role: the routes and methods it may use, and what its responses reveal.
#[derive(Debug)]
pub struct Role {
    /// The role's name.
    pub name: String,
    /// What the role is for.
    pub description: String,
    /// What the role's responses do with each class of value.
    pub actions: ActionTable,
    /// The compiled selectors: every class's names and paths, the role's
    /// allowlist, the record paths, its detectors and the redact token.
    pub rules: Arc<Rules>,
    /// True when no grant has a method other than GET or HEAD.
    pub read_only: bool,
    /// `[roles.NAME.unmask]`: what the role may ask to see in the clear,
    /// per request (`X-Unmask`); `None` when it may not.
    pub unmask: Option<UnmaskRule>,
    /// `rate`: the limit for each principal acting in this role, on each
    /// route (each principal and route has its own bucket); `None` = none.
    pub rate: Option<super::RateSpec>,
    /// `role_rate`: the limit for all principals of this role together, on
    /// each route; `None` = none.
    pub role_rate: Option<super::RateSpec>,
    /// `route_rates`: per route index, limits replacing the two above.
    pub route_rates: BTreeMap<usize, RouteRate>,
    /// `record_budget_per_day`: most customer records one principal may
    /// receive per day in this role; `None` = no budget.
    pub record_budget_per_day: Option<u64>,
    /// `may_export`: may be granted `export` routes (default: true, but
    /// false for allowlist roles).
    pub may_export: bool,
    /// `may_search_cards`: may search by blind index (`?card_number=…`);
    /// default false, never for allowlist roles.
    pub may_search_cards: bool,
    /// `card_search_rate`: searches by blind index one principal may make
    /// ([`Role::DEFAULT_CARD_SEARCH_RATE`] when the right is given without
    /// it); `None` without the right.
    pub card_search_rate: Option<super::RateSpec>,
    /// Method bits per route index.
    pub(super) grants: Vec<u8>,
}

impl Role {
    /// `card_search_rate` when a role may search without naming one: 10 a
    /// minute, bursts of 5 (a clerk looking up a payment, not a list).
    pub const DEFAULT_CARD_SEARCH_RATE: super::RateSpec = super::RateSpec {
        count: match std::num::NonZeroU32::new(10) {
            Some(n) => n,
            None => std::num::NonZeroU32::MIN,
        },
        period: super::RatePeriod::Minute,
        burst: match std::num::NonZeroU32::new(5) {
            Some(n) => n,
            None => std::num::NonZeroU32::MIN,
        },
    };

    /// True when this role may call the route with index `route_index` (from
    /// [`Policy::match_route`]) with `method`. HEAD is allowed where GET is.
    pub fn allows(&self, route_index: usize, method: &Method) -> bool {
        let Some(&bits) = self.grants.get(route_index) else {
            return false;
        };
        let wanted = match method_bit(method) {
            Some(HEAD) => HEAD | GET,
            Some(bit) => bit,
            None => return false,
        };
        bits & wanted != 0
    }

    /// Every route this role may call, with its methods (as written; HEAD is
    /// implied by GET): `(route index, methods)`.
    pub fn grants(&self) -> impl Iterator<Item = (usize, Vec<Method>)> + '_ {
        self.grants
            .iter()
            .enumerate()
            .filter(|(_, &bits)| bits != 0)
            .map(|(i, &bits)| {
                let methods = METHODS
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| bits & (1 << b) != 0)
                    .map(|(_, m)| m.clone())
                    .collect();
                (i, methods)
            })
    }

    /// The rate limits on the route with index `route_index`: the route's
    /// own (`route_rates`) where given, else the role's `rate` and
    /// `role_rate`.
    pub fn rates(&self, route_index: usize) -> RouteRate {
        let own = self.route_rates.get(&route_index);
        RouteRate {
            rate: own.and_then(|r| r.rate).or(self.rate),
            role_rate: own.and_then(|r| r.role_rate).or(self.role_rate),
        }
    }

    /// True in allowlist mode: every field the role's `allow_fields` do not
    /// name is removed.
    pub fn is_allowlist(&self) -> bool {
        self.rules.is_allowlist()
    }
}

/// True for the classes stored encrypted (card envelopes): `card_number`,
/// `card_expiry`, `bank_account`. Showing them needs a decrypt grant.
pub const fn is_encrypted_class(class: FieldClass) -> bool {
    matches!(
        class,
        FieldClass::CardNumber | FieldClass::CardExpiry | FieldClass::BankAccount
    )
}

/// What a role may ask to see in the clear (`[roles.NAME.unmask]`), checked
/// and compiled. The request-time decision is [`crate::unmask::evaluate`].
#[derive(Debug, Clone)]
pub struct UnmaskRule {
    /// The classes the role may ask for, in [`FieldClass::ALL`] order, no
    /// duplicates, at least one. With `grant_required` all are encrypted
    /// classes ([`is_encrypted_class`]); without it none is.
    pub classes: Vec<FieldClass>,
    /// Indexes (into [`Policy::routes`]) of the routes where it may ask,
    /// ascending, at least one; each is granted to the role.
    pub routes: Vec<usize>,
    /// The shortest reason accepted, in characters after trimming (0 = a
    /// reason is optional). Default 12.
    pub reason_min_len: usize,
    /// A pattern the reason must contain (searched, so anchor it with `^`
    /// to require a prefix). Byte-oriented, ASCII classes (`(?-u)`).
    pub reason_pattern: Option<regex::bytes::Regex>,
    /// Most records one response may unmask. Default 1.
    pub max_records_per_request: u32,
    /// Most records one principal may have unmasked in any hour. Default 20.
    pub max_records_per_hour: u32,
    /// Most records one principal may have unmasked in any 24 hours.
    /// Default 100.
    pub max_records_per_day: u32,
    /// True when each request needs a decrypt grant (`X-Unmask-Grant`):
    /// the classes are decrypted, not passed clear.
    pub grant_required: bool,
}

impl UnmaskRule {
    /// Default `reason_min_len`.
    pub const DEFAULT_REASON_MIN_LEN: usize = 12;
    /// Default `max_records_per_request`.
    pub const DEFAULT_PER_REQUEST: u32 = 1;
    /// Default `max_records_per_hour`.
    pub const DEFAULT_PER_HOUR: u32 = 20;
    /// Default `max_records_per_day`.
    pub const DEFAULT_PER_DAY: u32 = 100;
    /// Upper bound of every record limit.
    pub const LIMIT_RECORDS: u32 = 1_000_000;
    /// Longest `reason_pattern`, in bytes.
    pub const LIMIT_PATTERN_BYTES: usize = 256;

    /// True when the rule covers the route with index `route_index`.
    pub fn covers_route(&self, route_index: usize) -> bool {
        self.routes.binary_search(&route_index).is_ok()
    }

    /// True when the rule lists `class`.
    pub fn covers_class(&self, class: FieldClass) -> bool {
        self.classes.contains(&class)
    }
}

/// `[grants]`: the limits on decrypt grants and the roles of the two people
/// involved, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantPolicy {
    /// Longest validity an approver may give, in minutes. Default 240.
    pub max_validity_minutes: u32,
    /// Most uses one grant may allow. Default 10.
    pub max_uses: u32,
    /// The role that issues and revokes grants. Default `pmo-approver`.
    pub approver_role: String,
    /// The role a grantee must hold. Default `it-data-management`.
    pub grantee_role: String,
}

impl GrantPolicy {
    /// Default `max_validity_minutes`.
    pub const DEFAULT_MAX_VALIDITY_MINUTES: u32 = 240;
    /// Default `max_uses`.
    pub const DEFAULT_MAX_USES: u32 = 10;
    /// Upper bound of `max_validity_minutes`: 7 days.
    pub const LIMIT_VALIDITY_MINUTES: u32 = 7 * 24 * 60;
    /// Upper bound of `max_uses`.
    pub const LIMIT_USES: u32 = 1000;
}

impl Default for GrantPolicy {
    fn default() -> GrantPolicy {
        GrantPolicy {
            max_validity_minutes: GrantPolicy::DEFAULT_MAX_VALIDITY_MINUTES,
            max_uses: GrantPolicy::DEFAULT_MAX_USES,
            approver_role: "pmo-approver".to_owned(),
            grantee_role: "it-data-management".to_owned(),
        }
    }
}

/// The persons a delegating principal may name in `X-On-Behalf-Of`
/// (`delegates = { names = […], pattern = '…', max_per_day = N }`): a name
/// is accepted when it is listed or the whole of it matches the pattern.
#[derive(Clone)]
pub struct Delegates {
    /// Names accepted as they are.
    pub names: std::collections::BTreeSet<String>,
    /// The pattern as written, and compiled to match a whole name.
    pub pattern: Option<(String, regex::Regex)>,
    /// Most distinct persons the principal may name in one day (the
    /// budget day); past it, new names are refused.
    pub max_per_day: u32,
}

impl Delegates {
    /// Default `max_per_day`.
    pub const DEFAULT_MAX_PER_DAY: u32 = 500;
    /// Upper bound of `max_per_day`.
    pub const LIMIT_PER_DAY: u32 = 100_000;
    /// Longest name accepted, in bytes.
    pub const MAX_NAME_BYTES: usize = 128;

    /// Most digits a name may hold: nine would make an SSN, more a card
    /// or bank account number.
    pub const MAX_DIGITS: usize = 8;

    /// True for a name that may be a person's: 1 to [`Self::MAX_NAME_BYTES`]
    /// bytes of ASCII letters, digits, spaces and `@._-+`, with at most
    /// [`Self::MAX_DIGITS`] digits, not starting or ending with a space.
    pub fn well_formed(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= Delegates::MAX_NAME_BYTES
            && name.trim() == name
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"@._-+ ".contains(&b))
            && name.bytes().filter(u8::is_ascii_digit).count() <= Delegates::MAX_DIGITS
    }

    /// True when `name` is listed or matches the pattern whole.
    pub fn admits(&self, name: &str) -> bool {
        self.names.contains(name)
            || self
                .pattern
                .as_ref()
                .is_some_and(|(_, re)| re.is_match(name))
    }
}

impl PartialEq for Delegates {
    fn eq(&self, other: &Delegates) -> bool {
        self.names == other.names
            && self.pattern.as_ref().map(|(p, _)| p) == other.pattern.as_ref().map(|(p, _)| p)
            && self.max_per_day == other.max_per_day
    }
}

impl Eq for Delegates {}

impl fmt::Debug for Delegates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delegates")
            .field("names", &self.names.len())
            .field("pattern", &self.pattern.as_ref().map(|(p, _)| p))
            .field("max_per_day", &self.max_per_day)
            .finish()
    }
}

/// Someone who calls the gateway: an application or a person.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// Unique name (used in audit records and `X-On-Behalf-Of`).
    pub name: String,
    /// The roles held; at least one, each defined.
    pub roles: Vec<String>,
    /// Client-certificate names that identify this principal: DNS, URI or
    /// email SANs, or the CN of a certificate without SANs.
    pub cert_names: Vec<String>,
    /// The issuing CA its certificates must come from (`cert_issuer`, a
    /// distinguished name normalized by [`crate::identity::normalize_dn`]);
    /// `None`: any CA in `server.client_ca`.
    pub cert_issuer: Option<String>,
    /// SHA-256 of the principal's API key.
    pub api_key_sha256: Option<[u8; 32]>,
    /// May call on behalf of a person (`X-On-Behalf-Of`).
    pub may_delegate: bool,
    /// Whom it may call for; `Some` exactly when `may_delegate`.
    pub delegates: Option<Delegates>,
    /// Refused everything.
    pub revoked: bool,
    /// `valid_from`, `valid_until` and `hours`: when the principal may call.
    pub window: AccessWindow,
}

impl fmt::Debug for Principal {
    /// Never prints the API key hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("cert_names", &self.cert_names)
            .field("cert_issuer", &self.cert_issuer)
            .field("api_key_sha256", &self.api_key_sha256.map(|_| "<set>"))
            .field("may_delegate", &self.may_delegate)
            .field("delegates", &self.delegates)
            .field("revoked", &self.revoked)
            .field("window", &self.window)
            .finish()
    }
}
