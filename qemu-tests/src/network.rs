//! A private network for VMs: a fresh network namespace holding a Linux
//! bridge (`br0`, `<subnet>.1/24`) and dnsmasq (DHCP, optional TFTP for PXE).
//!
//! Nothing is routed out: the namespace has no uplink and no NAT, so guests
//! can reach only each other and the bridge address. The test process
//! reaches guests by running code on a thread that has `setns`-ed into the
//! namespace ([`Network::run_in`]); sockets created there belong to it.
//!
//! Namespaces are named `cairnt-<pid>-<n>`. Dropping a [`Network`] kills
//! dnsmasq and anything else still running in the namespace, then deletes
//! it; this runs during a panic unwind too. A test process killed outright
//! cannot clean up, so the first `Network` of every process deletes
//! `cairnt-*` namespaces whose owning pid is gone.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::http::{self, HttpGetError, HttpResponse};
use crate::leases::{self, Lease, LeaseParseError, MacAddr};
use crate::lock::{LockError, VmLock};
use crate::paths;
use crate::tools::{self, ToolError};

const PREFIX: &str = "cairnt-";
const BRIDGE: &str = "br0";

static NETWORKS: AtomicU32 = AtomicU32::new(0);
static MACS: AtomicU32 = AtomicU32::new(1);
static STALE_SWEEP: Once = Once::new();

/// What to put on the bridge.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Names the log directory `target/qemu-tests/logs/<test_name>/`.
    pub test_name: String,
    /// The bridge gets `10.77.<subnet>.1/24`; guests get `.100`..`.199`.
    pub subnet: u8,
    /// When set, dnsmasq serves this directory over TFTP and offers
    /// `boot.ipxe` as the boot file (PXE).
    pub tftp_root: Option<PathBuf>,
}

impl NetworkConfig {
    /// A DHCP-only network on `10.77.0.0/24`.
    #[must_use]
    pub fn new(test_name: &str) -> Self {
        Self {
            test_name: test_name.to_owned(),
            subnet: 0,
            tftp_root: None,
        }
    }

    /// Also serve `dir` over TFTP with `boot.ipxe` as the DHCP boot file.
    #[must_use]
    pub fn with_pxe(mut self, dir: &Path) -> Self {
        self.tftp_root = Some(dir.to_path_buf());
        self
    }
}

/// A running private network. VMs borrow it, so they are dropped first.
#[derive(Debug)]
pub struct Network {
    name: String,
    log_dir: PathBuf,
    gateway: Ipv4Addr,
    lease_file: PathBuf,
    dnsmasq_log: PathBuf,
    dnsmasq: Option<Child>,
    taps: AtomicU32,
    // Dropped last, after Drop::drop has torn everything down.
    _lock: VmLock,
}

/// Setting up the network failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("host is not ready for VM tests")]
    Host(#[from] ToolError),
    #[error("waiting for the VM lock")]
    Lock(#[from] LockError),
    #[error("preparing log directory {path}")]
    LogDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("dnsmasq exited during startup ({status}); its log:\n{log}")]
    DnsmasqExited {
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("dnsmasq did not report its DHCP range within {waited:?}; its log:\n{log}")]
    DnsmasqNotReady { waited: Duration, log: String },
}

/// An external command the harness ran failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("starting `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Entering the namespace from a helper thread failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("opening namespace handle {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setns into {path}")]
    Setns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// A request to a guest failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestRequestError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Http(#[from] HttpGetError),
}

/// Reading the dnsmasq lease file failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseReadError {
    #[error("reading lease file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing lease file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: LeaseParseError,
    },
}

impl Network {
    /// Creates the namespace, bridge and dnsmasq. Blocks until no other
    /// network (in this or another process) is running VMs.
    ///
    /// # Errors
    /// [`NetworkError`]; anything created before the failure is removed.
    pub fn start(config: &NetworkConfig) -> Result<Self, NetworkError> {
        tools::check_host()?;
        let lock = VmLock::acquire()?;
        STALE_SWEEP.call_once(remove_stale_namespaces);

        let log_dir = paths::test_log_dir(&config.test_name);
        reset_dir(&log_dir)?;
        let n = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        let gateway = Ipv4Addr::new(10, 77, config.subnet, 1);
        let mut network = Self {
            name,
            lease_file: log_dir.join("dnsmasq.leases"),
            dnsmasq_log: log_dir.join("dnsmasq.log"),
            log_dir,
            gateway,
            dnsmasq: None,
            taps: AtomicU32::new(0),
            _lock: lock,
        };
        // From here on, Drop cleans up whatever exists if a step fails.
        run(Command::new(tools::IP.locate()?).args(["netns", "add", &network.name]))?;
        network.ip(&["link", "set", "lo", "up"])?;
        network.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        network.ip(&["addr", "add", &format!("{gateway}/24"), "dev", BRIDGE])?;
        network.ip(&["link", "set", BRIDGE, "up"])?;
        network.start_dnsmasq(config)?;
        Ok(network)
    }

    fn start_dnsmasq(&mut self, config: &NetworkConfig) -> Result<(), NetworkError> {
        let base = format!("10.77.{}", config.subnet);
        let mut args = vec![
            "--no-daemon".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            "--bind-interfaces".to_owned(),
            format!("--interface={BRIDGE}"),
            "--except-interface=lo".to_owned(),
            // Stay root: the lease and log files live in root's target dir.
            "--user=root".to_owned(),
            "--group=root".to_owned(),
            "--pid-file=".to_owned(),
            // DNS answers only from dnsmasq itself; nothing is forwarded out.
            "--no-resolv".to_owned(),
            "--no-hosts".to_owned(),
            "--dhcp-authoritative".to_owned(),
            format!("--dhcp-range={base}.100,{base}.199,255.255.255.0,1h"),
            format!("--dhcp-option=option:router,{}", self.gateway),
            format!("--dhcp-option=option:ntp-server,{}", self.gateway),
            format!("--dhcp-leasefile={}", self.lease_file.display()),
            "--log-dhcp".to_owned(),
            format!("--log-facility={}", self.dnsmasq_log.display()),
        ];
        if let Some(root) = &config.tftp_root {
            args.push("--enable-tftp".to_owned());
            args.push(format!("--tftp-root={}", root.display()));
            args.push("--dhcp-boot=boot.ipxe".to_owned());
        }
        let stderr_path = self.log_dir.join("dnsmasq.stderr");
        let stderr = File::create(&stderr_path).map_err(|source| NetworkError::LogDir {
            path: stderr_path.clone(),
            source,
        })?;
        let dnsmasq = tools::DNSMASQ.locate()?;
        let mut command = self.command(&dnsmasq);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = command.spawn().map_err(|source| CommandError::Spawn {
            command: format!("{} {}", dnsmasq.display(), args.join(" ")),
            source,
        })?;
        self.dnsmasq = Some(child);

        let start = Instant::now();
        let limit = Duration::from_secs(10);
        loop {
            let log = self.dnsmasq_log();
            if log.contains("DHCP, IP range") {
                return Ok(());
            }
            if let Some(child) = self.dnsmasq.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(NetworkError::DnsmasqExited {
                    status,
                    log: format!("{log}{stderr}"),
                });
            }
            if start.elapsed() > limit {
                return Err(NetworkError::DnsmasqNotReady { waited: limit, log });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The namespace name (`ip netns` / `/run/netns/<name>`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bridge's own address (DHCP server, router option).
    #[must_use]
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// `target/qemu-tests/logs/<test>/`, where consoles and dnsmasq logs go.
    #[must_use]
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// dnsmasq's log so far (empty if unreadable).
    #[must_use]
    pub fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(&self.dnsmasq_log).unwrap_or_default()
    }

    /// A command that runs `program` inside the namespace.
    #[must_use]
    pub fn command(&self, program: &Path) -> Command {
        let ip = ip_program();
        let mut command = Command::new(ip);
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Runs `ip -n <ns> args...` and returns its stdout.
    ///
    /// # Errors
    /// [`CommandError`] if `ip` fails.
    pub fn ip(&self, args: &[&str]) -> Result<String, CommandError> {
        let ip = ip_program();
        run(Command::new(ip).args(["-n", &self.name]).args(args))
    }

    /// Creates a tap device enslaved to the bridge and returns its name.
    ///
    /// # Errors
    /// [`CommandError`] if `ip` fails.
    pub fn add_tap(&self) -> Result<String, CommandError> {
        let tap = format!("tap{}", self.taps.fetch_add(1, Ordering::Relaxed));
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", BRIDGE])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// Cuts the guest behind `tap` (leased `guest`) off from the other
    /// guests while the host still reaches it: a partition of the cluster
    /// network that leaves the client on the guest's side. The tap moves to
    /// a bridge of its own (`iso-<tap>`) carrying the gateway address as a
    /// /32 and the gateway bridge's MAC (so the guest's cached neighbour
    /// entry for the gateway stays right), with a host route to `guest`
    /// through it. Nothing forwards between the two bridges (the namespace
    /// does not route), and neither bridge answers ARP for the other side.
    /// [`Network::reconnect`] undoes it.
    ///
    /// # Errors
    /// [`CommandError`] if an `ip` step fails.
    pub fn isolate(&self, tap: &str, guest: Ipv4Addr) -> Result<(), CommandError> {
        let island = island_bridge(tap);
        let mac = self.bridge_mac()?;
        self.ip(&[
            "link",
            "add",
            &island,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        self.ip(&["link", "set", &island, "address", &mac])?;
        self.ip(&[
            "addr",
            "add",
            &format!("{}/32", self.gateway),
            "dev",
            &island,
        ])?;
        self.ip(&["link", "set", &island, "up"])?;
        self.ip(&["link", "set", tap, "master", &island])?;
        self.ip(&[
            "route",
            "add",
            &format!("{guest}/32"),
            "dev",
            &island,
            "src",
            &self.gateway.to_string(),
        ])?;
        self.ip(&["neigh", "flush", "to", &guest.to_string()])?;
        Ok(())
    }

    /// Puts a tap cut off by [`Network::isolate`] back on the bridge.
    ///
    /// # Errors
    /// [`CommandError`] if an `ip` step fails.
    pub fn reconnect(&self, tap: &str, guest: Ipv4Addr) -> Result<(), CommandError> {
        let island = island_bridge(tap);
        self.ip(&["route", "del", &format!("{guest}/32"), "dev", &island])?;
        self.ip(&["link", "set", tap, "master", BRIDGE])?;
        self.ip(&["link", "del", &island])?;
        self.ip(&["neigh", "flush", "to", &guest.to_string()])?;
        Ok(())
    }

    /// The MAC address of the bridge (`br0`).
    fn bridge_mac(&self) -> Result<String, CommandError> {
        let out = self.ip(&["-o", "link", "show", BRIDGE])?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default()
            .to_owned())
    }

    /// A MAC address no other VM of this process has had
    /// (`52:54:00` is QEMU's locally administered prefix).
    #[must_use]
    pub fn next_mac(&self) -> MacAddr {
        let n = MACS.fetch_add(1, Ordering::Relaxed).to_be_bytes();
        let pid = std::process::id().to_be_bytes();
        MacAddr([0x52, 0x54, 0x00, pid[3], n[2], n[3]])
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    /// Sockets `f` opens live in the namespace, so it can talk to guests.
    ///
    /// # Errors
    /// [`NetnsError`] if the thread cannot enter the namespace.
    ///
    /// # Panics
    /// Re-raises a panic from `f`.
    pub fn run_in<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = Path::new("/run/netns").join(&self.name);
        let handle = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                // setns affects only this thread, which ends with the scope.
                nix::sched::setns(&handle, CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Setns { path, source })?;
                Ok(f())
            });
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// `GET http://addr:port/path` from inside the namespace.
    ///
    /// # Errors
    /// [`GuestRequestError`] if the namespace cannot be entered or the request fails.
    pub fn http_get(
        &self,
        addr: Ipv4Addr,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> Result<HttpResponse, GuestRequestError> {
        let target = SocketAddr::V4(SocketAddrV4::new(addr, port));
        Ok(self.run_in(|| http::get(target, path, timeout))??)
    }

    /// The DHCP leases dnsmasq has granted (none before the first one).
    ///
    /// # Errors
    /// [`LeaseReadError`] if the file exists but cannot be read or parsed.
    pub fn leases(&self) -> Result<Vec<Lease>, LeaseReadError> {
        let text = match std::fs::read_to_string(&self.lease_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LeaseReadError::Read {
                    path: self.lease_file.clone(),
                    source,
                });
            }
        };
        leases::parse_leases(&text).map_err(|source| LeaseReadError::Parse {
            path: self.lease_file.clone(),
            source,
        })
    }

    /// The newest lease held by `mac`, if any.
    ///
    /// # Errors
    /// See [`Network::leases`].
    pub fn lease_for(&self, mac: MacAddr) -> Result<Option<Lease>, LeaseReadError> {
        // One MAC can hold two leases when its firmware (iPXE) and its OS
        // identify differently; the one granted last expires last.
        let expiry = |lease: &Lease| {
            if lease.expires == 0 {
                u64::MAX
            } else {
                lease.expires
            }
        };
        Ok(self
            .leases()?
            .into_iter()
            .filter(|lease| lease.mac == mac)
            .max_by_key(expiry))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            stop_child(&mut child, Duration::from_secs(3));
        }
        teardown_namespace(&self.name);
    }
}

/// The bridge [`Network::isolate`] moves `tap` to (at most 15 bytes for
/// tap names up to `tap99999`).
fn island_bridge(tap: &str) -> String {
    format!("iso-{tap}")
}

/// `ip` from iproute2; [`tools::check_host`] has already proved it exists
/// before any namespace is made, so the bare name is only a fallback.
fn ip_program() -> PathBuf {
    tools::IP.locate().unwrap_or_else(|_| PathBuf::from("ip"))
}

/// SIGTERM, then SIGKILL after `grace`; always reaps.
pub(crate) fn stop_child(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Ok(raw) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(raw), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills every process left in namespace `name` and deletes it. Errors are
/// printed, not returned: this runs from Drop, possibly mid-panic.
fn teardown_namespace(name: &str) {
    let ip = ip_program();
    if let Ok(pids) = run(Command::new(&ip).args(["netns", "pids", name])) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if let Err(e) = run(Command::new(&ip).args(["netns", "del", name])) {
        eprintln!("qemu-tests: could not delete network namespace {name}: {e}");
    }
}

/// Deletes `cairnt-<pid>-*` namespaces whose pid no longer exists.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = owner_pid(&name)
            && !Path::new("/proc").join(pid.to_string()).exists()
        {
            eprintln!("qemu-tests: removing stale network namespace {name} (pid {pid} is gone)");
            teardown_namespace(&name);
        }
    }
}

/// The pid embedded in a harness namespace name, if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, counter) = rest.split_once('-')?;
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

fn reset_dir(dir: &Path) -> Result<(), NetworkError> {
    let err = |source| NetworkError::LogDir {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    std::fs::create_dir_all(dir).map_err(err)
}

/// Runs a command to completion, returning stdout or a descriptive error.
pub(crate) fn run(command: &mut Command) -> Result<String, CommandError> {
    let printable = format!("{command:?}").replace('"', "");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| CommandError::Spawn {
            command: printable.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(CommandError::Failed {
            command: printable,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn island_bridge_names_fit_the_kernels_interface_name_limit() {
        // IFNAMSIZ is 16 including the NUL.
        assert_eq!(island_bridge("tap0"), "iso-tap0");
        assert!(island_bridge("tap99999").len() <= 15);
    }

    #[test]
    fn only_harness_namespaces_have_an_owner_pid() {
        assert_eq!(owner_pid("cairnt-4242-0"), Some(4242));
        assert_eq!(owner_pid("cairnt-4242-17"), Some(4242));
        assert_eq!(owner_pid("cairnt-4242"), None);
        assert_eq!(owner_pid("cairnt-x-1"), None);
        assert_eq!(owner_pid("other-4242-0"), None);
    }
}
