//! Many writes to a Cairn cluster, with its disk and memory sampled along
//! the way.
//!
//! The writes overwrite a bounded key set (as configuration does), so the
//! state the store must keep stays the same size while its log grows by
//! every write: disk use that stays flat over the run is the log
//! compaction working, and disk use that grows with the write count is it
//! not working. Samples are taken at evenly spaced write counts, and once
//! more after the load has stopped and the members had a few seconds to
//! snapshot and compact.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::kv::{KvConnection, System};
use super::load::{REQUEST_TIMEOUT, value_of};
use super::node::disk_usage;
use crate::apibench::procfs;

/// What the bulk writes look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkSpec {
    /// Writes in total.
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

/// Disk and memory of every member at one point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkSample {
    /// Acknowledged writes so far.
    pub writes: u64,
    /// Bytes under each member's `raft/`.
    pub raft_bytes: Vec<u64>,
    /// Bytes under each member's whole state directory.
    pub state_bytes: Vec<u64>,
    /// Each member's resident memory.
    pub rss_bytes: Vec<u64>,
}

/// What the bulk run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkOutcome {
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
}

/// The members' state directories and pids, for sampling.
#[derive(Debug, Clone)]
pub struct Members {
    /// API addresses.
    pub addrs: Vec<SocketAddr>,
    /// State directories (`raft/` is beneath).
    pub state_dirs: Vec<PathBuf>,
    /// cairnd pids.
    pub pids: Vec<u32>,
}

fn sample(members: &Members, writes: u64) -> BulkSample {
    BulkSample {
        writes,
        raft_bytes: members
            .state_dirs
            .iter()
            .map(|d| disk_usage(&d.join("raft")))
            .collect(),
        state_bytes: members.state_dirs.iter().map(|d| disk_usage(d)).collect(),
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
        let connection = KvConnection::new(System::Cairn, Arc::clone(&config), addr);
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
    let mut errors = 0;
    let mut first_error = None;
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
                    Some(Ok((e, first))) => {
                        errors += e;
                        if first_error.is_none() {
                            first_error = first;
                        }
                    }
                    Some(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("writer task failed: {e}"));
                    }
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
        acknowledged: done,
        errors,
        first_error,
        wall,
        samples,
        settled,
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
) -> (u64, Option<String>) {
    let mut errors = 0;
    let mut first_error = None;
    let mut consecutive = 0;
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= spec.writes {
            return (errors, first_error);
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
                errors += 1;
                consecutive += 1;
                first_error.get_or_insert_with(|| {
                    format!("write {n} via {}: {}", connection.addr(), crate::report(&e))
                });
                if consecutive >= MAX_CONSECUTIVE_ERRORS {
                    return (errors, first_error);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
