//! Recording a history, and the validated history the checker reads.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::model::{Op, Outcome};

/// Names one invocation in a [`History`]; handed back to
/// [`History::complete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(usize);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One operation as the checker sees it: what was asked, what came back,
/// and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The client that issued it (for the reader of an explanation; the
    /// checker does not need clients to be sequential).
    pub client: u64,
    /// The key it touched.
    pub key: String,
    /// What was asked.
    pub op: Op,
    /// What came back.
    pub outcome: Outcome,
    /// When it was invoked.
    pub call: u64,
    /// When its response arrived, or `None` if it never did. For an
    /// [`Outcome::Unknown`] operation this time is only informative: the
    /// request may still take effect later.
    pub ret: Option<u64>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} {} {:?} -> {} [{}, ",
            self.client, self.op, self.key, self.outcome, self.call
        )?;
        match self.ret {
            Some(ret) => write!(f, "{ret}]"),
            None => f.write_str("never]"),
        }
    }
}

/// Why a history cannot be checked: the harness recorded something the
/// model has no meaning for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// [`History::complete`] was called twice for one invocation.
    #[error("operation {id} was completed twice")]
    CompletedTwice {
        /// The invocation.
        id: OpId,
    },
    /// [`History::complete`] got an id this history never handed out.
    #[error("operation {id} was never invoked on this history")]
    NotInvoked {
        /// The stray id.
        id: OpId,
    },
    /// An operation's response precedes its invocation.
    #[error("operation {index} on key {key:?} returns at {ret}, before its invocation at {call}")]
    ReturnBeforeCall {
        /// Position in the operation list.
        index: usize,
        /// Its key.
        key: String,
        /// Invocation time.
        call: u64,
        /// Response time.
        ret: u64,
    },
    /// An operation has a result but no response time.
    #[error("operation {index} on key {key:?} has outcome {outcome} but no response time")]
    OutcomeWithoutReturn {
        /// Position in the operation list.
        index: usize,
        /// Its key.
        key: String,
        /// The recorded outcome.
        outcome: Outcome,
    },
    /// An operation has a result its kind cannot return.
    #[error("operation {index} on key {key:?} ({op}) cannot have outcome {outcome}")]
    OutcomeDoesNotFit {
        /// Position in the operation list.
        index: usize,
        /// Its key.
        key: String,
        /// The operation.
        op: Op,
        /// The recorded outcome.
        outcome: Outcome,
    },
    /// Two writes to one key carry the same value, so a read of that value
    /// (or a compare-and-set expecting it) no longer names one write.
    #[error(
        "operations {first} and {second} both write {value:?} to key {key:?}; every write to a key must carry a distinct value"
    )]
    DuplicateWrite {
        /// Its key.
        key: String,
        /// The repeated value.
        value: String,
        /// Position of the first write in the operation list.
        first: usize,
        /// Position of the second write in the operation list.
        second: usize,
    },
}

/// A thread-safe recorder of invocations and responses.
///
/// Times come from a logical clock inside the recorder: every
/// [`invoke`](Self::invoke) and [`complete`](Self::complete) takes the next
/// tick under the lock. Call `invoke` before the request leaves the client
/// and `complete` after its response arrived; then "A's response was
/// recorded before B's invocation" implies A really finished before B
/// started, which is the only real-time fact linearizability uses. Share it
/// between tasks or threads behind an `Arc`.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Recorder>,
}

#[derive(Debug, Default)]
struct Recorder {
    clock: u64,
    ops: Vec<Operation>,
    completed: Vec<bool>,
    misuse: Option<HistoryError>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Recorder> {
        // A harness task that panicked mid-record leaves the recorder
        // consistent: each method mutates it with a single push or store.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `client` invoked `op` on `key`, and returns the id to
    /// complete it with.
    pub fn invoke(&self, client: u64, key: &str, op: Op) -> OpId {
        let mut rec = self.lock();
        rec.clock += 1;
        let call = rec.clock;
        let id = OpId(rec.ops.len());
        rec.ops.push(Operation {
            client,
            key: key.to_owned(),
            op,
            outcome: Outcome::Unknown,
            call,
            ret: None,
        });
        rec.completed.push(false);
        id
    }

    /// Records the response to invocation `id`. Pass [`Outcome::Unknown`]
    /// when the client gave up (timeout, lost connection): the operation
    /// may still take effect.
    ///
    /// Misuse (an id from another history, or a second completion) is kept
    /// and reported by [`finish`](Self::finish), so harness tasks need not
    /// handle errors.
    pub fn complete(&self, id: OpId, outcome: Outcome) {
        let mut rec = self.lock();
        rec.clock += 1;
        let ret = rec.clock;
        let misuse = match rec.completed.get(id.0).copied() {
            None => Some(HistoryError::NotInvoked { id }),
            Some(true) => Some(HistoryError::CompletedTwice { id }),
            Some(false) => {
                rec.completed[id.0] = true;
                let operation = &mut rec.ops[id.0];
                operation.outcome = outcome;
                operation.ret = Some(ret);
                None
            }
        };
        if rec.misuse.is_none() {
            rec.misuse = misuse;
        }
    }

    /// The history so far; operations not yet completed are
    /// [`Outcome::Unknown`]. Use it when client tasks that may never
    /// finish (stuck behind a partition) still hold the recorder.
    pub fn snapshot(&self) -> Result<Recorded, HistoryError> {
        let rec = self.lock();
        if let Some(misuse) = &rec.misuse {
            return Err(misuse.clone());
        }
        Recorded::from_operations(rec.ops.clone())
    }

    /// The finished history; operations never completed are
    /// [`Outcome::Unknown`].
    pub fn finish(self) -> Result<Recorded, HistoryError> {
        let rec = self
            .inner
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(misuse) = rec.misuse {
            return Err(misuse);
        }
        Recorded::from_operations(rec.ops)
    }
}

/// A validated history, ready for [`check`](crate::check).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    ops: Vec<Operation>,
}

impl Recorded {
    /// Validates operations with caller-provided times, as a simulation
    /// that owns its clock would produce them. Any `u64` time scale works;
    /// an invocation and a response at the same instant count as
    /// overlapping.
    pub fn from_operations(ops: Vec<Operation>) -> Result<Self, HistoryError> {
        let mut writers: HashMap<(&str, &str), usize> = HashMap::new();
        for (index, operation) in ops.iter().enumerate() {
            let key = || operation.key.clone();
            match operation.ret {
                Some(ret) if ret < operation.call => {
                    return Err(HistoryError::ReturnBeforeCall {
                        index,
                        key: key(),
                        call: operation.call,
                        ret,
                    });
                }
                None if operation.outcome.is_known() => {
                    return Err(HistoryError::OutcomeWithoutReturn {
                        index,
                        key: key(),
                        outcome: operation.outcome.clone(),
                    });
                }
                Some(_) | None => {}
            }
            if !operation.op.admits(&operation.outcome) {
                return Err(HistoryError::OutcomeDoesNotFit {
                    index,
                    key: key(),
                    op: operation.op.clone(),
                    outcome: operation.outcome.clone(),
                });
            }
            if let Some(value) = operation.op.written_value()
                && let Some(first) = writers.insert((&operation.key, value), index)
            {
                return Err(HistoryError::DuplicateWrite {
                    key: key(),
                    value: value.to_owned(),
                    first,
                    second: index,
                });
            }
        }
        Ok(Self { ops })
    }

    /// The operations, in recording order.
    pub fn operations(&self) -> &[Operation] {
        &self.ops
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
