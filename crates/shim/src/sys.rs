//! The few syscalls the shim makes itself (libcontainer does the rest),
//! each with its own error.

use nix::mount::{MntFlags, MsFlags};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use runtime::ExitStatus;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Errors of the shim's own syscalls.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    #[error("could not mount the overlay at {target} (lower {lower})")]
    MountOverlay {
        target: PathBuf,
        lower: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("could not unmount {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("could not open a pidfd for pid {pid}")]
    PidfdOpen {
        pid: i32,
        #[source]
        source: rustix::io::Errno,
    },
    #[error("could not reap pid {pid}")]
    Wait {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("could not signal pid {pid}")]
    Kill {
        pid: i32,
        #[source]
        source: nix::Error,
    },
    #[error("could not create a pipe")]
    Pipe(#[source] nix::Error),
    #[error("could not install the SIGTERM handler")]
    Sigaction(#[source] nix::Error),
    #[error("could not create {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Mounts an overlay at `target` with `lower` read-only underneath; the
/// container's writes go to `upper`.
pub fn mount_overlay(
    lower: &Path,
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), SysError> {
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).map_err(|source| SysError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|source| SysError::MountOverlay {
        target: target.to_owned(),
        lower: lower.to_owned(),
        source,
    })
}

/// Unmounts `target`; not being mounted (or not existing) is success.
pub fn unmount(target: &Path) -> Result<(), SysError> {
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => Ok(()),
        Err(nix::Error::EBUSY) => {
            nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|source| SysError::Unmount {
                target: target.to_owned(),
                source,
            })
        }
        Err(source) => Err(SysError::Unmount {
            target: target.to_owned(),
            source,
        }),
    }
}

/// A pidfd for `pid`: readable once the process has exited. libcontainer
/// creates the container's processes with `CLONE_PARENT` and no exit
/// signal, so no SIGCHLD arrives; the pidfd is how the shim learns of the
/// exit.
pub fn pidfd(pid: i32) -> Result<OwnedFd, SysError> {
    let raw = rustix::process::Pid::from_raw(pid).ok_or(SysError::PidfdOpen {
        pid,
        source: rustix::io::Errno::INVAL,
    })?;
    rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())
        .map_err(|source| SysError::PidfdOpen { pid, source })
}

/// Reaps `pid` if it has exited (`__WALL`: it has no exit signal, so it
/// counts as a "clone" child).
pub fn try_reap(pid: i32) -> Result<Option<ExitStatus>, SysError> {
    let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
    match nix::sys::wait::waitpid(Pid::from_raw(pid), Some(flags)) {
        Ok(WaitStatus::Exited(_, code)) => Ok(Some(ExitStatus::Code(code))),
        Ok(WaitStatus::Signaled(_, signal, _)) => Ok(Some(ExitStatus::Signal(signal as i32))),
        Ok(_) => Ok(None),
        Err(source) => Err(SysError::Wait { pid, source }),
    }
}

/// Reaps any other exited children (processes reparented to the shim as
/// subreaper), without blocking.
pub fn reap_orphans() {
    let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
    while let Ok(status) = nix::sys::wait::waitpid(Pid::from_raw(-1), Some(flags)) {
        if matches!(status, WaitStatus::StillAlive) {
            break;
        }
    }
}

/// Sends signal number `signal` to `pid`.
pub fn kill(pid: i32, signal: i32) -> Result<(), SysError> {
    let sig = nix::sys::signal::Signal::try_from(signal)
        .map_err(|source| SysError::Kill { pid, source })?;
    match nix::sys::signal::kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(source) => Err(SysError::Kill { pid, source }),
    }
}

/// A close-on-exec pipe whose read end does not block.
pub fn pipe() -> Result<(OwnedFd, OwnedFd), SysError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(SysError::Pipe)?;
    set_nonblocking(&r).map_err(SysError::Pipe)?;
    Ok((r, w))
}

pub fn set_nonblocking(fd: &impl AsFd) -> Result<(), nix::Error> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// Set from the SIGTERM/SIGINT handler; the main loop polls with a short
/// timeout and checks it, and the signal itself interrupts `poll`. A signal
/// handler can only talk through a static.
static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: nix::libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Routes SIGTERM and SIGINT to [`terminate_requested`]. A handler (not a
/// blocked signal read from a signalfd) because the container's process
/// inherits the shim's signal mask through libcontainer's clone and exec,
/// while handlers are reset to the default by exec.
pub fn install_terminate_handler() -> Result<(), SysError> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_terminate),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe, and the shim is single-threaded.
        unsafe { sigaction(signal, &action) }.map_err(SysError::Sigaction)?;
    }
    Ok(())
}

/// Whether SIGTERM or SIGINT arrived since the last call.
pub fn terminate_requested() -> bool {
    TERMINATE.swap(false, Ordering::SeqCst)
}

/// The `oom_kill` count in the cgroup's `memory.events` (0 when the file
/// is missing: no memory controller, or the cgroup is gone).
pub fn oom_kills(cgroup_dir: &Path) -> u64 {
    std::fs::read_to_string(cgroup_dir.join("memory.events"))
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_memory_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(oom_kills(dir.path()), 0, "missing file");
        std::fs::write(
            dir.path().join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n",
        )
        .expect("write");
        assert_eq!(oom_kills(dir.path()), 1);
    }
}
