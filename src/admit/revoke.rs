//! Revocation: principals, API keys and certificate serials refused at
//! once. Checked on every request (not once per connection), so a
//! revocation reaches connections already open as soon as the policy that
//! lists it is loaded.

use crate::config::{Policy, Principal};
use crate::identity::PeerCertificate;

/// What is revoked (401 for a credential, 403 for a principal; never says
/// which to the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Revoked {
    /// The client certificate is in `[[revocations.certs]]` (issuer and
    /// serial) or its serial in `[revocations] cert_serials`.
    #[error("certificate revoked")]
    Certificate,
    /// The API key's hash is in `[revocations] api_key_sha256`.
    #[error("API key revoked")]
    ApiKey,
    /// The principal has `revoked = true` or is in `[revocations] principals`.
    #[error("principal revoked")]
    Principal,
}

impl Revoked {
    /// A short code for logs and the record's `why`.
    pub fn code(self) -> &'static str {
        match self {
            Revoked::Certificate => "certificate_revoked",
            Revoked::ApiKey => "api_key_revoked",
            Revoked::Principal => "principal_revoked",
        }
    }
}

/// Checks the credentials a request carried and the principal they
/// identify against the policy's revocations: the certificate's serial,
/// the API key's hash, then the principal (its own `revoked` flag or the
/// `[revocations]` list).
pub fn check(
    policy: &Policy,
    principal: &Principal,
    api_key_sha256: Option<&[u8; 32]>,
    cert: Option<&PeerCertificate>,
) -> Result<(), Revoked> {
    let r = &policy.revocations;
    if cert.is_some_and(|c| r.cert(&c.issuer, &c.serial)) {
        return Err(Revoked::Certificate);
    }
    if api_key_sha256.is_some_and(|h| r.api_key(h)) {
        return Err(Revoked::ApiKey);
    }
    if principal.revoked || r.principal(&principal.name) {
        return Err(Revoked::Principal);
    }
    Ok(())
}
