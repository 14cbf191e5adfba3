//! `cairn`, the Cairn command-line client.
//!
//! An operator uses it from a laptop to turn a freshly booted node into a
//! cluster (`cairn cluster init`), to grow it (`cluster token create`, then
//! `node join` on a new node in maintenance mode), to watch and shrink it
//! (`cluster status`, `node remove`), to keep site configuration in its
//! replicated key-value store (`kv put|get|del|list|watch`), and to manage
//! nodes over mutually authenticated TLS (`cairn node info`, `logs`,
//! `config apply`, `reboot --wait`, ...). The crate is split so that every
//! decision can be tested without a network:
//!
//! - [`args`]: the command line (clap derive). Global flags `--context`,
//!   `--endpoint/-e`, `--output/-o`, `--config`.
//! - [`config`]: the CLI's config file, a set of named *contexts* (endpoints,
//!   the cluster CA, a client certificate and its key, all PEM inline) and
//!   the current one. Parsing, validation and context resolution are pure;
//!   `load` and `save` are the only file I/O, and `save` writes atomically
//!   with mode 0600 because the file holds private keys.
//! - [`tls`]: the two trust modes. A cluster member is verified against the
//!   context's CA with the endpoint's host as server name, and the client
//!   presents its certificate. A node in maintenance mode has only a
//!   self-signed certificate, so `cluster init` pins it by the SHA-256 of
//!   that certificate (`--fingerprint`), still checking the handshake
//!   signature; without a pin it trusts on first use and says so.
//! - [`client`]: a thin reqwest client (rustls with the ring provider, TLS
//!   1.3 only) that calls routes by their operation id from
//!   [`api::ROUTES`], so method and path come from the shared contract. A
//!   [`client::Call`] fills the path's `{name}` placeholders (one
//!   percent-encoded segment each) and form-encodes the API's own query
//!   types, so a kv key reaches the node byte for byte.
//! - [`failure`]: turns every error, including rustls and socket errors
//!   buried in reqwest's chain and the node's [`api::ApiError`]s, into one
//!   sentence and a documented exit code. It never prints a debug dump.
//!   A missing key or member and a failed `--if-revision` get their own
//!   code (7), so compare-and-set scripts can tell "try again" from
//!   "broken".
//! - [`output`]: renders answers as aligned tables or as the API types in
//!   JSON (one object per command; NDJSON for logs and kv watch).
//! - [`wait`]: the `reboot --wait` poller as a sans-IO state machine fed
//!   with observations and elapsed time.
//! - [`ndjson`], [`duration`], [`endpoint`]: small parsers, each parsed
//!   once into a newtype.
//!
//! `main` only parses arguments, builds a current-thread tokio runtime,
//! calls [`run`] and maps the error to an exit code.
#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod config;
pub mod duration;
pub mod endpoint;
pub mod failure;
pub mod ndjson;
pub mod output;
pub mod quantity;
pub mod tls;
pub mod wait;

mod run;

pub use run::run;
