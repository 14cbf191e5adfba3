//! The image store over the real API: a real agent in a throwaway network
//! namespace is bootstrapped, an oci-archive made with the `oci` crate's
//! writer is imported, listed, exported and checked with skopeo, and bad
//! archives are refused with nothing stored.
//!
//! Needs root (network namespace) and skopeo (a host package installed by
//! scripts/lib.sh); without either it fails rather than skips.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use api::ErrorCode;
use api::types::{BootstrapResponse, ImageList, ImageRemoved, ImportResponse, PruneResponse};
use http_body_util::BodyExt;
use nodeagent::agent::AgentOptions;
use nodeagent::apiserver::ApiOptions;
use nodeagent::config::ConfigPaths;
use nodeagent::journal::Journal;
use nodeagent::net::NetworkOptions;
use oci::media::{OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST};
use oci::{Layout, RefName};
use oci_spec::image::{Descriptor, MediaType};
use serde_json::json;

mod common;
use common::api_client::{Client, csr, error_of, wait_for_api, with_key};
use common::{in_fresh_netns, runtime};

const API: &str = "127.0.0.1:7443";
const SETUP_TOKEN: &str = "test-setup-token-0123456789";

fn agent_options(dir: &Path, journal: &Journal) -> AgentOptions {
    std::fs::create_dir_all(dir.join("sys")).unwrap();
    std::fs::write(dir.join("cmdline"), "quiet\n").unwrap();
    let state = dir.join("state");
    AgentOptions {
        config_paths: ConfigPaths {
            cmdline: dir.join("cmdline"),
            esp: dir.join("efi/cairn/config.toml"),
            fw_cfg: dir.join("fw_cfg/raw"),
            applied: state.join("config.toml"),
        },
        network: NetworkOptions {
            sysfs_net: dir.join("sys"),
            resolv_conf: dir.join("resolv.conf"),
            ..NetworkOptions::default()
        },
        health_addr: "127.0.0.1:7480".parse().unwrap(),
        api: ApiOptions {
            addr: API.parse().unwrap(),
            init_socket: dir.join("init.sock"),
            network_wait: Duration::ZERO,
            ..ApiOptions::under(&state)
        },
        journal: Some(journal.clone()),
        ..AgentOptions::default()
    }
}

fn prepare_node() -> (tempfile::TempDir, PathBuf, Journal) {
    common::ip("link set lo up");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("config.toml"),
        format!("[cluster]\nsetup-token = \"{SETUP_TOKEN}\"\n"),
    )
    .unwrap();
    let journal = nodeagent::open_journal(&state.join("logs")).expect("journal opens");
    (dir, state, journal)
}

/// A one-layer image named `name` in `layout`; `layer_type` is the
/// layer's media type as the manifest declares it.
fn add_image(layout: &Layout, name: &str, file: &[u8], layer_type: &str) {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(file.len() as u64);
    builder.append_data(&mut header, "hello", file).unwrap();
    let layer = builder.into_inner().unwrap();
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

async fn import(client: &Client, archive: Vec<u8>) -> (u16, String) {
    let response = client
        .send_raw(
            "POST",
            "/v1/images/import",
            api::types::OCI_ARCHIVE,
            archive,
        )
        .await;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn skopeo_inspect(archive: &Path) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", archive.display()))
        .output()
        .expect("skopeo must be installed (scripts/lib.sh host packages)");
    assert!(
        out.status.success(),
        "skopeo inspect refused the export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_archive_imported_over_the_api_is_listed_exported_and_read_by_skopeo() {
    in_fresh_netns(|| {
        let (dir, state, journal) = prepare_node();
        runtime().block_on(async {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let agent = tokio::spawn(nodeagent::agent::run_until(
                agent_options(dir.path(), &journal),
                async move {
                    let _ = stopped.await;
                },
            ));
            let anyone = Client::maintenance(API);
            wait_for_api(&anyone).await;
            let admin_key = csr("alice");
            let boot: BootstrapResponse = anyone
                .json(
                    "POST",
                    "/v1/cluster/bootstrap",
                    Some(&json!({
                        "setup_token": SETUP_TOKEN,
                        "cluster_name": "lab",
                        "admin_name": "alice",
                        "admin_csr_pem": admin_key.csr_pem,
                    })),
                )
                .await;
            let admin = Client::member(
                API,
                &boot.admin.ca_pem,
                Some(&with_key(&boot.admin, &admin_key)),
            );

            let src = Layout::create(&dir.path().join("src")).unwrap();
            add_image(&src, "hello:1", b"#!/bin/true\n", OCI_LAYER_TAR);
            add_image(&src, "hello:latest", b"#!/bin/true\n", OCI_LAYER_TAR);
            let archive = oci::archive::write_archive(&src, Vec::new()).unwrap();

            let (status, text) = import(&admin, archive.clone()).await;
            assert_eq!(status, 200, "{text}");
            let imported: ImportResponse = serde_json::from_str(&text).unwrap();
            let mut names: Vec<_> = imported
                .images
                .iter()
                .map(|i| i.reference.as_str())
                .collect();
            names.sort_unstable();
            assert_eq!(names, ["hello:1", "hello:latest"]);
            // Both names are the same image.
            assert_eq!(imported.images[0].digest, imported.images[1].digest);
            let digest = imported.images[0].digest.clone();

            let list: ImageList = admin.json("GET", "/v1/images", None).await;
            assert_eq!(list.images.len(), 2);
            assert!(list.images.iter().all(|i| i.digest == digest && i.size > 0));
            assert_eq!(
                list.images[0].created.as_deref(),
                Some("2026-11-22T00:00:00Z")
            );
            let store = state.join("images");
            let hex = digest.strip_prefix("sha256:").unwrap();
            assert!(store.join("blobs/sha256").join(hex).is_file());

            // Export by name; skopeo must accept the archive.
            let response = admin
                .send("GET", "/v1/images/export?ref=hello%3A1", None)
                .await;
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["content-type"], api::types::OCI_ARCHIVE);
            let exported = response.into_body().collect().await.unwrap().to_bytes();
            let file = dir.path().join("exported.tar");
            std::fs::write(&file, &exported).unwrap();
            let inspected = skopeo_inspect(&file);
            assert_eq!(inspected["Digest"], digest.as_str(), "{inspected}");
            assert_eq!(inspected["Architecture"], "amd64");

            // Bad archives: 422 naming the problem, nothing stored.
            let before = tree(&store);
            let mut corrupt = archive.clone();
            let at = corrupt
                .windows(12)
                .position(|w| w == b"#!/bin/true\n")
                .expect("the layer is uncompressed in the archive");
            corrupt[at] = b'X';
            let (status, text) = import(&admin, corrupt).await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::InvalidImage);
            assert!(error.message.contains("digest"), "{}", error.message);
            let (status, text) = import(&admin, archive[..archive.len() / 3].to_vec()).await;
            assert_eq!(error_of(status, &text).code, ErrorCode::InvalidImage);
            let odd = Layout::create(&dir.path().join("odd")).unwrap();
            add_image(&odd, "odd:1", b"x", "application/vnd.example.unknown");
            let (status, text) = import(
                &admin,
                oci::archive::write_archive(&odd, Vec::new()).unwrap(),
            )
            .await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::InvalidImage);
            assert!(
                error.message.contains("application/vnd.example.unknown"),
                "{}",
                error.message
            );
            assert_eq!(
                tree(&store),
                before,
                "a refused import left something behind"
            );

            // Remove both names, then prune everything.
            let (status, text) = admin
                .call("GET", "/v1/images/export?ref=nope:1", None)
                .await;
            assert_eq!(error_of(status, &text).code, ErrorCode::ImageNotFound);
            let removed: ImageRemoved = admin.json("DELETE", "/v1/images/hello:1", None).await;
            assert_eq!(removed.removed, ["hello:1"]);
            let removed: ImageRemoved = admin
                .json("DELETE", &format!("/v1/images/{digest}"), None)
                .await;
            assert_eq!(removed.removed, ["hello:latest"]);
            let (status, text) = admin.call("DELETE", "/v1/images/hello:1", None).await;
            assert_eq!(error_of(status, &text).code, ErrorCode::ImageNotFound);
            let pruned: PruneResponse = admin.json("POST", "/v1/images/prune", None).await;
            assert_eq!(pruned.images, [digest]);
            assert_eq!(pruned.blobs.len(), 3);
            assert_eq!(pruned.layers.len(), 1);
            let list: ImageList = admin.json("GET", "/v1/images", None).await;
            assert!(list.images.is_empty());

            stop.send(()).unwrap();
            tokio::time::timeout(Duration::from_secs(5), agent)
                .await
                .expect("agent stops")
                .unwrap()
                .unwrap();
        });
    });
}

/// Every path under `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}
