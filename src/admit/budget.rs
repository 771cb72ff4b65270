//! Record budgets: how many customer records one principal may receive per
//! day (`record_budget_per_day` of the request's role), counted from the
//! rewriter's record counts. The day is the calendar day in `[admit]
//! budget_tz`.

use std::sync::Arc;
use std::time::SystemTime;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::shadow::Shadow;
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

/// Daily record budgets over a [`StateStore`], with a [`Shadow`] that
/// holds them while the store is away. Cheap to clone; thread-safe.
#[derive(Clone, Debug)]
pub struct Budget {
    store: Arc<dyn StateStore>,
    tz: TimeZone,
    shadow: Arc<Shadow>,
}

impl Budget {
    /// Budgets counted in `store`, by calendar day in `settings.budget_tz`,
    /// shadowed in `shadow`.
    pub fn new(
        store: Arc<dyn StateStore>,
        settings: &AdmitSettings,
        shadow: Arc<Shadow>,
    ) -> Budget {
        Budget {
            store,
            tz: settings.budget_tz.clone(),
            shadow,
        }
    }

    /// The records of `principal` on `day` in the store, after pushing
    /// what the shadow counted while the store was away.
    async fn stored_records(&self, principal: &str, day: &str) -> Result<u64, StateError> {
        let pending = self.shadow.take_pending_records(principal, day);
        let result = if pending > 0 {
            self.store.add_records(principal, day, pending).await
        } else {
            self.store.records(principal, day).await
        };
        match result {
            Ok(total) => {
                self.shadow.learn_records(principal, day, total);
                Ok(total)
            }
            Err(e) => {
                self.shadow.restore_pending_records(principal, day, pending);
                Err(e)
            }
        }
    }

    /// Pushes every count the shadow kept while the store was away; the
    /// first failure stops it (the rest waits for the next call).
    pub async fn reconcile(&self) -> Result<(), StateError> {
        for (principal, day) in self.shadow.pending_record_keys() {
            self.stored_records(&principal, &day).await?;
        }
        Ok(())
    }

    /// [`Budget::check`] while the store is away: from the shadow (the
    /// store's last total plus what was counted here since).
    pub fn check_shadow(
        &self,
        principal: &str,
        limit: Option<u64>,
        now: SystemTime,
    ) -> Result<Remaining, BudgetExceeded> {
        let Some(limit) = limit else {
            return Ok(Remaining { used: 0, limit });
        };
        let used = self.shadow.records(principal, &self.day(now));
        if used >= limit {
            return Err(BudgetExceeded {
                limit,
                used,
                over: 0,
                alert: false,
            });
        }
        Ok(Remaining {
            used,
            limit: Some(limit),
        })
    }

    /// [`Budget::charge`] while the store is away: counted in the shadow,
    /// pushed by [`Budget::reconcile`].
    pub fn charge_shadow(
        &self,
        principal: &str,
        limit: Option<u64>,
        n: u64,
        now: SystemTime,
    ) -> Result<Remaining, BudgetExceeded> {
        let Some(limit) = limit else {
            return Ok(Remaining { used: 0, limit });
        };
        let used = self.shadow.add_records(principal, &self.day(now), n);
        exceeded(limit, used, n)
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
        let used = self.stored_records(principal, &self.day(now)).await?;
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
        let day = self.day(now);
        let used = self.store.add_records(principal, &day, n).await?;
        self.shadow.learn_records(principal, &day, used);
        Ok(exceeded(limit, used, n)?)
    }
}

/// `used` records after a charge of `n` against `limit`.
fn exceeded(limit: u64, used: u64, n: u64) -> Result<Remaining, BudgetExceeded> {
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
    })
}
