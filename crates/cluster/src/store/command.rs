//! What goes into the Raft log, and what applying it answers.
//!
//! A [`Proposal`] is the payload of one normal Raft entry: the command plus
//! the id of the request that proposed it, so the node that proposed it can
//! hand the outcome back to the waiting caller when the entry is applied,
//! whichever node was leader at the time. Entries are encoded with postcard;
//! an entry that does not decode is applied as a no-op and reported, never a
//! panic, because every replica must make the same decision about it.

use serde::{Deserialize, Serialize};

use super::key::Key;

/// Identifies one proposal: the proposing node's Raft id and a sequence
/// number that node never reuses while it runs. A restart starts a new
/// sequence, which is harmless: outcomes are only matched against proposals
/// still waiting in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// Raft id of the node that proposed the entry.
    pub node: u64,
    /// Per-process sequence number on that node.
    pub seq: u64,
}

/// A precondition on a key's current revision, checked when the command is
/// applied (compare-and-set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// No precondition.
    #[default]
    Any,
    /// The key must not exist (`--if-revision 0`).
    Absent,
    /// The key's last modification must be exactly this revision.
    Revision(u64),
}

impl Expect {
    /// The precondition an operator writes as `--if-revision N`: 0 means
    /// "must not exist", as in etcd's `mod_revision == 0`.
    pub fn from_if_revision(if_revision: Option<u64>) -> Self {
        match if_revision {
            None => Self::Any,
            Some(0) => Self::Absent,
            Some(revision) => Self::Revision(revision),
        }
    }

    /// Whether a key whose last modification is `current` (None: absent)
    /// satisfies the precondition.
    pub fn holds(self, current: Option<u64>) -> bool {
        match self {
            Self::Any => true,
            Self::Absent => current.is_none(),
            Self::Revision(revision) => current == Some(revision),
        }
    }
}

/// A state change of the replicated store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create or replace a key's value.
    Put {
        /// The key.
        key: Key,
        /// The new value.
        value: Vec<u8>,
        /// The precondition.
        expect: Expect,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Key,
        /// The precondition.
        expect: Expect,
    },
}

/// The payload of a normal Raft entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Who is waiting for the outcome.
    pub id: RequestId,
    /// What to do.
    pub command: Command,
}

impl Proposal {
    /// The bytes stored in the Raft entry.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain owned data into a Vec cannot fail: postcard only
        // errors on a full fixed buffer or a type it cannot represent, and
        // every field here is representable.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Reads a proposal back from an entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// What applying a [`Command`] did. Every replica computes the same outcome
/// for the same entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The key now holds the value; the store is at `revision`.
    Written {
        /// The revision of this write.
        revision: u64,
    },
    /// The key was removed at `revision`.
    Deleted {
        /// The revision of this delete.
        revision: u64,
    },
    /// Delete of a key that does not exist (nothing changed).
    NotFound,
    /// The precondition failed; nothing changed.
    Conflict {
        /// The key's last modification, or None when it does not exist.
        current: Option<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        // Entries come from the leader's log: a corrupt one must decode to
        // an error the replica can apply as a no-op, never a panic.
        #[test]
        fn proposal_decoding_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)
        ) {
            let _ = Proposal::decode(&bytes);
        }

        #[test]
        fn proposals_round_trip(node in 1..u64::MAX, seq in 0..u64::MAX, value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), revision in proptest::option::of(0..100u64)) {
            let proposal = Proposal {
                id: RequestId { node, seq },
                command: Command::Put {
                    key: Key::new("site/x").unwrap(),
                    value,
                    expect: Expect::from_if_revision(revision),
                },
            };
            proptest::prop_assert_eq!(Proposal::decode(&proposal.encode()).unwrap(), proposal);
        }
    }
}
