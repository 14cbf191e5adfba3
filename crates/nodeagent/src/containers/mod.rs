//! The node's container runtime: containers created from images in the
//! node's store, each run by its own `cairn-shim`.
//!
//! cairnd decides what runs; the shim runs it. For each container the
//! agent writes a fully resolved [`runtime::ContainerSpec`] and its own
//! record of the request into `/var/lib/cairn/containers/<name>/` and
//! starts `cairn-shim run --dir <that dir>`, which returns once the
//! container's process runs (or with the reason it could not). From then
//! on the shim owns the container: it captures the logs, applies the
//! restart policy, and keeps doing both while cairnd restarts or is
//! upgraded. cairnd talks to it over the directory's `shim.sock` and,
//! when the shim has gone, reads its last `state.json`.
//!
//! - [`plan`]: a create request parsed into what will run (names, volumes,
//!   capabilities, limits, health timings), every refusal naming the field.
//! - [`manager`]: [`Containers`], the table of containers: create, start,
//!   stop, restart, remove, list, inspect, logs, exec; re-attaching to
//!   running shims when the agent starts; the image holds for prune.
//! - [`health`]: health checks as a sans-IO tracker (Docker's semantics)
//!   and the TCP/HTTP probes, which enter a private network's namespace
//!   on a thread of their own; exec probes go through the shim.

pub mod health;
pub mod manager;
pub mod plan;

pub use manager::{ContainerError, ContainerOptions, Containers};

/// The containers' directory under the agent's state directory.
pub const CONTAINERS_DIR: &str = "containers";
/// Named volumes' directory under the agent's state directory.
pub const VOLUMES_DIR: &str = "volumes";
