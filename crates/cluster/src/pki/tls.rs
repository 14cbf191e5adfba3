//! rustls configurations for cluster mTLS.
//!
//! Both sides speak TLS 1.3 only, use the ring provider picked here (never a
//! process-wide default, which would make behaviour depend on whichever crate
//! installed one first) and trust exactly one anchor: the cluster CA.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::IssuedCert;

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
