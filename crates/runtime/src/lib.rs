//! # runtime: what cairnd and `cairn-shim` agree on
//!
//! Every container on a node is owned by one `cairn-shim` process. cairnd
//! decides *what* should run; the shim runs it, keeps it running and
//! reports on it, and keeps doing so while cairnd is down or being
//! upgraded. This crate is the whole contract between the two, and nothing
//! heavier than serde: cairnd links it without libcontainer, the shim
//! without tokio.
//!
//! ## The container directory
//!
//! Each container has a directory `<root>/<name>/` ([`paths::ContainerDir`];
//! root is [`paths::CONTAINERS_ROOT`] on a node):
//!
//! - `spec.json` — a [`ContainerSpec`], written by cairnd before it starts
//!   the shim. It is fully resolved: the image's unpacked root, the
//!   process (built by [`resolve_process`] from the image config and the
//!   operator's overrides), mounts, limits, capabilities, restart, stop
//!   and log settings. The shim never looks at the image store.
//! - `state.json` — a [`ShimState`], written only by the shim, atomically,
//!   on every transition. cairnd reads it when the shim is gone (the final
//!   state) or when it starts and re-attaches.
//! - `shim.sock` — the control socket ([`protocol`]): `state`, `stop`,
//!   `kill`, `exec`, one JSON request per connection.
//! - `logs/container.log[.N]` — stdout and stderr in the CRI line format,
//!   rotated by size ([`logs`]).
//! - `upper/`, `work/`, `rootfs/`, `bundle/` — the shim's overlay and OCI
//!   bundle ([`bundle::oci_spec`] builds `config.json`).
//!
//! ## Moving parts
//!
//! - [`ContainerName`] and [`Signal`]: parsed once, used everywhere.
//! - [`spec`]: the spec and its `validate()`.
//! - [`state`]: the state file and its atomic store.
//! - [`protocol`]: requests, answers, exec events, and a blocking client.
//! - [`logs`]: the line format, a sans-IO line splitter, the rotating
//!   writer, and the tail reader and follower cairnd serves `ctr logs` from.
//! - [`process`]: [`resolve_process`], Docker's entrypoint/cmd/env/user
//!   rules, reading the image's `/etc/passwd` without leaving its root.
//! - [`bundle`]: the OCI runtime config for a spec (namespaces, runc's
//!   standard mounts and masked paths, capabilities, cgroup v2 limits under
//!   `/cairn/<name>`).
//! - [`restart`]: the restart policy and backoff, sans-IO.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod logs;
pub mod name;
pub mod paths;
pub mod process;
pub mod protocol;
pub mod restart;
pub mod signal;
pub mod spec;
pub mod state;

pub use name::{ContainerName, ContainerNameError};
pub use process::{ProcessOverrides, ResolveError, resolve_process};
pub use signal::Signal;
pub use spec::{
    ContainerSpec, DEFAULT_CAPABILITIES, ImageInfo, LogConfig, Mount, NetworkMode, Process,
    Resources, RestartConfig, RestartPolicy, SpecError, StopConfig, User,
};
pub use state::{ExitRecord, ExitStatus, ShimState, Status};
