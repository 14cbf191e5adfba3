//! OCI images for tests and the catalog, built without Docker: a directory
//! or a set of Debian packages becomes one reproducible layer, a config, a
//! manifest and a named entry in an OCI layout (see `docs/oci-images.md`).
//!
//! The tree to pack is gathered first ([`Tree`]: sorted, later roots
//! override earlier ones), then written as a tar with root-owned entries
//! and one fixed mtime, gzip-compressed while both the uncompressed
//! (diff_id) and compressed (blob) digests are computed in one pass.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci::digest::HashingWriter;
use oci::layout::{TARGET_ARCH, TARGET_OS};
use oci::{Digest, Layout, LayoutError, RefName};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder,
    ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};

use crate::deb::{self, FetchError, PinnedPackage};
use crate::profile::{DebVersion, PackageName};
use crate::tools::{self, HostTool, ToolError};

/// The PATH docker gives images that set none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runtime defaults recorded in the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSettings {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `K=V` pairs; `PATH` defaults to [`DEFAULT_PATH`].
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `PORT[/PROTO]`; the protocol defaults to tcp.
    pub expose: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OciBuildError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is a {kind}; images hold files, directories, links, devices and fifos only")]
    UnsupportedFile { path: PathBuf, kind: &'static str },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} (from {root}) lies beneath {parent}, which an earlier root made a non-directory"
    )]
    Conflict {
        path: String,
        root: PathBuf,
        parent: String,
    },
    #[error("--env {0:?} is not KEY=VALUE")]
    Env(String),
    #[error("--expose {0:?} is not PORT or PORT/tcp|udp|sctp")]
    Expose(String),
    #[error("writing the layer")]
    Layer(#[source] io::Error),
    #[error("building the image {what}")]
    Spec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("resolving the dependency closure of {packages}")]
    Resolve {
        packages: String,
        #[source]
        source: ToolError,
    },
    #[error("apt resolved no packages for {0} (is the package list current? run apt-get update)")]
    NothingResolved(String),
    #[error("apt printed an unusable package line {0:?}")]
    AptLine(String),
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OciBuildError + '_ {
    move |source| OciBuildError::Io {
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
struct Source {
    path: PathBuf,
    meta: fs::Metadata,
}

/// The files of one layer: relative path bytes (no leading `./`) to where
/// each comes from. Sorted, so the tar is too.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<Vec<u8>, Source>,
}

impl Tree {
    /// Adds everything under `root` (not following symlinks); entries
    /// replace those of earlier roots at the same path. Files named in
    /// `skip` at the top level are left out.
    pub fn add_root(&mut self, root: &Path, skip: &[&str]) -> Result<(), OciBuildError> {
        let meta = fs::symlink_metadata(root).map_err(io_err(root))?;
        if !meta.is_dir() {
            return Err(OciBuildError::NotADirectory {
                path: root.to_owned(),
            });
        }
        self.walk(root, root, Vec::new(), skip)
    }

    fn walk(
        &mut self,
        root: &Path,
        dir: &Path,
        rel: Vec<u8>,
        skip: &[&str],
    ) -> Result<(), OciBuildError> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(dir))?;
        names.sort();
        for name in names {
            if rel.is_empty() && skip.iter().any(|s| name.as_bytes() == s.as_bytes()) {
                continue;
            }
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            self.insert(
                root,
                child.clone(),
                Source {
                    path: path.clone(),
                    meta: meta.clone(),
                },
            )?;
            if meta.is_dir() {
                self.walk(root, &path, child, skip)?;
            }
        }
        Ok(())
    }

    fn insert(&mut self, root: &Path, rel: Vec<u8>, src: Source) -> Result<(), OciBuildError> {
        // A parent that an earlier root made a symlink or file would turn
        // this entry into one the unpacker must refuse.
        for (i, b) in rel.iter().enumerate() {
            if *b == b'/' {
                let parent = rel.get(..i).unwrap_or_default();
                if let Some(p) = self.entries.get(parent)
                    && !p.meta.is_dir()
                {
                    return Err(OciBuildError::Conflict {
                        path: String::from_utf8_lossy(&rel).into_owned(),
                        root: root.to_owned(),
                        parent: String::from_utf8_lossy(parent).into_owned(),
                    });
                }
            }
        }
        if !src.meta.is_dir() {
            let mut prefix = rel.clone();
            prefix.push(b'/');
            let beneath: Vec<Vec<u8>> = self
                .entries
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for k in beneath {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(rel, src);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the tree as a tar: root-owned, `mtime`, sorted, hard links
    /// for files that share an inode.
    pub fn write_tar<W: Write>(&self, out: W, mtime: u64) -> io::Result<W> {
        let mut tar = tar::Builder::new(out);
        let mut seen: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        for (rel, src) in &self.entries {
            let m = &src.meta;
            let ft = m.file_type();
            let mut h = tar::Header::new_gnu();
            h.set_mode(m.mode() & 0o7777);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h.set_size(0);
            let path = Path::new(std::ffi::OsStr::from_bytes(rel));
            if ft.is_dir() {
                h.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut h, path, io::empty())?;
            } else if ft.is_symlink() {
                h.set_entry_type(tar::EntryType::Symlink);
                let target = fs::read_link(&src.path)?;
                tar.append_link(&mut h, path, target)?;
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    let key = (m.dev(), m.ino());
                    if let Some(first) = seen.get(&key) {
                        h.set_entry_type(tar::EntryType::Link);
                        tar.append_link(
                            &mut h,
                            path,
                            Path::new(std::ffi::OsStr::from_bytes(first)),
                        )?;
                        continue;
                    }
                    seen.insert(key, rel.clone());
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(m.len());
                let file = fs::File::open(&src.path)?;
                tar.append_data(&mut h, path, file)?;
            } else {
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else if ft.is_fifo() {
                    tar::EntryType::Fifo
                } else {
                    return Err(io::Error::other(format!(
                        "{} is a socket, which a tar cannot hold",
                        src.path.display()
                    )));
                };
                h.set_entry_type(kind);
                if kind != tar::EntryType::Fifo {
                    let rdev = m.rdev();
                    h.set_device_major(rustix_major(rdev))?;
                    h.set_device_minor(rustix_minor(rdev))?;
                }
                tar.append_data(&mut h, path, io::empty())?;
            }
        }
        tar.into_inner()
    }
}

// glibc's encoding of dev_t (what st_rdev holds on Linux).
fn rustix_major(dev: u64) -> u32 {
    u32::try_from(((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)).unwrap_or(u32::MAX)
}

fn rustix_minor(dev: u64) -> u32 {
    u32::try_from(((dev >> 12) & 0xffff_ff00) | (dev & 0xff)).unwrap_or(u32::MAX)
}

/// Seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let t = crate::reproducible::CivilTime::from_unix(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

fn spec_err(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> OciBuildError {
    move |source| OciBuildError::Spec { what, source }
}

fn normalized_ports(expose: &[String]) -> Result<Vec<String>, OciBuildError> {
    let mut ports = Vec::new();
    for p in expose {
        let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
            return Err(OciBuildError::Expose(p.clone()));
        }
        ports.push(format!("{num}/{proto}"));
    }
    ports.sort();
    ports.dedup();
    Ok(ports)
}

/// What was written for one image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub reference: RefName,
    pub manifest: Descriptor,
    pub layer_digest: Digest,
    pub layer_size: u64,
    pub diff_id: Digest,
    pub entries: usize,
}

/// Writes `tree` as a one-layer image named `reference` into the layout
/// at `out` (created if missing; other images in it are kept).
pub fn build_image(
    tree: &Tree,
    settings: &ImageSettings,
    reference: &RefName,
    out: &Path,
    epoch: u64,
    created_by: &str,
) -> Result<BuiltImage, OciBuildError> {
    let mut env = settings.env.clone();
    for e in &env {
        if e.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return Err(OciBuildError::Env(e.clone()));
        }
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    let ports = normalized_ports(&settings.expose)?;

    let layout = Layout::create(out)?;
    let blob = layout.blob_writer()?;
    let gz = flate2::write::GzEncoder::new(blob, flate2::Compression::default());
    let uncompressed = HashingWriter::new(gz);
    let uncompressed = tree
        .write_tar(uncompressed, epoch)
        .map_err(OciBuildError::Layer)?;
    let (diff_id, _, gz) = uncompressed.finish();
    let blob = gz.finish().map_err(OciBuildError::Layer)?;
    let (layer_digest, layer_size) = blob.commit()?;
    let layer = Descriptor::new(
        MediaType::ImageLayerGzip,
        layer_size,
        layer_digest.to_spec(),
    );

    let created = rfc3339(epoch);
    let mut config = ConfigBuilder::default().env(env);
    if !settings.entrypoint.is_empty() {
        config = config.entrypoint(settings.entrypoint.clone());
    }
    if !settings.cmd.is_empty() {
        config = config.cmd(settings.cmd.clone());
    }
    if let Some(w) = &settings.workdir {
        config = config.working_dir(w.clone());
    }
    if let Some(u) = &settings.user {
        config = config.user(u.clone());
    }
    if !ports.is_empty() {
        config = config.exposed_ports(ports);
    }
    let image_config = ImageConfigurationBuilder::default()
        .created(created.clone())
        .architecture(Arch::Amd64)
        .os(Os::Linux)
        .config(config.build().map_err(spec_err("config"))?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .map_err(spec_err("rootfs"))?,
        )
        .history(vec![
            HistoryBuilder::default()
                .created(created)
                .created_by(created_by.to_owned())
                .build()
                .map_err(spec_err("history"))?,
        ])
        .build()
        .map_err(spec_err("config"))?;
    let config_desc = layout.write_json(MediaType::ImageConfig, "image config", &image_config)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(vec![layer])
        .build()
        .map_err(spec_err("manifest"))?;
    let mut manifest_desc =
        layout.write_json(MediaType::ImageManifest, "image manifest", &manifest)?;
    manifest_desc.set_platform(Some(
        PlatformBuilder::default()
            .os(Os::from(TARGET_OS))
            .architecture(Arch::from(TARGET_ARCH))
            .build()
            .map_err(spec_err("platform"))?,
    ));
    layout.tag(reference, &manifest_desc)?;
    Ok(BuiltImage {
        reference: reference.clone(),
        manifest: manifest_desc,
        layer_digest,
        layer_size,
        diff_id,
        entries: tree.len(),
    })
}

/// Parses `apt-get -s install` output: the `Inst` lines, in apt's order
/// (dependencies before their dependents).
pub fn parse_apt_simulation(text: &str) -> Result<Vec<(String, String)>, OciBuildError> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let bad = || OciBuildError::AptLine(line.to_owned());
        let (name, after) = rest.split_once(' ').ok_or_else(bad)?;
        // "Inst pkg [old] (new ...)" when upgrading; the status is empty
        // here, so only "(new ...)" appears, but skip "[old]" anyway.
        let version = after
            .split_once('(')
            .and_then(|(_, v)| v.split_whitespace().next())
            .ok_or_else(bad)?;
        let name = name.split_once(':').map_or(name, |(n, _)| n);
        out.push((name.to_owned(), version.to_owned()));
    }
    Ok(out)
}

/// The packages `apt-get install --no-install-recommends PKGS` would
/// install on an empty system (dpkg status replaced by /dev/null), with
/// exact versions.
pub fn resolve_closure(packages: &[String]) -> Result<Vec<PinnedPackage>, OciBuildError> {
    let joined = packages.join(" ");
    let mut args: Vec<&str> = vec![
        "-s",
        "-q",
        "-o",
        "Dir::State::status=/dev/null",
        "-o",
        "APT::Install-Recommends=false",
        "-o",
        "APT::Install-Suggests=false",
        "install",
        "--no-install-recommends",
    ];
    args.extend(packages.iter().map(String::as_str));
    let out = tools::run(HostTool::AptGet, &args, |cmd| {
        cmd.env("LC_ALL", "C");
    })
    .map_err(|source| OciBuildError::Resolve {
        packages: joined.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let list = parse_apt_simulation(&text)?;
    if list.is_empty() {
        return Err(OciBuildError::NothingResolved(joined));
    }
    list.into_iter()
        .map(|(name, version)| {
            let line = format!("{name} {version}");
            Ok(PinnedPackage {
                name: PackageName::try_from(name)
                    .map_err(|_| OciBuildError::AptLine(line.clone()))?,
                version: DebVersion::try_from(version).map_err(|_| OciBuildError::AptLine(line))?,
                version_key: "oci from-debs (resolved by apt)",
            })
        })
        .collect()
}

/// Downloads and unpacks `packages` and their closure (through the same
/// cache as the kernel), and gathers them into one tree in apt's order.
pub fn tree_from_debs(
    packages: &[String],
    cache: &Path,
) -> Result<(Tree, Vec<PinnedPackage>), OciBuildError> {
    let closure = resolve_closure(packages)?;
    let mut tree = Tree::default();
    for pkg in &closure {
        let unpacked = deb::fetch_and_unpack(pkg, cache)?;
        tree.add_root(&unpacked.root, &[deb::STAMP])?;
    }
    Ok((tree, closure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn apt_simulation_lines_give_names_and_versions_in_order() {
        let text = "NOTE: This is only a simulation!\n\
Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n\
Inst libc6:amd64 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []\n\
Conf gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])\n\
Inst busybox-static (1:1.35.0-4+deb12u1+b1 Debian:12.15/oldstable [amd64])\n";
        assert_eq!(
            parse_apt_simulation(text).unwrap(),
            vec![
                ("gcc-12-base".into(), "12.2.0-14+deb12u1".into()),
                ("libc6".into(), "2.36-9+deb12u14".into()),
                ("busybox-static".into(), "1:1.35.0-4+deb12u1+b1".into()),
            ]
        );
    }

    #[test]
    fn exposed_ports_default_to_tcp_and_bad_ones_are_refused() {
        assert_eq!(
            normalized_ports(&["6379".into(), "53/udp".into()]).unwrap(),
            vec!["53/udp".to_owned(), "6379/tcp".to_owned()]
        );
        assert!(normalized_ports(&["http".into()]).is_err());
        assert!(normalized_ports(&["80/icmp".into()]).is_err());
    }

    #[test]
    fn a_later_root_replacing_a_directory_drops_its_children() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        fs::create_dir_all(a.join("lib/x")).unwrap();
        fs::write(a.join("lib/x/f"), "1").unwrap();
        fs::create_dir_all(&b).unwrap();
        std::os::unix::fs::symlink("usr/lib", b.join("lib")).unwrap();
        let mut tree = Tree::default();
        tree.add_root(&a, &[]).unwrap();
        tree.add_root(&b, &[]).unwrap();
        let keys: Vec<_> = tree
            .entries
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(keys, vec!["lib"]);
        // The other way round, the directory replaces the symlink.
        let mut tree = Tree::default();
        tree.add_root(&b, &[]).unwrap();
        tree.add_root(&a, &[]).unwrap();
        let keys: Vec<_> = tree
            .entries
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(keys, vec!["lib", "lib/x", "lib/x/f"]);
        assert!(tree.entries.get(&b"lib"[..]).unwrap().meta.is_dir());
    }

    fn sample(dir: &Path) {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/tool"), "#!/bin/sh\n").unwrap();
        fs::hard_link(dir.join("bin/tool"), dir.join("bin/tool2")).unwrap();
        std::os::unix::fs::symlink("tool", dir.join("bin/alias")).unwrap();
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(dir.join("etc/conf"), "k=v\n").unwrap();
    }

    #[test]
    fn the_same_directory_gives_the_same_image_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        sample(&src);
        let mut tree = Tree::default();
        tree.add_root(&src, &[]).unwrap();
        let name = RefName::parse("sample:1").unwrap();
        let settings = ImageSettings {
            entrypoint: vec!["/bin/tool".into()],
            expose: vec!["80".into(), "443".into()],
            ..ImageSettings::default()
        };
        let a = build_image(&tree, &settings, &name, &tmp.path().join("a"), 0, "test").unwrap();
        // Touch the sources: mtimes must not leak into the image.
        fs::write(src.join("etc/conf"), "k=v\n").unwrap();
        let b = build_image(&tree, &settings, &name, &tmp.path().join("b"), 0, "test").unwrap();
        assert_eq!(a.manifest.digest(), b.manifest.digest());
        let index_a = fs::read(tmp.path().join("a/index.json")).unwrap();
        assert_eq!(index_a, fs::read(tmp.path().join("b/index.json")).unwrap());
    }

    #[test]
    fn several_images_share_one_layout_and_unpack_as_built() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        sample(&src);
        let mut tree = Tree::default();
        tree.add_root(&src, &[]).unwrap();
        let out = tmp.path().join("layout");
        let one = RefName::parse("one:latest").unwrap();
        let two = RefName::parse("two:latest").unwrap();
        build_image(&tree, &ImageSettings::default(), &one, &out, 7, "test").unwrap();
        let settings = ImageSettings {
            cmd: vec!["/bin/tool".into(), "--flag".into()],
            env: vec!["A=1".into()],
            workdir: Some("/etc".into()),
            user: Some("1000:1000".into()),
            ..ImageSettings::default()
        };
        build_image(&tree, &settings, &two, &out, 7, "test").unwrap();
        let layout = Layout::open(&out).unwrap();
        let names = layout.verify().unwrap();
        assert_eq!(names, vec![one.clone(), two.clone()]);
        let image = layout.resolve(&two).unwrap();
        let config = image.config.config().clone().unwrap();
        assert_eq!(config.cmd().clone().unwrap(), vec!["/bin/tool", "--flag"]);
        assert_eq!(
            config.env().clone().unwrap(),
            vec![DEFAULT_PATH.to_owned(), "A=1".to_owned()]
        );
        assert_eq!(config.working_dir().as_deref(), Some("/etc"));
        assert_eq!(
            image.config.created().as_deref(),
            Some("1970-01-01T00:00:07Z")
        );

        let root = tmp.path().join("root");
        oci::unpack::unpack_image(
            &layout,
            &image,
            &root,
            oci::unpack::UnpackOptions::for_current_process(),
        )
        .unwrap();
        assert_eq!(fs::read_to_string(root.join("etc/conf")).unwrap(), "k=v\n");
        assert_eq!(
            fs::read_link(root.join("bin/alias")).unwrap(),
            Path::new("tool")
        );
        assert_eq!(
            fs::metadata(root.join("bin/tool")).unwrap().ino(),
            fs::metadata(root.join("bin/tool2")).unwrap().ino()
        );
        assert_eq!(fs::metadata(root.join("etc/conf")).unwrap().mtime(), 7);
    }

    #[test]
    fn a_reference_that_is_not_in_the_layout_lists_the_ones_that_are() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        sample(&src);
        let mut tree = Tree::default();
        tree.add_root(&src, &[]).unwrap();
        let out = tmp.path().join("layout");
        build_image(
            &tree,
            &ImageSettings::default(),
            &RefName::parse("x:1").unwrap(),
            &out,
            0,
            "t",
        )
        .unwrap();
        let err = Layout::open(&out)
            .unwrap()
            .resolve(&RefName::parse("y:1").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("x:1"), "{err}");
    }
}
