//! The request path: listener → identify → authorize → protect request →
//! upstream → rewrite response, one file per step.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Metrics;
use crate::config::Config;
use crate::detect::Detectors;
use crate::identity::PeerCertificate;

pub mod audit;
pub mod authorize;
pub mod error;
pub mod headers;
pub mod listener;
pub mod pipeline;
pub mod protect_request;
pub mod rewrite_response;
pub mod upstream;

pub use error::GatewayError;

/// The body type of every gateway response.
pub type GatewayBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the gateway knows about one client connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The verified client certificate, if one was presented.
    pub cert: Option<PeerCertificate>,
}

/// State shared by every request.
pub struct Shared {
    config: Arc<Config>,
    /// The upstream client.
    pub upstream: upstream::Upstream,
    /// The compiled detectors.
    pub detectors: Arc<Detectors>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// How write requests are protected (sealer = the keyring, when configured).
    pub protection: Arc<crate::rewrite::RequestProtection>,
    /// The keyring, when card encryption is configured.
    pub keyring: Option<Arc<crate::crypto::keyring::Keyring>>,
    /// The unmask audit log, when configured (without it, unmask requests
    /// are refused).
    pub audit: Option<Arc<dyn crate::audit::AuditSink>>,
    /// Decrypt grants.
    pub grants: Arc<dyn crate::unmask::GrantBackend>,
    /// Per-principal unmask budgets.
    pub unmask_counters: crate::unmask::RateCounters,
    /// The time, for grants and budgets.
    pub clock: Arc<dyn crate::unmask::Clock>,
}

impl Shared {
    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config)
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// TLS material could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, String),
    /// The upstream client could not be built.
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamSetupError),
    /// The keyring or its key-encryption key could not be loaded.
    #[error("card encryption: {0}")]
    Crypto(String),
    /// The audit log or the grant store could not be opened.
    #[error("audit: {0}")]
    Audit(String),
}

/// A running gateway.
pub struct GatewayHandle {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Metrics (for tests and the demo).
    pub metrics: Arc<Metrics>,
}

impl GatewayHandle {
    /// Stops accepting, drains in-flight requests, and waits for the end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Waits until the gateway stops (after a shutdown signal elsewhere).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// A sender that stops the gateway when `true` is sent.
    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

type CryptoSetup = (
    Option<Arc<crate::crypto::keyring::Keyring>>,
    crate::rewrite::RequestProtection,
);

/// Loads the keyring (when configured) and the write-protection settings.
fn crypto_setup(config: &Config) -> Result<CryptoSetup, ServeError> {
    use crate::class::FieldClass;
    let mut encrypt = [false; FieldClass::COUNT];
    let mut blind_index = [false; FieldClass::COUNT];
    let Some(c) = &config.crypto else {
        // Without a keyring card values cannot be stored, so writes carrying
        // them are refused rather than stored in the clear.
        encrypt[FieldClass::CardNumber.index()] = true;
        return Ok((
            None,
            crate::rewrite::RequestProtection {
                sealer: None,
                encrypt,
                blind_index,
                detected_card: crate::rewrite::DetectedCard::Refuse,
            },
        ));
    };
    for class in &c.encrypt_classes {
        encrypt[class.index()] = true;
    }
    for class in &c.blind_index_classes {
        blind_index[class.index()] = true;
    }
    let kek = match (&c.kek_file, &c.kek_env) {
        (Some(path), _) => crate::crypto::kek::Kek::from_file(path),
        (None, Some(var)) => crate::crypto::kek::Kek::from_env(var),
        (None, None) => crate::crypto::kek::Kek::from_env(crate::crypto::kek::DEFAULT_KEK_ENV),
    }
    .map_err(|e| ServeError::Crypto(e.to_string()))?;
    let ring = crate::crypto::keyring::Keyring::load(&c.keyring, kek, Default::default())
        .map_err(|e| ServeError::Crypto(e.to_string()))?;
    let ring = Arc::new(ring);
    Ok((
        Some(Arc::clone(&ring)),
        crate::rewrite::RequestProtection {
            sealer: Some(ring),
            encrypt,
            blind_index,
            detected_card: if c.encrypt_detected_cards {
                crate::rewrite::DetectedCard::Encrypt
            } else {
                crate::rewrite::DetectedCard::Refuse
            },
        },
    ))
}

/// Once a second: lets the audit log write time-driven checkpoints; once a
/// minute: records grants that expired unused.
async fn housekeeping(shared: Arc<Shared>) {
    let mut ticks = 0u64;
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        interval.tick().await;
        if Arc::strong_count(&shared) == 1 {
            return;
        }
        ticks += 1;
        let Some(audit) = shared.audit.clone() else {
            continue;
        };
        audit.tick();
        if ticks % 60 == 0 {
            let now = shared.clock.now();
            if let Ok(expired) = shared.grants.sweep_expired(now).await {
                for g in expired {
                    let draft = crate::audit::RecordDraft::new(
                        crate::audit::Kind::GrantExpired,
                        g.approver.clone(),
                        crate::audit::Outcome::Granted,
                        "expired",
                    )
                    .on_behalf_of(g.grantee.clone())
                    .grant_id(g.id.clone());
                    let _ = audit::append(&audit, draft).await;
                }
            }
        }
    }
}

/// Starts the gateway on its configured address.
pub async fn start(config: Config) -> Result<GatewayHandle, ServeError> {
    let listener = listener::bind(config.server.listen).await?;
    start_on(config, listener).await
}

/// Starts the gateway on an already-bound listener.
pub async fn start_on(
    config: Config,
    tcp: tokio::net::TcpListener,
) -> Result<GatewayHandle, ServeError> {
    start_with_clock(config, tcp, Arc::new(crate::unmask::SystemClock)).await
}

/// [`start_on`] with the clock grants and unmask budgets use (tests move it).
pub async fn start_with_clock(
    config: Config,
    tcp: tokio::net::TcpListener,
    clock: Arc<dyn crate::unmask::Clock>,
) -> Result<GatewayHandle, ServeError> {
    let tls = listener::tls_config(
        &config.server.cert,
        &config.server.key,
        config.server.client_ca.as_deref(),
    )?;
    let upstream = upstream::Upstream::new(&config.upstream)?;
    let local_addr = tcp
        .local_addr()
        .map_err(|e| ServeError::Bind(config.server.listen, e.to_string()))?;
    let metrics = Arc::new(Metrics::new());
    let grace = config.server.shutdown_grace;
    let (keyring, protection) = crypto_setup(&config)?;
    let audit = match &config.audit {
        Some(a) => {
            let key = crate::audit::SigningKey::load(&a.signing_key)
                .map_err(|e| ServeError::Audit(e.to_string()))?;
            let options = crate::audit::AuditOptions {
                checkpoint: crate::audit::CheckpointPolicy {
                    every_records: a.checkpoint_every_records,
                    every: a.checkpoint_every,
                },
                rotate_bytes: Some(a.rotate_bytes),
                ..Default::default()
            };
            let log = crate::audit::AuditLog::open(&a.dir, key, options)
                .map_err(|e| ServeError::Audit(e.to_string()))?;
            if let Some(torn) = &log.open_report().torn {
                tracing::warn!(target: "maskgate::audit", file = %torn.file.display(), bytes = torn.len, "a torn last audit line was cut off and kept aside");
            }
            Some(Arc::new(log) as Arc<dyn crate::audit::AuditSink>)
        }
        None => None,
    };
    let grants = crate::unmask::GrantStore::open(&config.data_dir)
        .map_err(|e| ServeError::Audit(format!("grant store: {e}")))?;
    let shared = Arc::new(Shared {
        config: Arc::new(config),
        upstream,
        detectors: Arc::new(Detectors::new()),
        metrics: Arc::clone(&metrics),
        protection: Arc::new(protection),
        keyring,
        audit,
        grants: Arc::new(grants),
        unmask_counters: crate::unmask::RateCounters::new(),
        clock,
    });
    tokio::spawn(housekeeping(Arc::clone(&shared)));
    let (tx, rx) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let task = tokio::spawn(listener::accept_loop(tcp, acceptor, shared, rx, grace));
    tracing::info!(listen = %local_addr, "maskgate listening");
    Ok(GatewayHandle {
        local_addr,
        shutdown: tx,
        task,
        metrics,
    })
}
