//! A running cluster member: the thin async shell around a [`Replica`].
//!
//! One dedicated thread owns the replica for its whole life and runs a
//! single-threaded tokio loop: it ticks every [`TICK`], steps messages from
//! the peer [`Transport`], takes requests from [`NodeHandle`]s, and after
//! each wake-up drains whatever else is already queued before one
//! [`Replica::advance`], so that one disk flush covers every request that
//! arrived meanwhile (group commit). The flush blocks this thread only; the
//! API's runtime never waits on the disk.
//!
//! Requests carry a deadline ([`REQUEST_TIMEOUT`]). A write whose deadline
//! passes is answered [`StoreError::Timeout`]: it may still be applied
//! later, and the caller must treat its outcome as unknown. A read that
//! times out changed nothing and may simply be retried.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::pki::SubjectName;
use crate::raft::logger::logger;
use crate::raft::replica::{
    Applied, MembershipChange, MembershipStep, ProposeError, Replica, ReplicaConfig, ReplicaError,
    ReplicaStatus, TICK,
};
use crate::raft::storage::{LogStore, StorageError};
use crate::store::{
    Command, Compacted, Event, Key, Member, Outcome, Record, RequestId, StoreState,
};
use crate::transport::{Inbound, PeerEvent, Transport};

/// How long a request may wait for Raft before it is answered with a
/// timeout. Long enough for an election (1–2 s) plus a retry.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Changes buffered for watchers; a watcher further behind than this
/// catches up from the store's history instead.
const WATCH_BUFFER: usize = 4096;

/// Requests taken from each queue per loop turn, so that a flood of one
/// kind cannot starve ticks and the other kind.
const DRAIN_LIMIT: usize = 1024;

/// A request to the store failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// No leader is known (election in progress, or no quorum).
    #[error("the cluster has no leader right now")]
    NoLeader,
    /// Raft did not take the proposal in; nothing was written.
    #[error("the proposal was not accepted: {0}")]
    Rejected(#[source] ProposeError),
    /// No answer in time. A write may still be applied.
    #[error("no answer within {0:?}; a write may still have been applied")]
    Timeout(Duration),
    /// The node is shutting down or has failed.
    #[error("the cluster member has stopped")]
    Stopped,
}

/// The whole store as this member has applied it, encoded: a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    /// The store revision it holds.
    pub revision: u64,
    /// [`StoreState::encode`] of it.
    pub data: Vec<u8>,
}

/// What a linearizable read asks for.
#[derive(Clone, Debug)]
pub enum Query {
    /// One key.
    Get(Key),
    /// Keys under a prefix, at most `limit` of them.
    List {
        /// The prefix.
        prefix: String,
        /// At most this many keys.
        limit: usize,
    },
}

/// A read's answer, as of one store revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadResult {
    /// The store revision the read saw.
    pub revision: u64,
    /// The matching keys and their records, in key order.
    pub records: Vec<(Key, Record)>,
}

enum Request {
    Propose {
        command: Command,
        reply: oneshot::Sender<Result<Outcome, StoreError>>,
    },
    Read {
        query: Query,
        reply: oneshot::Sender<Result<ReadResult, StoreError>>,
    },
    Membership {
        steps: Vec<MembershipStep>,
        upsert: Vec<Member>,
        remove: Vec<u64>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Members {
        reply: oneshot::Sender<Vec<Member>>,
    },
    ReadLocal {
        query: Query,
        reply: oneshot::Sender<ReadResult>,
    },
    Export {
        reply: oneshot::Sender<Export>,
    },
    History {
        prefix: String,
        after: u64,
        reply: oneshot::Sender<Result<Vec<Event>, Compacted>>,
    },
    TransferLeader {
        to: u64,
    },
}

enum Waiter {
    Write(oneshot::Sender<Result<Outcome, StoreError>>),
    Read(Query, oneshot::Sender<Result<ReadResult, StoreError>>),
    Membership(oneshot::Sender<Result<(), StoreError>>),
}

impl Waiter {
    fn fail(self, error: StoreError) {
        // A caller that went away does not need the answer.
        match self {
            Self::Write(reply) => drop(reply.send(Err(error))),
            Self::Read(_, reply) => drop(reply.send(Err(error))),
            Self::Membership(reply) => drop(reply.send(Err(error))),
        }
    }
}

/// Starting a member failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The log could not be opened.
    #[error("cannot open the raft log in {path}")]
    Open {
        /// The log directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: StorageError,
    },
    /// The replica refused the log.
    #[error("cannot start the raft replica")]
    Replica(#[source] ReplicaError),
    /// The thread could not be spawned.
    #[error("cannot spawn the raft thread")]
    Thread(#[source] std::io::Error),
}

/// How a member starts.
#[derive(Clone, Debug)]
pub enum Start {
    /// Create a new cluster whose only voter is this member; when the log
    /// already holds one (a restart), open it instead.
    Bootstrap(Member),
    /// Restart from the log on disk.
    Open,
    /// Create a new cluster whose only voter is this member and whose
    /// store starts as a backup (encoded [`StoreState`]); when the log
    /// already holds one (a restart), open it instead.
    Restore {
        /// This member's directory entry.
        member: Member,
        /// The backup.
        state: StoreState,
    },
    /// Join with an empty log: the cluster's members (as the join answer
    /// listed them) are reachable at once, and the leader catches this
    /// member up with a snapshot. After a restart the log is opened and
    /// the directory it holds takes over from this list.
    Join(Vec<Member>),
}

/// The handle the API and the agent use. Cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<Option<ReplicaStatus>>,
    changes: broadcast::Sender<Change>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Propose { .. } => "Propose",
            Self::Read { .. } => "Read",
            Self::Membership { .. } => "Membership",
            Self::Members { .. } => "Members",
            Self::ReadLocal { .. } => "ReadLocal",
            Self::Export { .. } => "Export",
            Self::History { .. } => "History",
            Self::TransferLeader { .. } => "TransferLeader",
        })
    }
}

/// Starts a member on its own thread. `inbound` is the receiving end of the
/// channel `transport` delivers peer messages to.
pub fn start(
    config: ReplicaConfig,
    data_dir: PathBuf,
    how: Start,
    transport: Transport,
    inbound: mpsc::Receiver<Inbound>,
) -> Result<NodeHandle, StartError> {
    let store = LogStore::open(&data_dir).map_err(|source| StartError::Open {
        path: data_dir.clone(),
        source,
    })?;
    let log = logger();
    let mut initial_peers = Vec::new();
    let replica = match how {
        // The same start after a restart finds the log it made.
        Start::Bootstrap(_) | Start::Restore { .. } if !store.is_empty() => {
            Replica::open(config, store, &log).map_err(StartError::Replica)?
        }
        Start::Restore { member, state } => {
            let mut replica = Replica::bootstrap_from(config, store, state, member, &log)
                .map_err(StartError::Replica)?;
            if let Err(error) = replica.campaign() {
                tracing::warn!(%error, "first campaign failed; the election timeout will retry");
            }
            replica
        }
        Start::Bootstrap(member) => {
            let mut replica =
                Replica::bootstrap(config, store, member, &log).map_err(StartError::Replica)?;
            // One voter: no reason to wait out an election timeout.
            if let Err(error) = replica.campaign() {
                tracing::warn!(%error, "first campaign failed; the election timeout will retry");
            }
            replica
        }
        Start::Open => Replica::open(config, store, &log).map_err(StartError::Replica)?,
        Start::Join(members) => {
            initial_peers = members;
            Replica::open(config, store, &log).map_err(StartError::Replica)?
        }
    };
    let (requests, rx) = mpsc::channel(4096);
    let (status_tx, status) = watch::channel(Some(replica.status()));
    let (changes, _) = broadcast::channel(WATCH_BUFFER);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(StartError::Thread)?;
    let shell = Shell {
        replica,
        transport,
        inbound,
        requests: rx,
        waiting: HashMap::new(),
        seq: 0,
        status: status_tx,
        changes: changes.clone(),
        peers: BTreeSet::new(),
    };
    let mut shell = shell;
    for member in &initial_peers {
        shell.set_peer(member);
    }
    thread::Builder::new()
        .name(format!("raft-{}", shell.replica.id()))
        .spawn(move || runtime.block_on(shell.run()))
        .map_err(StartError::Thread)?;
    Ok(NodeHandle {
        requests,
        status,
        changes,
    })
}

impl NodeHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Runs a store command through Raft and returns its outcome.
    pub async fn propose(&self, command: Command) -> Result<Outcome, StoreError> {
        self.call(|reply| Request::Propose { command, reply }).await
    }

    /// A linearizable read.
    pub async fn read(&self, query: Query) -> Result<ReadResult, StoreError> {
        self.call(|reply| Request::Read { query, reply }).await
    }

    /// Changes the Raft configuration, recording `upsert` and forgetting
    /// `remove` in the member directory in the same entry. A follower
    /// forwards the change to the leader; a leader that is busy with
    /// another change drops it, and the call then times out.
    pub async fn change_membership(
        &self,
        steps: Vec<MembershipStep>,
        upsert: Vec<Member>,
        remove: Vec<u64>,
    ) -> Result<(), StoreError> {
        self.call(|reply| Request::Membership {
            steps,
            upsert,
            remove,
            reply,
        })
        .await
    }

    /// A read of this member's applied state, without asking the leader:
    /// it may be stale, and it works without quorum (for status output).
    pub async fn read_local(&self, query: Query) -> Result<ReadResult, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::ReadLocal { query, reply })
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)
    }

    /// The store as this member has applied it, for a backup. Precede it
    /// with a linearizable read to include every acknowledged write.
    pub async fn export(&self) -> Result<Export, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Export { reply })
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)
    }

    /// The member directory as this member has applied it (not a
    /// linearizable read).
    pub async fn members(&self) -> Result<Vec<Member>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Members { reply })
            .await
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)
    }

    /// Asks the leader to hand over to `to`.
    pub async fn transfer_leader(&self, to: u64) -> Result<(), StoreError> {
        self.requests
            .send(Request::TransferLeader { to })
            .await
            .map_err(|_| StoreError::Stopped)
    }

    /// Watches changes to keys under `prefix` after revision `after`
    /// (0: from the oldest change kept). Changes arrive in revision order,
    /// each once, as this member applies them.
    pub async fn watch(&self, prefix: String, after: u64) -> Result<Watch, WatchError> {
        // Subscribe before reading the history, so nothing falls between.
        let live = self.changes.subscribe();
        let mut watch = Watch {
            requests: self.requests.downgrade(),
            live,
            prefix,
            last: after,
            backlog: std::collections::VecDeque::new(),
        };
        watch.catch_up().await?;
        Ok(watch)
    }

    /// The replica's status after its last loop turn.
    pub fn status(&self) -> Option<ReplicaStatus> {
        self.status.borrow().clone()
    }

    /// A receiver that changes whenever the status does.
    pub fn watch_status(&self) -> watch::Receiver<Option<ReplicaStatus>> {
        self.status.clone()
    }
}

/// Asks the member for the changes under `prefix` after `after`.
async fn history(
    requests: &mpsc::WeakSender<Request>,
    prefix: String,
    after: u64,
) -> Result<Vec<Event>, WatchError> {
    let requests = requests.upgrade().ok_or(WatchError::Stopped)?;
    let (reply, answer) = oneshot::channel();
    requests
        .send(Request::History {
            prefix,
            after,
            reply,
        })
        .await
        .map_err(|_| WatchError::Stopped)?;
    answer
        .await
        .map_err(|_| WatchError::Stopped)?
        .map_err(WatchError::Compacted)
}

struct Shell {
    replica: Replica,
    transport: Transport,
    inbound: mpsc::Receiver<Inbound>,
    requests: mpsc::Receiver<Request>,
    waiting: HashMap<RequestId, (Waiter, Instant)>,
    seq: u64,
    status: watch::Sender<Option<ReplicaStatus>>,
    changes: broadcast::Sender<Change>,
    /// Peers currently in the transport's directory.
    peers: BTreeSet<u64>,
}

impl Shell {
    async fn run(mut self) {
        self.sync_peers();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.replica.tick();
                    self.expire();
                }
                inbound = self.inbound.recv() => match inbound {
                    Some(inbound) => self.inbound(inbound),
                    None => break,
                },
                request = self.requests.recv() => match request {
                    Some(request) => self.request(request),
                    None => break,
                },
            }
            for _ in 0..DRAIN_LIMIT {
                let Ok(inbound) = self.inbound.try_recv() else {
                    break;
                };
                self.inbound(inbound);
            }
            for _ in 0..DRAIN_LIMIT {
                let Ok(request) = self.requests.try_recv() else {
                    break;
                };
                self.request(request);
            }
            if let Err(error) = self.advance() {
                tracing::error!(?error, "raft replica failed; this member stops");
                break;
            }
        }
        for (_, (waiter, _)) in self.waiting.drain() {
            waiter.fail(StoreError::Stopped);
        }
        // Dropping the sender tells every handle the member is gone.
        self.status.send_replace(None);
    }

    fn inbound(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Message(message) => {
                if let Err(error) = self.replica.step(message) {
                    tracing::debug!(%error, "raft message refused");
                }
            }
            Inbound::Peer(PeerEvent::Unreachable(id)) => self.replica.report_unreachable(id),
            Inbound::Peer(PeerEvent::SnapshotStatus { to, ok }) => {
                self.replica.report_snapshot(to, ok);
            }
        }
    }

    fn next_id(&mut self) -> RequestId {
        self.seq += 1;
        RequestId {
            node: self.replica.id(),
            seq: self.seq,
        }
    }

    fn request(&mut self, request: Request) {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        match request {
            Request::Propose { command, reply } => {
                let id = self.next_id();
                match self.replica.propose(id, command) {
                    Ok(()) => {
                        self.waiting.insert(id, (Waiter::Write(reply), deadline));
                    }
                    Err(error) => drop(reply.send(Err(refused(error)))),
                }
            }
            Request::ReadLocal { query, reply } => {
                drop(reply.send(answer(self.replica.state(), &query)));
            }
            Request::Export { reply } => {
                let state = self.replica.state();
                drop(reply.send(Export {
                    revision: state.revision(),
                    data: state.encode(),
                }));
            }
            Request::Read { query, reply } => {
                let id = self.next_id();
                match self.replica.read(id) {
                    Ok(()) => {
                        self.waiting
                            .insert(id, (Waiter::Read(query, reply), deadline));
                    }
                    Err(error) => drop(reply.send(Err(refused(error)))),
                }
            }
            Request::Membership {
                steps,
                upsert,
                remove,
                reply,
            } => {
                let id = self.next_id();
                // The new members must be reachable (and allowed to open
                // streams to us) before the entry that adds them commits.
                for member in &upsert {
                    self.set_peer(member);
                }
                let change = MembershipChange {
                    id,
                    upsert,
                    remove,
                    steps,
                };
                match self.replica.propose_membership(change) {
                    Ok(()) => {
                        self.waiting
                            .insert(id, (Waiter::Membership(reply), deadline));
                    }
                    Err(error) => drop(reply.send(Err(refused(error)))),
                }
            }
            Request::History {
                prefix,
                after,
                reply,
            } => {
                drop(reply.send(self.replica.state().events_after(after, &prefix)));
            }
            Request::Members { reply } => {
                let members = self.replica.state().members().values().cloned().collect();
                drop(reply.send(members));
            }
            Request::TransferLeader { to } => self.replica.transfer_leader(to),
        }
    }

    fn advance(&mut self) -> Result<(), ReplicaError> {
        let transport = self.transport.clone();
        let output = self
            .replica
            .advance(&mut |message| transport.send(message))?;
        // Status first, so that a caller answered below already sees the
        // state its request produced.
        let status = self.replica.status();
        self.status.send_if_modified(|current| {
            let changed = current.as_ref() != Some(&status);
            if changed {
                *current = Some(status);
            }
            changed
        });
        let mut members_changed = output.restored;
        if output.restored {
            // Watchers cannot tell which changes a snapshot stood in for;
            // they re-read the history after what they last saw.
            let _ = self.changes.send(Change::Restored);
        }
        for applied in output.applied {
            if let Applied::Command {
                event: Some(event), ..
            } = &applied
            {
                // No watcher listening is not an error.
                let _ = self.changes.send(Change::Event(event.clone()));
            }
            let Some(request) = applied.request() else {
                members_changed = true;
                continue;
            };
            let is_membership = matches!(applied, Applied::Membership { .. });
            members_changed |= is_membership;
            if request.node != self.replica.id() {
                continue;
            }
            let Some((waiter, _)) = self.waiting.remove(&request) else {
                continue;
            };
            match (waiter, applied) {
                (Waiter::Write(reply), Applied::Command { outcome, .. }) => {
                    drop(reply.send(Ok(outcome)));
                }
                (Waiter::Membership(reply), Applied::Membership { .. }) => {
                    drop(reply.send(Ok(())));
                }
                (waiter, applied) => {
                    tracing::error!(
                        ?request,
                        ?applied,
                        "a request was answered by an entry of another kind"
                    );
                    waiter.fail(StoreError::Stopped);
                }
            }
        }
        for read in output.reads {
            if let Some((Waiter::Read(query, reply), _)) = self.waiting.remove(&read) {
                drop(reply.send(Ok(answer(self.replica.state(), &query))));
            }
        }
        if members_changed {
            self.sync_peers();
        }
        Ok(())
    }

    fn set_peer(&mut self, member: &Member) {
        if member.id == self.replica.id() {
            return;
        }
        match SubjectName::try_from(member.name.as_str()) {
            Ok(name) => {
                self.transport.set_peer(member.id, name, member.peer_addr);
                self.peers.insert(member.id);
            }
            Err(error) => {
                tracing::error!(id = member.id, name = %member.name, %error, "member name is not a certificate name; it cannot be reached");
            }
        }
    }

    /// Makes the transport's directory match the applied member directory.
    fn sync_peers(&mut self) {
        let members: Vec<Member> = self.replica.state().members().values().cloned().collect();
        if members.is_empty() {
            // A joining member before its first snapshot: keep the peers the
            // join answer gave it.
            return;
        }
        for member in &members {
            self.set_peer(member);
        }
        let status = self.replica.status();
        for id in status.voters.iter().chain(&status.learners) {
            if !members.iter().any(|m| m.id == *id) && *id != self.replica.id() {
                tracing::warn!(id, "raft member has no entry in the member directory");
            }
        }
        let gone: Vec<u64> = self
            .peers
            .iter()
            .copied()
            .filter(|id| !members.iter().any(|m| m.id == *id))
            .collect();
        for id in gone {
            self.transport.remove_peer(id);
            self.peers.remove(&id);
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<RequestId> = self
            .waiting
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((waiter, _)) = self.waiting.remove(&id) {
                waiter.fail(StoreError::Timeout(REQUEST_TIMEOUT));
            }
        }
    }
}

fn refused(error: ProposeError) -> StoreError {
    match error {
        ProposeError::NoLeader => StoreError::NoLeader,
        other => StoreError::Rejected(other),
    }
}

fn answer(state: &StoreState, query: &Query) -> ReadResult {
    let records = match query {
        Query::Get(key) => state
            .get(key)
            .map(|record| vec![(key.clone(), record.clone())])
            .unwrap_or_default(),
        Query::List { prefix, limit } => state
            .list(prefix, *limit)
            .into_iter()
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect(),
    };
    ReadResult {
        revision: state.revision(),
        records,
    }
}

/// What the member tells its watchers.
#[derive(Clone, Debug)]
enum Change {
    /// A key changed.
    Event(Event),
    /// A snapshot replaced the whole state.
    Restored,
}

/// A watch ended.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    /// The changes the watch needs are no longer kept; start over from a
    /// fresh read.
    #[error(transparent)]
    Compacted(Compacted),
    /// The member stopped.
    #[error("the cluster member has stopped")]
    Stopped,
}

/// A stream of changes under a prefix; see [`NodeHandle::watch`].
#[derive(Debug)]
pub struct Watch {
    /// Weak, so that a forgotten watch does not keep the member running.
    requests: mpsc::WeakSender<Request>,
    live: broadcast::Receiver<Change>,
    prefix: String,
    /// The revision of the last change handed out (or the starting point).
    last: u64,
    backlog: std::collections::VecDeque<Event>,
}

impl Watch {
    /// The next change.
    pub async fn next(&mut self) -> Result<Event, WatchError> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                self.last = event.revision;
                return Ok(event);
            }
            match self.live.recv().await {
                Ok(Change::Event(event)) => {
                    if event.revision > self.last && event.key.as_str().starts_with(&self.prefix) {
                        self.last = event.revision;
                        return Ok(event);
                    }
                }
                Ok(Change::Restored) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.catch_up().await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(WatchError::Stopped),
            }
        }
    }

    /// Refills the backlog from the store's history after `last`.
    async fn catch_up(&mut self) -> Result<(), WatchError> {
        let events = history(&self.requests, self.prefix.clone(), self.last).await?;
        self.backlog = events.into();
        Ok(())
    }
}
