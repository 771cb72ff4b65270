//! Per-principal budgets of unmasked records: how many records a principal
//! has had unmasked in the last hour and the last 24 hours.
//!
//! Counts are kept in memory, per minute, so the windows slide minute by
//! minute: "the last hour" is the current minute and the 59 before it.
//! A request first *reserves* the records it may unmask; reserved records
//! count against both windows until the reservation is committed (with the
//! number actually released) or dropped (nothing released).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use super::clock::unix_secs;
use super::Denial;
use crate::config::UnmaskRule;

const HOUR_MINUTES: u64 = 60;
const DAY_MINUTES: u64 = 24 * 60;

/// The hourly and daily record limits that apply to one principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most records in any hour.
    pub per_hour: u32,
    /// Most records in any 24 hours.
    pub per_day: u32,
}

impl From<&UnmaskRule> for Budget {
    fn from(rule: &UnmaskRule) -> Budget {
        Budget {
            per_hour: rule.max_records_per_hour,
            per_day: rule.max_records_per_day,
        }
    }
}

/// Records of one principal: committed counts per minute, and reserved ones.
#[derive(Debug, Default)]
struct Counts {
    minutes: BTreeMap<u64, u64>,
    pending: u64,
}

impl Counts {
    /// Forgets minutes older than a day before `minute`.
    fn prune(&mut self, minute: u64) {
        let oldest = minute.saturating_sub(DAY_MINUTES - 1);
        self.minutes = self.minutes.split_off(&oldest);
    }

    /// Committed plus pending records in the `window` minutes ending at `minute`.
    fn used(&self, minute: u64, window: u64) -> u64 {
        let from = minute.saturating_sub(window - 1);
        self.minutes.range(from..).map(|(_, n)| n).sum::<u64>() + self.pending
    }
}

type Table = HashMap<String, Counts>;

/// Sliding per-principal counts of unmasked records. Cheap to clone (the
/// clones share the counts); thread-safe.
#[derive(Clone, Default)]
pub struct RateCounters {
    inner: Arc<Mutex<Table>>,
}

impl fmt::Debug for RateCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateCounters")
            .field("principals", &lock(&self.inner).len())
            .finish()
    }
}

fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RateCounters {
    /// Empty counters.
    pub fn new() -> RateCounters {
        RateCounters::default()
    }

    /// Reserves up to `wanted` records for `principal` at `now`, as many as
    /// the hourly and daily room allows. Refused (`over_daily_limit`, then
    /// `over_hourly_limit`) when there is no room at all; otherwise the
    /// reservation's [`Reservation::granted`] may be less than `wanted`.
    pub fn reserve(
        &self,
        principal: &str,
        wanted: u32,
        budget: Budget,
        now: SystemTime,
    ) -> Result<Reservation, Denial> {
        let minute = unix_secs(now) / 60;
        let mut table = lock(&self.inner);
        let counts = table.entry(principal.to_owned()).or_default();
        counts.prune(minute);
        let room_day = u64::from(budget.per_day).saturating_sub(counts.used(minute, DAY_MINUTES));
        let room_hour =
            u64::from(budget.per_hour).saturating_sub(counts.used(minute, HOUR_MINUTES));
        if wanted > 0 && room_day == 0 {
            return Err(Denial::OVER_DAILY_LIMIT);
        }
        if wanted > 0 && room_hour == 0 {
            return Err(Denial::OVER_HOURLY_LIMIT);
        }
        let granted = u64::from(wanted).min(room_day).min(room_hour);
        counts.pending += granted;
        Ok(Reservation {
            counters: Arc::clone(&self.inner),
            principal: principal.to_owned(),
            minute,
            reserved: granted,
        })
    }

    /// Records of `principal` in the last hour and the last 24 hours at
    /// `now`, committed and reserved: `(hour, day)`.
    pub fn used(&self, principal: &str, now: SystemTime) -> (u64, u64) {
        let minute = unix_secs(now) / 60;
        let table = lock(&self.inner);
        table.get(principal).map_or((0, 0), |c| {
            (c.used(minute, HOUR_MINUTES), c.used(minute, DAY_MINUTES))
        })
    }

    /// Forgets principals with nothing in the last day and nothing reserved.
    /// Call now and then (for example once a minute) to bound memory.
    pub fn purge(&self, now: SystemTime) {
        let minute = unix_secs(now) / 60;
        let mut table = lock(&self.inner);
        table.retain(|_, c| {
            c.prune(minute);
            !c.minutes.is_empty() || c.pending > 0
        });
    }
}

/// Records reserved for one response. [`Reservation::commit`] with the
/// number of records actually unmasked; dropping it uncommitted releases
/// them all (nothing was released).
#[must_use = "commit the reservation with the number of records unmasked"]
pub struct Reservation {
    counters: Arc<Mutex<Table>>,
    principal: String,
    minute: u64,
    reserved: u64,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("principal", &self.principal)
            .field("reserved", &self.reserved)
            .finish()
    }
}

impl Reservation {
    /// How many records were reserved: the most this response may unmask.
    pub fn granted(&self) -> u32 {
        u32::try_from(self.reserved).unwrap_or(u32::MAX)
    }

    /// Counts `released` records (at most the reserved number) against the
    /// principal's budget, at the time of the reservation, and releases the
    /// rest.
    pub fn commit(mut self, released: u32) {
        self.settle(u64::from(released));
    }

    fn settle(&mut self, released: u64) {
        if self.reserved == 0 {
            return;
        }
        let released = released.min(self.reserved);
        let mut table = lock(&self.counters);
        let counts = table.entry(self.principal.clone()).or_default();
        counts.pending = counts.pending.saturating_sub(self.reserved);
        if released > 0 {
            *counts.minutes.entry(self.minute).or_default() += released;
        }
        self.reserved = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.settle(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unmask::clock::{Clock, ManualClock};
    use std::time::Duration;

    const B: Budget = Budget {
        per_hour: 10,
        per_day: 25,
    };

    #[test]
    fn reservations_are_capped_by_the_room_left() {
        let c = RateCounters::new();
        let clock = ManualClock::at_unix(1_000_000 * 60);
        let r = c.reserve("p", 4, B, clock.now()).unwrap();
        assert_eq!(r.granted(), 4);
        assert_eq!(c.used("p", clock.now()), (4, 4));
        r.commit(3);
        assert_eq!(c.used("p", clock.now()), (3, 3));
        let r = c.reserve("p", 9, B, clock.now()).unwrap();
        assert_eq!(r.granted(), 7, "hourly room is 7");
        r.commit(100); // clamped to the reservation
        assert_eq!(c.used("p", clock.now()), (10, 10));
        assert_eq!(
            c.reserve("p", 1, B, clock.now()).unwrap_err(),
            Denial::OVER_HOURLY_LIMIT
        );
        // another principal is not affected
        assert_eq!(c.reserve("q", 1, B, clock.now()).unwrap().granted(), 1);
        assert_eq!(c.used("q", clock.now()), (0, 0), "dropped: released");
    }

    #[test]
    fn windows_slide_by_the_minute() {
        let c = RateCounters::new();
        let clock = ManualClock::at_unix(1_000_000 * 60 + 30);
        c.reserve("p", 10, B, clock.now()).unwrap().commit(10);
        clock.advance(Duration::from_secs(59 * 60));
        assert_eq!(
            c.reserve("p", 1, B, clock.now()).unwrap_err(),
            Denial::OVER_HOURLY_LIMIT,
            "59 minutes later the records still count"
        );
        clock.advance(Duration::from_secs(60));
        let r = c.reserve("p", 10, B, clock.now()).unwrap();
        assert_eq!(r.granted(), 10, "an hour later the hour is free");
        r.commit(10);
        clock.advance(Duration::from_secs(60 * 60));
        let r = c.reserve("p", 10, B, clock.now()).unwrap();
        assert_eq!(r.granted(), 5, "the day has 5 left");
        r.commit(5);
        clock.advance(Duration::from_secs(60 * 60));
        assert_eq!(
            c.reserve("p", 1, B, clock.now()).unwrap_err(),
            Denial::OVER_DAILY_LIMIT
        );
        // 24 hours after the first records, they leave the day window
        clock.set(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000 * 60 + 24 * 3600));
        assert_eq!(c.used("p", clock.now()), (0, 15));
        assert_eq!(c.reserve("p", 3, B, clock.now()).unwrap().granted(), 3);
    }

    #[test]
    fn pending_reservations_count_until_settled() {
        let c = RateCounters::new();
        let now = ManualClock::at_unix(3_600).now();
        let a = c.reserve("p", 6, B, now).unwrap();
        let b = c.reserve("p", 6, B, now).unwrap();
        assert_eq!((a.granted(), b.granted()), (6, 4));
        assert_eq!(
            c.reserve("p", 1, B, now).unwrap_err(),
            Denial::OVER_HOURLY_LIMIT
        );
        drop(b);
        assert_eq!(c.used("p", now), (6, 6));
        a.commit(0);
        assert_eq!(c.used("p", now), (0, 0));
        c.purge(now);
        assert_eq!(format!("{c:?}"), "RateCounters { principals: 0 }");
        // a zero-record reservation is always possible and changes nothing
        assert_eq!(c.reserve("p", 0, B, now).unwrap().granted(), 0);
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_budget() {
        let c = RateCounters::new();
        let now = ManualClock::at_unix(7_200).now();
        let budget = Budget {
            per_hour: 100,
            per_day: 100,
        };
        let total: u32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let c = c.clone();
                    s.spawn(move || {
                        let mut got = 0;
                        for _ in 0..50 {
                            if let Ok(r) = c.reserve("p", 3, budget, now) {
                                got += r.granted();
                                let n = r.granted();
                                r.commit(n);
                            }
                        }
                        got
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(total, 100);
        assert_eq!(c.used("p", now), (100, 100));
    }
}
