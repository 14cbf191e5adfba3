//! Containers on one node: `/v1/containers`.
//!
//! A container is created from an image in the node's store and runs under
//! its own shim, which keeps it running (and restarts it by its policy)
//! whether or not the agent is up. Names are unique per node:
//! `[a-z0-9][a-z0-9_.-]{0,62}`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// `POST /v1/containers`: create a container and start it.
///
/// Unset fields take the image's config (command, environment, working
/// directory, user) or the node's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerCreateRequest {
    /// The container's name on this node.
    pub name: String,
    /// An image in the store: a reference (`redis:7`) or a manifest
    /// digest.
    pub image: String,
    /// Replaces the image's `Cmd` (arguments after the entrypoint).
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's `Entrypoint` (an empty list clears it).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` pairs, added to (and overriding) the image's.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, resolved in the image.
    #[serde(default)]
    pub user: Option<String>,
    /// Named volumes: directories on the node's STATE partition, kept when
    /// the container is removed.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Mount the image's root read-only (volumes stay writable).
    #[serde(default)]
    pub read_only: bool,
    /// The host's network (the default) or a private network namespace
    /// with only loopback.
    #[serde(default)]
    pub network: NetworkMode,
    /// cgroup v2 limits.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities added to the default set (`CAP_NET_ADMIN` or
    /// `NET_ADMIN`).
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Capabilities removed from the default set (`ALL` drops every one).
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// What the node does when the process exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// A probe the agent runs to report the container healthy or not.
    #[serde(default)]
    pub health: Option<HealthCheck>,
    /// The container's hostname (default: its name).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Seconds between the stop signal and SIGKILL; default 10.
    #[serde(default)]
    pub stop_timeout_s: Option<u32>,
    /// The log file's size before it is rotated; default 10 MiB, at least
    /// 4 KiB.
    #[serde(default)]
    pub log_max_bytes: Option<u64>,
    /// Rotated log files kept besides the current one; default 3.
    #[serde(default)]
    pub log_max_files: Option<u32>,
}

/// A named volume mounted into a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's name (`[a-z0-9][a-z0-9_.-]{0,62}`), created on first
    /// use under `/var/lib/cairn/volumes`.
    pub volume: String,
    /// Absolute path inside the container.
    pub path: String,
    /// Mount it read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A container's network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// The node's own network namespace.
    #[default]
    Host,
    /// A new network namespace with loopback only.
    Private,
}

/// cgroup v2 limits; unset means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPU time in thousandths of a CPU (500 = half a CPU).
    #[serde(default)]
    pub cpu_millis: Option<u64>,
    /// Memory in bytes; the kernel kills the container's processes beyond
    /// it (no swap).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Most processes and threads at once.
    #[serde(default)]
    pub pids: Option<u64>,
}

/// When the node restarts a container whose process exited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// never, on_failure or always.
    #[serde(default)]
    pub policy: RestartMode,
    /// With on_failure: give up after this many restarts in a row.
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// The restart policy's mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    /// Leave it exited.
    #[default]
    Never,
    /// Restart after a non-zero exit or a kill by signal.
    OnFailure,
    /// Restart after any exit, unless it was stopped through the API.
    Always,
}

/// A health check: a probe run every interval; `retries` failures in a
/// row make the container unhealthy, one success makes it healthy.
/// Failures during the start period do not count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// What to probe.
    pub probe: HealthProbe,
    /// Milliseconds between probes; default 30,000, at least 100.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// Milliseconds a probe may take; default 5,000.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Failures in a row before unhealthy; default 3, at least 1.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Milliseconds after start during which failures do not count.
    #[serde(default)]
    pub start_period_ms: Option<u64>,
}

/// What a health check probes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthProbe {
    /// Run a command in the container; exit code 0 is healthy.
    Exec {
        /// The command and its arguments.
        command: Vec<String>,
    },
    /// `GET path` on the container's port; a 2xx or 3xx answer is healthy.
    Http {
        /// The TCP port.
        port: u16,
        /// The path, starting with `/`.
        #[serde(default = "root_path")]
        path: String,
    },
    /// A TCP connection to the container's port is accepted.
    Tcp {
        /// The TCP port.
        port: u16,
    },
}

fn root_path() -> String {
    "/".to_owned()
}

/// Where a container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    /// Being set up; not started yet.
    Created,
    /// The process is running.
    Running,
    /// The process exited and the restart policy will start it again
    /// after a backoff.
    Restarting,
    /// The process exited and will not be restarted.
    Exited,
    /// Stopped through the API.
    Stopped,
    /// The container's shim cannot be reached and left no final state
    /// (the message in `error` says why).
    Unknown,
}

/// A container's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// No health check configured.
    None,
    /// Running, with no verdict yet (start period, or no probe done).
    Starting,
    /// The last probe succeeded.
    Healthy,
    /// `retries` probes in a row failed.
    Unhealthy,
}

/// One container in `GET /v1/containers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerSummary {
    /// Its name.
    pub name: String,
    /// The image as asked for at creation.
    pub image: String,
    /// Where it is in its life.
    pub state: ContainerState,
    /// Restarts by the restart policy since it was last started.
    pub restarts: u32,
    /// Its health.
    pub health: HealthStatus,
    /// When it was created.
    pub created: Timestamp,
}

/// `GET /v1/containers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerList {
    /// In name order.
    pub containers: Vec<ContainerSummary>,
}

/// How a container's process last ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExitStatus {
    /// Its exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer killed it (memory limit).
    pub oom_killed: bool,
    /// When.
    pub at: Timestamp,
}

/// One probe's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProbeResult {
    /// When the probe started.
    pub at: Timestamp,
    /// Whether it passed.
    pub ok: bool,
    /// What it said: the exec output's end, the HTTP status, or the error.
    pub output: String,
}

/// A container's health in detail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HealthReport {
    /// The verdict.
    pub status: HealthStatus,
    /// Failed probes in a row.
    pub failing_streak: u32,
    /// The last few probes, oldest first.
    pub probes: Vec<ProbeResult>,
}

/// `GET /v1/containers/{name}`, and the answer to every change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerInfo {
    /// Its name.
    pub name: String,
    /// The image as asked for at creation.
    pub image: String,
    /// The manifest digest the image resolved to at creation.
    pub image_digest: String,
    /// Where it is in its life.
    pub state: ContainerState,
    /// Restarts by the restart policy since it was last started.
    pub restarts: u32,
    /// The container's main process in the node's PID namespace, while
    /// it runs.
    pub pid: Option<u32>,
    /// When it was created.
    pub created: Timestamp,
    /// When its process last started.
    pub started_at: Option<Timestamp>,
    /// When its process last ended.
    pub finished_at: Option<Timestamp>,
    /// How its process last ended.
    pub last_exit: Option<ExitStatus>,
    /// When the restart policy starts it again.
    pub next_restart_at: Option<Timestamp>,
    /// Why it could not be started, or why its state is unknown.
    pub error: Option<String>,
    /// Its health.
    pub health: HealthReport,
    /// The command it runs (entrypoint and arguments), resolved.
    pub command: Vec<String>,
    /// What it was created with.
    pub spec: ContainerCreateRequest,
}

/// `DELETE /v1/containers/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerRemoveQuery {
    /// Stop a running container first instead of refusing.
    #[serde(default)]
    pub force: bool,
}

/// The answer to `DELETE /v1/containers/{name}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerRemoved {
    /// The container removed.
    pub name: String,
}

/// `POST /v1/containers/{name}/stop` and `…/restart`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerStopRequest {
    /// Seconds between the stop signal and SIGKILL; default the
    /// container's own.
    #[serde(default)]
    pub timeout_s: Option<u32>,
}

/// `GET /v1/containers/{name}/logs`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerLogQuery {
    /// Only the last N lines (before following).
    #[serde(default)]
    pub tail: Option<usize>,
    /// Keep the stream open and send lines as they are written.
    #[serde(default)]
    pub follow: bool,
}

/// Which output a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a container's output (an NDJSON line of the logs stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerLogLine {
    /// When the shim read it.
    pub time: Timestamp,
    /// Standard output or error.
    pub stream: LogStream,
    /// The line, without its newline (invalid UTF-8 replaced).
    pub line: String,
}

/// `POST /v1/containers/{name}/exec`: run a command in a running
/// container, as its user, in its namespaces and cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `KEY=VALUE` pairs added to the container's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    #[serde(default)]
    pub workdir: Option<String>,
}

/// One NDJSON line of an exec's answer: output as it comes, then the exit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecFrame {
    /// Bytes of standard output, base64.
    Stdout(String),
    /// Bytes of standard error, base64.
    Stderr(String),
    /// The command ended.
    Exit {
        /// Its exit code, when it exited.
        code: Option<i32>,
        /// The signal that killed it, when one did.
        signal: Option<i32>,
    },
    /// The exec failed; nothing more follows.
    Error {
        /// What went wrong.
        message: String,
    },
}
