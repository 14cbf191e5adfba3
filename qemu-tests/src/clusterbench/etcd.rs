//! Three etcd members (Debian's `etcd-server`) with the durability and
//! security the Cairn cluster has: every member a voter, the WAL fsynced
//! (etcd's default), TLS with client certificates on the client port
//! (`--client-cert-auth`) and on the peer port (`--peer-client-cert-auth`).
//!
//! The certificates come from the cluster crate's PKI, the same code that
//! makes Cairn's: a CA, one certificate per member with its loopback
//! address and `localhost`, and a client certificate for the bench. Member
//! `n` listens on `127.0.0.<n>:2379` (clients) and `:2380` (peers) and
//! keeps its data in `<root>/etcd-<n>`. Clients speak etcd's v3 JSON
//! gateway over HTTP/1.1 on the client port.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cluster::pki::{CertificateAuthority, NodeCertRequest, Role, SubjectName};
use rustls::ClientConfig;
use serde::Deserialize;

use super::kv::{KvConnection, System};
use super::node::{ClusterError, MemberProcess, member_ip};
use crate::apibench::client;
use crate::apibench::sandbox::BenchNamespace;
use crate::tools::Tool;

/// The program and its package.
pub const ETCD: Tool = Tool {
    program: "etcd",
    package: "etcd-server",
};
/// Client port.
pub const CLIENT_PORT: u16 = 2379;
/// Peer port.
pub const PEER_PORT: u16 = 2380;

const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);
const PROBE_KEY: &str = "bench-probe";

/// A 3-member etcd cluster.
#[derive(Debug)]
pub struct EtcdCluster<'ns> {
    ns: &'ns BenchNamespace,
    binary: PathBuf,
    nodes: Vec<EtcdNode>,
    client: Arc<ClientConfig>,
    /// Member ids (from each member's status), once known.
    ids: Vec<Option<String>>,
    ca_file: PathBuf,
}

#[derive(Debug)]
struct EtcdNode {
    data: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    process: MemberProcess,
}

#[derive(Deserialize)]
struct StatusResponse {
    header: StatusHeader,
    #[serde(default)]
    leader: Option<String>,
}

#[derive(Deserialize)]
struct StatusHeader {
    member_id: String,
}

impl<'ns> EtcdCluster<'ns> {
    /// Makes the PKI and data directories under `root`; starts nothing.
    ///
    /// # Errors
    /// [`ClusterError`] if certificates or files cannot be made.
    pub fn prepare(
        ns: &'ns BenchNamespace,
        binary: &Path,
        root: &Path,
        log_dir: &Path,
        size: usize,
    ) -> Result<Self, ClusterError> {
        let tls = |e: &dyn std::error::Error| ClusterError::Tls(e.to_string());
        let now = SystemTime::now();
        let pki = root.join("etcd-pki");
        std::fs::create_dir_all(&pki).map_err(ClusterError::io("creating the etcd PKI dir"))?;
        let ca_name = SubjectName::try_from("etcd-bench").map_err(|e| tls(&e))?;
        let ca = CertificateAuthority::create(&ca_name, now).map_err(|e| tls(&e))?;
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text)
                .map_err(ClusterError::io(format!("writing {}", path.display())))
        };
        let ca_file = pki.join("ca.pem");
        write(&ca_file, ca.cert_pem())?;
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let name = format!("etcd-{}", i + 1);
            let subject = SubjectName::try_from(name.as_str()).map_err(|e| tls(&e))?;
            let issued = ca
                .issue_node(
                    &NodeCertRequest {
                        name: subject,
                        dns_names: vec!["localhost".into()],
                        ip_addresses: vec![IpAddr::V4(member_ip(i))],
                    },
                    now,
                )
                .map_err(|e| tls(&e))?;
            let cert = pki.join(format!("{name}.pem"));
            let key = pki.join(format!("{name}-key.pem"));
            write(&cert, &issued.cert_pem)?;
            write(&key, &issued.key_pem)?;
            nodes.push(EtcdNode {
                data: root.join(&name),
                cert,
                key,
                process: MemberProcess::new(name.clone(), log_dir.join(format!("{name}.log"))),
            });
        }
        let user = SubjectName::try_from("bench").map_err(|e| tls(&e))?;
        let identity = ca
            .issue_client(&user, Role::Admin, Duration::from_secs(24 * 3600), now)
            .map_err(|e| tls(&e))?;
        let client = client::member_config(ca.cert_pem(), &identity)
            .map_err(|e| ClusterError::Tls(crate::report(&e)))?;
        Ok(Self {
            ns,
            binary: binary.to_path_buf(),
            ids: vec![None; nodes.len()],
            nodes,
            client,
            ca_file,
        })
    }

    /// Member `i`'s client address.
    #[must_use]
    pub fn client_addr(i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(member_ip(i)), CLIENT_PORT)
    }

    /// Every member's client address, in member order.
    #[must_use]
    pub fn members(&self) -> Vec<SocketAddr> {
        (0..self.nodes.len()).map(Self::client_addr).collect()
    }

    /// The bench's client configuration.
    #[must_use]
    pub fn client(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }

    /// Member `i`'s name.
    #[must_use]
    pub fn name(&self, i: usize) -> &str {
        self.nodes.get(i).map_or("", |n| n.process.name())
    }

    /// Member `i`'s data directory.
    #[must_use]
    pub fn data_dir(&self, i: usize) -> Option<&Path> {
        self.nodes.get(i).map(|n| n.data.as_path())
    }

    /// Pids of the running members.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.process.pid()).collect()
    }

    fn initial_cluster(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("{}=https://{}:{PEER_PORT}", self.name(i), member_ip(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (on its existing data, if any).
    ///
    /// # Errors
    /// [`ClusterError`] if it cannot be spawned.
    pub fn start(&mut self, i: usize) -> Result<(), ClusterError> {
        let initial = self.initial_cluster();
        let mut command = self.ns.command(&self.binary);
        let node = self
            .nodes
            .get_mut(i)
            .ok_or_else(|| ClusterError::State(format!("no member {i}")))?;
        let ip = member_ip(i);
        let client_url = format!("https://{ip}:{CLIENT_PORT}");
        let peer_url = format!("https://{ip}:{PEER_PORT}");
        command
            .arg("--name")
            .arg(node.process.name())
            .arg("--data-dir")
            .arg(&node.data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "cairn-cluster-bench"])
            .arg("--cert-file")
            .arg(&node.cert)
            .arg("--key-file")
            .arg(&node.key)
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(&self.ca_file)
            .arg("--peer-cert-file")
            .arg(&node.cert)
            .arg("--peer-key-file")
            .arg(&node.key)
            .arg("--peer-client-cert-auth")
            .arg("--peer-trusted-ca-file")
            .arg(&self.ca_file)
            // etcd's defaults, spelled out: the bench compares durable
            // stores (the WAL is fsynced on every commit either way).
            .args(["--snapshot-count", "100000"]);
        node.process.start(command)
    }

    /// SIGKILLs member `i`.
    ///
    /// # Errors
    /// [`ClusterError::State`] if it is not running.
    pub fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        self.nodes
            .get_mut(i)
            .ok_or_else(|| ClusterError::State(format!("no member {i}")))?
            .process
            .kill()
    }

    /// Stops every member gracefully.
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.process.stop();
        }
    }

    fn check_running(&mut self) -> Result<(), ClusterError> {
        for node in &mut self.nodes {
            if node.process.is_running() {
                node.process.check_running()?;
            }
        }
        Ok(())
    }

    async fn status(&self, i: usize) -> Result<StatusResponse, ClusterError> {
        let what = format!("POST /v3/maintenance/status on {}", self.name(i));
        let (status, body) = client::call(
            &self.client,
            Self::client_addr(i),
            "POST",
            "/v3/maintenance/status",
            Some(b"{}"),
            CALL_TIMEOUT,
        )
        .await
        .map_err(ClusterError::request(what.clone()))?;
        if status != 200 {
            return Err(ClusterError::Refused {
                what,
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        serde_json::from_slice(&body).map_err(ClusterError::decode(what))
    }

    /// Starts every member and waits until they have a leader and each
    /// answers a linearizable read.
    ///
    /// # Errors
    /// [`ClusterError`] naming what did not happen.
    pub async fn form(&mut self, limit: Duration) -> Result<(), ClusterError> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        self.wait_converged(limit).await
    }

    /// The index of the leader, as the first running member says.
    ///
    /// # Errors
    /// [`ClusterError`] if no member names a known leader.
    pub async fn leader(&self) -> Result<usize, ClusterError> {
        let mut last = String::from("no member is running");
        for i in 0..self.nodes.len() {
            if !self.nodes[i].process.is_running() {
                continue;
            }
            match self.status(i).await {
                Ok(StatusResponse {
                    leader: Some(leader),
                    ..
                }) if leader != "0" => {
                    if let Some(index) = self
                        .ids
                        .iter()
                        .position(|id| id.as_deref() == Some(&leader))
                    {
                        return Ok(index);
                    }
                    last = format!("leader id {leader} is not a known member id");
                }
                Ok(_) => last = format!("{} knows no leader", self.name(i)),
                Err(e) => last = crate::report(&e),
            }
        }
        Err(ClusterError::State(last))
    }

    /// Waits until every member runs, knows its id and a leader, and
    /// answers a linearizable read.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] with the last thing that was not right.
    pub async fn wait_converged(&mut self, limit: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + crate::timeout(limit);
        loop {
            self.check_running()?;
            let last = match self.converged().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    what: "the etcd cluster converging (a leader, reads everywhere)".into(),
                    limit,
                    detail: last,
                });
            }
            tokio::time::sleep(POLL * 2).await;
        }
    }

    async fn converged(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].process.is_running() {
                return Err(format!("{} is not running", self.name(i)));
            }
            let status = self.status(i).await.map_err(|e| crate::report(&e))?;
            if status.leader.as_deref().is_none_or(|l| l == "0") {
                return Err(format!("{} knows no leader", self.name(i)));
            }
            self.ids[i] = Some(status.header.member_id);
        }
        self.leader().await.map_err(|e| crate::report(&e))?;
        for (i, addr) in self.members().into_iter().enumerate() {
            let mut connection = KvConnection::new(System::Etcd, Arc::clone(&self.client), addr);
            connection
                .get(PROBE_KEY, CALL_TIMEOUT)
                .await
                .map_err(|e| format!("a read through {}: {}", self.name(i), crate::report(&e)))?;
        }
        Ok(())
    }

    /// Starts member `i` again on its data and waits until the cluster has
    /// converged with it.
    ///
    /// # Errors
    /// [`ClusterError`] if it does not come back.
    pub async fn restart(&mut self, i: usize, limit: Duration) -> Result<(), ClusterError> {
        self.start(i)?;
        self.wait_converged(limit).await
    }
}

/// `etcd --version`'s first line, e.g. `etcd Version: 3.4.23`.
#[must_use]
pub fn version(binary: &Path) -> String {
    std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_default()
}
