//! The gateway config file's sections: server, upstream, limits, log, data.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{Diag, Source};
use super::raw::{
    Lenient, RawAudit, RawClientCertHeaders, RawCrypto, RawData, RawGateway, RawLimits, RawLockout,
    RawLog, RawServer, RawState, RawUpstream,
};

/// `[server]`: where and how the gateway listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Socket address to listen on.
    pub listen: SocketAddr,
    /// PEM certificate chain (not read by the loader).
    pub cert: PathBuf,
    /// PEM private key (not read by the loader).
    pub key: PathBuf,
    /// CA for client certificates; `Some` enables mTLS.
    pub client_ca: Option<PathBuf>,
    /// Allowed `Host` / `:authority` names, lower case; empty = any.
    pub server_names: Vec<String>,
    /// How long a shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// PEM certificate revocation lists for client certificates (needs
    /// `client_ca`); a revoked certificate fails the handshake.
    pub client_crl: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto`,
    /// `X-Forwarded-Host` and `X-Real-IP` are kept (the gateway appends to
    /// them); from any other peer they are replaced.
    pub trusted_proxies: Vec<IpNet>,
}

/// An IP address or network (`10.0.0.0/8`, `::1`, `2001:db8::/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

/// Why an [`IpNet`] could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    /// Not an IP address.
    #[error("is not an IP address or network; write 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32")]
    Address,
    /// The prefix length is not a number within the family's width.
    #[error("has a prefix length that is not 0-32 (IPv4) or 0-128 (IPv6)")]
    Prefix,
    /// Bits below the prefix are set (`10.0.0.1/8`).
    #[error("has bits set below its prefix length; write the network address")]
    HostBits,
}

impl IpNet {
    /// Parses `IP` or `IP/prefix`.
    pub fn parse(text: &str) -> Result<IpNet, IpNetError> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| IpNetError::Address)?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| IpNetError::Prefix)?
            }
            Some(_) => return Err(IpNetError::Prefix),
        };
        if prefix > width {
            return Err(IpNetError::Prefix);
        }
        let net = IpNet { addr, prefix };
        if net.masked(addr) != addr {
            return Err(IpNetError::HostBits);
        }
        Ok(net)
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    /// True when `ip` is inside this network (IPv4-mapped IPv6 addresses
    /// are compared as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `[upstream]`: the customer database API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// The URL as written (scheme `http` or `https`, with an authority).
    pub url: http::Uri,
    /// The URL's path without a trailing `/` (`""` for none, `/api` for
    /// `https://db.internal/api/`); request paths are appended to it.
    pub base_path: String,
    /// Extra CA for an https upstream.
    pub ca: Option<PathBuf>,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Time allowed until the response headers arrive.
    pub response_timeout: Duration,
    /// Idle pooled connections kept per host.
    pub pool_max_idle_per_host: usize,
    /// The client-certificate headers the gateway sets for the upstream.
    pub client_cert_headers: ClientCertHeaders,
}

/// `[upstream.client_cert_headers]`: under which names (if any) the gateway
/// tells the upstream about the client certificate it verified. Clients'
/// own client-certificate headers are always removed; these are set after.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCertHeaders {
    /// `SUCCESS` when the caller presented a certificate that verified,
    /// `NONE` otherwise.
    pub verify: Option<http::HeaderName>,
    /// The certificate's subject common name.
    pub subject: Option<http::HeaderName>,
    /// The certificate's serial number, lower-case hex.
    pub serial: Option<http::HeaderName>,
}

/// `[limits]`: bounds on what one request may cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body accepted.
    pub max_request_body_bytes: u64,
    /// Largest response body passed on.
    pub max_response_body_bytes: u64,
    /// Deepest JSON nesting the rewriter accepts.
    pub max_json_depth: usize,
    /// Longest single string or key the rewriter buffers.
    pub max_token_bytes: usize,
    /// Largest decompressed body.
    pub max_decompressed_bytes: u64,
    /// Largest decompressed/compressed size ratio.
    pub max_decompression_ratio: u32,
    /// Time allowed from a request's head to its response's head (408).
    pub request_timeout: Duration,
    /// Client connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Header fields one request may carry (431).
    pub max_header_count: usize,
    /// Bytes of one request head: request line and header fields (431).
    pub max_header_bytes: usize,
    /// Time allowed to send one request head, from its first byte (408).
    pub header_timeout: Duration,
    /// A connection with no byte read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 streams a client may reset before the gateway accepted them
    /// (rapid reset, CVE-2023-44487); more closes the connection.
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2 streams the gateway may have to reset for the client's
    /// protocol errors over one connection (CVE-2025-8671); more closes it.
    pub h2_max_local_reset_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body_bytes: 10 * 1024 * 1024,
            max_response_body_bytes: 1024 * 1024 * 1024,
            max_json_depth: 128,
            max_token_bytes: 1024 * 1024,
            max_decompressed_bytes: 1024 * 1024 * 1024,
            max_decompression_ratio: 100,
            request_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_header_count: 100,
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 100,
            h2_max_pending_reset_streams: 20,
            h2_max_local_reset_streams: 100,
        }
    }
}

impl Limits {
    /// Accepted range of `max_connections`.
    pub const CONNECTIONS: (u64, u64) = (1, 1_000_000);
    /// Accepted range of `max_header_count`.
    pub const HEADER_COUNT: (u64, u64) = (8, 1000);
    /// Accepted range of `max_header_bytes`.
    pub const HEADER_BYTES: (u64, u64) = (1024, 1024 * 1024);
    /// Accepted range of the connection timeouts, in seconds.
    pub const TIMEOUT_SECS: (u64, u64) = (1, 3600);
    /// Accepted range of `h2_max_concurrent_streams`.
    pub const H2_STREAMS: (u64, u64) = (1, 10_000);
    /// Accepted range of the HTTP/2 reset limits.
    pub const H2_RESETS: (u64, u64) = (1, 100_000);
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Line format.
    pub format: LogFormat,
    /// A level (`info`) or a tracing filter directive list (`info,maskgate=debug`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// `[crypto]`: card data encrypted at rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoConfig {
    /// The keyring file.
    pub keyring: PathBuf,
    /// File holding the key-encryption key.
    pub kek_file: Option<PathBuf>,
    /// Environment variable holding the key-encryption key (when no file).
    pub kek_env: Option<String>,
    /// Classes stored only as envelopes (default: card_number).
    pub encrypt_classes: Vec<crate::class::FieldClass>,
    /// Classes that get a blind index (default: card_number).
    pub blind_index_classes: Vec<crate::class::FieldClass>,
    /// Encrypt card numbers found in unnamed fields instead of refusing the write.
    pub encrypt_detected_cards: bool,
}

/// `[audit]`: the unmask audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Where the log lives (default `<data.dir>/audit`).
    pub dir: PathBuf,
    /// The Ed25519 checkpoint signing key (PKCS#8, mode 0600).
    pub signing_key: PathBuf,
    /// A signed checkpoint every this many records.
    pub checkpoint_every_records: u64,
    /// A signed checkpoint at least this often.
    pub checkpoint_every: Duration,
    /// Start a new log file past this size (default 64 MiB).
    pub rotate_bytes: u64,
    /// A directory outside `dir` (best on another disk) that keeps a copy
    /// of the newest signed checkpoint, written after every batch: a log
    /// cut shorter than its witness is caught by `audit verify --witness`
    /// and refused at startup.
    pub witness_dir: Option<PathBuf>,
}

/// `[lockout]`: how many failed authentications of one identity (API key,
/// certificate subject, or source address for unknown callers) within a
/// window lock it, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutConfig {
    /// Failures within `window` that lock (default 3).
    pub max_failures: u32,
    /// How far back failures count (default 15 minutes).
    pub window: Duration,
    /// How long a lock lasts unless lifted earlier (default 30 minutes:
    /// PCI DSS v4.0 8.3.4 asks for at least 30 minutes or until an
    /// administrator unlocks).
    pub lock: Duration,
}

impl LockoutConfig {
    /// Largest `max_failures` accepted.
    pub const LIMIT_FAILURES: u64 = 1000;
    /// Largest `window_secs` and `lock_secs` accepted: 30 days.
    pub const LIMIT_SECS: u64 = 30 * 24 * 3600;
    /// The shortest lock `maskgate check` accepts without a warning (PCI
    /// DSS v4.0 8.3.4: at least 30 minutes).
    pub const MIN_LOCK_SECS: u64 = 1800;

    /// A warning for `maskgate check` when the lock is shorter than PCI DSS asks.
    pub fn warning(&self) -> Option<String> {
        (self.lock.as_secs() < LockoutConfig::MIN_LOCK_SECS).then(|| {
            format!(
                "warning: [lockout] lock_secs = {} is below {} (30 minutes), the least PCI DSS \
                 v4.0 8.3.4 accepts unless an administrator unlocks every lock",
                self.lock.as_secs(),
                LockoutConfig::MIN_LOCK_SECS
            )
        })
    }
}

impl Default for LockoutConfig {
    fn default() -> LockoutConfig {
        LockoutConfig {
            max_failures: 3,
            window: Duration::from_secs(900),
            lock: Duration::from_secs(1800),
        }
    }
}

/// Where lockouts, freezes and budget counters are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// Files under the data directory (`crate::admit::LocalStateStore`).
    #[default]
    Local,
    /// A PostgreSQL database shared by several gateway instances
    /// ([`StateConfig::postgres`] says which).
    Postgres,
}

/// `[state]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateConfig {
    /// The backend.
    pub backend: StateBackend,
    /// The database, when `backend` is [`StateBackend::Postgres`].
    pub postgres: Option<PostgresConfig>,
    /// `on_unavailable = "serve_masked"` (true, the default): while the
    /// shared store cannot be reached, masked reads keep flowing and only
    /// unmask/decrypt requests are refused (503). `"refuse"` (false): every
    /// request that needs the store is refused with 503.
    pub serve_masked_when_unavailable: bool,
}

impl Default for StateConfig {
    fn default() -> StateConfig {
        StateConfig {
            backend: StateBackend::Local,
            postgres: None,
            serve_masked_when_unavailable: true,
        }
    }
}

/// `[state]` for `backend = "postgres"`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The connection string (`postgresql://user:password@host:port/db` or
    /// `host=… user=…`). May hold a password: never logged ([`fmt::Debug`]
    /// redacts it).
    pub url: String,
    /// A CA bundle (PEM): set, the connection requires TLS and verifies the
    /// server against it; unset, the connection is plain (loopback or a
    /// private network only).
    pub ca: Option<PathBuf>,
    /// Connections per gateway instance (default 8).
    pub pool_size: usize,
    /// How long connecting (and waiting for a pooled connection) may take
    /// (default 2 s).
    pub connect_timeout: Duration,
    /// How long one statement may run, server- and client-side (default 2 s).
    pub statement_timeout: Duration,
}

impl PostgresConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            ca: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(2),
        }
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// A connection string with its password (URL userinfo or `password=`)
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgresql://")
        .map(|r| ("postgresql://", r))
        .or_else(|| url.strip_prefix("postgres://").map(|r| ("postgres://", r)))
    {
        let (scheme, rest) = rest;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let redacted_tail = match tail.split_once('?') {
            Some((path, query)) => format!("{path}?{}", redact_pairs(query, '&')),
            None => tail.to_owned(),
        };
        return match authority.rfind('@') {
            Some(at) => {
                let (userinfo, host) = authority.split_at(at);
                let user = userinfo.split(':').next().unwrap_or("");
                let pw = if userinfo.contains(':') { ":***" } else { "" };
                format!("{scheme}{user}{pw}{host}{redacted_tail}")
            }
            None => format!("{scheme}{authority}{redacted_tail}"),
        };
    }
    redact_pairs(url, ' ')
}

fn redact_pairs(s: &str, sep: char) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, part) in s.split(sep).enumerate() {
        if i > 0 {
            out.push(sep);
        }
        if part.to_ascii_lowercase().starts_with("password=") {
            out.push_str("password=***");
        } else {
            out.push_str(part);
        }
    }
    out
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.redacted_url())
            .field("ca", &self.ca)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// The gateway file's checked parts; `None` where a section had errors.
#[derive(Debug, Default)]
pub(crate) struct GatewayParts {
    pub server: Option<ServerConfig>,
    pub upstream: Option<UpstreamConfig>,
    pub limits: Option<Limits>,
    pub log: Option<LogConfig>,
    pub data_dir: Option<PathBuf>,
    pub policy_files: Option<PolicyFiles>,
    /// `Some(None)`: no `[crypto]`; `None`: it had errors.
    pub crypto: Option<Option<CryptoConfig>>,
    /// `Some(None)`: no `[audit]`; `None`: it had errors.
    pub audit: Option<Option<AuditConfig>>,
    /// `[lockout]`, defaults filled in.
    pub lockout: Option<LockoutConfig>,
    /// `[state]`, defaults filled in.
    pub state: Option<StateConfig>,
}

/// The `[policy] files` list.
#[derive(Debug, Default)]
pub(crate) struct PolicyFiles {
    /// Each policy file: resolved path and the span of its `files` entry.
    pub files: Vec<(PathBuf, Range<usize>)>,
    /// False when an entry could not be used: definitions may be missing.
    pub complete: bool,
}

/// Checks the gateway file. `base` is the directory relative paths start
/// from. `root_ok` is false when the file's root had an error (an unknown
/// section, perhaps a misspelt required one): missing sections are then not
/// reported again.
pub(crate) fn check(
    raw: RawGateway,
    root_ok: bool,
    src: &Source,
    base: &Path,
    diag: &mut Diag,
) -> GatewayParts {
    let data_dir_for_audit = match &raw.data {
        Some(Lenient::Ok(RawData { dir: Some(dir) })) => base.join(dir.get_ref()),
        _ => base.join("data"),
    };
    let mut c = Checker {
        src,
        base,
        diag,
        report_missing: root_ok,
    };
    GatewayParts {
        server: match raw.server {
            None => c.missing("[server]", "listen, cert and key"),
            Some(Lenient::Ok(s)) => c.server(s),
            Some(Lenient::Failed(_)) => None,
        },
        upstream: match raw.upstream {
            None => c.missing("[upstream]", "url"),
            Some(Lenient::Ok(u)) => c.upstream(u),
            Some(Lenient::Failed(_)) => None,
        },
        limits: match raw.limits {
            None => Some(Limits::default()),
            Some(Lenient::Ok(l)) => c.limits(l),
            Some(Lenient::Failed(_)) => None,
        },
        log: match raw.log {
            None => Some(LogConfig::default()),
            Some(Lenient::Ok(l)) => c.log(l),
            Some(Lenient::Failed(_)) => None,
        },
        data_dir: match raw.data {
            None => Some(base.join("data")),
            Some(Lenient::Ok(d)) => match d.dir {
                None => Some(base.join("data")),
                Some(dir) => c.path(&dir, "data.dir"),
            },
            Some(Lenient::Failed(_)) => None,
        },
        policy_files: match raw.policy {
            None => c.missing("[policy]", "files = [...] naming the policy files"),
            Some(Lenient::Ok(p)) => c.policy_files(p.files),
            Some(Lenient::Failed(_)) => None,
        },
        crypto: match raw.crypto {
            None => Some(None),
            Some(Lenient::Ok(cr)) => c.crypto(cr).map(Some),
            Some(Lenient::Failed(_)) => None,
        },
        audit: match raw.audit {
            None => Some(None),
            Some(Lenient::Ok(a)) => c.audit(a, &data_dir_for_audit).map(Some),
            Some(Lenient::Failed(_)) => None,
        },
        lockout: match raw.lockout {
            None => Some(LockoutConfig::default()),
            Some(Lenient::Ok(l)) => c.lockout(l),
            Some(Lenient::Failed(_)) => None,
        },
        state: match raw.state {
            None => Some(StateConfig::default()),
            Some(Lenient::Ok(s)) => c.state(s),
            Some(Lenient::Failed(_)) => None,
        },
    }
}

struct Checker<'a> {
    src: &'a Source,
    base: &'a Path,
    diag: &'a mut Diag,
    report_missing: bool,
}

impl Checker<'_> {
    fn missing<T>(&mut self, table: &str, keys: &str) -> Option<T> {
        if !self.report_missing {
            return None;
        }
        self.diag.at(
            self.src,
            &(0..0),
            format!(
                "missing {table} table; add it with at least {keys} (see docs/config-schema.md)"
            ),
        );
        None
    }

    fn path(&mut self, value: &Spanned<String>, key: &str) -> Option<PathBuf> {
        if value.get_ref().trim().is_empty() {
            self.diag.at(
                self.src,
                &value.span(),
                format!("{key} is empty; give a file path"),
            );
            return None;
        }
        Some(self.base.join(value.get_ref()))
    }

    fn classes(
        &mut self,
        list: &Option<Vec<Spanned<String>>>,
        key: &str,
    ) -> Option<Vec<crate::class::FieldClass>> {
        let Some(list) = list else {
            return Some(vec![crate::class::FieldClass::CardNumber]);
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in list {
            match crate::class::FieldClass::from_name(item.get_ref()) {
                Some(class) if super::is_encrypted_class(class) => out.push(class),
                Some(_) => {
                    self.diag.at(
                        self.src,
                        &item.span(),
                        format!("{key}: `{}` is not a class the gateway encrypts; use card_number, card_expiry or bank_account", item.get_ref()),
                    );
                    ok = false;
                }
                None => {
                    self.diag.at(
                        self.src,
                        &item.span(),
                        format!("{key}: unknown class `{}`", item.get_ref()),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn crypto(&mut self, c: RawCrypto) -> Option<CryptoConfig> {
        let keyring = self.path(&c.keyring, "crypto.keyring");
        let kek_file = match &c.kek_file {
            None => Some(None),
            Some(f) => self.path(f, "crypto.kek_file").map(Some),
        };
        if let (Some(f), Some(_)) = (&c.kek_file, &c.kek_env) {
            self.diag.at(
                self.src,
                &f.span(),
                "give the key-encryption key either as kek_file or as kek_env, not both",
            );
            return None;
        }
        let encrypt = self.classes(&c.encrypt_classes, "crypto.encrypt_classes");
        let index = self.classes(&c.blind_index_classes, "crypto.blind_index_classes");
        let (encrypt, index) = (encrypt?, index?);
        if let Some(list) = &c.blind_index_classes {
            for (item, class) in list.iter().zip(&index) {
                if !encrypt.contains(class) {
                    self.diag.at(
                        self.src,
                        &item.span(),
                        format!("crypto.blind_index_classes: `{class}` is not in encrypt_classes; only encrypted classes get a blind index"),
                    );
                    return None;
                }
            }
        }
        Some(CryptoConfig {
            keyring: keyring?,
            kek_file: kek_file?,
            kek_env: c.kek_env.map(|v| v.into_inner()),
            encrypt_classes: encrypt,
            blind_index_classes: index,
            encrypt_detected_cards: c.encrypt_detected_cards.unwrap_or(false),
        })
    }

    fn audit(&mut self, a: RawAudit, data_dir: &Path) -> Option<AuditConfig> {
        let dir = match &a.dir {
            None => Some(data_dir.join("audit")),
            Some(d) => self.path(d, "audit.dir"),
        };
        let key = self.path(&a.signing_key, "audit.signing_key");
        let every = self.positive(
            &a.checkpoint_every_records,
            "checkpoint_every_records",
            1000,
        );
        let secs = self.positive(&a.checkpoint_every_secs, "checkpoint_every_secs", 60);
        let rotate = self.positive(&a.rotate_bytes, "rotate_bytes", 64 << 20);
        let witness = match &a.witness_dir {
            None => Some(None),
            Some(w) => {
                let path = self.path(w, "audit.witness_dir");
                match (&path, &dir) {
                    (Some(p), Some(d)) if p.starts_with(d) || d.starts_with(p) => {
                        self.diag.at(
                            self.src,
                            &w.span(),
                            "audit.witness_dir must be outside the audit log directory (best on \
                             another disk): whoever can change the log must not reach its witness",
                        );
                        None
                    }
                    _ => path.map(Some),
                }
            }
        };
        Some(AuditConfig {
            dir: dir?,
            signing_key: key?,
            checkpoint_every_records: every?,
            checkpoint_every: Duration::from_secs(secs?),
            rotate_bytes: rotate?,
            witness_dir: witness?,
        })
    }

    fn lockout(&mut self, l: RawLockout) -> Option<LockoutConfig> {
        let d = LockoutConfig::default();
        let within = |this: &mut Self,
                      v: &Option<Spanned<u64>>,
                      key: &str,
                      default: u64,
                      max: u64,
                      unit: &str| {
            match v {
                None => Some(default),
                Some(v) if (1..=max).contains(v.get_ref()) => Some(*v.get_ref()),
                Some(v) => {
                    this.diag.at(
                        this.src,
                        &v.span(),
                        format!("lockout.{key} must be 1 to {max}{unit} (default {default})"),
                    );
                    None
                }
            }
        };
        let failures = within(
            self,
            &l.max_failures,
            "max_failures",
            u64::from(d.max_failures),
            LockoutConfig::LIMIT_FAILURES,
            "",
        );
        let window = within(
            self,
            &l.window_secs,
            "window_secs",
            d.window.as_secs(),
            LockoutConfig::LIMIT_SECS,
            " seconds (30 days)",
        );
        let lock = within(
            self,
            &l.lock_secs,
            "lock_secs",
            d.lock.as_secs(),
            LockoutConfig::LIMIT_SECS,
            " seconds (30 days); a security auditor can lift a lock earlier",
        );
        Some(LockoutConfig {
            max_failures: u32::try_from(failures?).ok()?,
            window: Duration::from_secs(window?),
            lock: Duration::from_secs(lock?),
        })
    }

    fn state(&mut self, s: RawState) -> Option<StateConfig> {
        let serve_masked = match &s.on_unavailable {
            None => Some(true),
            Some(v) => match v.get_ref().as_str() {
                "serve_masked" => Some(true),
                "refuse" => Some(false),
                other => {
                    self.diag.at(
                        self.src,
                        &v.span(),
                        format!("unknown state.on_unavailable `{other}`; use \"serve_masked\" (masked reads keep flowing while the database is down) or \"refuse\""),
                    );
                    None
                }
            },
        };
        let backend = match s.backend.as_ref().map(|b| (b.get_ref().as_str(), b.span())) {
            None | Some(("local", _)) => Some(StateBackend::Local),
            Some(("postgres", _)) => Some(StateBackend::Postgres),
            Some((other, span)) => {
                self.diag.at(
                    self.src,
                    &span,
                    format!("unknown state backend `{other}`; use \"local\" (files under the data directory) or \"postgres\""),
                );
                None
            }
        };
        let postgres = match backend {
            Some(StateBackend::Postgres) => self.postgres(&s).map(Some),
            _ => {
                let stray = [
                    ("url", s.url.as_ref().map(Spanned::span)),
                    ("ca", s.ca.as_ref().map(Spanned::span)),
                    ("pool_size", s.pool_size.as_ref().map(Spanned::span)),
                    (
                        "connect_timeout_ms",
                        s.connect_timeout_ms.as_ref().map(Spanned::span),
                    ),
                    (
                        "statement_timeout_ms",
                        s.statement_timeout_ms.as_ref().map(Spanned::span),
                    ),
                ];
                let mut ok = true;
                for (key, span) in stray {
                    if let (Some(span), Some(StateBackend::Local)) = (span, backend) {
                        self.diag.at(
                            self.src,
                            &span,
                            format!("state.{key} applies to backend = \"postgres\" only"),
                        );
                        ok = false;
                    }
                }
                ok.then_some(None)
            }
        };
        Some(StateConfig {
            backend: backend?,
            postgres: postgres?,
            serve_masked_when_unavailable: serve_masked?,
        })
    }

    fn postgres(&mut self, s: &RawState) -> Option<PostgresConfig> {
        let d = PostgresConfig::new("");
        let url = match &s.url {
            None => {
                self.diag.at(
                    self.src,
                    &s.backend.as_ref().map_or(0..0, Spanned::span),
                    "state backend \"postgres\" needs url = \"postgresql://user@host:port/database\"",
                );
                None
            }
            Some(u) if u.get_ref().trim().is_empty() => {
                self.diag.at(self.src, &u.span(), "state.url is empty");
                None
            }
            Some(u) => match u.get_ref().parse::<tokio_postgres::Config>() {
                Ok(_) => Some(u.get_ref().clone()),
                Err(_) => {
                    // The parser's message may quote the string (and so a
                    // password): say only that it is not valid.
                    self.diag.at(
                        self.src,
                        &u.span(),
                        "state.url is not a valid PostgreSQL connection string (postgresql://user@host:port/database or key=value pairs)",
                    );
                    None
                }
            },
        };
        let ca = match &s.ca {
            None => Some(None),
            Some(c) => self.path(c, "state.ca").map(Some),
        };
        let pool = self.within_range(
            &s.pool_size,
            "state.pool_size",
            d.pool_size as u64,
            1,
            256,
            "",
        );
        let connect = self.within_range(
            &s.connect_timeout_ms,
            "state.connect_timeout_ms",
            d.connect_timeout.as_millis() as u64,
            10,
            600_000,
            " milliseconds",
        );
        let statement = self.within_range(
            &s.statement_timeout_ms,
            "state.statement_timeout_ms",
            d.statement_timeout.as_millis() as u64,
            10,
            600_000,
            " milliseconds",
        );
        Some(PostgresConfig {
            url: url?,
            ca: ca?,
            pool_size: usize::try_from(pool?).ok()?,
            connect_timeout: Duration::from_millis(connect?),
            statement_timeout: Duration::from_millis(statement?),
        })
    }

    fn within_range(
        &mut self,
        value: &Option<Spanned<u64>>,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
        unit: &str,
    ) -> Option<u64> {
        match value {
            None => Some(default),
            Some(v) if (min..=max).contains(v.get_ref()) => Some(*v.get_ref()),
            Some(v) => {
                self.diag.at(
                    self.src,
                    &v.span(),
                    format!("{key} must be {min} to {max}{unit} (default {default})"),
                );
                None
            }
        }
    }

    fn positive(&mut self, value: &Option<Spanned<u64>>, key: &str, default: u64) -> Option<u64> {
        match value {
            None => Some(default),
            Some(v) if *v.get_ref() == 0 => {
                self.diag.at(
                    self.src,
                    &v.span(),
                    format!("{key} must be at least 1 (default {default})"),
                );
                None
            }
            Some(v) => Some(*v.get_ref()),
        }
    }

    fn bounded<T: TryFrom<u64>>(
        &mut self,
        value: &Option<Spanned<u64>>,
        key: &str,
        default: u64,
    ) -> Option<T> {
        let v = self.positive(value, key, default)?;
        match T::try_from(v) {
            Ok(v) => Some(v),
            Err(_) => {
                let span = value.as_ref().map_or(0..0, Spanned::span);
                self.diag.at(
                    self.src,
                    &span,
                    format!("{key} is too large for this machine; use a smaller value"),
                );
                None
            }
        }
    }

    fn server(&mut self, s: RawServer) -> Option<ServerConfig> {
        let listen = match s.listen.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.diag.at(
                    self.src,
                    &s.listen.span(),
                    format!(
                        "listen address `{}` is not an IP socket address; write IP:PORT such as \"127.0.0.1:8443\" or \"[::]:8443\" (host names are not resolved)",
                        s.listen.get_ref()
                    ),
                );
                None
            }
        };
        let cert = self.path(&s.cert, "server.cert");
        let key = self.path(&s.key, "server.key");
        let client_ca = match &s.client_ca {
            None => Some(None),
            Some(ca) => self.path(ca, "server.client_ca").map(Some),
        };
        let mut names = Vec::new();
        let mut names_ok = true;
        for name in s.server_names.iter().flatten() {
            let n = name.get_ref();
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            {
                self.diag.at(
                    self.src,
                    &name.span(),
                    format!("server name `{n}` is not a host name or IP address; write it without scheme, port or path"),
                );
                names_ok = false;
            } else {
                names.push(n.to_ascii_lowercase());
            }
        }
        let grace = s.shutdown_grace_secs.as_ref().map_or(10, |v| *v.get_ref());
        let client_crl = match (&s.client_crl, &s.client_ca) {
            (None, _) => Some(None),
            (Some(crl), Some(_)) => self.path(crl, "server.client_crl").map(Some),
            (Some(crl), None) => {
                self.diag.at(
                    self.src,
                    &crl.span(),
                    "server.client_crl needs server.client_ca: revocation lists apply to client certificates; add client_ca or remove client_crl",
                );
                None
            }
        };
        let mut trusted = Vec::new();
        let mut trusted_ok = true;
        for entry in s.trusted_proxies.iter().flatten() {
            match IpNet::parse(entry.get_ref().trim()) {
                Ok(net) => trusted.push(net),
                Err(e) => {
                    self.diag.at(
                        self.src,
                        &entry.span(),
                        format!("trusted proxy `{}` {e}", entry.get_ref()),
                    );
                    trusted_ok = false;
                }
            }
        }
        Some(ServerConfig {
            listen: listen?,
            cert: cert?,
            key: key?,
            client_ca: client_ca?,
            server_names: if names_ok { names } else { return None },
            shutdown_grace: Duration::from_secs(grace),
            client_crl: client_crl?,
            trusted_proxies: if trusted_ok { trusted } else { return None },
        })
    }

    fn upstream(&mut self, u: RawUpstream) -> Option<UpstreamConfig> {
        let url = self.upstream_url(&u.url);
        let ca = match &u.ca {
            None => Some(None),
            Some(ca) => {
                let https = url
                    .as_ref()
                    .is_none_or(|(uri, _)| uri.scheme_str() == Some("https"));
                if https {
                    self.path(ca, "upstream.ca").map(Some)
                } else {
                    self.diag.at(
                        self.src,
                        &ca.span(),
                        "upstream.ca is only used with an https url; remove it or use https",
                    );
                    None
                }
            }
        };
        let connect = self.positive(&u.connect_timeout_ms, "connect_timeout_ms", 2000);
        let response = self.positive(&u.response_timeout_ms, "response_timeout_ms", 30000);
        let pool = match &u.pool_max_idle_per_host {
            None => Some(32),
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.diag
                        .at(self.src, &v.span(), "pool_max_idle_per_host is too large");
                    None
                }
            },
        };
        let client_cert_headers = self.client_cert_headers(u.client_cert_headers.as_ref());
        let (url, base_path) = url?;
        Some(UpstreamConfig {
            url,
            base_path,
            ca: ca?,
            connect_timeout: Duration::from_millis(connect?),
            response_timeout: Duration::from_millis(response?),
            pool_max_idle_per_host: pool?,
            client_cert_headers: client_cert_headers?,
        })
    }

    fn client_cert_headers(
        &mut self,
        raw: Option<&RawClientCertHeaders>,
    ) -> Option<ClientCertHeaders> {
        let Some(raw) = raw else {
            return Some(ClientCertHeaders::default());
        };
        let mut taken: Vec<http::HeaderName> = Vec::new();
        let mut one = |this: &mut Self, value: &Option<Spanned<String>>, key: &str| {
            let Some(v) = value else {
                return Some(None);
            };
            let name = match http::HeaderName::from_bytes(v.get_ref().trim().as_bytes()) {
                Ok(n) => n,
                Err(_) => {
                    this.diag.at(
                        this.src,
                        &v.span(),
                        format!("upstream.client_cert_headers.{key} is not a valid header name"),
                    );
                    return None;
                }
            };
            if reserved_upstream_header(name.as_str()) {
                this.diag.at(
                    this.src,
                    &v.span(),
                    format!(
                        "upstream.client_cert_headers.{key}: `{name}` is a header the gateway already sets or removes; choose another name"
                    ),
                );
                return None;
            }
            if taken.contains(&name) {
                this.diag.at(
                    this.src,
                    &v.span(),
                    format!("upstream.client_cert_headers.{key}: `{name}` is used twice"),
                );
                return None;
            }
            taken.push(name.clone());
            Some(Some(name))
        };
        let verify = one(self, &raw.verify, "verify");
        let subject = one(self, &raw.subject, "subject");
        let serial = one(self, &raw.serial, "serial");
        Some(ClientCertHeaders {
            verify: verify?,
            subject: subject?,
            serial: serial?,
        })
    }

    fn upstream_url(&mut self, url: &Spanned<String>) -> Option<(http::Uri, String)> {
        let span = url.span();
        let text = url.get_ref();
        let Ok(uri) = text.parse::<http::Uri>() else {
            self.diag.at(
                self.src,
                &span,
                format!("upstream url `{text}` is not a valid URL; write it like \"http://127.0.0.1:9000\" or \"https://db.internal/api\""),
            );
            return None;
        };
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => {
                self.diag.at(
                    self.src,
                    &span,
                    format!("upstream url scheme `{other}` is not supported; use http or https"),
                );
                return None;
            }
            None => {
                self.diag.at(
                    self.src,
                    &span,
                    format!(
                        "upstream url `{text}` has no scheme; start it with http:// or https://"
                    ),
                );
                return None;
            }
        }
        if uri.authority().is_none_or(|a| a.host().is_empty()) {
            self.diag.at(
                self.src,
                &span,
                "upstream url has no host; write it like \"http://127.0.0.1:9000\"",
            );
            return None;
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            self.diag.at(
                self.src,
                &span,
                "upstream url must not carry credentials (user:password@); remove them",
            );
            return None;
        }
        if uri.query().is_some() {
            self.diag.at(
                self.src,
                &span,
                "upstream url must not have a query ('?...'); remove it",
            );
            return None;
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Some((uri, base_path))
    }

    fn limits(&mut self, l: RawLimits) -> Option<Limits> {
        let d = Limits::default();
        let req = self.positive(
            &l.max_request_body_bytes,
            "max_request_body_bytes",
            d.max_request_body_bytes,
        );
        let resp = self.positive(
            &l.max_response_body_bytes,
            "max_response_body_bytes",
            d.max_response_body_bytes,
        );
        let depth =
            self.bounded::<usize>(&l.max_json_depth, "max_json_depth", d.max_json_depth as u64);
        let token = self.bounded::<usize>(
            &l.max_token_bytes,
            "max_token_bytes",
            d.max_token_bytes as u64,
        );
        let dec = self.positive(
            &l.max_decompressed_bytes,
            "max_decompressed_bytes",
            d.max_decompressed_bytes,
        );
        let ratio = self.bounded::<u32>(
            &l.max_decompression_ratio,
            "max_decompression_ratio",
            u64::from(d.max_decompression_ratio),
        );
        let timeout = self.positive(&l.request_timeout_secs, "request_timeout_secs", 60);
        let secs = |d: Duration| d.as_secs();
        let conns = self.range(
            &l.max_connections,
            "max_connections",
            d.max_connections as u64,
            Limits::CONNECTIONS,
        );
        let count = self.range(
            &l.max_header_count,
            "max_header_count",
            d.max_header_count as u64,
            Limits::HEADER_COUNT,
        );
        let head = self.range(
            &l.max_header_bytes,
            "max_header_bytes",
            d.max_header_bytes as u64,
            Limits::HEADER_BYTES,
        );
        let header_timeout = self.range(
            &l.header_timeout_secs,
            "header_timeout_secs",
            secs(d.header_timeout),
            Limits::TIMEOUT_SECS,
        );
        let idle = self.range(
            &l.idle_timeout_secs,
            "idle_timeout_secs",
            secs(d.idle_timeout),
            Limits::TIMEOUT_SECS,
        );
        let handshake = self.range(
            &l.handshake_timeout_secs,
            "handshake_timeout_secs",
            secs(d.handshake_timeout),
            Limits::TIMEOUT_SECS,
        );
        let streams = self.range(
            &l.h2_max_concurrent_streams,
            "h2_max_concurrent_streams",
            u64::from(d.h2_max_concurrent_streams),
            Limits::H2_STREAMS,
        );
        let pending = self.range(
            &l.h2_max_pending_reset_streams,
            "h2_max_pending_reset_streams",
            d.h2_max_pending_reset_streams as u64,
            Limits::H2_RESETS,
        );
        let local = self.range(
            &l.h2_max_local_reset_streams,
            "h2_max_local_reset_streams",
            d.h2_max_local_reset_streams as u64,
            Limits::H2_RESETS,
        );
        // Every range above fits a u32, so these conversions cannot fail.
        let small = |v: Option<u64>| v.and_then(|v| u32::try_from(v).ok());
        Some(Limits {
            max_request_body_bytes: req?,
            max_response_body_bytes: resp?,
            max_json_depth: depth?,
            max_token_bytes: token?,
            max_decompressed_bytes: dec?,
            max_decompression_ratio: ratio?,
            request_timeout: Duration::from_secs(timeout?),
            max_connections: small(conns)? as usize,
            max_header_count: small(count)? as usize,
            max_header_bytes: small(head)? as usize,
            header_timeout: Duration::from_secs(header_timeout?),
            idle_timeout: Duration::from_secs(idle?),
            handshake_timeout: Duration::from_secs(handshake?),
            h2_max_concurrent_streams: small(streams)?,
            h2_max_pending_reset_streams: small(pending)? as usize,
            h2_max_local_reset_streams: small(local)? as usize,
        })
    }

    /// A `[limits]` value within `min..=max` (inclusive), or its default.
    fn range(
        &mut self,
        value: &Option<Spanned<u64>>,
        key: &str,
        default: u64,
        (min, max): (u64, u64),
    ) -> Option<u64> {
        match value {
            None => Some(default),
            Some(v) if (min..=max).contains(v.get_ref()) => Some(*v.get_ref()),
            Some(v) => {
                self.diag.at(
                    self.src,
                    &v.span(),
                    format!("limits.{key} must be {min} to {max} (default {default})"),
                );
                None
            }
        }
    }

    fn log(&mut self, l: RawLog) -> Option<LogConfig> {
        let format = match &l.format {
            None => Some(LogFormat::Text),
            Some(f) => match f.get_ref().as_str() {
                "text" => Some(LogFormat::Text),
                "json" => Some(LogFormat::Json),
                other => {
                    self.diag.at(
                        self.src,
                        &f.span(),
                        format!("log format `{other}` is unknown; use \"text\" or \"json\""),
                    );
                    None
                }
            },
        };
        let level = match &l.level {
            None => Some("info".to_owned()),
            Some(v) if valid_level(v.get_ref()) => Some(v.get_ref().clone()),
            Some(v) => {
                self.diag.at(
                    self.src,
                    &v.span(),
                    format!(
                        "log level `{}` is not valid; use trace, debug, info, warn, error or off (optionally as target=level, comma-separated)",
                        v.get_ref()
                    ),
                );
                None
            }
        };
        Some(LogConfig {
            format: format?,
            level: level?,
        })
    }

    fn policy_files(&mut self, files: Spanned<Vec<Spanned<String>>>) -> Option<PolicyFiles> {
        let span = files.span();
        let files = files.into_inner();
        if files.is_empty() {
            self.diag.at(
                self.src,
                &span,
                "policy.files is empty; name at least one policy file",
            );
            return None;
        }
        let mut out: Vec<(PathBuf, Range<usize>)> = Vec::new();
        let mut ok = true;
        for f in &files {
            let Some(path) = self.path(f, "policy file") else {
                ok = false;
                continue;
            };
            if let Some((_, first)) = out.iter().find(|(p, _)| *p == path) {
                let first = self.src.place(first);
                self.diag.at(
                    self.src,
                    &f.span(),
                    format!(
                        "policy file `{}` is listed twice (first at {first}); remove one",
                        f.get_ref()
                    ),
                );
                ok = false;
                continue;
            }
            out.push((path, f.span()));
        }
        // The files that could be named are still loaded and checked when
        // another entry is bad, so that their errors are reported too.
        Some(PolicyFiles {
            files: out,
            complete: ok,
        })
    }
}

/// True for a tracing level or a list of `target=level` directives.
fn valid_level(s: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    !s.is_empty()
        && s.split(',').all(|directive| {
            let level = directive
                .rsplit_once('=')
                .map_or(directive, |(_, l)| l)
                .trim();
            directive.contains('[') || LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level))
        })
}

/// Header names the gateway sets or removes on every upstream request, so
/// none can also carry client-certificate information: hop-by-hop and
/// framing fields, the gateway's own `X-Maskgate-*`, the request id, the
/// forwarding headers, and names with `_` (dropped as CGI look-alikes).
fn reserved_upstream_header(name: &str) -> bool {
    const RESERVED: [&str; 26] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "authorization",
        "cookie",
        "expect",
        "x-request-id",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-on-behalf-of",
        "x-unmask",
        "x-unmask-reason",
        "x-unmask-grant",
    ];
    RESERVED.contains(&name) || name.starts_with("x-maskgate-") || name.contains('_')
}
