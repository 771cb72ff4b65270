//! Prometheus metrics: counts and latencies by role, route template and
//! status, values acted on by class and action. Labels are policy names
//! only, never values or raw paths.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::class::{Action, FieldClass};
use crate::rewrite::Counts;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// role → route → status → count.
type RequestCounts = BTreeMap<String, BTreeMap<String, BTreeMap<u16, u64>>>;

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The gateway's metrics registry.
#[derive(Default)]
pub struct Metrics {
    /// role → route → status → count (nested so a lookup borrows the names).
    requests: Mutex<RequestCounts>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    acted: [[AtomicU64; Action::COUNT]; FieldClass::COUNT],
    detected: AtomicU64,
    records: AtomicU64,
    integrity_errors: AtomicU64,
    rewrite_failures: AtomicU64,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    events: Mutex<BTreeMap<&'static str, u64>>,
    edge: Mutex<BTreeMap<&'static str, u64>>,
    connections_open: AtomicU64,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Records one finished request.
    pub fn request(&self, role: &str, route: &str, status: u16, elapsed: Duration) {
        // Names are copied only the first time they are seen.
        if let Ok(mut m) = self.requests.lock() {
            if !m.contains_key(role) {
                m.insert(role.to_owned(), BTreeMap::new());
            }
            if let Some(by_route) = m.get_mut(role) {
                if !by_route.contains_key(route) {
                    by_route.insert(route.to_owned(), BTreeMap::new());
                }
                if let Some(by_status) = by_route.get_mut(route) {
                    *by_status.entry(status).or_default() += 1;
                }
            }
        }
        if let Ok(mut m) = self.latency.lock() {
            if !m.contains_key(route) {
                m.insert(route.to_owned(), Histogram::default());
            }
            let Some(h) = m.get_mut(route) else {
                return;
            };
            let secs = elapsed.as_secs_f64();
            for (i, le) in BUCKETS.iter().enumerate() {
                if secs <= *le {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += secs;
        }
    }

    /// Adds one response's rewrite counts.
    pub fn rewritten(&self, counts: &Counts) {
        for class in FieldClass::ALL {
            for action in Action::ALL {
                let n = counts.get(class, action);
                if n > 0 {
                    self.acted[class.index()][action.index()].fetch_add(n, Ordering::Relaxed);
                }
            }
        }
        self.detected.fetch_add(counts.detected, Ordering::Relaxed);
        self.records.fetch_add(counts.records, Ordering::Relaxed);
        self.integrity_errors
            .fetch_add(counts.integrity_errors, Ordering::Relaxed);
    }

    /// Counts a body that could not be rewritten (the response was refused or aborted).
    pub fn rewrite_failed(&self) {
        self.rewrite_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection-level edge event (see `docs/security.md`):
    /// framing violations, timeouts, handshake failures, connection limit,
    /// HTTP/2 resets.
    pub fn edge(&self, event: &'static str) {
        if let Ok(mut m) = self.edge.lock() {
            *m.entry(event).or_default() += 1;
        }
    }

    /// How many times `event` was counted by [`Metrics::edge`].
    pub fn edge_count(&self, event: &str) -> u64 {
        self.edge
            .lock()
            .map_or(0, |m| m.get(event).copied().unwrap_or(0))
    }

    /// A client connection opened (`true`) or closed (`false`).
    pub fn connection(&self, open: bool) {
        if open {
            self.connections_open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts a refusal by its error code.
    pub fn refused(&self, code: &'static str) {
        if let Ok(mut m) = self.refusals.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    /// Counts an access-lifecycle event: `lockout`, `unlock`,
    /// `budget_alert`, `window_refusal`, `freeze`, `unfreeze`, `reload`,
    /// `reload_failed`, `state_unavailable`.
    pub fn event(&self, name: &'static str) {
        if let Ok(mut m) = self.events.lock() {
            *m.entry(name).or_default() += 1;
        }
    }

    /// Counts a successful configuration reload.
    pub fn reloaded(&self) {
        self.event("reload");
    }

    /// How many times `name` happened (tests, the demo).
    pub fn event_count(&self, name: &str) -> u64 {
        self.events
            .lock()
            .map(|m| m.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP maskgate_requests_total Requests by role, route template and status.\n# TYPE maskgate_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for (role, by_route) in m.iter() {
                for (route, by_status) in by_route {
                    for (status, n) in by_status {
                        let _ = writeln!(
                            out,
                            "maskgate_requests_total{{role=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                            esc(role),
                            esc(route)
                        );
                    }
                }
            }
        }
        out.push_str("# HELP maskgate_request_duration_seconds Time to the end of the response, by route template.\n# TYPE maskgate_request_duration_seconds histogram\n");
        if let Ok(m) = self.latency.lock() {
            for (route, h) in m.iter() {
                let route = esc(route);
                for (i, le) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "maskgate_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {}",
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "maskgate_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\nmaskgate_request_duration_seconds_sum{{route=\"{route}\"}} {}\nmaskgate_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        out.push_str("# HELP maskgate_values_total Red-flag values handled, by class and action.\n# TYPE maskgate_values_total counter\n");
        for class in FieldClass::ALL {
            for action in Action::ALL {
                let n = self.acted[class.index()][action.index()].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "maskgate_values_total{{class=\"{}\",action=\"{}\"}} {n}",
                        class.name(),
                        action.name()
                    );
                }
            }
        }
        for (name, help, v) in [
            (
                "maskgate_detected_total",
                "Values found by detectors in unnamed fields.",
                &self.detected,
            ),
            (
                "maskgate_records_total",
                "Customer records returned.",
                &self.records,
            ),
            (
                "maskgate_envelope_integrity_errors_total",
                "Damaged, forged or unknown-key envelopes masked.",
                &self.integrity_errors,
            ),
            (
                "maskgate_rewrite_failures_total",
                "Response bodies that could not be rewritten (refused or aborted).",
                &self.rewrite_failures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP maskgate_refusals_total Requests refused, by error code.\n# TYPE maskgate_refusals_total counter\n");
        if let Ok(m) = self.refusals.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(out, "maskgate_refusals_total{{code=\"{code}\"}} {n}");
            }
        }
        out.push_str("# HELP maskgate_edge_events_total Connection-level refusals and closes at the edge, by event.\n# TYPE maskgate_edge_events_total counter\n");
        if let Ok(m) = self.edge.lock() {
            for (name, n) in m.iter() {
                let _ = writeln!(out, "maskgate_edge_events_total{{event=\"{name}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP maskgate_connections_open Client connections open now.\n# TYPE maskgate_connections_open gauge\nmaskgate_connections_open {}",
            self.connections_open.load(Ordering::Relaxed)
        );
        out.push_str("# HELP maskgate_events_total Access-lifecycle events (lockouts, unlocks, budget alerts, freezes, reloads).\n# TYPE maskgate_events_total counter\n");
        if let Ok(m) = self.events.lock() {
            for (name, n) in m.iter() {
                let _ = writeln!(out, "maskgate_events_total{{event=\"{name}\"}} {n}");
            }
        }
        let pg = crate::pg::stats();
        let _ = writeln!(
            out,
            "# HELP maskgate_db_events_total Shared database (PostgreSQL) availability events.\n# TYPE maskgate_db_events_total counter\n\
             maskgate_db_events_total{{event=\"unavailable_error\"}} {}\n\
             maskgate_db_events_total{{event=\"outage\"}} {}\n\
             maskgate_db_events_total{{event=\"recovery\"}} {}\n\
             maskgate_db_events_total{{event=\"timeout\"}} {}",
            pg.unavailable_errors, pg.outages, pg.recoveries, pg.timeouts
        );
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
