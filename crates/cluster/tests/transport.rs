//! The peer transport over real TLS on 127.0.0.1: who may send, what gets
//! dropped and counted, and how peers come and go.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cluster::pki::tls::client_config;
use cluster::pki::{CertificateAuthority, IssuedCert, NodeCertRequest, Role, SubjectName};
use cluster::transport::frame::encode_frame;
use cluster::transport::{
    Inbound, MAX_MESSAGE_BYTES, PEER_QUEUE_MESSAGES, PeerConnection, PeerDirectory, PeerEvent,
    RAFT_STREAM_PATH, SENDER_HEADER, Transport, TransportStats, TransportTls,
};
use raft::eraftpb::{Message, MessageType, Snapshot};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Generous: debug builds on a busy two-core machine.
const PATIENCE: Duration = Duration::from_secs(15);

fn name(s: &str) -> SubjectName {
    SubjectName::try_from(s).expect("valid test name")
}

fn new_ca() -> CertificateAuthority {
    CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca")
}

fn node_cert(ca: &CertificateAuthority, node: &str) -> IssuedCert {
    ca.issue_node(
        &NodeCertRequest {
            name: name(node),
            dns_names: vec![],
            ip_addresses: vec![LOCALHOST],
        },
        SystemTime::now(),
    )
    .expect("node cert")
}

fn client_cert(ca: &CertificateAuthority, user: &str, role: Role) -> IssuedCert {
    ca.issue_client(
        &name(user),
        role,
        Duration::from_secs(600),
        SystemTime::now(),
    )
    .expect("client cert")
}

/// An address on which nothing listens: a privileged port no test binds.
/// (A port freed by dropping a listener could be handed to another
/// transport in the same run, whose refusals would skew the counters.)
fn dead_addr() -> SocketAddr {
    SocketAddr::new(LOCALHOST, 1)
}

struct Node {
    transport: Transport,
    inbox: mpsc::Receiver<Inbound>,
}

async fn start_at(
    ca: &CertificateAuthority,
    cert: &IssuedCert,
    id: u64,
    listen: SocketAddr,
    directory: PeerDirectory,
) -> Node {
    let tls = TransportTls::new(ca.cert_der(), cert).expect("transport tls");
    let (events, inbox) = mpsc::channel(1024);
    let transport = Transport::start(listen, tls, id, directory, events)
        .await
        .expect("transport starts");
    Node { transport, inbox }
}

async fn start(ca: &CertificateAuthority, cert: &IssuedCert, id: u64) -> Node {
    start_at(
        ca,
        cert,
        id,
        SocketAddr::new(LOCALHOST, 0),
        PeerDirectory::new(),
    )
    .await
}

/// Nodes `node-<id>` for the given ids, each knowing all the others.
async fn mesh(ca: &CertificateAuthority, ids: &[u64]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for &id in ids {
        nodes.push(start(ca, &node_cert(ca, &format!("node-{id}")), id).await);
    }
    for node in &nodes {
        for (other, &id) in nodes.iter().zip(ids) {
            node.transport.set_peer(
                id,
                name(&format!("node-{id}")),
                other.transport.local_addr(),
            );
        }
    }
    nodes
}

fn append(from: u64, to: u64, index: u64) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgAppend);
    msg.from = from;
    msg.to = to;
    msg.term = 1;
    msg.index = index;
    msg
}

fn frame(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(msg, &mut out).expect("encodes");
    out
}

/// The next message in `inbox`, skipping peer events.
async fn next_message(inbox: &mut mpsc::Receiver<Inbound>) -> Option<Message> {
    timeout(PATIENCE, async {
        loop {
            match inbox.recv().await? {
                Inbound::Message(msg) => return Some(msg),
                Inbound::Peer(_) => {}
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Waits for a peer event matching `want`, skipping everything else.
async fn wait_for_event(inbox: &mut mpsc::Receiver<Inbound>, want: PeerEvent) -> bool {
    timeout(PATIENCE, async {
        loop {
            match inbox.recv().await {
                Some(Inbound::Peer(event)) if event == want => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// No message arrives in `inbox` for a while (peer events are ignored).
async fn no_message_for(inbox: &mut mpsc::Receiver<Inbound>, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, inbox.recv()).await {
        if let Inbound::Message(msg) = item {
            panic!("unexpected message delivered: {msg:?}");
        }
    }
}

async fn wait_for_stats(transport: &Transport, what: impl Fn(&TransportStats) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let stats = transport.stats();
        if what(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "stats never matched: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client that trusts the cluster CA and presents no certificate.
fn anonymous_client(ca: &CertificateAuthority) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).expect("root");
    ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Opens TLS to `addr` (the node certificates carry 127.0.0.1), without any
/// of the transport's client code.
async fn raw_tls(addr: SocketAddr, config: ClientConfig) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::from(addr.ip()), tcp)
        .await
}

/// The head of a Raft stream request declaring `sender`, chunked body.
fn stream_head(sender: u64) -> Vec<u8> {
    format!(
        "POST {RAFT_STREAM_PATH} HTTP/1.1\r\nhost: peer\r\n{SENDER_HEADER}: {sender}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes()
}

/// `bytes` as one HTTP/1.1 chunk.
fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `bytes`, then reads whatever the server answers until it closes
/// (or goes quiet); write and read errors are part of being refused.
async fn exchange(tls: &mut TlsStream<TcpStream>, bytes: &[u8]) -> String {
    let _ = tls.write_all(bytes).await;
    let _ = tls.flush().await;
    let mut answer = Vec::new();
    let _ = timeout(Duration::from_secs(3), tls.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn the_handle_can_be_shared_between_tasks_and_threads() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    shareable::<Transport>();
    shareable::<TransportTls>();
}

#[tokio::test]
async fn messages_flow_between_three_nodes_in_order_both_ways() {
    let ca = new_ca();
    let ids = [1, 2, 3];
    let mut nodes = mesh(&ca, &ids).await;
    const COUNT: u64 = 500;
    for index in 1..=COUNT {
        for (node, &from) in nodes.iter().zip(&ids) {
            for &to in &ids {
                if to != from {
                    node.transport.send(append(from, to, index));
                }
            }
        }
    }
    for (node, &me) in nodes.iter_mut().zip(&ids) {
        let mut next_from: std::collections::BTreeMap<u64, u64> = ids
            .iter()
            .filter(|&&id| id != me)
            .map(|&id| (id, 1))
            .collect();
        for _ in 0..COUNT * 2 {
            let msg = next_message(&mut node.inbox)
                .await
                .expect("message arrives");
            assert_eq!(msg.to, me);
            let expected = next_from.get_mut(&msg.from).expect("from a peer");
            assert_eq!(msg.index, *expected, "out of order from {}", msg.from);
            *expected += 1;
        }
        assert!(next_from.values().all(|&next| next == COUNT + 1));
    }
    for node in &nodes {
        let stats = node.transport.stats();
        assert_eq!(stats.sent, COUNT * 2, "{stats:?}");
        assert_eq!(stats.received, COUNT * 2, "{stats:?}");
        assert_eq!(stats.dropped_queue_full, 0, "{stats:?}");
    }
    for node in nodes {
        node.transport.shutdown().await;
    }
}

#[tokio::test]
async fn clients_without_a_node_certificate_are_refused_before_any_message_is_delivered() {
    let ca = new_ca();
    let other_ca = new_ca();
    let mut directory = PeerDirectory::new();
    directory.insert(1, name("node-1"), dead_addr());
    let mut server = start_at(
        &ca,
        &node_cert(&ca, "node-2"),
        2,
        SocketAddr::new(LOCALHOST, 0),
        directory,
    )
    .await;
    let addr = server.transport.local_addr();

    // The payload every refused client tries to deliver: a valid frame
    // from the id the directory knows.
    let mut request = stream_head(1);
    request.extend(chunk(&frame(&append(1, 2, 1))));

    let refused: Vec<(&str, ClientConfig)> = vec![
        (
            "admin named like the node",
            client_config(ca.cert_der(), &client_cert(&ca, "node-1", Role::Admin)).expect("cfg"),
        ),
        (
            "operator",
            client_config(ca.cert_der(), &client_cert(&ca, "ops", Role::Operator)).expect("cfg"),
        ),
        (
            "node certificate from another CA",
            client_config(ca.cert_der(), &node_cert(&other_ca, "node-1")).expect("cfg"),
        ),
        ("no certificate", anonymous_client(&ca)),
    ];
    for (expected_rejections, (what, config)) in (1u64..).zip(refused) {
        if let Ok(mut tls) = raw_tls(addr, config).await {
            let answer = exchange(&mut tls, &request).await;
            assert!(!answer.starts_with("HTTP/1.1 2"), "{what}: {answer}");
        }
        wait_for_stats(&server.transport, |s| {
            s.rejected_connections == expected_rejections
        })
        .await;
        let stats = server.transport.stats();
        assert_eq!(stats.received, 0, "{what}: {stats:?}");
        assert_eq!(stats.dropped_malformed, 0, "{what}: {stats:?}");
    }
    no_message_for(&mut server.inbox, Duration::from_millis(300)).await;

    // The same bytes from the real node are delivered: the refusals above
    // were about the certificates.
    let mut tls = raw_tls(
        addr,
        client_config(ca.cert_der(), &node_cert(&ca, "node-1")).expect("cfg"),
    )
    .await
    .expect("node connects");
    tls.write_all(&request).await.expect("write");
    let msg = next_message(&mut server.inbox).await.expect("delivered");
    assert_eq!((msg.from, msg.to, msg.index), (1, 2, 1));
    server.transport.shutdown().await;
}

/// node-2 (id 2) serving, knowing node-1 as id 1; a raw client holding
/// node-1's certificate.
async fn served_with_raw_node_client() -> (Node, TlsStream<TcpStream>) {
    let ca = new_ca();
    let mut directory = PeerDirectory::new();
    directory.insert(1, name("node-1"), dead_addr());
    directory.insert(3, name("node-3"), dead_addr());
    let server = start_at(
        &ca,
        &node_cert(&ca, "node-2"),
        2,
        SocketAddr::new(LOCALHOST, 0),
        directory,
    )
    .await;
    let tls = raw_tls(
        server.transport.local_addr(),
        client_config(ca.cert_der(), &node_cert(&ca, "node-1")).expect("cfg"),
    )
    .await
    .expect("node connects");
    (server, tls)
}

#[tokio::test]
async fn an_oversized_frame_length_closes_the_stream_and_nothing_is_decoded() {
    let (mut server, mut tls) = served_with_raw_node_client().await;
    let declared = u32::try_from(MAX_MESSAGE_BYTES + 1).expect("fits");
    let mut body = declared.to_be_bytes().to_vec();
    // A valid message right behind the bogus length: it must not be
    // decoded as if the stream could be resynchronised.
    body.extend(frame(&append(1, 2, 7)));
    let mut request = stream_head(1);
    request.extend(chunk(&body));
    let answer = exchange(&mut tls, &request).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let stats = server.transport.stats();
    assert_eq!(stats.dropped_oversized, 1, "{stats:?}");
    assert_eq!(stats.received, 0, "{stats:?}");
    assert_eq!(stats.dropped_malformed, 0, "{stats:?}");
    no_message_for(&mut server.inbox, Duration::from_millis(300)).await;
    server.transport.shutdown().await;
}

#[tokio::test]
async fn a_malformed_frame_is_dropped_and_counted_and_the_stream_goes_on() {
    let (mut server, mut tls) = served_with_raw_node_client().await;
    let garbage = [0x7f, 0xff, 0xff, 0xff];
    let mut body = u32::try_from(garbage.len())
        .expect("fits")
        .to_be_bytes()
        .to_vec();
    body.extend_from_slice(&garbage);
    body.extend(frame(&append(1, 2, 8)));
    let mut request = stream_head(1);
    request.extend(chunk(&body));
    tls.write_all(&request).await.expect("write");
    let msg = next_message(&mut server.inbox).await.expect("next frame");
    assert_eq!(msg.index, 8);
    let stats = server.transport.stats();
    assert_eq!(stats.dropped_malformed, 1, "{stats:?}");
    assert_eq!(stats.received, 1, "{stats:?}");
    server.transport.shutdown().await;
}

#[tokio::test]
async fn a_message_whose_from_is_not_the_sender_is_dropped() {
    let (mut server, mut tls) = served_with_raw_node_client().await;
    let mut body = frame(&append(3, 2, 1)); // claims to be node-3
    body.extend(frame(&append(1, 9, 2))); // addressed to someone else
    body.extend(frame(&append(1, 2, 3))); // fine
    let mut request = stream_head(1);
    request.extend(chunk(&body));
    tls.write_all(&request).await.expect("write");
    let msg = next_message(&mut server.inbox)
        .await
        .expect("the honest frame");
    assert_eq!((msg.from, msg.index), (1, 3));
    let stats = server.transport.stats();
    assert_eq!(stats.dropped_misrouted, 2, "{stats:?}");
    assert_eq!(stats.received, 1, "{stats:?}");
    server.transport.shutdown().await;
}

#[tokio::test]
async fn a_sender_id_that_belongs_to_another_node_is_refused() {
    let (mut server, mut tls) = served_with_raw_node_client().await;
    // node-1's certificate declaring node-3's id, with frames that would
    // pass the per-message check.
    let mut request = stream_head(3);
    request.extend(chunk(&frame(&append(3, 2, 1))));
    let answer = exchange(&mut tls, &request).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let stats = server.transport.stats();
    assert_eq!(stats.rejected_connections, 1, "{stats:?}");
    assert_eq!(stats.received, 0, "{stats:?}");
    no_message_for(&mut server.inbox, Duration::from_millis(300)).await;
    server.transport.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_is_down_is_reported_unreachable_and_reached_again_when_it_returns() {
    let ca = new_ca();
    let mut nodes = mesh(&ca, &[1, 2]).await;
    let b = nodes.pop().expect("b");
    let mut a = nodes.pop().expect("a");
    let b_addr = b.transport.local_addr();
    a.transport.send(append(1, 2, 1));
    let mut b_inbox = b.inbox;
    assert_eq!(
        next_message(&mut b_inbox).await.expect("delivered").index,
        1
    );

    b.transport.shutdown().await;
    drop(b_inbox);
    a.transport.send(append(1, 2, 2));
    assert!(
        wait_for_event(&mut a.inbox, PeerEvent::Unreachable(2)).await,
        "no unreachable report"
    );

    // Back on the same address, as after a restart.
    let mut directory = PeerDirectory::new();
    directory.insert(1, name("node-1"), a.transport.local_addr());
    let mut b = start_at(&ca, &node_cert(&ca, "node-2"), 2, b_addr, directory).await;
    a.transport.send(append(1, 2, 3));
    let mut seen = Vec::new();
    while !seen.contains(&3) {
        let msg = next_message(&mut b.inbox).await.expect("reconnected");
        seen.push(msg.index);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn a_removed_peer_is_no_longer_heard() {
    let ca = new_ca();
    let mut nodes = mesh(&ca, &[1, 2]).await;
    let mut b = nodes.pop().expect("b");
    let a = nodes.pop().expect("a");
    a.transport.send(append(1, 2, 1));
    assert_eq!(
        next_message(&mut b.inbox).await.expect("delivered").index,
        1
    );
    let rejected_before = b.transport.stats().rejected_connections;

    b.transport.remove_peer(1);
    a.transport.send(append(1, 2, 2));
    wait_for_stats(&b.transport, |s| s.rejected_connections > rejected_before).await;
    no_message_for(&mut b.inbox, Duration::from_millis(500)).await;
    assert_eq!(b.transport.stats().received, 1);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn send_never_blocks_while_the_peer_is_down_and_counts_what_it_drops() {
    let ca = new_ca();
    let mut directory = PeerDirectory::new();
    directory.insert(2, name("node-2"), dead_addr());
    let mut a = start_at(
        &ca,
        &node_cert(&ca, "node-1"),
        1,
        SocketAddr::new(LOCALHOST, 0),
        directory,
    )
    .await;
    const COUNT: u64 = 100_000;
    let started = std::time::Instant::now();
    for index in 1..=COUNT {
        a.transport.send(append(1, 2, index));
    }
    let elapsed = started.elapsed();
    // try_send only: even a debug build does this in well under a second;
    // one blocking connect or await per message would take minutes.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let stats = a.transport.stats();
    let queue = u64::try_from(PEER_QUEUE_MESSAGES).expect("fits");
    assert_eq!(stats.sent, 0, "{stats:?}");
    assert_eq!(stats.dropped_queue_full, COUNT - queue, "{stats:?}");
    assert!(
        wait_for_event(&mut a.inbox, PeerEvent::Unreachable(2)).await,
        "no unreachable report"
    );
    // A message for an id nobody knows is dropped too, and counted apart.
    a.transport.send(append(1, 42, 1));
    assert_eq!(a.transport.stats().dropped_no_route, 1);
    a.transport.shutdown().await;
}

#[tokio::test]
async fn a_server_whose_certificate_names_another_node_is_refused_by_the_client() {
    let ca = new_ca();
    let mut nodes = mesh(&ca, &[1, 2]).await;
    let mut b = nodes.pop().expect("b");
    let mut a = nodes.pop().expect("a");
    let b_addr = b.transport.local_addr();
    // The directory says id 2 is node-7 at b's address; b proves to be
    // node-2, a valid node of the same cluster, but not the one expected.
    a.transport.set_peer(2, name("node-7"), b_addr);
    a.transport.send(append(1, 2, 1));
    assert!(
        wait_for_event(&mut a.inbox, PeerEvent::Unreachable(2)).await,
        "no unreachable report"
    );
    no_message_for(&mut b.inbox, Duration::from_millis(500)).await;
    assert_eq!(b.transport.stats().received, 0);

    // Correct the directory: the queued message goes through.
    a.transport.set_peer(2, name("node-2"), b_addr);
    let msg = next_message(&mut b.inbox)
        .await
        .expect("delivered after fix");
    assert_eq!(msg.index, 1);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn snapshots_are_reported_written_or_failed() {
    let ca = new_ca();
    let mut nodes = mesh(&ca, &[1, 2]).await;
    let mut b = nodes.pop().expect("b");
    let mut a = nodes.pop().expect("a");
    let mut snap = append(1, 2, 0);
    snap.set_msg_type(MessageType::MsgSnapshot);
    let mut snapshot = Snapshot {
        data: vec![7u8; 3 << 20].into(),
        ..Default::default()
    };
    snapshot.mut_metadata().index = 10;
    snap.set_snapshot(snapshot);
    a.transport.send(snap.clone());
    assert!(
        wait_for_event(&mut a.inbox, PeerEvent::SnapshotStatus { to: 2, ok: true }).await,
        "no success report"
    );
    let got = next_message(&mut b.inbox).await.expect("snapshot arrives");
    assert_eq!(got, snap);

    // A snapshot above the frame cap is never put on the wire; Raft hears
    // that it failed.
    let mut huge = snap.clone();
    huge.mut_snapshot().data = vec![0u8; MAX_MESSAGE_BYTES + 1].into();
    a.transport.send(huge);
    assert!(
        wait_for_event(&mut a.inbox, PeerEvent::SnapshotStatus { to: 2, ok: false }).await,
        "no failure report for the oversized snapshot"
    );
    assert_eq!(a.transport.stats().dropped_oversized, 1);
    no_message_for(&mut b.inbox, Duration::from_millis(300)).await;

    // For a peer nobody knows, the failure is reported right away.
    snap.to = 5;
    a.transport.send(snap);
    assert!(
        wait_for_event(&mut a.inbox, PeerEvent::SnapshotStatus { to: 5, ok: false }).await,
        "no failure report"
    );
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test]
async fn further_routes_share_the_peer_port_and_see_the_calling_node() {
    use axum::Extension;
    use axum::routing::get;

    let ca = new_ca();
    let tls = TransportTls::new(ca.cert_der(), &node_cert(&ca, "node-2")).expect("tls");
    let (events, _inbox) = mpsc::channel(16);
    let routes = axum::Router::new().route(
        "/test/whoami",
        get(|Extension(caller): Extension<PeerConnection>| async move { caller.node.to_string() }),
    );
    let transport = Transport::start_with_routes(
        SocketAddr::new(LOCALHOST, 0),
        tls,
        2,
        PeerDirectory::new(),
        events,
        routes,
    )
    .await
    .expect("starts");
    let mut client = raw_tls(
        transport.local_addr(),
        client_config(ca.cert_der(), &node_cert(&ca, "node-5")).expect("cfg"),
    )
    .await
    .expect("connects");
    let answer = exchange(
        &mut client,
        b"GET /test/whoami HTTP/1.1\r\nhost: peer\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("node-5"), "{answer}");
    transport.shutdown().await;
}

/// The SHA-256 of the certificate a new connection to `addr` is shown.
async fn presented(ca: &CertificateAuthority, addr: SocketAddr) -> cluster::pki::Fingerprint {
    let client = cluster::pki::tls::client_config(ca.cert_der(), &node_cert(ca, "node-9"))
        .expect("client config");
    let tls = raw_tls(addr, client).await.expect("handshake");
    let chain = tls.get_ref().1.peer_certificates().expect("a chain");
    cluster::pki::Fingerprint::of_der(&chain[0])
}

fn fingerprint_of(cert: &IssuedCert) -> cluster::pki::Fingerprint {
    use rustls_pki_types::pem::PemObject;
    let der =
        rustls_pki_types::CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("pem");
    cluster::pki::Fingerprint::of_der(&der)
}

#[tokio::test]
async fn a_renewed_certificate_is_presented_from_the_next_handshake_and_messages_still_flow() {
    let ca = new_ca();
    let mut nodes = mesh(&ca, &[1, 2]).await;
    let addr = nodes[0].transport.local_addr();
    let before = presented(&ca, addr).await;
    let renewed = node_cert(&ca, "node-1");
    nodes[0]
        .transport
        .replace_tls(TransportTls::new(ca.cert_der(), &renewed).expect("tls"));
    let after = presented(&ca, addr).await;
    assert_eq!(after, fingerprint_of(&renewed));
    assert_ne!(after, before);
    nodes[1].transport.send(append(2, 1, 7));
    nodes[0].transport.send(append(1, 2, 8));
    assert_eq!(
        next_message(&mut nodes[0].inbox).await.map(|m| m.index),
        Some(7)
    );
    assert_eq!(
        next_message(&mut nodes[1].inbox).await.map(|m| m.index),
        Some(8)
    );
}
