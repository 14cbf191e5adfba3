//! Either cluster behind one face, so the bench runs the same rounds on
//! both.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::bulk;
use super::cairn::CairnCluster;
use super::etcd::EtcdCluster;
use super::kv::System;
use super::node::ClusterError;

/// A formed 3-member cluster of either system.
#[derive(Debug)]
pub enum Cluster<'ns> {
    /// cairnd processes.
    Cairn(CairnCluster<'ns>),
    /// etcd processes.
    Etcd(EtcdCluster<'ns>),
}

impl Cluster<'_> {
    /// Which system this is.
    #[must_use]
    pub fn system(&self) -> System {
        match self {
            Cluster::Cairn(_) => System::Cairn,
            Cluster::Etcd(_) => System::Etcd,
        }
    }

    /// The client configuration the load uses.
    ///
    /// # Errors
    /// [`ClusterError::State`] for a Cairn cluster not formed yet.
    pub fn client(&self) -> Result<Arc<ClientConfig>, ClusterError> {
        match self {
            Cluster::Cairn(c) => c.admin(),
            Cluster::Etcd(c) => Ok(c.client()),
        }
    }

    /// The members' client addresses.
    #[must_use]
    pub fn members(&self) -> Vec<SocketAddr> {
        match self {
            Cluster::Cairn(c) => c.members(),
            Cluster::Etcd(c) => c.members(),
        }
    }

    /// Member `i`'s name.
    #[must_use]
    pub fn name(&self, i: usize) -> &str {
        match self {
            Cluster::Cairn(c) => c.name(i),
            Cluster::Etcd(c) => c.name(i),
        }
    }

    /// Pids of the running members.
    #[must_use]
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Cluster::Cairn(c) => c.nodes().pids(),
            Cluster::Etcd(c) => c.nodes().pids(),
        }
    }

    /// The members' addresses, data directories and pids, for the bulk
    /// writes and their samples.
    #[must_use]
    pub fn bulk_members(&self) -> bulk::Members {
        let size = self.members().len();
        let data_dirs = (0..size)
            .filter_map(|i| match self {
                Cluster::Cairn(c) => c.state_dir(i),
                Cluster::Etcd(c) => c.data_dir(i),
            })
            .map(Path::to_path_buf)
            .collect();
        bulk::Members {
            system: self.system(),
            addrs: self.members(),
            data_dirs,
            pids: self.pids(),
        }
    }

    /// History compactions logged so far, for a system that compacts in
    /// steps (etcd); `None` for one that trims as it applies (Cairn).
    #[must_use]
    pub fn compactions_logged(&self) -> Option<u64> {
        match self {
            Cluster::Cairn(_) => None,
            Cluster::Etcd(c) => Some(c.compactions_logged()),
        }
    }

    /// The leader's index.
    ///
    /// # Errors
    /// [`ClusterError`] if none is known.
    pub async fn leader(&self) -> Result<usize, ClusterError> {
        match self {
            Cluster::Cairn(c) => c.leader().await,
            Cluster::Etcd(c) => c.leader().await,
        }
    }

    /// SIGKILLs member `i`.
    ///
    /// # Errors
    /// [`ClusterError::State`] if it is not running.
    pub fn kill(&mut self, i: usize) -> Result<(), ClusterError> {
        match self {
            Cluster::Cairn(c) => c.nodes_mut().kill(i),
            Cluster::Etcd(c) => c.nodes_mut().kill(i),
        }
    }

    /// Restarts member `i` and waits for the cluster to converge.
    ///
    /// # Errors
    /// [`ClusterError`] if it does not.
    pub async fn restart(&mut self, i: usize, limit: Duration) -> Result<(), ClusterError> {
        match self {
            Cluster::Cairn(c) => c.restart(i, limit).await,
            Cluster::Etcd(c) => c.restart(i, limit).await,
        }
    }

    /// Stops every member gracefully.
    pub fn stop_all(&mut self) {
        match self {
            Cluster::Cairn(c) => c.nodes_mut().stop_all(),
            Cluster::Etcd(c) => c.nodes_mut().stop_all(),
        }
    }
}
