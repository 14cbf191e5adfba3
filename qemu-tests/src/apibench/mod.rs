//! # The API benchmark
//!
//! How fast does cairnd answer `GET /v1/node` (what `cairn node info`
//! calls) to mutually authenticated TLS clients, and what does that cost
//! next to a server that does nothing but TLS? The issue asks for p50/p99
//! latency and requests per second with 8 concurrent mTLS clients on
//! loopback, handshakes included, against a TLS-terminating reference in
//! the same run, and cairnd's RSS under that load.
//!
//! ## Moving parts
//!
//! - [`sandbox`]: the real release cairnd runs in a throwaway network
//!   namespace, in maintenance mode with a setup token from its applied
//!   config. The bench bootstraps it over the API (pinning the self-signed
//!   certificate by the fingerprint cairnd prints), then has the admin
//!   issue a reader certificate; the load uses the reader.
//! - [`nginx`]: Debian's nginx in the same namespace, one worker, TLS 1.3
//!   only, the node's own certificate and key from `<state>/pki`, client
//!   certificates verified against the cluster CA, serving the NodeInfo
//!   body cairnd returned from a file.
//! - [`load`] over [`client`] and [`wire`]: closed-loop clients, each
//!   request on a new TCP + TLS connection (or, in the second table,
//!   reusing one); every response must be 200 with a JSON body.
//! - [`fakeinit`]: a stand-in for cairn-init's D-Bus interface, so node
//!   info gets its boot status the way it does on a node.
//! - [`procfs`]: cairnd's and nginx's RSS and CPU time from `/proc`.
//! - [`stats`] and [`report`]: nearest-rank percentiles, medians over
//!   rounds, the table and the JSON.
//!
//! The servers alternate for several rounds so that a burst of other work
//! on the machine hits both; the medians over rounds are what is reported.
//! Server CPU per request is reported beside latency because on a small
//! machine the load generator shares the cores with the server, and CPU
//! time is the number that does not depend on who won the scheduler.

pub mod client;
pub mod fakeinit;
pub mod load;
pub mod nginx;
pub mod procfs;
pub mod report;
pub mod sandbox;
pub mod stats;
pub mod wire;
