//! Cutting a non-linearizable sub-history down to an excerpt a person can
//! check by hand.
//!
//! Two reductions keep the excerpt non-linearizable on its own:
//!
//! - *Prefix cut.* Take every operation invoked up to time `T`, treating
//!   those still running at `T` as unknown. Any linearization of the whole
//!   history, restricted to these operations, linearizes the prefix: the
//!   operations finished by `T` precede everything invoked later, and the
//!   ones running at `T` accept any result. So a prefix with no
//!   linearization proves the whole history has none, and the property is
//!   monotone in `T`; binary search finds the earliest response `T` at
//!   which it fails. That response belongs to the culprit.
//! - *Dropping reads.* An operation that leaves the key unchanged (a get, a
//!   delete that found nothing, a compare-and-set that conflicted) can be
//!   removed from any linearization without disturbing the rest, so if the
//!   history without it still fails, it was not needed.
//!
//! Writes are never dropped: removing one changes what every later read
//! may legally see.

use std::fmt;

use crate::Budget;
use crate::history::Operation;
use crate::model::{Op, Outcome, is_read_only};
use crate::search::{SearchResult, Spec, search_counting};

/// How many trial searches read-dropping may spend on one explanation.
const MAX_DROP_TRIALS: usize = 256;
/// All trial searches of one explanation together get this many times
/// the per-key budget, so explaining never costs much more than finding.
const EXPLANATION_BUDGETS: u64 = 4;
/// How many excerpt rows [`Explanation`]'s `Display` prints.
const MAX_ROWS: usize = 40;

static UNKNOWN: Outcome = Outcome::Unknown;

/// Why a key's sub-history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The key.
    pub key: String,
    /// The operation whose response made the history impossible: the
    /// history up to that response has no linearization.
    pub culprit: Operation,
    /// A non-linearizable excerpt of the key's history, in invocation
    /// order: every write invoked up to the culprit's response, and the
    /// reads needed to show the violation. Checked on its own, it is still
    /// not linearizable.
    pub excerpt: Vec<Operation>,
    /// How many operations the key's full history has.
    pub key_operations: usize,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {:?}: no order of these {} operations (of {} on the key) explains their results; \
             the culprit is the response at {} (operations still running then may take effect or not)",
            self.key,
            self.excerpt.len(),
            self.key_operations,
            self.culprit
                .ret
                .map_or_else(|| "?".to_owned(), |t| t.to_string()),
        )?;
        if let Some(value) = never_written(&self.culprit, &self.excerpt) {
            writeln!(
                f,
                "the culprit relies on value {value:?}, which no operation on this key wrote"
            )?;
        }
        let skipped = self.excerpt.len().saturating_sub(MAX_ROWS);
        if skipped > 0 {
            writeln!(f, "  ... {skipped} earlier operations omitted")?;
        }
        writeln!(
            f,
            "  {:>8} {:>8} {:>6}  {:<40} outcome",
            "call", "return", "client", "operation"
        )?;
        for operation in &self.excerpt[skipped..] {
            let ret = operation
                .ret
                .map_or_else(|| "-".to_owned(), |t| t.to_string());
            let marker = if *operation == self.culprit {
                "   <- culprit"
            } else {
                ""
            };
            writeln!(
                f,
                "  {:>8} {:>8} {:>6}  {:<40} {}{marker}",
                operation.call,
                ret,
                operation.client,
                operation.op.to_string(),
                operation.outcome,
            )?;
        }
        Ok(())
    }
}

/// The value the culprit read or expected if no operation wrote it.
fn never_written<'a, 'b>(
    culprit: &'a Operation,
    others: impl IntoIterator<Item = &'b Operation>,
) -> Option<&'a str> {
    let relied_on = match (&culprit.op, &culprit.outcome) {
        (Op::Get, Outcome::Found { value })
        | (
            Op::CompareAndSet {
                expected: Some(value),
                ..
            },
            Outcome::Ok,
        ) => value.as_str(),
        (
            Op::Put { .. } | Op::Get | Op::Delete | Op::CompareAndSet { .. },
            Outcome::Ok
            | Outcome::Found { .. }
            | Outcome::NotFound
            | Outcome::Deleted
            | Outcome::Conflict
            | Outcome::Unknown,
        ) => return None,
    };
    let written = others
        .into_iter()
        .any(|operation| operation.op.written_value() == Some(relied_on));
    (!written).then_some(relied_on)
}

/// The search's view of one operation of the full history.
pub(crate) fn spec(operation: &Operation) -> Spec<'_> {
    Spec {
        call: operation.call,
        ret: if operation.outcome.is_known() {
            operation.ret
        } else {
            None
        },
        op: &operation.op,
        outcome: &operation.outcome,
    }
}

/// Whether `operation` takes part in the prefix cut at `cut`, and how.
fn prefix_spec(operation: &Operation, cut: u64) -> Option<Spec<'_>> {
    if operation.call > cut {
        return None;
    }
    let full = spec(operation);
    match full.ret {
        Some(ret) if ret <= cut => Some(full),
        Some(_) | None => Some(Spec {
            ret: None,
            outcome: &UNKNOWN,
            ..full
        }),
    }
}

/// Whether the prefix cut at `cut`, without the `dropped` operations, is
/// shown non-linearizable within what is left of `remaining` steps (an
/// undecided trial counts as "not shown").
fn fails(ops: &[&Operation], cut: u64, dropped: &[bool], remaining: &mut u64) -> bool {
    let specs: Vec<Spec<'_>> = ops
        .iter()
        .zip(dropped)
        .filter(|(_, dropped)| !**dropped)
        .filter_map(|(operation, _)| prefix_spec(operation, cut))
        .collect();
    let (result, steps) = search_counting(&specs, *remaining);
    *remaining = remaining.saturating_sub(steps);
    result == SearchResult::NotLinearizable
}

/// Drops reads in halving chunks (delta debugging): a violation usually
/// needs one or two reads, so most chunks go at once and the number of
/// trial searches stays near `needed * log(reads)` rather than `reads`.
struct Dropper<'a, 'o> {
    ops: &'a [&'o Operation],
    cut: u64,
    remaining: &'a mut u64,
    dropped: &'a mut [bool],
    trials: usize,
}

impl Dropper<'_, '_> {
    fn drop_unneeded(&mut self, chunk: &[usize]) {
        if chunk.is_empty() || self.trials >= MAX_DROP_TRIALS || *self.remaining == 0 {
            return;
        }
        self.trials += 1;
        for &index in chunk {
            self.dropped[index] = true;
        }
        if fails(self.ops, self.cut, self.dropped, self.remaining) {
            return;
        }
        for &index in chunk {
            self.dropped[index] = false;
        }
        if let [_, _, ..] = chunk {
            let (first, second) = chunk.split_at(chunk.len() / 2);
            self.drop_unneeded(first);
            self.drop_unneeded(second);
        }
    }
}

/// Explains why `ops` (one key's whole sub-history, already found not
/// linearizable) has no linearization.
pub(crate) fn explain(key: &str, ops: &[&Operation], budget: Budget) -> Explanation {
    let mut cuts: Vec<u64> = ops
        .iter()
        .filter_map(|operation| spec(operation).ret)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut dropped = vec![false; ops.len()];
    let mut remaining = budget.steps_per_key.saturating_mul(EXPLANATION_BUDGETS);

    // The last response is a valid cut unless the search ran out of budget
    // on it; then the excerpt is the whole key, which is known to fail.
    let cut = match cuts.last() {
        Some(&last) if fails(ops, last, &dropped, &mut remaining) => {
            let (mut lo, mut hi) = (0, cuts.len() - 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if fails(ops, cuts[mid], &dropped, &mut remaining) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            Some(cuts[lo])
        }
        Some(_) | None => None,
    };

    let culprit_index = ops
        .iter()
        .enumerate()
        .filter(|(_, operation)| {
            let ret = spec(operation).ret;
            ret.is_some() && (cut.is_none() || ret == cut)
        })
        .max_by_key(|(index, operation)| (operation.ret, *index))
        .map_or(0, |(index, _)| index);

    if let Some(cut) = cut {
        let candidates: Vec<usize> = (0..ops.len())
            .filter(|&index| {
                let operation = ops[index];
                index != culprit_index
                    && spec(operation).ret.is_some_and(|ret| ret <= cut)
                    && is_read_only(&operation.op, &operation.outcome)
            })
            .collect();
        let mut dropper = Dropper {
            ops,
            cut,
            remaining: &mut remaining,
            dropped: &mut dropped,
            trials: 0,
        };
        dropper.drop_unneeded(&candidates);
    }

    let mut excerpt: Vec<Operation> = ops
        .iter()
        .zip(&dropped)
        .filter(|(operation, dropped)| {
            // Reads still running at the cut played no part in the proof.
            let needed = match cut {
                None => true,
                Some(cut) => {
                    operation.call <= cut
                        && (operation.op.written_value().is_some()
                            || matches!(operation.op, Op::Delete)
                            || spec(operation).ret.is_some_and(|ret| ret <= cut))
                }
            };
            needed && !**dropped
        })
        .map(|(operation, _)| (*operation).clone())
        .collect();
    excerpt.sort_by_key(|operation| (operation.call, operation.ret));
    // A read of a value no operation on the key wrote fails in any
    // context, so it is a counterexample on its own.
    if never_written(ops[culprit_index], ops.iter().copied()).is_some() {
        excerpt = vec![ops[culprit_index].clone()];
    }

    Explanation {
        key: key.to_owned(),
        culprit: ops[culprit_index].clone(),
        excerpt,
        key_operations: ops.len(),
    }
}
