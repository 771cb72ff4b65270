//! The key-encryption key (KEK) that wraps the keyring file.
//!
//! 32 bytes, written as 64 hex digits or as base64 (standard or url-safe,
//! padded or not), read from a file (which must not be readable by group or
//! others) or from an environment variable. Never from the gateway's config
//! file: the config names only where the KEK is.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::fsutil;

/// Bytes in a KEK.
pub const KEK_LEN: usize = 32;

/// The environment variable the gateway reads the KEK from by default.
pub const DEFAULT_KEK_ENV: &str = "MASKGATE_KEK";

/// Why a KEK could not be read. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KekError {
    /// The KEK file does not exist.
    #[error("key-encryption key file {path} does not exist")]
    FileMissing {
        /// The file.
        path: PathBuf,
    },
    /// The environment variable is not set (or empty).
    #[error("key-encryption key environment variable {var} is not set")]
    EnvMissing {
        /// The variable.
        var: String,
    },
    /// The KEK file is readable or writable by group or others.
    #[error(
        "key-encryption key file {} is accessible to group or others (mode {mode:03o}): run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    PermissionsTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The text is neither 64 hex digits nor base64.
    #[error("key-encryption key from {from} is not 64 hex digits or base64")]
    BadEncoding {
        /// Where it was read from.
        from: String,
    },
    /// The text decodes to the wrong number of bytes.
    #[error("key-encryption key from {from} is {got} bytes long; it must be {KEK_LEN}")]
    WrongLength {
        /// Where it was read from.
        from: String,
        /// Bytes decoded.
        got: usize,
    },
    /// The KEK file already exists (when creating one).
    #[error("key-encryption key file {} already exists; not overwriting it", path.display())]
    AlreadyExists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing the file failed.
    #[error("key-encryption key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The random number generator failed.
    #[error("random number generator failed")]
    Random,
}

/// A 256-bit key-encryption key. Zeroed on drop; never printed.
#[derive(Clone)]
pub struct Kek(Zeroizing<[u8; KEK_LEN]>);

impl Kek {
    /// A KEK from its bytes (tests, callers with their own secret store).
    pub fn from_bytes(bytes: &[u8; KEK_LEN]) -> Kek {
        Kek(Zeroizing::new(*bytes))
    }

    /// Reads the KEK from `path`, which must exist and be accessible to its
    /// owner only (mode 0600 or 0400).
    pub fn from_file(path: &Path) -> Result<Kek, KekError> {
        let io = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                KekError::FileMissing {
                    path: path.to_owned(),
                }
            } else {
                KekError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if let Some(mode) = fsutil::too_open(&meta) {
            return Err(KekError::PermissionsTooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        if meta.len() > 1024 {
            return Err(KekError::BadEncoding {
                from: format!("file {}", path.display()),
            });
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        let from = format!("file {}", path.display());
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| KekError::BadEncoding { from: from.clone() })?;
        Kek::parse(text, from)
    }

    /// Reads the KEK from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Kek, KekError> {
        let value = Zeroizing::new(std::env::var(var).unwrap_or_default());
        if value.trim().is_empty() {
            return Err(KekError::EnvMissing {
                var: var.to_owned(),
            });
        }
        Kek::parse(&value, format!("environment variable {var}"))
    }

    /// [`Kek::from_env`], then removes `var` from the process environment
    /// (also when it does not parse), so child processes and later
    /// environment reads do not see the key. The kernel's copy of the
    /// starting environment (`/proc/<pid>/environ`, readable by the same
    /// user and root) keeps the original bytes: prefer `kek_file`.
    ///
    /// Call it at start, before other threads read the environment.
    pub fn take_from_env(var: &str) -> Result<Kek, KekError> {
        let kek = Kek::from_env(var);
        std::env::remove_var(var);
        kek
    }

    /// Parses 64 hex digits or base64 text; `from` names the source in errors.
    pub fn parse(text: &str, from: String) -> Result<Kek, KekError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KekError::BadEncoding { from });
        }
        let mut key = Zeroizing::new([0u8; KEK_LEN]);
        // Hex first; a 43-character text is base64 (32 bytes unpadded) even
        // when every character happens to be a hex digit.
        if text.len() != 43 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            if text.len() != 2 * KEK_LEN {
                return Err(if text.len() % 2 == 0 {
                    KekError::WrongLength {
                        from,
                        got: text.len() / 2,
                    }
                } else {
                    KekError::BadEncoding { from }
                });
            }
            hex::decode_to_slice(text, key.as_mut())
                .map_err(|_| KekError::BadEncoding { from: from.clone() })?;
            return Ok(Kek(key));
        }
        let mut buf = Zeroizing::new([0u8; 3 * KEK_LEN]);
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            if let Ok(n) = engine.decode_slice(text, buf.as_mut()) {
                if n != KEK_LEN {
                    return Err(KekError::WrongLength { from, got: n });
                }
                key.copy_from_slice(&buf[..KEK_LEN]);
                return Ok(Kek(key));
            }
        }
        Err(KekError::BadEncoding { from })
    }

    /// A fresh random KEK.
    pub fn generate() -> Result<Kek, KekError> {
        let mut key = Zeroizing::new([0u8; KEK_LEN]);
        SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|_| KekError::Random)?;
        Ok(Kek(key))
    }

    /// Generates a KEK and writes it as hex to a new file `path` with mode
    /// 0600; refuses to overwrite an existing file.
    pub fn create_file(path: &Path) -> Result<Kek, KekError> {
        let kek = Kek::generate()?;
        let mut text = Zeroizing::new([0u8; 2 * KEK_LEN + 1]);
        hex::encode_to_slice(kek.0.as_ref(), &mut text[..2 * KEK_LEN])
            .map_err(|_| KekError::Random)?;
        text[2 * KEK_LEN] = b'\n';
        let mut file = fsutil::create_new_private(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KekError::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                KekError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let io = |source| KekError::Io {
            path: path.to_owned(),
            source,
        };
        file.write_all(text.as_ref()).map_err(io)?;
        file.sync_all().map_err(io)?;
        fsutil::sync_parent(path).map_err(io)?;
        Ok(kek)
    }

    pub(crate) fn bytes(&self) -> &[u8; KEK_LEN] {
        &self.0
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::testutil::{chmod, mode, TempDir};

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn want() -> [u8; 32] {
        let mut b = [0u8; 32];
        hex::decode_to_slice(HEX, &mut b).unwrap();
        b
    }

    #[test]
    fn parses_hex_and_every_base64_spelling() {
        let raw = want();
        let spellings = [
            HEX.to_owned(),
            HEX.to_uppercase(),
            format!("  {HEX}\n"),
            STANDARD.encode(raw),
            STANDARD_NO_PAD.encode(raw),
            URL_SAFE.encode(raw),
            URL_SAFE_NO_PAD.encode(raw),
        ];
        for s in spellings {
            assert_eq!(Kek::parse(&s, "t".into()).unwrap().bytes(), &raw, "{s}");
        }
    }

    #[test]
    fn wrong_lengths_and_encodings_are_named() {
        let e = Kek::parse(&HEX[..62], "t".into()).unwrap_err();
        assert!(matches!(e, KekError::WrongLength { got: 31, .. }), "{e}");
        let e = Kek::parse(&format!("{HEX}00"), "t".into()).unwrap_err();
        assert!(matches!(e, KekError::WrongLength { got: 33, .. }), "{e}");
        let e = Kek::parse(&STANDARD.encode([1u8; 16]), "t".into()).unwrap_err();
        assert!(matches!(e, KekError::WrongLength { got: 16, .. }), "{e}");
        for bad in ["not a key!", "", &HEX[..63], "zz"] {
            let e = Kek::parse(bad, "t".into()).unwrap_err();
            assert!(matches!(e, KekError::BadEncoding { .. }), "{bad}: {e}");
        }
        assert_eq!(
            Kek::parse("x", "environment variable K".into())
                .unwrap_err()
                .to_string(),
            "key-encryption key from environment variable K is not 64 hex digits or base64"
        );
    }

    #[test]
    fn env_var() {
        let var = "MASKGATE_TEST_KEK_ENV_VAR";
        std::env::set_var(var, HEX);
        assert_eq!(Kek::from_env(var).unwrap().bytes(), &want());
        std::env::set_var(var, "  ");
        assert!(matches!(
            Kek::from_env(var),
            Err(KekError::EnvMissing { .. })
        ));
        std::env::remove_var(var);
        let e = Kek::from_env(var).unwrap_err();
        assert_eq!(
            e.to_string(),
            "key-encryption key environment variable MASKGATE_TEST_KEK_ENV_VAR is not set"
        );
    }

    #[test]
    fn files_must_exist_and_be_private() {
        let dir = TempDir::new("kek");
        let path = dir.join("kek");
        assert!(matches!(
            Kek::from_file(&path),
            Err(KekError::FileMissing { .. })
        ));
        std::fs::write(&path, format!("{HEX}\n")).unwrap();
        chmod(&path, 0o644);
        let e = Kek::from_file(&path).unwrap_err();
        assert!(matches!(
            e,
            KekError::PermissionsTooOpen { mode: 0o644, .. }
        ));
        assert!(e
            .to_string()
            .contains(&format!("chmod 600 {}", path.display())));
        chmod(&path, 0o600);
        assert_eq!(Kek::from_file(&path).unwrap().bytes(), &want());
        chmod(&path, 0o400);
        assert_eq!(Kek::from_file(&path).unwrap().bytes(), &want());
    }

    #[test]
    fn create_file_is_private_and_never_overwrites() {
        let dir = TempDir::new("kek-create");
        let path = dir.join("kek");
        let kek = Kek::create_file(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(Kek::from_file(&path).unwrap().bytes(), kek.bytes());
        assert!(matches!(
            Kek::create_file(&path),
            Err(KekError::AlreadyExists { .. })
        ));
        assert_eq!(Kek::from_file(&path).unwrap().bytes(), kek.bytes());
        assert_ne!(Kek::generate().unwrap().bytes(), kek.bytes());
    }

    #[test]
    fn debug_hides_the_key() {
        let kek = Kek::from_bytes(&want());
        let dbg = format!("{kek:?}");
        assert_eq!(dbg, "Kek(..)");
    }
}
