//! `/v1/cluster`: bootstrap, join (both sides), status, join tokens and
//! member removal.
//!
//! # Join, end to end
//!
//! 1. An admin asks any member for a join token ([`token_create`]); the
//!    record (the secret's SHA-256, expiry, use limit) goes into the store
//!    under `tokens/<id>`.
//! 2. The new node, in maintenance mode, is told to join ([`join`], with
//!    its setup token). It makes a key and a CSR for its node certificate
//!    and calls the member's `POST /v1/cluster/members` over TLS that
//!    accepts only a member whose chain holds the pinned CA.
//! 3. The member ([`member_add`]) checks the token against its record,
//!    counts the use with a compare-and-set (so concurrent joins cannot
//!    exceed the limit), signs the CSR, picks a random Raft id, and adds
//!    the node as a learner together with its directory entry in one Raft
//!    entry. It answers with the certificate, the CA and the members.
//! 4. The new node saves its identity, then its PKI, starts its member
//!    with those peers and switches to member mode. The leader catches it
//!    up by snapshot and promotes it when the cluster wants more voters.
//!
//! Refused join tokens are logged with the caller's address and count
//! towards a per-address limit, like wrong setup tokens.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use api::types::{
    BootstrapRequest, BootstrapResponse, ClusterBackup, ClusterStatus, CreatedToken, JoinRequest,
    JoinResponse, MemberGrant, MemberJoinRequest, MemberRecord, MemberRemoved, MemberRole,
    MemberState, MemberStatus, RestoreRequest, RestoreResponse, TokenCreateRequest, TokenInfo,
    TokenList, TokenState,
};
use api::{ErrorCode, Timestamp};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use cluster::join::token::{self, JoinToken, TokenId, TokenRecord};
use cluster::node::{NodeHandle, Query};
use cluster::pki::store::PkiStore;
use cluster::pki::{CertificateAuthority, Fingerprint, IssuedCert, NodeCsr};
use cluster::raft::replica::{MembershipStep, StateRole};
use cluster::store::{Command, Expect, Member, Namespace, Outcome, Record};
use rustls_pki_types::pem::PemObject;

use super::handlers::{ADMIN_CERT_TTL, csr_der, issued, subject_name};
use super::{
    Connection, Failure, JsonBody, Member as MemberMode, Mode, ServerState, identity, system,
};
use crate::config::FailureDomain;
use crate::error_chain;
use crate::member::conditions::{ConditionRecord, condition};
use crate::member::identity::{MemberIdentity, Origin};
use crate::member::join::{JoinCallError, MemberEndpoint, request_membership};
use crate::member::{controller, directory_entry};

use super::replicated;

type Shared = State<Arc<ServerState>>;

/// How long a member being removed while it leads may take to hand over.
const HANDOVER_WAIT: Duration = Duration::from_secs(3);

fn already_member() -> Failure {
    Failure::new(
        ErrorCode::AlreadyMember,
        "this node already belongs to a cluster",
    )
}

/// Checks the setup token under the guess limiter.
fn check_setup_token(
    state: &ServerState,
    connection: &Connection,
    offered: &str,
) -> Result<(), Failure> {
    let client = connection.peer.ip();
    let now = Instant::now();
    let mut limiter = state
        .limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Err(wait) = limiter.check(client, now) {
        return Err(rate_limited(client, wait, "setup tokens"));
    }
    let token = state.setup_token().ok_or_else(already_member)?;
    if token.matches(offered) {
        return Ok(());
    }
    limiter.record_failure(client, now);
    // Console and log: an operator watching the node sees the attempt.
    tracing::warn!(peer = %connection.peer, "setup token refused");
    Err(Failure::new(
        ErrorCode::InvalidSetupToken,
        "the setup token is wrong",
    ))
}

fn rate_limited(client: IpAddr, wait: Duration, what: &str) -> Failure {
    Failure {
        retry_after: Some(wait),
        ..Failure::new(
            ErrorCode::RateLimited,
            format!(
                "too many wrong {what} from {client}; retry in {} s",
                wait.as_secs().max(1)
            ),
        )
    }
}

fn random_bytes(buf: &mut [u8]) -> Result<(), rustls::Error> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(buf)
        .map_err(rustls::Error::from)
}

fn random_id() -> Result<u64, Failure> {
    let mut bytes = [0u8; 8];
    random_bytes(&mut bytes).map_err(|e| Failure::internal("drawing a member id", &e))?;
    Ok(u64::from_le_bytes(bytes))
}

/// The cluster CA and this node's certificate, on a member.
fn member_pki(state: &ServerState) -> Result<(Arc<CertificateAuthority>, IssuedCert), Failure> {
    state
        .read_mode(|mode| match mode {
            Mode::Member(m) => Some((Arc::clone(&m.ca), m.node.clone())),
            Mode::Maintenance(_) => None,
        })
        .ok_or_else(|| {
            Failure::new(
                ErrorCode::MaintenanceMode,
                "this node has no cluster CA yet",
            )
        })
}

fn cluster_name_of(ca: &CertificateAuthority) -> String {
    rustls_pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes())
        .ok()
        .and_then(|der| cluster::pki::describe(&der).ok())
        .map(|s| identity::cluster_name(&s.common_name).to_owned())
        .unwrap_or_default()
}

/// This node's address as the cluster should know it.
fn advertised(state: &ServerState) -> Result<IpAddr, Failure> {
    state.advertised_address().ok_or_else(|| {
        Failure::new(
            ErrorCode::Unavailable,
            "this node has no address to give the cluster yet (no DHCP lease or static address)",
        )
    })
}

pub async fn bootstrap(
    State(state): Shared,
    Extension(connection): Extension<Connection>,
    JsonBody(request): JsonBody<BootstrapRequest>,
) -> Result<Json<BootstrapResponse>, Failure> {
    let _changing = state.changes.lock().await;
    if matches!(state.read_mode(|m| m.kind()), super::auth::NodeMode::Member) {
        return Err(already_member());
    }
    check_setup_token(&state, &connection, &request.setup_token)?;
    let cluster = subject_name(
        "cluster_name",
        request.cluster_name.as_deref().unwrap_or("cairn"),
    )?;
    let admin = subject_name("admin_name", &request.admin_name)?;
    let csr = csr_der("admin_csr_pem", &request.admin_csr_pem)?;
    let node_name = system::node_name();
    advertised(&state)?;
    let request_names =
        identity::node_request(&node_name, &super::network_addresses(&state.network))
            .map_err(|e| Failure::internal("naming the node certificate", &e))?;
    let store = PkiStore::new(&state.options.pki_dir);
    let member_options = state.options.member.clone();
    let (ca_name, admin_name) = (cluster.clone(), admin.clone());
    let made = tokio::task::spawn_blocking(move || {
        let now = SystemTime::now();
        let ca = CertificateAuthority::create(&ca_name, now)
            .map_err(|e| Failure::internal("creating the cluster CA", &e))?;
        let node = ca
            .issue_node(&request_names, now)
            .map_err(|e| Failure::internal("issuing the node certificate", &e))?;
        let admin_pem = ca
            .sign_client_csr(
                &csr,
                &admin_name,
                cluster::pki::Role::Admin,
                ADMIN_CERT_TTL,
                now,
            )
            .map_err(|e| {
                Failure::new(
                    ErrorCode::BadRequest,
                    format!("admin_csr_pem: {}", error_chain(&e)),
                )
            })?;
        // Identity first: a node with a CA always knows its Raft id.
        clear_raft_dir(&member_options.raft_dir)?;
        bootstrap_identity()
            .save(&member_options.identity_file)
            .map_err(|e| Failure::internal("saving the member identity", &e))?;
        store
            .save_ca(&ca)
            .map_err(|e| Failure::internal("saving the cluster CA", &e))?;
        store
            .save_node(&node)
            .map_err(|e| Failure::internal("saving the node certificate", &e))?;
        Ok::<_, Failure>((ca, node, admin_pem))
    })
    .await
    .map_err(|e| Failure::internal("bootstrapping", &e))??;
    let (ca, node, admin_pem) = made;
    let ca = Arc::new(ca);
    let admin_cert = issued(&ca, &admin, api::Role::Admin, admin_pem)?;
    let fingerprint: Fingerprint = ca.fingerprint();
    become_member(&state, ca, node, &bootstrap_identity()).await?;
    tracing::info!(
        cluster = cluster.as_str(),
        ca = %fingerprint,
        admin = admin.as_str(),
        peer = %connection.peer,
        "cluster bootstrapped; this node is its first member"
    );
    Ok(Json(BootstrapResponse {
        node_name,
        cluster_name: cluster.as_str().to_owned(),
        admin: admin_cert,
    }))
}

/// The identity of a member that creates the cluster.
pub fn bootstrap_identity() -> MemberIdentity {
    MemberIdentity {
        id: 1,
        origin: Origin::Bootstrap,
        peers: Vec::new(),
    }
}

/// Removes a Raft log left by an earlier, failed attempt to bootstrap or
/// join: a new member must start from an empty log.
fn clear_raft_dir(dir: &std::path::Path) -> Result<(), Failure> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::internal(
            &format!("clearing {}", dir.display()),
            &e,
        )),
    }
}

/// Switches the API to member mode and starts the Raft member.
async fn become_member(
    state: &ServerState,
    ca: Arc<CertificateAuthority>,
    node: IssuedCert,
    member_identity: &MemberIdentity,
) -> Result<(), Failure> {
    let (tls, verifier) = identity::member_tls(ca.cert_der(), &node)
        .map_err(|e| Failure::internal("building the member TLS configuration", &e))?;
    state.set_mode(Mode::Member(MemberMode {
        tls,
        verifier,
        ca,
        node,
    }));
    state
        .start_member(member_identity, None)
        .await
        .map_err(|e| Failure::internal("starting the raft member", &e))
}

pub async fn join(
    State(state): Shared,
    Extension(connection): Extension<Connection>,
    JsonBody(request): JsonBody<JoinRequest>,
) -> Result<Json<JoinResponse>, Failure> {
    let _changing = state.changes.lock().await;
    if matches!(state.read_mode(|m| m.kind()), super::auth::NodeMode::Member) {
        return Err(already_member());
    }
    check_setup_token(&state, &connection, &request.setup_token)?;
    let endpoint: MemberEndpoint =
        request
            .cluster
            .parse()
            .map_err(|e: crate::member::join::EndpointError| {
                Failure::new(ErrorCode::BadRequest, format!("cluster: {e}"))
            })?;
    request
        .token
        .parse::<JoinToken>()
        .map_err(|e| Failure::new(ErrorCode::BadRequest, format!("token: {e}")))?;
    let pinned: Fingerprint = request.ca_hash.parse().map_err(|e| {
        Failure::new(
            ErrorCode::BadRequest,
            format!("ca_hash: {e} (expected sha256:<64 hex digits>)"),
        )
    })?;
    join_cluster(&state, &endpoint, &request.token, pinned)
        .await
        .map(Json)
}

/// Joins the cluster at `endpoint` with `token`, trusting it only if its
/// CA is `pinned`: the work behind `POST /v1/cluster/join` and the
/// machine config's `[cluster.join]`. The caller holds `changes`.
async fn join_cluster(
    state: &ServerState,
    endpoint: &MemberEndpoint,
    token: &str,
    pinned: Fingerprint,
) -> Result<JoinResponse, Failure> {
    let address = advertised(state)?;
    let node_name = system::node_name();
    let names = identity::node_request(&node_name, &super::network_addresses(&state.network))
        .map_err(|e| Failure::internal("naming the node certificate", &e))?;
    let csr = tokio::task::spawn_blocking(move || cluster::pki::node_csr(&names))
        .await
        .map_err(|e| Failure::internal("making the node key", &e))?
        .map_err(|e| Failure::internal("making the node key", &e))?;
    let ask = MemberJoinRequest {
        token: token.to_owned(),
        node_name: node_name.clone(),
        address,
        csr_pem: csr.csr_pem.clone(),
        domain: state.failure_domain(),
    };
    let grant = request_membership(endpoint, pinned, &ask)
        .await
        .map_err(|e| match &e {
            JoinCallError::CaMismatch(_) => Failure::new(ErrorCode::CaMismatch, e.to_string()),
            JoinCallError::Refused { error, .. } => Failure::new(
                error.code,
                format!("the cluster refused the join: {}", error.message),
            ),
            JoinCallError::Unreachable { .. }
            | JoinCallError::BadAnswer { .. }
            | JoinCallError::Tls(_) => Failure::new(ErrorCode::ClusterUnreachable, error_chain(&e)),
        })?;
    let (ca, node) = accept_grant(&grant, pinned, csr.key_pem)?;
    let member_identity = MemberIdentity {
        id: grant.member_id,
        origin: Origin::Join,
        peers: directory(&grant)?,
    };
    let store = PkiStore::new(&state.options.pki_dir);
    let member_options = state.options.member.clone();
    let ca = Arc::new(ca);
    let (saved_identity, saved_ca, saved_node) =
        (member_identity.clone(), Arc::clone(&ca), node.clone());
    tokio::task::spawn_blocking(move || {
        clear_raft_dir(&member_options.raft_dir)?;
        saved_identity
            .save(&member_options.identity_file)
            .map_err(|e| Failure::internal("saving the member identity", &e))?;
        store
            .save_ca(&saved_ca)
            .map_err(|e| Failure::internal("saving the cluster CA", &e))?;
        store
            .save_node(&saved_node)
            .map_err(|e| Failure::internal("saving the node certificate", &e))
    })
    .await
    .map_err(|e| Failure::internal("saving the join", &e))??;
    become_member(state, ca, node, &member_identity).await?;
    tracing::info!(
        cluster = %grant.cluster_name,
        id = grant.member_id,
        via = %endpoint,
        "joined the cluster as a learner"
    );
    Ok(JoinResponse {
        node_name,
        cluster_name: grant.cluster_name,
        member_id: grant.member_id,
    })
}

/// First pause between zero-touch join attempts; it doubles up to
/// [`JOIN_RETRY_MAX`].
const JOIN_RETRY_FIRST: Duration = Duration::from_secs(5);
const JOIN_RETRY_MAX: Duration = Duration::from_secs(120);

/// Zero-touch join: while the node is in maintenance mode and its machine
/// config has `[cluster.join]`, tries to join with it, backing off between
/// attempts. Returns once the node is a member.
pub async fn join_from_config(state: &ServerState) {
    let mut pause = JOIN_RETRY_FIRST;
    loop {
        if matches!(state.read_mode(|m| m.kind()), super::auth::NodeMode::Member) {
            return;
        }
        let configured = state.config.borrow().config.cluster.join.clone();
        if let Some(join) = configured {
            let _changing = state.changes.lock().await;
            if matches!(state.read_mode(|m| m.kind()), super::auth::NodeMode::Member) {
                return;
            }
            let endpoint = join.endpoint.get().clone();
            match join_cluster(
                state,
                &endpoint,
                &join.token.get().to_string(),
                join.ca_hash.get(),
            )
            .await
            {
                Ok(joined) => {
                    tracing::info!(
                        cluster = %joined.cluster_name,
                        via = %endpoint,
                        "joined the cluster named in the machine config"
                    );
                    return;
                }
                Err(failure) => tracing::warn!(
                    via = %endpoint,
                    retry_in_s = pause.as_secs(),
                    "joining the cluster named in the machine config failed: {}",
                    failure.error.message
                ),
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(JOIN_RETRY_MAX);
    }
}

/// Checks a grant before anything of it is saved: the CA is the pinned
/// one and can sign, and the certificate is for the key this node made.
fn accept_grant(
    grant: &MemberGrant,
    pinned: Fingerprint,
    key_pem: String,
) -> Result<(CertificateAuthority, IssuedCert), Failure> {
    let bad = |what: String| {
        Failure::new(
            ErrorCode::ClusterUnreachable,
            format!("the cluster's join answer is unusable: {what}"),
        )
    };
    let ca = CertificateAuthority::from_pem(&grant.ca_pem, &grant.ca_key_pem)
        .map_err(|e| bad(format!("the CA: {}", error_chain(&e))))?;
    if ca.fingerprint() != pinned {
        return Err(Failure::new(
            ErrorCode::CaMismatch,
            format!(
                "the cluster's join answer carries CA {}, not the pinned {pinned}",
                ca.fingerprint()
            ),
        ));
    }
    let node = IssuedCert {
        cert_pem: grant.node_cert_pem.clone(),
        key_pem,
    };
    identity::member_tls(ca.cert_der(), &node)
        .map_err(|e| bad(format!("the node certificate: {}", error_chain(&e))))?;
    if grant.member_id == 0 {
        return Err(bad("member id 0".to_owned()));
    }
    Ok((ca, node))
}

fn directory(grant: &MemberGrant) -> Result<Vec<Member>, Failure> {
    grant
        .members
        .iter()
        .map(|m| {
            let parse = |what: &str, text: &str| {
                text.parse().map_err(|_| {
                    Failure::new(
                        ErrorCode::ClusterUnreachable,
                        format!(
                            "the join answer lists member {} with a bad {what} {text:?}",
                            m.name
                        ),
                    )
                })
            };
            Ok(Member {
                id: m.id,
                name: m.name.clone(),
                peer_addr: parse("peer address", &m.peer_address)?,
                api_addr: parse("address", &m.address)?,
                domain: None,
            })
        })
        .collect()
}

fn member_record(m: &Member) -> MemberRecord {
    MemberRecord {
        id: m.id,
        name: m.name.clone(),
        address: m.api_addr.to_string(),
        peer_address: m.peer_addr.to_string(),
    }
}

fn token_refused(state: &ServerState, connection: &Connection, why: &str) -> Failure {
    let client = connection.peer.ip();
    state
        .join_limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .record_failure(client, Instant::now());
    tracing::warn!(peer = %connection.peer, "join refused: {why}");
    Failure::new(
        ErrorCode::InvalidJoinToken,
        format!("the join token was refused: {why}"),
    )
}

/// Reads a token's record and the revision it is at.
async fn token_record(
    handle: &NodeHandle,
    id: &TokenId,
) -> Result<Option<(TokenRecord, u64)>, Failure> {
    let read = replicated::read(handle, Query::Get(token::store_key(id))).await?;
    let Some((_, record)) = read.records.first() else {
        return Ok(None);
    };
    let parsed = serde_json::from_slice::<TokenRecord>(&record.value)
        .map_err(|e| Failure::internal("reading a join token record", &e))?;
    Ok(Some((parsed, record.mod_revision)))
}

fn token_write(record: &TokenRecord, expect: Expect) -> Command {
    Command::Put {
        key: token::store_key(record.id()),
        value: serde_json::to_vec(record).unwrap_or_default(),
        expect,
    }
}

/// How many times a compare-and-set on a token record is retried when
/// another request changed the record in between.
const TOKEN_CAS_ATTEMPTS: usize = 5;

pub async fn member_add(
    State(state): Shared,
    Extension(connection): Extension<Connection>,
    JsonBody(request): JsonBody<MemberJoinRequest>,
) -> Result<Json<MemberGrant>, Failure> {
    let client = connection.peer.ip();
    let limited = state
        .join_limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .check(client, Instant::now());
    if let Err(wait) = limited {
        return Err(rate_limited(client, wait, "join tokens"));
    }
    let presented: JoinToken = request
        .token
        .parse()
        .map_err(|e: token::ParseJoinTokenError| {
            token_refused(&state, &connection, &e.to_string())
        })?;
    let name = subject_name("node_name", &request.node_name)?;
    let domain = request
        .domain
        .clone()
        .map(|d| {
            FailureDomain::try_from(d)
                .map(|d| d.as_str().to_owned())
                .map_err(|e| Failure::new(ErrorCode::BadRequest, format!("domain: {e}")))
        })
        .transpose()?;
    let csr = NodeCsr::from_der(&csr_der("csr_pem", &request.csr_pem)?).map_err(|e| {
        Failure::new(
            ErrorCode::BadRequest,
            format!("csr_pem: {}", error_chain(&e)),
        )
    })?;
    if csr.request().name != name {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            format!(
                "csr_pem names node {:?}, the request {:?}",
                csr.request().name.as_str(),
                name.as_str()
            ),
        ));
    }
    let member = replicated::running(&state)?;
    let handle = member.handle();
    let (ca, _) = member_pki(&state)?;
    let members = handle
        .members()
        .await
        .map_err(|e| replicated::store_failure(&e, false))?;
    if members.iter().any(|m| m.name == name.as_str()) {
        return Err(Failure::new(
            ErrorCode::MemberExists,
            format!(
                "a member named {:?} exists already; remove it first (`cairn node remove {}`) or give the new node another name",
                name.as_str(),
                name.as_str()
            ),
        ));
    }

    // Count the use before admitting: a use is spent even if the join
    // fails later, which errs on the side of the limit.
    let mut counted = false;
    for _ in 0..TOKEN_CAS_ATTEMPTS {
        let Some((mut record, revision)) = token_record(handle, presented.id()).await? else {
            return Err(token_refused(&state, &connection, "no such token"));
        };
        record
            .check(&presented, SystemTime::now())
            .map_err(|e| token_refused(&state, &connection, &e.to_string()))?;
        record.record_use();
        match replicated::write(handle, token_write(&record, Expect::Revision(revision))).await? {
            Outcome::Written { .. } => {
                counted = true;
                break;
            }
            Outcome::Conflict { .. } => continue,
            other => {
                return Err(Failure::new(
                    ErrorCode::Internal,
                    format!("a token update answered {other:?}"),
                ));
            }
        }
    }
    if !counted {
        return Err(Failure::new(
            ErrorCode::Unavailable,
            "the join token is being used by other joins right now; retry",
        ));
    }

    let id = loop {
        let id = random_id()?;
        if id != 0 && !members.iter().any(|m| m.id == id) {
            break id;
        }
    };
    let signer = Arc::clone(&ca);
    let node_cert_pem =
        tokio::task::spawn_blocking(move || signer.sign_node_csr(&csr, SystemTime::now()))
            .await
            .map_err(|e| Failure::internal("signing the node certificate", &e))?
            .map_err(|e| Failure::internal("signing the node certificate", &e))?;
    let entry = directory_entry(id, name.as_str(), request.address, api::API_PORT, domain);
    replicated::change_membership(
        handle,
        vec![MembershipStep::AddLearner(id)],
        vec![entry],
        Vec::new(),
    )
    .await?;
    let members = handle
        .members()
        .await
        .map_err(|e| replicated::store_failure(&e, false))?;
    tracing::info!(
        node = name.as_str(),
        id,
        address = %request.address,
        token = presented.id().as_str(),
        "node admitted as a learner"
    );
    Ok(Json(MemberGrant {
        member_id: id,
        cluster_name: cluster_name_of(&ca),
        node_cert_pem,
        ca_pem: ca.cert_pem().to_owned(),
        ca_key_pem: ca.key_pem(),
        members: members.iter().map(member_record).collect(),
    }))
}

pub async fn member_remove(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Json<MemberRemoved>, Failure> {
    let member = replicated::running(&state)?;
    let handle = member.handle();
    let members = handle
        .members()
        .await
        .map_err(|e| replicated::store_failure(&e, false))?;
    let target = members
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            Failure::new(
                ErrorCode::MemberNotFound,
                format!("no member is named {name:?}"),
            )
        })?
        .clone();
    hand_over_if_leading(handle, target.id).await?;
    replicated::change_membership(
        handle,
        vec![MembershipStep::Remove(target.id)],
        Vec::new(),
        vec![target.id],
    )
    .await?;
    tracing::warn!(node = %target.name, id = target.id, "member removed from the cluster");
    Ok(Json(MemberRemoved {
        name: target.name,
        id: target.id,
    }))
}

/// A leader that is about to be removed hands over first and the removal
/// goes through the next leader.
async fn hand_over_if_leading(handle: &NodeHandle, target: u64) -> Result<(), Failure> {
    let Some(status) = handle.status() else {
        return Err(replicated::store_failure(
            &cluster::node::StoreError::Stopped,
            true,
        ));
    };
    if status.leader != target {
        return Ok(());
    }
    let Some(successor) = status.voters.iter().copied().find(|id| *id != target) else {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            "the only voter cannot be removed; the cluster would have none",
        ));
    };
    if status.id == target {
        handle
            .transfer_leader(successor)
            .await
            .map_err(|e| replicated::store_failure(&e, true))?;
    }
    let mut watch = handle.watch_status();
    let moved = tokio::time::timeout(HANDOVER_WAIT, async {
        loop {
            let leader = watch.borrow_and_update().as_ref().map(|s| s.leader);
            if leader.is_some_and(|l| l != target && l != 0) {
                return true;
            }
            if watch.changed().await.is_err() {
                return false;
            }
        }
    })
    .await;
    match moved {
        Ok(true) => Ok(()),
        _ => Err(Failure::new(
            ErrorCode::NoLeader,
            "the leader being removed did not hand over in time; retry",
        )),
    }
}

pub async fn status(State(state): Shared) -> Result<Json<ClusterStatus>, Failure> {
    let member = replicated::running(&state)?;
    let handle = member.handle();
    let status = handle
        .status()
        .ok_or_else(|| replicated::store_failure(&cluster::node::StoreError::Stopped, false))?;
    let members = handle
        .members()
        .await
        .map_err(|e| replicated::store_failure(&e, false))?;
    let recorded = handle
        .read_local(Query::List {
            prefix: Namespace::Nodes.prefix().to_owned(),
            limit: usize::MAX,
        })
        .await
        .map_err(|e| replicated::store_failure(&e, false))?;
    let recorded: std::collections::HashMap<u64, ConditionRecord> = recorded
        .records
        .iter()
        .filter_map(|(key, record): &(cluster::store::Key, Record)| {
            let id = Namespace::Nodes.strip(key)?.parse().ok()?;
            Some((id, serde_json::from_slice(&record.value).ok()?))
        })
        .collect();
    let leads = status.role == StateRole::Leader;
    let contact = member.contact();
    let thresholds = controller::thresholds(&member.policy());
    let now = Instant::now();
    let mut out = Vec::new();
    for m in &members {
        let role = if status.voters.contains(&m.id) {
            MemberRole::Voter
        } else {
            MemberRole::Learner
        };
        let progress = status.progress.get(&m.id);
        let matched = if m.id == status.id && leads {
            Some(status.commit)
        } else {
            progress.map(|p| p.matched)
        };
        let last_contact = contact.as_ref().and_then(|c| c.last_contact(m.id, now));
        let (state_now, since) = match (&contact, recorded.get(&m.id)) {
            (Some(c), record) => {
                let live = condition(c.silent_for(m.id, now), &thresholds);
                let since = record.filter(|r| r.state == live).map(|r| r.since);
                (live, since)
            }
            (None, Some(record)) => (record.state, Some(record.since)),
            (None, None) => (MemberState::NotReady, None),
        };
        out.push(MemberStatus {
            name: m.name.clone(),
            id: m.id,
            address: m.api_addr.to_string(),
            peer_address: m.peer_addr.to_string(),
            role,
            state: state_now,
            since,
            domain: m.domain.clone(),
            matched: matched.filter(|_| leads),
            lag: matched
                .filter(|_| leads)
                .map(|matched| status.commit.saturating_sub(matched)),
            last_contact_ms: last_contact
                .filter(|_| leads)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        });
    }
    let (ca, _) = member_pki(&state)?;
    let name_of = |id: u64| members.iter().find(|m| m.id == id).map(|m| m.name.clone());
    Ok(Json(ClusterStatus {
        name: cluster_name_of(&ca),
        answered_by: name_of(status.id).unwrap_or_else(system::node_name),
        leader: name_of(status.leader),
        term: status.term,
        commit: status.commit,
        applied: status.applied,
        members: out,
    }))
}

pub async fn backup(State(state): Shared) -> Result<Json<ClusterBackup>, Failure> {
    let member = replicated::running(&state)?;
    let handle = member.handle();
    // A linearizable read first: the export then holds every write
    // acknowledged before this call.
    replicated::read(
        handle,
        Query::List {
            prefix: String::new(),
            limit: 0,
        },
    )
    .await?;
    let export = handle
        .export()
        .await
        .map_err(|e| replicated::store_failure(&e, false))?;
    let members = handle
        .members()
        .await
        .map_err(|e| replicated::store_failure(&e, false))?;
    let (ca, _) = member_pki(&state)?;
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&export.data));
    tracing::info!(
        revision = export.revision,
        bytes = export.data.len(),
        "backup taken"
    );
    Ok(Json(ClusterBackup {
        cluster_name: cluster_name_of(&ca),
        ca_hash: ca.fingerprint().to_string(),
        revision: export.revision,
        taken_at: Timestamp::from_system(SystemTime::now()),
        taken_from: system::node_name(),
        members: members.iter().map(member_record).collect(),
        sha256,
        data: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &export.data),
    }))
}

/// The largest restore request: a backup of a store near its size limits.
pub const MAX_RESTORE_BYTES: usize = 256 << 20;

pub async fn restore(
    State(state): Shared,
    Extension(connection): Extension<Connection>,
    JsonBody(request): JsonBody<RestoreRequest>,
) -> Result<Json<RestoreResponse>, Failure> {
    let _changing = state.changes.lock().await;
    let backup = request.backup;
    let (ca, _) = member_pki(&state)?;
    if backup.ca_hash != ca.fingerprint().to_string() {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            format!(
                "backup.ca_hash: the backup is of the cluster with CA {}, this node belongs to {}",
                backup.ca_hash,
                ca.fingerprint()
            ),
        ));
    }
    let data = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &backup.data)
        .map_err(|e| {
            Failure::new(
                ErrorCode::BadRequest,
                format!("backup.data: not base64: {e}"),
            )
        })?;
    let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data));
    if sha256 != backup.sha256 {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            format!(
                "backup.data: its SHA-256 is {sha256}, the backup says {}; the file is damaged",
                backup.sha256
            ),
        ));
    }
    let restored = cluster::store::StoreState::decode(&data).map_err(|e| {
        Failure::new(
            ErrorCode::BadRequest,
            format!("backup.data: {}", error_chain(&e)),
        )
    })?;
    let member = replicated::running(&state)?;
    let status = member
        .handle()
        .status()
        .ok_or_else(|| replicated::store_failure(&cluster::node::StoreError::Stopped, false))?;
    if status.leader != 0 && !request.force {
        return Err(Failure::new(
            ErrorCode::AlreadyMember,
            "this node's cluster has a leader: it has not lost its quorum, and restoring here would split it; \
             restore only when a majority of voters is gone for good (or pass force)",
        ));
    }
    let own_id = member.id();
    drop(member);
    state.stop_member().await;
    let identity = MemberIdentity {
        id: own_id,
        origin: Origin::Bootstrap,
        peers: Vec::new(),
    };
    let member_options = state.options.member.clone();
    let saved = identity.clone();
    tokio::task::spawn_blocking(move || {
        clear_raft_dir(&member_options.raft_dir)?;
        saved
            .save(&member_options.identity_file)
            .map_err(|e| Failure::internal("saving the member identity", &e))
    })
    .await
    .map_err(|e| Failure::internal("restoring", &e))??;
    let revision = backup.revision;
    state
        .start_member(&identity, Some(restored))
        .await
        .map_err(|e| Failure::internal("starting the restored member", &e))?;
    tracing::warn!(
        revision,
        taken_at = %backup.taken_at,
        by = connection.caller.name(),
        "cluster restored from a backup; this node is the one voter of a new cluster, other nodes must join again"
    );
    Ok(Json(RestoreResponse {
        node_name: system::node_name(),
        revision,
    }))
}

/// Default lifetime of a join token.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);

pub async fn token_create(
    State(state): Shared,
    Extension(connection): Extension<Connection>,
    JsonBody(request): JsonBody<TokenCreateRequest>,
) -> Result<Json<CreatedToken>, Failure> {
    let member = replicated::running(&state)?;
    let handle = member.handle();
    let (ca, _) = member_pki(&state)?;
    let ttl = request.ttl_s.map_or(DEFAULT_TOKEN_TTL, Duration::from_secs);
    let bad = |e: token::TokenRecordError| Failure::new(ErrorCode::BadRequest, e.to_string());
    // A fresh id collides with an existing one about once in two billion
    // tokens; the create-only write catches it and a new token is drawn.
    for _ in 0..3 {
        let token = JoinToken::generate(random_bytes)
            .map_err(|e| Failure::internal("drawing a join token", &e))?;
        let mut record =
            TokenRecord::new(&token, SystemTime::now(), ttl, request.uses).map_err(bad)?;
        if let Some(description) = request.description.clone() {
            record = record.with_description(description).map_err(bad)?;
        }
        match replicated::write(handle, token_write(&record, Expect::Absent)).await? {
            Outcome::Written { .. } => {
                let here = handle
                    .members()
                    .await
                    .map_err(|e| replicated::store_failure(&e, false))?
                    .into_iter()
                    .find(|m| m.id == member.id())
                    .map_or_else(
                        || state.options.addr.to_string(),
                        |m| m.api_addr.to_string(),
                    );
                let ca_hash = ca.fingerprint().to_string();
                tracing::info!(
                    id = token.id().as_str(),
                    ttl_s = ttl.as_secs(),
                    uses = ?request.uses,
                    by = connection.caller.name(),
                    "join token created"
                );
                return Ok(Json(CreatedToken {
                    join_command: format!(
                        "cairn node join --endpoint <NEW_NODE>:{} --setup-token <SETUP_TOKEN> --cluster {here} --token {token} --ca-hash {ca_hash}",
                        api::API_PORT
                    ),
                    token: token.to_string(),
                    id: token.id().as_str().to_owned(),
                    ca_hash,
                    expires_at: unix(record.expires_at()),
                    uses: request.uses,
                }));
            }
            Outcome::Conflict { .. } => continue,
            other => {
                return Err(Failure::new(
                    ErrorCode::Internal,
                    format!("a token write answered {other:?}"),
                ));
            }
        }
    }
    Err(Failure::new(
        ErrorCode::Internal,
        "three fresh join token ids were all taken; the random source is suspect",
    ))
}

fn unix(seconds: u64) -> Timestamp {
    Timestamp::from_unix(i64::try_from(seconds).unwrap_or(i64::MAX))
        .unwrap_or_else(|| Timestamp::from_system(SystemTime::UNIX_EPOCH))
}

fn token_info(record: &TokenRecord, now: SystemTime) -> TokenInfo {
    let summary = record.summary();
    let now_s = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let state = if summary.revoked {
        TokenState::Revoked
    } else if now_s >= summary.expires_at {
        TokenState::Expired
    } else if summary.uses_allowed.is_some_and(|a| summary.uses >= a) {
        TokenState::UsedUp
    } else {
        TokenState::Valid
    };
    TokenInfo {
        id: summary.id.as_str().to_owned(),
        description: summary.description,
        state,
        created_at: unix(summary.created_at),
        expires_at: unix(summary.expires_at),
        used: summary.uses,
        uses: summary.uses_allowed,
    }
}

pub async fn token_list(State(state): Shared) -> Result<Json<TokenList>, Failure> {
    let member = replicated::running(&state)?;
    let read = replicated::read(
        member.handle(),
        Query::List {
            prefix: Namespace::Tokens.prefix().to_owned(),
            limit: usize::MAX,
        },
    )
    .await?;
    let now = SystemTime::now();
    let tokens = read
        .records
        .iter()
        .filter_map(|(_, record)| serde_json::from_slice::<TokenRecord>(&record.value).ok())
        .map(|record| token_info(&record, now))
        .collect();
    Ok(Json(TokenList { tokens }))
}

pub async fn token_revoke(
    State(state): Shared,
    Extension(connection): Extension<Connection>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, Failure> {
    let id: TokenId = id.parse().map_err(|e: token::ParseTokenIdError| {
        Failure::new(ErrorCode::BadRequest, format!("id: {e}"))
    })?;
    let member = replicated::running(&state)?;
    let handle = member.handle();
    for _ in 0..TOKEN_CAS_ATTEMPTS {
        let Some((mut record, revision)) = token_record(handle, &id).await? else {
            return Err(Failure::new(
                ErrorCode::TokenNotFound,
                format!("no join token has id {:?}", id.as_str()),
            ));
        };
        record.revoke();
        if let Outcome::Written { .. } =
            replicated::write(handle, token_write(&record, Expect::Revision(revision))).await?
        {
            tracing::warn!(
                id = id.as_str(),
                by = connection.caller.name(),
                "join token revoked"
            );
            return Ok(Json(token_info(&record, SystemTime::now())));
        }
    }
    Err(Failure::new(
        ErrorCode::Unavailable,
        "the join token kept changing while it was being revoked; retry",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_states_follow_revocation_expiry_and_uses() {
        let token = JoinToken::generate(random_bytes).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut record = TokenRecord::new(&token, at, Duration::from_secs(600), Some(1)).unwrap();
        assert_eq!(token_info(&record, at).state, TokenState::Valid);
        assert_eq!(
            token_info(&record, at + Duration::from_secs(600)).state,
            TokenState::Expired
        );
        record.record_use();
        assert_eq!(token_info(&record, at).state, TokenState::UsedUp);
        record.revoke();
        assert_eq!(token_info(&record, at).state, TokenState::Revoked);
        assert_eq!(token_info(&record, at).used, 1);
    }
}
