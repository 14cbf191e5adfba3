//! The container API over a real agent, on this host.
//!
//! The build host has no cgroup v2 controllers, so no container process
//! runs here (qemu-tests/tests/containers_vm.rs runs them on the real
//! image). What this proves is everything around the shim: requests are
//! refused by field, an image must be in the store, a shim that cannot
//! start leaves a container that says why, the records survive an agent
//! restart, prune keeps what a container uses, and `rm` removes the
//! container's directory.
//!
//! Needs root (network namespace); fails rather than skips without it.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use api::ErrorCode;
use api::types::{
    ContainerInfo, ContainerList, ContainerRemoved, ContainerState, ImageRemoved, ImportResponse,
    PruneResponse,
};
use nodeagent::agent::AgentOptions;
use oci::Layout;
use oci::media::OCI_LAYER_TAR;
use serde_json::json;

mod common;
use common::agent::{RunningAgent, TestNode, bootstrap};
use common::api_client::{Client, error_of};
use common::oci_image::add_image;
use common::{in_fresh_netns, runtime};

/// The shim the agent is told to run: absent, so every start fails the
/// same, named way.
const NO_SHIM: &str = "/nonexistent/cairn-shim";

fn options(node: &TestNode) -> AgentOptions {
    let mut options = node.options();
    options.api.shim = NO_SHIM.into();
    options
}

async fn import_hello(node: &TestNode, admin: &Client) -> String {
    let src = Layout::create(&node.path("src")).unwrap();
    add_image(&src, "hello:1", b"#!/bin/true\n", OCI_LAYER_TAR);
    let archive = oci::archive::write_archive(&src, Vec::new()).unwrap();
    let response = admin
        .send_raw(
            "POST",
            "/v1/images/import",
            api::types::OCI_ARCHIVE,
            archive,
        )
        .await;
    assert_eq!(response.status(), 200);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let imported: ImportResponse = serde_json::from_slice(&body).unwrap();
    imported.images[0].digest.clone()
}

#[test]
fn container_requests_are_judged_recorded_and_cleaned_up_around_the_shim() {
    in_fresh_netns(|| {
        let node = TestNode::prepare();
        runtime().block_on(async {
            let agent = RunningAgent::start(options(&node)).await;
            let admin = bootstrap().await;
            let list: ContainerList = admin.json("GET", "/v1/containers", None).await;
            assert!(list.containers.is_empty());

            // Refusals name the field; nothing is created.
            for (body, code, names) in [
                (
                    json!({"name": "Bad Name", "image": "hello:1"}),
                    ErrorCode::InvalidContainer,
                    "Bad Name",
                ),
                (
                    json!({"name": "web", "image": "hello:1",
                           "volumes": [{"volume": "../etc", "path": "/data"}]}),
                    ErrorCode::InvalidContainer,
                    "../etc",
                ),
                (
                    json!({"name": "web", "image": "hello:1", "cap_add": ["FLY"]}),
                    ErrorCode::InvalidContainer,
                    "FLY",
                ),
                (
                    json!({"name": "web", "image": "nope:1"}),
                    ErrorCode::ImageNotFound,
                    "nope:1",
                ),
                (
                    json!({"name": "web", "image": "hello:1", "bogus": 1}),
                    ErrorCode::BadRequest,
                    "bogus",
                ),
            ] {
                let (status, text) = admin.call("POST", "/v1/containers", Some(&body)).await;
                let error = error_of(status, &text);
                assert_eq!(error.code, code, "{body}: {text}");
                assert!(error.message.contains(names), "{body}: {text}");
            }

            // A start that fails leaves the container, exited, saying why.
            let digest = import_hello(&node, &admin).await;
            let body = json!({"name": "web", "image": "hello:1",
                              "volumes": [{"volume": "data", "path": "/data"}]});
            let (status, text) = admin.call("POST", "/v1/containers", Some(&body)).await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::ContainerStartFailed, "{text}");
            assert!(error.message.contains(NO_SHIM), "{text}");
            let web: ContainerInfo = admin.json("GET", "/v1/containers/web", None).await;
            assert_eq!(web.state, ContainerState::Exited);
            assert_eq!(web.image_digest, digest);
            assert_eq!(web.command, ["/hello"]);
            assert!(web.error.unwrap().contains(NO_SHIM));
            assert!(node.state.join("containers/web/spec.json").is_file());
            assert!(node.state.join("volumes/data").is_dir());
            let (status, text) = admin.call("POST", "/v1/containers", Some(&body)).await;
            assert_eq!(error_of(status, &text).code, ErrorCode::ContainerExists);
            // A refused duplicate creates none of its volumes.
            let other = json!({"name": "web", "image": "hello:1",
                               "volumes": [{"volume": "other", "path": "/data"}]});
            let (status, text) = admin.call("POST", "/v1/containers", Some(&other)).await;
            assert_eq!(error_of(status, &text).code, ErrorCode::ContainerExists);
            assert!(!node.state.join("volumes/other").exists());
            let (status, text) = admin
                .call(
                    "POST",
                    "/v1/containers/web/exec",
                    Some(&json!({"command": ["/hello"]})),
                )
                .await;
            assert_eq!(error_of(status, &text).code, ErrorCode::ContainerNotRunning);
            let (status, text) = admin.call("GET", "/v1/containers/nope", None).await;
            assert_eq!(error_of(status, &text).code, ErrorCode::ContainerNotFound);

            // The container holds its image through rm + prune.
            let removed: ImageRemoved = admin.json("DELETE", "/v1/images/hello:1", None).await;
            assert_eq!(removed.removed, ["hello:1"]);
            let pruned: PruneResponse = admin.json("POST", "/v1/images/prune", None).await;
            assert!(
                pruned.images.is_empty() && pruned.blobs.is_empty(),
                "{pruned:?}"
            );
            agent.stop().await;

            // A new agent finds the container again.
            let agent = RunningAgent::start(options(&node)).await;
            let list: ContainerList = admin.json("GET", "/v1/containers", None).await;
            assert_eq!(list.containers.len(), 1);
            assert_eq!(list.containers[0].name, "web");
            let stopped: ContainerInfo = admin.json("POST", "/v1/containers/web/stop", None).await;
            assert_eq!(stopped.name, "web");
            let removed: ContainerRemoved = admin.json("DELETE", "/v1/containers/web", None).await;
            assert_eq!(removed.name, "web");
            assert!(!node.state.join("containers/web").exists());
            assert!(
                node.state.join("volumes/data").is_dir(),
                "volumes outlive their containers"
            );
            // Nothing holds the image now.
            let pruned: PruneResponse = admin.json("POST", "/v1/images/prune", None).await;
            assert_eq!(pruned.images, [digest]);
            agent.stop().await;
        });
    });
}
