//! HTTP/1.1 message framing checked byte by byte (RFC 9112), in front of
//! hyper.
//!
//! hyper's parser is correct but tolerant where RFC 9112 allows tolerance: it
//! accepts a bare LF as a line end, resolves `Content-Length` together with
//! `Transfer-Encoding` by dropping the length (and hides that it did), and
//! folds equal duplicate lengths into one. Each of those is a request
//! smuggling signal, and none of them is visible in the parsed request. So
//! every byte a client sends on an HTTP/1.x connection passes through a
//! [`Scanner`] first: it follows the messages exactly as a strict RFC 9112
//! parser would (request line, field lines, body length by
//! `Content-Length`, or chunked coding to its last chunk and trailers) and
//! reports each request head it accepted and the first violation it found.
//!
//! The scanner and hyper see the same bytes, in order, and serve requests
//! one at a time, so the n-th request hyper hands to the service is the
//! n-th head the scanner saw. [`H1Guard`] keeps that queue: the service asks
//! it about each request before anything else runs, and refuses the request
//! (400, connection closed) when its head, or any earlier one, broke the
//! rules, or when hyper's request does not match the scanner's (which would
//! mean the two parsers disagree about where a message ends; it fails
//! closed rather than guess).
//!
//! The scanner does not allocate per byte: field lines are collected into
//! one bounded buffer, bodies are only counted.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// A framing rule a request broke. Every one is answered 400 (or 431 for
/// [`Violation::HeadTooLarge`] and [`Violation::TooManyFields`]) and the
/// connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A line ended with LF alone, or a CR was not followed by LF.
    #[error("bare CR or LF")]
    BareLineEnd,
    /// A control character (NUL, …) in the request line or a field.
    #[error("control character in the request head")]
    ControlCharacter,
    /// The request line is not `method SP target SP HTTP/1.x`.
    #[error("malformed request line")]
    RequestLine,
    /// The request target is not origin-form (`/path?query`) or
    /// absolute-form (`https://host/path`).
    #[error("unsupported request target form")]
    RequestTarget,
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("unsupported HTTP version")]
    Version,
    /// A field line starting with whitespace (obsolete line folding).
    #[error("obsolete line folding")]
    ObsFold,
    /// A field name that is not a token, or whitespace before the colon.
    #[error("invalid field name")]
    FieldName,
    /// A field value with a character RFC 9110 does not allow.
    #[error("invalid field value")]
    FieldValue,
    /// `Content-Length` that is not a decimal number.
    #[error("invalid Content-Length")]
    ContentLength,
    /// More than one `Content-Length` field (equal or not).
    #[error("more than one Content-Length")]
    DuplicateContentLength,
    /// `Transfer-Encoding` other than exactly `chunked`, or given twice.
    #[error("unsupported Transfer-Encoding")]
    TransferEncoding,
    /// Both `Content-Length` and `Transfer-Encoding`.
    #[error("Content-Length with Transfer-Encoding")]
    LengthAndEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request.
    #[error("Transfer-Encoding in HTTP/1.0")]
    EncodingInHttp10,
    /// The head is longer than the limit.
    #[error("request head too large")]
    HeadTooLarge,
    /// More field lines than the limit.
    #[error("too many header fields")]
    TooManyFields,
    /// The chunked body does not follow RFC 9112 §7.1.
    #[error("malformed chunked body")]
    Chunked,
    /// hyper's request is not the one the scanner read.
    #[error("request framing disagreement")]
    Desync,
}

impl Violation {
    /// The stable error code.
    pub fn code(self) -> &'static str {
        match self {
            Violation::BareLineEnd => "bare_line_end",
            Violation::ControlCharacter => "control_character",
            Violation::RequestLine => "bad_request_line",
            Violation::RequestTarget => "bad_request_target",
            Violation::Version => "bad_http_version",
            Violation::ObsFold => "obsolete_line_folding",
            Violation::FieldName => "bad_header_name",
            Violation::FieldValue => "bad_header_value",
            Violation::ContentLength => "bad_content_length",
            Violation::DuplicateContentLength => "duplicate_content_length",
            Violation::TransferEncoding => "bad_transfer_encoding",
            Violation::LengthAndEncoding => "content_length_with_transfer_encoding",
            Violation::EncodingInHttp10 => "transfer_encoding_in_http10",
            Violation::HeadTooLarge | Violation::TooManyFields => "request_header_too_large",
            Violation::Chunked => "bad_chunked_body",
            Violation::Desync => "framing_desync",
        }
    }

    /// True for the size limits (431 rather than 400).
    pub fn is_too_large(self) -> bool {
        matches!(self, Violation::HeadTooLarge | Violation::TooManyFields)
    }
}

/// The method and request target of one head the scanner accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadInfo {
    /// The method, as sent.
    pub method: String,
    /// The request target, as sent.
    pub target: String,
}

/// What one call to [`Scanner::feed`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fed {
    /// Heads completed in these bytes, in order.
    pub heads: Vec<HeadInfo>,
    /// The first violation, if these bytes held one: the index of the
    /// message it is in (0 = the connection's first), and whether it was in
    /// the body (after that message's head was accepted).
    pub violation: Option<(u64, Violation, bool)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before a request line (empty lines are skipped).
    Start,
    /// Inside the head: request line seen.
    Fields,
    /// A body of known length: bytes left.
    Length(u64),
    /// A chunk-size line.
    ChunkSize,
    /// Chunk data: bytes left.
    ChunkData(u64),
    /// The CR after chunk data.
    ChunkCr,
    /// The LF after chunk data.
    ChunkLf,
    /// Trailer field lines after the last chunk.
    Trailers,
    /// A violation was found; nothing more is read.
    Failed,
}

/// The head being read.
#[derive(Debug, Default)]
struct Head {
    method: String,
    target: String,
    http10: bool,
    content_length: Option<u64>,
    chunked: bool,
    encoding_seen: bool,
    fields: usize,
}

/// Follows the HTTP/1.x messages of one connection. See the module docs.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// The current line (head, chunk-size or trailer), without its LF.
    line: Vec<u8>,
    /// Bytes of the current head (or trailer section) so far.
    section_bytes: usize,
    head: Head,
    /// Index of the message being read.
    message: u64,
    max_head_bytes: usize,
    max_fields: usize,
    /// When the current head's first byte arrived (None between heads).
    head_started: Option<Instant>,
}

/// Longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Scanner {
    /// A scanner for a new connection.
    pub fn new(max_head_bytes: usize, max_fields: usize) -> Scanner {
        Scanner {
            state: State::Start,
            line: Vec::new(),
            section_bytes: 0,
            head: Head::default(),
            message: 0,
            max_head_bytes,
            max_fields,
            head_started: None,
        }
    }

    /// When the head now being read started (its first byte), if one is.
    pub fn head_started(&self) -> Option<Instant> {
        self.head_started
    }

    /// True once a violation was found.
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Reads the next bytes of the connection.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Fed {
        let mut fed = Fed::default();
        while !bytes.is_empty() {
            let in_body = !matches!(self.state, State::Start | State::Fields);
            let step = match self.state {
                State::Failed => return fed,
                State::Length(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        self.next_message()
                    } else {
                        State::Length(left)
                    };
                    Ok(())
                }
                State::ChunkData(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                    bytes = &bytes[n..];
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::ChunkCr
                    } else {
                        State::ChunkData(left)
                    };
                    Ok(())
                }
                State::ChunkCr | State::ChunkLf => {
                    let want = if self.state == State::ChunkCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b != want {
                        Err(Violation::Chunked)
                    } else {
                        self.state = if want == b'\r' {
                            State::ChunkLf
                        } else {
                            State::ChunkSize
                        };
                        Ok(())
                    }
                }
                State::Start | State::Fields | State::ChunkSize | State::Trailers => {
                    if self.state == State::Start && self.head_started.is_none() {
                        self.head_started = Some(Instant::now());
                    }
                    let (chunk, rest, complete) = match memchr::memchr(b'\n', bytes) {
                        Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                        None => (bytes, &bytes[bytes.len()..], false),
                    };
                    bytes = rest;
                    self.collect_line(chunk, complete).and_then(|()| {
                        if complete {
                            self.end_line(&mut fed)
                        } else {
                            Ok(())
                        }
                    })
                }
            };
            if let Err(v) = step {
                fed.violation = Some((self.message, v, in_body));
                self.state = State::Failed;
                self.line = Vec::new();
                return fed;
            }
        }
        fed
    }

    /// Adds bytes of the current line, within the section's limits.
    fn collect_line(&mut self, chunk: &[u8], complete: bool) -> Result<(), Violation> {
        let limit = match self.state {
            State::ChunkSize => MAX_CHUNK_LINE,
            _ => self.max_head_bytes,
        };
        let added = chunk.len() + usize::from(complete);
        if self.state == State::ChunkSize {
            if self.line.len() + added > limit {
                return Err(Violation::Chunked);
            }
        } else {
            self.section_bytes += added;
            if self.section_bytes > limit {
                return Err(Violation::HeadTooLarge);
            }
        }
        self.line.extend_from_slice(chunk);
        Ok(())
    }

    /// A whole line (its LF consumed) is in `self.line`.
    fn end_line(&mut self, fed: &mut Fed) -> Result<(), Violation> {
        let mut line = std::mem::take(&mut self.line);
        let result = (|| {
            let Some(body) = line.strip_suffix(b"\r") else {
                return Err(Violation::BareLineEnd);
            };
            if body.contains(&b'\r') {
                return Err(Violation::BareLineEnd);
            }
            match self.state {
                State::Start => {
                    if body.is_empty() {
                        // RFC 9112 §2.2: empty lines before a request line
                        // are ignored (they still count towards the limit).
                        return Ok(());
                    }
                    self.request_line(body)?;
                    self.state = State::Fields;
                    Ok(())
                }
                State::Fields => {
                    if body.is_empty() {
                        return self.end_head(fed);
                    }
                    self.head.fields += 1;
                    if self.head.fields > self.max_fields {
                        return Err(Violation::TooManyFields);
                    }
                    let (name, value) = field_line(body)?;
                    self.framing_field(name, value)
                }
                State::ChunkSize => {
                    let size = chunk_size(body)?;
                    self.state = if size == 0 {
                        self.section_bytes = 0;
                        State::Trailers
                    } else {
                        State::ChunkData(size)
                    };
                    Ok(())
                }
                State::Trailers => {
                    if body.is_empty() {
                        self.state = self.next_message();
                        return Ok(());
                    }
                    field_line(body).map(|_| ())
                }
                _ => Ok(()),
            }
        })();
        line.clear();
        self.line = line;
        result
    }

    fn request_line(&mut self, line: &[u8]) -> Result<(), Violation> {
        check_controls(line)?;
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Violation::RequestLine);
        };
        if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
            return Err(Violation::RequestLine);
        }
        let http10 = match version {
            b"HTTP/1.1" => false,
            b"HTTP/1.0" => true,
            _ => return Err(Violation::Version),
        };
        check_target(target)?;
        self.head = Head {
            // Both are ASCII, checked above.
            method: String::from_utf8_lossy(method).into_owned(),
            target: String::from_utf8_lossy(target).into_owned(),
            http10,
            ..Head::default()
        };
        Ok(())
    }

    fn framing_field(&mut self, name: &[u8], value: &[u8]) -> Result<(), Violation> {
        if name.eq_ignore_ascii_case(b"content-length") {
            if self.head.content_length.is_some() {
                return Err(Violation::DuplicateContentLength);
            }
            if self.head.encoding_seen {
                return Err(Violation::LengthAndEncoding);
            }
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(Violation::ContentLength);
            }
            let n = value
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            self.head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if self.head.http10 {
                return Err(Violation::EncodingInHttp10);
            }
            if self.head.content_length.is_some() {
                return Err(Violation::LengthAndEncoding);
            }
            if self.head.encoding_seen || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Violation::TransferEncoding);
            }
            self.head.encoding_seen = true;
            self.head.chunked = true;
        }
        Ok(())
    }

    fn end_head(&mut self, fed: &mut Fed) -> Result<(), Violation> {
        let head = std::mem::take(&mut self.head);
        fed.heads.push(HeadInfo {
            method: head.method,
            target: head.target,
        });
        self.head_started = None;
        self.section_bytes = 0;
        self.state = if head.chunked {
            State::ChunkSize
        } else {
            match head.content_length {
                Some(n) if n > 0 => State::Length(n),
                _ => self.next_message(),
            }
        };
        Ok(())
    }

    /// The current message is over.
    fn next_message(&mut self) -> State {
        self.message += 1;
        self.section_bytes = 0;
        State::Start
    }
}

/// `name: OWS value OWS` → (name, value without OWS).
fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), Violation> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(Violation::ObsFold);
    }
    let colon = memchr::memchr(b':', line).ok_or(Violation::FieldName)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(Violation::FieldName);
    }
    let value = trim_ows(value);
    for &b in value {
        match b {
            b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => {}
            0x00 | 0x7f => return Err(Violation::ControlCharacter),
            _ => return Err(Violation::FieldValue),
        }
    }
    Ok((name, value))
}

/// `1*HEXDIG [ chunk-ext ]`; the size.
fn chunk_size(line: &[u8]) -> Result<u64, Violation> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return Err(Violation::Chunked);
    }
    let mut size = 0u64;
    for &d in &line[..digits] {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => d - b'A' + 10,
        };
        size = size * 16 + u64::from(v);
    }
    let ext = &line[digits..];
    // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ); the
    // extensions are not used, only checked for bytes that could end or
    // split the line elsewhere.
    let ext_start = ext.iter().position(|&b| b != b' ' && b != b'\t');
    match ext_start {
        None if ext.is_empty() => {}
        Some(i) if ext[i] == b';' => {
            if !ext[i..]
                .iter()
                .all(|&b| matches!(b, b'\t' | b' ' | 0x21..=0x7e))
            {
                return Err(Violation::Chunked);
            }
        }
        _ => return Err(Violation::Chunked),
    }
    Ok(size)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn check_controls(line: &[u8]) -> Result<(), Violation> {
    if line.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(Violation::ControlCharacter);
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Origin-form or absolute-form (`http`/`https`) with URI characters only,
/// percent signs followed by two hex digits, and no fragment.
fn check_target(target: &[u8]) -> Result<(), Violation> {
    let rest = if target.first() == Some(&b'/') {
        target
    } else {
        let lower: Vec<u8> = target.iter().take(8).map(u8::to_ascii_lowercase).collect();
        let scheme = if lower.starts_with(b"https://") {
            8
        } else if lower.starts_with(b"http://") {
            7
        } else {
            return Err(Violation::RequestTarget);
        };
        let after = &target[scheme..];
        if after.is_empty() || after[0] == b'/' {
            return Err(Violation::RequestTarget);
        }
        after
    };
    let mut i = 0;
    while i < rest.len() {
        let b = rest[i];
        if b == b'%' {
            let ok = rest.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && rest.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(Violation::RequestTarget);
            }
            i += 3;
            continue;
        }
        let allowed = b.is_ascii_alphanumeric() || b"-._~:/?[]@!$&'()*+,;=".contains(&b);
        if !allowed {
            return Err(Violation::RequestTarget);
        }
        i += 1;
    }
    Ok(())
}

/// The queue between a connection's [`Scanner`] (fed by the I/O wrapper)
/// and its service (which asks about each request hyper hands it).
#[derive(Debug, Default)]
pub struct H1Guard {
    inner: Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    /// Heads accepted and not yet asked about.
    heads: VecDeque<HeadInfo>,
    /// Requests the service asked about so far.
    asked: u64,
    /// Responses finished (their bodies dropped) so far.
    finished: u64,
    /// When the last response finished.
    last_finished: Option<Instant>,
    /// The first violation: message index and rule.
    failed: Option<(u64, Violation)>,
}

/// Most heads kept waiting for the service; a client pipelining more than
/// this is refused (the scanner runs ahead of hyper by at most one read
/// buffer, so this is only reached by a flood of tiny requests).
const MAX_QUEUED_HEADS: usize = 1024;

impl H1Guard {
    /// An empty queue.
    pub fn new() -> H1Guard {
        H1Guard::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        // A poisoned lock only means a panic elsewhere; the state is plain data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records what the scanner found in one read.
    pub fn record(&self, fed: Fed) {
        if fed.heads.is_empty() && fed.violation.is_none() {
            return;
        }
        let mut s = self.lock();
        let first_new = s.asked + s.heads.len() as u64;
        for (i, head) in fed.heads.into_iter().enumerate() {
            if s.heads.len() >= MAX_QUEUED_HEADS {
                let index = first_new + i as u64;
                if s.failed.is_none() {
                    s.failed = Some((index, Violation::HeadTooLarge));
                }
                break;
            }
            s.heads.push_back(head);
        }
        if let Some((index, v, _)) = fed.violation {
            if s.failed.is_none() {
                s.failed = Some((index, v));
            }
        }
    }

    /// Checks the next request hyper parsed: Ok when the scanner accepted
    /// the same head and nothing before it broke a rule.
    pub fn admit(&self, method: &http::Method, uri: &http::Uri) -> Result<(), Violation> {
        let mut s = self.lock();
        let index = s.asked;
        s.asked += 1;
        if let Some((bad, v)) = s.failed {
            if index >= bad {
                return Err(v);
            }
        }
        let Some(head) = s.heads.pop_front() else {
            s.failed.get_or_insert((index, Violation::Desync));
            return Err(Violation::Desync);
        };
        let same = head.method == method.as_str()
            && head.target.parse::<http::Uri>().is_ok_and(|t| t == *uri);
        if !same {
            s.failed.get_or_insert((index, Violation::Desync));
            return Err(Violation::Desync);
        }
        Ok(())
    }

    /// A response's body was dropped (sent or abandoned).
    pub fn finished(&self) {
        let mut s = self.lock();
        s.finished += 1;
        s.last_finished = Some(Instant::now());
    }

    /// True when every request asked about has its response finished;
    /// with it, when the last one finished.
    pub fn quiet(&self) -> (bool, Option<Instant>) {
        let s = self.lock();
        (s.finished >= s.asked, s.last_finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8]) -> Fed {
        Scanner::new(8192, 100).feed(bytes)
    }

    fn violation(bytes: &[u8]) -> Option<Violation> {
        scan(bytes).violation.map(|(_, v, _)| v)
    }

    /// Feeds one byte at a time: the result must not depend on how the
    /// bytes are split.
    fn scan_bytewise(bytes: &[u8]) -> Fed {
        let mut s = Scanner::new(8192, 100);
        let mut all = Fed::default();
        for b in bytes {
            let fed = s.feed(std::slice::from_ref(b));
            all.heads.extend(fed.heads);
            if all.violation.is_none() {
                all.violation = fed.violation;
            }
        }
        all
    }

    #[test]
    fn accepts_plain_requests_and_pipelines() {
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.0\r\nHost: x\r\n\r\n";
        for fed in [scan(two), scan_bytewise(two)] {
            assert_eq!(fed.violation, None);
            let targets: Vec<&str> = fed.heads.iter().map(|h| h.target.as_str()).collect();
            assert_eq!(targets, ["/a", "/b?q=1", "/c"]);
        }
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n";
        for fed in [scan(req), scan_bytewise(req)] {
            assert_eq!(fed.violation, None);
            assert_eq!(fed.heads.len(), 2);
            assert_eq!(fed.heads[1].target, "/next");
        }
    }

    #[test]
    fn a_body_that_looks_like_a_request_is_not_a_head() {
        let req = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 30\r\n\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n";
        let fed = scan(req);
        assert_eq!(fed.violation, None);
        assert_eq!(fed.heads.len(), 1);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        use Violation::*;
        let cases: &[(&[u8], Violation)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", LengthAndEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", LengthAndEncoding),
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n", DuplicateContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", DuplicateContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 0x4\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", ContentLength),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", TransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n", TransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", TransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", TransferEncoding),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n", FieldName),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding:\x0bchunked\r\n\r\n", FieldValue),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", EncodingInHttp10),
            (b"POST / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", ObsFold),
            (b"POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n\r\n", ObsFold),
            (b"GET / HTTP/1.1\nHost: x\n\n", BareLineEnd),
            (b"GET / HTTP/1.1\r\nHost: x\n\r\n", BareLineEnd),
            (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", BareLineEnd),
            (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", ControlCharacter),
            (b"GET /\x00 HTTP/1.1\r\n\r\n", ControlCharacter),
            (b"GET  / HTTP/1.1\r\n\r\n", RequestLine),
            (b"GET / HTTP/1.1 x\r\n\r\n", RequestLine),
            (b"GET\t/ HTTP/1.1\r\n\r\n", ControlCharacter),
            (b"G(T / HTTP/1.1\r\n\r\n", RequestLine),
            (b"GET / HTTP/1.2\r\n\r\n", Version),
            (b"GET / http/1.1\r\n\r\n", Version),
            (b"GET / HTTP/2.0\r\n\r\n", Version),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Version),
            (b"GET * HTTP/1.1\r\n\r\n", RequestTarget),
            (b"CONNECT db.internal:443 HTTP/1.1\r\n\r\n", RequestTarget),
            (b"GET ftp://x/ HTTP/1.1\r\n\r\n", RequestTarget),
            (b"GET /a#frag HTTP/1.1\r\n\r\n", RequestTarget),
            (b"GET /a%2 HTTP/1.1\r\n\r\n", RequestTarget),
            (b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", RequestTarget),
            (b"GET /a\"b HTTP/1.1\r\n\r\n", RequestTarget),
            (b"GET / HTTP/1.1\r\n: empty\r\n\r\n", FieldName),
            (b"GET / HTTP/1.1\r\nno-colon\r\n\r\n", FieldName),
            (b"GET / HTTP/1.1\r\nX\x7fY: 1\r\n\r\n", FieldName),
        ];
        for (bytes, want) in cases {
            let text = String::from_utf8_lossy(bytes);
            assert_eq!(violation(bytes), Some(*want), "{text:?}");
            assert_eq!(
                scan_bytewise(bytes).violation.map(|(_, v, _)| v),
                Some(*want),
                "bytewise {text:?}"
            );
        }
    }

    #[test]
    fn chunked_body_errors_are_found() {
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for body in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"g\r\n",
            b"-1\r\n",
            b"5 x\r\n",
            b"ffffffffffffffff\r\n",
            b"5;\x00\r\n",
            b"0\r\nX: a\nb\r\n\r\n",
        ] {
            let mut bytes = head.clone();
            bytes.extend_from_slice(body);
            let fed = scan(&bytes);
            assert_eq!(fed.heads.len(), 1);
            let (index, _, in_body) = fed
                .violation
                .unwrap_or_else(|| panic!("accepted {:?}", String::from_utf8_lossy(body)));
            assert_eq!(index, 0);
            assert!(in_body);
        }
    }

    #[test]
    fn limits_are_counted_per_head() {
        let mut s = Scanner::new(64, 3);
        let fed = s.feed(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n");
        assert_eq!(
            fed.violation.map(|(_, v, _)| v),
            Some(Violation::TooManyFields)
        );
        let mut s = Scanner::new(64, 100);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(60));
        let fed = s.feed(long.as_bytes());
        assert_eq!(
            fed.violation.map(|(_, v, _)| v),
            Some(Violation::HeadTooLarge)
        );
        // the limit is per head, not per connection
        let mut s = Scanner::new(64, 100);
        for _ in 0..100 {
            let fed = s.feed(b"GET /aaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(fed.violation, None);
        }
    }

    #[test]
    fn violations_name_their_message() {
        let fed = scan(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(fed.heads.len(), 1);
        assert_eq!(
            fed.violation,
            Some((1, Violation::DuplicateContentLength, false))
        );
    }

    #[test]
    fn the_guard_refuses_from_the_first_bad_head_on_and_detects_desync() {
        let g = H1Guard::new();
        g.record(scan(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"));
        let get = http::Method::GET;
        assert_eq!(g.admit(&get, &"/a".parse().unwrap()), Ok(()));
        assert_eq!(
            g.admit(&get, &"/b".parse().unwrap()),
            Err(Violation::LengthAndEncoding)
        );
        assert_eq!(
            g.admit(&get, &"/c".parse().unwrap()),
            Err(Violation::LengthAndEncoding)
        );

        let g = H1Guard::new();
        g.record(scan(b"GET /a HTTP/1.1\r\n\r\n"));
        assert_eq!(
            g.admit(&get, &"/other".parse().unwrap()),
            Err(Violation::Desync)
        );
        assert_eq!(
            g.admit(&get, &"/a".parse().unwrap()),
            Err(Violation::Desync)
        );
        let g = H1Guard::new();
        assert_eq!(
            g.admit(&get, &"/a".parse().unwrap()),
            Err(Violation::Desync)
        );
    }

    #[test]
    fn the_guard_knows_when_responses_are_done() {
        let g = H1Guard::new();
        g.record(scan(b"GET /a HTTP/1.1\r\n\r\n"));
        assert!(g.quiet().0);
        g.admit(&http::Method::GET, &"/a".parse().unwrap()).unwrap();
        assert!(!g.quiet().0);
        g.finished();
        let (quiet, at) = g.quiet();
        assert!(quiet && at.is_some());
    }

    /// Pieces of HTTP/1.x, valid and not, that random messages are built from.
    const PIECES: [&[u8]; 24] = [
        b"GET /a HTTP/1.1\r\n",
        b"POST /b HTTP/1.1\r\n",
        b"GET /c HTTP/1.0\r\n",
        b"Host: x\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 03\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity, chunked\r\n",
        b"X-A: b\r\n",
        b" folded\r\n",
        b"X-B: c\n",
        b"\r\n",
        b"abc",
        b"3\r\nabc\r\n",
        b"0\r\n\r\n",
        b"ff;x=y\r\n",
        b"\r",
        b"\n",
        b"\0",
        b" ",
        b"X-C : d\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
        b"GET http://h/ HTTP/1.1\r\n",
        b"\xff\xfe",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// The verdict on a connection's bytes does not depend on how they
        /// arrive: whole, byte by byte, or cut at random points.
        #[test]
        fn the_verdict_does_not_depend_on_how_bytes_arrive(
            picks in proptest::collection::vec(0..PIECES.len(), 0..24),
            cuts in proptest::collection::vec(0usize..64, 0..16),
        ) {
            let bytes: Vec<u8> = picks.iter().flat_map(|&i| PIECES[i].iter().copied()).collect();
            let whole = scan(&bytes);
            proptest::prop_assert_eq!(&whole, &scan_bytewise(&bytes));
            let mut s = Scanner::new(8192, 100);
            let mut split = Fed::default();
            let mut rest = bytes.as_slice();
            for &c in &cuts {
                let (now, later) = rest.split_at(c.min(rest.len()));
                let fed = s.feed(now);
                split.heads.extend(fed.heads);
                if split.violation.is_none() {
                    split.violation = fed.violation;
                }
                rest = later;
            }
            let fed = s.feed(rest);
            split.heads.extend(fed.heads);
            if split.violation.is_none() {
                split.violation = fed.violation;
            }
            proptest::prop_assert_eq!(&whole, &split);
        }
    }
}
