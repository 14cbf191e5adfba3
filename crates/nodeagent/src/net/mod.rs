//! Network bring-up: links, addresses, routes, DHCP, resolver, host name.
//!
//! The moving parts:
//! - [`plan`] (sans-IO) decides which links the agent manages and how, and
//!   computes the address/route changes between two states;
//! - [`lease`] (sans-IO) turns DHCP leases and their expiry into changes;
//! - [`resolv`] and [`hostname`] (sans-IO) pick name servers and the host
//!   name from config and leases;
//! - [`dhcp`] holds our DHCPv4 client: a sans-IO packet codec and state
//!   machine, and a per-link task around them;
//! - [`netlink`] and the DHCP task are the I/O shells;
//! - one task (`NetworkTask`) owns all per-link state. It re-plans at start, on
//!   every netlink link event (hotplug), on a slow periodic rescan (which
//!   also retries failed steps) and on a config change. Callers talk to it
//!   through a [`NetworkHandle`] and watch a [`NetworkStatus`].

pub mod dhcp;
pub mod entropy;
pub mod hostname;
pub mod lease;
pub mod netlink;
pub mod plan;
pub mod resolv;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use rtnetlink::packet_route::route::RouteProtocol;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::dhcp::{DhcpEvent, DhcpHandle, DhcpParams, StopMode, apply_tracked};
use self::hostname::{HostnameSource, choose_hostname};
use self::lease::DhcpLease;
use self::netlink::{Netlink, NetlinkError};
use self::plan::{LinkAddressing, LinkInfo, LinkRole, diff, first_physical_mac, plan_links};
use self::resolv::ResolverConfig;
use crate::config::{Hostname, Ipv4Cidr, MacAddr, MachineConfig};

/// Paths and knobs of the network manager.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// `/sys/class/net`, to tell physical links from virtual ones.
    pub sysfs_net: PathBuf,
    /// Where the resolver config is written: `/run/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// Whether to call sethostname(2).
    pub set_hostname: bool,
    /// Full rescan period: the safety net for missed link events and the
    /// retry interval for steps that failed.
    pub rescan_interval: Duration,
}

impl Default for NetworkOptions {
    fn default() -> Self {
        Self {
            sysfs_net: PathBuf::from(netlink::SYSFS_NET),
            resolv_conf: PathBuf::from("/run/resolv.conf"),
            set_hostname: true,
            rescan_interval: Duration::from_secs(30),
        }
    }
}

/// How a managed link gets its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// Loopback: up only.
    Loopback,
    /// Physical link not in the config: up only.
    UpOnly,
    /// DHCP.
    Dhcp,
    /// Static addresses.
    Static,
    /// Static addresses and DHCP.
    DhcpAndStatic,
}

/// What the agent knows about one link it touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// Kernel name.
    pub name: String,
    /// Hardware address.
    pub mac: Option<MacAddr>,
    /// How it is addressed.
    pub addressing: Addressing,
    /// Static addresses successfully applied.
    pub static_addresses: Vec<Ipv4Cidr>,
    /// The DHCP lease in force.
    pub lease: Option<DhcpLease>,
    /// The last error on this link, until the next success.
    pub error: Option<String>,
}

impl LinkStatus {
    /// Whether the link holds at least one address from config or DHCP.
    pub fn is_addressed(&self) -> bool {
        !self.static_addresses.is_empty() || self.lease.is_some()
    }
}

/// The network as the agent has configured it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkStatus {
    /// Links the agent touches, by index.
    pub links: BTreeMap<u32, LinkStatus>,
    /// Resolver settings in force.
    pub resolver: ResolverConfig,
    /// NTP servers learned from DHCP (option 42), for time sync.
    pub ntp_servers: Vec<Ipv4Addr>,
    /// Host name and where it came from.
    pub hostname: Option<(Hostname, HostnameSource)>,
}

impl NetworkStatus {
    /// Whether at least one link holds an address: the readiness condition.
    pub fn is_configured(&self) -> bool {
        self.links.values().any(LinkStatus::is_addressed)
    }
}

/// The network task has stopped; requests can no longer be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the network task has stopped")]
pub struct NetworkStopped;

#[derive(Debug)]
enum Command {
    Reconfigure(Box<MachineConfig>),
    Shutdown(oneshot::Sender<()>),
}

/// Handle on the network task.
#[derive(Debug, Clone)]
pub struct NetworkHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<NetworkStatus>,
}

impl NetworkHandle {
    /// Starts the network task on the current runtime.
    pub fn spawn(
        config: MachineConfig,
        options: NetworkOptions,
    ) -> Result<(Self, JoinHandle<()>), NetlinkError> {
        let netlink = Netlink::connect(&options.sysfs_net)?;
        let events = match Netlink::link_events() {
            Ok(s) => Some(s.boxed()),
            Err(e) => {
                tracing::warn!(
                    error = %crate::error_chain(&e),
                    rescan_secs = options.rescan_interval.as_secs(),
                    "no link events; new links are found by periodic rescan only"
                );
                None
            }
        };
        let (commands, commands_rx) = mpsc::channel(8);
        let (status_tx, status) = watch::channel(NetworkStatus::default());
        let (dhcp_tx, dhcp_rx) = mpsc::unbounded_channel();
        let task = NetworkTask {
            config,
            options,
            netlink,
            links: BTreeMap::new(),
            scanned: Vec::new(),
            dhcp_tx,
            status_tx,
            hostname_applied: None,
            resolv_written: None,
            unmatched_reported: Vec::new(),
        };
        let join = tokio::spawn(task.run(commands_rx, dhcp_rx, events));
        Ok((Self { commands, status }, join))
    }

    /// A receiver that sees every status change.
    pub fn status(&self) -> watch::Receiver<NetworkStatus> {
        self.status.clone()
    }

    /// Replaces the config and re-plans every link.
    pub async fn reconfigure(&self, config: MachineConfig) -> Result<(), NetworkStopped> {
        self.commands
            .send(Command::Reconfigure(Box::new(config)))
            .await
            .map_err(|_| NetworkStopped)
    }

    /// Releases DHCP leases and stops the task.
    pub async fn shutdown(&self) -> Result<(), NetworkStopped> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(tx))
            .await
            .map_err(|_| NetworkStopped)?;
        rx.await.map_err(|_| NetworkStopped)
    }
}

struct LinkRuntime {
    info: LinkInfo,
    role: LinkRole,
    statics_applied: LinkAddressing,
    statics_ok: bool,
    up_ok: bool,
    dhcp: Option<DhcpHandle>,
    lease: Option<DhcpLease>,
    error: Option<String>,
}

impl LinkRuntime {
    fn status(&self) -> Option<LinkStatus> {
        let addressing = match &self.role {
            LinkRole::Loopback => Addressing::Loopback,
            LinkRole::UpOnly => Addressing::UpOnly,
            LinkRole::Managed(m) => match (m.dhcp, m.statics.addresses.is_empty()) {
                (true, true) => Addressing::Dhcp,
                (true, false) => Addressing::DhcpAndStatic,
                (false, _) => Addressing::Static,
            },
            LinkRole::Ignored => return None,
        };
        Some(LinkStatus {
            name: self.info.name.clone(),
            mac: self.info.mac,
            addressing,
            static_addresses: self.statics_applied.addresses.clone(),
            lease: self.lease.clone(),
            error: self.error.clone(),
        })
    }
}

/// The task that owns link state. See the module docs.
struct NetworkTask {
    config: MachineConfig,
    options: NetworkOptions,
    netlink: Netlink,
    links: BTreeMap<u32, LinkRuntime>,
    scanned: Vec<LinkInfo>,
    dhcp_tx: mpsc::UnboundedSender<DhcpEvent>,
    status_tx: watch::Sender<NetworkStatus>,
    hostname_applied: Option<Hostname>,
    resolv_written: Option<String>,
    unmatched_reported: Vec<usize>,
}

/// How long to wait after a link event before re-planning, so that a burst
/// of events (a NIC appearing sends several) costs one rescan.
const EVENT_DEBOUNCE: Duration = Duration::from_millis(200);

type LinkEvents = std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>;

async fn next_event(events: &mut Option<LinkEvents>) -> Option<()> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl NetworkTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut dhcp_events: mpsc::UnboundedReceiver<DhcpEvent>,
        mut link_events: Option<LinkEvents>,
    ) {
        let mut rescan = tokio::time::interval(self.options.rescan_interval);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut debounce: Option<Instant> = None;
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Reconfigure(config)) => {
                        self.config = *config;
                        self.reconcile().await;
                    }
                    Some(Command::Shutdown(reply)) => {
                        self.stop_all().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.stop_all().await;
                        return;
                    }
                },
                event = next_event(&mut link_events) => match event {
                    Some(()) => debounce = debounce.or(Some(Instant::now() + EVENT_DEBOUNCE)),
                    None => {
                        tracing::warn!("link event stream ended; relying on periodic rescan");
                        link_events = None;
                    }
                },
                () = sleep_until_opt(debounce) => {
                    debounce = None;
                    self.reconcile().await;
                }
                _ = rescan.tick() => self.reconcile().await,
                Some(event) = dhcp_events.recv() => {
                    self.on_dhcp(event);
                    self.refresh().await;
                }
            }
        }
    }

    fn on_dhcp(&mut self, event: DhcpEvent) {
        match event {
            DhcpEvent::Bound { index, lease } => {
                if let Some(rt) = self.links.get_mut(&index) {
                    rt.lease = Some(lease);
                    rt.error = None;
                }
            }
            DhcpEvent::Lost { index } => {
                if let Some(rt) = self.links.get_mut(&index) {
                    rt.lease = None;
                }
            }
            DhcpEvent::Error { index, message } => {
                if let Some(rt) = self.links.get_mut(&index) {
                    rt.error = Some(message);
                }
            }
        }
    }

    async fn stop_all(&mut self) {
        let handles: Vec<DhcpHandle> = self
            .links
            .values_mut()
            .filter_map(|rt| rt.dhcp.take())
            .collect();
        futures_util::future::join_all(handles.into_iter().map(|h| h.stop(StopMode::Release)))
            .await;
    }

    /// Re-plans every link and carries out the differences.
    async fn reconcile(&mut self) {
        let links = match self.netlink.links().await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "cannot list links");
                return;
            }
        };
        let plan = plan_links(&self.config.network, &links);
        if plan.unmatched_entries != self.unmatched_reported {
            for i in &plan.unmatched_entries {
                if let Some(entry) = self.config.network.interfaces.get(*i) {
                    tracing::warn!(entry = i, selector = %entry.selector, "network.interfaces[{i}] matches no link (yet)");
                }
            }
            self.unmatched_reported = plan.unmatched_entries.clone();
        }

        let present: BTreeSet<u32> = links.iter().map(|l| l.index).collect();
        let gone: Vec<u32> = self
            .links
            .keys()
            .filter(|i| !present.contains(i))
            .copied()
            .collect();
        for index in gone {
            if let Some(mut rt) = self.links.remove(&index) {
                tracing::info!(link = %rt.info.name, "link removed");
                if let Some(h) = rt.dhcp.take() {
                    h.stop(StopMode::Abandon).await;
                }
            }
        }

        for link in &links {
            let role = plan
                .roles
                .get(&link.index)
                .cloned()
                .unwrap_or(LinkRole::Ignored);
            let unchanged = self
                .links
                .get(&link.index)
                .is_some_and(|rt| rt.role == role && rt.info.same_device(link));
            if unchanged {
                self.on_carrier(link);
                self.retry(link.index).await;
                continue;
            }
            if let Some(old) = self.links.remove(&link.index) {
                self.teardown(old).await;
            }
            let rt = self.setup(link.clone(), role).await;
            self.links.insert(link.index, rt);
        }
        self.scanned = links;
        self.refresh().await;
    }

    /// Undoes what the agent did on a link whose role changed.
    async fn teardown(&mut self, mut rt: LinkRuntime) {
        tracing::info!(link = %rt.info.name, "link configuration changed; reapplying");
        if let Some(h) = rt.dhcp.take() {
            h.stop(StopMode::Release).await;
        }
        let actions = diff(&rt.statics_applied, &LinkAddressing::default());
        if let Err(e) = apply_tracked(
            &self.netlink,
            rt.info.index,
            actions,
            RouteProtocol::Static,
            &mut rt.statics_applied,
        )
        .await
        {
            tracing::warn!(link = %rt.info.name, error = %crate::error_chain(&e), "cannot remove old static configuration");
        }
    }

    async fn setup(&mut self, info: LinkInfo, role: LinkRole) -> LinkRuntime {
        let mut rt = LinkRuntime {
            info,
            role,
            statics_applied: LinkAddressing::default(),
            statics_ok: false,
            up_ok: false,
            dhcp: None,
            lease: None,
            error: None,
        };
        if rt.role.brings_up() {
            tracing::info!(link = %rt.info.name, kind = ?rt.info.kind, mac = ?rt.info.mac.map(|m| m.to_string()), role = ?RoleName(&rt.role), "configuring link");
        }
        self.retry_runtime(&mut rt).await;
        if let LinkRole::Managed(m) = &rt.role
            && m.dhcp
        {
            match rt.info.mac {
                Some(_) => rt.dhcp = self.spawn_dhcp(&rt),
                None => {
                    let message = "no Ethernet address; DHCP needs one".to_owned();
                    tracing::warn!(link = %rt.info.name, "{message}");
                    rt.error = Some(message);
                }
            }
        }
        rt
    }

    fn spawn_dhcp(&self, rt: &LinkRuntime) -> Option<DhcpHandle> {
        let LinkRole::Managed(m) = &rt.role else {
            return None;
        };
        let params = DhcpParams {
            index: rt.info.index,
            name: rt.info.name.clone(),
            mac: rt.info.mac?,
            carrier: rt.info.carrier,
            accept_mtu: m.accept_dhcp_mtu,
            hostname: self.config.node.hostname.clone(),
        };
        Some(DhcpHandle::spawn(
            params,
            self.netlink.clone(),
            self.dhcp_tx.clone(),
        ))
    }

    /// Records the link's carrier and tells its DHCP client when it
    /// changes (see [`DhcpHandle::set_carrier`]).
    fn on_carrier(&mut self, now: &LinkInfo) {
        if let Some(rt) = self.links.get_mut(&now.index) {
            if rt.info.carrier != now.carrier
                && let Some(dhcp) = &rt.dhcp
            {
                dhcp.set_carrier(now.carrier);
            }
            rt.info.carrier = now.carrier;
        }
    }

    async fn retry(&mut self, index: u32) {
        if let Some(mut rt) = self.links.remove(&index) {
            self.retry_runtime(&mut rt).await;
            self.links.insert(index, rt);
        }
    }

    /// Brings the link up and applies its static part, unless both are
    /// already done; failures are kept for the status and retried on the
    /// next rescan.
    async fn retry_runtime(&mut self, rt: &mut LinkRuntime) {
        if rt.role.brings_up() && !rt.up_ok {
            match self.netlink.set_up(rt.info.index).await {
                Ok(()) => rt.up_ok = true,
                Err(e) => {
                    let message = crate::error_chain(&e);
                    tracing::warn!(link = %rt.info.name, error = %message, "cannot bring link up");
                    rt.error = Some(message);
                    return;
                }
            }
        }
        let LinkRole::Managed(m) = &rt.role else {
            return;
        };
        if rt.statics_ok {
            return;
        }
        let actions = diff(&rt.statics_applied, &m.statics);
        match apply_tracked(
            &self.netlink,
            rt.info.index,
            actions,
            RouteProtocol::Static,
            &mut rt.statics_applied,
        )
        .await
        {
            Ok(()) => {
                rt.statics_ok = true;
                if !m.statics.addresses.is_empty() {
                    let addresses: Vec<String> = m
                        .statics
                        .addresses
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    tracing::info!(link = %rt.info.name, addresses = ?addresses, "static addresses applied");
                }
                if rt.lease.is_none() {
                    rt.error = None;
                }
            }
            Err(e) => {
                let message = crate::error_chain(&e);
                tracing::warn!(link = %rt.info.name, error = %message, "cannot apply static configuration; will retry");
                rt.error = Some(message);
            }
        }
    }

    /// Recomputes resolver, NTP and host name, applies what changed and
    /// publishes the status.
    async fn refresh(&mut self) {
        let leases: Vec<&DhcpLease> = self
            .links
            .values()
            .filter_map(|rt| rt.lease.as_ref())
            .collect();
        let resolver = ResolverConfig::merge(&self.config.network, leases.iter().copied());
        let mut ntp_servers = Vec::new();
        for server in leases.iter().flat_map(|l| &l.ntp) {
            if !ntp_servers.contains(server) {
                ntp_servers.push(*server);
            }
        }
        let hostname = choose_hostname(
            self.config.node.hostname.as_ref(),
            leases.iter().map(|l| l.hostname.as_ref()),
            first_physical_mac(&self.scanned),
        );

        let text = resolver.render();
        let needs_write = match &self.resolv_written {
            Some(written) => *written != text,
            // Leave any existing file alone until there is something to say.
            None => !resolver.is_empty(),
        };
        if needs_write {
            let path = self.options.resolv_conf.clone();
            let body = text.clone();
            match tokio::task::spawn_blocking(move || resolv::write_atomic(&path, &body)).await {
                Ok(Ok(())) => {
                    tracing::info!(path = %self.options.resolv_conf.display(), nameservers = ?resolver.nameservers, "resolver config written");
                    self.resolv_written = Some(text);
                }
                Ok(Err(e)) => {
                    tracing::error!(path = %self.options.resolv_conf.display(), error = %e, "cannot write resolver config")
                }
                Err(e) => tracing::error!(error = %e, "resolver config writer panicked"),
            }
        }

        if let Some((name, source)) = &hostname
            && self.hostname_applied.as_ref() != Some(name)
        {
            if self.options.set_hostname {
                match nix::unistd::sethostname(name.as_str()) {
                    Ok(()) => {
                        tracing::info!(hostname = %name, %source, "host name set");
                        self.hostname_applied = Some(name.clone());
                    }
                    Err(e) => tracing::error!(hostname = %name, error = %e, "sethostname failed"),
                }
            } else {
                self.hostname_applied = Some(name.clone());
            }
        }

        let status = NetworkStatus {
            links: self
                .links
                .iter()
                .filter_map(|(i, rt)| Some((*i, rt.status()?)))
                .collect(),
            resolver,
            ntp_servers,
            hostname,
        };
        self.status_tx.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }
}

/// Logs a role without its full static detail.
struct RoleName<'a>(&'a LinkRole);

impl std::fmt::Debug for RoleName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            LinkRole::Loopback => "loopback",
            LinkRole::Managed(m) if m.dhcp && m.statics.addresses.is_empty() => "dhcp",
            LinkRole::Managed(m) if m.dhcp => "dhcp+static",
            LinkRole::Managed(_) => "static",
            LinkRole::UpOnly => "up-only",
            LinkRole::Ignored => "ignored",
        })
    }
}
