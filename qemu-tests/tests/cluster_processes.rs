//! Three real cairnd processes, killed with SIGKILL under a write load.
//!
//! The members run on 127.0.0.1-3 in a network namespace the test makes
//! (the cluster bench's harness: bootstrap, join token, two joins). Four
//! clients write unique keys through the members and record every write
//! the cluster acknowledged. Round after round a random member gets
//! SIGKILL (no shutdown path runs: whatever was not on disk is gone),
//! stays down for a few seconds while the writes go on through the other
//! two, and is started again on the same state directory; the round ends
//! when it has caught up. At the end every acknowledged write must be
//! there with its value, read through every member: listed by prefix (the
//! whole history, linearizably) and, for the newest writes of each client,
//! read one by one.
//!
//! `CAIRN_KILL_SEED` replays a sequence of victims; the seed is printed.
//! The test needs root (network namespaces) and fails without it. It
//! builds cairnd in the test's own profile unless `CAIRN_CAIRND` names one.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::types::KvList;
use qemu_tests::OrPanic;
use qemu_tests::apibench::client;
use qemu_tests::apibench::sandbox::BenchNamespace;
use qemu_tests::clusterbench::binary::{self, Profile};
use qemu_tests::clusterbench::cairn::CairnCluster;
use qemu_tests::clusterbench::kv::{KvConnection, System, percent_encode};
use qemu_tests::paths;
use rustls::ClientConfig;

const MEMBERS: usize = 3;
const WRITERS: usize = 4;
const ROUNDS: usize = 6;
/// Writes between kills, with all members up.
const LOAD_BEFORE_KILL: Duration = Duration::from_secs(3);
/// How long the victim stays dead while the others take writes.
const DOWN: Duration = Duration::from_secs(3);
/// How long a restarted member may take to catch up.
const CATCH_UP: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys are `kill9-<writer>-<seq, 7 digits>`, so a list of the prefix
/// `kill9-<writer>-<seq / 1000, 4 digits>` holds at most 1,000 records,
/// the most one list returns.
const PAGE: u64 = 1000;

fn key(writer: usize, seq: u64) -> String {
    format!("kill9-{writer}-{seq:07}")
}

fn value(writer: usize, seq: u64) -> String {
    format!("written by {writer} as number {seq}")
}

/// Acknowledged writes per writer: sequence number to value.
type Acked = Arc<Mutex<Vec<BTreeMap<u64, String>>>>;

/// One writer: unique keys, through one member until a write fails, then
/// through the next. Only acknowledged writes are recorded; a failed one
/// may or may not have happened, and its key is never reused.
async fn writer(
    id: usize,
    config: Arc<ClientConfig>,
    members: Vec<SocketAddr>,
    acked: Acked,
    total: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut member = id % members.len();
    let mut connection = KvConnection::new(System::Cairn, Arc::clone(&config), members[member]);
    let mut failures = 0;
    let mut seq = 0;
    while !stop.load(Ordering::Relaxed) {
        let (k, v) = (key(id, seq), value(id, seq));
        match connection.put(&k, &v, REQUEST_TIMEOUT).await {
            Ok(()) => {
                acked.lock().unwrap()[id].insert(seq, v);
                total.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                failures += 1;
                member = (member + 1) % members.len();
                connection = KvConnection::new(System::Cairn, Arc::clone(&config), members[member]);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        seq += 1;
    }
    failures
}

/// splitmix64: the victims only need to be unpredictable to the cluster
/// and replayable from the printed seed.
struct Victims(u64);

impl Victims {
    fn next(&mut self) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        usize::try_from(z % MEMBERS as u64).unwrap()
    }
}

/// Lists `prefix` through `addr` and returns key to value.
async fn list(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    prefix: &str,
) -> BTreeMap<String, String> {
    let path = format!("/v1/kv?prefix={}&limit={PAGE}", percent_encode(prefix));
    let (status, body) = client::call(config, addr, "GET", &path, None, REQUEST_TIMEOUT)
        .await
        .or_panic(&format!("GET {path} via {addr}"));
    assert_eq!(
        status,
        200,
        "GET {path} via {addr}: {}",
        String::from_utf8_lossy(&body)
    );
    let listed: KvList = serde_json::from_slice(&body).unwrap();
    assert!(!listed.more, "{prefix} holds more than {PAGE} keys");
    listed
        .records
        .into_iter()
        .map(|r| (r.key, r.value))
        .collect()
}

#[test]
fn every_acknowledged_write_survives_repeated_kill_9_of_random_members() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates a network namespace); run it as root, e.g. `sudo -E cargo test -p qemu-tests --test cluster_processes`"
    );
    let cairnd = binary::cairnd(Profile::of_this_build()).or_panic("cairnd to run");
    let seed = std::env::var("CAIRN_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap();
            (now.as_secs() << 30) ^ u64::from(now.subsec_nanos())
        });
    eprintln!("cluster_processes: CAIRN_KILL_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let logs = paths::test_log_dir("cluster-processes");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    let ns = BenchNamespace::create().or_panic("network namespace");
    let started = Instant::now();
    ns.run_in(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(scenario(&ns, &cairnd, dir.path(), &logs, seed));
    })
    .or_panic("entering the namespace");
    eprintln!(
        "cluster_processes: done in {:.0} s; member logs in {}",
        started.elapsed().as_secs_f64(),
        logs.display()
    );
}

async fn scenario(
    ns: &BenchNamespace,
    cairnd: &std::path::Path,
    dir: &std::path::Path,
    logs: &std::path::Path,
    seed: u64,
) {
    let mut cluster =
        CairnCluster::prepare(ns, cairnd, dir, logs, MEMBERS).or_panic("preparing the members");
    cluster.form().await.or_panic("forming the cluster");
    let config = cluster.admin().unwrap();
    let members = cluster.members();

    let acked: Acked = Arc::new(Mutex::new(vec![BTreeMap::new(); WRITERS]));
    let total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for id in 0..WRITERS {
        writers.spawn(writer(
            id,
            Arc::clone(&config),
            members.clone(),
            Arc::clone(&acked),
            Arc::clone(&total),
            Arc::clone(&stop),
        ));
    }

    let mut victims = Victims(seed);
    let mut written_while_down = 0;
    let mut killed_leader = false;
    for round in 1..=ROUNDS {
        tokio::time::sleep(LOAD_BEFORE_KILL).await;
        let leader = cluster.leader().await.ok();
        // Random victims, but losing the leader is the case that matters
        // most: the last round takes it if no earlier round did.
        let victim = match leader {
            Some(l) if round == ROUNDS && !killed_leader => l,
            _ => victims.next(),
        };
        killed_leader |= leader == Some(victim);
        let before = total.load(Ordering::Relaxed);
        cluster.nodes_mut().kill(victim).or_panic("SIGKILL");
        tokio::time::sleep(DOWN).await;
        let during = total.load(Ordering::Relaxed) - before;
        written_while_down += during;
        eprintln!(
            "cluster_processes: round {round}: killed {}{}; {during} writes acknowledged while it was down",
            cluster.name(victim),
            if leader == Some(victim) {
                " (the leader)"
            } else {
                ""
            },
        );
        cluster.restart(victim, CATCH_UP).await.or_panic(&format!(
            "{} rejoining after SIGKILL in round {round}",
            cluster.name(victim)
        ));
    }
    tokio::time::sleep(LOAD_BEFORE_KILL).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = 0;
    while let Some(joined) = writers.join_next().await {
        failures += joined.unwrap();
    }
    cluster
        .nodes_mut()
        .check_running()
        .or_panic("members after the load");
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let count: usize = acked.iter().map(BTreeMap::len).sum();
    eprintln!(
        "cluster_processes: {count} writes acknowledged ({written_while_down} with a member down), {failures} failed or unconfirmed"
    );
    assert!(
        count >= 100,
        "only {count} writes were acknowledged: the load hardly ran"
    );
    assert!(killed_leader, "no round could find the leader to kill");
    assert!(
        written_while_down > 0,
        "no write was acknowledged while a member was down: two of three members must keep taking writes"
    );

    for (i, addr) in members.iter().enumerate() {
        let name = cluster.name(i).to_owned();
        for (writer, writes) in acked.iter().enumerate() {
            let Some(last) = writes.keys().next_back() else {
                continue;
            };
            let mut seen = BTreeMap::new();
            for page in 0..=last / PAGE {
                let prefix = format!("kill9-{writer}-{page:04}");
                seen.extend(list(&config, *addr, &prefix).await);
            }
            for (seq, wanted) in writes {
                let k = key(writer, *seq);
                assert_eq!(
                    seen.get(&k),
                    Some(wanted),
                    "acknowledged write {k} is missing or wrong when listed through {name}"
                );
            }
            let mut connection = KvConnection::new(System::Cairn, Arc::clone(&config), *addr);
            for (seq, wanted) in writes.iter().rev().take(25) {
                let k = key(writer, *seq);
                let got = connection
                    .get(&k, REQUEST_TIMEOUT)
                    .await
                    .or_panic(&format!("GET {k} via {name}"));
                assert_eq!(
                    got.as_ref(),
                    Some(wanted),
                    "acknowledged write {k} read through {name}"
                );
            }
        }
    }
    cluster.nodes_mut().stop_all();
}
