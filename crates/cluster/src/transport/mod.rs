//! The peer transport: Raft messages between nodes on the peer port
//! (`:7444`, HTTPS with mutual TLS, node certificates only).
//!
//! # Moving parts
//!
//! - [`frame`] is the sans-IO codec: a `u32` big-endian length, then a
//!   protobuf [`Message`]. The length is checked against
//!   [`MAX_MESSAGE_BYTES`] from the header alone, before anything is
//!   buffered or decoded.
//! - [`tls`] decides who may talk. The server requires a client certificate
//!   that chains to the cluster CA (the handshake does that) and is a
//!   `cairn:node` one (checked right after the handshake; anything else is
//!   closed before HTTP even starts, so not one byte of Raft data is read
//!   from it). The client checks the server's chain, role and common name
//!   against the node name the [`PeerDirectory`] holds for the id dialled.
//! - The server (`server.rs`) is an axum router served by hyper's HTTP/1.1
//!   connection, with the caller's [`PeerConnection`] in every request's
//!   extensions. Raft has one route, `POST /raft/v1/stream`: a long-lived
//!   request per sender → receiver direction whose body is a stream of
//!   frames. The sender declares its Raft id in the [`SENDER_HEADER`]; the
//!   directory must map that id to the node name in the certificate (when
//!   the stream opens and again for every chunk read, so
//!   [`Transport::remove_peer`] silences a node at once), and every decoded
//!   message must carry that id as `from` and this node's id as `to`. Other
//!   peer-port routes (image sharing) are merged in with
//!   [`Transport::start_with_routes`] and read the same extension; another
//!   node's such routes are asked with [`Transport::request`], which dials
//!   and checks the server exactly as a Raft stream does.
//! - One peer task per remote node (`peer.rs`) owns a bounded queue
//!   ([`PEER_QUEUE_MESSAGES`]), dials, opens the stream and writes frames as
//!   they come, batching what is already queued into one write. On any
//!   failure it reports [`PeerEvent::Unreachable`] and redials with
//!   exponential backoff (50 ms doubling to 2 s).
//! - [`Transport`] is the handle the Raft loop holds: [`Transport::send`]
//!   only ever `try_send`s into a queue, so it never blocks or awaits; a
//!   full queue drops the message and counts it (Raft retransmits).
//!
//! # What Raft is told
//!
//! Incoming messages and [`PeerEvent`]s arrive on the `mpsc::Sender` given
//! to [`Transport::start`]. The Raft loop feeds them to
//! `RawNode::step`, `RawNode::report_unreachable` and
//! `RawNode::report_snapshot`. A `MsgSnapshot` is always answered with a
//! [`PeerEvent::SnapshotStatus`]: `ok: true` once its frame has been handed
//! to the peer's HTTP connection, `ok: false` when it is dropped (queue
//! full, over the cap, unknown peer) or its write fails. Without that
//! report raft-rs would leave the follower paused in snapshot state.
//! Unreachable reports are hints and are dropped when the Raft loop's
//! channel is full; snapshot reports are never dropped.
//!
//! Incoming messages wait for room in that channel. A Raft loop that falls
//! behind therefore stops the server reading, TCP pushes back on the
//! sender, and the sender's bounded queue drops (and counts) the excess:
//! memory stays bounded on both sides.
//!
//! # Drops and their counters ([`TransportStats`])
//!
//! | what | where | effect |
//! |---|---|---|
//! | queue full | sender | the newest message is dropped (`dropped_queue_full`) |
//! | encodes above the cap | sender | message dropped (`dropped_oversized`) |
//! | no peer for `msg.to` | sender | message dropped (`dropped_no_route`) |
//! | declared length above the cap | receiver | stream answered 413 and closed (`dropped_oversized`) |
//! | payload is not a Raft message | receiver | that frame dropped, stream continues (`dropped_malformed`) |
//! | `from`/`to` not the stream's sender/this node | receiver | message dropped (`dropped_misrouted`) |
//! | handshake fails, non-node role, undeclared or foreign sender id | receiver | connection or stream refused (`rejected_connections`) |
//!
//! An oversized length closes the stream rather than skipping the frame
//! because skipping means reading up to 4 GiB the cap exists to refuse, and
//! a well-behaved sender never produces one (it checks the cap before
//! encoding): the stream is broken or hostile. A malformed payload leaves
//! the framing intact, so only that frame is lost.
//!
//! When a queue is full the newest message is the one dropped: tokio's
//! bounded channel cannot evict its oldest entry without a lock around
//! the queue that `send` would then contend on, and for Raft the choice
//! does not matter for safety: the leader re-sends from the follower's
//! match index after a rejection or probe either way. The queue is kept
//! while a peer is unreachable so a short blip (a restart) loses nothing;
//! stale messages from an old term delivered after a long outage are
//! ignored by the receiving Raft.

pub mod frame;
pub mod tls;

mod client;
mod peer;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use raft::eraftpb::{Message, MessageType};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use self::client::{PeerRequestError, PeerResponse};
pub use self::frame::{FRAME_HEADER_BYTES, MAX_MESSAGE_BYTES};
pub use self::peer::DialError;
pub use self::server::{PeerConnection, RAFT_STREAM_PATH, SENDER_HEADER};
pub use self::tls::{PeerCertError, TransportTls, TransportTlsError};
use crate::pki::SubjectName;

/// An error and its sources on one line, for logs.
fn display_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Messages one peer's queue holds before `send` starts dropping.
pub const PEER_QUEUE_MESSAGES: usize = 4096;

/// Where a Raft peer is reached and who it must prove to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddress {
    /// The node name its certificate must carry as common name.
    pub name: SubjectName,
    /// The peer port address to dial.
    pub addr: SocketAddr,
}

/// Raft id → peer address, for every member (this node's own entry is
/// allowed and ignored when sending).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerDirectory {
    peers: BTreeMap<u64, PeerAddress>,
}

impl PeerDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the entry for `id`.
    pub fn insert(&mut self, id: u64, name: SubjectName, addr: SocketAddr) {
        self.peers.insert(id, PeerAddress { name, addr });
    }

    /// Removes the entry for `id`.
    pub fn remove(&mut self, id: u64) -> Option<PeerAddress> {
        self.peers.remove(&id)
    }

    /// The entry for `id`.
    pub fn get(&self, id: u64) -> Option<&PeerAddress> {
        self.peers.get(&id)
    }

    /// Every entry, by id.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &PeerAddress)> {
        self.peers.iter().map(|(id, peer)| (*id, peer))
    }
}

/// What the transport tells the Raft loop about a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// Sending to the peer failed or its connection broke
    /// (`RawNode::report_unreachable`).
    Unreachable(u64),
    /// A `MsgSnapshot` to `to` was handed to the connection (`ok`) or lost
    /// (`RawNode::report_snapshot` with `SnapshotStatus::Finish` /
    /// `Failure`).
    SnapshotStatus {
        /// The peer the snapshot was for.
        to: u64,
        /// Whether it was written.
        ok: bool,
    },
}

/// What the transport delivers to the Raft loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Inbound {
    /// A message from a peer, already checked to come from the node that
    /// sent it and to be addressed to this node.
    Message(Message),
    /// A report about a peer.
    Peer(PeerEvent),
}

/// Counters since start; see the module docs for what moves each one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Messages handed to a peer connection.
    pub sent: u64,
    /// Messages received and delivered to the Raft loop.
    pub received: u64,
    /// Messages dropped because the peer's queue was full.
    pub dropped_queue_full: u64,
    /// Messages over [`MAX_MESSAGE_BYTES`], outgoing or declared incoming.
    pub dropped_oversized: u64,
    /// Incoming frames whose payload is not a Raft message.
    pub dropped_malformed: u64,
    /// Incoming messages whose `from` is not the sender or `to` not us.
    pub dropped_misrouted: u64,
    /// Outgoing messages to an id with no directory entry.
    pub dropped_no_route: u64,
    /// Connections or streams refused: failed handshakes, non-node
    /// certificates, sender ids that do not belong to the certificate.
    pub rejected_connections: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_oversized: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_misrouted: AtomicU64,
    dropped_no_route: AtomicU64,
    rejected_connections: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            sent: get(&self.sent),
            received: get(&self.received),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_oversized: get(&self.dropped_oversized),
            dropped_malformed: get(&self.dropped_malformed),
            dropped_misrouted: get(&self.dropped_misrouted),
            dropped_no_route: get(&self.dropped_no_route),
            rejected_connections: get(&self.rejected_connections),
        }
    }
}

/// The transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Raft id 0 is raft-rs's "no node".
    #[error("raft id 0 is reserved and cannot be this node's id")]
    InvalidOwnId,
    /// The peer port could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The bound address could not be read back.
    #[error("cannot read the peer port's bound address")]
    LocalAddr(#[source] std::io::Error),
}

/// The handle the Raft loop holds. Cheap to clone; every clone drives the
/// same server and peer tasks, which stop on [`Transport::shutdown`] or
/// when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Transport {
    inner: Arc<Inner>,
}

/// What the peer tasks and the server share with the handle.
#[derive(Debug)]
struct Shared {
    own_id: u64,
    /// Replaced when the node certificate is renewed; each handshake takes
    /// the one in force.
    tls: RwLock<TransportTls>,
    events: mpsc::Sender<Inbound>,
    counters: Counters,
    directory: RwLock<PeerDirectory>,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn tls(&self) -> TransportTls {
        self.tls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Delivers a snapshot report without awaiting and without losing it:
    /// if the Raft loop's channel is full right now, a task waits for room.
    fn report_snapshot_now(&self, to: u64, ok: bool) {
        let event = Inbound::Peer(PeerEvent::SnapshotStatus { to, ok });
        if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
            let events = self.events.clone();
            self.runtime.spawn(async move {
                // A closed channel means the Raft loop is gone; nobody is
                // left to tell.
                let _ = events.send(event).await;
            });
        }
    }

    /// A snapshot report from async code: waits for room.
    async fn report_snapshot(&self, to: u64, ok: bool) {
        let _ = self
            .events
            .send(Inbound::Peer(PeerEvent::SnapshotStatus { to, ok }))
            .await;
    }

    /// An unreachable hint; dropped when the Raft loop is behind, because
    /// the next failure repeats it.
    fn report_unreachable(&self, id: u64) {
        let _ = self
            .events
            .try_send(Inbound::Peer(PeerEvent::Unreachable(id)));
    }

    fn directory(&self) -> std::sync::RwLockReadGuard<'_, PeerDirectory> {
        self.directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn directory_mut(&self) -> std::sync::RwLockWriteGuard<'_, PeerDirectory> {
        self.directory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
struct PeerHandle {
    queue: mpsc::Sender<Message>,
    target: watch::Sender<PeerAddress>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    peers: Mutex<HashMap<u64, PeerHandle>>,
    stop: watch::Sender<bool>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(server) = self
            .server
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            server.abort();
        }
        for (_, peer) in self
            .peers
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            peer.task.abort();
        }
    }
}

impl Transport {
    /// Binds the peer port at `listen`, starts serving Raft streams and one
    /// sender task per directory entry other than `own_id`.
    pub async fn start(
        listen: SocketAddr,
        tls: TransportTls,
        own_id: u64,
        directory: PeerDirectory,
        events: mpsc::Sender<Inbound>,
    ) -> Result<Transport, TransportError> {
        Self::start_with_routes(listen, tls, own_id, directory, events, axum::Router::new()).await
    }

    /// [`Transport::start`] with further routes on the same port. Their
    /// handlers run only for `cairn:node` callers and find the caller in a
    /// [`PeerConnection`] request extension.
    pub async fn start_with_routes(
        listen: SocketAddr,
        tls: TransportTls,
        own_id: u64,
        directory: PeerDirectory,
        events: mpsc::Sender<Inbound>,
        routes: axum::Router,
    ) -> Result<Transport, TransportError> {
        if own_id == raft::INVALID_ID {
            return Err(TransportError::InvalidOwnId);
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| TransportError::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(TransportError::LocalAddr)?;
        let shared = Arc::new(Shared {
            own_id,
            tls: RwLock::new(tls),
            events,
            counters: Counters::default(),
            directory: RwLock::new(PeerDirectory::new()),
            runtime: tokio::runtime::Handle::current(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let app = server::router(Arc::clone(&shared)).merge(routes);
        let server = tokio::spawn(server::serve(listener, Arc::clone(&shared), app, stop_rx));
        let transport = Transport {
            inner: Arc::new(Inner {
                shared,
                local_addr,
                peers: Mutex::new(HashMap::new()),
                stop,
                server: Mutex::new(Some(server)),
            }),
        };
        for (id, peer) in directory.iter() {
            transport.set_peer(id, peer.name.clone(), peer.addr);
        }
        tracing::info!(
            addr = %local_addr,
            own_id,
            node = %transport.inner.shared.tls().own_name(),
            "peer transport listening"
        );
        Ok(transport)
    }

    /// Takes a renewed node certificate: handshakes from now on, in both
    /// directions, present it; streams already open stay as they are.
    pub fn replace_tls(&self, tls: TransportTls) {
        let shared = &self.inner.shared;
        let mut current = shared.tls.write().unwrap_or_else(PoisonError::into_inner);
        if current.own_name() != tls.own_name() {
            tracing::warn!(
                old = %current.own_name(),
                new = %tls.own_name(),
                "the peer port's certificate now names another node; peers expect the name they know"
            );
        }
        *current = tls;
        tracing::info!("peer port certificate replaced");
    }

    /// The address the peer port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Queues `msg` for `msg.to`. Never blocks and never awaits: a full
    /// queue or an unknown peer drops the message and counts it.
    pub fn send(&self, msg: Message) {
        let shared = &self.inner.shared;
        let to = msg.to;
        let is_snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let refused = {
            let peers = self
                .inner
                .peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match peers.get(&to) {
                Some(peer) => match peer.queue.try_send(msg) {
                    Ok(()) => None,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        Some(&shared.counters.dropped_queue_full)
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        Some(&shared.counters.dropped_no_route)
                    }
                },
                None => Some(&shared.counters.dropped_no_route),
            }
        };
        if let Some(counter) = refused {
            Counters::bump(counter);
            if is_snapshot {
                shared.report_snapshot_now(to, false);
            }
        }
    }

    /// Adds or updates the peer `id`. A changed name or address makes its
    /// task drop the current connection and dial the new one; queued
    /// messages are kept.
    pub fn set_peer(&self, id: u64, name: SubjectName, addr: SocketAddr) {
        let shared = &self.inner.shared;
        let target = PeerAddress { name, addr };
        shared
            .directory_mut()
            .insert(id, target.name.clone(), target.addr);
        if id == shared.own_id || id == raft::INVALID_ID {
            return;
        }
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(peer) = peers.get(&id) {
            peer.target.send_if_modified(|current| {
                let changed = *current != target;
                *current = target;
                changed
            });
            return;
        }
        let (queue, queue_rx) = mpsc::channel(PEER_QUEUE_MESSAGES);
        let (target_tx, target_rx) = watch::channel(target);
        let task = shared
            .runtime
            .spawn(peer::PeerTask::new(id, Arc::clone(shared), target_rx, queue_rx).run());
        peers.insert(
            id,
            PeerHandle {
                queue,
                target: target_tx,
                task,
            },
        );
    }

    /// Forgets the peer `id`: its task stops, its queue is discarded and
    /// streams it opens from now on are refused.
    pub fn remove_peer(&self, id: u64) {
        self.inner.shared.directory_mut().remove(id);
        let removed = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        if let Some(peer) = removed {
            peer.task.abort();
        }
    }

    /// Every other node in the directory.
    pub fn peers(&self) -> Vec<PeerAddress> {
        let shared = &self.inner.shared;
        shared
            .directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(id, _)| *id != shared.own_id)
            .map(|(_, peer)| peer.clone())
            .collect()
    }

    /// Sends `request` to another node's peer port (its routes beyond
    /// Raft), over a connection of its own, checking the server is the
    /// node `target` names; see [`client`].
    pub async fn request(
        &self,
        target: &PeerAddress,
        request: hyper::Request<http_body_util::Empty<hyper::body::Bytes>>,
    ) -> Result<PeerResponse, PeerRequestError> {
        client::request(&self.inner.shared, target, request).await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TransportStats {
        self.inner.shared.counters.snapshot()
    }

    /// Stops the server (open streams are closed) and every peer task, and
    /// waits for them. Other clones of the handle are left with a stopped
    /// transport: their sends are counted as having no route.
    pub async fn shutdown(self) {
        let _ = self.inner.stop.send(true);
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            // The server ends its own connections when told to stop.
            let _ = server.await;
        }
        let peers: Vec<PeerHandle> = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, peer)| peer)
            .collect();
        for peer in peers {
            peer.task.abort();
            let _ = peer.task.await;
        }
    }
}
