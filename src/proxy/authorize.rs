//! Step 4: route rules. The path is normalized first, so every trick that
//! spells the same resource differently meets the same rule; the upstream
//! then receives exactly the normalized path that was authorized.

use std::sync::Arc;

use http::Method;

use crate::config::{Policy, Role};
use crate::identity::Caller;

use super::error::GatewayError;

/// Proof that a request passed authorization: only [`authorize`] makes one.
// The private unit field is the proof: no other module can build one.
#[allow(clippy::manual_non_exhaustive)]
#[derive(Debug, Clone)]
pub struct Authorized {
    /// Index of the matched route in the policy.
    pub route_index: usize,
    /// The matched route's name (logs and metrics use it, never the raw path).
    pub route_name: Arc<str>,
    /// The role under which the request runs.
    pub role: Arc<Role>,
    /// The normalized path, as sent upstream.
    pub path: String,
    /// The route carries red-flag data.
    pub red_flag: bool,
    _proof: (),
}

/// Why a path could not be normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Not an origin-form path starting with `/`.
    #[error("path is not absolute")]
    NotAbsolute,
    /// A bad or forbidden percent-escape (`%2F`, `%5C`, `%00`, `%zz`).
    #[error("forbidden or malformed percent-escape")]
    BadEscape,
    /// `..` above the root.
    #[error("path climbs above the root")]
    AboveRoot,
    /// A byte that has no place in a path.
    #[error("invalid byte in path")]
    InvalidByte,
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Normalizes a request path: percent-escapes of unreserved characters are
/// decoded (escapes of `/`, `\`, control bytes and non-ASCII are refused),
/// `;` parameters dropped, empty and `.` segments removed, `..` resolved,
/// trailing slash removed. Segments are re-encoded canonically.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut segments: Vec<String> = Vec::new();
    for seg in raw.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        let bytes = seg.as_bytes();
        let mut decoded = String::with_capacity(seg.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let c = h * 16 + l;
                if !(c.is_ascii_graphic() || c == b' ') || c == b'/' || c == b'\\' || c == b'%' {
                    return Err(PathError::BadEscape);
                }
                decoded.push(c as char);
                i += 3;
            } else if b.is_ascii_graphic() && b != b'\\' {
                decoded.push(b as char);
                i += 1;
            } else {
                return Err(PathError::InvalidByte);
            }
        }
        match decoded.as_str() {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => segments.push(decoded),
        }
    }
    let mut out = String::with_capacity(raw.len());
    for seg in &segments {
        out.push('/');
        out.extend(percent_encoding::utf8_percent_encode(seg, SEGMENT));
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Characters escaped when a normalized segment is written back.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'%')
    .add(b'/')
    .add(b';')
    .add(b'\\');

/// Default deny: the request passes only when one of the caller's roles
/// grants the method on the route its normalized path matches.
pub fn authorize(
    policy: &Policy,
    caller: &Caller,
    method: &Method,
    raw_path: &str,
) -> Result<Authorized, GatewayError> {
    let path = normalize_path(raw_path).map_err(|_| GatewayError::BadRequest("bad_path"))?;
    let (route_index, route) = policy.match_route(&path).ok_or(GatewayError::Forbidden)?;
    let role = caller
        .principal
        .roles
        .iter()
        .filter_map(|name| policy.role(name))
        .find(|role| role.allows(route_index, method))
        .ok_or(GatewayError::Forbidden)?;
    Ok(Authorized {
        route_index,
        route_name: Arc::from(route.name.as_str()),
        role: Arc::clone(role),
        path,
        red_flag: route.red_flag,
        _proof: (),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_normalize_to_one_spelling() {
        for p in [
            "/accounts",
            "//accounts",
            "/accounts/",
            "/accounts/.",
            "/x/../accounts",
            "/accounts;jsessionid=1",
            "/%61ccounts",
            "/./accounts//",
        ] {
            assert_eq!(normalize_path(p).unwrap(), "/accounts", "{p}");
        }
        assert_eq!(
            normalize_path("/accounts/ACC%2D1").unwrap(),
            "/accounts/ACC-1"
        );
        assert_eq!(normalize_path("/a%20b").unwrap(), "/a%20b");
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("/accounts/%2e%2e/admin").unwrap(), "/admin");
    }

    #[test]
    fn dangerous_paths_are_refused() {
        assert_eq!(normalize_path("accounts"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path("/a%2fb"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%5cb"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%00b"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%c3%a9"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%252f"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/../x"), Err(PathError::AboveRoot));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::InvalidByte));
    }
}
