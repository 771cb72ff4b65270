//! The client connection's byte stream, between TLS and hyper: the HTTP/1.x
//! framing scanner sees every byte before hyper does, and two timers cut
//! slow or silent clients.
//!
//! - **idle**: no byte read or written for `limits.idle_timeout` closes the
//!   connection (a kept-alive HTTP/1.1 connection between requests, an
//!   HTTP/2 connection without traffic, a client that stopped reading).
//!   While a request is being served, reading counts as idle on neither
//!   protocol: the request is bounded by `limits.request_timeout`, whose
//!   408 (or the upstream's 504) must reach the client rather than lose a
//!   race with this timer. On HTTP/2 the edge counts the open streams
//!   ([`H2Streams`]) and the timer restarts when the last one ends;
//! - **header** (HTTP/1.x): a request head that is not complete within
//!   `limits.header_timeout` of its first byte (or of the previous
//!   response's end, for a head sent early) is answered `408` and the
//!   connection closed. The 408 is written only when no response is in
//!   progress on the connection, so it can never split another response;
//!   otherwise the connection is just closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::admin::Metrics;

use super::framing::{H1Guard, Scanner};

/// How long the gateway tries to deliver a 408 before giving up.
const TIMEOUT_RESPONSE_GRACE: Duration = Duration::from_secs(5);

/// The HTTP/1.x part: the scanner and the queue it shares with the service.
struct H1Watch {
    scanner: Scanner,
    guard: Arc<H1Guard>,
}

enum Phase {
    /// Reading and writing.
    Open,
    /// Writing the 408 response to a slow head: bytes and position, and
    /// when to give up.
    Refusing(Vec<u8>, usize, Instant),
    /// Closed by a timer; every further call fails.
    Closed,
}

/// The requests an HTTP/2 connection is serving: while any is open, the
/// connection is not idle however long its request path takes.
#[derive(Debug, Default)]
pub struct H2Streams {
    open: AtomicUsize,
    /// When the last open stream ended.
    quiet_since: Mutex<Option<Instant>>,
    /// The connection's reader, woken when the last stream ends so that it
    /// arms the idle timer again.
    reader: Mutex<Option<Waker>>,
}

impl H2Streams {
    /// Counts one stream open until the returned guard is dropped.
    pub fn open(streams: &Arc<H2Streams>) -> OpenStream {
        streams.open.fetch_add(1, Ordering::AcqRel);
        OpenStream(Arc::clone(streams))
    }

    fn any_open(&self) -> bool {
        self.open.load(Ordering::Acquire) > 0
    }

    fn quiet_since(&self) -> Option<Instant> {
        *self.quiet_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_reader_on_quiet(&self, cx: &Context<'_>) {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *reader = Some(cx.waker().clone());
        }
    }
}

/// One open HTTP/2 stream (see [`H2Streams::open`]).
#[derive(Debug)]
pub struct OpenStream(Arc<H2Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        *self.0.quiet_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let reader = self
            .0
            .reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(w) = reader {
            w.wake();
        }
    }
}

/// A client connection's I/O with the edge checks; see the module docs.
pub struct EdgeIo<T> {
    inner: T,
    h1: Option<H1Watch>,
    h2: Option<Arc<H2Streams>>,
    idle: Duration,
    header: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    /// Bytes written since the last completed flush.
    unflushed: bool,
    phase: Phase,
    metrics: Arc<Metrics>,
}

/// Which timer fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fired {
    Idle,
    Header,
}

impl<T> EdgeIo<T> {
    /// Wraps an HTTP/2 connection (idle timer only, held off while
    /// `streams` has any open).
    pub fn h2(
        inner: T,
        streams: Arc<H2Streams>,
        idle: Duration,
        metrics: Arc<Metrics>,
    ) -> EdgeIo<T> {
        let mut io = EdgeIo::new(inner, None, idle, idle, metrics);
        io.h2 = Some(streams);
        io
    }

    /// Wraps an HTTP/1.x connection: scanner, idle and header timers.
    pub fn h1(
        inner: T,
        guard: Arc<H1Guard>,
        limits: &crate::config::Limits,
        metrics: Arc<Metrics>,
    ) -> EdgeIo<T> {
        let watch = H1Watch {
            scanner: Scanner::new(limits.max_header_bytes, limits.max_header_count),
            guard,
        };
        EdgeIo::new(
            inner,
            Some(watch),
            limits.idle_timeout,
            limits.header_timeout,
            metrics,
        )
    }

    fn new(
        inner: T,
        h1: Option<H1Watch>,
        idle: Duration,
        header: Duration,
        metrics: Arc<Metrics>,
    ) -> EdgeIo<T> {
        let now = Instant::now();
        EdgeIo {
            inner,
            h1,
            h2: None,
            idle,
            header,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            armed_for: Some(now + idle),
            unflushed: false,
            phase: Phase::Open,
            metrics,
        }
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// When the header timer runs out, if it is running: a head has begun
    /// and no response is in progress.
    fn header_deadline(&self) -> Option<Instant> {
        let h1 = self.h1.as_ref()?;
        let started = h1.scanner.head_started()?;
        let (quiet, last_finished) = h1.guard.quiet();
        if !quiet {
            return None;
        }
        let started = Instant::from_std(started);
        let from = match last_finished.map(Instant::from_std) {
            Some(f) if f > started => f,
            _ => started,
        };
        Some(from + self.header)
    }

    /// Arms the timer for the nearest deadline and reports whether one
    /// passed. `reading`: called from a read. An HTTP/1.x request in
    /// progress is bounded by the request timeout, not the idle timer, so
    /// a read only counts idleness between messages; a write that cannot
    /// proceed (the client stopped reading) always does.
    fn poll_timers(&mut self, cx: &mut Context<'_>, reading: bool) -> Option<Fired> {
        if let Some(streams) = &self.h2 {
            streams.wake_reader_on_quiet(cx);
        }
        let quiet_since = self.h2.as_ref().and_then(|s| s.quiet_since());
        let last_activity = match quiet_since {
            Some(q) if q > self.last_activity => q,
            _ => self.last_activity,
        };
        let idle = (!reading || self.between_messages()).then(|| last_activity + self.idle);
        let header = self.header_deadline();
        let deadline = [idle, header].into_iter().flatten().min()?;
        if self.armed_for != Some(deadline) {
            self.timer.as_mut().reset(deadline);
            self.armed_for = Some(deadline);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        let now = Instant::now();
        if header.is_some_and(|h| h <= now) {
            Some(Fired::Header)
        } else if idle.is_some_and(|i| i <= now) {
            Some(Fired::Idle)
        } else {
            None
        }
    }

    /// True when the connection sits between HTTP/1.x messages with every
    /// response sent, or is HTTP/2 with no stream open (EOF is then how an
    /// idle close looks).
    fn between_messages(&self) -> bool {
        match (&self.h1, &self.h2) {
            (Some(h1), _) => h1.scanner.head_started().is_none() && h1.guard.quiet().0,
            (None, Some(streams)) => !streams.any_open(),
            (None, None) => true,
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

/// The 408 for a head that did not arrive in time.
fn timeout_response() -> Vec<u8> {
    let id = super::headers::new_request_id();
    let body = serde_json::json!({
        "error": {
            "code": "header_timeout",
            "message": "the request head was not received in time",
            "request_id": id,
        }
    })
    .to_string();
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncache-control: no-store\r\nstrict-transport-security: max-age=31536000\r\nconnection: close\r\nx-request-id: {id}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<T: AsyncWrite + Unpin> EdgeIo<T> {
    /// Writes the 408; Ready once it is written and flushed (or abandoned).
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let Phase::Refusing(bytes, pos, give_up) = &mut self.phase else {
                return Poll::Ready(timed_out("connection closed"));
            };
            if Instant::now() >= *give_up {
                self.phase = Phase::Closed;
                return Poll::Ready(timed_out("request head timed out"));
            }
            if *pos < bytes.len() {
                match Pin::new(&mut self.inner).poll_write(cx, &bytes[*pos..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        *pos += n;
                        continue;
                    }
                    Poll::Ready(_) => {
                        self.phase = Phase::Closed;
                        return Poll::Ready(timed_out("request head timed out"));
                    }
                    Poll::Pending => {}
                }
            } else {
                match Pin::new(&mut self.inner).poll_flush(cx) {
                    Poll::Ready(_) => {
                        self.phase = Phase::Closed;
                        return Poll::Ready(timed_out("request head timed out"));
                    }
                    Poll::Pending => {}
                }
            }
            // Waiting for the socket; the give-up deadline wakes us too.
            let give_up = *give_up;
            if self.armed_for != Some(give_up) {
                self.timer.as_mut().reset(give_up);
                self.armed_for = Some(give_up);
            }
            if self.timer.as_mut().poll(cx).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for EdgeIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.phase {
            Phase::Open => {}
            Phase::Refusing(..) => return this.poll_refusal(cx).map(Err),
            Phase::Closed => return Poll::Ready(Err(timed_out("connection closed"))),
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.last_activity = Instant::now();
                if let Some(h1) = &mut this.h1 {
                    // After a violation in a head the bytes still reach
                    // hyper (the scanner ignores them), so that hyper can
                    // read that head and the service can refuse it; the
                    // refusal closes the connection.
                    let fed = h1.scanner.feed(new);
                    let in_body = fed.violation.is_some_and(|(_, _, body)| body);
                    if let Some((_, v, _)) = fed.violation {
                        tracing::info!(target: "maskgate::edge", violation = v.code(), in_body, "HTTP/1.1 framing violation");
                        this.metrics.edge(v.code());
                    }
                    h1.guard.record(fed);
                    if in_body {
                        // The request is already being served: its body
                        // ends here, as an error, and so does the connection.
                        buf.set_filled(before);
                        this.phase = Phase::Closed;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "malformed request body framing",
                        )));
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.poll_timers(cx, true) {
                None => Poll::Pending,
                Some(Fired::Header) => {
                    this.metrics.edge("header_timeout");
                    tracing::info!(target: "maskgate::edge", "request head not received in time; 408");
                    if this.unflushed {
                        this.phase = Phase::Closed;
                        return Poll::Ready(Err(timed_out("request head timed out")));
                    }
                    this.phase = Phase::Refusing(
                        timeout_response(),
                        0,
                        Instant::now() + TIMEOUT_RESPONSE_GRACE,
                    );
                    this.poll_refusal(cx).map(Err)
                }
                Some(Fired::Idle) => {
                    this.metrics.edge("idle_timeout");
                    let quiet = this.between_messages();
                    this.phase = Phase::Closed;
                    if quiet {
                        // End of stream: hyper closes an idle connection quietly.
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Ready(Err(timed_out("connection idle")))
                    }
                }
            },
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for EdgeIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !matches!(this.phase, Phase::Open) {
            return Poll::Ready(Err(timed_out("connection closed")));
        }
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.last_activity = Instant::now();
                    this.unflushed = true;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // A client that stops reading is idle too.
                if this.poll_timers(cx, false) == Some(Fired::Idle) {
                    this.metrics.edge("idle_timeout");
                    this.phase = Phase::Closed;
                    return Poll::Ready(Err(timed_out("client stopped reading")));
                }
                Poll::Pending
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !matches!(this.phase, Phase::Open) {
            return Poll::Ready(Err(timed_out("connection closed")));
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.last_activity = Instant::now();
                    this.unflushed = true;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.poll_timers(cx, false) == Some(Fired::Idle) {
                    this.metrics.edge("idle_timeout");
                    this.phase = Phase::Closed;
                    return Poll::Ready(Err(timed_out("client stopped reading")));
                }
                Poll::Pending
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                this.unflushed = false;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
