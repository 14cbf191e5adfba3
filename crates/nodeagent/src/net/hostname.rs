//! Which host name the node carries.
//!
//! In order: `node.hostname` from the config, the host name from the DHCP
//! lease on the lowest-index link that has one, then `cairn-<mac suffix>`
//! from the first physical NIC. The decision is pure; setting it is one
//! `sethostname(2)` in the manager.

use std::fmt;

use crate::config::{Hostname, MacAddr};

/// Where the host name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostnameSource {
    /// `node.hostname`.
    Config,
    /// DHCP option 12.
    Dhcp,
    /// Derived from the first physical MAC.
    Mac,
}

impl fmt::Display for HostnameSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Config => "config",
            Self::Dhcp => "dhcp",
            Self::Mac => "mac",
        })
    }
}

/// Picks the host name. `dhcp` yields the names from the leases held, in
/// link-index order.
pub fn choose_hostname<'a>(
    configured: Option<&Hostname>,
    dhcp: impl IntoIterator<Item = Option<&'a Hostname>>,
    first_mac: Option<MacAddr>,
) -> Option<(Hostname, HostnameSource)> {
    if let Some(name) = configured {
        return Some((name.clone(), HostnameSource::Config));
    }
    if let Some(name) = dhcp.into_iter().flatten().next() {
        return Some((name.clone(), HostnameSource::Dhcp));
    }
    first_mac.map(|mac| (Hostname::from_mac(mac), HostnameSource::Mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_beats_dhcp_beats_mac() {
        let cfg: Hostname = "configured".parse().unwrap();
        let dhcp: Hostname = "from-dhcp".parse().unwrap();
        let mac = MacAddr::new([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(
            choose_hostname(Some(&cfg), [Some(&dhcp)], Some(mac)),
            Some((cfg, HostnameSource::Config))
        );
        assert_eq!(
            choose_hostname(None, [None, Some(&dhcp)], Some(mac)),
            Some((dhcp, HostnameSource::Dhcp))
        );
        assert_eq!(
            choose_hostname(None, [None], Some(mac)),
            Some(("cairn-aabbcc".parse().unwrap(), HostnameSource::Mac))
        );
        assert_eq!(
            choose_hostname(None, [], None),
            None,
            "nothing to go on: leave the kernel's name"
        );
    }
}
