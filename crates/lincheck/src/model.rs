//! The operations a client performs on one key, and the outcomes it saw.

use std::fmt;

/// One operation on one key of the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Write `value` unconditionally.
    Put {
        /// The written value; unique among all writes to the key.
        value: String,
    },
    /// Read the current value.
    Get,
    /// Remove the key.
    Delete,
    /// Write `value` only if the key currently holds `expected`.
    ///
    /// The store compares revisions, but a revision names exactly one write
    /// and every write carries a value of its own, so the harness records
    /// the value it read at that revision instead. `None` stands for
    /// revision 0: the key must not exist.
    CompareAndSet {
        /// The value the key must hold, or `None` if it must be absent.
        expected: Option<String>,
        /// The written value; unique among all writes to the key.
        value: String,
    },
}

impl Op {
    /// `Put { value }`.
    pub fn put(value: impl Into<String>) -> Self {
        Self::Put {
            value: value.into(),
        }
    }

    /// `CompareAndSet { expected, value }`.
    pub fn cas(expected: Option<&str>, value: impl Into<String>) -> Self {
        Self::CompareAndSet {
            expected: expected.map(str::to_owned),
            value: value.into(),
        }
    }

    /// The value this operation writes if it takes effect.
    pub fn written_value(&self) -> Option<&str> {
        match self {
            Self::Put { value } | Self::CompareAndSet { value, .. } => Some(value),
            Self::Get | Self::Delete => None,
        }
    }

    /// Whether `outcome` is a result this kind of operation can return.
    pub fn admits(&self, outcome: &Outcome) -> bool {
        match (self, outcome) {
            (_, Outcome::Unknown)
            | (Self::Put { .. }, Outcome::Ok)
            | (Self::Get, Outcome::Found { .. } | Outcome::NotFound)
            | (Self::Delete, Outcome::Deleted | Outcome::NotFound)
            | (Self::CompareAndSet { .. }, Outcome::Ok | Outcome::Conflict) => true,
            (
                Self::Put { .. },
                Outcome::Found { .. } | Outcome::NotFound | Outcome::Deleted | Outcome::Conflict,
            )
            | (Self::Get, Outcome::Ok | Outcome::Deleted | Outcome::Conflict)
            | (Self::Delete, Outcome::Ok | Outcome::Found { .. } | Outcome::Conflict)
            | (
                Self::CompareAndSet { .. },
                Outcome::Found { .. } | Outcome::NotFound | Outcome::Deleted,
            ) => false,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put { value } => write!(f, "put {value:?}"),
            Self::Get => f.write_str("get"),
            Self::Delete => f.write_str("delete"),
            Self::CompareAndSet {
                expected: Some(expected),
                value,
            } => write!(f, "cas {expected:?} -> {value:?}"),
            Self::CompareAndSet {
                expected: None,
                value,
            } => write!(f, "cas <absent> -> {value:?}"),
        }
    }
}

/// What the client learned about an operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A put, or a compare-and-set whose expectation held, was applied.
    Ok,
    /// A get saw `value`.
    Found {
        /// The value read.
        value: String,
    },
    /// A get or delete found no key.
    NotFound,
    /// A delete removed an existing key.
    Deleted,
    /// A compare-and-set's expectation did not hold; nothing was written.
    Conflict,
    /// The client never learned the result (timeout, lost connection,
    /// crashed node). The operation may have taken effect at any point
    /// after its invocation, or never.
    Unknown,
}

impl Outcome {
    /// `Found { value }`.
    pub fn found(value: impl Into<String>) -> Self {
        Self::Found {
            value: value.into(),
        }
    }

    /// Whether the client learned the result.
    pub fn is_known(&self) -> bool {
        !matches!(self, Self::Unknown)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Found { value } => write!(f, "found {value:?}"),
            Self::NotFound => f.write_str("not found"),
            Self::Deleted => f.write_str("deleted"),
            Self::Conflict => f.write_str("conflict"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// Whether a completed operation leaves the key as it found it, so that
/// dropping it from a history can only make the history easier to
/// linearize.
pub(crate) fn is_read_only(op: &Op, outcome: &Outcome) -> bool {
    match (op, outcome) {
        (Op::Get, Outcome::Found { .. } | Outcome::NotFound)
        | (Op::Delete, Outcome::NotFound)
        | (Op::CompareAndSet { .. }, Outcome::Conflict) => true,
        (
            Op::Put { .. } | Op::Get | Op::Delete | Op::CompareAndSet { .. },
            Outcome::Ok
            | Outcome::Found { .. }
            | Outcome::NotFound
            | Outcome::Deleted
            | Outcome::Conflict
            | Outcome::Unknown,
        ) => false,
    }
}
