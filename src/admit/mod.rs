//! Admission: the access-lifecycle controls between identifying a caller
//! and authorizing its request — lockouts, revocations, validity windows,
//! rate limits, record budgets, page size caps, export denial and account
//! freezes.
//!
//! Everything here is pure and synchronous (no hyper, no tokio), and
//! thread-safe. Time is passed in or read from a [`crate::unmask::Clock`]
//! (the same injectable clock the unmask decisions use), so tests move it
//! by hand. State kept between requests sits behind the [`StateStore`]
//! trait; [`LocalStateStore`] keeps it in files under the data directory.
//!
//! The order the gateway applies them in (each refusal is answered and
//! recorded; none is skipped for any route):
//!
//! | step | call | refusal |
//! |---|---|---|
//! | before authenticating | [`Lockout::check_all`] on [`attempt_identities`] | 401 |
//! | authentication failed | [`Lockout::record_failure`] per identity; audit a [`LockState::Locked`] with `new` | 401 |
//! | authenticated | [`Lockout::record_success`] | — |
//! | per request | [`revoke::check`] | 401/403 |
//! | per request | [`window::check`] of the principal's window | 403 |
//! | after route match | [`page::export_allowed`], [`RateLimiter::check`] | 403, 429 + `Retry-After` |
//! | before upstream | [`Budget::check`], [`freeze::check`] for a single-record route, [`page_cap`] rewrites the query | 403, 423 |
//! | records released | [`Budget::charge`] (alert once when `alert`); drop records of frozen accounts ([`StateStore::is_frozen`]) | 403 for further data |

mod budget;
mod delegates;
pub mod freeze;
mod local;
mod lockout;
pub mod page;
mod rate;
pub mod revoke;
mod shadow;
mod state;
#[cfg(test)]
mod tests;
pub mod window;

pub use budget::{Budget, BudgetError, BudgetExceeded, Remaining};
pub use delegates::{DelegateCount, TooManyDelegates};
pub use freeze::FreezeError;
pub use local::LocalStateStore;
pub use lockout::{attempt_identities, LockError, LockState, Lockout};
pub use page::{export_allowed, page_cap, ExportDenied};
pub use rate::{RateLimiter, RetryAfter};
pub use revoke::Revoked;
pub use shadow::Shadow;
pub use state::{
    check_account_id, BadIdentity, Freeze, FreezeChange, IdentityKey, LockEntry, StateError,
    StateStore, KEY_ID_BYTES, MAX_FREEZE_ACCOUNT_LEN, MAX_IDENTITY_NAME_LEN,
};
pub use window::OutsideWindow;

use std::sync::Arc;

use crate::config::{Config, StateBackend};

/// Opens the state store the gateway config names (`[state] backend`) in
/// its data directory.
pub fn open_state(config: &Config) -> Result<Arc<dyn StateStore>, StateError> {
    match config.state.backend {
        StateBackend::Local => Ok(Arc::new(LocalStateStore::open(&config.data_dir)?)),
        // The pool is shared with the gateway's grant store and audit sink
        // and connects on first use (`crate::pg::Db::shared`).
        StateBackend::Postgres => {
            let pg = config.state.postgres.as_ref().ok_or(StateError::Invalid {
                what: "state",
                why: "backend postgres without [state] url",
            })?;
            let db = crate::pg::Db::shared(pg).map_err(|e| StateError::Storage(e.to_string()))?;
            Ok(Arc::new(crate::pg::PgStateStore::new(db)))
        }
    }
}
