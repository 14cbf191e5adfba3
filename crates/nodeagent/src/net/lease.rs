//! What a DHCP lease means for a link: the sans-IO half of the DHCP client.
//!
//! [`super::dhcp::client`] runs the protocol (DISCOVER/OFFER/REQUEST/ACK,
//! renewing at T1, rebinding at T2) and hands over each DHCPACK. This
//! module decides what the agent does with it: [`DhcpLease`] is the lease
//! reduced to what the node uses, and [`LeaseTracker`] turns "bound",
//! "lost" and the passage of time into [`LinkAction`]s.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::dhcp::packet::DhcpMessage;
use super::plan::{
    DHCP_ROUTE_METRIC, LinkAction, LinkAddressing, RouteSpec, default_destination, diff,
};
use crate::config::{DomainName, Hostname, Ipv4Cidr, Mtu};

/// The parts of a DHCPv4 lease the node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpLease {
    /// Our address and prefix (yiaddr + subnet mask).
    pub address: Ipv4Cidr,
    /// The server that granted it (option 54).
    pub server: Ipv4Addr,
    /// Routers (option 3).
    pub routers: Vec<Ipv4Addr>,
    /// Classless static routes (option 121): destination and next hop,
    /// `0.0.0.0` meaning on-link.
    pub classless_routes: Vec<(Ipv4Cidr, Ipv4Addr)>,
    /// DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers (option 42), kept for time sync.
    pub ntp: Vec<Ipv4Addr>,
    /// Host name (option 12), if it is a valid one.
    pub hostname: Option<Hostname>,
    /// Search domains: option 119, else the domain name (option 15).
    pub search: Vec<DomainName>,
    /// Interface MTU (option 26).
    pub mtu: Option<Mtu>,
    /// Lease time (option 51).
    pub lease_time: Duration,
}

/// Why a lease from the protocol client was not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The subnet mask has holes.
    #[error("subnet mask {0} is not contiguous")]
    BadNetmask(Ipv4Addr),
    /// The address cannot be assigned to an interface.
    #[error("offered address {0} cannot be assigned")]
    BadAddress(Ipv4Addr),
    /// A required option is absent.
    #[error("the DHCPACK has no {0}")]
    Missing(&'static str),
}

/// The pre-CIDR mask of `ip`'s class.
fn classful_mask(ip: Ipv4Addr) -> Ipv4Addr {
    match ip.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

impl DhcpLease {
    /// Reduces a DHCPACK to what the node uses.
    pub fn from_ack(ack: &DhcpMessage) -> Result<Self, LeaseError> {
        let ip = ack.yiaddr;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
            return Err(LeaseError::BadAddress(ip));
        }
        let o = &ack.options;
        let server = o
            .server_id
            .ok_or(LeaseError::Missing("server identifier (54)"))?;
        let lease_secs = o.lease_time.ok_or(LeaseError::Missing("lease time (51)"))?;
        // RFC 2131 says the server must send a mask; without one, fall
        // back to the classful mask as older clients do.
        let mask = o.subnet_mask.unwrap_or_else(|| classful_mask(ip));
        let address = Ipv4Cidr::from_netmask(ip, mask).ok_or(LeaseError::BadNetmask(mask))?;
        let classless_routes = o
            .classless_routes
            .iter()
            .filter_map(|r| Some((Ipv4Cidr::new(r.destination, r.prefix)?.network(), r.router)))
            .collect();
        // Option 119 is the list resolvers want; option 15 is the older
        // single domain. Names that are not valid DNS names are dropped
        // rather than written into resolv.conf.
        let search = if o.domain_search.is_empty() {
            o.domain_name
                .iter()
                .filter_map(|d| d.parse().ok())
                .collect()
        } else {
            o.domain_search
                .iter()
                .filter_map(|d| d.parse().ok())
                .collect()
        };
        Ok(Self {
            address,
            server,
            routers: o.routers.clone(),
            classless_routes,
            dns: o.dns.clone(),
            ntp: o.ntp.clone(),
            hostname: o.hostname.as_deref().and_then(dhcp_hostname),
            search,
            mtu: o.mtu.and_then(Mtu::new),
            lease_time: Duration::from_secs(lease_secs.into()),
        })
    }

    /// The addresses and routes this lease puts on link `index`.
    ///
    /// RFC 3442: when option 121 is present the client ignores option 3.
    pub fn addressing(&self, index: u32, accept_mtu: bool) -> LinkAddressing {
        let metric = DHCP_ROUTE_METRIC.saturating_add(index);
        let routes = if self.classless_routes.is_empty() {
            self.routers
                .first()
                .map(|gw| RouteSpec {
                    destination: default_destination(),
                    gateway: Some(*gw),
                    metric,
                })
                .into_iter()
                .collect()
        } else {
            self.classless_routes
                .iter()
                .map(|(destination, router)| RouteSpec {
                    destination: *destination,
                    gateway: (!router.is_unspecified()).then_some(*router),
                    metric,
                })
                .collect()
        };
        LinkAddressing {
            addresses: vec![self.address],
            routes,
            mtu: self.mtu.filter(|_| accept_mtu),
        }
    }
}

/// Takes a DHCP host name if it is usable: as is, or its first label when
/// the server sent a longer FQDN than the kernel allows.
fn dhcp_hostname(name: &str) -> Option<Hostname> {
    name.parse()
        .ok()
        .or_else(|| name.split('.').next().and_then(|label| label.parse().ok()))
}

/// Tracks the lease held on one link and says what to change on it.
#[derive(Debug)]
pub struct LeaseTracker {
    index: u32,
    accept_mtu: bool,
    current: Option<(DhcpLease, Instant)>,
}

impl LeaseTracker {
    /// A tracker for link `index` holding no lease.
    pub fn new(index: u32, accept_mtu: bool) -> Self {
        Self {
            index,
            accept_mtu,
            current: None,
        }
    }

    /// The lease in force, if any.
    pub fn lease(&self) -> Option<&DhcpLease> {
        self.current.as_ref().map(|(l, _)| l)
    }

    /// When the lease in force runs out.
    pub fn expires_at(&self) -> Option<Instant> {
        self.current.as_ref().map(|(_, at)| *at)
    }

    fn applied(&self) -> LinkAddressing {
        self.lease()
            .map(|l| l.addressing(self.index, self.accept_mtu))
            .unwrap_or_default()
    }

    /// A lease was granted or renewed at `now`.
    pub fn bound(&mut self, lease: DhcpLease, now: Instant) -> Vec<LinkAction> {
        let old = self.applied();
        let expires = now.checked_add(lease.lease_time).unwrap_or(now);
        let new = lease.addressing(self.index, self.accept_mtu);
        self.current = Some((lease, expires));
        diff(&old, &new)
    }

    /// The lease is gone (expired while rebinding, or released).
    pub fn lost(&mut self) -> Vec<LinkAction> {
        let old = self.applied();
        self.current = None;
        diff(&old, &LinkAddressing::default())
    }

    /// Time passed: withdraws the lease once it has expired.
    pub fn poll(&mut self, now: Instant) -> Vec<LinkAction> {
        match self.expires_at() {
            Some(at) if now >= at => self.lost(),
            Some(_) | None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: [u8; 4]) -> DhcpLease {
        DhcpLease {
            address: Ipv4Cidr::new(Ipv4Addr::from(ip), 24).unwrap(),
            server: Ipv4Addr::new(10, 0, 0, 1),
            routers: vec![Ipv4Addr::new(10, 0, 0, 1)],
            classless_routes: vec![],
            dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
            ntp: vec![Ipv4Addr::new(10, 0, 0, 123)],
            hostname: None,
            search: vec![],
            mtu: Mtu::new(1400),
            lease_time: Duration::from_secs(120),
        }
    }

    #[test]
    fn binding_adds_address_then_default_route() {
        let mut t = LeaseTracker::new(2, true);
        let actions = t.bound(lease([10, 0, 0, 50]), Instant::now());
        let addr = Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 50), 24).unwrap();
        assert_eq!(
            actions,
            [
                LinkAction::SetMtu(Mtu::new(1400).unwrap()),
                LinkAction::AddAddress(addr),
                LinkAction::AddRoute(RouteSpec {
                    destination: default_destination(),
                    gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                    metric: DHCP_ROUTE_METRIC + 2,
                }),
            ]
        );
    }

    #[test]
    fn renewal_with_the_same_lease_changes_nothing_but_extends_expiry() {
        let mut t = LeaseTracker::new(2, true);
        let t0 = Instant::now();
        t.bound(lease([10, 0, 0, 50]), t0);
        let later = t0 + Duration::from_secs(60);
        assert!(t.bound(lease([10, 0, 0, 50]), later).is_empty());
        assert_eq!(t.expires_at(), Some(later + Duration::from_secs(120)));
        assert!(
            t.poll(t0 + Duration::from_secs(150)).is_empty(),
            "the renewal moved the deadline"
        );
    }

    #[test]
    fn a_new_address_replaces_the_old_one() {
        let mut t = LeaseTracker::new(2, false);
        t.bound(lease([10, 0, 0, 50]), Instant::now());
        let actions = t.bound(lease([10, 0, 0, 51]), Instant::now());
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(
            matches!(actions[0], LinkAction::RemoveAddress(a) if a.addr() == Ipv4Addr::new(10, 0, 0, 50))
        );
        assert!(
            matches!(actions[1], LinkAction::AddAddress(a) if a.addr() == Ipv4Addr::new(10, 0, 0, 51))
        );
    }

    #[test]
    fn expired_lease_drops_the_address_and_route() {
        let mut t = LeaseTracker::new(2, true);
        let t0 = Instant::now();
        t.bound(lease([10, 0, 0, 50]), t0);
        assert!(t.poll(t0 + Duration::from_secs(119)).is_empty());
        let actions = t.poll(t0 + Duration::from_secs(120));
        assert!(
            matches!(actions[0], LinkAction::RemoveRoute(_)),
            "{actions:?}"
        );
        assert!(
            matches!(actions[1], LinkAction::RemoveAddress(_)),
            "{actions:?}"
        );
        assert!(t.lease().is_none() && t.expires_at().is_none());
        assert!(
            t.poll(t0 + Duration::from_secs(500)).is_empty(),
            "withdrawn once"
        );
    }

    #[test]
    fn lost_lease_is_withdrawn_and_losing_nothing_is_a_no_op() {
        let mut t = LeaseTracker::new(2, true);
        assert!(t.lost().is_empty());
        t.bound(lease([10, 0, 0, 50]), Instant::now());
        assert_eq!(t.lost().len(), 2);
    }

    #[test]
    fn classless_routes_override_the_router_option() {
        let mut l = lease([10, 0, 0, 50]);
        l.classless_routes = vec![
            ("10.9.0.0/16".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 254)),
            ("10.0.0.0/24".parse().unwrap(), Ipv4Addr::UNSPECIFIED),
        ];
        let routes = l.addressing(3, true).routes;
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].gateway, Some(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!(routes[1].gateway, None, "router 0.0.0.0 means on-link");
        assert!(
            routes
                .iter()
                .all(|r| r.destination != default_destination())
        );
    }

    #[test]
    fn dhcp_mtu_is_ignored_when_config_sets_one() {
        assert_eq!(lease([10, 0, 0, 50]).addressing(2, false).mtu, None);
    }

    #[test]
    fn dhcpack_is_reduced_to_what_the_node_uses() {
        use super::super::dhcp::packet::{ClasslessRoute, DhcpOptions, MessageType, Op};
        let mut ack = DhcpMessage {
            op: Op::Reply,
            xid: 1,
            secs: 0,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(192, 168, 7, 20),
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [2, 0, 0, 0, 0, 1],
            options: DhcpOptions {
                message_type: Some(MessageType::Ack),
                subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                server_id: Some(Ipv4Addr::new(192, 168, 7, 1)),
                routers: vec![Ipv4Addr::new(192, 168, 7, 1)],
                dns: vec![Ipv4Addr::new(192, 168, 7, 2)],
                ntp: vec![Ipv4Addr::new(192, 168, 7, 3)],
                hostname: Some(
                    "Node-7.very.long.example.com.that.exceeds.the.kernel.limit.of.sixty.four"
                        .into(),
                ),
                domain_name: Some("lab.example".into()),
                mtu: Some(40),
                lease_time: Some(3600),
                classless_routes: vec![ClasslessRoute {
                    destination: Ipv4Addr::new(10, 9, 0, 0),
                    prefix: 16,
                    router: Ipv4Addr::new(192, 168, 7, 254),
                }],
                ..DhcpOptions::default()
            },
        };
        let l = DhcpLease::from_ack(&ack).unwrap();
        assert_eq!(l.address.to_string(), "192.168.7.20/24");
        assert_eq!(l.server, Ipv4Addr::new(192, 168, 7, 1));
        assert_eq!(l.ntp, [Ipv4Addr::new(192, 168, 7, 3)]);
        assert_eq!(
            l.hostname.unwrap().as_str(),
            "node-7",
            "too-long FQDN falls back to its first label"
        );
        assert_eq!(l.search[0].as_str(), "lab.example");
        assert_eq!(l.mtu, None, "an MTU below 68 is ignored");
        assert_eq!(l.lease_time, Duration::from_secs(3600));
        assert_eq!(l.classless_routes[0].0.to_string(), "10.9.0.0/16");

        ack.options.domain_search = vec!["a.example".into(), "not a name".into()];
        let l = DhcpLease::from_ack(&ack).unwrap();
        assert_eq!(l.search.len(), 1, "119 wins over 15; bad names dropped");
        assert_eq!(l.search[0].as_str(), "a.example");

        ack.options.subnet_mask = Some(Ipv4Addr::new(255, 0, 255, 0));
        assert_eq!(
            DhcpLease::from_ack(&ack),
            Err(LeaseError::BadNetmask(Ipv4Addr::new(255, 0, 255, 0)))
        );
        ack.options.subnet_mask = None;
        assert_eq!(
            DhcpLease::from_ack(&ack).unwrap().address.to_string(),
            "192.168.7.20/24"
        );
        ack.options.lease_time = None;
        assert_eq!(
            DhcpLease::from_ack(&ack),
            Err(LeaseError::Missing("lease time (51)"))
        );
        ack.options.lease_time = Some(60);
        ack.yiaddr = Ipv4Addr::UNSPECIFIED;
        assert!(DhcpLease::from_ack(&ack).is_err());
    }
}
