//! Request rate limits with governor (GCRA): per principal and per role,
//! on each route.
//!
//! A role's `rate` gives each principal acting in it one bucket per route;
//! its `role_rate` gives all its principals together one bucket per route;
//! `route_rates` replace either on a route. A request passes when both
//! buckets (those configured) have room; the principal's is checked first,
//! so a request refused for its principal never uses the role's room.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::Quota;

use crate::config::{Policy, RatePeriod, RateSpec};
use crate::unmask::Clock;

/// Refused: try again after this long (429 with `Retry-After`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limit reached; retry after {0:?}")]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header: rounded up, at least 1.
    pub fn header_secs(self) -> u64 {
        let secs = self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// Our [`Clock`] as governor's clock, so rate limits follow the same
/// (injectable) time as everything else.
#[derive(Clone)]
struct ClockAdapter(Arc<dyn Clock>);

impl GovernorClock for ClockAdapter {
    type Instant = SystemTime;
    fn now(&self) -> SystemTime {
        self.0.now()
    }
}

type KeyedLimiter = governor::RateLimiter<
    String,
    DashMapStateStore<String>,
    ClockAdapter,
    NoOpMiddleware<SystemTime>,
>;
type DirectLimiter =
    governor::RateLimiter<NotKeyed, InMemoryState, ClockAdapter, NoOpMiddleware<SystemTime>>;

/// The limiters of one role on one route.
#[derive(Default)]
struct RouteLimiters {
    per_principal: Option<KeyedLimiter>,
    role: Option<DirectLimiter>,
}

/// The rate limiters of one policy. Built once per policy (a reload builds
/// new ones, with full buckets); thread-safe.
pub struct RateLimiter {
    clock: ClockAdapter,
    /// Role name → limiters by route index (routes the role is granted).
    roles: HashMap<String, Vec<RouteLimiters>>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("roles", &self.roles.len())
            .field("principal_buckets", &self.principal_buckets())
            .finish()
    }
}

fn quota(spec: &RateSpec) -> Quota {
    let q = match spec.period {
        RatePeriod::Second => Quota::per_second(spec.count),
        RatePeriod::Minute => Quota::per_minute(spec.count),
    };
    q.allow_burst(spec.burst)
}

impl RateLimiter {
    /// Limiters for every role of `policy` on every route granted to it,
    /// reading time from `clock`.
    pub fn new(policy: &Policy, clock: Arc<dyn Clock>) -> RateLimiter {
        let clock = ClockAdapter(clock);
        let mut roles = HashMap::new();
        for (name, role) in &policy.roles {
            let mut routes: Vec<RouteLimiters> = Vec::new();
            routes.resize_with(policy.routes.len(), RouteLimiters::default);
            let mut any = false;
            for (index, _) in role.grants() {
                let rates = role.rates(index);
                let Some(slot) = routes.get_mut(index) else {
                    continue;
                };
                slot.per_principal = rates
                    .rate
                    .map(|r| KeyedLimiter::dashmap_with_clock(quota(&r), &clock));
                slot.role = rates
                    .role_rate
                    .map(|r| DirectLimiter::direct_with_clock(quota(&r), &clock));
                any |= slot.per_principal.is_some() || slot.role.is_some();
            }
            if any {
                roles.insert(name.clone(), routes);
            }
        }
        RateLimiter { clock, roles }
    }

    /// Takes one request of `principal` acting in `role` on the route with
    /// index `route_index` ([`Policy::match_route`]). `Err` with the wait
    /// when a bucket is empty. Roles and routes without limits always pass.
    ///
    /// `principal` is whom the request is counted for: the person an
    /// application calls for (`X-On-Behalf-Of`) when there is one.
    pub fn check(&self, principal: &str, role: &str, route_index: usize) -> Result<(), RetryAfter> {
        let Some(limiters) = self.roles.get(role).and_then(|r| r.get(route_index)) else {
            return Ok(());
        };
        if let Some(per_principal) = &limiters.per_principal {
            per_principal
                .check_key(&principal.to_owned())
                .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))?;
        }
        if let Some(role) = &limiters.role {
            role.check()
                .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))?;
        }
        Ok(())
    }

    /// Forgets principals' buckets that are full again (call it now and
    /// then: every distinct principal, including `X-On-Behalf-Of` names,
    /// holds a bucket until then).
    pub fn retain_recent(&self) {
        for limiters in self.roles.values().flatten() {
            if let Some(l) = &limiters.per_principal {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
    }

    /// How many principal buckets are held.
    pub fn principal_buckets(&self) -> usize {
        self.roles
            .values()
            .flatten()
            .filter_map(|l| l.per_principal.as_ref())
            .map(governor::RateLimiter::len)
            .sum()
    }
}
