//! `/_maskgate/health` and `/_maskgate/ready`: what each component of the
//! gateway can do right now.
//!
//! Components: `listener` (it answered), `upstream` (a TCP connection to the
//! customer database API opens within a second), `audit` (the sink accepts
//! records; its incidents since startup, such as a tail moved aside or a
//! reopening after a failure), `state` (the state store answers within a
//! second). Health answers 200 with `"status":"ok"` when every component
//! is ok, and 503 with `"status":"degraded"` otherwise. Readiness answers
//! 503 while unmasking is impossible (the audit sink or the state store has
//! failed, or the upstream cannot be reached), so a load balancer sends
//! unmask traffic elsewhere; a gateway without `[audit]` never unmasks by
//! configuration and is ready for masked traffic. Neither shows customer
//! data or needs an identity; failure texts name files and causes only.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::proxy::Shared;

/// How long a probe of the upstream or the state store may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One component's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    /// `listener`, `upstream`, `audit`, `state`.
    pub name: &'static str,
    /// False when it has failed.
    pub ok: bool,
    /// Whether unmasking needs it.
    pub needed_to_unmask: bool,
    /// The JSON shown for it.
    pub detail: Value,
}

/// Every component, probed now.
pub async fn components(shared: &Shared) -> Vec<Component> {
    let (upstream, state) = tokio::join!(probe_upstream(shared), probe_state(shared));
    vec![
        Component {
            name: "listener",
            ok: true,
            needed_to_unmask: true,
            detail: json!({ "status": "ok" }),
        },
        upstream,
        audit(shared),
        state,
    ]
}

fn status(ok: bool, error: Option<String>) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), json!(if ok { "ok" } else { "failed" }));
    if let Some(e) = error {
        m.insert("error".into(), json!(e));
    }
    Value::Object(m)
}

async fn probe_upstream(shared: &Shared) -> Component {
    let authority = shared.upstream.authority().clone();
    let port =
        authority
            .port_u16()
            .unwrap_or_else(|| if shared.upstream.is_https() { 443 } else { 80 });
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let result = tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::net::TcpStream::connect((host.to_owned(), port)),
    )
    .await;
    let error = match result {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("cannot connect to {authority}: {e}")),
        Err(_) => Some(format!("no connection to {authority} within a second")),
    };
    Component {
        name: "upstream",
        ok: error.is_none(),
        needed_to_unmask: true,
        detail: status(error.is_none(), error),
    }
}

async fn probe_state(shared: &Shared) -> Component {
    let error = match tokio::time::timeout(PROBE_TIMEOUT, shared.state.list_freezes()).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within a second".to_owned()),
    };
    Component {
        name: "state",
        ok: error.is_none(),
        needed_to_unmask: true,
        detail: status(error.is_none(), error),
    }
}

fn audit(shared: &Shared) -> Component {
    let Some(sink) = &shared.audit else {
        return Component {
            name: "audit",
            ok: true,
            needed_to_unmask: false,
            detail: json!({ "status": "not_configured" }),
        };
    };
    let health = sink.health();
    let mut detail = status(
        health.is_ok(),
        health.as_ref().err().map(ToString::to_string),
    );
    let incidents = sink.incidents();
    if let Value::Object(m) = &mut detail {
        if !incidents.is_empty() {
            m.insert("incidents".into(), json!(incidents));
        }
    }
    Component {
        name: "audit",
        ok: health.is_ok(),
        needed_to_unmask: true,
        detail,
    }
}

/// The health body and whether every component is ok.
pub fn health_body(components: &[Component]) -> (bool, Value) {
    let all_ok = components.iter().all(|c| c.ok);
    let ready = can_unmask(components);
    let map: Map<String, Value> = components
        .iter()
        .map(|c| (c.name.to_owned(), c.detail.clone()))
        .collect();
    (
        all_ok,
        json!({
            "status": if all_ok { "ok" } else { "degraded" },
            "ready": ready,
            "components": map,
        }),
    )
}

/// False while any component unmasking needs has failed.
pub fn can_unmask(components: &[Component]) -> bool {
    components.iter().all(|c| c.ok || !c.needed_to_unmask)
}
