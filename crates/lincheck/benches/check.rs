//! Times `lincheck::check` on generated histories of the sizes the
//! cluster tests record. Run with `cargo bench -p lincheck`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{Workload, linearizable_history};
use lincheck::{Budget, Op, Outcome, Recorded, Verdict, check};

fn main() {
    let cases = [
        (
            "5,000 ops, 20 keys, 8 clients",
            Workload {
                clients: 8,
                keys: 20,
                ops: 5_000,
                unknown_percent: 0,
            },
        ),
        (
            "5,000 ops, 20 keys, 8 clients, 5% unknown",
            Workload {
                clients: 8,
                keys: 20,
                ops: 5_000,
                unknown_percent: 5,
            },
        ),
        (
            "5,000 ops, 1 key, 8 clients",
            Workload {
                clients: 8,
                keys: 1,
                ops: 5_000,
                unknown_percent: 0,
            },
        ),
        (
            "50,000 ops, 20 keys, 16 clients, 2% unknown",
            Workload {
                clients: 16,
                keys: 20,
                ops: 50_000,
                unknown_percent: 2,
            },
        ),
    ];
    for (name, workload) in cases {
        let mut best = f64::MAX;
        for seed in 0..5 {
            let recorded = Recorded::from_operations(linearizable_history(workload, seed))
                .expect("generated history is well formed");
            let started = Instant::now();
            let verdict = check(&recorded, Budget::default());
            let elapsed = started.elapsed().as_secs_f64();
            assert!(verdict.is_linearizable(), "{name}, seed {seed}: {verdict}");
            best = best.min(elapsed);
        }
        println!("{name}: best of 5 {:.1} ms", best * 1000.0);
    }

    // A violation costs more: the key's search must be exhaustive, and the
    // explanation reruns it on prefixes.
    let workload = Workload {
        clients: 8,
        keys: 20,
        ops: 5_000,
        unknown_percent: 0,
    };
    let mut ops = linearizable_history(workload, 3);
    let gets: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].op == Op::Get && ops[i].outcome.is_known())
        .collect();
    let target = gets[gets.len() / 2];
    ops[target].outcome = Outcome::found("never-written");
    let recorded = Recorded::from_operations(ops).expect("corrupted history is well formed");
    let started = Instant::now();
    let verdict = check(&recorded, Budget::default());
    let elapsed = started.elapsed().as_secs_f64();
    let Verdict::NotLinearizable { explanation, .. } = verdict else {
        panic!("corruption not caught: {verdict}");
    };
    println!(
        "5,000 ops, 20 keys, 8 clients, one phantom read: {:.1} ms to find and explain ({} of {} ops in the excerpt)",
        elapsed * 1000.0,
        explanation.excerpt.len(),
        explanation.key_operations,
    );
}
