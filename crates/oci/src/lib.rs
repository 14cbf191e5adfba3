//! `oci`: the OCI image format as Cairn writes and reads it.
//!
//! The image builder (`cairn-image oci …`) writes images with this crate;
//! the node's content store and runtime read and unpack them. The moving
//! parts:
//!
//! - [`digest`]: [`Digest`] (`sha256:<64 lowercase hex>`, parsed once) and
//!   the hashing reader/writer that verify content while it streams.
//! - [`layout`]: the OCI image layout directory (`oci-layout`,
//!   `index.json`, `blobs/sha256/<hex>`). [`Layout`] writes blobs
//!   atomically and names images with the
//!   `org.opencontainers.image.ref.name` annotation; reading resolves a
//!   name through image indexes to the linux/amd64 manifest and checks
//!   every blob's digest and size against its descriptor. Media types it
//!   does not know ([`media`]) are refused by name.
//! - [`archive`]: the same layout as one plain tar, byte-compatible with
//!   skopeo's `oci-archive:FILE:REF`; reading extracts only layout files
//!   and verifies everything before the result appears.
//! - [`unpack`]: applying layer tars to a root. [`unpack::plan`] is the
//!   pure half: it normalises each entry's path, interprets whiteouts and
//!   opaque directories, and refuses `..`, over-long names, hard links to
//!   anything this layer has not extracted, and device nodes unless
//!   allowed. [`unpack::fs`] carries the decisions out in a staging
//!   directory beside the target with fd-relative calls that refuse to
//!   traverse symlinks, checks the blob digest and the diff_id once the
//!   stream ends, and only then swaps the staged tree into place.
//!
//! JSON is written canonically ([`json`]: sorted keys, compact), so the
//! same inputs always give the same digests.

#![forbid(unsafe_code)]

pub mod archive;
pub mod digest;
pub mod json;
pub mod layout;
pub mod media;
pub mod reference;
pub mod unpack;

pub use digest::{Digest, DigestError};
pub use layout::{Image, Layout, LayoutError};
pub use reference::{RefName, RefNameError};
