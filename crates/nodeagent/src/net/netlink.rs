//! The rtnetlink shell: lists links and carries out [`LinkAction`]s.
//!
//! Every call here is one netlink request and nothing else; the decisions
//! were made by [`super::plan`] and [`super::lease`]. Requests are
//! idempotent where the kernel allows: adding an address or route replaces
//! an identical one, and removing one that is already gone is not an error
//! (the kernel drops routes with their address, and links vanish).

use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt, TryStreamExt};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::{AddressMessageBuilder, LinkUnspec, MulticastGroup, RouteMessageBuilder};

use super::plan::{LinkAction, LinkInfo, LinkKind, RouteSpec};
use crate::config::{Ipv4Cidr, MacAddr, Mtu};

/// Where the kernel says whether a link is backed by a device.
pub const SYSFS_NET: &str = "/sys/class/net";

/// A failed netlink request. Each step has its own variant so the log says
/// exactly which one failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Connect(#[source] io::Error),
    /// Dumping links failed.
    #[error("cannot list links")]
    ListLinks(#[source] rtnetlink::Error),
    /// Setting a link up failed.
    #[error("cannot set link {index} up")]
    SetUp {
        /// Link index.
        index: u32,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Setting the MTU failed.
    #[error("cannot set MTU {mtu} on link {index}")]
    SetMtu {
        /// Link index.
        index: u32,
        /// The MTU.
        mtu: Mtu,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Adding an address failed.
    #[error("cannot add address {address} to link {index}")]
    AddAddress {
        /// Link index.
        index: u32,
        /// The address.
        address: Ipv4Cidr,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Removing an address failed.
    #[error("cannot remove address {address} from link {index}")]
    RemoveAddress {
        /// Link index.
        index: u32,
        /// The address.
        address: Ipv4Cidr,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Adding a route failed.
    #[error("cannot add route {route} on link {index}")]
    AddRoute {
        /// Link index.
        index: u32,
        /// The route.
        route: RouteSpec,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Removing a route failed.
    #[error("cannot remove route {route} from link {index}")]
    RemoveRoute {
        /// Link index.
        index: u32,
        /// The route.
        route: RouteSpec,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Subscribing to link events failed.
    #[error("cannot subscribe to link events")]
    Subscribe(#[source] io::Error),
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.gateway {
            Some(gw) => write!(f, "{} via {gw} metric {}", self.destination, self.metric),
            None => write!(f, "{} on-link metric {}", self.destination, self.metric),
        }
    }
}

/// Whether a failed request failed only because the object is already gone.
fn is_gone(e: &rtnetlink::Error) -> bool {
    const ENOENT: i32 = 2;
    const ESRCH: i32 = 3;
    const ENODEV: i32 = 19;
    const EADDRNOTAVAIL: i32 = 99;
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            matches!(-m.raw_code(), ENOENT | ESRCH | ENODEV | EADDRNOTAVAIL)
        }
        _ => false,
    }
}

/// A handle on the route netlink socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    sysfs_net: PathBuf,
}

impl Netlink {
    /// Opens the socket and spawns its connection task on the current
    /// runtime. `sysfs_net` is normally [`SYSFS_NET`].
    pub fn connect(sysfs_net: &Path) -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Self {
            handle,
            sysfs_net: sysfs_net.to_owned(),
        })
    }

    fn classify(&self, msg: &LinkMessage, name: &str) -> LinkKind {
        if msg.header.link_layer_type == LinkLayerType::Loopback {
            return LinkKind::Loopback;
        }
        // A sysfs attribute read is served from memory by the kernel, so
        // this stat does not block the runtime in any way that matters.
        if self.sysfs_net.join(name).join("device").exists() {
            LinkKind::Physical
        } else {
            LinkKind::Virtual
        }
    }

    fn link_info(&self, msg: &LinkMessage) -> Option<LinkInfo> {
        let mut name = None;
        let mut address = None;
        let mut permanent = None;
        let mut carrier = false;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::Carrier(c) => carrier = *c != 0,
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::Address(a) => address = MacAddr::from_slice(a),
                LinkAttribute::PermAddress(a) => permanent = MacAddr::from_slice(a),
                _ => {}
            }
        }
        let name = name?;
        Some(LinkInfo {
            index: msg.header.index,
            kind: self.classify(msg, &name),
            // The permanent address survives bonding and MAC changes, so a
            // config that selects by MAC keeps matching.
            mac: permanent.or(address).filter(|m| m.octets() != [0; 6]),
            name,
            carrier,
        })
    }

    /// All links, in index order.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let mut stream = self.handle.link().get().execute();
        let mut links = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(NetlinkError::ListLinks)? {
            links.extend(self.link_info(&msg));
        }
        links.sort_by_key(|l| l.index);
        Ok(links)
    }

    /// Sets a link administratively up.
    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| NetlinkError::SetUp { index, source })
    }

    /// Carries out one action on link `index`.
    pub async fn apply(
        &self,
        index: u32,
        action: LinkAction,
        protocol: RouteProtocol,
    ) -> Result<(), NetlinkError> {
        match action {
            LinkAction::SetMtu(mtu) => self
                .handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .mtu(u32::from(mtu.get()))
                        .build(),
                )
                .execute()
                .await
                .map_err(|source| NetlinkError::SetMtu { index, mtu, source }),
            LinkAction::AddAddress(address) => self
                .handle
                .address()
                .add(index, address.addr().into(), address.prefix())
                .replace()
                .execute()
                .await
                .map_err(|source| NetlinkError::AddAddress {
                    index,
                    address,
                    source,
                }),
            LinkAction::RemoveAddress(address) => {
                let msg = AddressMessageBuilder::<Ipv4Addr>::new()
                    .index(index)
                    .address(address.addr(), address.prefix())
                    .build();
                match self.handle.address().del(msg).execute().await {
                    Err(e) if !is_gone(&e) => Err(NetlinkError::RemoveAddress {
                        index,
                        address,
                        source: e,
                    }),
                    Ok(()) | Err(_) => Ok(()),
                }
            }
            LinkAction::AddRoute(route) => self
                .handle
                .route()
                .add(route_message(index, route, protocol))
                .replace()
                .execute()
                .await
                .map_err(|source| NetlinkError::AddRoute {
                    index,
                    route,
                    source,
                }),
            LinkAction::RemoveRoute(route) => {
                match self
                    .handle
                    .route()
                    .del(route_message(index, route, protocol))
                    .execute()
                    .await
                {
                    Err(e) if !is_gone(&e) => Err(NetlinkError::RemoveRoute {
                        index,
                        route,
                        source: e,
                    }),
                    Ok(()) | Err(_) => Ok(()),
                }
            }
        }
    }

    /// A stream that yields once per link added, removed or changed. The
    /// manager re-plans on each; it does not need the message itself.
    pub fn link_events() -> Result<impl Stream<Item = ()> + Send + Unpin, NetlinkError> {
        let (connection, _handle, messages) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
                .map_err(NetlinkError::Subscribe)?;
        tokio::spawn(connection);
        Ok(messages.filter_map(|(msg, _)| {
            let relevant = matches!(
                msg.payload,
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewLink(_) | RouteNetlinkMessage::DelLink(_)
                )
            );
            std::future::ready(relevant.then_some(()))
        }))
    }
}

fn route_message(
    index: u32,
    route: RouteSpec,
    protocol: RouteProtocol,
) -> rtnetlink::packet_route::route::RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.destination.addr(), route.destination.prefix())
        .output_interface(index)
        .priority(route.metric)
        .protocol(protocol);
    builder = match route.gateway {
        Some(gw) => builder.gateway(gw),
        None => builder.scope(RouteScope::Link),
    };
    builder.build()
}
