//! Which links the agent touches, and how: the sans-IO half of link
//! management.
//!
//! [`plan_links`] takes the links the kernel reports and the network config
//! and decides a [`LinkRole`] for each. It never talks to netlink; the
//! manager carries the plan out and re-plans on every link event, so
//! hotplugged NICs get the same treatment as the ones present at boot.
//!
//! The rules:
//! - `lo` is only brought up.
//! - With no `[[network.interfaces]]` entries, every physical link (one with
//!   a `/sys/class/net/<name>/device`) is brought up and runs DHCP.
//! - With entries, a link matched by an entry (by name or MAC; physical or
//!   not, since the operator named it) is configured as the entry says;
//!   other physical links are brought up without addresses.
//! - Virtual links nobody named (bridges, veths, tunnels) are left alone:
//!   they belong to whoever created them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::config::{InterfaceConfig, InterfaceSelector, Ipv4Cidr, MacAddr, Mtu, NetworkConfig};

/// Metric for routes from static config; lower than DHCP's so a static
/// default route wins over a learned one.
pub const STATIC_ROUTE_METRIC: u32 = 100;
/// Metric for routes learned from DHCP (systemd-networkd uses the same).
pub const DHCP_ROUTE_METRIC: u32 = 1024;

/// What kind of device a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// The loopback device.
    Loopback,
    /// Backed by hardware (or an emulated NIC): has a sysfs `device`.
    Physical,
    /// Software-only: bridge, veth, tun, bond, ...
    Virtual,
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Kernel name.
    pub name: String,
    /// Ethernet address, when the link has one.
    pub mac: Option<MacAddr>,
    /// Loopback, physical or virtual.
    pub kind: LinkKind,
    /// Whether the link has carrier (a cable, a peer).
    pub carrier: bool,
}

impl LinkInfo {
    /// Whether `other` is the same device under the same name and address:
    /// carrier changes do not make a link a different one.
    pub fn same_device(&self, other: &Self) -> bool {
        self.index == other.index
            && self.name == other.name
            && self.mac == other.mac
            && self.kind == other.kind
    }

    /// Whether going from `self` to `now` means the carrier came up: the
    /// moment to restart DHCP discovery instead of waiting out its backoff.
    pub fn carrier_came_up(&self, now: &Self) -> bool {
        !self.carrier && now.carrier
    }
}

/// A route the agent owns on one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteSpec {
    /// Destination network; `0.0.0.0/0` for the default route.
    pub destination: Ipv4Cidr,
    /// Next hop; `None` for an on-link route.
    pub gateway: Option<Ipv4Addr>,
    /// Route priority. The link index is added so that two links can each
    /// hold a default route without the kernel calling them duplicates.
    pub metric: u32,
}

/// The layer-3 state one source (static config or a DHCP lease) wants on
/// one link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkAddressing {
    /// Addresses to hold.
    pub addresses: Vec<Ipv4Cidr>,
    /// Routes to hold.
    pub routes: Vec<RouteSpec>,
    /// MTU to set.
    pub mtu: Option<Mtu>,
}

impl LinkAddressing {
    /// The static part of an interface entry, on link `index`.
    pub fn from_static(entry: &InterfaceConfig, index: u32) -> Self {
        let metric = STATIC_ROUTE_METRIC.saturating_add(index);
        let default_route = entry.gateway.map(|gw| RouteSpec {
            destination: default_destination(),
            gateway: Some(gw),
            metric,
        });
        let routes = entry.routes.iter().map(|r| RouteSpec {
            destination: r.destination,
            gateway: Some(r.gateway),
            metric,
        });
        Self {
            addresses: entry.addresses.clone(),
            routes: default_route.into_iter().chain(routes).collect(),
            mtu: entry.mtu,
        }
    }
}

/// `0.0.0.0/0`.
pub fn default_destination() -> Ipv4Cidr {
    Ipv4Cidr::ANY
}

/// One step that brings a link from one [`LinkAddressing`] to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// Remove a route the agent added earlier.
    RemoveRoute(RouteSpec),
    /// Remove an address the agent added earlier.
    RemoveAddress(Ipv4Cidr),
    /// Set the link MTU.
    SetMtu(Mtu),
    /// Add (or refresh) an address.
    AddAddress(Ipv4Cidr),
    /// Add (or replace) a route.
    AddRoute(RouteSpec),
}

/// The actions that turn `old` into `new`, in a safe order: routes go
/// before the addresses they depend on, and come back after them.
pub fn diff(old: &LinkAddressing, new: &LinkAddressing) -> Vec<LinkAction> {
    let mut actions = Vec::new();
    actions.extend(
        old.routes
            .iter()
            .filter(|r| !new.routes.contains(r))
            .map(|r| LinkAction::RemoveRoute(*r)),
    );
    actions.extend(
        old.addresses
            .iter()
            .filter(|a| !new.addresses.contains(a))
            .map(|a| LinkAction::RemoveAddress(*a)),
    );
    if let Some(mtu) = new.mtu.filter(|m| old.mtu != Some(*m)) {
        actions.push(LinkAction::SetMtu(mtu));
    }
    actions.extend(
        new.addresses
            .iter()
            .filter(|a| !old.addresses.contains(a))
            .map(|a| LinkAction::AddAddress(*a)),
    );
    actions.extend(
        new.routes
            .iter()
            .filter(|r| !old.routes.contains(r))
            .map(|r| LinkAction::AddRoute(*r)),
    );
    actions
}

/// What the agent does with a link that is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedLink {
    /// Index of the `[[network.interfaces]]` entry, `None` for the default.
    pub entry: Option<usize>,
    /// Run a DHCP client.
    pub dhcp: bool,
    /// Static addresses, routes and MTU.
    pub statics: LinkAddressing,
    /// Whether an MTU from DHCP may be applied (not when config sets one).
    pub accept_dhcp_mtu: bool,
}

/// The role of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRole {
    /// `lo`: brought up only.
    Loopback,
    /// Brought up and addressed.
    Managed(ManagedLink),
    /// Physical but not configured: brought up, no addresses.
    UpOnly,
    /// Not ours: left alone.
    Ignored,
}

impl LinkRole {
    /// Whether the agent sets the link administratively up.
    pub fn brings_up(&self) -> bool {
        match self {
            Self::Loopback | Self::Managed(_) | Self::UpOnly => true,
            Self::Ignored => false,
        }
    }
}

/// The result of planning.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkPlan {
    /// Role per link index.
    pub roles: BTreeMap<u32, LinkRole>,
    /// Config entries that matched no link (worth a warning: a typo, or a
    /// NIC that is not there yet).
    pub unmatched_entries: Vec<usize>,
}

fn matches(selector: &InterfaceSelector, link: &LinkInfo) -> bool {
    match selector {
        InterfaceSelector::Name(name) => name.as_str() == link.name,
        InterfaceSelector::Mac(mac) => link.mac == Some(*mac),
    }
}

/// Decides the role of every link.
pub fn plan_links(config: &NetworkConfig, links: &[LinkInfo]) -> LinkPlan {
    let mut plan = LinkPlan::default();
    let mut matched = vec![false; config.interfaces.len()];
    for link in links {
        let entry = config
            .interfaces
            .iter()
            .enumerate()
            .find(|(_, e)| link.kind != LinkKind::Loopback && matches(&e.selector, link));
        let role = match (link.kind, entry) {
            (LinkKind::Loopback, _) => LinkRole::Loopback,
            (_, Some((i, e))) => {
                if let Some(m) = matched.get_mut(i) {
                    *m = true;
                }
                LinkRole::Managed(ManagedLink {
                    entry: Some(i),
                    dhcp: e.dhcp,
                    statics: LinkAddressing::from_static(e, link.index),
                    accept_dhcp_mtu: e.mtu.is_none(),
                })
            }
            (LinkKind::Physical, None) if config.interfaces.is_empty() => {
                LinkRole::Managed(ManagedLink {
                    entry: None,
                    dhcp: true,
                    statics: LinkAddressing::default(),
                    accept_dhcp_mtu: true,
                })
            }
            (LinkKind::Physical, None) => LinkRole::UpOnly,
            (LinkKind::Virtual, None) => LinkRole::Ignored,
        };
        plan.roles.insert(link.index, role);
    }
    plan.unmatched_entries = matched
        .iter()
        .enumerate()
        .filter(|(_, m)| !**m)
        .map(|(i, _)| i)
        .collect();
    plan
}

/// The MAC the fallback host name is derived from: the physical link with
/// the lowest index, which is the first NIC the kernel probed.
pub fn first_physical_mac(links: &[LinkInfo]) -> Option<MacAddr> {
    links
        .iter()
        .filter(|l| l.kind == LinkKind::Physical)
        .filter_map(|l| l.mac.map(|m| (l.index, m)))
        .min_by_key(|(index, _)| *index)
        .map(|(_, mac)| mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MachineConfig, parse};

    fn link(index: u32, name: &str, mac: u8, kind: LinkKind) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            mac: (kind != LinkKind::Loopback).then_some(MacAddr::new([0x52, 0x54, 0, 0, 0, mac])),
            kind,
            carrier: true,
        }
    }

    fn host_links() -> Vec<LinkInfo> {
        vec![
            link(1, "lo", 0, LinkKind::Loopback),
            link(2, "eth0", 1, LinkKind::Physical),
            link(3, "eth1", 2, LinkKind::Physical),
            link(4, "br0", 3, LinkKind::Virtual),
            link(5, "veth0", 4, LinkKind::Virtual),
        ]
    }

    fn config(text: &str) -> NetworkConfig {
        parse(text.as_bytes(), &crate::config::ConfigOrigin::Default)
            .unwrap()
            .network
    }

    #[test]
    fn default_config_runs_dhcp_on_physical_links_only() {
        let plan = plan_links(&MachineConfig::embedded_default().network, &host_links());
        assert_eq!(plan.roles[&1], LinkRole::Loopback);
        for index in [2, 3] {
            let LinkRole::Managed(m) = &plan.roles[&index] else {
                panic!("{index}: {:?}", plan.roles[&index])
            };
            assert!(m.dhcp && m.statics == LinkAddressing::default() && m.entry.is_none());
        }
        assert_eq!(plan.roles[&4], LinkRole::Ignored, "bridges are not ours");
        assert_eq!(plan.roles[&5], LinkRole::Ignored, "veths are not ours");
        assert!(plan.unmatched_entries.is_empty());
    }

    #[test]
    fn listed_links_are_configured_and_other_physical_links_only_come_up() {
        let cfg = config(
            "[[network.interfaces]]\nmac = \"52:54:00:00:00:02\"\naddresses = [\"10.0.0.5/24\"]\ngateway = \"10.0.0.1\"\nmtu = 9000\n\
             [[network.interfaces]]\nname = \"veth0\"\n\
             [[network.interfaces]]\nname = \"eth9\"\n",
        );
        let plan = plan_links(&cfg, &host_links());
        assert_eq!(plan.roles[&2], LinkRole::UpOnly);
        let LinkRole::Managed(eth1) = &plan.roles[&3] else {
            panic!()
        };
        assert_eq!(eth1.entry, Some(0));
        assert!(!eth1.dhcp && !eth1.accept_dhcp_mtu);
        assert_eq!(eth1.statics.addresses[0].to_string(), "10.0.0.5/24");
        assert_eq!(
            eth1.statics.routes,
            [RouteSpec {
                destination: default_destination(),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                metric: STATIC_ROUTE_METRIC + 3
            }]
        );
        let LinkRole::Managed(veth) = &plan.roles[&5] else {
            panic!()
        };
        assert!(veth.dhcp, "a virtual link the operator named is managed");
        assert_eq!(plan.unmatched_entries, [2], "eth9 matches nothing");
    }

    #[test]
    fn loopback_is_never_managed_even_when_named() {
        let cfg = config("[[network.interfaces]]\nname = \"lo\"\naddresses = [\"10.0.0.5/24\"]\n");
        let plan = plan_links(&cfg, &host_links());
        assert_eq!(plan.roles[&1], LinkRole::Loopback);
        assert_eq!(plan.unmatched_entries, [0]);
    }

    #[test]
    fn hotplugged_link_gets_the_same_role_as_a_boot_time_one() {
        let cfg = MachineConfig::embedded_default().network;
        let mut links = host_links();
        let before = plan_links(&cfg, &links);
        links.push(link(9, "eth2", 9, LinkKind::Physical));
        let after = plan_links(&cfg, &links);
        assert_eq!(after.roles[&9], after.roles[&2]);
        assert!(
            before.roles.iter().all(|(i, r)| after.roles[i] == *r),
            "existing roles are stable"
        );
    }

    #[test]
    fn diff_orders_removals_before_additions() {
        let a: Ipv4Cidr = "10.0.0.5/24".parse().unwrap();
        let b: Ipv4Cidr = "10.0.0.6/24".parse().unwrap();
        let route = |gw: [u8; 4]| RouteSpec {
            destination: default_destination(),
            gateway: Some(Ipv4Addr::from(gw)),
            metric: 1026,
        };
        let old = LinkAddressing {
            addresses: vec![a],
            routes: vec![route([10, 0, 0, 1])],
            mtu: None,
        };
        let new = LinkAddressing {
            addresses: vec![b],
            routes: vec![route([10, 0, 0, 2])],
            mtu: Mtu::new(1400),
        };
        assert_eq!(
            diff(&old, &new),
            [
                LinkAction::RemoveRoute(route([10, 0, 0, 1])),
                LinkAction::RemoveAddress(a),
                LinkAction::SetMtu(Mtu::new(1400).unwrap()),
                LinkAction::AddAddress(b),
                LinkAction::AddRoute(route([10, 0, 0, 2])),
            ]
        );
        assert!(
            diff(&new, &new).is_empty(),
            "a renewal with the same lease changes nothing"
        );
        assert_eq!(
            diff(&new, &LinkAddressing::default()).len(),
            2,
            "teardown removes what was added"
        );
    }

    #[test]
    fn carrier_changes_keep_the_device_and_flag_the_rising_edge() {
        let mut down = link(2, "eth0", 1, LinkKind::Physical);
        down.carrier = false;
        let up = link(2, "eth0", 1, LinkKind::Physical);
        assert!(down.same_device(&up));
        assert!(down.carrier_came_up(&up));
        assert!(
            !up.carrier_came_up(&down),
            "losing carrier keeps the lease (RFC 2131 4.4.5)"
        );
        assert!(!up.carrier_came_up(&up));
        let renamed = link(2, "lan0", 1, LinkKind::Physical);
        assert!(!up.same_device(&renamed));
    }

    #[test]
    fn fallback_mac_is_from_the_lowest_index_physical_link() {
        let mut links = host_links();
        links.reverse();
        assert_eq!(
            first_physical_mac(&links),
            Some(MacAddr::new([0x52, 0x54, 0, 0, 0, 1]))
        );
        assert_eq!(
            first_physical_mac(&links[..2]),
            None,
            "virtual links do not name the node"
        );
    }
}
