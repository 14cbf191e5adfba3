//! Unpacker tests on real directories with hand-made (often hostile) tars.

use std::fs;
use std::io::{Read as _, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use proptest::prelude::*;

use super::fs::{LayerInput, StagedRoot, UnpackError, UnpackOptions};
use super::plan::EntryError;
use crate::digest::{Digest, Expected};
use crate::media::Compression;

#[derive(Clone, Debug)]
enum E {
    Dir(String),
    File(String, Vec<u8>),
    Sym(String, String),
    Hard(String, String),
    Char(String),
}

/// Writes a header with raw name bytes (the tar crate's safe setters
/// refuse `..`, which is exactly what these tests need to send).
fn raw(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut put = |name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            let n = name.len().min(100);
            old.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(100);
            old.linkname[..l].copy_from_slice(&link[..l]);
        }
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if matches!(kind, tar::EntryType::Char) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    };
    if name.len() > 100 {
        let mut long = name.to_vec();
        long.push(0);
        put(b"././@LongLink", tar::EntryType::GNULongName, b"", &long);
    }
    if link.len() > 100 {
        let mut long = link.to_vec();
        long.push(0);
        put(b"././@LongLink", tar::EntryType::GNULongLink, b"", &long);
    }
    put(name, kind, link, data);
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        match e {
            E::Dir(n) => raw(&mut out, n.as_bytes(), tar::EntryType::Directory, b"", b""),
            E::File(n, d) => raw(&mut out, n.as_bytes(), tar::EntryType::Regular, b"", d),
            E::Sym(n, t) => raw(
                &mut out,
                n.as_bytes(),
                tar::EntryType::Symlink,
                t.as_bytes(),
                b"",
            ),
            E::Hard(n, t) => raw(
                &mut out,
                n.as_bytes(),
                tar::EntryType::Link,
                t.as_bytes(),
                b"",
            ),
            E::Char(n) => raw(&mut out, n.as_bytes(), tar::EntryType::Char, b"", b""),
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn opts() -> UnpackOptions {
    UnpackOptions {
        allow_devices: false,
        preserve_owners: false,
        xattrs: false,
    }
}

fn unpack(target: &Path, layers: &[Vec<u8>]) -> Result<(), UnpackError> {
    let mut staged = StagedRoot::begin(target, opts())?;
    for tar in layers {
        staged.apply(LayerInput {
            blob: &tar[..],
            compression: Compression::None,
            blob_expected: Some(Expected {
                digest: Digest::of(tar),
                size: Some(tar.len() as u64),
            }),
            diff_id: Some(Digest::of(tar)),
        })?;
    }
    staged.commit().map(|_| ())
}

fn f(name: &str, data: &str) -> E {
    E::File(name.to_owned(), data.as_bytes().to_vec())
}

/// Names in `dir`, sorted: what an unpack left behind.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn files_directories_and_modes_are_extracted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    unpack(
        &root,
        &[tar_of(&[
            E::Dir("etc".into()),
            f("etc/hostname", "cairn\n"),
            f("/abs/file", "x"),
        ])],
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "cairn\n"
    );
    let meta = fs::metadata(root.join("etc/hostname")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert_eq!(meta.mtime(), 1_700_000_000);
    assert_eq!(
        fs::metadata(root.join("etc")).unwrap().mtime(),
        1_700_000_000
    );
    assert!(
        root.join("abs/file").is_file(),
        "absolute paths land inside the root"
    );
    assert_eq!(listing(tmp.path()), vec!["root"]);
}

#[test]
fn whiteout_removes_lower_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let lower = tar_of(&[f("etc/a", "1"), f("etc/b", "2"), f("keep", "k")]);
    let upper = tar_of(&[f("etc/.wh.a", "")]);
    unpack(&root, &[lower, upper]).unwrap();
    assert!(!root.join("etc/a").exists());
    assert!(!root.join("etc/.wh.a").exists());
    assert_eq!(fs::read_to_string(root.join("etc/b")).unwrap(), "2");
}

#[test]
fn whiteout_applied_to_an_existing_target_keeps_the_old_tree_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    unpack(&root, &[tar_of(&[f("etc/a", "1"), f("etc/b", "2")])]).unwrap();
    let before = fs::metadata(root.join("etc/b")).unwrap().ino();
    unpack(&root, &[tar_of(&[f("etc/.wh.a", ""), f("etc/c", "3")])]).unwrap();
    assert!(!root.join("etc/a").exists());
    assert_eq!(fs::read_to_string(root.join("etc/c")).unwrap(), "3");
    // Lower files are carried over by hard link, not copied.
    assert_eq!(fs::metadata(root.join("etc/b")).unwrap().ino(), before);
    assert_eq!(listing(tmp.path()), vec!["root"]);
}

#[test]
fn begin_from_builds_on_another_root_and_leaves_it_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    unpack(&base, &[tar_of(&[f("etc/a", "1"), f("etc/b", "2")])]).unwrap();
    let shared = fs::metadata(base.join("etc/b")).unwrap().ino();
    let top = tmp.path().join("top");
    let layer = tar_of(&[f("etc/.wh.a", ""), f("etc/c", "3")]);
    let mut staged = StagedRoot::begin_from(&top, &base, opts()).unwrap();
    staged
        .apply(LayerInput {
            blob: &layer[..],
            compression: Compression::None,
            blob_expected: None,
            diff_id: Some(Digest::of(&layer)),
        })
        .unwrap();
    staged.commit().unwrap();
    assert_eq!(listing(&top.join("etc")), vec!["b", "c"]);
    assert_eq!(fs::metadata(top.join("etc/b")).unwrap().ino(), shared);
    // The lower root keeps what the upper layer whited out.
    assert_eq!(listing(&base.join("etc")), vec!["a", "b"]);
    assert_eq!(listing(tmp.path()), vec!["base", "top"]);
}

#[test]
fn opaque_directory_hides_lower_children_but_keeps_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let lower = tar_of(&[
        f("var/cache/old", "o"),
        f("var/cache/sub/deep", "d"),
        f("var/other", "x"),
    ]);
    // The layer's own file comes before the marker: order must not matter.
    let upper = tar_of(&[f("var/cache/sub/new", "n"), f("var/cache/.wh..wh..opq", "")]);
    unpack(&root, &[lower, upper]).unwrap();
    assert!(!root.join("var/cache/old").exists());
    assert!(!root.join("var/cache/sub/deep").exists());
    assert!(root.join("var/cache/sub/new").exists());
    assert!(root.join("var/other").exists());
}

#[test]
fn symlink_escape_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let root = tmp.path().join("root");
    let layer = tar_of(&[
        E::Sym("evil".into(), outside.to_string_lossy().into_owned()),
        f("evil/pwned", "x"),
    ]);
    let err = unpack(&root, &[layer]).unwrap_err();
    assert!(matches!(err, UnpackError::SymlinkInPath { .. }), "{err}");
    assert!(listing(&outside).is_empty());
    assert_eq!(
        listing(tmp.path()),
        vec!["outside"],
        "nothing half-written is left"
    );
}

#[test]
fn relative_symlink_chain_escape_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let layer = tar_of(&[
        E::Sym("a".into(), "b".into()),
        E::Sym("b".into(), "../../..".into()),
        f("a/etc/passwd", "x"),
    ]);
    assert!(matches!(
        unpack(&root, &[layer]),
        Err(UnpackError::SymlinkInPath { .. })
    ));
    assert!(!root.exists());
}

#[test]
fn dot_dot_entry_is_refused_and_nothing_is_left_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let err = unpack(&root, &[tar_of(&[f("ok", "1"), f("../escaped", "x")])]).unwrap_err();
    assert!(
        matches!(
            &err,
            UnpackError::Refused {
                source: EntryError::DotDot,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(listing(tmp.path()), Vec::<String>::new());
}

#[test]
fn hard_link_out_of_the_root_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let err = unpack(
        &root,
        &[tar_of(&[E::Hard(
            "shadow".into(),
            "../../../etc/shadow".into(),
        )])],
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::Refused { .. }), "{err}");
    let err = unpack(
        &root,
        &[tar_of(&[E::Hard("shadow".into(), "/etc/shadow".into())])],
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            UnpackError::Refused {
                source: EntryError::HardLinkNotExtracted { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn hard_link_through_a_symlinked_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let layer = tar_of(&[
        f("real/file", "x"),
        E::Sym("link".into(), "real".into()),
        f("link/file2", "y"),
    ]);
    assert!(matches!(
        unpack(&root, &[layer]),
        Err(UnpackError::SymlinkInPath { .. })
    ));
}

#[test]
fn hard_link_within_the_layer_shares_the_inode() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    unpack(
        &root,
        &[tar_of(&[
            f("bin/busybox", "elf"),
            E::Hard("bin/sh".into(), "bin/busybox".into()),
        ])],
    )
    .unwrap();
    assert_eq!(
        fs::metadata(root.join("bin/sh")).unwrap().ino(),
        fs::metadata(root.join("bin/busybox")).unwrap().ino()
    );
}

#[test]
fn device_nodes_are_refused_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let err = unpack(&root, &[tar_of(&[E::Char("dev/null".into())])]).unwrap_err();
    assert!(
        matches!(
            &err,
            UnpackError::Refused {
                source: EntryError::DeviceNotAllowed { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn absurdly_long_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let err = unpack(&root, &[tar_of(&[f(&"n".repeat(300), "x")])]).unwrap_err();
    assert!(
        matches!(
            &err,
            UnpackError::Refused {
                source: EntryError::NameTooLong { .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_corrupted_blob_is_refused_and_the_old_root_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    unpack(&root, &[tar_of(&[f("old", "1")])]).unwrap();
    let good = tar_of(&[f("new", "2")]);
    let mut bad = good.clone();
    bad[600] ^= 1; // flip a data byte
    let mut staged = StagedRoot::begin(&root, opts()).unwrap();
    let err = staged
        .apply(LayerInput {
            blob: &bad[..],
            compression: Compression::None,
            blob_expected: Some(Expected {
                digest: Digest::of(&good),
                size: Some(good.len() as u64),
            }),
            diff_id: None,
        })
        .unwrap_err();
    assert!(matches!(err, UnpackError::BlobMismatch { .. }), "{err}");
    drop(staged);
    assert_eq!(listing(&root), vec!["old"]);
    assert_eq!(listing(tmp.path()), vec!["root"]);
}

#[test]
fn a_diff_id_mismatch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tar_of(&[f("a", "1")]);
    let mut staged = StagedRoot::begin(&tmp.path().join("root"), opts()).unwrap();
    let err = staged
        .apply(LayerInput {
            blob: &layer[..],
            compression: Compression::None,
            blob_expected: None,
            diff_id: Some(Digest::of(b"something else")),
        })
        .unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
}

#[test]
fn gzip_and_zstd_layers_are_decompressed_and_diff_ids_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tar_of(&[f("hello", "world")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    let zst =
        ruzstd::encoding::compress_to_vec(&layer[..], ruzstd::encoding::CompressionLevel::Fastest);
    for (name, blob, compression) in [
        ("gz", gz, Compression::Gzip),
        ("zst", zst, Compression::Zstd),
    ] {
        let root = tmp.path().join(name);
        let mut staged = StagedRoot::begin(&root, opts()).unwrap();
        let report = staged
            .apply(LayerInput {
                blob: &blob[..],
                compression,
                blob_expected: Some(Expected {
                    digest: Digest::of(&blob),
                    size: Some(blob.len() as u64),
                }),
                diff_id: Some(Digest::of(&layer)),
            })
            .unwrap();
        assert_eq!(report.diff_id, Digest::of(&layer));
        staged.commit().unwrap();
        assert_eq!(fs::read_to_string(root.join("hello")).unwrap(), "world");
    }
}

#[test]
fn a_directory_entry_replaces_a_lower_symlink_instead_of_following_it() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let root = tmp.path().join("root");
    let lower = tar_of(&[E::Sym("d".into(), outside.to_string_lossy().into_owned())]);
    let upper = tar_of(&[E::Dir("d".into()), f("d/x", "1")]);
    unpack(&root, &[lower, upper]).unwrap();
    assert!(fs::symlink_metadata(root.join("d")).unwrap().is_dir());
    assert!(listing(&outside).is_empty());
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("".to_owned()),
        Just(".wh..wh..opq".to_owned()),
        Just(".wh.a".to_owned()),
        Just("x".repeat(260)),
        "[ab]",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), proptest::collection::vec(name(), 1..4)).prop_map(|(abs, v)| {
        let p = v.join("/");
        if abs { format!("/{p}") } else { p }
    })
}

fn entry() -> impl Strategy<Value = E> {
    prop_oneof![
        path().prop_map(E::Dir),
        path().prop_map(|p| E::File(p, b"data".to_vec())),
        (
            path(),
            prop_oneof![path(), Just("/".to_owned()), Just("../../..".to_owned())]
        )
            .prop_map(|(p, t)| E::Sym(p, t)),
        (path(), path()).prop_map(|(p, t)| E::Hard(p, t)),
        path().prop_map(E::Char),
    ]
}

fn snapshot(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        out.push((e.file_name().to_string_lossy().into_owned(), m.len()));
        if m.is_dir() {
            out.extend(snapshot(&e.path()));
        }
    }
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Hostile layers never panic, never touch anything outside the root,
    /// and either succeed or fail with a named error leaving no root.
    #[test]
    fn generated_layers_never_escape_the_root(
        lower in proptest::collection::vec(entry(), 0..6),
        upper in proptest::collection::vec(entry(), 0..8),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("a");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("b"), "sentinel").unwrap();
        fs::create_dir(tmp.path().join("r")).unwrap();
        let before = snapshot(tmp.path());
        let root = tmp.path().join("r").join("root");
        let result = unpack(&root, &[tar_of(&lower), tar_of(&upper)]);
        let mut after = snapshot(tmp.path());
        match &result {
            Ok(()) => after.retain(|(n, _)| !n.starts_with("root") || n == "r"),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(!root.exists());
            }
        }
        let outside_after: Vec<_> = snapshot(&outside);
        prop_assert_eq!(outside_after, vec![("b".to_owned(), 8)]);
        prop_assert_eq!(fs::read_to_string(outside.join("b")).unwrap(), "sentinel");
        if result.is_ok() {
            // Everything new lives under r/root.
            prop_assert_eq!(listing(&tmp.path().join("r")), vec!["root".to_owned()]);
            prop_assert_eq!(listing(tmp.path()), vec!["a".to_owned(), "r".to_owned()]);
        } else {
            prop_assert_eq!(snapshot(tmp.path()), before);
        }
    }
}

/// Fails after `budget` bytes: the crash window in the middle of a layer.
struct FailingReader<'a> {
    inner: &'a [u8],
    budget: usize,
}

impl std::io::Read for FailingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.budget == 0 {
            return Err(std::io::Error::other("injected read failure"));
        }
        let n = buf.len().min(self.budget).min(self.inner.len());
        buf[..n].copy_from_slice(&self.inner[..n]);
        self.inner = &self.inner[n..];
        self.budget -= n;
        Ok(n)
    }
}

#[test]
fn a_read_failure_mid_layer_leaves_the_old_root_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    unpack(&root, &[tar_of(&[f("old", "1")])]).unwrap();
    let layer = tar_of(&[f("a", "1"), f("b", "2"), f("c", "3"), f(".wh.old", "")]);
    for budget in [0, 100, 512, 1024, 1600, 2048] {
        let mut staged = StagedRoot::begin(&root, opts()).unwrap();
        let err = staged
            .apply(LayerInput {
                blob: FailingReader {
                    inner: &layer,
                    budget,
                },
                compression: Compression::None,
                blob_expected: None,
                diff_id: None,
            })
            .unwrap_err();
        assert!(matches!(err, UnpackError::Tar { .. }), "{budget}: {err}");
        drop(staged);
        assert_eq!(listing(&root), vec!["old"], "after failing at {budget}");
        assert_eq!(
            listing(tmp.path()),
            vec!["root"],
            "after failing at {budget}"
        );
    }
}

#[test]
fn a_truncated_gzip_layer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tar_of(&[f("hello", "world")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    let cut = &gz[..gz.len() / 2];
    let mut staged = StagedRoot::begin(&tmp.path().join("root"), opts()).unwrap();
    let err = staged
        .apply(LayerInput {
            blob: cut,
            compression: Compression::Gzip,
            blob_expected: None,
            diff_id: Some(Digest::of(&layer)),
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            UnpackError::Tar { .. } | UnpackError::DiffIdMismatch { .. }
        ),
        "{err}"
    );
}

#[test]
fn owners_and_set_id_bits_are_kept_when_running_as_root() {
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let mut h = tar::Header::new_gnu();
    h.set_path("bin/su").unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o4755);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_size(2);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(b"su");
    out.resize(1024, 0);
    out.extend_from_slice(&[0; 1024]);
    let root = tmp.path().join("root");
    let mut staged = StagedRoot::begin(
        &root,
        UnpackOptions {
            preserve_owners: true,
            ..opts()
        },
    )
    .unwrap();
    let result = staged.apply(LayerInput {
        blob: &out[..],
        compression: Compression::None,
        blob_expected: None,
        diff_id: None,
    });
    if rustix::process::geteuid().is_root() {
        result.unwrap();
        staged.commit().unwrap();
        let meta = fs::metadata(root.join("bin/su")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
        assert_eq!(meta.permissions().mode() & 0o7777, 0o4755);
    } else {
        let err = result.unwrap_err();
        assert!(err.to_string().contains("setting owner"), "{err}");
    }
}

#[test]
fn a_blob_longer_than_declared_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tar_of(&[f("a", "1")]);
    let mut staged = StagedRoot::begin(&tmp.path().join("root"), opts()).unwrap();
    let err = staged
        .apply(LayerInput {
            blob: &layer[..],
            compression: Compression::None,
            blob_expected: Some(Expected {
                digest: Digest::of(&layer),
                size: Some(100),
            }),
            diff_id: None,
        })
        .unwrap_err();
    assert!(matches!(err, UnpackError::Tar { .. }), "{err}");
}

#[test]
fn a_layer_claiming_a_gigantic_long_name_is_refused_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNULongName);
    h.set_size(1 << 34);
    h.set_cksum();
    // The stream really is 16 GiB long (zeros, produced lazily).
    let stream = std::io::Read::chain(&h.as_bytes()[..], std::io::repeat(0).take(1 << 34));
    let mut staged = StagedRoot::begin(&tmp.path().join("root"), opts()).unwrap();
    let err = staged
        .apply(LayerInput {
            blob: stream,
            compression: Compression::None,
            blob_expected: None,
            diff_id: None,
        })
        .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("absurdly long"), "{chain}");
}

#[test]
fn xattrs_are_applied_only_when_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.user.cairn", &b"yes"[..])])
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "tagged", &b"x"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    for xattrs in [false, true] {
        let root = tmp.path().join(format!("root-{xattrs}"));
        let mut staged = StagedRoot::begin(&root, UnpackOptions { xattrs, ..opts() }).unwrap();
        staged
            .apply(LayerInput {
                blob: &layer[..],
                compression: Compression::None,
                blob_expected: None,
                diff_id: None,
            })
            .unwrap();
        staged.commit().unwrap();
        let got = rustix::fs::getxattr(root.join("tagged").as_path(), "user.cairn", &mut [0u8; 16]);
        if xattrs {
            assert_eq!(got, Ok(3), "the xattr is set");
        } else {
            assert!(got.is_err(), "no xattr without the option");
        }
    }
}
