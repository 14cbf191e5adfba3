//! The cluster: status, join tokens, joining and removing members.
//!
//! A new node joins in two steps. The operator asks a member for a join
//! token (`POST /v1/cluster/tokens`), then tells the new node, still in
//! maintenance mode, to join (`POST /v1/cluster/join` on the new node,
//! [`super::JoinRequest`]). The new node pins the CA fingerprint, asks the
//! member for membership with the token and a certificate request
//! (`POST /v1/cluster/members`), and joins Raft as a learner; the leader
//! promotes it to voter once it has caught up, while the cluster has fewer
//! voters than it wants.

use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// `GET /v1/cluster`: the members and how the cluster sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterStatus {
    /// Cluster name.
    pub name: String,
    /// The node that answered.
    pub answered_by: String,
    /// The leader's name, when the answering node knows one.
    pub leader: Option<String>,
    /// The Raft term the answering node is in.
    pub term: u64,
    /// The answering node's commit index.
    pub commit: u64,
    /// The answering node's applied index.
    pub applied: u64,
    /// Every member, by name.
    pub members: Vec<MemberStatus>,
}

/// Whether a member votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    /// Counts towards quorum.
    Voter,
    /// Stand-by: receives the log, does not vote; promoted when a voter is
    /// lost or the cluster has fewer voters than it wants.
    Learner,
}

/// A member's condition, judged by the leader from Raft heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Heard from recently.
    Ready,
    /// Silent for a while, not yet past the grace period.
    NotReady,
    /// Silent past the grace period; a voter in this state is replaced.
    Lost,
}

/// One member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MemberStatus {
    /// Node name.
    pub name: String,
    /// Raft id.
    pub id: u64,
    /// API endpoint (`host:7443`).
    pub address: String,
    /// Peer endpoint (`host:7444`).
    pub peer_address: String,
    /// Voter or learner.
    pub role: MemberRole,
    /// Condition.
    pub state: MemberState,
    /// When the condition last changed, as recorded by a leader.
    pub since: Option<Timestamp>,
    /// Failure domain label (`rack-a`), when the node has one.
    pub domain: Option<String>,
    /// Highest log index known to be on the member (leader only).
    pub matched: Option<u64>,
    /// Entries the member is behind the leader's log (leader only).
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from it (leader only).
    pub last_contact_ms: Option<u64>,
}

/// `POST /v1/cluster/tokens`: make a join token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// Lifetime in seconds, 60 to 604,800 (7 days); default 3,600.
    pub ttl_s: Option<u64>,
    /// How many joins it allows; unlimited until expiry when absent.
    pub uses: Option<u32>,
    /// What it is for, shown in the token list.
    pub description: Option<String>,
}

/// A new join token. The secret is shown once and stored only hashed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedToken {
    /// `<id>.<secret>`.
    pub token: String,
    /// The public part, for `list` and `revoke`.
    pub id: String,
    /// SHA-256 fingerprint of the cluster CA (`sha256:<hex>`), which the
    /// joining node pins.
    pub ca_hash: String,
    /// End of validity.
    pub expires_at: Timestamp,
    /// Joins allowed; unlimited when absent.
    pub uses: Option<u32>,
    /// The command that joins a node with it; the new node's endpoint and
    /// setup token are left for the operator to fill in.
    pub join_command: String,
}

/// Where a token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// Accepted by joins.
    Valid,
    /// Past its expiry.
    Expired,
    /// Revoked by an operator.
    Revoked,
    /// Every allowed join happened.
    UsedUp,
}

/// A join token without its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenInfo {
    /// The public part.
    pub id: String,
    /// What it is for.
    pub description: Option<String>,
    /// Where it stands.
    pub state: TokenState,
    /// When it was made.
    pub created_at: Timestamp,
    /// End of validity.
    pub expires_at: Timestamp,
    /// Joins so far.
    pub used: u32,
    /// Joins allowed; unlimited when absent.
    pub uses: Option<u32>,
}

/// `GET /v1/cluster/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenList {
    /// Tokens by id; spent ones stay listed until they expire.
    pub tokens: Vec<TokenInfo>,
}

/// `POST /v1/cluster/members`: a node that is not a member yet asks for
/// membership with a join token. Sent by cairnd on behalf of
/// `POST /v1/cluster/join`; operators do not call it directly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberJoinRequest {
    /// Join token (`<id>.<secret>`).
    pub token: String,
    /// The new node's name; must not be a member's name already.
    pub node_name: String,
    /// The address the members reach it on (API on 7443, peers on 7444).
    pub address: IpAddr,
    /// PEM PKCS#10 request for the node certificate.
    pub csr_pem: String,
    /// Failure domain label, when the node has one.
    pub domain: Option<String>,
}

/// One member as the directory knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MemberRecord {
    /// Raft id.
    pub id: u64,
    /// Node name.
    pub name: String,
    /// API endpoint (`host:7443`).
    pub address: String,
    /// Peer endpoint (`host:7444`).
    pub peer_address: String,
}

/// What a joining node receives: its identity in the cluster and what it
/// needs to act as a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MemberGrant {
    /// The node's Raft id.
    pub member_id: u64,
    /// Cluster name.
    pub cluster_name: String,
    /// The node certificate (PEM), issued from the request's CSR.
    pub node_cert_pem: String,
    /// The cluster CA certificate (PEM).
    pub ca_pem: String,
    /// The cluster CA key (PEM): every member can issue certificates, so
    /// any member can serve `cert_issue` and admit further nodes.
    pub ca_key_pem: String,
    /// The members, the new node included.
    pub members: Vec<MemberRecord>,
}

/// The answer to [`super::JoinRequest`], from the node that joined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JoinResponse {
    /// The node's name.
    pub node_name: String,
    /// The cluster's name.
    pub cluster_name: String,
    /// The node's Raft id.
    pub member_id: u64,
}

/// `DELETE /v1/cluster/members/{name}`: the member is out of the Raft
/// configuration and the directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MemberRemoved {
    /// Node name.
    pub name: String,
    /// Raft id.
    pub id: u64,
}

/// `GET /v1/cluster/backup`: the whole store, for disaster recovery. Save
/// it as it is (`cairn cluster snapshot save FILE`); it is what
/// `POST /v1/cluster/restore` takes back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterBackup {
    /// Cluster name.
    pub cluster_name: String,
    /// Fingerprint of the cluster CA: a backup restores only into a node
    /// of the same cluster.
    pub ca_hash: String,
    /// The store revision it holds (every write acknowledged before the
    /// backup started is in it).
    pub revision: u64,
    /// When it was taken.
    pub taken_at: Timestamp,
    /// The node that took it.
    pub taken_from: String,
    /// The members at the time.
    pub members: Vec<MemberRecord>,
    /// SHA-256 of the decoded data, hex.
    pub sha256: String,
    /// The encoded store, base64.
    pub data: String,
}

/// `POST /v1/cluster/restore`: make this node a new one-voter cluster
/// holding a backup, when the old cluster lost its quorum for good.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The backup, as `GET /v1/cluster/backup` returned it.
    pub backup: ClusterBackup,
    /// Restore even though this node still sees a leader (the cluster it
    /// belongs to is alive: restoring splits it).
    #[serde(default)]
    pub force: bool,
}

/// The answer to [`RestoreRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RestoreResponse {
    /// The node now leading the restored cluster.
    pub node_name: String,
    /// The store revision restored.
    pub revision: u64,
}
