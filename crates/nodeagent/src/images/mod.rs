//! The node's image content store, on STATE at `/var/lib/cairn/images`.
//!
//! Images arrive as OCI archives (`cairn image import`; later pulls and
//! peers write through the same store) and leave as OCI archives
//! (`cairn image export`). The store keeps three things:
//!
//! - **Blobs** in `blobs/sha256/<hex>`: manifests, configs and layers,
//!   each immutable once named by its digest. The directory is an OCI
//!   image layout (it has `oci-layout` and an empty `index.json`) so that
//!   [`oci::Layout`] reads and verifies blobs from it; the store's own
//!   names live in `images.json`, not in the layout's index.
//! - **The index**, `images.json`: image records keyed by manifest digest
//!   (config, layers, chain ids, size, creation time) and references
//!   (`redis:latest`) pointing at them. One mutex owns it; every change
//!   builds the next index, writes it with [`crate::files::write_atomic`]
//!   and only then replaces the one in memory, so what a reader sees is
//!   always what is on disk.
//! - **Unpacked roots** in `layers/<chain id hex>/`, one per layer *chain*
//!   (the OCI image spec's ChainID: the first layer's diff_id, then
//!   `sha256(parent_chain + " " + diff_id)`). Each is the complete root
//!   after applying that layer on top of its parent chain, built by
//!   cloning the parent with hard links ([`oci::unpack::StagedRoot::begin_from`])
//!   and applying the one layer; whiteouts and opaque directories are
//!   applied as deletions, so no whiteout survives into a tree. Two images
//!   with the same base share its chains, and the top chain of an image is
//!   its whole root, which the runtime can mount read-only as a single
//!   overlayfs lower directory. Keeping OCI layers as separate overlay
//!   lower directories would need the unpacker to write overlayfs
//!   whiteouts (0/0 character devices, `trusted.overlay.opaque`), which
//!   need `CAP_MKNOD` and trusted xattrs and cannot be checked as an
//!   unprivileged tree; hard-linked chains cost one directory tree per
//!   layer and no file data.
//!
//! Crash safety: blobs are fsynced in a staging directory before they are
//! hard-linked in under their digest, chains are renamed into place whole,
//! and `images.json` is replaced atomically last. A crash leaves at most
//! unreferenced blobs and chains (removed by prune) and staging
//! directories, which [`ImageStore::open`] deletes.
//!
//! Garbage collection: [`ImageStore::prune`] removes image records no
//! reference names and no container holds ([`Holds`]), then every blob and
//! chain no remaining record uses. Content comes in through one path,
//! [`Ingest`], for imports and pulls alike: it pins every digest it
//! touches, so prune never removes what an ingest in flight is about to
//! record.
//!
//! Pulls ([`pull`]) fetch from registries named in the machine config's
//! `[[registries]]` (mirrors first, then the upstream), streaming each blob
//! through an [`IngestBlob`] into the store.
//!
//! Baked images ([`baked`]): oci-archives the image builder put on the
//! ESP are imported when the store is opened, once per archive digest.

pub mod baked;
mod channel;
pub mod pull;
mod reference;
pub mod share;
mod store;

pub use channel::{ChannelReader, ChannelWriter};
pub use reference::{ImageRef, ImageRefError};
pub use store::{
    CommitError, ExportError, Holds, ImageRecord, ImageStore, ImageSummary, ImportError, Imported,
    Ingest, IngestBlob, IngestError, OpenError, PruneError, PruneReport, RemoveError, chain_ids,
};

/// The store's directory under the agent's state directory.
pub const IMAGES_DIR: &str = "images";
