//! The sled Raft log against the `raft::Storage` contract and against
//! raft-rs's own `MemStorage`, including across restarts.

use std::collections::BTreeMap;
use std::path::Path;

use cluster::raft::storage::{LogStore, LogWrite, StorageError};
use proptest::prelude::*;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, Storage};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("entry {index} of term {term}").into_bytes().into(),
        ..Entry::default()
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|index| entry(index, term)).collect()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

fn voters(ids: &[u64]) -> ConfState {
    ConfState {
        voters: ids.to_vec(),
        ..ConfState::default()
    }
}

fn snapshot(index: u64, term: u64, conf_state: ConfState, data: &[u8]) -> Snapshot {
    let mut snapshot = Snapshot {
        data: data.to_vec().into(),
        ..Snapshot::default()
    };
    let meta = snapshot.mut_metadata();
    meta.index = index;
    meta.term = term;
    meta.set_conf_state(conf_state);
    snapshot
}

fn append(store: &mut LogStore, entries: &[Entry]) -> Result<(), StorageError> {
    store.write(LogWrite {
        entries,
        ..LogWrite::default()
    })
}

fn all_entries(store: &impl Storage) -> Vec<Entry> {
    let first = store.first_index().expect("the storage call succeeds");
    let last = store.last_index().expect("the storage call succeeds");
    store
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .expect("the storage call succeeds")
}

fn is_store_error(result: raft::Result<u64>, expected: raft::StorageError) -> bool {
    result == Err(raft::Error::Store(expected))
}

/// Entries 1..=10 in term 1, committed up to 8, voters 1-3.
fn store_with_ten_entries(dir: &Path) -> LogStore {
    let mut store = LogStore::open(dir).expect("the storage call succeeds");
    store
        .write(LogWrite {
            entries: &entries(1..=10, 1),
            hard_state: Some(&hard_state(1, 1, 8)),
            conf_state: Some(&voters(&[1, 2, 3])),
            ..LogWrite::default()
        })
        .expect("the storage call succeeds");
    store
}

#[test]
fn the_store_can_move_into_the_replica_task() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<LogStore>();
    assert_send_sync::<StorageError>();
}

#[test]
fn a_new_store_is_empty_and_starts_at_index_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    assert!(store.is_empty());
    assert_eq!(store.first_index().unwrap(), 1);
    assert_eq!(store.last_index().unwrap(), 0);
    assert_eq!(store.term(0).unwrap(), 0);
    assert_eq!(store.hard_state(), HardState::default());
    assert_eq!(store.conf_state(), ConfState::default());
    assert_eq!(store.snapshot_data().unwrap(), Snapshot::default());
    assert!(!store.initial_state().unwrap().initialized());
}

#[test]
fn a_reopened_store_returns_the_hard_state_conf_state_entries_and_snapshot_written_before() {
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot(5, 1, voters(&[1, 2, 3]), b"state machine at 5");
    let (hard, conf, log) = {
        let mut store = store_with_ten_entries(dir.path());
        store.save_snapshot(&snap, 4).unwrap();
        store
            .write(LogWrite {
                entries: &entries(11..=12, 2),
                hard_state: Some(&hard_state(2, 3, 9)),
                conf_state: Some(&voters(&[1, 2, 3, 4])),
                ..LogWrite::default()
            })
            .unwrap();
        assert!(!store.is_empty());
        // Flushed, so sled's log file has grown.
        assert!(store.size_on_disk().unwrap() > 0);
        (store.hard_state(), store.conf_state(), all_entries(&store))
    };

    let store = LogStore::open(dir.path()).unwrap();
    assert!(!store.is_empty());
    assert_eq!(store.hard_state(), hard);
    assert_eq!(store.hard_state(), hard_state(2, 3, 9));
    assert_eq!(store.conf_state(), conf);
    let state = store.initial_state().unwrap();
    assert_eq!((state.hard_state, state.conf_state), (hard, conf));
    assert_eq!(store.first_index().unwrap(), 4);
    assert_eq!(store.last_index().unwrap(), 12);
    assert_eq!(all_entries(&store), log);
    assert_eq!(store.term(3).unwrap(), 1);
    assert_eq!(store.term(12).unwrap(), 2);
    assert_eq!(store.snapshot_data().unwrap(), snap);
    assert_eq!(store.snapshot(5, 2).unwrap(), snap);
}

#[test]
fn appending_at_an_existing_index_truncates_the_conflicting_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_ten_entries(dir.path());
    append(&mut store, &entries(9..=9, 2)).unwrap();
    assert_eq!(store.last_index().unwrap(), 9);
    assert_eq!(store.term(9).unwrap(), 2);
    assert_eq!(store.term(8).unwrap(), 1);
    assert!(is_store_error(
        store.term(10),
        raft::StorageError::Unavailable
    ));
    let mut expected = entries(1..=8, 1);
    expected.push(entry(9, 2));
    assert_eq!(all_entries(&store), expected);

    drop(store);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all_entries(&store), expected);
}

#[test]
fn truncating_committed_entries_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_ten_entries(dir.path());
    let error = append(&mut store, &entries(8..=8, 2)).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::TruncatesCommitted {
                index: 8,
                commit: 8
            }
        ),
        "{error:?}"
    );
    assert_eq!(all_entries(&store), entries(1..=10, 1));
}

#[test]
fn appending_after_a_gap_is_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_ten_entries(dir.path());
    let error = append(&mut store, &entries(12..=13, 1)).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::Gap {
                index: 12,
                last_index: 10
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "appending entry 12 would leave a gap after the last index 10"
    );
    assert_eq!(store.last_index().unwrap(), 10);

    let holes = [entry(11, 1), entry(13, 1)];
    let error = append(&mut store, &holes).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::NonConsecutiveEntries {
                previous: 11,
                index: 13
            }
        ),
        "{error:?}"
    );
    assert_eq!(store.last_index().unwrap(), 10);
}

#[test]
fn entries_below_the_first_index_are_ignored_and_the_rest_appended() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_ten_entries(dir.path());
    store
        .save_snapshot(&snapshot(8, 1, voters(&[1, 2, 3]), b"s"), 9)
        .unwrap();
    assert_eq!(store.first_index().unwrap(), 9);
    append(&mut store, &entries(7..=11, 1)).unwrap();
    assert_eq!(store.first_index().unwrap(), 9);
    assert_eq!(store.last_index().unwrap(), 11);
    assert_eq!(all_entries(&store), entries(9..=11, 1));
}

#[test]
fn entries_honour_max_size_like_raft_limit_size_and_return_at_least_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_ten_entries(dir.path());
    let all = entries(1..=10, 1);
    let total: u64 = all
        .iter()
        .map(|e| u64::from(protobuf::Message::compute_size(e)))
        .sum();
    for max_size in 0..=total + 1 {
        let mut expected = all[2..9].to_vec();
        raft::util::limit_size(&mut expected, Some(max_size));
        let got = store
            .entries(3, 10, max_size, GetEntriesContext::empty(false))
            .unwrap();
        assert!(!got.is_empty(), "max_size {max_size}");
        assert_eq!(got, expected, "max_size {max_size}");
    }
    let unlimited = store
        .entries(3, 10, raft::NO_LIMIT, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(unlimited, all[2..9].to_vec());
    assert_eq!(
        store
            .entries(4, 4, None, GetEntriesContext::empty(false))
            .unwrap(),
        vec![]
    );
    assert_eq!(
        store.entries(1, 12, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(raft::StorageError::Unavailable))
    );
}

#[test]
fn term_is_compacted_below_the_floor_known_at_the_snapshot_and_unavailable_beyond_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_ten_entries(dir.path());
    append(&mut store, &entries(11..=12, 2)).unwrap();
    store
        .write(LogWrite {
            hard_state: Some(&hard_state(2, 1, 11)),
            ..LogWrite::default()
        })
        .unwrap();
    store
        .save_snapshot(&snapshot(11, 2, voters(&[1, 2, 3]), b"s"), 12)
        .unwrap();
    assert_eq!(store.first_index().unwrap(), 12);
    assert!(is_store_error(
        store.term(10),
        raft::StorageError::Compacted
    ));
    assert_eq!(store.term(11).unwrap(), 2);
    assert_eq!(store.term(12).unwrap(), 2);
    assert!(is_store_error(
        store.term(13),
        raft::StorageError::Unavailable
    ));
    assert_eq!(
        store.entries(11, 12, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(raft::StorageError::Compacted))
    );
}

#[test]
fn saving_a_snapshot_compacts_the_log_and_moves_the_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_ten_entries(dir.path());
    let snap = snapshot(8, 1, voters(&[1, 2, 3]), b"state at 8");

    // Keeping a tail: entries 6.. stay for slow followers.
    store.save_snapshot(&snap, 6).unwrap();
    assert_eq!(store.first_index().unwrap(), 6);
    assert_eq!(store.term(5).unwrap(), 1);
    assert_eq!(all_entries(&store), entries(6..=10, 1));
    assert_eq!(store.snapshot_data().unwrap(), snap);

    // Compacting less than before changes nothing.
    store.save_snapshot(&snap, 3).unwrap();
    assert_eq!(store.first_index().unwrap(), 6);

    store.save_snapshot(&snap, 9).unwrap();
    assert_eq!(store.first_index().unwrap(), 9);
    assert_eq!(store.term(8).unwrap(), 1);
    assert_eq!(all_entries(&store), entries(9..=10, 1));

    drop(store);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.first_index().unwrap(), 9);
    assert_eq!(store.term(8).unwrap(), 1);
    assert_eq!(store.snapshot_data().unwrap(), snap);
}

#[test]
fn save_snapshot_refuses_snapshots_it_cannot_stand_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_ten_entries(dir.path());
    let conf = voters(&[1, 2, 3]);

    let error = store
        .save_snapshot(&snapshot(9, 1, conf.clone(), b""), 1)
        .unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::SnapshotBeyondCommit {
                index: 9,
                commit: 8
            }
        ),
        "{error:?}"
    );
    let error = store
        .save_snapshot(&snapshot(7, 2, conf.clone(), b""), 1)
        .unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::SnapshotTermMismatch {
                index: 7,
                snapshot_term: 2,
                log_term: 1
            }
        ),
        "{error:?}"
    );
    let error = store
        .save_snapshot(&snapshot(7, 1, conf.clone(), b""), 9)
        .unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::CompactBeyondSnapshot {
                compact_to: 9,
                snapshot_index: 7
            }
        ),
        "{error:?}"
    );
    let error = store
        .save_snapshot(&snapshot(0, 0, conf.clone(), b""), 1)
        .unwrap_err();
    assert!(matches!(error, StorageError::EmptySnapshot), "{error:?}");

    store
        .save_snapshot(&snapshot(7, 1, conf.clone(), b""), 1)
        .unwrap();
    let error = store
        .save_snapshot(&snapshot(6, 1, conf, b""), 1)
        .unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::SnapshotOutOfDate {
                index: 6,
                current: 7
            }
        ),
        "{error:?}"
    );
    assert_eq!(store.first_index().unwrap(), 1);
    assert_eq!(store.snapshot_data().unwrap().get_metadata().index, 7);
}

#[test]
fn snapshot_returns_the_saved_one_unless_it_is_missing_older_than_requested_or_without_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_ten_entries(dir.path());
    assert_eq!(
        store.snapshot(0, 2),
        Err(raft::Error::Store(
            raft::StorageError::SnapshotTemporarilyUnavailable
        ))
    );
    let snap = snapshot(6, 1, voters(&[1, 2, 3]), b"state at 6");
    store.save_snapshot(&snap, 1).unwrap();
    assert_eq!(store.snapshot(0, 2).unwrap(), snap);
    assert_eq!(store.snapshot(6, 2).unwrap(), snap);
    assert_eq!(
        store.snapshot(7, 2),
        Err(raft::Error::Store(
            raft::StorageError::SnapshotTemporarilyUnavailable
        ))
    );
    // Node 4 joined after the snapshot; it would refuse one without itself.
    assert_eq!(
        store.snapshot(0, 4),
        Err(raft::Error::Store(
            raft::StorageError::SnapshotTemporarilyUnavailable
        ))
    );
    let learner = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        ..ConfState::default()
    };
    let with_learner = snapshot(7, 1, learner, b"state at 7");
    store.save_snapshot(&with_learner, 1).unwrap();
    assert_eq!(store.snapshot(0, 4).unwrap(), with_learner);
}

#[test]
fn a_received_snapshot_replaces_the_log_and_raises_term_and_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with_ten_entries(dir.path());
    let snap = snapshot(20, 3, voters(&[1, 2, 4]), b"leader state at 20");
    store
        .write(LogWrite {
            snapshot: Some(&snap),
            entries: &entries(18..=22, 3),
            ..LogWrite::default()
        })
        .unwrap();
    assert_eq!(store.first_index().unwrap(), 21);
    assert_eq!(store.last_index().unwrap(), 22);
    assert_eq!(store.term(20).unwrap(), 3);
    assert_eq!(all_entries(&store), entries(21..=22, 3));
    assert_eq!(store.hard_state(), hard_state(3, 1, 20));
    assert_eq!(store.conf_state(), voters(&[1, 2, 4]));
    assert_eq!(store.snapshot_data().unwrap(), snap);

    let error = store
        .write(LogWrite {
            snapshot: Some(&snapshot(15, 3, voters(&[1]), b"")),
            ..LogWrite::default()
        })
        .unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::SnapshotOutOfDate {
                index: 15,
                current: 20
            }
        ),
        "{error:?}"
    );

    drop(store);
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.first_index().unwrap(), 21);
    assert_eq!(store.term(20).unwrap(), 3);
    assert_eq!(store.hard_state(), hard_state(3, 1, 20));
    assert_eq!(store.conf_state(), voters(&[1, 2, 4]));
}

// ---------------------------------------------------------------------------
// Model check against raft-rs's MemStorage.

#[derive(Debug, Clone)]
enum Op {
    /// Append `len` entries starting somewhere between the first writable
    /// index and last + 1 (`start` picks where), in a term at least the
    /// previous entry's.
    Append {
        start: u64,
        len: u64,
        term_bump: u64,
    },
    /// Persist a hard state whose commit moves forward (`commit` picks how far).
    HardState {
        commit: u64,
        vote: u64,
    },
    /// Save a local snapshot at a committed index and compact.
    SaveSnapshot {
        at: u64,
        compact: u64,
    },
    /// Install a snapshot from the leader, `ahead` past the commit index.
    ReceiveSnapshot {
        ahead: u64,
        term_bump: u64,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u64>(), 1..6u64, 0..2u64).prop_map(|(start, len, term_bump)| Op::Append { start, len, term_bump }),
        2 => (any::<u64>(), 0..4u64).prop_map(|(commit, vote)| Op::HardState { commit, vote }),
        2 => (any::<u64>(), any::<u64>()).prop_map(|(at, compact)| Op::SaveSnapshot { at, compact }),
        1 => (1..8u64, 0..2u64).prop_map(|(ahead, term_bump)| Op::ReceiveSnapshot { ahead, term_bump }),
        1 => Just(Op::Reopen),
    ]
}

/// Picks a value in `low..=high` from a random selector.
fn pick(selector: u64, low: u64, high: u64) -> u64 {
    low + selector % (high - low + 1)
}

struct Model {
    mem: MemStorage,
    /// The term of every index either store may still know, ignoring
    /// compaction: MemStorage forgets the term before its first index, the
    /// LogStore keeps it, and this says what it must be.
    known_terms: BTreeMap<u64, u64>,
    snapshot: Snapshot,
    conf_state: ConfState,
}

impl Model {
    fn max_term(&self) -> u64 {
        self.known_terms
            .values()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.mem.rl().hard_state().term)
    }
}

fn apply(op: &Op, store: &mut Option<LogStore>, dir: &Path, model: &mut Model) {
    let first = model.mem.first_index().expect("the storage call succeeds");
    let last = model.mem.last_index().expect("the storage call succeeds");
    let commit = model.mem.rl().hard_state().commit;
    match *op {
        Op::Append {
            start,
            len,
            term_bump,
        } => {
            let low = first.max(commit + 1);
            let start = pick(start, low, (last + 1).max(low));
            if start > last + 1 {
                return;
            }
            let base = model.known_terms.get(&(start - 1)).copied().unwrap_or(0);
            let term = base.max(model.max_term()) + term_bump;
            let new = entries(start..=start + len - 1, term);
            model
                .mem
                .wl()
                .append(&new)
                .expect("the storage call succeeds");
            drop(model.known_terms.split_off(&start));
            for e in &new {
                model.known_terms.insert(e.index, e.term);
            }
            append(store.as_mut().expect("the storage call succeeds"), &new)
                .expect("the storage call succeeds");
        }
        Op::HardState {
            commit: selector,
            vote,
        } => {
            let hs = hard_state(
                model.max_term(),
                vote,
                pick(selector, commit, last.max(commit)),
            );
            model.mem.wl().set_hardstate(hs.clone());
            store
                .as_mut()
                .expect("the storage call succeeds")
                .write(LogWrite {
                    hard_state: Some(&hs),
                    ..LogWrite::default()
                })
                .expect("the storage call succeeds");
        }
        Op::SaveSnapshot { at, compact } => {
            let low = model.snapshot.get_metadata().index.max(first - 1).max(1);
            if commit < low {
                return;
            }
            let index = pick(at, low, commit);
            let term = model.known_terms[&index];
            let snap = snapshot(index, term, model.conf_state.clone(), &index.to_be_bytes());
            let compact_to = pick(compact, 1, index + 1);
            if compact_to == last + 1 && compact_to > first {
                // MemStorage's compact() forgets its first index when it
                // drops every entry; installing the snapshot is the same
                // change there, and commit and conf state already match it.
                model
                    .mem
                    .wl()
                    .apply_snapshot(snap.clone())
                    .expect("the storage call succeeds");
            } else {
                model
                    .mem
                    .wl()
                    .compact(compact_to)
                    .expect("the storage call succeeds");
            }
            store
                .as_mut()
                .expect("the storage call succeeds")
                .save_snapshot(&snap, compact_to)
                .expect("the storage call succeeds");
            model.snapshot = snap;
        }
        Op::ReceiveSnapshot { ahead, term_bump } => {
            let index = first
                .max(commit + 1)
                .max(model.snapshot.get_metadata().index + 1)
                + ahead
                - 1;
            let term = model.max_term() + term_bump;
            let conf = voters(&[1, 2, 3 + index % 3]);
            let snap = snapshot(index, term, conf.clone(), b"from the leader");
            model
                .mem
                .wl()
                .apply_snapshot(snap.clone())
                .expect("the storage call succeeds");
            model.known_terms.clear();
            model.known_terms.insert(index, term);
            model.snapshot = snap.clone();
            model.conf_state = conf;
            store
                .as_mut()
                .expect("the storage call succeeds")
                .write(LogWrite {
                    snapshot: Some(&snap),
                    ..LogWrite::default()
                })
                .expect("the storage call succeeds");
        }
        Op::Reopen => {
            drop(store.take());
            *store = Some(LogStore::open(dir).expect("the storage call succeeds"));
        }
    }
}

fn check_agreement(store: &LogStore, model: &Model, max_size: u64) -> Result<(), TestCaseError> {
    let mem = &model.mem;
    let first = mem.first_index().expect("the storage call succeeds");
    let last = mem.last_index().expect("the storage call succeeds");
    prop_assert_eq!(
        store.first_index().expect("the storage call succeeds"),
        first
    );
    prop_assert_eq!(store.last_index().expect("the storage call succeeds"), last);
    for index in first.saturating_sub(3)..=last + 2 {
        let ours = store.term(index);
        let theirs = mem.term(index);
        if index + 1 < first {
            // MemStorage still answers for the index of the last snapshot it
            // installed even after compacting past it; below the floor the
            // LogStore only says Compacted.
            prop_assert!(
                is_store_error(ours, raft::StorageError::Compacted),
                "term({})",
                index
            );
        } else if index + 1 == first {
            // The floor's term, which MemStorage may have dropped.
            let known = model.known_terms.get(&index).copied();
            prop_assert!(known.is_some(), "the model lost the term of {}", index);
            prop_assert_eq!(ours.ok(), known, "term({})", index);
            if let Ok(term) = theirs {
                prop_assert_eq!(Some(term), known);
            }
        } else {
            prop_assert_eq!(ours, theirs, "term({})", index);
        }
    }
    let context = || GetEntriesContext::empty(false);
    if first > last {
        // MemStorage indexes its empty entry vector here and panics.
        prop_assert_eq!(store.entries(first, last + 1, None, context()), Ok(vec![]));
    } else {
        prop_assert_eq!(
            store.entries(first, last + 1, None, context()),
            mem.entries(first, last + 1, None, context())
        );
        let low = first + (max_size % (last - first + 1));
        prop_assert_eq!(
            store.entries(low, last + 1, max_size, context()),
            mem.entries(low, last + 1, max_size, context())
        );
    }
    if first > 1 {
        prop_assert_eq!(
            store.entries(first - 1, last + 1, None, context()),
            mem.entries(first - 1, last + 1, None, context())
        );
    }
    let ours = store.initial_state().expect("the storage call succeeds");
    let theirs = mem.initial_state().expect("the storage call succeeds");
    prop_assert_eq!(ours.hard_state, theirs.hard_state);
    prop_assert_eq!(ours.conf_state, theirs.conf_state);
    prop_assert_eq!(
        &store.snapshot_data().expect("the storage call succeeds"),
        &model.snapshot
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_log_store_agrees_with_mem_storage_across_random_writes_compactions_and_restarts(
        ops in prop::collection::vec(op(), 1..40),
        max_size in 0..400u64,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Some(LogStore::open(dir.path()).unwrap());
        let mut model = Model {
            mem: MemStorage::new(),
            known_terms: BTreeMap::from([(0, 0)]),
            snapshot: Snapshot::default(),
            conf_state: ConfState::default(),
        };
        for op in &ops {
            apply(op, &mut store, dir.path(), &mut model);
            check_agreement(store.as_ref().unwrap(), &model, max_size)?;
        }
        drop(store.take());
        let reopened = LogStore::open(dir.path()).unwrap();
        check_agreement(&reopened, &model, max_size)?;
    }
}

#[test]
fn a_snapshot_too_big_for_sleds_inline_pages_survives_a_reopen() {
    // sled moves pages over ~128 KiB into files under blobs/, which its
    // flush never syncs; the store syncs them itself.
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let snap = snapshot(20, 2, voters(&[1, 2, 3]), &data);
    {
        let mut store = LogStore::open(dir.path()).unwrap();
        store
            .write(LogWrite {
                snapshot: Some(&snap),
                ..LogWrite::default()
            })
            .unwrap();
    }
    let blobs = std::fs::read_dir(dir.path().join("blobs")).unwrap().count();
    assert!(blobs > 0, "the snapshot was stored as a blob");
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.snapshot_data().unwrap(), snap);
    assert_eq!(store.snapshot(20, 3).unwrap(), snap);
}

/// Set in the child process of the kill -9 test.
const CRASH_CHILD_DIR: &str = "CAIRN_LOG_STORE_CRASH_CHILD_DIR";

#[test]
fn every_acknowledged_write_survives_kill_9_of_the_writing_process() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_DIR) {
        // The child: append one entry per write and print the index once
        // write() returned, until killed.
        use std::io::Write as _;
        let mut store = LogStore::open(Path::new(&dir)).unwrap();
        let mut index = store.last_index().unwrap();
        let mut stdout = std::io::stdout();
        // Bounded, so a parent that died early leaves no writer behind.
        for _ in 0..100_000 {
            index += 1;
            store
                .write(LogWrite {
                    entries: &[entry(index, 1)],
                    hard_state: Some(&hard_state(1, 1, index)),
                    ..LogWrite::default()
                })
                .unwrap();
            writeln!(stdout, "acked {index}").unwrap();
            stdout.flush().unwrap();
        }
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "every_acknowledged_write_survives_kill_9_of_the_writing_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let mut acked = 0;
        // Kill it somewhere in the middle of a write, after a few hundred.
        while acked < 200 + round * 50 {
            let line = lines.next().expect("child still writing").unwrap();
            if let Some(index) = line.strip_prefix("acked ") {
                acked = index.parse().unwrap();
            }
        }
        child.kill().unwrap();
        for line in lines.map_while(Result::ok) {
            if let Some(index) = line.strip_prefix("acked ") {
                acked = index.parse().unwrap();
            }
        }
        child.wait().unwrap();

        let store = LogStore::open(dir.path()).unwrap();
        let last = store.last_index().unwrap();
        assert!(last >= acked, "round {round}: acked {acked}, found {last}");
        assert!(store.hard_state().commit >= acked);
        let log = all_entries(&store);
        assert_eq!(log.len() as u64, last);
        assert!(
            log.iter()
                .enumerate()
                .all(|(i, e)| e.index == i as u64 + 1 && e == &entry(e.index, 1))
        );
    }
}
