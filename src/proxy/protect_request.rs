//! Step 5: protect the request. Write bodies have their card values sealed
//! into envelopes (and card numbers in unnamed fields refused) before the
//! upstream sees them; a card number in a query becomes its blind index or
//! is refused, so it never reaches the database or its logs.

use bytes::Bytes;
use http::{header, HeaderMap, Method};
use http_body_util::{BodyExt, Limited};

use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::{DetectorKind, DetectorSet, Detectors};
use crate::rewrite::content::{body_kind, BodyKind};
use crate::rewrite::csv::CsvRewriter;
use crate::rewrite::json::BLIND_INDEX_SUFFIX;
use crate::rewrite::text::TextRewriter;
use crate::rewrite::{
    rewrite_all, BodyRewriter, JsonRewriter, Limits, RequestProtection, RewriteError, RewriteSpec,
    Rules,
};

use super::edge_body::RequestBody;
use super::error::GatewayError;

/// Methods whose bodies are written to the database.
pub fn is_write(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

fn unprocessable(e: RewriteError) -> GatewayError {
    match e {
        RewriteError::ClearCardInRequest { path } => GatewayError::Unprocessable {
            code: "clear_card_number",
            detail: format!(
                "{path} holds a card number; card numbers may only be written in card fields, which the gateway encrypts"
            ),
        },
        RewriteError::CannotEncrypt { path } => GatewayError::Unprocessable {
            code: "cannot_encrypt",
            detail: format!("{path} must be stored encrypted and could not be encrypted"),
        },
        RewriteError::BodyTooLarge { .. } | RewriteError::TokenTooLarge { .. } => {
            GatewayError::PayloadTooLarge
        }
        _ => GatewayError::BadRequest("invalid_body"),
    }
}

/// Reads a write body (up to `limit` bytes) and returns it protected.
pub async fn protect_body(
    headers: &HeaderMap,
    body: RequestBody,
    rules: &std::sync::Arc<Rules>,
    detectors: &std::sync::Arc<Detectors>,
    protection: &std::sync::Arc<RequestProtection>,
    limits: Limits,
    path_account: Option<&str>,
) -> Result<Bytes, GatewayError> {
    let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let bytes = Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                GatewayError::PayloadTooLarge
            } else {
                GatewayError::BadRequest("request_body_failed")
            }
        })?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(bytes);
    }
    if headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().eq_ignore_ascii_case("identity"))
    {
        // A compressed write could hide a card number from inspection.
        return Err(GatewayError::UnsupportedMediaType);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = body_kind(content_type, &[]).map_err(|_| GatewayError::UnsupportedMediaType)?;
    let spec = RewriteSpec {
        rules: std::sync::Arc::clone(rules),
        actions: ActionTable::uniform(Action::Clear),
        detectors: std::sync::Arc::clone(detectors),
        limits,
        opener: None,
        drop_accounts: None,
    };
    let protect = std::sync::Arc::clone(protection);
    // JSON records may name their id after their card fields: a first pass
    // notes every record's id, so each envelope is bound to its account.
    let record_ids = |mut first: JsonRewriter| -> Result<Vec<Option<String>>, GatewayError> {
        first.collect_record_ids();
        rewrite_all(&mut first, &bytes).map_err(unprocessable)?;
        let mut ids = first.take_record_ids();
        // A body sent to `/accounts/{id}` without its own id is that account's.
        if let (Some(root @ None), Some(account)) = (ids.first_mut(), path_account) {
            *root = Some(account.to_owned());
        }
        Ok(ids)
    };
    let mut rewriter: Box<dyn BodyRewriter> = match kind {
        BodyKind::Json => {
            let ids = record_ids(JsonRewriter::new(spec.clone()))?;
            let mut rw = JsonRewriter::for_request(spec, protect);
            rw.use_record_ids(ids);
            Box::new(rw)
        }
        BodyKind::Ndjson => {
            let ids = record_ids(JsonRewriter::ndjson(spec.clone()))?;
            let mut rw = JsonRewriter::ndjson_for_request(spec, protect);
            rw.use_record_ids(ids);
            Box::new(rw)
        }
        BodyKind::Csv => Box::new(CsvRewriter::for_request(spec, protect)),
        BodyKind::Text => {
            // Free text cannot carry an encrypted field: any card in it is refused.
            let mut text = TextRewriter::new(spec);
            rewrite_all(&mut text, &bytes).map_err(unprocessable)?;
            let cards = text.counts().get(FieldClass::CardNumber, Action::Clear);
            if cards > 0 {
                return Err(unprocessable(RewriteError::ClearCardInRequest {
                    path: "the text body".to_owned(),
                }));
            }
            return Ok(bytes);
        }
        BodyKind::Passthrough => return Err(GatewayError::UnsupportedMediaType),
    };
    let out = rewrite_all(rewriter.as_mut(), &bytes).map_err(unprocessable)?;
    Ok(Bytes::from(out))
}

/// True when a request carries a body (whatever its method).
pub fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn holds_card(detectors: &Detectors, text: &[u8]) -> bool {
    let mut findings = Vec::new();
    detectors.scan(
        text,
        DetectorSet::NONE.with(DetectorKind::Card),
        &mut findings,
    );
    !findings.is_empty()
}

/// Refuses a request whose path or header values hold a card number: they
/// would reach the database's logs in the clear. `generated_request_id`:
/// the `X-Request-Id` is the gateway's own random hex, not the client's, and
/// is not checked (a random hex id may hold a Luhn-valid digit run, which
/// the detectors that read digits glued to letters would take for a card).
pub fn protect_path_and_headers(
    path: &str,
    headers: &HeaderMap,
    detectors: &Detectors,
    generated_request_id: bool,
) -> Result<(), GatewayError> {
    // Segment by segment: the detectors do not take a number glued to `/`.
    for segment in path.split('/') {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        if holds_card(detectors, decoded.as_bytes()) {
            return Err(GatewayError::BadRequest("card_number_in_path"));
        }
    }
    if headers
        .iter()
        .filter(|(name, _)| !(generated_request_id && name.as_str() == "x-request-id"))
        .any(|(_, v)| holds_card(detectors, v.as_bytes()))
    {
        return Err(GatewayError::BadRequest("card_number_in_header"));
    }
    Ok(())
}

fn decode_component(s: &str) -> Option<String> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A query made safe for the upstream.
#[derive(Debug)]
pub struct ProtectedQuery {
    /// The query to send.
    pub query: String,
    /// The classes searched by blind index (a search right is needed).
    pub searched: Vec<crate::class::FieldClass>,
}

/// Rewrites a query so no card number reaches the upstream: a parameter of
/// an encrypted class becomes `<name>_bidx=<blind index>` (or is refused
/// when the class has no blind index); a card number in any other parameter
/// is refused. Which classes were searched is returned: the caller checks
/// the search right before the query is used.
pub fn protect_query(
    query: &str,
    rules: &Rules,
    detectors: &Detectors,
    protection: &RequestProtection,
) -> Result<ProtectedQuery, GatewayError> {
    let mut searched = Vec::new();
    let mut out = String::with_capacity(query.len());
    let mut findings = Vec::new();
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(name), Some(value)) = (decode_component(raw_name), decode_component(raw_value))
        else {
            return Err(GatewayError::BadRequest("bad_query"));
        };
        let class = rules.match_key(name.as_bytes(), rules.root_nodes()).class;
        match class {
            Some(class) if protection.encrypts(class) => {
                let sealer = protection
                    .sealer
                    .as_ref()
                    .filter(|_| protection.blind_index[class.index()])
                    .ok_or(GatewayError::BadRequest("encrypted_field_in_query"))?;
                let index = sealer
                    .blind_index(class, &value)
                    .map_err(|_| GatewayError::BadRequest("bad_query"))?;
                out.extend(percent_encoding::utf8_percent_encode(&name, QUERY_VALUE));
                out.push_str(BLIND_INDEX_SUFFIX);
                out.push('=');
                out.extend(percent_encoding::utf8_percent_encode(&index, QUERY_VALUE));
                if !searched.contains(&class) {
                    searched.push(class);
                }
            }
            _ => {
                findings.clear();
                let set = DetectorSet::NONE.with(DetectorKind::Card);
                detectors.scan(value.as_bytes(), set, &mut findings);
                detectors.scan(name.as_bytes(), set, &mut findings);
                if !findings.is_empty() {
                    return Err(GatewayError::BadRequest("card_number_in_query"));
                }
                out.push_str(pair);
            }
        }
    }
    Ok(ProtectedQuery {
        query: out,
        searched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// A gateway-made id seen in a real run: its digits `4371477724869`
    /// glued to letters read as a Visa number.
    const HEX_ID_WITH_CARD_RUN: &str = "525affe4371477724869e6377a4219cb";

    fn with_request_id(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_str(id).unwrap());
        h
    }

    #[test]
    fn the_gateways_own_request_id_is_not_taken_for_a_card() {
        let d = Detectors::new();
        let h = with_request_id(HEX_ID_WITH_CARD_RUN);
        assert!(protect_path_and_headers("/accounts/1", &h, &d, true).is_ok());
        // The premise: from a client, the same id is taken for a card.
        assert!(protect_path_and_headers("/accounts/1", &h, &d, false).is_err());
    }

    #[test]
    fn a_clients_request_id_holding_a_card_is_refused() {
        let d = Detectors::new();
        let h = with_request_id("4111111111111111");
        assert!(matches!(
            protect_path_and_headers("/accounts/1", &h, &d, false),
            Err(GatewayError::BadRequest("card_number_in_header"))
        ));
        let mut other = with_request_id("abc");
        other.insert("x-note", HeaderValue::from_static("4111 1111 1111 1111"));
        assert!(protect_path_and_headers("/accounts/1", &other, &d, true).is_err());
    }
}
