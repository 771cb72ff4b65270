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

/// A limiter with the limit it was built for: a reload keeps the limiter
/// (and so its buckets) when the limit is unchanged.
struct Kept<L> {
    spec: RateSpec,
    limiter: Arc<L>,
}

impl<L> Kept<L> {
    /// The limiter of `previous` when it was built for `spec`, else a new
    /// one from `build`.
    fn carry(spec: RateSpec, previous: Option<&Kept<L>>, build: impl FnOnce() -> L) -> Kept<L> {
        let limiter = match previous {
            Some(p) if p.spec == spec => Arc::clone(&p.limiter),
            _ => Arc::new(build()),
        };
        Kept { spec, limiter }
    }
}

/// The limiters of one role on one route.
#[derive(Default)]
struct RouteLimiters {
    per_principal: Option<Kept<KeyedLimiter>>,
    role: Option<Kept<DirectLimiter>>,
}

/// The rate limiters of one policy. Built once per policy; a reload builds
/// them from the previous set ([`RateLimiter::carried_over`]), keeping the
/// buckets of every limit that did not change. Thread-safe.
pub struct RateLimiter {
    clock: ClockAdapter,
    /// Role name → limiters by route index (routes the role is granted).
    roles: HashMap<String, Vec<RouteLimiters>>,
    /// Route names by index, to find a route's limiters after a reload.
    route_names: Vec<String>,
    /// Role name → the per-principal limit on searches by blind index.
    card_searches: HashMap<String, Kept<KeyedLimiter>>,
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
    /// reading time from `clock`, all buckets full.
    pub fn new(policy: &Policy, clock: Arc<dyn Clock>) -> RateLimiter {
        RateLimiter::build(policy, clock, None)
    }

    /// Limiters for `policy` after a reload: a limit of the same role on
    /// the same route (by name) that did not change keeps its limiter and
    /// buckets from `previous`, so a reload refills nothing it did not
    /// change; new or changed limits start full.
    pub fn carried_over(
        policy: &Policy,
        clock: Arc<dyn Clock>,
        previous: &RateLimiter,
    ) -> RateLimiter {
        RateLimiter::build(policy, clock, Some(previous))
    }

    fn build(
        policy: &Policy,
        clock: Arc<dyn Clock>,
        previous: Option<&RateLimiter>,
    ) -> RateLimiter {
        let clock = ClockAdapter(clock);
        let mut roles = HashMap::new();
        let mut card_searches = HashMap::new();
        for (name, role) in &policy.roles {
            if let Some(spec) = role.card_search_rate.filter(|_| role.may_search_cards) {
                let before = previous.and_then(|p| p.card_searches.get(name));
                card_searches.insert(
                    name.clone(),
                    Kept::carry(spec, before, || {
                        KeyedLimiter::dashmap_with_clock(quota(&spec), &clock)
                    }),
                );
            }
            let mut routes: Vec<RouteLimiters> = Vec::new();
            routes.resize_with(policy.routes.len(), RouteLimiters::default);
            let mut any = false;
            for (index, _) in role.grants() {
                let rates = role.rates(index);
                let before = previous.and_then(|p| {
                    let route = policy.routes.get(index)?;
                    p.limiters_by_name(name, &route.name)
                });
                let Some(slot) = routes.get_mut(index) else {
                    continue;
                };
                slot.per_principal = rates.rate.map(|r| {
                    Kept::carry(r, before.and_then(|b| b.per_principal.as_ref()), || {
                        KeyedLimiter::dashmap_with_clock(quota(&r), &clock)
                    })
                });
                slot.role = rates.role_rate.map(|r| {
                    Kept::carry(r, before.and_then(|b| b.role.as_ref()), || {
                        DirectLimiter::direct_with_clock(quota(&r), &clock)
                    })
                });
                any |= slot.per_principal.is_some() || slot.role.is_some();
            }
            if any {
                roles.insert(name.clone(), routes);
            }
        }
        RateLimiter {
            clock,
            roles,
            route_names: policy.routes.iter().map(|r| r.name.clone()).collect(),
            card_searches,
        }
    }

    fn limiters_by_name(&self, role: &str, route: &str) -> Option<&RouteLimiters> {
        let index = self.route_names.iter().position(|n| n == route)?;
        self.roles.get(role)?.get(index)
    }

    /// Takes one request of `principal` acting in `role` on the route with
    /// index `route_index` ([`Policy::match_route`]). `Err` with the wait
    /// when a bucket is empty. Roles and routes without limits always pass.
    ///
    /// `principal` is the principal itself, never the person it calls for
    /// (`X-On-Behalf-Of`): invented names share the principal's bucket.
    pub fn check(&self, principal: &str, role: &str, route_index: usize) -> Result<(), RetryAfter> {
        let Some(limiters) = self.roles.get(role).and_then(|r| r.get(route_index)) else {
            return Ok(());
        };
        if let Some(per_principal) = &limiters.per_principal {
            per_principal
                .limiter
                .check_key(&principal.to_owned())
                .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))?;
        }
        if let Some(role) = &limiters.role {
            role.limiter
                .check()
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
                l.limiter.retain_recent();
                l.limiter.shrink_to_fit();
            }
        }
        for l in self.card_searches.values() {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
    }

    /// Takes one search by blind index of `principal` acting in `role`.
    /// `Err` with the wait when its bucket is empty; a role without a
    /// search limit has no search right, which the caller checks first.
    pub fn check_card_search(&self, principal: &str, role: &str) -> Result<(), RetryAfter> {
        let Some(kept) = self.card_searches.get(role) else {
            return Ok(());
        };
        kept.limiter
            .check_key(&principal.to_owned())
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }

    /// How many principal buckets are held.
    pub fn principal_buckets(&self) -> usize {
        self.roles
            .values()
            .flatten()
            .filter_map(|l| l.per_principal.as_ref())
            .map(|k| k.limiter.len())
            .sum()
    }
}
