//! dnsmasq's lease file, parsed. dnsmasq rewrites the whole file on every
//! change, one lease per line:
//!
//! ```text
//! <expiry unix time> <mac> <ipv4> <hostname or *> <client-id or *>
//! ```
//!
//! DHCPv6 leases (after a `duid <duid>` line) have an IAID in the MAC column
//! and an IPv6 address; the harness runs IPv4 only, so those are skipped
//! rather than misparsed.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An Ethernet address, parsed once from `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

/// A MAC address string that is not six colon-separated hex octets.
#[derive(Debug, thiserror::Error)]
#[error("invalid MAC address `{0}`")]
pub struct MacParseError(String);

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| MacParseError(s.to_owned()))?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacParseError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacParseError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacParseError(s.to_owned()));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One DHCPv4 lease granted by dnsmasq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unix time the lease expires (0 means infinite).
    pub expires: u64,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// The hostname the client sent, if any.
    pub hostname: Option<String>,
    /// The client identifier, if any.
    pub client_id: Option<String>,
}

/// A lease line dnsmasq would never write.
#[derive(Debug, thiserror::Error)]
pub enum LeaseParseError {
    #[error("lease line {line}: expected 5 fields, found {found}")]
    FieldCount { line: usize, found: usize },
    #[error("lease line {line}: invalid expiry `{value}`")]
    Expiry {
        line: usize,
        value: String,
        #[source]
        source: std::num::ParseIntError,
    },
    #[error("lease line {line}: invalid MAC address")]
    Mac {
        line: usize,
        #[source]
        source: MacParseError,
    },
    #[error("lease line {line}: invalid IPv4 address `{value}`")]
    Ip {
        line: usize,
        value: String,
        #[source]
        source: std::net::AddrParseError,
    },
}

/// Parses the contents of a dnsmasq lease file.
///
/// # Errors
/// [`LeaseParseError`] for the first malformed IPv4 lease line.
pub fn parse_leases(text: &str) -> Result<Vec<Lease>, LeaseParseError> {
    let mut leases = Vec::new();
    let mut in_v6_section = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let fields: Vec<&str> = raw.split_ascii_whitespace().collect();
        match fields.first() {
            None => continue,
            Some(&"duid") => {
                in_v6_section = true;
                continue;
            }
            Some(_) if in_v6_section => continue,
            Some(_) => {}
        }
        let [expires, mac, ip, hostname, client_id] = fields[..] else {
            return Err(LeaseParseError::FieldCount {
                line,
                found: fields.len(),
            });
        };
        let expires = expires.parse().map_err(|source| LeaseParseError::Expiry {
            line,
            value: expires.to_owned(),
            source,
        })?;
        let mac = mac
            .parse()
            .map_err(|source| LeaseParseError::Mac { line, source })?;
        let ip = ip.parse().map_err(|source| LeaseParseError::Ip {
            line,
            value: ip.to_owned(),
            source,
        })?;
        let optional = |s: &str| (s != "*").then(|| s.to_owned());
        leases.push(Lease {
            expires,
            mac,
            ip,
            hostname: optional(hostname),
            client_id: optional(client_id),
        });
    }
    Ok(leases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_lease_file_with_and_without_hostnames() {
        let text = "1763770000 52:54:00:12:00:01 10.77.0.123 cairn-000001 01:52:54:00:12:00:01\n\
                    0 52:54:00:12:00:02 10.77.0.124 * *\n";
        let leases = parse_leases(text).unwrap();
        assert_eq!(leases.len(), 2);
        assert_eq!(leases[0].mac, "52:54:00:12:00:01".parse().unwrap());
        assert_eq!(leases[0].ip, Ipv4Addr::new(10, 77, 0, 123));
        assert_eq!(leases[0].hostname.as_deref(), Some("cairn-000001"));
        assert_eq!(leases[1].expires, 0);
        assert_eq!(leases[1].hostname, None);
        assert_eq!(leases[1].client_id, None);
    }

    #[test]
    fn skips_dhcpv6_section_after_duid_line() {
        let text = "100 52:54:00:00:00:01 10.77.0.100 * *\n\
                    duid 00:01:00:01:2c:aa\n\
                    200 1234 fd00::5 host *\n";
        let leases = parse_leases(text).unwrap();
        assert_eq!(leases.len(), 1);
    }

    #[test]
    fn rejects_truncated_and_garbled_lines() {
        assert!(matches!(
            parse_leases("100 52:54:00:00:00:01 10.77.0.100\n"),
            Err(LeaseParseError::FieldCount { line: 1, found: 3 })
        ));
        assert!(matches!(
            parse_leases("x 52:54:00:00:00:01 10.77.0.100 * *"),
            Err(LeaseParseError::Expiry { .. })
        ));
        assert!(matches!(
            parse_leases("1 52:54:00:00:00 10.77.0.100 * *"),
            Err(LeaseParseError::Mac { .. })
        ));
        assert!(matches!(
            parse_leases("1 52:54:00:00:00:01 10.77.0.300 * *"),
            Err(LeaseParseError::Ip { .. })
        ));
    }

    #[test]
    fn mac_rejects_extra_octets_and_bad_widths() {
        assert!("52:54:00:00:00:01:02".parse::<MacAddr>().is_err());
        assert!("52:54:00:00:00:1".parse::<MacAddr>().is_err());
        assert!("52:54:00:00:00:+1".parse::<MacAddr>().is_err());
    }

    fn arb_lease() -> impl Strategy<Value = Lease> {
        (
            any::<u64>(),
            any::<[u8; 6]>(),
            any::<u32>(),
            proptest::option::of("[a-z][a-z0-9-]{0,20}"),
            proptest::option::of("[0-9a-f]{2}(:[0-9a-f]{2}){0,8}"),
        )
            .prop_map(|(expires, mac, ip, hostname, client_id)| Lease {
                expires,
                mac: MacAddr(mac),
                ip: Ipv4Addr::from(ip),
                hostname,
                client_id,
            })
    }

    fn render(lease: &Lease) -> String {
        format!(
            "{} {} {} {} {}\n",
            lease.expires,
            lease.mac,
            lease.ip,
            lease.hostname.as_deref().unwrap_or("*"),
            lease.client_id.as_deref().unwrap_or("*")
        )
    }

    proptest! {
        #[test]
        fn every_lease_dnsmasq_can_write_parses_back_identically(
            leases in proptest::collection::vec(arb_lease(), 0..8)
        ) {
            let text: String = leases.iter().map(render).collect();
            prop_assert_eq!(parse_leases(&text).unwrap(), leases);
        }

        #[test]
        fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,200}") {
            let _ = parse_leases(&text);
        }

        #[test]
        fn mac_display_and_parse_round_trip(bytes in any::<[u8; 6]>()) {
            let mac = MacAddr(bytes);
            prop_assert_eq!(mac.to_string().parse::<MacAddr>().unwrap(), mac);
        }
    }
}
