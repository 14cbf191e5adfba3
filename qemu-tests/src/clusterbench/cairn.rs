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

use super::kv::{KvConnection, System};
use super::node::{ClusterError, MemberProcess, add_veth, member_ip};
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
    nodes: Vec<CairnNode>,
    admin: Option<Arc<ClientConfig>>,
}

#[derive(Debug)]
struct CairnNode {
    state: PathBuf,
    process: MemberProcess,
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
            nodes.push(CairnNode {
                state,
                process: MemberProcess::new(name.clone(), log_dir.join(format!("{name}.log"))),
            });
        }
        Ok(Self {
            ns,
            binary: binary.to_path_buf(),
            setup_token,
            nodes,
            admin: None,
        })
    }

    /// How many members there are.
    #[must_use]
    pub fn size(&self) -> usize {
        self.nodes.len()
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
        self.nodes.get(i).map_or("", |n| n.process.name())
    }

    /// Member `i`'s state directory.
    #[must_use]
    pub fn state_dir(&self, i: usize) -> Option<&Path> {
        self.nodes.get(i).map(|n| n.state.as_path())
    }

    /// Member `i`'s log.
    #[must_use]
    pub fn log(&self, i: usize) -> Option<&Path> {
        self.nodes.get(i).map(|n| n.process.log())
    }

    /// Pids of the running members.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.process.pid()).collect()
    }

    /// Whether member `i` is running.
    #[must_use]
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.process.is_running())
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

    fn node(&mut self, i: usize) -> Result<&mut CairnNode, ClusterError> {
        self.nodes
            .get_mut(i)
            .ok_or_else(|| ClusterError::State(format!("no member {i}")))
    }

    /// Starts member `i` on its state directory.
    ///
    /// # Errors
    /// [`ClusterError`] if it cannot be spawned.
    pub fn start(&mut self, i: usize) -> Result<(), ClusterError> {
        let ip = member_ip(i);
        let mut command = self.ns.command(&self.binary);
        let node = self
            .nodes
            .get_mut(i)
            .ok_or_else(|| ClusterError::State(format!("no member {i}")))?;
        command
            .env("CAIRN_STATE_DIR", &node.state)
            .env("CAIRN_API_ADDR", format!("{ip}:{API_PORT}"))
            .env("CAIRN_PEER_ADDR", format!("{ip}:{PEER_PORT}"))
            .env("CAIRN_HEALTH_ADDR", format!("{ip}:{HEALTH_PORT}"))
            // Nothing answers there: node info then reports the boot entry
            // as unknown, which nothing here reads.
            .env("CAIRN_INIT_SOCKET", node.state.join("no-init.sock"));
        node.process.start(command)
    }

    /// SIGKILLs member `i`.
    ///
    /// # Errors
    /// [`ClusterError::State`] if it is not running.
    pub fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        self.node(i)?.process.kill()
    }

    /// Stops every member gracefully.
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.process.stop();
        }
    }

    /// Fails if a member that should run has exited.
    ///
    /// # Errors
    /// [`ClusterError::Exited`] with its log tail.
    pub fn check_running(&mut self) -> Result<(), ClusterError> {
        for node in &mut self.nodes {
            if node.process.is_running() {
                node.process.check_running()?;
            }
        }
        Ok(())
    }

    async fn wait_fingerprint(&mut self, i: usize) -> Result<Fingerprint, ClusterError> {
        let deadline = Instant::now() + crate::timeout(START_TIMEOUT);
        loop {
            let node = self.node(i)?;
            node.process.check_running()?;
            let text = node.process.log_since_start();
            if let Some(line) = text.lines().find_map(|l| l.strip_prefix(FINGERPRINT_LINE)) {
                return line.trim().parse().map_err(|e| {
                    ClusterError::State(format!(
                        "{} printed an unreadable fingerprint {line:?}: {e}",
                        node.process.name()
                    ))
                });
            }
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    what: format!(
                        "{} printing its certificate fingerprint",
                        node.process.name()
                    ),
                    limit: START_TIMEOUT,
                    detail: super::node::tail(node.process.log(), 20),
                });
            }
            tokio::time::sleep(POLL).await;
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
            "POST",
            "/v1/cluster/tokens",
            Some(b"{}"),
            "POST /v1/cluster/tokens",
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
                "POST",
                "/v1/cluster/join",
                Some(body.as_bytes()),
                &what,
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
            "POST",
            "/v1/cluster/bootstrap",
            Some(body.as_bytes()),
            "POST /v1/cluster/bootstrap",
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
            "GET",
            "/v1/cluster",
            None,
            "GET /v1/cluster",
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
            if !self.is_running(i) {
                continue;
            }
            match self.status(i).await {
                Ok(ClusterStatus {
                    leader: Some(name), ..
                }) => {
                    return self
                        .nodes
                        .iter()
                        .position(|n| n.process.name() == name)
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
        let deadline = Instant::now() + crate::timeout(limit);
        loop {
            self.check_running()?;
            let last = match self.converged(&admin).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                return Err(ClusterError::Timeout {
                    what: "the Cairn cluster converging (all voters ready, reads everywhere)"
                        .into(),
                    limit,
                    detail: last,
                });
            }
            tokio::time::sleep(POLL * 2).await;
        }
    }

    async fn converged(&self, admin: &Arc<ClientConfig>) -> Result<(), String> {
        if let Some(i) = (0..self.nodes.len()).find(|i| !self.is_running(*i)) {
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
        for (i, addr) in self.members().into_iter().enumerate() {
            let mut connection = KvConnection::new(System::Cairn, Arc::clone(admin), addr);
            connection
                .get(PROBE_KEY, CALL_TIMEOUT)
                .await
                .map_err(|e| format!("a read through {}: {}", self.name(i), crate::report(&e)))?;
        }
        Ok(())
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

/// One setup call; the answer must be 200 with a `T` body.
async fn call_json<T: serde::de::DeserializeOwned>(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    what: &str,
) -> Result<T, ClusterError> {
    let (status, answer) = client::call(config, addr, method, path, body, CALL_TIMEOUT)
        .await
        .map_err(ClusterError::request(format!("{what} to {addr}")))?;
    if status != 200 {
        return Err(ClusterError::Refused {
            what: format!("{what} to {addr}"),
            status,
            body: String::from_utf8_lossy(&answer).into_owned(),
        });
    }
    serde_json::from_slice(&answer).map_err(ClusterError::decode(what))
}

/// A setup call retried while the connection fails (a listener not bound
/// yet, a node switching from its maintenance certificate to the cluster's)
/// or the cluster answers `no_leader`.
async fn retry_call<T: serde::de::DeserializeOwned>(
    config: &Arc<ClientConfig>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    what: &str,
) -> Result<T, ClusterError> {
    let deadline = Instant::now() + crate::timeout(START_TIMEOUT);
    loop {
        match call_json(config, addr, method, path, body, what).await {
            Err(ClusterError::Request { .. } | ClusterError::Refused { status: 503, .. })
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(POLL * 2).await;
            }
            other => return other,
        }
    }
}
