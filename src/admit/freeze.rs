//! Account freezes (a red-flag response): a frozen account is served to
//! no one but the freeze role (`[admit] freeze_role`, default
//! `privacy-officer`), which also freezes and unfreezes. Single-record
//! routes answer 423; list responses drop the account's records.

use super::state::{StateError, StateStore};
use crate::config::AdmitSettings;

/// Why [`check`] refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FreezeError {
    /// The account is frozen (423).
    #[error("account frozen")]
    Frozen,
    /// The state store failed (503: fail closed).
    #[error(transparent)]
    Store(#[from] StateError),
}

/// True when a principal holding `roles` may freeze and unfreeze accounts
/// and still sees frozen ones.
pub fn is_freeze_officer(settings: &AdmitSettings, roles: &[String]) -> bool {
    roles.contains(&settings.freeze_role)
}

/// `Err(Frozen)` when `account` is frozen and the caller (holding `roles`)
/// is not the freeze officer.
pub async fn check(
    store: &dyn StateStore,
    settings: &AdmitSettings,
    roles: &[String],
    account: &str,
) -> Result<(), FreezeError> {
    if is_freeze_officer(settings, roles) {
        return Ok(());
    }
    if store.is_frozen(account).await? {
        return Err(FreezeError::Frozen);
    }
    Ok(())
}
