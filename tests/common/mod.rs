//! Shared harness for whole-gateway tests: real TLS on loopback, generated
//! certificates, the demo customer database (or a scripted upstream), and
//! the shipped default policy plus a few test principals.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use maskgate::class::FieldClass;
use maskgate::config::Config;
use maskgate::demo;
use maskgate::proxy::GatewayHandle;

/// Roles of the default policy.
pub const ROLES: [&str; 9] = demo::run::ROLES;

/// 2026-07-15T19:00:00Z: a Wednesday, 12:00 in America/Los_Angeles.
pub const WEDNESDAY_NOON_PALO_ALTO: u64 = 1_784_142_000;

/// The API key of the test principal `report-app` (customer-service role).
pub const TEST_API_KEY: &str = "test-key-4f1d8a2c9b7e6d5f";

pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "maskgate-it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies the shipped policy and adds test principals: an API-key app, a
/// revoked principal, and a certificate name no principal has.
fn write_test_policy(dir: &Path) -> PathBuf {
    let policy_dir = dir.join("policies");
    std::fs::create_dir_all(&policy_dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for f in demo::config::POLICY_FILES {
        std::fs::copy(src.join(f), policy_dir.join(f)).unwrap();
    }
    let hash = hex::encode(maskgate::identity::api_key_hash(TEST_API_KEY.as_bytes()));
    let mut principals = std::fs::read_to_string(policy_dir.join("principals.toml")).unwrap();
    principals.push_str(&format!(
        "\n[[principals]]\nname = \"report-app\"\nroles = [\"customer-service\"]\ncert_names = []\napi_key_sha256 = \"{hash}\"\n\n[[principals]]\nname = \"revoked-app\"\nroles = [\"billing\"]\ncert_names = [\"revoked-app\"]\nrevoked = true\n"
    ));
    std::fs::write(policy_dir.join("principals.toml"), principals).unwrap();
    policy_dir
}

pub struct Upstream {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The demo customer database with `accounts` synthetic accounts.
pub async fn demo_upstream(dir: &Path, accounts: usize) -> Upstream {
    let store = Arc::new(
        demo::store::Store::open(&dir.join("accounts.jsonl"), || {
            demo::data::generate(demo::run::DEMO_SEED, accounts)
        })
        .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(demo::upstream::serve(listener, store, async move {
        let _ = rx.await;
    }));
    Upstream {
        addr,
        stop: Some(tx),
    }
}

/// What a scripted upstream saw.
#[derive(Clone, Default)]
pub struct Seen(pub Arc<Mutex<Vec<(Method, String, HeaderMap)>>>);

impl Seen {
    pub fn last(&self) -> (Method, String, HeaderMap) {
        self.0
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream saw no request")
    }
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A scripted upstream: `respond` builds each response; every request is recorded.
pub async fn scripted_upstream<F, Fut>(respond: F) -> (Upstream, Seen)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let seen2 = seen.clone();
    let respond = Arc::new(respond);
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                _ = &mut rx => break,
            };
            let seen = seen2.clone();
            let respond = Arc::clone(&respond);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    let respond = Arc::clone(&respond);
                    async move {
                        seen.0.lock().unwrap().push((
                            req.method().clone(),
                            req.uri().to_string(),
                            req.headers().clone(),
                        ));
                        Ok::<_, Infallible>(respond(req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (
        Upstream {
            addr,
            stop: Some(tx),
        },
        seen,
    )
}

pub fn json_response(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// How a test gateway is set up.
#[derive(Default, Clone)]
pub struct Options {
    /// Card encryption (fresh keyring under `dir/keys`) and the audit log on.
    pub secure: bool,
    /// Encrypt card numbers found in unnamed fields instead of refusing.
    pub encrypt_detected_cards: bool,
    /// The clock for grants and budgets.
    pub clock: Option<Arc<maskgate::unmask::ManualClock>>,
    /// Audit log file size before rotation.
    pub audit_rotate_bytes: Option<u64>,
    /// The audit witness directory.
    pub audit_witness_dir: Option<PathBuf>,
    /// Edits the copied policy files (their directory) before they are loaded.
    pub edit_policy: Option<fn(&Path)>,
}

pub struct Env {
    pub dir: PathBuf,
    pub gateway: Option<GatewayHandle>,
    pub addr: SocketAddr,
    pub upstream: Upstream,
}

impl Env {
    /// Gateway in front of the demo database.
    pub async fn demo(tag: &str) -> Env {
        let dir = temp_dir(tag);
        let upstream = demo_upstream(&dir, 60).await;
        Env::start(dir, upstream, |_| {}).await
    }

    /// Gateway in front of `upstream`, with the loaded config adjusted by `tune`.
    pub async fn start(dir: PathBuf, upstream: Upstream, tune: impl FnOnce(&mut Config)) -> Env {
        Env::start_with(dir, upstream, Options::default(), tune).await
    }

    /// Gateway with card encryption (a fresh keyring) and the audit log on.
    pub async fn secure(
        dir: PathBuf,
        upstream: Upstream,
        options: Options,
        tune: impl FnOnce(&mut Config),
    ) -> Env {
        Env::start_with(
            dir,
            upstream,
            Options {
                secure: true,
                ..options
            },
            tune,
        )
        .await
    }

    /// A gateway whose clock starts at `unix` seconds and is moved by the
    /// test (`secure`: with card encryption and the audit log).
    pub async fn at_time(
        dir: PathBuf,
        upstream: Upstream,
        unix: u64,
        secure: bool,
    ) -> (Env, Arc<maskgate::unmask::ManualClock>) {
        let clock = Arc::new(maskgate::unmask::ManualClock::at_unix(unix));
        let options = Options {
            clock: Some(clock.clone()),
            secure,
            ..Options::default()
        };
        (Env::start_with(dir, upstream, options, |_| {}).await, clock)
    }

    /// The audit log directory (secure environments).
    pub fn audit_dir(&self) -> PathBuf {
        self.dir.join("data").join("audit")
    }

    /// Every audit record so far.
    pub fn audit_records(&self) -> Vec<maskgate::audit::Record> {
        maskgate::audit::query::query(&self.audit_dir(), &maskgate::audit::Filter::default())
            .unwrap()
            .records
    }

    pub async fn start_with(
        dir: PathBuf,
        upstream: Upstream,
        options: Options,
        tune: impl FnOnce(&mut Config),
    ) -> Env {
        let mut names: Vec<&str> = ROLES.to_vec();
        names.extend(["revoked-app", "nobody"]);
        demo::certs::generate(&dir.join("certs"), &names).unwrap();
        let policy_dir = write_test_policy(&dir);
        if let Some(edit) = options.edit_policy {
            edit(&policy_dir);
        }
        let path = demo::config::write_config(
            &dir,
            "127.0.0.1:0".parse().unwrap(),
            upstream.addr,
            &policy_dir,
        )
        .unwrap();
        let mut cfg = maskgate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        if options.secure {
            maskgate::demo::run::ensure_keys(&dir).unwrap();
            let keys = dir.join("keys");
            cfg.crypto = Some(maskgate::config::CryptoConfig {
                keyring: keys.join("keyring.mgkr"),
                kek_file: Some(keys.join("kek")),
                kek_env: None,
                encrypt_classes: vec![FieldClass::CardNumber],
                blind_index_classes: vec![FieldClass::CardNumber],
                encrypt_detected_cards: options.encrypt_detected_cards,
            });
            cfg.audit = Some(maskgate::config::AuditConfig {
                dir: dir.join("data").join("audit"),
                signing_key: keys.join("audit-signing.key"),
                checkpoint_every_records: 1000,
                checkpoint_every: Duration::from_secs(60),
                rotate_bytes: options.audit_rotate_bytes.unwrap_or(64 << 20),
                witness_dir: options.audit_witness_dir.clone(),
            });
        }
        tune(&mut cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        // A fixed time inside every default access window (a Wednesday noon
        // in Palo Alto), so results do not depend on when the tests run.
        let clock: Arc<dyn maskgate::unmask::Clock> = match &options.clock {
            Some(c) => c.clone(),
            None => Arc::new(maskgate::unmask::ManualClock::at_unix(
                WEDNESDAY_NOON_PALO_ALTO,
            )),
        };
        let gateway = maskgate::proxy::start_with_clock(cfg, listener, clock)
            .await
            .unwrap();
        let addr = gateway.local_addr;
        Env {
            dir,
            gateway: Some(gateway),
            addr,
            upstream,
        }
    }

    pub fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// A client presenting `identity`'s certificate (None: no certificate).
    pub fn client(&self, identity: Option<&str>, h2: bool) -> TestClient {
        let certs = self.certs();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut std::fs::read(certs.join("ca.pem")).unwrap().as_slice())
        {
            roots.add(c.unwrap()).unwrap();
        }
        tls_client(
            roots,
            identity.map(|n| {
                (
                    certs.join(format!("{n}.pem")),
                    certs.join(format!("{n}.key")),
                )
            }),
            self.addr,
            h2,
        )
    }

    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
    }
}

pub fn tls_client(
    roots: rustls::RootCertStore,
    identity: Option<(PathBuf, PathBuf)>,
    addr: SocketAddr,
    h2: bool,
) -> TestClient {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let tls = match identity {
        Some((cert, key)) => {
            let certs = rustls_pemfile::certs(&mut std::fs::read(cert).unwrap().as_slice())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut std::fs::read(key).unwrap().as_slice())
                .unwrap()
                .unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let https = if h2 {
        https.enable_http2().build()
    } else {
        https.enable_http1().build()
    };
    let client = Client::builder(TokioExecutor::new())
        .http2_only(h2)
        .build(https);
    TestClient {
        client,
        base: format!("https://127.0.0.1:{}", addr.port()),
    }
}

pub struct TestClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub base: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

impl TestClient {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], b"").await.unwrap()
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers, b"").await.unwrap()
    }
}

impl TestClient {
    /// GET that reports transport errors instead of panicking.
    pub async fn get_with_result(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        self.send(Method::GET, path, headers, b"").await
    }
}

impl Upstream {
    /// An upstream served elsewhere: `stop` is sent when it is dropped.
    pub fn with_stop(addr: SocketAddr, stop: tokio::sync::oneshot::Sender<()>) -> Upstream {
        Upstream {
            addr,
            stop: Some(stop),
        }
    }
}

impl TestClient {
    /// A request whose header values are raw bytes (UTF-8 beyond ASCII, obs-text).
    pub async fn send_raw_headers(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
    ) -> Result<Reply, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        for (k, v) in headers {
            let value = http::HeaderValue::from_bytes(v).map_err(|e| e.to_string())?;
            req = req.header(*k, value);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
        })
    }
}
