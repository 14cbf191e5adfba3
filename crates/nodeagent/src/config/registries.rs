//! `[[registries]]`: how the node reaches OCI registries.
//!
//! One entry per registry host the node talks to, upstream or mirror:
//!
//! ```toml
//! [[registries]]
//! host = "registry.site.internal:5000"
//! mirrors = ["mirror-a.site.internal", "mirror-b.site.internal:5000"]
//! ca = "/var/lib/cairn/registries/site-ca.pem"   # or the PEM text itself
//! auth = { username = "puller", password = "..." } # or { token = "..." }
//! plain-http = false
//! ```
//!
//! A pull of `registry.site.internal:5000/app:1` tries the mirrors in order,
//! then the host itself. A mirror's own credentials, CA and plain-HTTP
//! setting come from its own entry, if it has one. Secrets are held in
//! [`RegistrySecret`], whose `Debug` never shows them, and
//! `GET /v1/node/config` redacts them.

use std::fmt;
use std::path::PathBuf;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

use super::ValueError;

/// A registry's address as references write it: `host[:port]`, a DNS
/// name or an IPv4 address (lower case; no scheme, no path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct RegistryHost(String);

impl RegistryHost {
    /// The text, as it appears in references.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RegistryHost {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        let bad = |why: &str| ValueError::new(format!("invalid registry host {value:?}: {why}"));
        let (name, port) = match value.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value.as_str(), None),
        };
        if let Some(port) = port
            && !matches!(port.parse::<u16>(), Ok(p) if p > 0 && !port.starts_with('0'))
        {
            return Err(bad("the port must be 1 to 65535"));
        }
        if name.is_empty() || name.len() > 253 {
            return Err(bad("write it as host or host:port"));
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad(
                    "write it as host or host:port, lower-case letters, digits, '-' and '.'",
                ));
            }
        }
        Ok(Self(value))
    }
}

/// A registry password or token. `Debug` hides it; errors never quote it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RegistrySecret(String);

impl RegistrySecret {
    /// The secret, for the registry and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RegistrySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistrySecret(<redacted>)")
    }
}

impl TryFrom<String> for RegistrySecret {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        if value.is_empty() || value.len() > 4096 {
            return Err(ValueError::new(
                "a registry secret must be 1 to 4096 characters",
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ValueError::new(
                "a registry secret cannot contain control characters",
            ));
        }
        Ok(Self(value))
    }
}

/// How the node proves who it is to a registry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawAuth")]
pub enum RegistryAuthConfig {
    /// HTTP basic credentials (also what a token service is asked with).
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: RegistrySecret,
    },
    /// A bearer token sent as is.
    Bearer {
        /// The token.
        token: RegistrySecret,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAuth {
    username: Option<String>,
    password: Option<RegistrySecret>,
    token: Option<RegistrySecret>,
}

impl TryFrom<RawAuth> for RegistryAuthConfig {
    type Error = ValueError;
    fn try_from(raw: RawAuth) -> Result<Self, ValueError> {
        match (raw.username, raw.password, raw.token) {
            (Some(username), Some(password), None) => {
                if username.is_empty() || username.contains(':') || username.len() > 255 {
                    return Err(ValueError::new(
                        "the registry username must be 1 to 255 characters without ':'",
                    ));
                }
                Ok(Self::Basic { username, password })
            }
            (None, None, Some(token)) => Ok(Self::Bearer { token }),
            _ => Err(ValueError::new(
                "registry auth takes either username and password, or token",
            )),
        }
    }
}

/// The CA a registry's certificate chains to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum RegistryCa {
    /// PEM certificates written in the config, already parsed.
    Inline(Vec<CertificateDer<'static>>),
    /// An absolute path to a PEM file, read at each pull (so a rotated CA
    /// needs no config change).
    File(PathBuf),
}

impl TryFrom<String> for RegistryCa {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, ValueError> {
        if value.contains("-----BEGIN") {
            let certs = parse_pem_certificates(value.as_bytes())
                .map_err(|e| ValueError::new(format!("invalid registry CA: {e}")))?;
            return Ok(Self::Inline(certs));
        }
        let path = PathBuf::from(&value);
        if !path.is_absolute() {
            return Err(ValueError::new(format!(
                "registry CA {value:?} must be PEM text or an absolute path"
            )));
        }
        Ok(Self::File(path))
    }
}

/// The certificates of a PEM document: at least one, and nothing that is
/// not PEM.
pub fn parse_pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates ({e})"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block".to_owned());
    }
    Ok(certs)
}

/// One `[[registries]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegistryConfig {
    /// The registry, as references name it.
    pub host: RegistryHost,
    /// Registries tried before this one, in order.
    #[serde(default)]
    pub mirrors: Vec<RegistryHost>,
    /// Credentials; anonymous without.
    pub auth: Option<RegistryAuthConfig>,
    /// The CA its certificate chains to; the system's roots without.
    pub ca: Option<RegistryCa>,
    /// Talk plain HTTP to it (test and air-gapped labs only).
    #[serde(default)]
    pub plain_http: bool,
}

/// The rules that span entries: each host once, no host its own mirror.
pub fn validate(registries: &[RegistryConfig]) -> Result<(), (String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, entry) in registries.iter().enumerate() {
        if !seen.insert(&entry.host) {
            return Err((
                format!("registries[{i}].host"),
                format!("{} is configured by an earlier entry too", entry.host),
            ));
        }
        let mut mirrors = std::collections::BTreeSet::new();
        for (j, mirror) in entry.mirrors.iter().enumerate() {
            if *mirror == entry.host {
                return Err((
                    format!("registries[{i}].mirrors[{j}]"),
                    format!("{mirror} cannot mirror itself"),
                ));
            }
            if !mirrors.insert(mirror) {
                return Err((
                    format!("registries[{i}].mirrors[{j}]"),
                    format!("{mirror} is listed twice"),
                ));
            }
        }
    }
    Ok(())
}

/// Keys under each `[[registries]]` entry's `auth` whose values are
/// secrets.
pub const SECRET_AUTH_KEYS: &[&str] = &["password", "token"];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn host(s: &str) -> Result<RegistryHost, ValueError> {
        RegistryHost::try_from(s.to_owned())
    }

    #[test]
    fn hosts_are_names_or_addresses_with_an_optional_port() {
        assert!(host("registry.site.internal").is_ok());
        assert!(host("registry.site.internal:5000").is_ok());
        assert!(host("127.0.0.1:5000").is_ok());
        assert!(host("localhost").is_ok());
        for bad in [
            "",
            "https://registry.site.internal",
            "Registry.site.internal",
            "registry.site.internal/path",
            "registry.site.internal:0",
            "registry.site.internal:65536",
            "registry.site.internal:",
            "-bad.site.internal",
            "a..b",
        ] {
            assert!(host(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn auth_is_basic_or_token_never_both_and_never_shown() {
        let parse = |entry: &str| {
            let text = format!("[[registries]]\nhost = \"registry.site.internal\"\n{entry}\n");
            super::super::parse(text.as_bytes(), &super::super::ConfigOrigin::Default)
                .map_err(|e| crate::error_chain(&e))
        };
        let basic = parse("auth = { username = \"u\", password = \"hunter2\" }").unwrap();
        let shown = format!("{basic:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(parse("auth = { token = \"t0k3n\" }").is_ok());
        let both = parse("auth = { username = \"u\", password = \"s3cret\", token = \"t0k3n\" }")
            .unwrap_err();
        assert!(
            both.contains("either username and password, or token"),
            "{both}"
        );
        assert!(
            !both.contains("s3cret") && !both.contains("t0k3n"),
            "{both}"
        );
        let bad_secret =
            parse("auth = { username = \"u\", password = \"s3cret\\n\" }").unwrap_err();
        assert!(!bad_secret.contains("s3cret"), "{bad_secret}");
        assert!(parse("auth = { username = \"u\" }").is_err());
        assert!(parse("unknown = 1").is_err());
    }

    #[test]
    fn the_shown_config_redacts_every_registry_secret() {
        let text = "[[registries]]\nhost = \"a.site.internal\"\nauth = { username = \"u\", password = \"pw-secret\" }\n\n[[registries]]\nhost = \"b.site.internal\"\n\n[[registries]]\nhost = \"c.site.internal\"\n[registries.auth]\ntoken = \"tok-secret\"\n";
        let config =
            super::super::parse(text.as_bytes(), &super::super::ConfigOrigin::Default).unwrap();
        let active = super::super::ActiveConfig {
            config,
            origin: super::super::ConfigOrigin::Default,
            text: text.to_owned(),
        };
        let (shown, redacted) = active.redacted();
        assert!(
            !shown.contains("pw-secret") && !shown.contains("tok-secret"),
            "{shown}"
        );
        assert!(shown.contains("username = \"u\""), "{shown}");
        assert_eq!(
            redacted,
            ["registries[0].auth.password", "registries[2].auth.token"]
        );
    }

    #[test]
    fn a_ca_is_inline_pem_or_an_absolute_path() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["registry.site.internal".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let inline = RegistryCa::try_from(cert.pem()).unwrap();
        assert!(matches!(inline, RegistryCa::Inline(ref c) if c.len() == 1));
        assert!(matches!(
            RegistryCa::try_from("/etc/site-ca.pem".to_owned()).unwrap(),
            RegistryCa::File(_)
        ));
        assert!(RegistryCa::try_from("site-ca.pem".to_owned()).is_err());
        assert!(RegistryCa::try_from("-----BEGIN CERTIFICATE-----\nnope\n".to_owned()).is_err());
    }

    #[test]
    fn duplicate_hosts_and_self_mirrors_are_refused() {
        let entry = |h: &str, m: &[&str]| RegistryConfig {
            host: host(h).unwrap(),
            mirrors: m.iter().map(|m| host(m).unwrap()).collect(),
            auth: None,
            ca: None,
            plain_http: false,
        };
        assert!(validate(&[entry("a.site.internal", &["b.site.internal"])]).is_ok());
        assert!(validate(&[entry("a.site.internal", &["a.site.internal"])]).is_err());
        assert!(validate(&[entry("a.site.internal", &[]), entry("a.site.internal", &[])]).is_err());
        assert!(
            validate(&[entry(
                "a.site.internal",
                &["b.site.internal", "b.site.internal"]
            )])
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn host_parsing_never_panics_and_keeps_the_text(s in "\\PC{0,80}") {
            if let Ok(h) = host(&s) {
                prop_assert_eq!(h.as_str(), s.as_str());
                prop_assert!(!s.contains('/'));
            }
        }

        #[test]
        fn pem_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut text = b"-----BEGIN CERTIFICATE-----\n".to_vec();
            text.extend(bytes);
            let _ = parse_pem_certificates(&text);
        }
    }
}
