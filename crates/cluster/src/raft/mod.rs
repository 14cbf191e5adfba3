//! The Raft node: its durable log on sled and, with it, what raft-rs needs
//! from the application.

pub mod storage;
