//! [`ImageStore`]: blobs, the reference index and unpacked chains on disk.
//! Every method does blocking file work; the API calls them inside
//! `spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use oci::layout::descriptor_digest;
use oci::unpack::UnpackOptions;
use oci::{Digest, Layout, LayoutError, RefName};
use oci_spec::image::{Descriptor, MediaType};
use serde::{Deserialize, Serialize};

use super::ImageRef;
use crate::files::write_atomic;

/// The reference index, in the store's root.
const INDEX_FILE: &str = "images.json";
/// Staging for imports and exports; emptied at open.
const TMP_DIR: &str = "tmp";
/// Unpacked chains.
const LAYERS_DIR: &str = "layers";
/// The index's format; bumped on any incompatible change.
const INDEX_VERSION: u32 = 1;

/// One image, keyed in the index by its manifest digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageRecord {
    /// The manifest's media type (OCI or Docker schema 2).
    pub media_type: String,
    /// The manifest's size in bytes.
    pub manifest_size: u64,
    /// The config blob.
    pub config: Digest,
    /// The config blob's size and media type, for export.
    pub config_size: u64,
    /// The layer blobs, base first.
    pub layers: Vec<Digest>,
    /// The chain id of each layer, base first; the last one names the
    /// image's whole root under `layers/`.
    pub chains: Vec<Digest>,
    /// Manifest, config and layers, in bytes as stored.
    pub size: u64,
    /// The config's `created`, as written by the image's builder.
    pub created: Option<String>,
}

impl ImageRecord {
    fn blobs(&self, manifest: &Digest) -> impl Iterator<Item = Digest> {
        std::iter::once(manifest.clone())
            .chain(std::iter::once(self.config.clone()))
            .chain(self.layers.iter().cloned())
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexFile {
    version: u32,
    images: BTreeMap<Digest, ImageRecord>,
    refs: BTreeMap<String, Digest>,
}

/// The index as held in memory: references parsed, every reference
/// pointing at a record.
#[derive(Clone, Debug, Default)]
struct Index {
    images: BTreeMap<Digest, ImageRecord>,
    refs: BTreeMap<RefName, Digest>,
}

impl Index {
    fn to_file(&self) -> IndexFile {
        IndexFile {
            version: INDEX_VERSION,
            images: self.images.clone(),
            refs: self
                .refs
                .iter()
                .map(|(n, d)| (n.as_str().to_owned(), d.clone()))
                .collect(),
        }
    }

    fn names_of(&self, digest: &Digest) -> Vec<RefName> {
        self.refs
            .iter()
            .filter(|(_, d)| *d == digest)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn resolve(&self, reference: &ImageRef) -> Option<(Digest, ImageRecord)> {
        let digest = match reference {
            ImageRef::Name(name) => self.refs.get(name)?,
            ImageRef::Digest(digest) => digest,
        };
        self.images
            .get(digest)
            .map(|record| (digest.clone(), record.clone()))
    }
}

/// What containers hold, so prune keeps their images even when no
/// reference names them any more. The container runtime fills this from
/// its containers' image digests; until it exists nothing holds an image.
#[derive(Clone, Debug, Default)]
pub struct Holds {
    /// Manifest digests of images containers run from.
    pub images: BTreeSet<Digest>,
}

/// One row of the image list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSummary {
    /// The reference, or `None` for an image no reference names (it goes
    /// at the next prune unless a container holds it).
    pub reference: Option<RefName>,
    /// The manifest digest.
    pub digest: Digest,
    /// Bytes stored for it (shared blobs counted for every image).
    pub size: u64,
    /// The config's `created`.
    pub created: Option<String>,
}

/// One reference an import recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The reference from the archive's index.
    pub reference: RefName,
    /// The linux/amd64 manifest it resolved to.
    pub digest: Digest,
}

/// What prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Image records no reference named.
    pub images: Vec<Digest>,
    /// Blobs no image uses.
    pub blobs: Vec<Digest>,
    /// Unpacked chains no image uses.
    pub layers: Vec<Digest>,
    /// Blob bytes plus the bytes of unpacked files whose last link went.
    pub bytes_freed: u64,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The blob layout is unusable.
    #[error("cannot open the blob layout")]
    Layout(#[source] LayoutError),
    /// A directory or file could not be read, made or cleaned.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// `images.json` is not an index this agent understands.
    #[error("cannot parse the image index {path}")]
    Index {
        /// The path.
        path: PathBuf,
        /// The parser's verdict.
        #[source]
        source: serde_json::Error,
    },
    /// The index is of another version or refers to nothing.
    #[error("the image index {path} is inconsistent: {problem}")]
    Inconsistent {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Why an import failed. Nothing of it is recorded.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A named image could not be stored or unpacked.
    #[error("image {name} in the archive cannot be stored")]
    Ingest {
        /// The reference.
        name: String,
        /// The failure (boxed: it carries layout and unpack errors).
        #[source]
        source: Box<IngestError>,
    },
    /// The archive is not a valid OCI archive, or a blob in it does not
    /// match its digest.
    #[error("invalid oci-archive")]
    Archive(#[source] oci::archive::ArchiveError),
    /// The archive names no image.
    #[error("the archive names no image (no org.opencontainers.image.ref.name in index.json)")]
    NoImages,
    /// A named image could not be resolved in the archive.
    #[error("image {name} in the archive is invalid")]
    Image {
        /// The reference.
        name: String,
        /// The failure.
        #[source]
        source: LayoutError,
    },
    /// Storage failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// Why the records of an ingest could not be saved. Nothing is recorded.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A reference names an image neither the ingest nor the store has.
    #[error("reference {0} names no image of this ingest")]
    UnknownImage(String),
    /// The index could not be saved.
    #[error("cannot save the image index {path}")]
    Save {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

impl ImportError {
    /// Whether the archive, not the node, is at fault.
    pub fn is_bad_input(&self) -> bool {
        use oci::archive::ArchiveError;
        match self {
            ImportError::Archive(ArchiveError::Io { .. } | ArchiveError::Exists(_))
            | ImportError::Io { .. } => false,
            ImportError::Archive(ArchiveError::Layout(source)) => layout_input_fault(source),
            ImportError::Archive(
                ArchiveError::Tar { .. }
                | ArchiveError::UnexpectedEntry { .. }
                | ArchiveError::BadPath { .. }
                | ArchiveError::Duplicate { .. },
            )
            | ImportError::NoImages => true,
            ImportError::Image { source, .. } => layout_input_fault(source),
            ImportError::Ingest { source, .. } => source.is_bad_input(),
        }
    }
}

/// Whether a layout error comes from what the archive holds rather than
/// from the node's disk. (An archive without `oci-layout` reads as
/// `NotALayout`.)
fn layout_input_fault(error: &LayoutError) -> bool {
    !matches!(error, LayoutError::Io { .. } | LayoutError::Encode { .. })
}

/// Why a reference could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No such reference or image.
    #[error("no image {0}")]
    NotFound(String),
    /// The index could not be saved.
    #[error("cannot save the image index {path}")]
    Save {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// Why prune stopped. What it removed before stopping stays removed.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    /// A file or directory could not be read or removed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No such reference or image.
    #[error("no image {0}")]
    NotFound(String),
    /// The image has no reference to put in the archive's index.
    #[error("image {0} has no reference to name it by in an archive")]
    Unnamed(Digest),
    /// Building the archive's layout failed.
    #[error("cannot stage the archive")]
    Layout(#[source] LayoutError),
    /// Writing the archive failed.
    #[error("cannot write the archive")]
    Archive(#[source] oci::archive::ArchiveError),
    /// Staging failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
}

fn open_io(path: &Path) -> impl FnOnce(io::Error) -> OpenError + use<> {
    let path = path.to_owned();
    move |source| OpenError::Io { path, source }
}

fn import_io(path: &Path) -> impl FnOnce(io::Error) -> ImportError + use<> {
    let path = path.to_owned();
    move |source| ImportError::Io { path, source }
}

fn prune_io(path: &Path) -> impl FnOnce(io::Error) -> PruneError + use<> {
    let path = path.to_owned();
    move |source| PruneError::Io { path, source }
}

fn export_io(path: &Path) -> impl FnOnce(io::Error) -> ExportError + use<> {
    let path = path.to_owned();
    move |source| ExportError::Io { path, source }
}

/// The chain ids of a layer stack (image spec `config.md`, "Layer ChainID").
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chains: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chains.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        chains.push(next);
    }
    chains
}

/// The content store. Share it behind an `Arc`.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    blobs: Layout,
    index: Mutex<Index>,
    /// Shared by imports and exports while they handle blobs no record
    /// names yet; exclusive for prune.
    collect: RwLock<()>,
    /// What ingests in flight are about to record.
    pins: Arc<Pins>,
    unpack: UnpackOptions,
}

impl ImageStore {
    /// Opens (or creates) the store at `root`, removing whatever a crash
    /// left half-done.
    pub fn open(root: &Path) -> Result<Self, OpenError> {
        let io = open_io;
        fs::create_dir_all(root).map_err(io(root))?;
        let blobs = Layout::create(root).map_err(OpenError::Layout)?;
        let tmp = root.join(TMP_DIR);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let layers = root.join(LAYERS_DIR);
        fs::create_dir_all(&layers).map_err(io(&layers))?;
        // Unpacking stages beside its target as `.<name>.unpack-*`, and
        // BlobWriter as `.tmp-*`: dot files are never finished content.
        for dir in [layers.clone(), root.join(oci::layout::BLOBS_DIR)] {
            for entry in fs::read_dir(&dir).map_err(io(&dir))? {
                let entry = entry.map_err(io(&dir))?;
                if entry.file_name().to_string_lossy().starts_with('.') {
                    let path = entry.path();
                    let removed = if entry.file_type().map_err(io(&path))?.is_dir() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    removed.map_err(io(&path))?;
                }
            }
        }
        let index = Self::load_index(&root.join(INDEX_FILE))?;
        Ok(Self {
            root: root.to_owned(),
            blobs,
            index: Mutex::new(index),
            collect: RwLock::new(()),
            pins: Arc::default(),
            unpack: UnpackOptions::for_current_process(),
        })
    }

    fn load_index(path: &Path) -> Result<Index, OpenError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(source) => {
                return Err(OpenError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let file: IndexFile =
            serde_json::from_slice(&bytes).map_err(|source| OpenError::Index {
                path: path.to_owned(),
                source,
            })?;
        let inconsistent = |problem: String| OpenError::Inconsistent {
            path: path.to_owned(),
            problem,
        };
        if file.version != INDEX_VERSION {
            return Err(inconsistent(format!(
                "version {} (this agent reads {INDEX_VERSION})",
                file.version
            )));
        }
        let mut refs = BTreeMap::new();
        for (name, digest) in file.refs {
            let parsed = RefName::parse(&name)
                .map_err(|e| inconsistent(format!("reference {name:?}: {e}")))?;
            if !file.images.contains_key(&digest) {
                return Err(inconsistent(format!(
                    "{name} points at unknown image {digest}"
                )));
            }
            refs.insert(parsed, digest);
        }
        Ok(Index {
            images: file.images,
            refs,
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // The index in memory is replaced only after a successful save, so
        // a panic elsewhere never leaves it half-changed.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn save(&self, next: &Index) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&next.to_file()).map_err(io::Error::other)?;
        write_atomic(&self.root.join(INDEX_FILE), &bytes)
    }

    /// Where a chain's unpacked root is.
    pub fn chain_path(&self, chain: &Digest) -> PathBuf {
        self.root.join(LAYERS_DIR).join(chain.hex())
    }

    /// Where a blob is.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs.blob_path(digest)
    }

    /// The record `reference` names, with its manifest digest.
    pub fn resolve(&self, reference: &ImageRef) -> Option<(Digest, ImageRecord)> {
        self.index().resolve(reference)
    }

    /// The unpacked root of the image `reference` names: the directory of
    /// its top chain (`None` for an unknown image or one without layers).
    pub fn rootfs(&self, reference: &ImageRef) -> Option<PathBuf> {
        let (_, record) = self.resolve(reference)?;
        record.chains.last().map(|c| self.chain_path(c))
    }

    /// Every reference, then every image no reference names.
    pub fn list(&self) -> Vec<ImageSummary> {
        let index = self.index();
        let summary =
            |reference: Option<RefName>, digest: &Digest, record: &ImageRecord| ImageSummary {
                reference,
                digest: digest.clone(),
                size: record.size,
                created: record.created.clone(),
            };
        let mut rows: Vec<ImageSummary> = index
            .refs
            .iter()
            .filter_map(|(name, digest)| {
                let record = index.images.get(digest)?;
                Some(summary(Some(name.clone()), digest, record))
            })
            .collect();
        let named: BTreeSet<&Digest> = index.refs.values().collect();
        rows.extend(
            index
                .images
                .iter()
                .filter(|(d, _)| !named.contains(d))
                .map(|(d, r)| summary(None, d, r)),
        );
        rows
    }

    /// Starts adding content; see [`Ingest`].
    pub fn begin_ingest(&self) -> Ingest {
        Ingest::new(
            Arc::clone(&self.pins),
            self.blobs.clone(),
            self.root.join(TMP_DIR),
            self.root.join(LAYERS_DIR),
            self.unpack,
        )
    }

    /// Records the images an ingest added and points `refs` at them (or at
    /// images the store already has), in one atomic index write. Drop the
    /// ingest afterwards: its pins are no longer needed.
    pub fn commit_ingest(
        &self,
        ingest: &Ingest,
        refs: &[(RefName, Digest)],
    ) -> Result<(), CommitError> {
        let mut index = self.index();
        let mut next = index.clone();
        for (digest, record) in ingest.records() {
            next.images.insert(digest.clone(), record.clone());
        }
        for (name, digest) in refs {
            if !next.images.contains_key(digest) {
                return Err(CommitError::UnknownImage(name.to_string()));
            }
            next.refs.insert(name.clone(), digest.clone());
        }
        let path = self.root.join(INDEX_FILE);
        self.save(&next)
            .map_err(|source| CommitError::Save { path, source })?;
        *index = next;
        Ok(())
    }

    /// Imports every named image of an oci-archive streamed from `input`.
    /// Each image is verified whole, stored and unpacked before any
    /// reference is recorded; on error nothing is recorded.
    pub fn import<R: Read>(&self, input: R) -> Result<Vec<Imported>, ImportError> {
        let io = import_io;
        let tmp = self.root.join(TMP_DIR);
        let stage = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&tmp)
            .map_err(io(&tmp))?;
        let (layout, names) = oci::archive::read_archive(input, &stage.path().join("layout"))
            .map_err(ImportError::Archive)?;
        if names.is_empty() {
            return Err(ImportError::NoImages);
        }
        let ingest = self.begin_ingest();
        let mut imported = Vec::new();
        for name in names {
            let bad = |source| ImportError::Image {
                name: name.to_string(),
                source,
            };
            let image = layout.resolve(&name).map_err(bad)?;
            let manifest = &image.manifest;
            let mut descriptors: Vec<&Descriptor> =
                vec![&image.manifest_descriptor, manifest.config()];
            descriptors.extend(manifest.layers());
            let ingest_err = |source| ImportError::Ingest {
                name: name.to_string(),
                source: Box::new(source),
            };
            for desc in descriptors {
                let digest = descriptor_digest(desc).map_err(bad)?;
                // The archive reader verified every blob it wrote.
                ingest
                    .link_verified(&layout.blob_path(&digest), &digest)
                    .map_err(ingest_err)?;
            }
            let digest = ingest.add_image(&image).map_err(ingest_err)?;
            imported.push(Imported {
                reference: name,
                digest,
            });
        }
        let refs: Vec<(RefName, Digest)> = imported
            .iter()
            .map(|i| (i.reference.clone(), i.digest.clone()))
            .collect();
        let path = self.root.join(INDEX_FILE);
        self.commit_ingest(&ingest, &refs).map_err(|e| match e {
            CommitError::Save { path, source } => ImportError::Io { path, source },
            CommitError::UnknownImage(_) => ImportError::Io {
                path,
                source: io::Error::other(e),
            },
        })?;
        Ok(imported)
    }

    /// Removes a reference, or every reference to an image named by digest.
    /// Blobs and chains stay until [`ImageStore::prune`]. Returns the
    /// references removed.
    pub fn remove(&self, reference: &ImageRef) -> Result<Vec<RefName>, RemoveError> {
        let mut index = self.index();
        let mut next = index.clone();
        let removed = match reference {
            ImageRef::Name(name) => match next.refs.remove(name) {
                Some(_) => vec![name.clone()],
                None => return Err(RemoveError::NotFound(reference.to_string())),
            },
            ImageRef::Digest(digest) => {
                if !next.images.contains_key(digest) {
                    return Err(RemoveError::NotFound(reference.to_string()));
                }
                let names = next.names_of(digest);
                next.refs.retain(|_, d| d != digest);
                names
            }
        };
        let path = self.root.join(INDEX_FILE);
        self.save(&next)
            .map_err(|source| RemoveError::Save { path, source })?;
        *index = next;
        Ok(removed)
    }

    /// Drops images no reference names and no container holds, then every
    /// blob and chain no remaining image uses.
    pub fn prune(&self, holds: &Holds) -> Result<PruneReport, PruneError> {
        let io = prune_io;
        let _collect = self.collect.write().unwrap_or_else(PoisonError::into_inner);
        let mut report = PruneReport::default();
        let (live_blobs, live_chains) = {
            let mut index = self.index();
            let mut next = index.clone();
            let named: BTreeSet<Digest> = next.refs.values().cloned().collect();
            next.images.retain(|digest, _| {
                let keep = named.contains(digest) || holds.images.contains(digest);
                if !keep {
                    report.images.push(digest.clone());
                }
                keep
            });
            if !report.images.is_empty() {
                let path = self.root.join(INDEX_FILE);
                self.save(&next).map_err(io(&path))?;
                *index = next;
            }
            let blobs: BTreeSet<Digest> =
                index.images.iter().flat_map(|(d, r)| r.blobs(d)).collect();
            let chains: BTreeSet<Digest> = index
                .images
                .values()
                .flat_map(|r| r.chains.iter().cloned())
                .collect();
            (blobs, chains)
        };

        // Held for the whole sweep: see the ingest module on pinning.
        let pins = self.pins.lock();
        let blob_dir = self.root.join(oci::layout::BLOBS_DIR);
        for (digest, path) in digest_entries(&blob_dir).map_err(io(&blob_dir))? {
            if live_blobs.contains(&digest) || pins.contains_key(&digest) {
                continue;
            }
            let size = fs::symlink_metadata(&path).map_err(io(&path))?.len();
            fs::remove_file(&path).map_err(io(&path))?;
            report.bytes_freed = report.bytes_freed.saturating_add(size);
            report.blobs.push(digest);
        }
        let layer_dir = self.root.join(LAYERS_DIR);
        for (chain, path) in digest_entries(&layer_dir).map_err(io(&layer_dir))? {
            if live_chains.contains(&chain) || pins.contains_key(&chain) {
                continue;
            }
            let freed = unshared_bytes(&path).map_err(io(&path))?;
            fs::remove_dir_all(&path).map_err(io(&path))?;
            report.bytes_freed = report.bytes_freed.saturating_add(freed);
            report.layers.push(chain);
        }
        Ok(report)
    }

    /// Writes an oci-archive of the image `reference` names to `out`.
    /// A name exports under that name; a digest under every name the
    /// image has.
    pub fn export<W: Write>(&self, reference: &ImageRef, out: W) -> Result<W, ExportError> {
        let io = export_io;
        let tmp = self.root.join(TMP_DIR);
        let stage = tempfile::Builder::new()
            .prefix("export-")
            .tempdir_in(&tmp)
            .map_err(io(&tmp))?;
        let layout = {
            // Hard links keep the blobs alive once made; prune must wait
            // only until they are.
            let _collect = self.collect.read().unwrap_or_else(PoisonError::into_inner);
            let (digest, record, names) = {
                let index = self.index();
                let (digest, record) = index
                    .resolve(reference)
                    .ok_or_else(|| ExportError::NotFound(reference.to_string()))?;
                let names = match reference {
                    ImageRef::Name(name) => vec![name.clone()],
                    ImageRef::Digest(_) => index.names_of(&digest),
                };
                (digest, record, names)
            };
            if names.is_empty() {
                return Err(ExportError::Unnamed(digest));
            }
            let layout =
                Layout::create(&stage.path().join("layout")).map_err(ExportError::Layout)?;
            for blob in record.blobs(&digest) {
                let src = self.blobs.blob_path(&blob);
                let dest = layout.blob_path(&blob);
                match fs::hard_link(&src, &dest) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(source) => return Err(ExportError::Io { path: src, source }),
                }
            }
            let desc = Descriptor::new(
                MediaType::from(record.media_type.as_str()),
                record.manifest_size,
                digest.to_spec(),
            );
            for name in &names {
                layout.tag(name, &desc).map_err(ExportError::Layout)?;
            }
            layout
        };
        oci::archive::write_archive(&layout, out).map_err(ExportError::Archive)
    }
}

/// The entries of a directory named by a digest's hex; anything else
/// (staging, foreign files) is left alone.
fn digest_entries(dir: &Path) -> io::Result<Vec<(Digest, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(hex) = name.to_str() else { continue };
        if let Ok(digest) = Digest::parse(&format!("{}{hex}", oci::digest::SHA256_PREFIX)) {
            found.push((digest, entry.path()));
        }
    }
    Ok(found)
}

/// Bytes of regular files under `dir` that no other chain links to.
fn unshared_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.nlink() == 1 {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Ok(total)
}

mod ingest;
use ingest::Pins;
pub use ingest::{Ingest, IngestBlob, IngestError};

#[cfg(test)]
mod tests;
