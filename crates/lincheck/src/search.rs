//! The per-key search for a linearization (Wing & Gong's algorithm with
//! Lowe's memoisation, as Porcupine runs it).
//!
//! Invocations and responses sit in one doubly linked list in time order.
//! The search walks it from the front: at an invocation it tries to
//! linearize that operation next (apply it to the model state); if that is
//! legal and the pair (set of linearized operations, new state) has not
//! been seen before, it commits, unlinks the operation's two entries and
//! starts again at the front. Reaching a response means that operation
//! must already have been linearized and was not, so the last commitment
//! is undone and the walk resumes after it. The cache is what makes this
//! fast: two interleavings that linearize the same operations into the
//! same state have the same future, so the second is never explored.

use std::collections::HashMap;
use std::collections::HashSet;

use crate::model::{Op, Outcome};

/// One operation of a single key's sub-history, as the search sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec<'a> {
    pub(crate) call: u64,
    /// `None`: the outcome is unknown, so the operation has no deadline
    /// and may also never take effect.
    pub(crate) ret: Option<u64>,
    pub(crate) op: &'a Op,
    pub(crate) outcome: &'a Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SearchResult {
    Linearizable,
    NotLinearizable,
    /// The step budget ran out first.
    Undecided,
}

/// Model state of one key: `ABSENT`, or the id of the write whose value
/// the key holds. Values are unique per write, so the id is the value.
type State = u64;
const ABSENT: State = 0;
/// Every written value no operation reads or expects.
const OPAQUE: State = 1;
const FIRST_OBSERVED: State = 2;
/// A value no write on this key produced: no state ever equals it.
const NEVER: State = State::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Transition {
    Write(State),
    Read(State),
    DeleteExisting,
    DeleteAbsent,
    DeleteEither,
    Swap {
        expected: State,
        value: State,
    },
    Mismatch {
        expected: State,
    },
    MaybeSwap {
        expected: State,
        value: State,
    },
    /// A result the operation cannot return; linearizing it is never legal.
    Impossible,
    /// A read whose result is unknown: legal anywhere, changes nothing.
    Nothing,
}

impl Transition {
    fn of(op: &Op, outcome: &Outcome, ids: &HashMap<&str, State>) -> Self {
        let id = |value: &str| ids.get(value).copied().unwrap_or(NEVER);
        let expected_state = |expected: &Option<String>| expected.as_deref().map_or(ABSENT, id);
        match (op, outcome) {
            (Op::Put { value }, Outcome::Ok | Outcome::Unknown) => Self::Write(id(value)),
            (Op::Get, Outcome::Found { value }) => Self::Read(id(value)),
            (Op::Get, Outcome::NotFound) => Self::Read(ABSENT),
            (Op::Get, Outcome::Unknown) => Self::Nothing,
            (Op::Delete, Outcome::Deleted) => Self::DeleteExisting,
            (Op::Delete, Outcome::NotFound) => Self::DeleteAbsent,
            (Op::Delete, Outcome::Unknown) => Self::DeleteEither,
            (Op::CompareAndSet { expected, value }, Outcome::Ok) => Self::Swap {
                expected: expected_state(expected),
                value: id(value),
            },
            (Op::CompareAndSet { expected, .. }, Outcome::Conflict) => Self::Mismatch {
                expected: expected_state(expected),
            },
            (Op::CompareAndSet { expected, value }, Outcome::Unknown) => Self::MaybeSwap {
                expected: expected_state(expected),
                value: id(value),
            },
            (
                Op::Put { .. },
                Outcome::Found { .. } | Outcome::NotFound | Outcome::Deleted | Outcome::Conflict,
            )
            | (Op::Get, Outcome::Ok | Outcome::Deleted | Outcome::Conflict)
            | (Op::Delete, Outcome::Ok | Outcome::Found { .. } | Outcome::Conflict)
            | (
                Op::CompareAndSet { .. },
                Outcome::Found { .. } | Outcome::NotFound | Outcome::Deleted,
            ) => Self::Impossible,
        }
    }

    fn apply(self, state: State) -> Option<State> {
        match self {
            Self::Write(value) => Some(value),
            Self::Read(seen) => (state == seen).then_some(state),
            Self::DeleteExisting => (state != ABSENT).then_some(ABSENT),
            Self::DeleteAbsent => (state == ABSENT).then_some(ABSENT),
            Self::DeleteEither => Some(ABSENT),
            Self::Swap { expected, value } => (state == expected).then_some(value),
            Self::Mismatch { expected } => (state != expected).then_some(state),
            Self::MaybeSwap { expected, value } => {
                Some(if state == expected { value } else { state })
            }
            Self::Impossible => None,
            Self::Nothing => Some(state),
        }
    }
}

const NIL: usize = usize::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    prev: usize,
    next: usize,
    op: usize,
    is_call: bool,
}

/// Linked list of invocation and response entries; node 0 is the head.
/// Unlinking keeps a node's own pointers, so relinking in reverse order
/// (dancing links) restores the list exactly.
struct Entries {
    nodes: Vec<Node>,
}

impl Entries {
    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }

    fn first(&self) -> usize {
        self.nodes[0].next
    }
}

/// Gives each written value the model state it produces. Values nobody
/// reads or expects all become one `OPAQUE` state: no operation can tell
/// them apart, and merging them lets the cache merge the searches too.
fn intern<'a>(specs: &[Spec<'a>]) -> HashMap<&'a str, State> {
    let mut observed: HashSet<&str> = HashSet::new();
    for spec in specs {
        if let Outcome::Found { value } = spec.outcome {
            observed.insert(value);
        }
        if let Op::CompareAndSet {
            expected: Some(expected),
            ..
        } = spec.op
        {
            observed.insert(expected);
        }
    }
    let mut ids: HashMap<&str, State> = HashMap::new();
    for spec in specs {
        if let Some(value) = spec.op.written_value() {
            let next = if observed.contains(value) {
                State::try_from(ids.len()).map_or(NEVER, |n| n + FIRST_OBSERVED)
            } else {
                OPAQUE
            };
            ids.entry(value).or_insert(next);
        }
    }
    ids
}

/// Searches for a linearization of `specs` (all on one key), trying at
/// most `max_steps` operation applications.
pub(crate) fn search(specs: &[Spec<'_>], max_steps: u64) -> SearchResult {
    search_counting(specs, max_steps).0
}

/// [`search`], also returning how many steps it took.
pub(crate) fn search_counting(specs: &[Spec<'_>], max_steps: u64) -> (SearchResult, u64) {
    let ids = intern(specs);
    let ops: Vec<(Spec<'_>, Transition)> = specs
        .iter()
        .map(|spec| (*spec, Transition::of(spec.op, spec.outcome, &ids)))
        .filter(|(spec, transition)| {
            spec.ret.is_some() || !matches!(transition, Transition::Nothing)
        })
        .collect();

    // Operations with an unknown outcome and the same transition are
    // interchangeable: none has a deadline, each has the same effect. Any
    // linearization using a later-invoked one while an earlier one is
    // unused can swap the two, so the search only ever uses the earliest
    // unused member of each class. Without this, every subset of pending
    // unknown operations is a distinct cache entry.
    let mut classes: HashMap<Transition, usize> = HashMap::new();
    let mut class_of = vec![None; ops.len()];
    let mut rank = vec![0_usize; ops.len()];
    let mut by_call: Vec<usize> = (0..ops.len())
        .filter(|&op| ops[op].0.ret.is_none())
        .collect();
    by_call.sort_by_key(|&op| (ops[op].0.call, op));
    let mut class_sizes: Vec<usize> = Vec::new();
    for op in by_call {
        let next_class = classes.len();
        let class = *classes.entry(ops[op].1).or_insert(next_class);
        if class == class_sizes.len() {
            class_sizes.push(0);
        }
        class_of[op] = Some(class);
        rank[op] = class_sizes[class];
        class_sizes[class] += 1;
    }
    let mut next_unused = vec![0_usize; class_sizes.len()];

    // At equal times invocations sort before responses: such operations
    // count as overlapping, the reading that accepts more histories.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (index, (spec, _)) in ops.iter().enumerate() {
        events.push((spec.call, false, index));
        if let Some(ret) = spec.ret {
            events.push((ret, true, index));
        }
    }
    events.sort_unstable();

    let mut nodes = Vec::with_capacity(events.len() + 1);
    nodes.push(Node {
        prev: NIL,
        next: if events.is_empty() { NIL } else { 1 },
        op: NIL,
        is_call: false,
    });
    let mut call_node = vec![NIL; ops.len()];
    let mut ret_node = vec![NIL; ops.len()];
    for (position, &(_, is_response, op)) in events.iter().enumerate() {
        let node = position + 1;
        nodes.push(Node {
            prev: node - 1,
            next: if node == events.len() { NIL } else { node + 1 },
            op,
            is_call: !is_response,
        });
        if is_response {
            ret_node[op] = node;
        } else {
            call_node[op] = node;
        }
    }
    let mut entries = Entries { nodes };

    // Operations with an unknown outcome have no response entry: the
    // search succeeds once every operation with a known outcome is placed,
    // since the rest can all go last, which is the same as never.
    let mut unplaced_known = ops.iter().filter(|(spec, _)| spec.ret.is_some()).count();
    let mut linearized = vec![0_u64; ops.len().div_ceil(64)];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = ABSENT;
    let mut steps: u64 = 0;
    let mut cursor = entries.first();

    loop {
        if unplaced_known == 0 {
            return (SearchResult::Linearizable, steps);
        }
        let at_response = cursor == NIL || !entries.nodes[cursor].is_call;
        if at_response {
            let Some((node, previous)) = stack.pop() else {
                return (SearchResult::NotLinearizable, steps);
            };
            let op = entries.nodes[node].op;
            linearized[op / 64] &= !(1 << (op % 64));
            if let Some(class) = class_of[op] {
                next_unused[class] -= 1;
            }
            state = previous;
            if ret_node[op] != NIL {
                entries.relink(ret_node[op]);
                unplaced_known += 1;
            }
            entries.relink(node);
            cursor = entries.nodes[node].next;
            continue;
        }

        let op = entries.nodes[cursor].op;
        if class_of[op].is_some_and(|class| next_unused[class] != rank[op]) {
            cursor = entries.nodes[cursor].next;
            continue;
        }
        steps += 1;
        if steps > max_steps {
            return (SearchResult::Undecided, steps);
        }
        // An operation with an unknown outcome that would change nothing
        // here is never tried: using it up as a no-op is no better than
        // leaving it for the end, and would double the cached states.
        let applied = ops[op]
            .1
            .apply(state)
            .filter(|&next| ops[op].0.ret.is_some() || next != state);
        if let Some(next_state) = applied {
            linearized[op / 64] |= 1 << (op % 64);
            if seen.insert((linearized.clone(), next_state)) {
                stack.push((cursor, state));
                state = next_state;
                if let Some(class) = class_of[op] {
                    next_unused[class] += 1;
                }
                entries.unlink(call_node[op]);
                if ret_node[op] != NIL {
                    entries.unlink(ret_node[op]);
                    unplaced_known -= 1;
                }
                cursor = entries.first();
                continue;
            }
            linearized[op / 64] &= !(1 << (op % 64));
        }
        cursor = entries.nodes[cursor].next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(op: &'a Op, outcome: &'a Outcome, call: u64, ret: u64) -> Spec<'a> {
        Spec {
            call,
            ret: Some(ret),
            op,
            outcome,
        }
    }

    #[test]
    fn values_nobody_reads_share_one_state_and_read_values_get_their_own() {
        let (put_a, put_b, put_c, put_d) = (Op::put("a"), Op::put("b"), Op::put("c"), Op::put("d"));
        let cas = Op::cas(Some("c"), "e");
        let (ok, read_b) = (Outcome::Ok, Outcome::found("b"));
        let specs = [
            spec(&put_a, &ok, 1, 2),
            spec(&put_b, &ok, 3, 4),
            spec(&Op::Get, &read_b, 5, 6),
            spec(&put_c, &ok, 7, 8),
            spec(&cas, &Outcome::Conflict, 9, 10),
            spec(&put_d, &ok, 11, 12),
        ];
        let ids = intern(&specs);
        assert_eq!(ids["a"], OPAQUE);
        assert_eq!(ids["d"], OPAQUE);
        assert_eq!(ids["e"], OPAQUE);
        assert!(ids["b"] >= FIRST_OBSERVED && ids["c"] >= FIRST_OBSERVED);
        assert_ne!(ids["b"], ids["c"]);
    }

    #[test]
    fn an_invocation_at_the_instant_of_a_response_overlaps_it() {
        let put = Op::put("a");
        let (ok, absent) = (Outcome::Ok, Outcome::NotFound);
        let touching = [spec(&put, &ok, 1, 5), spec(&Op::Get, &absent, 5, 6)];
        assert_eq!(search(&touching, 100), SearchResult::Linearizable);
        let apart = [spec(&put, &ok, 1, 4), spec(&Op::Get, &absent, 5, 6)];
        assert_eq!(search(&apart, 100), SearchResult::NotLinearizable);
    }
}
