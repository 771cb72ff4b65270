//! Page size caps and the export rule.
//!
//! A route with `max_page_size` has its page size parameter (`page_param`,
//! default `limit`) lowered to the cap before the request goes upstream, so
//! one request cannot page out the whole table. Export routes (bulk NDJSON
//! or CSV) are only for roles that may export.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::config::{Role, Route};

/// The query to send upstream instead of `query` (without `?`), or `None`
/// when it may go as it is.
///
/// Every occurrence of the route's page size parameter whose value is not a
/// whole number from 1 to the cap is set to the cap: values above the cap,
/// but also `0`, negative, fractional, empty or non-numeric ones (which an
/// upstream might read as "no limit"). The parameter's name is matched
/// after percent-decoding and ignoring ASCII case (`%6Cimit`, `LIMIT`), and
/// both `&` and `;` separate parameters; everything else is kept byte for
/// byte. A query without the parameter is left alone: the upstream's own
/// default page size applies, and must be at most the cap.
pub fn page_cap(route: &Route, query: &str) -> Option<String> {
    let cap = route.page_cap.as_ref()?;
    let mut out = String::with_capacity(query.len() + 8);
    let mut changed = false;
    let mut rest = query;
    loop {
        let end = rest.find(['&', ';']).unwrap_or(rest.len());
        let pair = &rest[..end];
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(name).eq_ignore_ascii_case(&cap.param) && !within_cap(value, cap.max) {
            out.push_str(name);
            out.push('=');
            out.push_str(&cap.max.to_string());
            changed = true;
        } else {
            out.push_str(pair);
        }
        let Some(sep) = rest[end..].chars().next() else {
            break;
        };
        out.push(sep);
        rest = &rest[end + sep.len_utf8()..];
    }
    changed.then_some(out)
}

/// A query component percent-decoded, `+` as space; invalid UTF-8 replaced.
fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let spaced = s.replace('+', " ");
    Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
}

/// True when `value` is a plain whole number from 1 to `max`.
fn within_cap(value: &str, max: u32) -> bool {
    let v = decode(value);
    !v.is_empty()
        && v.len() <= 10
        && v.bytes().all(|b| b.is_ascii_digit())
        && v.parse::<u64>()
            .is_ok_and(|n| (1..=u64::from(max)).contains(&n))
}

/// Why a role may not use an export route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bulk export is not allowed for this role")]
pub struct ExportDenied;

/// `Err` when `route` is an export route and `role` may not export
/// (allowlist roles such as non-utilities, or `may_export = false`). The
/// loader already refuses such grants; this is the request-time check.
pub fn export_allowed(role: &Role, route: &Route) -> Result<(), ExportDenied> {
    if route.export && !role.may_export {
        Err(ExportDenied)
    } else {
        Ok(())
    }
}
