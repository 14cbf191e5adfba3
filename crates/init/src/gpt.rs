//! Growing the last GPT partition to the end of its disk, as pure code.
//!
//! An image is written small and the disk it lands on is bigger: the backup
//! GPT then sits in the middle of the disk and the STATE partition ends long
//! before the disk does. [`plan_grow`] reads the primary header and entries
//! and returns the writes that move the backup GPT to the last sectors and
//! stretch the partition to the new last usable sector. The writes are
//! ordered so that a crash part-way leaves a valid primary GPT: backup
//! entries and header first, then primary entries, then the primary header.

/// GPT header signature.
const SIGNATURE: &[u8; 8] = b"EFI PART";

/// Why the partition table could not be read or grown.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GptError {
    #[error("no GPT signature in sector 1")]
    NoSignature,
    #[error("GPT header checksum mismatch")]
    HeaderChecksum,
    #[error("GPT partition entries checksum mismatch")]
    EntriesChecksum,
    #[error("GPT header field {0} is out of range")]
    BadField(&'static str),
    #[error("partition {0} is not in the table")]
    NoSuchPartition(u32),
    #[error("partition {0} is not the last one on the disk")]
    NotLast(u32),
}

/// The parts of the primary header that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sector_size: u64,
    pub header_size: u32,
    pub current_lba: u64,
    pub backup_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entry_size: u32,
    raw: Vec<u8>,
}

impl Header {
    /// Parses and checks the header found at `bytes` (one sector).
    pub fn parse(bytes: &[u8], sector_size: u64) -> Result<Self, GptError> {
        if bytes.get(0..8) != Some(SIGNATURE.as_slice()) {
            return Err(GptError::NoSignature);
        }
        let header_size = le32(bytes, 12);
        let hs = usize::try_from(header_size).map_err(|_| GptError::BadField("header size"))?;
        if !(92..=bytes.len()).contains(&hs) {
            return Err(GptError::BadField("header size"));
        }
        let mut raw = bytes[..hs].to_vec();
        let stored_crc = le32(&raw, 16);
        raw[16..20].fill(0);
        if crc32fast::hash(&raw) != stored_crc {
            return Err(GptError::HeaderChecksum);
        }
        let h = Header {
            sector_size,
            header_size,
            current_lba: le64(bytes, 24),
            backup_lba: le64(bytes, 32),
            first_usable: le64(bytes, 40),
            last_usable: le64(bytes, 48),
            entries_lba: le64(bytes, 72),
            num_entries: le32(bytes, 80),
            entry_size: le32(bytes, 84),
            raw,
        };
        if h.entry_size < 128
            || h.entry_size > 4096
            || !h.entry_size.is_multiple_of(8)
            || h.num_entries == 0
            || h.num_entries > 1024
        {
            return Err(GptError::BadField("partition entry array"));
        }
        Ok(h)
    }

    /// Bytes taken by the partition entry array.
    pub fn entries_len(&self) -> u64 {
        u64::from(self.num_entries) * u64::from(self.entry_size)
    }

    fn entries_sectors(&self) -> u64 {
        self.entries_len().div_ceil(self.sector_size)
    }

    fn entries_crc(&self) -> u32 {
        le32(&self.raw, 88)
    }

    /// Serialises a header with changed LBAs, its checksum recomputed.
    fn with(
        &self,
        current: u64,
        backup: u64,
        last_usable: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> Vec<u8> {
        let mut raw = self.raw.clone();
        raw[24..32].copy_from_slice(&current.to_le_bytes());
        raw[32..40].copy_from_slice(&backup.to_le_bytes());
        raw[48..56].copy_from_slice(&last_usable.to_le_bytes());
        raw[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        raw[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        raw[16..20].fill(0);
        let crc = crc32fast::hash(&raw);
        raw[16..20].copy_from_slice(&crc.to_le_bytes());
        let mut sector = raw;
        sector.resize(usize::try_from(self.sector_size).unwrap_or(512), 0);
        sector
    }
}

/// A write the grow needs, at a byte offset on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// What growing does, or nothing when the partition already fills the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowPlan {
    pub writes: Vec<Write>,
    /// The partition's new extent, in bytes, for the kernel (BLKPG).
    pub start: u64,
    pub len: u64,
}

/// The extent of partition `partno` (1-based) in bytes.
pub fn partition_extent(
    header: &Header,
    entries: &[u8],
    partno: u32,
) -> Result<(u64, u64), GptError> {
    let (first, last) = entry_lbas(header, entries, partno)?;
    Ok((
        first * header.sector_size,
        (last - first + 1) * header.sector_size,
    ))
}

fn entry_lbas(header: &Header, entries: &[u8], partno: u32) -> Result<(u64, u64), GptError> {
    if partno == 0 || partno > header.num_entries {
        return Err(GptError::NoSuchPartition(partno));
    }
    let off = entry_offset(header, partno);
    let entry = entries
        .get(off..off + 48)
        .ok_or(GptError::NoSuchPartition(partno))?;
    if entry[..16].iter().all(|&b| b == 0) {
        return Err(GptError::NoSuchPartition(partno));
    }
    let (first, last) = (le64(entry, 32), le64(entry, 40));
    if first > last {
        return Err(GptError::BadField("partition extent"));
    }
    Ok((first, last))
}

fn entry_offset(header: &Header, partno: u32) -> usize {
    // partno is bounded by num_entries (<= 1024) and entry_size is small.
    (partno as usize - 1) * header.entry_size as usize
}

/// Plans moving the backup GPT to the end of a disk of `disk_bytes` and
/// growing partition `partno` to the new last usable sector.
///
/// Returns `Ok(None)` when the partition already ends within `slack` bytes
/// of the last usable sector (the image is already grown).
pub fn plan_grow(
    header: &Header,
    entries: &[u8],
    disk_bytes: u64,
    partno: u32,
    slack: u64,
) -> Result<Option<GrowPlan>, GptError> {
    if u64::try_from(entries.len()).ok() != Some(header.entries_len()) {
        return Err(GptError::BadField("partition entry array"));
    }
    if crc32fast::hash(entries) != header.entries_crc() {
        return Err(GptError::EntriesChecksum);
    }
    let ss = header.sector_size;
    let last_lba = (disk_bytes / ss)
        .checked_sub(1)
        .ok_or(GptError::BadField("disk size"))?;
    let backup_entries_lba = last_lba
        .checked_sub(header.entries_sectors())
        .ok_or(GptError::BadField("disk size"))?;
    let new_last_usable = backup_entries_lba - 1;
    if new_last_usable < header.last_usable {
        return Err(GptError::BadField("disk size"));
    }
    let (first, last) = entry_lbas(header, entries, partno)?;
    for other in 1..=header.num_entries {
        if other != partno
            && let Ok((_, other_last)) = entry_lbas(header, entries, other)
            && other_last > last
        {
            return Err(GptError::NotLast(partno));
        }
    }
    if last > new_last_usable {
        return Err(GptError::BadField("partition extent"));
    }
    if (new_last_usable - last) * ss <= slack {
        return Ok(None);
    }
    let mut new_entries = entries.to_vec();
    let off = entry_offset(header, partno);
    new_entries[off + 40..off + 48].copy_from_slice(&new_last_usable.to_le_bytes());
    let crc = crc32fast::hash(&new_entries);
    let backup = header.with(
        last_lba,
        header.current_lba,
        new_last_usable,
        backup_entries_lba,
        crc,
    );
    let primary = header.with(
        header.current_lba,
        last_lba,
        new_last_usable,
        header.entries_lba,
        crc,
    );
    Ok(Some(GrowPlan {
        writes: vec![
            Write {
                offset: backup_entries_lba * ss,
                data: new_entries.clone(),
            },
            Write {
                offset: last_lba * ss,
                data: backup,
            },
            Write {
                offset: header.entries_lba * ss,
                data: new_entries,
            },
            Write {
                offset: header.current_lba * ss,
                data: primary,
            },
        ],
        start: first * ss,
        len: (new_last_usable - first + 1) * ss,
    }))
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test disks are a few MiB")]
pub mod testdisk {
    //! A minimal GPT disk image builder for tests.

    /// Builds a disk of `size` bytes (512-byte sectors, 128 entries) holding
    /// the given partitions as (first_lba, last_lba, name).
    pub fn build(size: usize, parts: &[(u64, u64, &str)]) -> Vec<u8> {
        let ss = 512u64;
        let last = size as u64 / ss - 1;
        let mut disk = vec![0u8; size];
        let mut entries = vec![0u8; 128 * 128];
        for (i, (first, end, name)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(&[0xAF; 16]);
            e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&end.to_le_bytes());
            for (j, u) in name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&entries);
        let header = |current: u64, backup: u64, entries_lba: u64| {
            let mut h = vec![0u8; 92];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&current.to_le_bytes());
            h[32..40].copy_from_slice(&backup.to_le_bytes());
            h[40..48].copy_from_slice(&34u64.to_le_bytes());
            h[48..56].copy_from_slice(&(last - 33).to_le_bytes());
            h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&crc.to_le_bytes());
            let hcrc = crc32fast::hash(&h);
            h[16..20].copy_from_slice(&hcrc.to_le_bytes());
            h
        };
        disk[512..604].copy_from_slice(&header(1, last, 2));
        disk[1024..1024 + entries.len()].copy_from_slice(&entries);
        let be = (last - 32) as usize * 512;
        disk[be..be + entries.len()].copy_from_slice(&entries);
        disk[last as usize * 512..last as usize * 512 + 92].copy_from_slice(&header(
            last,
            1,
            last - 32,
        ));
        disk
    }
}

#[cfg(test)]
#[expect(clippy::cast_possible_truncation, reason = "test disks are a few MiB")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: usize = 1 << 20;

    fn small_disk() -> Vec<u8> {
        // ESP 1..2 MiB, STATE 2..3 MiB on a 4 MiB image.
        testdisk::build(
            4 * MIB,
            &[(2048, 4095, "CAIRN-ESP"), (4096, 6143, "CAIRN-STATE")],
        )
    }

    fn read(disk: &[u8]) -> (Header, Vec<u8>) {
        let h = Header::parse(&disk[512..1024], 512).unwrap();
        let e = disk[1024..1024 + h.entries_len() as usize].to_vec();
        (h, e)
    }

    fn apply(disk: &mut [u8], plan: &GrowPlan) {
        for w in &plan.writes {
            disk[w.offset as usize..w.offset as usize + w.data.len()].copy_from_slice(&w.data);
        }
    }

    #[test]
    fn state_grows_to_the_end_of_a_bigger_disk_and_backup_moves() {
        let mut disk = small_disk();
        disk.resize(64 * MIB, 0);
        let (h, e) = read(&disk);
        let plan = plan_grow(&h, &e, disk.len() as u64, 2, MIB as u64)
            .unwrap()
            .unwrap();
        let last_lba = (64 * MIB / 512 - 1) as u64;
        assert_eq!(plan.start, 4096 * 512);
        assert_eq!(plan.start + plan.len, (last_lba - 32) * 512);
        apply(&mut disk, &plan);
        let (h2, e2) = read(&disk);
        assert_eq!(h2.backup_lba, last_lba);
        assert_eq!(h2.last_usable, last_lba - 33);
        assert_eq!(
            partition_extent(&h2, &e2, 2).unwrap(),
            (plan.start, plan.len)
        );
        let backup = Header::parse(&disk[last_lba as usize * 512..], 512).unwrap();
        assert_eq!(backup.current_lba, last_lba);
        assert_eq!(backup.entries_lba, last_lba - 32);
        // Growing again is a no-op: first boot happens once.
        assert_eq!(
            plan_grow(&h2, &e2, disk.len() as u64, 2, MIB as u64).unwrap(),
            None
        );
    }

    #[test]
    fn a_disk_the_same_size_as_the_image_is_left_alone() {
        let disk = small_disk();
        let (h, e) = read(&disk);
        // STATE ends at 6143 and the last usable LBA is 8158: under 1 MiB.
        assert_eq!(
            plan_grow(&h, &e, disk.len() as u64, 2, MIB as u64).unwrap(),
            None
        );
    }

    #[test]
    fn only_the_last_partition_may_grow() {
        let mut disk = small_disk();
        disk.resize(64 * MIB, 0);
        let (h, e) = read(&disk);
        assert_eq!(
            plan_grow(&h, &e, disk.len() as u64, 1, 0),
            Err(GptError::NotLast(1))
        );
        assert_eq!(
            plan_grow(&h, &e, disk.len() as u64, 3, 0),
            Err(GptError::NoSuchPartition(3))
        );
    }

    #[test]
    fn a_corrupt_header_is_refused() {
        let mut disk = small_disk();
        disk[512 + 40] ^= 1;
        assert_eq!(
            Header::parse(&disk[512..1024], 512),
            Err(GptError::HeaderChecksum)
        );
        assert_eq!(Header::parse(&[0u8; 512], 512), Err(GptError::NoSignature));
    }

    #[test]
    fn corrupt_entries_are_refused() {
        let mut disk = small_disk();
        disk.resize(8 * MIB, 0);
        let (h, mut e) = read(&disk);
        e[200] ^= 1;
        assert_eq!(
            plan_grow(&h, &e, disk.len() as u64, 2, 0),
            Err(GptError::EntriesChecksum)
        );
    }

    proptest! {
        #[test]
        fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Header::parse(&bytes, 512);
        }

        #[test]
        fn header_parser_never_panics_on_signed_garbage(mut bytes in proptest::collection::vec(any::<u8>(), 92..600)) {
            bytes[0..8].copy_from_slice(SIGNATURE);
            let len = bytes.len() as u32;
            let hs = 92 + (u32::from(bytes[12]) % (len - 91));
            bytes[12..16].copy_from_slice(&hs.to_le_bytes());
            let hs = le32(&bytes, 12) as usize;
            bytes[16..20].fill(0);
            let crc = crc32fast::hash(&bytes[..hs]);
            bytes[16..20].copy_from_slice(&crc.to_le_bytes());
            if let Ok(h) = Header::parse(&bytes, 512) {
                let entries = vec![0u8; h.entries_len() as usize];
                let _ = plan_grow(&h, &entries, 1 << 30, 1, 0);
            }
        }
    }
}
