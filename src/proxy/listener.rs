//! Step 1: TLS (1.2 and 1.3 only, AEAD cipher suites only, ring provider),
//! mTLS with revocation lists, HTTP/1.1 and HTTP/2 by ALPN, connection
//! limits and timeouts, graceful shutdown.
//!
//! The server certificate comes from a [`CertStore`], which can load a new
//! certificate and key (and new client-certificate trust) while the gateway
//! runs: new handshakes use them, established connections keep theirs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::identity::PeerCertificate;

use super::edge::{self, ConnEdge};
use super::edge_io::{EdgeIo, H2Streams};
use super::framing::H1Guard;
use super::{ConnInfo, ServeError, Shared};

/// TLS sessions kept for resumption (stateful; no session tickets are
/// issued for TLS 1.2 and TLS 1.3 tickets are only ids into this cache).
pub const SESSION_CACHE_SIZE: usize = 256;

/// Connections over `limits.max_connections` that are answered 503 at once;
/// beyond these, excess connections are closed without a word.
const REFUSAL_SLOTS: usize = 32;

/// Longest an over-the-limit connection is kept for its 503.
const REFUSAL_TIME: Duration = Duration::from_secs(5);

/// The cipher suites offered: AEAD only, forward secret only, strongest
/// first (the server's order is used).
pub fn cipher_suites() -> Vec<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// The ring provider restricted to [`cipher_suites`].
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: cipher_suites(),
        ..rustls::crypto::ring::default_provider()
    }
}

fn read_pem(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", path.display())))
}

fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, ServeError> {
    let certs = rustls_pemfile::certs(&mut read_pem(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServeError::Tls(format!(
            "{}: no certificate found",
            cert.display()
        )));
    }
    let key_der = rustls_pemfile::private_key(&mut read_pem(key)?.as_slice())
        .map_err(|e| ServeError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServeError::Tls(format!("{}: no private key found", key.display())))?;
    CertifiedKey::from_der(certs, key_der, provider)
        .map_err(|e| ServeError::Tls(format!("server certificate and key: {e}")))
}

fn client_verifier(
    client_ca: Option<&Path>,
    client_crl: Option<&Path>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ServeError> {
    let Some(ca) = client_ca else {
        if let Some(crl) = client_crl {
            return Err(ServeError::Tls(format!(
                "{}: a client CRL needs a client CA",
                crl.display()
            )));
        }
        return Ok(WebPkiClientVerifier::no_client_auth());
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut read_pem(ca)?.as_slice()) {
        let c = c.map_err(|e| ServeError::Tls(format!("{}: {e}", ca.display())))?;
        roots
            .add(c)
            .map_err(|e| ServeError::Tls(format!("{}: {e}", ca.display())))?;
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
            // API-key callers connect without a certificate; a certificate
            // that is presented must still verify.
            .allow_unauthenticated();
    if let Some(crl) = client_crl {
        let crls = rustls_pemfile::crls(&mut read_pem(crl)?.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ServeError::Tls(format!("{}: {e}", crl.display())))?;
        if crls.is_empty() {
            return Err(ServeError::Tls(format!(
                "{}: no certificate revocation list found",
                crl.display()
            )));
        }
        // A certificate whose status the lists cannot tell, or checked
        // against a list past its nextUpdate, is refused: fail closed.
        builder = builder.with_crls(crls).enforce_revocation_expiration();
    }
    builder
        .build()
        .map_err(|e| ServeError::Tls(format!("client CA {}: {e}", ca.display())))
}

#[derive(Debug)]
struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        Some(Arc::clone(&current))
    }
}

/// The gateway's TLS material, replaceable while it runs.
///
/// - [`CertStore::reload`] swaps the server certificate and key: the next
///   handshake presents the new certificate; connections already open are
///   not touched. A chain that does not parse, or a key that does not match
///   the certificate, is refused and the old pair stays in use.
/// - [`CertStore::reload_client_auth`] rebuilds the client-certificate
///   verifier (CA and revocation lists) and with it the TLS configuration,
///   which also empties the session cache, so no session resumed afterwards
///   carries a client certificate verified under the old lists.
pub struct CertStore {
    resolver: Arc<CertResolver>,
    provider: Arc<CryptoProvider>,
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

impl CertStore {
    /// Loads the certificate, key, client CA and client CRL named by `[server]`.
    pub fn new(server: &crate::config::ServerConfig) -> Result<Arc<CertStore>, ServeError> {
        let provider = Arc::new(provider());
        let key = load_certified_key(&server.cert, &server.key, &provider)?;
        let resolver = Arc::new(CertResolver {
            current: RwLock::new(Arc::new(key)),
        });
        let verifier = client_verifier(
            server.client_ca.as_deref(),
            server.client_crl.as_deref(),
            &provider,
        )?;
        let config = build_config(&provider, &resolver, verifier)?;
        Ok(Arc::new(CertStore {
            resolver,
            provider,
            config: RwLock::new(Arc::new(config)),
        }))
    }

    /// Replaces the server certificate chain and private key (PEM files).
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), ServeError> {
        let key = load_certified_key(cert, key, &self.provider)?;
        let mut current = self
            .resolver
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *current = Arc::new(key);
        tracing::info!(target: "maskgate::tls", cert = %cert.display(), "server certificate reloaded");
        Ok(())
    }

    /// Replaces the client-certificate CA and revocation lists (and empties
    /// the session cache).
    pub fn reload_client_auth(
        &self,
        client_ca: Option<&Path>,
        client_crl: Option<&Path>,
    ) -> Result<(), ServeError> {
        let verifier = client_verifier(client_ca, client_crl, &self.provider)?;
        let config = build_config(&self.provider, &self.resolver, verifier)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        tracing::info!(target: "maskgate::tls", "client certificate trust reloaded");
        Ok(())
    }

    /// [`CertStore::reload`] and [`CertStore::reload_client_auth`] from a
    /// `[server]` section; nothing changes unless both load.
    pub fn reload_from(&self, server: &crate::config::ServerConfig) -> Result<(), ServeError> {
        let key = load_certified_key(&server.cert, &server.key, &self.provider)?;
        let verifier = client_verifier(
            server.client_ca.as_deref(),
            server.client_crl.as_deref(),
            &self.provider,
        )?;
        let config = build_config(&self.provider, &self.resolver, verifier)?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        tracing::info!(target: "maskgate::tls", "TLS material reloaded");
        Ok(())
    }

    /// The end-entity certificate presented now.
    pub fn certificate(&self) -> Option<CertificateDer<'static>> {
        let current = self
            .resolver
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner());
        current.cert.first().cloned()
    }

    /// An acceptor with the TLS configuration in force.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self.config.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(Arc::clone(&config))
    }
}

fn build_config(
    provider: &Arc<CryptoProvider>,
    resolver: &Arc<CertResolver>,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<rustls::ServerConfig, ServeError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::clone(resolver) as Arc<dyn ResolvesServerCert>);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ignore_client_order = true;
    // Resumption: stateful only (see SESSION_CACHE_SIZE); no 0-RTT data.
    cfg.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    cfg.send_tls13_tickets = 2;
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// The HTTP/1.1 and HTTP/2 connection settings from `[limits]`.
struct Builders {
    h1: hyper::server::conn::http1::Builder,
    h2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &Limits) -> Builders {
        let mut h1 = hyper::server::conn::http1::Builder::new();
        h1.timer(TokioTimer::new())
            // The edge I/O wrapper cuts idle connections and slow heads (with
            // a 408); hyper's own timer is only a backstop behind both.
            .header_read_timeout(
                limits.idle_timeout + limits.header_timeout + Duration::from_secs(1),
            )
            .max_headers(limits.max_header_count)
            .max_header_size(limits.max_header_bytes)
            // hyper's floor is 8 KiB; a head that does not fit is a 431.
            .max_buf_size(limits.max_header_bytes.max(8192))
            .keep_alive(true)
            .half_close(false);
        let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
            .max_local_error_reset_streams(limits.h2_max_local_reset_streams)
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Builders { h1, h2 }
    }
}

/// Keeps the open-connections gauge right however the task ends.
struct OpenConnection(Arc<crate::admin::Metrics>);

impl OpenConnection {
    fn new(metrics: &Arc<crate::admin::Metrics>) -> OpenConnection {
        metrics.connection(true);
        OpenConnection(Arc::clone(metrics))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connection(false);
    }
}

/// Why a connection is being served, and the slot it holds while it is.
struct Admission {
    /// Over `limits.max_connections`: every request gets 503 and the
    /// connection is closed soon.
    refuse: bool,
    _slot: OwnedSemaphorePermit,
}

/// Accepts connections until `shutdown` flips, then drains in-flight
/// requests for up to `grace`.
pub async fn accept_loop(
    listener: TcpListener,
    certs: Arc<CertStore>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let limits = shared.config().limits.clone();
    let graceful = GracefulShutdown::new();
    let builders = Arc::new(Builders::new(&limits));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    loop {
        let (tcp, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let admission = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => Admission {
                refuse: false,
                _slot: p,
            },
            Err(_) => {
                shared.metrics.edge("connection_limit");
                tracing::warn!(target: "maskgate::edge", peer = %remote, limit = limits.max_connections, "connection limit reached");
                match Arc::clone(&refusals).try_acquire_owned() {
                    Ok(p) => Admission {
                        refuse: true,
                        _slot: p,
                    },
                    Err(_) => continue,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = certs.acceptor();
        let shared = Arc::clone(&shared);
        let builders = Arc::clone(&builders);
        let watcher = graceful.watcher();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _open = OpenConnection::new(&shared.metrics);
            serve_connection(
                tcp, remote, acceptor, shared, builders, watcher, &limits, admission,
            )
            .await;
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    builders: Arc<Builders>,
    watcher: Watcher,
    limits: &Limits,
    admission: Admission,
) {
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            shared.metrics.edge("tls_handshake_failed");
            tracing::info!(target: "maskgate::tls", peer = %remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            shared.metrics.edge("tls_handshake_timeout");
            tracing::info!(target: "maskgate::tls", peer = %remote, "TLS handshake timed out");
            return;
        }
    };
    let (h2, cert) = {
        let session = tls.get_ref().1;
        let h2 = session.alpn_protocol() == Some(b"h2".as_slice());
        let cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(PeerCertificate::from_der);
        (h2, cert)
    };
    let conn = Arc::new(ConnInfo { remote, cert });
    let config = shared.config();
    let trusted_peer = config
        .server
        .trusted_proxies
        .iter()
        .any(|n| n.contains(remote.ip()));
    let refuse = admission.refuse;
    let result = if h2 {
        let streams = Arc::new(H2Streams::default());
        let io = TokioIo::new(EdgeIo::h2(
            tls,
            Arc::clone(&streams),
            limits.idle_timeout,
            Arc::clone(&shared.metrics),
        ));
        let edge = Arc::new(ConnEdge {
            h1: None,
            h2: Some(streams),
            trusted_peer,
        });
        let svc = service(Arc::clone(&shared), conn, edge, refuse);
        run(watcher, builders.h2.serve_connection(io, svc), refuse).await
    } else {
        let guard = Arc::new(H1Guard::new());
        let io: EdgeIo<TlsStream<TcpStream>> =
            EdgeIo::h1(tls, Arc::clone(&guard), limits, Arc::clone(&shared.metrics));
        let edge = Arc::new(ConnEdge {
            h1: Some(guard),
            h2: None,
            trusted_peer,
        });
        let svc = service(Arc::clone(&shared), conn, edge, refuse);
        run(
            watcher,
            builders.h1.serve_connection(TokioIo::new(io), svc),
            refuse,
        )
        .await
    };
    drop(admission);
    if let Err(e) = result {
        classify(&shared.metrics, &e);
        tracing::debug!(peer = %remote, error = %e, "connection ended with an error");
    }
}

type ServiceFuture = futures_util::future::BoxFuture<
    'static,
    Result<http::Response<super::GatewayBody>, Infallible>,
>;

/// The connection's service: the edge, then the request path (or a 503
/// for every request when the connection is over the limit).
fn service(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    edge: Arc<ConnEdge>,
    refuse: bool,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<super::GatewayBody>,
    Error = Infallible,
    Future = ServiceFuture,
> {
    service_fn(move |req| -> ServiceFuture {
        let shared = Arc::clone(&shared);
        let conn = Arc::clone(&conn);
        let edge = Arc::clone(&edge);
        Box::pin(async move {
            if refuse {
                Ok(edge::over_capacity(&shared, &conn, &req))
            } else {
                edge::serve(shared, conn, edge, req).await
            }
        })
    })
}

/// Drives one connection under the graceful-shutdown watcher; an over-limit
/// connection gets at most [`REFUSAL_TIME`].
async fn run<C>(watcher: Watcher, conn: C, refuse: bool) -> Result<(), hyper::Error>
where
    C: hyper_util::server::graceful::GracefulConnection<Error = hyper::Error>,
{
    let served = watcher.watch(conn);
    if refuse {
        tokio::time::timeout(REFUSAL_TIME, served)
            .await
            .unwrap_or(Ok(()))
    } else {
        served.await
    }
}

/// Counts why a connection ended badly: hyper's own refusals (a head it
/// could not parse, 400; or too large, 431), its backstop header timer,
/// and HTTP/2 connections closed for too many resets.
fn classify(metrics: &crate::admin::Metrics, e: &hyper::Error) {
    use std::error::Error as _;
    if e.is_parse_too_large() {
        metrics.edge("h1_head_too_large");
    } else if e.is_parse() {
        metrics.edge("h1_parse_error");
    } else if e.is_timeout() {
        metrics.edge("header_timeout");
    } else {
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(h2e) = s.downcast_ref::<h2::Error>() {
                if h2e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) {
                    metrics.edge("h2_too_many_resets");
                }
                break;
            }
            source = s.source();
        }
    }
}

/// Binds the listening socket.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind(addr, e.to_string()))
}
