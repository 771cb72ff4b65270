// Compiled only under #[cfg(test)] (see the parent module).
//! Test helpers: temporary directories.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("maskgate-audit-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::audit::file::Clock;

/// A clock the test moves.
#[derive(Clone)]
pub(crate) struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    pub(crate) fn new(start: OffsetDateTime) -> FakeClock {
        FakeClock(Arc::new(AtomicI64::new(micros(start))))
    }

    pub(crate) fn clock(&self) -> Clock {
        let t = Arc::clone(&self.0);
        Clock::from_fn(move || {
            let us = t.load(Ordering::SeqCst);
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).expect("valid time")
        })
    }

    pub(crate) fn set(&self, t: OffsetDateTime) {
        self.0.store(micros(t), Ordering::SeqCst);
    }

    pub(crate) fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * 1_000_000, Ordering::SeqCst);
    }
}

fn micros(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1000).expect("time in range")
}
