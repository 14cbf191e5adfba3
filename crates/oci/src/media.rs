//! The media types Cairn understands, and what each one means for reading.
//!
//! Anything not listed here is refused by name: a layout holding, say, a
//! signature artifact or a foreign layer should fail loudly rather than be
//! half-understood.

use oci_spec::image::MediaType;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// What a manifest-level descriptor points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// One image for one platform (OCI or Docker schema 2).
    Image,
    /// A list of images, one per platform.
    Index,
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A media type Cairn does not know where it was met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported media type {media_type:?} for {role}")]
pub struct UnknownMediaType {
    pub media_type: String,
    /// "a manifest", "an image config" or "a layer".
    pub role: &'static str,
}

/// Classifies a manifest or index media type.
pub fn manifest_kind(media_type: &MediaType) -> Result<ManifestKind, UnknownMediaType> {
    match media_type.as_ref() {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(ManifestKind::Index),
        other => Err(UnknownMediaType {
            media_type: other.to_owned(),
            role: "a manifest",
        }),
    }
}

/// Accepts only image config media types.
pub fn check_config(media_type: &MediaType) -> Result<(), UnknownMediaType> {
    match media_type.as_ref() {
        OCI_CONFIG | DOCKER_CONFIG => Ok(()),
        other => Err(UnknownMediaType {
            media_type: other.to_owned(),
            role: "an image config",
        }),
    }
}

/// The compression a layer media type implies.
pub fn layer_compression(media_type: &MediaType) -> Result<Compression, UnknownMediaType> {
    match media_type.as_ref() {
        OCI_LAYER_TAR => Ok(Compression::None),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP => Ok(Compression::Gzip),
        OCI_LAYER_ZSTD => Ok(Compression::Zstd),
        other => Err(UnknownMediaType {
            media_type: other.to_owned(),
            role: "a layer",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types_choose_their_decompressor() {
        for (mt, c) in [
            (OCI_LAYER_TAR, Compression::None),
            (OCI_LAYER_GZIP, Compression::Gzip),
            (DOCKER_LAYER_GZIP, Compression::Gzip),
            (OCI_LAYER_ZSTD, Compression::Zstd),
        ] {
            assert_eq!(layer_compression(&MediaType::from(mt)), Ok(c));
        }
    }

    #[test]
    fn an_unknown_layer_type_is_refused_by_name() {
        let err = layer_compression(&MediaType::from(
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("nondistributable"), "{err}");
        assert!(err.to_string().contains("a layer"), "{err}");
    }

    #[test]
    fn manifests_and_indexes_are_told_apart() {
        assert_eq!(
            manifest_kind(&MediaType::ImageManifest),
            Ok(ManifestKind::Image)
        );
        assert_eq!(
            manifest_kind(&MediaType::from(DOCKER_MANIFEST_LIST)),
            Ok(ManifestKind::Index)
        );
        assert!(manifest_kind(&MediaType::from("text/plain")).is_err());
    }
}
