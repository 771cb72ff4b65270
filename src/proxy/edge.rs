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
//! time).

use std::convert::Infallible;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

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
    /// The peer is one of `server.trusted_proxies`.
    pub trusted_peer: bool,
}

/// Serves one request: the edge checks, then the request path.
pub async fn serve(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    edge: Arc<ConnEdge>,
    mut req: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    let config = shared.config();
    let h1 = req.version() < Version::HTTP_2;
    let resp = match check(&config, &edge, &mut req) {
        Err(e) => {
            let id = request_id(req.headers());
            refusal(&shared, &conn, &e, &id, h1)
        }
        Ok(()) => {
            let handled = tokio::time::timeout(
                config.limits.request_timeout,
                super::pipeline::handle(Arc::clone(&shared), Arc::clone(&conn), req),
            )
            .await;
            match handled {
                Ok(Ok(resp)) => resp,
                Ok(Err(never)) => match never {},
                Err(_) => refusal(
                    &shared,
                    &conn,
                    &GatewayError::RequestTimeout,
                    &new_request_id(),
                    h1,
                ),
            }
        }
    };
    Ok(match &edge.h1 {
        Some(guard) => track_end(resp, Arc::clone(guard)),
        None => resp,
    })
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
    req: &mut Request<Incoming>,
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

/// Tells the connection's guard when the response body is gone (sent or
/// abandoned), so that the header timer knows no response is in progress.
fn track_end(resp: Response<GatewayBody>, guard: Arc<H1Guard>) -> Response<GatewayBody> {
    resp.map(|body| {
        EndSignal {
            inner: body,
            guard: Some(guard),
        }
        .boxed_unsync()
    })
}

struct EndSignal {
    inner: GatewayBody,
    guard: Option<Arc<H1Guard>>,
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
