//! The two ways the CLI trusts a node.
//!
//! - A cluster member is verified like any TLS server, against the cluster
//!   CA from the context, with the endpoint's host as the server name; the
//!   CLI presents its client certificate ([`member_config`]).
//! - A node in maintenance mode has only a self-signed certificate, so the
//!   CLI pins it by the SHA-256 of the end-entity certificate
//!   ([`pinned_config`]). The handshake signature is still verified with
//!   the ring provider's algorithms, so a man in the middle who replays the
//!   node's certificate without its key fails. Without a pin the CLI
//!   accepts any certificate but records its fingerprint, so the caller can
//!   say what it trusted.

use std::sync::{Arc, Mutex, PoisonError};

use cluster::pki::{Fingerprint, IssuedCert};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::Context;

/// Building the member-mode TLS configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The context's CA is not a PEM certificate.
    #[error("the context's CA certificate is not valid PEM")]
    CaPem(#[source] rustls_pki_types::pem::Error),
    /// The client certificate or key is unusable.
    #[error("the context's client certificate or key is unusable")]
    Tls(#[source] cluster::pki::tls::TlsConfigError),
}

/// A configuration that trusts only the context's CA and presents its
/// client certificate.
pub fn member_config(context: &Context) -> Result<ClientConfig, CredentialError> {
    let ca = CertificateDer::from_pem_slice(context.ca_pem.as_bytes())
        .map_err(CredentialError::CaPem)?;
    let own = IssuedCert {
        cert_pem: context.cert_pem.clone(),
        key_pem: context.key_pem.clone(),
    };
    cluster::pki::tls::client_config(&ca, &own).map_err(CredentialError::Tls)
}

/// The node presented a certificate other than the pinned one.
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
