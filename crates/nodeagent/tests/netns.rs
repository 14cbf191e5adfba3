//! The network manager and cairnd against a real kernel, in throwaway
//! network namespaces.
//!
//! Each test runs on its own thread that first unshares a new network and
//! UTS namespace: veth pairs, addresses, routes, the host name and dnsmasq
//! (started from that thread, so it inherits the namespace) all live and
//! die there. Nothing touches the host's network, and the namespace goes
//! away with the thread and the dnsmasq child, even when an assertion
//! fails. These tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN); without
//! it they fail rather than skip.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{in_fresh_netns, ip, runtime};
use nix::sched::{CloneFlags, unshare};
use nodeagent::agent::AgentOptions;
use nodeagent::apiserver::ApiOptions;
use nodeagent::config::{ConfigOrigin, ConfigPaths, MachineConfig, parse};
use nodeagent::net::hostname::HostnameSource;
use nodeagent::net::{NetworkHandle, NetworkOptions, NetworkStatus};

fn config(text: &str) -> MachineConfig {
    parse(text.as_bytes(), &ConfigOrigin::Default).unwrap()
}

fn options(dir: &Path) -> NetworkOptions {
    NetworkOptions {
        resolv_conf: dir.join("resolv.conf"),
        ..NetworkOptions::default()
    }
}

/// dnsmasq serving DHCP on one interface; killed on drop.
struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    fn start(dir: &Path, interface: &str, extra: &[String]) -> Self {
        let mut args = vec![
            "--no-daemon".to_owned(),
            "--conf-file=/dev/null".to_owned(),
            format!("--interface={interface}"),
            "--bind-interfaces".to_owned(),
            "--port=0".to_owned(),
            "--user=root".to_owned(),
            "--log-dhcp".to_owned(),
            format!("--log-facility={}", dir.join("dnsmasq.log").display()),
            format!("--dhcp-leasefile={}", dir.join("dnsmasq.leases").display()),
            format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
        ];
        args.extend(extra.iter().cloned());
        // dnsmasq.log has everything; its stderr would only repeat it.
        let child = Command::new("dnsmasq")
            .args(&args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start dnsmasq (package dnsmasq-base)");
        Self { child }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A one-file HTTP server on a thread (in the namespace it was started
/// from); stops when dropped.
struct HttpFile {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpFile {
    fn serve(addr: &str, body: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 2048];
                        let _ = conn.read(&mut buf);
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HttpFile {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum ServerCommand {
    /// Kill dnsmasq (and wait for it), then acknowledge.
    KillDnsmasq(std::sync::mpsc::Sender<()>),
    /// Set the server's end of the veth up (the client sees carrier).
    LinkUp(std::sync::mpsc::Sender<()>),
}

/// A DHCP server in a network namespace of its own, on the far end of a
/// veth pair. It must not share the client's namespace: the kernel would
/// deliver the client's unicast renewals to the server's address over
/// loopback instead of the wire.
struct DhcpServer {
    dir: PathBuf,
    control: Option<std::sync::mpsc::Sender<ServerCommand>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DhcpServer {
    /// Moves `interface` (in the caller's namespace) into a new namespace,
    /// gives it `address` and runs dnsmasq on it with `args`; with `http`,
    /// also serves that body on port 8080 of the address.
    fn start(
        dir: &Path,
        interface: &'static str,
        address: &'static str,
        args: Vec<String>,
        http: Option<String>,
        start_down: bool,
    ) -> Self {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (moved_tx, moved_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (control, control_rx) = std::sync::mpsc::channel::<ServerCommand>();
        let server_dir = dir.to_owned();
        let thread = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) for the server");
            tid_tx.send(nix::unistd::gettid().as_raw()).unwrap();
            if moved_rx.recv().is_err() {
                return;
            }
            ip("link set lo up");
            ip(&format!("addr add {address} dev {interface}"));
            if !start_down {
                ip(&format!("link set {interface} up"));
            }
            let mut dnsmasq = Some(Dnsmasq::start(&server_dir, interface, &args));
            let ip_only = address.split('/').next().unwrap();
            let _http = http.map(|body| HttpFile::serve(&format!("{ip_only}:8080"), body));
            let _ = ready_tx.send(());
            // Runs until told to exit or the handle is dropped.
            while let Ok(command) = control_rx.recv() {
                match command {
                    ServerCommand::KillDnsmasq(done) => {
                        dnsmasq = None;
                        let _ = done.send(());
                    }
                    ServerCommand::LinkUp(done) => {
                        ip(&format!("link set {interface} up"));
                        let _ = done.send(());
                    }
                }
            }
            drop(dnsmasq);
        });
        let tid = tid_rx.recv().expect("server thread died");
        // IFLA_NET_NS_PID takes any task id, so the thread's namespace works.
        ip(&format!("link set {interface} netns {tid}"));
        moved_tx.send(()).unwrap();
        ready_rx
            .recv()
            .expect("server thread failed to start dnsmasq");
        Self {
            dir: dir.to_owned(),
            control: Some(control),
            thread: Some(thread),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    fn leases(&self) -> String {
        std::fs::read_to_string(self.dir.join("dnsmasq.leases")).unwrap_or_default()
    }

    /// Sets the server's link up (when started down).
    fn link_up(&self) {
        let (done, up) = std::sync::mpsc::channel();
        if let Some(c) = &self.control {
            c.send(ServerCommand::LinkUp(done)).unwrap();
        }
        up.recv().expect("server thread died");
    }

    /// Kills dnsmasq but keeps the namespace (and so the veth pair).
    fn kill_dnsmasq(&mut self) {
        let (done, killed) = std::sync::mpsc::channel();
        if let Some(c) = &self.control {
            c.send(ServerCommand::KillDnsmasq(done)).unwrap();
        }
        killed.recv().expect("server thread died");
    }

    /// Kills dnsmasq and ends the server namespace (and the veth pair).
    fn stop(&mut self) {
        drop(self.control.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn wait_status(
    status: &mut tokio::sync::watch::Receiver<NetworkStatus>,
    limit: Duration,
    what: &str,
    f: impl FnMut(&NetworkStatus) -> bool,
) -> NetworkStatus {
    let outcome = tokio::time::timeout(limit, status.wait_for(f))
        .await
        .map(|r| r.map(|s| s.clone()));
    match outcome {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("network task stopped while waiting for {what}"),
        Err(_) => panic!(
            "timed out after {limit:?} waiting for {what}; status: {:#?}",
            *status.borrow()
        ),
    }
}

const CLIENT_MAC: &str = "02:00:00:77:00:02";

/// A veth pair: `cairn-cli` (down, no address) stays here for the agent;
/// `cairn-srv` (10.77.0.1/24) goes to the DHCP server's namespace.
fn dhcp_setup(dir: &Path) -> DhcpServer {
    dhcp_setup_full(dir, None, false)
}

fn dhcp_setup_with_http(dir: &Path, http: Option<String>) -> DhcpServer {
    dhcp_setup_full(dir, http, false)
}

fn dhcp_setup_full(dir: &Path, http: Option<String>, start_down: bool) -> DhcpServer {
    ip("link set lo up");
    ip("link add cairn-srv type veth peer name cairn-cli");
    ip(&format!("link set cairn-cli address {CLIENT_MAC}"));
    let args = [
        "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,2m".to_owned(),
        format!("--dhcp-host={CLIENT_MAC},10.77.0.55,dhcp-node"),
        "--dhcp-option=option:router,10.77.0.1".to_owned(),
        "--dhcp-option=option:dns-server,10.77.0.53".to_owned(),
        "--dhcp-option=option:ntp-server,10.77.0.123".to_owned(),
        "--dhcp-option=option:domain-search,test.cairn".to_owned(),
        // Short T1/T2 so a renewal happens within the test.
        "--dhcp-option=option:T1,8".to_owned(),
        "--dhcp-option=option:T2,14".to_owned(),
    ];
    DhcpServer::start(
        dir,
        "cairn-srv",
        "10.77.0.1/24",
        args.to_vec(),
        http,
        start_down,
    )
}

#[test]
fn dhcp_lease_is_applied_renewed_and_released() {
    in_fresh_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let dnsmasq = dhcp_setup(dir.path());
        let cfg = config("[[network.interfaces]]\nname = \"cairn-cli\"\n");
        runtime().block_on(async {
            let (net, _task) = NetworkHandle::spawn(cfg, options(dir.path())).unwrap();
            let mut status = net.status();
            let s = wait_status(
                &mut status,
                Duration::from_secs(40),
                "a DHCP lease and host name",
                |s| {
                    s.links.values().any(|l| l.lease.is_some())
                        && s.hostname
                            .as_ref()
                            .is_some_and(|(_, src)| *src == HostnameSource::Dhcp)
                },
            )
            .await;

            // Address, route, resolver, NTP and host name come from the lease.
            let addr = ip("-4 addr show dev cairn-cli");
            assert!(addr.contains("inet 10.77.0.55/24"), "{addr}");
            let route = ip("-4 route show default");
            assert!(
                route.contains("default via 10.77.0.1 dev cairn-cli proto dhcp"),
                "{route}"
            );
            let resolv = std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap();
            assert!(resolv.contains("nameserver 10.77.0.53\n"), "{resolv}");
            assert!(resolv.contains("search test.cairn\n"), "{resolv}");
            assert_eq!(s.ntp_servers, [Ipv4Addr::new(10, 77, 0, 123)]);
            assert_eq!(nix::unistd::gethostname().unwrap(), "dhcp-node");
            let lease = s.links.values().find_map(|l| l.lease.clone()).unwrap();
            assert_eq!(lease.server, Ipv4Addr::new(10, 77, 0, 1));

            // T1 is 8 s: the client renews by unicast (a second DHCPACK,
            // before T2 at 14 s) and keeps the address.
            let acks = |log: &str| log.matches("DHCPACK(cairn-srv) 10.77.0.55").count();
            let t0 = Instant::now();
            while acks(&dnsmasq.log()) < 2 {
                assert!(
                    t0.elapsed() < Duration::from_secs(13),
                    "no renewal before T2:\n{}",
                    dnsmasq.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            assert!(ip("-4 addr show dev cairn-cli").contains("inet 10.77.0.55/24"));

            // Shutdown releases the lease and removes the address.
            net.shutdown().await.unwrap();
            assert!(!ip("-4 addr show dev cairn-cli").contains("10.77.0.55"));
            let t0 = Instant::now();
            while !dnsmasq.log().contains("DHCPRELEASE(cairn-srv) 10.77.0.55") {
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "no DHCPRELEASE seen:\n{}",
                    dnsmasq.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let leases = dnsmasq.leases();
            assert!(!leases.contains("10.77.0.55"), "{leases}");
        });
    });
}

#[test]
fn dhcp_starts_over_at_once_when_the_carrier_comes_up() {
    in_fresh_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        // The server's end is down: the client has no carrier, and its
        // DISCOVERs go nowhere.
        let server = dhcp_setup_full(dir.path(), None, true);
        let cfg = config("[[network.interfaces]]\nname = \"cairn-cli\"\n");
        runtime().block_on(async {
            let (net, _task) = NetworkHandle::spawn(cfg, options(dir.path())).unwrap();
            let mut status = net.status();
            // The client retransmits after 3-5 s, then after 7-9 s more:
            // nothing would go out between about 5 s and 10 s after start.
            tokio::time::sleep(Duration::from_secs(6)).await;
            assert!(!status.borrow().is_configured());
            let up = Instant::now();
            server.link_up();
            wait_status(
                &mut status,
                Duration::from_secs(20),
                "a lease after carrier up",
                NetworkStatus::is_configured,
            )
            .await;
            assert!(
                up.elapsed() < Duration::from_millis(2500),
                "lease took {:?} after carrier up: discovery was not restarted",
                up.elapsed()
            );
            net.shutdown().await.unwrap();
        });
    });
}

#[test]
fn dhcp_address_is_dropped_when_the_lease_expires() {
    in_fresh_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut dnsmasq = dhcp_setup(dir.path());
        let cfg = config("[[network.interfaces]]\nname = \"cairn-cli\"\n");
        runtime().block_on(async {
            let (net, _task) = NetworkHandle::spawn(cfg, options(dir.path())).unwrap();
            let mut status = net.status();
            wait_status(
                &mut status,
                Duration::from_secs(40),
                "a DHCP lease",
                NetworkStatus::is_configured,
            )
            .await;
            let bound = Instant::now();
            // The server goes away: renew and rebind fail, and the 2-minute
            // lease runs out.
            dnsmasq.kill_dnsmasq();
            let s = wait_status(
                &mut status,
                Duration::from_secs(150),
                "the lease to expire",
                |s| !s.is_configured(),
            )
            .await;
            assert!(
                bound.elapsed() >= Duration::from_secs(110),
                "dropped too early: {:?}",
                bound.elapsed()
            );
            assert!(s.links.values().all(|l| l.lease.is_none()));
            let addr = ip("-4 addr show dev cairn-cli");
            assert!(!addr.contains("10.77.0.55"), "{addr}");
            assert!(!ip("-4 route show default").contains("10.77.0.1"));
        });
    });
}

#[test]
fn static_config_is_applied_to_a_hotplugged_link() {
    in_fresh_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        ip("link set lo up");
        let cfg = config(
            "[node]\nhostname = \"static-node\"\n\
             [network]\ndns = [\"10.78.0.53\"]\nsearch = [\"static.cairn\"]\n\
             [[network.interfaces]]\nname = \"late0\"\naddresses = [\"10.78.0.5/24\"]\ngateway = \"10.78.0.1\"\nmtu = 1400\n\
             routes = [{ destination = \"10.90.0.0/16\", gateway = \"10.78.0.254\" }]\n",
        );
        runtime().block_on(async {
            let (net, _task) = NetworkHandle::spawn(cfg, options(dir.path())).unwrap();
            let mut status = net.status();
            // Nothing to configure yet, but the host name is set at once.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(!status.borrow().is_configured());
            assert_eq!(nix::unistd::gethostname().unwrap(), "static-node");

            // The link appears after start-up; a link event picks it up.
            ip("link add late0 type veth peer name late1");
            let s = wait_status(
                &mut status,
                Duration::from_secs(10),
                "late0 to be configured",
                NetworkStatus::is_configured,
            )
            .await;
            let index = *s.links.iter().find(|(_, l)| l.name == "late0").unwrap().0;

            let link = ip("link show dev late0");
            assert!(link.contains(",UP") || link.contains("<UP"), "{link}");
            assert!(link.contains("mtu 1400"), "{link}");
            assert!(ip("-4 addr show dev late0").contains("inet 10.78.0.5/24"));
            let routes = ip("-4 route show");
            assert!(
                routes.contains(&format!(
                    "default via 10.78.0.1 dev late0 proto static metric {}",
                    100 + index
                )),
                "{routes}"
            );
            assert!(
                routes.contains("10.90.0.0/16 via 10.78.0.254 dev late0 proto static"),
                "{routes}"
            );
            let resolv = std::fs::read_to_string(dir.path().join("resolv.conf")).unwrap();
            assert!(
                resolv.contains("nameserver 10.78.0.53\n")
                    && resolv.contains("search static.cairn\n"),
                "{resolv}"
            );

            // The veth peer is virtual and unnamed: left alone (still down).
            assert!(!ip("link show dev late1").contains(",UP"));

            // A new config (as from a fetched `cairn.config=http://...`)
            // replaces the old addresses and routes.
            net.reconfigure(config(
                "[[network.interfaces]]\nname = \"late0\"\naddresses = [\"10.78.0.6/24\"]\n",
            ))
            .await
            .unwrap();
            wait_status(
                &mut status,
                Duration::from_secs(10),
                "the new address",
                |s| {
                    s.links.values().any(|l| {
                        l.static_addresses
                            .iter()
                            .any(|a| a.to_string() == "10.78.0.6/24")
                    })
                },
            )
            .await;
            let addr = ip("-4 addr show dev late0");
            assert!(
                addr.contains("inet 10.78.0.6/24") && !addr.contains("10.78.0.5"),
                "{addr}"
            );
            let routes = ip("-4 route show");
            assert!(
                !routes.contains("default") && !routes.contains("10.90.0.0/16"),
                "{routes}"
            );

            // The link goes away: it leaves the status.
            ip("link del late0");
            wait_status(
                &mut status,
                Duration::from_secs(10),
                "late0 to be forgotten",
                |s| s.links.values().all(|l| l.name != "late0"),
            )
            .await;
            net.shutdown().await.unwrap();
        });
    });
}

fn http_get(path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", 7480)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

#[test]
fn cairnd_serves_health_and_exits_cleanly_on_sigterm() {
    in_fresh_netns(|| {
        ip("link set lo up");
        let state = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairnd"))
            .env("CAIRN_HEALTH_ADDR", "127.0.0.1:7480")
            .env("CAIRN_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        eventually(Duration::from_secs(10), "cairnd's /healthz", || {
            http_get("/healthz").is_some_and(|(code, body)| code == 200 && body == "ok\n")
        });
        // No physical link in this namespace, so never ready; it says why.
        let (code, body) = http_get("/readyz").unwrap();
        assert_eq!(code, 503);
        assert_eq!(
            body,
            "not ready: network not configured: no link has an address yet\n"
        );
        let (code, metrics) = http_get("/metrics").unwrap();
        assert_eq!(code, 200);
        assert!(
            metrics.contains("cairn_process_resident_bytes{process=\"cairnd\"}"),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                "cairn_config_source{source=\"default\",requested=\"default\",error=\"0\"} 1"
            ),
            "{metrics}"
        );
        assert_eq!(http_get("/nope").unwrap().0, 404);

        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .map(str::to_owned)
            .unwrap();
        eprintln!("cairnd idle (debug build) {rss}");

        let asked = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if asked.elapsed() > Duration::from_secs(3) {
                let _ = child.kill();
                panic!("cairnd did not exit within 3 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut log = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(status.success(), "exit {status:?}; log:\n{log}");
        assert!(
            log.contains("SIGTERM received; shutting down") && log.contains("cairnd stopped"),
            "{log}"
        );
        assert!(
            !log.contains('\u{1b}'),
            "no ANSI colours when stderr is not a terminal"
        );
    });
}

/// Agent options for a test: config sources and sysfs under `dir`, where
/// `cairn-cli` looks like a physical NIC so the default config manages it.
fn agent_options(dir: &Path, cmdline: &str) -> AgentOptions {
    std::fs::create_dir_all(dir.join("sys/cairn-cli/device")).unwrap();
    std::fs::write(dir.join("cmdline"), cmdline).unwrap();
    AgentOptions {
        config_paths: ConfigPaths {
            applied: dir.join("var/lib/cairn/config.toml"),
            cmdline: dir.join("cmdline"),
            esp: dir.join("efi/cairn/config.toml"),
            fw_cfg: dir.join("fw_cfg/raw"),
        },
        network: NetworkOptions {
            sysfs_net: dir.join("sys"),
            resolv_conf: dir.join("resolv.conf"),
            ..NetworkOptions::default()
        },
        health_addr: "127.0.0.1:7480".parse().unwrap(),
        api: ApiOptions {
            addr: "127.0.0.1:7443".parse().unwrap(),
            ..ApiOptions::under(&dir.join("state"))
        },
        ..AgentOptions::default()
    }
}

async fn get(path: &str) -> (u16, String) {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || http_get(&path).unwrap_or((0, String::new())))
        .await
        .unwrap()
}

async fn eventually_async(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn agent_fetches_an_http_config_after_dhcp_and_applies_it() {
    in_fresh_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let fetched = "[node]\nhostname = \"fetched-node\"\n".to_owned();
        let server = dhcp_setup_with_http(dir.path(), Some(fetched));
        let options = agent_options(
            dir.path(),
            "console=ttyS0 cairn.config=http://10.77.0.1:8080/node.toml panic=10\n",
        );
        runtime().block_on(async {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let agent = tokio::spawn(nodeagent::agent::run_until(options, async {
                let _ = stopped.await;
            }));

            // DHCP first (the default config), then the fetched config.
            eventually_async(Duration::from_secs(40), "the fetched config to be in force", async || {
                get("/metrics")
                    .await
                    .1
                    .contains("cairn_config_source{source=\"cmdline\",requested=\"cmdline\",error=\"0\"} 1")
            })
            .await;
            eventually_async(Duration::from_secs(5), "the fetched host name", async || {
                nix::unistd::gethostname().unwrap() == "fetched-node"
            })
            .await;
            let (code, body) = get("/readyz").await;
            assert_eq!((code, body.as_str()), (200, "ready\n"));
            let (_, metrics) = get("/metrics").await;
            assert!(metrics.contains("cairn_boot_duration_seconds "), "{metrics}");
            assert!(metrics.contains("cairn_network_addressed_links 1\n"), "{metrics}");
            assert!(ip("-4 addr show dev cairn-cli").contains("inet 10.77.0.55/24"));

            let asked = Instant::now();
            stop.send(()).unwrap();
            agent.await.unwrap().unwrap();
            assert!(asked.elapsed() < Duration::from_secs(3), "shutdown took {:?}", asked.elapsed());
            // dnsmasq logs the release a moment after it arrives.
            eventually_async(Duration::from_secs(5), "dnsmasq to log the DHCPRELEASE", async || {
                server.log().contains("DHCPRELEASE(cairn-srv) 10.77.0.55")
            })
            .await;
        });
    });
}

#[test]
fn agent_runs_on_the_default_when_the_esp_config_is_refused() {
    in_fresh_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let _server = dhcp_setup(dir.path());
        let options = agent_options(dir.path(), "console=ttyS0 panic=10\n");
        let esp = options.config_paths.esp.clone();
        std::fs::create_dir_all(esp.parent().unwrap()).unwrap();
        let bad = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/machine/invalid/bad-cidr.toml");
        std::fs::copy(bad, &esp).unwrap();
        runtime().block_on(async {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let agent = tokio::spawn(nodeagent::agent::run_until(options, async {
                let _ = stopped.await;
            }));
            // The embedded default (DHCP on every physical NIC) brings the node up.
            eventually_async(Duration::from_secs(40), "/readyz 200", async || get("/readyz").await.0 == 200).await;
            let (_, body) = get("/readyz").await;
            let expected = format!(
                "ready\nconfig: running on the embedded default: {} (esp): network.interfaces[0].addresses[1]: invalid CIDR \"10.0.0.300/24\"",
                esp.display()
            );
            assert!(body.starts_with(&expected), "{body}");
            let (_, metrics) = get("/metrics").await;
            assert!(
                metrics.contains("cairn_config_source{source=\"default\",requested=\"esp\",error=\"1\"} 1"),
                "{metrics}"
            );
            assert_eq!(nix::unistd::gethostname().unwrap(), "dhcp-node");
            stop.send(()).unwrap();
            agent.await.unwrap().unwrap();
        });
    });
}
