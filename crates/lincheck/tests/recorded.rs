//! Histories recorded by the cluster's simulations, kept exactly as they
//! were dumped (`{:#?}` of the operations), so a history that once caused
//! trouble stays a test case.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::dump::parse_operations;
use lincheck::{Budget, Outcome, Recorded, Verdict, check};

/// Far above what the check needs (about 15 ms in a debug build), far
/// below the minutes a runaway search would take.
const LIMIT: Duration = Duration::from_secs(3);

fn recorded(dump: &str) -> Recorded {
    Recorded::from_operations(parse_operations(dump)).expect("the dump is a well-formed history")
}

/// The Raft simulation (crates/cluster/tests/raft_sim.rs) recorded this
/// history with crashes, partitions and message loss; it was reported as
/// making `check` spin. It does not: it is linearizable and decided in
/// milliseconds with the budget the simulation uses.
#[test]
fn a_real_raft_history_is_decided_within_its_budget() {
    let history = recorded(include_str!("data/raft-sim-12-keys-8-clients.txt"));
    let operations = history.operations();
    assert_eq!(operations.len(), 1024);
    let keys: HashSet<&str> = operations.iter().map(|op| op.key.as_str()).collect();
    assert_eq!(keys.len(), 12);
    let unknown = operations
        .iter()
        .filter(|op| op.outcome == Outcome::Unknown)
        .count();
    assert_eq!(unknown, 22);

    let started = Instant::now();
    let verdict = check(&history, Budget::steps_per_key(100_000));
    let elapsed = started.elapsed();
    println!("1,024 recorded operations over 12 keys: {elapsed:?}, {verdict}");
    assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
    assert!(elapsed < LIMIT, "took {elapsed:?}");
}

#[test]
fn a_dump_reads_back_as_the_operations_that_were_dumped() {
    let history = recorded(include_str!("data/raft-sim-12-keys-8-clients.txt"));
    let pretty = format!("{:#?}", history.operations());
    assert_eq!(parse_operations(&pretty), history.operations());
    let compact = format!("{:?}", history.operations());
    assert_eq!(parse_operations(&compact), history.operations());
}
