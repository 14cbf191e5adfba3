//! One Raft replica: the raft-rs `RawNode`, its durable log and the store's
//! state machine, owned together.
//!
//! The replica does no network I/O and reads no clock. Its owner feeds it
//! ticks (one every [`TICK`]), Raft messages from peers, proposals and
//! read requests, then calls [`Replica::advance`], which runs raft-rs's
//! ready cycle in the documented order and hands back what happened:
//!
//! 1. messages a leader may send before its own log write are passed to the
//!    `send` callback at once, so followers write in parallel with it;
//! 2. a snapshot from the leader replaces the state machine;
//! 3. committed entries are applied to the [`StoreState`] (and
//!    configuration changes to Raft);
//! 4. new entries and the hard state are written to the [`LogStore`] in one
//!    batch and flushed to disk;
//! 5. only then go the messages that promise durability (votes, append
//!    responses), and proposals' outcomes are handed back: an outcome is
//!    reported only for an entry that is committed, i.e. on disk on a
//!    majority.
//!
//! The one disk write per cycle is the group commit: every proposal and
//! message taken in since the last cycle shares it.
//!
//! Writes may be proposed on any replica: raft-rs forwards a follower's
//! proposal to the leader, and the proposing replica reports the outcome
//! when it applies the entry, matched by [`RequestId`]. Reads use ReadIndex:
//! the read is released once this replica has applied everything the
//! leader had committed when the read arrived, and is then served from the
//! local state. A read or a forwarded proposal lost with a leader change is
//! never answered; the owner times it out and the client learns the outcome
//! is unknown.

use std::collections::BTreeMap;

use protobuf::Message as _;
/// A replica's Raft role, as [`ReplicaStatus::role`] reports it.
pub use raft::StateRole;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    HardState, Message, Snapshot,
};
use raft::{ProgressState, RawNode, ReadOnlyOption, SnapshotStatus};
use serde::{Deserialize, Serialize};

use super::storage::{LogStore, LogWrite, StorageError};
use crate::store::{Command, Event, Member, Outcome, Proposal, RequestId, StoreState};

/// How often the owner must call [`Replica::tick`].
pub const TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// Ticks a leader waits for a follower to confirm a snapshot before it
/// sends it again (10 s: a snapshot is at most 64 MiB, seconds on a LAN).
pub const SNAPSHOT_RETRY_TICKS: u64 = 100;

/// Tunables of a replica. The defaults are etcd's: a heartbeat every tick
/// and an election after 10 ticks (1 s) without one.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// This replica's Raft id (never 0).
    pub id: u64,
    /// Ticks without a heartbeat before a follower starts an election.
    pub election_ticks: usize,
    /// Ticks between leader heartbeats.
    pub heartbeat_ticks: usize,
    /// Applied entries between state-machine snapshots.
    pub snapshot_interval: u64,
    /// Entries kept in the log behind a snapshot, so that a briefly lagging
    /// follower catches up from the log instead of a whole snapshot.
    pub log_tail: u64,
}

impl ReplicaConfig {
    /// The defaults for replica `id`.
    pub fn new(id: u64) -> Self {
        Self {
            id,
            election_ticks: 10,
            heartbeat_ticks: 1,
            snapshot_interval: 10_000,
            log_tail: 1_000,
        }
    }

    fn raft(&self, applied: u64) -> raft::Config {
        raft::Config {
            id: self.id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            applied,
            pre_vote: true,
            check_quorum: true,
            read_only_option: ReadOnlyOption::Safe,
            // Appends of up to 1 MiB per message and 256 in flight keep a
            // follower's pipeline full on a LAN without unbounded memory.
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            // A leader refuses proposals once this much is uncommitted, so
            // a leader cut off from its followers cannot grow without bound.
            max_uncommitted_size: 64 * 1024 * 1024,
            ..raft::Config::default()
        }
    }
}

/// The replica could not go on. Every variant is fatal for this replica:
/// its disk or its log is not what Raft needs.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The log store failed.
    #[error("raft log store failed")]
    Storage(#[from] StorageError),
    /// raft-rs refused its configuration or state.
    #[error("raft refused the replica's state")]
    Raft(#[source] raft::Error),
    /// Bootstrap needs a log that was never used.
    #[error("cannot bootstrap: the raft log already holds a cluster's state")]
    NotEmpty,
    /// A snapshot's state machine bytes do not decode.
    #[error("snapshot at index {index} does not decode")]
    Snapshot {
        /// The snapshot's index.
        index: u64,
        /// Why.
        #[source]
        source: crate::store::state::SnapshotDecodeError,
    },
}

/// A proposal was not taken in. Nothing was written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProposeError {
    /// No leader is known, so the proposal cannot be forwarded.
    #[error("no leader is known")]
    NoLeader,
    /// Only one membership change may be in flight.
    #[error("another membership change is still in progress")]
    ChangeInProgress,
    /// raft-rs dropped the proposal (leader stepping down, transfer in
    /// progress, too much uncommitted).
    #[error("the proposal was dropped; retry")]
    Dropped,
}

/// A membership change, carried as the context of a Raft configuration
/// change so that the member directory changes in the same entry as Raft's
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    /// Who is waiting for the outcome.
    pub id: RequestId,
    /// Members to record (added or updated).
    pub upsert: Vec<Member>,
    /// Raft ids to forget.
    pub remove: Vec<u64>,
    /// The Raft configuration steps, applied together (joint consensus when
    /// there is more than one).
    pub steps: Vec<MembershipStep>,
}

/// One step of a configuration change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipStep {
    /// Add a non-voting member.
    AddLearner(u64),
    /// Make a member a voter.
    AddVoter(u64),
    /// Remove a member.
    Remove(u64),
}

impl MembershipChange {
    fn conf_change(&self) -> ConfChangeV2 {
        let mut cc = ConfChangeV2::default();
        let steps = self
            .steps
            .iter()
            .map(|step| {
                let (id, kind) = match *step {
                    MembershipStep::AddLearner(id) => (id, ConfChangeType::AddLearnerNode),
                    MembershipStep::AddVoter(id) => (id, ConfChangeType::AddNode),
                    MembershipStep::Remove(id) => (id, ConfChangeType::RemoveNode),
                };
                single(id, kind)
            })
            .collect();
        cc.set_changes(steps);
        // Owned data always serializes.
        cc.set_context(postcard::to_stdvec(self).unwrap_or_default().into());
        cc
    }
}

/// What one applied entry did.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// A store command ran.
    Command {
        /// Who proposed it.
        request: RequestId,
        /// What it did.
        outcome: Outcome,
        /// The change, for watches (none when nothing changed).
        event: Option<Event>,
    },
    /// The configuration changed.
    Membership {
        /// Who proposed it, when it carried a request (raft-rs's automatic
        /// leave-joint step does not).
        request: Option<RequestId>,
        /// The configuration now in force.
        conf_state: ConfState,
    },
}

impl Applied {
    /// The request this entry answers, if it was proposed here.
    pub fn request(&self) -> Option<RequestId> {
        match self {
            Self::Command { request, .. } => Some(*request),
            Self::Membership { request, .. } => *request,
        }
    }
}

/// What one [`Replica::advance`] produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Entries applied, in log order. Outcomes for requests proposed on
    /// other replicas are here too; the owner matches by request node.
    pub applied: Vec<Applied>,
    /// Reads that may now be served from [`Replica::state`].
    pub reads: Vec<RequestId>,
    /// A snapshot replaced the whole state: watchers must resynchronise.
    pub restored: bool,
    /// Leader or role changed in this cycle.
    pub role_changed: bool,
    /// Entries that failed to decode and were applied as no-ops.
    pub undecodable: u64,
}

/// Where a replica stands, for status output and membership decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// This replica's id.
    pub id: u64,
    /// The leader it knows of (0: none).
    pub leader: u64,
    /// The current term.
    pub term: u64,
    /// Its role.
    pub role: StateRole,
    /// Highest index known committed.
    pub commit: u64,
    /// Highest index applied to the state machine.
    pub applied: u64,
    /// Voters of the configuration in force.
    pub voters: Vec<u64>,
    /// Learners of the configuration in force.
    pub learners: Vec<u64>,
    /// On the leader only: every peer's replication progress.
    pub progress: BTreeMap<u64, PeerProgress>,
}

/// The leader's view of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// Highest index known to be on the peer's disk.
    pub matched: u64,
    /// Whether the peer answered within the last election timeout.
    pub recently_active: bool,
}

/// The replica. See the module documentation.
pub struct Replica {
    node: RawNode<LogStore>,
    state: StoreState,
    config: ReplicaConfig,
    applied: u64,
    applied_term: u64,
    snapshot_index: u64,
    conf_state: ConfState,
    hard_state: HardState,
    hard_state_dirty: bool,
    /// Reads waiting for `applied` to reach their index.
    pending_reads: Vec<(u64, RequestId)>,
    /// Ticks since start.
    ticks: u64,
    /// Followers in the snapshot state, and the tick they entered it.
    snapshot_waits: BTreeMap<u64, u64>,
    /// A configuration change was applied since the last snapshot.
    snapshot_due: bool,
    /// Reads taken in by a leader that has not yet committed in its term.
    deferred_reads: Vec<RequestId>,
    last_soft: (u64, StateRole),
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.config.id)
            .field("applied", &self.applied)
            .field("snapshot_index", &self.snapshot_index)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Makes `store` the log of a new one-member cluster whose only voter is
    /// `member`, then opens it. The initial state is a snapshot at index 1
    /// holding the member directory, so every node that joins later starts
    /// from the same state by receiving it.
    pub fn bootstrap(
        config: ReplicaConfig,
        store: LogStore,
        member: Member,
        logger: &slog::Logger,
    ) -> Result<Self, ReplicaError> {
        Self::bootstrap_from(config, store, StoreState::default(), member, logger)
    }

    /// Creates a one-voter cluster whose store starts as `state` (a backup
    /// of a cluster that lost quorum for good), with `member` as the only
    /// entry of its member directory. Revisions continue from the
    /// backup's, so watchers never see one go backwards.
    pub fn bootstrap_from(
        config: ReplicaConfig,
        mut store: LogStore,
        mut state: StoreState,
        member: Member,
        logger: &slog::Logger,
    ) -> Result<Self, ReplicaError> {
        if !store.is_empty() {
            return Err(ReplicaError::NotEmpty);
        }
        state.replace_members(member.clone());
        let mut snapshot = Snapshot::default();
        snapshot.set_data(state.encode().into());
        let meta = snapshot.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.mut_conf_state().voters = vec![member.id];
        let hard_state = HardState {
            term: 1,
            commit: 1,
            ..HardState::default()
        };
        store.write(LogWrite {
            snapshot: Some(&snapshot),
            entries: &[],
            hard_state: Some(&hard_state),
            conf_state: Some(snapshot.get_metadata().get_conf_state()),
        })?;
        store.save_snapshot(&snapshot, 2)?;
        Self::open(config, store, logger)
    }

    /// Opens a replica on an existing log (restart) or an empty one (a node
    /// joining: it waits for the leader to send it a snapshot).
    pub fn open(
        config: ReplicaConfig,
        store: LogStore,
        logger: &slog::Logger,
    ) -> Result<Self, ReplicaError> {
        let snapshot = store.snapshot_data()?;
        let meta = snapshot.get_metadata();
        let state =
            StoreState::decode(snapshot.get_data()).map_err(|source| ReplicaError::Snapshot {
                index: meta.index,
                source,
            })?;
        let applied = meta.index;
        let applied_term = meta.term;
        let conf_state = store.conf_state();
        let hard_state = store.hard_state();
        let node =
            RawNode::new(&config.raft(applied), store, logger).map_err(ReplicaError::Raft)?;
        let last_soft = (node.raft.leader_id, node.raft.state);
        Ok(Self {
            node,
            state,
            config,
            applied,
            applied_term,
            snapshot_index: applied,
            conf_state,
            hard_state,
            hard_state_dirty: false,
            pending_reads: Vec::new(),
            deferred_reads: Vec::new(),
            snapshot_due: false,
            ticks: 0,
            snapshot_waits: BTreeMap::new(),
            last_soft,
        })
    }

    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.config.id
    }

    /// The state machine, as of the last applied entry.
    pub fn state(&self) -> &StoreState {
        &self.state
    }

    /// The log store (for its size on disk).
    pub fn log(&self) -> &LogStore {
        self.node.store()
    }

    /// Advances Raft's logical clock by one tick.
    pub fn tick(&mut self) {
        self.node.tick();
        self.ticks += 1;
        self.retry_stuck_snapshots();
    }

    /// raft-rs pauses a follower that was sent a snapshot until the owner
    /// reports the transfer's end. The transport reports "sent" when the
    /// snapshot was handed to the connection; if it is lost after that and
    /// the follower's answer never comes, the follower would stay paused
    /// for good. So a leader that has waited [`SNAPSHOT_RETRY_TICKS`] for a
    /// follower to leave the snapshot state reports the transfer failed,
    /// which makes raft-rs probe the follower and send it again.
    fn retry_stuck_snapshots(&mut self) {
        if self.node.raft.state != StateRole::Leader {
            self.snapshot_waits.clear();
            return;
        }
        let waiting: Vec<u64> = self
            .node
            .raft
            .prs()
            .iter()
            .filter(|(_, pr)| pr.state == ProgressState::Snapshot)
            .map(|(id, _)| *id)
            .collect();
        self.snapshot_waits.retain(|id, _| waiting.contains(id));
        for id in waiting {
            let since = *self.snapshot_waits.entry(id).or_insert(self.ticks);
            if self.ticks - since >= SNAPSHOT_RETRY_TICKS {
                tracing::info!(peer = id, "no answer to a snapshot; sending it again");
                self.node.report_snapshot(id, SnapshotStatus::Failure);
                self.snapshot_waits.remove(&id);
            }
        }
    }

    /// Hands Raft a message from a peer. A message Raft cannot use (from a
    /// removed member, or of a local type) is dropped and said so; it does
    /// not stop the replica.
    pub fn step(&mut self, message: Message) -> Result<(), raft::Error> {
        self.node.step(message)
    }

    /// Starts an election now, without waiting for the timeout. Used after
    /// bootstrap so a fresh one-node cluster has a leader at once.
    pub fn campaign(&mut self) -> Result<(), raft::Error> {
        self.node.campaign()
    }

    /// Proposes a store command. On a follower the proposal is forwarded to
    /// the leader; the outcome comes back in a later [`Output::applied`].
    pub fn propose(&mut self, id: RequestId, command: Command) -> Result<(), ProposeError> {
        if self.node.raft.leader_id == raft::INVALID_ID {
            return Err(ProposeError::NoLeader);
        }
        let proposal = Proposal { id, command };
        self.node
            .propose(Vec::new(), proposal.encode())
            .map_err(|_| ProposeError::Dropped)
    }

    /// Proposes a membership change, one at a time: a leader with a change
    /// in progress refuses the next (raft-rs would otherwise silently turn
    /// it into a no-op). A follower forwards it to the leader, which drops
    /// it in that case; the caller's deadline then says so.
    pub fn propose_membership(&mut self, change: MembershipChange) -> Result<(), ProposeError> {
        if self.node.raft.leader_id == raft::INVALID_ID {
            return Err(ProposeError::NoLeader);
        }
        // Only the leader knows whether a change is pending; a follower
        // forwards the proposal and the leader drops it if one is.
        if self.node.raft.state == StateRole::Leader
            && (self.node.raft.has_pending_conf() || self.conf_state.auto_leave)
        {
            return Err(ProposeError::ChangeInProgress);
        }
        self.node
            .propose_conf_change(Vec::new(), change.conf_change())
            .map_err(|_| ProposeError::Dropped)
    }

    /// Asks for a linearizable read. It shows up in [`Output::reads`] once
    /// the local state is at least as new as the leader's commit index at
    /// the time of the request.
    pub fn read(&mut self, id: RequestId) -> Result<(), ProposeError> {
        if self.node.raft.leader_id == raft::INVALID_ID {
            return Err(ProposeError::NoLeader);
        }
        // A new leader drops read requests until it has committed an entry
        // of its own term; hold them here and ask again once it has.
        if self.node.raft.state == StateRole::Leader && !self.node.raft.commit_to_current_term() {
            self.deferred_reads.push(id);
        } else {
            self.node.read_index(encode_request(id));
        }
        Ok(())
    }

    /// Hands leadership to `to` (a planned reboot of the leader).
    pub fn transfer_leader(&mut self, to: u64) {
        self.node.transfer_leader(to);
    }

    /// The transport could not reach `id`.
    pub fn report_unreachable(&mut self, id: u64) {
        self.node.report_unreachable(id);
    }

    /// The transport finished (or failed) sending a snapshot to `id`.
    pub fn report_snapshot(&mut self, id: u64, delivered: bool) {
        let status = if delivered {
            SnapshotStatus::Finish
        } else {
            SnapshotStatus::Failure
        };
        self.node.report_snapshot(id, status);
    }

    /// Where this replica stands.
    pub fn status(&self) -> ReplicaStatus {
        let raft = &self.node.raft;
        let progress = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .map(|(id, pr)| {
                    (
                        *id,
                        PeerProgress {
                            matched: pr.matched,
                            recently_active: pr.recent_active,
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        ReplicaStatus {
            id: self.config.id,
            leader: raft.leader_id,
            term: raft.term,
            role: raft.state,
            commit: raft.raft_log.committed,
            applied: self.applied,
            voters: self.conf_state.voters.clone(),
            learners: self.conf_state.learners.clone(),
            progress,
        }
    }

    /// Runs one ready cycle, if raft-rs has one. See the module
    /// documentation for the order; `send` gets every outgoing message at
    /// the moment it may leave.
    pub fn advance(&mut self, send: &mut dyn FnMut(Message)) -> Result<Output, ReplicaError> {
        let mut output = Output::default();
        if !self.node.has_ready() {
            self.note_role(&mut output);
            return Ok(output);
        }
        let mut ready = self.node.ready();

        for message in ready.take_messages() {
            send(message);
        }

        let snapshot = ready.snapshot().clone();
        let has_snapshot = !snapshot.is_empty();
        if has_snapshot {
            self.restore(&snapshot)?;
            output.restored = true;
        }
        for read in ready.take_read_states() {
            if let Some(id) = decode_request(&read.request_ctx) {
                self.pending_reads.push((read.index, id));
            }
        }

        self.apply_entries(ready.take_committed_entries(), &mut output)?;

        if let Some(hard_state) = ready.hs() {
            self.hard_state = hard_state.clone();
            self.hard_state_dirty = true;
        }
        let entries = ready.take_entries();
        if !entries.is_empty() || self.hard_state_dirty || has_snapshot {
            self.node.mut_store().write(LogWrite {
                snapshot: has_snapshot.then_some(&snapshot),
                entries: &entries,
                hard_state: Some(&self.hard_state),
                conf_state: None,
            })?;
            self.hard_state_dirty = false;
        }

        for message in ready.take_persisted_messages() {
            send(message);
        }

        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            // Not flushed on its own: a lost commit index is learnt again
            // from the leader, and nothing was acknowledged on its account.
            self.hard_state.commit = commit;
            self.hard_state_dirty = true;
        }
        for message in light.take_messages() {
            send(message);
        }
        self.apply_entries(light.take_committed_entries(), &mut output)?;
        self.node.advance_apply();

        self.release_reads(&mut output);
        self.maybe_snapshot()?;
        self.note_role(&mut output);
        Ok(output)
    }

    fn note_role(&mut self, output: &mut Output) {
        let soft = (self.node.raft.leader_id, self.node.raft.state);
        if soft != self.last_soft {
            self.last_soft = soft;
            output.role_changed = true;
        }
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), ReplicaError> {
        let meta = snapshot.get_metadata();
        self.state =
            StoreState::decode(snapshot.get_data()).map_err(|source| ReplicaError::Snapshot {
                index: meta.index,
                source,
            })?;
        self.applied = meta.index;
        self.applied_term = meta.term;
        self.snapshot_index = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        Ok(())
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        output: &mut Output,
    ) -> Result<(), ReplicaError> {
        let mut conf_changed = false;
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            self.applied = entry.index;
            self.applied_term = entry.term;
            if entry.data.is_empty() {
                // A new leader's empty entry, or raft-rs's automatic step out
                // of a joint configuration (which still changes the
                // configuration below).
                if entry.get_entry_type() == EntryType::EntryNormal {
                    continue;
                }
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => match Proposal::decode(&entry.data) {
                    Ok(Proposal { id, command }) => {
                        let (outcome, event) = self.state.apply(command);
                        output.applied.push(Applied::Command {
                            request: id,
                            outcome,
                            event,
                        });
                    }
                    Err(error) => {
                        tracing::error!(index = entry.index, %error, "raft entry does not decode; applied as a no-op");
                        output.undecodable += 1;
                    }
                },
                kind @ (EntryType::EntryConfChangeV2 | EntryType::EntryConfChange) => {
                    // Cairn proposes version-2 changes only; a version-1
                    // change is applied as its version-2 form, which keeps
                    // this replica in step with whoever proposed it.
                    let decoded = if kind == EntryType::EntryConfChangeV2 {
                        ConfChangeV2::parse_from_bytes(&entry.data)
                    } else {
                        ConfChange::parse_from_bytes(&entry.data).map(v1_to_v2)
                    };
                    let cc = match decoded {
                        Ok(cc) => cc,
                        Err(error) => {
                            tracing::error!(index = entry.index, %error, "configuration change does not decode; ignored");
                            output.undecodable += 1;
                            continue;
                        }
                    };
                    let request = self.apply_membership_context(cc.get_context());
                    self.conf_state = self
                        .node
                        .apply_conf_change(&cc)
                        .map_err(ReplicaError::Raft)?;
                    conf_changed = true;
                    output.applied.push(Applied::Membership {
                        request,
                        conf_state: self.conf_state.clone(),
                    });
                }
            }
        }
        if conf_changed {
            self.node.mut_store().write(LogWrite {
                snapshot: None,
                entries: &[],
                hard_state: None,
                conf_state: Some(&self.conf_state),
            })?;
            // raft-rs refuses a snapshot whose configuration does not name
            // the receiver, and a new member is caught up by snapshot; so
            // every configuration change is followed by one that names it.
            self.snapshot_due = true;
        }
        Ok(())
    }

    fn apply_membership_context(&mut self, context: &[u8]) -> Option<RequestId> {
        if context.is_empty() {
            return None;
        }
        match postcard::from_bytes::<MembershipChange>(context) {
            Ok(change) => {
                for member in change.upsert {
                    self.state.set_member(member);
                }
                for id in change.remove {
                    self.state.remove_member(id);
                }
                Some(change.id)
            }
            Err(error) => {
                tracing::error!(%error, "membership change context does not decode; member directory unchanged");
                None
            }
        }
    }

    fn release_reads(&mut self, output: &mut Output) {
        if !self.deferred_reads.is_empty() && self.node.raft.commit_to_current_term() {
            for id in std::mem::take(&mut self.deferred_reads) {
                self.node.read_index(encode_request(id));
            }
        }
        let applied = self.applied;
        self.pending_reads.retain(|&(index, id)| {
            if index <= applied {
                output.reads.push(id);
                false
            } else {
                true
            }
        });
    }

    fn maybe_snapshot(&mut self) -> Result<(), ReplicaError> {
        if !self.snapshot_due && self.applied < self.snapshot_index + self.config.snapshot_interval
        {
            return Ok(());
        }
        if self.hard_state_dirty {
            // The log store keeps a snapshot only up to its recorded commit
            // index, which may still be the one from the last flush.
            self.node.mut_store().write(LogWrite {
                snapshot: None,
                entries: &[],
                hard_state: Some(&self.hard_state),
                conf_state: None,
            })?;
            self.hard_state_dirty = false;
        }
        self.save_snapshot()?;
        self.snapshot_due = false;
        Ok(())
    }

    /// Saves the state as of the last applied entry as the snapshot Raft
    /// sends to lagging or new members, and compacts the log behind it,
    /// keeping `log_tail` entries.
    fn save_snapshot(&mut self) -> Result<(), ReplicaError> {
        let mut snapshot = Snapshot::default();
        snapshot.set_data(self.state.encode().into());
        let meta = snapshot.mut_metadata();
        meta.index = self.applied;
        meta.term = self.applied_term;
        meta.set_conf_state(self.conf_state.clone());
        let compact_to = self.applied.saturating_sub(self.config.log_tail) + 1;
        self.node.mut_store().save_snapshot(&snapshot, compact_to)?;
        self.snapshot_index = self.applied;
        tracing::debug!(
            index = self.applied,
            bytes = snapshot.get_data().len(),
            "saved a store snapshot"
        );
        Ok(())
    }
}

fn single(node_id: u64, kind: ConfChangeType) -> ConfChangeSingle {
    let mut single = ConfChangeSingle {
        node_id,
        ..ConfChangeSingle::default()
    };
    single.set_change_type(kind);
    single
}

/// A version-1 change is a version-2 change with one step.
fn v1_to_v2(cc: ConfChange) -> ConfChangeV2 {
    let mut v2 = ConfChangeV2::default();
    v2.set_changes(vec![single(cc.node_id, cc.get_change_type())].into());
    v2.set_context(cc.context);
    v2
}

fn encode_request(id: RequestId) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&id.node.to_be_bytes());
    bytes.extend_from_slice(&id.seq.to_be_bytes());
    bytes
}

fn decode_request(bytes: &[u8]) -> Option<RequestId> {
    let node = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some(RequestId { node, seq })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        // Read contexts come back from the leader: any bytes either name a
        // request or are ignored.
        #[test]
        fn read_contexts_round_trip_and_other_bytes_never_panic(
            node in 0..u64::MAX,
            seq in 0..u64::MAX,
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32),
        ) {
            let id = RequestId { node, seq };
            proptest::prop_assert_eq!(decode_request(&encode_request(id)), Some(id));
            let decoded = decode_request(&bytes);
            proptest::prop_assert_eq!(decoded.is_some(), bytes.len() >= 16);
        }

        #[test]
        fn membership_contexts_never_panic_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)
        ) {
            let _ = postcard::from_bytes::<MembershipChange>(&bytes);
        }
    }

    #[test]
    fn a_membership_change_becomes_one_conf_change_with_its_steps_and_context() {
        let change = MembershipChange {
            id: RequestId { node: 1, seq: 7 },
            upsert: vec![],
            remove: vec![3],
            steps: vec![MembershipStep::AddVoter(4), MembershipStep::Remove(3)],
        };
        let cc = change.conf_change();
        let kinds: Vec<_> = cc
            .get_changes()
            .iter()
            .map(|c| (c.node_id, c.get_change_type()))
            .collect();
        assert_eq!(
            kinds,
            [
                (4, ConfChangeType::AddNode),
                (3, ConfChangeType::RemoveNode)
            ]
        );
        let back: MembershipChange = postcard::from_bytes(cc.get_context()).unwrap();
        assert_eq!(back, change);
    }
}
