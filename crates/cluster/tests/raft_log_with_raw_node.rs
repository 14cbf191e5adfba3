//! raft-rs `RawNode`s running on `LogStore`: the log store is what raft
//! restarts from and what a new node catches up from, not just something
//! that agrees with MemStorage.
//!
//! The nodes follow the order raft-rs documents for a `Ready`: send
//! messages, install a snapshot, apply committed entries, persist, send the
//! persisted messages, advance, handle the light ready, advance apply. The
//! state machine is the list of proposal numbers applied, which makes a lost
//! or repeated entry visible.

use std::collections::VecDeque;
use std::path::Path;

use cluster::raft::storage::{LogStore, LogWrite};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{Config, RawNode, SnapshotStatus, Storage};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn config(id: u64, applied: u64) -> Config {
    Config {
        id,
        election_tick: 10,
        heartbeat_tick: 1,
        applied,
        ..Config::default()
    }
}

fn encode_state(applied: &[u64]) -> Vec<u8> {
    applied.iter().flat_map(|n| n.to_be_bytes()).collect()
}

fn decode_state(data: &[u8]) -> Vec<u64> {
    data.chunks_exact(8)
        .map(|chunk| u64::from_be_bytes(chunk.try_into().expect("8 bytes")))
        .collect()
}

struct Node {
    raw: RawNode<LogStore>,
    /// The state machine: proposal numbers in the order they were applied.
    applied: Vec<u64>,
    applied_index: u64,
}

impl Node {
    /// Opens the store in `dir` and restores the state machine from its
    /// snapshot; raft then hands out the committed entries after it again.
    fn start(id: u64, dir: &Path) -> Node {
        let store = LogStore::open(dir).expect("open log store");
        let snapshot = store.snapshot_data().expect("read snapshot");
        let applied_index = snapshot.get_metadata().index;
        let raw = RawNode::new(&config(id, applied_index), store, &logger()).expect("raw node");
        Node {
            raw,
            applied: decode_state(&snapshot.data),
            applied_index,
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            self.applied_index = entry.index;
            match entry.get_entry_type() {
                EntryType::EntryNormal if !entry.data.is_empty() => {
                    self.applied.push(u64::from_be_bytes(
                        entry.data[..].try_into().expect("8 bytes"),
                    ));
                }
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    let change = ConfChange::parse_from_bytes(&entry.data).expect("conf change");
                    let conf_state = self
                        .raw
                        .apply_conf_change(&change)
                        .expect("apply conf change");
                    self.raw
                        .mut_store()
                        .write(LogWrite {
                            conf_state: Some(&conf_state),
                            ..LogWrite::default()
                        })
                        .expect("persist conf state");
                }
                EntryType::EntryConfChangeV2 => panic!("no v2 conf changes in this test"),
            }
        }
    }

    /// Handles one ready, if any; returns the messages to deliver.
    fn handle_ready(&mut self) -> Vec<Message> {
        if !self.raw.has_ready() {
            return Vec::new();
        }
        let mut ready = self.raw.ready();
        let mut outbox = ready.take_messages();
        let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
        if let Some(snapshot) = &snapshot {
            self.applied = decode_state(&snapshot.data);
            self.applied_index = snapshot.get_metadata().index;
        }
        self.apply(ready.take_committed_entries());
        self.raw
            .mut_store()
            .write(LogWrite {
                snapshot: snapshot.as_ref(),
                entries: ready.entries(),
                hard_state: ready.hs(),
                conf_state: None,
            })
            .expect("persist ready");
        outbox.extend(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hard_state = self.raw.store().hard_state();
            hard_state.commit = commit;
            self.raw
                .mut_store()
                .write(LogWrite {
                    hard_state: Some(&hard_state),
                    ..LogWrite::default()
                })
                .expect("persist commit index");
        }
        outbox.extend(light.take_messages());
        self.apply(light.take_committed_entries());
        self.raw.advance_apply();
        outbox
    }

    /// Snapshots the state machine at the applied index and compacts the log
    /// up to `keep` entries before it.
    fn snapshot_and_compact(&mut self, keep: u64) {
        let index = self.applied_index;
        let mut snapshot = Snapshot {
            data: encode_state(&self.applied).into(),
            ..Snapshot::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = self.raw.store().term(index).expect("term of applied index");
        meta.set_conf_state(self.raw.store().conf_state());
        let compact_to = (index + 1).saturating_sub(keep).max(1);
        self.raw
            .mut_store()
            .save_snapshot(&snapshot, compact_to)
            .expect("save snapshot");
    }
}

/// Runs ready handling and message delivery until everything is quiet.
fn settle(nodes: &mut [&mut Node]) {
    let mut queue: VecDeque<Message> = VecDeque::new();
    for _ in 0..10_000 {
        for node in nodes.iter_mut() {
            queue.extend(node.handle_ready());
        }
        let Some(message) = queue.pop_front() else {
            return;
        };
        let (to, from) = (message.to, message.from);
        let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
        let target = nodes
            .iter_mut()
            .find(|node| node.raw.raft.id == to)
            .expect("message to a known node");
        target.raw.step(message).expect("step");
        if is_snapshot {
            let sender = nodes
                .iter_mut()
                .find(|node| node.raw.raft.id == from)
                .expect("sender");
            sender.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
    }
    panic!("the nodes never settled");
}

fn propose(node: &mut Node, numbers: std::ops::RangeInclusive<u64>) {
    for n in numbers {
        node.raw
            .propose(vec![], n.to_be_bytes().to_vec())
            .expect("propose");
        settle(&mut [&mut *node]);
    }
}

fn bootstrap_single_node(dir: &Path) -> Node {
    let mut store = LogStore::open(dir).expect("open");
    assert!(store.is_empty());
    store
        .write(LogWrite {
            conf_state: Some(&ConfState {
                voters: vec![1],
                ..ConfState::default()
            }),
            ..LogWrite::default()
        })
        .expect("bootstrap conf state");
    drop(store);
    let mut node = Node::start(1, dir);
    node.raw.campaign().expect("campaign");
    settle(&mut [&mut node]);
    assert_eq!(node.raw.raft.state, raft::StateRole::Leader);
    node
}

#[test]
fn a_node_restarted_from_its_log_store_keeps_every_committed_entry_and_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = bootstrap_single_node(dir.path());
    propose(&mut node, 1..=30);
    node.snapshot_and_compact(5);
    propose(&mut node, 31..=40);
    let commit_before = node.raw.raft.raft_log.committed;
    let first_before = node.raw.store().first_index().expect("first index");
    assert!(
        first_before > 20,
        "the log was compacted, first index {first_before}"
    );
    drop(node);

    let mut node = Node::start(1, dir.path());
    assert_eq!(node.raw.raft.raft_log.committed, commit_before);
    assert_eq!(
        node.raw.store().first_index().expect("first index"),
        first_before
    );
    settle(&mut [&mut node]);
    assert_eq!(node.applied, (1..=40).collect::<Vec<_>>());

    node.raw.campaign().expect("campaign");
    settle(&mut [&mut node]);
    propose(&mut node, 41..=45);
    assert_eq!(node.applied, (1..=45).collect::<Vec<_>>());
}

#[test]
fn a_new_node_catches_up_from_the_leaders_snapshot_after_compaction() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let mut leader = bootstrap_single_node(leader_dir.path());
    propose(&mut leader, 1..=20);
    leader.snapshot_and_compact(0);
    assert_eq!(
        leader.raw.store().first_index().expect("first index"),
        leader.applied_index + 1
    );

    let mut follower = Node::start(2, follower_dir.path());
    let change = ConfChange {
        change_type: ConfChangeType::AddNode,
        node_id: 2,
        ..ConfChange::default()
    };
    leader
        .raw
        .propose_conf_change(vec![], change)
        .expect("propose conf change");
    settle(&mut [&mut leader, &mut follower]);
    // The saved snapshot predates node 2, which would refuse it, so the
    // store withholds it; the leader makes one that names node 2.
    assert_eq!(follower.applied, Vec::<u64>::new());
    assert!(leader.raw.store().snapshot(0, 2).is_err());
    leader.snapshot_and_compact(0);
    for n in 21..=25 {
        leader
            .raw
            .propose(vec![], u64::to_be_bytes(n).to_vec())
            .expect("propose");
        settle(&mut [&mut leader, &mut follower]);
    }

    let expected: Vec<u64> = (1..=25).collect();
    assert_eq!(leader.applied, expected);
    assert_eq!(follower.applied, expected);
    let follower_store = follower.raw.store();
    let leader_snapshot = leader.raw.store().snapshot_data().expect("leader snapshot");
    assert_eq!(
        follower_store.snapshot_data().expect("follower snapshot"),
        leader_snapshot,
        "the follower installed and kept the leader's snapshot"
    );
    assert_eq!(
        follower_store.first_index().expect("first index"),
        leader_snapshot.get_metadata().index + 1
    );
    assert_eq!(follower_store.conf_state().voters, vec![1, 2]);

    // And the follower restarts from what it persisted.
    drop(follower);
    let mut follower = Node::start(2, follower_dir.path());
    settle(&mut [&mut follower]);
    assert_eq!(follower.applied, expected);
}
