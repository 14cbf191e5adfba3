//! The OCI image layout on disk: `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`, as skopeo's `oci:DIR:REF` transport reads and
//! writes it.
//!
//! Writing is append-only and crash-safe: every blob is written to a
//! temporary file in `blobs/sha256/`, synced, and renamed to its digest;
//! `index.json` is replaced atomically last, so a layout is always either
//! the old one or the new one. Reading never trusts a byte: every blob is
//! checked against its descriptor's digest and size, JSON documents are
//! size-capped, and media types Cairn does not know are refused by name.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os,
};
use serde::Serialize;

use crate::digest::{
    self, Digest, DigestError, Expected, HashingReader, HashingWriter, VerifyError,
};
use crate::json;
use crate::media::{self, ManifestKind, UnknownMediaType};
use crate::reference::{REF_NAME_ANNOTATION, RefName, RefNameError};

pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
pub const BLOBS_DIR: &str = "blobs/sha256";
pub const LAYOUT_VERSION: &str = "1.0.0";

/// Indexes nest (an index may point at an index); real ones are one deep.
const MAX_INDEX_DEPTH: usize = 4;

/// The platform every Cairn node runs.
pub const TARGET_OS: &str = "linux";
pub const TARGET_ARCH: &str = "amd64";

/// Why a layout could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not an OCI image layout (no readable oci-layout file)")]
    NotALayout {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} declares imageLayoutVersion {found:?}; only {LAYOUT_VERSION} is supported")]
    LayoutVersion { path: PathBuf, found: String },
    #[error("{what} is not valid JSON of the expected shape")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} has schemaVersion {found}; only 2 is supported")]
    SchemaVersion { what: String, found: u32 },
    #[error("{what} has an unusable digest")]
    Digest {
        what: String,
        #[source]
        source: DigestError,
    },
    #[error("blob {digest} is missing from the layout")]
    MissingBlob { digest: Digest },
    #[error("blob {digest} does not match its descriptor")]
    Verify {
        digest: Digest,
        #[source]
        source: VerifyError,
    },
    #[error("{what} declares {size} bytes, more than the {max} Cairn reads into memory")]
    TooLarge { what: String, size: u64, max: u64 },
    #[error(transparent)]
    MediaType(#[from] UnknownMediaType),
    #[error("reference {name} is not in the layout (it has: {available})")]
    NoSuchRef { name: String, available: String },
    #[error("index.json names an image with an invalid reference")]
    BadRefName {
        #[source]
        source: RefNameError,
    },
    #[error("image index {digest} has no linux/amd64 image (it has: {available})")]
    NoPlatform { digest: Digest, available: String },
    #[error("image indexes nest deeper than {MAX_INDEX_DEPTH} levels at {digest}")]
    TooDeep { digest: Digest },
    #[error("image config {config} lists {diff_ids} rootfs diff_ids for {layers} layers")]
    DiffIdCount {
        config: String,
        diff_ids: usize,
        layers: usize,
    },
    #[error("cannot encode {what} as JSON")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An image resolved to one platform: its manifest and config, both
/// verified against their descriptors.
#[derive(Debug, Clone)]
pub struct Image {
    /// The descriptor of the single-platform manifest (not of an index
    /// that led to it).
    pub manifest_descriptor: Descriptor,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

impl Image {
    /// The digests of the uncompressed layers, in manifest order, checked
    /// against the number of layers.
    pub fn diff_ids(&self) -> Result<Vec<Digest>, LayoutError> {
        let ids = self.config.rootfs().diff_ids();
        if ids.len() != self.manifest.layers().len() {
            return Err(LayoutError::DiffIdCount {
                config: self.manifest.config().digest().to_string(),
                diff_ids: ids.len(),
                layers: self.manifest.layers().len(),
            });
        }
        ids.iter()
            .map(|d| {
                Digest::parse(d).map_err(|source| LayoutError::Digest {
                    what: "a rootfs diff_id".to_owned(),
                    source,
                })
            })
            .collect()
    }
}

/// The digest a descriptor names, parsed.
pub fn descriptor_digest(desc: &Descriptor) -> Result<Digest, LayoutError> {
    Digest::from_spec(desc.digest()).map_err(|source| LayoutError::Digest {
        what: format!("a {} descriptor", desc.media_type()),
        source,
    })
}

/// The reference name a descriptor in `index.json` carries, if any.
pub fn ref_name(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME_ANNOTATION))
        .map(String::as_str)
}

/// Picks the linux/amd64 entry of an index (the first one, as docker and
/// containerd do when several match).
pub fn select_platform(index: &ImageIndex) -> Option<&Descriptor> {
    index.manifests().iter().find(|d| {
        d.platform()
            .as_ref()
            .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
    })
}

fn platforms(index: &ImageIndex) -> String {
    let list: Vec<String> = index
        .manifests()
        .iter()
        .map(|d| match d.platform() {
            Some(p) => format!("{}/{}", p.os(), p.architecture()),
            None => "no platform".to_owned(),
        })
        .collect();
    if list.is_empty() {
        "nothing".to_owned()
    } else {
        list.join(", ")
    }
}

/// A blob being written; [`BlobWriter::commit`] names it by its digest.
#[derive(Debug)]
pub struct BlobWriter {
    inner: HashingWriter<io::BufWriter<tempfile::NamedTempFile>>,
    dir: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Syncs the blob and moves it to `blobs/sha256/<hex>`; returns its
    /// digest and size. An existing blob of the same digest is kept.
    pub fn commit(self) -> Result<(Digest, u64), LayoutError> {
        let (digest, size, buffered) = self.inner.finish();
        let tmp = buffered.into_inner().map_err(|e| LayoutError::Io {
            path: self.dir.clone(),
            source: e.into_error(),
        })?;
        let dest = self.dir.join(digest.hex());
        if dest.exists() {
            return Ok((digest, size));
        }
        // Layouts are shared with other tools and users: 0644, not
        // tempfile's 0600.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io_err(tmp.path()))?;
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        tmp.persist(&dest).map_err(|e| LayoutError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok((digest, size))
    }
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutHeader {
    image_layout_version: String,
}

impl Layout {
    /// Opens a layout, creating an empty one (with an empty `index.json`)
    /// if `root` is missing or an empty directory.
    pub fn create(root: &Path) -> Result<Self, LayoutError> {
        let header = root.join(OCI_LAYOUT_FILE);
        if !header.exists()
            && let Ok(mut entries) = fs::read_dir(root)
            && entries.next().is_some()
        {
            // Never scatter blobs/ and index.json into an unrelated directory.
            return Err(LayoutError::NotALayout {
                path: root.to_owned(),
                source: io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "the directory is not empty and has no oci-layout file",
                ),
            });
        }
        fs::create_dir_all(root.join(BLOBS_DIR)).map_err(io_err(root))?;
        if !header.exists() {
            write_atomic(
                &header,
                format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}").as_bytes(),
            )?;
        }
        let layout = Self::open(root)?;
        if !root.join(INDEX_FILE).exists() {
            layout.write_index(&empty_index())?;
        }
        Ok(layout)
    }

    /// Opens an existing layout, checking its `oci-layout` version.
    pub fn open(root: &Path) -> Result<Self, LayoutError> {
        let header_path = root.join(OCI_LAYOUT_FILE);
        let bytes = read_capped(&header_path, json::MAX_JSON_BYTES).map_err(|e| match e {
            LayoutError::Io { path, source } => LayoutError::NotALayout { path, source },
            other => other,
        })?;
        let header: LayoutHeader = json::parse(&bytes).map_err(|source| LayoutError::Json {
            what: header_path.display().to_string(),
            source,
        })?;
        if header.image_layout_version != LAYOUT_VERSION {
            return Err(LayoutError::LayoutVersion {
                path: header_path,
                found: header.image_layout_version,
            });
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(BLOBS_DIR).join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Starts writing a blob of not yet known digest.
    pub fn blob_writer(&self) -> Result<BlobWriter, LayoutError> {
        let dir = self.root.join(BLOBS_DIR);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&dir)
            .map_err(io_err(&dir))?;
        Ok(BlobWriter {
            inner: HashingWriter::new(io::BufWriter::new(tmp)),
            dir,
        })
    }

    /// Stores `bytes` as a blob.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<(Digest, u64), LayoutError> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(io_err(&self.root))?;
        w.commit()
    }

    /// Stores `value` as canonical JSON and describes it.
    pub fn write_json<T: Serialize>(
        &self,
        media_type: MediaType,
        what: &'static str,
        value: &T,
    ) -> Result<Descriptor, LayoutError> {
        let bytes =
            json::to_canonical_vec(value).map_err(|source| LayoutError::Encode { what, source })?;
        let (digest, size) = self.write_blob(&bytes)?;
        Ok(Descriptor::new(media_type, size, digest.to_spec()))
    }

    /// Opens a blob for streaming; the caller must call
    /// [`HashingReader::verify`] with the descriptor's [`Expected`] at the
    /// end. Reading beyond the declared size fails at once.
    pub fn open_blob(
        &self,
        desc: &Descriptor,
    ) -> Result<(HashingReader<File>, Expected), LayoutError> {
        let digest = descriptor_digest(desc)?;
        let path = self.blob_path(&digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::MissingBlob { digest });
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let expected = Expected {
            digest,
            size: Some(desc.size()),
        };
        Ok((HashingReader::with_limit(file, desc.size()), expected))
    }

    /// Reads a small blob whole, verified against its descriptor.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, LayoutError> {
        if desc.size() > json::MAX_JSON_BYTES {
            return Err(LayoutError::TooLarge {
                what: format!("blob {}", desc.digest()),
                size: desc.size(),
                max: json::MAX_JSON_BYTES,
            });
        }
        let (mut reader, expected) = self.open_blob(desc)?;
        let mut bytes = Vec::new();
        let path = self.blob_path(&expected.digest);
        reader.read_to_end(&mut bytes).map_err(|source| {
            if source.kind() == io::ErrorKind::InvalidData {
                LayoutError::Verify {
                    digest: expected.digest.clone(),
                    source: VerifyError::LongerThanDeclared {
                        expected: desc.size(),
                    },
                }
            } else {
                io_err(&path)(source)
            }
        })?;
        let (actual, size) = reader.finish();
        digest::check(&expected, &actual, size).map_err(|source| LayoutError::Verify {
            digest: expected.digest.clone(),
            source,
        })?;
        Ok(bytes)
    }

    /// Checks a whole blob (of any size) against its descriptor.
    pub fn verify_blob(&self, desc: &Descriptor) -> Result<(), LayoutError> {
        let (reader, expected) = self.open_blob(desc)?;
        let path = self.blob_path(&expected.digest);
        let result = match reader.verify(&expected) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                Err(VerifyError::LongerThanDeclared {
                    expected: desc.size(),
                })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        result.map_err(|source| LayoutError::Verify {
            digest: expected.digest,
            source,
        })
    }

    /// The top-level `index.json`.
    pub fn index(&self) -> Result<ImageIndex, LayoutError> {
        let path = self.root.join(INDEX_FILE);
        let bytes = read_capped(&path, json::MAX_JSON_BYTES)?;
        let index: ImageIndex = json::parse(&bytes).map_err(|source| LayoutError::Json {
            what: path.display().to_string(),
            source,
        })?;
        check_schema(index.schema_version(), INDEX_FILE)?;
        Ok(index)
    }

    /// Replaces `index.json` atomically.
    pub fn write_index(&self, index: &ImageIndex) -> Result<(), LayoutError> {
        let bytes = json::to_canonical_vec(index).map_err(|source| LayoutError::Encode {
            what: "index.json",
            source,
        })?;
        write_atomic(&self.root.join(INDEX_FILE), &bytes)
    }

    /// Names `desc` (a manifest or index already in the layout) `name` in
    /// `index.json`, replacing whatever that name pointed at before.
    pub fn tag(&self, name: &RefName, desc: &Descriptor) -> Result<(), LayoutError> {
        media::manifest_kind(desc.media_type())?;
        let mut index = self.index()?;
        let mut named = desc.clone();
        let mut annotations = named.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_owned(), name.as_str().to_owned());
        named.set_annotations(Some(annotations));
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) != Some(name.as_str()))
            .cloned()
            .collect();
        manifests.push(named);
        // Sorted by name so the same set of images gives the same index.json.
        manifests.sort_by(|a, b| ref_name(a).cmp(&ref_name(b)));
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// The named entries of `index.json`.
    pub fn references(&self) -> Result<Vec<(RefName, Descriptor)>, LayoutError> {
        self.index()?
            .manifests()
            .iter()
            .filter_map(|d| ref_name(d).map(|n| (n, d)))
            .map(|(n, d)| {
                RefName::parse(n)
                    .map(|r| (r, d.clone()))
                    .map_err(|source| LayoutError::BadRefName { source })
            })
            .collect()
    }

    /// Finds `name` in `index.json` and resolves it to the linux/amd64
    /// image, verifying the manifest and config on the way.
    pub fn resolve(&self, name: &RefName) -> Result<Image, LayoutError> {
        let refs = self.references()?;
        match refs.iter().find(|(n, _)| n == name) {
            Some((_, desc)) => self.resolve_descriptor(desc),
            None => Err(LayoutError::NoSuchRef {
                name: name.to_string(),
                available: if refs.is_empty() {
                    "no named images".to_owned()
                } else {
                    refs.iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            }),
        }
    }

    /// Follows a manifest or index descriptor to the linux/amd64 image.
    pub fn resolve_descriptor(&self, desc: &Descriptor) -> Result<Image, LayoutError> {
        let mut current = desc.clone();
        for _ in 0..=MAX_INDEX_DEPTH {
            match media::manifest_kind(current.media_type())? {
                ManifestKind::Image => return self.read_image(current),
                ManifestKind::Index => {
                    let digest = descriptor_digest(&current)?;
                    let bytes = self.read_blob(&current)?;
                    let index: ImageIndex =
                        json::parse(&bytes).map_err(|source| LayoutError::Json {
                            what: format!("image index {digest}"),
                            source,
                        })?;
                    check_schema(index.schema_version(), &format!("image index {digest}"))?;
                    current = select_platform(&index).cloned().ok_or_else(|| {
                        LayoutError::NoPlatform {
                            digest: digest.clone(),
                            available: platforms(&index),
                        }
                    })?;
                }
            }
        }
        Err(LayoutError::TooDeep {
            digest: descriptor_digest(&current)?,
        })
    }

    fn read_image(&self, desc: Descriptor) -> Result<Image, LayoutError> {
        let digest = descriptor_digest(&desc)?;
        let bytes = self.read_blob(&desc)?;
        let manifest: ImageManifest = json::parse(&bytes).map_err(|source| LayoutError::Json {
            what: format!("image manifest {digest}"),
            source,
        })?;
        check_schema(
            manifest.schema_version(),
            &format!("image manifest {digest}"),
        )?;
        media::check_config(manifest.config().media_type())?;
        for layer in manifest.layers() {
            media::layer_compression(layer.media_type())?;
            descriptor_digest(layer)?;
        }
        let config_bytes = self.read_blob(manifest.config())?;
        let config: ImageConfiguration =
            json::parse(&config_bytes).map_err(|source| LayoutError::Json {
                what: format!("image config {}", manifest.config().digest()),
                source,
            })?;
        let image = Image {
            manifest_descriptor: desc,
            manifest,
            config,
        };
        image.diff_ids()?;
        Ok(image)
    }

    /// Resolves every named image and checks every blob it uses, layers
    /// included, against its descriptor. Returns the names checked.
    pub fn verify(&self) -> Result<Vec<RefName>, LayoutError> {
        let mut names = Vec::new();
        for (name, desc) in self.references()? {
            let image = self.resolve_descriptor(&desc)?;
            for layer in image.manifest.layers() {
                self.verify_blob(layer)?;
            }
            names.push(name);
        }
        Ok(names)
    }
}

fn check_schema(found: u32, what: &str) -> Result<(), LayoutError> {
    if found == 2 {
        Ok(())
    } else {
        Err(LayoutError::SchemaVersion {
            what: what.to_owned(),
            found,
        })
    }
}

fn empty_index() -> ImageIndex {
    let mut index = ImageIndex::default();
    index.set_schema_version(2);
    index.set_media_type(Some(MediaType::ImageIndex));
    index.set_manifests(Vec::new());
    index.set_annotations(None::<HashMap<String, String>>);
    index
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, LayoutError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > max {
        return Err(LayoutError::TooLarge {
            what: path.display().to_string(),
            size: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| LayoutError::Io {
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use oci_spec::image::{
        ConfigBuilder, ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder,
        PlatformBuilder, RootFsBuilder,
    };

    /// Writes a one-layer image (uncompressed layer) named `name`.
    pub(crate) fn sample_image(layout: &Layout, name: &str, layer: &[u8]) -> Descriptor {
        let (ld, ls) = layout.write_blob(layer).unwrap();
        let config = ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .config(ConfigBuilder::default().build().unwrap())
            .rootfs(
                RootFsBuilder::default()
                    .typ("layers")
                    .diff_ids(vec![Digest::of(layer).to_string()])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let cd = layout
            .write_json(MediaType::ImageConfig, "config", &config)
            .unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(cd)
            .layers(vec![Descriptor::new(
                MediaType::ImageLayer,
                ls,
                ld.to_spec(),
            )])
            .build()
            .unwrap();
        let md = layout
            .write_json(MediaType::ImageManifest, "manifest", &manifest)
            .unwrap();
        layout.tag(&RefName::parse(name).unwrap(), &md).unwrap();
        md
    }

    fn platform_desc(desc: &Descriptor, arch: &str) -> Descriptor {
        let mut d = desc.clone();
        d.set_annotations(None);
        d.set_platform(Some(
            PlatformBuilder::default()
                .os(Os::Linux)
                .architecture(Arch::from(arch))
                .build()
                .unwrap(),
        ));
        d
    }

    #[test]
    fn a_written_image_resolves_and_verifies() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(&tmp.path().join("l")).unwrap();
        let md = sample_image(&layout, "app:1", b"layer");
        let image = layout.resolve(&RefName::parse("app:1").unwrap()).unwrap();
        assert_eq!(image.manifest_descriptor.digest(), md.digest());
        assert_eq!(image.diff_ids().unwrap(), vec![Digest::of(b"layer")]);
        assert_eq!(
            layout.verify().unwrap(),
            vec![RefName::parse("app:1").unwrap()]
        );
        // Reopening sees the same thing.
        let again = Layout::open(layout.root()).unwrap();
        assert_eq!(again.references().unwrap().len(), 1);
    }

    #[test]
    fn tagging_a_name_again_replaces_its_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(tmp.path()).unwrap();
        sample_image(&layout, "app:1", b"one");
        sample_image(&layout, "other:1", b"x");
        let second = sample_image(&layout, "app:1", b"two");
        let refs = layout.references().unwrap();
        assert_eq!(refs.len(), 2);
        let app = refs.iter().find(|(n, _)| n.as_str() == "app:1").unwrap();
        assert_eq!(app.1.digest(), second.digest());
    }

    #[test]
    fn a_corrupted_blob_is_refused_with_its_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(tmp.path()).unwrap();
        sample_image(&layout, "app:1", b"layer");
        let layer = layout.blob_path(&Digest::of(b"layer"));
        fs::write(&layer, b"lazer").unwrap();
        let err = layout.verify().unwrap_err();
        assert!(
            matches!(
                &err,
                LayoutError::Verify {
                    source: VerifyError::DigestMismatch { .. },
                    ..
                }
            ),
            "{err}"
        );
        fs::write(&layer, b"layers").unwrap();
        assert!(matches!(layout.verify(), Err(LayoutError::Verify { .. })));
        fs::remove_file(&layer).unwrap();
        assert!(matches!(
            layout.verify(),
            Err(LayoutError::MissingBlob { .. })
        ));
    }

    #[test]
    fn an_unknown_media_type_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(tmp.path()).unwrap();
        let (d, s) = layout.write_blob(b"sig").unwrap();
        let mut index = layout.index().unwrap();
        let mut desc = Descriptor::new(
            MediaType::from("application/vnd.dev.cosign.simplesigning.v1+json"),
            s,
            d.to_spec(),
        );
        desc.set_annotations(Some(
            [(REF_NAME_ANNOTATION.to_owned(), "sig:1".to_owned())].into(),
        ));
        index.set_manifests(vec![desc]);
        layout.write_index(&index).unwrap();
        let err = layout
            .resolve(&RefName::parse("sig:1").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("cosign"), "{err}");
    }

    #[test]
    fn an_index_resolves_to_its_linux_amd64_image() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::create(tmp.path()).unwrap();
        let arm = sample_image(&layout, "arm:1", b"arm");
        let amd = sample_image(&layout, "amd:1", b"amd");
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(vec![
                platform_desc(&arm, "arm64"),
                platform_desc(&amd, "amd64"),
            ])
            .build()
            .unwrap();
        let id = layout
            .write_json(MediaType::ImageIndex, "index", &index)
            .unwrap();
        layout
            .tag(&RefName::parse("multi:1").unwrap(), &id)
            .unwrap();
        let image = layout.resolve(&RefName::parse("multi:1").unwrap()).unwrap();
        assert_eq!(image.manifest_descriptor.digest(), amd.digest());

        let only_arm = ImageIndexBuilder::default()
            .schema_version(2u32)
            .manifests(vec![platform_desc(&arm, "arm64")])
            .build()
            .unwrap();
        let id = layout
            .write_json(MediaType::ImageIndex, "index", &only_arm)
            .unwrap();
        layout
            .tag(&RefName::parse("armonly:1").unwrap(), &id)
            .unwrap();
        let err = layout
            .resolve(&RefName::parse("armonly:1").unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
    }

    #[test]
    fn a_layout_is_never_created_inside_an_unrelated_directory() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        assert!(matches!(
            Layout::create(tmp.path()),
            Err(LayoutError::NotALayout { .. })
        ));
        assert!(!tmp.path().join(BLOBS_DIR).exists());
    }

    #[test]
    fn a_directory_without_oci_layout_is_not_a_layout() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            Layout::open(tmp.path()),
            Err(LayoutError::NotALayout { .. })
        ));
        fs::write(
            tmp.path().join(OCI_LAYOUT_FILE),
            br#"{"imageLayoutVersion":"2.0.0"}"#,
        )
        .unwrap();
        assert!(matches!(
            Layout::open(tmp.path()),
            Err(LayoutError::LayoutVersion { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// index.json and manifests are outside bytes: reading them never
        /// panics, whatever they hold.
        #[test]
        fn arbitrary_index_and_manifest_bytes_never_panic_the_reader(
            index in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            manifest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let tmp = tempfile::tempdir().unwrap();
            let layout = Layout::create(tmp.path()).unwrap();
            let (d, size) = layout.write_blob(&manifest).unwrap();
            let mut desc = Descriptor::new(MediaType::ImageManifest, size, d.to_spec());
            desc.set_annotations(Some([(REF_NAME_ANNOTATION.to_owned(), "m:1".to_owned())].into()));
            let mut idx = layout.index().unwrap();
            idx.set_manifests(vec![desc]);
            layout.write_index(&idx).unwrap();
            let _ = layout.verify();
            fs::write(tmp.path().join(INDEX_FILE), &index).unwrap();
            let _ = layout.references();
            let _ = layout.verify();
        }
    }
}
