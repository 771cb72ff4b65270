//! Who is calling: client certificates and API keys mapped to principals.

pub mod delegation;

use std::sync::Arc;

use http::HeaderMap;
use rustls_pki_types::CertificateDer;

use crate::config::{Policy, Principal};

/// Names a verified client certificate presents, its issuer and its serial.
/// Extracted once per connection, after rustls has verified the chain
/// against the configured client CA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The names that identify it: its DNS, URI and email SANs, in
    /// certificate order; only a certificate without any of those is named
    /// by its subject common name(s). So a CN cannot claim a principal the
    /// certificate's SANs do not name.
    pub names: Vec<String>,
    /// Serial number, lower-case hex.
    pub serial: String,
    /// The issuer's distinguished name, normalized by [`normalize_dn`].
    pub issuer: String,
}

/// A distinguished name in one spelling, for comparing a certificate's
/// issuer with the one a policy names: `TYPE=value` attributes in
/// certificate order, separated by `, `, types upper-case, spaces around
/// separators removed (`cn = Client CA,O=City` → `CN=Client CA, O=City`).
/// Values that hold `,` or `=` are not supported (refused by the policy).
pub fn normalize_dn(dn: &str) -> String {
    dn.split([',', '+'])
        .map(|part| match part.split_once('=') {
            Some((t, v)) => format!("{}={}", t.trim().to_ascii_uppercase(), v.trim()),
            None => part.trim().to_owned(),
        })
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

impl PeerCertificate {
    /// Reads the end-entity certificate. `None` when it cannot be parsed
    /// (rustls accepted it, so this should not happen; the caller then has no
    /// certificate identity).
    pub fn from_der(cert: &CertificateDer<'_>) -> Option<PeerCertificate> {
        use x509_parser::extensions::GeneralName;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for gn in &san.value.general_names {
                match gn {
                    GeneralName::DNSName(n) | GeneralName::URI(n) | GeneralName::RFC822Name(n) => {
                        names.push((*n).to_owned())
                    }
                    _ => {}
                }
            }
        }
        if names.is_empty() {
            for cn in parsed.subject().iter_common_name() {
                if let Ok(s) = cn.as_str() {
                    names.push(s.to_owned());
                }
            }
        }
        Some(PeerCertificate {
            names,
            serial: parsed.raw_serial_as_string().replace(':', ""),
            issuer: normalize_dn(&parsed.issuer().to_string()),
        })
    }
}

/// Why a caller could not be identified. Kept apart from the wire error so
/// logs can say which way it failed without telling the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifyError {
    /// Neither a client certificate nor an API key.
    #[error("no credentials")]
    NoCredentials,
    /// The Authorization header is not `Bearer <key>`.
    #[error("malformed authorization header")]
    MalformedAuthorization,
    /// The API key matches no principal.
    #[error("unknown API key")]
    UnknownKey,
    /// The certificate's names match no principal.
    #[error("unknown certificate")]
    UnknownCertificate,
    /// The certificate names a principal pinned to another issuing CA.
    #[error("certificate from another issuer than the principal's")]
    WrongIssuer,
    /// Certificate and API key name different principals.
    #[error("certificate and API key disagree")]
    ConflictingCredentials,
    /// The principal is revoked.
    #[error("principal revoked")]
    Revoked,
}

/// How the caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A verified client certificate.
    Certificate,
    /// An API key.
    ApiKey,
}

/// An identified caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The principal, as the policy defines it.
    pub principal: Arc<Principal>,
    /// How it proved it.
    pub credential: Credential,
    /// The person an application is calling for: set once the principal is
    /// known, by [`delegation::person`] (identification leaves it `None`).
    pub on_behalf_of: Option<String>,
    /// SHA-256 of the API key presented, if any (revocation lists name keys by it).
    pub api_key_sha256: Option<[u8; 32]>,
}

/// SHA-256 of an API key, as the policy stores it.
pub fn api_key_hash(key: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The header an application uses to name the person it is calling for.
pub const ON_BEHALF_OF: &str = "x-on-behalf-of";

/// The SHA-256 of the API key a request presents (`Authorization: Bearer
/// <key>`); `None` without one or when the header is malformed.
pub fn presented_key_hash(headers: &HeaderMap) -> Option<[u8; 32]> {
    bearer_key(headers)
        .ok()
        .flatten()
        .map(|k| api_key_hash(k.as_bytes()))
}

fn bearer_key(headers: &HeaderMap) -> Result<Option<&str>, IdentifyError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| IdentifyError::MalformedAuthorization)?;
    let (scheme, key) = value
        .split_once(' ')
        .ok_or(IdentifyError::MalformedAuthorization)?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
        return Err(IdentifyError::MalformedAuthorization);
    }
    Ok(Some(key))
}

/// Identifies the caller from its certificate (if any) and headers.
pub fn identify(
    policy: &Policy,
    cert: Option<&PeerCertificate>,
    headers: &HeaderMap,
) -> Result<Caller, IdentifyError> {
    identify_hashed(policy, cert, headers, presented_key_hash(headers))
}

/// [`identify`] with the API key's hash computed already
/// ([`presented_key_hash`] of the same headers).
pub fn identify_hashed(
    policy: &Policy,
    cert: Option<&PeerCertificate>,
    headers: &HeaderMap,
    key_hash: Option<[u8; 32]>,
) -> Result<Caller, IdentifyError> {
    let by_cert = match cert {
        Some(cert) => {
            let principal = cert
                .names
                .iter()
                .find_map(|n| policy.principal_by_cert_name(n))
                .ok_or(IdentifyError::UnknownCertificate)?;
            if principal
                .cert_issuer
                .as_deref()
                .is_some_and(|pinned| pinned != cert.issuer)
            {
                return Err(IdentifyError::WrongIssuer);
            }
            Some(principal)
        }
        None => None,
    };
    let key_hash =
        bearer_key(headers)?.map(|key| key_hash.unwrap_or_else(|| api_key_hash(key.as_bytes())));
    let by_key = match &key_hash {
        Some(hash) => Some(
            policy
                .principal_by_key_hash(hash)
                .ok_or(IdentifyError::UnknownKey)?,
        ),
        None => None,
    };
    let (principal, credential) = match (by_cert, by_key) {
        (Some(c), Some(k)) if c.name != k.name => {
            return Err(IdentifyError::ConflictingCredentials)
        }
        (Some(c), _) => (c, Credential::Certificate),
        (None, Some(k)) => (k, Credential::ApiKey),
        (None, None) => return Err(IdentifyError::NoCredentials),
    };
    if principal.revoked {
        return Err(IdentifyError::Revoked);
    }
    Ok(Caller {
        principal: Arc::clone(principal),
        credential,
        on_behalf_of: None,
        api_key_sha256: key_hash,
    })
}
