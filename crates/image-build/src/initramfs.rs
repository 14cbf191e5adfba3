//! The initramfs: an in-memory file tree and its newc cpio encoding.
//!
//! The tree is a sorted map from path to node, so the archive order, the
//! inode numbers (assigned 1, 2, 3... in that order), the owners (root)
//! and every mtime (`SOURCE_DATE_EPOCH`) depend on the contents alone.
//! Because we write the archive bytes ourselves, `/dev/console` can be a
//! real character device without the builder being root: the kernel needs
//! it to open the console for `/init` before devtmpfs is mounted.

use std::collections::BTreeMap;
use std::io::Write;

use crate::profile::Compression;
use crate::reproducible::SourceDateEpoch;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// One entry of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("path {0:?} must be relative, without empty, '.' or '..' components")]
    BadPath(String),
    #[error("{0} is already in the tree")]
    Exists(String),
    #[error("{path} needs {parent} to be a directory")]
    ParentNotDir { path: String, parent: String },
    #[error("{path} is {size} bytes; newc cannot store files of 4 GiB or more")]
    TooLarge { path: String, size: usize },
}

/// A file tree rooted at `/`. Paths are stored without the leading slash.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

fn check_path(path: &str) -> Result<&str, TreeError> {
    let p = path.trim_start_matches('/');
    let ok = !p.is_empty() && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(p)
    } else {
        Err(TreeError::BadPath(path.to_owned()))
    }
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `node` at `path`, creating missing parent directories (0755).
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), TreeError> {
        let p = check_path(path)?;
        if let Node::File { data, .. } = &node
            && u32::try_from(data.len()).is_err()
        {
            return Err(TreeError::TooLarge {
                path: p.to_owned(),
                size: data.len(),
            });
        }
        let mut parent = String::new();
        let components: Vec<&str> = p.split('/').collect();
        for component in &components[..components.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(component);
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent.clone(), Node::Dir { mode: 0o755 });
                }
                Some(Node::Dir { .. }) => {}
                Some(Node::File { .. } | Node::Symlink { .. } | Node::CharDevice { .. }) => {
                    return Err(TreeError::ParentNotDir {
                        path: p.to_owned(),
                        parent,
                    });
                }
            }
        }
        match (self.nodes.get(p), &node) {
            // Declaring a directory that was created implicitly sets its mode.
            (Some(Node::Dir { .. }), Node::Dir { .. }) | (None, _) => {
                self.nodes.insert(p.to_owned(), node);
                Ok(())
            }
            (Some(_), _) => Err(TreeError::Exists(p.to_owned())),
        }
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), TreeError> {
        self.insert(path, Node::Dir { mode })
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), TreeError> {
        self.insert(path, Node::File { mode, data })
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), TreeError> {
        self.insert(
            path,
            Node::Symlink {
                target: target.to_owned(),
            },
        )
    }

    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), TreeError> {
        self.insert(path, Node::CharDevice { mode, major, minor })
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path.trim_start_matches('/'))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sum of regular file sizes.
    pub fn payload_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                Node::Dir { .. } | Node::Symlink { .. } | Node::CharDevice { .. } => 0,
            })
            .sum()
    }

    /// Encodes the tree as a newc cpio archive.
    pub fn to_cpio(&self, epoch: SourceDateEpoch) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            usize::try_from(self.payload_bytes()).unwrap_or(0) + self.nodes.len() * 256,
        );
        for (index, (path, node)) in self.nodes.iter().enumerate() {
            // Inode 0 is unused by convention; numbers follow the sorted order.
            let ino = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let (mode, nlink, rdev, data): (u32, u32, (u32, u32), &[u8]) = match node {
                Node::Dir { mode } => (S_IFDIR | mode, 2, (0, 0), &[]),
                Node::File { mode, data } => (S_IFREG | mode, 1, (0, 0), data),
                Node::Symlink { target } => (S_IFLNK | 0o777, 1, (0, 0), target.as_bytes()),
                Node::CharDevice { mode, major, minor } => {
                    (S_IFCHR | mode, 1, (*major, *minor), &[])
                }
            };
            let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
            let builder = cpio::NewcBuilder::new(path)
                .ino(ino)
                .mode(mode)
                .uid(0)
                .gid(0)
                .nlink(nlink)
                .mtime(epoch.secs_u32())
                .dev_major(0)
                .dev_minor(0)
                .rdev_major(rdev.0)
                .rdev_minor(rdev.1);
            let mut writer = builder.write(&mut out, size);
            // Writing into a Vec cannot fail, and the size was declared above.
            let _ = writer.write_all(data);
            let _ = writer.finish();
        }
        let _ = cpio::newc::trailer(&mut out);
        out
    }
}

/// What goes into the Cairn initramfs besides its fixed skeleton.
#[derive(Debug)]
pub struct CairnContents<'a> {
    pub version: &'a str,
    /// Kernel release (`6.1.0-56-amd64`), the directory under /lib/modules.
    pub kernel_release: &'a str,
    pub init: &'a [u8],
    pub agent: &'a [u8],
    /// `(path relative to /lib/modules/<kver>/, plain ELF bytes)`.
    pub modules: Vec<(String, Vec<u8>)>,
    /// `(file name, contents)` of the module index files.
    pub module_indexes: Vec<(&'static str, Vec<u8>)>,
    /// Module names init always loads, in order.
    pub modules_load: Vec<String>,
}

/// Where the node's CA roots are (the path rustls-native-certs and
/// OpenSSL look at first on Debian-like systems).
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// Why the CA bundle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("reading the CA certificates in {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no .crt files: is it ca-certificates' mozilla directory?")]
    Empty { path: std::path::PathBuf },
    #[error("{path} is not a PEM certificate")]
    NotPem { path: std::path::PathBuf },
}

/// Every `.crt` in `dir`, in name order (so the bundle is reproducible),
/// concatenated into one PEM bundle; and how many there were.
pub fn ca_bundle(dir: &std::path::Path) -> Result<(Vec<u8>, usize), CaBundleError> {
    let read = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| CaBundleError::Read { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read(dir))? {
        let path = entry.map_err(read(dir))?.path();
        if path.extension().is_some_and(|e| e == "crt") {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(CaBundleError::Empty {
            path: dir.to_owned(),
        });
    }
    let mut bundle = Vec::new();
    for path in &files {
        let pem = std::fs::read(path).map_err(read(path))?;
        if !pem.starts_with(b"-----BEGIN CERTIFICATE-----") {
            return Err(CaBundleError::NotPem { path: path.clone() });
        }
        bundle.extend_from_slice(&pem);
        if !pem.ends_with(b"\n") {
            bundle.push(b'\n');
        }
    }
    Ok((bundle, files.len()))
}

/// `/etc/os-release` for Cairn `version`.
pub fn os_release(version: &str) -> String {
    format!(
        "NAME=\"Cairn\"\nID=cairn\nVERSION=\"{version}\"\nVERSION_ID={version}\n\
         PRETTY_NAME=\"Cairn {version}\"\n"
    )
}

/// Builds the Cairn initramfs tree (layout shared with init and cairnd;
/// see docs/image-build.md).
pub fn cairn_tree(c: &CairnContents<'_>) -> Result<Tree, TreeError> {
    let mut t = Tree::new();
    for dir in [
        "dev",
        "proc",
        "sys",
        "run",
        "var",
        "efi",
        "usr/bin",
        "etc/cairn",
    ] {
        t.dir(dir, 0o755)?;
    }
    t.dir("tmp", 0o1777)?;
    t.char_device("dev/console", 0o600, 5, 1)?;
    t.file("init", 0o755, c.init.to_vec())?;
    t.file("usr/bin/cairnd", 0o755, c.agent.to_vec())?;
    t.file("etc/os-release", 0o644, os_release(c.version).into_bytes())?;
    t.file(
        "etc/hosts",
        0o644,
        b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_vec(),
    )?;
    // cairnd writes /run/resolv.conf from DHCP or the machine config.
    t.symlink("etc/resolv.conf", "../run/resolv.conf")?;
    // Static glibc resolves names only through these two sources.
    t.file("etc/nsswitch.conf", 0o644, b"hosts: files dns\n".to_vec())?;
    t.file(
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/:/nonexistent\n".to_vec(),
    )?;
    t.file("etc/group", 0o644, b"root:x:0:\n".to_vec())?;
    let mut load = c.modules_load.join("\n");
    if !load.is_empty() {
        load.push('\n');
    }
    t.file("etc/cairn/modules-load", 0o644, load.into_bytes())?;
    let moddir = format!("lib/modules/{}", c.kernel_release);
    t.dir(&moddir, 0o755)?;
    for (path, data) in &c.modules {
        t.file(&format!("{moddir}/{path}"), 0o644, data.clone())?;
    }
    for (name, data) in &c.module_indexes {
        t.file(&format!("{moddir}/{name}"), 0o644, data.clone())?;
    }
    Ok(t)
}

/// The benchmark baseline: static busybox and an /init that powers off.
pub fn baseline_tree(busybox: &[u8]) -> Result<Tree, TreeError> {
    let mut t = Tree::new();
    for dir in ["dev", "proc", "sys"] {
        t.dir(dir, 0o755)?;
    }
    t.char_device("dev/console", 0o600, 5, 1)?;
    t.file("bin/busybox", 0o755, busybox.to_vec())?;
    t.file(
        "init",
        0o755,
        b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n".to_vec(),
    )?;
    Ok(t)
}

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("gzip compression failed")]
    Gzip(#[source] std::io::Error),
}

/// Why an initramfs could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("the gzip stream is broken")]
    Gzip(#[source] std::io::Error),
    #[error("the zstd frame is broken")]
    Zstd(#[source] std::io::Error),
    #[error("the zstd frame header is broken: {0}")]
    ZstdHeader(String),
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Compresses a cpio archive for the kernel. gzip output carries no name
/// and a zero mtime, and ruzstd's encoder has no clock or randomness, so
/// both are as reproducible as their input. zstd uses ruzstd's fastest
/// level (about `zstd -1`): the kernel inflates it several times faster
/// than gzip, which matters under emulation.
pub fn compress(cpio: Vec<u8>, compression: Compression) -> Result<Vec<u8>, CompressError> {
    match compression {
        Compression::None => Ok(cpio),
        Compression::Zstd => Ok(ruzstd::encoding::compress_to_vec(
            cpio.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        )),
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new().mtime(0).write(
                Vec::with_capacity(cpio.len() / 2),
                flate2::Compression::new(6),
            );
            enc.write_all(&cpio).map_err(CompressError::Gzip)?;
            enc.finish().map_err(CompressError::Gzip)
        }
    }
}

/// The cpio archive inside an initramfs, whichever way [`compress`] wrote
/// it (told apart by the compressor's magic number, as the kernel does).
pub fn decompress(initramfs: &[u8]) -> Result<Vec<u8>, DecompressError> {
    if initramfs.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(initramfs), &mut out)
            .map_err(DecompressError::Gzip)?;
        Ok(out)
    } else if initramfs.starts_with(&ZSTD_MAGIC) {
        let mut input = initramfs;
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut input)
            .map_err(|e| DecompressError::ZstdHeader(e.to_string()))?;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut decoder, &mut out).map_err(DecompressError::Zstd)?;
        Ok(out)
    } else {
        Ok(initramfs.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch() -> SourceDateEpoch {
        SourceDateEpoch::new(1_700_000_000).unwrap()
    }

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.file("init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap();
        t.file("usr/bin/cairnd", 0o755, vec![7; 1000]).unwrap();
        t.char_device("dev/console", 0o600, 5, 1).unwrap();
        t.symlink("etc/resolv.conf", "../run/resolv.conf").unwrap();
        t.dir("tmp", 0o1777).unwrap();
        t
    }

    /// (name, ino, mode, mtime, rdev major, rdev minor, data)
    type Entry = (String, u32, u32, u32, u32, u32, Vec<u8>);

    fn read_back(archive: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut rest = archive;
        loop {
            let mut reader = cpio::NewcReader::new(rest).unwrap();
            let e = reader.entry();
            if e.is_trailer() {
                break;
            }
            let meta = (
                e.name().to_owned(),
                e.ino(),
                e.mode(),
                e.mtime(),
                e.rdev_major(),
                e.rdev_minor(),
            );
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut reader, &mut data).unwrap();
            rest = reader.finish().unwrap();
            out.push((meta.0, meta.1, meta.2, meta.3, meta.4, meta.5, data));
        }
        out
    }

    #[test]
    fn entries_are_sorted_with_parents_first_and_sequential_inodes() {
        let entries = read_back(&sample().to_cpio(epoch()));
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "etc",
                "etc/resolv.conf",
                "init",
                "tmp",
                "usr",
                "usr/bin",
                "usr/bin/cairnd"
            ]
        );
        let inodes: Vec<_> = entries.iter().map(|e| e.1).collect();
        assert_eq!(inodes, (1..=9).collect::<Vec<_>>());
        assert!(entries.iter().all(|e| e.3 == 1_700_000_000));
    }

    #[test]
    fn dev_console_is_char_device_5_1() {
        let entries = read_back(&sample().to_cpio(epoch()));
        let console = entries.iter().find(|e| e.0 == "dev/console").unwrap();
        assert_eq!(console.2, S_IFCHR | 0o600);
        assert_eq!((console.4, console.5), (5, 1));
    }

    #[test]
    fn symlink_targets_and_file_contents_survive() {
        let entries = read_back(&sample().to_cpio(epoch()));
        let link = entries.iter().find(|e| e.0 == "etc/resolv.conf").unwrap();
        assert_eq!(link.2 & 0o170_000, S_IFLNK);
        assert_eq!(link.6, b"../run/resolv.conf");
        let agent = entries.iter().find(|e| e.0 == "usr/bin/cairnd").unwrap();
        assert_eq!(agent.6, vec![7; 1000]);
        let tmp = entries.iter().find(|e| e.0 == "tmp").unwrap();
        assert_eq!(tmp.2, S_IFDIR | 0o1777);
    }

    #[test]
    fn insertion_order_does_not_change_the_bytes() {
        let mut a = Tree::new();
        a.file("b/x", 0o644, b"1".to_vec()).unwrap();
        a.file("a", 0o644, b"2".to_vec()).unwrap();
        let mut b = Tree::new();
        b.file("a", 0o644, b"2".to_vec()).unwrap();
        b.file("b/x", 0o644, b"1".to_vec()).unwrap();
        assert_eq!(a.to_cpio(epoch()), b.to_cpio(epoch()));
    }

    proptest::proptest! {
        #[test]
        fn any_tree_round_trips_through_cpio(
            files in proptest::collection::btree_map("[a-z]{1,6}(/[a-z]{1,6}){0,2}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..12)
        ) {
            let mut t = Tree::new();
            let mut expected = BTreeMap::new();
            for (path, data) in &files {
                if t.file(path, 0o644, data.clone()).is_ok() {
                    expected.insert(path.clone(), data.clone());
                }
            }
            let entries = read_back(&t.to_cpio(epoch()));
            proptest::prop_assert_eq!(entries.len(), t.len());
            for e in &entries {
                if e.2 & 0o170_000 == S_IFREG {
                    proptest::prop_assert_eq!(Some(&e.6), expected.get(&e.0));
                }
            }
            let names: Vec<_> = entries.iter().map(|e| e.0.clone()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            proptest::prop_assert_eq!(names, sorted);
        }
    }

    #[test]
    fn paths_escaping_the_root_are_refused() {
        let mut t = Tree::new();
        assert!(t.file("../etc/passwd", 0o644, vec![]).is_err());
        assert!(t.file("a//b", 0o644, vec![]).is_err());
        assert!(t.file("", 0o644, vec![]).is_err());
    }

    #[test]
    fn a_file_cannot_be_a_parent_or_be_added_twice() {
        let mut t = Tree::new();
        t.file("init", 0o755, vec![]).unwrap();
        assert!(matches!(
            t.file("init/x", 0o644, vec![]),
            Err(TreeError::ParentNotDir { .. })
        ));
        assert!(matches!(
            t.file("init", 0o755, vec![]),
            Err(TreeError::Exists(_))
        ));
    }

    #[test]
    fn every_compression_is_reproducible_and_reads_back_to_the_input() {
        let mut tree = sample();
        // Something worth compressing, as binaries are.
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        tree.file("usr/bin/big", 0o755, text).unwrap();
        let cpio = tree.to_cpio(epoch());
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let a = compress(cpio.clone(), compression).unwrap();
            let b = compress(cpio.clone(), compression).unwrap();
            assert_eq!(a, b, "{compression:?} is not reproducible");
            if compression != Compression::None {
                assert!(a.len() < cpio.len() / 2, "{compression:?} did not compress");
            }
            assert_eq!(decompress(&a).unwrap(), cpio, "{compression:?}");
        }
        // The gzip stream is one the standard decoder reads as well.
        let gz = compress(cpio.clone(), Compression::Gzip).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut back)
            .unwrap();
        assert_eq!(back, cpio);
    }

    #[test]
    fn the_ca_bundle_is_every_crt_in_name_order_and_refuses_non_pem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.crt"), "-----BEGIN CERTIFICATE-----\nB\n").unwrap();
        std::fs::write(dir.path().join("a.crt"), "-----BEGIN CERTIFICATE-----\nA").unwrap();
        std::fs::write(dir.path().join("README"), "not a certificate").unwrap();
        let (bundle, count) = ca_bundle(dir.path()).unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            String::from_utf8(bundle).unwrap(),
            "-----BEGIN CERTIFICATE-----\nA\n-----BEGIN CERTIFICATE-----\nB\n"
        );
        std::fs::write(dir.path().join("c.crt"), "garbage").unwrap();
        assert!(matches!(
            ca_bundle(dir.path()),
            Err(CaBundleError::NotPem { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            ca_bundle(empty.path()),
            Err(CaBundleError::Empty { .. })
        ));
    }

    #[test]
    fn a_truncated_zstd_initramfs_is_an_error_not_a_short_archive() {
        let cpio = sample().to_cpio(epoch());
        let z = compress(cpio, Compression::Zstd).unwrap();
        assert!(decompress(&z[..z.len() / 2]).is_err());
    }

    #[test]
    fn the_cairn_tree_has_the_agreed_layout() {
        let t = cairn_tree(&CairnContents {
            version: "0.1.0",
            kernel_release: "6.1.0-56-amd64",
            init: b"\x7fELF-init",
            agent: b"\x7fELF-agent",
            modules: vec![("kernel/fs/ext4/ext4.ko".to_owned(), b"ko".to_vec())],
            module_indexes: vec![("modules.dep", b"kernel/fs/ext4/ext4.ko:\n".to_vec())],
            modules_load: vec!["ext4".to_owned(), "vfat".to_owned()],
        })
        .unwrap();
        for dir in ["dev", "proc", "sys", "run", "tmp", "var", "efi"] {
            assert!(matches!(t.get(dir), Some(Node::Dir { .. })), "{dir}");
        }
        assert!(matches!(
            t.get("init"),
            Some(Node::File { mode: 0o755, .. })
        ));
        assert!(matches!(
            t.get("usr/bin/cairnd"),
            Some(Node::File { mode: 0o755, .. })
        ));
        assert_eq!(
            t.get("dev/console"),
            Some(&Node::CharDevice {
                mode: 0o600,
                major: 5,
                minor: 1
            })
        );
        assert_eq!(
            t.get("etc/resolv.conf"),
            Some(&Node::Symlink {
                target: "../run/resolv.conf".into()
            })
        );
        assert!(
            t.get("lib/modules/6.1.0-56-amd64/kernel/fs/ext4/ext4.ko")
                .is_some()
        );
        assert!(t.get("lib/modules/6.1.0-56-amd64/modules.dep").is_some());
        let Some(Node::File { data, .. }) = t.get("etc/cairn/modules-load") else {
            panic!()
        };
        assert_eq!(data, b"ext4\nvfat\n");
        let Some(Node::File { data, .. }) = t.get("etc/os-release") else {
            panic!()
        };
        let text = String::from_utf8(data.clone()).unwrap();
        assert!(text.contains("\nID=cairn\n") && text.contains("VERSION_ID=0.1.0\n"));
    }

    #[test]
    fn the_baseline_init_is_a_busybox_poweroff() {
        let t = baseline_tree(b"\x7fELF-busybox").unwrap();
        let Some(Node::File { data, mode }) = t.get("init") else {
            panic!()
        };
        assert_eq!(*mode, 0o755);
        assert!(data.starts_with(b"#!/bin/busybox sh\n"));
        assert!(String::from_utf8_lossy(data).contains("/bin/busybox poweroff -f"));
        assert!(t.get("dev/console").is_some());
    }
}
