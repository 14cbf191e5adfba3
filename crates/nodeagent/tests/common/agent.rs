//! A real agent for API tests: a throwaway node directory, the agent
//! running on 127.0.0.1 inside the test's network namespace, and a
//! bootstrapped cluster with an admin client.

use std::path::PathBuf;
use std::time::Duration;

use api::types::BootstrapResponse;
use nodeagent::agent::AgentOptions;
use nodeagent::apiserver::ApiOptions;
use nodeagent::config::ConfigPaths;
use nodeagent::journal::Journal;
use nodeagent::net::NetworkOptions;
use serde_json::json;

use super::api_client::{Client, csr, wait_for_api, with_key};

/// Where the agent serves its API.
pub const API: &str = "127.0.0.1:7443";
/// The setup token the node's config holds.
pub const SETUP_TOKEN: &str = "test-setup-token-0123456789";

/// A node's directory: fake sysfs and command line, STATE with a config
/// naming [`SETUP_TOKEN`], and the journal.
pub struct TestNode {
    /// Removed when the test ends.
    pub dir: tempfile::TempDir,
    /// The state directory (`/var/lib/cairn` on a node).
    pub state: PathBuf,
    /// The system log.
    pub journal: Journal,
}

impl TestNode {
    /// Sets the directory up; call inside the test's network namespace.
    pub fn prepare() -> Self {
        super::ip("link set lo up");
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(
            state.join("config.toml"),
            format!("[cluster]\nsetup-token = \"{SETUP_TOKEN}\"\n"),
        )
        .unwrap();
        let journal = nodeagent::open_journal(&state.join("logs")).expect("journal opens");
        Self {
            dir,
            state,
            journal,
        }
    }

    /// The agent's options for this node.
    pub fn options(&self) -> AgentOptions {
        let dir = self.dir.path();
        std::fs::create_dir_all(dir.join("sys")).unwrap();
        std::fs::write(dir.join("cmdline"), "quiet\n").unwrap();
        AgentOptions {
            config_paths: ConfigPaths {
                cmdline: dir.join("cmdline"),
                esp: dir.join("efi/cairn/config.toml"),
                fw_cfg: dir.join("fw_cfg/raw"),
                applied: self.state.join("config.toml"),
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
                ..ApiOptions::under(&self.state)
            },
            journal: Some(self.journal.clone()),
            ..AgentOptions::default()
        }
    }

    /// A path inside the node's directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }
}

/// An agent running on the test's runtime.
pub struct RunningAgent {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), nodeagent::agent::AgentError>>,
}

impl RunningAgent {
    /// Starts the agent with `options` and waits until its API answers.
    pub async fn start(options: AgentOptions) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(nodeagent::agent::run_until(options, async move {
            let _ = stopped.await;
        }));
        wait_for_api(&Client::maintenance(API)).await;
        Self { stop, task }
    }

    /// Stops it and requires a clean exit within 5 s.
    pub async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("agent stops")
            .unwrap()
            .unwrap();
    }
}

/// Bootstraps the node at [`API`] with the setup token and returns an
/// admin client of the new cluster.
pub async fn bootstrap() -> Client {
    let anyone = Client::maintenance(API);
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
    Client::member(
        API,
        &boot.admin.ca_pem,
        Some(&with_key(&boot.admin, &admin_key)),
    )
}
