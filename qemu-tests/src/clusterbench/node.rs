//! What both systems' clusters share: the error type, one member process
//! that can be killed with SIGKILL and started again on the same data, the
//! set of members a cluster drives by index, the bounded wait for a
//! cluster state ([`Patience`]), one JSON call, and small helpers for the
//! namespace they run in.
//!
//! Members listen on `127.0.0.<n>` of the namespace's loopback, so three of
//! them use the standard ports side by side and nothing they send can leave
//! the namespace.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rustls::ClientConfig;

use super::kv::{KvConnection, System};
use crate::apibench::client::{self, RequestError};
use crate::apibench::sandbox::{self, BenchNamespace, ChildGuard};

/// A cluster could not be set up, observed or driven.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A file or directory could not be made or read.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A member process could not be started.
    #[error("cannot start {what}")]
    Spawn {
        /// The member.
        what: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A member exited while it was expected to run.
    #[error("{what} exited with {status}; log tail:\n{tail}")]
    Exited {
        /// The member.
        what: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its log.
        tail: String,
    },
    /// Something did not happen in time.
    #[error("{what} did not happen within {limit:?}; {detail}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was given.
        limit: Duration,
        /// The last error seen, or log tails.
        detail: String,
    },
    /// A setup request failed on the wire.
    #[error("{what}")]
    Request {
        /// The request.
        what: String,
        /// The failure.
        #[source]
        source: RequestError,
    },
    /// A setup request was refused.
    #[error("{what} answered {status}: {body}")]
    Refused {
        /// The request.
        what: String,
        /// The status.
        status: u16,
        /// The body.
        body: String,
    },
    /// A response did not have the expected shape.
    #[error("{what}: unexpected answer")]
    Decode {
        /// The request.
        what: String,
        /// The failure.
        #[source]
        source: serde_json::Error,
    },
    /// Certificates or TLS configuration could not be made.
    #[error("{0}")]
    Tls(String),
    /// The namespace could not be extended.
    #[error("network namespace")]
    Namespace(#[source] sandbox::NamespaceError),
    /// The cluster is not in the state the caller needs.
    #[error("{0}")]
    State(String),
}

impl ClusterError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| ClusterError::Io { what, source }
    }

    pub(crate) fn request(what: impl Into<String>) -> impl FnOnce(RequestError) -> Self {
        let what = what.into();
        move |source| ClusterError::Request { what, source }
    }

    pub(crate) fn decode(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Self {
        let what = what.into();
        move |source| ClusterError::Decode { what, source }
    }
}

/// The loopback address of member `index` (0-based): `127.0.0.<index + 1>`.
#[must_use]
pub fn member_ip(index: usize) -> Ipv4Addr {
    let last = u8::try_from(index + 1).unwrap_or(u8::MAX);
    Ipv4Addr::new(127, 0, 0, last)
}

/// Adds a veth pair `name`/`peer` to the namespace, the peer up. cairnd
/// manages the first end (a static address in its machine config), so its
/// network counts as configured at once; one pair per member keeps the
/// three agents off each other's links.
///
/// # Errors
/// [`ClusterError::Namespace`] if `ip` fails.
pub fn add_veth(ns: &BenchNamespace, name: &str, peer: &str) -> Result<(), ClusterError> {
    let n = ns.name();
    ip(&[
        "-n", n, "link", "add", name, "type", "veth", "peer", "name", peer,
    ])?;
    ip(&["-n", n, "link", "set", peer, "up"])
}

fn ip(args: &[&str]) -> Result<(), ClusterError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ClusterError::Namespace(sandbox::NamespaceError::Spawn(command.clone(), e)))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Namespace(sandbox::NamespaceError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        }))
    }
}

/// The last `lines` lines of a log file.
#[must_use]
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// One member's process across kills and restarts. Its log is appended
/// to, so every incarnation stays readable after the run.
#[derive(Debug)]
pub struct MemberProcess {
    name: String,
    log: PathBuf,
    child: Option<ChildGuard>,
    /// Log length when the current incarnation started.
    log_start: u64,
}

impl MemberProcess {
    /// A member named `name` logging to `log`, not running yet.
    #[must_use]
    pub fn new(name: String, log: PathBuf) -> Self {
        Self {
            name,
            log,
            child: None,
            log_start: 0,
        }
    }

    /// The member's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    #[must_use]
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Starts it with `command` (already inside the namespace).
    ///
    /// # Errors
    /// [`ClusterError::Spawn`]; [`ClusterError::State`] if it runs already.
    pub fn start(&mut self, command: Command) -> Result<(), ClusterError> {
        if self.child.is_some() {
            return Err(ClusterError::State(format!(
                "{} is running already",
                self.name
            )));
        }
        self.log_start = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let child = ChildGuard::spawn("cluster member", command, &self.log).map_err(|source| {
            ClusterError::Spawn {
                what: self.name.clone(),
                source,
            }
        })?;
        self.child = Some(child);
        Ok(())
    }

    /// The running incarnation's pid.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// What the current incarnation logged so far.
    #[must_use]
    pub fn log_since_start(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(self.log_start).unwrap_or(usize::MAX);
        String::from_utf8_lossy(text.get(start..).unwrap_or_default()).into_owned()
    }

    /// Fails if the process has exited on its own.
    ///
    /// # Errors
    /// [`ClusterError::Exited`] with the log tail;
    /// [`ClusterError::State`] if it was never started or was killed.
    pub fn check_running(&mut self) -> Result<(), ClusterError> {
        let Some(child) = self.child.as_mut() else {
            return Err(ClusterError::State(format!("{} is not running", self.name)));
        };
        match child.exited() {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                Err(ClusterError::Exited {
                    what: self.name.clone(),
                    status,
                    tail: tail(&self.log, 30),
                })
            }
        }
    }

    /// SIGKILL, then reap: no shutdown path of the member runs.
    ///
    /// # Errors
    /// [`ClusterError::State`] if it is not running.
    pub fn kill(&mut self) -> Result<(), ClusterError> {
        let Some(child) = self.child.take() else {
            return Err(ClusterError::State(format!("{} is not running", self.name)));
        };
        if let Ok(raw) = i32::try_from(child.pid()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGKILL);
        }
        // Dropping reaps it (it is dead, so the guard's SIGTERM never lands).
        drop(child);
        Ok(())
    }

    /// Whether an incarnation is running (as far as the harness knows).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops it gracefully (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        drop(self.child.take());
    }
}

/// One member: its process and what its system needs to start it again
/// (`N`: a state directory, certificates).
#[derive(Debug)]
pub struct Member<N> {
    /// The process across kills and restarts.
    pub process: MemberProcess,
    /// The system's own files for it.
    pub files: N,
}

/// A cluster's members by index (0-based; member `i` listens on
/// [`member_ip`]`(i)`), with what both systems do to them alike.
#[derive(Debug)]
pub struct MemberSet<N> {
    members: Vec<Member<N>>,
}

impl<N> MemberSet<N> {
    /// The members, none running yet.
    #[must_use]
    pub fn new(members: Vec<Member<N>>) -> Self {
        Self { members }
    }

    /// How many there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`.
    ///
    /// # Errors
    /// [`ClusterError::State`] if there is no such member.
    pub fn get(&self, i: usize) -> Result<&Member<N>, ClusterError> {
        self.members
            .get(i)
            .ok_or_else(|| ClusterError::State(format!("no member {i}")))
    }

    /// Member `i`, to start or stop.
    ///
    /// # Errors
    /// [`ClusterError::State`] if there is no such member.
    pub fn get_mut(&mut self, i: usize) -> Result<&mut Member<N>, ClusterError> {
        self.members
            .get_mut(i)
            .ok_or_else(|| ClusterError::State(format!("no member {i}")))
    }

    /// Member `i`'s name ("" for no such member).
    #[must_use]
    pub fn name(&self, i: usize) -> &str {
        self.members.get(i).map_or("", |m| m.process.name())
    }

    /// Member `i`'s files.
    #[must_use]
    pub fn files(&self, i: usize) -> Option<&N> {
        self.members.get(i).map(|m| &m.files)
    }

    /// The index of the member named `name`.
    #[must_use]
    pub fn position(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.process.name() == name)
    }

    /// Pids of the running members.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.process.pid())
            .collect()
    }

    /// Whether member `i` is running.
    #[must_use]
    pub fn is_running(&self, i: usize) -> bool {
        self.members.get(i).is_some_and(|m| m.process.is_running())
    }

    /// SIGKILLs member `i`.
    ///
    /// # Errors
    /// [`ClusterError::State`] if it is not running.
    pub fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        self.get_mut(i)?.process.kill()
    }

    /// Stops every member gracefully.
    pub fn stop_all(&mut self) {
        for member in &mut self.members {
            member.process.stop();
        }
    }

    /// Reads `key` through every member in turn (`addrs` in member
    /// order): each must answer a linearizable read.
    ///
    /// # Errors
    /// Which member's read failed, and why.
    pub async fn read_through_each(
        &self,
        system: System,
        config: &Arc<ClientConfig>,
        addrs: &[SocketAddr],
        key: &str,
        limit: Duration,
    ) -> Result<(), String> {
        for (i, addr) in addrs.iter().enumerate() {
            let mut connection = KvConnection::new(system, Arc::clone(config), *addr);
            connection
                .get(key, limit)
                .await
                .map_err(|e| format!("a read through {}: {}", self.name(i), crate::report(&e)))?;
        }
        Ok(())
    }

    /// Fails if a member that should run has exited on its own.
    ///
    /// # Errors
    /// [`ClusterError::Exited`] with its log tail.
    pub fn check_running(&mut self) -> Result<(), ClusterError> {
        for member in &mut self.members {
            if member.process.is_running() {
                member.process.check_running()?;
            }
        }
        Ok(())
    }
}

/// How long a wait for a cluster state may take: each failed look says
/// why, and the last reason goes into the timeout error.
#[derive(Debug)]
pub struct Patience {
    what: String,
    limit: Duration,
    deadline: std::time::Instant,
}

impl Patience {
    /// A wait for `what` of at most `limit` (scaled by
    /// `CAIRN_TIMEOUT_SCALE`), starting now.
    #[must_use]
    pub fn new(what: impl Into<String>, limit: Duration) -> Self {
        Self {
            what: what.into(),
            limit,
            deadline: std::time::Instant::now() + crate::timeout(limit),
        }
    }

    /// After a look that was not yet right (`last` says why): sleeps
    /// `poll` and returns, or gives up once the time is over.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] with `last` as the detail.
    pub async fn again(&self, last: String, poll: Duration) -> Result<(), ClusterError> {
        if std::time::Instant::now() > self.deadline {
            return Err(ClusterError::Timeout {
                what: self.what.clone(),
                limit: self.limit,
                detail: last,
            });
        }
        tokio::time::sleep(poll).await;
        Ok(())
    }
}

/// One setup or status call; the answer must be 200 with a `T` body.
///
/// # Errors
/// [`ClusterError::Request`], [`ClusterError::Refused`] or
/// [`ClusterError::Decode`], naming `what` and the address.
pub async fn call_json<T: serde::de::DeserializeOwned>(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    request: Call<'_>,
    limit: Duration,
) -> Result<T, ClusterError> {
    let what = format!("{} to {addr}", request.what);
    let (status, answer) = client::call(
        config,
        addr,
        request.method,
        request.path,
        request.body,
        limit,
    )
    .await
    .map_err(ClusterError::request(what.clone()))?;
    if status != 200 {
        return Err(ClusterError::Refused {
            what,
            status,
            body: String::from_utf8_lossy(&answer).into_owned(),
        });
    }
    serde_json::from_slice(&answer).map_err(ClusterError::decode(what))
}

/// What [`call_json`] sends.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path with its query.
    pub path: &'a str,
    /// The JSON body, if any.
    pub body: Option<&'a [u8]>,
    /// What the call is for, in error messages.
    pub what: &'a str,
}

/// Bytes used by the files under `path`, or by `path` itself when it is a
/// file (allocated blocks, like `du`); 0 when it does not exist.
#[must_use]
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = path.symlink_metadata() else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    let mut total = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            total += disk_usage(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_get_consecutive_loopback_addresses() {
        assert_eq!(member_ip(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(member_ip(2), Ipv4Addr::new(127, 0, 0, 3));
    }

    #[test]
    fn disk_usage_counts_allocated_blocks_of_trees_and_single_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), vec![1u8; 10_000]).unwrap();
        std::fs::write(dir.path().join("b"), vec![1u8; 5000]).unwrap();
        let used = disk_usage(dir.path());
        assert!(used >= 15_000, "{used}");
        assert!(disk_usage(&dir.path().join("b")) >= 5000);
        assert!(disk_usage(&dir.path().join("b")) < used);
        assert_eq!(disk_usage(&dir.path().join("missing")), 0);
    }
}
