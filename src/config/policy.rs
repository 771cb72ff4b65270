//! The compiled policy: roles, routes and principals, and the lookups the
//! gateway makes per request. Built by `compile.rs`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use http::Method;

use super::route::Route;
use crate::class::ActionTable;
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
    pub principals: Vec<Principal>,
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
    pub fn principal_by_cert_name(&self, name: &str) -> Option<&Principal> {
        self.by_cert_name.get(name).map(|&i| &self.principals[i])
    }

    /// The principal whose API key has this SHA-256.
    pub fn principal_by_key_hash(&self, sha256: &[u8; 32]) -> Option<&Principal> {
        self.by_key_hash.get(sha256).map(|&i| &self.principals[i])
    }

    /// The principal named `name`.
    pub fn principal(&self, name: &str) -> Option<&Principal> {
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
    /// Method bits per route index.
    pub(super) grants: Vec<u8>,
}

impl Role {
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

    /// True in allowlist mode: every field the role's `allow_fields` do not
    /// name is removed.
    pub fn is_allowlist(&self) -> bool {
        self.rules.is_allowlist()
    }
}

/// Someone who calls the gateway: an application or a person.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    /// Unique name (used in audit records and `X-On-Behalf-Of`).
    pub name: String,
    /// The roles held; at least one, each defined.
    pub roles: Vec<String>,
    /// Client-certificate CN or DNS SAN values that identify this principal.
    pub cert_names: Vec<String>,
    /// SHA-256 of the principal's API key.
    pub api_key_sha256: Option<[u8; 32]>,
    /// May call on behalf of another principal (`X-On-Behalf-Of`).
    pub may_delegate: bool,
    /// Refused everything.
    pub revoked: bool,
}

impl fmt::Debug for Principal {
    /// Never prints the API key hash.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("cert_names", &self.cert_names)
            .field("api_key_sha256", &self.api_key_sha256.map(|_| "<set>"))
            .field("may_delegate", &self.may_delegate)
            .field("revoked", &self.revoked)
            .finish()
    }
}
