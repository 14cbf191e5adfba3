//! The node as a member of the Raft cluster.
//!
//! `cluster` provides the replica, its log, the store and the peer
//! transport; this module runs them inside cairnd:
//!
//! - [`identity`]: the node's Raft id and origin on STATE
//!   (`member.toml`), written before the PKI when the node bootstraps or
//!   joins.
//! - [`start`]: binds the peer port (:7444) with the node certificate,
//!   starts the member thread on the log under `raft/`, and spawns the
//!   [`controller`], which acts while this member leads: it records member
//!   [`conditions`] and keeps the voter set healthy.
//! - [`join`]: the joining node's side of a join, a CA-pinned call to a
//!   member's `POST /v1/cluster/members`.
//!
//! The API handlers (`apiserver::cluster`, `apiserver::kv`) reach the store
//! through [`RunningMember::handle`].

pub mod conditions;
pub mod controller;
pub mod identity;
pub mod join;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cluster::membership::Policy;
use cluster::node::{self, NodeHandle, Start};
use cluster::pki::IssuedCert;
use cluster::raft::replica::{ReplicaConfig, StateRole};
use cluster::store::{Member, StoreState};
use cluster::transport::tls::TransportTls;
use cluster::transport::{PeerDirectory, Transport};
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;

use self::identity::{MemberIdentity, Origin};

/// The peer port: Raft messages between members.
pub const PEER_PORT: u16 = 7444;

/// Where the voter policy comes from: read on every turn, so a changed
/// machine config applies without a restart.
pub type PolicySource = Arc<dyn Fn() -> Policy + Send + Sync>;

/// How long a planned stop waits for leadership to move elsewhere.
const HANDOVER_WAIT: Duration = Duration::from_millis(1500);

/// Where the member keeps its state and listens.
#[derive(Debug, Clone)]
pub struct MemberOptions {
    /// The Raft log, `/var/lib/cairn/raft`.
    pub raft_dir: PathBuf,
    /// The member identity, `/var/lib/cairn/member.toml`.
    pub identity_file: PathBuf,
    /// The peer port's listen address, `0.0.0.0:7444`.
    pub peer_addr: SocketAddr,
}

impl MemberOptions {
    /// The member's paths under a state directory, listening on every
    /// address.
    pub fn under(state_dir: &Path) -> Self {
        Self {
            raft_dir: state_dir.join("raft"),
            identity_file: state_dir.join("member.toml"),
            peer_addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PEER_PORT)),
        }
    }
}

/// Starting the member failed.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The node certificate cannot serve the peer port.
    #[error("the node certificate cannot secure the peer port")]
    Tls(#[source] cluster::transport::tls::TransportTlsError),
    /// The peer port could not be opened.
    #[error("cannot start the peer transport")]
    Transport(#[source] cluster::transport::TransportError),
    /// The Raft member could not start.
    #[error("cannot start the raft member")]
    Node(#[source] node::StartError),
    /// The start was cut short.
    #[error("the raft member's start-up task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// A running member: the store handle, the peer transport and the
/// controller. Dropping it stops the controller; [`RunningMember::stop`]
/// also hands leadership over and closes the peer port.
pub struct RunningMember {
    id: u64,
    policy: PolicySource,
    contact: controller::SharedContact,
    handle: NodeHandle,
    transport: Transport,
    controller: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RunningMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningMember")
            .field("id", &self.id)
            .field("policy", &self.policy())
            .finish_non_exhaustive()
    }
}

impl RunningMember {
    /// This member's Raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The store.
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// The voter policy this member applies when it leads, as the
    /// machine config in force says now.
    pub fn policy(&self) -> Policy {
        (self.policy)()
    }

    /// Makes the peer port present a renewed node certificate.
    pub fn renew_peer_tls(
        &self,
        ca: &CertificateDer<'static>,
        node_cert: &IssuedCert,
    ) -> Result<(), MemberError> {
        let tls = TransportTls::new(ca, node_cert).map_err(MemberError::Tls)?;
        self.transport.replace_tls(tls);
        Ok(())
    }

    /// The numbers the health port's `/metrics` shows.
    pub fn sample(&self) -> Option<crate::health::metrics::ClusterSample> {
        let status = self.handle.status()?;
        Some(crate::health::metrics::ClusterSample {
            has_leader: status.leader != 0,
            is_leader: status.role == StateRole::Leader,
            term: status.term,
            commit: status.commit,
            applied: status.applied,
            voters: status.voters.len() as u64,
            learners: status.learners.len() as u64,
            peer: self.transport.stats(),
        })
    }

    /// The peer port: the other members and requests to them.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The leader's contact book, while this member leads.
    pub fn contact(&self) -> Option<conditions::Contact> {
        self.contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops the member: a leader first hands over to a voter that is
    /// caught up (a planned reboot should not cost an election timeout),
    /// then the controller and the peer port stop.
    pub async fn stop(&self) {
        if let Some(to) = self.handover_target() {
            tracing::info!(to, "handing leadership over before stopping");
            if self.handle.transfer_leader(to).await.is_ok() {
                let mut status = self.handle.watch_status();
                let moved = tokio::time::timeout(HANDOVER_WAIT, async {
                    loop {
                        let leads = status
                            .borrow_and_update()
                            .as_ref()
                            .is_some_and(|s| s.role == StateRole::Leader);
                        if !leads || status.changed().await.is_err() {
                            return;
                        }
                    }
                })
                .await;
                if moved.is_err() {
                    tracing::warn!("leadership did not move in time; stopping anyway");
                }
            }
        }
        self.controller.abort();
        self.transport.clone().shutdown().await;
    }

    fn handover_target(&self) -> Option<u64> {
        let status = self.handle.status()?;
        if status.role != StateRole::Leader {
            return None;
        }
        status
            .voters
            .iter()
            .filter(|id| **id != status.id)
            .filter_map(|id| status.progress.get(id).map(|p| (*id, *p)))
            .filter(|(_, p)| p.recently_active)
            .max_by_key(|(_, p)| p.matched)
            .map(|(id, _)| id)
    }
}

impl Drop for RunningMember {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

/// Starts the member described by `identity`: `me` is this node's
/// directory entry (used when a bootstrapped member creates its log),
/// `restore` a backup a bootstrapped member's new log starts from, and
/// `routes` what the peer port serves besides Raft (image sharing).
#[expect(
    clippy::too_many_arguments,
    reason = "each is a distinct input of the start"
)]
pub async fn start(
    options: &MemberOptions,
    identity: &MemberIdentity,
    me: Member,
    restore: Option<StoreState>,
    ca: &CertificateDer<'static>,
    node_cert: &IssuedCert,
    policy: PolicySource,
    routes: axum::Router,
) -> Result<Arc<RunningMember>, MemberError> {
    let tls = TransportTls::new(ca, node_cert).map_err(MemberError::Tls)?;
    let (events, inbound) = mpsc::channel(4096);
    let transport = Transport::start_with_routes(
        options.peer_addr,
        tls,
        identity.id,
        PeerDirectory::new(),
        events,
        routes,
    )
    .await
    .map_err(MemberError::Transport)?;
    let how = match (identity.origin, restore) {
        (Origin::Bootstrap, Some(state)) => Start::Restore { member: me, state },
        (Origin::Bootstrap, None) => Start::Bootstrap(me),
        (Origin::Join, _) => Start::Join(identity.peers.clone()),
    };
    let config = ReplicaConfig::new(identity.id);
    let raft_dir = options.raft_dir.clone();
    let for_node = transport.clone();
    // Opening sled blocks (and waits for a lock a previous process may
    // still hold): keep it off the agent's one thread.
    let handle =
        tokio::task::spawn_blocking(move || node::start(config, raft_dir, how, for_node, inbound))
            .await
            .map_err(MemberError::Join)?
            .map_err(MemberError::Node)?;
    let contact = controller::SharedContact::default();
    let controller = tokio::spawn(controller::run(
        handle.clone(),
        Arc::clone(&policy),
        Arc::clone(&contact),
    ));
    tracing::info!(id = identity.id, origin = ?identity.origin, "raft member started");
    Ok(Arc::new(RunningMember {
        id: identity.id,
        policy,
        contact,
        handle,
        transport,
        controller,
    }))
}

/// The address this node gives the cluster: the API's listen address when
/// it names one, else the node's first address.
pub fn advertised_address(api_listen: IpAddr, addresses: &[IpAddr]) -> Option<IpAddr> {
    if !api_listen.is_unspecified() {
        return Some(api_listen);
    }
    addresses.first().copied()
}

/// This node's directory entry.
pub fn directory_entry(
    id: u64,
    name: &str,
    address: IpAddr,
    api_port: u16,
    domain: Option<String>,
) -> Member {
    Member {
        id,
        name: name.to_owned(),
        peer_addr: SocketAddr::new(address, PEER_PORT),
        api_addr: SocketAddr::new(address, api_port),
        domain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_advertises_its_api_address_or_else_its_first_address() {
        let a: IpAddr = "10.0.0.5".parse().unwrap();
        let b: IpAddr = "10.0.0.6".parse().unwrap();
        let lo: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(advertised_address(lo, &[a, b]), Some(lo));
        assert_eq!(
            advertised_address(IpAddr::V4(Ipv4Addr::UNSPECIFIED), &[a, b]),
            Some(a)
        );
        assert_eq!(
            advertised_address(IpAddr::V4(Ipv4Addr::UNSPECIFIED), &[]),
            None
        );
    }
}
