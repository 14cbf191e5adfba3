//! Runs the real `cairn` binary against a minimal in-test node API: HTTPS
//! on 127.0.0.1 with a self-signed certificate until bootstrap, then the
//! cluster CA's node certificate with client certificates required. Only
//! what the CLI's behaviour depends on is faked; the real server is
//! tested in nodeagent.
//!
//! The cluster routes (kv, status, tokens, join, member removal) are faked
//! with the API's own types and query extractor, so the tests see the same
//! decoding of paths and query strings as `cairnd`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use api::types::{
    BootInfo, BootstrapRequest, BootstrapResponse, ClusterBackup, ClusterInfo, ClusterStatus,
    CreatedToken, ImageList, ImageRefQuery, ImageRemoved, ImageSummary, ImportResponse,
    ImportedImage, IssuedCertificate, JoinRequest, JoinResponse, KvEvent, KvEventKind, KvKeyQuery,
    KvList, KvListQuery, KvPutRequest, KvRecord, KvWatchQuery, KvWritten, LogEntry, LogLevel,
    LogSource, MemberRemoved, MemberRole, MemberState, MemberStatus, NodeInfo, OCI_ARCHIVE,
    PruneResponse, RestoreRequest, RestoreResponse, TokenCreateRequest, TokenInfo, TokenList,
    TokenState, VersionInfo,
};
use api::{ApiError, ErrorCode, Timestamp};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use cluster::pki::{CertificateAuthority, Fingerprint, NodeCertRequest, Role, SubjectName};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const TOKEN: &str = "correct-horse";

struct NodeState {
    ca: CertificateAuthority,
    bootstrapped: AtomicBool,
    maintenance: TlsAcceptor,
    member: TlsAcceptor,
    maintenance_fingerprint: Fingerprint,
    /// Released by the test to let the followed log go on.
    release_log: Notify,
    /// The query string the last logs request carried.
    logs_query: Mutex<Option<String>>,
    /// Whether reboots are allowed (else they are refused as role_too_low).
    allow_reboot: AtomicBool,
    /// Node info calls since the last accepted reboot; the first one
    /// answers 503 as a node still coming up would.
    polls_since_reboot: Mutex<Option<u32>>,
    /// TCP connections accepted, to prove a command never connected.
    connections: AtomicUsize,
    /// The key-value store.
    kv: Mutex<FakeKv>,
    /// The last kv write request, as the node decoded it.
    last_put: Mutex<Option<KvPutRequest>>,
    /// The last restore request.
    last_restore: Mutex<Option<RestoreRequest>>,
    /// The last kv delete query, as the node decoded it.
    last_delete: Mutex<Option<KvKeyQuery>>,
    /// Released by the test to let a watch send the changes made since it
    /// started.
    release_watch: Notify,
    /// The address `cluster status` gives for the leader (node-1); it
    /// answers as the leader when asked on 127.0.0.1 and as a follower
    /// (node-2) when asked as localhost.
    leader_address: Mutex<String>,
    /// The last token create request.
    last_token_request: Mutex<Option<TokenCreateRequest>>,
    /// The last join request.
    last_join: Mutex<Option<JoinRequest>>,
    /// Member names removed, as the node decoded them from the path.
    removed: Mutex<Vec<String>>,
    /// The image store.
    images: Mutex<FakeImages>,
}

/// An image store that records what it was sent and serves a fixed
/// archive.
#[derive(Default)]
struct FakeImages {
    /// Reference -> digest.
    refs: BTreeMap<String, String>,
    /// The last import body, as received.
    last_upload: Vec<u8>,
    /// References removed, as the node decoded them from the path.
    removed: Vec<String>,
}

const IMAGE_DIGEST: &str =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const LAYER_DIGEST: &str =
    "sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// What the fake exports: big enough to arrive in many chunks.
fn fake_archive() -> Vec<u8> {
    (0..3 * 1024 * 1024u32)
        .map(|i| u8::try_from(i % 251).expect("below 256"))
        .collect()
}

async fn image_import(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let mut images = state.images.lock().expect("lock");
    images.last_upload = body.to_vec();
    images
        .refs
        .insert("hello:1".to_owned(), IMAGE_DIGEST.to_owned());
    json_response(
        StatusCode::OK,
        &ImportResponse {
            images: vec![ImportedImage {
                reference: "hello:1".to_owned(),
                digest: IMAGE_DIGEST.to_owned(),
            }],
        },
    )
}

async fn image_list(State(state): State<Arc<NodeState>>) -> Response {
    let images = state.images.lock().expect("lock");
    let list = ImageList {
        images: images
            .refs
            .iter()
            .map(|(reference, digest)| ImageSummary {
                reference: Some(reference.clone()),
                digest: digest.clone(),
                size: 3 * 1024 * 1024,
                created: Some("2026-11-22T00:00:00Z".to_owned()),
            })
            .collect(),
    };
    json_response(StatusCode::OK, &list)
}

async fn image_export(Query(q): Query<ImageRefQuery>) -> Response {
    if q.reference != "hello:1" {
        return refuse(
            ErrorCode::ImageNotFound,
            &format!("no image {}", q.reference),
        );
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OCI_ARCHIVE)],
        fake_archive(),
    )
        .into_response()
}

async fn image_remove(
    State(state): State<Arc<NodeState>>,
    UrlPath(reference): UrlPath<String>,
) -> Response {
    let mut images = state.images.lock().expect("lock");
    if images.refs.remove(&reference).is_none() {
        return refuse(ErrorCode::ImageNotFound, &format!("no image {reference}"));
    }
    images.removed.push(reference.clone());
    json_response(
        StatusCode::OK,
        &ImageRemoved {
            removed: vec![reference],
        },
    )
}

/// NDJSON as the node streams a pull: `denied` in the reference makes the
/// registry refuse the credentials, `cut` ends the stream early.
async fn image_pull(body: Bytes) -> Response {
    let request: serde_json::Value = serde_json::from_slice(&body).expect("pull request");
    let reference = request["reference"].as_str().expect("reference").to_owned();
    let source = serde_json::json!({"registry": "registry.site.internal:5000", "role": "upstream"});
    let peer = serde_json::json!({"registry": "registry.site.internal:5000", "role": "peer", "node": "node-b"});
    let mut lines = vec![serde_json::json!({
        "event": "resolved", "digest": IMAGE_DIGEST, "source": source,
        "blobs": [{"digest": IMAGE_DIGEST, "size": 2048, "present": false},
                  {"digest": LAYER_DIGEST, "size": 4096, "present": false}],
    })];
    if reference.contains("denied") {
        lines.push(serde_json::json!({"event": "error", "code": "registry_auth_failed",
            "message": "registry registry.site.internal:5000 refused the credentials of the machine config"}));
    } else if !reference.contains("cut") {
        lines.push(
            serde_json::json!({"event": "progress", "digest": IMAGE_DIGEST,
            "done": 2048, "total": 2048, "source": source}),
        );
        lines.push(
            serde_json::json!({"event": "progress", "digest": LAYER_DIGEST,
            "done": 4096, "total": 4096, "source": peer}),
        );
        lines.push(
            serde_json::json!({"event": "done", "references": [reference], "digest": IMAGE_DIGEST}),
        );
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    (StatusCode::OK, [(header::CONTENT_TYPE, api::NDJSON)], text).into_response()
}

async fn image_prune() -> Response {
    json_response(
        StatusCode::OK,
        &PruneResponse {
            images: vec![IMAGE_DIGEST.to_owned()],
            blobs: vec![IMAGE_DIGEST.to_owned(), IMAGE_DIGEST.to_owned()],
            layers: vec![],
            bytes_freed: 2048,
        },
    )
}

/// A key-value store with etcd-style revisions and a full history.
#[derive(Default)]
struct FakeKv {
    revision: u64,
    records: BTreeMap<String, KvRecord>,
    history: Vec<KvEvent>,
}

/// Accepts TCP connections and completes the TLS handshake with the
/// acceptor for the node's current mode; failed handshakes (a client that
/// refused the certificate) are dropped and the next one is taken.
struct TlsListener {
    tcp: TcpListener,
    state: Arc<NodeState>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            self.state.connections.fetch_add(1, Ordering::SeqCst);
            let acceptor = if self.state.bootstrapped.load(Ordering::SeqCst) {
                &self.state.member
            } else {
                &self.state.maintenance
            };
            if let Ok(tls) = acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn name(s: &str) -> SubjectName {
    SubjectName::try_from(s).expect("valid name")
}

fn maintenance_acceptor() -> (TlsAcceptor, Fingerprint) {
    let own = cluster::pki::self_signed_server(
        &NodeCertRequest {
            name: name("node-1"),
            dns_names: vec![],
            ip_addresses: vec![],
        },
        SystemTime::now(),
    )
    .expect("self-signed certificate");
    let cert = CertificateDer::from_pem_slice(own.cert_pem.as_bytes()).expect("cert pem");
    let key = PrivateKeyDer::from_pem_slice(own.key_pem.as_bytes()).expect("key pem");
    let fingerprint = Fingerprint::of_der(&cert);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    (TlsAcceptor::from(Arc::new(config)), fingerprint)
}

fn member_acceptor(ca: &CertificateAuthority) -> TlsAcceptor {
    let own = ca
        .issue_node(
            &NodeCertRequest {
                name: name("node-1"),
                dns_names: vec!["localhost".to_owned()],
                ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            },
            SystemTime::now(),
        )
        .expect("node certificate");
    let config = cluster::pki::tls::server_config(ca.cert_der(), &own).expect("server config");
    TlsAcceptor::from(Arc::new(config))
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).expect("serialise"),
    )
        .into_response()
}

fn refuse(code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.status()).expect("status");
    json_response(status, &ApiError::new(code, message))
}

async fn bootstrap(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<BootstrapRequest>(&body) else {
        return refuse(ErrorCode::BadRequest, "bad bootstrap request");
    };
    if request.setup_token != TOKEN {
        return refuse(
            ErrorCode::InvalidSetupToken,
            "the setup token does not match",
        );
    }
    let csr = CertificateSigningRequestDer::from_pem_slice(request.admin_csr_pem.as_bytes())
        .expect("csr pem");
    let cert_pem = state
        .ca
        .sign_client_csr(
            &csr,
            &name(&request.admin_name),
            Role::Admin,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .expect("sign");
    state.bootstrapped.store(true, Ordering::SeqCst);
    json_response(
        StatusCode::OK,
        &BootstrapResponse {
            node_name: "node-1".to_owned(),
            cluster_name: request.cluster_name.unwrap_or_else(|| "cairn".to_owned()),
            admin: IssuedCertificate {
                name: request.admin_name,
                role: api::Role::Admin,
                cert_pem,
                ca_pem: state.ca.cert_pem().to_owned(),
                ca_fingerprint: state.ca.fingerprint().to_string(),
                not_after: Timestamp::from_system(SystemTime::now() + Duration::from_secs(3600)),
            },
        },
    )
}

async fn node_info(State(state): State<Arc<NodeState>>) -> Response {
    let boot_id = {
        let mut polls = state.polls_since_reboot.lock().expect("lock");
        match polls.as_mut() {
            None => "boot-1",
            Some(n) => {
                *n += 1;
                if *n == 1 {
                    return refuse(ErrorCode::Unavailable, "the node is starting");
                }
                "boot-2"
            }
        }
    };
    json_response(
        StatusCode::OK,
        &NodeInfo {
            name: "node-1".to_owned(),
            version: "0.1.0".to_owned(),
            addresses: vec!["127.0.0.1/8".to_owned()],
            uptime_s: 42,
            kernel: "6.1.0-56-amd64".to_owned(),
            boot_id: boot_id.to_owned(),
            boot: BootInfo {
                firmware: "uefi".to_owned(),
                entry: "cairn-0.1.0.conf".to_owned(),
                counter: "good".to_owned(),
                tries_left: None,
                loader: "systemd-boot".to_owned(),
            },
            cluster: Some(ClusterInfo {
                name: "cairn".to_owned(),
                ca_fingerprint: state.ca.fingerprint().to_string(),
            }),
            certificates: vec![],
        },
    )
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &VersionInfo {
            version: "0.1.0".to_owned(),
            api: "v1".to_owned(),
        },
    )
}

async fn reboot(State(state): State<Arc<NodeState>>) -> Response {
    if !state.allow_reboot.load(Ordering::SeqCst) {
        return refuse(
            ErrorCode::RoleTooLow,
            "role reader is too low for node_reboot (needs operator)",
        );
    }
    *state.polls_since_reboot.lock().expect("lock") = Some(0);
    json_response(
        StatusCode::ACCEPTED,
        &api::types::PowerResponse {
            action: "reboot".to_owned(),
            boot_id: "boot-1".to_owned(),
        },
    )
}

async fn apply_config(body: Bytes) -> Response {
    let request: api::types::ApplyConfigRequest =
        serde_json::from_slice(&body).expect("apply request");
    if request.toml.contains("bad") {
        return refuse(
            ErrorCode::InvalidConfig,
            "node.hostname: \"bad name\" is not a valid host name",
        );
    }
    json_response(
        StatusCode::OK,
        &api::types::ApplyConfigResponse {
            applied: !request.dry_run,
            dry_run: request.dry_run,
            changed: vec!["node".to_owned()],
        },
    )
}

async fn issue_cert(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let request: api::types::IssueCertificateRequest =
        serde_json::from_slice(&body).expect("issue request");
    let csr =
        CertificateSigningRequestDer::from_pem_slice(request.csr_pem.as_bytes()).expect("csr pem");
    let role = match request.role {
        api::Role::Reader => Role::Reader,
        api::Role::Operator => Role::Operator,
        api::Role::Admin => Role::Admin,
    };
    let ttl = Duration::from_secs(request.ttl_s);
    let cert_pem = state
        .ca
        .sign_client_csr(&csr, &name(&request.name), role, ttl, SystemTime::now())
        .expect("sign");
    json_response(
        StatusCode::OK,
        &IssuedCertificate {
            name: request.name,
            role: request.role,
            cert_pem,
            ca_pem: state.ca.cert_pem().to_owned(),
            ca_fingerprint: state.ca.fingerprint().to_string(),
            not_after: Timestamp::from_system(SystemTime::now() + ttl),
        },
    )
}

fn log_line(n: u32) -> String {
    let entry = LogEntry {
        ts: Timestamp::from_unix(1_800_000_000 + i64::from(n)).expect("ts"),
        boot_id: "boot-1".to_owned(),
        source: LogSource::Cairnd,
        level: LogLevel::Info,
        message: format!("entry {n}"),
    };
    format!("{}\n", serde_json::to_string(&entry).expect("serialise"))
}

/// Two entries at once, then (split across writes) a third only after the
/// test releases it, then the end of the stream.
async fn logs(State(state): State<Arc<NodeState>>, RawQuery(query): RawQuery) -> Response {
    *state.logs_query.lock().expect("lock") = query;
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let state = state.clone();
        async move {
            let chunk = match step {
                0 => format!("{}{}", log_line(1), log_line(2)),
                1 => {
                    state.release_log.notified().await;
                    let line = log_line(3);
                    line[..10].to_owned()
                }
                2 => log_line(3)[10..].to_owned(),
                _ => return None,
            };
            Some((Ok::<_, std::convert::Infallible>(chunk), step + 1))
        }
    });
    (
        [(header::CONTENT_TYPE, api::NDJSON)],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn kv_get(
    State(state): State<Arc<NodeState>>,
    q: Result<Query<KvKeyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return refuse(ErrorCode::BadRequest, "invalid query");
    };
    let kv = state.kv.lock().expect("lock");
    match kv.records.get(&q.key) {
        Some(record) => json_response(StatusCode::OK, record),
        None => refuse(
            ErrorCode::KeyNotFound,
            &format!("key {:?} does not exist", q.key),
        ),
    }
}

fn conflict(kv: &FakeKv, key: &str, wanted: Option<u64>) -> Option<Response> {
    let current = kv.records.get(key).map_or(0, |r| r.revision);
    match wanted {
        Some(wanted) if wanted != current => Some(refuse(
            ErrorCode::RevisionConflict,
            &format!("key {key:?} is at revision {current}, not {wanted}"),
        )),
        Some(_) | None => None,
    }
}

async fn kv_put(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<KvPutRequest>(&body) else {
        return refuse(ErrorCode::BadRequest, "bad kv put request");
    };
    *state.last_put.lock().expect("lock") = Some(request.clone());
    let mut kv = state.kv.lock().expect("lock");
    if let Some(refused) = conflict(&kv, &request.key, request.if_revision) {
        return refused;
    }
    kv.revision += 1;
    let revision = kv.revision;
    let (create_revision, version) = kv
        .records
        .get(&request.key)
        .map_or((revision, 1), |r| (r.create_revision, r.version + 1));
    kv.records.insert(
        request.key.clone(),
        KvRecord {
            key: request.key.clone(),
            value: request.value.clone(),
            revision,
            create_revision,
            version,
        },
    );
    kv.history.push(KvEvent {
        revision,
        key: request.key.clone(),
        kind: KvEventKind::Put,
        value: Some(request.value),
    });
    json_response(
        StatusCode::OK,
        &KvWritten {
            key: request.key,
            revision,
            deleted: None,
        },
    )
}

async fn kv_delete(
    State(state): State<Arc<NodeState>>,
    q: Result<Query<KvKeyQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return refuse(ErrorCode::BadRequest, "invalid query");
    };
    *state.last_delete.lock().expect("lock") = Some(q.clone());
    let mut kv = state.kv.lock().expect("lock");
    if let Some(refused) = conflict(&kv, &q.key, q.if_revision) {
        return refused;
    }
    if kv.records.remove(&q.key).is_none() {
        let revision = kv.revision;
        return json_response(
            StatusCode::OK,
            &KvWritten {
                key: q.key,
                revision,
                deleted: Some(false),
            },
        );
    }
    kv.revision += 1;
    let revision = kv.revision;
    kv.history.push(KvEvent {
        revision,
        key: q.key.clone(),
        kind: KvEventKind::Delete,
        value: None,
    });
    json_response(
        StatusCode::OK,
        &KvWritten {
            key: q.key,
            revision,
            deleted: Some(true),
        },
    )
}

async fn kv_list(
    State(state): State<Arc<NodeState>>,
    q: Result<Query<KvListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return refuse(ErrorCode::BadRequest, "invalid query");
    };
    let kv = state.kv.lock().expect("lock");
    let limit = usize::try_from(q.limit.unwrap_or(1000)).expect("limit");
    let matching: Vec<KvRecord> = kv
        .records
        .values()
        .filter(|r| r.key.starts_with(&q.prefix))
        .cloned()
        .collect();
    json_response(
        StatusCode::OK,
        &KvList {
            revision: kv.revision,
            more: matching.len() > limit,
            records: matching.into_iter().take(limit).collect(),
        },
    )
}

fn event_lines(kv: &FakeKv, prefix: &str, after: u64) -> String {
    kv.history
        .iter()
        .filter(|e| e.revision > after && e.key.starts_with(prefix))
        .map(|e| format!("{}\n", serde_json::to_string(e).expect("serialise")))
        .collect()
}

/// The changes after `after` at once, then (split mid-line) those made
/// until the test releases the watch, then the end of the stream.
async fn kv_watch(
    State(state): State<Arc<NodeState>>,
    q: Result<Query<KvWatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return refuse(ErrorCode::BadRequest, "invalid query");
    };
    let (first, seen) = {
        let kv = state.kv.lock().expect("lock");
        (
            event_lines(&kv, &q.prefix, q.after.unwrap_or(kv.revision)),
            kv.revision,
        )
    };
    enum Step {
        First(String),
        Later,
        Rest(String),
        Done,
    }
    let stream = futures_util::stream::unfold(Step::First(first), move |step| {
        let state = state.clone();
        let prefix = q.prefix.clone();
        async move {
            let (chunk, next) = match step {
                Step::First(lines) => (lines, Step::Later),
                Step::Later => {
                    state.release_watch.notified().await;
                    let mut later = event_lines(&state.kv.lock().expect("lock"), &prefix, seen);
                    let rest = later.split_off(later.len().min(7));
                    (later, Step::Rest(rest))
                }
                Step::Rest(rest) => (rest, Step::Done),
                Step::Done => return None,
            };
            Some((Ok::<_, std::convert::Infallible>(chunk), next))
        }
    });
    (
        [(header::CONTENT_TYPE, api::NDJSON)],
        Body::from_stream(stream),
    )
        .into_response()
}

fn member_status(name: &str, address: &str, role: MemberRole, leader_view: bool) -> MemberStatus {
    MemberStatus {
        name: name.to_owned(),
        id: if name == "node-1" { 1 } else { 2 },
        address: address.to_owned(),
        peer_address: address.replace(":7443", ":7444"),
        role,
        state: MemberState::Ready,
        since: None,
        domain: None,
        matched: leader_view.then_some(40),
        lag: leader_view.then_some(if name == "node-1" { 0 } else { 2 }),
        last_contact_ms: leader_view.then_some(120),
    }
}

async fn cluster_status(State(state): State<Arc<NodeState>>, headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let as_leader = !host.starts_with("localhost");
    let leader_address = state.leader_address.lock().expect("lock").clone();
    json_response(
        StatusCode::OK,
        &ClusterStatus {
            name: "cairn".to_owned(),
            answered_by: if as_leader { "node-1" } else { "node-2" }.to_owned(),
            leader: Some("node-1".to_owned()),
            term: 5,
            commit: 42,
            applied: 42,
            members: vec![
                member_status("node-1", &leader_address, MemberRole::Voter, as_leader),
                member_status("node-2", &host, MemberRole::Learner, as_leader),
            ],
        },
    )
}

const JOIN_TOKEN: &str = "abc123.0123456789abcdef";

fn expires_in(secs: u64) -> Timestamp {
    Timestamp::from_system(SystemTime::now() + Duration::from_secs(secs))
}

async fn token_create(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<TokenCreateRequest>(&body) else {
        return refuse(ErrorCode::BadRequest, "bad token request");
    };
    *state.last_token_request.lock().expect("lock") = Some(request.clone());
    let ca_hash = state.ca.fingerprint().to_string();
    json_response(
        StatusCode::OK,
        &CreatedToken {
            token: JOIN_TOKEN.to_owned(),
            id: "abc123".to_owned(),
            join_command: format!(
                "cairn node join --endpoint NEW_NODE:7443 --setup-token SETUP_TOKEN --cluster 127.0.0.1:7443 --token {JOIN_TOKEN} --ca-hash {ca_hash}"
            ),
            ca_hash,
            expires_at: expires_in(request.ttl_s.unwrap_or(3600)),
            uses: request.uses,
        },
    )
}

fn fake_backup(state: &NodeState) -> ClusterBackup {
    ClusterBackup {
        cluster_name: "lab".to_owned(),
        ca_hash: state.ca.fingerprint().to_string(),
        revision: 42,
        taken_at: Timestamp::from_unix(1_700_000_000).expect("a time"),
        taken_from: "n1".to_owned(),
        members: Vec::new(),
        sha256: "00".repeat(32),
        data: "AAEC".to_owned(),
    }
}

async fn backup(State(state): State<Arc<NodeState>>) -> Response {
    json_response(StatusCode::OK, &fake_backup(&state))
}

async fn restore(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<RestoreRequest>(&body) else {
        return refuse(ErrorCode::BadRequest, "bad restore request");
    };
    let revision = request.backup.revision;
    *state.last_restore.lock().expect("lock") = Some(request);
    json_response(
        StatusCode::OK,
        &RestoreResponse {
            node_name: "n1".to_owned(),
            revision,
        },
    )
}

fn token_info(id: &str, state: TokenState) -> TokenInfo {
    TokenInfo {
        id: id.to_owned(),
        description: Some("rack b".to_owned()),
        state,
        created_at: expires_in(0),
        expires_at: expires_in(3600),
        used: 1,
        uses: Some(2),
    }
}

async fn token_list() -> Response {
    json_response(
        StatusCode::OK,
        &TokenList {
            tokens: vec![token_info("abc123", TokenState::Valid)],
        },
    )
}

async fn token_revoke(UrlPath(id): UrlPath<String>) -> Response {
    if id != "abc123" {
        return refuse(ErrorCode::NotFound, &format!("no join token {id}"));
    }
    json_response(StatusCode::OK, &token_info(&id, TokenState::Revoked))
}

async fn member_remove(
    State(state): State<Arc<NodeState>>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    if name == "ghost" {
        return refuse(
            ErrorCode::MemberNotFound,
            &format!("no member is named {name}"),
        );
    }
    state.removed.lock().expect("lock").push(name.clone());
    json_response(StatusCode::OK, &MemberRemoved { name, id: 3 })
}

async fn join(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<JoinRequest>(&body) else {
        return refuse(ErrorCode::BadRequest, "bad join request");
    };
    if request.setup_token != TOKEN {
        return refuse(
            ErrorCode::InvalidSetupToken,
            "the setup token does not match",
        );
    }
    *state.last_join.lock().expect("lock") = Some(request);
    json_response(
        StatusCode::OK,
        &JoinResponse {
            node_name: "node-1".to_owned(),
            cluster_name: "lab".to_owned(),
            member_id: 4,
        },
    )
}

struct FakeNode {
    addr: SocketAddr,
    state: Arc<NodeState>,
}

impl FakeNode {
    fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// A node listening on `bind`; its member certificate still names only
    /// 127.0.0.1 and localhost.
    fn start_on(bind: &'static str) -> Self {
        let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
        let (maintenance, maintenance_fingerprint) = maintenance_acceptor();
        let state = Arc::new(NodeState {
            member: member_acceptor(&ca),
            ca,
            bootstrapped: AtomicBool::new(false),
            maintenance,
            maintenance_fingerprint,
            release_log: Notify::new(),
            logs_query: Mutex::new(None),
            allow_reboot: AtomicBool::new(false),
            polls_since_reboot: Mutex::new(None),
            connections: AtomicUsize::new(0),
            kv: Mutex::new(FakeKv::default()),
            last_put: Mutex::new(None),
            last_restore: Mutex::new(None),
            last_delete: Mutex::new(None),
            release_watch: Notify::new(),
            leader_address: Mutex::new(String::new()),
            last_token_request: Mutex::new(None),
            last_join: Mutex::new(None),
            removed: Mutex::new(Vec::new()),
            images: Mutex::new(FakeImages::default()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let server_state = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let tcp = TcpListener::bind(bind).await.expect("bind");
                tx.send(tcp.local_addr().expect("addr")).expect("send addr");
                let router = Router::new()
                    .route("/v1/cluster/bootstrap", post(bootstrap))
                    .route("/v1/node", get(node_info))
                    .route("/v1/version", get(version))
                    .route("/v1/node/reboot", post(reboot))
                    .route("/v1/node/logs", get(logs))
                    .route("/v1/node/config", axum::routing::put(apply_config))
                    .route("/v1/certs", post(issue_cert))
                    .route("/v1/kv", get(kv_list))
                    .route("/v1/kv/entry", get(kv_get).put(kv_put).delete(kv_delete))
                    .route("/v1/kv/watch", get(kv_watch))
                    .route("/v1/cluster", get(cluster_status))
                    .route("/v1/cluster/tokens", post(token_create).get(token_list))
                    .route("/v1/cluster/tokens/{id}/revoke", post(token_revoke))
                    .route("/v1/cluster/members/{name}", delete(member_remove))
                    .route("/v1/cluster/join", post(join))
                    .route("/v1/cluster/backup", get(backup))
                    .route("/v1/cluster/restore", post(restore))
                    .route("/v1/images", get(image_list))
                    .route(
                        "/v1/images/import",
                        post(image_import).layer(axum::extract::DefaultBodyLimit::disable()),
                    )
                    .route("/v1/images/export", get(image_export))
                    .route("/v1/images/prune", post(image_prune))
                    .route("/v1/images/pull", post(image_pull))
                    .route("/v1/images/{ref}", delete(image_remove))
                    .with_state(server_state.clone());
                let listener = TlsListener {
                    tcp,
                    state: server_state,
                };
                axum::serve(listener, router).await.expect("serve");
            });
        });
        let addr = rx.recv().expect("server address");
        FakeNode { addr, state }
    }

    fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    fn fingerprint(&self) -> String {
        self.state.maintenance_fingerprint.to_string()
    }
}

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("xdg")
            .join("cairn")
            .join("config.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
        command
            .args(args)
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cairn")
    }

    fn init(&self, node: &FakeNode) -> Output {
        let endpoint = node.endpoint();
        let fingerprint = node.fingerprint();
        self.run(&[
            "cluster",
            "init",
            "--endpoint",
            &endpoint,
            "--setup-token",
            TOKEN,
            "--fingerprint",
            &fingerprint,
        ])
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn cluster_init_with_the_right_fingerprint_stores_a_private_context_that_works() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let out = ws.init(&node);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .starts_with("cluster cairn created on node node-1; context cairn is now current"),
        "{}",
        text(&out.stdout)
    );
    // The stored context was tried at once and worked: no warning.
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));

    let path = ws.config_path();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("dir")), 0o700);
    let config = cli::config::load(&path).expect("config parses");
    assert_eq!(
        config.current_context.as_ref().map(|c| c.as_str()),
        Some("cairn")
    );
    let context = config.contexts.values().next().expect("one context");
    assert_eq!(context.endpoints[0].to_string(), node.endpoint());
    assert!(context.key_pem.contains("PRIVATE KEY"));

    let out = ws.run(&["node", "info", "-o", "json"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in ["name", "version", "addresses", "uptime_s", "boot"] {
        assert!(info.get(key).is_some(), "{key} missing: {info}");
    }
    assert_eq!(info["name"], "node-1");

    let out = ws.run(&["version", "-o", "json"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(version["server"]["api"], "v1");
}

#[test]
fn cluster_init_with_a_wrong_fingerprint_is_refused_and_writes_nothing() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let wrong = format!("sha256:{}", "00".repeat(32));
    let endpoint = node.endpoint();
    let out = ws.run(&[
        "cluster",
        "init",
        "-e",
        &endpoint,
        "--setup-token",
        TOKEN,
        "--fingerprint",
        &wrong,
    ]);
    assert_eq!(out.status.code(), Some(4), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "cairn: the node's certificate fingerprint {} does not match the pinned {wrong}",
            node.fingerprint()
        )),
        "{stderr}"
    );
    // Not even the config directory is left behind.
    assert!(!ws.config_path().parent().expect("dir").exists());
    assert!(!node.state.bootstrapped.load(Ordering::SeqCst));
}

#[test]
fn cluster_init_without_a_fingerprint_warns_and_names_what_it_trusted() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let endpoint = node.endpoint();
    let out = ws.run(&["cluster", "init", "-e", &endpoint, "--setup-token", TOKEN]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("warning: the node at"), "{stderr}");
    assert!(stderr.contains(&node.fingerprint()), "{stderr}");
}

#[test]
fn a_wrong_setup_token_is_refused_as_permission_denied() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let endpoint = node.endpoint();
    let fingerprint = node.fingerprint();
    let out = ws.run(&[
        "cluster",
        "init",
        "-e",
        &endpoint,
        "--setup-token",
        "guess",
        "--fingerprint",
        &fingerprint,
    ]);
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .starts_with("cairn: the node refused the request: the setup token does not match"),
        "{}",
        text(&out.stderr)
    );
    assert!(!ws.config_path().exists());
}

#[test]
fn role_too_low_is_one_sentence_and_exit_code_5() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    let out = ws.run(&["node", "reboot"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        text(&out.stderr),
        "cairn: the node refused the request: role reader is too low for node_reboot (needs operator)\n"
    );
}

#[test]
fn followed_logs_stream_ndjson_lines_as_the_node_writes_them() {
    use std::io::{BufRead, BufReader};
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    let mut child = ws
        .command(&[
            "node", "logs", "--follow", "--boot", "-1", "--tail", "5", "-o", "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut read_entry = || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read a line");
        serde_json::from_str::<LogEntry>(&line).expect("an NDJSON log entry")
    };
    // The first two arrive while the node still holds the third back.
    assert_eq!(read_entry().message, "entry 1");
    assert_eq!(read_entry().message, "entry 2");
    node.state.release_log.notify_one();
    assert_eq!(read_entry().message, "entry 3");
    let status = child.wait().expect("wait");
    assert!(status.success());
    assert_eq!(
        node.state.logs_query.lock().expect("lock").as_deref(),
        Some("boot=-1&follow=true&tail=5")
    );
}

#[test]
fn an_unreachable_node_is_exit_code_3_with_the_cause() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let endpoint = format!("127.0.0.1:{port}");
    let out = ws.run(&["node", "info", "-e", &endpoint]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr),
        format!("cairn: cannot reach {endpoint}: connection refused\n")
    );
}

#[test]
fn a_node_of_another_cluster_is_refused_as_untrusted() {
    let ours = FakeNode::start();
    let theirs = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&ours).status.success());
    let other = Workspace::new();
    assert!(other.init(&theirs).status.success());
    let endpoint = theirs.endpoint();
    let out = ws.run(&["node", "info", "-e", &endpoint]);
    assert_eq!(out.status.code(), Some(4), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not signed by the cluster CA of context cairn"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_invalid_config_is_refused_with_the_key_and_exit_code_6() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    let file = ws.dir.path().join("node.toml");
    std::fs::write(&file, "[node]\nhostname = \"bad name\"\n").expect("write");
    let file = file.to_str().expect("utf-8 path");
    let out = ws.run(&["node", "config", "apply", "--dry-run", file]);
    assert_eq!(out.status.code(), Some(6), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "cairn: the node refused the request: node.hostname: \"bad name\" is not a valid host name\n"
    );

    std::fs::write(
        ws.dir.path().join("good.toml"),
        "[node]\nhostname = \"n2\"\n",
    )
    .expect("write");
    let good = ws.dir.path().join("good.toml");
    let out = ws.run(&[
        "node",
        "config",
        "apply",
        "--dry-run",
        good.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "the config is valid; applying it would change: node\n"
    );

    let out = ws.run(&["node", "config", "apply", "/nonexistent/node.toml"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(text(&out.stderr).starts_with("cairn: cannot read /nonexistent/node.toml: "));
}

#[test]
fn reboot_wait_returns_once_the_node_answers_with_a_new_boot_id() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    node.state.allow_reboot.store(true, Ordering::SeqCst);
    let out = ws.run(&["node", "reboot", "--wait", "--timeout", "1m", "-o", "json"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["previous_boot_id"], "boot-1");
    assert_eq!(report["boot_id"], "boot-2");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is rebooting; waiting up to 1m"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "node is down (the node failed to carry out node_info: the node is starting)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("node is back after"), "{stderr}");
}

#[test]
fn issued_certificates_become_a_new_context_or_private_files() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());

    let out = ws.run(&[
        "cert", "issue", "--role", "operator", "--ttl", "2h", "-o", "json",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["role"], "operator");
    assert_eq!(report["context"], "cairn-operator");
    let config = cli::config::load(&ws.config_path()).expect("config");
    assert_eq!(
        config.current_context.as_ref().map(|c| c.as_str()),
        Some("cairn")
    );
    let context = &config.contexts[&"cairn-operator".parse().expect("name")];
    assert_eq!(context.role, Some(api::Role::Operator));
    assert_eq!(mode(&ws.config_path()), 0o600);

    // The new credential works on its own.
    let out = ws.run(&["node", "info", "--context", "cairn-operator"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("NAME "),
        "{}",
        text(&out.stdout)
    );

    let dir = ws.dir.path().join("creds");
    let dir_arg = dir.to_str().expect("utf-8");
    let out = ws.run(&["cert", "issue", "--name", "carol", "--out-dir", dir_arg]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(mode(&dir.join("carol.key")), 0o600);
    let cert = std::fs::read_to_string(dir.join("carol.crt")).expect("cert");
    let key = std::fs::read_to_string(dir.join("carol.key")).expect("key");
    cluster::pki::check_pair(&cert, &key).expect("certificate is for the key");
    assert!(dir.join("ca.crt").exists());
    // A second issue would overwrite the key: refused before asking the node.
    let out = ws.run(&["cert", "issue", "--name", "carol", "--out-dir", dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("carol.crt"),
        "{}",
        text(&out.stderr)
    );

    let out = ws.run(&["config", "contexts", "-o", "json"]);
    let contexts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(contexts["current_context"], "cairn");
    assert_eq!(contexts["contexts"].as_array().expect("array").len(), 2);
}

#[test]
fn cluster_init_warns_at_once_when_the_node_certificate_does_not_name_the_endpoint() {
    // As through NAT: the node is reached at an address it does not hold.
    let node = FakeNode::start_on("127.0.0.2:0");
    let ws = Workspace::new();
    let out = ws.init(&node);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("warning: the new context cairn does not work yet: the certificate of the node at 127.0.0.2:"),
        "{stderr}"
    );
    assert!(stderr.contains("does not name this host"), "{stderr}");
    assert!(ws.config_path().exists());
}

/// A workspace with a context for a bootstrapped fake node.
fn member_workspace() -> (FakeNode, Workspace) {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let out = ws.init(&node);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    (node, ws)
}

fn success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status.code(),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn kv_get_prints_the_value_alone() {
    let (_node, ws) = member_workspace();
    assert_eq!(
        success(&ws.run(&["kv", "put", "greeting", "hello world"])),
        "OK (revision 1)\n"
    );
    assert_eq!(
        success(&ws.run(&["kv", "get", "greeting"])),
        "hello world\n"
    );
    let record: KvRecord =
        serde_json::from_str(&success(&ws.run(&["kv", "get", "greeting", "-o", "json"])))
            .expect("a KvRecord");
    assert_eq!((record.value.as_str(), record.revision), ("hello world", 1));
}

#[test]
fn a_key_with_url_syntax_and_unicode_round_trips_exactly() {
    let (node, ws) = member_workspace();
    let key = "site/a b?c=1&d=%2F#frag+plus/ünï€😀";
    success(&ws.run(&["kv", "put", key, "v1"]));
    // The node decoded exactly the key that was typed, from the body and
    // from the query string alike.
    assert!(
        node.state
            .kv
            .lock()
            .expect("lock")
            .records
            .contains_key(key)
    );
    assert_eq!(success(&ws.run(&["kv", "get", key])), "v1\n");
    let list: KvList = serde_json::from_str(&success(&ws.run(&[
        "kv",
        "list",
        "site/a b?",
        "-o",
        "json",
    ])))
    .expect("a KvList");
    assert_eq!(list.records.len(), 1);
    assert_eq!(list.records[0].key, key);
    let written: KvWritten =
        serde_json::from_str(&success(&ws.run(&["kv", "del", key, "-o", "json"])))
            .expect("KvWritten");
    assert_eq!(written.deleted, Some(true));
    assert_eq!(
        node.state
            .last_delete
            .lock()
            .expect("lock")
            .as_ref()
            .map(|q| q.key.as_str()),
        Some(key)
    );
}

#[test]
fn if_revision_reaches_the_node_and_a_conflict_exits_7_naming_the_revision() {
    let (node, ws) = member_workspace();
    success(&ws.run(&["kv", "put", "k", "a"]));
    success(&ws.run(&["kv", "put", "k", "b", "--if-revision", "1"]));
    assert_eq!(
        node.state
            .last_put
            .lock()
            .expect("lock")
            .as_ref()
            .and_then(|p| p.if_revision),
        Some(1)
    );
    // The key is at revision 2 now: a write expecting 1 is refused.
    let out = ws.run(&["kv", "put", "k", "c", "--if-revision", "1"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("cairn: key \"k\" is at revision 2, not 1"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(success(&ws.run(&["kv", "get", "k"])), "b\n");

    // The same for a delete, whose revision travels in the query.
    let out = ws.run(&["kv", "del", "k", "--if-revision", "1"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert_eq!(
        node.state.last_delete.lock().expect("lock").clone(),
        Some(KvKeyQuery {
            key: "k".to_owned(),
            if_revision: Some(1)
        })
    );
    assert_eq!(
        success(&ws.run(&["kv", "del", "k", "--if-revision", "2"])),
        "deleted k (revision 3)\n"
    );
}

#[test]
fn a_missing_key_exits_7_and_names_the_key() {
    let (_node, ws) = member_workspace();
    let out = ws.run(&["kv", "get", "nope/missing"]);
    assert_eq!(out.status.code(), Some(7), "stderr: {}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        "cairn: key \"nope/missing\" does not exist\n"
    );
}

#[test]
fn kv_list_shows_keys_in_order_and_honours_the_limit() {
    let (_node, ws) = member_workspace();
    for key in ["b/2", "a/1", "b/1"] {
        success(&ws.run(&["kv", "put", key, &format!("value of {key}")]));
    }
    let table = success(&ws.run(&["kv", "list", "b/"]));
    assert_eq!(
        table,
        "KEY  REVISION  VALUE\nb/1  3         value of b/1\nb/2  1         value of b/2\n"
    );
    let list: KvList = serde_json::from_str(&success(
        &ws.run(&["kv", "list", "--limit", "2", "-o", "json"]),
    ))
    .expect("KvList");
    let keys: Vec<&str> = list.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["a/1", "b/1"]);
    assert!(list.more);
    assert_eq!(list.revision, 3);
}

#[test]
fn watch_prints_events_in_order_as_the_node_sends_them() {
    use std::io::{BufRead, BufReader};
    let (node, ws) = member_workspace();
    success(&ws.run(&["kv", "put", "w/a", "1"]));
    success(&ws.run(&["kv", "put", "other", "x"]));
    success(&ws.run(&["kv", "put", "w/b", "2"]));
    let mut child = ws
        .command(&["kv", "watch", "w/", "--after", "0", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut read_event = || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read a line");
        serde_json::from_str::<KvEvent>(&line).expect("an NDJSON KvEvent")
    };
    let first = read_event();
    assert_eq!((first.revision, first.key.as_str()), (1, "w/a"));
    let second = read_event();
    assert_eq!((second.revision, second.key.as_str()), (3, "w/b"));
    // A change made while the watch is open arrives after the others.
    success(&ws.run(&["kv", "del", "w/a"]));
    node.state.release_watch.notify_one();
    let third = read_event();
    assert_eq!(
        (third.revision, third.key.as_str(), third.kind),
        (4, "w/a", KvEventKind::Delete)
    );
    assert!(child.wait().expect("wait").success());

    // The table form: one line per event.
    let out = ws
        .command(&["kv", "watch", "w/", "--after", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    node.state.release_watch.notify_one();
    let out = out.wait_with_output().expect("wait");
    assert_eq!(
        success(&out),
        "1  put     w/a  1\n3  put     w/b  2\n4  delete  w/a\n"
    );
}

#[test]
fn cluster_status_json_has_leader_term_and_members_with_role_and_state() {
    let (node, ws) = member_workspace();
    *node.state.leader_address.lock().expect("lock") = node.endpoint();
    let status: serde_json::Value =
        serde_json::from_str(&success(&ws.run(&["cluster", "status", "-o", "json"])))
            .expect("json");
    assert_eq!(status["leader"], "node-1");
    assert_eq!(status["term"], 5);
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 2);
    for member in members {
        for key in ["name", "address", "role", "state"] {
            assert!(member.get(key).is_some(), "{key} missing: {member}");
        }
    }
    assert_eq!(members[0]["role"], "voter");
    assert_eq!(members[1]["role"], "learner");
    assert_eq!(members[0]["state"], "ready");

    let table = success(&ws.run(&["cluster", "status"]));
    assert!(
        table.starts_with(
            "cluster cairn: leader node-1, term 5, commit 42, applied 42 (answered by node-1)\n"
        ),
        "{table}"
    );
    assert!(table.contains("\nNAME      ADDRESS"), "{table}");
}

#[test]
fn cluster_status_from_a_follower_is_asked_again_of_the_leader() {
    let (node, ws) = member_workspace();
    *node.state.leader_address.lock().expect("lock") = node.endpoint();
    // Asked as localhost the node answers as the follower node-2, which
    // knows no lag; the leader's address is 127.0.0.1.
    let follower = format!("localhost:{}", node.addr.port());
    let out = ws.run(&["cluster", "status", "-e", &follower, "-o", "json"]);
    let status: ClusterStatus = serde_json::from_str(&success(&out)).expect("ClusterStatus");
    assert_eq!(status.answered_by, "node-1");
    assert_eq!(status.members[1].lag, Some(2));
    assert_eq!(status.members[1].last_contact_ms, Some(120));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn cluster_status_falls_back_to_the_first_answer_when_the_leader_is_unreachable() {
    let (node, ws) = member_workspace();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr").to_string();
    drop(closed);
    *node.state.leader_address.lock().expect("lock") = dead.clone();
    let follower = format!("localhost:{}", node.addr.port());
    let out = ws.run(&["cluster", "status", "-e", &follower, "-o", "json"]);
    let status: ClusterStatus = serde_json::from_str(&success(&out)).expect("ClusterStatus");
    assert_eq!(status.answered_by, "node-2");
    assert_eq!(status.members[1].lag, None);
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "warning: cannot ask the leader at {dead}, so lag and last contact are unknown: cannot reach {dead}: connection refused"
        )),
        "{stderr}"
    );
}

#[test]
fn token_create_json_has_token_ca_hash_and_expiry_and_sends_ttl_and_uses() {
    let (node, ws) = member_workspace();
    let out = ws.run(&[
        "cluster",
        "token",
        "create",
        "--ttl",
        "2h",
        "--uses",
        "3",
        "--description",
        "rack b",
        "-o",
        "json",
    ]);
    let created: serde_json::Value = serde_json::from_str(&success(&out)).expect("json");
    assert_eq!(created["token"], JOIN_TOKEN);
    assert_eq!(created["ca_hash"], node.state.ca.fingerprint().to_string());
    assert!(created["expires_at"].is_string(), "{created}");
    assert_eq!(
        node.state.last_token_request.lock().expect("lock").clone(),
        Some(TokenCreateRequest {
            ttl_s: Some(7200),
            uses: Some(3),
            description: Some("rack b".to_owned()),
        })
    );

    let table = success(&ws.run(&["cluster", "token", "create"]));
    assert!(
        table.starts_with(&format!("TOKEN    {JOIN_TOKEN}\n")),
        "{table}"
    );
    assert!(
        table.contains("  cairn node join --endpoint NEW_NODE:7443 "),
        "{table}"
    );
    assert_eq!(
        node.state.last_token_request.lock().expect("lock").clone(),
        Some(TokenCreateRequest::default())
    );
}

#[test]
fn tokens_are_listed_and_revoked_by_id() {
    let (_node, ws) = member_workspace();
    let table = success(&ws.run(&["cluster", "token", "list"]));
    assert!(table.starts_with("ID      STATE  USED  EXPIRES"), "{table}");
    assert!(table.contains("abc123  valid  1/2 "), "{table}");
    assert_eq!(
        success(&ws.run(&["cluster", "token", "revoke", "abc123"])),
        "token abc123 is revoked (used 1 times)\n"
    );
    let info: TokenInfo = serde_json::from_str(&success(
        &ws.run(&["cluster", "token", "revoke", "abc123", "-o", "json"]),
    ))
    .expect("TokenInfo");
    assert_eq!(info.state, TokenState::Revoked);
}

#[test]
fn node_join_sends_the_join_request_to_the_pinned_new_node() {
    // A node in maintenance mode: no context is needed to join it.
    let node = FakeNode::start();
    let ws = Workspace::new();
    let endpoint = node.endpoint();
    let fingerprint = node.fingerprint();
    let ca_hash = format!("sha256:{}", "ab".repeat(32));
    let out = ws.run(&[
        "node",
        "join",
        "--endpoint",
        &endpoint,
        "--fingerprint",
        &fingerprint,
        "--setup-token",
        TOKEN,
        "--cluster",
        "10.0.0.5",
        "--token",
        JOIN_TOKEN,
        "--ca-hash",
        &ca_hash,
    ]);
    assert_eq!(
        success(&out),
        "node node-1 joined cluster lab as member 4 (a learner until it has caught up)\n"
    );
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    assert_eq!(
        node.state.last_join.lock().expect("lock").clone(),
        Some(JoinRequest {
            setup_token: TOKEN.to_owned(),
            cluster: "10.0.0.5:7443".to_owned(),
            token: JOIN_TOKEN.to_owned(),
            ca_hash,
        })
    );
    assert!(!ws.config_path().exists());
}

#[test]
fn node_join_refuses_a_malformed_ca_hash_or_token_before_connecting() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let endpoint = node.endpoint();
    let good_hash = format!("sha256:{}", "ab".repeat(32));
    let join = |token: &str, hash: &str| {
        ws.run(&[
            "node",
            "join",
            "-e",
            &endpoint,
            "--setup-token",
            TOKEN,
            "--cluster",
            "10.0.0.5",
            "--token",
            token,
            "--ca-hash",
            hash,
        ])
    };
    for bad in [
        "ab".repeat(32),
        "sha256:abc".to_owned(),
        format!("md5:{}", "ab".repeat(32)),
    ] {
        let out = join(JOIN_TOKEN, &bad);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            text(&out.stderr).contains("--ca-hash"),
            "{}",
            text(&out.stderr)
        );
    }
    let secret = "0123456789abcdeX";
    let out = join(&format!("abc123.{secret}"), &good_hash);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("cairn: --token: join token secret has an invalid character"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret), "the secret is echoed: {stderr}");
    assert_eq!(node.state.connections.load(Ordering::SeqCst), 0);
}

#[test]
fn node_remove_names_the_member_in_the_path_and_a_missing_one_exits_7() {
    let (node, ws) = member_workspace();
    let removed: MemberRemoved = serde_json::from_str(&success(
        &ws.run(&["node", "remove", "node-3", "-o", "json"]),
    ))
    .expect("MemberRemoved");
    assert_eq!(removed.name, "node-3");
    assert_eq!(*node.state.removed.lock().expect("lock"), ["node-3"]);
    assert_eq!(
        success(&ws.run(&["node", "remove", "node-3"])),
        "member node-3 (id 3) removed from the cluster\n"
    );
    let out = ws.run(&["node", "remove", "ghost"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        text(&out.stderr),
        "cairn: no member is named ghost (`cairn cluster status` lists the members)\n"
    );
}

#[test]
fn a_snapshot_is_saved_private_never_over_a_file_and_restored_as_saved() {
    use std::os::unix::fs::PermissionsExt;
    let (node, ws) = member_workspace();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.json");
    let file_arg = file.to_str().expect("utf-8 path");
    let said = success(&ws.run(&["cluster", "snapshot", "save", file_arg]));
    assert!(
        said.starts_with("saved cluster lab at revision 42"),
        "{said}"
    );
    let mode = std::fs::metadata(&file)
        .expect("saved")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let saved: ClusterBackup =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("a backup");
    assert_eq!(saved, fake_backup(&node.state));

    let again = ws.run(&["cluster", "snapshot", "save", file_arg]);
    assert!(!again.status.success(), "an existing file is not replaced");
    assert!(
        text(&again.stderr).contains("backup.json"),
        "{}",
        text(&again.stderr)
    );

    let said = success(&ws.run(&["cluster", "snapshot", "restore", file_arg, "--force"]));
    assert!(said.contains("restored revision 42"), "{said}");
    let sent = node
        .state
        .last_restore
        .lock()
        .expect("lock")
        .clone()
        .expect("a restore");
    assert_eq!(sent.backup, saved);
    assert!(sent.force);

    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{}").expect("write");
    let out = ws.run(&[
        "cluster",
        "snapshot",
        "restore",
        junk.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a backup"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn image_import_streams_the_file_whole_and_prints_the_references() {
    let (node, ws) = member_workspace();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("images.tar");
    // Several upload chunks, so the node must see them all, in order.
    let archive: Vec<u8> = (0..1_000_003u32)
        .map(|i| u8::try_from(i % 241).expect("below 256"))
        .collect();
    std::fs::write(&file, &archive).expect("write");
    let file_arg = file.to_str().expect("utf-8 path");

    let said = success(&ws.run(&["image", "import", file_arg]));
    assert_eq!(said, format!("imported hello:1 {IMAGE_DIGEST}\n"));
    assert!(node.state.images.lock().expect("lock").last_upload == archive);

    let json: ImportResponse = serde_json::from_str(&success(
        &ws.run(&["image", "import", file_arg, "-o", "json"]),
    ))
    .expect("ImportResponse");
    assert_eq!(json.images[0].reference, "hello:1");
    assert_eq!(json.images[0].digest, IMAGE_DIGEST);

    let missing = dir.path().join("missing.tar");
    let out = ws.run(&["image", "import", missing.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("missing.tar"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn image_list_rm_and_prune_show_what_the_node_said() {
    let (node, ws) = member_workspace();
    {
        let mut images = node.state.images.lock().expect("lock");
        images
            .refs
            .insert("hello:1".to_owned(), IMAGE_DIGEST.to_owned());
        images
            .refs
            .insert("library/redis:7".to_owned(), IMAGE_DIGEST.to_owned());
    }
    let table = success(&ws.run(&["image", "list"]));
    assert!(table.starts_with("REFERENCE"), "{table}");
    assert!(
        table.contains("hello:1") && table.contains("0123456789ab"),
        "{table}"
    );
    assert!(table.contains("3.0 MiB"), "{table}");
    let list: ImageList =
        serde_json::from_str(&success(&ws.run(&["image", "list", "-o", "json"]))).expect("list");
    assert_eq!(list.images.len(), 2);

    // A reference with a slash travels as one path segment.
    assert_eq!(
        success(&ws.run(&["image", "rm", "library/redis:7"])),
        "removed library/redis:7\n"
    );
    assert_eq!(
        node.state.images.lock().expect("lock").removed,
        ["library/redis:7"]
    );
    let out = ws.run(&["image", "rm", "ghost:1"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no image ghost:1"),
        "{}",
        text(&out.stderr)
    );

    assert_eq!(
        success(&ws.run(&["image", "prune"])),
        "removed 1 images, 2 blobs and 0 unpacked layers; freed 2.0 KiB\n"
    );
}

#[test]
fn image_export_writes_the_whole_archive_and_never_over_a_file() {
    let (_node, ws) = member_workspace();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("hello.tar");
    let file_arg = file.to_str().expect("utf-8 path");
    let said = success(&ws.run(&["image", "export", "hello:1", file_arg]));
    assert!(said.starts_with("wrote "), "{said}");
    assert!(std::fs::read(&file).expect("written") == fake_archive());

    let again = ws.run(&["image", "export", "hello:1", file_arg]);
    assert!(!again.status.success(), "an existing file is not replaced");

    let other = dir.path().join("missing.tar");
    let out = ws.run(&[
        "image",
        "export",
        "missing:1",
        other.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(!other.exists());
    // No temporary file is left beside the target either.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from("hello.tar")]);
}

#[test]
fn image_pull_follows_the_stream_and_reports_how_it_ended() {
    let (_node, ws) = member_workspace();
    let reference = "registry.site.internal:5000/team/app:1";
    // Not a terminal: no bars, one final line.
    assert_eq!(
        success(&ws.run(&["image", "pull", reference])),
        format!(
            "pulled {reference} {IMAGE_DIGEST}\n  1 blob from node node-b (peer)\n  1 blob from registry.site.internal:5000\n"
        )
    );
    let json: serde_json::Value = serde_json::from_str(&success(
        &ws.run(&["image", "pull", reference, "-o", "json"]),
    ))
    .expect("json");
    assert_eq!(json["references"][0], reference);
    assert_eq!(json["digest"], IMAGE_DIGEST);
    assert_eq!(json["sources"][IMAGE_DIGEST]["role"], "upstream");
    assert_eq!(json["sources"][LAYER_DIGEST]["role"], "peer");
    assert_eq!(json["sources"][LAYER_DIGEST]["node"], "node-b");

    let out = ws.run(&["image", "pull", "registry.site.internal:5000/denied:1"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("registry.site.internal:5000 refused the credentials"),
        "{}",
        text(&out.stderr)
    );

    let out = ws.run(&["image", "pull", "registry.site.internal:5000/cut:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("without saying how it went"),
        "{}",
        text(&out.stderr)
    );
}
