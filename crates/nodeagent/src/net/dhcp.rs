//! The DHCPv4 client task: one per link, driving mozim and applying leases.
//!
//! mozim speaks the protocol: DISCOVER with backoff, REQUEST, renewing at
//! T1 (unicast) and rebinding at T2 (broadcast), and falling back to
//! DISCOVER when the lease runs out. This task feeds each state change into
//! a [`LeaseTracker`], carries out the resulting [`LinkAction`]s over
//! netlink and reports to the network manager. If mozim errors out, the
//! task backs off and restarts it; the tracker's own deadline still drops
//! the address when the lease expires in the meantime.

use std::time::Duration;

use mozim::{DhcpV4Client, DhcpV4Config, DhcpV4State};
use rtnetlink::packet_route::route::RouteProtocol;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::entropy::EntropyGate;
use super::lease::{DhcpLease, LeaseTracker};
use super::netlink::{Netlink, NetlinkError};
use super::plan::{LinkAction, LinkAddressing};
use crate::config::{Hostname, MacAddr};

/// How long a DHCPRELEASE may take at shutdown before it is abandoned.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the entropy gate may stay shut before the wait is reported.
const ENTROPY_PATIENCE: Duration = Duration::from_millis(500);
/// Longest pause between restarts of a failing client.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

/// What a DHCP task tells the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpEvent {
    /// A lease is bound (or renewed) and applied to the link.
    Bound {
        /// Link index.
        index: u32,
        /// The lease.
        lease: DhcpLease,
    },
    /// The lease is gone and its address removed.
    Lost {
        /// Link index.
        index: u32,
    },
    /// Something failed; the task keeps trying.
    Error {
        /// Link index.
        index: u32,
        /// The error chain, rendered.
        message: String,
    },
}

/// How to stop a DHCP task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Send DHCPRELEASE and remove the address (agent shutdown, config
    /// change).
    Release,
    /// Just stop (the link is gone).
    Abandon,
}

/// Parameters of one DHCP client.
#[derive(Debug, Clone)]
pub struct DhcpParams {
    /// Link index.
    pub index: u32,
    /// Link name (mozim binds its UDP socket by name).
    pub name: String,
    /// Link MAC: the client hardware address.
    pub mac: MacAddr,
    /// Apply an MTU from the lease.
    pub accept_mtu: bool,
    /// Host name to send (option 12), when the config fixes one.
    pub hostname: Option<Hostname>,
}

/// Handle on a running DHCP task.
#[derive(Debug)]
pub struct DhcpHandle {
    stop: oneshot::Sender<StopMode>,
    carrier: Arc<Notify>,
    task: JoinHandle<()>,
}

impl DhcpHandle {
    /// Starts a client on the current runtime.
    pub fn spawn(
        params: DhcpParams,
        netlink: Netlink,
        events: mpsc::UnboundedSender<DhcpEvent>,
        entropy: EntropyGate,
    ) -> Self {
        let (stop, stop_rx) = oneshot::channel();
        let carrier = Arc::new(Notify::new());
        let task = tokio::spawn(
            DhcpTask {
                tracker: LeaseTracker::new(params.index, params.accept_mtu),
                params,
                netlink,
                events,
                raw_lease: None,
            }
            .run(stop_rx, entropy, Arc::clone(&carrier)),
        );
        Self {
            stop,
            carrier,
            task,
        }
    }

    /// Tells the client the link's carrier came up. Without a lease it
    /// starts discovery over at once instead of waiting out its
    /// retransmission backoff (up to a minute); with one it carries on.
    /// The task decides, because only it knows whether it holds a lease
    /// right now.
    pub fn carrier_up(&self) {
        self.carrier.notify_one();
    }

    /// Stops the client and waits for it (a release is bounded by
    /// one second).
    pub async fn stop(self, mode: StopMode) {
        // The task may already have ended; then there is nothing to stop.
        let _ = self.stop.send(mode);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "DHCP task ended abnormally");
        }
    }
}

struct DhcpTask {
    params: DhcpParams,
    netlink: Netlink,
    events: mpsc::UnboundedSender<DhcpEvent>,
    tracker: LeaseTracker,
    /// The lease as mozim knows it, needed to release it.
    raw_lease: Option<mozim::DhcpV4Lease>,
}

/// Waits until `at`, or forever when there is no deadline.
async fn sleep_until_opt(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

impl DhcpTask {
    fn client_config(&self) -> Result<DhcpV4Config, mozim::DhcpError> {
        let mut config = DhcpV4Config::new(&self.params.name);
        config.set_iface_index(self.params.index);
        config.set_iface_mac_raw(&self.params.mac.octets())?;
        config.use_mac_as_client_id();
        if let Some(name) = &self.params.hostname {
            config.set_host_name(name.as_str());
        }
        Ok(config)
    }

    fn report(&self, event: DhcpEvent) {
        // The manager outlives every DHCP task; a closed channel only
        // happens during shutdown, when nobody needs the event.
        let _ = self.events.send(event);
    }

    fn report_error(&self, context: &str, error: &dyn std::error::Error) {
        let message = format!("{context}: {}", crate::error_chain(error));
        tracing::warn!(link = %self.params.name, "{message}");
        self.report(DhcpEvent::Error {
            index: self.params.index,
            message,
        });
    }

    async fn apply(&mut self, actions: Vec<LinkAction>) -> Result<(), NetlinkError> {
        for action in actions {
            self.netlink
                .apply(self.params.index, action, RouteProtocol::Dhcp)
                .await?;
        }
        Ok(())
    }

    async fn on_bound(&mut self, raw: mozim::DhcpV4Lease) {
        let lease = match DhcpLease::from_mozim(&raw) {
            Ok(l) => l,
            Err(e) => return self.report_error("unusable DHCP lease", &e),
        };
        let actions = self.tracker.bound(lease.clone(), std::time::Instant::now());
        let fresh = !actions.is_empty();
        match self.apply(actions).await {
            Ok(()) => {
                if fresh {
                    tracing::info!(
                        link = %self.params.name,
                        address = %lease.address,
                        server = %lease.server,
                        routers = ?lease.routers,
                        dns = ?lease.dns,
                        ntp = ?lease.ntp,
                        lease_secs = lease.lease_time.as_secs(),
                        "DHCP lease bound"
                    );
                } else {
                    tracing::debug!(link = %self.params.name, address = %lease.address, "DHCP lease renewed");
                }
                self.raw_lease = Some(raw);
                self.report(DhcpEvent::Bound {
                    index: self.params.index,
                    lease,
                });
            }
            Err(e) => {
                // Forget what was applied so the next renewal re-adds all
                // of it instead of diffing against a state that is not on
                // the link.
                let _ = self.tracker.lost();
                self.report_error("cannot apply DHCP lease", &e);
            }
        }
    }

    async fn withdraw(&mut self, actions: Vec<LinkAction>, why: &str) {
        if self.tracker.lease().is_none() {
            self.raw_lease = None;
        }
        if actions.is_empty() {
            return;
        }
        if why == "released" {
            tracing::info!(link = %self.params.name, "removing the released lease's address");
        } else {
            tracing::warn!(link = %self.params.name, "DHCP lease {why}; removing its address");
        }
        if let Err(e) = self.apply(actions).await {
            self.report_error("cannot remove DHCP address", &e);
        }
        self.report(DhcpEvent::Lost {
            index: self.params.index,
        });
    }

    async fn release(&mut self, client: Option<&mut DhcpV4Client>) {
        if let (Some(client), Some(raw)) = (client, self.raw_lease.clone()) {
            match tokio::time::timeout(RELEASE_TIMEOUT, client.release(&raw)).await {
                Ok(Ok(())) => {
                    tracing::info!(link = %self.params.name, address = %raw.yiaddr, "DHCP lease released")
                }
                Ok(Err(e)) => {
                    tracing::warn!(link = %self.params.name, error = %e, "DHCP release failed")
                }
                Err(_) => tracing::warn!(link = %self.params.name, "DHCP release timed out"),
            }
        }
        let actions = self.tracker.lost();
        self.withdraw(actions, "released").await;
    }

    async fn run(
        mut self,
        mut stop: oneshot::Receiver<StopMode>,
        mut entropy: EntropyGate,
        carrier: Arc<Notify>,
    ) {
        let config = match self.client_config() {
            Ok(c) => c,
            Err(e) => return self.report_error("cannot configure the DHCP client", &e),
        };
        if !entropy.is_open() {
            tokio::select! {
                _ = &mut stop => return,
                () = entropy.wait() => {}
                // On a healthy machine the gate opens within microseconds;
                // only a real wait is worth a warning.
                () = tokio::time::sleep(ENTROPY_PATIENCE) => {
                    let message = "waiting for the kernel's random number generator \
                                   (no RDRAND or hardware RNG; on QEMU add -device virtio-rng-pci)";
                    tracing::warn!(link = %self.params.name, "DHCP {message}");
                    self.report(DhcpEvent::Error {
                        index: self.params.index,
                        message: message.to_owned(),
                    });
                    tokio::select! {
                        _ = &mut stop => return,
                        () = entropy.wait() => {
                            tracing::info!(link = %self.params.name, "kernel random number generator ready");
                        }
                    }
                }
            }
        }
        let mut client: Option<DhcpV4Client> = None;
        let mut failures: u32 = 0;
        tracing::info!(link = %self.params.name, mac = %self.params.mac, "starting DHCPv4 client");
        loop {
            let expiry = self.tracker.expires_at();
            let Some(active) = client.as_mut() else {
                // (Re)start the protocol client, after a pause if it failed.
                let pause = Duration::from_secs(1u64 << failures.min(5)).min(MAX_RESTART_BACKOFF);
                let pause = if failures == 0 { Duration::ZERO } else { pause };
                tokio::select! {
                    mode = &mut stop => {
                        if mode == Ok(StopMode::Release) {
                            self.release(None).await;
                        }
                        return;
                    }
                    () = sleep_until_opt(expiry) => {
                        let actions = self.tracker.poll(std::time::Instant::now());
                        self.withdraw(actions, "expired").await;
                        continue;
                    }
                    () = tokio::time::sleep(pause) => {}
                    () = carrier.notified() => failures = 0,
                }
                match DhcpV4Client::init(config.clone(), None).await {
                    Ok(c) => client = Some(c),
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        self.report_error("cannot start the DHCP client", &e);
                    }
                }
                continue;
            };
            tokio::select! {
                mode = &mut stop => {
                    // A dropped handle means the manager is gone: treat it
                    // like a shutdown.
                    if mode.unwrap_or(StopMode::Release) == StopMode::Release {
                        self.release(Some(active)).await;
                    }
                    return;
                }
                () = sleep_until_opt(expiry) => {
                    // Only reached when mozim was restarted and lost track
                    // of the lease; otherwise it reports expiry itself.
                    let actions = self.tracker.poll(std::time::Instant::now());
                    self.withdraw(actions, "expired").await;
                }
                () = carrier.notified() => {
                    if self.tracker.lease().is_none() {
                        tracing::info!(link = %self.params.name, "carrier up; restarting DHCP discovery");
                        client = None;
                        failures = 0;
                    }
                }
                result = active.run() => match result {
                    Ok(DhcpV4State::Done(lease)) => {
                        failures = 0;
                        self.on_bound(*lease).await;
                    }
                    Ok(DhcpV4State::InitReboot) => {
                        // mozim is back at the start: the lease expired
                        // while rebinding or the server NAKed it.
                        let actions = self.tracker.lost();
                        self.withdraw(actions, "lost").await;
                    }
                    Ok(state @ (DhcpV4State::Selecting | DhcpV4State::Renewing | DhcpV4State::Rebinding)) => {
                        tracing::debug!(link = %self.params.name, %state, "DHCP state");
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        self.report_error("DHCP client failed; restarting it", &e);
                        client = None;
                    }
                },
            }
        }
    }
}

/// Applies a list of actions on top of `applied`, updating it as each one
/// succeeds, so that a partial failure leaves an accurate record.
pub async fn apply_tracked(
    netlink: &Netlink,
    index: u32,
    actions: Vec<LinkAction>,
    protocol: RouteProtocol,
    applied: &mut LinkAddressing,
) -> Result<(), NetlinkError> {
    for action in actions {
        netlink.apply(index, action, protocol).await?;
        match action {
            LinkAction::AddAddress(a) => applied.addresses.push(a),
            LinkAction::RemoveAddress(a) => applied.addresses.retain(|x| *x != a),
            LinkAction::AddRoute(r) => applied.routes.push(r),
            LinkAction::RemoveRoute(r) => applied.routes.retain(|x| *x != r),
            LinkAction::SetMtu(m) => applied.mtu = Some(m),
        }
    }
    Ok(())
}
