//! Facts about the running node that the API reports: name, kernel,
//! uptime, boot id, routes. The parsers are pure; the readers are thin.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use api::types::{DhcpState, HostnameState, LinkState, NetworkState, RouteState};

use crate::net::{Addressing, NetworkStatus};

/// The host name the kernel holds (what the network task set).
pub fn node_name() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// The kernel release, `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Time since the kernel started, suspend included.
pub fn uptime() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

/// This boot's id, `/proc/sys/kernel/random/boot_id`.
pub fn boot_id(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Parses `/proc/net/route`: the IPv4 main table, addresses in
/// little-endian hex. Lines that do not parse are skipped.
pub fn parse_proc_net_route(text: &str) -> Vec<RouteState> {
    let hex_ip = |field: &str| {
        u32::from_str_radix(field, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_le_bytes()))
    };
    let mut routes = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [
            iface,
            destination,
            gateway,
            _flags,
            _refcnt,
            _use,
            _metric,
            mask,
            ..,
        ] = fields.as_slice()
        else {
            continue;
        };
        let (Some(destination), Some(gateway), Some(mask)) =
            (hex_ip(destination), hex_ip(gateway), hex_ip(mask))
        else {
            continue;
        };
        let prefix = u32::from(mask).count_ones();
        routes.push(RouteState {
            destination: format!("{destination}/{prefix}"),
            gateway: (!gateway.is_unspecified()).then_some(IpAddr::V4(gateway)),
            link: Some((*iface).to_owned()),
        });
    }
    routes
}

fn addressing_name(addressing: Addressing) -> &'static str {
    match addressing {
        Addressing::Loopback => "loopback",
        Addressing::UpOnly => "up_only",
        Addressing::Dhcp => "dhcp",
        Addressing::Static => "static",
        Addressing::DhcpAndStatic => "dhcp_and_static",
    }
}

/// Every address in CIDR form, static ones first.
pub fn addresses(status: &NetworkStatus) -> Vec<String> {
    let mut out = Vec::new();
    for link in status.links.values() {
        out.extend(link.static_addresses.iter().map(ToString::to_string));
        out.extend(link.lease.iter().map(|l| l.address.to_string()));
    }
    out
}

/// The network as the API shows it.
pub fn network_state(status: &NetworkStatus, routes: Vec<RouteState>) -> NetworkState {
    let links = status
        .links
        .values()
        .map(|link| {
            let mut addresses: Vec<String> = link
                .static_addresses
                .iter()
                .map(ToString::to_string)
                .collect();
            addresses.extend(link.lease.iter().map(|l| l.address.to_string()));
            LinkState {
                name: link.name.clone(),
                mac: link.mac.map(|m| m.to_string()),
                addressing: addressing_name(link.addressing).to_owned(),
                addresses,
                dhcp: link.lease.as_ref().map(|l| DhcpState {
                    server: IpAddr::V4(l.server),
                    lease_time_s: l.lease_time.as_secs(),
                }),
                error: link.error.clone(),
            }
        })
        .collect();
    NetworkState {
        hostname: status
            .hostname
            .as_ref()
            .map(|(name, source)| HostnameState {
                name: name.to_string(),
                source: source.to_string(),
            }),
        links,
        routes,
        dns: status.resolver.nameservers.clone(),
        search: status
            .resolver
            .search
            .iter()
            .map(ToString::to_string)
            .collect(),
        ntp: status.ntp_servers.iter().copied().map(IpAddr::V4).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ROUTE: &str = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
        eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        garbage line\n";

    #[test]
    fn proc_net_route_gives_destinations_gateways_and_links() {
        let routes = parse_proc_net_route(ROUTE);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].destination, "0.0.0.0/0");
        assert_eq!(routes[0].gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(routes[1].destination, "10.0.0.0/24");
        assert_eq!(routes[1].gateway, None);
        assert_eq!(routes[1].link.as_deref(), Some("eth0"));
    }

    #[test]
    fn the_kernel_facts_are_readable_here() {
        assert!(!node_name().is_empty());
        assert!(!kernel_release().is_empty());
        assert!(uptime() > Duration::ZERO);
        assert_eq!(boot_id(Path::new("/proc")).len(), 36);
    }

    proptest! {
        #[test]
        fn route_parsing_never_panics(text in "(?s).{0,400}") {
            let _ = parse_proc_net_route(&text);
        }
    }
}
