//! A linearizability checker for recorded histories of concurrent
//! key-value operations. Tests and benchmarks of the replicated store use
//! it; nothing shipped links it.
//!
//! # What is checked
//!
//! A history is what clients saw: for every operation, when it was invoked,
//! when its response arrived and what the response said. It is
//! *linearizable* if the operations can be put in one sequential order
//! that (a) respects real time — if A's response arrived before B was
//! invoked, A comes first — and (b) gives every operation the result it
//! actually got when run against a plain in-memory map in that order. This
//! is the contract the store promises (Raft log order plus ReadIndex
//! reads), so a history that fails the check is a bug in the store, or in
//! the harness that recorded it.
//!
//! # The model
//!
//! Each key is an independent register that is either absent or holds a
//! value. The operations are [`Op::Put`], [`Op::Get`], [`Op::Delete`] and
//! [`Op::CompareAndSet`]; their results are the [`Outcome`]s `Ok`,
//! `Found`, `NotFound`, `Deleted`, `Conflict`, or `Unknown`.
//!
//! The store's compare-and-set compares *revisions*, and revisions are
//! global counters the model cannot predict. The checker sidesteps them by
//! requiring every write to a key to carry a value no other write to that
//! key carries (harnesses write `"<client>-<seq>"` or similar; recording
//! refuses duplicates with [`HistoryError::DuplicateWrite`]). A revision
//! then names exactly one write and so exactly one value, and a
//! compare-and-set "expecting revision R" is recorded as expecting the
//! value the harness read at R (`expected: None` for revision 0, "must not
//! exist"). The key holds revision R exactly when it holds that value, so
//! the model loses nothing.
//!
//! # Unknown outcomes
//!
//! Under faults a client often never learns what happened: the request
//! timed out, the connection dropped, the node it talked to died. Such an
//! operation is recorded with [`Outcome::Unknown`] (or simply never
//! completed). It may have taken effect at any instant after its
//! invocation — including long after the client gave up — or never. The
//! checker gives it no response deadline and accepts any result for it;
//! placing it after everything else is the same as "never happened". An
//! unknown read constrains nothing and is dropped.
//!
//! # The algorithm
//!
//! A map is linearizable exactly when each key's sub-history is (keys do
//! not interact; linearizability is compositional), so [`check`] splits
//! the history by key and checks each key alone, which keeps every search
//! small. Per key it runs the Wing & Gong depth-first search over
//! linearization orders, with Lowe's memoisation as Porcupine implements
//! it: a set of (operations linearized so far, register state) pairs
//! already explored, so equivalent interleavings are searched once.
//!
//! Three reductions keep that set small. Written values that no operation
//! reads or expects are indistinguishable, so they share one model state;
//! every other value is a small integer. Operations with unknown outcomes
//! that would do the same thing (two deletes, two puts of unread values)
//! are interchangeable, so the search only ever uses the earliest invoked
//! one that is still unused. And an operation with an unknown outcome is
//! never placed where it would change nothing (a compare-and-set whose
//! expectation fails, a delete of an absent key): that is no different
//! from it never happening.
//!
//! # Cost, and the budget
//!
//! Showing a history linearizable needs one good order, which the search
//! usually finds straight away: 5,000 operations over 20 keys from 8
//! clients check in a few milliseconds. Showing a violation means ruling
//! out every order of the failing key, which costs more, and costs most
//! when that key has many operations with unknown outcomes: each one may
//! or may not have happened, at any later time. Short per-key histories
//! (spread a workload over a dozen keys or more) keep both cheap.
//!
//! The search is exponential in the worst case, so [`Budget`] caps the
//! number of steps (operation applications tried) per key; a key that
//! exhausts it yields [`Verdict::Undecided`] instead of a hang. A
//! non-linearizable key anywhere wins over an undecided one. A harness
//! should treat `Undecided` as a failure to look into, not as a pass.
//!
//! # Explanations
//!
//! For a failing key, [`Explanation`] holds the *culprit* — the response
//! after which the key's history first has no linearization — and an
//! excerpt: every write invoked before that response and only the reads
//! needed to prove the violation. The excerpt is itself a
//! non-linearizable history; its `Display` prints it as a table.
//!
//! # Recording
//!
//! ```
//! use lincheck::{Budget, History, Op, Outcome, Verdict, check};
//!
//! let history = History::new(); // share as Arc<History> across tasks
//! let put = history.invoke(1, "k", Op::put("c1-1"));
//! // ... send the request, await the response ...
//! history.complete(put, Outcome::Ok);
//! let get = history.invoke(2, "k", Op::Get);
//! history.complete(get, Outcome::found("c1-1"));
//! let timed_out = history.invoke(3, "k", Op::Delete);
//! history.complete(timed_out, Outcome::Unknown);
//!
//! let recorded = history.finish()?;
//! assert_eq!(check(&recorded, Budget::default()), Verdict::Linearizable);
//! # Ok::<(), lincheck::HistoryError>(())
//! ```
//!
//! [`History`] stamps invocations and responses with a logical clock
//! under its lock, so "call `invoke` before sending, `complete` after the
//! response arrived" is all a harness must get right. Operations never
//! completed (a client task stuck behind a partition) count as unknown;
//! [`History::snapshot`] reads the history while such tasks still hold it.
//! Simulations with their own clock build a history directly with
//! [`Recorded::from_operations`].

#![forbid(unsafe_code)]

mod explain;
mod history;
mod model;
mod search;

use std::collections::BTreeMap;
use std::fmt;

pub use explain::Explanation;
pub use history::{History, HistoryError, OpId, Operation, Recorded};
pub use model::{Op, Outcome};

use search::{SearchResult, search};

/// How much work the search may do before giving up on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    steps_per_key: u64,
}

impl Budget {
    /// No limit: the search runs to a verdict, however long that takes.
    pub const UNLIMITED: Self = Self {
        steps_per_key: u64::MAX,
    };

    /// At most `steps` operation applications per key. A linearizable key
    /// with few concurrent clients needs a few steps per operation.
    pub const fn steps_per_key(steps: u64) -> Self {
        Self {
            steps_per_key: steps,
        }
    }
}

impl Default for Budget {
    /// Five million steps per key: at worst about two seconds of search
    /// per key in a release build, twenty in a debug build.
    fn default() -> Self {
        Self::steps_per_key(5_000_000)
    }
}

/// The checker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history has a linearization.
    Linearizable,
    /// `key`'s sub-history has none (the first such key in key order).
    NotLinearizable {
        /// The key.
        key: String,
        /// Which operations prove it.
        explanation: Explanation,
    },
    /// No key failed, but the search on `key` (the first such key in key
    /// order) ran out of budget.
    Undecided {
        /// The key.
        key: String,
    },
}

impl Verdict {
    /// Whether the history was shown linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Self::Linearizable)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linearizable => f.write_str("linearizable"),
            Self::NotLinearizable { explanation, .. } => {
                write!(f, "not linearizable: {explanation}")
            }
            Self::Undecided { key } => {
                write!(f, "undecided: the search on key {key:?} ran out of budget")
            }
        }
    }
}

/// Checks whether `history` is linearizable, key by key.
pub fn check(history: &Recorded, budget: Budget) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in history.operations() {
        by_key.entry(&operation.key).or_default().push(operation);
    }
    let mut undecided = None;
    for (key, ops) in by_key {
        let specs: Vec<_> = ops
            .iter()
            .map(|operation| explain::spec(operation))
            .collect();
        match search(&specs, budget.steps_per_key) {
            SearchResult::Linearizable => {}
            SearchResult::NotLinearizable => {
                return Verdict::NotLinearizable {
                    key: key.to_owned(),
                    explanation: explain::explain(key, &ops, budget),
                };
            }
            SearchResult::Undecided => {
                undecided.get_or_insert(key);
            }
        }
    }
    match undecided {
        Some(key) => Verdict::Undecided {
            key: key.to_owned(),
        },
        None => Verdict::Linearizable,
    }
}
