//! Serialising VM work. The host has two cores and emulates under TCG, so
//! two boots at once make both slow enough to trip timeouts. Every
//! [`crate::network::Network`] holds a [`VmLock`] for its lifetime: a
//! process-wide mutex (test threads) plus an `flock` on a file under
//! `target/qemu-tests` (other test binaries, `cairn-bench`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

static IN_PROCESS: Mutex<()> = Mutex::new(());

/// Held while VMs run; released on drop (also during a panic unwind).
#[derive(Debug)]
pub struct VmLock {
    // Field order matters: the file lock is released before the mutex, so
    // another thread never holds the mutex while waiting on our own flock.
    _file: FileLock,
    _guard: MutexGuard<'static, ()>,
}

/// Taking the lock failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("creating lock directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening lock file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("locking {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl VmLock {
    /// Blocks until this thread may run VMs.
    ///
    /// # Errors
    /// [`LockError`] if the lock file cannot be created or locked.
    pub fn acquire() -> Result<Self, LockError> {
        // A test that panicked while holding the mutex has already torn its
        // VMs down (Drop ran during unwinding), so the poison carries no
        // broken state.
        let guard = IN_PROCESS.lock().unwrap_or_else(PoisonError::into_inner);
        let file = FileLock::exclusive(&crate::paths::harness_dir().join("vm.lock"))?;
        Ok(Self {
            _file: file,
            _guard: guard,
        })
    }
}

/// An exclusive `flock` on a file, released when dropped (the kernel also
/// releases it if the process dies, so a crashed run never wedges the next).
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` is ours.
    ///
    /// # Errors
    /// [`LockError`] on I/O failure.
    pub fn exclusive(path: &Path) -> Result<Self, LockError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| LockError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| LockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        file.lock().map_err(|source| LockError::Lock {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file would release it too; unlocking first makes the
        // release independent of any fd that might have been duplicated.
        let _ = self.file.unlock();
    }
}
