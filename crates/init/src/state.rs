//! Finding, growing and mounting the STATE partition (and the ESP).
//!
//! Partitions are found by their GPT name, which the kernel reports as
//! `PARTNAME=` in `/sys/class/block/<dev>/uevent`, so no blkid is needed.
//! On the first boot from a disk bigger than the image, STATE is grown to the
//! end of the disk: the GPT is rewritten ([`crate::gpt`]), the kernel told
//! with BLKPG, and ext4 grown online after mounting (EXT4_IOC_RESIZE_FS). The
//! filesystem's own block count is read from its superblock, so a crash
//! between the partition and the filesystem step is finished on the next
//! boot. Without a STATE partition (PXE, diskless) `/var` is a tmpfs.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::gpt::{self, GptError};
use crate::log::Log;
use crate::sys::Sys;

pub const STATE_LABEL: &str = "CAIRN-STATE";
pub const ESP_LABEL: &str = "CAIRN-ESP";
pub const STATE_MOUNTPOINT: &str = "/var";
pub const ESP_MOUNTPOINT: &str = "/efi";

/// Growing is skipped when less than this would be gained.
const GROW_SLACK: u64 = 16 << 20;

/// A partition the kernel knows, found by GPT name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// `/dev/vda2`
    pub dev: PathBuf,
    /// `/dev/vda`
    pub disk: PathBuf,
    pub partno: u32,
}

/// Partitions with `name` as their GPT name, in device-name order.
pub fn find_by_partname(sys: &mut dyn Sys, sys_root: &Path, name: &str) -> Vec<Partition> {
    let class = sys_root.join("class/block");
    let mut found = Vec::new();
    for dev in sys.list_dir(&class).unwrap_or_default() {
        let Ok(bytes) = sys.read(&class.join(&dev).join("uevent")) else {
            continue;
        };
        let uevent = String::from_utf8_lossy(&bytes);
        let field = |key: &str| {
            uevent
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        if field("PARTNAME").as_deref() != Some(name) {
            continue;
        }
        let (Some(devname), Some(partno)) = (field("DEVNAME"), field("PARTN")) else {
            continue;
        };
        let (Some(disk), Ok(partno)) = (parent_disk(&devname), partno.parse()) else {
            continue;
        };
        found.push(Partition {
            dev: Path::new("/dev").join(&devname),
            disk: Path::new("/dev").join(disk),
            partno,
        });
    }
    found
}

/// The disk a partition device belongs to, by the kernel's naming rule:
/// `vda2` -> `vda`, `nvme0n1p2` -> `nvme0n1`, `mmcblk0p1` -> `mmcblk0`.
pub fn parent_disk(partition: &str) -> Option<&str> {
    let base = partition.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == partition.len() || base.is_empty() {
        return None;
    }
    match base.strip_suffix('p') {
        Some(disk) if disk.ends_with(|c: char| c.is_ascii_digit()) => Some(disk),
        _ => Some(base),
    }
}

/// Why growing STATE failed. The node still mounts STATE at its old size.
#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    #[error("reading the partition table of {disk}")]
    Read {
        disk: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("partition table of {disk}")]
    Table {
        disk: PathBuf,
        #[source]
        source: GptError,
    },
    #[error("writing the partition table of {disk}")]
    Write {
        disk: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("telling the kernel that {dev} grew")]
    Blkpg {
        dev: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Grows the partition to the end of its disk when the disk is bigger than
/// the image. Returns the partition's size in bytes (grown or not).
pub fn grow_partition(sys: &mut dyn Sys, part: &Partition) -> Result<u64, GrowError> {
    let disk = &part.disk;
    let read_err = |source| GrowError::Read {
        disk: disk.clone(),
        source,
    };
    let table_err = |source| GrowError::Table {
        disk: disk.clone(),
        source,
    };
    let disk_bytes = sys.device_size(disk).map_err(read_err)?;
    let (header, sector) = read_header(sys, disk)?;
    let entries_len = usize::try_from(header.entries_len())
        .map_err(|_| table_err(GptError::BadField("partition entry array")))?;
    let entries = sys
        .read_at(disk, header.entries_lba * sector, entries_len)
        .map_err(read_err)?;
    let Some(plan) = gpt::plan_grow(&header, &entries, disk_bytes, part.partno, GROW_SLACK)
        .map_err(table_err)?
    else {
        let (_, len) = gpt::partition_extent(&header, &entries, part.partno).map_err(table_err)?;
        return Ok(len);
    };
    for w in &plan.writes {
        sys.write_at(disk, w.offset, &w.data)
            .map_err(|source| GrowError::Write {
                disk: disk.clone(),
                source,
            })?;
    }
    sys.resize_partition(disk, part.partno, plan.start, plan.len)
        .map_err(|source| GrowError::Blkpg {
            dev: part.dev.clone(),
            source,
        })?;
    Ok(plan.len)
}

/// Reads the primary GPT header, trying 512- then 4096-byte sectors.
fn read_header(sys: &mut dyn Sys, disk: &Path) -> Result<(gpt::Header, u64), GrowError> {
    let mut last = GptError::NoSignature;
    for sector in [512u64, 4096] {
        let bytes = sys
            .read_at(disk, sector, usize::try_from(sector).unwrap_or(512))
            .map_err(|source| GrowError::Read {
                disk: disk.to_path_buf(),
                source,
            })?;
        match gpt::Header::parse(&bytes, sector) {
            Ok(h) => return Ok((h, sector)),
            Err(e) => last = e,
        }
    }
    Err(GrowError::Table {
        disk: disk.to_path_buf(),
        source: last,
    })
}

/// Size facts from an ext4 superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Size {
    pub blocks: u64,
    pub block_size: u64,
}

/// Reads block count and block size from the superblock at byte 1024.
pub fn ext4_size(sys: &mut dyn Sys, dev: &Path) -> io::Result<Ext4Size> {
    let sb = sys.read_at(dev, 1024, 1024)?;
    parse_ext4_superblock(&sb)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an ext4 superblock"))
}

fn parse_ext4_superblock(sb: &[u8]) -> Option<Ext4Size> {
    let u32_at = |off: usize| Some(u32::from_le_bytes(sb.get(off..off + 4)?.try_into().ok()?));
    let magic = u16::from_le_bytes(sb.get(0x38..0x3A)?.try_into().ok()?);
    if magic != 0xEF53 {
        return None;
    }
    let log_block = u32_at(0x18)?;
    if log_block > 6 {
        return None;
    }
    let incompat = u32_at(0x60)?;
    let hi = if incompat & 0x80 != 0 {
        u64::from(u32_at(0x150)?)
    } else {
        0
    };
    Some(Ext4Size {
        blocks: (hi << 32) | u64::from(u32_at(0x4)?),
        block_size: 1024 << log_block,
    })
}

/// How `/var` ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateMount {
    Disk {
        part: Partition,
        grown_to: Option<u64>,
    },
    Tmpfs {
        reason: String,
    },
}

/// Grows (when needed) and mounts STATE at `/var`; falls back to a tmpfs,
/// saying why, when there is no STATE or it cannot be mounted.
pub fn mount_state(sys: &mut dyn Sys, log: &Log, part: Option<Partition>) -> StateMount {
    let target = Path::new(STATE_MOUNTPOINT);
    if let Err(e) = sys.mkdir_all(target, 0o755) {
        log.error(format_args!("creating {STATE_MOUNTPOINT}: {e}"));
    }
    let Some(part) = part else {
        return mount_tmpfs(
            sys,
            log,
            "no partition named CAIRN-STATE was found".to_owned(),
        );
    };
    let part_bytes = match grow_partition(sys, &part) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            log.error(format_args!(
                "not growing {}: {}",
                part.dev.display(),
                crate::log::chain(&e)
            ));
            None
        }
    };
    let fs_before = ext4_size(sys, &part.dev).ok();
    let flags = MsFlags::MS_NOATIME.union(MsFlags::MS_NODEV);
    if let Err(e) = sys.mount(&part.dev.to_string_lossy(), target, "ext4", flags, None) {
        let reason = format!(
            "mounting {} on {STATE_MOUNTPOINT} failed: {e}",
            part.dev.display()
        );
        return mount_tmpfs(sys, log, reason);
    }
    log.info(format_args!(
        "mounted {} (STATE) on {STATE_MOUNTPOINT}",
        part.dev.display()
    ));
    let mut grown_to = None;
    if let (Some(part_bytes), Some(fs)) = (part_bytes, fs_before) {
        let want = part_bytes / fs.block_size;
        if want > fs.blocks {
            match sys.resize_ext4(target, want) {
                Ok(()) => {
                    log.info(format_args!(
                        "grew STATE filesystem from {} MiB to {} MiB",
                        (fs.blocks * fs.block_size) >> 20,
                        (want * fs.block_size) >> 20
                    ));
                    grown_to = Some(want * fs.block_size);
                }
                Err(e) => log.error(format_args!("growing the STATE filesystem: {e}")),
            }
        }
    }
    StateMount::Disk { part, grown_to }
}

fn mount_tmpfs(sys: &mut dyn Sys, log: &Log, reason: String) -> StateMount {
    log.warn(format_args!(
        "{reason}; /var is a tmpfs and nothing will persist"
    ));
    let flags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
    if let Err(e) = sys.mount(
        "tmpfs",
        Path::new(STATE_MOUNTPOINT),
        "tmpfs",
        flags,
        Some("mode=0755"),
    ) {
        log.error(format_args!("mounting a tmpfs on {STATE_MOUNTPOINT}: {e}"));
    }
    StateMount::Tmpfs { reason }
}

/// Mounts the ESP read-only at `/efi`; it is remounted writable only while
/// boot entries change.
pub fn mount_esp(sys: &mut dyn Sys, log: &Log, part: &Partition) -> bool {
    let target = Path::new(ESP_MOUNTPOINT);
    let flags = MsFlags::MS_RDONLY
        .union(MsFlags::MS_NOSUID)
        .union(MsFlags::MS_NODEV)
        .union(MsFlags::MS_NOEXEC);
    let result = sys.mkdir_all(target, 0o755).and_then(|()| {
        sys.mount(
            &part.dev.to_string_lossy(),
            target,
            "vfat",
            flags,
            Some("umask=0077"),
        )
    });
    match result {
        Ok(()) => {
            log.info(format_args!(
                "mounted {} (ESP) read-only on {ESP_MOUNTPOINT}",
                part.dev.display()
            ));
            true
        }
        Err(e) => {
            log.error(format_args!("mounting the ESP {}: {e}", part.dev.display()));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::testdisk;
    use crate::sys::fake::{Call, FakeSys};

    const MIB: usize = 1 << 20;

    fn ext4_superblock(blocks: u32, log_block: u32) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x4..0x8].copy_from_slice(&blocks.to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&log_block.to_le_bytes());
        sb[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb
    }

    /// A 64 MiB virtio disk holding a 4 MiB image: ESP 1-2 MiB, STATE 2-3 MiB.
    fn machine() -> FakeSys {
        let mut sys = FakeSys::new();
        let mut disk = testdisk::build(
            4 * MIB,
            &[(2048, 4095, "CAIRN-ESP"), (4096, 6143, "CAIRN-STATE")],
        );
        disk.resize(64 * MIB, 0);
        let mut state = vec![0u8; MIB];
        state[1024..2048].copy_from_slice(&ext4_superblock(256, 2));
        sys.devices.insert("/dev/vda".into(), disk);
        sys.devices.insert("/dev/vda2".into(), state);
        sys.file(
            "/sys/class/block/vda/uevent",
            "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
        )
        .file(
            "/sys/class/block/vda1/uevent",
            "DEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=CAIRN-ESP\n",
        )
        .file(
            "/sys/class/block/vda2/uevent",
            "DEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=CAIRN-STATE\n",
        );
        sys
    }

    #[test]
    fn partitions_are_found_by_gpt_name() {
        let mut sys = machine();
        let found = find_by_partname(&mut sys, Path::new("/sys"), STATE_LABEL);
        assert_eq!(
            found,
            [Partition {
                dev: "/dev/vda2".into(),
                disk: "/dev/vda".into(),
                partno: 2
            }]
        );
        assert!(find_by_partname(&mut sys, Path::new("/sys"), "OTHER").is_empty());
    }

    #[test]
    fn partition_device_names_map_to_their_disks() {
        assert_eq!(parent_disk("vda2"), Some("vda"));
        assert_eq!(parent_disk("sda10"), Some("sda"));
        assert_eq!(parent_disk("nvme0n1p2"), Some("nvme0n1"));
        assert_eq!(parent_disk("mmcblk0p1"), Some("mmcblk0"));
        assert_eq!(parent_disk("vda"), None);
    }

    #[test]
    fn first_boot_grows_state_to_fill_the_disk_then_mounts_and_grows_ext4() {
        let mut sys = machine();
        let part = find_by_partname(&mut sys, Path::new("/sys"), STATE_LABEL).pop();
        let outcome = mount_state(&mut sys, &Log::stderr(), part);
        let last_lba = 64 * MIB as u64 / 512 - 1;
        let new_len = (last_lba - 32 - 4096) * 512;
        assert!(sys.calls.contains(&Call::ResizePartition {
            disk: "/dev/vda".into(),
            partno: 2,
            start: 4096 * 512,
            len: new_len
        }));
        let mount_at = sys
            .calls
            .iter()
            .position(|c| matches!(c, Call::Mount { fstype, .. } if fstype == "ext4"));
        let resize_at = sys
            .calls
            .iter()
            .position(|c| matches!(c, Call::ResizeExt4 { .. }));
        assert!(mount_at < resize_at, "ext4 is grown online, after mounting");
        assert!(sys.calls.contains(&Call::ResizeExt4 {
            mountpoint: "/var".into(),
            blocks: new_len / 4096
        }));
        assert!(matches!(
            outcome,
            StateMount::Disk {
                grown_to: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn second_boot_neither_rewrites_the_table_nor_resizes() {
        let mut sys = machine();
        let part = find_by_partname(&mut sys, Path::new("/sys"), STATE_LABEL)
            .pop()
            .unwrap();
        let len = grow_partition(&mut sys, &part).unwrap();
        // The filesystem was grown last boot too.
        let sb = ext4_superblock(u32::try_from(len / 4096).unwrap(), 2);
        sys.devices.get_mut(Path::new("/dev/vda2")).unwrap()[1024..2048].copy_from_slice(&sb);
        sys.calls.clear();
        mount_state(&mut sys, &Log::stderr(), Some(part));
        assert!(!sys.calls.iter().any(|c| matches!(
            c,
            Call::WriteAt { .. } | Call::ResizePartition { .. } | Call::ResizeExt4 { .. }
        )));
        assert_eq!(sys.mounts(), [("ext4".to_owned(), PathBuf::from("/var"))]);
    }

    #[test]
    fn no_state_partition_means_a_tmpfs_var() {
        let mut sys = FakeSys::new();
        let outcome = mount_state(&mut sys, &Log::stderr(), None);
        assert!(matches!(outcome, StateMount::Tmpfs { .. }));
        assert_eq!(sys.mounts(), [("tmpfs".to_owned(), PathBuf::from("/var"))]);
    }

    #[test]
    fn an_unmountable_state_falls_back_to_tmpfs() {
        let mut sys = machine();
        sys.failing_mounts.insert("/var".into());
        let part = find_by_partname(&mut sys, Path::new("/sys"), STATE_LABEL).pop();
        // The fake fails every mount on /var, so the tmpfs fails too; the
        // outcome still says why and the node goes on.
        assert!(matches!(
            mount_state(&mut sys, &Log::stderr(), part),
            StateMount::Tmpfs { .. }
        ));
    }

    #[test]
    fn superblock_parser_reads_size_and_refuses_other_filesystems() {
        assert_eq!(
            parse_ext4_superblock(&ext4_superblock(1000, 2)),
            Some(Ext4Size {
                blocks: 1000,
                block_size: 4096
            })
        );
        assert_eq!(parse_ext4_superblock(&[0u8; 1024]), None);
        assert_eq!(parse_ext4_superblock(&[0u8; 10]), None);
    }
}
