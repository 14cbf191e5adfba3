//! A cluster of real agents: four cairnd instances in one throwaway
//! network namespace, on 127.0.0.1 to 127.0.0.4 (API on 7443, Raft peers
//! on 7444), each with its own state directory and its own UTS namespace
//! (so its own host name, which is its node name).
//!
//! One test walks what an operator does: bootstrap the first node, make
//! join tokens, join two nodes (they become voters), join a fourth (it
//! stays a stand-by), use the key-value store through every member, and
//! see the bad joins refused for the right reason. Then a voter goes away
//! for longer than the grace period and the leader replaces it with the
//! stand-by; the operator removes the dead node; the leader stops and the
//! cluster keeps taking writes.
//!
//! These tests need root (they unshare namespaces); without it they fail
//! rather than skip.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::time::{Duration, Instant};

use api::ErrorCode;
use api::types::{
    ClusterBackup, ClusterStatus, CreatedToken, JoinResponse, KvList, KvRecord, KvWritten,
    MemberRemoved, MemberRole, MemberState, RestoreResponse, TokenInfo, TokenList, TokenState,
};
use serde_json::json;

mod common;
use common::api_client::{Client, error_of, wait_for_api};
use common::cluster::{Agent, api, bootstrap_first, join, wait_for_status};
use common::{in_fresh_netns, runtime};

fn role_of(status: &ClusterStatus, name: &str) -> Option<MemberRole> {
    status
        .members
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.role)
}

fn voters(status: &ClusterStatus) -> Vec<String> {
    let mut names: Vec<String> = status
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .map(|m| m.name.clone())
        .collect();
    names.sort();
    names
}

async fn put(client: &Client, key: &str, value: &str, if_revision: Option<u64>) -> (u16, String) {
    client
        .call(
            "PUT",
            "/v1/kv/entry",
            Some(&json!({"key": key, "value": value, "if_revision": if_revision})),
        )
        .await
}

/// The health port's `/metrics` of node `i`, as text.
async fn health_metrics(i: u8) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(format!("127.0.0.{i}:7480"))
        .await
        .unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn encoded(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn nodes_join_with_tokens_share_one_store_and_the_cluster_heals_its_voters() {
    in_fresh_netns(|| {
        common::ip("link set lo up");
        let dir = tempfile::tempdir().unwrap();
        let mut agents: Vec<Agent> = (1..=4).map(|i| Agent::start(i, dir.path())).collect();
        runtime().block_on(async {
            for i in 1..=4 {
                wait_for_api(&Client::maintenance(&api(i))).await;
            }
            let admin = bootstrap_first("lab").await;

            // Tokens: one for two nodes, one revoked, one for the stand-by.
            let pair: CreatedToken = admin
                .json(
                    "POST",
                    "/v1/cluster/tokens",
                    Some(&json!({"uses": 2, "description": "n2 and n3"})),
                )
                .await;
            assert!(pair.ca_hash.starts_with("sha256:"), "{}", pair.ca_hash);
            assert!(
                pair.join_command
                    .contains(&format!("--token {}", pair.token)),
                "{}",
                pair.join_command
            );
            assert!(
                pair.join_command.contains(&format!("--cluster {}", api(1))),
                "{}",
                pair.join_command
            );
            let revoked: CreatedToken = admin
                .json("POST", "/v1/cluster/tokens", Some(&json!({})))
                .await;
            let info: TokenInfo = admin
                .json(
                    "POST",
                    &format!("/v1/cluster/tokens/{}/revoke", revoked.id),
                    None,
                )
                .await;
            assert_eq!(info.state, TokenState::Revoked);

            for node in [2, 3] {
                let (status, text) = join(node, &pair).await;
                assert_eq!(status, 200, "n{node} joins: {text}");
                let joined: JoinResponse = serde_json::from_str(&text).unwrap();
                assert_eq!(joined.node_name, format!("n{node}"));
                assert_eq!(joined.cluster_name, "lab");
            }
            let status = wait_for_status(&admin, "three voters", Duration::from_secs(60), |s| {
                voters(s) == ["n1", "n2", "n3"]
            })
            .await;
            assert_eq!(status.name, "lab");
            // The health port samples the member once a second.
            let wanted = [
                "cairn_raft_has_leader 1",
                "cairn_raft_voters 3",
                "cairn_raft_learners 0",
            ];
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let metrics = health_metrics(2).await;
                if wanted.iter().all(|w| metrics.lines().any(|l| l == *w)) {
                    break;
                }
                assert!(Instant::now() < deadline, "{wanted:?} in:\n{metrics}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }

            // Bad joins, each refused for its own reason, none admitted.
            let (status, text) = join(4, &pair).await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::InvalidJoinToken, "used up: {text}");
            assert!(error.message.contains("used"), "{}", error.message);
            let (status, text) = join(4, &revoked).await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::InvalidJoinToken, "revoked: {text}");
            assert!(error.message.contains("revoked"), "{}", error.message);
            let mut forged = pair.clone();
            forged.token = format!("{}.{}", pair.id, "0".repeat(16));
            let (status, text) = join(4, &forged).await;
            assert_eq!(
                error_of(status, &text).code,
                ErrorCode::InvalidJoinToken,
                "forged: {text}"
            );
            let mut wrong_ca = pair.clone();
            wrong_ca.ca_hash = format!("sha256:{}", "0".repeat(64));
            let (status, text) = join(4, &wrong_ca).await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::CaMismatch, "{text}");
            assert!(error.message.contains(&pair.ca_hash), "{}", error.message);

            let listed: TokenList = admin.json("GET", "/v1/cluster/tokens", None).await;
            let state_of = |id: &str| listed.tokens.iter().find(|t| t.id == id).unwrap().state;
            assert_eq!(state_of(&pair.id), TokenState::UsedUp);
            assert_eq!(state_of(&revoked.id), TokenState::Revoked);
            assert!(
                listed
                    .tokens
                    .iter()
                    .all(|t| !serde_json::to_string(t).unwrap().contains(&pair.token))
            );

            // The fourth node stays a stand-by: three voters are enough.
            let standby: CreatedToken = admin
                .json("POST", "/v1/cluster/tokens", Some(&json!({"ttl_s": 600})))
                .await;
            let (status, text) = join(4, &standby).await;
            assert_eq!(status, 200, "n4 joins: {text}");
            let status = wait_for_status(
                &admin,
                "n4 as a caught-up stand-by",
                Duration::from_secs(60),
                |s| {
                    s.members.len() == 4
                        && s.members.iter().all(|m| m.state == MemberState::Ready)
                        && s.members
                            .iter()
                            .find(|m| m.name == "n4")
                            .is_some_and(|m| m.lag == Some(0))
                },
            )
            .await;
            assert_eq!(role_of(&status, "n4"), Some(MemberRole::Learner));
            assert_eq!(voters(&status), ["n1", "n2", "n3"]);
            let n4 = status.members.iter().find(|m| m.name == "n4").unwrap();
            assert_eq!(n4.address, api(4));
            assert_eq!(n4.domain.as_deref(), Some("rack-4"));

            // One store, through every member; the admin certificate works on each.
            let clients: Vec<Client> = (1..=4).map(|i| admin.at(&api(i))).collect();
            let odd_key = "site/dns servers?&=ü";
            let (status, text) = put(&clients[1], odd_key, "10.0.0.53", Some(0)).await;
            assert_eq!(status, 200, "{text}");
            let written: KvWritten = serde_json::from_str(&text).unwrap();
            for client in &clients {
                let record: KvRecord = client
                    .json(
                        "GET",
                        &format!("/v1/kv/entry?key={}", encoded(odd_key)),
                        None,
                    )
                    .await;
                assert_eq!(record.value, "10.0.0.53");
                assert_eq!(record.revision, written.revision);
            }
            let (status, text) = put(&clients[2], odd_key, "again", Some(0)).await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::RevisionConflict);
            assert!(
                error
                    .message
                    .contains(&format!("revision {}", written.revision)),
                "{}",
                error.message
            );
            let (status, text) =
                put(&clients[3], odd_key, "10.0.0.54", Some(written.revision)).await;
            assert_eq!(status, 200, "compare-and-set at the right revision: {text}");
            let (status, text) = clients[0]
                .call("GET", "/v1/kv/entry?key=absent", None)
                .await;
            assert_eq!(error_of(status, &text).code, ErrorCode::KeyNotFound);
            let (status, text) = put(&clients[0], &"k".repeat(1025), "v", None).await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert!(error.message.contains("1025 bytes"), "{}", error.message);
            for i in 0..5 {
                let (status, text) =
                    put(&clients[i % 4], &format!("list/{i}"), &i.to_string(), None).await;
                assert_eq!(status, 200, "{text}");
            }
            let list: KvList = clients[3]
                .json("GET", "/v1/kv?prefix=list%2F&limit=3", None)
                .await;
            let keys: Vec<_> = list.records.iter().map(|r| r.key.as_str()).collect();
            assert_eq!(keys, ["list/0", "list/1", "list/2"]);
            assert!(list.more);
            let (status, text) = clients[2]
                .call("DELETE", "/v1/kv/entry?key=list%2F0", None)
                .await;
            assert_eq!(status, 200, "{text}");
            let deleted: KvWritten = serde_json::from_str(&text).unwrap();
            assert_eq!(deleted.deleted, Some(true));
            // Join tokens and conditions are not in the kv namespace.
            let all: KvList = clients[0].json("GET", "/v1/kv", None).await;
            assert!(all.records.iter().all(|r| !r.key.starts_with("tokens/")));

            // n3 goes away past the grace period: the stand-by replaces it.
            agents[2].stop();
            let status =
                wait_for_status(&admin, "n4 to replace n3", Duration::from_secs(90), |s| {
                    voters(s) == ["n1", "n2", "n4"]
                })
                .await;
            let n3 = status.members.iter().find(|m| m.name == "n3").unwrap();
            assert_eq!(n3.role, MemberRole::Learner);
            assert_eq!(n3.state, MemberState::Lost);
            assert!(n3.since.is_some(), "{n3:?}");
            let removed: MemberRemoved = admin.json("DELETE", "/v1/cluster/members/n3", None).await;
            assert_eq!(removed.name, "n3");
            let status = wait_for_status(&admin, "n3 to be gone", Duration::from_secs(20), |s| {
                s.members.len() == 3
            })
            .await;
            assert!(
                status.members.iter().all(|m| m.state == MemberState::Ready),
                "{status:#?}"
            );

            // The leader stops; the others elect a new one and keep writing.
            let leader = status.leader.clone().unwrap();
            let index = usize::from(leader.trim_start_matches('n').parse::<u8>().unwrap()) - 1;
            agents[index].stop();
            let survivor = clients
                .iter()
                .enumerate()
                .find(|(i, _)| *i != index && *i != 2)
                .map(|(_, c)| c.clone())
                .unwrap();
            let status = wait_for_status(&survivor, "a new leader", Duration::from_secs(30), |s| {
                s.leader.as_deref().is_some_and(|l| l != leader)
            })
            .await;
            let (code, text) = put(&survivor, "after/failover", "yes", None).await;
            assert_eq!(
                code, 200,
                "write after the leader stopped: {text}; {status:#?}"
            );
            let record: KvRecord = survivor
                .json("GET", "/v1/kv/entry?key=after%2Ffailover", None)
                .await;
            assert_eq!(record.value, "yes");
        });
        for agent in &mut agents {
            agent.stop();
        }
    });
}

#[test]
fn a_node_with_a_join_section_in_its_machine_config_joins_on_its_own() {
    in_fresh_netns(|| {
        common::ip("link set lo up");
        let dir = tempfile::tempdir().unwrap();
        let mut first = Agent::start(1, dir.path());
        let rt = runtime();
        let (admin, token) = rt.block_on(async {
            let admin = bootstrap_first("cairn").await;
            let token: CreatedToken = admin
                .json("POST", "/v1/cluster/tokens", Some(&json!({"uses": 1})))
                .await;
            (admin, token)
        });
        let join = format!(
            "\n[cluster.join]\nendpoint = \"{}\"\ntoken = \"{}\"\nca-hash = \"{}\"\n",
            api(1),
            token.token,
            token.ca_hash
        );
        let mut second = Agent::start_with(2, dir.path(), &join);
        rt.block_on(async {
            // Two members keep one voter: an even count adds no tolerance.
            let status = wait_for_status(
                &admin,
                "n2 to join by itself",
                Duration::from_secs(60),
                |s| {
                    s.members.iter().any(|m| {
                        m.name == "n2" && m.state == MemberState::Ready && m.lag == Some(0)
                    })
                },
            )
            .await;
            assert_eq!(voters(&status), ["n1"]);
            assert_eq!(role_of(&status, "n2"), Some(MemberRole::Learner));
            // Its shown config does not reveal the token.
            let shown: api::types::MachineConfigDocument =
                admin.at(&api(2)).json("GET", "/v1/node/config", None).await;
            assert!(!shown.toml.contains(&token.token), "{}", shown.toml);
            assert!(
                shown.redacted.contains(&"cluster.join.token".to_owned()),
                "{shown:?}"
            );
        });
        second.stop();
        first.stop();
    });
}

/// Bootstraps n1 as the first member of cluster `name`, waits until it
/// leads, and returns its admin client.
#[test]
fn a_backup_restores_the_store_on_a_survivor_after_quorum_is_lost() {
    in_fresh_netns(|| {
        common::ip("link set lo up");
        let dir = tempfile::tempdir().unwrap();
        let mut agents: Vec<Agent> = (1..=3).map(|i| Agent::start(i, dir.path())).collect();
        let rt = runtime();
        let admin = rt.block_on(async {
            let admin = bootstrap_first("cairn").await;
            let token: CreatedToken = admin
                .json("POST", "/v1/cluster/tokens", Some(&json!({"uses": 2})))
                .await;
            for node in [2, 3] {
                wait_for_api(&Client::maintenance(&api(node))).await;
                let (status, text) = join(node, &token).await;
                assert_eq!(status, 200, "n{node} joins: {text}");
            }
            wait_for_status(&admin, "three voters", Duration::from_secs(60), |s| {
                voters(s) == ["n1", "n2", "n3"]
            })
            .await;
            for i in 0..20 {
                let (status, text) = put(
                    &admin.at(&api(2)),
                    &format!("site/{i}"),
                    &format!("v{i}"),
                    None,
                )
                .await;
                assert_eq!(status, 200, "{text}");
            }
            let backup: ClusterBackup = admin.json("GET", "/v1/cluster/backup", None).await;
            assert_eq!(backup.members.len(), 3);

            // While the cluster lives, a restore would split it.
            let (status, text) = admin
                .call(
                    "POST",
                    "/v1/cluster/restore",
                    Some(&json!({"backup": backup})),
                )
                .await;
            assert_eq!(
                error_of(status, &text).code,
                ErrorCode::AlreadyMember,
                "{text}"
            );
            let mut damaged = backup.clone();
            damaged.sha256 = "0".repeat(64);
            let (status, text) = admin
                .call(
                    "POST",
                    "/v1/cluster/restore",
                    Some(&json!({"backup": damaged, "force": true})),
                )
                .await;
            let error = error_of(status, &text);
            assert_eq!(error.code, ErrorCode::BadRequest);
            assert!(error.message.contains("damaged"), "{}", error.message);

            // Two of three voters gone for good: no quorum, no leader.
            agents[1].stop();
            agents[2].stop();
            wait_for_status(
                &admin,
                "n1 to lose its leader",
                Duration::from_secs(30),
                |s| s.leader.is_none(),
            )
            .await;
            let restored: RestoreResponse = admin
                .json(
                    "POST",
                    "/v1/cluster/restore",
                    Some(&json!({"backup": backup})),
                )
                .await;
            assert_eq!(restored.node_name, "n1");
            assert_eq!(restored.revision, backup.revision);
            let status = wait_for_status(
                &admin,
                "the restored cluster to have a leader",
                Duration::from_secs(30),
                |s| s.leader.as_deref() == Some("n1"),
            )
            .await;
            assert_eq!(voters(&status), ["n1"]);
            assert_eq!(status.members.len(), 1);
            let list: KvList = admin.json("GET", "/v1/kv?prefix=site%2F", None).await;
            assert_eq!(list.records.len(), 20);
            assert!(list.revision >= backup.revision);
            let (status, text) = put(&admin, "after/restore", "yes", None).await;
            assert_eq!(status, 200, "{text}");
            let written: KvWritten = serde_json::from_str(&text).unwrap();
            assert!(written.revision > backup.revision, "revisions continue");
            admin
        });
        // The restored member restarts from its own log, not the backup.
        agents[0].stop();
        let mut again = Agent::start(1, dir.path());
        rt.block_on(async {
            wait_for_api(&admin).await;
            wait_for_status(
                &admin,
                "the restarted member to lead",
                Duration::from_secs(30),
                |s| s.leader.as_deref() == Some("n1"),
            )
            .await;
            let record: KvRecord = admin
                .json("GET", "/v1/kv/entry?key=after%2Frestore", None)
                .await;
            assert_eq!(record.value, "yes");
        });
        again.stop();
    });
}
