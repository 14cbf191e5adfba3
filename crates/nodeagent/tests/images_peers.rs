//! Image sharing between the nodes of a cluster: two real agents joined
//! into one cluster on loopback (each serving its content store on its
//! peer port) and one real registry (Debian's `docker-registry` with TLS
//! and htpasswd auth, images pushed with skopeo). The registry's access
//! log shows what it served, so "from the peer, not the registry" is
//! checked on the registry's side too, not only in the pull's events.
//!
//! Needs root (namespaces), docker-registry, apache2-utils and skopeo;
//! without them it fails rather than skips.

use std::time::Duration;

use api::types::{ClusterStatus, CreatedToken, PullEvent, PullSource, PullSourceRole};
use oci::{Digest, Layout};
use serde_json::json;

mod common;
use common::cluster::{Agent, api, bootstrap_first, join, wait_for_status};
use common::registry::{
    PASSWORD, USER, add_image, done, htpasswd, make_pki, pull, push, start_registry,
};
use common::{in_fresh_netns, runtime};

/// Where each blob of a pull came from, in event order, deduplicated per
/// blob (its first progress event names the source that served it).
fn blob_sources(events: &[PullEvent]) -> Vec<(String, PullSource)> {
    let mut out: Vec<(String, PullSource)> = Vec::new();
    for event in events {
        if let PullEvent::Progress { digest, source, .. } = event
            && !out.iter().any(|(d, s)| d == digest && s == source)
        {
            out.push((digest.clone(), source.clone()));
        }
    }
    out
}

fn resolved_from(events: &[PullEvent]) -> PullSource {
    events
        .iter()
        .find_map(|e| match e {
            PullEvent::Resolved { source, .. } => Some(source.clone()),
            _ => None,
        })
        .expect("a resolved event")
}

fn from_n1(source: &PullSource) -> bool {
    source.role == PullSourceRole::Peer && source.node.as_deref() == Some("n1")
}

#[test]
fn a_node_pulls_from_a_peer_before_the_registry_and_verifies_what_it_gets() {
    in_fresh_netns(|| {
        common::ip("link set lo up");
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(dir.path());
        let htpasswd = htpasswd(dir.path());
        let registry = start_registry(dir.path(), "site", &pki, &htpasswd);
        let site = registry.host();

        let src = Layout::create(&dir.path().join("src")).unwrap();
        let (one, _) = add_image(&src, "app:1", 1);
        let (two, two_layers) = add_image(&src, "app:2", 60);
        let (three, _) = add_image(&src, "app:3", 120);
        let archive = dir.path().join("images.tar");
        oci::archive::write_archive_file(&src, &archive).unwrap();
        for tag in ["1", "2", "3"] {
            push(
                &archive,
                &format!("app:{tag}"),
                &pki,
                &format!("{site}/team/app:{tag}"),
            );
        }
        let registries = format!(
            "\n[[registries]]\nhost = \"{site}\"\nca = \"{ca}\"\nauth = {{ username = \"{USER}\", password = \"{PASSWORD}\" }}\n",
            ca = pki.ca_pem.display()
        );
        let _agents: Vec<Agent> = (1..=2)
            .map(|i| Agent::start_with(i, dir.path(), &registries))
            .collect();

        runtime().block_on(async {
            let n1 = bootstrap_first("lab").await;
            let token: CreatedToken = n1
                .json("POST", "/v1/cluster/tokens", Some(&json!({})))
                .await;
            let (status, text) = join(2, &token).await;
            assert_eq!(status, 200, "n2 joins: {text}");
            wait_for_status(
                &n1,
                "two members",
                Duration::from_secs(60),
                |s: &ClusterStatus| s.members.len() == 2,
            )
            .await;
            let n2 = n1.at(&api(2));

            // n1 has the image from the registry.
            let app1 = format!("{site}/team/app:1");
            let events = pull(&n1, &app1).await;
            assert_eq!(done(&events).1, one.to_string());
            assert_eq!(resolved_from(&events).role, PullSourceRole::Upstream);
            let served = registry.blob_gets();
            assert!(
                served >= 4,
                "config and three layers from the registry: {served}"
            );

            // n2 takes every blob from n1; the tag is still asked of the
            // registry, which serves no blob.
            let events = pull(&n2, &app1).await;
            assert_eq!(done(&events).1, one.to_string(), "{events:?}");
            assert_eq!(resolved_from(&events).role, PullSourceRole::Upstream);
            let sources = blob_sources(&events);
            assert!(!sources.is_empty(), "{events:?}");
            assert!(sources.iter().all(|(_, s)| from_n1(s)), "{sources:?}");
            assert_eq!(
                registry.blob_gets(),
                served,
                "the registry served blobs to n2"
            );

            // A blob n1 holds corrupted (same size) is refused from the
            // peer and fetched from the registry; the others come from n1.
            let app2 = format!("{site}/team/app:2");
            assert_eq!(done(&pull(&n1, &app2).await).1, two.to_string());
            let served = registry.blob_gets();
            let bad = &two_layers[1];
            let stored = dir
                .path()
                .join("n1/state/images/blobs/sha256")
                .join(bad.hex());
            let mut bytes = std::fs::read(&stored).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0xff;
            std::fs::write(&stored, &bytes).unwrap();
            let events = pull(&n2, &app2).await;
            assert_eq!(done(&events).1, two.to_string(), "{events:?}");
            let sources = blob_sources(&events);
            assert!(
                sources
                    .iter()
                    .any(|(d, s)| *d == bad.to_string() && s.role == PullSourceRole::Upstream),
                "{sources:?}"
            );
            assert!(
                sources
                    .iter()
                    .filter(|(d, _)| *d != bad.to_string())
                    .all(|(_, s)| from_n1(s)),
                "{sources:?}"
            );
            assert_eq!(
                registry.blob_gets(),
                served + 1,
                "only the bad blob from the registry"
            );
            let kept = std::fs::read(
                dir.path()
                    .join("n2/state/images/blobs/sha256")
                    .join(bad.hex()),
            )
            .unwrap();
            assert_eq!(Digest::of(&kept), *bad, "n2 stored what n1 corrupted");

            // With the registry gone, a tag n1 records resolves on n1.
            let app3 = format!("{site}/team/app:3");
            assert_eq!(done(&pull(&n1, &app3).await).1, three.to_string());
            drop(registry);
            let events = pull(&n2, &app3).await;
            assert_eq!(done(&events).1, three.to_string(), "{events:?}");
            assert!(from_n1(&resolved_from(&events)), "{events:?}");
            assert!(blob_sources(&events).iter().all(|(_, s)| from_n1(s)));

            // What no node and no registry has still fails, naming the
            // registry.
            let events = pull(&n2, &format!("{site}/team/app:4")).await;
            match events.last() {
                Some(PullEvent::Error { message, .. }) => {
                    assert!(message.contains(&site), "{message}");
                }
                other => panic!("pull of app:4 did not fail: {other:?}"),
            }
        });
    });
}
