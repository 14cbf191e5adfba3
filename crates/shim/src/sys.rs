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
    #[error("could not enter the network namespace of pid {pid}")]
    EnterNetns {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("could not return to the shim's network namespace")]
    LeaveNetns(#[source] std::io::Error),
    #[error("could not bring up lo in the container's network namespace")]
    LoopbackUp(#[source] nix::Error),
    #[error("could not write {path}")]
    WriteCgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

/// Brings `lo` up in the network namespace of `pid` (a private network
/// gets a fresh namespace whose loopback is down; libcontainer leaves it
/// so). The shim enters the namespace only long enough to open a socket
/// there (a socket stays in the namespace it was made in), then returns.
pub fn loopback_up(pid: i32) -> Result<(), SysError> {
    use nix::sched::{CloneFlags, setns};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let own = std::fs::File::open("/proc/self/ns/net").map_err(SysError::LeaveNetns)?;
    let target = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|source| SysError::EnterNetns { pid, source })?;
    setns(&target, CloneFlags::CLONE_NEWNET).map_err(|e| SysError::EnterNetns {
        pid,
        source: e.into(),
    })?;
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    );
    setns(&own, CloneFlags::CLONE_NEWNET).map_err(|e| SysError::LeaveNetns(e.into()))?;
    let sock = sock.map_err(SysError::LoopbackUp)?;
    set_up(&sock, "lo").map_err(SysError::LoopbackUp)
}

fn set_up(sock: &OwnedFd, name: &str) -> Result<(), nix::Error> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of the
    // ifreq we own, on a socket we own.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "IFF_UP is 0x1, and ifru_flags is a c_short by the kernel ABI"
    )]
    let up = libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= up;
    }
    // SAFETY: as above; SIOCSIFFLAGS only reads the ifreq.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Writes one cgroup control file. A missing file (a kernel without swap
/// accounting has no `memory.swap.max`) is not an error.
pub fn write_cgroup_file(cgroup_dir: &Path, file: &str, value: &str) -> Result<(), SysError> {
    let path = cgroup_dir.join(file);
    match std::fs::write(&path, value) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SysError::WriteCgroup { path, source }),
    }
}

/// Returns freed heap memory to the kernel (glibc keeps it otherwise).
pub fn trim_heap() {
    // SAFETY: malloc_trim only walks glibc's own allocator state; the shim
    // is single-threaded and holds no allocator locks here.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// The `(start, length)` of every file-backed, read-only executable
/// mapping in a `/proc/PID/maps` text: program text (the static shim's
/// own, or a dynamic build's and its libraries'), never the kernel's
/// `[vdso]`/`[vsyscall]` pages and never anything writable.
pub fn text_mappings(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?;
            if perms != "r-xp" || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (end > start).then_some((start, end - start))
        })
        .collect()
}

/// Unmaps the pages of the shim's program text from its page tables, to
/// be faulted back from the page cache as they are used: starting a
/// container runs much code (spec parsing, libcontainer) that the serving
/// loop never runs again, and without this those pages count in the
/// shim's RSS for the container's whole life. Returns the bytes advised.
///
/// Only read-only executable file mappings are touched: they never hold
/// private changes (no relocation writes text), so `MADV_DONTNEED` on
/// them loses nothing; data and RELRO pages, which were written, are left
/// alone. On a node the binary lives in a tmpfs, so a refault is a minor
/// fault, never disk I/O.
pub fn drop_text_pages() -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for (start, len) in text_mappings(&maps) {
        // SAFETY: the range is a whole mapping the kernel listed for this
        // process, read-only and executable, so no Rust object lives in it
        // and dropping its pages only makes the next access fault them back
        // from the file unchanged (the code running now included).
        let rc = unsafe {
            nix::libc::madvise(
                start as *mut nix::libc::c_void,
                len,
                nix::libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            advised += len;
        }
    }
    advised
}

/// Whether `/` is the kernel's initramfs `rootfs` mount. `pivot_root`
/// cannot leave that mount (it has no parent), and libcontainer's
/// fallback (move the root and chroot) leaves `exec`'d processes, which
/// join the mount namespace by `setns`, outside the container's root. So
/// the shim refuses to run there; the node's init must first move to a
/// real filesystem (`switch_root` to a tmpfs), as LinuxKit does for runc.
pub fn root_is_initramfs() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split(' ').collect();
                    let mount_point = fields.get(4)?;
                    let sep = fields.iter().position(|f| *f == "-")?;
                    let fstype = fields.get(sep + 1)?;
                    (*mount_point == "/").then_some(*fstype == "rootfs")
                })
                .next_back()
        })
        .unwrap_or(false)
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

    #[test]
    fn only_read_only_executable_file_mappings_count_as_text() {
        let maps = "\
55d000000000-55d000001000 r--p 00000000 00:1a 12 /usr/bin/cairn-shim
55d000001000-55d000400000 r-xp 00001000 00:1a 12 /usr/bin/cairn-shim
55d000400000-55d000500000 r--p 00400000 00:1a 12 /usr/bin/cairn-shim
55d000500000-55d000510000 rw-p 00500000 00:1a 12 /usr/bin/cairn-shim
55d000600000-55d000700000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000010000 rwxp 00000000 00:00 0
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";
        assert_eq!(
            text_mappings(maps),
            vec![(0x55d0_0000_1000, 0x3f_f000)],
            "the shim's text only: not rodata/RELRO, data, heap, anonymous or kernel pages"
        );
    }

    #[test]
    fn dropping_text_pages_lowers_rss_and_the_code_still_runs() {
        let rss = || {
            std::fs::read_to_string("/proc/self/status")
                .expect("status")
                .lines()
                .find_map(|l| l.strip_prefix("RssFile:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .expect("RssFile")
        };
        let before = rss();
        assert!(drop_text_pages() > 0, "the test binary has text");
        let after = rss();
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // Everything still runs after its pages were dropped.
        assert_eq!(text_mappings("").len(), 0);
    }
}
