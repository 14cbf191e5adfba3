use super::*;
use oci::media::{OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST};
use serde_json::json;

/// A file or directory in a test layer.
enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
}

fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match entry {
            Entry::File(path, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data).unwrap();
            }
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, &[][..]).unwrap();
            }
        }
    }
    builder.into_inner().unwrap()
}

/// Writes an image of uncompressed `layers` named `name` into `layout`;
/// returns the manifest digest.
fn add_image(layout: &Layout, name: &str, layers: &[Vec<u8>]) -> Digest {
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let (digest, size) = layout.write_blob(layer).unwrap();
        diff_ids.push(digest.to_string());
        layer_descs
            .push(json!({"mediaType": OCI_LAYER_TAR, "digest": digest.to_string(), "size": size}));
    }
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-11-22T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = layout
        .write_blob(&serde_json::to_vec(&config).unwrap())
        .unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
        "layers": layer_descs,
    });
    let (digest, size) = layout
        .write_blob(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    let desc = Descriptor::new(MediaType::ImageManifest, size, digest.to_spec());
    layout.tag(&RefName::parse(name).unwrap(), &desc).unwrap();
    digest
}

fn archive_of(layout: &Layout) -> Vec<u8> {
    oci::archive::write_archive(layout, Vec::new()).unwrap()
}

fn base_layer() -> Vec<u8> {
    layer_tar(&[
        Entry::Dir("etc/"),
        Entry::File("etc/os-release", b"ID=test\n"),
        Entry::File("etc/shared", b"base\n"),
    ])
}

fn name(s: &str) -> ImageRef {
    s.parse().unwrap()
}

/// Every entry under the store's root, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_imported_archive_is_listed_stored_and_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    let digest = add_image(&src, "hello:1", &[base_layer()]);
    let store = ImageStore::open(&dir.path().join("store")).unwrap();

    let imported = store.import(archive_of(&src).as_slice()).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].reference.as_str(), "hello:1");
    assert_eq!(imported[0].digest, digest);

    let list = store.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].reference.as_ref().unwrap().as_str(), "hello:1");
    assert_eq!(list[0].digest, digest);
    assert_eq!(list[0].created.as_deref(), Some("2026-11-22T00:00:00Z"));
    assert!(list[0].size > 0);

    let root = store.rootfs(&name("hello:1")).unwrap();
    assert_eq!(fs::read(root.join("etc/os-release")).unwrap(), b"ID=test\n");
    assert_eq!(store.rootfs(&ImageRef::Digest(digest.clone())), Some(root));
    let (_, record) = store.resolve(&name("hello:1")).unwrap();
    for blob in record.blobs(&digest) {
        assert!(store.blob_path(&blob).is_file(), "{blob}");
    }
    assert!(tree(&store.root().join(TMP_DIR)).is_empty());
}

#[test]
fn two_images_with_the_same_base_share_its_blob_and_chain() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    let top_a = layer_tar(&[Entry::File("a", b"a\n")]);
    let top_b = layer_tar(&[
        Entry::File("b", b"b\n"),
        // A whiteout of a base file: the chain must not have it.
        Entry::File("etc/.wh.shared", b""),
    ]);
    add_image(&src, "a:1", &[base_layer(), top_a]);
    add_image(&src, "b:1", &[base_layer(), top_b]);
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    store.import(archive_of(&src).as_slice()).unwrap();

    let (_, a) = store.resolve(&name("a:1")).unwrap();
    let (_, b) = store.resolve(&name("b:1")).unwrap();
    assert_eq!(a.layers[0], b.layers[0]);
    assert_eq!(a.chains[0], b.chains[0]);
    assert_ne!(a.chains[1], b.chains[1]);
    // Three chains: the shared base and one top each.
    assert_eq!(
        fs::read_dir(store.root().join(LAYERS_DIR)).unwrap().count(),
        3
    );

    let root_a = store.rootfs(&name("a:1")).unwrap();
    let root_b = store.rootfs(&name("b:1")).unwrap();
    assert_eq!(fs::read(root_a.join("etc/shared")).unwrap(), b"base\n");
    assert!(root_a.join("a").is_file() && !root_a.join("b").exists());
    assert!(root_b.join("b").is_file() && !root_b.join("a").exists());
    assert!(!root_b.join("etc/shared").exists());
    assert!(!root_b.join("etc/.wh.shared").exists());
    // The base chain itself is untouched by the whiteout above it.
    assert!(store.chain_path(&b.chains[0]).join("etc/shared").is_file());
}

#[test]
fn prune_after_rm_keeps_what_remaining_images_use_and_removes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    add_image(
        &src,
        "a:1",
        &[base_layer(), layer_tar(&[Entry::File("a", b"a\n")])],
    );
    add_image(
        &src,
        "b:1",
        &[base_layer(), layer_tar(&[Entry::File("b", b"b\n")])],
    );
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    store.import(archive_of(&src).as_slice()).unwrap();
    let (a_digest, a) = store.resolve(&name("a:1")).unwrap();
    let (b_digest, b) = store.resolve(&name("b:1")).unwrap();

    // Nothing is unreferenced yet.
    assert_eq!(
        store.prune(&Holds::default()).unwrap(),
        PruneReport::default()
    );

    let removed = store.remove(&name("a:1")).unwrap();
    assert_eq!(removed.len(), 1);
    assert!(matches!(
        store.remove(&name("a:1")),
        Err(RemoveError::NotFound(_))
    ));
    // rm drops the name only; the image stays, unnamed, until prune.
    assert!(
        store
            .list()
            .iter()
            .any(|r| r.reference.is_none() && r.digest == a_digest)
    );
    assert!(store.blob_path(&a.layers[1]).is_file());

    let report = store.prune(&Holds::default()).unwrap();
    assert_eq!(report.images, vec![a_digest.clone()]);
    let mut expected_blobs = vec![a_digest.clone(), a.config.clone(), a.layers[1].clone()];
    expected_blobs.sort();
    let mut got_blobs = report.blobs.clone();
    got_blobs.sort();
    assert_eq!(got_blobs, expected_blobs);
    assert_eq!(report.layers, vec![a.chains[1].clone()]);
    assert!(report.bytes_freed > 0);

    for blob in b.blobs(&b_digest) {
        assert!(store.blob_path(&blob).is_file(), "{blob} was pruned");
    }
    for chain in &b.chains {
        assert!(store.chain_path(chain).is_dir(), "{chain} was pruned");
    }
    assert!(!store.chain_path(&a.chains[1]).exists());
    assert!(
        store
            .rootfs(&name("b:1"))
            .unwrap()
            .join("etc/shared")
            .is_file()
    );
}

#[test]
fn prune_keeps_an_unnamed_image_a_container_holds() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    let digest = add_image(&src, "a:1", &[base_layer()]);
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    store.import(archive_of(&src).as_slice()).unwrap();
    store.remove(&ImageRef::Digest(digest.clone())).unwrap();

    let holds = Holds {
        images: BTreeSet::from([digest.clone()]),
    };
    assert_eq!(store.prune(&holds).unwrap(), PruneReport::default());
    assert!(
        store
            .rootfs(&ImageRef::Digest(digest.clone()))
            .unwrap()
            .is_dir()
    );

    let report = store.prune(&Holds::default()).unwrap();
    assert_eq!(report.images, vec![digest]);
    assert_eq!(report.blobs.len(), 3);
    assert_eq!(report.layers.len(), 1);
}

#[test]
fn a_corrupted_blob_is_refused_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    let digest = add_image(&src, "bad:1", &[base_layer()]);
    let store_root = dir.path().join("store");
    let store = ImageStore::open(&store_root).unwrap();
    let before = tree(&store_root);

    // Flip a byte inside the layer's file content in the archive.
    let mut archive = archive_of(&src);
    let at = archive
        .windows(8)
        .position(|w| w == b"ID=test\n")
        .expect("the layer is stored uncompressed");
    archive[at] = b'X';
    let err = store.import(archive.as_slice()).unwrap_err();
    assert!(err.is_bad_input(), "{err:?}");
    assert!(
        crate::error_chain(&err).contains("digest"),
        "{}",
        crate::error_chain(&err)
    );
    assert!(store.list().is_empty());
    assert!(store.resolve(&ImageRef::Digest(digest)).is_none());
    assert_eq!(tree(&store_root), before);
}

#[test]
fn a_truncated_archive_is_refused_and_nothing_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    add_image(&src, "cut:1", &[base_layer()]);
    let store_root = dir.path().join("store");
    let store = ImageStore::open(&store_root).unwrap();
    let before = tree(&store_root);
    let archive = archive_of(&src);
    let err = store.import(&archive[..archive.len() / 2]).unwrap_err();
    assert!(err.is_bad_input(), "{err:?}");
    assert!(store.list().is_empty());
    assert_eq!(tree(&store_root), before);
}

#[test]
fn an_archive_without_named_images_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    let err = store.import(archive_of(&src).as_slice()).unwrap_err();
    assert!(matches!(err, ImportError::NoImages), "{err:?}");
}

#[test]
fn the_index_survives_a_restart_and_leftover_staging_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    let digest = add_image(&src, "keep:1", &[base_layer()]);
    let store_root = dir.path().join("store");
    {
        let store = ImageStore::open(&store_root).unwrap();
        store.import(archive_of(&src).as_slice()).unwrap();
    }
    // What a crash mid-import and mid-unpack leaves.
    fs::create_dir_all(store_root.join("tmp/import-x/layout")).unwrap();
    fs::create_dir_all(store_root.join("layers/.abc.unpack-1/etc")).unwrap();
    fs::write(store_root.join("blobs/sha256/.tmp-1"), b"half").unwrap();

    let store = ImageStore::open(&store_root).unwrap();
    let list = store.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].digest, digest);
    assert!(
        store
            .rootfs(&name("keep:1"))
            .unwrap()
            .join("etc/os-release")
            .is_file()
    );
    assert!(!store_root.join("tmp/import-x").exists());
    assert!(!store_root.join("layers/.abc.unpack-1").exists());
    assert!(!store_root.join("blobs/sha256/.tmp-1").exists());
}

#[test]
fn an_exported_image_imports_into_another_store_with_the_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    let digest = add_image(&src, "round:1", &[base_layer()]);
    add_image(&src, "other:1", &[layer_tar(&[Entry::File("o", b"o")])]);
    let first = ImageStore::open(&dir.path().join("one")).unwrap();
    first.import(archive_of(&src).as_slice()).unwrap();

    let archive = first.export(&name("round:1"), Vec::new()).unwrap();
    let second = ImageStore::open(&dir.path().join("two")).unwrap();
    let imported = second.import(archive.as_slice()).unwrap();
    assert_eq!(imported.len(), 1, "only the named image is exported");
    assert_eq!(imported[0].reference.as_str(), "round:1");
    assert_eq!(imported[0].digest, digest);
    assert!(tree(&first.root().join(TMP_DIR)).is_empty());

    assert!(matches!(
        first.export(&name("missing:1"), Vec::new()),
        Err(ExportError::NotFound(_))
    ));
}

#[test]
fn a_damaged_index_is_an_error_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let store_root = dir.path().join("store");
    drop(ImageStore::open(&store_root).unwrap());
    fs::write(store_root.join(INDEX_FILE), b"{\"version\":1,\"images\":{},\"refs\":{\"a:1\":\"sha256:0000000000000000000000000000000000000000000000000000000000000000\"}}").unwrap();
    assert!(matches!(
        ImageStore::open(&store_root),
        Err(OpenError::Inconsistent { .. })
    ));
    fs::write(store_root.join(INDEX_FILE), b"{\"version\":1,\"extra\":0}").unwrap();
    assert!(matches!(
        ImageStore::open(&store_root),
        Err(OpenError::Index { .. })
    ));
}

#[test]
fn chain_ids_follow_the_image_spec() {
    let a = Digest::of(b"a");
    let b = Digest::of(b"b");
    let chains = chain_ids(&[a.clone(), b.clone()]);
    assert_eq!(chains[0], a);
    assert_eq!(chains[1], Digest::of(format!("{a} {b}").as_bytes()));
    assert!(chain_ids(&[]).is_empty());
}

/// Stores every blob of `name` in `src` through `ingest.blob_writer`, as a
/// pull does; returns the manifest descriptor.
fn ingest_blobs(ingest: &Ingest, src: &Layout, name: &str) -> Descriptor {
    let image = src.resolve(&RefName::parse(name).unwrap()).unwrap();
    let mut descs = vec![
        image.manifest_descriptor.clone(),
        image.manifest.config().clone(),
    ];
    descs.extend(image.manifest.layers().iter().cloned());
    for desc in &descs {
        let digest = descriptor_digest(desc).unwrap();
        if ingest.has_blob(&digest) {
            continue;
        }
        let mut w = ingest
            .blob_writer(oci::digest::Expected {
                digest: digest.clone(),
                size: Some(desc.size()),
            })
            .unwrap();
        w.write_all(&std::fs::read(src.blob_path(&digest)).unwrap())
            .unwrap();
        w.commit().unwrap();
    }
    image.manifest_descriptor
}

#[test]
fn an_ingested_image_is_invisible_until_committed_and_then_listed() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    let digest = add_image(&src, "app:1", &[base_layer()]);
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    let ingest = store.begin_ingest();
    let desc = ingest_blobs(&ingest, &src, "app:1");
    let image = ingest.read_image(&desc).unwrap();
    assert_eq!(ingest.add_image(&image).unwrap(), digest);
    assert!(store.list().is_empty(), "visible before the commit");
    let name = RefName::parse("registry.site.internal/team/app:1").unwrap();
    store
        .commit_ingest(&ingest, &[(name.clone(), digest.clone())])
        .unwrap();
    drop(ingest);
    assert_eq!(store.list()[0].reference.as_ref(), Some(&name));
    assert!(
        store
            .rootfs(&ImageRef::Name(name))
            .unwrap()
            .join("etc/os-release")
            .is_file()
    );
}

#[test]
fn a_blob_that_does_not_match_its_digest_never_appears_under_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let ingest = store.begin_ingest();
    let wanted = Digest::of(b"the real content");
    let mut w = ingest
        .blob_writer(oci::digest::Expected {
            digest: wanted.clone(),
            size: Some(16),
        })
        .unwrap();
    w.write_all(b"the fake content").unwrap();
    let err = w.commit().unwrap_err();
    assert!(matches!(err, IngestError::Mismatch { ref digest, .. } if *digest == wanted));
    assert!(err.to_string().contains(&wanted.to_string()), "{err}");
    let blobs: Vec<_> = std::fs::read_dir(dir.path().join("blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "{blobs:?}");
    // Longer than declared fails at the write, before the disk fills.
    let mut w = ingest
        .blob_writer(oci::digest::Expected {
            digest: wanted,
            size: Some(4),
        })
        .unwrap();
    let err = w.write_all(b"more than four bytes").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn prune_spares_what_an_ingest_in_flight_pinned_and_takes_it_once_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let src = Layout::create(&dir.path().join("src")).unwrap();
    add_image(&src, "app:1", &[base_layer()]);
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    let ingest = store.begin_ingest();
    ingest_blobs(&ingest, &src, "app:1");
    let before = store.prune(&Holds::default()).unwrap();
    assert!(
        before.blobs.is_empty(),
        "pinned blobs were pruned: {before:?}"
    );
    drop(ingest);
    let after = store.prune(&Holds::default()).unwrap();
    assert_eq!(after.blobs.len(), 3, "{after:?}");
}
