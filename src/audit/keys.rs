//! The checkpoint signing key (Ed25519, ring) and its public half.
//!
//! Files: the private key is PKCS#8 in PEM (`-----BEGIN PRIVATE KEY-----`),
//! mode 0600; the public key is SubjectPublicKeyInfo in PEM
//! (`-----BEGIN PUBLIC KEY-----`), the form `openssl pkey -pubout` writes.
//! Both loaders also take DER, and the public loader takes the raw 32 bytes.
//! A key id is `ed25519:` and the first 16 bytes of the SHA-256 of the raw
//! public key, in hex.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair};

use crate::audit::record::sha256;

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Why a key could not be made, read or written.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The file is neither PEM of the expected label nor DER of the expected shape.
    #[error("{path}: not a {expected} key (PEM or DER)")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was expected.
        expected: &'static str,
    },
    /// ring refused the private key.
    #[error("the private key is not a usable Ed25519 PKCS#8 key: {0}")]
    Rejected(String),
    /// The private key file may be read by other users.
    #[error("{path} has mode {mode:o}; a signing key must not be readable by group or others: chmod 600 it")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Key generation would overwrite an existing file.
    #[error("{0} exists; refusing to overwrite a key file (move it away first)")]
    Exists(PathBuf),
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}

fn io_err(op: &'static str, path: &Path, e: std::io::Error) -> KeyError {
    KeyError::Io {
        op,
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

/// The Ed25519 key that signs checkpoints.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 private key (PEM or DER). Refuses a file that group or
    /// others may read.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        check_private_mode(path)?;
        let mut bytes = fs::read(path).map_err(|e| io_err("read", path, e))?;
        let result = match pem_decode(&bytes, "PRIVATE KEY") {
            Some(mut der) => {
                let key = SigningKey::from_pkcs8(&der);
                wipe(&mut der);
                key
            }
            None if bytes.first() == Some(&0x30) => SigningKey::from_pkcs8(&bytes),
            None => Err(KeyError::Format {
                path: path.to_path_buf(),
                expected: "PKCS#8 private",
            }),
        };
        wipe(&mut bytes);
        result
    }

    /// A key from PKCS#8 DER (v2 as ring writes it, or v1 as OpenSSL does).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(der))
            .map_err(|e| KeyError::Rejected(e.to_string()))?;
        let public = PublicKey::from_raw(pair.public_key().as_ref())?;
        Ok(SigningKey { pair, public })
    }

    /// A new random key, in memory only (tests, benchmarks).
    pub fn generate() -> Result<SigningKey, KeyError> {
        let mut der = generate_pkcs8()?;
        let key = SigningKey::from_pkcs8(&der);
        wipe(&mut der);
        key
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id checkpoints name.
    pub fn key_id(&self) -> &str {
        &self.public.key_id
    }

    /// Signs `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// An Ed25519 public key: all `audit verify` needs.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: [u8; 32],
    key_id: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.key_id).finish()
    }
}

impl PublicKey {
    /// A key from PEM (`PUBLIC KEY`), SubjectPublicKeyInfo DER, or the raw
    /// 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let format_err = || KeyError::Format {
            path: PathBuf::from("<public key>"),
            expected: "Ed25519 public",
        };
        if let Some(der) = pem_decode(bytes, "PUBLIC KEY") {
            return PublicKey::from_der(&der).ok_or_else(format_err);
        }
        if bytes.len() == 32 {
            return PublicKey::from_raw(bytes);
        }
        PublicKey::from_der(bytes).ok_or_else(format_err)
    }

    /// Reads a public key file (see [`PublicKey::from_bytes`]).
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let bytes = fs::read(path).map_err(|e| io_err("read", path, e))?;
        PublicKey::from_bytes(&bytes).map_err(|e| match e {
            KeyError::Format { expected, .. } => KeyError::Format {
                path: path.to_path_buf(),
                expected,
            },
            other => other,
        })
    }

    fn from_der(der: &[u8]) -> Option<PublicKey> {
        let raw = der.strip_prefix(&SPKI_PREFIX[..])?;
        PublicKey::from_raw(raw).ok()
    }

    fn from_raw(raw: &[u8]) -> Result<PublicKey, KeyError> {
        let raw: [u8; 32] = raw.try_into().map_err(|_| KeyError::Format {
            path: PathBuf::from("<public key>"),
            expected: "Ed25519 public",
        })?;
        let key_id = format!("ed25519:{}", hex::encode(&sha256(&raw)[..16]));
        Ok(PublicKey { raw, key_id })
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.raw
    }

    /// `ed25519:` and 32 hex digits.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.raw);
        pem_encode(&der, "PUBLIC KEY")
    }

    /// True when `sig` is this key's signature of `message`.
    pub(crate) fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.raw)
            .verify(message, sig)
            .is_ok()
    }
}

/// Writes a new key pair: the private key to `private_path` (mode 0600) and
/// the public key to `public_path`. Refuses to overwrite either file.
pub fn generate_signing_key(
    private_path: &Path,
    public_path: &Path,
) -> Result<PublicKey, KeyError> {
    for path in [private_path, public_path] {
        if path.exists() {
            return Err(KeyError::Exists(path.to_path_buf()));
        }
    }
    let mut der = generate_pkcs8()?;
    let key = SigningKey::from_pkcs8(&der)?;
    let mut pem = pem_encode(&der, "PRIVATE KEY").into_bytes();
    wipe(&mut der);
    let written = write_new(private_path, &pem, 0o600);
    wipe(&mut pem);
    written?;
    write_new(public_path, key.public.to_pem().as_bytes(), 0o644)?;
    Ok(key.public.clone())
}

/// The DER of a PKCS#8 v2 Ed25519 key as ring writes it, from the version
/// to the seed (after the outer SEQUENCE tag and length).
const PKCS8_V2_PREFIX: [u8; 14] = [
    0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The DER prefix of a PKCS#8 v1 Ed25519 key (RFC 8410), up to the seed.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A new key as PKCS#8 DER: v1 (RFC 8410, which OpenSSL also reads) when
/// ring's v2 document has the expected shape, else ring's v2 as it is.
fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
    let v2 = doc.as_ref();
    let seed = match v2 {
        [0x30, len, rest @ ..] if usize::from(*len) == rest.len() => rest
            .strip_prefix(&PKCS8_V2_PREFIX[..])
            .and_then(|rest| rest.get(..32)),
        _ => None,
    };
    if let Some(seed) = seed {
        let mut v1 = PKCS8_V1_PREFIX.to_vec();
        v1.extend_from_slice(seed);
        let same = match (
            Ed25519KeyPair::from_pkcs8(v2),
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&v1),
        ) {
            (Ok(a), Ok(b)) => a.public_key().as_ref() == b.public_key().as_ref(),
            _ => false,
        };
        if same {
            return Ok(v1);
        }
        wipe(&mut v1);
    }
    Ok(v2.to_vec())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| io_err("create", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("write", path, e))
}

#[cfg(unix)]
fn check_private_mode(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .map_err(|e| io_err("read", path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

/// Overwrites key bytes before they are freed.
fn wipe(bytes: &mut [u8]) {
    bytes.fill(0);
    std::hint::black_box(bytes);
}

fn pem_encode(der: &[u8], label: &str) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first PEM block labelled `label`, if any.
fn pem_decode(bytes: &[u8], label: &str) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::testutil::TempDir;

    #[test]
    fn generated_keys_load_and_sign() {
        let dir = TempDir::new("keys");
        let private = dir.path().join("audit.key");
        let public = dir.path().join("audit.pub");
        let pk = generate_signing_key(&private, &public).expect("generate");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&private).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sk = SigningKey::load(&private).expect("load private");
        let loaded = PublicKey::load(&public).expect("load public");
        assert_eq!(&loaded, sk.public_key());
        assert_eq!(loaded, pk);
        assert!(loaded.key_id().starts_with("ed25519:"));
        assert_eq!(loaded.key_id().len(), "ed25519:".len() + 32);
        let sig = sk.sign(b"hello");
        assert!(loaded.verifies(b"hello", &sig));
        assert!(!loaded.verifies(b"hellO", &sig));
        // Raw and DER forms.
        assert_eq!(
            PublicKey::from_bytes(loaded.as_bytes()).expect("raw"),
            loaded
        );
        assert!(matches!(
            generate_signing_key(&private, &dir.path().join("other.pub")),
            Err(KeyError::Exists(_))
        ));
        // Written as PKCS#8 v1 (RFC 8410), which OpenSSL reads too.
        let der = pem_decode(&fs::read(&private).expect("read"), "PRIVATE KEY").expect("pem");
        assert_eq!(der.len(), 48);
        assert!(der.starts_with(&PKCS8_V1_PREFIX));
    }

    #[test]
    fn openssl_keys_load() {
        // `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`
        // (a test-only key).
        let private = "-----BEGIN PRIVATE KEY-----\n\
                       MC4CAQAwBQYDK2VwBCIEINq/dfl4JPWvQJZIjkijbjvfjBWkbNztadTNdjeCSx2+\n\
                       -----END PRIVATE KEY-----\n";
        let public = "-----BEGIN PUBLIC KEY-----\n\
                      MCowBQYDK2VwAyEAw4BBWpjJvf3fcR5Y6uygqPuN77v8j2l5dH8Z4qISRMQ=\n\
                      -----END PUBLIC KEY-----\n";
        let der = pem_decode(private.as_bytes(), "PRIVATE KEY").expect("pem");
        let key = SigningKey::from_pkcs8(&der).expect("v1 key");
        let public = PublicKey::from_bytes(public.as_bytes()).expect("public");
        assert_eq!(key.public_key(), &public);
        assert_eq!(
            key.public_key().to_pem().as_bytes(),
            public.to_pem().as_bytes()
        );
    }

    #[cfg(unix)]
    #[test]
    fn readable_private_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("keys-mode");
        let private = dir.path().join("k");
        generate_signing_key(&private, &dir.path().join("p")).expect("generate");
        fs::set_permissions(&private, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            SigningKey::load(&private),
            Err(KeyError::Permissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(PublicKey::from_bytes(b"not a key").is_err());
        assert!(SigningKey::from_pkcs8(&[0x30, 0x00]).is_err());
    }
}
