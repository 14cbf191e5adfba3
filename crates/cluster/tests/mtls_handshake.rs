//! Real TLS 1.3 handshakes on 127.0.0.1 between a tokio-rustls server and
//! client built from cluster PKI material.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cluster::pki::tls::{client_config, server_config};
use cluster::pki::{
    CertificateAuthority, IssuedCert, NodeCertRequest, NodeCsr, PeerIdentity, Role, SubjectName,
    node_csr, peer_identity,
};
use rustls::CertificateError;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn name(s: &str) -> SubjectName {
    SubjectName::try_from(s).expect("valid test name")
}

fn node_request() -> NodeCertRequest {
    NodeCertRequest {
        name: name("node-1"),
        dns_names: vec!["node-1.cairn.internal".to_owned()],
        ip_addresses: vec![LOCALHOST],
    }
}

/// A node certificate made the way a joining node gets one: key and CSR on
/// the node, signature on the CA.
fn node_cert_via_csr(ca: &CertificateAuthority) -> IssuedCert {
    let csr = node_csr(&node_request()).expect("node csr");
    let parsed = NodeCsr::from_der(&csr.csr_der).expect("csr verifies");
    let cert_pem = ca
        .sign_node_csr(&parsed, SystemTime::now())
        .expect("sign node csr");
    IssuedCert {
        cert_pem,
        key_pem: csr.key_pem,
    }
}

/// What each side of one handshake saw.
struct Outcome {
    server: std::io::Result<PeerIdentity>,
    /// The protocol version the server negotiated, when it got that far.
    version: Option<rustls::ProtocolVersion>,
    client_reply: std::io::Result<Vec<u8>>,
}

/// Runs one connection: the server accepts, reads the client's peer
/// identity and answers "pong" to "ping"; the client trusts `client_ca`.
async fn handshake(
    server_ca: &CertificateAuthority,
    server_cert: &IssuedCert,
    client_ca: &CertificateAuthority,
    client_cert: &IssuedCert,
) -> Outcome {
    let acceptor = TlsAcceptor::from(Arc::new(
        server_config(server_ca.cert_der(), server_cert).expect("server config"),
    ));
    let connector = TlsConnector::from(Arc::new(
        client_config(client_ca.cert_der(), client_cert).expect("client config"),
    ));
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let addr = listener.local_addr().expect("local addr");

    let (version_tx, version_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let (_, conn) = tls.get_ref();
        // The receiver lives until the outcome is assembled below.
        let _ = version_tx.send(conn.protocol_version());
        let leaf = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| std::io::Error::other("no client certificate"))?;
        let identity = peer_identity(leaf).map_err(std::io::Error::other)?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok::<_, std::io::Error>(identity)
    });

    let client_reply = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = connector
            .connect(ServerName::IpAddress(LOCALHOST.into()), tcp)
            .await?;
        tls.write_all(b"ping").await?;
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await?;
        Ok(reply)
    }
    .await;

    let server = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server finishes")
        .expect("server task does not panic");
    Outcome {
        server,
        version: version_rx.await.ok().flatten(),
        client_reply,
    }
}

fn certificate_error(result: &std::io::Result<PeerIdentity>) -> CertificateError {
    let err = result.as_ref().expect_err("server refused the handshake");
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(cert_err)) => cert_err.clone(),
        other => panic!("expected a certificate error, got {other:?} ({err})"),
    }
}

#[tokio::test]
async fn admin_client_completes_tls13_handshake_and_server_sees_its_role() {
    let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
    let server_cert = node_cert_via_csr(&ca);
    let admin = ca
        .issue_client(
            &name("alice"),
            Role::Admin,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .expect("admin cert");

    let outcome = handshake(&ca, &server_cert, &ca, &admin).await;

    assert_eq!(outcome.client_reply.expect("client round trip"), b"pong");
    assert_eq!(outcome.version, Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(
        outcome.server.expect("server accepted"),
        PeerIdentity {
            common_name: "alice".to_owned(),
            role: Role::Admin,
        }
    );
}

#[tokio::test]
async fn node_certificate_works_as_a_client_certificate_between_peers() {
    let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
    let server_cert = node_cert_via_csr(&ca);
    let peer = ca
        .issue_node(
            &NodeCertRequest {
                name: name("node-2"),
                dns_names: vec![],
                ip_addresses: vec![],
            },
            SystemTime::now(),
        )
        .expect("peer node cert");

    let outcome = handshake(&ca, &server_cert, &ca, &peer).await;

    assert_eq!(outcome.client_reply.expect("client round trip"), b"pong");
    let identity = outcome.server.expect("server accepted");
    assert_eq!(identity.role, Role::Node);
    assert_eq!(identity.common_name, "node-2");
}

/// A CA with another name is simply unknown; one that reuses the cluster's
/// name (another cluster called the same, or a forgery) is found by name and
/// then fails the signature check. Both must be refused.
fn rogue_cases() -> [(CertificateAuthority, CertificateError); 2] {
    let now = SystemTime::now();
    [
        (
            CertificateAuthority::create(&name("elsewhere"), now).expect("rogue"),
            CertificateError::UnknownIssuer,
        ),
        (
            CertificateAuthority::create(&name("test"), now).expect("same-named rogue"),
            CertificateError::BadSignature,
        ),
    ]
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
    let server_cert = node_cert_via_csr(&ca);
    for (rogue_ca, expected) in rogue_cases() {
        let rogue_admin = rogue_ca
            .issue_client(
                &name("mallory"),
                Role::Admin,
                Duration::from_secs(3600),
                SystemTime::now(),
            )
            .expect("rogue admin cert");

        // The client trusts the real CA (so it gets as far as sending its
        // certificate); the server must refuse the rogue one.
        let outcome = handshake(&ca, &server_cert, &ca, &rogue_admin).await;

        assert_eq!(certificate_error(&outcome.server), expected);
        assert!(
            outcome.client_reply.is_err(),
            "client must not get a reply after being refused"
        );
    }
}

#[tokio::test]
async fn expired_client_certificate_is_refused_at_the_handshake() {
    let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
    let server_cert = node_cert_via_csr(&ca);
    // Issued two days ago for one hour: not-after is long past.
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    let expired = ca
        .issue_client(
            &name("bob"),
            Role::Admin,
            Duration::from_secs(3600),
            two_days_ago,
        )
        .expect("expired cert");

    let outcome = handshake(&ca, &server_cert, &ca, &expired).await;

    let err = certificate_error(&outcome.server);
    assert!(
        matches!(
            err,
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        ),
        "expected an expiry error, got {err:?}"
    );
    assert!(outcome.client_reply.is_err());
}

#[tokio::test]
async fn client_refuses_a_server_whose_certificate_is_from_another_ca() {
    let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
    let admin = ca
        .issue_client(
            &name("alice"),
            Role::Admin,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .expect("admin cert");
    for (rogue_ca, expected) in rogue_cases() {
        let rogue_server = node_cert_via_csr(&rogue_ca);

        let outcome = handshake(&rogue_ca, &rogue_server, &ca, &admin).await;

        let err = outcome.client_reply.expect_err("client refuses the server");
        match err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(got)) => assert_eq!(got, &expected),
            other => panic!("expected a certificate error, got {other:?} ({err})"),
        }
        assert!(outcome.server.is_err());
    }
}
