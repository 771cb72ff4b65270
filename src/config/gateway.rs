//! The gateway config file's sections: server, upstream, limits, log, data.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{Diag, Source};
use super::raw::{
    Lenient, RawAudit, RawCrypto, RawData, RawGateway, RawLimits, RawLockout, RawLog, RawServer,
    RawState, RawUpstream,
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
    /// Time allowed for a whole request.
    pub request_timeout: Duration,
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
        }
    }
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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
    /// How long a lock lasts unless lifted earlier (default 15 minutes).
    pub lock: Duration,
}

impl LockoutConfig {
    /// Largest `max_failures` accepted.
    pub const LIMIT_FAILURES: u64 = 1000;
    /// Largest `window_secs` and `lock_secs` accepted: 30 days.
    pub const LIMIT_SECS: u64 = 30 * 24 * 3600;
}

impl Default for LockoutConfig {
    fn default() -> LockoutConfig {
        LockoutConfig {
            max_failures: 3,
            window: Duration::from_secs(900),
            lock: Duration::from_secs(900),
        }
    }
}

/// Where lockouts, freezes and budget counters are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// Files under the data directory (`crate::admit::LocalStateStore`).
    #[default]
    Local,
}

/// `[state]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateConfig {
    /// The backend (only `local` in this build).
    pub backend: StateBackend,
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
        Some(AuditConfig {
            dir: dir?,
            signing_key: key?,
            checkpoint_every_records: every?,
            checkpoint_every: Duration::from_secs(secs?),
            rotate_bytes: rotate?,
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
        let Some(backend) = &s.backend else {
            return Some(StateConfig::default());
        };
        match backend.get_ref().as_str() {
            "local" => Some(StateConfig {
                backend: StateBackend::Local,
            }),
            "postgres" => {
                self.diag.at(
                    self.src,
                    &backend.span(),
                    "state backend \"postgres\" is not available in this build; use \"local\" (files under the data directory)",
                );
                None
            }
            other => {
                self.diag.at(
                    self.src,
                    &backend.span(),
                    format!("unknown state backend `{other}`; use \"local\""),
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
        Some(ServerConfig {
            listen: listen?,
            cert: cert?,
            key: key?,
            client_ca: client_ca?,
            server_names: if names_ok { names } else { return None },
            shutdown_grace: Duration::from_secs(grace),
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
        let (url, base_path) = url?;
        Some(UpstreamConfig {
            url,
            base_path,
            ca: ca?,
            connect_timeout: Duration::from_millis(connect?),
            response_timeout: Duration::from_millis(response?),
            pool_max_idle_per_host: pool?,
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
        Some(Limits {
            max_request_body_bytes: req?,
            max_response_body_bytes: resp?,
            max_json_depth: depth?,
            max_token_bytes: token?,
            max_decompressed_bytes: dec?,
            max_decompression_ratio: ratio?,
            request_timeout: Duration::from_secs(timeout?),
        })
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
