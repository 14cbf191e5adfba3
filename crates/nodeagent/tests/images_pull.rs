//! Pulls over the real API from real registries: Debian's `docker-registry`
//! on loopback with TLS from a CA this test makes and htpasswd basic auth,
//! images built with the `oci` crate's writer and pushed with skopeo.
//!
//! One agent, one machine config, two registries (A and B) and one port
//! where nothing listens (C):
//!
//! - `127.0.0.1:A` and `127.0.0.1:B`: right credentials;
//! - `localhost:A`: the same registry under another name, wrong password;
//! - `127.0.0.1:C` (down) with mirror `127.0.0.1:B`;
//! - `localhost:B` with mirror `127.0.0.1:C` (down).
//!
//! Needs root (network namespace), docker-registry, apache2-utils and
//! skopeo (host packages in scripts/lib.sh); without them it fails rather
//! than skips.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::ErrorCode;
use api::types::{ImageList, PruneResponse, PullEvent, PullSourceRole};
use http_body_util::BodyExt;
use oci::media::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use oci::{Digest, Layout, RefName};
use oci_spec::image::{Descriptor, MediaType};
use serde_json::json;

mod common;
use common::agent::{RunningAgent, SETUP_TOKEN, TestNode, bootstrap};
use common::api_client::Client;
use common::{in_fresh_netns, runtime};

const USER: &str = "puller";
const PASSWORD: &str = "right-password-42";

/// A running `docker-registry`; killed and waited for on drop, so a failed
/// assertion never leaves one behind.
struct Registry {
    child: Child,
    storage: PathBuf,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file the registry serves `digest` from.
    fn blob_data(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The test CA, and a server certificate for 127.0.0.1 and localhost.
struct Pki {
    ca_pem: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// For skopeo's --dest-cert-dir.
    cert_dir: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
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

fn start_registry(dir: &Path, name: &str, pki: &Pki, htpasswd: &Path) -> Registry {
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
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("docker-registry must be installed (scripts/lib.sh host packages)");
    let registry = Registry {
        child,
        storage,
        port,
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

fn htpasswd(dir: &Path) -> PathBuf {
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
fn layer(name: &str, size: usize, seed: u8) -> (Vec<u8>, Digest) {
    let mut data = Vec::with_capacity(size);
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push(x.to_le_bytes()[0]);
    }
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    builder.append_data(&mut header, name, &data[..]).unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), Digest::of(&tar))
}

/// A multi-layer image named `name` in `layout`; returns its manifest
/// digest and layer digests.
fn add_image(layout: &Layout, name: &str, seed: u8) -> (Digest, Vec<Digest>) {
    let (desc, layers) = build_manifest(layout, seed, "amd64");
    layout.tag(&RefName::parse(name).unwrap(), &desc).unwrap();
    (Digest::from_spec(desc.digest()).unwrap(), layers)
}

/// A manifest list of an arm64 image and then an amd64 one (so the
/// first entry is the wrong one), named `name`; returns the amd64
/// manifest's digest.
fn add_index(layout: &Layout, name: &str, seed: u8) -> Digest {
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
fn build_manifest(layout: &Layout, seed: u8, arch: &str) -> (Descriptor, Vec<Digest>) {
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

fn skopeo(args: &[&str]) {
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

fn push(archive: &Path, name: &str, pki: &Pki, dest: &str) {
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
async fn pull(client: &Client, reference: &str) -> Vec<PullEvent> {
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

fn done(events: &[PullEvent]) -> (Vec<String>, String) {
    match events.last() {
        Some(PullEvent::Done { references, digest }) => (references.clone(), digest.clone()),
        other => panic!("pull failed: {other:?}"),
    }
}

fn failed(events: &[PullEvent]) -> (ErrorCode, String) {
    match events.last() {
        Some(PullEvent::Error { code, message }) => (*code, message.clone()),
        other => panic!("pull did not fail: {other:?}"),
    }
}

/// The registries every progress event came from.
fn roles(events: &[PullEvent]) -> Vec<(String, PullSourceRole)> {
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

#[test]
fn images_are_pulled_from_real_registries_with_auth_mirrors_and_verification() {
    in_fresh_netns(|| {
        let node = TestNode::prepare();
        let dir = &node.dir;
        let pki = make_pki(dir.path());
        let htpasswd = htpasswd(dir.path());
        let a = start_registry(dir.path(), "a", &pki, &htpasswd);
        let b = start_registry(dir.path(), "b", &pki, &htpasswd);
        let c_port = free_port();

        let src = Layout::create(&dir.path().join("src")).unwrap();
        let (app_digest, _) = add_image(&src, "app:1", 1);
        let (_, bad_layers) = add_image(&src, "bad:1", 100);
        let multi_amd64 = add_index(&src, "multi:1", 150);
        let archive = dir.path().join("images.tar");
        oci::archive::write_archive_file(&src, &archive).unwrap();
        push(&archive, "app:1", &pki, &format!("{}/team/app:1", a.host()));
        push(&archive, "bad:1", &pki, &format!("{}/team/bad:1", a.host()));
        push(
            &archive,
            "multi:1",
            &pki,
            &format!("{}/team/multi:1", a.host()),
        );
        push(&archive, "app:1", &pki, &format!("{}/team/app:1", b.host()));
        // A corrupted blob in the registry's storage, same size.
        let data = a.blob_data(&bad_layers[1]);
        let mut bytes = std::fs::read(&data).unwrap();
        let last = bytes.len() - 2000;
        bytes[last] ^= 0xff;
        std::fs::write(&data, &bytes).unwrap();

        let ca = pki.ca_pem.display().to_string();
        let state = &node.state;
        // The node's config, replaced before the agent reads it.
        let mut config = std::fs::File::create(state.join("config.toml")).unwrap();
        write!(
            config,
            "[cluster]\nsetup-token = \"{SETUP_TOKEN}\"\n\n\
             [[registries]]\nhost = \"{a}\"\nca = \"{ca}\"\nauth = {{ username = \"{USER}\", password = \"{PASSWORD}\" }}\n\n\
             [[registries]]\nhost = \"{b}\"\nca = \"{ca}\"\nauth = {{ username = \"{USER}\", password = \"{PASSWORD}\" }}\n\n\
             [[registries]]\nhost = \"localhost:{ap}\"\nca = \"{ca}\"\nauth = {{ username = \"{USER}\", password = \"wrong-password\" }}\n\n\
             [[registries]]\nhost = \"127.0.0.1:{c_port}\"\nmirrors = [\"{b}\"]\n\n\
             [[registries]]\nhost = \"localhost:{bp}\"\nmirrors = [\"127.0.0.1:{c_port}\"]\nca = \"{ca}\"\nauth = {{ username = \"{USER}\", password = \"{PASSWORD}\" }}\n",
            a = a.host(),
            b = b.host(),
            ap = a.port,
            bp = b.port,
        )
        .unwrap();
        drop(config);

        runtime().block_on(async {
            let agent = RunningAgent::start(node.options()).await;
            let admin = bootstrap().await;
            let store = state.join("images");

            // By tag, with basic auth and the site CA.
            let by_tag = format!("{}/team/app:1", a.host());
            let events = pull(&admin, &by_tag).await;
            let (references, digest) = done(&events);
            assert_eq!(references, std::slice::from_ref(&by_tag));
            assert_eq!(digest, app_digest.to_string());
            assert_eq!(roles(&events), [(a.host(), PullSourceRole::Upstream)]);
            let resolved = events
                .iter()
                .find_map(|e| match e {
                    PullEvent::Resolved { blobs, .. } => Some(blobs.clone()),
                    _ => None,
                })
                .expect("a resolved event");
            assert_eq!(resolved.len(), 4, "config and three layers");
            assert!(events.iter().any(|e| matches!(
                e,
                PullEvent::Progress { done, total, .. } if done == total && *total >= 700_000
            )));
            assert!(store.join("blobs/sha256").join(app_digest.hex()).is_file());

            // By digest: verified, nothing fetched again.
            let by_digest = format!("{}/team/app@{app_digest}", a.host());
            let events = pull(&admin, &by_digest).await;
            assert_eq!(done(&events).1, app_digest.to_string());
            let again = events
                .iter()
                .find_map(|e| match e {
                    PullEvent::Resolved { blobs, .. } => Some(blobs.clone()),
                    _ => None,
                })
                .unwrap();
            assert!(again.iter().all(|b| b.present), "{again:?}");
            let wrong = Digest::of(b"not the manifest");
            let (code, message) =
                failed(&pull(&admin, &format!("{}/team/app@{wrong}", a.host())).await);
            assert!(
                matches!(code, ErrorCode::ImageNotFound | ErrorCode::InvalidImage),
                "{code:?} {message}"
            );

            // A manifest list: the linux/amd64 entry, though it is second.
            let multi = format!("{}/team/multi:1", a.host());
            let events = pull(&admin, &multi).await;
            assert_eq!(done(&events).1, multi_amd64.to_string(), "{events:?}");

            // Wrong password: the registry is named.
            let (code, message) =
                failed(&pull(&admin, &format!("localhost:{}/team/app:1", a.port)).await);
            assert_eq!(code, ErrorCode::RegistryAuthFailed, "{message}");
            assert!(
                message.contains(&format!("localhost:{}", a.port)),
                "{message}"
            );
            assert!(!message.contains("wrong-password"), "{message}");

            // Not there.
            let (code, message) = failed(&pull(&admin, &format!("{}/team/nope:1", a.host())).await);
            assert_eq!(code, ErrorCode::ImageNotFound, "{message}");

            // Upstream down: its mirror serves.
            let via_mirror = format!("127.0.0.1:{c_port}/team/app:1");
            let events = pull(&admin, &via_mirror).await;
            assert_eq!(done(&events).1, app_digest.to_string());
            assert_eq!(
                roles(&events)[0],
                (b.host(), PullSourceRole::Mirror),
                "{events:?}"
            );
            // Mirror down: the upstream serves after it.
            let past_mirror = format!("localhost:{}/team/app:1", b.port);
            let events = pull(&admin, &past_mirror).await;
            assert_eq!(done(&events).1, app_digest.to_string());
            assert_eq!(
                roles(&events)[0],
                (format!("localhost:{}", b.port), PullSourceRole::Upstream)
            );
            // Nothing anywhere: every source is named.
            drop(b);
            let (code, message) =
                failed(&pull(&admin, &format!("127.0.0.1:{c_port}/team/other:1")).await);
            assert_eq!(code, ErrorCode::RegistryUnreachable, "{message}");
            assert!(
                message.contains(&format!("127.0.0.1:{c_port}")),
                "{message}"
            );

            // A corrupted blob: refused naming it, nothing recorded.
            let before: ImageList = admin.json("GET", "/v1/images", None).await;
            let (code, message) = failed(&pull(&admin, &format!("{}/team/bad:1", a.host())).await);
            assert_eq!(code, ErrorCode::InvalidImage, "{message}");
            assert!(message.contains(&bad_layers[1].to_string()), "{message}");
            let after: ImageList = admin.json("GET", "/v1/images", None).await;
            assert_eq!(before, after);
            assert!(
                !store
                    .join("blobs/sha256")
                    .join(bad_layers[1].hex())
                    .exists(),
                "the corrupted blob was stored"
            );

            // The pulled image exports, and skopeo reads the archive.
            let query = serde_urlencoded::to_string([("ref", by_tag.as_str())]).unwrap();
            let response = admin
                .send("GET", &format!("/v1/images/export?{query}"), None)
                .await;
            assert_eq!(response.status(), 200);
            let exported = response.into_body().collect().await.unwrap().to_bytes();
            let file = dir.path().join("exported.tar");
            std::fs::write(&file, &exported).unwrap();
            let out = Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci-archive:{}", file.display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(inspected["Digest"], app_digest.to_string());
            assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(3));

            // Prune keeps what references name, including the corrupted
            // pull's good blobs only until nothing pins them.
            let pruned: PruneResponse = admin.json("POST", "/v1/images/prune", None).await;
            assert!(pruned.images.is_empty(), "{pruned:?}");
            assert!(
                !pruned.blobs.contains(&app_digest.to_string()),
                "{pruned:?}"
            );
            let list: ImageList = admin.json("GET", "/v1/images", None).await;
            let kept: std::collections::BTreeSet<&str> =
                list.images.iter().map(|i| i.digest.as_str()).collect();
            let expected = [app_digest.to_string(), multi_amd64.to_string()];
            assert_eq!(
                kept,
                expected.iter().map(String::as_str).collect(),
                "{list:?}"
            );
            let response = admin
                .send("GET", &format!("/v1/images/export?{query}"), None)
                .await;
            assert_eq!(response.status(), 200);

            // A pulled name has slashes: it is removed percent-encoded, as
            // the CLI sends it.
            let encoded = by_tag.replace('/', "%2F").replace(':', "%3A");
            let (status, text) = admin
                .call("DELETE", &format!("/v1/images/{encoded}"), None)
                .await;
            assert_eq!(status, 200, "{text}");
            assert!(text.contains(&by_tag), "{text}");

            agent.stop().await;
        });
        drop(a);
    });
}
