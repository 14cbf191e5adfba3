//! A create request, parsed once into what the node will run.
//!
//! Everything about a [`ContainerCreateRequest`] that can be judged
//! without the image store is judged here, and each refusal names the
//! field and the value: names, volume names and paths, capabilities,
//! limits, health timings, hostname. The image-dependent half (the
//! command, the user) is resolved by [`runtime::resolve_process`] once the
//! image is known.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use api::types::{ContainerCreateRequest, HealthProbe, RestartMode};
use oci_spec::runtime::Capability;
use runtime::{ContainerName, DEFAULT_CAPABILITIES, LogConfig, RestartConfig, RestartPolicy};

use super::health::HealthPolicy;
use crate::images::ImageRef;

/// Default time between health probes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default time a probe may take.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default failures in a row before unhealthy.
pub const DEFAULT_RETRIES: u32 = 3;
/// Shortest interval between probes.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Default seconds between the stop signal and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT_S: u32 = 10;
/// Longest stop timeout a container may ask for.
pub const MAX_STOP_TIMEOUT_S: u32 = 600;
/// Smallest log file before rotation.
pub const MIN_LOG_BYTES: u64 = 4096;
/// Smallest memory limit: below it even a shell cannot start.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

/// A named volume: a directory under `/var/lib/cairn/volumes`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VolumeName(String);

impl VolumeName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A volume mounted at a path in the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedVolume {
    /// The volume.
    pub volume: VolumeName,
    /// Where, inside the container.
    pub destination: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A create request the node can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The container's name.
    pub name: ContainerName,
    /// The image, as parsed.
    pub image: ImageRef,
    /// The volumes, destinations unique.
    pub volumes: Vec<PlannedVolume>,
    /// The final capability set, in a stable order.
    pub capabilities: Vec<Capability>,
    /// The restart policy for the shim.
    pub restart: RestartConfig,
    /// The health check, if any.
    pub health: Option<HealthPolicy>,
    /// Seconds between the stop signal and SIGKILL.
    pub stop_timeout_s: u32,
    /// Log rotation.
    pub logs: LogConfig,
}

/// Why a create request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// The name is not a container name.
    #[error("invalid container name {name:?}: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The image is not a reference or digest.
    #[error("invalid image {image:?}: {reason}")]
    Image {
        /// The text.
        image: String,
        /// Why.
        reason: String,
    },
    /// A volume name is not one.
    #[error(
        "invalid volume name {0:?}: expected 1-63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"
    )]
    VolumeName(String),
    /// A mount destination is not a clean absolute path.
    #[error("invalid volume path {0:?}: expected an absolute path without '..'")]
    VolumePath(String),
    /// Two volumes at one place.
    #[error("two volumes are mounted at {0}")]
    DuplicatePath(String),
    /// A capability name is unknown.
    #[error("unknown capability {0:?} (names look like NET_ADMIN or CAP_NET_ADMIN)")]
    Capability(String),
    /// An environment entry without `=`.
    #[error("invalid environment entry {0:?}: expected KEY=VALUE")]
    Env(String),
    /// A limit of zero or below the minimum.
    #[error("invalid limit {field} = {value}: {reason}")]
    Limit {
        /// Which limit.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Why.
        reason: &'static str,
    },
    /// A health check setting out of range.
    #[error("invalid health check: {0}")]
    Health(String),
    /// `max_retries` without `on_failure`.
    #[error("max_retries applies to the on_failure restart policy only")]
    MaxRetries,
    /// The stop timeout is too long.
    #[error("stop_timeout_s {0} is longer than the {MAX_STOP_TIMEOUT_S} s allowed")]
    StopTimeout(u32),
    /// Log rotation settings out of range.
    #[error("invalid log settings: {0}")]
    Logs(String),
    /// A working directory that is not absolute.
    #[error("invalid workdir {0:?}: expected an absolute path")]
    Workdir(String),
}

impl Plan {
    /// Parses `request`.
    ///
    /// # Errors
    /// The first field that is wrong, named.
    pub fn parse(request: &ContainerCreateRequest) -> Result<Self, PlanError> {
        let name = ContainerName::try_from(request.name.clone()).map_err(|e| PlanError::Name {
            name: request.name.clone(),
            reason: e.to_string(),
        })?;
        let image = request
            .image
            .parse::<ImageRef>()
            .map_err(|e| PlanError::Image {
                image: request.image.clone(),
                reason: crate::error_chain(&e),
            })?;
        if let Some(bad) = request
            .env
            .iter()
            .find(|e| !e.contains('=') || e.starts_with('='))
        {
            return Err(PlanError::Env(bad.clone()));
        }
        if let Some(dir) = &request.workdir
            && !clean_absolute(Path::new(dir))
        {
            return Err(PlanError::Workdir(dir.clone()));
        }
        let volumes = volumes(request)?;
        let capabilities = capabilities(&request.cap_add, &request.cap_drop)?;
        limits(request)?;
        let restart = restart(request)?;
        let health = request.health.as_ref().map(health).transpose()?;
        let stop_timeout_s = request.stop_timeout_s.unwrap_or(DEFAULT_STOP_TIMEOUT_S);
        if stop_timeout_s > MAX_STOP_TIMEOUT_S {
            return Err(PlanError::StopTimeout(stop_timeout_s));
        }
        let defaults = LogConfig::default();
        let logs = LogConfig {
            max_bytes: request.log_max_bytes.unwrap_or(defaults.max_bytes),
            max_files: request.log_max_files.unwrap_or(defaults.max_files),
        };
        if logs.max_bytes < MIN_LOG_BYTES {
            return Err(PlanError::Logs(format!(
                "log_max_bytes {} is below {MIN_LOG_BYTES}",
                logs.max_bytes
            )));
        }
        if logs.max_files == 0 {
            return Err(PlanError::Logs(
                "log_max_files must be at least 1".to_owned(),
            ));
        }
        Ok(Self {
            name,
            image,
            volumes,
            capabilities,
            restart,
            health,
            stop_timeout_s,
            logs,
        })
    }
}

fn clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn volumes(request: &ContainerCreateRequest) -> Result<Vec<PlannedVolume>, PlanError> {
    let mut seen = BTreeSet::new();
    request
        .volumes
        .iter()
        .map(|v| {
            let name_ok = v.volume.len() <= 63
                && v.volume
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && v.volume.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
                });
            if !name_ok {
                return Err(PlanError::VolumeName(v.volume.clone()));
            }
            let destination = PathBuf::from(&v.path);
            if !clean_absolute(&destination) || destination == Path::new("/") {
                return Err(PlanError::VolumePath(v.path.clone()));
            }
            if !seen.insert(destination.clone()) {
                return Err(PlanError::DuplicatePath(v.path.clone()));
            }
            Ok(PlannedVolume {
                volume: VolumeName(v.volume.clone()),
                destination,
                read_only: v.read_only,
            })
        })
        .collect()
}

/// `NET_ADMIN` or `CAP_NET_ADMIN`, any case.
fn capability(text: &str) -> Result<Capability, PlanError> {
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    serde_json::from_value(serde_json::Value::String(full))
        .map_err(|_| PlanError::Capability(text.to_owned()))
}

fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<Capability>, PlanError> {
    let drop_all = drop.iter().any(|d| d.eq_ignore_ascii_case("ALL"));
    let mut set: Vec<Capability> = if drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    for name in drop.iter().filter(|d| !d.eq_ignore_ascii_case("ALL")) {
        let cap = capability(name)?;
        set.retain(|c| *c != cap);
    }
    for name in add {
        let cap = capability(name)?;
        if !set.contains(&cap) {
            set.push(cap);
        }
    }
    Ok(set)
}

fn limits(request: &ContainerCreateRequest) -> Result<(), PlanError> {
    let limits = &request.limits;
    let check = |field, value: Option<u64>, min: u64, reason| match value {
        Some(v) if v < min => Err(PlanError::Limit {
            field,
            value: v,
            reason,
        }),
        _ => Ok(()),
    };
    check("cpu_millis", limits.cpu_millis, 1, "must be positive")?;
    check(
        "memory_bytes",
        limits.memory_bytes,
        MIN_MEMORY_BYTES,
        "must be at least 4 MiB",
    )?;
    check("pids", limits.pids, 1, "must be positive")
}

fn restart(request: &ContainerCreateRequest) -> Result<RestartConfig, PlanError> {
    let policy = match request.restart.policy {
        RestartMode::Never => RestartPolicy::Never,
        RestartMode::OnFailure => RestartPolicy::OnFailure,
        RestartMode::Always => RestartPolicy::Always,
    };
    if request.restart.max_retries.is_some() && policy != RestartPolicy::OnFailure {
        return Err(PlanError::MaxRetries);
    }
    Ok(RestartConfig {
        policy,
        max_retries: request.restart.max_retries,
        ..RestartConfig::default()
    })
}

fn health(check: &api::types::HealthCheck) -> Result<HealthPolicy, PlanError> {
    let fail = |text: String| Err(PlanError::Health(text));
    match &check.probe {
        HealthProbe::Exec { command } if command.is_empty() => {
            return fail("the exec probe has no command".to_owned());
        }
        HealthProbe::Http { port: 0, .. } | HealthProbe::Tcp { port: 0 } => {
            return fail("port 0 cannot be probed".to_owned());
        }
        HealthProbe::Http { path, .. }
            if !path.starts_with('/')
                || path.bytes().any(|b| b.is_ascii_control() || b == b' ') =>
        {
            return fail(format!(
                "the HTTP path {path:?} must start with '/' and hold no spaces"
            ));
        }
        HealthProbe::Exec { .. } | HealthProbe::Http { .. } | HealthProbe::Tcp { .. } => {}
    }
    let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    let interval = ms(check.interval_ms, DEFAULT_INTERVAL);
    let timeout = ms(check.timeout_ms, DEFAULT_PROBE_TIMEOUT);
    if interval < MIN_INTERVAL {
        return fail(format!("interval_ms {} is below 100", interval.as_millis()));
    }
    if timeout.is_zero() {
        return fail("timeout_ms must be positive".to_owned());
    }
    let retries = check.retries.unwrap_or(DEFAULT_RETRIES);
    if retries == 0 {
        return fail("retries must be at least 1".to_owned());
    }
    Ok(HealthPolicy {
        probe: check.probe.clone(),
        interval,
        timeout,
        retries,
        start_period: ms(check.start_period_ms, Duration::ZERO),
    })
}

#[cfg(test)]
mod tests {
    use api::types::{HealthCheck, Limits, RestartPolicy as ApiRestart, VolumeMount};
    use proptest::prelude::*;

    use super::*;

    fn request() -> ContainerCreateRequest {
        ContainerCreateRequest {
            name: "redis".into(),
            image: "redis:7".into(),
            ..ContainerCreateRequest::default()
        }
    }

    #[test]
    fn a_plain_request_gets_the_defaults() {
        let plan = Plan::parse(&request()).expect("valid");
        assert_eq!(plan.name.as_str(), "redis");
        assert_eq!(plan.capabilities, DEFAULT_CAPABILITIES);
        assert_eq!(plan.restart.policy, RestartPolicy::Never);
        assert_eq!(plan.stop_timeout_s, DEFAULT_STOP_TIMEOUT_S);
        assert_eq!(plan.health, None);
        assert_eq!(plan.logs, LogConfig::default());
        let mut small = request();
        small.log_max_bytes = Some(4096);
        small.log_max_files = Some(2);
        let logs = Plan::parse(&small).expect("valid").logs;
        assert_eq!((logs.max_bytes, logs.max_files), (4096, 2));
    }

    #[test]
    fn capabilities_are_added_and_dropped_by_either_spelling() {
        let mut r = request();
        r.cap_add = vec!["net_admin".into(), "CAP_SYS_TIME".into()];
        r.cap_drop = vec!["CHOWN".into()];
        let caps = Plan::parse(&r).expect("valid").capabilities;
        assert!(caps.contains(&Capability::NetAdmin) && caps.contains(&Capability::SysTime));
        assert!(!caps.contains(&Capability::Chown));
        r.cap_drop = vec!["ALL".into()];
        r.cap_add = vec!["NET_BIND_SERVICE".into()];
        assert_eq!(
            Plan::parse(&r).expect("valid").capabilities,
            [Capability::NetBindService]
        );
        r.cap_add = vec!["FLY".into()];
        assert_eq!(Plan::parse(&r), Err(PlanError::Capability("FLY".into())));
    }

    #[test]
    fn each_bad_field_is_refused_by_name() {
        type Breaker = Box<dyn Fn(&mut ContainerCreateRequest)>;
        let cases: Vec<(Breaker, &str)> = vec![
            (
                Box::new(|r| r.name = "Bad Name".into()),
                "invalid container name",
            ),
            (Box::new(|r| r.image = "bad image!".into()), "invalid image"),
            (
                Box::new(|r| {
                    r.volumes = vec![VolumeMount {
                        volume: "../etc".into(),
                        path: "/data".into(),
                        read_only: false,
                    }]
                }),
                "invalid volume name",
            ),
            (
                Box::new(|r| {
                    r.volumes = vec![VolumeMount {
                        volume: "data".into(),
                        path: "/data/../etc".into(),
                        read_only: false,
                    }]
                }),
                "invalid volume path",
            ),
            (
                Box::new(|r| {
                    let v = VolumeMount {
                        volume: "data".into(),
                        path: "/data".into(),
                        read_only: false,
                    };
                    r.volumes = vec![v.clone(), v];
                }),
                "two volumes",
            ),
            (
                Box::new(|r| r.env = vec!["NOEQUALS".into()]),
                "environment entry",
            ),
            (Box::new(|r| r.workdir = Some("relative".into())), "workdir"),
            (
                Box::new(|r| {
                    r.limits = Limits {
                        memory_bytes: Some(1024),
                        ..Limits::default()
                    }
                }),
                "memory_bytes",
            ),
            (
                Box::new(|r| {
                    r.limits = Limits {
                        pids: Some(0),
                        ..Limits::default()
                    }
                }),
                "pids",
            ),
            (
                Box::new(|r| {
                    r.restart = ApiRestart {
                        policy: RestartMode::Always,
                        max_retries: Some(3),
                    }
                }),
                "max_retries",
            ),
            (
                Box::new(|r| r.stop_timeout_s = Some(3600)),
                "stop_timeout_s",
            ),
            (Box::new(|r| r.log_max_bytes = Some(100)), "log_max_bytes"),
            (Box::new(|r| r.log_max_files = Some(0)), "log_max_files"),
            (
                Box::new(|r| {
                    r.health = Some(HealthCheck {
                        probe: HealthProbe::Tcp { port: 80 },
                        interval_ms: Some(10),
                        timeout_ms: None,
                        retries: None,
                        start_period_ms: None,
                    })
                }),
                "interval_ms",
            ),
            (
                Box::new(|r| {
                    r.health = Some(HealthCheck {
                        probe: HealthProbe::Exec { command: vec![] },
                        interval_ms: None,
                        timeout_ms: None,
                        retries: None,
                        start_period_ms: None,
                    })
                }),
                "no command",
            ),
        ];
        for (break_it, expected) in cases {
            let mut r = request();
            break_it(&mut r);
            let err = Plan::parse(&r).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
    }

    #[test]
    fn health_timings_default_like_docker() {
        let mut r = request();
        r.health = Some(HealthCheck {
            probe: HealthProbe::Http {
                port: 8080,
                path: "/healthz".into(),
            },
            interval_ms: Some(500),
            timeout_ms: None,
            retries: None,
            start_period_ms: Some(2_000),
        });
        let health = Plan::parse(&r).expect("valid").health.expect("health");
        assert_eq!(health.interval, Duration::from_millis(500));
        assert_eq!(health.timeout, DEFAULT_PROBE_TIMEOUT);
        assert_eq!(health.retries, DEFAULT_RETRIES);
        assert_eq!(health.start_period, Duration::from_secs(2));
    }

    proptest! {
        #[test]
        fn any_names_and_paths_parse_or_are_refused_without_panicking(
            name in "\\PC{0,70}",
            volume in "\\PC{0,70}",
            path in "\\PC{0,40}",
            cap in "\\PC{0,20}",
        ) {
            let mut r = request();
            r.name = name;
            r.volumes = vec![VolumeMount { volume, path, read_only: false }];
            r.cap_add = vec![cap];
            if let Ok(plan) = Plan::parse(&r) {
                for v in &plan.volumes {
                    prop_assert!(clean_absolute(&v.destination));
                    prop_assert!(!v.volume.as_str().contains('/'));
                }
            }
        }
    }
}
