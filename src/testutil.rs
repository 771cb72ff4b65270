//! Test helpers shared by the unit tests of the pure cores.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a future to completion on the current thread. The local stores'
/// futures never wait on I/O, so polling with a no-op waker (yielding the
/// thread between polls) is enough, and the cores' tests need no runtime.
pub trait Wait: Future + Sized {
    fn wait(self) -> Self::Output {
        let mut fut = pin!(self);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::yield_now();
        }
    }
}

impl<F: Future> Wait for F {}
