//! `spec.json`: what cairnd wants run, fully resolved.

use crate::name::ContainerName;
use crate::signal::Signal;
use oci_spec::runtime::Capability;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// Everything the shim needs to run one container. cairnd writes it to
/// `<dir>/spec.json` before starting the shim; the shim only reads it and
/// never looks anything up in the image store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ContainerSpec {
    pub name: ContainerName,
    pub image: ImageInfo,
    /// The image's unpacked root (the overlay's read-only lower dir). The
    /// shim never writes into it.
    pub rootfs: PathBuf,
    pub process: Process,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub read_only_rootfs: bool,
    #[serde(default)]
    pub network: NetworkMode,
    /// The UTS hostname; `None` keeps the host's name (host network) or
    /// uses the container name (private network).
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub resources: Resources,
    /// The process's final capability set (bounding, effective, permitted;
    /// inheritable and ambient stay empty).
    pub capabilities: Vec<Capability>,
    #[serde(default)]
    pub restart: RestartConfig,
    #[serde(default)]
    pub stop: StopConfig,
    #[serde(default)]
    pub logs: LogConfig,
}

/// Which image the root came from (for `ctr inspect` and image holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ImageInfo {
    pub reference: String,
    pub manifest_digest: String,
}

/// The container's process (see [`crate::resolve_process`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Process {
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Absolute path inside the container.
    pub cwd: String,
    pub user: User,
    #[serde(default = "yes")]
    pub no_new_privileges: bool,
}

fn yes() -> bool {
    true
}

/// Numeric ids, already resolved through the image's `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// A bind mount from the host (volumes are resolved by cairnd to
/// directories under `/var/lib/cairn/volumes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Mount {
    pub source: PathBuf,
    pub destination: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// Host network (the default), or a new network namespace holding only
/// `lo`, up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    #[default]
    Host,
    Private,
}

/// cgroup v2 limits; `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Resources {
    /// 1000 = one CPU (cpu.max quota per 100 ms period).
    #[serde(default)]
    pub cpu_millis: Option<u64>,
    /// memory.max; swap is turned off (memory.swap.max 0) when set.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// pids.max.
    #[serde(default)]
    pub pids: Option<u64>,
}

/// When the shim restarts the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    #[default]
    Never,
    /// After a non-zero exit or a signal, up to `max_retries` times.
    OnFailure,
    /// After every exit, until stopped.
    Always,
}

/// Restart policy and its backoff (doubling from `backoff_initial_ms` to
/// `backoff_max_ms`; reset after 10 s of good running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct RestartConfig {
    pub policy: RestartPolicy,
    /// Only for `on_failure`; `None` is unlimited.
    #[serde(default)]
    pub max_retries: Option<u32>,
    #[serde(default = "RestartConfig::default_initial")]
    pub backoff_initial_ms: u64,
    #[serde(default = "RestartConfig::default_max")]
    pub backoff_max_ms: u64,
}

impl RestartConfig {
    fn default_initial() -> u64 {
        100
    }

    fn default_max() -> u64 {
        10_000
    }
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::Never,
            max_retries: None,
            backoff_initial_ms: Self::default_initial(),
            backoff_max_ms: Self::default_max(),
        }
    }
}

/// How `stop` ends the container: `signal`, then SIGKILL after
/// `timeout_s` (the stop request may give its own timeout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct StopConfig {
    pub signal: Signal,
    pub timeout_s: u64,
}

impl Default for StopConfig {
    fn default() -> Self {
        Self {
            signal: Signal::TERM,
            timeout_s: 10,
        }
    }
}

/// Size-capped log rotation: `container.log` is rotated when it would
/// exceed `max_bytes`, keeping `container.log.1` … `.max_files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct LogConfig {
    pub max_bytes: u64,
    pub max_files: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            max_files: 3,
        }
    }
}

/// The default capability set: Docker's default minus `CAP_NET_RAW` and
/// `CAP_MKNOD` (no raw sockets for spoofing, no device nodes; an image that
/// needs them asks with `--cap-add`).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::Setfcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// A rule of [`ContainerSpec::validate`] that a spec breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{field} must be an absolute path without '..' (got {path:?})")]
    NotAbsolute { field: &'static str, path: PathBuf },
    #[error("process.args is empty")]
    NoArgs,
    #[error("environment entry {0:?} has no '='")]
    BadEnv(String),
    #[error("hostname {0:?} is not a valid host name")]
    BadHostname(String),
    #[error("logs.max_bytes {0} is below the minimum of 4096")]
    LogTooSmall(u64),
    #[error("logs.max_files must be at least 1")]
    NoLogFiles,
    #[error("restart backoff_initial_ms {initial} exceeds backoff_max_ms {max}")]
    Backoff { initial: u64, max: u64 },
    #[error("resources.{field} must be positive")]
    ZeroLimit { field: &'static str },
    #[error("mount destination {0:?} is mounted twice")]
    DuplicateMount(PathBuf),
}

fn clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// RFC 1123 labels, at most 63 bytes in all (the UTS limit is 64).
fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl ContainerSpec {
    /// Checks the rules that span fields or that serde cannot express.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self) -> Result<(), SpecError> {
        let absolute = |field: &'static str, path: &Path| {
            if clean_absolute(path) {
                Ok(())
            } else {
                Err(SpecError::NotAbsolute {
                    field,
                    path: path.to_owned(),
                })
            }
        };
        absolute("rootfs", &self.rootfs)?;
        absolute("process.cwd", Path::new(&self.process.cwd))?;
        if self.process.args.is_empty() {
            return Err(SpecError::NoArgs);
        }
        if let Some(bad) = self.process.env.iter().find(|e| !e.contains('=')) {
            return Err(SpecError::BadEnv(bad.clone()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for mount in &self.mounts {
            absolute("mounts.source", &mount.source)?;
            absolute("mounts.destination", &mount.destination)?;
            if !seen.insert(mount.destination.clone()) {
                return Err(SpecError::DuplicateMount(mount.destination.clone()));
            }
        }
        if let Some(host) = &self.hostname
            && !valid_hostname(host)
        {
            return Err(SpecError::BadHostname(host.clone()));
        }
        if self.logs.max_bytes < 4096 {
            return Err(SpecError::LogTooSmall(self.logs.max_bytes));
        }
        if self.logs.max_files == 0 {
            return Err(SpecError::NoLogFiles);
        }
        if self.restart.backoff_initial_ms > self.restart.backoff_max_ms {
            return Err(SpecError::Backoff {
                initial: self.restart.backoff_initial_ms,
                max: self.restart.backoff_max_ms,
            });
        }
        for (field, value) in [
            ("cpu_millis", self.resources.cpu_millis),
            ("memory_bytes", self.resources.memory_bytes),
            ("pids", self.resources.pids),
        ] {
            if value == Some(0) {
                return Err(SpecError::ZeroLimit { field });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> ContainerSpec {
        ContainerSpec {
            name: ContainerName::try_from("web").expect("name"),
            image: ImageInfo {
                reference: "busybox:latest".into(),
                manifest_digest: format!("sha256:{}", "a".repeat(64)),
            },
            rootfs: "/var/lib/cairn/images/layers/abc".into(),
            process: Process {
                args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["PATH=/bin".into()],
                cwd: "/".into(),
                user: User::default(),
                no_new_privileges: true,
            },
            mounts: vec![Mount {
                source: "/var/lib/cairn/volumes/data".into(),
                destination: "/data".into(),
                read_only: false,
            }],
            read_only_rootfs: false,
            network: NetworkMode::Private,
            hostname: Some("web".into()),
            resources: Resources {
                cpu_millis: Some(500),
                memory_bytes: Some(64 << 20),
                pids: Some(100),
            },
            capabilities: DEFAULT_CAPABILITIES.to_vec(),
            restart: RestartConfig {
                policy: RestartPolicy::OnFailure,
                max_retries: Some(3),
                backoff_initial_ms: 100,
                backoff_max_ms: 1000,
            },
            stop: StopConfig::default(),
            logs: LogConfig::default(),
        }
    }

    #[test]
    fn a_spec_round_trips_through_snake_case_json() {
        let spec = sample();
        let json = serde_json::to_value(&spec).expect("serialize");
        assert_eq!(json["restart"]["policy"], "on_failure");
        assert_eq!(json["network"], "private");
        assert_eq!(json["stop"]["signal"], "SIGTERM");
        assert_eq!(json["capabilities"][0], "CAP_CHOWN");
        let back: ContainerSpec = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, spec);
        assert_eq!(back.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut json = serde_json::to_value(sample()).expect("serialize");
        json["process"]["tty"] = true.into();
        assert!(serde_json::from_value::<ContainerSpec>(json).is_err());
    }

    #[test]
    fn validation_names_the_rule_broken() {
        let mut spec = sample();
        spec.rootfs = "relative/root".into();
        assert!(matches!(
            spec.validate(),
            Err(SpecError::NotAbsolute {
                field: "rootfs",
                ..
            })
        ));
        let mut spec = sample();
        spec.mounts[0].destination = "/data/../etc".into();
        assert!(matches!(
            spec.validate(),
            Err(SpecError::NotAbsolute { .. })
        ));
        let mut spec = sample();
        spec.process.args.clear();
        assert_eq!(spec.validate(), Err(SpecError::NoArgs));
        let mut spec = sample();
        spec.process.env.push("NOEQUALS".into());
        assert!(matches!(spec.validate(), Err(SpecError::BadEnv(_))));
        let mut spec = sample();
        spec.hostname = Some("-bad".into());
        assert!(matches!(spec.validate(), Err(SpecError::BadHostname(_))));
        let mut spec = sample();
        spec.restart.backoff_initial_ms = 5000;
        assert!(matches!(spec.validate(), Err(SpecError::Backoff { .. })));
        let mut spec = sample();
        spec.resources.memory_bytes = Some(0);
        assert!(matches!(spec.validate(), Err(SpecError::ZeroLimit { .. })));
    }

    #[test]
    fn the_default_capabilities_leave_out_raw_sockets_mknod_and_admin() {
        for cap in [Capability::NetRaw, Capability::Mknod, Capability::SysAdmin] {
            assert!(!DEFAULT_CAPABILITIES.contains(&cap), "{cap:?}");
        }
    }
}
