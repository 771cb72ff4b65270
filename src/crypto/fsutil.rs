//! Files that hold secrets: owner-only permissions, atomic replacement, and a
//! lock file that serializes writers across processes.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

/// The permission bits of `meta` when group or others have any access.
#[cfg(unix)]
pub(crate) fn too_open(meta: &Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Permission bits are a Unix notion; elsewhere the check passes.
#[cfg(not(unix))]
pub(crate) fn too_open(_meta: &Metadata) -> Option<u32> {
    None
}

/// Creates `path` for writing with mode 0600; fails if it exists.
pub(crate) fn create_new_private(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// fsyncs the directory holding `path`, so a rename or create in it is durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes `bytes` to a fresh private temp file beside `path` and fsyncs it.
fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let mut rnd = [0u8; 8];
    SystemRandom::new()
        .fill(&mut rnd)
        .map_err(|_| io::Error::other("random number generator failed"))?;
    let tmp = with_suffix(
        path,
        &format!(".tmp-{}-{}", std::process::id(), hex::encode(rnd)),
    );
    let result = (|| {
        let mut f = create_new_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Replaces `path` atomically with `bytes`: private temp file, fsync, rename,
/// fsync of the directory. Readers see the old file or the new one, never a mix.
pub(crate) fn replace_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_parent(path)
}

/// Creates `path` with `bytes` atomically, failing with `AlreadyExists` if it
/// exists (temp file, then a hard link, which never replaces).
pub(crate) fn create_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked?;
    sync_parent(path)
}

/// An exclusive lock on a file, held while the lock file `<path>.lock` exists.
/// Dropping it removes the lock file.
#[derive(Debug)]
pub(crate) struct FileLock {
    lock_path: PathBuf,
}

/// How long [`FileLock::acquire`] waits for another holder.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(10);

impl FileLock {
    /// The lock file's path for `path`.
    pub(crate) fn path_for(path: &Path) -> PathBuf {
        with_suffix(path, ".lock")
    }

    /// Takes the lock for `path`, waiting up to `wait` for another holder.
    /// `Ok(None)` means it is still held after `wait`.
    pub(crate) fn acquire(path: &Path, wait: Duration) -> io::Result<Option<FileLock>> {
        let lock_path = FileLock::path_for(path);
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            match create_new_private(&lock_path) {
                Ok(mut f) => {
                    // The pid helps an operator judge a stale lock; best effort.
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(Some(FileLock { lock_path }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.lock_path);
    }
}
