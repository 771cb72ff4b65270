//! The synthetic customer database API the demo gateway sits in front of:
//! plain HTTP/1.1 on a loopback listener, backed by a [`Store`].
//!
//! Routes:
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/accounts?limit=&offset=` | `{"accounts":[…],"total":N,"limit":L,"offset":O}`; limit 1–500, default 50 |
//! | POST | `/accounts` | 201 + the stored object (an id is assigned if absent) |
//! | GET | `/accounts/{id}` | the account, or 404 |
//! | PATCH | `/accounts/{id}` | top-level merge (`null` removes a field); 200 + object |
//! | PUT | `/accounts/{id}` | replace; 200 + object |
//! | GET | `/exports/accounts.ndjson` | one account per line, streamed in chunks |
//! | GET | `/exports/accounts.csv` | RFC 4180 CSV with a header row, streamed in chunks |
//! | GET | `/health` | `{"ok":true}` |
//!
//! Errors are JSON: `{"error":{"code":"…","message":"…"}}`. Request bodies
//! are limited to [`MAX_BODY_BYTES`].

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::data;
use super::store::{Store, StoreError};

/// Largest accepted request body (10 MiB).
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Page size of `GET /accounts` without `limit`.
pub const DEFAULT_LIMIT: usize = 50;

/// Largest accepted `limit`.
pub const MAX_LIMIT: usize = 500;

/// Accounts per chunk of a streamed export.
const EXPORT_CHUNK_ACCOUNTS: usize = 64;

/// Time a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The CSV export's columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "id",
    "account_type",
    "name",
    "service_address",
    "phone",
    "email",
    "dob",
    "ssn",
    "tin",
    "drivers_license",
    "passport",
    "card_number",
    "card_expiry",
    "routing_number",
    "bank_account_number",
    "notes",
];

type ResBody = BoxBody<Bytes, Infallible>;

/// Serves the demo database API on `listener` until `shutdown` completes,
/// then stops accepting, lets in-flight requests finish (idle keep-alive
/// connections are closed) and returns.
pub async fn serve(
    listener: TcpListener,
    store: Arc<Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let store = Arc::clone(&store);
                    let mut stop = stop_rx.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |req| handle(Arc::clone(&store), req));
                        let conn = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service);
                        let mut conn = std::pin::pin!(conn);
                        let result = tokio::select! {
                            result = conn.as_mut() => result,
                            _ = stop.changed() => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "demo upstream connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "demo upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn handle(
    store: Arc<Store>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    Ok(route(store, req)
        .await
        .unwrap_or_else(|e| e.into_response()))
}

/// An error answer.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("allowed methods: {allow}"),
            )
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn into_response(self) -> Response<ResBody> {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut res = json_response(self.status, body.to_string().into_bytes());
        if let Some(allow) = self.allow {
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::not_found(e.to_string()),
            StoreError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            StoreError::Invalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.to_string())
            }
            StoreError::Io(_) => {
                tracing::error!(error = %e, "demo upstream could not persist a write");
                ApiError::internal("the account could not be stored")
            }
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> ResBody {
    Full::new(bytes.into()).boxed()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ResBody> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn account_response(status: StatusCode, account: &Value) -> Result<Response<ResBody>, ApiError> {
    let mut body = Vec::with_capacity(2048);
    data::write_account(&mut body, account)
        .map_err(|_| ApiError::internal("could not serialize the account"))?;
    let mut res = json_response(status, body);
    if status == StatusCode::CREATED {
        if let Some(id) = account.get("id").and_then(Value::as_str) {
            let encoded = percent_encoding::utf8_percent_encode(id, PATH_SEGMENT).to_string();
            if let Ok(v) = HeaderValue::from_str(&format!("/accounts/{encoded}")) {
                res.headers_mut().insert(LOCATION, v);
            }
        }
    }
    Ok(res)
}

/// Characters escaped in a path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

async fn route(store: Arc<Store>, req: Request<Incoming>) -> Result<Response<ResBody>, ApiError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match path.as_str() {
        "/health" => match method {
            Method::GET => Ok(json_response(StatusCode::OK, b"{\"ok\":true}".to_vec())),
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        "/accounts" => match method {
            Method::GET => list_accounts(&store, req.uri().query()),
            Method::POST => {
                let body = read_json(req).await?;
                let stored = blocking(move || store.insert(body)).await?;
                account_response(StatusCode::CREATED, &stored)
            }
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        "/imports/accounts.ndjson" => match method {
            Method::POST => {
                let bytes = read_bytes(req).await?;
                let accounts = parse_ndjson(&bytes)?;
                import(store, accounts).await
            }
            _ => Err(ApiError::method_not_allowed("POST")),
        },
        "/imports/accounts.csv" => match method {
            Method::POST => {
                let bytes = read_bytes(req).await?;
                let accounts = parse_csv_accounts(&bytes)?;
                import(store, accounts).await
            }
            _ => Err(ApiError::method_not_allowed("POST")),
        },
        "/exports/accounts.ndjson" => match method {
            Method::GET => Ok(export(&store, ExportFormat::Ndjson)),
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        "/exports/accounts.csv" => match method {
            Method::GET => Ok(export(&store, ExportFormat::Csv)),
            _ => Err(ApiError::method_not_allowed("GET")),
        },
        _ => {
            let Some(raw_id) = path
                .strip_prefix("/accounts/")
                .filter(|s| !s.is_empty() && !s.contains('/'))
            else {
                return Err(ApiError::not_found(format!(
                    "no route for {}",
                    path_for_message(&path)
                )));
            };
            let id = percent_encoding::percent_decode_str(raw_id)
                .decode_utf8()
                .map_err(|_| ApiError::bad_request("the account id is not valid UTF-8"))?
                .into_owned();
            match method {
                Method::GET => match store.get(&id) {
                    Some(account) => account_response(StatusCode::OK, &account),
                    None => Err(ApiError::not_found(format!(
                        "no account {}",
                        path_for_message(&id)
                    ))),
                },
                Method::PATCH => {
                    let body = read_json(req).await?;
                    let stored = blocking(move || store.patch(&id, body)).await?;
                    account_response(StatusCode::OK, &stored)
                }
                Method::PUT => {
                    let body = read_json(req).await?;
                    let stored = blocking(move || store.replace(&id, body)).await?;
                    account_response(StatusCode::OK, &stored)
                }
                _ => Err(ApiError::method_not_allowed("GET, PATCH, PUT")),
            }
        }
    }
}

/// Bounds what of a client-chosen string goes back into an error message.
fn path_for_message(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// Runs a store write (file I/O) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(_) => Err(ApiError::internal("the write was interrupted")),
    }
}

async fn read_json(req: Request<Incoming>) -> Result<Value, ApiError> {
    let bytes = read_bytes(req).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        // Position only: never echo the body back.
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "malformed JSON body at line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Stores every imported account; 201 with their ids.
async fn import(store: Arc<Store>, accounts: Vec<Value>) -> Result<Response<ResBody>, ApiError> {
    let ids = blocking(move || {
        let mut ids = Vec::with_capacity(accounts.len());
        for a in accounts {
            let stored = store.insert(a)?;
            ids.push(stored.get("id").cloned().unwrap_or(Value::Null));
        }
        Ok::<_, StoreError>(ids)
    })
    .await?;
    let body = serde_json::json!({ "imported": ids.len(), "ids": ids });
    Ok(json_response(
        StatusCode::CREATED,
        body.to_string().into_bytes(),
    ))
}

fn parse_ndjson(bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = serde_json::from_slice(line).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("malformed JSON on line {}", n + 1),
            )
        })?;
        out.push(v);
    }
    Ok(out)
}

/// RFC 4180 records (quoted fields, `""` escapes, CRLF or LF).
fn csv_records(text: &str) -> Result<Vec<Vec<String>>, ApiError> {
    let bad = || ApiError::bad_request("malformed CSV body");
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_start => quoted = true,
            '"' => return Err(bad()),
            ',' => {
                record.push(std::mem::take(&mut field));
                at_start = true;
                continue;
            }
            '\r' => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                if !(record.len() == 1 && record[0].is_empty()) {
                    records.push(std::mem::take(&mut record));
                }
                record.clear();
                at_start = true;
                continue;
            }
            c => field.push(c),
        }
        at_start = false;
    }
    if quoted {
        return Err(bad());
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

/// Accounts from a CSV import: columns as the export's ([`CSV_COLUMNS`]),
/// any subset, in any order.
fn parse_csv_accounts(bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| ApiError::bad_request("CSV body is not UTF-8"))?;
    let mut records = csv_records(text)?.into_iter();
    let Some(header) = records.next() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for row in records {
        if row.len() != header.len() {
            return Err(ApiError::bad_request(
                "a CSV row has a different number of fields than the header",
            ));
        }
        let mut account = serde_json::Map::new();
        let mut card = serde_json::Map::new();
        let mut bank = serde_json::Map::new();
        for (name, value) in header.iter().zip(row) {
            if value.is_empty() {
                continue;
            }
            let v = Value::String(value);
            match name.as_str() {
                "card_number" | "card_expiry" | "card_number_bidx" => {
                    card.insert(name.clone(), v);
                }
                "routing_number" => {
                    bank.insert("routing_number".into(), v);
                }
                "bank_account_number" => {
                    bank.insert("account_number".into(), v);
                }
                "drivers_license" => {
                    account.insert(name.clone(), serde_json::json!({ "number": v }));
                }
                _ => {
                    account.insert(name.clone(), v);
                }
            }
        }
        if !card.is_empty() {
            account.insert("cards".into(), Value::Array(vec![Value::Object(card)]));
        }
        if !bank.is_empty() {
            account.insert("bank".into(), Value::Object(bank));
        }
        out.push(Value::Object(account));
    }
    Ok(out)
}

async fn read_bytes(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    };
    if let Some(len) = req.headers().get(CONTENT_LENGTH) {
        let len = len
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("invalid Content-Length"))?;
        if len > MAX_BODY_BYTES as u64 {
            return Err(too_large());
        }
    }
    let collected = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(_) => return Err(ApiError::bad_request("the request body could not be read")),
    };
    Ok(bytes)
}

fn list_accounts(store: &Store, query: Option<&str>) -> Result<Response<ResBody>, ApiError> {
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0usize;
    let mut card_index: Option<String> = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "card_number_bidx" => {
                card_index = Some(
                    percent_encoding::percent_decode_str(value)
                        .decode_utf8_lossy()
                        .into_owned(),
                );
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit must be an integer from 1 to {MAX_LIMIT}"
                        ))
                    })?;
            }
            "offset" => {
                offset = value
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request("offset must be a non-negative integer"))?;
            }
            _ => {}
        }
    }
    let (page, total) = match &card_index {
        // Search by blind index: the database never sees the card number.
        Some(index) => {
            let hits: Vec<Arc<Value>> = store
                .snapshot()
                .into_iter()
                .filter(|a| {
                    a.get("cards")
                        .and_then(Value::as_array)
                        .is_some_and(|cards| {
                            cards.iter().any(|c| {
                                c.get("card_number_bidx").and_then(Value::as_str)
                                    == Some(index.as_str())
                            })
                        })
                })
                .collect();
            let total = hits.len();
            (
                hits.into_iter()
                    .skip(offset)
                    .take(limit)
                    .collect::<Vec<_>>(),
                total,
            )
        }
        None => store.page(offset, limit),
    };
    let mut body = Vec::with_capacity(page.len() * 2048 + 64);
    body.extend_from_slice(b"{\"accounts\":[");
    for (i, account) in page.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        data::write_account(&mut body, account)
            .map_err(|_| ApiError::internal("could not serialize an account"))?;
    }
    body.extend_from_slice(
        format!("],\"total\":{total},\"limit\":{limit},\"offset\":{offset}}}").as_bytes(),
    );
    Ok(json_response(StatusCode::OK, body))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ExportFormat {
    Ndjson,
    Csv,
}

fn export(store: &Store, format: ExportFormat) -> Response<ResBody> {
    let (content_type, file) = match format {
        ExportFormat::Ndjson => (
            "application/x-ndjson",
            "attachment; filename=\"accounts.ndjson\"",
        ),
        ExportFormat::Csv => ("text/csv", "attachment; filename=\"accounts.csv\""),
    };
    let body = ExportBody {
        accounts: store.snapshot(),
        pos: 0,
        header_pending: format == ExportFormat::Csv,
        format,
    };
    let mut res = Response::new(body.boxed());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert(CONTENT_DISPOSITION, HeaderValue::from_static(file));
    res
}

/// A streamed export over a snapshot of the store: each frame carries up to
/// [`EXPORT_CHUNK_ACCOUNTS`] accounts, so the whole export is never one buffer.
struct ExportBody {
    accounts: Vec<Arc<Value>>,
    pos: usize,
    header_pending: bool,
    format: ExportFormat,
}

impl ExportBody {
    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.pos >= self.accounts.len() && !self.header_pending {
            return None;
        }
        let mut out = Vec::with_capacity(EXPORT_CHUNK_ACCOUNTS * 2048);
        if self.header_pending {
            self.header_pending = false;
            out.extend_from_slice(CSV_COLUMNS.join(",").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let end = (self.pos + EXPORT_CHUNK_ACCOUNTS).min(self.accounts.len());
        for account in &self.accounts[self.pos..end] {
            match self.format {
                ExportFormat::Ndjson => {
                    if data::write_account(&mut out, account).is_err() {
                        // Cannot happen for a `Value`; keep the line count right.
                        out.extend_from_slice(b"{}");
                    }
                    out.push(b'\n');
                }
                ExportFormat::Csv => write_csv_row(&mut out, account),
            }
        }
        self.pos = end;
        Some(Bytes::from(out))
    }
}

impl Body for ExportBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.next_chunk().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.pos >= self.accounts.len() && !self.header_pending
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// One CSV row (CRLF-terminated) for `account`, columns as [`CSV_COLUMNS`].
fn write_csv_row(out: &mut Vec<u8>, account: &Value) {
    let first_card = account.get("cards").and_then(|c| c.get(0));
    let bank = account.get("bank");
    let dl = account.get("drivers_license").map(|d| match d {
        Value::Object(m) => m.get("number").unwrap_or(&Value::Null),
        other => other,
    });
    for (i, column) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let value = match *column {
            "drivers_license" => dl,
            "card_number" => first_card.and_then(|c| c.get("card_number")),
            "card_expiry" => first_card.and_then(|c| c.get("card_expiry")),
            "routing_number" => bank.and_then(|b| b.get("routing_number")),
            "bank_account_number" => bank.and_then(|b| b.get("account_number")),
            key => account.get(key),
        };
        write_csv_cell(out, value);
    }
    out.extend_from_slice(b"\r\n");
}

fn write_csv_cell(out: &mut Vec<u8>, value: Option<&Value>) {
    let text = match value {
        None | Some(Value::Null) => return,
        Some(Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
        Some(other) => std::borrow::Cow::Owned(other.to_string()),
    };
    if text.contains([',', '"', '\r', '\n']) {
        out.push(b'"');
        for b in text.bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::temp_dir;
    use super::*;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use serde_json::json;
    use std::net::SocketAddr;

    type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

    struct Running {
        addr: SocketAddr,
        client: TestClient,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<io::Result<()>>,
        store: Arc<Store>,
        dir: std::path::PathBuf,
    }

    async fn start(count: usize) -> Running {
        let dir = temp_dir("upstream");
        let store = Arc::new(
            Store::open(&dir.join("accounts.jsonl"), || data::generate(2016, count)).unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::clone(&store), async move {
            let _ = rx.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Running {
            addr,
            client,
            stop: Some(tx),
            task,
            store,
            dir,
        }
    }

    impl Running {
        async fn send(
            &self,
            method: Method,
            path: &str,
            body: &str,
        ) -> (StatusCode, http::HeaderMap, Bytes) {
            let req = Request::builder()
                .method(method)
                .uri(format!("http://{}{}", self.addr, path))
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let res = self.client.request(req).await.unwrap();
            let status = res.status();
            let headers = res.headers().clone();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, headers, body)
        }

        async fn get(&self, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
            self.send(Method::GET, path, "").await
        }

        async fn get_json(&self, path: &str) -> (StatusCode, Value) {
            let (status, headers, body) = self.get(path).await;
            assert_eq!(headers[CONTENT_TYPE], "application/json", "{path}");
            (status, serde_json::from_slice(&body).unwrap())
        }

        async fn stop(mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            tokio::time::timeout(Duration::from_secs(10), self.task)
                .await
                .expect("serve did not stop")
                .unwrap()
                .unwrap();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[tokio::test]
    async fn health_and_pagination() {
        let up = start(120).await;
        let (status, v) = up.get_json("/health").await;
        assert_eq!(status, 200);
        assert_eq!(v, json!({"ok": true}));

        let (status, v) = up.get_json("/accounts").await;
        assert_eq!(status, 200);
        assert_eq!(v["total"], 120);
        assert_eq!(v["limit"], 50);
        assert_eq!(v["offset"], 0);
        assert_eq!(v["accounts"].as_array().unwrap().len(), 50);
        assert_eq!(v["accounts"][0]["id"], "ACC-100001");

        let (_, v) = up.get_json("/accounts?limit=30&offset=100").await;
        let page = v["accounts"].as_array().unwrap();
        assert_eq!(page.len(), 20);
        assert_eq!(page[0]["id"], "ACC-100101");
        assert_eq!(page[19]["id"], "ACC-100120");
        assert_eq!(v["limit"], 30);
        assert_eq!(v["offset"], 100);

        let (_, v) = up.get_json("/accounts?offset=500").await;
        assert!(v["accounts"].as_array().unwrap().is_empty());

        for bad in [
            "limit=0",
            "limit=501",
            "limit=abc",
            "offset=-1",
            "limit=",
            "offset=1.5",
        ] {
            let (status, v) = up.get_json(&format!("/accounts?{bad}")).await;
            assert_eq!(status, 400, "{bad}");
            assert_eq!(v["error"]["code"], "bad_request", "{bad}");
        }
        let (status, v) = up.get_json("/accounts?limit=500").await;
        assert_eq!(status, 200);
        assert_eq!(v["accounts"].as_array().unwrap().len(), 120);
        up.stop().await;
    }

    #[tokio::test]
    async fn get_one_and_not_found() {
        let up = start(10).await;
        let (status, headers, body) = up.get("/accounts/ACC-100003").await;
        assert_eq!(status, 200);
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert!(body.starts_with(b"{\"id\":\"ACC-100003\""));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, *up.store.get("ACC-100003").unwrap());

        let (status, v) = up.get_json("/accounts/ACC-999999").await;
        assert_eq!(status, 404);
        assert_eq!(
            v,
            json!({"error": {"code": "not_found", "message": "no account ACC-999999"}})
        );

        let (status, v) = up.get_json("/nope").await;
        assert_eq!(status, 404);
        assert_eq!(v["error"]["code"], "not_found");

        let (status, headers, _) = up.send(Method::DELETE, "/accounts/ACC-100001", "").await;
        assert_eq!(status, 405);
        assert_eq!(headers[ALLOW], "GET, PATCH, PUT");
        up.stop().await;
    }

    #[tokio::test]
    async fn post_patch_put_round_trip() {
        let up = start(5).await;
        let body = r#"{"name":"Smith, \"Jr.\" Bakery","account_type":"commercial","notes":"new"}"#;
        let (status, headers, res) = up.send(Method::POST, "/accounts", body).await;
        assert_eq!(status, 201);
        assert_eq!(headers[LOCATION], "/accounts/ACC-100006");
        let created: Value = serde_json::from_slice(&res).unwrap();
        assert_eq!(created["id"], "ACC-100006");
        assert_eq!(created["name"], "Smith, \"Jr.\" Bakery");

        let (status, fetched) = up.get_json("/accounts/ACC-100006").await;
        assert_eq!(status, 200);
        assert_eq!(fetched, created);

        // The file holds exactly what was received.
        let file = std::fs::read_to_string(up.store.path()).unwrap();
        assert!(file.contains(r#"{"id":"ACC-100006","account_type":"commercial","name":"Smith, \"Jr.\" Bakery","notes":"new"}"#));

        let (status, _, res) = up
            .send(
                Method::PATCH,
                "/accounts/ACC-100006",
                r#"{"status":"active","notes":null}"#,
            )
            .await;
        assert_eq!(status, 200);
        let patched: Value = serde_json::from_slice(&res).unwrap();
        assert_eq!(patched["status"], "active");
        assert!(patched.get("notes").is_none());
        assert_eq!(patched["name"], "Smith, \"Jr.\" Bakery");

        let (status, _, res) = up
            .send(
                Method::PUT,
                "/accounts/ACC-100006",
                r#"{"name":"Replaced"}"#,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_slice::<Value>(&res).unwrap(),
            json!({"id": "ACC-100006", "name": "Replaced"})
        );
        let (_, fetched) = up.get_json("/accounts/ACC-100006").await;
        assert_eq!(fetched, json!({"id": "ACC-100006", "name": "Replaced"}));

        // Client errors.
        let (status, _, res) = up.send(Method::POST, "/accounts", "{\"name\": ").await;
        assert_eq!(status, 400);
        let err: Value = serde_json::from_slice(&res).unwrap();
        assert_eq!(err["error"]["code"], "malformed_json");
        let (status, _, res) = up.send(Method::POST, "/accounts", "[1,2]").await;
        assert_eq!(status, 400);
        assert_eq!(
            serde_json::from_slice::<Value>(&res).unwrap()["error"]["code"],
            "invalid_body"
        );
        let (status, _, _) = up
            .send(Method::POST, "/accounts", r#"{"id":"ACC-100001"}"#)
            .await;
        assert_eq!(status, 409);
        let (status, _, _) = up.send(Method::PATCH, "/accounts/ACC-424242", "{}").await;
        assert_eq!(status, 404);
        let (status, _, _) = up
            .send(
                Method::PUT,
                "/accounts/ACC-100001",
                r#"{"id":"ACC-100002"}"#,
            )
            .await;
        assert_eq!(status, 400);
        let (status, _, _) = up.send(Method::PATCH, "/accounts/ACC-100001", "nope").await;
        assert_eq!(status, 400);

        // Over the body limit.
        let huge = format!("{{\"notes\":\"{}\"}}", "x".repeat(MAX_BODY_BYTES));
        let (status, _, res) = up.send(Method::POST, "/accounts", &huge).await;
        assert_eq!(status, 413);
        assert_eq!(
            serde_json::from_slice::<Value>(&res).unwrap()["error"]["code"],
            "payload_too_large"
        );
        assert_eq!(up.store.len(), 6);
        up.stop().await;
    }

    #[tokio::test]
    async fn ndjson_export_streams_every_account() {
        let up = start(300).await;
        let req = Request::get(format!("http://{}/exports/accounts.ndjson", up.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = up.client.request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/x-ndjson");
        assert!(
            res.headers().get(CONTENT_LENGTH).is_none(),
            "must be streamed"
        );
        let mut body = res.into_body();
        let mut frames = 0;
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                frames += 1;
                all.extend_from_slice(&data);
            }
        }
        assert!(frames > 1, "expected several chunks, got {frames}");
        let text = String::from_utf8(all).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 300);
        for (i, line) in lines.iter().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                v["id"],
                data::account_id(data::FIRST_ACCOUNT_NUMBER + i as u64)
            );
        }
        up.stop().await;
    }

    #[tokio::test]
    async fn csv_export_header_and_quoting() {
        let up = start(40).await;
        let (status, _, _) = up
            .send(
                Method::PATCH,
                "/accounts/ACC-100002",
                r#"{"name":"Doe, \"Jane\"","notes":"line one\nline two"}"#,
            )
            .await;
        assert_eq!(status, 200);
        let (status, headers, body) = up.get("/exports/accounts.csv").await;
        assert_eq!(status, 200);
        assert_eq!(headers[CONTENT_TYPE], "text/csv");
        let text = String::from_utf8(body.to_vec()).unwrap();
        let header = text.split("\r\n").next().unwrap();
        assert_eq!(
            header,
            "id,account_type,name,service_address,phone,email,dob,ssn,tin,drivers_license,passport,card_number,card_expiry,routing_number,bank_account_number,notes"
        );
        assert!(text.contains("ACC-100002,"));
        assert!(
            text.contains(",\"Doe, \"\"Jane\"\"\","),
            "quoted name missing"
        );
        assert!(
            text.contains(",\"line one\nline two\"\r\n"),
            "quoted multi-line note missing"
        );
        // Addresses contain commas, so they are quoted too.
        let row1 = text.split("\r\n").nth(1).unwrap();
        assert!(row1.starts_with("ACC-100001,"));
        assert!(row1.contains(", Palo Alto, CA 943"));
        let a1 = up.store.get("ACC-100001").unwrap();
        assert!(row1.contains(&format!("\"{}\"", a1["service_address"].as_str().unwrap())));
        assert!(row1.contains(a1["bank"]["routing_number"].as_str().unwrap()));
        // Rows: header + 40 + trailing empty piece after the final CRLF.
        let parsed = parse_csv(&text);
        assert_eq!(parsed.len(), 41);
        assert!(parsed.iter().all(|r| r.len() == CSV_COLUMNS.len()));
        assert_eq!(parsed[2][2], "Doe, \"Jane\"");
        assert_eq!(parsed[2][15], "line one\nline two");
        up.stop().await;
    }

    /// A strict RFC 4180 reader for the test.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut cell = String::new();
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            if quoted {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        cell.push('"');
                    } else {
                        quoted = false;
                    }
                } else {
                    cell.push(c);
                }
                continue;
            }
            match c {
                '"' => {
                    assert!(cell.is_empty(), "quote inside an unquoted cell");
                    quoted = true;
                }
                ',' => row.push(std::mem::take(&mut cell)),
                '\r' => {
                    assert_eq!(chars.next(), Some('\n'));
                    row.push(std::mem::take(&mut cell));
                    rows.push(std::mem::take(&mut row));
                }
                '\n' => panic!("bare LF outside quotes"),
                c => cell.push(c),
            }
        }
        assert!(!quoted && cell.is_empty() && row.is_empty());
        rows
    }

    #[tokio::test]
    async fn shutdown_finishes_in_flight_and_stops_accepting() {
        let up = start(3).await;
        // A keep-alive connection is open and idle after this request.
        let (status, _) = up.get_json("/health").await;
        assert_eq!(status, 200);
        let addr = up.addr;
        up.stop().await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still accepting"
        );
    }

    #[tokio::test]
    async fn shutdown_waits_for_a_request_in_flight() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut up = start(3).await;
        let mut tcp = tokio::net::TcpStream::connect(up.addr).await.unwrap();
        let body = br#"{"name":"Late Arrival"}"#;
        let head = format!(
            "POST /accounts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        tcp.write_all(&body[..5]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        // Shut down while the body is still arriving.
        let _ = up.stop.take().unwrap().send(());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !up.task.is_finished(),
            "serve returned with a request in flight"
        );
        tcp.write_all(&body[5..]).await.unwrap();
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut response))
            .await
            .unwrap()
            .unwrap();
        assert!(response.starts_with("HTTP/1.1 201 "), "{response}");
        assert!(response.contains("Late Arrival"));
        assert_eq!(up.store.get("ACC-100004").unwrap()["name"], "Late Arrival");
        up.stop().await;
    }
}
