//! The DHCPv4 client: one task per link.
//!
//! The protocol lives in two sans-IO modules: [`packet`] encodes and
//! decodes messages, and [`client`] is the RFC 2131 state machine
//! (DISCOVER with backoff, REQUEST, renewing at T1 by unicast, rebinding at
//! T2 by broadcast, back to discovery when the lease runs out, RELEASE on
//! shutdown). This module is the thin shell around them: a UDP socket on
//! port 68 bound to the link, a timer for [`DhcpClient::deadline`], and the
//! carrying out of [`DhcpAction`]s. Leases go through a [`LeaseTracker`],
//! which turns them into [`LinkAction`]s for netlink, and each change is
//! reported to the network manager.
//!
//! The client's xids and jitter come from a PRNG seeded by
//! [`entropy::dhcp_seed`], which never blocks: see [`client`] for why that
//! is enough, and [`entropy`] for why it matters.
//!
//! A plain UDP socket (not a packet socket) is enough because replies to
//! an address-less client are broadcast (we set the BROADCAST flag) and
//! `SO_BINDTODEVICE` keeps each link's traffic apart. It does rely on
//! reverse-path filtering being off or loose with a route back to the
//! server, which is the kernel default.

pub mod client;
pub mod packet;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use rtnetlink::packet_route::route::RouteProtocol;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::client::{ClientConfig, Destination, DhcpAction, DhcpClient, LossReason};
use self::packet::{CLIENT_PORT, DhcpMessage, MessageType, SERVER_PORT};
use super::entropy;
use super::lease::{DhcpLease, LeaseTracker};
use super::netlink::{Netlink, NetlinkError};
use super::plan::{LinkAction, LinkAddressing};
use crate::config::{Hostname, MacAddr};

/// How long a DHCPRELEASE may take at shutdown before it is abandoned.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest pause between attempts to open the socket.
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);
/// Receive buffer: well above the 1500 bytes we advertise (option 57).
const RECEIVE_BUFFER: usize = 4096;

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
    /// Link name (the socket is bound to the device by name).
    pub name: String,
    /// Link MAC: the client hardware address.
    pub mac: MacAddr,
    /// Whether the link has carrier now.
    pub carrier: bool,
    /// Apply an MTU from the lease.
    pub accept_mtu: bool,
    /// Host name to send (option 12), when the config fixes one.
    pub hostname: Option<Hostname>,
}

/// Why the client's socket could not be opened; one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum DhcpSocketError {
    /// socket(2).
    #[error("cannot create a UDP socket")]
    Create(#[source] std::io::Error),
    /// SO_REUSEADDR, so that every link's client can bind port 68.
    #[error("cannot set SO_REUSEADDR")]
    ReuseAddress(#[source] std::io::Error),
    /// SO_BROADCAST.
    #[error("cannot set SO_BROADCAST")]
    Broadcast(#[source] std::io::Error),
    /// SO_BINDTODEVICE.
    #[error("cannot bind the socket to link {link}")]
    BindDevice {
        /// Link name.
        link: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// bind(2) to 0.0.0.0:68.
    #[error("cannot bind UDP port {CLIENT_PORT}")]
    Bind(#[source] std::io::Error),
    /// Non-blocking mode or registration with the runtime.
    #[error("cannot register the socket with the runtime")]
    Register(#[source] std::io::Error),
}

/// Opens 0.0.0.0:68 on link `name` only.
fn open_socket(name: &str) -> Result<UdpSocket, DhcpSocketError> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(DhcpSocketError::Create)?;
    socket
        .set_reuse_address(true)
        .map_err(DhcpSocketError::ReuseAddress)?;
    socket
        .set_broadcast(true)
        .map_err(DhcpSocketError::Broadcast)?;
    socket
        .bind_device(Some(name.as_bytes()))
        .map_err(|source| DhcpSocketError::BindDevice {
            link: name.to_owned(),
            source,
        })?;
    socket
        .bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT).into())
        .map_err(DhcpSocketError::Bind)?;
    socket
        .set_nonblocking(true)
        .map_err(DhcpSocketError::Register)?;
    UdpSocket::from_std(socket.into()).map_err(DhcpSocketError::Register)
}

/// Handle on a running DHCP task.
#[derive(Debug)]
pub struct DhcpHandle {
    stop: oneshot::Sender<StopMode>,
    carrier: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl DhcpHandle {
    /// Starts a client on the current runtime.
    pub fn spawn(
        params: DhcpParams,
        netlink: Netlink,
        events: mpsc::UnboundedSender<DhcpEvent>,
    ) -> Self {
        let (stop, stop_rx) = oneshot::channel();
        let (carrier, carrier_rx) = watch::channel(params.carrier);
        let task = tokio::spawn(
            DhcpTask {
                tracker: LeaseTracker::new(params.index, params.accept_mtu),
                params,
                netlink,
                events,
            }
            .run(stop_rx, carrier_rx),
        );
        Self {
            stop,
            carrier,
            task,
        }
    }

    /// Tells the client the link's carrier changed. When it comes up
    /// without a lease, discovery starts over at once instead of waiting
    /// out its retransmission backoff (up to a minute); when it goes down,
    /// discovery pauses. A lease is kept either way (RFC 2131 4.4.5).
    pub fn set_carrier(&self, up: bool) {
        self.carrier.send_replace(up);
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
}

/// Waits until `at`, or forever when there is no deadline.
async fn sleep_until_opt(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The next carrier state; never returns once the handle is gone (the
/// stop channel says so then).
async fn carrier_change(carrier: &mut watch::Receiver<bool>) -> bool {
    match carrier.changed().await {
        Ok(()) => *carrier.borrow_and_update(),
        Err(_) => std::future::pending().await,
    }
}

/// The core takes time as an input; the shell reads it from tokio's clock.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

impl DhcpTask {
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

    async fn on_bound(&mut self, ack: &DhcpMessage) {
        let lease = match DhcpLease::from_ack(ack) {
            Ok(l) => l,
            Err(e) => return self.report_error("unusable DHCP lease", &e),
        };
        let actions = self.tracker.bound(lease.clone(), now());
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

    async fn withdraw(&mut self, reason: LossReason) {
        let actions = self.tracker.lost();
        if actions.is_empty() {
            return;
        }
        match reason {
            LossReason::Released => {
                tracing::info!(link = %self.params.name, "removing the released lease's address")
            }
            LossReason::Expired => {
                tracing::warn!(link = %self.params.name, "DHCP lease expired; removing its address")
            }
            LossReason::Nak => {
                tracing::warn!(link = %self.params.name, "DHCP server refused to extend the lease; removing its address")
            }
        }
        if let Err(e) = self.apply(actions).await {
            self.report_error("cannot remove DHCP address", &e);
        }
        self.report(DhcpEvent::Lost {
            index: self.params.index,
        });
    }

    async fn send(&self, socket: &UdpSocket, to: Destination, packet: &[u8], kind: MessageType) {
        let address = match to {
            Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT),
            Destination::Server(ip) => SocketAddrV4::new(ip, SERVER_PORT),
        };
        match socket.send_to(packet, address).await {
            Ok(_) if kind == MessageType::Release => {
                tracing::info!(link = %self.params.name, server = %address.ip(), "DHCP lease released");
            }
            Ok(_) => {
                tracing::debug!(link = %self.params.name, ?kind, to = %address, "DHCP message sent")
            }
            Err(e) => self.report_error(&format!("cannot send DHCP {kind:?} to {address}"), &e),
        }
    }

    async fn carry_out(&mut self, socket: &UdpSocket, actions: Vec<DhcpAction>) {
        for action in actions {
            match action {
                DhcpAction::Send { to, packet, kind } => {
                    self.send(socket, to, &packet, kind).await;
                }
                DhcpAction::Apply(ack) => self.on_bound(&ack).await,
                DhcpAction::Withdraw(reason) => self.withdraw(reason).await,
            }
        }
    }

    /// Opens the socket, retrying with backoff; `None` when told to stop
    /// first.
    async fn open(&self, stop: &mut oneshot::Receiver<StopMode>) -> Option<UdpSocket> {
        let mut failures: u32 = 0;
        loop {
            match open_socket(&self.params.name) {
                Ok(socket) => return Some(socket),
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.report_error("cannot open the DHCP socket", &e);
                }
            }
            let pause = Duration::from_secs(1u64 << failures.min(5)).min(MAX_RESTART_BACKOFF);
            tokio::select! {
                _ = &mut *stop => return None,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn run(
        mut self,
        mut stop: oneshot::Receiver<StopMode>,
        mut carrier: watch::Receiver<bool>,
    ) {
        let Some(socket) = self.open(&mut stop).await else {
            return;
        };
        let mut client = DhcpClient::new(
            ClientConfig {
                mac: self.params.mac.octets(),
                hostname: self.params.hostname.as_ref().map(|h| h.as_str().to_owned()),
            },
            entropy::dhcp_seed(self.params.mac),
        );
        tracing::info!(link = %self.params.name, mac = %self.params.mac, "starting DHCPv4 client");
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        let mut actions = client.link_up(now());
        loop {
            self.carry_out(&socket, actions).await;
            actions = tokio::select! {
                mode = &mut stop => {
                    // A dropped handle means the manager is gone: treat it
                    // like a shutdown.
                    if mode.unwrap_or(StopMode::Release) == StopMode::Release {
                        let release = client.shutdown();
                        if tokio::time::timeout(RELEASE_TIMEOUT, self.carry_out(&socket, release))
                            .await
                            .is_err()
                        {
                            tracing::warn!(link = %self.params.name, "DHCP release timed out");
                        }
                    }
                    return;
                }
                () = sleep_until_opt(client.deadline()) => client.tick(now()),
                up = carrier_change(&mut carrier) => {
                    if up {
                        if self.tracker.lease().is_none() {
                            tracing::info!(link = %self.params.name, "carrier up; restarting DHCP discovery");
                        }
                        client.link_up(now())
                    } else {
                        client.link_down();
                        Vec::new()
                    }
                }
                received = socket.recv_from(&mut buffer) => match received {
                    Ok((len, _from)) => client.handle_packet(now(), buffer.get(..len).unwrap_or_default()),
                    Err(e) => {
                        self.report_error("cannot receive DHCP messages", &e);
                        // Do not spin if the error persists.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Vec::new()
                    }
                },
            };
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
