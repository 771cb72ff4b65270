//! The gateway's refusals, and the one function that maps them to the wire.
//!
//! Every refusal is a JSON body `{"error":{"code":…,"message":…,"request_id":…}}`
//! with a stable code. Messages are fixed strings: nothing from the request or
//! the upstream response is ever echoed.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Why the gateway refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No identity, or one the gateway does not accept.
    #[error("authentication required")]
    Unauthenticated,
    /// The caller may not use this method on this route (or no route matched).
    #[error("not allowed")]
    Forbidden,
    /// The request is malformed.
    #[error("bad request")]
    BadRequest(&'static str),
    /// The request body is over the limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The request body cannot be stored as it is (a clear card number where
    /// it would be stored unencrypted, a value that cannot be encrypted).
    /// `detail` names the field, never a value.
    #[error("unprocessable request body")]
    Unprocessable {
        /// Stable code.
        code: &'static str,
        /// Which field, and what to do about it.
        detail: String,
    },
    /// Refused by policy, with a reason code and a sentence (an unmask
    /// request without its reason, over its limit, …).
    #[error("refused")]
    Refused {
        /// Stable code.
        code: &'static str,
        /// Why, in words (never a value).
        detail: String,
    },
    /// Too many requests: try again after this many seconds (`Retry-After`).
    #[error("rate limited")]
    TooManyRequests {
        /// Seconds until a request would pass.
        retry_after_secs: u64,
    },
    /// The identity is locked after repeated failed authentications.
    #[error("locked out")]
    LockedOut,
    /// The account is frozen (a red flag is being handled).
    #[error("account frozen")]
    AccountFrozen,
    /// A required service (the audit log) cannot be used; nothing was released.
    #[error("service unavailable")]
    Unavailable(&'static str),
    /// The request's content type cannot be inspected.
    #[error("unsupported request content type")]
    UnsupportedMediaType,
    /// The upstream could not be reached.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The upstream's response could not be rewritten safely.
    #[error("upstream response could not be rewritten")]
    UpstreamResponseInvalid(&'static str),
    /// Something inside the gateway failed.
    #[error("internal error")]
    Internal,
    /// No response head was ready within `limits.request_timeout` (a slow
    /// request body, or the request path took too long).
    #[error("request timed out")]
    RequestTimeout,
    /// The request names a host this gateway does not serve.
    #[error("misdirected request")]
    Misdirected,
    /// Too many header fields, or a head over the size limit.
    #[error("request header fields too large")]
    HeaderFieldsTooLarge,
    /// The gateway is at `limits.max_connections`.
    #[error("too many connections")]
    TooManyConnections,
}

impl GatewayError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthenticated => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden => StatusCode::FORBIDDEN,
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            GatewayError::Refused { .. } => StatusCode::FORBIDDEN,
            GatewayError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::LockedOut => StatusCode::UNAUTHORIZED,
            GatewayError::AccountFrozen => StatusCode::LOCKED,
            GatewayError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamUnavailable | GatewayError::UpstreamResponseInvalid(_) => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            GatewayError::HeaderFieldsTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Unauthenticated => "unauthenticated",
            GatewayError::Forbidden => "forbidden",
            GatewayError::BadRequest(code) => code,
            GatewayError::PayloadTooLarge => "payload_too_large",
            GatewayError::UnsupportedMediaType => "unsupported_media_type",
            GatewayError::Unprocessable { code, .. } | GatewayError::Refused { code, .. } => code,
            GatewayError::TooManyRequests { .. } => "too_many_requests",
            GatewayError::LockedOut => "locked_out",
            GatewayError::AccountFrozen => "account_frozen",
            GatewayError::Unavailable(code) => code,
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamResponseInvalid(code) => code,
            GatewayError::Internal => "internal_error",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::Misdirected => "misdirected_request",
            GatewayError::HeaderFieldsTooLarge => "request_header_too_large",
            GatewayError::TooManyConnections => "too_many_connections",
        }
    }

    /// A human-readable message (fixed text or a field name, never a value).
    pub fn message(&self) -> std::borrow::Cow<'static, str> {
        match self {
            GatewayError::Unprocessable { detail, .. } | GatewayError::Refused { detail, .. } => {
                std::borrow::Cow::Owned(detail.clone())
            }
            other => std::borrow::Cow::Borrowed(other.fixed_message()),
        }
    }

    fn fixed_message(&self) -> &'static str {
        match self {
            GatewayError::Unprocessable { .. } => "the request body cannot be stored as it is",
            GatewayError::Refused { .. } => "refused by policy",
            GatewayError::TooManyRequests { .. } => "too many requests; retry after the time in Retry-After",
            GatewayError::LockedOut => {
                "too many failed sign-ons: locked for a while, or until the security team unlocks it"
            }
            GatewayError::AccountFrozen => {
                "this account is frozen while a red flag is handled; ask the privacy officer"
            }
            GatewayError::Unavailable(_) => {
                "a service the gateway needs is unavailable; nothing was released"
            }
            GatewayError::Unauthenticated => "a valid client certificate or API key is required",
            GatewayError::Forbidden => "this caller may not use this method on this route",
            GatewayError::BadRequest(_) => "the request is malformed",
            GatewayError::PayloadTooLarge => "the request body is larger than the gateway allows",
            GatewayError::UnsupportedMediaType => {
                "the request body's content type cannot be inspected by the gateway"
            }
            GatewayError::UpstreamUnavailable => "the customer database could not be reached",
            GatewayError::UpstreamTimeout => "the customer database did not answer in time",
            GatewayError::UpstreamResponseInvalid(_) => {
                "the customer database's response could not be checked, so none of it was sent"
            }
            GatewayError::Internal => "the gateway failed; nothing was sent",
            GatewayError::RequestTimeout => {
                "the request was not received and answered in time; nothing was sent"
            }
            GatewayError::Misdirected => "this gateway does not serve the requested host",
            GatewayError::HeaderFieldsTooLarge => {
                "the request has too many header fields or they are too large"
            }
            GatewayError::TooManyConnections => {
                "the gateway has too many open connections; retry later"
            }
        }
    }

    /// Seconds for a `Retry-After` header, when the error has one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// The response for this error.
    pub fn to_response<B: From<Bytes>>(&self, request_id: &str) -> Response<B> {
        let mut resp = error_response(self.status(), self.code(), &self.message(), request_id);
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A JSON error response with the gateway's standard headers.
pub fn error_response<B: From<Bytes>>(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
) -> Response<B> {
    let body = serde_json::json!({
        "error": { "code": code, "message": message, "request_id": request_id }
    });
    let bytes = Bytes::from(body.to_string());
    let len = bytes.len();
    let mut resp = Response::new(B::from(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::STRICT_TRANSPORT_SECURITY, super::headers::hsts());
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"maskgate\""),
        );
    }
    resp
}
