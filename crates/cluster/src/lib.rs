//! The Cairn cluster library.
//!
//! ARCHITECTURE.md gives this crate the Raft node, the replicated typed
//! store, membership, the scheduler and the cluster PKI. This first slice
//! holds the PKI only; Raft and the store arrive with the clustering work
//! and will take their transport certificates from here.
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
#![forbid(unsafe_code)]

pub mod node;
pub mod pki;
pub mod raft;
pub mod store;
pub mod transport;
