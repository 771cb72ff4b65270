//! The `/_maskgate/` admin API: health and metrics.

pub mod metrics;

pub use metrics::Metrics;

/// Path prefix of the admin API.
pub const PREFIX: &str = "/_maskgate/";

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::identity::identify;
use crate::proxy::pipeline::refuse;
use crate::proxy::{ConnInfo, GatewayBody, Shared};

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    id: &str,
) -> Response<GatewayBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert("x-request-id", v);
    }
    resp
}

/// Serves `/_maskgate/…`. Health needs no identity and shows no data;
/// everything else needs an identified caller.
pub async fn handle(
    shared: &Arc<Shared>,
    conn: &ConnInfo,
    req: Request<Incoming>,
    id: &str,
) -> Response<GatewayBody> {
    let path = req.uri().path();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    if path == "/_maskgate/health" {
        return if get {
            text(
                StatusCode::OK,
                "application/json",
                "{\"status\":\"ok\"}".to_owned(),
                id,
            )
        } else {
            refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use GET",
                id,
            )
        };
    }
    let config = shared.config();
    if identify(&config.policy, conn.cert.as_ref(), req.headers()).is_err() {
        shared.metrics.refused("unauthenticated");
        return crate::proxy::pipeline::refuse_error(
            &crate::proxy::GatewayError::Unauthenticated,
            id,
        );
    }
    match (path, get) {
        ("/_maskgate/metrics", true) => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(),
            id,
        ),
        _ => refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such admin endpoint",
            id,
        ),
    }
}
