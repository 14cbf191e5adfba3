//! rustls configurations for cluster mTLS.
//!
//! Both sides speak TLS 1.3 only, use the ring provider picked here (never a
//! process-wide default, which would make behaviour depend on whichever crate
//! installed one first) and trust exactly one anchor: the cluster CA.
//!
//! One client configuration trusts no CA at all: [`pinned_config`], for a
//! node in maintenance mode, which has only a self-signed certificate. The
//! client pins it by the SHA-256 of the end-entity certificate (the
//! fingerprint the node prints on its console). The handshake signature is
//! still verified with the ring provider's algorithms, so a man in the
//! middle who replays the node's certificate without its key fails.
//! Without a pin any certificate is accepted, but its fingerprint is
//! recorded so that the caller can say what it trusted.
//!
//! A joining node knows the cluster only by its CA's fingerprint (from the
//! join command). [`ca_pinned_config`] looks for a certificate with that
//! fingerprint among the ones the member sent after its own (members send
//! the CA with their chain) and then verifies the member's certificate
//! against it like any CA-rooted server: chain, validity, and the name or
//! address the node was reached by.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, OtherError, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::{Fingerprint, IssuedCert};

/// The three handshake-signature methods of a rustls certificate verifier,
/// checked with the algorithms of the crypto provider in `self.$provider`.
/// Every verifier in this crate judges certificates its own way but proves
/// key possession the same way; this is that way, written once.
macro_rules! handshake_signatures {
    ($provider:ident) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls_pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.$provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.$provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}
pub(crate) use handshake_signatures;

/// Building a TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The CA certificate is not a usable trust anchor.
    #[error("cluster CA certificate is not a usable trust anchor")]
    TrustAnchor(#[source] rustls::Error),
    /// The certificate PEM holds no certificate or does not parse.
    #[error("certificate is not valid PEM")]
    CertPem(#[source] rustls_pki_types::pem::Error),
    /// The key PEM holds no private key or does not parse.
    #[error("private key is not valid PEM")]
    KeyPem(#[source] rustls_pki_types::pem::Error),
    /// The peer verifier could not be built.
    #[error("cannot build the certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls refused the protocol versions, certificate or key.
    #[error("rustls refused the configuration")]
    Config(#[source] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'_>) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone().into_owned())
        .map_err(TlsConfigError::TrustAnchor)?;
    Ok(Arc::new(roots))
}

fn identity(
    own: &IssuedCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsConfigError> {
    let chain = CertificateDer::pem_slice_iter(own.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsConfigError::CertPem)?;
    if chain.is_empty() {
        return Err(TlsConfigError::CertPem(
            rustls_pki_types::pem::Error::NoItemsFound,
        ));
    }
    let key =
        PrivateKeyDer::from_pem_slice(own.key_pem.as_bytes()).map_err(TlsConfigError::KeyPem)?;
    Ok((chain, key))
}

/// A server configuration that presents `own` and requires every client to
/// present a certificate chaining to `ca`.
pub fn server_config(
    ca: &CertificateDer<'_>,
    own: &IssuedCert,
) -> Result<ServerConfig, TlsConfigError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .build()
        .map_err(TlsConfigError::Verifier)?;
    let (chain, key) = identity(own)?;
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsConfigError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsConfigError::Config)
}

/// A client configuration that trusts only `ca` and presents `own`.
pub fn client_config(
    ca: &CertificateDer<'_>,
    own: &IssuedCert,
) -> Result<ClientConfig, TlsConfigError> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider.clone())
        .build()
        .map_err(TlsConfigError::Verifier)?;
    let (chain, key) = identity(own)?;
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsConfigError::Config)?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(TlsConfigError::Config)
}

/// The server presented a certificate other than the pinned one.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("the node's certificate fingerprint {seen} does not match the pinned {pinned}")]
pub struct FingerprintMismatch {
    /// What the node presented.
    pub seen: Fingerprint,
    /// What the operator pinned.
    pub pinned: Fingerprint,
}

/// The fingerprint a pinned connection saw, readable after the handshake.
#[derive(Clone, Debug, Default)]
pub struct SeenFingerprint(Arc<Mutex<Option<Fingerprint>>>);

impl SeenFingerprint {
    /// The end-entity fingerprint of the last handshake, if one got that
    /// far.
    pub fn get(&self) -> Option<Fingerprint> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, fingerprint: Fingerprint) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(fingerprint);
    }
}

#[derive(Debug)]
struct PinnedVerifier {
    pinned: Option<Fingerprint>,
    seen: SeenFingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of_der(end_entity);
        self.seen.set(seen);
        match self.pinned {
            Some(pinned) if pinned != seen => Err(rustls::Error::InvalidCertificate(
                CertificateError::Other(OtherError(Arc::new(FingerprintMismatch { seen, pinned }))),
            )),
            Some(_) | None => Ok(ServerCertVerified::assertion()),
        }
    }

    handshake_signatures!(provider);
}

/// A TLS 1.3 configuration for a node in maintenance mode: the server
/// certificate must have the `pinned` fingerprint (any, when `None`); the
/// fingerprint seen is recorded in the returned handle. No client
/// certificate is presented.
pub fn pinned_config(
    pinned: Option<Fingerprint>,
) -> Result<(ClientConfig, SeenFingerprint), rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let seen = SeenFingerprint::default();
    let verifier = PinnedVerifier {
        pinned,
        seen: seen.clone(),
        provider: provider.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok((config, seen))
}

/// The member's chain does not contain the pinned CA.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("the cluster's CA is not the pinned {pinned} (the member sent {})", list(.sent))]
pub struct CaMismatch {
    /// What the joining node pinned.
    pub pinned: Fingerprint,
    /// The fingerprints of the certificates the member sent after its own.
    pub sent: Vec<Fingerprint>,
}

fn list(fingerprints: &[Fingerprint]) -> String {
    if fingerprints.is_empty() {
        return "no CA certificate".to_owned();
    }
    fingerprints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug)]
struct CaPinnedVerifier {
    pinned: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CaPinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| Fingerprint::of_der(c) == self.pinned)
        else {
            let mismatch = CaMismatch {
                pinned: self.pinned,
                sent: intermediates
                    .iter()
                    .map(|c| Fingerprint::of_der(c))
                    .collect(),
            };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(mismatch)),
            )));
        };
        let roots = roots(ca).map_err(|e| match e {
            TlsConfigError::TrustAnchor(inner) => inner,
            other => rustls::Error::General(other.to_string()),
        })?;
        let inner = WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    handshake_signatures!(provider);
}

/// A TLS 1.3 configuration for a node that is joining: the server must be
/// a member whose certificate chains to the CA with fingerprint `ca`, sent
/// along in its chain. No client certificate is presented (the join token
/// in the request is the credential).
pub fn ca_pinned_config(ca: Fingerprint) -> Result<ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = CaPinnedVerifier {
        pinned: ca,
        provider: provider.clone(),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::SignatureScheme;

    fn verifier(pinned: Option<Fingerprint>) -> PinnedVerifier {
        PinnedVerifier {
            pinned,
            seen: SeenFingerprint::default(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    fn verify(v: &PinnedVerifier, der: &[u8]) -> Result<ServerCertVerified, rustls::Error> {
        v.verify_server_cert(
            &CertificateDer::from(der.to_vec()),
            &[],
            &ServerName::try_from("node").expect("name"),
            &[],
            UnixTime::now(),
        )
    }

    #[test]
    fn the_pinned_certificate_is_accepted_and_recorded() {
        let der = b"certificate bytes";
        let v = verifier(Some(Fingerprint::of_der(der)));
        assert!(verify(&v, der).is_ok());
        assert_eq!(v.seen.get(), Some(Fingerprint::of_der(der)));
    }

    #[test]
    fn another_certificate_is_refused_naming_both_fingerprints() {
        let pinned = Fingerprint::of_der(b"expected");
        let v = verifier(Some(pinned));
        let err = verify(&v, b"presented").expect_err("mismatch");
        let rustls::Error::InvalidCertificate(CertificateError::Other(other)) = &err else {
            panic!("unexpected error {err:?}");
        };
        let mismatch = other.0.downcast_ref::<FingerprintMismatch>().expect("ours");
        assert_eq!(mismatch.pinned, pinned);
        assert_eq!(mismatch.seen, Fingerprint::of_der(b"presented"));
    }

    #[test]
    fn without_a_pin_any_certificate_is_accepted_but_recorded() {
        let v = verifier(None);
        assert!(verify(&v, b"whatever").is_ok());
        assert_eq!(v.seen.get(), Some(Fingerprint::of_der(b"whatever")));
    }

    #[test]
    fn the_pinned_verifier_checks_handshake_signatures_with_ring_algorithms() {
        let v = verifier(None);
        let schemes = v.supported_verify_schemes();
        // Cairn's keys are ECDSA P-256; without this scheme no handshake
        // with a node could be verified.
        assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP256_SHA256));
        assert!(!schemes.contains(&SignatureScheme::RSA_PKCS1_SHA1));
    }

    mod ca_pinning {
        use super::*;
        use crate::pki::{CertificateAuthority, NodeCertRequest, SubjectName};
        use std::net::{IpAddr, Ipv4Addr};
        use std::time::SystemTime;

        fn ca(name: &str) -> CertificateAuthority {
            CertificateAuthority::create(
                &SubjectName::try_from(name).expect("name"),
                SystemTime::now(),
            )
            .expect("ca")
        }

        fn leaf(ca: &CertificateAuthority) -> CertificateDer<'static> {
            let request = NodeCertRequest {
                name: SubjectName::try_from("n1").expect("name"),
                dns_names: vec!["n1".into()],
                ip_addresses: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))],
            };
            let issued = ca.issue_node(&request, SystemTime::now()).expect("node");
            CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).expect("pem")
        }

        fn verify(
            pinned: &CertificateAuthority,
            leaf: &CertificateDer<'_>,
            sent: &[CertificateDer<'_>],
            name: &str,
        ) -> Result<ServerCertVerified, rustls::Error> {
            let verifier = CaPinnedVerifier {
                pinned: pinned.fingerprint(),
                provider: provider(),
            };
            verifier.verify_server_cert(
                leaf,
                sent,
                &ServerName::try_from(name.to_owned()).expect("server name"),
                &[],
                UnixTime::now(),
            )
        }

        #[test]
        fn a_member_of_the_pinned_cluster_is_trusted_by_the_address_it_was_reached_on() {
            let cluster = ca("lab");
            let leaf = leaf(&cluster);
            assert!(verify(&cluster, &leaf, &[cluster.cert_der().clone()], "10.0.0.5").is_ok());
            assert!(verify(&cluster, &leaf, &[cluster.cert_der().clone()], "10.0.0.6").is_err());
        }

        #[test]
        fn a_member_of_another_cluster_is_refused_naming_both_fingerprints() {
            let pinned = ca("lab");
            let other = ca("other");
            let err = verify(
                &pinned,
                &leaf(&other),
                &[other.cert_der().clone()],
                "10.0.0.5",
            )
            .expect_err("another cluster");
            let rustls::Error::InvalidCertificate(CertificateError::Other(other_error)) = &err
            else {
                panic!("unexpected {err:?}");
            };
            let mismatch = other_error
                .0
                .downcast_ref::<CaMismatch>()
                .expect("a CaMismatch");
            assert_eq!(mismatch.pinned, pinned.fingerprint());
            assert_eq!(mismatch.sent, [other.fingerprint()]);
        }

        #[test]
        fn sending_the_pinned_ca_does_not_vouch_for_a_leaf_it_did_not_sign() {
            let pinned = ca("lab");
            let other = ca("other");
            assert!(
                verify(
                    &pinned,
                    &leaf(&other),
                    &[pinned.cert_der().clone()],
                    "10.0.0.5"
                )
                .is_err()
            );
        }
    }
}
