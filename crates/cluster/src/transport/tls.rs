//! Who may talk on the peer port, in both directions.
//!
//! The server side reuses [`crate::pki::tls::server_config`]: TLS 1.3, a
//! client certificate chaining to the cluster CA is required by the
//! handshake itself. What the handshake cannot know is the role, so
//! [`node_of_certificate`] is asked right after it, before the connection
//! is handed to HTTP.
//!
//! The client side dials peers by IP address, and node certificates need
//! not carry every address a node is reached by (addresses change, NAT,
//! several interfaces). So the client does not check the IP SAN. It checks
//! what the directory actually promises: the chain ends at the cluster CA,
//! the certificate is a `cairn:node` one, and its common name is the node
//! name the directory holds for the Raft id being dialled
//! ([`NodeServerVerifier`]).

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, OtherError, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::pki::tls::{TlsConfigError, client_config, server_config};
use crate::pki::{IdentityError, IssuedCert, Role, SubjectName, SubjectNameError, peer_identity};

/// A peer certificate that does not name an acceptable node.
#[derive(Debug, thiserror::Error)]
pub enum PeerCertError {
    /// The certificate carries no readable Cairn identity.
    #[error("peer certificate carries no cairn identity")]
    Identity(#[source] IdentityError),
    /// The certificate belongs to an operator or another non-node role.
    #[error("peer certificate has role {role}, only cairn:node may use the peer port")]
    NotANode {
        /// The role it carries.
        role: Role,
    },
    /// The common name cannot be a node name.
    #[error("peer certificate common name is not a node name")]
    BadName(#[source] SubjectNameError),
    /// The certificate names another node than the directory expects.
    #[error("peer certificate names node {presented}, expected {expected}")]
    WrongNode {
        /// The node the directory holds for the dialled id.
        expected: SubjectName,
        /// The node the certificate names.
        presented: SubjectName,
    },
}

/// Reads the node name from a peer's end-entity certificate (DER), refusing
/// anything that is not a `cairn:node` certificate. The chain must already
/// have been verified (by the TLS handshake or [`NodeServerVerifier`]).
pub fn node_of_certificate(der: &[u8]) -> Result<SubjectName, PeerCertError> {
    let identity = peer_identity(der).map_err(PeerCertError::Identity)?;
    match identity.role {
        Role::Node => {
            SubjectName::try_from(identity.common_name.as_str()).map_err(PeerCertError::BadName)
        }
        role @ (Role::Admin | Role::Operator | Role::Reader) => {
            Err(PeerCertError::NotANode { role })
        }
    }
}

/// Building the transport's TLS material failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportTlsError {
    /// The CA or the node's certificate and key do not make a TLS
    /// configuration.
    #[error("cannot build the peer TLS configuration")]
    Config(#[source] TlsConfigError),
    /// The CA certificate is not a usable trust anchor.
    #[error("cluster CA certificate is not a usable trust anchor")]
    TrustAnchor(#[source] rustls::Error),
    /// The node's own certificate PEM does not parse.
    #[error("the node certificate is not valid PEM")]
    OwnCertPem(#[source] rustls_pki_types::pem::Error),
    /// The node's own certificate is not a node certificate.
    #[error("the transport needs a cairn:node certificate")]
    OwnCert(#[source] PeerCertError),
}

/// The cluster CA and this node's certificate, turned into the server
/// configuration and a template for per-peer client configurations.
#[derive(Clone)]
pub struct TransportTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    own_name: SubjectName,
}

impl fmt::Debug for TransportTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportTls")
            .field("own_name", &self.own_name)
            .finish_non_exhaustive()
    }
}

impl TransportTls {
    /// Builds the TLS material from the cluster CA certificate and this
    /// node's certificate and key, which must be a `cairn:node` certificate.
    pub fn new(ca: &CertificateDer<'_>, own: &IssuedCert) -> Result<Self, TransportTlsError> {
        let own_der = CertificateDer::from_pem_slice(own.cert_pem.as_bytes())
            .map_err(TransportTlsError::OwnCertPem)?;
        let own_name = node_of_certificate(&own_der).map_err(TransportTlsError::OwnCert)?;
        let server = server_config(ca, own).map_err(TransportTlsError::Config)?;
        let client = client_config(ca, own).map_err(TransportTlsError::Config)?;
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(TransportTlsError::TrustAnchor)?;
        Ok(TransportTls {
            server: Arc::new(server),
            client: Arc::new(client),
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            own_name,
        })
    }

    /// This node's name, from its certificate.
    pub fn own_name(&self) -> &SubjectName {
        &self.own_name
    }

    pub(super) fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    /// A client configuration that accepts only the node `expected`.
    pub(super) fn client_config_for(&self, expected: &SubjectName) -> Arc<ClientConfig> {
        let mut config = ClientConfig::clone(&self.client);
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(NodeServerVerifier {
                roots: Arc::clone(&self.roots),
                provider: Arc::clone(&self.provider),
                expected: expected.clone(),
            }));
        Arc::new(config)
    }
}

/// Accepts a server certificate when it chains to the cluster CA, is a
/// `cairn:node` certificate and names the `expected` node; the name the
/// connection was opened with (an IP address) is not consulted.
#[derive(Debug)]
pub struct NodeServerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    expected: SubjectName,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let refuse = |e: PeerCertError| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        };
        let presented = node_of_certificate(end_entity).map_err(refuse)?;
        if presented != self.expected {
            return Err(refuse(PeerCertError::WrongNode {
                expected: self.expected.clone(),
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    crate::pki::tls::handshake_signatures!(provider);
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::pki::{CertificateAuthority, NodeCertRequest};

    fn name(s: &str) -> SubjectName {
        SubjectName::try_from(s).expect("name")
    }

    fn node(ca: &CertificateAuthority, n: &str) -> IssuedCert {
        ca.issue_node(
            &NodeCertRequest {
                name: name(n),
                dns_names: vec![],
                ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            },
            SystemTime::now(),
        )
        .expect("issue")
    }

    fn der(cert: &IssuedCert) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("pem")
    }

    fn verifier(ca: &CertificateAuthority, expected: &str) -> NodeServerVerifier {
        let tls = TransportTls::new(ca.cert_der(), &node(ca, "self")).expect("tls");
        NodeServerVerifier {
            roots: tls.roots,
            provider: tls.provider,
            expected: name(expected),
        }
    }

    fn verify(
        v: &NodeServerVerifier,
        cert: &IssuedCert,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The address is deliberately one the certificate does not carry:
        // the verifier must not look at it.
        v.verify_server_cert(
            &der(cert),
            &[],
            &ServerName::from(IpAddr::V4(Ipv4Addr::new(10, 9, 8, 7))),
            &[],
            UnixTime::now(),
        )
    }

    fn our_error(err: &rustls::Error) -> &PeerCertError {
        let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = err else {
            panic!("not our refusal: {err:?}");
        };
        other
            .0
            .downcast_ref::<PeerCertError>()
            .expect("PeerCertError")
    }

    #[test]
    fn the_expected_node_is_accepted_whatever_address_was_dialled() {
        let ca = CertificateAuthority::create(&name("c"), SystemTime::now()).expect("ca");
        assert!(verify(&verifier(&ca, "node-2"), &node(&ca, "node-2")).is_ok());
    }

    #[test]
    fn another_node_of_the_same_cluster_is_refused_by_name() {
        let ca = CertificateAuthority::create(&name("c"), SystemTime::now()).expect("ca");
        let err = verify(&verifier(&ca, "node-2"), &node(&ca, "node-3")).expect_err("refused");
        assert!(matches!(
            our_error(&err),
            PeerCertError::WrongNode { expected, presented }
                if expected.as_str() == "node-2" && presented.as_str() == "node-3"
        ));
    }

    #[test]
    fn an_operator_certificate_named_like_the_node_is_refused() {
        let ca = CertificateAuthority::create(&name("c"), SystemTime::now()).expect("ca");
        let operator = ca
            .issue_client(
                &name("node-2"),
                Role::Admin,
                Duration::from_secs(600),
                SystemTime::now(),
            )
            .expect("issue");
        // Client certificates lack the serverAuth usage, so the chain check
        // already refuses them; either refusal is fine, acceptance is not.
        assert!(verify(&verifier(&ca, "node-2"), &operator).is_err());
        assert!(matches!(
            node_of_certificate(&der(&operator)),
            Err(PeerCertError::NotANode { role: Role::Admin })
        ));
    }

    #[test]
    fn a_node_certificate_from_another_ca_is_refused() {
        let ca = CertificateAuthority::create(&name("c"), SystemTime::now()).expect("ca");
        let other = CertificateAuthority::create(&name("c"), SystemTime::now()).expect("ca");
        let err = verify(&verifier(&ca, "node-2"), &node(&other, "node-2")).expect_err("refused");
        assert!(
            matches!(err, rustls::Error::InvalidCertificate(_)),
            "{err:?}"
        );
    }

    #[test]
    fn the_transport_refuses_to_run_with_a_non_node_certificate() {
        let ca = CertificateAuthority::create(&name("c"), SystemTime::now()).expect("ca");
        let admin = ca
            .issue_client(
                &name("a"),
                Role::Admin,
                Duration::from_secs(600),
                SystemTime::now(),
            )
            .expect("issue");
        assert!(matches!(
            TransportTls::new(ca.cert_der(), &admin),
            Err(TransportTlsError::OwnCert(PeerCertError::NotANode { .. }))
        ));
    }
}
