//! Cluster members as they run on nodes: each one a replica thread on a
//! sled log, talking to the others over the mTLS peer transport on
//! 127.0.0.1. Proves that a cluster grows from one bootstrapped member by
//! learner-then-voter changes, that writes and linearizable reads work
//! through any member, and that the cluster keeps serving when its leader
//! stops, losing no acknowledged write.

#![expect(clippy::unwrap_used, reason = "test: a failed unwrap is a failed test")]

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use cluster::node::{self, NodeHandle, Query, Start, StoreError};
use cluster::pki::{CertificateAuthority, IssuedCert, NodeCertRequest, SubjectName};
use cluster::raft::replica::{MembershipStep, ReplicaConfig};
use cluster::store::{Command, Expect, Key, Member, Outcome};
use cluster::transport::{PeerDirectory, Transport, TransportTls};
use tokio::sync::mpsc;

struct Running {
    id: u64,
    handle: NodeHandle,
    transport: Transport,
}

/// Sends the members' log to the test output (`RUST_LOG=debug` for more).
fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
}

fn node_cert(ca: &CertificateAuthority, name: &str) -> IssuedCert {
    ca.issue_node(
        &NodeCertRequest {
            name: SubjectName::try_from(name).unwrap(),
            dns_names: vec![],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
        },
        SystemTime::now(),
    )
    .unwrap()
}

async fn launch(
    ca: &CertificateAuthority,
    dir: &std::path::Path,
    id: u64,
    how: impl FnOnce(SocketAddr) -> Start,
) -> (Running, Member) {
    let name = format!("node-{id}");
    let tls = TransportTls::new(ca.cert_der(), &node_cert(ca, &name)).unwrap();
    let (events, inbound) = mpsc::channel(4096);
    let transport = Transport::start(
        "127.0.0.1:0".parse().unwrap(),
        tls,
        id,
        PeerDirectory::new(),
        events,
    )
    .await
    .unwrap();
    let addr = transport.local_addr();
    let member = Member {
        id,
        name,
        peer_addr: addr,
        api_addr: addr,
        domain: None,
    };
    let handle = node::start(
        ReplicaConfig::new(id),
        dir.join(format!("raft-{id}")),
        how(addr),
        transport.clone(),
        inbound,
    )
    .unwrap();
    (
        Running {
            id,
            handle,
            transport,
        },
        member,
    )
}

async fn until<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: Key::new(key).unwrap(),
        value: value.as_bytes().to_vec(),
        expect: Expect::Any,
    }
}

async fn get(handle: &NodeHandle, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let result = handle.read(Query::Get(Key::new(key).unwrap())).await?;
    Ok(result.records.into_iter().next().map(|(_, r)| r.value))
}

async fn leader_of(nodes: &[Running]) -> u64 {
    until("a leader", async || {
        nodes.iter().find_map(|n| {
            let status = n.handle.status()?;
            (status.role == raft::StateRole::Leader).then_some(n.id)
        })
    })
    .await
}

/// Starts member 1 as a new one-voter cluster.
async fn bootstrap(ca: &CertificateAuthority, dir: &std::path::Path) -> Running {
    let (first, _) = launch(ca, dir, 1, |addr| {
        Start::Bootstrap(Member {
            id: 1,
            name: "node-1".into(),
            peer_addr: addr,
            api_addr: addr,
            domain: None,
        })
    })
    .await;
    first
}

/// Bootstraps member 1 and grows the cluster to three voters.
async fn three_members(ca: &CertificateAuthority, dir: &std::path::Path) -> Vec<Running> {
    log_to_test_output();
    let mut nodes = vec![bootstrap(ca, dir).await];
    leader_of(&nodes).await;
    for id in 2..=3 {
        let members = nodes[0].handle.members().await.unwrap();
        let (running, member) = launch(ca, dir, id, |_| Start::Join(members)).await;
        let leader = &nodes[0].handle;
        leader
            .change_membership(vec![MembershipStep::AddLearner(id)], vec![member], vec![])
            .await
            .unwrap();
        until("the learner to catch up", async || {
            let applied = running.handle.status()?.applied;
            let leader_applied = leader.status()?.applied;
            (applied >= leader_applied).then_some(())
        })
        .await;
        leader
            .change_membership(vec![MembershipStep::AddVoter(id)], vec![], vec![])
            .await
            .unwrap();
        nodes.push(running);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_linearizable_reads_work_through_every_member() {
    let ca =
        CertificateAuthority::create(&SubjectName::try_from("test").unwrap(), SystemTime::now())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_members(&ca, dir.path()).await;
    let status = nodes[0].handle.status().unwrap();
    assert_eq!(status.voters, [1, 2, 3]);

    for (i, writer) in nodes.iter().enumerate() {
        let outcome = writer
            .handle
            .propose(put("site/dns", &format!("10.0.0.{i}")))
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Written { .. }), "{outcome:?}");
        // Right after the write is acknowledged, every member reads it.
        for reader in &nodes {
            assert_eq!(
                get(&reader.handle, "site/dns").await.unwrap(),
                Some(format!("10.0.0.{i}").into_bytes()),
                "member {} reads what member {} wrote",
                reader.id,
                writer.id
            );
        }
    }

    // Compare-and-set through a follower.
    let follower = nodes
        .iter()
        .find(|n| n.handle.status().unwrap().role != raft::StateRole::Leader)
        .unwrap();
    let current = follower
        .handle
        .read(Query::Get(Key::new("site/dns").unwrap()))
        .await
        .unwrap()
        .records[0]
        .1
        .mod_revision;
    let stale = Command::Put {
        key: Key::new("site/dns").unwrap(),
        value: b"stale".to_vec(),
        expect: Expect::Revision(current - 1),
    };
    assert_eq!(
        follower.handle.propose(stale).await.unwrap(),
        Outcome::Conflict {
            current: Some(current)
        }
    );
    let fresh = Command::Put {
        key: Key::new("site/dns").unwrap(),
        value: b"fresh".to_vec(),
        expect: Expect::Revision(current),
    };
    assert!(matches!(
        follower.handle.propose(fresh).await.unwrap(),
        Outcome::Written { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_elects_a_new_leader_and_keeps_every_acknowledged_write_when_its_leader_stops()
{
    let ca =
        CertificateAuthority::create(&SubjectName::try_from("test").unwrap(), SystemTime::now())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_members(&ca, dir.path()).await;
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let writer = &nodes[i % 3].handle;
        let key = format!("k{i}");
        writer.propose(put(&key, "v")).await.unwrap();
        acknowledged.push(key);
    }

    let old = leader_of(&nodes).await;
    let stopped = nodes.iter().position(|n| n.id == old).unwrap();
    let mut nodes = nodes;
    let gone = nodes.remove(stopped);
    gone.transport.shutdown().await;
    drop(gone.handle);

    let started = tokio::time::Instant::now();
    let new = until("a new leader", async || {
        nodes.iter().find_map(|n| {
            let status = n.handle.status()?;
            (status.role == raft::StateRole::Leader && n.id != old).then_some(n.id)
        })
    })
    .await;
    let survivor = &nodes[0].handle;
    until("a write to succeed after the leader stopped", async || {
        survivor.propose(put("after", "failover")).await.ok()
    })
    .await;
    let failover = started.elapsed();
    assert!(new != old);
    assert!(
        failover < Duration::from_secs(15),
        "failover took {failover:?}"
    );
    for key in &acknowledged {
        for n in &nodes {
            assert_eq!(
                get(&n.handle, key).await.unwrap(),
                Some(b"v".to_vec()),
                "{key} on member {}",
                n.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_any_member_sees_every_change_under_its_prefix_in_order_and_resumes() {
    let ca =
        CertificateAuthority::create(&SubjectName::try_from("test").unwrap(), SystemTime::now())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let nodes = three_members(&ca, dir.path()).await;
    let watcher = &nodes[2].handle;
    let mut watch = watcher.watch("site/".into(), 0).await.unwrap();

    // Writes through every member, some outside the prefix.
    let mut revisions = Vec::new();
    for i in 0..30 {
        let key = if i % 3 == 0 {
            format!("other/{i}")
        } else {
            format!("site/{i}")
        };
        let outcome = nodes[i % 3].handle.propose(put(&key, "v")).await.unwrap();
        let Outcome::Written { revision } = outcome else {
            panic!("{outcome:?}");
        };
        if key.starts_with("site/") {
            revisions.push(revision);
        }
    }
    let mut seen = Vec::new();
    while seen.len() < revisions.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the next change within 10 s")
            .unwrap();
        assert!(event.key.as_str().starts_with("site/"), "{event:?}");
        seen.push(event.revision);
    }
    assert_eq!(
        seen, revisions,
        "every change under the prefix, in order, once"
    );

    // A watch started after a revision it has seen gets only what followed.
    let resume_after = revisions[9];
    let mut resumed = watcher.watch("site/".into(), resume_after).await.unwrap();
    let mut rest = Vec::new();
    while rest.len() < revisions.len() - 10 {
        rest.push(resumed.next().await.unwrap().revision);
    }
    assert_eq!(rest, revisions[10..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_stops_when_its_last_handle_goes_and_its_watches_end() {
    log_to_test_output();
    let ca =
        CertificateAuthority::create(&SubjectName::try_from("test").unwrap(), SystemTime::now())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let only = bootstrap(&ca, dir.path()).await;
    leader_of(std::slice::from_ref(&only)).await;
    only.handle.propose(put("a", "1")).await.unwrap();
    let mut watch = only.handle.watch(String::new(), 0).await.unwrap();
    assert_eq!(watch.next().await.unwrap().key.as_str(), "a");
    drop(only.handle);
    let ended = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch ends once the member stops");
    assert_eq!(ended, Err(cluster::node::WatchError::Stopped));
    // The log is closed: the same directory opens again in this process.
    only.transport.shutdown().await;
    let reopened = cluster::raft::storage::LogStore::open(&dir.path().join("raft-1"));
    assert!(reopened.is_ok(), "{reopened:?}");
}
