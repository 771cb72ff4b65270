//! Record budgets: how many customer records one principal may receive per
//! day (`record_budget_per_day` of the request's role), counted from the
//! rewriter's record counts. The day is the calendar day in `[admit]
//! budget_tz`.

use std::sync::Arc;
use std::time::SystemTime;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::state::{StateError, StateStore};
use crate::config::AdmitSettings;

/// Room left in a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remaining {
    /// Records received today, this charge included.
    pub used: u64,
    /// The budget; `None` when the role has none.
    pub limit: Option<u64>,
}

impl Remaining {
    /// Records that may still be received today; `None` without a budget.
    pub fn remaining(&self) -> Option<u64> {
        self.limit.map(|l| l.saturating_sub(self.used))
    }
}

/// The budget is used up: no more data today (403).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("daily record budget of {limit} used up ({used} records today)")]
pub struct BudgetExceeded {
    /// The budget.
    pub limit: u64,
    /// Records counted today.
    pub used: u64,
    /// Of the records just charged, how many are past the budget (a
    /// streaming caller may still send the others); 0 from
    /// [`Budget::check`].
    pub over: u64,
    /// True for exactly one charge per principal and day: the one that used
    /// the budget up. The caller raises the alert (log, audit, metric) then.
    pub alert: bool,
}

/// Why [`Budget`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The budget is used up (403).
    #[error(transparent)]
    Exceeded(#[from] BudgetExceeded),
    /// The state store failed (503: fail closed).
    #[error(transparent)]
    Store(#[from] StateError),
}

/// Daily record budgets over a [`StateStore`]. Cheap to clone; thread-safe.
#[derive(Clone, Debug)]
pub struct Budget {
    store: Arc<dyn StateStore>,
    tz: TimeZone,
}

impl Budget {
    /// Budgets counted in `store`, by calendar day in `settings.budget_tz`.
    pub fn new(store: Arc<dyn StateStore>, settings: &AdmitSettings) -> Budget {
        Budget {
            store,
            tz: settings.budget_tz.clone(),
        }
    }

    /// The day `now` falls on, `YYYY-MM-DD`, in the budget time zone.
    pub fn day(&self, now: SystemTime) -> String {
        match Timestamp::try_from(now) {
            Ok(ts) => self.tz.to_datetime(ts).date().to_string(),
            // Outside jiff's range (years -9999..=9999): one shared day.
            Err(_) => "out-of-range".to_owned(),
        }
    }

    /// Before a request: `Err` when `principal` has no room left today
    /// (used ≥ limit). Never alerts. Without a budget (`limit` `None`)
    /// always passes without reading the store.
    pub async fn check(
        &self,
        principal: &str,
        limit: Option<u64>,
        now: SystemTime,
    ) -> Result<Remaining, BudgetError> {
        let Some(limit) = limit else {
            return Ok(Remaining { used: 0, limit });
        };
        let used = self.store.records(principal, &self.day(now)).await?;
        if used >= limit {
            return Err(BudgetExceeded {
                limit,
                used,
                over: 0,
                alert: false,
            }
            .into());
        }
        Ok(Remaining {
            used,
            limit: Some(limit),
        })
    }

    /// After (or while) sending records: counts `n` records received by
    /// `principal`. `Ok` while room is left; `Err` once the budget is used
    /// up (used ≥ limit), with `alert` set for the one charge that used it
    /// up. Without a budget nothing is counted.
    pub async fn charge(
        &self,
        principal: &str,
        limit: Option<u64>,
        n: u64,
        now: SystemTime,
    ) -> Result<Remaining, BudgetError> {
        let Some(limit) = limit else {
            return Ok(Remaining { used: 0, limit });
        };
        let used = self.store.add_records(principal, &self.day(now), n).await?;
        if used < limit {
            return Ok(Remaining {
                used,
                limit: Some(limit),
            });
        }
        let before = used.saturating_sub(n);
        Err(BudgetExceeded {
            limit,
            used,
            over: (used - limit).min(n),
            alert: before < limit,
        }
        .into())
    }
}
