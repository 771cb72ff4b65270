//! The log writer: request threads append lines to a buffer in memory; one
//! thread writes the buffer out every [`FLUSH_EVERY`] (or sooner when it
//! passes [`FLUSH_BYTES`]), so a request never waits on a `write(2)` and
//! there is no thread switch per line.
//!
//! Nothing is dropped: past [`MAX_BUFFERED`] a writer writes the buffer out
//! itself (back-pressure, never loss). [`LogGuard`] writes what is left when
//! it is dropped (at exit). A crash loses at most the last
//! [`FLUSH_EVERY`] of lines — operational logs only: the unmask audit log
//! is written durably by its own sink.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the writer thread writes the buffer out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// A buffer this large is written out at the next tick without waiting.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// A buffer this large is written out by the line that reaches it.
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;

struct Shared<W> {
    buf: Mutex<Vec<u8>>,
    out: Mutex<W>,
    stop: AtomicBool,
}

impl<W: Write> Shared<W> {
    fn write_out(&self) {
        let pending = {
            let mut buf = self.buf.lock().unwrap_or_else(PoisonError::into_inner);
            if buf.is_empty() {
                return;
            }
            std::mem::take(&mut *buf)
        };
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        // A log that cannot be written has nowhere to report it.
        let _ = out.write_all(&pending);
        let _ = out.flush();
    }
}

/// A cheap, cloneable `Write` that appends to the shared buffer.
pub struct BatchedWriter<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
}

impl<W: Write + Send + 'static> Clone for BatchedWriter<W> {
    fn clone(&self) -> Self {
        BatchedWriter {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<W: Write + Send + 'static> Write for BatchedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let full = {
            let mut buf = self
                .shared
                .buf
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            buf.extend_from_slice(data);
            buf.len() >= MAX_BUFFERED
        };
        if full {
            self.shared.write_out();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Stops the writer thread and writes what is left when dropped.
pub struct LogGuard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

impl<W: Write + Send + 'static> Drop for LogGuard<W> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        self.shared.write_out();
    }
}

/// A batched writer over `out` and the guard that owns its writer thread.
/// If the thread cannot be started, lines are written out by the writers
/// themselves once the buffer is full, and by the guard.
pub fn batched<W: Write + Send + 'static>(out: W) -> (BatchedWriter<W>, LogGuard<W>) {
    let shared = Arc::new(Shared {
        buf: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
        out: Mutex::new(out),
        stop: AtomicBool::new(false),
    });
    let worker = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("maskgate-log".to_owned())
        .spawn(move || {
            while !worker.stop.load(Ordering::Acquire) {
                std::thread::park_timeout(FLUSH_EVERY);
                worker.write_out();
            }
        })
        .ok();
    (
        BatchedWriter {
            shared: Arc::clone(&shared),
        },
        LogGuard { shared, thread },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_within_a_tick_and_all_of_them_at_the_end() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let mut threads = Vec::new();
        for t in 0..4 {
            let mut w = writer.clone();
            threads.push(std::thread::spawn(move || {
                for i in 0..500 {
                    w.write_all(format!("t{t} line {i}\n").as_bytes()).unwrap();
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        std::thread::sleep(FLUSH_EVERY * 4);
        assert!(
            !sink.0.lock().unwrap().is_empty(),
            "nothing written within a tick"
        );
        let mut w = writer.clone();
        w.write_all(b"last\n").unwrap();
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 2001);
        assert!(text.ends_with("last\n"));
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("t{t} ")))
                .collect();
            let expected: Vec<String> = (0..500).map(|i| format!("t{t} line {i}")).collect();
            assert_eq!(mine, expected);
        }
    }

    #[test]
    fn a_full_buffer_is_written_by_the_writer_itself() {
        let sink = Sink::default();
        let (mut writer, guard) = batched(sink.clone());
        let big = vec![b'x'; MAX_BUFFERED];
        writer.write_all(&big).unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), MAX_BUFFERED);
        drop(guard);
    }
}
