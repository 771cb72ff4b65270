//! The edge: what every request must pass before the request path sees it.
//!
//! [`serve`] is the service of every client connection. It checks, in order:
//!
//! 1. HTTP/1.x framing: the connection's [`H1Guard`] must have accepted the
//!    same head hyper parsed, with no framing violation at or before it
//!    (`framing.rs`); refused with 400 (431 for size limits) and the
//!    connection closed;
//! 2. header count (431);
//! 3. the request target: origin-form, or absolute-form with the `https`
//!    scheme; no `CONNECT`, no `*` (400 `bad_request_target`);
//! 4. the host: exactly one `Host` on HTTP/1.x, `:authority` (or `Host`) on
//!    HTTP/2, both equal when both are given, a valid authority without
//!    user information (400 `bad_host`), and one of `server.server_names`
//!    when that list is set (421 `misdirected_request`);
//!
//! then records what a trusted proxy said about the original client (only
//! when the peer is in `server.trusted_proxies`) and runs the request path
//! under `limits.request_timeout` (408 when no response head is ready in
//! time; the access log line then says `request_timeout`, see
//! [`TimedOut`]).
//!
//! On HTTP/2 it also waits for the end of a stream that declared
//! `content-length: 0` before the request path sees it: RFC 9113 §8.1.1
//! makes DATA on such a stream malformed, and h2 resets the stream when
//! that DATA arrives, which must be before anything is forwarded. A body
//! left unread is discarded within bounds ([`super::edge_body`]), and an
//! open stream holds off the connection's idle timer
//! ([`super::edge_io::H2Streams`]).
//!
//! Every request gets its id here (the client's `X-Request-Id` when it is
//! sane, [`super::headers::request_id`]), so the edge's log lines and
//! refusals and the request path's all carry the same one.

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::edge_body::{Linger, RequestBody, TimedOut, LINGER_TIME};
use super::edge_io::{H2Streams, OpenStream};
use super::error::GatewayError;
use super::framing::{H1Guard, Violation};
use super::headers::{new_request_id, request_id, ForwardedChain};
use super::pipeline::refuse_error;
use super::{ConnInfo, GatewayBody, Shared};
use crate::config::Config;

/// What the edge knows about one client connection.
#[derive(Debug)]
pub struct ConnEdge {
    /// The HTTP/1.x framing queue (None on HTTP/2).
    pub h1: Option<Arc<H1Guard>>,
    /// The streams open on an HTTP/2 connection (None on HTTP/1.x).
    pub h2: Option<Arc<H2Streams>>,
    /// The peer is one of `server.trusted_proxies`.
    pub trusted_peer: bool,
}

/// Serves one request: the edge checks, then the request path.
pub async fn serve(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    edge: Arc<ConnEdge>,
    req: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let config = shared.config();
    let h1 = req.version() < Version::HTTP_2;
    let open_stream = edge.h2.as_ref().map(H2Streams::open);
    let linger = (!h1).then_some(Linger {
        max_bytes: config.limits.max_request_body_bytes,
        max_time: LINGER_TIME,
    });
    let mut req = req.map(|body| RequestBody::new(body, linger));
    let id = request_id(req.headers());
    let resp = match check(&config, &edge, &mut req) {
        Err(e) => refusal(&shared, &conn, &e, &id, h1),
        Ok(()) => {
            if let Ok(v) = HeaderValue::from_str(&id) {
                req.headers_mut().insert("x-request-id", v);
            }
            let timed_out = TimedOut::default();
            req.extensions_mut().insert(timed_out.clone());
            let mut handled = Box::pin(async {
                declared_empty_body_ends(&mut req).await?;
                match super::pipeline::handle(Arc::clone(&shared), Arc::clone(&conn), req).await {
                    Ok(resp) => Ok(resp),
                    Err(never) => match never {},
                }
            });
            let deadline = tokio::time::sleep(config.limits.request_timeout);
            let outcome = tokio::select! {
                outcome = &mut handled => Some(outcome),
                () = deadline => None,
            };
            match outcome {
                Some(Ok(resp)) => resp,
                Some(Err(e)) => refusal(&shared, &conn, &e, &id, h1),
                None => {
                    timed_out.set();
                    drop(handled);
                    refusal(&shared, &conn, &GatewayError::RequestTimeout, &id, h1)
                }
            }
        }
    };
    Ok(track_end(resp, edge.h1.clone(), open_stream))
}

/// Waits, on HTTP/2, for the end of a stream whose `content-length` is 0
/// (see the module docs). DATA on it is a 400 that the client never sees:
/// h2 has already reset the stream with `PROTOCOL_ERROR`.
async fn declared_empty_body_ends(req: &mut Request<RequestBody>) -> Result<(), GatewayError> {
    let declared_empty = req.version() >= Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
    if !declared_empty {
        return Ok(());
    }
    while let Some(frame) = req.body_mut().frame().await {
        match frame {
            Ok(f) if f.data_ref().is_none_or(bytes::Bytes::is_empty) => {}
            _ => return Err(GatewayError::BadRequest("content_length_mismatch")),
        }
    }
    Ok(())
}

/// The refusal for `e`, counted and logged; on HTTP/1.x a framing or time
/// refusal also closes the connection.
fn refusal(
    shared: &Shared,
    conn: &ConnInfo,
    e: &GatewayError,
    id: &str,
    h1: bool,
) -> Response<GatewayBody> {
    shared.metrics.refused(e.code());
    tracing::info!(
        target: "maskgate::edge",
        request_id = %id,
        peer = %conn.remote,
        status = e.status().as_u16(),
        code = e.code(),
        "request refused at the edge"
    );
    let mut resp = refuse_error(e, id);
    let close = matches!(
        e.status(),
        StatusCode::BAD_REQUEST
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            | StatusCode::SERVICE_UNAVAILABLE
    );
    if h1 && close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The 503 for a connection over `limits.max_connections`.
pub fn over_capacity(
    shared: &Shared,
    conn: &ConnInfo,
    req: &Request<Incoming>,
) -> Response<GatewayBody> {
    let h1 = req.version() < Version::HTTP_2;
    refusal(
        shared,
        conn,
        &GatewayError::TooManyConnections,
        &new_request_id(),
        h1,
    )
}

fn violation_error(v: Violation) -> GatewayError {
    if v.is_too_large() {
        GatewayError::HeaderFieldsTooLarge
    } else {
        GatewayError::BadRequest(v.code())
    }
}

/// The edge checks of the module docs, and the trusted proxy's chain.
pub fn check(
    config: &Config,
    edge: &ConnEdge,
    req: &mut Request<RequestBody>,
) -> Result<(), GatewayError> {
    if let Some(guard) = &edge.h1 {
        guard
            .admit(req.method(), req.uri())
            .map_err(violation_error)?;
    }
    check_head(
        config,
        req.method(),
        req.uri(),
        req.version(),
        req.headers(),
    )?;
    if edge.trusted_peer {
        let chain = ForwardedChain::from_headers(req.headers());
        req.extensions_mut().insert(chain);
    }
    Ok(())
}

/// Header count, target and host (steps 2 to 4 of the module docs).
pub fn check_head(
    config: &Config,
    method: &Method,
    uri: &http::Uri,
    version: Version,
    headers: &http::HeaderMap,
) -> Result<(), GatewayError> {
    if headers.len() > config.limits.max_header_count {
        return Err(GatewayError::HeaderFieldsTooLarge);
    }
    if method == Method::CONNECT || !uri.path().starts_with('/') {
        return Err(GatewayError::BadRequest("bad_request_target"));
    }
    match uri.scheme_str() {
        None | Some("https") => {}
        Some(_) => return Err(GatewayError::BadRequest("bad_request_target")),
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::BadRequest("bad_host"));
    }
    let host_header = host_header
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<http::uri::Authority>().ok())
                .ok_or(GatewayError::BadRequest("bad_host"))
        })
        .transpose()?;
    let names = &config.server.server_names;
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is a 400. HTTP/1.0
    // had no Host: such a request is served only when no server names are
    // configured (there is nothing to check it against).
    if version == Version::HTTP_10
        && host_header.is_none()
        && uri.authority().is_none()
        && names.is_empty()
    {
        return Ok(());
    }
    let h1 = version < Version::HTTP_2;
    if h1 && host_header.is_none() {
        return Err(GatewayError::BadRequest("missing_host"));
    }
    let authority = match (uri.authority(), host_header.as_ref()) {
        (Some(a), Some(h)) if !same_authority(a, h) => {
            return Err(GatewayError::BadRequest("host_mismatch"));
        }
        (Some(a), _) => a.clone(),
        (None, Some(h)) => h.clone(),
        (None, None) => return Err(GatewayError::BadRequest("missing_host")),
    };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(GatewayError::BadRequest("bad_host"));
    }
    if !names.is_empty() {
        let host = unbracket(authority.host());
        if !names
            .iter()
            .any(|n| unbracket(n).eq_ignore_ascii_case(host))
        {
            return Err(GatewayError::Misdirected);
        }
    }
    Ok(())
}

fn same_authority(a: &http::uri::Authority, b: &http::uri::Authority) -> bool {
    a.host().eq_ignore_ascii_case(b.host()) && a.port_u16() == b.port_u16()
}

fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// Tells the connection when the response body is gone (sent or
/// abandoned): on HTTP/1.x the guard, so that the header timer knows no
/// response is in progress; on HTTP/2 the stream count, so that the idle
/// timer runs again once no stream is open.
fn track_end(
    resp: Response<GatewayBody>,
    guard: Option<Arc<H1Guard>>,
    stream: Option<OpenStream>,
) -> Response<GatewayBody> {
    if guard.is_none() && stream.is_none() {
        return resp;
    }
    resp.map(|body| {
        EndSignal {
            inner: body,
            guard,
            _stream: stream,
        }
        .boxed_unsync()
    })
}

struct EndSignal {
    inner: GatewayBody,
    guard: Option<Arc<H1Guard>>,
    _stream: Option<OpenStream>,
}

impl Drop for EndSignal {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            g.finished();
        }
    }
}

impl http_body::Body for EndSignal {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
