//! The request body as the request path sees it, and what becomes of the
//! part nobody read.
//!
//! HTTP/2 ends a stream that no one holds any more with `RST_STREAM`: a
//! refusal answered before the request body arrived (a `POST` to a route
//! the caller may not use) went out as the response, then a reset with
//! `NO_ERROR` as soon as the request path dropped the body. RFC 9113 §8.1
//! allows that, but common clients (curl, about one try in eight) then
//! report a stream error and never show the response. So an HTTP/2 body
//! dropped before its end is handed to a small task that reads and
//! discards the rest, as nginx's lingering close does: at most
//! `limits.max_request_body_bytes`, for at most [`LINGER_TIME`]. The
//! client's own end of stream then closes the stream in order. A client
//! that sends more, or for longer, gets the reset after all.
//!
//! HTTP/1.x needs none of this: hyper reads or skips an unread body itself,
//! or closes the connection after the response.
//!
//! [`TimedOut`] is the other thing the edge hands on with a request: the
//! mark it sets when it stops waiting for the request path.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Longest an unread HTTP/2 request body is read on after its response.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// How much of an unread body is read and discarded after the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linger {
    /// Bytes read at most.
    pub max_bytes: u64,
    /// Time spent at most.
    pub max_time: Duration,
}

/// A client's request body: hyper's, and on HTTP/2 the rule for the part
/// left unread (see the module docs).
#[derive(Debug)]
pub struct RequestBody {
    inner: Option<Incoming>,
    linger: Option<Linger>,
}

impl RequestBody {
    /// `linger`: read and discard what is left when the body is dropped
    /// before its end (HTTP/2); `None` drops it as it is.
    pub fn new(inner: Incoming, linger: Option<Linger>) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            linger,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let (Some(body), Some(linger)) = (self.inner.take(), self.linger) else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(body, linger));
        }
    }
}

/// Reads `body` to its end within `linger`'s bounds, keeping nothing.
async fn discard(mut body: Incoming, linger: Linger) {
    let mut left = linger.max_bytes;
    let _ = tokio::time::timeout(linger.max_time, async {
        while let Some(Ok(frame)) = body.frame().await {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            match left.checked_sub(len) {
                Some(rest) => left = rest,
                None => return,
            }
        }
    })
    .await;
}

/// Put in every request's extensions by the edge and set when the edge
/// stops waiting for the request path (`limits.request_timeout`), just
/// before that work is dropped: the access log line of a response cut off
/// this way then records the 408 the client got, not a client that went
/// away.
#[derive(Clone, Debug, Default)]
pub struct TimedOut(Arc<AtomicBool>);

impl TimedOut {
    /// True once the edge has answered 408 in the request path's stead.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Marks the request as answered 408 by the edge.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}
