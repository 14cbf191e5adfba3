//! A test client of the node API: TLS 1.3 to one node's address, trusting
//! a maintenance node blindly or a member by the cluster CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::ApiError;
use api::types::IssuedCertificate;
use cluster::pki::{self, IssuedCert, SubjectName};
use http_body_util::BodyExt;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

/// A TLS 1.3 client of one node's API, a fresh connection per request.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    addr: SocketAddr,
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
}

fn own(cert: &IssuedCert) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    (chain, key)
}

impl Client {
    /// Trusts whatever certificate a maintenance-mode node presents
    /// (pinning is the CLI's business and is tested there).
    pub fn maintenance(addr: &str) -> Self {
        let (config, _seen) = pki::tls::pinned_config(None).unwrap();
        Self {
            config: Arc::new(config),
            addr: addr.parse().unwrap(),
        }
    }

    pub fn member(addr: &str, ca_pem: &str, identity: Option<&IssuedCert>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = builder().with_root_certificates(roots);
        let config = match identity {
            Some(cert) => {
                let (chain, key) = own(cert);
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        Self {
            config: Arc::new(config),
            addr: addr.parse().unwrap(),
        }
    }

    /// The same credentials against another node.
    pub fn at(&self, addr: &str) -> Self {
        Self {
            config: Arc::clone(&self.config),
            addr: addr.parse().unwrap(),
        }
    }

    /// Sends one request on a fresh connection and returns the response.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> hyper::Response<hyper::body::Incoming> {
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        self.send_raw(method, path, "application/json", bytes).await
    }

    /// Sends `bytes` of `content_type` on a fresh connection and returns
    /// the response.
    pub async fn send_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> hyper::Response<hyper::body::Incoming> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.config));
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", content_type)
            .body(http_body_util::Full::new(hyper::body::Bytes::from(bytes)))
            .unwrap();
        sender.send_request(request).await.unwrap()
    }

    /// One request: status and body.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let response = self.send(method, path, body).await;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Opens a streaming GET and returns the body to read frames from.
    pub async fn stream(&self, path: &str) -> hyper::body::Incoming {
        let response = self.send("GET", path, None).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], api::NDJSON);
        response.into_body()
    }

    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> T {
        let (status, text) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {text}"
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
    }
}

pub fn error_of(status: u16, text: &str) -> ApiError {
    let error: ApiError =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not an ApiError ({e}): {text}"));
    assert_eq!(error.code.status(), status, "{text}");
    error
}

pub async fn wait_for_api(client: &Client) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(client.addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the API did not start listening on {}", client.addr);
}

/// A client key pair and CSR for `name`.
pub fn csr(name: &str) -> pki::CsrWithKey {
    pki::client_csr(&SubjectName::try_from(name).unwrap()).unwrap()
}

pub fn with_key(issued: &IssuedCertificate, key: &pki::CsrWithKey) -> IssuedCert {
    IssuedCert {
        cert_pem: issued.cert_pem.clone(),
        key_pem: key.key_pem.clone(),
    }
}
