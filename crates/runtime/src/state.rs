//! `state.json`: what the shim reports, written only by the shim.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use time::OffsetDateTime;

/// The shim's view of its container, rewritten atomically on every
/// transition. Timestamps are RFC 3339 UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ShimState {
    pub shim_pid: u32,
    pub status: Status,
    /// The container's init process in the host pid namespace, while running.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Restarts done by the restart policy since the shim started.
    #[serde(default)]
    pub restarts: u32,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub last_exit: Option<ExitRecord>,
    /// When the restart policy will start the process again (`restarting`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_restart_at: Option<OffsetDateTime>,
    /// Why the container could not be started, the whole cause chain joined
    /// with ": ".
    #[serde(default)]
    pub error: Option<String>,
}

/// The container's lifecycle state as the shim sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The shim is setting up (rootfs, bundle, cgroup) and has not started
    /// the process yet.
    Created,
    Running,
    /// The process exited and the restart policy will start it again at
    /// `next_restart_at`.
    Restarting,
    /// The process exited and no restart is due; the shim has cleaned up
    /// and is gone (or going).
    Exited,
    /// Stopped on request; the shim has cleaned up and is gone (or going).
    Stopped,
}

impl Status {
    /// Whether the shim has finished for good: nothing runs any more, and
    /// the shim exits after writing this state.
    #[must_use]
    pub fn is_final(self) -> bool {
        match self {
            Self::Exited | Self::Stopped => true,
            Self::Created | Self::Running | Self::Restarting => false,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// `{"code": 1}`
    Code(i32),
    /// `{"signal": 9}`
    Signal(i32),
}

impl ExitStatus {
    /// Exit code 0.
    #[must_use]
    pub fn success(self) -> bool {
        self == Self::Code(0)
    }
}

/// The last exit of the container's process.
///
/// The status is flattened (`{"code": 1, "oom_killed": false, "at": ..}`),
/// which serde cannot combine with `deny_unknown_fields`; this type is
/// only ever written by the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ExitRecord {
    #[serde(flatten)]
    pub status: ExitStatus,
    /// The cgroup's `memory.events` `oom_kill` counter rose during the run.
    pub oom_killed: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("could not read {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid shim state")]
    Parse {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("could not write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ShimState {
    /// A fresh state for a shim that has not started its container yet.
    #[must_use]
    pub fn new(shim_pid: u32) -> Self {
        Self {
            shim_pid,
            status: Status::Created,
            pid: None,
            restarts: 0,
            started_at: None,
            finished_at: None,
            last_exit: None,
            next_restart_at: None,
            error: None,
        }
    }

    /// Reads `state.json`.
    ///
    /// # Errors
    /// When the file is missing, unreadable or not a shim state.
    pub fn load(path: &Path) -> Result<Self, StateFileError> {
        let bytes = std::fs::read(path).map_err(|source| StateFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StateFileError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Replaces `path` atomically: a reader sees the old state or the new
    /// one, never half of either, even across a power cut (temp file,
    /// fsync, rename, fsync of the directory).
    ///
    /// # Errors
    /// When any step fails; the old file is then left as it was.
    pub fn store(&self, path: &Path) -> Result<(), StateFileError> {
        let json = serde_json::to_vec_pretty(self).map_err(|source| StateFileError::Parse {
            path: path.to_owned(),
            source,
        })?;
        write_atomic(path, &json).map_err(|source| StateFileError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

/// Writes `bytes` to `path` through a temp file next to it, with fsyncs so
/// that the rename is durable.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path.file_name().map_or_else(
        || std::ffi::OsString::from("state"),
        std::ffi::OsStr::to_os_string,
    );
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(&file_name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn state_json_uses_the_documented_shape() {
        let mut state = ShimState::new(42);
        state.status = Status::Restarting;
        state.restarts = 2;
        state.last_exit = Some(ExitRecord {
            status: ExitStatus::Signal(9),
            oom_killed: true,
            at: datetime!(2026-11-22 14:00:00.5 UTC),
        });
        state.next_restart_at = Some(datetime!(2026-11-22 14:00:01 UTC));
        let json = serde_json::to_value(&state).expect("serialize");
        assert_eq!(json["status"], "restarting");
        assert_eq!(json["last_exit"]["signal"], 9);
        assert_eq!(json["last_exit"]["oom_killed"], true);
        assert_eq!(json["last_exit"]["at"], "2026-11-22T14:00:00.5Z");
        assert_eq!(json["next_restart_at"], "2026-11-22T14:00:01Z");
        assert_eq!(json["pid"], serde_json::Value::Null);
        let back: ShimState = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, state);
    }

    #[test]
    fn an_exit_code_is_written_as_code() {
        let record = ExitRecord {
            status: ExitStatus::Code(3),
            oom_killed: false,
            at: datetime!(2026-01-01 0:00 UTC),
        };
        let json = serde_json::to_value(&record).expect("serialize");
        assert_eq!(json["code"], 3);
        assert!(json.get("signal").is_none());
    }

    #[test]
    fn store_replaces_the_file_and_leaves_no_temp_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        ShimState::new(1).store(&path).expect("store");
        let mut state = ShimState::new(1);
        state.status = Status::Running;
        state.pid = Some(77);
        state.store(&path).expect("store again");
        assert_eq!(ShimState::load(&path).expect("load"), state);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn only_exited_and_stopped_are_final() {
        assert!(Status::Exited.is_final());
        assert!(Status::Stopped.is_final());
        assert!(!Status::Restarting.is_final());
        assert!(!Status::Running.is_final());
        assert!(!Status::Created.is_final());
    }
}
