//! The Cairn image under test, built once per test process.
//!
//! [`Image::shared`] runs `cargo run --release -p image-build -- build
//! --output <target>/qemu-tests/image` the first time it is called (a
//! `OnceLock` makes concurrent test threads wait for that one build, and an
//! `flock` makes concurrent test *processes* wait too). A previous build is
//! reused when its `SHA256SUMS` is newer than every source file of the
//! workspace (crates/, configs/, Cargo.toml, Cargo.lock), so running one
//! scenario after editing nothing costs no rebuild. `CAIRN_IMAGE_DIR`
//! points the harness at an existing build instead (CI artifacts, a release);
//! `CAIRN_IMAGE_REBUILD=1` forces a build.
//!
//! A failed build or a missing artifact is an error, never a skipped test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

use image_build::build::{ARTIFACTS, SUMS_FILE};

use crate::lock::{FileLock, LockError};
use crate::paths;

/// A directory holding a complete `cairn-image build` output.
#[derive(Debug, Clone)]
pub struct Image {
    dir: PathBuf,
}

/// The baseline image (`cairn-image baseline`): same firmware, boot loader
/// and kernel as Cairn, with a busybox init that powers off at once.
#[derive(Debug, Clone)]
pub struct BaselineImage {
    raw: PathBuf,
}

/// Why no image is available.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("waiting for the image build lock")]
    Lock(#[source] LockError),
    #[error("running `{command}` (is cargo installed? Debian package `cargo` or rustup)")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed with {status}; its output is above")]
    BuildFailed {
        command: String,
        status: std::process::ExitStatus,
    },
    #[error("image directory {dir} lacks {artifact} (from `{origin}`)")]
    MissingArtifact {
        dir: PathBuf,
        artifact: String,
        origin: String,
    },
    #[error("removing stale {path}")]
    Cleanup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

static SHARED: OnceLock<Result<Image, ImageError>> = OnceLock::new();
static BASELINE: OnceLock<Result<BaselineImage, ImageError>> = OnceLock::new();

impl Image {
    /// The image every scenario in this process boots: `CAIRN_IMAGE_DIR` if
    /// set, else a fresh build under `target/qemu-tests/image`.
    ///
    /// # Errors
    /// The (cached) build or validation failure.
    pub fn shared() -> Result<&'static Image, &'static ImageError> {
        SHARED.get_or_init(Self::locate_or_build).as_ref()
    }

    /// Uses an existing build output without building.
    ///
    /// # Errors
    /// [`ImageError::MissingArtifact`] if any artifact is absent.
    pub fn from_dir(dir: &Path, origin: &str) -> Result<Self, ImageError> {
        for artifact in ARTIFACTS.into_iter().chain([SUMS_FILE]) {
            if !dir.join(artifact).is_file() {
                return Err(ImageError::MissingArtifact {
                    dir: dir.to_path_buf(),
                    artifact: artifact.to_owned(),
                    origin: origin.to_owned(),
                });
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// An image directory taken on faith (unit tests of command lines).
    #[cfg(test)]
    pub(crate) fn from_dir_unchecked(dir: &str) -> Self {
        Self {
            dir: PathBuf::from(dir),
        }
    }

    fn locate_or_build() -> Result<Self, ImageError> {
        if let Some(dir) = std::env::var_os("CAIRN_IMAGE_DIR") {
            return Self::from_dir(Path::new(&dir), "CAIRN_IMAGE_DIR");
        }
        let dir = paths::harness_dir().join("image");
        let _lock = FileLock::exclusive(&paths::harness_dir().join("image.lock"))
            .map_err(ImageError::Lock)?;
        let forced = std::env::var_os("CAIRN_IMAGE_REBUILD").is_some_and(|v| v == "1");
        if forced || !is_fresh(&dir.join(SUMS_FILE)) {
            // SHA256SUMS is written last by the builder; removing it first
            // means a build that dies halfway never looks fresh.
            remove_if_present(&dir.join(SUMS_FILE))?;
            let baked = build_baked_busybox(&paths::harness_dir().join("baked"))?;
            let baked = baked.to_string_lossy();
            run_cargo_image(&["build", "--bake-image", &baked, "--output"], &dir)?;
        }
        Self::from_dir(&dir, "cargo run --release -p image-build -- build")
    }

    /// The output directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// GPT disk image (USB sticks, bare metal, virtio disks).
    #[must_use]
    pub fn raw(&self) -> PathBuf {
        self.dir.join("cairn.raw")
    }
    /// KVM template.
    #[must_use]
    pub fn qcow2(&self) -> PathBuf {
        self.dir.join("cairn.qcow2")
    }
    /// VMware disk (streamOptimized).
    #[must_use]
    pub fn vmdk(&self) -> PathBuf {
        self.dir.join("cairn.vmdk")
    }
    /// VMware template.
    #[must_use]
    pub fn ova(&self) -> PathBuf {
        self.dir.join("cairn.ova")
    }
    /// TFTP root for PXE.
    #[must_use]
    pub fn pxe_dir(&self) -> PathBuf {
        self.dir.join("pxe")
    }
    /// The kernel (also used for the KVM probe boot).
    #[must_use]
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("pxe/vmlinuz")
    }
    /// The `cairn` client built together with this image's binaries.
    #[must_use]
    pub fn cli(&self) -> PathBuf {
        self.dir.join(image_build::binaries::CLI_BIN)
    }
    /// The initramfs holding the whole userland.
    #[must_use]
    pub fn initramfs(&self) -> PathBuf {
        self.dir.join("pxe/initramfs.img")
    }
}

impl BaselineImage {
    /// The baseline image for benchmarks: `CAIRN_BASELINE_DIR` if set, else
    /// a fresh `cairn-image baseline` under `target/qemu-tests/baseline`.
    ///
    /// # Errors
    /// The (cached) build or validation failure.
    pub fn shared() -> Result<&'static BaselineImage, &'static ImageError> {
        BASELINE.get_or_init(Self::locate_or_build).as_ref()
    }

    fn locate_or_build() -> Result<Self, ImageError> {
        let (dir, origin) = match std::env::var_os("CAIRN_BASELINE_DIR") {
            Some(dir) => (PathBuf::from(dir), "CAIRN_BASELINE_DIR"),
            None => {
                let dir = paths::harness_dir().join("baseline");
                let _lock = FileLock::exclusive(&paths::harness_dir().join("image.lock"))
                    .map_err(ImageError::Lock)?;
                let raw = dir.join("baseline.raw");
                if !is_fresh(&raw) {
                    remove_if_present(&raw)?;
                    run_cargo_image(&["baseline", "--output"], &dir)?;
                }
                (dir, "cargo run --release -p image-build -- baseline")
            }
        };
        let raw = dir.join("baseline.raw");
        if !raw.is_file() {
            return Err(ImageError::MissingArtifact {
                dir,
                artifact: "baseline.raw".to_owned(),
                origin: origin.to_owned(),
            });
        }
        Ok(Self { raw })
    }

    /// The baseline disk image.
    #[must_use]
    pub fn raw(&self) -> &Path {
        &self.raw
    }
}

fn remove_if_present(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ImageError::Cleanup {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn remove_dir_if_present(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ImageError::Cleanup {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The reference of the busybox image baked into the shared image, in
/// every node's store from its first start.
pub const BAKED_BUSYBOX: &str = "busybox:baked";

/// Builds the busybox image from Debian's `busybox-static` as an
/// oci-archive in `dir` (`busybox.tar`), for `--bake-image`.
fn build_baked_busybox(dir: &Path) -> Result<PathBuf, ImageError> {
    let layout = dir.join("layout");
    let archive = dir.join("busybox.tar");
    // A fresh layout each time: `from-debs` adds to an existing one.
    remove_dir_if_present(dir)?;
    let layout_arg = layout.to_string_lossy();
    run_oci(&[
        "from-debs",
        "busybox-static",
        "--ref",
        BAKED_BUSYBOX,
        "--out",
        &layout_arg,
        "--entrypoint",
        "/bin/busybox",
    ])?;
    run_oci(&["archive", &layout_arg, &archive.to_string_lossy()])?;
    Ok(archive)
}

/// Runs the image builder through cargo, with its output on our stderr so a
/// long build shows progress and a failing one shows why.
fn run_cargo_image(args: &[&str], output: &Path) -> Result<(), ImageError> {
    let output = output.to_string_lossy();
    let mut all = args.to_vec();
    all.push(&output);
    run_image_build(&all, None)
}

/// Runs `cairn-image oci ARGS…`: the container tests build their OCI
/// images from Debian packages with our own builder, never from a
/// registry on the internet. The build time is pinned, so the same
/// packages give the same digests.
///
/// # Errors
/// [`ImageError`] when cargo cannot run or the builder fails.
pub fn run_oci(args: &[&str]) -> Result<(), ImageError> {
    let mut all = vec!["oci"];
    all.extend_from_slice(args);
    run_image_build(&all, Some("1700000000"))
}

fn run_image_build(args: &[&str], source_date_epoch: Option<&str>) -> Result<(), ImageError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(paths::workspace_root())
        .args(["run", "--release", "-p", "image-build", "--"])
        .args(args)
        // Keep the builder's stdout off the test harness's captured stdout.
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit());
    if let Some(epoch) = source_date_epoch {
        command.env("SOURCE_DATE_EPOCH", epoch);
    }
    let printable = format!("cargo run --release -p image-build -- {}", args.join(" "));
    eprintln!("qemu-tests: running the image builder: {printable}");
    let status = command.status().map_err(|source| ImageError::Spawn {
        command: printable.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::BuildFailed {
            command: printable,
            status,
        })
    }
}

/// True when `stamp` exists and is newer than every workspace source file.
fn is_fresh(stamp: &Path) -> bool {
    let Ok(stamp_time) = stamp.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    let root = paths::workspace_root();
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in ["crates", "configs", "Cargo.toml", "Cargo.lock"] {
        newest_mtime(&root.join(entry), &mut newest);
    }
    newest <= stamp_time
}

fn newest_mtime(path: &Path, newest: &mut SystemTime) {
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    if meta.is_dir() {
        if path
            .file_name()
            .is_some_and(|n| n == "target" || n == ".git")
        {
            return;
        }
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            newest_mtime(&entry.path(), newest);
        }
    } else if let Ok(modified) = meta.modified() {
        *newest = (*newest).max(modified);
    }
}
