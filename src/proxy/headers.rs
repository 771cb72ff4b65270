//! Header hygiene, both ways (steps 5 and 7 of the request path).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::rewrite::header::{protect_header, HeaderVerdict};
use crate::rewrite::RewriteSpec;

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

/// Client-certificate headers that TLS-terminating proxies (nginx, HAProxy,
/// Envoy, Apache, IIS ARR, cloud load balancers) set for their upstream. A
/// client could send any of them to pass for a certificate it does not
/// hold, so every one is removed; the gateway sets its own from the verified
/// certificate only under the names `[upstream.client_cert_headers]` chooses
/// ([`set_client_cert_headers`]). [`is_client_cert_header`] also catches
/// spellings not listed here.
const CLIENT_CERT: [&str; 18] = [
    "x-client-cert",
    "x-client-certificate",
    "x-client-verify",
    "x-client-dn",
    "x-ssl-client-cert",
    "x-ssl-client-verify",
    "x-ssl-client-dn",
    "x-ssl-client-s-dn",
    "x-ssl-client-i-dn",
    "x-ssl-cert",
    "x-forwarded-client-cert",
    "x-arr-clientcert",
    "x-amzn-mtls-clientcert",
    "x-amzn-mtls-clientcert-leaf",
    "ssl-client-cert",
    "ssl-client-verify",
    "client-cert",
    "client-cert-chain",
];

/// Name fragments that mark a header as client-certificate information in
/// any proxy's spelling (`X-SSL-Client-Serial`, `X-Client-Cert-Chain`,
/// `X-Client-Verify-Result`, …).
const CLIENT_CERT_FRAGMENTS: [&str; 11] = [
    "client-cert",
    "clientcert",
    "client-verify",
    "client-dn",
    "client-s-dn",
    "client-i-dn",
    "client-subject",
    "client-issuer",
    "client-serial",
    "client-fingerprint",
    "ssl-client",
];

/// True for a header name that carries (or claims to carry) a client
/// certificate or its verification result.
pub fn is_client_cert_header(name: &str) -> bool {
    CLIENT_CERT.contains(&name) || CLIENT_CERT_FRAGMENTS.iter().any(|f| name.contains(f))
}

/// Sets the client-certificate headers the upstream may trust: only the
/// names `names` configures, only from the certificate the TLS handshake
/// verified (`cert`; `None` when the caller presented none). Whatever the
/// client sent under those names is removed first, whatever the names are.
/// A subject that cannot be a header value is left out rather than altered.
pub fn set_client_cert_headers(
    headers: &mut HeaderMap,
    cert: Option<&crate::identity::PeerCertificate>,
    names: &crate::config::ClientCertHeaders,
) {
    for name in [&names.verify, &names.subject, &names.serial]
        .into_iter()
        .flatten()
    {
        headers.remove(name);
    }
    if let Some(name) = &names.verify {
        let verdict = if cert.is_some() { "SUCCESS" } else { "NONE" };
        headers.insert(name.clone(), HeaderValue::from_static(verdict));
    }
    let Some(cert) = cert else {
        return;
    };
    if let Some(name) = &names.subject {
        if let Some(v) = cert
            .names
            .first()
            .and_then(|cn| HeaderValue::from_str(cn).ok())
        {
            headers.insert(name.clone(), v);
        }
    }
    if let Some(name) = &names.serial {
        if let Ok(v) = HeaderValue::from_str(&cert.serial) {
            headers.insert(name.clone(), v);
        }
    }
}

/// Headers that make some frameworks run a different method or path than
/// the one the gateway authorized; never forwarded.
const OVERRIDES: [&str; 6] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
];

/// What a trusted proxy in front of the gateway said about the original
/// client: its forwarding headers, each list joined into one value. Put in
/// the request's extensions by the edge only when the peer is one of
/// `server.trusted_proxies`; [`set_forwarded`] appends to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardedChain {
    /// `X-Forwarded-For`.
    pub x_forwarded_for: Option<HeaderValue>,
    /// `Forwarded` (RFC 7239).
    pub forwarded: Option<HeaderValue>,
    /// `X-Forwarded-Proto`.
    pub x_forwarded_proto: Option<HeaderValue>,
    /// `X-Forwarded-Host`.
    pub x_forwarded_host: Option<HeaderValue>,
    /// `X-Real-IP`.
    pub x_real_ip: Option<HeaderValue>,
}

impl ForwardedChain {
    /// Reads the forwarding headers (before hygiene removes them).
    pub fn from_headers(headers: &HeaderMap) -> ForwardedChain {
        let joined = |name: &str| -> Option<HeaderValue> {
            let parts: Vec<&[u8]> = headers
                .get_all(name)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect();
            if parts.is_empty() {
                return None;
            }
            HeaderValue::from_bytes(&parts.join(&b", "[..])).ok()
        };
        ForwardedChain {
            x_forwarded_for: joined("x-forwarded-for"),
            forwarded: joined("forwarded"),
            x_forwarded_proto: joined("x-forwarded-proto"),
            x_forwarded_host: joined("x-forwarded-host"),
            x_real_ip: joined("x-real-ip"),
        }
    }
}

/// Sets the forwarding headers the upstream receives: the peer's address
/// (IPv4-mapped addresses as IPv4) in `X-Forwarded-For`, `Forwarded` and
/// `X-Real-IP`, and `X-Forwarded-Proto: https`. With a trusted proxy's
/// `chain` the peer is appended to its lists and its other values are kept;
/// without one (any other peer) the client's copies were removed and these
/// replace them.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    peer: std::net::IpAddr,
    chain: Option<&ForwardedChain>,
) {
    let peer = peer.to_canonical();
    let ip = peer.to_string();
    let append = |prev: Option<&HeaderValue>, next: &str| -> Option<HeaderValue> {
        match prev
            .and_then(|p| p.to_str().ok())
            .filter(|p| !p.trim().is_empty())
        {
            Some(p) => HeaderValue::from_str(&format!("{p}, {next}")).ok(),
            None => HeaderValue::from_str(next).ok(),
        }
    };
    let chain = chain.cloned().unwrap_or_default();
    if let Some(v) = append(chain.x_forwarded_for.as_ref(), &ip) {
        headers.insert("x-forwarded-for", v);
    }
    let node = if peer.is_ipv6() {
        format!("for=\"[{ip}]\";proto=https")
    } else {
        format!("for={ip};proto=https")
    };
    if let Some(v) = append(chain.forwarded.as_ref(), &node) {
        headers.insert("forwarded", v);
    }
    headers.insert(
        "x-forwarded-proto",
        chain
            .x_forwarded_proto
            .unwrap_or(HeaderValue::from_static("https")),
    );
    if let Some(h) = chain.x_forwarded_host {
        headers.insert("x-forwarded-host", h);
    }
    match chain.x_real_ip {
        Some(v) => {
            headers.insert("x-real-ip", v);
        }
        None => {
            if let Ok(v) = HeaderValue::from_str(&ip) {
                headers.insert("x-real-ip", v);
            }
        }
    }
}

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
    for n in GATEWAY_SET.iter().chain(&OVERRIDES) {
        headers.remove(*n);
    }
    let client_cert: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_client_cert_header(n.as_str()))
        .cloned()
        .collect();
    for n in client_cert {
        headers.remove(n);
    }
    // Names with `_` are dropped: CGI-style upstreams read `X_Maskgate_Role`
    // and `X-Maskgate-Role` (or `Content_Length` and `Content-Length`) as
    // the same variable, so such a name could pass for one the gateway sets
    // or removes.
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    for n in underscored {
        headers.remove(n);
    }
    // The body is re-framed whole by the gateway; the client's expectation
    // was already answered (or not) by the gateway itself.
    headers.remove(header::EXPECT);
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
/// `rewritten` says whether the body bytes may change. Every value is
/// checked under `spec` (the response's rules, actions and detectors) and
/// masked or dropped as [`crate::rewrite::header`] decides.
pub fn protect_response_headers(headers: &mut HeaderMap, rewritten: bool, spec: &RewriteSpec) {
    strip_hop_by_hop(headers);
    mask_response_headers(headers, spec);
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
        // A validator of the upstream's bytes: with If-Modified-Since it
        // would tell a caller whether unmasked data changed.
        headers.remove(header::LAST_MODIFIED);
        headers.remove(header::ACCEPT_RANGES);
        headers.remove(header::CONTENT_RANGE);
        headers.remove("content-md5");
        headers.remove("digest");
        headers.remove("repr-digest");
        headers.remove("content-digest");
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts());
}

/// Masks or drops the header values that hold red-flag values.
fn mask_response_headers(headers: &mut HeaderMap, spec: &RewriteSpec) {
    let names: Vec<HeaderName> = headers.keys().cloned().collect();
    for name in names {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        let mut kept: Vec<HeaderValue> = Vec::with_capacity(values.len());
        let mut changed = false;
        for value in values {
            match protect_header(spec, name.as_str(), value.as_bytes()) {
                HeaderVerdict::Keep => kept.push(value),
                HeaderVerdict::Replace(masked) => {
                    changed = true;
                    if let Ok(v) = HeaderValue::from_str(&masked) {
                        kept.push(v);
                    }
                }
                HeaderVerdict::Drop => changed = true,
            }
        }
        if changed {
            headers.remove(&name);
            for v in kept {
                headers.append(name.clone(), v);
            }
        }
    }
}

/// `Strict-Transport-Security` on every response: the gateway only speaks
/// HTTPS, and a browser that once reached it never tries plain HTTP.
pub fn hsts() -> HeaderValue {
    HeaderValue::from_static("max-age=31536000")
}

/// Longest run of digits a request id may hold. Request ids are written to
/// every log and echoed in every refusal; a longer run can look like a card
/// or account number to a data-loss scanner reading those logs, and could
/// carry one.
pub const MAX_REQUEST_ID_DIGIT_RUN: usize = 7;

/// The request id: the client's when it is sane (short, plain characters,
/// no run of more than [`MAX_REQUEST_ID_DIGIT_RUN`] digits), else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                && longest_digit_run(v) <= MAX_REQUEST_ID_DIGIT_RUN
        })
        .map_or_else(new_request_id, str::to_owned)
}

/// The longest run of consecutive ASCII digits in `s`.
pub fn longest_digit_run(s: &str) -> usize {
    s.split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// A fresh random request id: 32 lower-case hex characters of which every
/// eighth is a letter (`a`–`f`), so no id ever holds a run of more than
/// [`MAX_REQUEST_ID_DIGIT_RUN`] digits (about 122 random bits).
pub fn new_request_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // The id only correlates logs; a clock-based id is good enough then.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = nanos.to_be_bytes();
    }
    request_id_from(bytes)
}

fn request_id_from(bytes: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const LETTERS: &[u8; 6] = b"abcdef";
    let mut id = String::with_capacity(32);
    for (i, nibble) in bytes.iter().flat_map(|b| [b >> 4, b & 0x0f]).enumerate() {
        let c = if i % (MAX_REQUEST_ID_DIGIT_RUN + 1) == MAX_REQUEST_ID_DIGIT_RUN {
            LETTERS[usize::from(nibble) % LETTERS.len()]
        } else {
            HEX[usize::from(nibble)]
        };
        id.push(char::from(c));
    }
    id
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

    #[test]
    fn client_certificate_headers_are_dropped_in_every_spelling() {
        let mut h = HeaderMap::new();
        let sent = [
            "x-client-cert",
            "x-ssl-client-verify",
            "x-forwarded-client-cert",
            "x-ssl-client-cert",
            "x-ssl-client-dn",
            "ssl-client-cert",
            "x-client-verify",
            "x-client-dn",
            "x-ssl-client-serial",
            "x-client-cert-chain",
            "client-cert",
            "x-arr-clientcert",
            "x-amzn-mtls-clientcert-leaf",
        ];
        for k in sent {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_static("CN=it-data-management"),
            );
        }
        h.insert("x-client-id", HeaderValue::from_static("kept"));
        protect_request_headers(&mut h, false);
        for k in sent {
            assert!(h.get(k).is_none(), "{k}");
        }
        assert_eq!(h.get("x-client-id").unwrap(), "kept");
    }

    #[test]
    fn gateway_client_cert_headers_come_from_the_verified_certificate_only() {
        let names = crate::config::ClientCertHeaders {
            verify: Some(HeaderName::from_static("x-client-verify")),
            subject: Some(HeaderName::from_static("x-client-subject")),
            serial: Some(HeaderName::from_static("x-client-serial")),
        };
        let cert = crate::identity::PeerCertificate {
            names: vec!["billing".to_owned(), "billing.example".to_owned()],
            serial: "0a1b".to_owned(),
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        set_client_cert_headers(&mut h, Some(&cert), &names);
        assert_eq!(h.get("x-client-verify").unwrap(), "SUCCESS");
        assert_eq!(h.get("x-client-subject").unwrap(), "billing");
        assert_eq!(h.get("x-client-serial").unwrap(), "0a1b");
        let mut h = HeaderMap::new();
        set_client_cert_headers(&mut h, None, &names);
        assert_eq!(h.get("x-client-verify").unwrap(), "NONE");
        assert_eq!(h.len(), 1);
        let mut h = HeaderMap::new();
        set_client_cert_headers(&mut h, Some(&cert), &Default::default());
        assert!(h.is_empty());
    }

    #[test]
    fn request_ids_never_hold_a_long_digit_run() {
        // The worst case: every nibble a digit.
        let id = request_id_from([0x99; 16]);
        assert_eq!(id.len(), 32);
        assert_eq!(longest_digit_run(&id), MAX_REQUEST_ID_DIGIT_RUN, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        for _ in 0..20_000 {
            let id = new_request_id();
            assert_eq!(id.len(), 32);
            assert!(longest_digit_run(&id) <= MAX_REQUEST_ID_DIGIT_RUN, "{id}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("order-1234567-b"));
        assert_eq!(request_id(&h), "order-1234567-b");
        h.insert("x-request-id", HeaderValue::from_static("4111111111111111"));
        let replaced = request_id(&h);
        assert_ne!(replaced, "4111111111111111");
        assert!(longest_digit_run(&replaced) <= MAX_REQUEST_ID_DIGIT_RUN);
    }
}
