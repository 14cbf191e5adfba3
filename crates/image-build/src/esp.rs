//! The EFI system partition: systemd-boot, its configuration, and one
//! Boot Loader Specification entry pointing at this version's kernel and
//! initramfs.
//!
//! The file set is computed by a pure function ([`EspContents::cairn`]);
//! [`write_fat32`] then formats a FAT32 file system with `fatfs` and
//! writes the set in sorted order with every timestamp at
//! `SOURCE_DATE_EPOCH` and a derived volume id, so the bytes are stable.
//! [`crate::fat_dots`] then puts each directory's `.` and `..` entries in
//! the form `fsck.fat` expects. Baked image archives ([`crate::bake`]) go
//! in the version directory and are streamed from the build host rather
//! than held in memory. `loader.conf` never sets `default`: with it, systemd-boot keeps booting
//! an entry whose boot counter ran out instead of falling back.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use crate::bake::{self, BakedArchive};

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

/// What one ESP file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EspFile {
    /// Bytes made by the build.
    Bytes(Vec<u8>),
    /// A file on the build host, copied in as it is (baked archives can be
    /// larger than the builder should hold in memory). `len` was taken
    /// when the file was checked; a file that changed size since fails
    /// the write.
    Host { path: PathBuf, len: u64 },
}

impl EspFile {
    pub fn len(&self) -> u64 {
        match self {
            EspFile::Bytes(data) => data.len() as u64,
            EspFile::Host { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Vec<u8>> for EspFile {
    fn from(data: Vec<u8>) -> Self {
        EspFile::Bytes(data)
    }
}

/// Files to put on the ESP: path (relative, `/`-separated) -> contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EspContents {
    pub files: BTreeMap<String, EspFile>,
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
    /// Archives to bake into the image store, checked already.
    pub baked: &'a [BakedArchive],
}

impl EspContents {
    pub fn cairn(inputs: &EspInputs<'_>) -> Self {
        let dir = version_dir(inputs.version);
        let mut files: BTreeMap<String, EspFile> = BTreeMap::new();
        files.insert(
            "EFI/BOOT/BOOTX64.EFI".to_owned(),
            inputs.systemd_boot.to_vec().into(),
        );
        files.insert(
            "loader/loader.conf".to_owned(),
            loader_conf().into_bytes().into(),
        );
        files.insert(
            entry_path(inputs.version),
            bls_entry(inputs.version, inputs.cmdline)
                .into_bytes()
                .into(),
        );
        files.insert(format!("{dir}/vmlinuz"), inputs.vmlinuz.to_vec().into());
        files.insert(
            format!("{dir}/initramfs.img"),
            inputs.initramfs.to_vec().into(),
        );
        if let Some(config) = inputs.machine_config {
            files.insert("cairn/config.toml".to_owned(), config.to_vec().into());
        }
        if !inputs.baked.is_empty() {
            let images = bake::images_dir(inputs.version);
            for archive in inputs.baked {
                files.insert(
                    format!("{images}/{}", archive.name),
                    EspFile::Host {
                        path: archive.source.clone(),
                        len: archive.len,
                    },
                );
            }
            files.insert(
                format!("{images}/{}", bake::SUMS_FILE),
                bake::sums_file(inputs.baked).into_bytes().into(),
            );
        }
        Self { files }
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(EspFile::len).sum()
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
    #[error("{path} was {expected} bytes when checked but {actual} when copied to the ESP")]
    Changed {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
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
            match data {
                EspFile::Bytes(bytes) => file.write_all(bytes).map_err(write_err)?,
                EspFile::Host { path: host, len } => {
                    let source = std::fs::File::open(host).map_err(write_err)?;
                    let copied =
                        std::io::copy(&mut source.take(len + 1), &mut file).map_err(write_err)?;
                    if copied != *len {
                        return Err(EspError::Changed {
                            path: host.clone(),
                            expected: *len,
                            actual: copied,
                        });
                    }
                }
            }
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
            baked: &[],
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
            assert_eq!(&EspFile::Bytes(back), data, "{path}");
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
    fn baked_archives_are_copied_from_the_host_beside_their_sums() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("redis.tar");
        let archive: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&source, &archive).unwrap();
        let baked = [BakedArchive {
            source,
            name: "redis.tar".to_owned(),
            len: archive.len() as u64,
            sha256: "ab".repeat(32),
            images: vec!["redis:7".to_owned()],
        }];
        let contents = EspContents::cairn(&EspInputs {
            version: "0.1.0",
            cmdline: &cmdline(),
            systemd_boot: b"MZ-boot",
            vmlinuz: &[1; 5000],
            initramfs: &[2; 70_000],
            machine_config: None,
            baked: &baked,
        });
        let disk = Cursor::new(vec![0u8; 40 * 1024 * 1024]);
        let epoch = SourceDateEpoch::new(1_700_000_000).unwrap();
        let img = write_fat32(disk, &contents, 7, epoch).unwrap().into_inner();
        let fs = fatfs::FileSystem::new(Cursor::new(img), fatfs::FsOptions::new()).unwrap();
        let read = |path: &str| {
            let mut back = Vec::new();
            fs.root_dir()
                .open_file(path)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            back
        };
        assert!(read("cairn/0.1.0/images/redis.tar") == archive);
        assert_eq!(
            String::from_utf8(read("cairn/0.1.0/images/SHA256SUMS")).unwrap(),
            format!("{}  redis.tar\n", "ab".repeat(32))
        );
    }

    #[test]
    fn a_baked_archive_that_changed_size_since_its_check_fails_the_write() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("a.tar");
        std::fs::write(&source, [0u8; 2000]).unwrap();
        let mut contents = contents();
        contents.files.insert(
            "cairn/0.1.0/images/a.tar".to_owned(),
            EspFile::Host {
                path: source,
                len: 1000,
            },
        );
        let disk = Cursor::new(vec![0u8; 40 * 1024 * 1024]);
        let epoch = SourceDateEpoch::new(1_700_000_000).unwrap();
        assert!(matches!(
            write_fat32(disk, &contents, 1, epoch),
            Err(EspError::Changed { actual: 1001, .. })
        ));
    }

    #[test]
    fn contents_larger_than_the_partition_are_refused() {
        let mut big = contents();
        big.files
            .insert("huge".to_owned(), vec![0; 41 * 1024 * 1024].into());
        let disk = Cursor::new(vec![0u8; 40 * 1024 * 1024]);
        let epoch = SourceDateEpoch::new(1_700_000_000).unwrap();
        assert!(matches!(
            write_fat32(disk, &big, 1, epoch),
            Err(EspError::TooSmall { .. })
        ));
    }
}
