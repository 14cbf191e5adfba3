//! Small OCI images for API tests, written with the `oci` crate.

use oci::media::{OCI_CONFIG, OCI_MANIFEST};
use oci::{Layout, RefName};
use oci_spec::image::{Descriptor, MediaType};
use serde_json::json;

/// An uncompressed tar of one regular file, owned by root, mtime 0.
pub fn file_tar(name: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, name, data).unwrap();
    builder.into_inner().unwrap()
}

/// Adds a one-layer image named `name` in `layout`; `layer_type` is the
/// layer's media type as the manifest declares it.
pub fn add_image(layout: &Layout, name: &str, file: &[u8], layer_type: &str) {
    let layer = file_tar("hello", 0o755, file);
    let (layer_digest, layer_size) = layout.write_blob(&layer).unwrap();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-11-22T00:00:00Z",
        "config": {"Entrypoint": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]},
    });
    let (config_digest, config_size) = layout
        .write_blob(&serde_json::to_vec(&config).unwrap())
        .unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
        "layers": [{"mediaType": layer_type, "digest": layer_digest.to_string(), "size": layer_size}],
    });
    let (digest, size) = layout
        .write_blob(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    let desc = Descriptor::new(MediaType::ImageManifest, size, digest.to_spec());
    layout.tag(&RefName::parse(name).unwrap(), &desc).unwrap();
}
