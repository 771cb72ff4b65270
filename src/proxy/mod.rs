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
fn crypto_setup(_config: &Config) -> Result<CryptoSetup, ServeError> {
    use crate::class::FieldClass;
    let mut encrypt = [false; FieldClass::COUNT];
    // Without a keyring card values cannot be stored, so writes carrying
    // them are refused rather than stored in the clear.
    encrypt[FieldClass::CardNumber.index()] = true;
    Ok((
        None,
        crate::rewrite::RequestProtection {
            sealer: None,
            encrypt,
            blind_index: [false; FieldClass::COUNT],
            detected_card: crate::rewrite::DetectedCard::Refuse,
        },
    ))
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
    let shared = Arc::new(Shared {
        config: Arc::new(config),
        upstream,
        detectors: Arc::new(Detectors::new()),
        metrics: Arc::clone(&metrics),
        protection: Arc::new(protection),
        keyring,
    });
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
