//! Host programs and firmware files the harness needs, each paired with the
//! Debian package that provides it, so a missing one fails with the fix in
//! the message instead of an obscure `No such file or directory`.

use std::path::{Path, PathBuf};

/// A program looked up on `PATH` (plus the sbin directories, which root's
/// `PATH` under sudo or CI runners sometimes lacks).
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// Executable name.
    pub program: &'static str,
    /// Debian package that installs it.
    pub package: &'static str,
}

/// A file the harness reads, such as UEFI firmware or a NIC option ROM.
#[derive(Debug, Clone, Copy)]
pub struct HostFile {
    /// Absolute path.
    pub path: &'static str,
    /// Debian package that installs it.
    pub package: &'static str,
}

pub const QEMU: Tool = Tool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
pub const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    package: "qemu-utils",
};
pub const IP: Tool = Tool {
    program: "ip",
    package: "iproute2",
};
/// Runs a benchmark's servers with their own host name (`unshare --uts`).
pub const UNSHARE: Tool = Tool {
    program: "unshare",
    package: "util-linux",
};
pub const DNSMASQ: Tool = Tool {
    program: "dnsmasq",
    package: "dnsmasq-base",
};

pub const OVMF_CODE: HostFile = HostFile {
    path: "/usr/share/OVMF/OVMF_CODE_4M.fd",
    package: "ovmf",
};
pub const OVMF_VARS: HostFile = HostFile {
    path: "/usr/share/OVMF/OVMF_VARS_4M.fd",
    package: "ovmf",
};
/// QEMU's iPXE ROMs: without them a NIC has no UEFI network boot driver.
pub const IPXE_VIRTIO_ROM: HostFile = HostFile {
    path: "/usr/lib/ipxe/qemu/efi-virtio.rom",
    package: "ipxe-qemu",
};
pub const IPXE_VMXNET3_ROM: HostFile = HostFile {
    path: "/usr/lib/ipxe/qemu/efi-vmxnet3.rom",
    package: "ipxe-qemu",
};
pub const TUN_DEVICE: HostFile = HostFile {
    path: "/dev/net/tun",
    package: "(kernel module tun; run `modprobe tun`)",
};

/// A host prerequisite is missing.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("host program `{program}` not found on PATH: install the Debian package `{package}`")]
    MissingProgram {
        program: &'static str,
        package: &'static str,
    },
    #[error("host file {path} not found: install the Debian package `{package}`")]
    MissingFile {
        path: &'static str,
        package: &'static str,
    },
    #[error(
        "the QEMU scenarios need root (network namespaces, tap devices, bridges); \
         run them as root, e.g. `sudo -E cargo test -p qemu-tests`"
    )]
    NotRoot,
}

impl Tool {
    /// Resolves the program to a path, or says which package to install.
    ///
    /// # Errors
    /// [`ToolError::MissingProgram`] when it is on none of the searched directories.
    pub fn locate(&self) -> Result<PathBuf, ToolError> {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        let extra = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from);
        std::env::split_paths(&path_var)
            .chain(extra)
            .map(|dir| dir.join(self.program))
            .find(|candidate| is_executable(candidate))
            .ok_or(ToolError::MissingProgram {
                program: self.program,
                package: self.package,
            })
    }
}

impl HostFile {
    /// Checks the file exists and returns its path.
    ///
    /// # Errors
    /// [`ToolError::MissingFile`] naming the package that provides it.
    pub fn locate(&self) -> Result<&'static Path, ToolError> {
        let path = Path::new(self.path);
        if path.exists() {
            Ok(path)
        } else {
            Err(ToolError::MissingFile {
                path: self.path,
                package: self.package,
            })
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Everything a VM scenario needs from the host, checked up front so a
/// missing package is reported once, before any namespace is created.
///
/// # Errors
/// The first missing prerequisite, or [`ToolError::NotRoot`].
pub fn check_host() -> Result<(), ToolError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ToolError::NotRoot);
    }
    for tool in [QEMU, QEMU_IMG, IP, DNSMASQ] {
        tool.locate()?;
    }
    for file in [
        OVMF_CODE,
        OVMF_VARS,
        IPXE_VIRTIO_ROM,
        IPXE_VMXNET3_ROM,
        TUN_DEVICE,
    ] {
        file.locate()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_the_package_to_install() {
        let tool = Tool {
            program: "cairn-test-no-such-program",
            package: "cairn-test-pkg",
        };
        let err = tool.locate().unwrap_err();
        assert!(
            err.to_string()
                .contains("install the Debian package `cairn-test-pkg`"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_names_the_package_to_install() {
        let file = HostFile {
            path: "/nonexistent/cairn/OVMF.fd",
            package: "ovmf",
        };
        let err = file.locate().unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/cairn/OVMF.fd"),
            "{err}"
        );
        assert!(err.to_string().contains("`ovmf`"), "{err}");
    }

    #[test]
    fn programs_on_path_are_found() {
        let sh = Tool {
            program: "sh",
            package: "dash",
        };
        assert!(sh.locate().unwrap().ends_with("sh"));
    }
}
