//! Demo certificates: a private CA, a server certificate for the gateway and
//! one client certificate per role, generated with rcgen (ECDSA P-256).
//!
//! Files written into the target directory:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the demo CA (`CN=maskgate demo CA`) |
//! | `server.pem`, `server.key` | SAN DNS `localhost`, IP `127.0.0.1` and `::1`; EKU serverAuth |
//! | `<name>.pem`, `<name>.key` | per client: CN and DNS SAN = name; EKU clientAuth |
//!
//! Leaf certificates are made the way a city's own would be, so a TLS
//! scanner pointed at the demo finds nothing a production gateway would not
//! show: valid for [`LEAF_VALIDITY_DAYS`] days (scanners flag more than 825,
//! and public CAs issue 90) with a CRL distribution point
//! ([`CRL_URL`], like `scripts/testssl`'s certificate; the demo serves no
//! list there). Stored leaves without either are reissued.
//!
//! Keys are PKCS#8 PEM with mode 0600. [`generate`] is idempotent: files that
//! exist, parse, match their key, chain to the CA and are not about to expire
//! are kept; only missing or unusable ones are regenerated (a new CA means
//! every leaf is reissued).

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CrlDistributionPoint, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;

/// Common name of the demo CA.
pub const CA_COMMON_NAME: &str = "maskgate demo CA";

/// Organization in every demo certificate's subject.
pub const ORGANIZATION: &str = "maskgate demo";

const CA_VALIDITY_DAYS: i64 = 3650;
/// Validity of every leaf certificate, `notBefore` to `notAfter`.
pub const LEAF_VALIDITY_DAYS: i64 = 90;
/// The CRL distribution point written into every leaf certificate.
pub const CRL_URL: &str = "http://localhost/maskgate-demo-ca.crl";
/// Certificates expiring sooner than this are reissued.
const RENEW_BEFORE_DAYS: i64 = 7;

/// Why the demo certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// rcgen refused to build a key or certificate.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A client name that cannot be a file name and DNS name.
    #[error(
        "invalid client name {0:?}: use 1-63 lowercase letters, digits, '-' and '.', \
         starting with a letter or digit; \"ca\" and \"server\" are reserved"
    )]
    InvalidName(String),
}

/// Paths of one client's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertPaths {
    /// The client name (certificate CN and DNS SAN).
    pub name: String,
    /// `<dir>/<name>.pem`
    pub cert: PathBuf,
    /// `<dir>/<name>.key`
    pub key: PathBuf,
}

/// Where [`generate`] put the demo certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoCerts {
    /// The directory holding every file.
    pub dir: PathBuf,
    /// `<dir>/ca.pem`
    pub ca_cert: PathBuf,
    /// `<dir>/ca.key`
    pub ca_key: PathBuf,
    /// `<dir>/server.pem`
    pub server_cert: PathBuf,
    /// `<dir>/server.key`
    pub server_key: PathBuf,
    /// One entry per requested client name, in the order given (duplicates
    /// dropped).
    pub clients: Vec<ClientCertPaths>,
}

impl DemoCerts {
    /// The paths for client `name`, if it was requested.
    pub fn client(&self, name: &str) -> Option<&ClientCertPaths> {
        self.clients.iter().find(|c| c.name == name)
    }
}

/// A CA and one client certificate made in memory (PEM strings), e.g. a
/// rogue CA for tests.
#[derive(Debug, Clone)]
pub struct InMemoryPki {
    /// The CA certificate.
    pub ca_cert_pem: String,
    /// The client certificate, signed by that CA.
    pub client_cert_pem: String,
    /// The client's PKCS#8 private key.
    pub client_key_pem: String,
}

/// Creates (or keeps) the demo CA, server certificate and one client
/// certificate per name in `dir`, and returns their paths.
pub fn generate(dir: &Path, client_names: &[&str]) -> Result<DemoCerts, CertError> {
    let mut names: Vec<&str> = Vec::with_capacity(client_names.len());
    for &name in client_names {
        if !valid_client_name(name) {
            return Err(CertError::InvalidName(name.to_string()));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    create_dir(dir)?;

    let certs = DemoCerts {
        dir: dir.to_path_buf(),
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        clients: names
            .iter()
            .map(|n| ClientCertPaths {
                name: (*n).to_string(),
                cert: dir.join(format!("{n}.pem")),
                key: dir.join(format!("{n}.key")),
            })
            .collect(),
    };

    let now = OffsetDateTime::now_utc();
    let (ca, ca_key, ca_is_new) = match load_ca(&certs.ca_cert, &certs.ca_key, now)? {
        Some((ca, key)) => (ca, key, false),
        None => {
            let key = KeyPair::generate()?;
            let ca = ca_params(now)?.self_signed(&key)?;
            write_file(&certs.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&certs.ca_cert, ca.pem().as_bytes(), 0o644)?;
            (ca, key, true)
        }
    };
    let issuer = Issuer {
        cert: &ca,
        key: &ca_key,
        subject_der: ca_subject_der(&ca)?,
    };

    let server = LeafSpec {
        common_name: "localhost".to_string(),
        sans: vec![
            SanType::DnsName("localhost".try_into()?),
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ],
        eku: ExtendedKeyUsagePurpose::ServerAuth,
    };
    ensure_leaf(
        &certs.server_cert,
        &certs.server_key,
        &server,
        &issuer,
        ca_is_new,
        now,
    )?;
    for client in &certs.clients {
        let spec = LeafSpec {
            common_name: client.name.clone(),
            sans: vec![SanType::DnsName(client.name.clone().try_into()?)],
            eku: ExtendedKeyUsagePurpose::ClientAuth,
        };
        ensure_leaf(&client.cert, &client.key, &spec, &issuer, ca_is_new, now)?;
    }
    Ok(certs)
}

/// A fresh CA (with the same subject as the demo CA, to look convincing) and
/// a client certificate for `name` signed by it, all in memory.
pub fn generate_ca_and_leaf_in_memory(name: &str) -> Result<InMemoryPki, CertError> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let ca = ca_params(now)?.self_signed(&ca_key)?;
    let spec = LeafSpec {
        common_name: name.to_string(),
        sans: vec![SanType::DnsName(name.to_string().try_into()?)],
        eku: ExtendedKeyUsagePurpose::ClientAuth,
    };
    let key = KeyPair::generate()?;
    let cert = leaf_params(&spec, now)?.signed_by(&key, &ca, &ca_key)?;
    Ok(InMemoryPki {
        ca_cert_pem: ca.pem(),
        client_cert_pem: cert.pem(),
        client_key_pem: key.serialize_pem(),
    })
}

/// A client certificate for `name` signed by a fresh CA unrelated to the
/// demo CA: `(certificate PEM, private key PEM)`. The gateway must refuse it.
pub fn rogue_client(name: &str) -> Result<(String, String), CertError> {
    let pki = generate_ca_and_leaf_in_memory(name)?;
    Ok((pki.client_cert_pem, pki.client_key_pem))
}

fn valid_client_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1] != b'.'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && !name.contains("..")
        && name != "ca"
        && name != "server"
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_err(dir))
}

/// Writes `contents` to a temp file beside `path` with `mode`, then renames
/// it into place.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    use std::io::Write;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Makes sure an existing key file is not readable by others.
fn restrict_key(path: &Path) -> Result<(), CertError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(io_err(path))?;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    dn
}

fn ca_params(now: OffsetDateTime) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    Ok(params)
}

struct LeafSpec {
    common_name: String,
    sans: Vec<SanType>,
    eku: ExtendedKeyUsagePurpose,
}

fn leaf_params(spec: &LeafSpec, now: OffsetDateTime) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(&spec.common_name);
    params.subject_alt_names = spec.sans.clone();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![spec.eku.clone()];
    params.use_authority_key_identifier_extension = true;
    params.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec![CRL_URL.to_owned()],
    }];
    params.not_before = now - Duration::days(1);
    params.not_after = params.not_before + Duration::days(LEAF_VALIDITY_DAYS);
    Ok(params)
}

struct Issuer<'a> {
    cert: &'a Certificate,
    key: &'a KeyPair,
    subject_der: Vec<u8>,
}

fn ca_subject_der(ca: &Certificate) -> Result<Vec<u8>, CertError> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) =
        X509Certificate::from_der(ca.der()).map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
    Ok(parsed.subject().as_raw().to_vec())
}

/// Reads a PEM file; `None` when it is missing or unreadable.
fn read_optional(path: &Path) -> Option<Vec<u8>> {
    fs::read(path).ok()
}

/// Parses one PEM certificate into DER.
fn cert_der_from_pem(pem: &[u8]) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    (pem.label == "CERTIFICATE").then_some(pem.contents)
}

fn valid_long_enough(cert: &X509Certificate<'_>, now: OffsetDateTime) -> bool {
    let validity = cert.validity();
    let now_ts = now.unix_timestamp();
    validity.not_before.timestamp() <= now_ts
        && validity.not_after.timestamp() > now_ts + RENEW_BEFORE_DAYS * 86_400
}

/// Loads the CA if `ca.pem` and `ca.key` exist, belong together, carry the
/// demo CA's subject and are valid long enough. Returns a `Certificate`
/// usable as issuer (rebuilt from the same subject and key, so leaves it
/// signs chain to the stored `ca.pem`).
fn load_ca(
    cert_path: &Path,
    key_path: &Path,
    now: OffsetDateTime,
) -> Result<Option<(Certificate, KeyPair)>, CertError> {
    use x509_parser::prelude::FromDer;
    let (Some(cert_pem), Some(key_pem)) = (read_optional(cert_path), read_optional(key_path))
    else {
        return Ok(None);
    };
    let Some(der) = cert_der_from_pem(&cert_pem) else {
        return Ok(None);
    };
    let Ok(key) = std::str::from_utf8(&key_pem)
        .map_err(|_| ())
        .and_then(|s| KeyPair::from_pem(s).map_err(|_| ()))
    else {
        return Ok(None);
    };
    let Ok((_, stored)) = X509Certificate::from_der(&der) else {
        return Ok(None);
    };
    let rebuilt = ca_params(now)?.self_signed(&key)?;
    let usable = stored.is_ca()
        && stored.public_key().raw == key.public_key_der().as_slice()
        && stored.subject().as_raw() == ca_subject_der(&rebuilt)?.as_slice()
        && subject_key_id(&stored).as_deref() == Some(rebuilt.key_identifier().as_slice())
        && valid_long_enough(&stored, now);
    if !usable {
        return Ok(None);
    }
    restrict_key(key_path)?;
    Ok(Some((rebuilt, key)))
}

fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

/// A leaf made under the current rules: no longer valid than
/// [`LEAF_VALIDITY_DAYS`] and with a CRL distribution point.
fn meets_leaf_rules(cert: &X509Certificate<'_>) -> bool {
    let validity = cert.validity();
    let span = validity.not_after.timestamp() - validity.not_before.timestamp();
    let has_crl_point = cert.extensions().iter().any(|e| {
        matches!(
            e.parsed_extension(),
            ParsedExtension::CRLDistributionPoints(points) if !points.points.is_empty()
        )
    });
    span <= LEAF_VALIDITY_DAYS * 86_400 && has_crl_point
}

fn authority_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// True if the stored leaf at `cert_path`/`key_path` can be kept.
fn leaf_usable(
    cert_path: &Path,
    key_path: &Path,
    spec: &LeafSpec,
    issuer: &Issuer<'_>,
    now: OffsetDateTime,
) -> bool {
    use x509_parser::prelude::FromDer;
    let (Some(cert_pem), Some(key_pem)) = (read_optional(cert_path), read_optional(key_path))
    else {
        return false;
    };
    let Some(der) = cert_der_from_pem(&cert_pem) else {
        return false;
    };
    let Some(key) = std::str::from_utf8(&key_pem)
        .ok()
        .and_then(|s| KeyPair::from_pem(s).ok())
    else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return false;
    };
    let cn_matches = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        == Some(spec.common_name.as_str());
    cn_matches
        && !cert.is_ca()
        && cert.public_key().raw == key.public_key_der().as_slice()
        && cert.issuer().as_raw() == issuer.subject_der.as_slice()
        && authority_key_id(&cert).as_deref() == Some(issuer.cert.key_identifier().as_slice())
        && valid_long_enough(&cert, now)
        && meets_leaf_rules(&cert)
}

fn ensure_leaf(
    cert_path: &Path,
    key_path: &Path,
    spec: &LeafSpec,
    issuer: &Issuer<'_>,
    force: bool,
    now: OffsetDateTime,
) -> Result<(), CertError> {
    if !force && leaf_usable(cert_path, key_path, spec, issuer, now) {
        return restrict_key(key_path);
    }
    let key = KeyPair::generate()?;
    let cert = leaf_params(spec, now)?.signed_by(&key, issuer.cert, issuer.key)?;
    // Key first: a crash in between leaves no certificate without its key.
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::temp_dir;
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::server::WebPkiClientVerifier;
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn certs_from_pem(pem: &[u8]) -> Vec<CertificateDer<'static>> {
        rustls_pemfile::certs(&mut &pem[..])
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn key_from_pem(pem: &[u8]) -> PrivateKeyDer<'static> {
        rustls_pemfile::private_key(&mut &pem[..]).unwrap().unwrap()
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca_pem: &[u8]) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for c in certs_from_pem(ca_pem) {
            roots.add(c).unwrap();
        }
        Arc::new(roots)
    }

    fn server_config(certs: &DemoCerts) -> Arc<ServerConfig> {
        let ca = fs::read(&certs.ca_cert).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&ca), provider())
            .build()
            .unwrap();
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certs_from_pem(&fs::read(&certs.server_cert).unwrap()),
                key_from_pem(&fs::read(&certs.server_key).unwrap()),
            )
            .unwrap();
        Arc::new(config)
    }

    fn client_config(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(ca_pem));
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(certs_from_pem(cert), key_from_pem(key))
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }

    /// One TLS exchange on loopback. Returns what the server saw (the
    /// client's CN, or the handshake error) and what the client read.
    async fn exchange(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> (Result<String, String>, Result<String, String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = TlsAcceptor::from(server)
                .accept(tcp)
                .await
                .map_err(|e| e.to_string())?;
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .ok_or("no client certificate")?[0]
                .clone();
            use x509_parser::prelude::FromDer;
            let (_, parsed) = X509Certificate::from_der(&peer).map_err(|e| e.to_string())?;
            let cn = parsed
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or("")
                .to_string();
            tls.write_all(format!("hello {cn}").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            tls.shutdown().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(cn)
        });
        let client_result = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut tls = TlsConnector::from(client)
                .connect(server_name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let mut got = String::new();
            tls.read_to_string(&mut got)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(got)
        }
        .await;
        let server_result = tokio::time::timeout(std::time::Duration::from_secs(10), server_task)
            .await
            .unwrap()
            .unwrap();
        (server_result, client_result)
    }

    #[tokio::test]
    async fn mtls_handshake_accepts_demo_clients_and_refuses_rogues() {
        let dir = temp_dir("certs-tls");
        let certs = generate(&dir.join("certs"), &["billing", "customer-service"]).unwrap();
        let ca = fs::read(&certs.ca_cert).unwrap();
        let server = server_config(&certs);

        for (name, server_name) in [
            ("billing", ServerName::try_from("localhost").unwrap()),
            (
                "customer-service",
                ServerName::try_from("127.0.0.1").unwrap(),
            ),
            ("billing", ServerName::try_from("::1").unwrap()),
        ] {
            let paths = certs.client(name).unwrap();
            let cert = fs::read(&paths.cert).unwrap();
            let key = fs::read(&paths.key).unwrap();
            let client = client_config(&ca, Some((&cert, &key)));
            let (server_saw, client_got) = exchange(Arc::clone(&server), client, server_name).await;
            assert_eq!(server_saw.unwrap(), name);
            assert_eq!(client_got.unwrap(), format!("hello {name}"));
        }

        // A client signed by an unrelated CA (same subject as ours) is refused.
        let (rogue_cert, rogue_key) = rogue_client("billing").unwrap();
        let client = client_config(&ca, Some((rogue_cert.as_bytes(), rogue_key.as_bytes())));
        let (server_saw, client_got) = exchange(
            Arc::clone(&server),
            client,
            ServerName::try_from("localhost").unwrap(),
        )
        .await;
        let err = server_saw.unwrap_err();
        assert!(err.to_lowercase().contains("certificate"), "{err}");
        assert!(client_got.is_err(), "rogue client read {client_got:?}");

        // No client certificate at all: refused too.
        let client = client_config(&ca, None);
        let (server_saw, client_got) = exchange(
            Arc::clone(&server),
            client,
            ServerName::try_from("localhost").unwrap(),
        )
        .await;
        assert!(server_saw.is_err());
        assert!(client_got.is_err());

        // A client that trusts only the rogue CA refuses our server.
        let rogue = generate_ca_and_leaf_in_memory("billing").unwrap();
        let paths = certs.client("billing").unwrap();
        let client = client_config(
            rogue.ca_cert_pem.as_bytes(),
            Some((
                &fs::read(&paths.cert).unwrap(),
                &fs::read(&paths.key).unwrap(),
            )),
        );
        let (server_saw, client_got) =
            exchange(server, client, ServerName::try_from("localhost").unwrap()).await;
        assert!(server_saw.is_err());
        assert!(client_got
            .unwrap_err()
            .to_lowercase()
            .contains("certificate"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leaves_are_short_lived_with_a_crl_point_and_old_ones_are_reissued() {
        use x509_parser::prelude::FromDer;
        let dir = temp_dir("certs-rules").join("certs");
        let certs = generate(&dir, &["billing"]).unwrap();
        let parsed = |path: &Path| {
            let der = cert_der_from_pem(&fs::read(path).unwrap()).unwrap();
            let (_, cert) = X509Certificate::from_der(&der).unwrap();
            meets_leaf_rules(&cert)
        };
        assert!(parsed(&certs.server_cert));
        assert!(parsed(&certs.clients[0].cert));
        // A leaf made by the old rules (826 days, no CRL point) is replaced.
        let now = OffsetDateTime::now_utc();
        let (ca, ca_key) = load_ca(&certs.ca_cert, &certs.ca_key, now)
            .unwrap()
            .unwrap();
        let spec = LeafSpec {
            common_name: "localhost".to_owned(),
            sans: vec![SanType::DnsName("localhost".try_into().unwrap())],
            eku: ExtendedKeyUsagePurpose::ServerAuth,
        };
        let mut old = leaf_params(&spec, now).unwrap();
        old.crl_distribution_points.clear();
        old.not_after = now + Duration::days(825);
        let key = KeyPair::generate().unwrap();
        let cert = old.signed_by(&key, &ca, &ca_key).unwrap();
        write_file(&certs.server_key, key.serialize_pem().as_bytes(), 0o600).unwrap();
        write_file(&certs.server_cert, cert.pem().as_bytes(), 0o644).unwrap();
        assert!(!parsed(&certs.server_cert));
        generate(&dir, &["billing"]).unwrap();
        assert!(parsed(&certs.server_cert));
        assert_issued_by_ca(&certs.server_cert, &certs.ca_cert);
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn files_modes_and_idempotence() {
        let dir = temp_dir("certs-files").join("certs");
        let names = ["billing", "collections", "billing"];
        let certs = generate(&dir, &names).unwrap();
        assert_eq!(certs.clients.len(), 2);
        assert_eq!(certs.ca_cert, dir.join("ca.pem"));
        assert_eq!(
            certs.client("collections").unwrap().key,
            dir.join("collections.key")
        );
        let all_files = [
            &certs.ca_cert,
            &certs.ca_key,
            &certs.server_cert,
            &certs.server_key,
            &certs.clients[0].cert,
            &certs.clients[0].key,
            &certs.clients[1].cert,
            &certs.clients[1].key,
        ];
        let before: Vec<Vec<u8>> = all_files.iter().map(|p| fs::read(p).unwrap()).collect();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [
                &certs.ca_key,
                &certs.server_key,
                &certs.clients[0].key,
                &certs.clients[1].key,
            ] {
                assert_eq!(
                    fs::metadata(key).unwrap().permissions().mode() & 0o777,
                    0o600,
                    "{key:?}"
                );
                assert!(fs::read_to_string(key)
                    .unwrap()
                    .starts_with("-----BEGIN PRIVATE KEY-----"));
            }
        }

        // Second run: nothing changes.
        let again = generate(&dir, &names).unwrap();
        assert_eq!(again, certs);
        let after: Vec<Vec<u8>> = all_files.iter().map(|p| fs::read(p).unwrap()).collect();
        assert_eq!(before, after);

        // A lost client file is reissued by the same CA; the others stay.
        fs::remove_file(&certs.clients[1].key).unwrap();
        generate(&dir, &names).unwrap();
        assert_eq!(fs::read(&certs.ca_cert).unwrap(), before[0]);
        assert_eq!(fs::read(&certs.server_cert).unwrap(), before[2]);
        assert_eq!(fs::read(&certs.clients[0].cert).unwrap(), before[4]);
        assert_ne!(fs::read(&certs.clients[1].cert).unwrap(), before[6]);
        assert_issued_by_ca(&certs.clients[1].cert, &certs.ca_cert);

        // A garbled server certificate is reissued.
        fs::write(&certs.server_cert, "not a certificate").unwrap();
        generate(&dir, &names).unwrap();
        assert_issued_by_ca(&certs.server_cert, &certs.ca_cert);

        // A new CA key means a new CA and every leaf reissued.
        fs::remove_file(&certs.ca_key).unwrap();
        generate(&dir, &names).unwrap();
        assert_ne!(fs::read(&certs.ca_cert).unwrap(), before[0]);
        assert_ne!(fs::read(&certs.clients[0].cert).unwrap(), before[4]);
        for c in &certs.clients {
            assert_issued_by_ca(&c.cert, &certs.ca_cert);
        }
        assert_issued_by_ca(&certs.server_cert, &certs.ca_cert);
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    /// Verifies the chain with webpki through rustls' client verifier.
    fn assert_issued_by_ca(cert: &Path, ca: &Path) {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(&fs::read(ca).unwrap()), provider())
                .build()
                .unwrap();
        let leaf = certs_from_pem(&fs::read(cert).unwrap()).remove(0);
        let now = rustls::pki_types::UnixTime::now();
        // Server certs lack clientAuth, so check the chain with the matching EKU.
        let result = verifier.verify_client_cert(&leaf, &[], now);
        let text = fs::read(cert).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
        let parsed = pem.parse_x509().unwrap();
        let is_server = parsed
            .extended_key_usage()
            .unwrap()
            .map(|e| e.value.server_auth)
            .unwrap_or(false);
        if is_server {
            let server_verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots(&fs::read(ca).unwrap()),
                provider(),
            )
            .build()
            .unwrap();
            server_verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from("localhost").unwrap(),
                    &[],
                    now,
                )
                .unwrap();
        } else {
            result.unwrap();
        }
    }

    #[test]
    fn server_certificate_names_and_usages() {
        let dir = temp_dir("certs-names");
        let certs = generate(&dir, &["greenwaste"]).unwrap();
        let text = fs::read(&certs.server_cert).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
        let cert = pem.parse_x509().unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        use x509_parser::extensions::GeneralName;
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for n in &san.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, ["localhost"]);
        assert_eq!(
            ips,
            [vec![127, 0, 0, 1], Ipv6Addr::LOCALHOST.octets().to_vec()]
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);

        let text = fs::read(&certs.client("greenwaste").unwrap().cert).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text).unwrap();
        let cert = pem.parse_x509().unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(cn, "greenwaste");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert!(matches!(
            san.general_names[..],
            [GeneralName::DNSName("greenwaste")]
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn client_names_are_checked() {
        let dir = temp_dir("certs-bad-names");
        for bad in [
            "", "Billing", "../x", "a/b", "ca", "server", "-x", "x.", "a b", "a_b",
        ] {
            assert!(
                matches!(generate(&dir, &[bad]), Err(CertError::InvalidName(_))),
                "{bad:?} accepted"
            );
        }
        assert!(generate(&dir, &["it-data-management", "pmo-approver", "svc.1"]).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }
}
