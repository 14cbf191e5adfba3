//! The node's TLS identity in each mode, and when to renew it.
//!
//! - Maintenance: a self-signed certificate made at start; clients pin its
//!   fingerprint. Client certificates are not asked for.
//! - Member: the node certificate from the cluster CA; clients must
//!   present a certificate from the same CA (checked per connection, see
//!   [`super::auth`]).
//!
//! Node certificates carry the node's name, `localhost`, the loopback
//! addresses and every address the node holds, so clients can verify the
//! server by whatever address they reach it on. [`renewal_due`] says when
//! to issue a new one: in the last third of its life, or when the node's
//! name or addresses are no longer all in it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use cluster::pki::{CertSummary, IssuedCert, NodeCertRequest, SubjectName, SubjectNameError};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::auth::DeferredClientVerifier;

/// The prefix `cluster::pki` puts before the cluster name in the CA's
/// common name.
const CA_NAME_PREFIX: &str = "Cairn cluster CA ";

/// The cluster name out of the CA's common name.
pub fn cluster_name(ca_common_name: &str) -> &str {
    ca_common_name
        .strip_prefix(CA_NAME_PREFIX)
        .unwrap_or(ca_common_name)
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate PEM does not parse.
    #[error("certificate PEM does not parse")]
    CertPem(#[source] rustls_pki_types::pem::Error),
    /// The key PEM does not parse.
    #[error("private key PEM does not parse")]
    KeyPem(#[source] rustls_pki_types::pem::Error),
    /// The CA cannot be a trust root.
    #[error("the cluster CA cannot be used as a trust root")]
    Root(#[source] rustls::Error),
    /// rustls refused the verifier.
    #[error("cannot build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration")]
    Config(#[source] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn own(
    cert: &IssuedCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsSetupError> {
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsSetupError::CertPem)?;
    let key =
        PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(TlsSetupError::KeyPem)?;
    Ok((chain, key))
}

/// TLS 1.3 with the self-signed certificate and no client authentication.
pub fn maintenance_tls(cert: &IssuedCert) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let (chain, key) = own(cert)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(TlsSetupError::Config)?;
    Ok(Arc::new(config))
}

/// A member's TLS: the node certificate followed by the CA, client
/// certificates offered and checked against the CA per connection. Returns the config and the
/// verifier that judges the chains.
pub fn member_tls(
    ca: &CertificateDer<'static>,
    node: &IssuedCert,
) -> Result<(Arc<ServerConfig>, Arc<dyn ClientCertVerifier>), TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(TlsSetupError::Root)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(TlsSetupError::Verifier)?;
    let (mut chain, key) = own(node)?;
    // The CA travels with the chain: a joining node knows the cluster
    // only by the CA's fingerprint and finds the CA here.
    chain.push(ca.clone());
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsSetupError::Config)?
        .with_client_cert_verifier(Arc::new(DeferredClientVerifier::new(verifier.clone())))
        .with_single_cert(chain, key)
        .map_err(TlsSetupError::Config)?;
    Ok((Arc::new(config), verifier))
}

/// The request for a node certificate naming `name` and `addresses`.
pub fn node_request(name: &str, addresses: &[IpAddr]) -> Result<NodeCertRequest, SubjectNameError> {
    let mut ip_addresses = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for a in addresses {
        if !ip_addresses.contains(a) {
            ip_addresses.push(*a);
        }
    }
    let mut dns_names = vec![name.to_owned()];
    if name != "localhost" {
        dns_names.push("localhost".to_owned());
    }
    Ok(NodeCertRequest {
        name: SubjectName::try_from(name)?,
        dns_names,
        ip_addresses,
    })
}

/// Why a node certificate should be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewReason {
    /// Two thirds of its life are gone.
    Ageing,
    /// The node's name or an address is not in it.
    NamesChanged,
}

/// Whether the node certificate `current` should be renewed at `now` for a
/// node called `name` holding `addresses`.
pub fn renewal_due(
    current: &CertSummary,
    now: SystemTime,
    name: &str,
    addresses: &[IpAddr],
) -> Option<RenewReason> {
    let life = current
        .not_after
        .duration_since(current.not_before)
        .unwrap_or_default();
    let renew_at = current.not_before + life / 3 * 2;
    if now >= renew_at {
        return Some(RenewReason::Ageing);
    }
    let named = current.dns_names.iter().any(|n| n == name);
    let addressed = addresses.iter().all(|a| current.ip_addresses.contains(a));
    (!named || !addressed).then_some(RenewReason::NamesChanged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn summary(not_before: u64, not_after: u64, name: &str, ips: &[IpAddr]) -> CertSummary {
        CertSummary {
            common_name: name.into(),
            not_before: SystemTime::UNIX_EPOCH + Duration::from_secs(not_before),
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(not_after),
            fingerprint: cluster::pki::Fingerprint::of_der(b"x"),
            dns_names: vec![name.into(), "localhost".into()],
            ip_addresses: ips.to_vec(),
        }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 6));

    #[test]
    fn a_certificate_is_renewed_in_the_last_third_of_its_life() {
        let cert = summary(0, 300, "n1", &[A]);
        assert_eq!(renewal_due(&cert, at(199), "n1", &[A]), None);
        assert_eq!(
            renewal_due(&cert, at(200), "n1", &[A]),
            Some(RenewReason::Ageing)
        );
        assert_eq!(
            renewal_due(&cert, at(400), "n1", &[A]),
            Some(RenewReason::Ageing)
        );
    }

    #[test]
    fn a_certificate_is_renewed_when_the_name_or_an_address_changes() {
        let cert = summary(0, 300, "n1", &[A]);
        assert_eq!(
            renewal_due(&cert, at(10), "n2", &[A]),
            Some(RenewReason::NamesChanged)
        );
        assert_eq!(
            renewal_due(&cert, at(10), "n1", &[A, B]),
            Some(RenewReason::NamesChanged)
        );
        assert_eq!(
            renewal_due(&cert, at(10), "n1", &[]),
            None,
            "losing an address is harmless"
        );
    }

    #[test]
    fn node_requests_cover_loopback_and_every_address_once() {
        let request = node_request("n1", &[A, A, B]).unwrap();
        assert_eq!(request.dns_names, ["n1", "localhost"]);
        assert_eq!(request.ip_addresses.len(), 4);
        assert!(node_request("bad name!", &[]).is_err());
    }

    #[test]
    fn the_cluster_name_comes_out_of_the_ca_name() {
        assert_eq!(cluster_name("Cairn cluster CA lab"), "lab");
        assert_eq!(cluster_name("other"), "other");
    }
}
