//! Repairs the `.` and `..` entries `fatfs` 0.3 writes into new directories.
//!
//! `fatfs` 0.3.6 puts a long-file-name entry before each of `.` and `..`,
//! and points `..` of a top-level directory at the root's cluster instead of
//! cluster 0. Firmware does not mind, but the FAT specification and
//! `fsck.fat` do: `.` must be the first slot, `..` the second, and a `..`
//! that means the root holds 0. This pass runs on the finished volume and
//! rewrites the first cluster of every directory into that form. It works
//! on bytes only; [`repair`] is the one entry point.

use std::io::{Read, Seek, SeekFrom, Write};

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0F;
const ATTR_DIR: u8 = 0x10;
const DELETED: u8 = 0xE5;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// Why a volume could not be repaired.
#[derive(Debug, thiserror::Error)]
pub enum FatDotsError {
    #[error("reading or writing the FAT volume")]
    Io(#[from] std::io::Error),
    #[error("not a FAT32 boot sector")]
    NotFat32,
    #[error("directory at cluster {0} spans more than one cluster")]
    LongDirectory(u32),
    #[error("directory tree deeper than 16 levels")]
    TooDeep,
}

/// The volume geometry from a FAT32 boot sector.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    cluster_bytes: u64,
    fat_offset: u64,
    data_offset: u64,
    root_cluster: u32,
}

impl Geometry {
    fn parse(bs: &[u8; 512]) -> Result<Self, FatDotsError> {
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]);
        let bytes_per_sector = u16_at(11);
        let sectors_per_cluster = u64::from(bs[13]);
        let reserved = u16_at(14);
        let fats = u64::from(bs[16]);
        let fat_sectors = u64::from(u32_at(36));
        if bs[510..512] != [0x55, 0xAA]
            || bytes_per_sector == 0
            || sectors_per_cluster == 0
            || u16_at(17) != 0 // FAT32 has no fixed root directory
            || fat_sectors == 0
        {
            return Err(FatDotsError::NotFat32);
        }
        Ok(Geometry {
            cluster_bytes: bytes_per_sector * sectors_per_cluster,
            fat_offset: reserved * bytes_per_sector,
            data_offset: (reserved + fats * fat_sectors) * bytes_per_sector,
            root_cluster: u32_at(44),
        })
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster.saturating_sub(2)) * self.cluster_bytes
    }
}

fn entry_cluster(e: &[u8]) -> u32 {
    (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
        | u32::from(u16::from_le_bytes([e[26], e[27]]))
}

fn set_entry_cluster(e: &mut [u8], cluster: u32) {
    let [a, b, c, d] = cluster.to_le_bytes();
    e[26] = a;
    e[27] = b;
    e[20] = c;
    e[21] = d;
}

/// Rewrites one directory cluster so that `.` and `..` are its first two
/// slots with no long-name entries, `..` holding `parent` (0 for the root).
/// Returns the subdirectories it lists.
pub fn repair_cluster(dir: &mut [u8], parent: u32) -> Vec<u32> {
    let slots: Vec<Vec<u8>> = dir.chunks_exact(ENTRY).map(<[u8]>::to_vec).collect();
    let mut dot = None;
    let mut dotdot = None;
    let mut rest = Vec::new();
    let mut pending_lfn = Vec::new();
    for slot in slots {
        match slot[0] {
            0 => break,
            DELETED => continue,
            _ => {}
        }
        if slot[11] == ATTR_LFN {
            pending_lfn.push(slot);
            continue;
        }
        let name = &slot[..11];
        if name == DOT {
            dot = Some(slot);
        } else if name == DOTDOT {
            dotdot = Some(slot);
        } else {
            rest.append(&mut pending_lfn);
            rest.push(slot);
        }
        // Long names in front of `.`/`..` are dropped with them.
        pending_lfn.clear();
    }
    let mut subdirs = Vec::new();
    let mut out = Vec::with_capacity(dir.len());
    if let Some(dot) = dot {
        out.extend_from_slice(&dot);
    }
    if let Some(mut dotdot) = dotdot {
        set_entry_cluster(&mut dotdot, parent);
        out.extend_from_slice(&dotdot);
    }
    for slot in &rest {
        if slot[11] & ATTR_DIR != 0 && slot[11] != ATTR_LFN {
            subdirs.push(entry_cluster(slot));
        }
        out.extend_from_slice(slot);
    }
    out.resize(dir.len(), 0);
    dir.copy_from_slice(&out);
    subdirs
}

/// Repairs every directory of the FAT32 volume in `disk`.
pub fn repair<D: Read + Write + Seek>(disk: &mut D) -> Result<(), FatDotsError> {
    let mut bs = [0u8; 512];
    disk.seek(SeekFrom::Start(0))?;
    disk.read_exact(&mut bs)?;
    let geo = Geometry::parse(&bs)?;
    let cluster_len = usize::try_from(geo.cluster_bytes).map_err(|_| FatDotsError::NotFat32)?;
    // The root has no `.`/`..`; start with its children, whose parent is 0.
    let mut root = vec![0u8; cluster_len];
    disk.seek(SeekFrom::Start(geo.cluster_offset(geo.root_cluster)))?;
    disk.read_exact(&mut root)?;
    let mut stack: Vec<(u32, u32, usize)> = root
        .chunks_exact(ENTRY)
        .take_while(|e| e[0] != 0)
        .filter(|e| e[0] != DELETED && e[11] != ATTR_LFN && e[11] & ATTR_DIR != 0)
        .map(|e| (entry_cluster(e), 0, 1))
        .collect();
    while let Some((cluster, parent, depth)) = stack.pop() {
        if depth > 16 {
            return Err(FatDotsError::TooDeep);
        }
        let mut next = [0u8; 4];
        disk.seek(SeekFrom::Start(geo.fat_offset + u64::from(cluster) * 4))?;
        disk.read_exact(&mut next)?;
        if u32::from_le_bytes(next) & 0x0FFF_FFFF < 0x0FFF_FFF8 {
            return Err(FatDotsError::LongDirectory(cluster));
        }
        let mut dir = vec![0u8; cluster_len];
        disk.seek(SeekFrom::Start(geo.cluster_offset(cluster)))?;
        disk.read_exact(&mut dir)?;
        let children = repair_cluster(&mut dir, parent);
        disk.seek(SeekFrom::Start(geo.cluster_offset(cluster)))?;
        disk.write_all(&dir)?;
        stack.extend(children.into_iter().map(|c| (c, cluster, depth + 1)));
    }
    disk.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(name: &[u8; 11], attr: u8, cluster: u32) -> Vec<u8> {
        let mut e = vec![0u8; ENTRY];
        e[..11].copy_from_slice(name);
        e[11] = attr;
        set_entry_cluster(&mut e, cluster);
        e
    }

    fn lfn() -> Vec<u8> {
        let mut e = vec![0xFFu8; ENTRY];
        e[0] = 0x41;
        e[11] = ATTR_LFN;
        e
    }

    #[test]
    fn dot_entries_move_to_the_front_without_long_names_and_dotdot_of_a_top_dir_is_zero() {
        let mut dir = [
            lfn(),
            entry(DOT, ATTR_DIR, 3),
            lfn(),
            entry(DOTDOT, ATTR_DIR, 2),
            lfn(),
            entry(b"BOOT       ", ATTR_DIR, 4),
        ]
        .concat();
        dir.resize(512, 0);
        let subdirs = repair_cluster(&mut dir, 0);
        assert_eq!(&dir[..11], DOT);
        assert_eq!(&dir[32..43], DOTDOT);
        assert_eq!(entry_cluster(&dir[32..64]), 0);
        assert_eq!(dir[64 + 11], ATTR_LFN, "a real file's long name stays");
        assert_eq!(&dir[96..107], b"BOOT       ");
        assert_eq!(dir[128], 0, "the directory ends after its entries");
        assert_eq!(subdirs, [4]);
    }

    proptest! {
        #[test]
        fn repair_never_panics_and_keeps_the_size(bytes in proptest::collection::vec(any::<u8>(), 0..1024), parent in any::<u32>()) {
            let mut dir = bytes.clone();
            let _ = repair_cluster(&mut dir, parent);
            prop_assert_eq!(dir.len(), bytes.len());
        }
    }
}
