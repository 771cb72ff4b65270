//! Step 7: the response body, rewritten chunk by chunk as it streams.
//!
//! The first part of every body (up to [`PREBUFFER_BYTES`] of output) is
//! rewritten before the status line is sent, so a body that fails early —
//! the common case of a malformed or unexpected small response — becomes a
//! clean 502 with none of its bytes sent. Past that point the response is
//! committed; a failure then aborts it (connection reset or stream reset),
//! never completes it with raw bytes.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::rewrite::{BodyRewriter, Counts, RewriteError};

/// Output rewritten before the response is committed.
pub const PREBUFFER_BYTES: usize = 64 * 1024;

/// Why a response body was cut short. Carries no body content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The upstream body broke off.
    #[error("upstream body failed")]
    Upstream,
    /// The body could not be rewritten.
    #[error("response body could not be rewritten: {0}")]
    Rewrite(RewriteError),
    /// A pass-through body was over the response size limit.
    #[error("response body over the limit")]
    TooLarge,
    /// The body holds more customer records than the principal may still
    /// receive today (its record budget).
    #[error("response holds more records than the {limit} left in the budget")]
    RecordLimit {
        /// Records that were left.
        limit: u64,
    },
}

/// How a body ended, for the access log and metrics.
#[derive(Debug, Clone)]
pub enum BodyOutcome {
    /// Sent completely.
    Complete(Box<Counts>),
    /// Cut short.
    Failed(BodyError),
    /// The client went away first.
    Dropped,
}

type OnEnd = Box<dyn FnOnce(BodyOutcome) + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    Finished,
    Failed,
}

/// The rewritten response body.
pub struct RewriteBody {
    upstream: Incoming,
    rewriter: Option<Box<dyn BodyRewriter>>,
    out: Vec<u8>,
    phase: Phase,
    passed: u64,
    max_passthrough: u64,
    record_limit: Option<u64>,
    on_end: Option<OnEnd>,
}

impl RewriteBody {
    /// Wraps an upstream body. `rewriter` is `None` for pass-through content
    /// types (still limited to `max_passthrough` bytes).
    pub fn new(
        upstream: Incoming,
        rewriter: Option<Box<dyn BodyRewriter>>,
        max_passthrough: u64,
        on_end: OnEnd,
    ) -> RewriteBody {
        RewriteBody {
            upstream,
            rewriter,
            out: Vec::new(),
            phase: Phase::Streaming,
            passed: 0,
            max_passthrough,
            record_limit: None,
            on_end: Some(on_end),
        }
    }

    /// Fails the body (no byte of the chunk that crosses it is sent) once
    /// it holds more than `limit` customer records; `None` for no limit.
    pub fn with_record_limit(mut self, limit: Option<u64>) -> RewriteBody {
        self.record_limit = limit;
        self
    }

    /// What the rewriter did so far, without copying; `None` for a
    /// pass-through body.
    pub fn counts_ref(&self) -> Option<&Counts> {
        self.rewriter.as_ref().map(|r| r.counts())
    }

    fn end(&mut self, outcome: BodyOutcome) {
        if let Some(f) = self.on_end.take() {
            f(outcome);
        }
    }

    fn fail(&mut self, err: BodyError) -> BodyError {
        self.phase = Phase::Failed;
        self.out = Vec::new();
        self.end(BodyOutcome::Failed(err.clone()));
        err
    }

    /// Pulls one upstream frame through the rewriter. Ready(Ok) means
    /// progress was made or the body finished.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BodyError>> {
        match Pin::new(&mut self.upstream).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Err(_))) => Poll::Ready(Err(self.fail(BodyError::Upstream))),
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    // Trailers are dropped: they could carry anything.
                    return Poll::Ready(Ok(()));
                };
                let r = match self.rewriter.as_mut() {
                    Some(rw) => rw
                        .write(&data, &mut self.out)
                        .map_err(BodyError::Rewrite)
                        .and_then(|()| within_records(rw.counts(), self.record_limit)),
                    None => {
                        self.passed += data.len() as u64;
                        if self.passed > self.max_passthrough {
                            Err(BodyError::TooLarge)
                        } else {
                            self.out.extend_from_slice(&data);
                            Ok(())
                        }
                    }
                };
                Poll::Ready(r.map_err(|e| self.fail(e)))
            }
            Poll::Ready(None) => {
                let r = match self.rewriter.as_mut() {
                    Some(rw) => rw
                        .finish(&mut self.out)
                        .map_err(BodyError::Rewrite)
                        .and_then(|()| within_records(rw.counts(), self.record_limit)),
                    None => Ok(()),
                };
                match r {
                    Ok(()) => {
                        self.phase = Phase::Finished;
                        let counts = self.counts();
                        self.end(BodyOutcome::Complete(Box::new(counts)));
                        Poll::Ready(Ok(()))
                    }
                    Err(e) => Poll::Ready(Err(self.fail(e))),
                }
            }
        }
    }

    /// Rewrites until `threshold` bytes of output are ready or the body ends.
    /// Returns true when the whole body has been rewritten.
    pub async fn fill(&mut self, threshold: usize) -> Result<bool, BodyError> {
        std::future::poll_fn(|cx| loop {
            match self.phase {
                Phase::Finished => return Poll::Ready(Ok(true)),
                Phase::Failed => return Poll::Ready(Err(BodyError::Upstream)),
                Phase::Streaming if self.out.len() >= threshold => return Poll::Ready(Ok(false)),
                Phase::Streaming => {}
            }
            match self.poll_step(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
        })
        .await
    }

    /// Output rewritten so far and not yet sent.
    pub fn buffered(&self) -> usize {
        self.out.len()
    }

    /// Takes everything buffered (for a response sent whole).
    pub fn take_buffered(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.out))
    }

    /// What the rewriter did so far.
    pub fn counts(&self) -> Counts {
        self.rewriter
            .as_ref()
            .map(|r| r.counts().clone())
            .unwrap_or_default()
    }
}

fn within_records(counts: &Counts, limit: Option<u64>) -> Result<(), BodyError> {
    match limit {
        Some(limit) if counts.records > limit => Err(BodyError::RecordLimit { limit }),
        _ => Ok(()),
    }
}

impl Drop for RewriteBody {
    fn drop(&mut self) {
        self.end(BodyOutcome::Dropped);
    }
}

impl Body for RewriteBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let data = Bytes::from(std::mem::take(&mut this.out));
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            match this.phase {
                Phase::Finished => return Poll::Ready(None),
                // Never end a failed body cleanly: a clean end would let a
                // client take a cut-off body for a whole one.
                Phase::Failed => return Poll::Ready(Some(Err(BodyError::Upstream))),
                Phase::Streaming => {}
            }
            match this.poll_step(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(())) => {}
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.out.is_empty() && self.phase != Phase::Streaming
    }

    fn size_hint(&self) -> SizeHint {
        if self.phase == Phase::Finished {
            SizeHint::with_exact(self.out.len() as u64)
        } else {
            SizeHint::default()
        }
    }
}
