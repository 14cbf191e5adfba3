//! What every network benchmark binary (`cairn-api-bench`,
//! `cairn-cluster-bench`) does around its measurement: checks that it can
//! make a network namespace, notes the host it ran on, starts with an
//! empty log directory, and writes its JSON report.
//!
//! The namespace itself and the teardown guarantees are
//! [`crate::apibench::sandbox`]'s; this module is the plumbing before and
//! after, kept in one place so the benchmarks agree on it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::paths;
use crate::tools::{self, ToolError};

/// A benchmark could not get ready or could not write its report.
#[derive(Debug, thiserror::Error)]
pub enum BenchRunError {
    /// Not root: network namespaces need it.
    #[error("needs root (it creates a network namespace); run it as root, e.g. via scripts/bench")]
    NotRoot,
    /// `ip` or `unshare` is missing.
    #[error("a host program the namespace needs")]
    Tool(#[source] ToolError),
    /// A directory or file could not be made or written.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The report did not encode.
    #[error("encoding the report")]
    Encode(#[source] serde_json::Error),
}

/// Checks for root, `ip` and `unshare` before anything is started.
///
/// # Errors
/// [`BenchRunError::NotRoot`] or [`BenchRunError::Tool`].
pub fn preflight() -> Result<(), BenchRunError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchRunError::NotRoot);
    }
    tools::IP.locate().map_err(BenchRunError::Tool)?;
    tools::UNSHARE.locate().map_err(BenchRunError::Tool)?;
    Ok(())
}

/// The host a run was measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// UTC start of the run (RFC 3339).
    pub started: String,
    /// CPUs the run could use.
    pub cpus: usize,
    /// The kernel's release string.
    pub kernel: String,
}

impl Host {
    /// Notes the time, the CPUs and the kernel now.
    #[must_use]
    pub fn now() -> Self {
        Self {
            started: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

/// `target/qemu-tests/logs/<name>/`, emptied: the logs of one run only,
/// kept after it (the state, with its keys, is not).
///
/// # Errors
/// [`BenchRunError::Io`] if it cannot be cleared or made.
pub fn fresh_log_dir(name: &str) -> Result<PathBuf, BenchRunError> {
    let dir = paths::test_log_dir(name);
    let io = |what, dir: &Path| {
        let path = dir.to_path_buf();
        move |source| BenchRunError::Io { what, path, source }
    };
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("clearing", &dir)(e)),
    }
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    Ok(dir)
}

/// Writes `report` pretty-printed to `path`, or to
/// `target/qemu-tests/<default_name>` without one, and returns where.
///
/// # Errors
/// [`BenchRunError`] if it does not encode or cannot be written.
pub fn write_json(
    path: Option<&Path>,
    default_name: &str,
    report: &Value,
) -> Result<PathBuf, BenchRunError> {
    let path = path.map_or_else(
        || paths::harness_dir().join(default_name),
        Path::to_path_buf,
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| BenchRunError::Io {
            what: "creating",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let text = serde_json::to_string_pretty(report).map_err(BenchRunError::Encode)?;
    std::fs::write(&path, text + "\n").map_err(|source| BenchRunError::Io {
        what: "writing",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Ends a run: prints `table` on stdout, writes `report` as
/// [`write_json`] does, and prints where it went.
///
/// # Errors
/// As [`write_json`].
pub fn publish(
    table: &str,
    report: &Value,
    path: Option<&Path>,
    default_name: &str,
) -> Result<PathBuf, BenchRunError> {
    print!("{table}");
    let written = write_json(path, default_name, report)?;
    println!();
    println!("JSON: {}", written.display());
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_lands_where_asked_with_a_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let asked = dir.path().join("deeper/report.json");
        let written =
            write_json(Some(&asked), "unused.json", &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(written, asked);
        let text = std::fs::read_to_string(&asked).unwrap();
        assert!(text.ends_with("}\n"), "{text:?}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["a"], 1);
    }

    #[test]
    fn the_host_names_a_start_time_and_at_least_one_cpu() {
        let host = Host::now();
        assert!(host.started.ends_with('Z'), "{}", host.started);
        assert!(host.cpus >= 1);
    }
}
