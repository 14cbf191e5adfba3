//! The cluster tests check histories of thousands of operations per run;
//! the checker must keep up in a debug build.

mod common;

use std::time::{Duration, Instant};

use common::{Workload, linearizable_history};
use lincheck::{Budget, Op, Operation, Outcome, Recorded, Verdict, check};

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

/// Every key is a hard instance: `width` puts that all overlap, each
/// value read back by an overlapping get (so no two orders end in the
/// same state and the cache cannot merge them), then a read of a value
/// nobody wrote. Proving that read impossible means ruling out every
/// order of the puts and gets, about `(2 * width)!` of them.
fn exponential_history(keys: usize, width: usize) -> Recorded {
    let mut ops = Vec::new();
    for key in 0..keys {
        let key = format!("key-{key}");
        for writer in 0..width {
            let value = format!("{key}-v{writer}");
            let client = u64::try_from(writer).expect("few writers");
            ops.push(Operation {
                client,
                key: key.clone(),
                op: Op::put(value.clone()),
                outcome: Outcome::Ok,
                call: 1,
                ret: Some(100),
            });
            ops.push(Operation {
                client: client + 1_000,
                key: key.clone(),
                op: Op::Get,
                outcome: Outcome::found(value),
                call: 2,
                ret: Some(99),
            });
        }
        ops.push(Operation {
            client: 0,
            key: key.clone(),
            op: Op::Get,
            outcome: Outcome::found("never-written"),
            call: 200,
            ret: Some(201),
        });
    }
    Recorded::from_operations(ops).expect("well-formed history")
}

#[test]
fn the_budget_bounds_the_work_on_a_history_with_exponentially_many_orders() {
    let recorded = exponential_history(4, 20);
    let started = Instant::now();
    let verdict = check(&recorded, Budget::steps_per_key(100_000));
    let elapsed = started.elapsed();
    println!("4 keys x 41 operations, 100,000 steps per key: {elapsed:?}, {verdict}");
    assert_eq!(
        verdict,
        Verdict::Undecided {
            key: "key-0".to_owned()
        }
    );
    assert!(elapsed < LIMIT, "took {elapsed:?}");
}
