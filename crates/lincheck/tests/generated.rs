//! Property tests on histories of a correct register under random
//! concurrency (see `common`): they always check as linearizable, and a
//! corrupted outcome is caught.

mod common;

use common::{Rng, Workload, linearizable_history};
use lincheck::{Budget, Op, Operation, Outcome, Recorded, Verdict, check};
use proptest::prelude::*;

/// Histories a correct register produces: up to 8 clients, 20% of
/// operations with unknown outcomes.
fn workload() -> impl Strategy<Value = Workload> {
    workload_within(8, 300, 20)
}

/// Histories small enough that the exhaustive search a violation needs
/// stays quick in a debug build. Unknown outcomes are what make that
/// search expensive (each pending one may or may not have happened), so
/// they are kept rarer here.
fn corruptible_workload() -> impl Strategy<Value = Workload> {
    workload_within(6, 150, 5)
}

fn workload_within(
    max_clients: u64,
    max_ops: usize,
    max_unknown_percent: u64,
) -> impl Strategy<Value = Workload> {
    (
        1_u64..=max_clients,
        1_usize..=4,
        1_usize..=max_ops,
        0_u64..=max_unknown_percent,
    )
        .prop_map(|(clients, keys, ops, unknown_percent)| Workload {
            clients,
            keys,
            ops,
            unknown_percent,
        })
}

fn verdict(ops: Vec<Operation>) -> Verdict {
    check(
        &Recorded::from_operations(ops).expect("generated history is well formed"),
        Budget::default(),
    )
}

/// Asserts `ops` fails on the corrupted operation's key, that the excerpt
/// contains it and fails on its own.
fn assert_caught(ops: Vec<Operation>, corrupted: &Operation) -> Result<(), TestCaseError> {
    match verdict(ops) {
        Verdict::NotLinearizable { key, explanation } => {
            prop_assert_eq!(&key, &corrupted.key);
            prop_assert!(
                explanation.excerpt.contains(corrupted),
                "corrupted {} missing from\n{}",
                corrupted,
                explanation
            );
            let excerpt = verdict(explanation.excerpt.clone());
            prop_assert!(
                matches!(excerpt, Verdict::NotLinearizable { .. }),
                "excerpt checks as {}",
                excerpt
            );
            Ok(())
        }
        other => Err(TestCaseError::fail(format!(
            "corruption of {corrupted} not caught: {other}"
        ))),
    }
}

fn completed_gets(ops: &[Operation]) -> Vec<usize> {
    (0..ops.len())
        .filter(|&i| ops[i].op == Op::Get && ops[i].outcome.is_known())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_correct_register_under_random_concurrency_is_always_linearizable(
        workload in workload(),
        seed in any::<u64>(),
    ) {
        let verdict = verdict(linearizable_history(workload, seed));
        prop_assert_eq!(&verdict, &Verdict::Linearizable, "{}", verdict);
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_always_caught(
        workload in corruptible_workload(),
        seed in any::<u64>(),
    ) {
        let mut ops = linearizable_history(workload, seed);
        let gets = completed_gets(&ops);
        prop_assume!(!gets.is_empty());
        let target = gets[Rng::new(seed).index(gets.len())];
        ops[target].outcome = Outcome::found("never-written");
        let corrupted = ops[target].clone();
        assert_caught(ops, &corrupted)?;
    }

    #[test]
    fn a_read_of_a_value_written_only_after_the_read_returned_is_always_caught(
        workload in corruptible_workload(),
        seed in any::<u64>(),
    ) {
        let mut ops = linearizable_history(workload, seed);
        let mut rng = Rng::new(seed);
        let candidates: Vec<(usize, String)> = completed_gets(&ops)
            .into_iter()
            .filter_map(|get| {
                let returned = ops[get].ret?;
                ops.iter()
                    .filter(|w| w.key == ops[get].key && w.call > returned)
                    .find_map(|w| w.op.written_value().map(str::to_owned))
                    .map(|value| (get, value))
            })
            .collect();
        prop_assume!(!candidates.is_empty());
        let (target, value) = candidates[rng.index(candidates.len())].clone();
        ops[target].outcome = Outcome::found(value);
        let corrupted = ops[target].clone();
        assert_caught(ops, &corrupted)?;
    }
}

/// Flips one known outcome to another the operation could have returned.
fn flip(operation: &mut Operation, written_on_key: &[String], rng: &mut Rng) -> bool {
    let flipped = match (&operation.op, &operation.outcome) {
        (Op::Get, Outcome::Found { value }) => {
            let others: Vec<&String> = written_on_key.iter().filter(|v| *v != value).collect();
            if others.is_empty() || rng.chance(30) {
                Outcome::NotFound
            } else {
                Outcome::found(others[rng.index(others.len())].clone())
            }
        }
        (Op::Get, Outcome::NotFound) => match written_on_key.len() {
            0 => return false,
            n => Outcome::found(written_on_key[rng.index(n)].clone()),
        },
        (Op::Delete, Outcome::Deleted) => Outcome::NotFound,
        (Op::Delete, Outcome::NotFound) => Outcome::Deleted,
        (Op::CompareAndSet { .. }, Outcome::Ok) => Outcome::Conflict,
        (Op::CompareAndSet { .. }, Outcome::Conflict) => Outcome::Ok,
        _ => return false,
    };
    operation.outcome = flipped;
    true
}

/// Not every flipped outcome is a violation (a read racing a write may
/// legitimately see either value), so this measures the detection rate
/// over many histories instead of demanding it every time.
#[test]
fn most_random_single_outcome_corruptions_are_caught() {
    let workload = Workload {
        clients: 4,
        keys: 2,
        ops: 60,
        unknown_percent: 5,
    };
    let (mut tried, mut caught) = (0_u32, 0_u32);
    for seed in 0..400 {
        let mut ops = linearizable_history(workload, seed);
        let mut rng = Rng::new(seed ^ 0xC0FFEE);
        let target = rng.index(ops.len());
        let written: Vec<String> = ops
            .iter()
            .filter(|w| w.key == ops[target].key)
            .filter_map(|w| w.op.written_value().map(str::to_owned))
            .collect();
        if !flip(&mut ops[target], &written, &mut rng) {
            continue;
        }
        tried += 1;
        match verdict(ops) {
            Verdict::NotLinearizable { .. } => caught += 1,
            Verdict::Linearizable => {}
            Verdict::Undecided { key } => panic!("seed {seed}: undecided on {key}"),
        }
    }
    println!("caught {caught} of {tried} random corruptions");
    assert!(tried >= 200, "only {tried} corruptions tried");
    assert!(
        f64::from(caught) >= 0.8 * f64::from(tried),
        "caught only {caught} of {tried} corruptions"
    );
}
