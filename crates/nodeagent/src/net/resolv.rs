//! The resolver config: which name servers and search domains the node
//! uses, and writing `/run/resolv.conf`.
//!
//! Static config wins over DHCP, field by field: `network.dns` replaces the
//! learned name servers and `network.search` the learned search list. The
//! file is replaced atomically (write a temp file, fsync, rename) so a
//! reader never sees half of it.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::Path;

use super::lease::DhcpLease;
use crate::config::{DomainName, NetworkConfig};

/// glibc reads at most this many `nameserver` lines (`MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;

/// The resolver settings in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Name servers, in order of preference, without duplicates.
    pub nameservers: Vec<IpAddr>,
    /// Search domains, without duplicates.
    pub search: Vec<DomainName>,
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

impl ResolverConfig {
    /// Merges static config with the leases held, in link-index order.
    pub fn merge<'a>(
        config: &NetworkConfig,
        leases: impl IntoIterator<Item = &'a DhcpLease>,
    ) -> Self {
        let mut learned = Self::default();
        for lease in leases {
            for ns in &lease.dns {
                push_unique(&mut learned.nameservers, IpAddr::V4(*ns));
            }
            for d in &lease.search {
                push_unique(&mut learned.search, d.clone());
            }
        }
        let mut out = Self::default();
        let nameservers = if config.dns.is_empty() {
            learned.nameservers
        } else {
            config.dns.clone()
        };
        let search = if config.search.is_empty() {
            learned.search
        } else {
            config.search.clone()
        };
        for ns in nameservers {
            push_unique(&mut out.nameservers, ns);
        }
        for d in search {
            push_unique(&mut out.search, d);
        }
        out
    }

    /// Whether there is anything to write.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.search.is_empty()
    }

    /// The resolv.conf text.
    pub fn render(&self) -> String {
        let mut out =
            String::from("# Written by cairnd from the machine config and DHCP leases.\n");
        if !self.search.is_empty() {
            let names: Vec<&str> = self.search.iter().map(DomainName::as_str).collect();
            // Infallible: writing into a String.
            let _ = writeln!(out, "search {}", names.join(" "));
        }
        for ns in self.nameservers.iter().take(MAX_NAMESERVERS) {
            let _ = writeln!(out, "nameserver {ns}");
        }
        out
    }
}

/// Replaces `path` with `contents` atomically: a temp file in the same
/// directory, fsynced, then renamed over the target.
pub fn write_atomic(path: &Path, contents: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: a stale temp file is harmless but untidy.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;
    use crate::config::Ipv4Cidr;

    fn lease(dns: &[[u8; 4]], search: &[&str]) -> DhcpLease {
        DhcpLease {
            address: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 9), 24).unwrap(),
            server: Ipv4Addr::new(10, 0, 0, 1),
            routers: vec![],
            classless_routes: vec![],
            dns: dns.iter().map(|d| Ipv4Addr::from(*d)).collect(),
            ntp: vec![],
            hostname: None,
            search: search.iter().map(|s| s.parse().unwrap()).collect(),
            mtu: None,
            lease_time: Duration::from_secs(60),
        }
    }

    #[test]
    fn leases_are_merged_in_order_without_duplicates() {
        let a = lease(&[[10, 0, 0, 1], [10, 0, 0, 2]], &["a.example"]);
        let b = lease(&[[10, 0, 0, 2], [10, 0, 0, 3]], &["a.example", "b.example"]);
        let r = ResolverConfig::merge(&NetworkConfig::default(), [&a, &b]);
        assert_eq!(r.nameservers.len(), 3);
        assert_eq!(
            r.render(),
            "# Written by cairnd from the machine config and DHCP leases.\n\
             search a.example b.example\n\
             nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\n"
        );
    }

    #[test]
    fn static_dns_and_search_replace_learned_ones_separately() {
        let a = lease(&[[10, 0, 0, 1]], &["dhcp.example"]);
        let cfg = NetworkConfig {
            dns: vec![
                "192.0.2.53".parse().unwrap(),
                "2001:db8::53".parse().unwrap(),
            ],
            ..NetworkConfig::default()
        };
        let r = ResolverConfig::merge(&cfg, [&a]);
        assert_eq!(r.nameservers, cfg.dns);
        assert_eq!(
            r.search[0].as_str(),
            "dhcp.example",
            "search still comes from DHCP"
        );
        assert!(r.render().contains("nameserver 2001:db8::53\n"));
    }

    #[test]
    fn only_three_nameservers_are_written() {
        let a = lease(
            &[[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3], [10, 0, 0, 4]],
            &[],
        );
        let text = ResolverConfig::merge(&NetworkConfig::default(), [&a]).render();
        assert_eq!(text.matches("nameserver").count(), MAX_NAMESERVERS);
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/resolv.conf");
        write_atomic(&path, "one\n").unwrap();
        write_atomic(&path, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["resolv.conf"]);
    }
}
