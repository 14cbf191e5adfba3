//! The node API end to end: the real agent in a throwaway network
//! namespace, real TLS 1.3 clients on loopback, a fake cairn-init on a
//! unix socket.
//!
//! The central test walks every operation of the committed OpenAPI
//! document and proves, on a member node: no client certificate → 401;
//! a certificate from another CA → 401; an expired one → 401; a node
//! certificate → 403; a reader → 403 on every mutating route; an admin →
//! past authorization everywhere. Around it: maintenance mode, bootstrap,
//! the setup token, config apply, power calls reaching init, certificate
//! issuing, and the PKI surviving an agent restart.
//!
//! These tests need root (they unshare a network namespace); without it
//! they fail rather than skip.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use api::ErrorCode;
use api::types::{
    ApplyConfigResponse, BootstrapResponse, IssuedCertificate, KernelLog, LogEntry, LogLevel,
    LogSource, MachineConfigDocument, NodeInfo,
};
use cluster::pki::{self, SubjectName};
use http_body_util::BodyExt;
use nodeagent::agent::AgentOptions;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

mod common;
use common::agent::{API, RunningAgent, SETUP_TOKEN, TestNode};
use common::api_client::{Client, csr, error_of, wait_for_api, with_key};
use common::{in_fresh_netns, runtime};

/// The harness's agent, checking for certificate renewal every 200 ms.
fn options(node: &TestNode) -> AgentOptions {
    let mut options = node.options();
    options.api.renew_check = Duration::from_millis(200);
    options
}

/// What the fake cairn-init was asked.
#[derive(Clone, Default)]
struct FakeInit {
    calls: Arc<Mutex<Vec<&'static str>>>,
}

#[zbus::interface(name = "org.cairn.Init1")]
impl FakeInit {
    fn reboot(&self) {
        self.calls.lock().unwrap().push("Reboot");
    }

    fn power_off(&self) {
        self.calls.lock().unwrap().push("PowerOff");
    }

    fn restart_agent(&self) {
        self.calls.lock().unwrap().push("RestartAgent");
    }

    fn boot_status(&self) -> std::collections::HashMap<String, String> {
        [
            ("firmware", "uefi"),
            ("entry", "cairn-0.1.0+2-1.conf"),
            ("counter", "indeterminate"),
            ("tries-left", "2"),
            ("tries-done", "1"),
            ("loader", "systemd-boot 252"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

async fn serve_fake_init(socket: PathBuf, init: FakeInit) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let init = init.clone();
        tokio::spawn(async move {
            let stream = stream.into_std().unwrap();
            let connection = zbus::connection::Builder::unix_stream(stream)
                .server(zbus::Guid::generate())
                .p2p()
                .serve_at("/org/cairn/Init1", init)
                .build()
                .await
                .unwrap();
            connection.closed().await;
        });
    }
}

/// A TLS client identity for the tests.
/// One operation of the committed document, with a path a client can
/// call (placeholders filled, streams given a query they end on).
struct Documented {
    method: String,
    path: String,
    /// `certificate`, `setup_token` or `join_token`.
    access: String,
    /// For certificate routes.
    role: Option<api::Role>,
}

/// Every operation in the committed document.
fn documented_operations() -> Vec<Documented> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let mut callable = path
                .replace("{id}", "abc123")
                .replace("{name}", "nobody")
                .replace("{ref}", "nothing:1");
            if op["responses"]["200"]["content"].get(api::NDJSON).is_some() {
                // A stream that a bad query ends at once.
                callable.push_str("?follow=maybe&after=never");
            }
            out.push(Documented {
                method: method.to_uppercase(),
                path: callable,
                access: op["x-cairn-access"].as_str().unwrap().to_owned(),
                role: op["x-cairn-role"].as_str().map(|r| r.parse().unwrap()),
            });
        }
    }
    assert_eq!(
        out.len(),
        api::ROUTES.len(),
        "the document lists every route"
    );
    out
}

#[test]
fn the_api_bootstraps_a_cluster_and_enforces_roles_on_every_documented_route() {
    in_fresh_netns(|| {
        let node = TestNode::prepare();
        let (dir, state, journal) = (&node.dir, &node.state, &node.journal);
        let init = FakeInit::default();
        runtime().block_on(async {
            tokio::spawn(serve_fake_init(dir.path().join("init.sock"), init.clone()));
            let agent = RunningAgent::start(options(&node)).await;

            // Maintenance mode: only bootstrap and join, with the token.
            let anyone = Client::maintenance(API);
            wait_for_api(&anyone).await;
            for op in documented_operations() {
                if op.access == "setup_token" {
                    continue;
                }
                let (status, text) = anyone.call(&op.method, &op.path, None).await;
                assert_eq!(error_of(status, &text).code, ErrorCode::MaintenanceMode, "{}", op.path);
            }
            let admin_key = csr("alice");
            let bootstrap = |token: &str| {
                serde_json::json!({
                    "setup_token": token,
                    "cluster_name": "lab",
                    "admin_name": "alice",
                    "admin_csr_pem": admin_key.csr_pem,
                })
            };
            let (status, text) = anyone
                .call("POST", "/v1/cluster/bootstrap", Some(&bootstrap("wrong-token-0123456789")))
                .await;
            assert_eq!(error_of(status, &text).code, ErrorCode::InvalidSetupToken);
            // A malformed join is refused before the node talks to anyone.
            let join = serde_json::json!({
                "setup_token": SETUP_TOKEN,
                "cluster": "10.0.0.1:7443",
                "token": "abc.def",
                "ca_hash": "sha256:00",
            });
            let (status, text) = anyone.call("POST", "/v1/cluster/join", Some(&join)).await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert!(error.message.starts_with("token:"), "{}", error.message);
            let (status, text) = anyone
                .call("POST", "/v1/cluster/bootstrap", Some(&serde_json::json!({"setup_token": 1})))
                .await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert!(error.message.contains("setup_token"), "{}", error.message);

            let boot: BootstrapResponse = anyone
                .json("POST", "/v1/cluster/bootstrap", Some(&bootstrap(SETUP_TOKEN)))
                .await;
            assert_eq!(boot.cluster_name, "lab");
            assert_eq!(boot.admin.role, api::Role::Admin);
            let ca_pem = boot.admin.ca_pem.clone();
            let admin = Client::member(API, &ca_pem, Some(&with_key(&boot.admin, &admin_key)));

            // Credentials for the walk.
            let mut role_clients = Vec::new();
            for role in [api::Role::Reader, api::Role::Operator] {
                let key = csr(&format!("user-{role}"));
                let issued: IssuedCertificate = admin
                    .json(
                        "POST",
                        "/v1/certs",
                        Some(&serde_json::json!({
                            "name": format!("user-{role}"),
                            "role": role,
                            "ttl_s": 3600,
                            "csr_pem": key.csr_pem,
                        })),
                    )
                    .await;
                assert_eq!(issued.ca_fingerprint, boot.admin.ca_fingerprint);
                role_clients.push((role, Client::member(API, &ca_pem, Some(&with_key(&issued, &key)))));
            }
            let ca = pki::store::PkiStore::new(state.join("pki")).load_ca().unwrap();
            let long_ago = SystemTime::now() - Duration::from_secs(400 * 24 * 3600);
            let expired = ca
                .issue_client(
                    &SubjectName::try_from("old").unwrap(),
                    pki::Role::Admin,
                    Duration::from_secs(24 * 3600),
                    long_ago,
                )
                .unwrap();
            let other_ca = pki::CertificateAuthority::create(
                &SubjectName::try_from("lab").unwrap(),
                SystemTime::now(),
            )
            .unwrap();
            let foreign = other_ca
                .issue_client(
                    &SubjectName::try_from("alice").unwrap(),
                    pki::Role::Admin,
                    Duration::from_secs(3600),
                    SystemTime::now(),
                )
                .unwrap();
            let node_cert = ca
                .issue_node(
                    &pki::NodeCertRequest {
                        name: SubjectName::try_from("peer").unwrap(),
                        dns_names: vec!["peer".into()],
                        ip_addresses: vec![],
                    },
                    SystemTime::now(),
                )
                .unwrap();
            let refused = [
                ("no certificate", Client::member(API, &ca_pem, None), ErrorCode::ClientCertificateRequired),
                ("another CA", Client::member(API, &ca_pem, Some(&foreign)), ErrorCode::InvalidClientCertificate),
                ("expired", Client::member(API, &ca_pem, Some(&expired)), ErrorCode::InvalidClientCertificate),
                ("node certificate", Client::member(API, &ca_pem, Some(&node_cert)), ErrorCode::RoleTooLow),
            ];

            for Documented { method, path, access, role } in documented_operations() {
                let body = Some(serde_json::json!({}));
                if access == "join_token" {
                    // Open to nodes without a certificate; the token in the
                    // body is the credential.
                    let (status, text) = refused[0].1.call(&method, &path, body.as_ref()).await;
                    assert_eq!(error_of(status, &text).code, ErrorCode::BadRequest, "{path}: {text}");
                    continue;
                }
                for (what, client, code) in &refused {
                    let (status, text) = client.call(&method, &path, body.as_ref()).await;
                    assert_eq!(error_of(status, &text).code, *code, "{what} on {method} {path}");
                }
                let needed = role.unwrap_or(api::Role::Admin);
                for (have, client) in &role_clients {
                    let (status, text) = client.call(&method, &path, body.as_ref()).await;
                    if have.allows(needed) {
                        assert!(status != 401 && status != 403, "{have} on {method} {path}: {text}");
                    } else {
                        assert_eq!(error_of(status, &text).code, ErrorCode::RoleTooLow, "{have} on {path}");
                    }
                    if *have == api::Role::Reader && method != "GET" {
                        assert_eq!(status, 403, "reader on mutating {method} {path}");
                    }
                }
                let (status, text) = admin.call(&method, &path, body.as_ref()).await;
                assert!(status != 401 && status != 403, "admin on {method} {path}: {status} {text}");
            }

            // What the routes do.
            let reader = &role_clients[0].1;
            let operator = &role_clients[1].1;
            let info: NodeInfo = reader.json("GET", "/v1/node", None).await;
            assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
            assert_eq!(info.boot.counter, "indeterminate");
            assert_eq!(info.boot.tries_left, Some(2));
            assert_eq!(info.cluster.as_ref().unwrap().name, "lab");
            assert!(info.certificates.iter().any(|c| c.purpose == "node"), "{info:?}");

            let shown: MachineConfigDocument = reader.json("GET", "/v1/node/config", None).await;
            assert!(!shown.toml.contains(SETUP_TOKEN), "{}", shown.toml);
            assert_eq!(shown.redacted, ["cluster.setup-token"]);

            let (status, text) = operator
                .call(
                    "PUT",
                    "/v1/node/config",
                    Some(&serde_json::json!({"toml": "[node]\nhostname = \"bad_name\"\n"})),
                )
                .await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::InvalidConfig);
            assert!(error.message.contains("node.hostname"), "{}", error.message);
            let dry: ApplyConfigResponse = operator
                .json(
                    "PUT",
                    "/v1/node/config",
                    Some(&serde_json::json!({"toml": "[node]\nhostname = \"n2\"\n", "dry_run": true})),
                )
                .await;
            assert!(!dry.applied);
            assert_eq!(dry.changed, ["node", "cluster"]);
            let applied: ApplyConfigResponse = operator
                .json(
                    "PUT",
                    "/v1/node/config",
                    Some(&serde_json::json!({"toml": "[node]\nhostname = \"n2\"\n"})),
                )
                .await;
            assert!(applied.applied);
            assert_eq!(
                std::fs::read_to_string(state.join("config.toml")).unwrap(),
                "[node]\nhostname = \"n2\"\n"
            );
            let mut renamed = false;
            for _ in 0..100 {
                let info: NodeInfo = reader.json("GET", "/v1/node", None).await;
                if info.name == "n2" {
                    renamed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(renamed, "the applied host name takes effect");
            // The node certificate no longer names the node: it is
            // reissued under the new name, from the same CA.
            let mut reissued = None;
            for _ in 0..100 {
                let info: NodeInfo = reader.json("GET", "/v1/node", None).await;
                if let Some(node) = info.certificates.iter().find(|c| c.purpose == "node" && c.subject == "n2") {
                    reissued = Some(node.clone());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let reissued = reissued.expect("the node certificate is renewed under the new name");
            let on_disk = std::fs::read_to_string(state.join("pki").join(pki::store::NODE_CERT_FILE)).unwrap();
            let der = CertificateDer::from_pem_slice(on_disk.as_bytes()).unwrap();
            assert_eq!(pki::Fingerprint::of_der(&der).to_string(), reissued.fingerprint);

            let (status, text) = admin
                .call(
                    "POST",
                    "/v1/certs",
                    Some(&serde_json::json!({"name": "x", "role": "reader", "ttl_s": 1, "csr_pem": "x"})),
                )
                .await;
            assert!(error_of(status, &text).message.contains("ttl_s"), "{text}");

            // Logs: what is written comes back, and a follower sees new
            // entries as they are written.
            journal.log(LogSource::Init, LogLevel::Info, "first line from init");
            journal.flush().await.unwrap();
            let (status, text) = reader.call("GET", "/v1/node/logs", None).await;
            assert_eq!(status, 200, "{text}");
            let entries: Vec<LogEntry> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(
                entries.iter().any(|e| e.message == "first line from init" && e.source == LogSource::Init),
                "{text}"
            );
            let (status, text) = reader.call("GET", "/v1/node/logs?boot=-5", None).await;
            assert!(error_of(status, &text).message.contains("not kept"), "{text}");
            let mut follow = reader.stream("/v1/node/logs?follow=true&tail=1").await;
            journal.log(LogSource::Cairnd, LogLevel::Warn, "second line, live");
            let mut seen = String::new();
            tokio::time::timeout(Duration::from_secs(10), async {
                while !seen.contains("second line, live") {
                    let frame = follow.frame().await.unwrap().unwrap();
                    if let Ok(data) = frame.into_data() {
                        seen.push_str(&String::from_utf8_lossy(&data));
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("the follower never saw the new line: {seen}"));
            assert!(seen.contains("first line from init"), "tail=1 starts with history: {seen}");
            drop(follow);
            let dmesg: KernelLog = reader.json("GET", "/v1/node/dmesg", None).await;
            assert!(!dmesg.entries.is_empty());

            // The walk asked for a reboot and a power-off as operator and
            // admin, and for an agent restart as admin; each reached init.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let calls = init.calls.lock().unwrap().clone();
            assert_eq!(calls.iter().filter(|c| **c == "Reboot").count(), 2, "{calls:?}");
            assert_eq!(calls.iter().filter(|c| **c == "PowerOff").count(), 2, "{calls:?}");
            assert_eq!(calls.iter().filter(|c| **c == "RestartAgent").count(), 1, "{calls:?}");

            agent.stop().await;

            // A restarted agent is still the same cluster member.
            let agent = RunningAgent::start(options(&node)).await;
            wait_for_api(&admin).await;
            let again: NodeInfo = admin.json("GET", "/v1/node", None).await;
            assert_eq!(
                again.cluster.unwrap().ca_fingerprint,
                boot.admin.ca_fingerprint
            );
            let (status, text) = admin
                .call("POST", "/v1/cluster/bootstrap", Some(&bootstrap(SETUP_TOKEN)))
                .await;
            assert_eq!(error_of(status, &text).code, ErrorCode::AlreadyMember);
            agent.stop().await;
        });
    });
}

#[test]
fn node_info_does_not_wait_for_a_stuck_init() {
    in_fresh_netns(|| {
        let node = TestNode::prepare();
        let dir = &node.dir;
        runtime().block_on(async {
            // An init that accepts connections and never says a word.
            let listener = tokio::net::UnixListener::bind(dir.path().join("init.sock")).unwrap();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((stream, _)) = listener.accept().await {
                    held.push(stream);
                }
            });
            let agent = RunningAgent::start(options(&node)).await;
            let anyone = Client::maintenance(API);
            wait_for_api(&anyone).await;
            let key = csr("alice");
            let boot: BootstrapResponse = anyone
                .json(
                    "POST",
                    "/v1/cluster/bootstrap",
                    Some(&serde_json::json!({
                        "setup_token": SETUP_TOKEN,
                        "admin_name": "alice",
                        "admin_csr_pem": key.csr_pem,
                    })),
                )
                .await;
            let admin = Client::member(API, &boot.admin.ca_pem, Some(&with_key(&boot.admin, &key)));
            let asked = std::time::Instant::now();
            let info: NodeInfo = admin.json("GET", "/v1/node", None).await;
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "{:?}",
                asked.elapsed()
            );
            assert_eq!(info.boot.counter, "unknown");
            let (status, text) = admin.call("POST", "/v1/node/reboot", None).await;
            assert_eq!(
                error_of(status, &text).code,
                ErrorCode::Unavailable,
                "{text}"
            );
            agent.stop().await;
        });
    });
}
