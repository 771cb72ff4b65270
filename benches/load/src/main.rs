//! `loadkit`: the helper programs of `benches/load/run`.
//!
//! ```text
//! loadkit setup DIR GATEWAY_ADDR STREAM_GATEWAY_ADDR UPSTREAM_ADDR CS_KEY COLLECTIONS_KEY
//! loadkit upstream ADDR DIR
//! loadkit proxy ADDR UPSTREAM_ADDR CERT_PEM KEY_PEM
//! loadkit check-stream < RESPONSE_BODY
//! ```
//!
//! - `setup` writes, with maskgate's own demo code, everything the run needs
//!   into DIR: the demo CA and server certificate (`certs/`), the default
//!   city policy (`policies/`) with two API-key principals added and the
//!   collections unmask budgets raised for a load test, keys and two gateway
//!   configs (`maskgate-load.toml`, `maskgate-stream.toml`), and the fixed
//!   response bodies (`bodies/`) cut from the demo's synthetic accounts.
//! - `upstream` serves those bodies over plain HTTP/1.1 with keep-alive:
//!   every request costs the same whichever proxy sends it.
//! - `proxy` is the baseline: a plain pass-through reverse proxy, hyper 1 +
//!   tokio-rustls with maskgate's TLS settings, streaming, no masking.
//! - `check-stream` reads a (streamed) list response on stdin in constant
//!   memory and prints one JSON object: bytes read, `"ssn"` values still
//!   in the clear and masked, and whether the document ended as a list does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const USAGE: &str = "usage:
  loadkit setup DIR GATEWAY_ADDR STREAM_GATEWAY_ADDR UPSTREAM_ADDR CS_KEY COLLECTIONS_KEY
  loadkit upstream ADDR DIR
  loadkit proxy ADDR UPSTREAM_ADDR CERT_PEM KEY_PEM
  loadkit check-stream < RESPONSE_BODY";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(&args[1..]),
        Some("upstream") => runtime().and_then(|rt| rt.block_on(upstream(&args[1..]))),
        Some("proxy") => runtime().and_then(|rt| rt.block_on(proxy(&args[1..]))),
        Some("check-stream") => check_stream(),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadkit: {e}");
            ExitCode::from(2)
        }
    }
}

/// The same runtime maskgate uses: multi-threaded, one worker per core.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s.parse().map_err(|e| format!("{s}: {e}"))?;
    if !a.ip().is_loopback() {
        return Err(format!(
            "{s}: only loopback addresses are used by the load bench"
        ));
    }
    Ok(a)
}

// ---------------------------------------------------------------- setup

/// API-key principals with the collections role (see `setup`).
const COLLECTIONS_PRINCIPALS: usize = 8;

/// Target sizes of the fixed bodies.
const SIZES: [(&str, usize); 3] = [("2k", 2 * 1024), ("64k", 64 * 1024), ("1m", 1024 * 1024)];

fn setup(args: &[String]) -> Result<(), String> {
    let [dir, gateway, stream_gateway, upstream, cs_key, coll_key] = args else {
        return Err(USAGE.to_owned());
    };
    let dir = PathBuf::from(dir);
    let (gateway, stream_gateway, upstream) =
        (addr(gateway)?, addr(stream_gateway)?, addr(upstream)?);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    maskgate::demo::certs::generate(&dir.join("certs"), &["customer-service", "collections"])
        .map_err(|e| format!("certificates: {e}"))?;

    // The default city policy, with the two API-key callers the load uses
    // and collections' unmask budgets raised (as tests/crash.rs does): the
    // shipped 50 an hour would refuse a load test after a fraction of a second.
    let policy = dir.join("policies");
    maskgate::demo::run::ensure_policy(&policy).map_err(|e| format!("policy: {e}"))?;
    let roles_path = policy.join("roles.toml");
    let roles = std::fs::read_to_string(&roles_path).map_err(|e| e.to_string())?;
    let raised = roles
        .replace(
            "max_records_per_hour = 50",
            "max_records_per_hour = 1000000",
        )
        .replace("max_records_per_day = 200", "max_records_per_day = 1000000")
        // The per-principal request rates (50 a second) would answer most
        // of a load test with 429: raised, so that every request is served;
        // the limiter still runs on each request, its cost is measured.
        .replace(
            "rate = { per_second = 50, burst = 100 }",
            "rate = { per_second = 1000000, burst = 1000000 }",
        );
    if raised == roles {
        return Err("roles.toml: the collections budgets to raise were not found".to_owned());
    }
    std::fs::write(&roles_path, raised).map_err(|e| e.to_string())?;
    let principals_path = policy.join("principals.toml");
    let mut principals = std::fs::read_to_string(&principals_path).map_err(|e| e.to_string())?;
    if !principals.contains("bench-customer-service") {
        // Collections' unmask budget counts records per principal and is at
        // most 1,000,000 an hour: the unmask load is spread over
        // COLLECTIONS_PRINCIPALS callers, keys `<COLLECTIONS_KEY>-1`, `-2`, ….
        let coll_keys: Vec<(String, String)> = (1..=COLLECTIONS_PRINCIPALS)
            .map(|i| (format!("bench-collections-{i}"), format!("{coll_key}-{i}")))
            .collect();
        let mut callers = vec![(
            "bench-customer-service".to_owned(),
            "customer-service",
            cs_key.clone(),
        )];
        callers.extend(coll_keys.into_iter().map(|(n, k)| (n, "collections", k)));
        for (name, role, key) in callers {
            let hash = hex::encode(maskgate::identity::api_key_hash(key.as_bytes()));
            principals.push_str(&format!(
                "\n# Added by benches/load: an API-key caller (wrk sends no client certificate).\n\
                 [[principals]]\nname = \"{name}\"\nroles = [\"{role}\"]\napi_key_sha256 = \"{hash}\"\n"
            ));
        }
        std::fs::write(&principals_path, principals).map_err(|e| e.to_string())?;
    }

    // Two gateway configs (card encryption and the durable audit log on, as
    // the demo runs): one for the load runs, one for the streaming run.
    for (listen, name) in [
        (gateway, "maskgate-load.toml"),
        (stream_gateway, "maskgate-stream.toml"),
    ] {
        let written = maskgate::demo::run::write_full_config(&dir, listen, upstream, &policy)?;
        std::fs::rename(&written, dir.join(name)).map_err(|e| e.to_string())?;
    }

    // Fixed bodies from the demo's synthetic accounts.
    let bodies = dir.join("bodies");
    std::fs::create_dir_all(&bodies).map_err(|e| e.to_string())?;
    let accounts = maskgate::demo::data::generate(
        maskgate::demo::run::DEMO_SEED,
        maskgate::demo::run::DEMO_ACCOUNTS * 2,
    );
    let records: Vec<String> = accounts
        .iter()
        .map(maskgate::demo::data::account_to_string)
        .collect();
    // One account at the document root (GET /accounts/{id}): a residential
    // one with an SSN. Demo accounts are under 1 KB each.
    let with_ssn: Vec<String> = accounts
        .iter()
        .zip(&records)
        .filter(|(a, _)| a["ssn"].is_string())
        .map(|(_, r)| r.clone())
        .collect();
    let single = with_ssn.first().ok_or("no account with an SSN")?;
    write(&bodies.join("record.json"), single.as_bytes())?;
    // 2 KB: a short list page (GET /accounts) of accounts that all carry an
    // SSN, so the unmask mix has an SSN to release in every record.
    let body = list_closest(&with_ssn, SIZES[0].1)?;
    write(&bodies.join("2k.json"), body.as_bytes())?;
    // 64 KB and 1 MB: list pages of consecutive demo accounts, as many as
    // come closest to the size.
    for (name, size) in &SIZES[1..] {
        let body = list_closest(&records, *size)?;
        write(&bodies.join(format!("{name}.json")), body.as_bytes())?;
    }
    // The streamed 200 MB body repeats these accounts.
    let mut jsonl = records[..256].join("\n");
    jsonl.push('\n');
    write(&bodies.join("records.jsonl"), jsonl.as_bytes())?;
    for name in ["record", "2k", "64k", "1m"] {
        let len = std::fs::metadata(bodies.join(format!("{name}.json")))
            .map_err(|e| e.to_string())?
            .len();
        println!("body {name}: {len} bytes");
    }
    Ok(())
}

fn list(records: &[String]) -> String {
    format!(
        "{{\"accounts\":[{}],\"total\":{},\"limit\":{},\"offset\":0}}",
        records.join(","),
        maskgate::demo::run::DEMO_ACCOUNTS,
        records.len()
    )
}

fn list_closest(records: &[String], size: usize) -> Result<String, String> {
    let mut best: Option<String> = None;
    for n in 1..=records.len() {
        let body = list(&records[..n]);
        let better = best
            .as_ref()
            .is_none_or(|b| body.len().abs_diff(size) < b.len().abs_diff(size));
        if better {
            best = Some(body);
        } else if best.as_ref().is_some_and(|b| b.len() > size) {
            break;
        }
    }
    match best {
        Some(b) if b.len() * 4 >= size * 3 => Ok(b),
        _ => Err(format!("not enough accounts for a {size}-byte list")),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------- upstream

struct Bodies {
    record: Bytes,
    b2k: Bytes,
    b64k: Bytes,
    b1m: Bytes,
    /// `,` + about 64 KB of accounts joined by `,`: the streamed body's unit.
    block: Bytes,
    block_records: u64,
}

type UpBody = BoxBody<Bytes, Infallible>;

/// Connections the upstream has accepted.
static ACCEPTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Serves the fixed bodies:
///
/// - `GET /accounts/{anything}` → the single account;
/// - `GET /accounts?size=2k` / `?size=64k` / `?size=1m` → the list pages;
/// - `GET /accounts?stream=BYTES` → a list of at least BYTES, chunked,
///   generated on the fly by repeating one block (no buffering);
/// - `GET /_stats` → `{"accepted":N}`: connections accepted so far (how
///   often a proxy opened a new upstream connection).
async fn upstream(args: &[String]) -> Result<(), String> {
    let [listen, dir] = args else {
        return Err(USAGE.to_owned());
    };
    let dir = PathBuf::from(dir).join("bodies");
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map(Bytes::from)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let records = read("records.jsonl")?;
    let lines: Vec<&[u8]> = records
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut block = Vec::with_capacity(70 * 1024);
    let mut block_records = 0u64;
    for line in lines.iter().cycle() {
        block.push(b',');
        block.extend_from_slice(line);
        block_records += 1;
        if block.len() >= 64 * 1024 {
            break;
        }
    }
    let bodies = Arc::new(Bodies {
        record: read("record.json")?,
        b2k: read("2k.json")?,
        b64k: read("64k.json")?,
        b1m: read("1m.json")?,
        block: Bytes::from(block),
        block_records,
    });
    let listener = TcpListener::bind(addr(listen)?)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    loop {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let bodies = Arc::clone(&bodies);
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let bodies = Arc::clone(&bodies);
                async move { Ok::<_, Infallible>(serve_body(&bodies, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn json_response(status: StatusCode, body: UpBody, len: Option<usize>) -> Response<UpBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(len) = len {
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    resp
}

fn fixed(bytes: &Bytes) -> Response<UpBody> {
    json_response(
        StatusCode::OK,
        Full::new(bytes.clone()).boxed(),
        Some(bytes.len()),
    )
}

fn serve_body(bodies: &Bodies, req: &Request<Incoming>) -> Response<UpBody> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then_some(v)
        })
    };
    if path == "/_stats" {
        let n = ACCEPTED.load(std::sync::atomic::Ordering::Relaxed);
        let body = Bytes::from(format!("{{\"accepted\":{n}}}"));
        return fixed(&body);
    }
    if path.starts_with("/accounts/") {
        return fixed(&bodies.record);
    }
    if path == "/accounts" {
        if let Some(n) = param("stream").and_then(|v| v.parse::<u64>().ok()) {
            let blocks = n.div_ceil(bodies.block.len() as u64).max(1);
            let body = StreamBody {
                blocks_left: blocks,
                first: true,
                total_records: blocks * bodies.block_records,
                block: bodies.block.clone(),
            };
            return json_response(StatusCode::OK, body.boxed(), None);
        }
        return match param("size") {
            Some("2k") => fixed(&bodies.b2k),
            Some("1m") => fixed(&bodies.b1m),
            _ => fixed(&bodies.b64k),
        };
    }
    let body = Bytes::from_static(br#"{"error":{"code":"not_found","message":"no such path"}}"#);
    json_response(
        StatusCode::NOT_FOUND,
        Full::new(body.clone()).boxed(),
        Some(body.len()),
    )
}

/// `{"accounts":[` + N blocks + `],"total":…}`, one frame per block, each
/// frame a reference to the same bytes.
struct StreamBody {
    blocks_left: u64,
    first: bool,
    total_records: u64,
    block: Bytes,
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.first {
            this.first = false;
            this.blocks_left -= 1;
            let mut head = b"{\"accounts\":[".to_vec();
            head.extend_from_slice(&this.block[1..]);
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(head)))));
        }
        if this.blocks_left > 0 {
            this.blocks_left -= 1;
            return Poll::Ready(Some(Ok(Frame::data(this.block.clone()))));
        }
        if this.total_records > 0 {
            let tail = format!(
                "],\"total\":{n},\"limit\":{n},\"offset\":0}}",
                n = this.total_records
            );
            this.total_records = 0;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        !self.first && self.blocks_left == 0 && self.total_records == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

// ---------------------------------------------------------------- proxy

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Headers that belong to one hop (RFC 9110 §7.6.1) and are not forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// maskgate's server TLS settings (src/proxy/listener.rs): ring provider,
/// TLS 1.3 and 1.2, ALPN h2 and http/1.1, the same certificate. No client
/// certificates: the baseline authenticates nobody.
fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or("no private key")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

async fn proxy(args: &[String]) -> Result<(), String> {
    let [listen, upstream, cert, key] = args else {
        return Err(USAGE.to_owned());
    };
    let upstream = addr(upstream)?;
    let authority: http::uri::Authority =
        upstream.to_string().parse().map_err(|e| format!("{e}"))?;
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(Path::new(cert), Path::new(key))?));
    // The same pool as maskgate's default upstream client.
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(2)));
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(32)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(http);
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let listener = TcpListener::bind(addr(listen)?)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let client = client.clone();
        let authority = authority.clone();
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = service_fn(move |req| forward(client.clone(), authority.clone(), req));
            let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
        });
    }
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    authority: http::uri::Authority,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(pq)
        .build();
    let Ok(uri) = uri else {
        return Ok(error(StatusCode::BAD_REQUEST));
    };
    parts.uri = uri;
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(HOST, host);
    }
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, body.boxed()))
        }
        Err(_) => Ok(error(StatusCode::BAD_GATEWAY)),
    }
}

fn error(status: StatusCode) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from_static(b"{\"error\":\"upstream\"}"))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

// ---------------------------------------------------------------- check-stream

/// `ddd-dd-dddd"`: an SSN value in the clear, closing quote included.
fn clear_ssn(v: &[u8]) -> bool {
    v.len() >= 12
        && v[..11].iter().enumerate().all(|(i, &b)| {
            if i == 3 || i == 6 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
        && v[11] == b'"'
}

fn check_stream() -> Result<(), String> {
    use std::io::Read;
    const KEY: &[u8] = b"\"ssn\":\"";
    const NEED: usize = KEY.len() + 12;
    let mut stdin = std::io::stdin().lock();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut buf: Vec<u8> = Vec::with_capacity(128 * 1024);
    let mut tail: Vec<u8> = Vec::with_capacity(128 * 1024);
    let (mut total, mut clear, mut masked) = (0u64, 0u64, 0u64);
    loop {
        let n = match stdin.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        let eof = n == 0;
        total += n as u64;
        buf.extend_from_slice(&chunk[..n]);
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 64);
        }
        let mut i = 0;
        while i + KEY.len() <= buf.len() && (eof || i + NEED <= buf.len()) {
            if buf[i] == b'"' && buf[i..].starts_with(KEY) {
                if clear_ssn(&buf[i + KEY.len()..]) {
                    clear += 1;
                } else {
                    masked += 1;
                }
                i += KEY.len();
            } else {
                i += 1;
            }
        }
        buf.drain(..i);
        if eof {
            break;
        }
    }
    let end = String::from_utf8_lossy(&tail);
    let complete = end.trim_end().ends_with("\"offset\":0}");
    println!(
        "{{\"bytes\":{total},\"ssn_clear\":{clear},\"ssn_masked\":{masked},\"complete\":{complete}}}"
    );
    Ok(())
}
