//! Where a node's API is: `HOST[:PORT]`, parsed once.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node API address: a host name or IP address and a port (by default
/// [`api::API_PORT`]).
///
/// Written `host:port`; IPv6 addresses are bracketed (`[fd00::5]:7443`),
/// and a bare IPv6 address without brackets is taken whole as the host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Host {
    Name(String),
    Ip(IpAddr),
}

/// Text that is not an endpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid endpoint {text:?}: {reason}, expected HOST or HOST:PORT such as 10.0.0.5:7443")]
pub struct EndpointError {
    text: String,
    reason: &'static str,
}

impl Endpoint {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host as it goes into a URL (IPv6 bracketed).
    fn url_host(&self) -> String {
        match &self.host {
            Host::Name(name) => name.clone(),
            Host::Ip(IpAddr::V4(ip)) => ip.to_string(),
            Host::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
        }
    }

    /// The `https://` URL of `path` (which starts with `/`) on this node.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.url_host(), self.port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.url_host(), self.port)
    }
}

fn valid_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| EndpointError {
            text: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(fail("empty"));
        }
        if let Ok(ip) = text.parse::<Ipv6Addr>() {
            return Ok(Endpoint {
                host: Host::Ip(IpAddr::V6(ip)),
                port: api::API_PORT,
            });
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| fail("missing \"]\" after an IPv6 address"))?;
            let ip = inside
                .parse::<Ipv6Addr>()
                .map_err(|_| fail("not an IPv6 address inside brackets"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| fail("unexpected text after \"]\""))?,
                ),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            };
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => Host::Ip(ip),
                Err(_) if valid_host_name(host) => Host::Name(host.to_ascii_lowercase()),
                Err(_) => return Err(fail("not a host name or IP address")),
            };
            (host, port)
        };
        let port = match port {
            None => api::API_PORT,
            Some(port) => match port.parse::<u16>() {
                Ok(0) | Err(_) => return Err(fail("the port is not a number from 1 to 65535")),
                Ok(port) => port,
            },
        };
        Ok(Endpoint { host, port })
    }
}

impl TryFrom<String> for Endpoint {
    type Error = EndpointError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Endpoint> for String {
    fn from(value: Endpoint) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ep(text: &str) -> Endpoint {
        text.parse().expect("valid endpoint")
    }

    #[test]
    fn the_port_defaults_to_the_api_port() {
        assert_eq!(ep("10.0.0.5").to_string(), "10.0.0.5:7443");
        assert_eq!(ep("node-1.lab").to_string(), "node-1.lab:7443");
        assert_eq!(ep("fd00::5").to_string(), "[fd00::5]:7443");
        assert_eq!(ep("[fd00::5]").to_string(), "[fd00::5]:7443");
    }

    #[test]
    fn explicit_ports_are_kept_and_urls_bracket_ipv6() {
        assert_eq!(ep("127.0.0.1:8443").port(), 8443);
        assert_eq!(
            ep("[::1]:9000").url("/v1/node"),
            "https://[::1]:9000/v1/node"
        );
        assert_eq!(
            ep("Node-1:7443").url("/v1/node"),
            "https://node-1:7443/v1/node"
        );
    }

    #[test]
    fn malformed_endpoints_are_refused_with_the_reason() {
        for bad in [
            "",
            "host:",
            "host:0",
            "host:70000",
            "host:port",
            "[::1",
            "[::1]x",
            "[10.0.0.1]:1",
            "a b",
            "https://node:7443",
            "-bad-.lab",
        ] {
            let err = bad.parse::<Endpoint>().expect_err(bad);
            assert!(err.to_string().contains("expected HOST"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".*") {
            let _ = text.parse::<Endpoint>();
        }

        #[test]
        fn display_parses_back_to_the_same_endpoint(
            host in prop_oneof![
                "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z][a-z0-9]{0,5}){0,2}",
                any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
                any::<Ipv6Addr>().prop_map(|ip| format!("[{ip}]")),
            ],
            port in 1u16..,
        ) {
            let endpoint = ep(&format!("{host}:{port}"));
            prop_assert_eq!(endpoint.to_string().parse::<Endpoint>(), Ok(endpoint));
        }
    }
}
