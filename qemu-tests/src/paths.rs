//! Where the harness keeps its state: everything lives under
//! `<target>/qemu-tests/`, so `cargo clean` removes it and CI can archive it.

use std::path::{Path, PathBuf};

/// The Cargo workspace this crate belongs to.
#[must_use]
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `<workspace>/target`.
#[must_use]
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// `<target>/qemu-tests`: images, logs, locks and benchmark output.
#[must_use]
pub fn harness_dir() -> PathBuf {
    target_dir().join("qemu-tests")
}

/// Where one test's console and dnsmasq logs are kept (and left behind for CI).
#[must_use]
pub fn test_log_dir(test: &str) -> PathBuf {
    harness_dir().join("logs").join(test)
}
