//! The access log: one line per request, names and counts only.
//!
//! Formatting each request's line through the generic `tracing` formatter
//! cost about 8% of the gateway's CPU under load (a field visitor per
//! field, dynamic dispatch, a timestamp formatter); so when the binary
//! installs a line sink ([`install`]), the line is written directly, in the
//! same text or JSON shape as the other log lines, and handed to the log
//! writer thread in one piece. Without a sink (library use, tests) the line
//! goes through `tracing` as before. Either way the `maskgate::access`
//! target at level INFO must be enabled for a line to be written.

use std::fmt::Write as _;
use std::sync::OnceLock;

use crate::config::LogFormat;

/// Where finished lines go (the log writer).
pub type LineSink = Box<dyn Fn(&[u8]) + Send + Sync>;

struct Installed {
    format: LogFormat,
    sink: LineSink,
}

static SINK: OnceLock<Installed> = OnceLock::new();

/// Sends access lines to `sink`, formatted as `format`. Only the first call
/// takes effect.
pub fn install(format: LogFormat, sink: LineSink) {
    let _ = SINK.set(Installed { format, sink });
}

/// One request's line.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub principal: &'a str,
    pub on_behalf_of: &'a str,
    pub role: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub masked: u64,
    pub clear_released: u64,
    pub records: u64,
    pub detected: u64,
    pub body: &'a str,
    pub error: &'a str,
}

/// Writes `line` to the access log.
pub fn write(line: &Line<'_>) {
    if !tracing::enabled!(target: "maskgate::access", tracing::Level::INFO) {
        return;
    }
    match SINK.get() {
        Some(installed) => {
            let text = match installed.format {
                LogFormat::Text => text(line),
                LogFormat::Json => json(line),
            };
            (installed.sink)(text.as_bytes());
        }
        None => tracing::info!(
            target: "maskgate::access",
            request_id = line.request_id,
            method = line.method,
            principal = line.principal,
            on_behalf_of = line.on_behalf_of,
            role = line.role,
            route = line.route,
            status = line.status,
            duration_ms = line.duration_ms,
            masked = line.masked,
            clear_released = line.clear_released,
            records = line.records,
            detected = line.detected,
            body = line.body,
            error = line.error,
            "request"
        ),
    }
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A value as it stands, or quoted and escaped (`{:?}`) when it holds
/// anything but plain name characters: a client-chosen request id or a
/// person's name cannot forge a field or a line.
struct Field<'a>(&'a str);

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:@/+-".contains(&b));
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

/// `2026-11-26T22:18:11.123456Z  INFO maskgate::access: request request_id=… …`
fn text(l: &Line<'_>) -> String {
    let mut s = String::with_capacity(320);
    let _ = writeln!(
        s,
        "{}  INFO maskgate::access: request request_id={} method={} principal={} on_behalf_of={} role={} route={} status={} duration_ms={:.3} masked={} clear_released={} records={} detected={} body={} error={}",
        now_rfc3339(),
        Field(l.request_id),
        Field(l.method),
        Field(l.principal),
        Field(l.on_behalf_of),
        Field(l.role),
        Field(l.route),
        l.status,
        l.duration_ms,
        l.masked,
        l.clear_released,
        l.records,
        l.detected,
        Field(l.body),
        Field(l.error),
    );
    s
}

/// One JSON object, fields at the top level (as the JSON log format writes
/// every event).
fn json(l: &Line<'_>) -> String {
    let value = serde_json::json!({
        "timestamp": now_rfc3339(),
        "level": "INFO",
        "target": "maskgate::access",
        "message": "request",
        "request_id": l.request_id,
        "method": l.method,
        "principal": l.principal,
        "on_behalf_of": l.on_behalf_of,
        "role": l.role,
        "route": l.route,
        "status": l.status,
        "duration_ms": l.duration_ms,
        "masked": l.masked,
        "clear_released": l.clear_released,
        "records": l.records,
        "detected": l.detected,
        "body": l.body,
        "error": l.error,
    });
    let mut s = value.to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line<'static> {
        Line {
            request_id: "r-1",
            method: "GET",
            principal: "billing",
            on_behalf_of: "-",
            role: "billing",
            route: "account",
            status: 200,
            duration_ms: 1.5,
            masked: 3,
            clear_released: 0,
            records: 1,
            detected: 0,
            body: "complete",
            error: "",
        }
    }

    #[test]
    fn text_lines_name_every_field_once_and_end_in_a_newline() {
        let t = text(&line());
        assert!(t.ends_with('\n') && t.matches('\n').count() == 1);
        for f in [
            "request_id=r-1",
            "principal=billing",
            "route=account",
            "status=200",
            "masked=3",
            "duration_ms=1.500",
        ] {
            assert!(t.contains(f), "{f} in {t}");
        }
    }

    #[test]
    fn text_fields_cannot_forge_fields_or_lines() {
        let mut l = line();
        l.request_id = "x status=500\nfake";
        let t = text(&l);
        assert_eq!(t.matches('\n').count(), 1);
        assert!(t.contains("request_id=\"x status=500\\nfake\""), "{t}");
    }

    #[test]
    fn json_lines_parse_and_escape_names() {
        let mut l = line();
        l.principal = "a\"b\nc";
        let j = json(&l);
        let v: serde_json::Value = serde_json::from_str(j.trim_end()).unwrap();
        assert_eq!(v["principal"], "a\"b\nc");
        assert_eq!(v["target"], "maskgate::access");
        assert_eq!(v["status"], 200);
    }
}
