//! The replicated state machine: keys with revisions, a bounded change
//! history for watches, and the member directory.
//!
//! Pure and deterministic: applying the same entries in the same order gives
//! the same state and the same outcomes on every replica. No clock, no I/O,
//! no randomness. The Raft replica owns one [`StoreState`] and feeds it
//! committed entries; snapshots are its postcard encoding.
//!
//! Revisions work as in etcd: one store-wide counter that every successful
//! write or delete advances by one. A key remembers the revision that created
//! it, the revision of its last change and how many times it changed since
//! it was created. A failed precondition or a delete of a missing key
//! changes nothing and does not advance the counter.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::command::{Command, Expect, Outcome};
use super::key::Key;

/// Most change events kept for watches to resume from.
pub const HISTORY_EVENTS: usize = 10_000;
/// Most bytes of keys and values kept in the change history.
pub const HISTORY_BYTES: usize = 8 * 1024 * 1024;

/// One key's current value and revisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: u64,
    /// The revision of the key's last change.
    pub mod_revision: u64,
    /// Number of changes since creation (1 after the creating write).
    pub version: u64,
}

/// What a change did to a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was written; this is its new record.
    Put(Record),
    /// The key was removed.
    Delete,
}

/// One change, as watches see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The revision of the change.
    pub revision: u64,
    /// The key it changed.
    pub key: Key,
    /// What happened.
    pub kind: EventKind,
}

impl Event {
    fn weight(&self) -> usize {
        let value = match &self.kind {
            EventKind::Put(record) => record.value.len(),
            EventKind::Delete => 0,
        };
        self.key.as_str().len() + value + 32
    }
}

/// A cluster member as the store records it. The Raft voter/learner role is
/// not here: it lives in Raft's configuration, which is the authority.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft id, unique for the life of the cluster.
    pub id: u64,
    /// Node name (the common name of its node certificate).
    pub name: String,
    /// Where its peer port listens.
    pub peer_addr: SocketAddr,
    /// Where its API listens.
    pub api_addr: SocketAddr,
    /// Its failure domain label (rack, host, site), if it has one: the
    /// leader spreads voters across domains.
    pub domain: Option<String>,
}

/// A watch asked to start before the oldest change still kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "revision {requested} is compacted; the oldest revision a watch can start from is {oldest}"
)]
pub struct Compacted {
    /// The revision the watch asked for.
    pub requested: u64,
    /// The oldest revision still available.
    pub oldest: u64,
}

/// The whole replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreState {
    revision: u64,
    records: BTreeMap<Key, Record>,
    /// Changes after `compacted`, oldest first.
    history: VecDeque<Event>,
    history_bytes: usize,
    /// The newest revision no longer in `history`.
    compacted: u64,
    members: BTreeMap<u64, Member>,
}

/// A snapshot's bytes did not decode into a state.
#[derive(Debug, thiserror::Error)]
#[error("store snapshot does not decode")]
pub struct SnapshotDecodeError(#[source] postcard::Error);

impl StoreState {
    /// The store-wide revision: the revision of the last change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A key's record.
    pub fn get(&self, key: &Key) -> Option<&Record> {
        self.records.get(key)
    }

    /// Keys starting with `prefix`, in key order, at most `limit` of them.
    pub fn list(&self, prefix: &str, limit: usize) -> Vec<(&Key, &Record)> {
        let start = match Key::new(prefix) {
            Ok(key) => Bound::Included(key),
            Err(_) => Bound::Unbounded,
        };
        self.records
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.as_str().starts_with(prefix))
            .take(limit)
            .collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The recorded members, by Raft id.
    pub fn members(&self) -> &BTreeMap<u64, Member> {
        &self.members
    }

    /// Applies one command and says what it did. The event, when there is
    /// one, is also kept in the history.
    pub fn apply(&mut self, command: Command) -> (Outcome, Option<Event>) {
        match command {
            Command::Put { key, value, expect } => self.put(key, value, expect),
            Command::Delete { key, expect } => self.delete(key, expect),
        }
    }

    fn put(&mut self, key: Key, value: Vec<u8>, expect: Expect) -> (Outcome, Option<Event>) {
        let current = self.records.get(&key);
        let current_revision = current.map(|r| r.mod_revision);
        if !expect.holds(current_revision) {
            return (
                Outcome::Conflict {
                    current: current_revision,
                },
                None,
            );
        }
        let revision = self.revision + 1;
        let record = match current {
            Some(old) => Record {
                value,
                create_revision: old.create_revision,
                mod_revision: revision,
                version: old.version + 1,
            },
            None => Record {
                value,
                create_revision: revision,
                mod_revision: revision,
                version: 1,
            },
        };
        self.revision = revision;
        self.records.insert(key.clone(), record.clone());
        let event = Event {
            revision,
            key,
            kind: EventKind::Put(record),
        };
        self.remember(event.clone());
        (Outcome::Written { revision }, Some(event))
    }

    fn delete(&mut self, key: Key, expect: Expect) -> (Outcome, Option<Event>) {
        let current_revision = self.records.get(&key).map(|r| r.mod_revision);
        if !expect.holds(current_revision) {
            return (
                Outcome::Conflict {
                    current: current_revision,
                },
                None,
            );
        }
        if current_revision.is_none() {
            return (Outcome::NotFound, None);
        }
        let revision = self.revision + 1;
        self.revision = revision;
        self.records.remove(&key);
        let event = Event {
            revision,
            key,
            kind: EventKind::Delete,
        };
        self.remember(event.clone());
        (Outcome::Deleted { revision }, Some(event))
    }

    fn remember(&mut self, event: Event) {
        self.history_bytes += event.weight();
        self.history.push_back(event);
        while self.history.len() > HISTORY_EVENTS || self.history_bytes > HISTORY_BYTES {
            let Some(oldest) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= oldest.weight();
            self.compacted = oldest.revision;
        }
    }

    /// Changes after revision `after` whose key starts with `prefix`, oldest
    /// first. A watch that has seen everything up to `after` resumes here.
    pub fn events_after(&self, after: u64, prefix: &str) -> Result<Vec<Event>, Compacted> {
        if after < self.compacted {
            return Err(Compacted {
                requested: after + 1,
                oldest: self.compacted + 1,
            });
        }
        // Revisions in the history are strictly increasing, so the first
        // one past `after` is found by binary search.
        let start = self.history.partition_point(|e| e.revision <= after);
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.key.as_str().starts_with(prefix))
            .cloned()
            .collect())
    }

    /// Records a member, replacing any with the same id.
    pub fn set_member(&mut self, member: Member) {
        self.members.insert(member.id, member);
    }

    /// Makes `member` the only entry of the directory (a restore from
    /// backup starts a new cluster of one).
    pub fn replace_members(&mut self, member: Member) {
        self.members.clear();
        self.set_member(member);
    }

    /// Forgets a member.
    pub fn remove_member(&mut self, id: u64) -> Option<Member> {
        self.members.remove(&id)
    }

    /// The snapshot bytes of this state.
    pub fn encode(&self) -> Vec<u8> {
        // Owned maps, vectors and integers always serialize into a Vec.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Restores a state from snapshot bytes. Empty bytes are the empty state
    /// (a snapshot that only carries a configuration).
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotDecodeError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        postcard::from_bytes(bytes).map_err(SnapshotDecodeError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Key {
        Key::new(k).unwrap()
    }

    fn put(state: &mut StoreState, k: &str, v: &str, expect: Expect) -> Outcome {
        state
            .apply(Command::Put {
                key: key(k),
                value: v.as_bytes().to_vec(),
                expect,
            })
            .0
    }

    #[test]
    fn every_successful_change_advances_the_revision_by_one() {
        let mut state = StoreState::default();
        assert_eq!(
            put(&mut state, "a", "1", Expect::Any),
            Outcome::Written { revision: 1 }
        );
        assert_eq!(
            put(&mut state, "b", "1", Expect::Any),
            Outcome::Written { revision: 2 }
        );
        assert_eq!(
            put(&mut state, "a", "2", Expect::Any),
            Outcome::Written { revision: 3 }
        );
        let a = state.get(&key("a")).unwrap();
        assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 3, 2));
        let (outcome, _) = state.apply(Command::Delete {
            key: key("b"),
            expect: Expect::Any,
        });
        assert_eq!(outcome, Outcome::Deleted { revision: 4 });
        assert_eq!(state.revision(), 4);
    }

    #[test]
    fn failed_preconditions_and_missing_deletes_change_nothing() {
        let mut state = StoreState::default();
        put(&mut state, "a", "1", Expect::Any);
        let before = state.clone();
        assert_eq!(
            put(&mut state, "a", "2", Expect::Absent),
            Outcome::Conflict { current: Some(1) }
        );
        assert_eq!(
            put(&mut state, "a", "2", Expect::Revision(7)),
            Outcome::Conflict { current: Some(1) }
        );
        assert_eq!(
            put(&mut state, "new", "2", Expect::Revision(1)),
            Outcome::Conflict { current: None }
        );
        let (outcome, event) = state.apply(Command::Delete {
            key: key("missing"),
            expect: Expect::Any,
        });
        assert_eq!((outcome, event), (Outcome::NotFound, None));
        assert_eq!(state, before);
    }

    #[test]
    fn compare_and_set_succeeds_only_on_the_current_revision() {
        let mut state = StoreState::default();
        assert_eq!(
            put(&mut state, "a", "1", Expect::Absent),
            Outcome::Written { revision: 1 }
        );
        assert_eq!(
            put(&mut state, "a", "2", Expect::Revision(1)),
            Outcome::Written { revision: 2 }
        );
        assert_eq!(
            put(&mut state, "a", "3", Expect::Revision(1)),
            Outcome::Conflict { current: Some(2) }
        );
        assert_eq!(state.get(&key("a")).unwrap().value, b"2");
    }

    #[test]
    fn list_returns_exactly_the_keys_under_a_prefix_in_order() {
        let mut state = StoreState::default();
        for k in ["site/b", "site/a", "sitex", "other", "site/c"] {
            put(&mut state, k, "v", Expect::Any);
        }
        let keys: Vec<_> = state
            .list("site/", 10)
            .into_iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["site/a", "site/b", "site/c"]);
        assert_eq!(state.list("site/", 2).len(), 2);
        assert_eq!(state.list("", 10).len(), 5);
    }

    #[test]
    fn a_watch_resumes_after_the_revision_it_has_seen() {
        let mut state = StoreState::default();
        for i in 0..5 {
            put(
                &mut state,
                &format!("k{}", i % 2),
                &i.to_string(),
                Expect::Any,
            );
        }
        let revisions: Vec<_> = state
            .events_after(2, "")
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(revisions, [3, 4, 5]);
        let k1: Vec<_> = state
            .events_after(0, "k1")
            .unwrap()
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(k1, [2, 4]);
        assert!(state.events_after(5, "").unwrap().is_empty());
    }

    #[test]
    fn a_watch_from_before_the_kept_history_is_told_it_is_compacted() {
        let mut state = StoreState::default();
        for i in 0..HISTORY_EVENTS + 10 {
            put(&mut state, "k", &i.to_string(), Expect::Any);
        }
        assert_eq!(
            state.events_after(5, ""),
            Err(Compacted {
                requested: 6,
                oldest: 11
            })
        );
        assert_eq!(state.events_after(10, "").unwrap().len(), HISTORY_EVENTS);
    }

    #[test]
    fn history_is_bounded_by_bytes_as_well_as_events() {
        let mut state = StoreState::default();
        let big = "x".repeat(256 * 1024);
        for _ in 0..64 {
            put(&mut state, "k", &big, Expect::Any);
        }
        assert!(state.history_bytes <= HISTORY_BYTES);
        assert!(state.history.len() < 64);
    }

    #[test]
    fn a_snapshot_restores_the_same_state() {
        let mut state = StoreState::default();
        put(&mut state, "a", "1", Expect::Any);
        put(&mut state, "b", "2", Expect::Any);
        state.set_member(Member {
            id: 1,
            name: "n1".into(),
            peer_addr: "10.0.0.1:7444".parse().unwrap(),
            api_addr: "10.0.0.1:7443".parse().unwrap(),
            domain: None,
        });
        let restored = StoreState::decode(&state.encode()).unwrap();
        assert_eq!(restored, state);
        assert_eq!(StoreState::decode(&[]).unwrap(), StoreState::default());
        assert!(StoreState::decode(&[0xff; 7]).is_err());
    }

    proptest::proptest! {
        // Snapshots arrive from peers: whatever the bytes, decoding answers
        // with a state or an error, never a panic.
        #[test]
        fn snapshot_decoding_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)
        ) {
            let _ = StoreState::decode(&bytes);
        }

        #[test]
        fn a_snapshot_of_any_history_of_writes_restores_equal(
            ops in proptest::collection::vec((0..6u8, proptest::option::of(0..4u8), proptest::prelude::any::<bool>()), 0..64)
        ) {
            let mut state = StoreState::default();
            for (i, (k, expect, delete)) in ops.into_iter().enumerate() {
                let key = key(&format!("k{k}"));
                let expect = match expect {
                    None => Expect::Any,
                    Some(0) => Expect::Absent,
                    Some(r) => Expect::Revision(u64::from(r)),
                };
                let command = if delete {
                    Command::Delete { key, expect }
                } else {
                    Command::Put { key, value: i.to_string().into_bytes(), expect }
                };
                state.apply(command);
            }
            proptest::prop_assert_eq!(StoreState::decode(&state.encode()).unwrap(), state);
        }
    }
}
