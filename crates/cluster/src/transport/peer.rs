//! One task per remote node: dial, open the Raft stream, write what the
//! queue holds, redial with backoff when anything breaks.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use hyper::body::{Bytes, Frame};
use hyper_util::rt::TokioIo;
use raft::eraftpb::{Message, MessageType};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::frame::{FrameEncodeError, encode_frame};
use super::server::{RAFT_STREAM_PATH, SENDER_HEADER};
use super::{Counters, PeerAddress, Shared, display_chain};

/// First redial delay after a failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Longest redial delay: a peer that comes back is reached within this.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A stream that lived this long counts as having worked, so the next
/// failure starts the backoff over instead of continuing it.
const STABLE_AFTER: Duration = Duration::from_secs(1);
/// TCP connect, TLS and HTTP handshakes together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Unacknowledged data older than this breaks the connection, so a peer
/// that lost power is noticed in seconds rather than after TCP's
/// retransmission timeout of many minutes.
const USER_TIMEOUT: Duration = Duration::from_secs(10);
/// Queued messages are coalesced into one body chunk up to this size.
const BATCH_BYTES: usize = 256 << 10;

/// Redial delays: doubling from [`INITIAL_BACKOFF`] to [`MAX_BACKOFF`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: INITIAL_BACKOFF,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }

    fn reset(&mut self) {
        self.next = INITIAL_BACKOFF;
    }
}

/// Why a stream to a peer ended.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Dial(DialError),
    #[error("connecting timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    #[error("HTTP handshake failed")]
    Http(#[source] hyper::Error),
    #[error("cannot build the stream request")]
    Request(#[source] axum::http::Error),
    #[error("the connection broke")]
    Connection(#[source] hyper::Error),
    #[error("the connection closed")]
    Closed,
    #[error("the peer ended the stream with {0}")]
    Answered(StatusCode),
}

/// Why a connection to a peer could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The peer port dialled.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (including a server that is not the node
    /// the directory names).
    #[error("TLS handshake with node {node} failed")]
    Tls {
        /// The node expected.
        node: crate::pki::SubjectName,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Opens a TCP connection to `target` and completes the TLS handshake,
/// accepting only the node the directory names.
pub(super) async fn dial(
    tls: &super::TransportTls,
    target: &PeerAddress,
) -> Result<TlsStream<TcpStream>, DialError> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|source| DialError::Connect {
            addr: target.addr,
            source,
        })?;
    tune(&tcp);
    let connector = TlsConnector::from(tls.client_config_for(&target.name));
    // The verifier ignores this name and checks the node name instead.
    connector
        .connect(ServerName::from(target.addr.ip()), tcp)
        .await
        .map_err(|source| DialError::Tls {
            node: target.name.clone(),
            source,
        })
}

enum StreamEnd {
    /// Every handle to the queue is gone: the peer was removed.
    QueueClosed,
    /// The directory entry changed: dial the new one now.
    TargetChanged,
    Failed(StreamError),
}

/// The request body: chunks of whole frames, as the task hands them over.
struct FrameBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for FrameBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// Frames ready to write, and what they stand for.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    messages: u64,
    snapshots: usize,
}

type Connection = hyper::client::conn::http1::Connection<TokioIo<TlsStream<TcpStream>>, FrameBody>;

pub(super) struct PeerTask {
    id: u64,
    shared: Arc<Shared>,
    target: watch::Receiver<PeerAddress>,
    queue: mpsc::Receiver<Message>,
}

impl PeerTask {
    pub(super) fn new(
        id: u64,
        shared: Arc<Shared>,
        target: watch::Receiver<PeerAddress>,
        queue: mpsc::Receiver<Message>,
    ) -> Self {
        PeerTask {
            id,
            shared,
            target,
            queue,
        }
    }

    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut failures: u32 = 0;
        loop {
            let target = self.target.borrow_and_update().clone();
            let started = Instant::now();
            let error = match self.stream_once(&target).await {
                StreamEnd::QueueClosed => return,
                StreamEnd::TargetChanged => {
                    backoff.reset();
                    failures = 0;
                    continue;
                }
                StreamEnd::Failed(error) => error,
            };
            self.shared.report_unreachable(self.id);
            if started.elapsed() >= STABLE_AFTER {
                backoff.reset();
                failures = 0;
            }
            failures = failures.saturating_add(1);
            let error = display_chain(&error);
            // The first failure is news; the redials after it are not.
            if failures == 1 {
                tracing::warn!(peer = self.id, node = %target.name, addr = %target.addr, "raft stream to peer failed: {error}");
            } else {
                tracing::debug!(peer = self.id, node = %target.name, addr = %target.addr, failures, "raft stream to peer failed again: {error}");
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                changed = self.target.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    backoff.reset();
                }
            }
        }
    }

    async fn connect(
        &self,
        target: &PeerAddress,
    ) -> Result<
        (
            hyper::client::conn::http1::SendRequest<FrameBody>,
            Connection,
        ),
        StreamError,
    > {
        let tls = dial(&self.shared.tls(), target)
            .await
            .map_err(StreamError::Dial)?;
        hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(StreamError::Http)
    }

    async fn stream_once(&mut self, target: &PeerAddress) -> StreamEnd {
        let (mut sender, conn) =
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect(target)).await {
                Ok(Ok(connected)) => connected,
                Ok(Err(error)) => return StreamEnd::Failed(error),
                Err(_) => return StreamEnd::Failed(StreamError::ConnectTimeout),
            };
        let (body, body_rx) = mpsc::channel::<Bytes>(1);
        let request = match hyper::Request::post(RAFT_STREAM_PATH)
            .header(header::HOST, target.name.as_str())
            .header(SENDER_HEADER, HeaderValue::from(self.shared.own_id))
            .body(FrameBody(body_rx))
        {
            Ok(request) => request,
            Err(e) => return StreamEnd::Failed(StreamError::Request(e)),
        };
        let response = sender.send_request(request);
        tokio::pin!(response);
        tokio::pin!(conn);
        loop {
            // Biased, directory changes first: after `set_peer` nothing more
            // goes out on a connection to the old target.
            tokio::select! {
                biased;
                changed = self.target.changed() => {
                    return if changed.is_ok() { StreamEnd::TargetChanged } else { StreamEnd::QueueClosed };
                }
                ended = &mut conn => {
                    return StreamEnd::Failed(ended.err().map_or(StreamError::Closed, StreamError::Connection));
                }
                answer = &mut response => {
                    return StreamEnd::Failed(match answer {
                        Ok(response) => StreamError::Answered(response.status()),
                        Err(e) => StreamError::Connection(e),
                    });
                }
                next = self.queue.recv() => {
                    let Some(first) = next else {
                        return StreamEnd::QueueClosed;
                    };
                    let batch = self.batch(first).await;
                    if batch.bytes.is_empty() {
                        continue;
                    }
                    // Keep driving the connection while waiting for it to
                    // take the chunk, or neither would make progress.
                    let taken = tokio::select! {
                        sent = body.send(Bytes::from(batch.bytes)) => sent.map_err(|_| StreamError::Closed),
                        ended = &mut conn => Err(ended.err().map_or(StreamError::Closed, StreamError::Connection)),
                    };
                    if let Err(error) = taken {
                        for _ in 0..batch.snapshots {
                            self.shared.report_snapshot(self.id, false).await;
                        }
                        return StreamEnd::Failed(error);
                    }
                    Counters::add(&self.shared.counters.sent, batch.messages);
                    for _ in 0..batch.snapshots {
                        self.shared.report_snapshot(self.id, true).await;
                    }
                }
            }
        }
    }

    /// Encodes `first` and whatever else is already queued, up to
    /// [`BATCH_BYTES`]. Messages that cannot be encoded are dropped here.
    async fn batch(&mut self, first: Message) -> Batch {
        let mut batch = Batch::default();
        let mut next = Some(first);
        while let Some(msg) = next {
            let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
            match encode_frame(&msg, &mut batch.bytes) {
                Ok(_) => {
                    batch.messages += 1;
                    if is_snapshot {
                        batch.snapshots += 1;
                    }
                }
                Err(error) => {
                    let counter = match &error {
                        FrameEncodeError::TooLarge { .. } => {
                            &self.shared.counters.dropped_oversized
                        }
                        FrameEncodeError::Encode(_) => &self.shared.counters.dropped_malformed,
                    };
                    Counters::bump(counter);
                    tracing::warn!(
                        peer = self.id,
                        msg_type = ?msg.get_msg_type(),
                        "raft message dropped before sending: {}",
                        display_chain(&error)
                    );
                    if is_snapshot {
                        self.shared.report_snapshot(self.id, false).await;
                    }
                }
            }
            if batch.bytes.len() >= BATCH_BYTES {
                break;
            }
            next = self.queue.try_recv().ok();
        }
        batch
    }
}

/// Latency and liveness settings for a dialled connection.
fn tune(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY on a peer connection: {e}");
    }
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(USER_TIMEOUT)) {
        tracing::debug!("cannot set TCP_USER_TIMEOUT on a peer connection: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redial_delays_double_from_50_ms_up_to_2_s_and_reset() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8)
            .map(|_| u64::try_from(backoff.next_delay().as_millis()).expect("small"))
            .collect();
        assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), INITIAL_BACKOFF);
    }
}
