//! A private TFTP root for PXE scenarios that need their own kernel
//! arguments (for example `cairn.config=<url>`, which only the boot loader
//! can set). It holds copies of the image's `vmlinuz` and `initramfs.img`
//! and a `boot.ipxe` derived from the image's own, with extra arguments
//! appended to its `kernel` line. The script can be rewritten while the
//! network runs (dnsmasq reads files per request), so arguments may name
//! addresses only known after other VMs have booted.

use std::path::{Path, PathBuf};

use crate::image::Image;

/// A TFTP root in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct PxeRoot {
    dir: tempfile::TempDir,
    script: String,
}

/// Preparing or rewriting the TFTP root failed.
#[derive(Debug, thiserror::Error)]
pub enum PxeRootError {
    #[error("creating a temporary TFTP root")]
    TempDir(#[source] std::io::Error),
    #[error("copying {from} into the TFTP root")]
    Copy {
        from: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the image's boot.ipxe has no `kernel` line to extend")]
    NoKernelLine,
}

impl PxeRoot {
    /// Copies the image's PXE set into a fresh directory.
    ///
    /// # Errors
    /// [`PxeRootError`] on I/O failure.
    pub fn new(image: &Image) -> Result<Self, PxeRootError> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-tftp-")
            .tempdir()
            .map_err(PxeRootError::TempDir)?;
        for file in ["vmlinuz", "initramfs.img", "boot.ipxe"] {
            let from = image.pxe_dir().join(file);
            std::fs::copy(&from, dir.path().join(file)).map_err(|source| PxeRootError::Copy {
                from: from.clone(),
                source,
            })?;
        }
        let path = image.pxe_dir().join("boot.ipxe");
        let script =
            std::fs::read_to_string(&path).map_err(|source| PxeRootError::Read { path, source })?;
        Ok(Self { dir, script })
    }

    /// The directory to serve (see [`crate::NetworkConfig::with_pxe`]).
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites `boot.ipxe` as the image's script plus `args` on the kernel line.
    ///
    /// # Errors
    /// [`PxeRootError`] if the script has no kernel line or cannot be written.
    pub fn set_extra_kernel_args(&self, args: &str) -> Result<(), PxeRootError> {
        let script = append_kernel_args(&self.script, args).ok_or(PxeRootError::NoKernelLine)?;
        let path = self.dir.path().join("boot.ipxe");
        std::fs::write(&path, script).map_err(|source| PxeRootError::Write { path, source })
    }
}

/// `script` with `args` appended to its first `kernel` line.
#[must_use]
pub fn append_kernel_args(script: &str, args: &str) -> Option<String> {
    let mut done = false;
    let mut out = String::with_capacity(script.len() + args.len() + 1);
    for line in script.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        if !done && body.trim_start().starts_with("kernel ") {
            out.push_str(body);
            out.push(' ');
            out.push_str(args);
            out.push_str(&line[body.len()..]);
            done = true;
        } else {
            out.push_str(line);
        }
    }
    done.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_land_on_the_kernel_line_only() {
        let script =
            "#!ipxe\nkernel vmlinuz initrd=initramfs.img panic=10\ninitrd initramfs.img\nboot\n";
        assert_eq!(
            append_kernel_args(script, "cairn.config=http://10.77.0.5:7480/x").unwrap(),
            "#!ipxe\nkernel vmlinuz initrd=initramfs.img panic=10 cairn.config=http://10.77.0.5:7480/x\n\
             initrd initramfs.img\nboot\n"
        );
    }

    #[test]
    fn a_script_without_kernel_line_is_refused() {
        assert_eq!(append_kernel_args("#!ipxe\nchain other.ipxe\n", "x"), None);
    }

    #[test]
    fn crlf_line_endings_are_kept() {
        assert_eq!(
            append_kernel_args("kernel vmlinuz\r\nboot\r\n", "a=1").unwrap(),
            "kernel vmlinuz a=1\r\nboot\r\n"
        );
    }
}
