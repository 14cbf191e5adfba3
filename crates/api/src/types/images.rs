//! The node's image content store: `/v1/images`.
//!
//! Images arrive as OCI archives (the tar `skopeo copy … oci-archive:FILE:REF`
//! writes) and are named by the references in the archive's `index.json`
//! (`org.opencontainers.image.ref.name`, such as `redis:latest`) or by
//! their manifest digest (`sha256:<64 hex>`). Removing a reference keeps
//! the image's content until a prune removes everything no reference and
//! no container uses.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Content type of `POST /v1/images/import` bodies and
/// `GET /v1/images/export` answers: an OCI image layout as one tar.
pub const OCI_ARCHIVE: &str = "application/x-tar";

/// Query of `GET /v1/images/export`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageRefQuery {
    /// A reference (`redis:latest`) or a manifest digest (`sha256:…`).
    #[serde(rename = "ref")]
    pub reference: String,
}

/// One image, once per reference naming it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageSummary {
    /// The reference, or `null` for an image no reference names any more
    /// (the next prune removes it unless a container uses it).
    pub reference: Option<String>,
    /// The linux/amd64 manifest's digest.
    pub digest: String,
    /// Bytes stored for the image: manifest, config and layers as
    /// compressed in the archive. Layers shared with other images count
    /// for each.
    pub size: u64,
    /// The image config's `created` time, as its builder wrote it.
    pub created: Option<String>,
}

/// `GET /v1/images`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageList {
    /// References in name order, then unnamed images in digest order.
    pub images: Vec<ImageSummary>,
}

/// One reference an import recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImportedImage {
    /// The reference, from the archive's `index.json`.
    pub reference: String,
    /// The linux/amd64 manifest it names.
    pub digest: String,
}

/// `POST /v1/images/import`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImportResponse {
    /// Every reference in the archive, in its order.
    pub images: Vec<ImportedImage>,
}

/// `DELETE /v1/images/{ref}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageRemoved {
    /// The references removed (for a digest, every reference to it).
    pub removed: Vec<String>,
}

/// `POST /v1/images/prune`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PruneResponse {
    /// Manifest digests of the unnamed images removed.
    pub images: Vec<String>,
    /// Blobs removed.
    pub blobs: Vec<String>,
    /// Unpacked layer chains removed (chain ids).
    pub layers: Vec<String>,
    /// Blob bytes plus unpacked file bytes no other layer shared.
    pub bytes_freed: u64,
}

/// `POST /v1/images/pull`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// `HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]`; the registry is always
    /// written out, and a missing tag means `latest`.
    pub reference: String,
}

/// Whether content came from a configured mirror, from the registry the
/// reference names, or from another node of the cluster that had it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullSourceRole {
    /// A `mirrors` entry of the machine config.
    Mirror,
    /// The reference's own registry.
    Upstream,
    /// Another cluster node's content store (named in `node`).
    Peer,
}

/// Where a pull fetched something from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PullSource {
    /// `host[:port]` of the registry asked, or for a peer the registry
    /// whose content the peer served.
    pub registry: String,
    /// Mirror, upstream or peer.
    pub role: PullSourceRole,
    /// The node that served it, for a peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A blob of the pulled image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PullBlob {
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the store already had it (it is not fetched again).
    pub present: bool,
}

/// One line of `POST /v1/images/pull`'s answer. The last line is `done`
/// or `error`; a stream that ends without either was cut off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// The linux/amd64 manifest is known.
    Resolved {
        /// Its digest.
        digest: String,
        /// Where it came from.
        source: PullSource,
        /// The config, then the layers, base first.
        blobs: Vec<PullBlob>,
    },
    /// Bytes of one blob are stored.
    Progress {
        /// The blob.
        digest: String,
        /// Bytes stored so far.
        done: u64,
        /// Its size.
        total: u64,
        /// Where it comes from.
        source: PullSource,
    },
    /// The image is stored, unpacked and named.
    Done {
        /// The references recorded (the one pulled, written out in full).
        references: Vec<String>,
        /// The linux/amd64 manifest's digest.
        digest: String,
    },
    /// The pull failed; nothing of it was recorded.
    Error {
        /// `registry_auth_failed`, `image_not_found`,
        /// `registry_unreachable`, `invalid_image` or `internal`.
        code: crate::ErrorCode,
        /// What happened, naming registries and digests.
        message: String,
    },
}
