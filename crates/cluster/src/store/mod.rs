//! The replicated store's state machine.
//!
//! Everything here is deterministic and free of I/O: [`command`] is what a
//! Raft entry carries, [`key`] the limits outside input is parsed against,
//! and [`state`] the map of keys with revisions, the change history watches
//! resume from, and the member directory. The Raft replica
//! ([`crate::raft::replica`]) applies committed entries to one
//! [`StoreState`] and serves linearizable reads from it.

pub mod command;
pub mod key;
pub mod state;

pub use command::{Command, Expect, Outcome, Proposal, RequestId};
pub use key::{Key, KeyError, MAX_KEY_BYTES, MAX_VALUE_BYTES, Namespace, Value, ValueTooLarge};
pub use state::{Compacted, Event, EventKind, Member, Record, StoreState};
