//! Leaving the initramfs for a tmpfs root, before anything else runs.
//!
//! The kernel unpacks the initramfs into `rootfs`, the root of the first
//! mount namespace, and `pivot_root(2)` refuses to move that one away
//! (`EINVAL`). Container runtimes confine a container's root with
//! `pivot_root`; the fallback, `chroot` over a moved mount, can be climbed
//! out of by any process holding `CAP_SYS_CHROOT`. So PID 1, first thing,
//! copies the initramfs into a fresh tmpfs, frees the original, moves the
//! tmpfs over `/` and executes itself again from it. The new root is an
//! ordinary mount, which every later `pivot_root` can leave.
//!
//! The copy keeps modes, owners, symlinks and device nodes; the original
//! is deleted only once the copy is whole, so a failure leaves the node
//! booting on the initramfs as before (containers then refuse to start and
//! say why). The re-executed init finds [`STAGE_ENV`] set and carries on.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::stat::{Mode, SFlag};

/// Set in the environment of the init that runs from the tmpfs root.
pub const STAGE_ENV: &str = "CAIRN_INIT_ROOT";
/// Where the new root is built before it moves over `/`.
const NEW_ROOT: &str = "/.cairn-root";

/// What went wrong while leaving the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    /// A step of the switch failed.
    #[error("{step}")]
    Step {
        /// What was being done.
        step: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn step(what: impl Into<String>) -> impl FnOnce(io::Error) -> LeaveError {
    let step = what.into();
    move |source| LeaveError::Step { step, source }
}

fn errno(what: &str) -> impl FnOnce(nix::Error) -> LeaveError + '_ {
    move |e| LeaveError::Step {
        step: what.to_owned(),
        source: e.into(),
    }
}

/// Whether this init still runs on the initramfs: not re-executed yet, and
/// `/` is a ramfs or tmpfs (a disk root, as in some tests, stays).
pub fn on_initramfs() -> bool {
    if std::env::var_os(STAGE_ENV).is_some() {
        return false;
    }
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    nix::sys::statfs::statfs("/").is_ok_and(|s| {
        let kind = s.filesystem_type().0;
        kind == RAMFS_MAGIC || kind == TMPFS_MAGIC
    })
}

/// Copies `/` into a tmpfs, deletes the original, moves the copy over `/`
/// and executes `/init` again. Returns only on failure, with the
/// initramfs still whole unless the failure came after the copy.
pub fn leave_initramfs() -> LeaveError {
    match switch() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn switch() -> Result<std::convert::Infallible, LeaveError> {
    let root = Path::new("/");
    let new_root = Path::new(NEW_ROOT);
    fs::create_dir(new_root).map_err(step(format!("creating {NEW_ROOT}")))?;
    nix::mount::mount(
        Some("tmpfs"),
        new_root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(errno("mounting a tmpfs for the new root"))?;
    let root_dev = fs::symlink_metadata(root).map_err(step("reading /"))?.dev();
    if let Err(e) = copy_tree(root, new_root, root_dev, new_root) {
        // Leave the initramfs as it was.
        let _ = nix::mount::umount(new_root);
        let _ = fs::remove_dir(new_root);
        return Err(e);
    }
    remove_tree(root, root_dev, new_root)?;
    std::env::set_current_dir(new_root).map_err(step(format!("entering {NEW_ROOT}")))?;
    nix::mount::mount(
        Some("."),
        root,
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(errno("moving the new root over /"))?;
    nix::unistd::chroot(".").map_err(errno("entering the new root"))?;
    std::env::set_current_dir(root).map_err(step("entering /"))?;
    let error = std::process::Command::new("/init")
        .args(std::env::args_os().skip(1))
        .env(STAGE_ENV, "tmpfs")
        .exec();
    Err(LeaveError::Step {
        step: "executing /init from the new root".to_owned(),
        source: error,
    })
}

/// Copies the tree under `src` into `dst`, staying on `dev` and leaving
/// out `skip`.
pub fn copy_tree(src: &Path, dst: &Path, dev: u64, skip: &Path) -> Result<(), LeaveError> {
    for entry in fs::read_dir(src).map_err(step(format!("reading {}", src.display())))? {
        let entry = entry.map_err(step(format!("reading {}", src.display())))?;
        let from = entry.path();
        if from == skip {
            continue;
        }
        let meta =
            fs::symlink_metadata(&from).map_err(step(format!("reading {}", from.display())))?;
        if meta.dev() != dev {
            continue;
        }
        copy_entry(&from, &dst.join(entry.file_name()), &meta, dev, skip)?;
    }
    Ok(())
}

fn copy_entry(
    from: &Path,
    to: &Path,
    meta: &fs::Metadata,
    dev: u64,
    skip: &Path,
) -> Result<(), LeaveError> {
    let what = |verb: &str| format!("{verb} {}", to.display());
    let kind = meta.file_type();
    if kind.is_dir() {
        fs::create_dir(to).map_err(step(what("creating")))?;
        copy_tree(from, to, dev, skip)?;
    } else if kind.is_file() {
        fs::copy(from, to).map_err(step(what("copying to")))?;
    } else if kind.is_symlink() {
        let target = fs::read_link(from).map_err(step(what("reading the link for")))?;
        std::os::unix::fs::symlink(target, to).map_err(step(what("linking")))?;
    } else {
        let node = if kind.is_char_device() {
            SFlag::S_IFCHR
        } else if kind.is_block_device() {
            SFlag::S_IFBLK
        } else if kind.is_fifo() {
            SFlag::S_IFIFO
        } else {
            // Sockets mean nothing in a copy.
            return Ok(());
        };
        nix::sys::stat::mknod(to, node, Mode::from_bits_truncate(meta.mode()), meta.rdev())
            .map_err(|e| LeaveError::Step {
                step: what("making the node"),
                source: e.into(),
            })?;
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(step(what("setting the owner of")))?;
    if !kind.is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(step(what("setting the mode of")))?;
    }
    Ok(())
}

/// Deletes everything under `dir` on `dev` except `skip` (and what other
/// file systems are mounted on).
pub fn remove_tree(dir: &Path, dev: u64, skip: &Path) -> Result<(), LeaveError> {
    for entry in fs::read_dir(dir).map_err(step(format!("reading {}", dir.display())))? {
        let entry = entry.map_err(step(format!("reading {}", dir.display())))?;
        let path: PathBuf = entry.path();
        if path == skip {
            continue;
        }
        let meta =
            fs::symlink_metadata(&path).map_err(step(format!("reading {}", path.display())))?;
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            remove_tree(&path, dev, skip)?;
            fs::remove_dir(&path).map_err(step(format!("removing {}", path.display())))?;
        } else {
            fs::remove_file(&path).map_err(step(format!("removing {}", path.display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) -> Vec<(String, u32, Option<String>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let link = meta
                    .file_type()
                    .is_symlink()
                    .then(|| fs::read_link(&path).unwrap().display().to_string());
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, meta.mode(), link));
                if meta.is_dir() {
                    stack.push(path);
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn the_copy_keeps_modes_links_and_nodes_and_leaves_out_the_target() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("usr/bin")).unwrap();
        fs::write(src.join("usr/bin/cairnd"), b"\x7fELF").unwrap();
        fs::set_permissions(
            src.join("usr/bin/cairnd"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(src.join("secret"), b"k").unwrap();
        fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink("../run/resolv.conf", src.join("usr/resolv.conf")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        fs::create_dir(src.join("locked")).unwrap();
        fs::write(src.join("locked/inside"), b"x").unwrap();
        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o500)).unwrap();
        let target = src.join("new-root");
        fs::create_dir(&target).unwrap();
        let dev = fs::metadata(&src).unwrap().dev();

        copy_tree(&src, &target, dev, &target).unwrap();
        let mut original = tree(&src);
        original.retain(|(p, ..)| !p.starts_with("new-root"));
        assert_eq!(tree(&target), original);

        fs::set_permissions(src.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
        remove_tree(&src, dev, &target).unwrap();
        let left: Vec<String> = fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["new-root"]);
        assert_eq!(fs::read(target.join("usr/bin/cairnd")).unwrap(), b"\x7fELF");
        fs::set_permissions(target.join("locked"), fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn a_copy_into_a_missing_target_fails_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("file"), b"x").unwrap();
        let missing = tmp.path().join("missing/dir");
        let dev = fs::metadata(tmp.path()).unwrap().dev();
        let err = copy_tree(tmp.path(), &missing, dev, &missing).unwrap_err();
        assert!(err.to_string().contains("missing/dir"), "{err}");
    }
}
