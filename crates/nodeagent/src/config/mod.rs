//! The machine config: schema, parsing and cross-field rules.
//!
//! A machine config is a small TOML document (see `docs/machine-config.md`).
//! [`parse`] turns raw bytes into a [`MachineConfig`] in one step: TOML
//! syntax, then serde into typed values (every struct denies unknown keys,
//! every leaf is a newtype from [`types`]), then [`MachineConfig::validate`]
//! for rules that span fields. Every failure is a [`ConfigParseError`] that
//! names the source and the key path, for example
//! `opt/cairn/config (fw_cfg): network.interfaces[0].addresses[1]: invalid CIDR "10.0.0.300/24" (line 6, column 29)`.
//!
//! Where the bytes come from is [`source`]'s business.

pub mod registries;
pub mod source;
pub mod types;

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;

pub use registries::{
    RegistryAuthConfig, RegistryCa, RegistryConfig, RegistryHost, RegistrySecret,
};
pub use source::{ConfigOrigin, ConfigPaths};
pub use types::{
    CaHash, ClusterEndpoint, DomainName, FailureDomain, Hostname, InterfaceName, Ipv4Cidr,
    JoinTokenSecret, MacAddr, Mtu, Period, SetupToken, ValueError, VoterCount,
};

/// The embedded default: DHCP on every physical link. A node booted with no
/// config at all, or with a bad one, runs on this.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("default.toml");

/// The largest config the agent reads. Machine configs are a few hundred
/// bytes; the cap keeps a wrong fw_cfg blob or URL from eating memory.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// A parsed and validated machine config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MachineConfig {
    /// Node identity.
    #[serde(default)]
    pub node: NodeConfig,
    /// Links, addresses, routes and resolver.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Cluster membership.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// OCI registries images are pulled from (`[[registries]]`).
    #[serde(default)]
    pub registries: Vec<RegistryConfig>,
}

/// `[cluster]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterConfig {
    /// The token that authorises `cairn cluster init` (and joins) while the
    /// node is in maintenance mode. Without it the node generates one at
    /// boot and prints it on the console.
    pub setup_token: Option<SetupToken>,
    /// Voters the cluster keeps (3 or 5); the leader's setting counts.
    #[serde(default)]
    pub voters: VoterCount,
    /// How long a voter may be unreachable before the leader replaces it
    /// with a stand-by (default 5m); the leader's setting counts.
    pub grace: Option<Period>,
    /// This node's failure domain (rack, host, site): voters are spread
    /// across domains. Recorded when the node joins.
    pub failure_domain: Option<FailureDomain>,
    /// Join this cluster on boot, without an operator (zero-touch joins at
    /// edge sites).
    pub join: Option<JoinConfig>,
}

/// `[cluster.join]`: what `cairn node join` would send, from the machine
/// config instead.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JoinConfig {
    /// A member's API endpoint, `host:port`.
    pub endpoint: ClusterEndpoint,
    /// The join token, `<id>.<secret>`.
    pub token: JoinTokenSecret,
    /// The cluster CA's fingerprint, `sha256:<hex>`.
    pub ca_hash: CaHash,
}

impl ClusterConfig {
    /// The grace period when none is configured.
    pub const DEFAULT_GRACE: Period = Period::from_secs(300);

    /// The grace period in force.
    pub fn grace(&self) -> std::time::Duration {
        self.grace.unwrap_or(Self::DEFAULT_GRACE).get()
    }
}

/// `[node]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// Fixed host name. Without it the node takes the DHCP host name, else
    /// `cairn-<mac suffix>`.
    pub hostname: Option<Hostname>,
}

/// `[network]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkConfig {
    /// Per-link settings. Empty means DHCP on every physical link.
    #[serde(default)]
    pub interfaces: Vec<InterfaceConfig>,
    /// Name servers; when set they replace any learned from DHCP.
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    /// Resolver search domains; when set they replace DHCP's.
    #[serde(default)]
    pub search: Vec<DomainName>,
}

/// Which link an `[[network.interfaces]]` entry applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InterfaceSelector {
    /// The kernel name, as `ip link` shows it.
    Name(InterfaceName),
    /// The permanent hardware address; survives renames and slot changes.
    Mac(MacAddr),
}

impl fmt::Display for InterfaceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(f, "name {n}"),
            Self::Mac(m) => write!(f, "mac {m}"),
        }
    }
}

/// One `[[network.interfaces]]` entry, after its own fields were checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawInterfaceConfig")]
pub struct InterfaceConfig {
    /// The link this entry configures.
    pub selector: InterfaceSelector,
    /// Run a DHCPv4 client on the link.
    pub dhcp: bool,
    /// Static IPv4 addresses.
    pub addresses: Vec<Ipv4Cidr>,
    /// Default gateway reached over this link.
    pub gateway: Option<Ipv4Addr>,
    /// Extra static routes over this link.
    pub routes: Vec<StaticRoute>,
    /// Link MTU; without it the driver default (or DHCP's) stays.
    pub mtu: Option<Mtu>,
}

/// A static route, `{ destination = "10.1.0.0/16", gateway = "10.0.0.254" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StaticRoute {
    /// Destination network (host bits must be zero).
    pub destination: Ipv4Cidr,
    /// Next hop, on-link through one of the interface's static addresses.
    pub gateway: Ipv4Addr,
}

/// The wire shape of an interface entry; [`InterfaceConfig`] is built from
/// it so that "name or mac" is a sum type, not two options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawInterfaceConfig {
    name: Option<InterfaceName>,
    mac: Option<MacAddr>,
    dhcp: Option<bool>,
    #[serde(default)]
    addresses: Vec<Ipv4Cidr>,
    gateway: Option<Ipv4Addr>,
    #[serde(default)]
    routes: Vec<StaticRoute>,
    mtu: Option<Mtu>,
}

impl TryFrom<RawInterfaceConfig> for InterfaceConfig {
    type Error = ValueError;
    fn try_from(raw: RawInterfaceConfig) -> Result<Self, ValueError> {
        let selector = match (raw.name, raw.mac) {
            (Some(name), None) => InterfaceSelector::Name(name),
            (None, Some(mac)) => InterfaceSelector::Mac(mac),
            (Some(_), Some(_)) | (None, None) => {
                return Err(ValueError::new("set exactly one of `name` or `mac`"));
            }
        };
        Ok(Self {
            selector,
            // An entry that lists no addresses only makes sense with DHCP,
            // so that is the default; an entry with addresses is static
            // unless DHCP is asked for as well.
            dhcp: raw.dhcp.unwrap_or(raw.addresses.is_empty()),
            addresses: raw.addresses,
            gateway: raw.gateway,
            routes: raw.routes,
            mtu: raw.mtu,
        })
    }
}

/// Key paths whose values are secrets: never shown by
/// `GET /v1/node/config`.
pub const SECRET_KEYS: &[&[&str]] = &[&["cluster", "setup-token"], &["cluster", "join", "token"]];

/// What replaces a secret in a shown config.
pub const REDACTED: &str = "<redacted>";

/// The machine config in force, with the text it was parsed from (for
/// `cairn node config get`) and where that text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveConfig {
    /// The parsed config.
    pub config: MachineConfig,
    /// Its source.
    pub origin: ConfigOrigin,
    /// Its text.
    pub text: String,
}

impl ActiveConfig {
    /// The embedded default.
    pub fn embedded_default() -> Self {
        Self {
            config: MachineConfig::embedded_default(),
            origin: ConfigOrigin::Default,
            text: DEFAULT_CONFIG_TOML.to_owned(),
        }
    }

    /// The text with every [`SECRET_KEYS`] value replaced by [`REDACTED`],
    /// and the key paths that were. Text without secrets comes back as it
    /// is, comments included; text with secrets is re-serialized.
    pub fn redacted(&self) -> (String, Vec<String>) {
        let Ok(mut table) = self.text.parse::<toml::Table>() else {
            // The text parsed once already; if it does not now, show none
            // of it rather than risk a secret.
            return (String::new(), vec!["*".to_owned()]);
        };
        let mut redacted = Vec::new();
        for path in SECRET_KEYS {
            let Some((last, tables)) = path.split_last() else {
                continue;
            };
            let mut at = Some(&mut table);
            for name in tables {
                at = match at.and_then(|t| t.get_mut(*name)) {
                    Some(toml::Value::Table(inner)) => Some(inner),
                    _ => None,
                };
            }
            if let Some(value) = at.and_then(|t| t.get_mut(*last)) {
                *value = toml::Value::String(REDACTED.to_owned());
                redacted.push(path.join("."));
            }
        }
        if let Some(toml::Value::Array(entries)) = table.get_mut("registries") {
            for (i, entry) in entries.iter_mut().enumerate() {
                let Some(toml::Value::Table(auth)) = entry.get_mut("auth") else {
                    continue;
                };
                for key in registries::SECRET_AUTH_KEYS {
                    if let Some(value) = auth.get_mut(*key) {
                        *value = toml::Value::String(REDACTED.to_owned());
                        redacted.push(format!("registries[{i}].auth.{key}"));
                    }
                }
            }
        }
        if redacted.is_empty() {
            return (self.text.clone(), redacted);
        }
        (toml::to_string(&table).unwrap_or_default(), redacted)
    }
}

/// The top-level sections that differ between two configs.
pub fn changed_sections(old: &MachineConfig, new: &MachineConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.node != new.node {
        out.push("node");
    }
    if old.network != new.network {
        out.push("network");
    }
    if old.cluster != new.cluster {
        out.push("cluster");
    }
    if old.registries != new.registries {
        out.push("registries");
    }
    out
}

/// Which config the node runs on, for logs, /readyz and /metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigReport {
    /// The config in force.
    pub effective: ConfigOrigin,
    /// The source that had a config (equal to `effective` unless it failed).
    pub requested: ConfigOrigin,
    /// Why the requested config was refused, with its whole error chain.
    pub error: Option<String>,
}

impl ConfigReport {
    /// The node runs on the config it was given.
    pub fn ok(origin: ConfigOrigin) -> Self {
        Self {
            effective: origin.clone(),
            requested: origin,
            error: None,
        }
    }

    /// The config from `requested` was refused; the default runs instead.
    pub fn failed(requested: ConfigOrigin, error: String) -> Self {
        Self {
            effective: ConfigOrigin::Default,
            requested,
            error: Some(error),
        }
    }
}

/// A rule between fields was broken. `path` is the key it is reported on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// Key path in the document, `network.interfaces[1].gateway`.
    pub path: String,
    /// What is wrong, quoting the value.
    pub message: String,
}

impl ValidationError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl MachineConfig {
    /// The embedded default config.
    pub fn embedded_default() -> Self {
        // The default is a compile-time constant covered by a unit test, so
        // failing here would be a build defect; fall back to the empty
        // config, which means the same thing (DHCP on every physical link).
        parse(DEFAULT_CONFIG_TOML.as_bytes(), &ConfigOrigin::Default).unwrap_or_default()
    }

    /// Checks the rules that span several fields.
    pub fn validate(&self) -> Result<(), ValidationError> {
        registries::validate(&self.registries)
            .map_err(|(path, message)| ValidationError::new(path, message))?;
        let mut selectors = BTreeSet::new();
        let mut all_addresses = BTreeSet::new();
        for (i, iface) in self.network.interfaces.iter().enumerate() {
            let at = |key: &str| format!("network.interfaces[{i}].{key}");
            let (key, value) = match &iface.selector {
                InterfaceSelector::Name(n) => ("name", n.to_string()),
                InterfaceSelector::Mac(m) => ("mac", m.to_string()),
            };
            if !selectors.insert((key, value.clone())) {
                return Err(ValidationError::new(
                    at(key),
                    format!("{value:?} is configured by an earlier entry too"),
                ));
            }
            for (j, cidr) in iface.addresses.iter().enumerate() {
                check_host_address(*cidr)
                    .map_err(|m| ValidationError::new(at(&format!("addresses[{j}]")), m))?;
                if !all_addresses.insert(cidr.addr()) {
                    return Err(ValidationError::new(
                        at(&format!("addresses[{j}]")),
                        format!("address {} is assigned twice", cidr.addr()),
                    ));
                }
            }
            let on_link = |gw: Ipv4Addr| {
                iface
                    .addresses
                    .iter()
                    .any(|c| c.contains(gw) && c.addr() != gw)
            };
            if let Some(gw) = iface.gateway
                && !on_link(gw)
            {
                return Err(ValidationError::new(
                    at("gateway"),
                    format!("gateway {gw} is not inside any of this interface's static addresses"),
                ));
            }
            for (j, route) in iface.routes.iter().enumerate() {
                if !route.destination.is_network() {
                    return Err(ValidationError::new(
                        at(&format!("routes[{j}].destination")),
                        format!(
                            "destination {} has host bits set; did you mean {}?",
                            route.destination,
                            route.destination.network()
                        ),
                    ));
                }
                if !on_link(route.gateway) {
                    return Err(ValidationError::new(
                        at(&format!("routes[{j}].gateway")),
                        format!(
                            "gateway {} is not inside any of this interface's static addresses",
                            route.gateway
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn check_host_address(cidr: Ipv4Cidr) -> Result<(), String> {
    let ip = cidr.addr();
    if cidr.prefix() == 0 {
        return Err(format!("address {cidr} needs a prefix length of 1 to 32"));
    }
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
        return Err(format!("address {cidr} cannot be assigned to an interface"));
    }
    Ok(())
}

/// Why a config document was refused. Each variant names its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigParseError {
    /// Larger than [`MAX_CONFIG_BYTES`].
    #[error("{origin}: config is {size} bytes, more than the {MAX_CONFIG_BYTES} allowed")]
    TooLarge {
        /// Where the document came from.
        origin: ConfigOrigin,
        /// Its size.
        size: usize,
    },
    /// Not UTF-8 text.
    #[error("{origin}: not UTF-8 text (bad byte at offset {offset})")]
    NotUtf8 {
        /// Where the document came from.
        origin: ConfigOrigin,
        /// Offset of the first bad byte.
        offset: usize,
    },
    /// Not valid TOML.
    #[error("{origin}: {location}TOML syntax error: {message}")]
    Syntax {
        /// Where the document came from.
        origin: ConfigOrigin,
        /// `line L, column C: ` when known.
        location: Location,
        /// The parser's description.
        message: String,
    },
    /// Valid TOML, but a key is unknown or a value is bad.
    #[error("{origin}: {path}: {message}{location}")]
    Schema {
        /// Where the document came from.
        origin: ConfigOrigin,
        /// Key path, `network.interfaces[0].addresses[1]`.
        path: String,
        /// What is wrong.
        message: String,
        /// ` (line L, column C)` when known.
        location: Location,
    },
    /// Every value is fine on its own, but they do not fit together.
    #[error("{origin}: {rule}")]
    Rule {
        /// Where the document came from.
        origin: ConfigOrigin,
        /// The broken rule (part of this error, not a cause of it).
        rule: ValidationError,
    },
}

impl ConfigParseError {
    /// The source the bad document came from.
    pub fn origin(&self) -> &ConfigOrigin {
        match self {
            Self::TooLarge { origin, .. }
            | Self::NotUtf8 { origin, .. }
            | Self::Syntax { origin, .. }
            | Self::Schema { origin, .. }
            | Self::Rule { origin, .. } => origin,
        }
    }

    /// The key path the error is about, when there is one.
    pub fn key_path(&self) -> Option<&str> {
        match self {
            Self::Schema { path, .. } => Some(path),
            Self::Rule { rule, .. } => Some(&rule.path),
            Self::TooLarge { .. } | Self::NotUtf8 { .. } | Self::Syntax { .. } => None,
        }
    }
}

/// A 1-based line and column in the document, shown in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// (line, column), both 1-based; `None` when the parser gave no span.
    pub position: Option<(usize, usize)>,
    style: LocationStyle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocationStyle {
    Prefix,
    Suffix,
}

impl Location {
    fn find(text: &str, span: Option<std::ops::Range<usize>>, style: LocationStyle) -> Self {
        let position = span.map(|span| {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        });
        Self { position, style }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.position, self.style) {
            (None, _) => Ok(()),
            (Some((l, c)), LocationStyle::Prefix) => write!(f, "line {l}, column {c}: "),
            (Some((l, c)), LocationStyle::Suffix) => write!(f, " (line {l}, column {c})"),
        }
    }
}

/// Parses and validates a machine config from raw bytes.
///
/// Never panics, whatever the bytes: every failure is a
/// [`ConfigParseError`] naming `origin`.
pub fn parse(bytes: &[u8], origin: &ConfigOrigin) -> Result<MachineConfig, ConfigParseError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigParseError::TooLarge {
            origin: origin.clone(),
            size: bytes.len(),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ConfigParseError::NotUtf8 {
        origin: origin.clone(),
        offset: e.valid_up_to(),
    })?;
    let deserializer = toml::Deserializer::parse(text).map_err(|e| ConfigParseError::Syntax {
        origin: origin.clone(),
        location: Location::find(text, e.span(), LocationStyle::Prefix),
        message: e.message().trim_end().to_owned(),
    })?;
    let config: MachineConfig = serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigParseError::Schema {
            origin: origin.clone(),
            path,
            location: Location::find(text, inner.span(), LocationStyle::Suffix),
            message: inner.message().trim_end().to_owned(),
        }
    })?;
    config.validate().map_err(|rule| ConfigParseError::Rule {
        origin: origin.clone(),
        rule,
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fw_cfg() -> ConfigOrigin {
        ConfigOrigin::FwCfg("/sys/firmware/qemu_fw_cfg/by_name/opt/cairn/config/raw".into())
    }

    fn parse_str(text: &str) -> Result<MachineConfig, ConfigParseError> {
        parse(text.as_bytes(), &fw_cfg())
    }

    #[test]
    fn embedded_default_is_dhcp_on_every_physical_link() {
        let config = parse(DEFAULT_CONFIG_TOML.as_bytes(), &ConfigOrigin::Default).unwrap();
        assert_eq!(config, MachineConfig::default());
        assert!(config.network.interfaces.is_empty());
        assert_eq!(MachineConfig::embedded_default(), config);
    }

    #[test]
    fn setup_token_is_read_and_never_printed() {
        let config = parse_str("[cluster]\nsetup-token = \"abcdefghijklmnop-42\"\n").unwrap();
        let token = config.cluster.setup_token.unwrap();
        assert!(token.matches("abcdefghijklmnop-42"));
        assert!(!token.matches("abcdefghijklmnop-43"));
        assert!(!token.matches("abcdefghijklmnop-4"));
        assert!(!token.matches(""));
        assert_eq!(format!("{token:?}"), "SetupToken(<redacted>)");
    }

    #[test]
    fn a_short_setup_token_is_refused_without_quoting_it() {
        let err = parse_str("[cluster]\nsetup-token = \"hunter2\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("cluster.setup-token"), "{text}");
        assert!(text.contains("16 to 128 characters"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn redaction_hides_secrets_and_keeps_text_without_them() {
        let plain = ActiveConfig {
            config: MachineConfig::default(),
            origin: fw_cfg(),
            text: "# comment\n[node]\nhostname = \"n1\"\n".into(),
        };
        assert_eq!(plain.redacted(), (plain.text.clone(), vec![]));
        let secret = ActiveConfig {
            text: "[node]\nhostname = \"n1\"\n[cluster]\nsetup-token = \"abcdefghijklmnop\"\n"
                .into(),
            ..plain
        };
        let (text, keys) = secret.redacted();
        assert!(!text.contains("abcdefghijklmnop"), "{text}");
        assert!(text.contains(REDACTED), "{text}");
        assert!(text.contains("hostname = \"n1\""), "{text}");
        assert_eq!(keys, ["cluster.setup-token"]);
    }

    const JOIN: &str = "[cluster.join]\nendpoint = \"10.0.0.5:7443\"\ntoken = \"abc123.0123456789abcdef\"\nca-hash = \"sha256:2d323e6f11b7512d70b66e13bcd81c3de60f22a8c32e7d6b692ff23a602c6c8f\"\n";

    #[test]
    fn a_zero_touch_join_is_read_typed_and_its_token_redacted() {
        let config = parse_str(JOIN).unwrap();
        let join = config.cluster.join.unwrap();
        assert_eq!(join.endpoint.get().to_string(), "10.0.0.5:7443");
        assert_eq!(join.token.get().id().as_str(), "abc123");
        assert!(!format!("{join:?}").contains("0123456789abcdef"));
        let active = ActiveConfig {
            config: MachineConfig::default(),
            origin: fw_cfg(),
            text: JOIN.into(),
        };
        let (text, keys) = active.redacted();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(text.contains("10.0.0.5:7443"), "{text}");
        assert_eq!(keys, ["cluster.join.token"]);
    }

    #[test]
    fn a_bad_zero_touch_join_is_refused_naming_the_key_and_never_the_secret() {
        let bad_token = JOIN.replace("0123456789abcdef", "0123456789ABCDEF");
        let text = parse_str(&bad_token).unwrap_err().to_string();
        assert!(text.contains("cluster.join.token"), "{text}");
        assert!(!text.contains("0123456789ABCDEF"), "{text}");
        let bad_hash = JOIN.replace("sha256:2d", "md5:2d");
        let text = parse_str(&bad_hash).unwrap_err().to_string();
        assert!(text.contains("cluster.join.ca-hash"), "{text}");
        let bad_endpoint = JOIN.replace("10.0.0.5:7443", "https://10.0.0.5");
        let text = parse_str(&bad_endpoint).unwrap_err().to_string();
        assert!(
            text.contains("cluster.join.endpoint") && text.contains("host:port"),
            "{text}"
        );
    }

    #[test]
    fn changed_sections_name_what_differs() {
        let old = parse_str("[node]\nhostname = \"a\"\n").unwrap();
        let new = parse_str("[node]\nhostname = \"b\"\n").unwrap();
        assert_eq!(changed_sections(&old, &new), ["node"]);
        assert!(changed_sections(&old, &old).is_empty());
    }

    #[test]
    fn empty_document_is_the_default() {
        assert_eq!(parse_str("").unwrap(), MachineConfig::default());
    }

    #[test]
    fn full_static_config_parses_into_typed_values() {
        let config = parse_str(
            r#"
            [node]
            hostname = "edge-01"
            [network]
            dns = ["10.0.0.1", "2001:db8::53"]
            search = ["example.com"]
            [[network.interfaces]]
            mac = "52:54:00:12:34:56"
            addresses = ["10.0.0.5/24"]
            gateway = "10.0.0.1"
            mtu = 9000
            routes = [{ destination = "10.1.0.0/16", gateway = "10.0.0.254" }]
            [[network.interfaces]]
            name = "eth1"
            "#,
        )
        .unwrap();
        assert_eq!(config.node.hostname.unwrap().as_str(), "edge-01");
        let eth0 = &config.network.interfaces[0];
        assert_eq!(
            eth0.selector,
            InterfaceSelector::Mac("52:54:00:12:34:56".parse().unwrap())
        );
        assert!(!eth0.dhcp, "an entry with addresses is static by default");
        assert_eq!(eth0.mtu.unwrap().get(), 9000);
        assert_eq!(eth0.routes[0].destination.to_string(), "10.1.0.0/16");
        let eth1 = &config.network.interfaces[1];
        assert!(eth1.dhcp, "an entry without addresses uses DHCP by default");
        assert_eq!(config.network.dns.len(), 2);
    }

    #[test]
    fn bad_cidr_is_reported_with_source_key_path_and_value() {
        let e = parse_str("[[network.interfaces]]\nname = \"eth0\"\naddresses = [\"10.0.0.5/24\", \"10.0.0.300/24\"]\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "opt/cairn/config (fw_cfg): network.interfaces[0].addresses[1]: invalid CIDR \"10.0.0.300/24\""
            ),
            "{msg}"
        );
        // toml reports the span of the whole array, so the column is its `[`.
        assert!(msg.ends_with("(line 3, column 13)"), "{msg}");
        assert_eq!(e.key_path(), Some("network.interfaces[0].addresses[1]"));
    }

    #[test]
    fn unknown_keys_are_rejected_everywhere() {
        for (doc, path) in [
            ("bogus = 1", "bogus"),
            ("[node]\nname = \"x\"", "node.name"),
            ("[network]\nntp = []", "network.ntp"),
            (
                "[[network.interfaces]]\nname = \"eth0\"\nspeed = 10",
                "network.interfaces[0].speed",
            ),
            (
                "[[network.interfaces]]\nname = \"e\"\naddresses = [\"10.0.0.2/24\"]\nroutes = [{ destination = \"10.1.0.0/16\", gateway = \"10.0.0.1\", metric = 5 }]",
                "network.interfaces[0].routes[0].metric",
            ),
            ("[time]\nservers = []", "time"),
        ] {
            let e = parse_str(doc).unwrap_err();
            assert_eq!(e.key_path(), Some(path), "{doc}: {e}");
            assert!(e.to_string().contains("unknown field"), "{e}");
        }
    }

    #[test]
    fn name_and_mac_are_mutually_exclusive() {
        for doc in [
            "[[network.interfaces]]\ndhcp = true",
            "[[network.interfaces]]\nname = \"eth0\"\nmac = \"52:54:00:12:34:56\"",
        ] {
            let e = parse_str(doc).unwrap_err();
            assert_eq!(e.key_path(), Some("network.interfaces[0]"), "{e}");
            assert!(
                e.to_string().contains("exactly one of `name` or `mac`"),
                "{e}"
            );
        }
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = parse_str("[node]\nhostname = \n").unwrap_err();
        assert!(matches!(e, ConfigParseError::Syntax { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("opt/cairn/config (fw_cfg): line 2, column"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_and_ranges_name_the_key() {
        for (doc, path) in [
            ("[node]\nhostname = 5", "node.hostname"),
            ("[node]\nhostname = \"bad_name\"", "node.hostname"),
            ("[network]\ndns = [\"10.0.0\"]", "network.dns[0]"),
            ("[network]\nsearch = [\"a..b\"]", "network.search[0]"),
            (
                "[[network.interfaces]]\nname = \"eth0\"\nmtu = 10",
                "network.interfaces[0].mtu",
            ),
            (
                "[[network.interfaces]]\nname = \"this-name-is-too-long\"",
                "network.interfaces[0].name",
            ),
            (
                "[[network.interfaces]]\nmac = \"52:54:00\"",
                "network.interfaces[0].mac",
            ),
            (
                "[[network.interfaces]]\nname = \"e\"\ndhcp = \"yes\"",
                "network.interfaces[0].dhcp",
            ),
        ] {
            let e = parse_str(doc).unwrap_err();
            assert_eq!(e.key_path(), Some(path), "{doc}: {e}");
        }
    }

    #[test]
    fn cross_field_rules_name_the_key() {
        for (doc, path) in [
            (
                "[[network.interfaces]]\nname = \"a\"\n[[network.interfaces]]\nname = \"a\"",
                "network.interfaces[1].name",
            ),
            (
                "[[network.interfaces]]\nname = \"a\"\naddresses = [\"10.0.0.2/24\"]\ngateway = \"10.0.1.1\"",
                "network.interfaces[0].gateway",
            ),
            (
                "[[network.interfaces]]\nname = \"a\"\ngateway = \"10.0.0.1\"",
                "network.interfaces[0].gateway",
            ),
            (
                "[[network.interfaces]]\nname = \"a\"\naddresses = [\"127.0.0.2/8\"]",
                "network.interfaces[0].addresses[0]",
            ),
            (
                "[[network.interfaces]]\nname = \"a\"\naddresses = [\"10.0.0.2/0\"]",
                "network.interfaces[0].addresses[0]",
            ),
            (
                "[[network.interfaces]]\nname = \"a\"\naddresses = [\"10.0.0.2/24\"]\n[[network.interfaces]]\nname = \"b\"\naddresses = [\"10.0.0.2/24\"]",
                "network.interfaces[1].addresses[0]",
            ),
            (
                "[[network.interfaces]]\nname = \"a\"\naddresses = [\"10.0.0.2/24\"]\nroutes = [{ destination = \"10.1.2.3/16\", gateway = \"10.0.0.1\" }]",
                "network.interfaces[0].routes[0].destination",
            ),
            (
                "[[network.interfaces]]\nname = \"a\"\naddresses = [\"10.0.0.2/24\"]\nroutes = [{ destination = \"10.1.0.0/16\", gateway = \"10.9.0.1\" }]",
                "network.interfaces[0].routes[0].gateway",
            ),
        ] {
            let e = parse_str(doc).unwrap_err();
            assert!(matches!(e, ConfigParseError::Rule { .. }), "{doc}: {e}");
            assert_eq!(e.key_path(), Some(path), "{doc}: {e}");
        }
    }

    #[test]
    fn oversized_and_non_utf8_input_is_refused() {
        let e = parse(&vec![b' '; MAX_CONFIG_BYTES + 1], &fw_cfg()).unwrap_err();
        assert!(matches!(e, ConfigParseError::TooLarge { .. }));
        let e = parse(b"[node]\nhostname = \"\xff\"", &fw_cfg()).unwrap_err();
        assert!(e.to_string().contains("offset 19"), "{e}");
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;

        fn check(result: Result<MachineConfig, ConfigParseError>) {
            match result {
                Ok(config) => assert!(config.validate().is_ok()),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with("/efi/cairn/config.toml (esp): "), "{msg}");
                }
            }
        }

        fn esp() -> ConfigOrigin {
            ConfigOrigin::Esp("/efi/cairn/config.toml".into())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn parser_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                check(parse(&bytes, &esp()));
            }

            #[test]
            fn parser_never_panics_on_arbitrary_text(text in "\\PC{0,256}") {
                check(parse(text.as_bytes(), &esp()));
            }

            #[test]
            fn parser_never_panics_on_config_shaped_text(
                text in "(\\[\\[?(node|network|network\\.interfaces)\\]\\]?\n|(hostname|name|mac|dhcp|addresses|gateway|mtu|dns|search|routes|destination) = (\"[a-z0-9.:/-]{0,20}\"|[0-9]{1,6}|true|\\[\"[0-9./]{0,18}\"\\]|\\{ ?destination = \"[0-9./]{0,18}\", gateway = \"[0-9.]{0,15}\" \\})\n){0,12}"
            ) {
                check(parse(text.as_bytes(), &esp()));
            }
        }
    }
}
