//! The Raft node: raft-rs's `RawNode` on a durable sled log.
//!
//! - [`storage`] is the log: entries, hard state, configuration and the
//!   latest snapshot's metadata in one sled tree, the snapshot's data in a
//!   second, every write batched and made durable.
//! - [`replica`] owns the `RawNode`, the log and the store's state machine
//!   together and runs the ready cycle; it does no network I/O.
//! - [`logger`] bridges raft-rs's slog output to tracing.

pub mod logger;
pub mod replica;
pub mod storage;
