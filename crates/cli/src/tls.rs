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

use cluster::pki::IssuedCert;
pub use cluster::pki::tls::{FingerprintMismatch, SeenFingerprint, pinned_config};
use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

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
