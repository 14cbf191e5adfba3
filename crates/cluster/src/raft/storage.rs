//! The durable Raft log: entries, hard state, conf state and the latest
//! snapshot's metadata in one sled tree, the snapshot's data in another.
//!
//! raft-rs keeps its unstable log in memory and asks the application to
//! persist each `Ready` before the messages in it go out. [`LogStore`] is that
//! persistence. It has exactly one write path, [`LogStore::write`], which turns
//! everything a `Ready` asks for (a snapshot received from the leader, new
//! entries, the hard state, the conf state) into one sled batch (a snapshot's
//! data goes first, into a tree of its own; see Layout), applies it
//! atomically, and returns only once the batch is on disk. Local snapshots and
//! log compaction go through [`LogStore::save_snapshot`], also one batch. Reads
//! ([`raft::Storage`]) answer from an in-memory summary of the log (first and
//! last index, the term of every index, hard state, conf state, snapshot
//! metadata) and touch sled only for entry bodies and snapshot data.
//!
//! # Layout
//!
//! The log tree, keys prefixed by one byte naming the record kind; values
//! are the raft-rs protobuf messages:
//!
//! | key                      | value                                         |
//! |--------------------------|-----------------------------------------------|
//! | `0x01`                   | `HardState`                                   |
//! | `0x02`                   | `ConfState`                                   |
//! | `0x03`                   | `Snapshot` (metadata; data empty)             |
//! | `0x04`                   | log floor: an `Entry` with only index and term |
//! | `0x10` + index (u64, BE) | `Entry`                                       |
//!
//! The snapshot tree holds the state-machine data of the snapshot the log
//! tree describes, under its index (u64, BE). It is a tree of its own because
//! sled rewrites a whole node from time to time as small changes accumulate
//! in it: with megabytes of snapshot data in the node that also holds the
//! hard state, which changes with every write, sled rewrote the snapshot
//! every few dozen writes (175 MB written for 3,000 writes of 150 bytes
//! next to a 2 MB snapshot, against 5 MB with the data in its own tree).
//! Data is written before the record that names it and older data removed
//! after, in sled's log order, so a crash leaves at worst data no record
//! names, which opening removes. A log written before this split keeps its
//! data inside the snapshot record, and is read as such.
//!
//! Big-endian indexes make sled's key order the log order, so a range of
//! entries is one ordered scan. The log floor is the entry just before the
//! first one kept: raft asks for its term when it matches a follower's log at
//! the compaction point, and an empty log after a snapshot needs it for its
//! last term. It also fixes `first_index` (floor + 1) when no entry is left.
//!
//! # Durability
//!
//! `sled::Db::flush` alone is not enough for "acknowledged means on disk". On
//! Linux sled 0.34 makes its log durable with `sync_file_range`, which writes
//! the data pages but neither the file's metadata (its size, when the log file
//! grew) nor the drive's write cache, and it writes oversized pages to files
//! under `blobs/` without any sync. After a power cut, or a VM reset, such a
//! write can vanish although `flush` returned. So the store also calls
//! `fdatasync` on sled's log file and `fsync` on each new blob file (and the
//! blob directory) after every flush.
//!
//! # What the replica owes the store
//!
//! - Every `Ready` is persisted with one [`LogWrite`] before its persisted
//!   messages go out, and the `LightReady` commit index is persisted too (a
//!   hard state with the new commit): [`LogStore::save_snapshot`] refuses a
//!   snapshot beyond the persisted commit index, and a restart must not find
//!   applied entries that are not committed on disk.
//! - After applying a conf change that adds a node, save a snapshot that names
//!   it: raft-rs followers refuse a snapshot whose conf state leaves them out,
//!   so `Storage::snapshot(_, to)` withholds such a snapshot from `to`.
//! - [`LogStore::open`] blocks (it may wait for sled's directory lock), and so
//!   does every write (it syncs the disk).
//!
//! On open the whole log is read once: every entry is decoded, checked to sit
//! under its own index, and the log is checked to have no holes. A damaged
//! value is a typed [`StorageError`] naming the record, never a panic, so a
//! node with a broken disk stops with a clear message instead of joining the
//! cluster with a silently different log.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState};

/// sled's page cache budget. sled's default is 1 GiB, which a node agent
/// cannot afford next to the workloads it runs; the hot part of a Raft log is
/// its tail (recent entries being replicated and applied: at most the
/// 10,000 entries between snapshots) and the latest snapshot, a few MiB.
/// The cluster benchmark measured 100-120 MB of cairnd RSS with a 64 MiB
/// cache, most of it this cache filled by a million writes.
pub const CACHE_CAPACITY_BYTES: u64 = 16 * 1024 * 1024;

/// How long [`LogStore::open`] waits for sled's lock on the directory.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The highest index a log may hold, so that `last + 1` and `floor + 1`
/// never overflow, whatever a damaged record or a broken peer says.
const MAX_INDEX: u64 = u64::MAX - 1;

/// The tree that holds every record but snapshot data.
const TREE_NAME: &[u8] = b"raft-log";
/// The tree that holds snapshot data, by snapshot index.
const SNAPSHOT_TREE_NAME: &[u8] = b"raft-snapshot-data";

const KEY_HARD_STATE: u8 = 0x01;
const KEY_CONF_STATE: u8 = 0x02;
const KEY_SNAPSHOT: u8 = 0x03;
const KEY_LOG_FLOOR: u8 = 0x04;
const KEY_ENTRY: u8 = 0x10;

/// A record in the log tree; names the record in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKey {
    HardState,
    ConfState,
    /// The latest snapshot, metadata and data.
    Snapshot,
    /// Index and term of the entry before the first one kept.
    LogFloor,
    /// The log entry at this index.
    Entry(u64),
}

impl RecordKey {
    fn to_bytes(self) -> Vec<u8> {
        match self {
            RecordKey::HardState => vec![KEY_HARD_STATE],
            RecordKey::ConfState => vec![KEY_CONF_STATE],
            RecordKey::Snapshot => vec![KEY_SNAPSHOT],
            RecordKey::LogFloor => vec![KEY_LOG_FLOOR],
            RecordKey::Entry(index) => {
                let mut key = Vec::with_capacity(9);
                key.push(KEY_ENTRY);
                key.extend_from_slice(&index.to_be_bytes());
                key
            }
        }
    }

    fn parse(bytes: &[u8]) -> Option<RecordKey> {
        match bytes {
            [KEY_HARD_STATE] => Some(RecordKey::HardState),
            [KEY_CONF_STATE] => Some(RecordKey::ConfState),
            [KEY_SNAPSHOT] => Some(RecordKey::Snapshot),
            [KEY_LOG_FLOOR] => Some(RecordKey::LogFloor),
            [KEY_ENTRY, index @ ..] => {
                let index: [u8; 8] = index.try_into().ok()?;
                Some(RecordKey::Entry(u64::from_be_bytes(index)))
            }
            _ => None,
        }
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::HardState => f.write_str("hard state record"),
            RecordKey::ConfState => f.write_str("conf state record"),
            RecordKey::Snapshot => f.write_str("snapshot record"),
            RecordKey::LogFloor => f.write_str("log floor record"),
            RecordKey::Entry(index) => write!(f, "log entry {index}"),
        }
    }
}

/// Everything that can go wrong opening, reading or writing the Raft log.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create the raft log directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the sled database in {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("{path} is still locked by another sled instance after {waited:?}")]
    Locked { path: PathBuf, waited: Duration },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {path} to sync it")]
    OpenForSync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the {key}")]
    Read {
        key: RecordKey,
        #[source]
        source: sled::Error,
    },
    #[error("cannot scan the raft log tree")]
    Scan {
        #[source]
        source: sled::Error,
    },
    #[error("cannot decode the {key}")]
    Decode {
        key: RecordKey,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error("cannot encode the {key}")]
    Encode {
        key: RecordKey,
        #[source]
        source: protobuf::ProtobufError,
    },
    #[error("the raft log tree holds an unknown key {key:02x?}")]
    UnknownKey { key: Vec<u8> },
    #[error("the {key} holds entry {found}")]
    EntryIndexMismatch { key: RecordKey, found: u64 },
    #[error("the {key} carries index {index}, beyond any log")]
    IndexOutOfRange { key: RecordKey, index: u64 },
    #[error("the raft log holds entry {index} where entry {expected} was expected")]
    UnexpectedEntry { index: u64, expected: u64 },
    #[error("the raft log has no entry {index} although its last index is {last_index}")]
    MissingEntry { index: u64, last_index: u64 },
    #[error("the raft log names snapshot {index}, but its data is missing")]
    MissingSnapshotData { index: u64 },
    #[error("entries to append are not consecutive: entry {index} follows entry {previous}")]
    NonConsecutiveEntries { previous: u64, index: u64 },
    #[error("appending entry {index} would leave a gap after the last index {last_index}")]
    Gap { index: u64, last_index: u64 },
    #[error("appending entry {index} would overwrite committed entries (commit index {commit})")]
    TruncatesCommitted { index: u64, commit: u64 },
    #[error("a snapshot must have an index above 0")]
    EmptySnapshot,
    #[error(
        "the snapshot at index {index} is older than the log, which starts after index {current}"
    )]
    SnapshotOutOfDate { index: u64, current: u64 },
    #[error("the snapshot at index {index} lies beyond the last log index {last_index}")]
    SnapshotBeyondLog { index: u64, last_index: u64 },
    #[error("the snapshot at index {index} lies beyond the commit index {commit}")]
    SnapshotBeyondCommit { index: u64, commit: u64 },
    #[error("the snapshot at index {index} has term {snapshot_term}, the log has term {log_term}")]
    SnapshotTermMismatch {
        index: u64,
        snapshot_term: u64,
        log_term: u64,
    },
    #[error(
        "cannot compact the log up to index {compact_to}: the snapshot only covers index {snapshot_index}"
    )]
    CompactBeyondSnapshot {
        compact_to: u64,
        snapshot_index: u64,
    },
    #[error("cannot apply a batch to the raft log")]
    ApplyBatch {
        #[source]
        source: sled::Error,
    },
    #[error("cannot flush the raft log")]
    Flush {
        #[source]
        source: sled::Error,
    },
    #[error("cannot sync {path} to disk")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list {path}")]
    ListDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot measure the raft log's size on disk")]
    SizeOnDisk {
        #[source]
        source: sled::Error,
    },
}

impl From<StorageError> for raft::Error {
    fn from(error: StorageError) -> Self {
        raft::Error::Store(raft::StorageError::Other(Box::new(error)))
    }
}

/// What one `Ready` (or `LightReady`) asks to persist. Applied in this order
/// of meaning: snapshot, entries, hard state, conf state.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogWrite<'a> {
    pub snapshot: Option<&'a Snapshot>,
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
    pub conf_state: Option<&'a ConfState>,
}

/// Whether `write` must be on disk before the caller goes on: entries,
/// snapshots and configurations must, and so must a hard state that
/// changes the term or the vote (a node must never vote twice in a term).
/// A hard state that only moves the commit index need not: a commit index
/// lost in a crash is learnt again from the leader, and nothing was
/// acknowledged on its account alone (etcd's `MustSync` draws the same
/// line).
fn must_sync(write: &LogWrite<'_>, stored: &HardState) -> bool {
    write.snapshot.is_some()
        || !write.entries.is_empty()
        || write.conf_state.is_some()
        || write
            .hard_state
            .is_some_and(|hs| hs.term != stored.term || hs.vote != stored.vote)
}

/// The term of every index from the log floor to the last index, as runs:
/// run start index -> term. Raft terms change rarely, so this is a handful of
/// runs however long the log, and `term()` never reads the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TermRuns(BTreeMap<u64, u64>);

impl TermRuns {
    fn starting_at(floor_index: u64, floor_term: u64) -> Self {
        TermRuns(BTreeMap::from([(floor_index, floor_term)]))
    }

    /// The term at `index`, which the caller has checked lies between the
    /// floor and the last index.
    fn term(&self, index: u64) -> Option<u64> {
        self.0.range(..=index).next_back().map(|(_, term)| *term)
    }

    fn push(&mut self, index: u64, term: u64) {
        if self.0.values().next_back() != Some(&term) {
            self.0.insert(index, term);
        }
    }

    /// Forgets the terms of `index` and everything after it.
    fn truncate_from(&mut self, index: u64) {
        drop(self.0.split_off(&index));
    }

    /// Forgets the terms before `floor`, keeping the floor's own.
    fn raise_floor(&mut self, floor: u64) {
        if let Some(term) = self.term(floor) {
            let mut kept = self.0.split_off(&floor);
            kept.insert(floor, term);
            self.0 = kept;
        }
    }
}

/// The in-memory summary of what is on disk; every `Storage` call but
/// `entries()` and `snapshot()` is answered from it.
#[derive(Debug, Clone)]
struct LogState {
    /// Index of the entry before the first kept one (0 for a fresh log).
    floor: u64,
    last_index: u64,
    terms: TermRuns,
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: SnapshotMetadata,
    /// Whether anything was ever written.
    written: bool,
}

impl LogState {
    fn first_index(&self) -> u64 {
        self.floor + 1
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index && index > 0 {
            return Some(self.snapshot.term);
        }
        if index < self.floor || index > self.last_index {
            return None;
        }
        self.terms.term(index)
    }

    fn remove_entries(&self, from: u64, to_inclusive: u64, batch: &mut sled::Batch) {
        for index in from..=to_inclusive {
            batch.remove(RecordKey::Entry(index).to_bytes());
        }
    }

    fn set_floor(
        &mut self,
        floor: u64,
        term: u64,
        batch: &mut sled::Batch,
    ) -> Result<(), StorageError> {
        let record = Entry {
            index: floor,
            term,
            ..Entry::default()
        };
        batch.insert(
            RecordKey::LogFloor.to_bytes(),
            encode(RecordKey::LogFloor, &record)?,
        );
        self.floor = floor;
        Ok(())
    }

    /// A snapshot from the leader replaces the whole log.
    fn install_snapshot(
        &mut self,
        snapshot: &Snapshot,
        batch: &mut sled::Batch,
    ) -> Result<(), StorageError> {
        let meta = snapshot.get_metadata();
        let index = meta.index;
        if index == 0 {
            return Err(StorageError::EmptySnapshot);
        }
        if index > MAX_INDEX {
            return Err(StorageError::IndexOutOfRange {
                key: RecordKey::Snapshot,
                index,
            });
        }
        if index < self.first_index() || index < self.snapshot.index {
            return Err(StorageError::SnapshotOutOfDate {
                index,
                current: self.floor.max(self.snapshot.index),
            });
        }
        self.remove_entries(self.first_index(), self.last_index, batch);
        self.set_floor(index, meta.term, batch)?;
        self.last_index = index;
        self.terms = TermRuns::starting_at(index, meta.term);
        batch.insert(
            RecordKey::Snapshot.to_bytes(),
            encode(RecordKey::Snapshot, &metadata_only(snapshot))?,
        );
        self.snapshot = meta.clone();

        self.conf_state = meta.get_conf_state().clone();
        batch.insert(
            RecordKey::ConfState.to_bytes(),
            encode(RecordKey::ConfState, &self.conf_state)?,
        );
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(index);
        batch.insert(
            RecordKey::HardState.to_bytes(),
            encode(RecordKey::HardState, &self.hard_state)?,
        );
        Ok(())
    }

    /// Returns whether any entry was written (entries below the first index
    /// are skipped).
    fn append(&mut self, entries: &[Entry], batch: &mut sled::Batch) -> Result<bool, StorageError> {
        for (previous, next) in entries.iter().zip(entries.iter().skip(1)) {
            if previous.index.checked_add(1) != Some(next.index) {
                return Err(StorageError::NonConsecutiveEntries {
                    previous: previous.index,
                    index: next.index,
                });
            }
        }
        // Entries at or below the floor are covered by a snapshot already.
        let skip = entries.partition_point(|entry| entry.index < self.first_index());
        let (Some(first), Some(last)) = (entries.get(skip), entries.last()) else {
            return Ok(false);
        };
        if last.index > MAX_INDEX {
            return Err(StorageError::IndexOutOfRange {
                key: RecordKey::Entry(last.index),
                index: last.index,
            });
        }
        if first.index > self.last_index + 1 {
            return Err(StorageError::Gap {
                index: first.index,
                last_index: self.last_index,
            });
        }
        if first.index <= self.last_index {
            if first.index <= self.hard_state.commit {
                return Err(StorageError::TruncatesCommitted {
                    index: first.index,
                    commit: self.hard_state.commit,
                });
            }
            self.remove_entries(first.index, self.last_index, batch);
            self.terms.truncate_from(first.index);
        }
        for entry in &entries[skip..] {
            let key = RecordKey::Entry(entry.index);
            batch.insert(key.to_bytes(), encode(key, entry)?);
            self.terms.push(entry.index, entry.term);
            self.last_index = entry.index;
        }
        Ok(true)
    }
}

/// The durable Raft log of one node, in one sled database.
pub struct LogStore {
    db: sled::Db,
    tree: sled::Tree,
    snapshots: sled::Tree,
    state: LogState,
    sync: DiskSync,
}

impl fmt::Debug for LogStore {
    // sled's own Debug walks the whole tree; the summary is what matters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore")
            .field("state", &self.state)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens or creates the store in `dir` (on a node: /var/lib/cairn/raft).
    /// A new store is empty: first index 1, last index 0, default hard state
    /// and conf state, no snapshot.
    ///
    /// sled lets go of its directory lock only when its background jobs
    /// finish, a moment after the previous `LogStore` on `dir` was dropped, so
    /// this waits up to [`LOCK_WAIT`] for the lock; an in-process restart
    /// (tests, or the replica reopening after an error) would fail otherwise.
    /// Blocks: call it from `spawn_blocking` or before the runtime starts.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_waiting(dir, LOCK_WAIT)
    }

    fn open_waiting(dir: &Path, lock_wait: Duration) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|source| StorageError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        wait_for_lock(&dir.join("db"), lock_wait)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            // Raft appends at the tail and deletes at the head; LowSpace would
            // spend the write path's time on rewriting segments, and bounded
            // disk use comes from compaction instead.
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StorageError::Open {
                path: dir.to_owned(),
                source,
            })?;
        let tree = db
            .open_tree(TREE_NAME)
            .map_err(|source| StorageError::Open {
                path: dir.to_owned(),
                source,
            })?;
        let snapshots = db
            .open_tree(SNAPSHOT_TREE_NAME)
            .map_err(|source| StorageError::Open {
                path: dir.to_owned(),
                source,
            })?;
        let state = load(&tree)?;
        remove_snapshot_data_except(&snapshots, state.snapshot.index)?;
        let mut sync = DiskSync::open(dir)?;
        sync.sync_new_blobs()?;
        tracing::info!(
            dir = %dir.display(),
            first_index = state.first_index(),
            last_index = state.last_index,
            commit = state.hard_state.commit,
            term = state.hard_state.term,
            snapshot_index = state.snapshot.index,
            "raft log opened"
        );
        Ok(LogStore {
            db,
            tree,
            snapshots,
            state,
            sync,
        })
    }

    /// True when nothing was ever written (no hard state, no entries, no
    /// snapshot): a node that has never been part of a cluster.
    pub fn is_empty(&self) -> bool {
        !self.state.written
    }

    /// Persists what a `Ready` asks for, in one batch, and returns once it is
    /// on disk, unless it only moves the commit index (see [`must_sync`]):
    /// that is written without waiting for the disk. See [`LogWrite`] for the
    /// order; an entry at or below the last
    /// index truncates the log from there, entries below the first index are
    /// ignored, and a gap after the last index is an error. A received
    /// snapshot replaces the whole log and raises the hard state's term and
    /// commit to its own; a hard state in the same write replaces it after.
    ///
    /// After an error the in-memory view may be ahead of the disk (a failed
    /// flush): the caller must stop the Raft node and reopen the store.
    pub fn write(&mut self, write: LogWrite<'_>) -> Result<(), StorageError> {
        let mut next = self.state.clone();
        let mut batch = sled::Batch::default();
        let mut dirty = false;
        let durable = must_sync(&write, &self.state.hard_state);
        if let Some(snapshot) = write.snapshot {
            next.install_snapshot(snapshot, &mut batch)?;
            dirty = true;
        }
        dirty |= next.append(write.entries, &mut batch)?;
        if let Some(hard_state) = write.hard_state {
            batch.insert(
                RecordKey::HardState.to_bytes(),
                encode(RecordKey::HardState, hard_state)?,
            );
            next.hard_state = hard_state.clone();
            dirty = true;
        }
        if let Some(conf_state) = write.conf_state {
            batch.insert(
                RecordKey::ConfState.to_bytes(),
                encode(RecordKey::ConfState, conf_state)?,
            );
            next.conf_state = conf_state.clone();
            dirty = true;
        }
        if !dirty {
            return Ok(());
        }
        self.commit(batch, next, write.snapshot, durable)
    }

    /// Saves a state-machine snapshot the caller made at
    /// `snapshot.get_metadata().index` (committed, at most the last index,
    /// carrying the conf state of that index) so that `Storage::snapshot()`
    /// returns it from now on, then discards the entries below `compact_to`
    /// (at most the snapshot index + 1; a lower value keeps a tail of entries
    /// after the snapshot for slow followers). One batch, durable on return.
    pub fn save_snapshot(
        &mut self,
        snapshot: &Snapshot,
        compact_to: u64,
    ) -> Result<(), StorageError> {
        let meta = snapshot.get_metadata();
        let index = meta.index;
        let state = &self.state;
        if index == 0 {
            return Err(StorageError::EmptySnapshot);
        }
        if index < state.snapshot.index || index < state.floor {
            return Err(StorageError::SnapshotOutOfDate {
                index,
                current: state.floor.max(state.snapshot.index),
            });
        }
        if index > state.last_index {
            return Err(StorageError::SnapshotBeyondLog {
                index,
                last_index: state.last_index,
            });
        }
        if index > state.hard_state.commit {
            return Err(StorageError::SnapshotBeyondCommit {
                index,
                commit: state.hard_state.commit,
            });
        }
        let log_term = state.terms.term(index).unwrap_or_default();
        if log_term != meta.term {
            return Err(StorageError::SnapshotTermMismatch {
                index,
                snapshot_term: meta.term,
                log_term,
            });
        }
        if compact_to > index + 1 {
            return Err(StorageError::CompactBeyondSnapshot {
                compact_to,
                snapshot_index: index,
            });
        }

        let mut next = state.clone();
        let mut batch = sled::Batch::default();
        batch.insert(
            RecordKey::Snapshot.to_bytes(),
            encode(RecordKey::Snapshot, &metadata_only(snapshot))?,
        );
        next.snapshot = meta.clone();
        if compact_to > next.first_index() {
            let floor = compact_to - 1;
            let floor_term = next.terms.term(floor).unwrap_or_default();
            next.remove_entries(next.first_index(), floor, &mut batch);
            next.set_floor(floor, floor_term, &mut batch)?;
            next.terms.raise_floor(floor);
            tracing::debug!(
                first_index = compact_to,
                snapshot_index = index,
                "raft log compacted"
            );
        }
        self.commit(batch, next, Some(snapshot), true)
    }

    /// The latest saved snapshot (data and metadata), or an empty default
    /// snapshot when there is none; on restart the state machine is restored
    /// from it. Read from disk, so a damaged record is an error rather than
    /// an empty state machine.
    pub fn snapshot_data(&self) -> Result<Snapshot, StorageError> {
        let index = self.state.snapshot.index;
        if index == 0 {
            return Ok(Snapshot::default());
        }
        let mut snapshot: Snapshot =
            read_record(&self.tree, RecordKey::Snapshot)?.unwrap_or_default();
        if !snapshot.get_data().is_empty() {
            // Written before the data moved to a tree of its own.
            return Ok(snapshot);
        }
        let data = self
            .snapshots
            .get(index.to_be_bytes())
            .map_err(|source| StorageError::Read {
                key: RecordKey::Snapshot,
                source,
            })?
            .ok_or(StorageError::MissingSnapshotData { index })?;
        snapshot.set_data(data.to_vec().into());
        Ok(snapshot)
    }

    pub fn hard_state(&self) -> HardState {
        self.state.hard_state.clone()
    }

    pub fn conf_state(&self) -> ConfState {
        self.state.conf_state.clone()
    }

    /// Bytes the store occupies on disk, as sled counts them.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.db
            .size_on_disk()
            .map_err(|source| StorageError::SizeOnDisk { source })
    }

    /// Applies `batch`; with `durable`, returns once it (and every batch
    /// before it) is on disk. sled writes a batch that is not flushed here
    /// within its flush interval, in order, before any later one.
    fn commit(
        &mut self,
        batch: sled::Batch,
        next: LogState,
        snapshot: Option<&Snapshot>,
        durable: bool,
    ) -> Result<(), StorageError> {
        if let Some(snapshot) = snapshot {
            let index = snapshot.get_metadata().index;
            self.snapshots
                .insert(index.to_be_bytes(), snapshot.get_data())
                .map_err(|source| StorageError::ApplyBatch { source })?;
        }
        self.tree
            .apply_batch(batch)
            .map_err(|source| StorageError::ApplyBatch { source })?;
        if snapshot.is_some() {
            remove_snapshot_data_except(&self.snapshots, next.snapshot.index)?;
        }
        // sled serves the batch from now on, durable or not; the summary
        // must describe what sled serves.
        self.state = LogState {
            written: true,
            ..next
        };
        if !durable {
            return Ok(());
        }
        self.db
            .flush()
            .map_err(|source| StorageError::Flush { source })?;
        self.sync.sync_new_blobs()?;
        self.sync.sync_log()
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state(), self.conf_state()))
    }

    /// Entries in `[low, high)`, cut to `max_size` bytes but never to fewer
    /// than one. Where MemStorage panics (`high` beyond the last index + 1,
    /// `low > high`) this returns `Unavailable`.
    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let state = &self.state;
        if low < state.first_index() {
            return Err(raft::Error::Store(raft::StorageError::Compacted));
        }
        if high > state.last_index + 1 || low > high {
            return Err(raft::Error::Store(raft::StorageError::Unavailable));
        }
        let max_size = match max_size.into() {
            None | Some(raft::NO_LIMIT) => None,
            Some(max) => Some(max),
        };
        let capacity = usize::try_from(high - low).unwrap_or(usize::MAX).min(1024);
        let mut entries = Vec::with_capacity(capacity);
        let mut size = 0u64;
        let range = RecordKey::Entry(low).to_bytes()..RecordKey::Entry(high).to_bytes();
        let mut expected = low;
        for item in self.tree.range(range) {
            let key = RecordKey::Entry(expected);
            let (raw_key, value) = item.map_err(|source| StorageError::Read { key, source })?;
            if RecordKey::parse(&raw_key) != Some(key) {
                return Err(StorageError::MissingEntry {
                    index: expected,
                    last_index: state.last_index,
                }
                .into());
            }
            let entry: Entry = decode(key, &value)?;
            if entry.index != expected {
                return Err(StorageError::EntryIndexMismatch {
                    key,
                    found: entry.index,
                }
                .into());
            }
            size += u64::from(entry.compute_size());
            if max_size.is_some_and(|max| size > max) && !entries.is_empty() {
                return Ok(entries);
            }
            entries.push(entry);
            expected += 1;
        }
        if expected != high {
            return Err(StorageError::MissingEntry {
                index: expected,
                last_index: state.last_index,
            }
            .into());
        }
        Ok(entries)
    }

    /// The term at `index`, for the range [first index - 1, last index].
    fn term(&self, index: u64) -> raft::Result<u64> {
        let state = &self.state;
        if let Some(term) = state.term(index) {
            return Ok(term);
        }
        if index < state.floor {
            Err(raft::Error::Store(raft::StorageError::Compacted))
        } else {
            Err(raft::Error::Store(raft::StorageError::Unavailable))
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.state.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.state.last_index)
    }

    /// The saved snapshot, for peer `to`. `SnapshotTemporarilyUnavailable`
    /// (raft skips the peer and retries on its next append) when:
    /// - none was saved yet: raft would abort on an empty snapshot;
    /// - it is older than `request_index`;
    /// - its conf state does not name `to`: raft-rs followers refuse such a
    ///   snapshot, so a node added after the last snapshot would be sent the
    ///   same useless snapshot forever. The replica must save a new snapshot
    ///   once the conf change that added the node is applied.
    ///
    /// `to == 0` (no peer, raft's INVALID_ID) skips the last check.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = &self.state.snapshot;
        let unavailable = meta.index == 0
            || meta.index < request_index
            || (to != 0 && !conf_state_names(meta.get_conf_state(), to));
        if unavailable {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot_data()?)
    }
}

/// Whether `id` is a voter or learner on either side of a (joint) config.
fn conf_state_names(conf_state: &ConfState, id: u64) -> bool {
    [
        &conf_state.voters,
        &conf_state.learners,
        &conf_state.voters_outgoing,
        &conf_state.learners_next,
    ]
    .iter()
    .any(|ids| ids.contains(&id))
}

fn encode<M: protobuf::Message>(key: RecordKey, message: &M) -> Result<Vec<u8>, StorageError> {
    message
        .write_to_bytes()
        .map_err(|source| StorageError::Encode { key, source })
}

fn decode<M: protobuf::Message>(key: RecordKey, bytes: &[u8]) -> Result<M, StorageError> {
    M::parse_from_bytes(bytes).map_err(|source| StorageError::Decode { key, source })
}

/// `snapshot` without its data, for the log tree's record.
fn metadata_only(snapshot: &Snapshot) -> Snapshot {
    let mut record = Snapshot::default();
    record.set_metadata(snapshot.get_metadata().clone());
    record
}

/// Removes the data of every snapshot but the one at `keep`: superseded
/// ones, and data a crash left without the record that would have named it.
fn remove_snapshot_data_except(snapshots: &sled::Tree, keep: u64) -> Result<(), StorageError> {
    let scan_error = |source| StorageError::Scan { source };
    let mut batch = sled::Batch::default();
    for key in snapshots.iter().keys() {
        let key = key.map_err(scan_error)?;
        if *key != keep.to_be_bytes() {
            batch.remove(key);
        }
    }
    snapshots
        .apply_batch(batch)
        .map_err(|source| StorageError::ApplyBatch { source })
}

fn read_record<M: protobuf::Message>(
    tree: &sled::Tree,
    key: RecordKey,
) -> Result<Option<M>, StorageError> {
    let value = tree
        .get(key.to_bytes())
        .map_err(|source| StorageError::Read { key, source })?;
    value.map(|bytes| decode(key, &bytes)).transpose()
}

/// Reads the whole tree once and checks it describes one unbroken log.
fn load(tree: &sled::Tree) -> Result<LogState, StorageError> {
    let mut hard_state = HardState::default();
    let mut conf_state = ConfState::default();
    let mut snapshot = SnapshotMetadata::default();
    let mut floor = Entry::default();
    let mut entries: Vec<(u64, u64)> = Vec::new();
    let mut written = false;

    for item in tree.iter() {
        let (raw_key, value) = item.map_err(|source| StorageError::Scan { source })?;
        written = true;
        let key = RecordKey::parse(&raw_key).ok_or_else(|| StorageError::UnknownKey {
            key: raw_key.to_vec(),
        })?;
        match key {
            RecordKey::HardState => hard_state = decode(key, &value)?,
            RecordKey::ConfState => conf_state = decode(key, &value)?,
            RecordKey::Snapshot => {
                let mut full: Snapshot = decode(key, &value)?;
                snapshot = full.take_metadata();
            }
            RecordKey::LogFloor => floor = decode(key, &value)?,
            RecordKey::Entry(index) => {
                let entry: Entry = decode(key, &value)?;
                if entry.index != index {
                    return Err(StorageError::EntryIndexMismatch {
                        key,
                        found: entry.index,
                    });
                }
                entries.push((index, entry.term));
            }
        }
    }

    let out_of_range = [
        (RecordKey::LogFloor, floor.index),
        (RecordKey::Snapshot, snapshot.index),
    ]
    .into_iter()
    .chain(
        entries
            .last()
            .map(|&(index, _)| (RecordKey::Entry(index), index)),
    )
    .find(|&(_, index)| index > MAX_INDEX);
    if let Some((key, index)) = out_of_range {
        return Err(StorageError::IndexOutOfRange { key, index });
    }
    // Keys sort by kind, so the floor is known before the entries are checked.
    let mut terms = TermRuns::starting_at(floor.index, floor.term);
    let mut expected = floor.index + 1;
    for (index, term) in entries {
        if index != expected {
            return Err(StorageError::UnexpectedEntry { index, expected });
        }
        terms.push(index, term);
        expected += 1;
    }
    Ok(LogState {
        floor: floor.index,
        last_index: expected - 1,
        terms,
        hard_state,
        conf_state,
        snapshot,
        written,
    })
}

/// The syncs sled leaves out (see the module doc): `fdatasync` on its log
/// file, `fsync` on blob files it wrote since the last sync and on their
/// directory.
#[derive(Debug)]
struct DiskSync {
    log_path: PathBuf,
    log_file: File,
    blob_dir: PathBuf,
    synced_blobs: HashSet<OsString>,
}

impl DiskSync {
    fn open(dir: &Path) -> Result<Self, StorageError> {
        let log_path = dir.join("db");
        let log_file = File::open(&log_path).map_err(|source| StorageError::OpenForSync {
            path: log_path.clone(),
            source,
        })?;
        // sled created its files on open, and `open` may have created `dir`:
        // make their names durable, or a power cut could take the whole
        // store with it after writes were acknowledged.
        sync_path(dir)?;
        if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            sync_path(parent)?;
        }
        Ok(DiskSync {
            log_path,
            log_file,
            blob_dir: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        })
    }

    fn sync_log(&self) -> Result<(), StorageError> {
        self.log_file
            .sync_data()
            .map_err(|source| StorageError::Sync {
                path: self.log_path.clone(),
                source,
            })
    }

    fn sync_new_blobs(&mut self) -> Result<(), StorageError> {
        let list_error = |source| StorageError::ListDir {
            path: self.blob_dir.clone(),
            source,
        };
        let mut current = HashSet::new();
        let mut new_blobs = false;
        for dirent in std::fs::read_dir(&self.blob_dir).map_err(list_error)? {
            let name = dirent.map_err(list_error)?.file_name();
            if !self.synced_blobs.contains(&name) {
                match sync_path(&self.blob_dir.join(&name)) {
                    Ok(()) => {}
                    // sled garbage-collects blobs concurrently; a blob gone
                    // before it was synced is one nothing points to any more.
                    Err(StorageError::OpenForSync { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        continue;
                    }
                    Err(error) => return Err(error),
                }
                new_blobs = true;
            }
            current.insert(name);
        }
        if new_blobs {
            sync_path(&self.blob_dir)?;
        }
        self.synced_blobs = current;
        Ok(())
    }
}

/// Waits until nobody holds the flock sled takes on its log file. sled's
/// lock is an `flock`, so probing it from a second open file description
/// sees it exactly as sled's own `open` will.
fn wait_for_lock(db_path: &Path, lock_wait: Duration) -> Result<(), StorageError> {
    let file = match File::open(db_path) {
        Ok(file) => file,
        // A new store: sled creates the file and takes the lock.
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StorageError::Lock {
                path: db_path.to_owned(),
                source,
            });
        }
    };
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => {
                return file.unlock().map_err(|source| StorageError::Lock {
                    path: db_path.to_owned(),
                    source,
                });
            }
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < lock_wait => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    path: db_path.to_owned(),
                    waited: start.elapsed(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(StorageError::Lock {
                    path: db_path.to_owned(),
                    source,
                });
            }
        }
    }
}

fn sync_path(path: &Path) -> Result<(), StorageError> {
    let file = File::open(path).map_err(|source| StorageError::OpenForSync {
        path: path.to_owned(),
        source,
    })?;
    file.sync_all().map_err(|source| StorageError::Sync {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![7; 10].into(),
            ..Entry::default()
        }
    }

    /// A store in `dir` with entries 1..=5 and a hard state, dropped again.
    fn write_small_log(dir: &Path) {
        let mut store = LogStore::open(dir).unwrap();
        let entries: Vec<Entry> = (1..=5).map(|index| entry(index, 1)).collect();
        let hard_state = HardState {
            term: 1,
            commit: 3,
            ..HardState::default()
        };
        store
            .write(LogWrite {
                entries: &entries,
                hard_state: Some(&hard_state),
                ..LogWrite::default()
            })
            .unwrap();
    }

    /// Overwrites one record behind the store's back, as a damaged disk would.
    fn tamper(dir: &Path, key: &[u8], value: Option<&[u8]>) {
        wait_for_lock(&dir.join("db"), LOCK_WAIT).unwrap();
        let db = sled::open(dir).unwrap();
        let tree = db.open_tree(TREE_NAME).unwrap();
        match value {
            Some(value) => drop(tree.insert(key, value).unwrap()),
            None => drop(tree.remove(key).unwrap()),
        }
        db.flush().unwrap();
    }

    /// Bytes protobuf refuses: a field tag with the invalid wire type 7.
    const GARBAGE: &[u8] = &[0x0f, 0xff, 0xff];

    fn snapshot_at(index: u64, term: u64, data: Vec<u8>) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.mut_conf_state().voters = vec![1];
        snapshot
    }

    /// A store in `dir` with entries 1..=5 and a snapshot at 3.
    fn write_log_with_snapshot(dir: &Path, data: &[u8]) {
        write_small_log(dir);
        let mut store = LogStore::open(dir).unwrap();
        store
            .save_snapshot(&snapshot_at(3, 1, data.to_vec()), 3)
            .unwrap();
    }

    fn snapshot_tree_keys(dir: &Path) -> Vec<u64> {
        let db = sled::open(dir).unwrap();
        let tree = db.open_tree(SNAPSHOT_TREE_NAME).unwrap();
        tree.iter()
            .keys()
            .map(|key| u64::from_be_bytes(key.unwrap().as_ref().try_into().unwrap()))
            .collect()
    }

    #[test]
    fn snapshot_data_lives_in_its_own_tree_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        write_log_with_snapshot(dir.path(), b"state at 3");
        let store = LogStore::open(dir.path()).unwrap();
        let snapshot = store.snapshot_data().unwrap();
        assert_eq!(snapshot.get_data(), b"state at 3");
        assert_eq!(snapshot.get_metadata().index, 3);
        let record: Snapshot = read_record(&store.tree, RecordKey::Snapshot)
            .unwrap()
            .unwrap();
        assert!(
            record.get_data().is_empty(),
            "the log tree keeps metadata only"
        );
        drop(store);
        assert_eq!(snapshot_tree_keys(dir.path()), [3]);
    }

    #[test]
    fn data_a_crash_left_without_its_record_is_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        write_log_with_snapshot(dir.path(), b"state at 3");
        {
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree(SNAPSHOT_TREE_NAME).unwrap();
            tree.insert(5u64.to_be_bytes(), b"never named".as_slice())
                .unwrap();
            db.flush().unwrap();
        }
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.snapshot_data().unwrap().get_data(), b"state at 3");
        drop(store);
        assert_eq!(snapshot_tree_keys(dir.path()), [3]);
    }

    #[test]
    fn a_snapshot_record_whose_data_is_gone_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_log_with_snapshot(dir.path(), b"state at 3");
        {
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree(SNAPSHOT_TREE_NAME).unwrap();
            tree.remove(3u64.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let store = LogStore::open(dir.path()).unwrap();
        let error = store.snapshot_data().unwrap_err();
        assert!(
            matches!(error, StorageError::MissingSnapshotData { index: 3 }),
            "{error:?}"
        );
    }

    #[test]
    fn a_snapshot_record_written_with_its_data_inside_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        write_log_with_snapshot(dir.path(), b"new layout");
        let old_layout = snapshot_at(3, 1, b"old layout".to_vec());
        tamper(
            dir.path(),
            &RecordKey::Snapshot.to_bytes(),
            Some(&encode(RecordKey::Snapshot, &old_layout).unwrap()),
        );
        let store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.snapshot_data().unwrap().get_data(), b"old layout");
    }

    #[test]
    fn writes_after_a_large_snapshot_do_not_rewrite_it() {
        let dir = tempfile::tempdir().unwrap();
        write_log_with_snapshot(dir.path(), &vec![1; 2 << 20]);
        let mut store = LogStore::open(dir.path()).unwrap();
        for index in 6..=1000 {
            let hard_state = HardState {
                term: 1,
                commit: index - 1,
                ..HardState::default()
            };
            store
                .write(LogWrite {
                    entries: &[entry(index, 1)],
                    hard_state: Some(&hard_state),
                    ..LogWrite::default()
                })
                .unwrap();
        }
        drop(store);
        // With the data next to the hard state, sled rewrote it every few
        // writes: 218 MB here.
        let used = dir_bytes(dir.path());
        assert!(used < 16 << 20, "{used} bytes on disk");
    }

    fn dir_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    dir_bytes(&entry.path())
                } else {
                    meta.len()
                }
            })
            .sum()
    }

    #[test]
    fn a_corrupted_hard_state_is_a_decode_error_naming_the_record() {
        let dir = tempfile::tempdir().unwrap();
        write_small_log(dir.path());
        tamper(dir.path(), &RecordKey::HardState.to_bytes(), Some(GARBAGE));
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Decode {
                    key: RecordKey::HardState,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.to_string(), "cannot decode the hard state record");
    }

    #[test]
    fn a_corrupted_entry_is_a_decode_error_naming_its_index() {
        let dir = tempfile::tempdir().unwrap();
        write_small_log(dir.path());
        tamper(dir.path(), &RecordKey::Entry(4).to_bytes(), Some(GARBAGE));
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::Decode {
                    key: RecordKey::Entry(4),
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.to_string(), "cannot decode the log entry 4");
    }

    #[test]
    fn an_entry_damaged_while_open_is_a_storage_error_from_entries_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        write_small_log(dir.path());
        let store = LogStore::open(dir.path()).unwrap();
        store
            .tree
            .insert(RecordKey::Entry(2).to_bytes(), GARBAGE)
            .unwrap();
        let error = store
            .entries(1, 4, None, GetEntriesContext::empty(false))
            .unwrap_err();
        let raft::Error::Store(raft::StorageError::Other(inner)) = error else {
            panic!("not a storage error: {error:?}");
        };
        let inner = inner.downcast::<StorageError>().unwrap();
        assert!(
            matches!(
                *inner,
                StorageError::Decode {
                    key: RecordKey::Entry(2),
                    ..
                }
            ),
            "{inner:?}"
        );
    }

    #[test]
    fn an_entry_stored_under_another_index_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        write_small_log(dir.path());
        let wrong = entry(9, 1).write_to_bytes().unwrap();
        tamper(dir.path(), &RecordKey::Entry(3).to_bytes(), Some(&wrong));
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::EntryIndexMismatch {
                    key: RecordKey::Entry(3),
                    found: 9
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_hole_in_the_log_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        write_small_log(dir.path());
        tamper(dir.path(), &RecordKey::Entry(3).to_bytes(), None);
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::UnexpectedEntry {
                    index: 4,
                    expected: 3
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_log_floor_at_the_end_of_the_index_space_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        write_small_log(dir.path());
        let floor = Entry {
            index: u64::MAX,
            term: 1,
            ..Entry::default()
        };
        tamper(
            dir.path(),
            &RecordKey::LogFloor.to_bytes(),
            Some(&floor.write_to_bytes().unwrap()),
        );
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(
                error,
                StorageError::IndexOutOfRange {
                    key: RecordKey::LogFloor,
                    index: u64::MAX
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        write_small_log(dir.path());
        tamper(dir.path(), b"\x7fstray", Some(b"x"));
        let error = LogStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(error, StorageError::UnknownKey { .. }),
            "{error:?}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 32, ..Default::default() })]

        /// Whatever bytes a damaged disk leaves under a record, open either
        /// accepts them as a valid log or names what is wrong; it never panics.
        #[test]
        fn arbitrary_bytes_under_any_record_never_panic_on_open(
            which in 0..7usize,
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let dir = tempfile::tempdir().unwrap();
            write_small_log(dir.path());
            let key = [
                RecordKey::HardState,
                RecordKey::ConfState,
                RecordKey::Snapshot,
                RecordKey::LogFloor,
                RecordKey::Entry(1),
                RecordKey::Entry(5),
                RecordKey::Entry(6),
            ][which];
            tamper(dir.path(), &key.to_bytes(), Some(&value));
            if let Ok(store) = LogStore::open(dir.path()) {
                // Accepted: then every Storage call answers without panicking.
                let first = store.first_index().unwrap();
                let last = store.last_index().unwrap();
                for index in first.saturating_sub(1)..=last + 1 {
                    drop(store.term(index));
                }
                drop(store.entries(first, last + 1, None, GetEntriesContext::empty(false)));
                drop(store.snapshot(0, 1));
            }
        }
    }

    #[test]
    fn a_store_open_elsewhere_is_reported_as_locked_after_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let _held = LogStore::open(dir.path()).unwrap();
        let error = LogStore::open_waiting(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(
            matches!(&error, StorageError::Locked { path, .. } if path.starts_with(dir.path())),
            "{error:?}"
        );
    }

    #[test]
    fn an_empty_write_changes_nothing_and_leaves_the_store_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        store.write(LogWrite::default()).unwrap();
        assert!(store.is_empty());
        drop(store);
        assert!(LogStore::open(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn entry_keys_sort_in_log_order_after_the_metadata_records() {
        let keys: Vec<Vec<u8>> = [
            RecordKey::HardState,
            RecordKey::ConfState,
            RecordKey::Snapshot,
            RecordKey::LogFloor,
            RecordKey::Entry(0),
            RecordKey::Entry(255),
            RecordKey::Entry(256),
            RecordKey::Entry(u64::MAX),
        ]
        .iter()
        .map(|key| key.to_bytes())
        .collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        for key in &keys {
            let parsed = RecordKey::parse(key).unwrap();
            assert_eq!(&parsed.to_bytes(), key);
        }
        assert_eq!(RecordKey::parse(&[KEY_ENTRY, 1, 2]), None);
    }

    #[test]
    fn term_runs_answer_every_index_through_truncation_and_compaction() {
        let mut runs = TermRuns::starting_at(0, 0);
        for (index, term) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)] {
            runs.push(index, term);
        }
        assert_eq!(runs.0.len(), 4);
        let terms: Vec<_> = (0..=5).map(|index| runs.term(index)).collect();
        assert_eq!(terms, [0, 1, 1, 2, 2, 3].map(Some));

        runs.truncate_from(4);
        runs.push(4, 4);
        assert_eq!(runs.term(3), Some(2));
        assert_eq!(runs.term(4), Some(4));

        runs.raise_floor(2);
        assert_eq!(runs.0, BTreeMap::from([(2, 1), (3, 2), (4, 4)]));
        runs.raise_floor(4);
        assert_eq!(runs.0, BTreeMap::from([(4, 4)]));
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..HardState::default()
        }
    }

    #[test]
    fn only_a_write_that_moves_nothing_but_the_commit_index_skips_the_flush() {
        let stored = hard_state(3, 2, 10);
        let commit_only = hard_state(3, 2, 11);
        let write = |hard_state| LogWrite {
            hard_state: Some(hard_state),
            ..LogWrite::default()
        };
        assert!(!must_sync(&write(&commit_only), &stored));
        assert!(!must_sync(&LogWrite::default(), &stored));
        let new_term = hard_state(4, 2, 11);
        let new_vote = hard_state(3, 1, 10);
        assert!(must_sync(&write(&new_term), &stored), "new term");
        assert!(must_sync(&write(&new_vote), &stored), "new vote");
        let entry = Entry::default();
        let with_entry = LogWrite {
            entries: std::slice::from_ref(&entry),
            hard_state: Some(&commit_only),
            ..LogWrite::default()
        };
        assert!(must_sync(&with_entry, &stored));
        let snapshot = Snapshot::default();
        let conf_state = ConfState::default();
        assert!(must_sync(
            &LogWrite {
                snapshot: Some(&snapshot),
                ..LogWrite::default()
            },
            &stored
        ));
        assert!(must_sync(
            &LogWrite {
                conf_state: Some(&conf_state),
                ..LogWrite::default()
            },
            &stored
        ));
    }
}
