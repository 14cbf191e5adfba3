//! The Raft replica and store under a simulated network with faults.
//!
//! Each run records at least 1,000 client operations with definite outcomes
//! while replicas crash and restart, are partitioned away, the leader is
//! isolated and messages are dropped and delayed, and then proves:
//! - the history is linearizable (lincheck);
//! - after healing, every replica converges to the same state;
//! - (in the snapshot run) a replica that missed compacted entries catches
//!   up from a snapshot.
//!
//! Seeds are fixed so a failure reproduces; the seed is in the test name's
//! assertion message.

#![expect(clippy::unwrap_used, reason = "test: a failed unwrap is a failed test")]

mod sim;

use cluster::raft::replica::ReplicaConfig;
use lincheck::{Budget, Verdict};
use sim::Sim;

const KEYS: &[&str] = &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
const OPERATIONS: usize = 1_000;
/// Simulated time after which a run counts as stuck.
const LIMIT_MS: u64 = 900_000;

fn small_snapshots(id: u64) -> ReplicaConfig {
    ReplicaConfig {
        snapshot_interval: 150,
        log_tail: 20,
        ..ReplicaConfig::new(id)
    }
}

/// One fault, chosen at random every ~1.5 s of simulated time: a crash
/// (restarted 0.5–3 s later), a partition of one replica, an isolated
/// leader, a burst of message loss, or healing. At most a minority is ever
/// down or cut off at the same time, so the cluster can make progress.
fn chaos(sim: &mut Sim, seed: u64, voters: u64) {
    let minority = usize::try_from((voters - 1) / 2).unwrap();
    let mut restarts: Vec<(u64, u64)> = Vec::new();
    let mut heal_at = 0;
    let mut next_fault = 1_500;
    while sim.completed < OPERATIONS {
        assert!(
            sim.now < LIMIT_MS,
            "seed {seed}: only {} operations completed in {LIMIT_MS} ms",
            sim.completed
        );
        sim.drive_clients(8, KEYS, 50);
        sim.step();
        if sim.now.is_multiple_of(5_000) {
            eprintln!(
                "seed {seed} t={}s: {} definite, {} unknown, {} in flight, leader {:?}, up {:?}",
                sim.now / 1000,
                sim.completed,
                sim.unknown,
                sim.in_progress(),
                sim.leader(),
                sim.up_ids()
            );
        }
        restarts.retain(|&(at, id)| {
            if sim.now >= at {
                sim.restart(id);
                false
            } else {
                true
            }
        });
        if heal_at != 0 && sim.now >= heal_at {
            sim.heal();
            sim.net.drop_per_mille = 10;
            heal_at = 0;
        }
        if sim.now < next_fault {
            continue;
        }
        next_fault = sim.now + 1_000 + sim.rng.below(1_000);
        let down = sim.ids().len() - sim.up_ids().len();
        match sim.rng.below(5) {
            0 if down < minority && heal_at == 0 => {
                let id = sim.rng.pick(&sim.up_ids());
                sim.crash(id);
                let back = sim.now + 500 + sim.rng.below(2_500);
                restarts.push((back, id));
            }
            1 if down == 0 && heal_at == 0 => {
                let id = sim.rng.pick(&sim.ids());
                sim.isolate(id);
                heal_at = sim.now + 1_000 + sim.rng.below(3_000);
            }
            2 if down == 0 && heal_at == 0 => {
                if let Some(leader) = sim.leader() {
                    sim.isolate(leader);
                    heal_at = sim.now + 2_000 + sim.rng.below(2_000);
                }
            }
            3 if heal_at == 0 => {
                sim.net.drop_per_mille = 200;
                heal_at = sim.now + 1_000 + sim.rng.below(2_000);
            }
            _ => {}
        }
    }
    // Stop the faults and the clients; let everything settle.
    for (_, id) in restarts {
        sim.restart(id);
    }
    sim.heal();
    sim.net.drop_per_mille = 0;
    sim.run_until(|s| (s.in_progress() == 0).then_some(()), 10_000);
    sim.run_until(Sim::converged, 30_000)
        .unwrap_or_else(|| panic!("seed {seed}: replicas did not converge after healing"));
}

fn check_linearizable(sim: &Sim, seed: u64, at_least: usize) {
    let completed = sim.completed;
    let unknown = sim.unknown;
    let history = sim.history.snapshot().expect("a well-formed history");
    // CAIRN_SIM_HISTORY=FILE keeps the recorded history for offline study
    // (lincheck's tests read such dumps back).
    if let Ok(path) = std::env::var("CAIRN_SIM_HISTORY") {
        std::fs::write(&path, format!("{:#?}", history.operations())).unwrap();
    }
    eprintln!(
        "seed {seed}: checking {} operations ({completed} definite, {unknown} unknown)",
        history.len()
    );
    assert!(
        completed >= at_least,
        "seed {seed}: {completed} definite outcomes"
    );
    match lincheck::check(&history, Budget::steps_per_key(100_000)) {
        Verdict::Linearizable => {}
        other => panic!(
            "seed {seed}: history of {} operations ({completed} definite, {unknown} unknown) is not proven linearizable: {other:?}",
            history.len()
        ),
    }
}

fn run(seed: u64, voters: u64, config: fn(u64) -> ReplicaConfig) {
    let mut sim = Sim::new(seed, voters, config);
    chaos(&mut sim, seed, voters);
    check_linearizable(&sim, seed, OPERATIONS);
}

#[test]
fn three_replicas_stay_linearizable_through_crashes_partitions_and_leader_isolation() {
    for seed in [2, 1] {
        run(seed, 3, ReplicaConfig::new);
    }
}

#[test]
fn five_replicas_stay_linearizable_through_crashes_partitions_and_leader_isolation() {
    run(3, 5, ReplicaConfig::new);
}

#[test]
fn frequent_snapshots_and_compaction_keep_replicas_linearizable_and_convergent() {
    run(4, 3, small_snapshots);
}

#[test]
fn a_replica_that_missed_compacted_entries_catches_up_from_a_snapshot() {
    let mut sim = Sim::new(5, 3, small_snapshots);
    let applied_at_crash = sim.replica(3).unwrap().status().applied;
    sim.crash(3);
    for _ in 0..20_000 {
        sim.drive_clients(4, KEYS, 100);
        sim.step();
    }
    let leader = sim.leader().expect("a leader with replica 3 down");
    let first_index = raft::Storage::first_index(sim.replica(leader).unwrap().log()).unwrap();
    assert!(
        first_index > applied_at_crash + 1,
        "the leader compacted away what replica 3 lacks (first index {first_index}, replica 3 applied {applied_at_crash})"
    );
    sim.restart(3);
    sim.net.drop_per_mille = 0;
    sim.run_until(|s| (s.in_progress() == 0).then_some(()), 10_000);
    sim.run_until(Sim::converged, 30_000)
        .expect("replica 3 converges after a snapshot");
    let restored = sim.replica(3).unwrap().state().clone();
    assert_eq!(&restored, sim.replica(leader).unwrap().state());
    assert!(restored.revision() > 0);
}

#[test]
fn a_write_acknowledged_before_every_replica_restarts_is_still_there() {
    let mut sim = Sim::new(6, 3, ReplicaConfig::new);
    let leader = sim.leader().unwrap();
    assert!(sim.submit(0, leader, "durable", lincheck::Op::put("kept")));
    sim.run_until(|s| (s.in_progress() == 0).then_some(()), 10_000)
        .expect("the write is acknowledged");
    assert_eq!(sim.completed, 1);
    for id in sim.ids() {
        sim.crash(id);
    }
    for id in sim.ids() {
        sim.restart(id);
    }
    let leader = sim
        .run_until(|s| s.leader(), 20_000)
        .expect("a leader after a full restart");
    assert!(sim.submit(1, leader, "durable", lincheck::Op::Get));
    sim.run_until(|s| (s.in_progress() == 0).then_some(()), 10_000)
        .expect("the read is answered");
    let key = cluster::store::Key::new("durable").unwrap();
    for id in sim.ids() {
        let record = sim.replica(id).unwrap().state().get(&key).cloned();
        assert_eq!(
            record.map(|r| r.value),
            Some(b"kept".to_vec()),
            "replica {id}"
        );
    }
    check_linearizable(&sim, 6, 2);
}
