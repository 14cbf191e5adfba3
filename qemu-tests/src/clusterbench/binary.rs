//! Which cairnd the cluster runs.
//!
//! `CAIRN_CAIRND` names one explicitly (a CI artifact, an image build).
//! Otherwise cargo builds it in the profile asked for, in this
//! workspace's target directory; cargo's own lock keeps concurrent test
//! binaries from building twice, and an up-to-date build costs a second.

use std::path::PathBuf;
use std::process::Command;

use crate::paths;

/// Names a cairnd binary to use instead of building one.
pub const ENV_CAIRND: &str = "CAIRN_CAIRND";

/// A cargo profile cairnd can be built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `dev` (`target/debug`).
    Dev,
    /// `release`.
    Release,
    /// `image`: what the image ships (fat LTO).
    Image,
}

impl Profile {
    /// The profile the calling code was compiled in (dev or release), so
    /// a test run does not build a second profile of the workspace.
    #[must_use]
    pub fn of_this_build() -> Self {
        if cfg!(debug_assertions) {
            Profile::Dev
        } else {
            Profile::Release
        }
    }

    fn cargo_name(self) -> &'static str {
        match self {
            Profile::Dev => "dev",
            Profile::Release => "release",
            Profile::Image => "image",
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "release",
            Profile::Image => "image",
        }
    }
}

/// No cairnd to run.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// `CAIRN_CAIRND` names no file.
    #[error("{ENV_CAIRND}={0} is not a file")]
    Missing(PathBuf),
    /// cargo could not be run.
    #[error("cannot run `{0}`")]
    Spawn(String, #[source] std::io::Error),
    /// cargo failed.
    #[error("`{command}` failed with {status}")]
    Failed {
        /// The command.
        command: String,
        /// Its status.
        status: std::process::ExitStatus,
    },
    /// cargo succeeded but the binary is not where it should be.
    #[error("cargo built cairnd but {0} is not there")]
    NotBuilt(PathBuf),
}

/// The cairnd to run: `CAIRN_CAIRND`, or a fresh build in `profile`.
///
/// # Errors
/// [`BinaryError`] if neither yields a binary.
pub fn cairnd(profile: Profile) -> Result<PathBuf, BinaryError> {
    if let Some(path) = std::env::var_os(ENV_CAIRND) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(BinaryError::Missing(path))
        };
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = [
        "build",
        "--profile",
        profile.cargo_name(),
        "--locked",
        "-p",
        "nodeagent",
        "--bin",
        "cairnd",
    ];
    let command = format!("cargo {}", args.join(" "));
    eprintln!("qemu-tests: building cairnd: {command}");
    let status = Command::new(cargo)
        .current_dir(paths::workspace_root())
        .args(args)
        .status()
        .map_err(|e| BinaryError::Spawn(command.clone(), e))?;
    if !status.success() {
        return Err(BinaryError::Failed { command, status });
    }
    let binary = paths::target_dir().join(profile.dir()).join("cairnd");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(BinaryError::NotBuilt(binary))
    }
}
