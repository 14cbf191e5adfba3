//! Small test initramfs images: the image's kernel booted with `-kernel`
//! and a cpio of the test's own (busybox, a binary under test, a scenario
//! script as `/init`), its results read from the serial console.
//!
//! Used by the container shim's VM test, which needs cgroup v2 and a real
//! kernel but none of cairnd.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use image_build::binaries::{TARGET, executable_from_messages, read_static_binary};

use crate::accel::Accel;
use crate::tools;

/// Where the host's static busybox is (Debian `busybox-static`).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Why a test initramfs could not be made or run.
#[derive(Debug, thiserror::Error)]
pub enum TestInitramfsError {
    #[error("running {command}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed with {status}: {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cargo built no executable {0}")]
    NotProduced(String),
    #[error("{0} is not a usable static binary")]
    NotStatic(#[source] image_build::binaries::BinariesError),
    #[error("{pattern} is not in {initramfs}")]
    NotInInitramfs { pattern: String, initramfs: PathBuf },
    #[error("{0} is missing: install the Debian package busybox-static")]
    NoBusybox(&'static str),
    #[error(transparent)]
    Tool(#[from] tools::ToolError),
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the VM did not power off within {0:?}")]
    Timeout(Duration),
}

fn run(command: &mut Command) -> Result<Vec<u8>, TestInitramfsError> {
    let name = format!("{command:?}");
    let out = command
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .map_err(|source| TestInitramfsError::Spawn {
            command: name.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(TestInitramfsError::Failed {
            command: name,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

/// Builds `package`'s binary `bin` statically (release profile, as the
/// image does but without fat LTO, to keep test builds quick) and returns
/// its bytes, refusing a dynamically linked result.
///
/// # Errors
/// Cargo failing, or the binary not being static.
pub fn static_binary(package: &str, bin: &str) -> Result<Vec<u8>, TestInitramfsError> {
    static_binary_with_profile(package, bin, "release")
}

/// As [`static_binary`], with the cargo profile named: e.g.
/// [`image_build::binaries::PROFILE`] for the binary exactly as the image
/// ships it (fat LTO), which is what a benchmark should measure.
///
/// # Errors
/// Cargo failing, or the binary not being static.
pub fn static_binary_with_profile(
    package: &str,
    bin: &str,
    profile: &str,
) -> Result<Vec<u8>, TestInitramfsError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let messages = run(Command::new(cargo)
        .current_dir(crate::paths::workspace_root())
        .args([
            "build",
            "--profile",
            profile,
            "--target",
            TARGET,
            "-p",
            package,
        ])
        .arg("--message-format=json-render-diagnostics")
        .env("CARGO_TARGET_DIR", crate::paths::target_dir())
        .env("RUSTFLAGS", "-C target-feature=+crt-static"))?;
    let path = executable_from_messages(&String::from_utf8_lossy(&messages), bin)
        .ok_or_else(|| TestInitramfsError::NotProduced(bin.to_owned()))?;
    read_static_binary(&path).map_err(TestInitramfsError::NotStatic)
}

/// The host's static busybox and the applet names it provides.
///
/// # Errors
/// When busybox-static is not installed.
pub fn host_busybox() -> Result<(Vec<u8>, Vec<String>), TestInitramfsError> {
    let bytes = read_static_binary(Path::new(HOST_BUSYBOX))
        .map_err(|_| TestInitramfsError::NoBusybox(HOST_BUSYBOX))?;
    let list = run(Command::new(HOST_BUSYBOX).arg("--list"))?;
    let applets = String::from_utf8_lossy(&list)
        .lines()
        .map(str::to_owned)
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .collect();
    Ok((bytes, applets))
}

/// Extracts the first file matching `pattern` (a cpio glob, e.g.
/// `*/overlay.ko`) from a gzip or plain newc initramfs.
///
/// # Errors
/// When the tools fail or nothing matches.
pub fn extract(initramfs: &Path, pattern: &str) -> Result<Vec<u8>, TestInitramfsError> {
    let raw = std::fs::read(initramfs).map_err(|source| TestInitramfsError::Spawn {
        command: format!("reading {}", initramfs.display()),
        source,
    })?;
    let cpio = image_build::initramfs::decompress(&raw).map_err(|e| TestInitramfsError::Spawn {
        command: format!("decompressing {}", initramfs.display()),
        source: std::io::Error::other(e),
    })?;
    let dir = tempfile::tempdir().map_err(|source| TestInitramfsError::Spawn {
        command: "tempdir".into(),
        source,
    })?;
    let archive = dir.path().join("in.cpio");
    std::fs::write(&archive, cpio).map_err(|source| TestInitramfsError::Write {
        path: archive.clone(),
        source,
    })?;
    let out = run(Command::new("cpio")
        .args(["-i", "--quiet", "--to-stdout", "-F"])
        .arg(&archive)
        .arg(pattern))?;
    if out.is_empty() {
        return Err(TestInitramfsError::NotInInitramfs {
            pattern: pattern.to_owned(),
            initramfs: initramfs.to_owned(),
        });
    }
    Ok(out)
}

/// Boots `kernel` with `initrd` under QEMU without network or disk, the
/// serial console written to `console`, and waits for the guest to power
/// off (or for `limit`, when it is killed).
///
/// # Errors
/// When QEMU cannot start, fails, or the limit passes.
pub fn boot_and_wait(
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
    memory_mib: u32,
    console: &Path,
    accel: Accel,
    limit: Duration,
) -> Result<(), TestInitramfsError> {
    let qemu = tools::QEMU.locate()?;
    let mut command = Command::new(qemu);
    command
        .args(accel.qemu_args())
        .args([
            "-machine",
            "q35",
            "-smp",
            "2",
            "-m",
            &memory_mib.to_string(),
        ])
        .args(["-nodefaults", "-no-reboot", "-display", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", cmdline])
        .args(["-serial", &format!("file:{}", console.display())])
        .args(["-device", "virtio-rng-pci"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let name = format!("{command:?}");
    let mut child = command
        .spawn()
        .map_err(|source| TestInitramfsError::Spawn {
            command: name.clone(),
            source,
        })?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                }
                return Err(TestInitramfsError::Failed {
                    command: name,
                    status,
                    stderr,
                });
            }
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(TestInitramfsError::Timeout(limit));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(source) => {
                return Err(TestInitramfsError::Spawn {
                    command: name,
                    source,
                });
            }
        }
    }
}
