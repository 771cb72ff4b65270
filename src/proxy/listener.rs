//! Step 1: TLS (1.2 and 1.3 only, ring provider), mTLS, HTTP/1.1 and HTTP/2
//! by ALPN, graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::identity::PeerCertificate;

use super::{ConnInfo, ServeError, Shared};

/// Longest a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn read_pem(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|e| ServeError::Tls(format!("cannot read {}: {e}", path.display())))
}

/// Builds the server's TLS configuration.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
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
    let verifier = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut read_pem(ca)?.as_slice()) {
                let c = c.map_err(|e| ServeError::Tls(format!("{}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| ServeError::Tls(format!("{}: {e}", ca.display())))?;
            }
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                // API-key callers connect without a certificate; a certificate
                // that is presented must still verify.
                .allow_unauthenticated()
                .build()
                .map_err(|e| ServeError::Tls(format!("client CA {}: {e}", ca.display())))?
        }
        None => WebPkiClientVerifier::no_client_auth(),
    };
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key_der)
        .map_err(|e| ServeError::Tls(format!("server certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts connections until `shutdown` flips, then drains in-flight
/// requests for up to `grace`.
pub async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
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
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(target: "maskgate::tls", peer = %remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(target: "maskgate::tls", peer = %remote, "TLS handshake timed out");
                    return;
                }
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(PeerCertificate::from_der);
            let conn = Arc::new(ConnInfo { remote, cert });
            let svc = service_fn(move |req| {
                super::pipeline::handle(Arc::clone(&shared), Arc::clone(&conn), req)
            });
            let connection = builder
                .serve_connection(TokioIo::new(tls), svc)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(peer = %remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

/// Binds the listening socket.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind(addr, e.to_string()))
}
