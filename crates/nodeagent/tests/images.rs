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

use std::path::Path;
use std::process::Command;

use api::ErrorCode;
use api::types::{ImageList, ImageRemoved, ImportResponse, PruneResponse};
use http_body_util::BodyExt;
use oci::Layout;
use oci::media::OCI_LAYER_TAR;

mod common;
use common::agent::{RunningAgent, TestNode, bootstrap};
use common::api_client::{Client, error_of};
use common::oci_image::add_image;
use common::{in_fresh_netns, runtime};

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
        let node = TestNode::prepare();
        let dir = &node.dir;
        let state = &node.state;
        runtime().block_on(async {
            let agent = RunningAgent::start(node.options()).await;
            let admin = bootstrap().await;

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

            agent.stop().await;
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
