//! The throwaway network namespace both servers run in, and the child
//! processes in it.
//!
//! The namespace is `cairnb-<pid>` with `lo` up and one veth pair, `cb0`
//! and `cb1`. cairnd's machine config gives `cb0` a static address, so its
//! network counts as configured at once and the API starts without waiting
//! for DHCP. Servers are started through `ip netns exec` and `unshare
//! --uts`: `ip` enters the network namespace (and mounts a matching
//! `/sys`), and the private UTS namespace means nothing cairnd does can
//! rename the host. Both `exec`, so the child's pid is the server's pid.
//!
//! Every value here cleans up in `Drop`: children get SIGTERM, then
//! SIGKILL; the namespace's remaining processes are killed and the
//! namespace deleted, also when the bench fails or panics. SIGINT, SIGTERM
//! and SIGHUP do the same through [`BenchNamespace::teardown_on_signal`].
//! A bench killed with SIGKILL leaves its namespace behind; the next run
//! deletes `cairnb-*` namespaces whose pid is gone.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

const PREFIX: &str = "cairnb-";

/// The veth end cairnd manages.
pub const MANAGED_LINK: &str = "cb0";
/// Its peer, left alone (cairnd ignores virtual links nobody named).
pub const PEER_LINK: &str = "cb1";

/// Creating or using the namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// `ip` could not be run.
    #[error("cannot run {0}")]
    Spawn(String, #[source] std::io::Error),
    /// `ip` failed.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// The namespace handle could not be opened.
    #[error("cannot open {0}")]
    Open(PathBuf, #[source] std::io::Error),
    /// setns(2) failed.
    #[error("cannot enter network namespace {0}")]
    Setns(String, #[source] nix::Error),
}

/// A network namespace deleted on drop.
#[derive(Debug)]
pub struct BenchNamespace {
    name: String,
}

fn ip(args: &[&str]) -> Result<String, NamespaceError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NamespaceError::Spawn(command.clone(), e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NamespaceError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl BenchNamespace {
    /// Creates `cairnb-<pid>` with `lo` up and the veth pair.
    ///
    /// # Errors
    /// [`NamespaceError`]; a half-made namespace is deleted.
    pub fn create() -> Result<Self, NamespaceError> {
        remove_stale();
        let ns = Self {
            name: format!("{PREFIX}{}", std::process::id()),
        };
        ip(&["netns", "add", &ns.name])?;
        // From here on, Drop removes the namespace if a step fails.
        let n = ns.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            n,
            "link",
            "add",
            MANAGED_LINK,
            "type",
            "veth",
            "peer",
            "name",
            PEER_LINK,
        ])?;
        ip(&["-n", n, "link", "set", PEER_LINK, "up"])?;
        Ok(ns)
    }

    /// The namespace name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// On SIGINT, SIGTERM or SIGHUP, kills everything in the namespace,
    /// deletes it and `extra_dirs`, and exits with 130. Without this an
    /// interrupted bench would leave cairnd and nginx running (no `Drop`
    /// runs when a signal ends the process). The handlers are tokio's, so
    /// the children (which exec) start with default signal handling.
    ///
    /// # Errors
    /// The I/O error if the watcher's runtime or thread cannot start.
    pub fn teardown_on_signal(&self, extra_dirs: Vec<PathBuf>) -> Result<(), std::io::Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Registered here, before returning, so no signal slips through
        // between this call and the watcher thread starting.
        let (mut interrupt, mut terminate, mut hangup) = {
            let _entered = runtime.enter();
            (
                signal(SignalKind::interrupt())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::hangup())?,
            )
        };
        let name = self.name.clone();
        std::thread::Builder::new()
            .name("signal-teardown".into())
            .spawn(move || {
                runtime.block_on(async {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                        _ = hangup.recv() => {}
                    }
                });
                eprintln!("interrupted; removing network namespace {name}");
                teardown(&name);
                for dir in extra_dirs {
                    let _ = std::fs::remove_dir_all(dir);
                }
                std::process::exit(130);
            })?;
        Ok(())
    }

    /// A command that runs `program` inside the namespace with a private
    /// UTS namespace.
    #[must_use]
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, "unshare", "--uts", "--"])
            .arg(program);
        command
    }

    /// Runs `f` on a thread that has entered the namespace; sockets it
    /// opens, and threads it spawns, live there.
    ///
    /// # Errors
    /// [`NamespaceError`] if the namespace cannot be entered.
    ///
    /// # Panics
    /// Re-raises a panic from `f`.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NamespaceError> {
        let path = Path::new("/run/netns").join(&self.name);
        let handle = File::open(&path).map_err(|e| NamespaceError::Open(path, e))?;
        let name = self.name.clone();
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                // setns changes only this thread, which ends with the scope.
                nix::sched::setns(&handle, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NamespaceError::Setns(name, e))?;
                Ok(f())
            });
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for BenchNamespace {
    fn drop(&mut self) {
        teardown(&self.name);
    }
}

fn teardown(name: &str) {
    if let Ok(pids) = ip(&["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if let Err(e) = ip(&["netns", "del", name]) {
        eprintln!("cairn-api-bench: could not delete network namespace {name}: {e}");
    }
}

fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            eprintln!(
                "cairn-api-bench: removing stale network namespace {name} (pid {pid} is gone)"
            );
            teardown(&name);
        }
    }
}

/// A child process stopped (SIGTERM, then SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    what: &'static str,
    child: Child,
}

impl ChildGuard {
    /// Spawns `command` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    /// The I/O error from opening the log or spawning.
    pub fn spawn(
        what: &'static str,
        mut command: Command,
        log: &Path,
    ) -> Result<Self, std::io::Error> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(Self { what, child })
    }

    /// The child's pid (the server's, once `ip` and `unshare` have exec'd).
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What this child is, for messages.
    #[must_use]
    pub fn what(&self) -> &'static str {
        self.what
    }

    /// Its exit status if it has exited.
    #[must_use]
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        crate::network::stop_child(&mut self.child, Duration::from_secs(3));
    }
}

/// The command name of `pid` (`/proc/<pid>/comm`), to see when `ip` and
/// `unshare` have become the server.
#[must_use]
pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}
