//! The EFI system partition: systemd-boot, its configuration, and one
//! Boot Loader Specification entry pointing at this version's kernel and
//! initramfs.
//!
//! The file set is computed by a pure function ([`EspContents::cairn`]);
//! [`write_fat32`] then formats a FAT32 file system with `fatfs` and
//! writes the set in sorted order with every timestamp at
//! `SOURCE_DATE_EPOCH` and a derived volume id, so the bytes are stable.
//! [`crate::fat_dots`] then puts each directory's `.` and `..` entries in
//! the form `fsck.fat` expects. `loader.conf` never sets `default`: with it, systemd-boot keeps booting
//! an entry whose boot counter ran out instead of falling back.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};

use crate::profile::KernelCmdline;
use crate::reproducible::SourceDateEpoch;

/// FAT volume label and GPT partition name of the ESP.
pub const ESP_LABEL: &str = "CAIRN-ESP";

/// `loader/loader.conf`: boot the first entry at once; no `default`.
pub fn loader_conf() -> String {
    "timeout 0\n".to_owned()
}

/// The directory on the ESP holding one version's kernel and initramfs.
pub fn version_dir(version: &str) -> String {
    format!("cairn/{version}")
}

/// The BLS entry file name for `version` (no boot counter: the image's
/// first entry is known good).
pub fn entry_path(version: &str) -> String {
    format!("loader/entries/cairn-{version}.conf")
}

/// A Boot Loader Specification type #1 entry.
pub fn bls_entry(version: &str, cmdline: &KernelCmdline) -> String {
    let dir = version_dir(version);
    format!(
        "title Cairn {version}\n\
         version {version}\n\
         sort-key cairn\n\
         linux /{dir}/vmlinuz\n\
         initrd /{dir}/initramfs.img\n\
         options {cmdline}\n"
    )
}

/// Files to put on the ESP: path (relative, `/`-separated) -> bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EspContents {
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Inputs of an ESP.
#[derive(Debug)]
pub struct EspInputs<'a> {
    pub version: &'a str,
    pub cmdline: &'a KernelCmdline,
    pub systemd_boot: &'a [u8],
    pub vmlinuz: &'a [u8],
    pub initramfs: &'a [u8],
    /// Optional first-boot machine config (`cairn/config.toml`).
    pub machine_config: Option<&'a [u8]>,
}

impl EspContents {
    pub fn cairn(inputs: &EspInputs<'_>) -> Self {
        let dir = version_dir(inputs.version);
        let mut files = BTreeMap::new();
        files.insert(
            "EFI/BOOT/BOOTX64.EFI".to_owned(),
            inputs.systemd_boot.to_vec(),
        );
        files.insert("loader/loader.conf".to_owned(), loader_conf().into_bytes());
        files.insert(
            entry_path(inputs.version),
            bls_entry(inputs.version, inputs.cmdline).into_bytes(),
        );
        files.insert(format!("{dir}/vmlinuz"), inputs.vmlinuz.to_vec());
        files.insert(format!("{dir}/initramfs.img"), inputs.initramfs.to_vec());
        if let Some(config) = inputs.machine_config {
            files.insert("cairn/config.toml".to_owned(), config.to_vec());
        }
        Self { files }
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|d| d.len() as u64).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("formatting the FAT32 file system")]
    Format(#[source] std::io::Error),
    #[error("writing {path} to the ESP")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the ESP files need {needed} bytes but the partition holds {available}")]
    TooSmall { needed: u64, available: u64 },
    #[error("repairing the ESP's directory entries")]
    DotEntries(#[source] crate::fat_dots::FatDotsError),
}

/// Every FAT timestamp is this one.
#[derive(Debug)]
struct FixedTime(fatfs::DateTime);

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

fn fat_time(epoch: SourceDateEpoch) -> fatfs::DateTime {
    let c = epoch.civil();
    fatfs::DateTime {
        date: fatfs::Date {
            year: c.year,
            month: u16::from(c.month),
            day: u16::from(c.day),
        },
        time: fatfs::Time {
            hour: u16::from(c.hour),
            min: u16::from(c.minute),
            sec: u16::from(c.second),
            millis: 0,
        },
    }
}

/// 11 bytes, space padded, as the FAT boot sector stores it.
fn volume_label(label: &str) -> [u8; 11] {
    let mut out = [b' '; 11];
    for (dst, src) in out.iter_mut().zip(label.bytes()) {
        *dst = src.to_ascii_uppercase();
    }
    out
}

/// Formats `disk` (exactly the partition's bytes, zero-filled) as FAT32
/// and writes `contents`.
pub fn write_fat32<D>(
    mut disk: D,
    contents: &EspContents,
    volume_id: u32,
    epoch: SourceDateEpoch,
) -> Result<D, EspError>
where
    D: Read + Write + Seek,
{
    let size = disk
        .seek(std::io::SeekFrom::End(0))
        .map_err(EspError::Format)?;
    disk.seek(std::io::SeekFrom::Start(0))
        .map_err(EspError::Format)?;
    // 4 KiB clusters keep FAT32 legal (>= 65525 clusters) from 260 MiB up;
    // smaller ESPs fall back to 512-byte clusters.
    let cluster = if size >= 300 * 1024 * 1024 { 4096 } else { 512 };
    let options = fatfs::FormatVolumeOptions::new()
        .fat_type(fatfs::FatType::Fat32)
        .bytes_per_cluster(cluster)
        .volume_id(volume_id)
        .volume_label(volume_label(ESP_LABEL));
    fatfs::format_volume(&mut disk, options).map_err(EspError::Format)?;

    // fatfs wants a 'static time provider; one small leak per image built.
    let time: &'static FixedTime = Box::leak(Box::new(FixedTime(fat_time(epoch))));
    let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new().time_provider(time))
        .map_err(EspError::Format)?;
    let free = fs
        .stats()
        .map(|s| u64::from(s.free_clusters()) * u64::from(s.cluster_size()))
        .map_err(EspError::Format)?;
    if contents.total_bytes() > free {
        return Err(EspError::TooSmall {
            needed: contents.total_bytes(),
            available: free,
        });
    }
    {
        let root = fs.root_dir();
        for (path, data) in &contents.files {
            let write_err = |source| EspError::Write {
                path: path.clone(),
                source,
            };
            let mut dir = root.clone();
            let mut parts: Vec<&str> = path.split('/').collect();
            let name = parts.pop().unwrap_or_default();
            for part in parts {
                dir = match dir.open_dir(part) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(part).map_err(write_err)?,
                };
            }
            let mut file = dir.create_file(name).map_err(write_err)?;
            file.truncate().map_err(write_err)?;
            file.write_all(data).map_err(write_err)?;
            file.flush().map_err(write_err)?;
        }
    }
    fs.unmount().map_err(EspError::Format)?;
    crate::fat_dots::repair(&mut disk).map_err(EspError::DotEntries)?;
    Ok(disk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn cmdline() -> KernelCmdline {
        KernelCmdline::try_from("console=ttyS0,115200 panic=10".to_owned()).unwrap()
    }

    #[test]
    fn the_bls_entry_points_at_the_versioned_files() {
        assert_eq!(
            bls_entry("0.1.0", &cmdline()),
            "title Cairn 0.1.0\nversion 0.1.0\nsort-key cairn\n\
             linux /cairn/0.1.0/vmlinuz\ninitrd /cairn/0.1.0/initramfs.img\n\
             options console=ttyS0,115200 panic=10\n"
        );
    }

    #[test]
    fn loader_conf_never_sets_a_default() {
        let conf = loader_conf();
        assert!(conf.lines().any(|l| l == "timeout 0"));
        assert!(!conf.lines().any(|l| l.starts_with("default")));
    }

    fn contents() -> EspContents {
        EspContents::cairn(&EspInputs {
            version: "0.1.0",
            cmdline: &cmdline(),
            systemd_boot: b"MZ-boot",
            vmlinuz: &[1; 5000],
            initramfs: &[2; 70_000],
            machine_config: Some(b"hostname = \"a\"\n"),
        })
    }

    fn image() -> Vec<u8> {
        let disk = Cursor::new(vec![0u8; 40 * 1024 * 1024]);
        let epoch = SourceDateEpoch::new(1_700_000_000).unwrap();
        write_fat32(disk, &contents(), 0x1234_5678, epoch)
            .unwrap()
            .into_inner()
    }

    #[test]
    fn two_esps_from_the_same_inputs_are_byte_identical() {
        assert!(image() == image());
    }

    #[test]
    fn the_esp_reads_back_as_fat32_with_label_and_files() {
        let img = image();
        let fs = fatfs::FileSystem::new(Cursor::new(img), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.fat_type(), fatfs::FatType::Fat32);
        assert_eq!(fs.volume_label(), ESP_LABEL);
        assert_eq!(fs.volume_id(), 0x1234_5678);
        let root = fs.root_dir();
        for (path, data) in &contents().files {
            let mut f = root.open_file(path).unwrap();
            let mut back = Vec::new();
            f.read_to_end(&mut back).unwrap();
            assert_eq!(&back, data, "{path}");
        }
        let entry = root
            .open_dir("loader/entries")
            .unwrap()
            .iter()
            .map(Result::unwrap)
            .find(|e| e.file_name() == "cairn-0.1.0.conf")
            .unwrap();
        let modified = entry.modified();
        assert_eq!(
            (modified.date.year, modified.date.month, modified.date.day),
            (2023, 11, 14)
        );
    }

    #[test]
    fn contents_larger_than_the_partition_are_refused() {
        let mut big = contents();
        big.files
            .insert("huge".to_owned(), vec![0; 41 * 1024 * 1024]);
        let disk = Cursor::new(vec![0u8; 40 * 1024 * 1024]);
        let epoch = SourceDateEpoch::new(1_700_000_000).unwrap();
        assert!(matches!(
            write_fat32(disk, &big, 1, epoch),
            Err(EspError::TooSmall { .. })
        ));
    }
}
