//! The Cairn cluster library.
//!
//! ARCHITECTURE.md gives this crate the Raft node, the replicated typed
//! store, membership, the scheduler and the cluster PKI. The PKI, the Raft
//! replica on its sled log, the peer transport and the store's state machine
//! are here; cairnd does not start a member yet (joining over the API,
//! membership healing and the scheduler come next).
//!
//! # Raft in one paragraph
//!
//! A member is one thread ([`node`]) that owns a [`Replica`](crate::raft::replica::Replica):
//! raft-rs's `RawNode` (pre-vote, check-quorum, 100 ms tick), its durable
//! log ([`storage`](crate::raft::storage), sled, every write flushed and synced
//! before a message that promises it leaves) and the store's state machine
//! ([`store`]: keys with etcd-style revisions, compare-and-set, a bounded
//! change history for watches, the member directory). Members talk over the
//! peer port :7444 ([`transport`]): mTLS with `cairn:node` certificates
//! only, length-capped protobuf frames on one long HTTP/1.1 stream per
//! direction. Writes go through any member (raft-rs forwards proposals to
//! the leader); reads are linearizable through ReadIndex. A new member is
//! added as a learner and caught up by snapshot, then promoted; the member
//! directory changes in the same log entry as Raft's configuration.
//!
//! # The PKI in one paragraph
//!
//! `cairn cluster init` creates one cluster CA (ECDSA P-256). Every node gets
//! a node certificate from it (organisation `cairn:node`), and every operator
//! gets a client certificate whose organisation names their role
//! (`cairn:admin`, `cairn:operator`, `cairn:reader`). TLS peers are trusted
//! only when their chain ends at the cluster CA, and the role a request runs
//! with is read back from the peer certificate's organisation. A joining node
//! pins the CA by its SHA-256 fingerprint (`sha256:<hex>`) before it trusts
//! anything the cluster tells it.
//!
//! # Moving parts
//!
//! - [`pki`] holds the pure parts: creating the CA, issuing certificates
//!   (directly, or by signing a CSR so a private key never leaves the node
//!   that made it), reading a peer's identity back from its certificate, and
//!   fingerprints. None of it touches files, sockets or the clock: callers
//!   pass `now`, which is also how tests make expired certificates.
//! - [`pki::store`] is the thin file layer: it writes the CA and node
//!   material to a directory (on a node, `/var/lib/cairn/pki`) atomically,
//!   keys at mode 0600, and loads it back with errors that name the file.
//! - [`pki::tls`] turns that material into `rustls` server and client
//!   configurations: TLS 1.3 only, the ring provider chosen explicitly, the
//!   cluster CA as the only trust anchor on both sides, client certificates
//!   required by the server.
//! - [`store`] is the deterministic state machine; [`raft`] the replica and
//!   its log; [`node`] the thread and handle the agent uses; [`transport`]
//!   the peer port; [`membership`] the leader's rule for who votes;
//!   [`join`] the join tokens. The last two are pure.
#![forbid(unsafe_code)]

pub mod join;
pub mod membership;
pub mod node;
pub mod pki;
pub mod raft;
pub mod store;
pub mod transport;
