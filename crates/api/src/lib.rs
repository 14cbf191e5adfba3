//! The Cairn node API as data: what `cairnd` serves on `:7443` and what the
//! `cairn` CLI sends.
//!
//! This crate owns the contract and nothing else. It has no HTTP client or
//! server in it, so both sides (and tests, and the benchmark) agree on one
//! set of types without dragging each other's dependencies along.
//!
//! - [`types`]: request and response bodies. JSON field names are
//!   snake_case everywhere and are meant to be scripted against; new fields
//!   may appear, existing ones keep their names and meaning.
//! - [`ApiError`] and [`ErrorCode`]: every refusal is a JSON object with a
//!   stable machine-readable `code` and a one-sentence `message`.
//! - [`routes`]: the route table. Each route names its method, path, the
//!   least [`Role`] it needs and its body types. The server builds its
//!   router and its authorization from this table, so the two cannot
//!   disagree.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the route table
//!   and the types' JSON schemas. The committed copy (`openapi.json` next
//!   to this crate's manifest) is checked against the code by a test.
//!
//! # Authentication
//!
//! A node that belongs to no cluster is in *maintenance mode*: it serves a
//! self-signed certificate and answers only the routes marked
//! [`routes::Route::maintenance`], which carry the node's setup token in
//! their body. Once it is a member, every route needs a client certificate
//! from the cluster CA; the certificate's organisation (`cairn:admin`,
//! `cairn:operator`, `cairn:reader`) is its [`Role`].

pub mod openapi;
pub mod routes;
pub mod types;

mod error;
mod timestamp;

pub use error::{ApiError, ErrorCode};
pub use routes::{Method, ROUTES, Role, Route};
pub use timestamp::Timestamp;

/// The TCP port of the API.
pub const API_PORT: u16 = 7443;

/// The version of the API, the first segment of every path.
pub const API_VERSION: &str = "v1";

/// The media type of streamed responses (`follow`): one JSON object per
/// line.
pub const NDJSON: &str = "application/x-ndjson";
