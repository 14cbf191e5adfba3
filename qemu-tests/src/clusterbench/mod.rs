//! # The cluster benchmark and the multi-process cluster harness
//!
//! The issue asks how the replicated store compares with the store
//! operators know: on loopback, in one run, the same workload against a
//! 3-node Cairn cluster and a 3-node etcd with equivalent durability and
//! security. Both fsync their log before acknowledging (etcd's WAL by
//! default, Cairn's sled log by design), both have three voters, both
//! talk TLS with client certificates, and every client keeps its
//! connection alive. The numbers: write throughput with 1 and 16 clients,
//! p50/p99 write latency, linearizable read throughput, leader failover
//! time, and both systems' disk use, memory and write rate over many
//! writes with compaction, etcd's set to keep as much history as Cairn's
//! (binary `cairn-cluster-bench`).
//!
//! The same harness runs the multi-process kill -9 test
//! (`tests/cluster_processes.rs`): real cairnd processes, SIGKILLed and
//! restarted on their state under a write load.
//!
//! ## Moving parts
//!
//! - [`node`]: one member process across kills and restarts, the set of
//!   members a cluster drives by index, the bounded wait for a cluster
//!   state, the error type, loopback addresses (`127.0.0.<n>`: every
//!   member gets the standard ports on its own address) and disk usage.
//! - [`cairn`]: three cairnd processes, formed into a cluster over the API
//!   the way an operator does it (bootstrap, join token, join).
//! - [`etcd`]: three etcd members with a PKI from the cluster crate.
//! - [`target`]: either one behind one face.
//! - [`kv`]: one write or linearizable read in each system's HTTP dialect
//!   (Cairn's `/v1/kv`, etcd's v3 JSON gateway with [`base64`]), over a
//!   kept-alive mTLS connection.
//! - [`load`]: the closed-loop workload and the failover probe.
//! - [`bulk`]: many writes with disk and memory samples along the way,
//!   for either system.
//! - [`report`]: the table and the JSON, from the same values.
//! - [`binary`]: finds or builds cairnd for the test.
//!
//! Everything runs in a throwaway network namespace
//! ([`crate::apibench::sandbox::BenchNamespace`]), so nothing but the
//! namespace's loopback is ever addressed, and the namespace with every
//! process in it goes away on exit, failure or signal.

pub mod base64;
pub mod binary;
pub mod bulk;
pub mod cairn;
pub mod etcd;
pub mod kv;
pub mod load;
pub mod node;
pub mod report;
pub mod target;
