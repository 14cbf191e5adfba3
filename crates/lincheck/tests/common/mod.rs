//! Generates histories of a correct key-value register under random
//! concurrency, for the property tests and the benchmark.
//!
//! Each client issues operations one after another on random keys. Every
//! operation gets a random linearization point inside its interval, and
//! outcomes are computed by running the operations on a plain map in
//! linearization-point order, so the history is linearizable by
//! construction. Faulty operations get `Unknown` outcomes; half of them
//! take effect (possibly after the client gave up), half never do.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

pub mod dump;

use std::collections::HashMap;

use lincheck::{Op, Operation, Outcome};

/// splitmix64: tiny, deterministic, good enough to drive a simulation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn index(&mut self, len: usize) -> usize {
        usize::try_from(self.below(len as u64)).expect("index fits usize")
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub clients: u64,
    pub keys: usize,
    pub ops: usize,
    /// Percentage of operations whose outcome the client never learns.
    pub unknown_percent: u64,
}

/// A linearizable history of `workload`, deterministic in `seed`.
pub fn linearizable_history(workload: Workload, seed: u64) -> Vec<Operation> {
    let mut rng = Rng::new(seed);
    let clients = workload.clients.max(1);
    let mut clock = vec![0_u64; usize::try_from(clients).expect("few clients")];
    let mut written: Vec<Vec<String>> = vec![Vec::new(); workload.keys.max(1)];
    // (operation, linearization point or None if it never takes effect,
    // whether the client learns the outcome)
    let mut planned: Vec<(Operation, Option<u64>, bool)> = Vec::with_capacity(workload.ops);

    for seq in 0..workload.ops {
        let client = rng.below(clients);
        let slot = usize::try_from(client).expect("few clients");
        let key = rng.index(written.len());
        let op = match rng.below(10) {
            0..=2 => Op::put(format!("c{client}-{seq}")),
            3..=5 => Op::Get,
            6 => Op::Delete,
            _ => {
                let history = &written[key];
                let expected = if history.is_empty() || rng.chance(15) {
                    None
                } else {
                    // Mostly recent values, so a fair share succeeds.
                    let back = rng.index(history.len().min(3));
                    Some(history[history.len() - 1 - back].clone())
                };
                Op::CompareAndSet {
                    expected,
                    value: format!("c{client}-{seq}"),
                }
            }
        };
        if let Some(value) = op.written_value() {
            written[key].push(value.to_owned());
        }

        // Times of different clients never coincide: raw * clients + client.
        let start = clock[slot] + 1 + rng.below(5);
        let end = start + rng.below(20);
        clock[slot] = end;
        let call = start * clients + client;
        let ret = end * clients + client;
        let unknown = rng.chance(workload.unknown_percent);
        let point = if !unknown {
            Some(call + rng.below(ret - call + 1))
        } else if rng.chance(50) {
            // A request can outlive the client's patience.
            Some(call + rng.below(ret - call + 1 + 40 * clients))
        } else {
            None
        };
        planned.push((
            Operation {
                client,
                key: format!("key-{key}"),
                op,
                outcome: Outcome::Unknown,
                call,
                // A faulty client either records its timeout or never
                // completes the operation at all.
                ret: if unknown && rng.chance(50) {
                    None
                } else {
                    Some(ret)
                },
            },
            point,
            !unknown,
        ));
    }

    let mut order: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].1.is_some())
        .collect();
    order.sort_by_key(|&i| planned[i].1);
    let mut store: HashMap<String, String> = HashMap::new();
    for index in order {
        let (operation, _, learned) = &mut planned[index];
        let current = store.get(&operation.key).cloned();
        let outcome = match &operation.op {
            Op::Put { value } => {
                store.insert(operation.key.clone(), value.clone());
                Outcome::Ok
            }
            Op::Get => current.map_or(Outcome::NotFound, Outcome::found),
            Op::Delete => match current {
                Some(_) => {
                    store.remove(&operation.key);
                    Outcome::Deleted
                }
                None => Outcome::NotFound,
            },
            Op::CompareAndSet { expected, value } => {
                if current == *expected {
                    store.insert(operation.key.clone(), value.clone());
                    Outcome::Ok
                } else {
                    Outcome::Conflict
                }
            }
        };
        if *learned {
            operation.outcome = outcome;
        }
    }
    planned
        .into_iter()
        .map(|(operation, _, _)| operation)
        .collect()
}
