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

use std::io::Write;
use std::process::Command;

use api::ErrorCode;
use api::types::{ImageList, PruneResponse, PullEvent, PullSourceRole};
use http_body_util::BodyExt;
use oci::{Digest, Layout};

mod common;
use common::agent::{RunningAgent, SETUP_TOKEN, TestNode, bootstrap};
use common::registry::{
    PASSWORD, USER, add_image, add_index, done, failed, free_port, htpasswd, make_pki, pull, push,
    roles, start_registry,
};
use common::{in_fresh_netns, runtime};

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
