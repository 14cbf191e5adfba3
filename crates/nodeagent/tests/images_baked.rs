//! Baked images over the real API: a real agent in a throwaway network
//! namespace, started with a baked-images directory laid out as
//! `cairn-image build --bake-image` lays it out on the ESP (archives plus
//! `SHA256SUMS`), has the images in its store by the time it answers;
//! a corrupt archive is skipped without costing the good one; and an
//! image the operator removed stays removed across a restart, while an
//! archive with a new digest is still imported.
//!
//! Needs root (network namespace); without it it fails rather than skips.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

use api::types::{ImageList, ImageRemoved};
use nodeagent::agent::AgentOptions;
use oci::Layout;
use oci::media::OCI_LAYER_TAR;

mod common;
use common::agent::{RunningAgent, TestNode, bootstrap};
use common::oci_image::add_image;
use common::{in_fresh_netns, runtime};

/// An oci-archive holding `name`, whose one file is `content`.
fn archive(scratch: &Path, name: &str, content: &[u8]) -> Vec<u8> {
    let layout = Layout::create(&scratch.join(format!("layout-{name}"))).unwrap();
    add_image(&layout, name, content, OCI_LAYER_TAR);
    oci::archive::write_archive(&layout, Vec::new()).unwrap()
}

/// Writes the archives into `dir` and lists them in `SHA256SUMS` with the
/// digests of the bytes written, as the image builder does.
fn bake(dir: &Path, archives: &[(&str, &[u8])]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut sums = String::new();
    for (file, bytes) in archives {
        std::fs::write(dir.join(file), bytes).unwrap();
        sums.push_str(&format!("{}  {file}\n", oci::Digest::of(bytes).hex()));
    }
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

fn options_baking(node: &TestNode, dir: &Path) -> AgentOptions {
    let mut options = node.options();
    options.api.baked_images_dir = dir.to_owned();
    options
}

fn references(list: &ImageList) -> Vec<String> {
    let mut names: Vec<String> = list
        .images
        .iter()
        .filter_map(|i| i.reference.clone())
        .collect();
    names.sort();
    names
}

fn baked_dir(node: &TestNode) -> PathBuf {
    node.path("efi/cairn/0.1.0/images")
}

#[test]
fn baked_images_are_listed_after_start_and_a_corrupt_archive_is_skipped() {
    in_fresh_netns(|| {
        let node = TestNode::prepare();
        let scratch = node.path("scratch");
        let good = archive(&scratch, "hello:1", b"#!/bin/true\n");
        let mut corrupt = archive(&scratch, "broken:1", b"#!/bin/false\n");
        let at = corrupt
            .windows(13)
            .position(|w| w == b"#!/bin/false\n")
            .expect("the layer is uncompressed in the archive");
        corrupt[at] = b'X';
        let dir = baked_dir(&node);
        // The corrupt archive sorts and is listed first: the good one must
        // still come in after it fails.
        bake(&dir, &[("a-broken.tar", &corrupt), ("hello.tar", &good)]);
        std::fs::write(dir.join("stray.tar"), &good).unwrap();

        runtime().block_on(async {
            let agent = RunningAgent::start(options_baking(&node, &dir)).await;
            let admin = bootstrap().await;
            let list: ImageList = admin.json("GET", "/v1/images", None).await;
            assert_eq!(references(&list), ["hello:1"]);

            // Only the good archive is recorded, so the broken one is
            // tried again at the next start.
            let marker: serde_json::Value = serde_json::from_slice(
                &std::fs::read(node.state.join("images/baked.json")).unwrap(),
            )
            .unwrap();
            let recorded: Vec<&String> = marker["imported"].as_object().unwrap().keys().collect();
            assert_eq!(recorded, [&oci::Digest::of(&good).to_string()]);
            assert_eq!(
                marker["imported"][oci::Digest::of(&good).to_string()]["images"],
                serde_json::json!(["hello:1"])
            );
            agent.stop().await;
        });
    });
}

#[test]
fn a_removed_baked_image_stays_removed_after_a_restart_and_new_archives_still_come_in() {
    in_fresh_netns(|| {
        let node = TestNode::prepare();
        let scratch = node.path("scratch");
        let hello = archive(&scratch, "hello:1", b"#!/bin/true\n");
        let dir = baked_dir(&node);
        bake(&dir, &[("hello.tar", &hello)]);

        runtime().block_on(async {
            let agent = RunningAgent::start(options_baking(&node, &dir)).await;
            let admin = bootstrap().await;
            let list: ImageList = admin.json("GET", "/v1/images", None).await;
            assert_eq!(references(&list), ["hello:1"]);
            let removed: ImageRemoved = admin.json("DELETE", "/v1/images/hello:1", None).await;
            assert_eq!(removed.removed, ["hello:1"]);
            agent.stop().await;

            // The next version's image bakes the same archive and a new
            // one.
            let other = archive(&scratch, "other:2", b"#!/bin/other\n");
            bake(&dir, &[("hello.tar", &hello), ("other.tar", &other)]);
            let agent = RunningAgent::start(options_baking(&node, &dir)).await;
            let list: ImageList = admin.json("GET", "/v1/images", None).await;
            assert_eq!(references(&list), ["other:2"]);
            agent.stop().await;
        });
    });
}
