//! Host tools the builder runs, and the Debian packages that provide them.
//!
//! Every external program is named here once, so a missing one produces
//! the same kind of error everywhere: which tool, and which package to
//! `apt-get install`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A program or file the builder needs from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostTool {
    AptGet,
    AptCache,
    DpkgDeb,
    MkfsExt4,
    QemuImg,
    Cargo,
    /// Not a program: the systemd-boot EFI binary copied onto the ESP.
    SystemdBootEfi,
}

/// Where Debian's systemd-boot-efi installs the x86_64 boot loader.
pub const SYSTEMD_BOOT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

impl HostTool {
    pub const fn name(self) -> &'static str {
        match self {
            HostTool::AptGet => "apt-get",
            HostTool::AptCache => "apt-cache",
            HostTool::DpkgDeb => "dpkg-deb",
            HostTool::MkfsExt4 => "mkfs.ext4",
            HostTool::QemuImg => "qemu-img",
            HostTool::Cargo => "cargo",
            HostTool::SystemdBootEfi => "systemd-bootx64.efi",
        }
    }

    /// The Debian package to install when the tool is missing.
    pub const fn package(self) -> &'static str {
        match self {
            HostTool::AptGet | HostTool::AptCache => "apt",
            HostTool::DpkgDeb => "dpkg",
            HostTool::MkfsExt4 => "e2fsprogs",
            HostTool::QemuImg => "qemu-utils",
            HostTool::Cargo => "cargo (or rustup)",
            HostTool::SystemdBootEfi => "systemd-boot-efi",
        }
    }

    /// Finds the tool: on `PATH` (plus the sbin directories, which a
    /// non-root `PATH` often lacks), or at its fixed file path.
    pub fn locate(self) -> Result<PathBuf, ToolError> {
        let found = match self {
            HostTool::SystemdBootEfi => {
                let p = PathBuf::from(SYSTEMD_BOOT_EFI);
                p.is_file().then_some(p)
            }
            HostTool::Cargo => std::env::var_os("CARGO")
                .map(PathBuf::from)
                .filter(|p| p.is_file())
                .or_else(|| search_path(self.name())),
            HostTool::AptGet
            | HostTool::AptCache
            | HostTool::DpkgDeb
            | HostTool::MkfsExt4
            | HostTool::QemuImg => search_path(self.name()),
        };
        found.ok_or(ToolError::Missing {
            tool: self.name(),
            package: self.package(),
        })
    }
}

fn search_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Why running a host tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} not found; install the Debian package `{package}`")]
    Missing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("cannot start {tool}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: &'static str,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// Runs `tool args...` to completion, capturing output; a non-zero exit
/// is an error carrying the tool's stderr.
pub fn run<I, S>(
    tool: HostTool,
    args: I,
    configure: impl FnOnce(&mut Command),
) -> Result<Output, ToolError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let program = tool.locate()?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    configure(&mut cmd);
    let output = cmd.output().map_err(|source| ToolError::Spawn {
        tool: tool.name(),
        source,
    })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(ToolError::Failed {
            tool: tool.name(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_names_a_debian_package() {
        for tool in [
            HostTool::AptGet,
            HostTool::AptCache,
            HostTool::DpkgDeb,
            HostTool::MkfsExt4,
            HostTool::QemuImg,
            HostTool::Cargo,
            HostTool::SystemdBootEfi,
        ] {
            assert!(!tool.package().is_empty());
        }
        assert_eq!(HostTool::MkfsExt4.package(), "e2fsprogs");
        assert_eq!(HostTool::QemuImg.package(), "qemu-utils");
        assert_eq!(HostTool::SystemdBootEfi.package(), "systemd-boot-efi");
    }

    #[test]
    fn a_missing_tool_error_names_the_package() {
        let err = ToolError::Missing {
            tool: HostTool::QemuImg.name(),
            package: HostTool::QemuImg.package(),
        };
        assert_eq!(
            err.to_string(),
            "qemu-img not found; install the Debian package `qemu-utils`"
        );
    }
}
