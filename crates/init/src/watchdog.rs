//! The hardware watchdog: armed at boot, petted by the event loop, and left
//! armed through shutdown so a hang on the way down still resets the machine.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);
nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);

/// Seconds the machine may go unpetted before the watchdog resets it.
pub const TIMEOUT_SECS: libc::c_int = 60;

#[derive(Debug)]
pub struct Watchdog {
    file: File,
    pub timeout: Duration,
}

impl Watchdog {
    /// Opens and arms `/dev/watchdog0`. `Ok(None)` when the machine has none.
    pub fn open(dev: &Path) -> io::Result<Option<Self>> {
        let file = match OpenOptions::new().write(true).open(dev) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut timeout = TIMEOUT_SECS;
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one c_int through the
        // pointer, which points at a live local; the fd is open.
        let set = unsafe { wdioc_settimeout(file.as_raw_fd(), &mut timeout) };
        if set.is_err() {
            // Not every driver can change its timeout; keep its own.
            timeout = TIMEOUT_SECS;
        }
        let secs = u64::try_from(timeout.max(1)).unwrap_or(60);
        Ok(Some(Watchdog {
            file,
            timeout: Duration::from_secs(secs),
        }))
    }

    /// Pet at a third of the timeout.
    pub fn interval(&self) -> Duration {
        self.timeout / 3
    }

    pub fn pet(&self) -> io::Result<()> {
        let mut unused = 0;
        // SAFETY: WDIOC_KEEPALIVE takes an int pointer it may write; it points
        // at a live local and the fd is open.
        unsafe { wdioc_keepalive(self.file.as_raw_fd(), &mut unused) }
            .map(drop)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))
    }
}
