//! Baked images: oci-archives carried on the ESP so that a node installed
//! from the disk image (or a VM template) has them in its image store on
//! first start, with no registry and no `cairn image import`.
//!
//! Each archive given to `cairn-image build --bake-image FILE` is checked
//! here at build time, in full: it is extracted with the same reader the
//! node uses ([`oci::archive::read_archive`], which verifies every blob),
//! it must name at least one image, and every named image must resolve to
//! a linux/amd64 config. A bad archive fails the build with its file name,
//! never the node's first boot.
//!
//! The archives go on the ESP as `cairn/<version>/images/<file name>`
//! beside a `SHA256SUMS` in `sha256sum -c` form. They sit in the version
//! directory so they travel with the A/B slot: an upgrade writes a new
//! version directory with that version's baked images, and removing an
//! old slot removes its archives. cairnd reads only the files the
//! `SHA256SUMS` lists, and keys what it imported on those digests, so it
//! never has to hash an archive to learn that it already has it.
//!
//! [`esp_name`] and [`esp_size_mib`] are pure; [`check_archive`] does the
//! reading.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use oci::digest::HashingReader;
use oci_spec::image::{Arch, Os};

use crate::checksums;
use crate::disk::MIB;
use crate::esp;

/// The directory under a version's ESP directory holding its archives.
pub const IMAGES_DIR: &str = "images";
/// The list of baked archives and their SHA-256, in that directory.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// Longest archive file name kept on the ESP (FAT long names allow 255).
pub const MAX_NAME: usize = 100;

/// The ESP directory holding `version`'s baked archives.
pub fn images_dir(version: &str) -> String {
    format!("{}/{IMAGES_DIR}", esp::version_dir(version))
}

/// One archive that passed the build-time checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BakedArchive {
    /// Where it was read from on the build host.
    pub source: PathBuf,
    /// Its file name on the ESP.
    pub name: String,
    /// Its size in bytes.
    pub len: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// The references it names, as `index.json` lists them.
    pub images: Vec<String>,
}

/// Why an archive cannot be baked.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    #[error("--bake-image {path}: the file name cannot go on the ESP: {problem}")]
    Name { path: PathBuf, problem: String },
    #[error("--bake-image {path} and {other} both go on the ESP as {name}")]
    Duplicate {
        path: PathBuf,
        other: PathBuf,
        name: String,
    },
    #[error("--bake-image {path}: cannot read it")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("--bake-image {path}: not a valid oci-archive")]
    Archive {
        path: PathBuf,
        #[source]
        source: Box<oci::archive::ArchiveError>,
    },
    #[error("--bake-image {path}: the archive names no image (index.json has no ref.name)")]
    NoImages { path: PathBuf },
    #[error("--bake-image {path}: image {image} cannot be read")]
    Image {
        path: PathBuf,
        image: String,
        #[source]
        source: Box<oci::LayoutError>,
    },
    #[error("--bake-image {path}: image {image} is {os}/{arch}, not linux/amd64")]
    Platform {
        path: PathBuf,
        image: String,
        os: String,
        arch: String,
    },
}

/// The file name an archive gets on the ESP: its own, if it is a plain
/// portable name. FAT compares names without case, so the caller checks
/// duplicates on the lower-cased name.
pub fn esp_name(path: &Path) -> Result<String, BakeError> {
    let bad = |problem: &str| BakeError::Name {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| bad("it has no UTF-8 file name"))?;
    if name.len() > MAX_NAME {
        return Err(bad(&format!("it is longer than {MAX_NAME} bytes")));
    }
    if name.starts_with('.') {
        return Err(bad("it starts with a dot"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    {
        return Err(bad("use only letters, digits, '.', '_', '-' and '+'"));
    }
    if name.eq_ignore_ascii_case(SUMS_FILE) {
        return Err(bad(&format!("{SUMS_FILE} is the list of baked archives")));
    }
    Ok(name.to_owned())
}

/// Checks every archive (names first, so a clash is reported before any
/// archive is read) and returns them in command-line order.
/// `scratch` is an empty directory the archives are extracted into.
pub fn check_archives(paths: &[PathBuf], scratch: &Path) -> Result<Vec<BakedArchive>, BakeError> {
    let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
    let mut names = Vec::new();
    for path in paths {
        let name = esp_name(path)?;
        if let Some(other) = seen.insert(name.to_ascii_lowercase(), path) {
            return Err(BakeError::Duplicate {
                path: path.clone(),
                other: other.to_owned(),
                name,
            });
        }
        names.push(name);
    }
    paths
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (path, name))| check_archive(path, name, &scratch.join(i.to_string())))
        .collect()
}

/// Reads `path` as the node will, into a new layout at `extract_to`
/// (left for the caller to remove), hashing the file on the way.
pub fn check_archive(
    path: &Path,
    name: String,
    extract_to: &Path,
) -> Result<BakedArchive, BakeError> {
    let io_err = |source| BakeError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut reader = HashingReader::new(BufReader::new(file));
    let (layout, refs) = oci::archive::read_archive(&mut reader, extract_to).map_err(|source| {
        BakeError::Archive {
            path: path.to_owned(),
            source: Box::new(source),
        }
    })?;
    // Tar writers pad past the end-of-archive marker; the digest covers
    // the whole file, as sha256sum sees it.
    reader.drain().map_err(io_err)?;
    let (digest, len) = reader.finish();
    if refs.is_empty() {
        return Err(BakeError::NoImages {
            path: path.to_owned(),
        });
    }
    let mut images = Vec::with_capacity(refs.len());
    for reference in refs {
        let image = layout
            .resolve(&reference)
            .map_err(|source| BakeError::Image {
                path: path.to_owned(),
                image: reference.to_string(),
                source: Box::new(source),
            })?;
        let (os, arch) = (image.config.os(), image.config.architecture());
        if *os != Os::Linux || *arch != Arch::Amd64 {
            return Err(BakeError::Platform {
                path: path.to_owned(),
                image: reference.to_string(),
                os: os.to_string(),
                arch: arch.to_string(),
            });
        }
        images.push(reference.to_string());
    }
    Ok(BakedArchive {
        source: path.to_owned(),
        name,
        len,
        sha256: digest.hex().to_owned(),
        images,
    })
}

/// The `SHA256SUMS` listing the archives, names relative to its directory.
pub fn sums_file(archives: &[BakedArchive]) -> String {
    let entries: Vec<(String, String)> = archives
        .iter()
        .map(|a| (a.name.clone(), a.sha256.clone()))
        .collect();
    checksums::sha256sums(&entries)
}

/// Room FAT32 needs besides the file bytes: two FAT copies (4 bytes per
/// 4 KiB cluster each), the reserved sectors and directories, with margin.
const FAT_OVERHEAD_MIB: u64 = 8;

/// The ESP size for `files` files of `bytes` in total: the profile's size,
/// or more when the files need it (each file can waste up to one 4 KiB
/// cluster, and the FATs take 2 x 4 bytes per cluster), in whole MiB.
pub fn esp_size_mib(profile_mib: u32, bytes: u64, files: u64) -> u32 {
    let clusters = bytes.div_ceil(4096) + files;
    let data = clusters * 4096;
    let fats = (clusters * 8).div_ceil(MIB) * MIB;
    let needed = (data + fats).div_ceil(MIB) + FAT_OVERHEAD_MIB;
    u32::try_from(needed).map_or(u32::MAX, |n| n.max(profile_mib))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci_image::{self, ImageSettings, Tree};

    fn image_archive(dir: &Path, file: &str, refs: &[&str]) -> PathBuf {
        let root = dir.join(format!("{file}.root"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/motd"), file.as_bytes()).unwrap();
        let mut tree = Tree::default();
        tree.add_root(&root, &[]).unwrap();
        let layout = dir.join(format!("{file}.layout"));
        for r in refs {
            oci_image::build_image(
                &tree,
                &ImageSettings::default(),
                &oci::RefName::parse(r).unwrap(),
                &layout,
                0,
                "test",
            )
            .unwrap();
        }
        let out = dir.join(file);
        let opened = oci::Layout::open(&layout).unwrap();
        oci::archive::write_archive_file(&opened, &out).unwrap();
        out
    }

    #[test]
    fn plain_file_names_go_on_the_esp_unchanged() {
        assert_eq!(
            esp_name(Path::new("/tmp/x/redis-7.0+dfsg.tar")).unwrap(),
            "redis-7.0+dfsg.tar"
        );
        assert_eq!(esp_name(Path::new("busybox")).unwrap(), "busybox");
    }

    #[test]
    fn names_fat_or_the_node_would_trip_on_are_refused() {
        for bad in [
            "a b.tar",
            ".hidden.tar",
            "sha256sums",
            "SHA256SUMS",
            "ünï.tar",
            "a:b.tar",
        ] {
            assert!(
                matches!(esp_name(Path::new(bad)), Err(BakeError::Name { .. })),
                "{bad} was accepted"
            );
        }
        assert!(esp_name(Path::new(&"a".repeat(MAX_NAME + 1))).is_err());
        assert!(esp_name(Path::new("/")).is_err());
    }

    #[test]
    fn two_archives_with_one_esp_name_are_refused_before_reading() {
        let paths = [PathBuf::from("/a/Redis.tar"), PathBuf::from("/b/redis.tar")];
        let scratch = tempfile::tempdir().unwrap();
        let err = check_archives(&paths, scratch.path()).unwrap_err();
        assert!(matches!(err, BakeError::Duplicate { .. }), "{err}");
        assert!(err.to_string().contains("/b/redis.tar"), "{err}");
    }

    #[test]
    fn a_good_archive_is_described_with_its_digest_and_images() {
        let tmp = tempfile::tempdir().unwrap();
        let path = image_archive(tmp.path(), "two.tar", &["a:1", "b:2"]);
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let baked = check_archives(std::slice::from_ref(&path), &scratch).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            baked,
            vec![BakedArchive {
                source: path.clone(),
                name: "two.tar".to_owned(),
                len: bytes.len() as u64,
                sha256: oci::Digest::of(&bytes).hex().to_owned(),
                images: vec!["a:1".to_owned(), "b:2".to_owned()],
            }]
        );
        assert_eq!(
            sums_file(&baked),
            format!("{}  two.tar\n", oci::Digest::of(&bytes).hex())
        );
    }

    #[test]
    fn a_corrupt_archive_fails_the_build_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = image_archive(tmp.path(), "bad.tar", &["a:1"]);
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip a byte inside the first blob's data (after its 512-byte
        // header, past the two directory headers).
        bytes[3 * 512 + 10] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = check_archive(&path, "bad.tar".to_owned(), &tmp.path().join("x")).unwrap_err();
        assert!(matches!(err, BakeError::Archive { .. }), "{err}");
        assert!(err.to_string().contains("bad.tar"), "{err}");
    }

    #[test]
    fn something_that_is_not_a_tar_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notes.tar");
        std::fs::write(&path, b"just some text, not an archive").unwrap();
        let err = check_archive(&path, "notes.tar".to_owned(), &tmp.path().join("x")).unwrap_err();
        assert!(matches!(err, BakeError::Archive { .. }), "{err}");
    }

    #[test]
    fn an_archive_naming_no_image_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = oci::Layout::create(&tmp.path().join("empty")).unwrap();
        let path = tmp.path().join("empty.tar");
        oci::archive::write_archive_file(&layout, &path).unwrap();
        let err = check_archive(&path, "empty.tar".to_owned(), &tmp.path().join("x")).unwrap_err();
        assert!(matches!(err, BakeError::NoImages { .. }), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("gone.tar");
        let err = check_archive(&path, "gone.tar".to_owned(), &tmp.path().join("x")).unwrap_err();
        assert!(matches!(err, BakeError::Io { .. }), "{err}");
        assert!(err.to_string().contains("gone.tar"), "{err}");
    }

    #[test]
    fn the_esp_keeps_the_profile_size_when_the_files_fit() {
        assert_eq!(esp_size_mib(512, 60 * MIB, 6), 512);
    }

    #[test]
    fn the_esp_grows_to_hold_large_baked_archives() {
        let size = esp_size_mib(512, 700 * MIB, 8);
        assert!(size > 700 && size < 720, "{size}");
        // Many small files each waste up to a cluster.
        let size = esp_size_mib(36, 10_000 * 100, 10_000);
        assert!(u64::from(size) * MIB >= 10_000 * 4096, "{size}");
    }
}
