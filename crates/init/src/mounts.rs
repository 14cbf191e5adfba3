//! The pseudo-filesystems every Cairn node has.
//!
//! Most are built into the kernel and are mounted first thing
//! ([`Phase::Early`]). Some are modules in a distribution kernel (Debian
//! builds efivarfs as one): they are mounted once `/etc/cairn/modules-load`
//! has been loaded ([`Phase::AfterModules`]), or the mount would fail with
//! ENODEV and the boot loader's variables would be out of reach.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::sys::Sys;

/// When an entry can be mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before anything else: the filesystem is built into the kernel.
    Early,
    /// After the fixed module list is loaded: the filesystem may be a
    /// module.
    AfterModules,
}

/// One entry of the mount table.
#[derive(Debug, Clone, Copy)]
pub struct PseudoMount {
    pub phase: Phase,
    pub fstype: &'static str,
    pub target: &'static str,
    pub flags: MsFlags,
    pub data: Option<&'static str>,
    /// Mounted only when this path exists (efivarfs needs an EFI boot).
    pub only_if: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In order: later entries live under earlier ones.
pub const PSEUDO_MOUNTS: &[PseudoMount] = &[
    PseudoMount {
        phase: Phase::Early,
        fstype: "devtmpfs",
        target: "/dev",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
        only_if: None,
    },
    PseudoMount {
        phase: Phase::Early,
        fstype: "proc",
        target: "/proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        only_if: None,
    },
    PseudoMount {
        phase: Phase::Early,
        fstype: "sysfs",
        target: "/sys",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        only_if: None,
    },
    PseudoMount {
        phase: Phase::Early,
        fstype: "devpts",
        target: "/dev/pts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("gid=5,mode=0620,ptmxmode=0666"),
        only_if: None,
    },
    PseudoMount {
        phase: Phase::Early,
        fstype: "tmpfs",
        target: "/dev/shm",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
        only_if: None,
    },
    PseudoMount {
        phase: Phase::Early,
        fstype: "tmpfs",
        target: "/run",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=0755"),
        only_if: None,
    },
    PseudoMount {
        phase: Phase::Early,
        fstype: "tmpfs",
        target: "/tmp",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: Some("mode=1777"),
        only_if: None,
    },
    PseudoMount {
        phase: Phase::Early,
        fstype: "cgroup2",
        target: "/sys/fs/cgroup",
        flags: NOSUID_NODEV_NOEXEC,
        data: Some("nsdelegate"),
        only_if: None,
    },
    PseudoMount {
        phase: Phase::AfterModules,
        fstype: "efivarfs",
        target: "/sys/firmware/efi/efivars",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        only_if: Some("/sys/firmware/efi"),
    },
];

/// A pseudo-filesystem that could not be mounted.
#[derive(Debug, thiserror::Error)]
#[error("mounting {fstype} on {target}")]
pub struct MountError {
    pub fstype: &'static str,
    pub target: PathBuf,
    #[source]
    pub source: io::Error,
}

/// Mounts the table's entries of `phase`. A failure is reported and the
/// rest still mounted: a node without efivarfs or cgroup2 is degraded, not
/// dead.
pub fn mount_pseudo(sys: &mut dyn Sys, phase: Phase) -> Vec<MountError> {
    let mut errors = Vec::new();
    for m in PSEUDO_MOUNTS.iter().filter(|m| m.phase == phase) {
        if let Some(cond) = m.only_if
            && !sys.exists(Path::new(cond))
        {
            continue;
        }
        let target = Path::new(m.target);
        let result = sys
            .mkdir_all(target, 0o755)
            .and_then(|()| sys.mount(m.fstype, target, m.fstype, m.flags, m.data));
        match result {
            Ok(()) => {}
            // The kernel may have mounted devtmpfs already (CONFIG_DEVTMPFS_MOUNT).
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(source) => errors.push(MountError {
                fstype: m.fstype,
                target: target.to_path_buf(),
                source,
            }),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    #[test]
    fn pseudo_filesystems_are_mounted_parents_first() {
        let mut sys = FakeSys::new();
        sys.dirs.insert("/sys/firmware/efi".into());
        assert!(mount_pseudo(&mut sys, Phase::Early).is_empty());
        let fstypes: Vec<String> = sys.mounts().into_iter().map(|(t, _)| t).collect();
        assert_eq!(
            fstypes,
            [
                "devtmpfs", "proc", "sysfs", "devpts", "tmpfs", "tmpfs", "tmpfs", "cgroup2"
            ]
        );
        assert!(mount_pseudo(&mut sys, Phase::AfterModules).is_empty());
        assert_eq!(sys.mounts().last().unwrap().0, "efivarfs");
    }

    #[test]
    fn efivarfs_is_skipped_on_a_bios_boot() {
        let mut sys = FakeSys::new();
        mount_pseudo(&mut sys, Phase::Early);
        mount_pseudo(&mut sys, Phase::AfterModules);
        assert!(!sys.mounts().iter().any(|(t, _)| t == "efivarfs"));
    }

    #[test]
    fn one_failed_mount_does_not_stop_the_others() {
        let mut sys = FakeSys::new();
        sys.failing_mounts.insert("/sys/fs/cgroup".into());
        let errors = mount_pseudo(&mut sys, Phase::Early);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].fstype, "cgroup2");
        assert!(sys.mounts().iter().any(|(_, t)| t == Path::new("/tmp")));
    }
}
