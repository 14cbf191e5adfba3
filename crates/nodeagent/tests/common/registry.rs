//! A real registry for the pull tests: Debian's `docker-registry` on
//! loopback with TLS from a CA the test makes and htpasswd basic auth,
//! images built with the `oci` crate's writer and pushed with skopeo, and
//! the client side of `POST /v1/images/pull`.
//!
//! Needs docker-registry, apache2-utils and skopeo (host packages in
//! scripts/lib.sh); without them the tests fail rather than skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use api::ErrorCode;
use api::types::{PullEvent, PullSourceRole};
use http_body_util::BodyExt;
use oci::media::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use oci::{Digest, Layout, RefName};
use oci_spec::image::{Descriptor, MediaType};
use serde_json::json;

use super::api_client::Client;

pub const USER: &str = "puller";
pub const PASSWORD: &str = "right-password-42";

/// A running `docker-registry`; killed and waited for on drop, so a failed
/// assertion never leaves one behind.
pub struct Registry {
    child: Child,
    storage: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its access log (stdout): one line per request.
    access: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Blob downloads served so far (from the access log).
    pub fn blob_gets(&self) -> usize {
        std::fs::read_to_string(&self.access)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }

    /// The file the registry serves `digest` from.
    pub fn blob_data(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test CA, and a server certificate for 127.0.0.1 and localhost.
pub struct Pki {
    /// The CA certificate (PEM), for the machine config.
    pub ca_pem: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// For skopeo's --dest-cert-dir.
    pub cert_dir: PathBuf,
}

pub fn make_pki(dir: &Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cairn pull test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "registry");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let cert_dir = dir.join("certs.d");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::write(cert_dir.join("ca.crt"), ca_cert.pem()).unwrap();
    let pki = Pki {
        ca_pem: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        cert_dir,
    };
    std::fs::write(&pki.ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

pub fn start_registry(dir: &Path, name: &str, pki: &Pki, htpasswd: &Path) -> Registry {
    let root = dir.join(name);
    let storage = root.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let port = free_port();
    let config = root.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {cert}\n    key: {key}\n\
             auth:\n  htpasswd:\n    realm: cairn-test\n    path: {htpasswd}\n",
            storage = storage.display(),
            cert = pki.cert.display(),
            key = pki.key.display(),
            htpasswd = htpasswd.display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(root.join("registry.log")).unwrap();
    let access = std::fs::File::create(root.join("access.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(access)
        .stderr(log)
        .spawn()
        .expect("docker-registry must be installed (scripts/lib.sh host packages)");
    let registry = Registry {
        child,
        storage,
        port,
        access: root.join("access.log"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "docker-registry did not listen on {port}: {}",
            std::fs::read_to_string(root.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    registry
}

pub fn htpasswd(dir: &Path) -> PathBuf {
    let out = Command::new("htpasswd")
        .args(["-Bbn", USER, PASSWORD])
        .output()
        .expect("htpasswd must be installed (apache2-utils, scripts/lib.sh host packages)");
    assert!(out.status.success());
    let path = dir.join("htpasswd");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// A gzipped tar layer with one file of `size` pseudo-random bytes, and
/// its diff_id. Gzipped because skopeo compresses uncompressed layers on
/// the way to a registry, which would change every digest.
pub fn layer(name: &str, size: usize, seed: u8) -> (Vec<u8>, Digest) {
    let mut data = Vec::with_capacity(size);
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(x.to_le_bytes()[0]);
    }
    let tar = super::oci_image::file_tar(name, 0o644, &data);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), Digest::of(&tar))
}

/// A multi-layer image named `name` in `layout`; returns its manifest
/// digest and layer digests.
pub fn add_image(layout: &Layout, name: &str, seed: u8) -> (Digest, Vec<Digest>) {
    let (desc, layers) = build_manifest(layout, seed, "amd64");
    layout.tag(&RefName::parse(name).unwrap(), &desc).unwrap();
    (Digest::from_spec(desc.digest()).unwrap(), layers)
}

/// A manifest list of an arm64 image and then an amd64 one (so the
/// first entry is the wrong one), named `name`; returns the amd64
/// manifest's digest.
pub fn add_index(layout: &Layout, name: &str, seed: u8) -> Digest {
    let (arm, _) = build_manifest(layout, seed, "arm64");
    let (amd, _) = build_manifest(layout, seed.wrapping_add(50), "amd64");
    let entry = |d: &Descriptor, arch: &str| {
        json!({"mediaType": OCI_MANIFEST, "digest": d.digest().to_string(), "size": d.size(),
               "platform": {"os": "linux", "architecture": arch}})
    };
    let index = json!({
        "schemaVersion": 2,
        "mediaType": oci::media::OCI_INDEX,
        "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")],
    });
    let (digest, size) = layout
        .write_blob(&serde_json::to_vec(&index).unwrap())
        .unwrap();
    let desc = Descriptor::new(MediaType::ImageIndex, size, digest.to_spec());
    layout.tag(&RefName::parse(name).unwrap(), &desc).unwrap();
    Digest::from_spec(amd.digest()).unwrap()
}

/// A three-layer image for `arch`, not named.
pub fn build_manifest(layout: &Layout, seed: u8, arch: &str) -> (Descriptor, Vec<Digest>) {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    for (i, size) in [(0u8, 300_000usize), (1, 700_000), (2, 50_000)] {
        let (blob, diff_id) = layer(&format!("file{i}"), size, seed.wrapping_add(i));
        let (digest, size) = layout.write_blob(&blob).unwrap();
        descs
            .push(json!({"mediaType": OCI_LAYER_GZIP, "digest": digest.to_string(), "size": size}));
        layers.push(digest);
        diff_ids.push(diff_id.to_string());
    }
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "created": "2026-11-22T00:00:00Z",
        "config": {"Entrypoint": ["/file0"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = layout
        .write_blob(&serde_json::to_vec(&config).unwrap())
        .unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_size},
        "layers": descs,
    });
    let (digest, size) = layout
        .write_blob(&serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    (
        Descriptor::new(MediaType::ImageManifest, size, digest.to_spec()),
        layers,
    )
}

pub fn skopeo(args: &[&str]) {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo must be installed (scripts/lib.sh host packages)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn push(archive: &Path, name: &str, pki: &Pki, dest: &str) {
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-cert-dir",
        pki.cert_dir.to_str().unwrap(),
        "--dest-creds",
        &format!("{USER}:{PASSWORD}"),
        &format!("oci-archive:{}:{name}", archive.display()),
        &format!("docker://{dest}"),
    ]);
}

/// Pulls `reference`; returns every event, the last one `done` or `error`.
pub async fn pull(client: &Client, reference: &str) -> Vec<PullEvent> {
    let body = serde_json::to_vec(&json!({ "reference": reference })).unwrap();
    let response = client
        .send_raw("POST", "/v1/images/pull", "application/json", body)
        .await;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(status, 200, "{text}");
    let events: Vec<PullEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(
        matches!(
            events.last(),
            Some(PullEvent::Done { .. } | PullEvent::Error { .. })
        ),
        "{text}"
    );
    events
}

pub fn done(events: &[PullEvent]) -> (Vec<String>, String) {
    match events.last() {
        Some(PullEvent::Done { references, digest }) => (references.clone(), digest.clone()),
        other => panic!("pull failed: {other:?}"),
    }
}

pub fn failed(events: &[PullEvent]) -> (ErrorCode, String) {
    match events.last() {
        Some(PullEvent::Error { code, message }) => (*code, message.clone()),
        other => panic!("pull did not fail: {other:?}"),
    }
}

/// The registries every progress event came from.
pub fn roles(events: &[PullEvent]) -> Vec<(String, PullSourceRole)> {
    let mut out: Vec<(String, PullSourceRole)> = events
        .iter()
        .filter_map(|e| match e {
            PullEvent::Progress { source, .. } | PullEvent::Resolved { source, .. } => {
                Some((source.registry.clone(), source.role))
            }
            PullEvent::Done { .. } | PullEvent::Error { .. } => None,
        })
        .collect();
    out.dedup();
    out
}
