//! The container directory's layout, in one place.

use crate::name::ContainerName;
use std::path::{Path, PathBuf};

/// Where containers live on a node (the shim is always given `--dir`).
pub const CONTAINERS_ROOT: &str = "/var/lib/cairn/containers";
/// libcontainer's state root (tmpfs: it does not outlive a boot).
pub const RUNTIME_STATE_ROOT: &str = "/run/cairn/runtime";
/// The cgroup v2 parent of every container (`/cairn/<name>` below the
/// cgroup2 mount).
pub const CGROUP_PARENT: &str = "/cairn";
/// Where the shim binary is in the node image.
pub const SHIM_BINARY: &str = "/usr/bin/cairn-shim";

/// The files of one container directory `<root>/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerDir {
    dir: PathBuf,
}

impl ContainerDir {
    /// The directory of `name` below `root`.
    #[must_use]
    pub fn new(root: &Path, name: &ContainerName) -> Self {
        Self {
            dir: root.join(name.as_str()),
        }
    }

    /// A directory given as is (the shim's `--dir`).
    #[must_use]
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.dir
    }
    /// Written by cairnd before the shim starts.
    #[must_use]
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    /// Written only by the shim.
    #[must_use]
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    /// The shim's control socket; present while the shim lives.
    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }
    /// Holds `container.log` and its rotations.
    #[must_use]
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    /// The overlay's upper dir: the container's writes, kept across
    /// restarts, removed with the container.
    #[must_use]
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    /// The overlay's work dir.
    #[must_use]
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The overlay mount point (the bundle's root).
    #[must_use]
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// The OCI bundle directory (`config.json`).
    #[must_use]
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }
}

/// The container's cgroup path relative to the cgroup2 root.
#[must_use]
pub fn cgroup_path(name: &ContainerName) -> PathBuf {
    Path::new(CGROUP_PARENT).join(name.as_str())
}
