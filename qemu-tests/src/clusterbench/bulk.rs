//! Many writes to a cluster of either system, with its disk and memory
//! sampled along the way.
//!
//! The writes overwrite a bounded key set (as configuration does), so the
//! state the store must keep stays the same size while its log grows by
//! every write: disk use that stays flat over the run is the log
//! compaction working, and disk use that grows with the write count is it
//! not working. Samples are taken at evenly spaced write counts, and once
//! more after the load has stopped and the members had a few seconds to
//! snapshot and compact.
//!
//! Each system's data directory is measured whole and in the parts that
//! say where the bytes are ([`DiskPart`]): Cairn's `raft/` (sled: log,
//! hard state and snapshots), etcd's `member/wal` (the log),
//! `member/snap` (snapshots and the bbolt file) and `member/snap/db` (the
//! bbolt file alone, which keeps its size after a compaction frees pages).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::kv::{KvConnection, System};
use super::load::{REQUEST_TIMEOUT, value_of};
use super::node::disk_usage;
use crate::apibench::load::RoundOutcome;
use crate::apibench::procfs;

/// What the bulk writes look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkSpec {
    /// Writes in total, per system.
    pub writes: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct keys written.
    pub keys: u64,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Samples over the run (plus one at the end).
    pub samples: u64,
    /// How long to wait after the load before the final sample.
    pub settle: Duration,
}

/// A file or directory under a member's data directory that is measured
/// on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskPart {
    /// Where it is, relative to the data directory.
    pub path: &'static str,
}

/// Cairn: sled's `raft/` (the log, hard state and snapshots).
pub const CAIRN_PARTS: &[DiskPart] = &[DiskPart { path: "raft" }];
/// etcd: the WAL, the snapshot directory, and the bbolt file inside it.
pub const ETCD_PARTS: &[DiskPart] = &[
    DiskPart { path: "member/wal" },
    DiskPart {
        path: "member/snap",
    },
    DiskPart {
        path: "member/snap/db",
    },
];

/// The parts measured for `system`.
#[must_use]
pub fn disk_parts(system: System) -> &'static [DiskPart] {
    match system {
        System::Cairn => CAIRN_PARTS,
        System::Etcd => ETCD_PARTS,
    }
}

/// Disk and memory of every member at one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkSample {
    /// Acknowledged writes so far.
    pub writes: u64,
    /// Bytes of each part (in [`disk_parts`] order), per member.
    pub parts: Vec<Vec<u64>>,
    /// Bytes under each member's whole data directory.
    pub data_bytes: Vec<u64>,
    /// Each member's resident memory.
    pub rss_bytes: Vec<u64>,
}

/// What the bulk run saw on one system.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkOutcome {
    /// The system written to.
    pub system: System,
    /// Writes the cluster acknowledged.
    pub acknowledged: u64,
    /// Writes that failed (each is retried with the next number).
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// From the first write to the last acknowledgement.
    pub wall: Duration,
    /// Samples during the run, in write order.
    pub samples: Vec<BulkSample>,
    /// The sample after the settle time.
    pub settled: BulkSample,
    /// History compactions the members logged from the first write to the
    /// settled sample, where the system compacts in steps (etcd's revision
    /// compactor, every 5 minutes); `None` where it trims as it applies
    /// (Cairn) or nobody counted.
    pub compactions: Option<u64>,
}

impl BulkOutcome {
    /// Acknowledged writes per second of the run.
    #[must_use]
    pub fn rate(&self) -> f64 {
        let secs = self.wall.as_secs_f64();
        if secs > 0.0 {
            self.acknowledged as f64 / secs
        } else {
            0.0
        }
    }

    /// Per member, the largest value `f` took in any sample, the settled
    /// one included.
    #[must_use]
    pub fn peak(&self, f: impl Fn(&BulkSample) -> &[u64]) -> Vec<u64> {
        let members = f(&self.settled).len();
        (0..members)
            .map(|i| {
                self.samples
                    .iter()
                    .chain(std::iter::once(&self.settled))
                    .filter_map(|s| f(s).get(i).copied())
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// The members' data directories and pids, for sampling.
#[derive(Debug, Clone)]
pub struct Members {
    /// Which system they run.
    pub system: System,
    /// Client addresses.
    pub addrs: Vec<SocketAddr>,
    /// Data directories (Cairn's state directories, etcd's `--data-dir`).
    pub data_dirs: Vec<PathBuf>,
    /// Member pids.
    pub pids: Vec<u32>,
}

fn sample(members: &Members, writes: u64) -> BulkSample {
    let part = |dir: &Path, part: &DiskPart| disk_usage(&dir.join(part.path));
    BulkSample {
        writes,
        parts: disk_parts(members.system)
            .iter()
            .map(|p| members.data_dirs.iter().map(|d| part(d, p)).collect())
            .collect(),
        data_bytes: members.data_dirs.iter().map(|d| disk_usage(d)).collect(),
        rss_bytes: members
            .pids
            .iter()
            .map(|p| procfs::rss(*p).unwrap_or(0))
            .collect(),
    }
}

/// Runs `spec` against the members and samples them.
pub async fn run(config: Arc<ClientConfig>, members: &Members, spec: &BulkSpec) -> BulkOutcome {
    let next = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for c in 0..spec.clients.max(1) {
        let addr = members.addrs[c % members.addrs.len().max(1)];
        let connection = KvConnection::new(members.system, Arc::clone(&config), addr);
        tasks.spawn(writer(
            connection,
            spec.clone(),
            Arc::clone(&next),
            Arc::clone(&acknowledged),
        ));
    }
    let every = (spec.writes / spec.samples.max(1)).max(1);
    let mut samples = vec![sample(members, 0)];
    let mut next_sample = every;
    // Writers report failures only: the bulk run measures disk and
    // memory, not latency.
    let mut failed = RoundOutcome::default();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let done = acknowledged.load(Ordering::Relaxed);
                if done >= next_sample && done < spec.writes {
                    let members = members.clone();
                    if let Ok(s) = tokio::task::spawn_blocking(move || sample(&members, done)).await {
                        samples.push(s);
                    }
                    next_sample = (done / every + 1) * every;
                }
            }
            joined = tasks.join_next() => {
                match joined {
                    Some(writer) => failed.absorb(writer),
                    None => break,
                }
            }
        }
    }
    let wall = started.elapsed();
    let done = acknowledged.load(Ordering::Relaxed);
    samples.push(sample(members, done));
    tokio::time::sleep(spec.settle).await;
    let settled = sample(members, done);
    BulkOutcome {
        system: members.system,
        acknowledged: done,
        errors: failed.errors,
        first_error: failed.first_error,
        wall,
        samples,
        settled,
        compactions: None,
    }
}

/// Gives up after this many consecutive failures of one writer: the
/// cluster is not coming back.
const MAX_CONSECUTIVE_ERRORS: u32 = 100;

async fn writer(
    mut connection: KvConnection,
    spec: BulkSpec,
    next: Arc<AtomicU64>,
    acknowledged: Arc<AtomicU64>,
) -> RoundOutcome {
    let mut failed = RoundOutcome::default();
    let mut consecutive = 0;
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= spec.writes {
            return failed;
        }
        let key = format!("bulk-{}", n % spec.keys.max(1));
        match connection
            .put(&key, &value_of(n, spec.value_bytes), REQUEST_TIMEOUT)
            .await
        {
            Ok(()) => {
                consecutive = 0;
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                failed.errors += 1;
                consecutive += 1;
                failed.first_error.get_or_insert_with(|| {
                    format!("write {n} via {}: {}", connection.addr(), crate::report(&e))
                });
                if consecutive >= MAX_CONSECUTIVE_ERRORS {
                    return failed;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
