//! The peer port's server: TLS, the node-only gate, and the Raft stream
//! route.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::frame::{Decoded, decode_frame};
use super::tls::node_of_certificate;
use super::{Counters, Inbound, Shared};
use crate::pki::SubjectName;

/// The Raft stream route.
pub const RAFT_STREAM_PATH: &str = "/raft/v1/stream";

/// The request header carrying the sender's Raft id (decimal).
pub const SENDER_HEADER: &str = "cairn-raft-from";

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; a cluster has a handful of members, each
/// with one Raft stream, plus image transfers.
const MAX_CONNECTIONS: usize = 256;
/// A stream's read buffer is released after a frame larger than this.
const RETAINED_BUFFER_BYTES: usize = 1 << 20;
/// TCP keepalive on accepted connections, so a stream from a node that
/// vanished without a FIN is reaped in about half a minute.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// Who is on the other end of a peer-port connection, in every request's
/// extensions. Only `cairn:node` callers get this far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConnection {
    /// The node name from the caller's certificate.
    pub node: SubjectName,
    /// The caller's socket address.
    pub remote: SocketAddr,
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(RAFT_STREAM_PATH, post(raft_stream))
        .with_state(shared)
}

pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: back off rather
                        // than spin.
                        tracing::warn!("peer port accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%remote, "peer connection refused: {MAX_CONNECTIONS} connections open");
                    Counters::bump(&shared.counters.rejected_connections);
                    continue;
                };
                let shared = Arc::clone(&shared);
                let app = app.clone();
                connections.spawn(async move {
                    serve_connection(tcp, remote, &shared, app).await;
                    drop(slot);
                });
            }
        }
    }
    connections.shutdown().await;
}

/// Resolves once the transport is told to stop (or every handle is gone,
/// which means the same).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns is not Send; drop it before returning.
    let _ = stop.wait_for(|stop| *stop).await.map(|_| ());
}

fn tune_accepted(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY on a peer connection: {e}");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!("cannot set TCP keepalive on a peer connection: {e}");
    }
}

async fn serve_connection(tcp: TcpStream, remote: SocketAddr, shared: &Shared, app: Router) {
    tune_accepted(&tcp);
    let acceptor = TlsAcceptor::from(shared.tls().server_config());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            Counters::bump(&shared.counters.rejected_connections);
            tracing::warn!(%remote, "peer connection refused: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            Counters::bump(&shared.counters.rejected_connections);
            tracing::warn!(%remote, "peer connection refused: TLS handshake timed out");
            return;
        }
    };
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first());
    let node = match leaf.map(|der| node_of_certificate(der)) {
        Some(Ok(node)) => node,
        Some(Err(e)) => {
            Counters::bump(&shared.counters.rejected_connections);
            tracing::warn!(%remote, error = %crate::transport::display_chain(&e), "peer connection refused");
            return;
        }
        None => {
            // The handshake requires a client certificate, so this is a
            // rustls contract change rather than a caller; refuse anyway.
            Counters::bump(&shared.counters.rejected_connections);
            tracing::warn!(%remote, "peer connection refused: no client certificate");
            return;
        }
    };
    let connection = PeerConnection { node, remote };
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(connection.clone());
            let mut app = app.clone();
            async move {
                use tower::Service;
                let response = app.call(request.map(axum::body::Body::new)).await;
                Ok::<_, Infallible>(response.unwrap_or_else(|e| match e {}))
            }
        });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%remote, "peer connection ended: {e}");
    }
}

/// Reads the sender's Raft id and checks that the directory gives it to
/// the node that holds the connection.
fn sender_of(
    headers: &HeaderMap,
    caller: &SubjectName,
    shared: &Shared,
) -> Result<u64, &'static str> {
    let id: u64 = headers
        .get(SENDER_HEADER)
        .ok_or("no sender id header")?
        .to_str()
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or("sender id header is not a number")?;
    if id == shared.own_id || id == raft::INVALID_ID {
        return Err("sender id is this node's or the reserved id");
    }
    match shared.directory().get(id) {
        Some(peer) if peer.name == *caller => Ok(id),
        Some(_) => Err("sender id belongs to another node"),
        None => Err("sender id is not in the directory"),
    }
}

async fn raft_stream(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<PeerConnection>,
    request: Request,
) -> StatusCode {
    let from = match sender_of(request.headers(), &caller.node, &shared) {
        Ok(id) => id,
        Err(reason) => {
            Counters::bump(&shared.counters.rejected_connections);
            tracing::warn!(node = %caller.node, remote = %caller.remote, "raft stream refused: {reason}");
            return StatusCode::FORBIDDEN;
        }
    };
    tracing::debug!(node = %caller.node, from, "raft stream opened");
    let counters = &shared.counters;
    let mut body = request.into_body();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = match body.frame().await {
            None => {
                tracing::debug!(node = %caller.node, from, "raft stream closed by the sender");
                return StatusCode::NO_CONTENT;
            }
            Some(Err(e)) => {
                tracing::debug!(node = %caller.node, from, "raft stream broke: {e}");
                return StatusCode::BAD_REQUEST;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers carry nothing for us.
                Err(_) => continue,
            },
        };
        // Membership may have changed since the stream opened: a node the
        // directory no longer gives this id to stops being heard at once.
        if !still_sender(&shared, from, &caller.node) {
            Counters::bump(&counters.rejected_connections);
            tracing::warn!(node = %caller.node, from, "raft stream closed: the sender left the directory");
            return StatusCode::FORBIDDEN;
        }
        buf.extend_from_slice(&chunk);
        let mut at = 0;
        loop {
            match decode_frame(&buf[at..]) {
                Decoded::Incomplete { .. } => break,
                Decoded::Frame { message, consumed } => {
                    at += consumed;
                    if message.from != from || message.to != shared.own_id {
                        Counters::bump(&counters.dropped_misrouted);
                        tracing::warn!(
                            node = %caller.node,
                            from,
                            msg_from = message.from,
                            msg_to = message.to,
                            "raft message dropped: not from the stream's sender or not for this node"
                        );
                        continue;
                    }
                    Counters::bump(&counters.received);
                    if shared
                        .events
                        .send(Inbound::Message(*message))
                        .await
                        .is_err()
                    {
                        // The Raft loop is gone; the node is shutting down.
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                }
                Decoded::Malformed { consumed, error } => {
                    at += consumed;
                    Counters::bump(&counters.dropped_malformed);
                    tracing::warn!(node = %caller.node, from, "raft frame dropped: not a raft message: {error}");
                }
                Decoded::Oversized { declared } => {
                    Counters::bump(&counters.dropped_oversized);
                    tracing::warn!(
                        node = %caller.node,
                        from,
                        declared,
                        "raft stream closed: frame length above the cap"
                    );
                    return StatusCode::PAYLOAD_TOO_LARGE;
                }
            }
        }
        buf.drain(..at);
        if buf.is_empty() && buf.capacity() > RETAINED_BUFFER_BYTES {
            // Do not keep a snapshot-sized buffer per stream for good.
            buf = Vec::new();
        }
    }
}

fn still_sender(shared: &Shared, from: u64, caller: &SubjectName) -> bool {
    shared
        .directory()
        .get(from)
        .is_some_and(|peer| peer.name == *caller)
}
