//! TLS 1.3 client configurations and single requests.
//!
//! Two kinds of client exist. Before bootstrap the node presents a
//! self-signed certificate and prints its fingerprint on the console, so the
//! bench pins exactly that certificate, as `cairn cluster init --fingerprint`
//! does. After bootstrap every client trusts only the cluster CA and
//! presents a certificate the node issued.
//!
//! Session resumption is turned off on every client: a resumed TLS 1.3
//! handshake skips the certificate exchange, and the issue asks for
//! handshakes in the numbers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster::pki::{Fingerprint, IssuedCert};
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::wire::{self, HeadError, ResponseHead};

/// The name clients ask for; node certificates carry `localhost`.
pub const SERVER_NAME: &str = "localhost";

/// Building a client configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    /// The CA certificate is not PEM.
    #[error("cluster CA certificate is not valid PEM")]
    CaPem(#[source] rustls_pki_types::pem::Error),
    /// The cluster PKI refused the material.
    #[error("cannot build the mTLS client configuration")]
    Tls(#[source] cluster::pki::tls::TlsConfigError),
    /// rustls refused the protocol version.
    #[error("rustls refused the configuration")]
    Rustls(#[source] rustls::Error),
}

/// A member client: trusts only `ca_pem`, presents `identity`, never resumes.
///
/// # Errors
/// [`ClientConfigError`] if the material does not parse.
pub fn member_config(
    ca_pem: &str,
    identity: &IssuedCert,
) -> Result<Arc<ClientConfig>, ClientConfigError> {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(ClientConfigError::CaPem)?;
    let mut config =
        cluster::pki::tls::client_config(&ca, identity).map_err(ClientConfigError::Tls)?;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// A maintenance-mode client: accepts only the certificate with `pinned`
/// fingerprint (the cluster PKI's pinning verifier, as the CLI uses it),
/// presents none, never resumes.
///
/// # Errors
/// [`ClientConfigError`] if rustls refuses TLS 1.3.
pub fn pinned_config(pinned: Fingerprint) -> Result<Arc<ClientConfig>, ClientConfigError> {
    let (mut config, _seen) =
        cluster::pki::tls::pinned_config(Some(pinned)).map_err(ClientConfigError::Rustls)?;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// One request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// TCP connect failed.
    #[error("connect")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake")]
    Handshake(#[source] std::io::Error),
    /// Writing the request failed.
    #[error("writing the request")]
    Write(#[source] std::io::Error),
    /// Reading the response failed.
    #[error("reading the response")]
    Read(#[source] std::io::Error),
    /// The server closed before the response was complete.
    #[error("connection closed after {0} bytes, before the response was complete")]
    Closed(usize),
    /// The response head is unusable.
    #[error("bad response head")]
    Head(#[source] HeadError),
    /// The whole request took too long.
    #[error("no complete response within {0:?}")]
    Timeout(Duration),
}

/// Opens TCP and completes a TLS handshake to `addr`.
///
/// # Errors
/// [`RequestError::Connect`] or [`RequestError::Handshake`].
pub async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> Result<TlsStream<TcpStream>, RequestError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(RequestError::Connect)?;
    tcp.set_nodelay(true).map_err(RequestError::Connect)?;
    let name = ServerName::try_from(SERVER_NAME)
        .map_err(|e| RequestError::Connect(std::io::Error::other(e)))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(RequestError::Handshake)
}

/// Writes `request` on `stream` and reads one complete response into `buf`
/// (cleared first). Returns its head; `buf` then holds head and body.
///
/// # Errors
/// [`RequestError`] for I/O failures, an early close or a bad head.
pub async fn exchange(
    stream: &mut TlsStream<TcpStream>,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<ResponseHead, RequestError> {
    stream
        .write_all(request)
        .await
        .map_err(RequestError::Write)?;
    stream.flush().await.map_err(RequestError::Write)?;
    buf.clear();
    let mut head = None;
    let mut chunk = [0u8; 8192];
    loop {
        if head.is_none() {
            head = wire::parse_head(buf).map_err(RequestError::Head)?;
        }
        if let Some(h) = &head
            && buf.len() >= h.total_len()
        {
            buf.truncate(h.total_len());
            return Ok(h.clone());
        }
        let n = stream.read(&mut chunk).await.map_err(RequestError::Read)?;
        if n == 0 {
            return Err(RequestError::Closed(buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One request on a fresh connection, for setup calls: status and body.
///
/// # Errors
/// [`RequestError`] if the exchange fails or takes longer than `timeout`.
pub async fn call(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), RequestError> {
    let connector = TlsConnector::from(Arc::clone(config));
    let work = async {
        let mut stream = connect(&connector, addr).await?;
        let mut buf = Vec::new();
        let head = exchange(
            &mut stream,
            &wire::request(method, path, json_body, false),
            &mut buf,
        )
        .await?;
        let body = buf.get(head.head_len..).unwrap_or_default().to_vec();
        Ok((head.status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| RequestError::Timeout(timeout))?
}
