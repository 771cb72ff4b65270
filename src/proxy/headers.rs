//! Header hygiene, both ways (steps 5 and 7 of the request path).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and their old spellings.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Conditional and range headers: dropped on red-flag routes so a client can
/// neither read part of a body nor learn by validators whether it changed.
const CONDITIONAL: [&str; 6] = [
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
];

/// Headers the gateway sets itself towards the upstream; a client's copies
/// are removed first.
const GATEWAY_SET: [&str; 9] = [
    "x-unmask",
    "x-unmask-reason",
    "x-unmask-grant",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-on-behalf-of",
];

/// Removes hop-by-hop headers, including those a `Connection` header names,
/// except names the gateway itself relies on (a client cannot make the
/// gateway drop them).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !protected(n))
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
}

fn protected(name: &HeaderName) -> bool {
    let n = name.as_str();
    n == "x-request-id"
        || n.starts_with("x-maskgate-")
        || n == "authorization"
        || n == "content-type"
        || n == "content-length"
        || n == "content-encoding"
        || n == "host"
}

/// Cleans a client's request headers before they go upstream.
pub fn protect_request_headers(headers: &mut HeaderMap, red_flag_route: bool) {
    strip_hop_by_hop(headers);
    let spoofable: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-maskgate-"))
        .cloned()
        .collect();
    for n in spoofable {
        headers.remove(n);
    }
    for n in GATEWAY_SET {
        headers.remove(n);
    }
    // The caller's credentials are for the gateway, not the database.
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::COOKIE);
    headers.remove(header::HOST);
    if red_flag_route {
        for n in CONDITIONAL {
            headers.remove(n);
        }
    }
    // Only codings the gateway can undo may come back.
    let accept = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(supported_accept_encoding);
    match accept {
        Some(Some(v)) => {
            headers.insert(header::ACCEPT_ENCODING, v);
        }
        _ => {
            headers.insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
        }
    }
}

fn supported_accept_encoding(value: &str) -> Option<HeaderValue> {
    let kept: Vec<&str> = value
        .split(',')
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| matches!(c.to_ascii_lowercase().as_str(), "gzip" | "deflate" | "br"))
        .collect();
    if kept.is_empty() {
        None
    } else {
        HeaderValue::from_str(&kept.join(", ")).ok()
    }
}

/// Cleans an upstream response's headers before they go to the client.
/// `rewritten` says whether the body bytes may change.
pub fn protect_response_headers(headers: &mut HeaderMap, rewritten: bool) {
    strip_hop_by_hop(headers);
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-maskgate-"))
        .cloned()
        .collect();
    for n in internal {
        headers.remove(n);
    }
    if rewritten {
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::ETAG);
        headers.remove(header::ACCEPT_RANGES);
        headers.remove(header::CONTENT_RANGE);
        headers.remove("content-md5");
        headers.remove("digest");
        headers.remove("repr-digest");
        headers.remove("content-digest");
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The request id: the client's when it is sane, else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        })
        .map_or_else(new_request_id, str::to_owned)
}

/// A fresh random request id (128 bits, hex).
pub fn new_request_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // The id only correlates logs; a clock-based id is good enough then.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return format!("{nanos:032x}");
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cannot_remove_protected_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("x-request-id, x-foo, keep-alive"),
        );
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        h.insert("x-foo", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-request-id").is_some());
        assert!(h.get("x-foo").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("keep-alive").is_none());
    }

    #[test]
    fn spoofed_and_conditional_headers_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-maskgate-role", "billing"),
            ("x-forwarded-for", "1.2.3.4"),
            ("range", "bytes=0-10"),
            ("if-none-match", "\"x\""),
            ("authorization", "Bearer k"),
            ("accept-encoding", "gzip;q=1, zstd, br"),
        ] {
            h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        protect_request_headers(&mut h, true);
        for k in [
            "x-maskgate-role",
            "x-forwarded-for",
            "range",
            "if-none-match",
            "authorization",
        ] {
            assert!(h.get(k).is_none(), "{k}");
        }
        assert_eq!(h.get("accept-encoding").unwrap(), "gzip, br");
    }
}
