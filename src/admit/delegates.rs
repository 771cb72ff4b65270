//! The per-principal cap on distinct persons named in `X-On-Behalf-Of`: an
//! application may call for at most `delegates.max_per_day` different
//! people in one budget day, so invented names cannot grow without bound
//! (in the access log, in the audit log, in the upstream's view).
//!
//! Counted in memory per gateway instance; a restart forgets the day's
//! names (documented in `docs/security.md`).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

/// The principal named more distinct persons today than it may (403).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "this principal has called for {limit} different persons today; no new ones until tomorrow"
)]
pub struct TooManyDelegates {
    /// `delegates.max_per_day`.
    pub limit: u32,
}

#[derive(Debug, Default)]
struct Day {
    day: String,
    persons: HashSet<String>,
}

/// Distinct persons per principal and day. Thread-safe.
#[derive(Debug, Default)]
pub struct DelegateCount {
    by_principal: Mutex<HashMap<String, Day>>,
}

impl DelegateCount {
    /// An empty count.
    pub fn new() -> DelegateCount {
        DelegateCount::default()
    }

    /// Notes that `principal` calls for `person` on `day`: `Ok` for a
    /// person already seen today or while fewer than `limit` were;
    /// `Err` for a new person past the cap (not counted).
    pub fn note(
        &self,
        principal: &str,
        person: &str,
        day: &str,
        limit: u32,
    ) -> Result<(), TooManyDelegates> {
        let mut map = self
            .by_principal
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(principal.to_owned()).or_default();
        if entry.day != day {
            entry.day = day.to_owned();
            entry.persons.clear();
        }
        if entry.persons.contains(person) {
            return Ok(());
        }
        let cap = usize::try_from(limit).unwrap_or(usize::MAX);
        if entry.persons.len() >= cap {
            return Err(TooManyDelegates { limit });
        }
        entry.persons.insert(person.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_persons_past_the_cap_are_refused_until_the_day_changes() {
        let count = DelegateCount::new();
        assert_eq!(count.note("app", "a", "2026-07-15", 2), Ok(()));
        assert_eq!(count.note("app", "b", "2026-07-15", 2), Ok(()));
        assert_eq!(
            count.note("app", "c", "2026-07-15", 2),
            Err(TooManyDelegates { limit: 2 })
        );
        // Known persons still pass; other principals have their own cap.
        assert_eq!(count.note("app", "a", "2026-07-15", 2), Ok(()));
        assert_eq!(count.note("other", "c", "2026-07-15", 2), Ok(()));
        assert_eq!(count.note("app", "c", "2026-07-16", 2), Ok(()));
    }
}
