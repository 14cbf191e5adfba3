//! [`Ingest`]: how content enters the store, blob by blob, for imports and
//! pulls alike.
//!
//! An ingest is a session. It stores blobs one at a time (streamed through
//! a hashing writer into `tmp/`, verified against the descriptor that
//! named them, synced, then renamed under their digest, so a blob that does
//! not match never appears under any name), reads each image back from the
//! store's own blob directory (which verifies manifest and config again),
//! unpacks its layer chains, and collects image records. Nothing is
//! visible until [`super::ImageStore::commit_ingest`] writes the records
//! and references into `images.json` in one atomic step; an ingest dropped
//! before that leaves only unreferenced blobs and chains for prune.
//!
//! Prune may run while an ingest is in flight (a pull spends most of its
//! time on the network), so every digest an ingest touches is *pinned*
//! first: pinned blobs and chains are skipped by prune, and prune sweeps
//! while holding the pin table, so a digest is either pinned before prune
//! looks at it or already gone when the ingest checks whether it exists.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use oci::digest::{Expected, HashingWriter, VerifyError};
use oci::layout::descriptor_digest;
use oci::unpack::{LayerInput, StagedRoot, UnpackError, UnpackOptions};
use oci::{Digest, Image, Layout, LayoutError, media};
use oci_spec::image::Descriptor;

use super::{ImageRecord, chain_ids};

/// Digests (blobs and chains) in-flight ingests are about to record, with
/// how many ingests hold each.
#[derive(Debug, Default)]
pub(super) struct Pins(Mutex<BTreeMap<Digest, usize>>);

impl Pins {
    pub(super) fn lock(&self) -> MutexGuard<'_, BTreeMap<Digest, usize>> {
        // The table is only ever changed by whole insert/remove steps.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Why a blob or an image could not be ingested. Nothing of it is
/// recorded.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The bytes do not match the digest (or size) that named them.
    #[error("blob {digest} does not match its digest")]
    Mismatch {
        /// The digest the blob was asked for by.
        digest: Digest,
        /// How it differs.
        #[source]
        source: VerifyError,
    },
    /// The manifest or config is not an image Cairn can use.
    #[error("image {manifest} is invalid")]
    Image {
        /// The manifest's digest, as its descriptor wrote it.
        manifest: String,
        /// The reader's verdict.
        #[source]
        source: LayoutError,
    },
    /// A layer could not be unpacked.
    #[error("cannot unpack layer {layer}")]
    Unpack {
        /// The layer blob.
        layer: Digest,
        /// The failure (boxed: unpack errors carry whole paths).
        #[source]
        source: Box<UnpackError>,
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

impl IngestError {
    /// Whether the content, not the node, is at fault.
    pub fn is_bad_input(&self) -> bool {
        match self {
            IngestError::Mismatch { .. } => true,
            IngestError::Image { source, .. } => {
                !matches!(source, LayoutError::Io { .. } | LayoutError::Encode { .. })
            }
            IngestError::Unpack { source, .. } => match source.as_ref() {
                UnpackError::Refused { .. }
                | UnpackError::SymlinkInPath { .. }
                | UnpackError::NotADirectory { .. }
                | UnpackError::HardLinkTarget { .. }
                | UnpackError::OwnerOutOfRange { .. }
                | UnpackError::Tar { .. }
                | UnpackError::BlobMismatch { .. }
                | UnpackError::DiffIdMismatch { .. }
                | UnpackError::MediaType(_) => true,
                UnpackError::Io { .. }
                | UnpackError::Stage { .. }
                | UnpackError::Commit { .. }
                | UnpackError::Layout { .. } => false,
            },
            IngestError::Io { .. } => false,
        }
    }
}

fn ingest_io(path: &Path) -> impl FnOnce(io::Error) -> IngestError + use<> {
    let path = path.to_owned();
    move |source| IngestError::Io { path, source }
}

/// One ingest session; see the module docs. Share it (`Arc`) between
/// the tasks that fetch its blobs.
#[derive(Debug)]
pub struct Ingest {
    pub(super) pins: Arc<Pins>,
    pinned: Mutex<Vec<Digest>>,
    pub(super) blobs: Layout,
    tmp: PathBuf,
    layers: PathBuf,
    unpack: UnpackOptions,
    records: Mutex<BTreeMap<Digest, ImageRecord>>,
}

impl Ingest {
    pub(super) fn new(
        pins: Arc<Pins>,
        blobs: Layout,
        tmp: PathBuf,
        layers: PathBuf,
        unpack: UnpackOptions,
    ) -> Self {
        Self {
            pins,
            pinned: Mutex::default(),
            blobs,
            tmp,
            layers,
            unpack,
            records: Mutex::default(),
        }
    }

    fn pin(&self, digest: &Digest) {
        *self.pins.lock().entry(digest.clone()).or_insert(0) += 1;
        self.pinned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(digest.clone());
    }

    /// The image records added so far.
    pub(super) fn records(&self) -> BTreeMap<Digest, ImageRecord> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Pins `digest` and says whether the store already has that blob, in
    /// which case there is nothing to fetch.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.pin(digest);
        self.blobs.has_blob(digest)
    }

    /// Starts storing the blob `expected` names. Write its bytes, then
    /// [`IngestBlob::commit`].
    pub fn blob_writer(&self, expected: Expected) -> Result<IngestBlob, IngestError> {
        self.pin(&expected.digest);
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp)
            .map_err(ingest_io(&self.tmp))?;
        Ok(IngestBlob {
            inner: HashingWriter::new(BufWriter::with_capacity(256 * 1024, file)),
            written: 0,
            dest: self.blobs.blob_path(&expected.digest),
            expected,
        })
    }

    /// Takes in a blob file that a verifying reader already wrote on the
    /// store's filesystem (an import's staged layout), by hard link.
    pub fn link_verified(&self, src: &Path, digest: &Digest) -> Result<(), IngestError> {
        if self.has_blob(digest) {
            return Ok(());
        }
        // Durable before it appears under its name.
        File::open(src)
            .and_then(|f| f.sync_all())
            .map_err(ingest_io(src))?;
        let dest = self.blobs.blob_path(digest);
        match fs::hard_link(src, &dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(IngestError::Io { path: dest, source }),
        }
    }

    /// Reads the image a manifest descriptor names from the store's blobs
    /// (following an index to linux/amd64), verifying manifest and config.
    pub fn read_image(&self, manifest: &Descriptor) -> Result<Image, IngestError> {
        self.blobs
            .resolve_descriptor(manifest)
            .map_err(|source| IngestError::Image {
                manifest: manifest.digest().to_string(),
                source,
            })
    }

    /// Unpacks the chains of an image whose blobs are all stored and adds
    /// its record to the session. Returns the manifest digest.
    pub fn add_image(&self, image: &Image) -> Result<Digest, IngestError> {
        let manifest_text = image.manifest_descriptor.digest().to_string();
        let bad = |source| IngestError::Image {
            manifest: manifest_text.clone(),
            source,
        };
        let manifest_digest = descriptor_digest(&image.manifest_descriptor).map_err(bad)?;
        if self.records().contains_key(&manifest_digest) {
            return Ok(manifest_digest);
        }
        let manifest = &image.manifest;
        let mut size = image.manifest_descriptor.size();
        for desc in std::iter::once(manifest.config()).chain(manifest.layers()) {
            size = size.saturating_add(desc.size());
        }
        let blob_dir = self.blobs.root().join(oci::layout::BLOBS_DIR);
        File::open(&blob_dir)
            .and_then(|d| d.sync_all())
            .map_err(ingest_io(&blob_dir))?;
        self.unpack_chains(image, |_| true)?;
        let diff_ids = image.diff_ids().map_err(bad)?;
        let chains = chain_ids(&diff_ids);
        let layers = manifest
            .layers()
            .iter()
            .map(descriptor_digest)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        let record = ImageRecord {
            media_type: image.manifest_descriptor.media_type().to_string(),
            manifest_size: image.manifest_descriptor.size(),
            config: descriptor_digest(manifest.config()).map_err(bad)?,
            config_size: manifest.config().size(),
            layers,
            chains,
            size,
            created: image.config.created().clone(),
        };
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(manifest_digest.clone(), record);
        Ok(manifest_digest)
    }

    /// Unpacks the image's layer chains in order, base first, each as soon
    /// as `stored` says its layer blob is in the store (`stored` may block
    /// until it is). A chain already unpacked is kept. Returns `false`
    /// when `stored` gave up on a layer (its download failed): the chains
    /// below it stay, pinned like the rest of the ingest.
    pub fn unpack_chains(
        &self,
        image: &Image,
        mut stored: impl FnMut(&Digest) -> bool,
    ) -> Result<bool, IngestError> {
        let manifest_text = image.manifest_descriptor.digest().to_string();
        let bad = |source| IngestError::Image {
            manifest: manifest_text.clone(),
            source,
        };
        let diff_ids = image.diff_ids().map_err(bad)?;
        let chains = chain_ids(&diff_ids);
        for (i, (layer, diff_id)) in image.manifest.layers().iter().zip(&diff_ids).enumerate() {
            let digest = descriptor_digest(layer).map_err(bad)?;
            let Some(chain) = chains.get(i) else { break };
            self.pin(chain);
            let target = self.layers.join(chain.hex());
            if target.exists() {
                continue;
            }
            if !stored(&digest) {
                return Ok(false);
            }
            let unpack_err = |source| IngestError::Unpack {
                layer: digest.clone(),
                source: Box::new(source),
            };
            let mut staged = match i.checked_sub(1).and_then(|p| chains.get(p)) {
                None => StagedRoot::begin(&target, self.unpack),
                Some(parent) => {
                    StagedRoot::begin_from(&target, &self.layers.join(parent.hex()), self.unpack)
                }
            }
            .map_err(unpack_err)?;
            let compression = media::layer_compression(layer.media_type())
                .map_err(|e| bad(LayoutError::from(e)))?;
            let blob_path = self.blobs.blob_path(&digest);
            let blob = match File::open(&blob_path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(bad(LayoutError::MissingBlob { digest }));
                }
                Err(source) => {
                    return Err(IngestError::Io {
                        path: blob_path,
                        source,
                    });
                }
            };
            staged
                .apply(LayerInput {
                    blob: BufReader::new(blob),
                    compression,
                    blob_expected: Some(Expected {
                        digest: digest.clone(),
                        size: Some(layer.size()),
                    }),
                    diff_id: Some(diff_id.clone()),
                })
                .map_err(unpack_err)?;
            staged.commit().map_err(unpack_err)?;
        }
        Ok(true)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let mut pins = self.pins.lock();
        let pinned = std::mem::take(
            self.pinned
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for digest in pinned {
            if let Some(count) = pins.get_mut(&digest) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    pins.remove(&digest);
                }
            }
        }
    }
}

/// A blob being written; dropped without [`IngestBlob::commit`], its
/// temporary file goes away.
#[derive(Debug)]
pub struct IngestBlob {
    inner: HashingWriter<BufWriter<tempfile::NamedTempFile>>,
    written: u64,
    expected: Expected,
    dest: PathBuf,
}

impl Write for IngestBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written = self.written.saturating_add(n as u64);
        if let Some(limit) = self.expected.size
            && self.written > limit
        {
            // Fail at once: a source that sends more than the descriptor
            // declares must not be allowed to fill the disk.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} is longer than the {limit} bytes declared",
                    self.expected.digest
                ),
            ));
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl IngestBlob {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies the blob, makes it durable and names it by its digest.
    /// Returns its size.
    pub fn commit(self) -> Result<u64, IngestError> {
        let (actual, size, buffered) = self.inner.finish();
        oci::digest::check(&self.expected, &actual, size).map_err(|source| {
            IngestError::Mismatch {
                digest: self.expected.digest.clone(),
                source,
            }
        })?;
        let tmp = buffered.into_inner().map_err(|e| IngestError::Io {
            path: self.dest.clone(),
            source: e.into_error(),
        })?;
        if self.dest.exists() {
            return Ok(size);
        }
        let io = ingest_io(tmp.path());
        // Blobs are read by tools as well as by the agent: 0644.
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io)?;
        tmp.as_file().sync_all().map_err(ingest_io(tmp.path()))?;
        tmp.persist(&self.dest).map_err(|e| IngestError::Io {
            path: self.dest.clone(),
            source: e.error,
        })?;
        Ok(size)
    }
}
