//! Newtypes for machine-config values.
//!
//! Every value an operator writes is parsed exactly once, here, into a type
//! that cannot hold a bad value. The rest of the agent never re-checks a
//! hostname or a prefix length. Each type deserializes through `TryFrom`, so
//! a bad value surfaces as a serde error that `serde_path_to_error` pins to
//! its key path (`network.interfaces[0].addresses[1]`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::Deserialize;

/// Why a single config value was refused. The message is shown to the
/// operator after the key path, so it quotes the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl ValueError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Linux refuses hostnames longer than `__NEW_UTS_LEN`.
const HOSTNAME_MAX: usize = 64;
/// RFC 1035 limit for a whole domain name in text form.
const DOMAIN_MAX: usize = 253;
/// RFC 1123 limit for one label.
const LABEL_MAX: usize = 63;

/// Checks one DNS label against RFC 1123: letters, digits and inner hyphens.
fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("has an empty label");
    }
    if label.len() > LABEL_MAX {
        return Err("has a label longer than 63 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err("may only contain letters, digits, '-' and '.'");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("has a label that starts or ends with '-'");
    }
    Ok(())
}

fn check_dotted(kind: &str, value: &str, max: usize) -> Result<String, ValueError> {
    if value.len() > max {
        return Err(ValueError::new(format!(
            "invalid {kind} {value:?}: longer than {max} characters"
        )));
    }
    for label in value.split('.') {
        check_label(label)
            .map_err(|why| ValueError::new(format!("invalid {kind} {value:?}: {why}")))?;
    }
    // Names compare case-insensitively; storing them lower-case once keeps
    // every later comparison and the resolv.conf output stable.
    Ok(value.to_ascii_lowercase())
}

/// A host name: one or more RFC 1123 labels joined by dots, at most 64
/// characters (the kernel's limit), stored lower-case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Hostname(String);

impl Hostname {
    /// The name as the kernel will see it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name derived from a MAC address when nothing else names the node:
    /// `cairn-` and the last three bytes in hex (`cairn-12ab34`).
    pub fn from_mac(mac: MacAddr) -> Self {
        let [.., a, b, c] = mac.0;
        Self(format!("cairn-{a:02x}{b:02x}{c:02x}"))
    }
}

impl TryFrom<String> for Hostname {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        check_dotted("hostname", &value, HOSTNAME_MAX).map(Self)
    }
}

impl FromStr for Hostname {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shortest and longest setup token accepted from a machine config.
const SETUP_TOKEN_MIN: usize = 16;
const SETUP_TOKEN_MAX: usize = 128;

/// The secret that authorises bootstrapping or joining a node in
/// maintenance mode. 16 to 128 characters from `A-Z a-z 0-9 . _ ~ -`, so
/// it survives shells, URLs and consoles unquoted. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SetupToken(String);

impl SetupToken {
    /// The token text, for comparison and for the console.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token, in time that does not depend on
    /// where the first difference is.
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        let mut diff = u8::from(a.len() != b.len());
        for (x, y) in a.iter().zip(b.iter().cycle()) {
            diff |= x ^ y;
        }
        diff == 0 && !b.is_empty()
    }
}

impl fmt::Debug for SetupToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SetupToken(<redacted>)")
    }
}

impl TryFrom<String> for SetupToken {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        // The value is a secret: the error describes it without quoting it.
        if !(SETUP_TOKEN_MIN..=SETUP_TOKEN_MAX).contains(&value.len()) {
            return Err(ValueError::new(format!(
                "invalid setup token: must be {SETUP_TOKEN_MIN} to {SETUP_TOKEN_MAX} characters, got {}",
                value.len()
            )));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
        {
            return Err(ValueError::new(
                "invalid setup token: may only contain letters, digits, '.', '_', '~' and '-'",
            ));
        }
        Ok(Self(value))
    }
}

/// A DNS domain name for the resolver search list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct DomainName(String);

impl DomainName {
    /// The name as written to resolv.conf.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DomainName {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        // A trailing dot marks an absolute name; resolv.conf search entries
        // are absolute already, so it is dropped rather than refused.
        let trimmed = value.strip_suffix('.').unwrap_or(&value);
        check_dotted("domain name", trimmed, DOMAIN_MAX).map(Self)
    }
}

impl FromStr for DomainName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A kernel network interface name (`IFNAMSIZ` - 1 bytes at most, no `/`,
/// no whitespace, not `.` or `..`), exactly as `ip link` prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct InterfaceName(String);

impl InterfaceName {
    /// The name as the kernel knows it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InterfaceName {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        // These are the kernel's own rules (net/core/dev.c dev_valid_name).
        let bad = value.is_empty()
            || value.len() > 15
            || value == "."
            || value == ".."
            || value
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if bad {
            return Err(ValueError::new(format!(
                "invalid interface name {value:?}: want 1-15 characters without '/', ':' or spaces"
            )));
        }
        Ok(Self(value))
    }
}

impl FromStr for InterfaceName {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ethernet MAC address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// Wraps six raw bytes, as netlink reports them.
    pub const fn new(bytes: [u8; 6]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Takes a netlink hardware address if it is Ethernet-sized.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 6]>::try_from(bytes).ok().map(Self)
    }
}

impl TryFrom<String> for MacAddr {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        value.parse()
    }
}

impl FromStr for MacAddr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || {
            ValueError::new(format!(
                "invalid MAC address {s:?}: want six hex bytes separated by ':'"
            ))
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            // from_str_radix would also take a sign ("+5").
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
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

/// An IPv4 address with a prefix length, `10.0.0.5/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// `0.0.0.0/0`, the destination of a default route.
    pub const ANY: Self = Self {
        addr: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
    };

    /// Builds a CIDR from parts; `None` if the prefix is longer than 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { addr, prefix })
    }

    /// Builds a CIDR from an address and a dotted netmask, as DHCP hands
    /// them out; `None` if the mask is not contiguous.
    pub fn from_netmask(addr: Ipv4Addr, mask: Ipv4Addr) -> Option<Self> {
        let bits = u32::from(mask);
        let prefix = bits.leading_ones();
        if bits.checked_shl(prefix).unwrap_or(0) != 0 {
            return None;
        }
        Self::new(addr, u8::try_from(prefix).ok()?)
    }

    /// The address part.
    pub const fn addr(self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, 0 to 32.
    pub const fn prefix(self) -> u8 {
        self.prefix
    }

    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The network this address sits in (host bits cleared).
    pub fn network(self) -> Self {
        Self {
            addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    /// Whether `ip` is inside this prefix.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether the host bits are all zero, as a route destination needs.
    pub fn is_network(self) -> bool {
        self.network() == self
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        value.parse()
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || {
            ValueError::new(format!(
                "invalid CIDR {s:?}: want an IPv4 address and a prefix length, like \"10.0.0.5/24\""
            ))
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        // u8::from_str accepts a leading '+', which no operator means.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        Self::new(addr, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A link MTU in bytes: 68 (the IPv4 minimum, RFC 791) to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "i64")]
pub struct Mtu(u16);

impl Mtu {
    /// The smallest MTU IPv4 works with.
    pub const MIN: u16 = 68;

    /// The value in bytes.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Takes an MTU from a DHCP lease; `None` if below the IPv4 minimum.
    pub fn new(value: u16) -> Option<Self> {
        (value >= Self::MIN).then_some(Self(value))
    }
}

impl TryFrom<i64> for Mtu {
    type Error = ValueError;
    fn try_from(value: i64) -> Result<Self, ValueError> {
        u16::try_from(value)
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| ValueError::new(format!("invalid MTU {value}: want 68 to 65535")))
    }
}

impl fmt::Display for Mtu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How many voters the cluster keeps: 3 (the default) or 5. Further
/// members are stand-by learners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "i64")]
pub struct VoterCount(u8);

impl VoterCount {
    /// Three voters: one may fail.
    pub const THREE: Self = Self(3);

    /// The count.
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

impl Default for VoterCount {
    fn default() -> Self {
        Self::THREE
    }
}

impl TryFrom<i64> for VoterCount {
    type Error = ValueError;
    fn try_from(value: i64) -> Result<Self, ValueError> {
        match value {
            3 => Ok(Self(3)),
            5 => Ok(Self(5)),
            _ => Err(ValueError::new(format!(
                "invalid voter count {value}: want 3 or 5 (an odd count that tolerates one or two failures)"
            ))),
        }
    }
}

/// A period written with a unit: `90s`, `5m`, `2h`; 1 second to 1 day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Period(std::time::Duration);

impl Period {
    /// Seconds and longest accepted.
    const MAX_S: u64 = 24 * 60 * 60;

    /// A period of `seconds` (for defaults).
    pub const fn from_secs(seconds: u64) -> Self {
        Self(std::time::Duration::from_secs(seconds))
    }

    /// The duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }
}

impl TryFrom<String> for Period {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        let bad = |why: &str| ValueError::new(format!("invalid period {value:?}: {why}"));
        let split = value
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| bad("needs a unit: s, m or h"))?;
        let (number, unit) = value.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| bad("must start with a whole number"))?;
        let seconds = match unit {
            "s" => Some(number),
            "m" => number.checked_mul(60),
            "h" => number.checked_mul(3600),
            _ => return Err(bad("the unit must be s, m or h")),
        }
        .filter(|s| (1..=Self::MAX_S).contains(s))
        .ok_or_else(|| bad("must be between 1s and 24h"))?;
        Ok(Self::from_secs(seconds))
    }
}

/// A failure domain label (`rack-a`, `site-2`): one RFC 1123 label, stored
/// lower-case. Members in distinct domains are preferred as voters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct FailureDomain(String);

impl FailureDomain {
    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FailureDomain {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        check_label(&value)
            .map_err(|why| ValueError::new(format!("invalid failure domain {value:?}: {why}")))?;
        Ok(Self(value.to_ascii_lowercase()))
    }
}

/// A cluster member's API endpoint, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ClusterEndpoint(crate::member::join::MemberEndpoint);

impl ClusterEndpoint {
    /// The endpoint.
    pub fn get(&self) -> &crate::member::join::MemberEndpoint {
        &self.0
    }
}

impl TryFrom<String> for ClusterEndpoint {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        value
            .parse()
            .map(Self)
            .map_err(|e: crate::member::join::EndpointError| ValueError::new(e.to_string()))
    }
}

/// A join token from the machine config. `Debug` hides the secret, and a
/// refusal never quotes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct JoinTokenSecret(cluster::join::token::JoinToken);

impl JoinTokenSecret {
    /// The token.
    pub fn get(&self) -> &cluster::join::token::JoinToken {
        &self.0
    }
}

impl TryFrom<String> for JoinTokenSecret {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        value
            .parse()
            .map(Self)
            .map_err(|e: cluster::join::token::ParseJoinTokenError| ValueError::new(e.to_string()))
    }
}

/// The SHA-256 fingerprint of the cluster CA a node pins, `sha256:<hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CaHash(cluster::pki::Fingerprint);

impl CaHash {
    /// The fingerprint.
    pub fn get(self) -> cluster::pki::Fingerprint {
        self.0
    }
}

impl TryFrom<String> for CaHash {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        value
            .parse()
            .map(Self)
            .map_err(|e: cluster::pki::ParseFingerprintError| {
                ValueError::new(format!(
                    "invalid CA hash {value:?}: {e} (expected sha256:<64 hex digits>)"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_accepts_rfc1123_names_and_lowercases_them() {
        let h: Hostname = "Edge-01.Rack3".parse().unwrap();
        assert_eq!(h.as_str(), "edge-01.rack3");
        assert!(
            "1node".parse::<Hostname>().is_ok(),
            "RFC 1123 allows a leading digit"
        );
    }

    #[test]
    fn hostname_rejects_bad_labels_with_a_reason() {
        let too_long = "a".repeat(65);
        let long_label = format!("{}.x", "a".repeat(64));
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a_b",
            "a b",
            "é",
            &too_long,
            &long_label,
        ] {
            let e = bad.parse::<Hostname>().unwrap_err();
            assert!(e.to_string().starts_with("invalid hostname"), "{e}");
        }
    }

    #[test]
    fn hostname_from_mac_uses_the_last_three_bytes() {
        let mac: MacAddr = "52:54:00:AB:cd:0e".parse().unwrap();
        assert_eq!(Hostname::from_mac(mac).as_str(), "cairn-abcd0e");
    }

    #[test]
    fn domain_name_drops_a_trailing_dot() {
        let d: DomainName = "Example.COM.".parse().unwrap();
        assert_eq!(d.as_str(), "example.com");
        assert!("".parse::<DomainName>().is_err());
        assert!(".".parse::<DomainName>().is_err());
    }

    #[test]
    fn mac_parses_colon_hex_only() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:12:34:56");
        for bad in [
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "52-54-00-12-34-56",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
            "+5:54:00:12:34:56",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn interface_name_follows_kernel_rules() {
        assert!("eth0".parse::<InterfaceName>().is_ok());
        assert!("enp0s31f6".parse::<InterfaceName>().is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a:1", "sixteen-chars-xx"] {
            assert!(bad.parse::<InterfaceName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn cidr_parses_and_reports_the_bad_text() {
        let c: Ipv4Cidr = "10.0.0.5/24".parse().unwrap();
        assert_eq!((c.addr(), c.prefix()), (Ipv4Addr::new(10, 0, 0, 5), 24));
        assert_eq!(c.network().to_string(), "10.0.0.0/24");
        assert!(c.contains(Ipv4Addr::new(10, 0, 0, 254)));
        assert!(!c.contains(Ipv4Addr::new(10, 0, 1, 1)));
        let e = "10.0.0.300/24".parse::<Ipv4Cidr>().unwrap_err();
        assert!(
            e.to_string().starts_with("invalid CIDR \"10.0.0.300/24\""),
            "{e}"
        );
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/",
            "10.0.0.1/+8",
            "/8",
            "::1/128",
            "10.0.0.1/8/8",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn cidr_from_netmask_refuses_holes() {
        let c = Ipv4Cidr::from_netmask(
            Ipv4Addr::new(192, 168, 1, 9),
            Ipv4Addr::new(255, 255, 255, 0),
        )
        .unwrap();
        assert_eq!(c.prefix(), 24);
        assert_eq!(
            Ipv4Cidr::from_netmask(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED)
                .unwrap()
                .prefix(),
            0
        );
        assert_eq!(
            Ipv4Cidr::from_netmask(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
                .unwrap()
                .prefix(),
            32
        );
        assert!(
            Ipv4Cidr::from_netmask(Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(255, 0, 255, 0)).is_none()
        );
    }

    #[test]
    fn mtu_range_is_enforced() {
        assert_eq!(Mtu::try_from(1500).unwrap().get(), 1500);
        assert!(Mtu::try_from(67).is_err());
        assert!(Mtu::try_from(65536).is_err());
        assert!(Mtu::try_from(-1).is_err());
    }

    #[test]
    fn voter_counts_are_three_or_five() {
        assert_eq!(VoterCount::try_from(5).unwrap().get(), 5);
        assert_eq!(VoterCount::default().get(), 3);
        for bad in [0, 1, 2, 4, 6, -3] {
            let err = VoterCount::try_from(bad).unwrap_err().to_string();
            assert!(err.contains("want 3 or 5"), "{err}");
        }
    }

    #[test]
    fn periods_take_a_unit_and_stay_within_a_day() {
        let p = |s: &str| Period::try_from(s.to_owned());
        assert_eq!(p("90s").unwrap().get().as_secs(), 90);
        assert_eq!(p("5m").unwrap().get().as_secs(), 300);
        assert_eq!(p("24h").unwrap().get().as_secs(), 86_400);
        for bad in [
            "",
            "5",
            "m",
            "0s",
            "25h",
            "5 m",
            "5d",
            "-5s",
            "99999999999999999999h",
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
        assert!(p("5d").unwrap_err().to_string().contains("\"5d\""));
    }

    #[test]
    fn failure_domains_are_dns_labels() {
        assert_eq!(
            FailureDomain::try_from("Rack-A".to_owned())
                .unwrap()
                .as_str(),
            "rack-a"
        );
        assert!(FailureDomain::try_from("rack a".to_owned()).is_err());
        assert!(FailureDomain::try_from(String::new()).is_err());
    }
}
