//! What `maskgate keys init|rotate|rotate-index|list|retire` do. The binary parses the
//! arguments, reads the KEK ([`Kek::from_file`] or [`Kek::from_env`]) and
//! prints what these functions return; none of them prints key bytes.

use std::fmt::Write as _;
use std::path::Path;

use super::kek::Kek;
use super::keyring::{KeyInfo, Keyring, KeyringError, KeyringOptions};

/// `keys init`: creates a keyring at `keyring_path` with data key `k1` and a
/// blind index key. Refuses to overwrite an existing file.
pub fn init(keyring_path: &Path, kek: &Kek) -> Result<String, KeyringError> {
    let ring = Keyring::create(keyring_path, kek, KeyringOptions::default())?;
    let id = ring.current_key_id().unwrap_or_default();
    Ok(format!(
        "created keyring {} (mode 0600) with data key {id} (active) and a blind index key",
        keyring_path.display()
    ))
}

/// `keys rotate`: adds a new active key; new writes use it, older keys still
/// open envelopes until retired.
pub fn rotate(keyring_path: &Path, kek: &Kek) -> Result<String, KeyringError> {
    let ring = Keyring::load(keyring_path, kek.clone(), KeyringOptions::default())?;
    let previous = ring.current_key_id();
    let new = ring.rotate()?;
    Ok(match previous {
        Some(p) => format!(
            "{} is now the key for new writes; {p} still decrypts until retired (rewrap its envelopes, then `maskgate keys retire {p}`)",
            new.id
        ),
        None => format!("{} is now the key for new writes", new.id),
    })
}

/// `keys rotate-index`: a new blind index key replaces the old one, which is
/// not kept. Running gateways adopt it at their next keyring write or reload.
pub fn rotate_index(keyring_path: &Path, kek: &Kek) -> Result<String, KeyringError> {
    let ring = Keyring::load(keyring_path, kek.clone(), KeyringOptions::default())?;
    let generation = ring.rotate_index()?;
    Ok(format!(
        "blind index key generation {generation} is now used for new writes and searches; the old key is gone: re-index stored cards (POST /_maskgate/rewrap with \"reindex\": true) and write the new indexes back"
    ))
}

/// `keys list`: every key's id, state, creation time and encryption count.
pub fn list(keyring_path: &Path, kek: &Kek) -> Result<Vec<KeyInfo>, KeyringError> {
    Ok(Keyring::load(keyring_path, kek.clone(), KeyringOptions::default())?.keys())
}

/// A table of `keys` for the terminal.
pub fn format_list(keys: &[KeyInfo]) -> String {
    let mut out = format!(
        "{:<6} {:<12} {:<20}  {:>12}\n",
        "id", "state", "created", "encryptions"
    );
    for k in keys {
        let _ = writeln!(out, "{k}");
    }
    out
}

/// `keys retire <id>`: the key's envelopes no longer open. Refuses the key new
/// writes use (and so always the only active key).
pub fn retire(keyring_path: &Path, kek: &Kek, key_id: &str) -> Result<String, KeyringError> {
    let ring = Keyring::load(keyring_path, kek.clone(), KeyringOptions::default())?;
    ring.retire(key_id)?;
    Ok(format!(
        "retired {key_id}: envelopes under it no longer decrypt and show as masked integrity errors"
    ))
}
