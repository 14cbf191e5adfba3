//! A cluster of real agents on one machine, for the namespace tests:
//! agent `i` listens on 127.0.0.`i` (API on 7443, Raft peers on 7444,
//! health on 7480) with its own state directory under the test's
//! directory, on its own thread in its own UTS namespace (so its own host
//! name `n<i>`, which is its node name). Run inside
//! [`super::in_fresh_netns`] with `lo` up.

use std::path::Path;
use std::time::{Duration, Instant};

use api::types::{BootstrapResponse, ClusterStatus, CreatedToken};
use nix::sched::{CloneFlags, unshare};
use nodeagent::agent::AgentOptions;
use nodeagent::apiserver::ApiOptions;
use nodeagent::config::ConfigPaths;
use nodeagent::member::MemberOptions;
use nodeagent::net::NetworkOptions;
use serde_json::json;

use super::api_client::{Client, csr, wait_for_api, with_key};

pub const SETUP_TOKEN: &str = "cluster-test-setup-token-0123";
/// Short enough for a test, long enough that a busy machine does not lose
/// a healthy voter.
pub const GRACE: &str = "6s";

pub fn api(i: u8) -> String {
    format!("127.0.0.{i}:7443")
}

/// One agent on its own thread, in the test's network namespace and its
/// own UTS namespace.
pub struct Agent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Agent {
    pub fn start(i: u8, dir: &Path) -> Self {
        Self::start_with(i, dir, "")
    }

    /// An agent whose machine config also has `extra` (TOML).
    pub fn start_with(i: u8, dir: &Path, extra: &str) -> Self {
        let options = options(i, dir, extra);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWUTS).unwrap();
            nix::unistd::sethostname(format!("n{i}")).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(nodeagent::agent::run_until(options, async move {
                    let _ = stopped.await;
                }))
                .unwrap();
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn options(i: u8, dir: &Path, extra: &str) -> AgentOptions {
    let node = dir.join(format!("n{i}"));
    let state = node.join("state");
    std::fs::create_dir_all(node.join("sys")).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(node.join("cmdline"), "quiet\n").unwrap();
    std::fs::write(
        state.join("config.toml"),
        format!(
            "[node]\nhostname = \"n{i}\"\n\n[cluster]\nsetup-token = \"{SETUP_TOKEN}\"\ngrace = \"{GRACE}\"\nfailure-domain = \"rack-{i}\"\n{extra}"
        ),
    )
    .unwrap();
    AgentOptions {
        config_paths: ConfigPaths {
            applied: state.join("config.toml"),
            cmdline: node.join("cmdline"),
            esp: node.join("efi/cairn/config.toml"),
            fw_cfg: node.join("fw_cfg/raw"),
        },
        network: NetworkOptions {
            sysfs_net: node.join("sys"),
            resolv_conf: node.join("resolv.conf"),
            ..NetworkOptions::default()
        },
        health_addr: format!("127.0.0.{i}:7480").parse().unwrap(),
        api: ApiOptions {
            addr: api(i).parse().unwrap(),
            init_socket: node.join("init.sock"),
            network_wait: Duration::ZERO,
            member: MemberOptions {
                peer_addr: format!("127.0.0.{i}:7444").parse().unwrap(),
                ..MemberOptions::under(&state)
            },
            ..ApiOptions::under(&state)
        },
        ..AgentOptions::default()
    }
}

/// Polls the cluster status through `client` until `done` holds.
pub async fn wait_for_status(
    client: &Client,
    what: &str,
    limit: Duration,
    done: impl Fn(&ClusterStatus) -> bool,
) -> ClusterStatus {
    let deadline = Instant::now() + limit;
    let mut last = None;
    while Instant::now() < deadline {
        let (status, text) = client.call("GET", "/v1/cluster", None).await;
        if status == 200 {
            let parsed: ClusterStatus = serde_json::from_str(&text).unwrap();
            if done(&parsed) {
                return parsed;
            }
            last = Some(parsed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting for {what}; last status: {last:#?}");
}

pub async fn join(node: u8, token: &CreatedToken) -> (u16, String) {
    Client::maintenance(&api(node))
        .call(
            "POST",
            "/v1/cluster/join",
            Some(&json!({
                "setup_token": SETUP_TOKEN,
                "cluster": api(1),
                "token": token.token,
                "ca_hash": token.ca_hash,
            })),
        )
        .await
}

pub async fn bootstrap_first(name: &str) -> Client {
    wait_for_api(&Client::maintenance(&api(1))).await;
    let key = csr("alice");
    let boot: BootstrapResponse = Client::maintenance(&api(1))
        .json(
            "POST",
            "/v1/cluster/bootstrap",
            Some(&json!({
                "setup_token": SETUP_TOKEN,
                "cluster_name": name,
                "admin_name": "alice",
                "admin_csr_pem": key.csr_pem,
            })),
        )
        .await;
    let admin = Client::member(
        &api(1),
        &boot.admin.ca_pem,
        Some(&with_key(&boot.admin, &key)),
    );
    wait_for_status(&admin, "n1 to lead", Duration::from_secs(20), |s| {
        s.leader.as_deref() == Some("n1")
    })
    .await;
    admin
}
