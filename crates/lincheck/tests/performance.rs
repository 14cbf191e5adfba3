//! The cluster tests check histories of thousands of operations per run;
//! the checker must keep up in a debug build.

mod common;

use std::time::{Duration, Instant};

use common::{Workload, linearizable_history};
use lincheck::{Budget, Recorded, Verdict, check};

/// Generous enough for a loaded two-core machine in a debug build (the
/// measured time is printed; `cargo bench -p lincheck` gives release
/// numbers), tight enough to catch the search going exponential.
const LIMIT: Duration = Duration::from_secs(3);

fn timed_check(workload: Workload, seed: u64) -> Duration {
    let recorded = Recorded::from_operations(linearizable_history(workload, seed))
        .expect("generated history is well formed");
    let started = Instant::now();
    let verdict = check(&recorded, Budget::default());
    let elapsed = started.elapsed();
    assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
    elapsed
}

#[test]
fn five_thousand_operations_over_twenty_keys_from_eight_clients_check_quickly() {
    let elapsed = timed_check(
        Workload {
            clients: 8,
            keys: 20,
            ops: 5_000,
            unknown_percent: 0,
        },
        7,
    );
    println!("5,000 ops / 20 keys / 8 clients: {elapsed:?}");
    assert!(elapsed < LIMIT, "took {elapsed:?}");
}

#[test]
fn five_thousand_operations_with_five_percent_unknown_outcomes_check_quickly() {
    let elapsed = timed_check(
        Workload {
            clients: 8,
            keys: 20,
            ops: 5_000,
            unknown_percent: 5,
        },
        11,
    );
    println!("5,000 ops / 20 keys / 8 clients / 5% unknown: {elapsed:?}");
    assert!(elapsed < LIMIT, "took {elapsed:?}");
}
