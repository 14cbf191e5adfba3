//! Three real cairnd processes formed into one cluster over the API.
//!
//! Member `n` (1-based) is `bench-<n>`: its API on `127.0.0.<n>:7443`, its
//! Raft peer port on `127.0.0.<n>:7444`, its health port on
//! `127.0.0.<n>:7480`, its state in `<root>/node-<n>`, and a veth `cn<n>`
//! with a static address so its network is configured at once. The
//! cluster forms the way an operator forms one: member 1 is bootstrapped
//! with its setup token (pinning the self-signed maintenance certificate
//! by the fingerprint it prints), the admin asks it for a join token, and
//! members 2 and 3 are told to join with their own setup tokens; the
//! leader promotes them to voters once they have caught up.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::types::{BootstrapResponse, ClusterStatus, CreatedToken, MemberRole, MemberState};
use cluster::pki::{self, Fingerprint, IssuedCert, SubjectName};
use rustls::ClientConfig;

use super::kv::System;
use super::node::{
    Call, ClusterError, Member, MemberProcess, MemberSet, Patience, add_veth, call_json, member_ip,
};
use crate::apibench::client;
use crate::apibench::sandbox::BenchNamespace;

/// The API port every member uses on its own address.
pub const API_PORT: u16 = 7443;
/// The Raft peer port.
pub const PEER_PORT: u16 = 7444;
/// The health port.
pub const HEALTH_PORT: u16 = 7480;

const FINGERPRINT_LINE: &str = "cairnd: certificate fingerprint: ";
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// cairnd prints its fingerprint within a second or two; a debug build
/// on a loaded 2-core machine gets more.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const FORM_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);
/// The key whose read proves a member serves linearizable reads.
const PROBE_KEY: &str = "bench-probe";

/// A 3-node (or larger) Cairn cluster of cairnd processes.
#[derive(Debug)]
pub struct CairnCluster<'ns> {
    ns: &'ns BenchNamespace,
    binary: PathBuf,
    setup_token: String,
    nodes: MemberSet<CairnFiles>,
    admin: Option<Arc<ClientConfig>>,
}

/// What member `i` starts from: its state directory (machine config,
/// `raft/`, keys).
#[derive(Debug)]
pub struct CairnFiles {
    state: PathBuf,
}

impl<'ns> CairnCluster<'ns> {
    /// Prepares `size` members' state directories under `root` (logs in
    /// `log_dir`) and their links in `ns`; starts nothing.
    ///
    /// # Errors
    /// [`ClusterError`] if a directory, config or link cannot be made.
    pub fn prepare(
        ns: &'ns BenchNamespace,
        binary: &Path,
        root: &Path,
        log_dir: &Path,
        size: usize,
    ) -> Result<Self, ClusterError> {
        let setup_token = format!("cluster-bench-setup-{}", std::process::id());
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let n = i + 1;
            let name = format!("bench-{n}");
            let state = root.join(format!("node-{n}"));
            std::fs::create_dir_all(&state)
                .map_err(ClusterError::io(format!("creating {}", state.display())))?;
            let link = format!("cn{n}");
            add_veth(ns, &link, &format!("cn{n}p"))?;
            let config = format!(
                "[node]\nhostname = \"{name}\"\n\n[cluster]\nsetup-token = \"{setup_token}\"\n\n\
                 [[network.interfaces]]\nname = \"{link}\"\naddresses = [\"10.254.{}.1/24\"]\n",
                80 + i
            );
            let path = state.join("config.toml");
            std::fs::write(&path, config)
                .map_err(ClusterError::io(format!("writing {}", path.display())))?;
            nodes.push(Member {
                process: MemberProcess::new(name.clone(), log_dir.join(format!("{name}.log"))),
                files: CairnFiles { state },
            });
        }
        Ok(Self {
            ns,
            binary: binary.to_path_buf(),
            setup_token,
            nodes: MemberSet::new(nodes),
            admin: None,
        })
    }

    /// The members.
    #[must_use]
    pub fn nodes(&self) -> &MemberSet<CairnFiles> {
        &self.nodes
    }

    /// The members, to kill or stop.
    pub fn nodes_mut(&mut self) -> &mut MemberSet<CairnFiles> {
        &mut self.nodes
    }

    /// Member `i`'s API address.
    #[must_use]
    pub fn api_addr(i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(member_ip(i)), API_PORT)
    }

    /// Every member's API address, in member order.
    #[must_use]
    pub fn members(&self) -> Vec<SocketAddr> {
        (0..self.nodes.len()).map(Self::api_addr).collect()
    }

    /// Member `i`'s name.
    #[must_use]
    pub fn name(&self, i: usize) -> &str {
        self.nodes.name(i)
    }

    /// Member `i`'s state directory.
    #[must_use]
    pub fn state_dir(&self, i: usize) -> Option<&Path> {
        self.nodes.files(i).map(|f| f.state.as_path())
    }

    /// The admin's client configuration (after [`CairnCluster::form`]).
    ///
    /// # Errors
    /// [`ClusterError::State`] before the cluster is formed.
    pub fn admin(&self) -> Result<Arc<ClientConfig>, ClusterError> {
        self.admin
            .clone()
            .ok_or_else(|| ClusterError::State("the Cairn cluster is not formed yet".into()))
    }

    /// Starts member `i` on its state directory.
    ///
    /// # Errors
    /// [`ClusterError`] if it cannot be spawned.
    pub fn start(&mut self, i: usize) -> Result<(), ClusterError> {
        let ip = member_ip(i);
        let mut command = self.ns.command(&self.binary);
        let Member { process, files } = self.nodes.get_mut(i)?;
        command
            .env("CAIRN_STATE_DIR", &files.state)
            .env("CAIRN_API_ADDR", format!("{ip}:{API_PORT}"))
            .env("CAIRN_PEER_ADDR", format!("{ip}:{PEER_PORT}"))
            .env("CAIRN_HEALTH_ADDR", format!("{ip}:{HEALTH_PORT}"))
            // Nothing answers there: node info then reports the boot entry
            // as unknown, which nothing here reads.
            .env("CAIRN_INIT_SOCKET", files.state.join("no-init.sock"));
        process.start(command)
    }

    async fn wait_fingerprint(&mut self, i: usize) -> Result<Fingerprint, ClusterError> {
        let patience = Patience::new(
            format!("{} printing its certificate fingerprint", self.name(i)),
            START_TIMEOUT,
        );
        loop {
            let process = &mut self.nodes.get_mut(i)?.process;
            process.check_running()?;
            let text = process.log_since_start();
            if let Some(line) = text.lines().find_map(|l| l.strip_prefix(FINGERPRINT_LINE)) {
                return line.trim().parse().map_err(|e| {
                    ClusterError::State(format!(
                        "{} printed an unreadable fingerprint {line:?}: {e}",
                        process.name()
                    ))
                });
            }
            let tail = super::node::tail(process.log(), 20);
            patience.again(tail, POLL).await?;
        }
    }

    /// Starts every member, bootstraps member 1, joins the others with a
    /// join token, and waits until all are voters under one leader.
    ///
    /// # Errors
    /// [`ClusterError`] naming the step that failed.
    pub async fn form(&mut self) -> Result<(), ClusterError> {
        for i in 0..self.nodes.len() {
            self.start(i)?;
        }
        let mut fingerprints = Vec::with_capacity(self.nodes.len());
        for i in 0..self.nodes.len() {
            fingerprints.push(self.wait_fingerprint(i).await?);
        }
        let first = Self::api_addr(0);
        let admin = self.bootstrap(first, fingerprints[0]).await?;
        self.admin = Some(Arc::clone(&admin));
        let created: CreatedToken = retry_call(
            &admin,
            first,
            Call {
                method: "POST",
                path: "/v1/cluster/tokens",
                body: Some(b"{}"),
                what: "POST /v1/cluster/tokens",
            },
        )
        .await?;
        for (i, fingerprint) in fingerprints.iter().enumerate().skip(1) {
            let pinned = client::pinned_config(*fingerprint)
                .map_err(|e| ClusterError::Tls(e.to_string()))?;
            let body = serde_json::json!({
                "setup_token": self.setup_token,
                "cluster": first.to_string(),
                "token": created.token,
                "ca_hash": created.ca_hash,
            })
            .to_string();
            let what = format!("POST /v1/cluster/join on {}", self.name(i));
            let _: serde_json::Value = retry_call(
                &pinned,
                Self::api_addr(i),
                Call {
                    method: "POST",
                    path: "/v1/cluster/join",
                    body: Some(body.as_bytes()),
                    what: &what,
                },
            )
            .await?;
        }
        self.wait_converged(FORM_TIMEOUT).await
    }

    async fn bootstrap(
        &self,
        addr: SocketAddr,
        fingerprint: Fingerprint,
    ) -> Result<Arc<ClientConfig>, ClusterError> {
        let tls = |e: &dyn std::fmt::Display| ClusterError::Tls(e.to_string());
        let pinned = client::pinned_config(fingerprint).map_err(|e| tls(&e))?;
        let admin_name = SubjectName::try_from("bench-admin").map_err(|e| tls(&e))?;
        let admin_key = pki::client_csr(&admin_name).map_err(|e| tls(&e))?;
        let body = serde_json::json!({
            "setup_token": self.setup_token,
            "cluster_name": "bench",
            "admin_name": "bench-admin",
            "admin_csr_pem": admin_key.csr_pem,
        })
        .to_string();
        let boot: BootstrapResponse = retry_call(
            &pinned,
            addr,
            Call {
                method: "POST",
                path: "/v1/cluster/bootstrap",
                body: Some(body.as_bytes()),
                what: "POST /v1/cluster/bootstrap",
            },
        )
        .await?;
        client::member_config(
            &boot.admin.ca_pem,
            &IssuedCert {
                cert_pem: boot.admin.cert_pem,
                key_pem: admin_key.key_pem.clone(),
            },
        )
        .map_err(|e| tls(&crate::report(&e)))
    }

    /// `GET /v1/cluster` on member `i`.
    ///
    /// # Errors
    /// [`ClusterError`] if it does not answer with a status.
    pub async fn status(&self, i: usize) -> Result<ClusterStatus, ClusterError> {
        let admin = self.admin()?;
        call_json(
            &admin,
            Self::api_addr(i),
            Call {
                method: "GET",
                path: "/v1/cluster",
                body: None,
                what: "GET /v1/cluster",
            },
            CALL_TIMEOUT,
        )
        .await
    }

    /// The index of the leader, as the first running member that knows
    /// one says.
    ///
    /// # Errors
    /// [`ClusterError`] if no running member names a leader that is one of
    /// the members.
    pub async fn leader(&self) -> Result<usize, ClusterError> {
        let mut last = String::from("no member is running");
        for i in 0..self.nodes.len() {
            if !self.nodes.is_running(i) {
                continue;
            }
            match self.status(i).await {
                Ok(ClusterStatus {
                    leader: Some(name), ..
                }) => {
                    return self
                        .nodes
                        .position(&name)
                        .ok_or_else(|| ClusterError::State(format!("leader {name} is no member")));
                }
                Ok(_) => last = format!("{} knows no leader", self.name(i)),
                Err(e) => last = crate::report(&e),
            }
        }
        Err(ClusterError::State(last))
    }

    /// Waits until every member runs, the leader sees all of them as ready
    /// voters, and every member answers a linearizable read.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] with the last thing that was not right.
    pub async fn wait_converged(&mut self, limit: Duration) -> Result<(), ClusterError> {
        let admin = self.admin()?;
        let patience = Patience::new(
            "the Cairn cluster converging (all voters ready, reads everywhere)",
            limit,
        );
        loop {
            self.nodes.check_running()?;
            match self.converged(&admin).await {
                Ok(()) => return Ok(()),
                Err(last) => patience.again(last, POLL * 2).await?,
            }
        }
    }

    async fn converged(&self, admin: &Arc<ClientConfig>) -> Result<(), String> {
        if let Some(i) = (0..self.nodes.len()).find(|i| !self.nodes.is_running(*i)) {
            return Err(format!("{} is not running", self.name(i)));
        }
        let leader = self.leader().await.map_err(|e| crate::report(&e))?;
        let status = self.status(leader).await.map_err(|e| crate::report(&e))?;
        let ready = status
            .members
            .iter()
            .filter(|m| m.role == MemberRole::Voter && m.state == MemberState::Ready)
            .count();
        if ready != self.nodes.len() || status.members.len() != self.nodes.len() {
            return Err(format!(
                "the leader {} sees {} ready voters among {:?}",
                status.answered_by,
                ready,
                status
                    .members
                    .iter()
                    .map(|m| (m.name.as_str(), m.role, m.state))
                    .collect::<Vec<_>>()
            ));
        }
        self.nodes
            .read_through_each(
                System::Cairn,
                admin,
                &self.members(),
                PROBE_KEY,
                CALL_TIMEOUT,
            )
            .await
    }

    /// Starts member `i` again on its state and waits until the cluster
    /// has converged with it.
    ///
    /// # Errors
    /// [`ClusterError`] if it does not come back.
    pub async fn restart(&mut self, i: usize, limit: Duration) -> Result<(), ClusterError> {
        self.start(i)?;
        self.wait_converged(limit).await
    }
}

/// What cairnd keeps on disk, in words for the report: its defaults, read
/// from the cluster crate the measured cairnd is built from.
#[must_use]
pub fn keeps() -> String {
    let raft = cluster::raft::replica::ReplicaConfig::new(1);
    format!(
        "the latest value of each key and the last {} changes (at most {} MiB) for watches; \
         a snapshot every {} applied entries, the log compacted to {} entries behind it",
        cluster::store::state::HISTORY_EVENTS,
        cluster::store::state::HISTORY_BYTES / (1024 * 1024),
        raft.snapshot_interval,
        raft.log_tail
    )
}

/// A setup call retried while the connection fails (a listener not bound
/// yet, a node switching from its maintenance certificate to the cluster's)
/// or the cluster answers `no_leader`.
async fn retry_call<T: serde::de::DeserializeOwned>(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    call: Call<'_>,
) -> Result<T, ClusterError> {
    let deadline = Instant::now() + crate::timeout(START_TIMEOUT);
    loop {
        match call_json(config, addr, call, CALL_TIMEOUT).await {
            Err(ClusterError::Request { .. } | ClusterError::Refused { status: 503, .. })
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(POLL * 2).await;
            }
            other => return other,
        }
    }
}
