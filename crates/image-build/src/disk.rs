//! The GPT disk: where the partitions go, and writing the partition table.
//!
//! [`DiskLayout::plan`] is the arithmetic (1 MiB alignment, 512-byte
//! sectors, room for the primary and backup GPT); [`write_gpt`] writes a
//! protective MBR and both GPT copies with the `gpt` crate, using
//! partition and disk GUIDs derived from the build seed rather than random
//! ones. The file systems are made separately and copied in at their
//! offsets by [`copy_into`], which skips all-zero blocks so the raw image
//! stays sparse on the build host.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::reproducible::IdSeed;

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1024 * 1024;
/// Partitions start on 1 MiB boundaries (what parted/sgdisk do).
pub const ALIGN: u64 = MIB;
/// Protective MBR + GPT header + 128 entries of 128 bytes.
const GPT_SECTORS: u64 = 1 + 1 + 32;
/// GPT partition name of STATE, also its ext4 label.
pub const STATE_LABEL: &str = "CAIRN-STATE";

/// A contiguous partition extent in sectors (inclusive last, as GPT stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub first_lba: u64,
    pub last_lba: u64,
}

impl Extent {
    pub fn offset_bytes(self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn len_bytes(self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
}

/// Where everything sits on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLayout {
    pub total_bytes: u64,
    pub esp: Extent,
    pub state: Extent,
}

impl DiskLayout {
    /// ESP first at 1 MiB, STATE right after it, both whole MiB; the disk
    /// ends 1 MiB after STATE so the backup GPT (33 sectors) fits and the
    /// total is a whole number of MiB (VMDK and qcow2 like that).
    pub fn plan(esp_mib: u32, state_mib: u32) -> Self {
        let esp_first = ALIGN / SECTOR;
        let esp_len = u64::from(esp_mib) * MIB / SECTOR;
        let state_first = esp_first + esp_len;
        let state_len = u64::from(state_mib) * MIB / SECTOR;
        let total_bytes = (state_first + state_len) * SECTOR + ALIGN;
        Self {
            total_bytes,
            esp: Extent {
                first_lba: esp_first,
                last_lba: esp_first + esp_len - 1,
            },
            state: Extent {
                first_lba: state_first,
                last_lba: state_first + state_len - 1,
            },
        }
    }

    /// First LBA after the primary GPT, last LBA before the backup GPT.
    pub fn usable(self) -> (u64, u64) {
        (GPT_SECTORS, self.total_bytes / SECTOR - GPT_SECTORS)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("writing the partition table")]
    Gpt(#[source] gpt::GptError),
    #[error("writing the protective MBR")]
    Mbr(#[source] gpt::mbr::MBRError),
    #[error("disk image I/O on {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is {actual} bytes but its partition is {expected}")]
    SizeMismatch {
        what: &'static str,
        actual: u64,
        expected: u64,
    },
}

/// Writes the protective MBR and primary + backup GPT into `file`, which
/// must already be `layout.total_bytes` long.
pub fn write_gpt(file: &mut File, layout: DiskLayout, seed: &IdSeed) -> Result<(), DiskError> {
    let mbr = gpt::mbr::ProtectiveMBR::with_lb_size(
        u32::try_from(layout.total_bytes / SECTOR - 1).unwrap_or(u32::MAX),
    );
    mbr.overwrite_lba0(file).map_err(DiskError::Mbr)?;

    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, Some(seed.uuid("gpt-disk")))
        .map_err(DiskError::Gpt)?;
    let mut partitions = BTreeMap::new();
    partitions.insert(
        1,
        gpt::partition::Partition {
            part_type_guid: gpt::partition_types::EFI,
            part_guid: seed.uuid("gpt-partition-esp"),
            first_lba: layout.esp.first_lba,
            last_lba: layout.esp.last_lba,
            flags: 0,
            name: crate::esp::ESP_LABEL.to_owned(),
        },
    );
    partitions.insert(
        2,
        gpt::partition::Partition {
            part_type_guid: gpt::partition_types::LINUX_FS,
            part_guid: seed.uuid("gpt-partition-state"),
            first_lba: layout.state.first_lba,
            last_lba: layout.state.last_lba,
            flags: 0,
            name: STATE_LABEL.to_owned(),
        },
    );
    disk.update_partitions(partitions).map_err(DiskError::Gpt)?;
    disk.write().map_err(DiskError::Gpt)?;
    Ok(())
}

/// Copies the file at `src` into `dst` at `extent`, skipping all-zero
/// blocks (the destination is a fresh sparse file, already zero).
pub fn copy_into(
    dst: &mut File,
    extent: Extent,
    src: &Path,
    what: &'static str,
) -> Result<(), DiskError> {
    let io = |source| DiskError::Io {
        path: src.display().to_string(),
        source,
    };
    let mut input = File::open(src).map_err(io)?;
    let len = input.metadata().map_err(io)?.len();
    if len != extent.len_bytes() {
        return Err(DiskError::SizeMismatch {
            what,
            actual: len,
            expected: extent.len_bytes(),
        });
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = input.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if chunk.iter().any(|b| *b != 0) {
            dst.seek(SeekFrom::Start(extent.offset_bytes() + done))
                .map_err(io)?;
            dst.write_all(chunk).map_err(io)?;
        }
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reproducible::SourceDateEpoch;

    #[test]
    fn partitions_are_mib_aligned_and_back_to_back() {
        let l = DiskLayout::plan(512, 256);
        assert_eq!(l.esp.first_lba, 2048);
        assert_eq!(l.esp.len_bytes(), 512 * MIB);
        assert_eq!(l.state.first_lba, l.esp.last_lba + 1);
        assert_eq!(l.state.offset_bytes() % ALIGN, 0);
        assert_eq!(l.state.len_bytes(), 256 * MIB);
        assert_eq!(l.total_bytes, (1 + 512 + 256 + 1) * MIB);
    }

    #[test]
    fn partitions_fit_between_the_two_gpt_copies() {
        for (esp, state) in [(36, 16), (512, 256), (1024, 4096)] {
            let l = DiskLayout::plan(esp, state);
            let (first, last) = l.usable();
            assert!(l.esp.first_lba >= first);
            assert!(l.state.last_lba <= last);
            assert_eq!(l.total_bytes % MIB, 0);
        }
    }

    fn gpt_image(seed: &IdSeed) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        let layout = DiskLayout::plan(40, 20);
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(layout.total_bytes).unwrap();
        write_gpt(&mut f, layout, seed).unwrap();
        drop(f);
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn the_gpt_is_reproducible_and_reads_back_with_names() {
        let seed = IdSeed::new("0.1.0", SourceDateEpoch::new(1_700_000_000).unwrap());
        let a = gpt_image(&seed);
        assert!(a == gpt_image(&seed));
        let disk = gpt::GptConfig::new()
            .open_from_device(std::io::Cursor::new(a))
            .unwrap();
        let parts = disk.partitions();
        assert_eq!(parts[&1].name, "CAIRN-ESP");
        assert_eq!(parts[&1].part_type_guid, gpt::partition_types::EFI);
        assert_eq!(parts[&2].name, "CAIRN-STATE");
        assert_eq!(
            parts[&2].first_lba,
            DiskLayout::plan(40, 20).state.first_lba
        );
        assert_eq!(*disk.guid(), seed.uuid("gpt-disk"));
    }
}
