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
//!
//! Disk: etcd's defaults bound the WAL (a snapshot every 100,000 entries,
//! then WAL files before it are purged beyond 5) but keep every revision of
//! every key; revision auto-compaction keeps the last
//! [`COMPACTION_RETENTION`] revisions, as much history as Cairn keeps for
//! watches. Compaction frees pages inside the bbolt file but never shrinks
//! it (only a defrag does, which an operator runs by hand; the bench does
//! not).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cluster::pki::{CertificateAuthority, NodeCertRequest, Role, SubjectName};
use rustls::ClientConfig;
use serde::Deserialize;

use super::kv::System;
use super::node::{
    Call, ClusterError, Member, MemberProcess, MemberSet, Patience, call_json, member_ip,
};
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

/// Applied entries between snapshots (etcd 3.4's default), after which
/// the WAL before the snapshot may be purged.
pub const SNAPSHOT_COUNT: u64 = 100_000;
/// WAL files and snapshot files kept (etcd's default for each).
pub const MAX_FILES: u32 = 5;
/// Revisions kept by revision auto-compaction: as many as the changes
/// Cairn keeps for watches.
pub const COMPACTION_RETENTION: usize = cluster::store::state::HISTORY_EVENTS;

/// What etcd 3.4 logs (either logger) when a compaction is done.
const COMPACTION_LINE: &str = "finished scheduled compaction";
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);
const PROBE_KEY: &str = "bench-probe";

/// A 3-member etcd cluster.
#[derive(Debug)]
pub struct EtcdCluster<'ns> {
    ns: &'ns BenchNamespace,
    binary: PathBuf,
    nodes: MemberSet<EtcdFiles>,
    client: Arc<ClientConfig>,
    /// Member ids (from each member's status), once known.
    ids: Vec<Option<String>>,
    ca_file: PathBuf,
}

/// What member `i` starts from: its data directory and certificate.
#[derive(Debug)]
pub struct EtcdFiles {
    data: PathBuf,
    cert: PathBuf,
    key: PathBuf,
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
            nodes.push(Member {
                process: MemberProcess::new(name.clone(), log_dir.join(format!("{name}.log"))),
                files: EtcdFiles {
                    data: root.join(&name),
                    cert,
                    key,
                },
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
            nodes: MemberSet::new(nodes),
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

    /// The members.
    #[must_use]
    pub fn nodes(&self) -> &MemberSet<EtcdFiles> {
        &self.nodes
    }

    /// The members, to kill or stop.
    pub fn nodes_mut(&mut self) -> &mut MemberSet<EtcdFiles> {
        &mut self.nodes
    }

    /// Member `i`'s name.
    #[must_use]
    pub fn name(&self, i: usize) -> &str {
        self.nodes.name(i)
    }

    /// Member `i`'s data directory.
    #[must_use]
    pub fn data_dir(&self, i: usize) -> Option<&Path> {
        self.nodes.files(i).map(|f| f.data.as_path())
    }

    fn initial_cluster(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("{}=https://{}:{PEER_PORT}", self.name(i), member_ip(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// History compactions member 1 has logged so far, over all its
    /// incarnations (every member compacts at the same revisions: the
    /// leader's compactor sends the compaction through Raft).
    #[must_use]
    pub fn compactions_logged(&self) -> u64 {
        self.nodes.get(0).map_or(0, |m| {
            let log = std::fs::read_to_string(m.process.log()).unwrap_or_default();
            u64::try_from(log.matches(COMPACTION_LINE).count()).unwrap_or(u64::MAX)
        })
    }

    /// Starts member `i` (on its existing data, if any).
    ///
    /// # Errors
    /// [`ClusterError`] if it cannot be spawned.
    pub fn start(&mut self, i: usize) -> Result<(), ClusterError> {
        let initial = self.initial_cluster();
        let mut command = self.ns.command(&self.binary);
        let ca_file = &self.ca_file;
        let Member { process, files } = self.nodes.get_mut(i)?;
        let ip = member_ip(i);
        let client_url = format!("https://{ip}:{CLIENT_PORT}");
        let peer_url = format!("https://{ip}:{PEER_PORT}");
        command
            .arg("--name")
            .arg(process.name())
            .arg("--data-dir")
            .arg(&files.data)
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "cairn-cluster-bench"])
            .arg("--cert-file")
            .arg(&files.cert)
            .arg("--key-file")
            .arg(&files.key)
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(ca_file)
            .arg("--peer-cert-file")
            .arg(&files.cert)
            .arg("--peer-key-file")
            .arg(&files.key)
            .arg("--peer-client-cert-auth")
            .arg("--peer-trusted-ca-file")
            .arg(ca_file)
            // etcd's defaults, spelled out: the bench compares durable
            // stores (the WAL is fsynced on every commit either way), and
            // these bound the WAL and snapshot files on disk.
            .args(["--snapshot-count", &SNAPSHOT_COUNT.to_string()])
            .args(["--max-wals", &MAX_FILES.to_string()])
            .args(["--max-snapshots", &MAX_FILES.to_string()])
            // Not a default: without it etcd keeps every revision forever.
            // With it, etcd keeps as much history as Cairn keeps for
            // watches (see `keeps`).
            .args(["--auto-compaction-mode", "revision"])
            .args([
                "--auto-compaction-retention",
                &COMPACTION_RETENTION.to_string(),
            ]);
        process.start(command)
    }

    async fn status(&self, i: usize) -> Result<StatusResponse, ClusterError> {
        let what = format!("POST /v3/maintenance/status on {}", self.name(i));
        let call = Call {
            method: "POST",
            path: "/v3/maintenance/status",
            body: Some(b"{}"),
            what: &what,
        };
        call_json(&self.client, Self::client_addr(i), call, CALL_TIMEOUT).await
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
            if !self.nodes.is_running(i) {
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
        let patience = Patience::new(
            "the etcd cluster converging (a leader, reads everywhere)",
            limit,
        );
        loop {
            self.nodes.check_running()?;
            match self.converged().await {
                Ok(()) => return Ok(()),
                Err(last) => patience.again(last, POLL * 2).await?,
            }
        }
    }

    async fn converged(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            if !self.nodes.is_running(i) {
                return Err(format!("{} is not running", self.name(i)));
            }
            let status = self.status(i).await.map_err(|e| crate::report(&e))?;
            if status.leader.as_deref().is_none_or(|l| l == "0") {
                return Err(format!("{} knows no leader", self.name(i)));
            }
            self.ids[i] = Some(status.header.member_id);
        }
        self.leader().await.map_err(|e| crate::report(&e))?;
        self.nodes
            .read_through_each(
                System::Etcd,
                &self.client,
                &self.members(),
                PROBE_KEY,
                CALL_TIMEOUT,
            )
            .await
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

/// What these members keep on disk, in words for the report.
#[must_use]
pub fn keeps() -> String {
    format!(
        "the last {COMPACTION_RETENTION} revisions (--auto-compaction-mode=revision \
         --auto-compaction-retention={COMPACTION_RETENTION}, applied every 5 minutes); \
         a snapshot every {SNAPSHOT_COUNT} entries (--snapshot-count), WAL files \
         a snapshot covers purged beyond {MAX_FILES} (--max-wals), {MAX_FILES} snapshot \
         files (--max-snapshots); the bbolt file is never defragmented"
    )
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
