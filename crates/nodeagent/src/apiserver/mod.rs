//! The node API on `:7443`: HTTPS with TLS 1.3, mutual TLS once the node
//! belongs to a cluster.
//!
//! # Shape
//!
//! - The contract (paths, least role per route, bodies, error codes) is the
//!   `api` crate. [`router`] mounts one handler per row of `api::ROUTES`
//!   and puts [`authorize_request`] in front of all of them, so a route's
//!   role lives in exactly one place.
//! - [`serve`] owns the listener. Each connection is handshaken with the
//!   TLS configuration of the node's current [`Mode`] (a bootstrap switches
//!   it for the next connection), its client certificate is judged once
//!   ([`auth::caller_of`]), and the resulting [`auth::Caller`] is attached
//!   to every request on it.
//! - [`ServerState`] is what handlers share: the mode (behind a lock that
//!   is never held across an await), the setup-token limiter, the network
//!   and config handles, the journal.
//!
//! # Limits
//!
//! TLS handshakes must finish in [`HANDSHAKE_TIMEOUT`], request headers
//! arrive within [`HEADER_TIMEOUT`], a response must start within
//! [`REQUEST_TIMEOUT`] (streams such as `logs?follow=true` then run as long
//! as the client reads), bodies are capped at [`MAX_BODY_BYTES`], and at
//! most [`MAX_CONNECTIONS`] connections are served at once; more are
//! closed on accept.

pub mod auth;
pub mod containers;
pub mod identity;
pub mod maintenance;

mod handlers;
pub mod images;
mod initbus;
mod kv;
mod logs;
mod membership;
mod pull;
mod replicated;
mod system;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use api::{ApiError, ErrorCode};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cluster::pki::store::PkiStore;
use cluster::pki::{CertificateAuthority, IssuedCert};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use self::auth::{Caller, NodeMode};
use self::identity::TlsSetupError;
use self::maintenance::GuessLimiter;
use crate::config::{ActiveConfig, ConfigReport, SetupToken};
use crate::error_chain;
use crate::journal::Journal;
use crate::member::identity::MemberIdentity;
use crate::member::{MemberOptions, RunningMember};
use crate::net::NetworkHandle;
use cluster::membership::Policy;

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a handler may take to start its response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request body accepted (a machine config is the largest).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a stopped member's thread may take to close its log.
const MEMBER_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Where the server keeps and finds things.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Listen address, `0.0.0.0:7443`.
    pub addr: SocketAddr,
    /// The PKI directory, `/var/lib/cairn/pki`.
    pub pki_dir: PathBuf,
    /// Where an applied machine config is written.
    pub applied_config: PathBuf,
    /// cairn-init's D-Bus socket.
    pub init_socket: PathBuf,
    /// The kernel log device.
    pub kmsg: PathBuf,
    /// The proc filesystem.
    pub proc_root: PathBuf,
    /// How long to wait for an address before starting anyway.
    pub network_wait: Duration,
    /// How often the node certificate is checked for renewal.
    pub renew_check: Duration,
    /// The Raft member's paths and peer port.
    pub member: MemberOptions,
    /// The image content store, `/var/lib/cairn/images`.
    pub images_dir: PathBuf,
    /// oci-archives baked into the image, imported when the store opens:
    /// `/efi/cairn/<version>/images`.
    pub baked_images_dir: PathBuf,
    /// One directory per container, `/var/lib/cairn/containers`.
    pub containers_dir: PathBuf,
    /// Named volumes, `/var/lib/cairn/volumes`.
    pub volumes_dir: PathBuf,
    /// The `cairn-shim` executable.
    pub shim: PathBuf,
}

/// The node's TLS identity and what goes with it.
#[derive(Debug)]
pub enum Mode {
    /// Waiting for bootstrap or join.
    Maintenance(Maintenance),
    /// A cluster member.
    Member(Member),
}

/// Maintenance-mode state.
#[derive(Debug)]
pub struct Maintenance {
    tls: Arc<ServerConfig>,
    cert: IssuedCert,
    /// The token generated at start, used when the config names none.
    generated: SetupToken,
}

/// Member state.
#[derive(Debug)]
pub struct Member {
    tls: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
    ca: Arc<CertificateAuthority>,
    node: IssuedCert,
}

impl Mode {
    fn kind(&self) -> NodeMode {
        match self {
            Mode::Maintenance(_) => NodeMode::Maintenance,
            Mode::Member(_) => NodeMode::Member,
        }
    }
}

/// What every handler can reach.
#[derive(Debug)]
pub struct ServerState {
    options: ApiOptions,
    mode: RwLock<Mode>,
    limiter: Mutex<GuessLimiter>,
    network: NetworkHandle,
    config: watch::Sender<ActiveConfig>,
    report: watch::Sender<ConfigReport>,
    journal: Option<Journal>,
    /// This boot's id, read once.
    boot_id: String,
    /// What the boot loader said; it does not change within a boot.
    boot_status: tokio::sync::OnceCell<std::collections::HashMap<String, String>>,
    /// One bootstrap, join, renewal or config apply at a time.
    changes: tokio::sync::Mutex<()>,
    /// The Raft member, once this node is one and it started.
    member: RwLock<Option<Arc<RunningMember>>>,
    /// Wrong join tokens per caller address.
    join_limiter: Mutex<GuessLimiter>,
    /// The image content store, once a request needed it.
    images: tokio::sync::OnceCell<Arc<crate::images::ImageStore>>,
    /// The containers, once opened (at start, or by the first request).
    containers: tokio::sync::OnceCell<Arc<crate::containers::Containers>>,
}

/// Why the Raft member could not start.
#[derive(Debug, thiserror::Error)]
pub enum MemberStartError {
    /// The node is in maintenance mode.
    #[error("this node is not a cluster member")]
    NotMember,
    /// The node has no address to give the cluster.
    #[error("this node has no address to give the cluster (no DHCP lease or static address)")]
    NoAddress,
    /// The identity file is unusable.
    #[error(transparent)]
    Identity(#[from] crate::member::identity::IdentityError),
    /// The member did not start.
    #[error(transparent)]
    Member(#[from] crate::member::MemberError),
    /// The identity task failed.
    #[error("the member identity task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The PKI on STATE exists but cannot be used.
    #[error("cannot load the node's PKI from {dir}")]
    LoadPki {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        #[source]
        source: cluster::pki::store::LoadError,
    },
    /// A certificate could not be made.
    #[error("cannot issue the node's certificate")]
    SelfSigned(#[source] cluster::pki::IssueError),
    /// A reissued node certificate could not be saved.
    #[error("cannot save the node's PKI to {dir}")]
    SavePki {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        #[source]
        source: cluster::pki::store::SaveError,
    },
    /// The node name cannot go into a certificate.
    #[error("the node name cannot go into a certificate")]
    Name(#[source] cluster::pki::SubjectNameError),
    /// The setup token could not be generated.
    #[error(transparent)]
    Token(#[from] maintenance::TokenError),
    /// rustls refused a configuration.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

impl ServerState {
    /// Loads the PKI from STATE (member) or makes a maintenance identity.
    /// Key generation reads the kernel's CSPRNG and may block until it is
    /// seeded: call this on a blocking thread.
    pub fn load(
        options: ApiOptions,
        network: NetworkHandle,
        config: watch::Sender<ActiveConfig>,
        report: watch::Sender<ConfigReport>,
        journal: Option<Journal>,
    ) -> Result<Self, StartError> {
        let store = PkiStore::new(&options.pki_dir);
        let mode = match store.load_ca() {
            Ok(ca) => {
                let node = match store.load_node() {
                    Ok(node) => node,
                    // A bootstrap cut short after saving the CA: the CA can
                    // issue the missing node certificate itself.
                    Err(e) if e.is_missing() => {
                        let request = identity::node_request(
                            &system::node_name(),
                            &network_addresses(&network),
                        )
                        .map_err(StartError::Name)?;
                        let node = ca
                            .issue_node(&request, SystemTime::now())
                            .map_err(StartError::SelfSigned)?;
                        store
                            .save_node(&node)
                            .map_err(|source| StartError::SavePki {
                                dir: options.pki_dir.clone(),
                                source,
                            })?;
                        tracing::warn!(
                            "the node certificate was missing; issued a new one from the cluster CA"
                        );
                        node
                    }
                    Err(source) => {
                        return Err(StartError::LoadPki {
                            dir: options.pki_dir.clone(),
                            source,
                        });
                    }
                };
                let (tls, verifier) = identity::member_tls(ca.cert_der(), &node)?;
                Mode::Member(Member {
                    tls,
                    verifier,
                    ca: Arc::new(ca),
                    node,
                })
            }
            Err(e) if e.is_missing() => {
                let name = system::node_name();
                let request = identity::node_request(&name, &network_addresses(&network))
                    .map_err(StartError::Name)?;
                let cert = cluster::pki::self_signed_server(&request, SystemTime::now())
                    .map_err(StartError::SelfSigned)?;
                let tls = identity::maintenance_tls(&cert)?;
                Mode::Maintenance(Maintenance {
                    tls,
                    cert,
                    generated: maintenance::generate_setup_token()?,
                })
            }
            Err(source) => {
                return Err(StartError::LoadPki {
                    dir: options.pki_dir.clone(),
                    source,
                });
            }
        };
        let boot_id = system::boot_id(&options.proc_root);
        Ok(Self {
            options,
            mode: RwLock::new(mode),
            limiter: Mutex::new(GuessLimiter::default()),
            network,
            config,
            report,
            journal,
            boot_id,
            boot_status: tokio::sync::OnceCell::new(),
            changes: tokio::sync::Mutex::new(()),
            member: RwLock::new(None),
            join_limiter: Mutex::new(GuessLimiter::default()),
            images: tokio::sync::OnceCell::new(),
            containers: tokio::sync::OnceCell::new(),
        })
    }

    fn read_mode<T>(&self, f: impl FnOnce(&Mode) -> T) -> T {
        let guard = self
            .mode
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&guard)
    }

    fn set_mode(&self, mode: Mode) {
        let mut guard = self
            .mode
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = mode;
    }

    /// The running Raft member, if there is one.
    pub fn running_member(&self) -> Option<Arc<RunningMember>> {
        self.member
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The address this node gives the cluster.
    fn advertised_address(&self) -> Option<IpAddr> {
        crate::member::advertised_address(self.options.addr.ip(), &network_addresses(&self.network))
    }

    /// This node's failure domain from the machine config in force.
    fn failure_domain(&self) -> Option<String> {
        self.config
            .borrow()
            .config
            .cluster
            .failure_domain
            .as_ref()
            .map(|d| d.as_str().to_owned())
    }

    /// The voter policy of the machine config in force, read afresh on
    /// every call.
    fn policy_source(&self) -> crate::member::PolicySource {
        let config = self.config.subscribe();
        Arc::new(move || {
            let config = config.borrow();
            Policy {
                voters: config.config.cluster.voters.get(),
                grace: config.config.cluster.grace(),
                ..Policy::default()
            }
        })
    }

    /// Starts the Raft member of a node in member mode; a bootstrapped
    /// member with no log yet starts it from `restore` when given.
    pub async fn start_member(
        &self,
        identity: &MemberIdentity,
        restore: Option<cluster::store::StoreState>,
    ) -> Result<(), MemberStartError> {
        let (ca, node) = self
            .read_mode(|mode| match mode {
                Mode::Member(m) => Some((m.ca.cert_der().clone(), m.node.clone())),
                Mode::Maintenance(_) => None,
            })
            .ok_or(MemberStartError::NotMember)?;
        let address = self
            .advertised_address()
            .ok_or(MemberStartError::NoAddress)?;
        let domain = self.failure_domain();
        let me = crate::member::directory_entry(
            identity.id,
            &system::node_name(),
            address,
            self.options.addr.port(),
            domain,
        );
        // Peers pull from this node's content store; without one they get
        // 404s and go to their registries.
        let routes = match self.image_store().await {
            Ok(store) => crate::images::share::routes(store),
            Err(_) => {
                tracing::warn!("the image store did not open; peers cannot pull from this node");
                axum::Router::new()
            }
        };
        let running = crate::member::start(
            &self.options.member,
            identity,
            me,
            restore,
            &ca,
            &node,
            self.policy_source(),
            routes,
        )
        .await
        .map_err(MemberStartError::Member)?;
        *self
            .member
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(running);
        Ok(())
    }

    /// At agent start: a member node starts its Raft member from the
    /// identity on STATE. A node whose cluster predates Raft membership
    /// (a CA but no identity) becomes the one voter of its cluster.
    pub async fn resume_member(&self) -> Result<(), MemberStartError> {
        if !matches!(self.read_mode(Mode::kind), NodeMode::Member) {
            return Ok(());
        }
        let path = self.options.member.identity_file.clone();
        let loaded = tokio::task::spawn_blocking(move || match MemberIdentity::load(&path)? {
            Some(identity) => Ok(identity),
            None => {
                let identity = membership::bootstrap_identity();
                identity.save(&path)?;
                tracing::warn!(
                    "no member identity on STATE; this node becomes the one voter of its cluster"
                );
                Ok(identity)
            }
        })
        .await
        .map_err(MemberStartError::Task)?
        .map_err(MemberStartError::Identity)?;
        self.start_member(&loaded, None).await
    }

    /// Joins the cluster named by the machine config's `[cluster.join]`,
    /// retrying until the node is a member; returns at once on a member.
    pub async fn join_from_config(&self) {
        membership::join_from_config(self).await;
    }

    /// Stops the Raft member (a leader hands over first).
    pub async fn stop_member(&self) {
        let running = self
            .member
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(running) = running else {
            return;
        };
        let mut status = running.handle().watch_status();
        running.stop().await;
        drop(running);
        // The member thread ends with the last handle to it (requests in
        // flight hold some) and closes its log then: wait for that, so a
        // restore never clears a log that is still open.
        let closed = tokio::time::timeout(MEMBER_CLOSE_WAIT, async {
            while status.borrow_and_update().is_some() {
                if status.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if closed.is_err() {
            tracing::warn!("the raft member's thread did not end in time");
        }
    }

    /// The setup token in force in maintenance mode: the config's, else the
    /// generated one; `None` for a member.
    pub fn setup_token(&self) -> Option<SetupToken> {
        let configured = self.config.borrow().config.cluster.setup_token.clone();
        self.read_mode(|mode| match mode {
            Mode::Maintenance(m) => Some(configured.unwrap_or_else(|| m.generated.clone())),
            Mode::Member(_) => None,
        })
    }

    /// Replaces the node certificate when [`identity::renewal_due`] says
    /// so, saving it to STATE first; new connections get the new one.
    pub async fn renew_if_due(&self) {
        let _changing = self.changes.lock().await;
        let current = self.read_mode(|mode| match mode {
            Mode::Member(m) => Some((Arc::clone(&m.ca), m.node.clone())),
            Mode::Maintenance(_) => None,
        });
        let Some((ca, node)) = current else {
            return;
        };
        let name = system::node_name();
        let addresses = network_addresses(&self.network);
        let summary = {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::CertificateDer::from_pem_slice(node.cert_pem.as_bytes())
                .ok()
                .and_then(|der| cluster::pki::describe(&der).ok())
        };
        let Some(summary) = summary else {
            tracing::error!("the node certificate does not parse; not renewing it");
            return;
        };
        let Some(reason) = identity::renewal_due(&summary, SystemTime::now(), &name, &addresses)
        else {
            return;
        };
        let request = match identity::node_request(&name, &addresses) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot renew the node certificate: {}", error_chain(&e));
                return;
            }
        };
        let store = PkiStore::new(&self.options.pki_dir);
        let signer = Arc::clone(&ca);
        let renewed = tokio::task::spawn_blocking(move || {
            let node = signer
                .issue_node(&request, SystemTime::now())
                .map_err(|e| error_chain(&e))?;
            store.save_node(&node).map_err(|e| error_chain(&e))?;
            Ok::<_, String>(node)
        })
        .await;
        let node = match renewed {
            Ok(Ok(node)) => node,
            Ok(Err(e)) => {
                tracing::error!("cannot renew the node certificate: {e}");
                return;
            }
            Err(e) => {
                tracing::error!("cannot renew the node certificate: {e}");
                return;
            }
        };
        if let Some(member) = self.running_member()
            && let Err(e) = member.renew_peer_tls(ca.cert_der(), &node)
        {
            tracing::error!(
                "the peer port keeps its old certificate: {}",
                error_chain(&e)
            );
        }
        match identity::member_tls(ca.cert_der(), &node) {
            Ok((tls, verifier)) => {
                self.set_mode(Mode::Member(Member {
                    tls,
                    verifier,
                    ca,
                    node,
                }));
                tracing::info!(?reason, "node certificate renewed");
            }
            Err(e) => tracing::error!("renewed node certificate unusable: {}", error_chain(&e)),
        }
    }

    /// Prints what an operator needs to take the node out of maintenance
    /// mode. The token goes to the console only, never to the log.
    pub fn announce(&self) {
        let Some(token) = self.setup_token() else {
            let fingerprint = self.read_mode(|mode| match mode {
                Mode::Member(m) => Some(m.ca.fingerprint()),
                Mode::Maintenance(_) => None,
            });
            if let Some(fingerprint) = fingerprint {
                tracing::info!(ca = %fingerprint, "cluster member; API requires client certificates");
            }
            return;
        };
        let fingerprint = self.read_mode(|mode| match mode {
            Mode::Maintenance(m) => certificate_fingerprint(&m.cert.cert_pem),
            Mode::Member(_) => String::new(),
        });
        let endpoint = network_addresses(&self.network)
            .first()
            .map_or_else(|| "<node address>".to_owned(), |a| a.to_string());
        let port = self.options.addr.port();
        eprintln!(
            "cairnd: maintenance mode: this node belongs to no cluster.\n\
             cairnd: setup token: {}\n\
             cairnd: certificate fingerprint: {fingerprint}\n\
             cairnd: bootstrap with: cairn cluster init --endpoint {endpoint}:{port} --setup-token {} --fingerprint {fingerprint}",
            token.expose(),
            token.expose(),
        );
        tracing::info!(%fingerprint, "maintenance mode: waiting for cluster bootstrap or join");
    }
}

fn certificate_fingerprint(pem: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| cluster::pki::Fingerprint::of_der(&der).to_string())
        .unwrap_or_default()
}

/// Every address the node holds, static first.
fn network_addresses(network: &NetworkHandle) -> Vec<IpAddr> {
    let status = network.status().borrow().clone();
    let mut out = Vec::new();
    for link in status.links.values() {
        for cidr in &link.static_addresses {
            out.push(IpAddr::V4(cidr.addr()));
        }
        if let Some(lease) = &link.lease {
            out.push(IpAddr::V4(lease.address.addr()));
        }
    }
    out
}

/// A refusal on its way out: the JSON body, its status, and for 429 the
/// time to wait.
#[derive(Debug)]
pub struct Failure {
    error: ApiError,
    retry_after: Option<Duration>,
}

impl Failure {
    /// A refusal with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ApiError::new(code, message),
            retry_after: None,
        }
    }

    /// The sentence the caller gets.
    pub fn message(&self) -> &str {
        &self.error.message
    }

    /// 500 with the error's whole chain.
    pub fn internal(context: &str, error: &dyn std::error::Error) -> Self {
        Self::new(
            ErrorCode::Internal,
            format!("{context}: {}", error_chain(error)),
        )
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.error.code.status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self.error)).into_response();
        if let Some(wait) = self.retry_after {
            let seconds = wait.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// A JSON request body, refused with a JSON error that names the field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Failure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Failure::new(
                        ErrorCode::PayloadTooLarge,
                        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
                    )
                } else {
                    Failure::new(
                        ErrorCode::BadRequest,
                        format!("cannot read the request body: {}", e.body_text()),
                    )
                }
            })?;
        parse_body(&bytes).map(JsonBody)
    }
}

/// Parses a JSON request body; the error names the field path.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let at = if path == "." {
            String::new()
        } else {
            format!(" at {path}")
        };
        Failure::new(
            ErrorCode::BadRequest,
            format!("invalid request body{at}: {inner}"),
        )
    })?;
    deserializer
        .end()
        .map_err(|e| Failure::new(ErrorCode::BadRequest, format!("invalid request body: {e}")))?;
    Ok(value)
}

/// Query parameters, refused with a JSON error.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| QueryParams(q.0))
            .map_err(|e| {
                Failure::new(
                    ErrorCode::BadRequest,
                    format!("invalid query: {}", e.body_text()),
                )
            })
    }
}

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The client certificate's verdict.
    pub caller: Caller,
    /// The client's address.
    pub peer: SocketAddr,
}

/// Looks up the route, checks the caller against it, bounds the time to
/// the response head, and logs changes.
async fn authorize_request(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Result<Response, Failure> {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let route = api::ROUTES
        .iter()
        .find(|r| r.path == path && r.method.as_str() == request.method().as_str())
        .ok_or_else(|| {
            Failure::new(
                ErrorCode::NotFound,
                format!("no route {} {path}", request.method()),
            )
        })?;
    let connection = request
        .extensions()
        .get::<Connection>()
        .cloned()
        .ok_or_else(|| Failure::new(ErrorCode::Internal, "request without connection state"))?;
    let mode = state.read_mode(Mode::kind);
    auth::authorize(route, mode, &connection.caller)?;
    // Every change to the node or the cluster is audited in the log;
    // writes of operators' data are too many for that.
    if route.method.is_mutating() && !route.is_data() {
        tracing::info!(
            operation = route.operation,
            caller = connection.caller.name(),
            peer = %connection.peer,
            "api call"
        );
    } else if route.method.is_mutating() {
        tracing::debug!(
            operation = route.operation,
            caller = connection.caller.name(),
            peer = %connection.peer,
            "api call"
        );
    }
    // An import answers only once the whole archive is stored.
    let timeout = if route.operation == "image_import" {
        images::IMPORT_TIMEOUT
    } else if containers::is_slow(route.operation) {
        containers::CHANGE_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    tokio::time::timeout(timeout, next.run(request))
        .await
        .map_err(|_| {
            Failure::new(
                ErrorCode::Timeout,
                format!(
                    "{} took longer than {} s",
                    route.operation,
                    timeout.as_secs()
                ),
            )
        })
}

async fn not_found(request: Request) -> Failure {
    Failure::new(
        ErrorCode::NotFound,
        format!("no route {} {}", request.method(), request.uri().path()),
    )
}

async fn method_not_allowed(request: Request) -> Failure {
    Failure::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The router: one handler per row of `api::ROUTES`, each behind
/// [`authorize_request`].
pub fn router(state: Arc<ServerState>) -> Router {
    let mut router = Router::new();
    for route in api::ROUTES {
        router = router.route(route.path, handlers::method_router(route));
    }
    router
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize_request,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves the API on `listener` until `stop` completes.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, stop: impl Future<Output = ()>) {
    let app = router(Arc::clone(&state));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: back off a little
                        // rather than spin.
                        tracing::warn!("api accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, "api connection refused: {MAX_CONNECTIONS} connections open");
                    continue;
                };
                let state = Arc::clone(&state);
                let app = app.clone();
                connections.spawn(async move {
                    serve_connection(tcp, peer, &state, app).await;
                    drop(slot);
                });
            }
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    state: &ServerState,
    app: Router,
) {
    let (tls_config, verifier) = state.read_mode(|mode| match mode {
        Mode::Maintenance(m) => (Arc::clone(&m.tls), None),
        Mode::Member(m) => (Arc::clone(&m.tls), Some(Arc::clone(&m.verifier))),
    });
    // A response leaves in several TLS records; Nagle would hold the last
    // one back until the client's delayed acknowledgement.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, "cannot set TCP_NODELAY on an api connection: {e}");
    }
    let acceptor = TlsAcceptor::from(tls_config);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "api TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "api TLS handshake timed out");
            return;
        }
    };
    let caller = match verifier {
        Some(verifier) => auth::caller_of(
            stream.get_ref().1.peer_certificates(),
            verifier.as_ref(),
            rustls_pki_types::UnixTime::now(),
        ),
        None => Caller::Anonymous,
    };
    let connection = Connection { caller, peer };
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(connection.clone());
            let mut app = app.clone();
            async move {
                use tower::Service;
                let response = app.call(request.map(axum::body::Body::new)).await;
                Ok::<_, Infallible>(response.unwrap_or_else(|e| match e {}))
            }
        });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, "api connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::types::{
        ApplyConfigRequest, BootstrapRequest, IssueCertificateRequest, JoinRequest, KvKeyQuery,
        KvListQuery, KvPutRequest, KvWatchQuery, LogQuery, MemberGrant, MemberJoinRequest,
        RestoreRequest, TokenCreateRequest,
    };
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Any JSON value, nested a little.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "\\PC{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An object with the request's own keys, each holding any value.
    fn shaped(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
        proptest::collection::vec(any_json(), keys.len()).prop_map(move |values| {
            Value::Object(keys.iter().map(|k| (*k).to_owned()).zip(values).collect())
        })
    }

    fn refused_cleanly<T: DeserializeOwned>(bytes: &[u8]) {
        if let Err(failure) = parse_body::<T>(bytes) {
            assert_eq!(failure.error.code, ErrorCode::BadRequest);
            assert!(failure.error.message.starts_with("invalid request body"));
        }
    }

    fn every_request_parser(bytes: &[u8]) {
        refused_cleanly::<BootstrapRequest>(bytes);
        refused_cleanly::<JoinRequest>(bytes);
        refused_cleanly::<ApplyConfigRequest>(bytes);
        refused_cleanly::<IssueCertificateRequest>(bytes);
        refused_cleanly::<MemberJoinRequest>(bytes);
        refused_cleanly::<KvPutRequest>(bytes);
        refused_cleanly::<TokenCreateRequest>(bytes);
        refused_cleanly::<RestoreRequest>(bytes);
        refused_cleanly::<MemberGrant>(bytes);
    }

    #[test]
    fn a_bad_field_is_named_in_the_refusal() {
        let failure = parse_body::<IssueCertificateRequest>(
            json!({"name": "a", "role": "root", "ttl_s": 1, "csr_pem": ""})
                .to_string()
                .as_bytes(),
        )
        .unwrap_err();
        assert!(
            failure.error.message.contains("at role"),
            "{}",
            failure.error.message
        );
        let trailing = parse_body::<LogQuery>(b"{} {}").unwrap_err();
        assert_eq!(trailing.error.code, ErrorCode::BadRequest);
    }

    proptest! {
        #[test]
        fn request_body_parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            every_request_parser(&bytes);
        }

        #[test]
        fn request_body_parsers_never_panic_on_json(value in any_json()) {
            every_request_parser(&value.to_string().into_bytes());
        }

        #[test]
        fn cluster_request_parsers_never_panic_on_request_shaped_json(
            member in shaped(&["token", "node_name", "address", "csr_pem", "domain"]),
            put in shaped(&["key", "value", "if_revision"]),
            token in shaped(&["ttl_s", "uses", "description"]),
            restore in shaped(&["backup", "force"]),
            grant in shaped(&["member_id", "cluster_name", "node_cert_pem", "ca_pem", "ca_key_pem", "members"]),
        ) {
            refused_cleanly::<MemberJoinRequest>(member.to_string().as_bytes());
            refused_cleanly::<KvPutRequest>(put.to_string().as_bytes());
            refused_cleanly::<TokenCreateRequest>(token.to_string().as_bytes());
            refused_cleanly::<RestoreRequest>(restore.to_string().as_bytes());
            refused_cleanly::<MemberGrant>(grant.to_string().as_bytes());
        }

        #[test]
        fn kv_query_parsers_never_panic(query in "[a-z_=&%0-9/?.-]{0,60}") {
            let uri: axum::http::Uri = format!("/v1/kv?{query}").parse().unwrap_or_default();
            let _ = axum::extract::Query::<KvKeyQuery>::try_from_uri(&uri);
            let _ = axum::extract::Query::<KvListQuery>::try_from_uri(&uri);
            let _ = axum::extract::Query::<KvWatchQuery>::try_from_uri(&uri);
        }

        #[test]
        fn request_body_parsers_never_panic_on_request_shaped_json(
            bootstrap in shaped(&["setup_token", "cluster_name", "admin_name", "admin_csr_pem"]),
            join in shaped(&["setup_token", "cluster", "token", "ca_hash"]),
            apply in shaped(&["toml", "dry_run"]),
            issue in shaped(&["name", "role", "ttl_s", "csr_pem"]),
        ) {
            refused_cleanly::<BootstrapRequest>(bootstrap.to_string().as_bytes());
            refused_cleanly::<JoinRequest>(join.to_string().as_bytes());
            refused_cleanly::<ApplyConfigRequest>(apply.to_string().as_bytes());
            refused_cleanly::<IssueCertificateRequest>(issue.to_string().as_bytes());
        }

        #[test]
        fn the_log_query_parser_never_panics(query in "[a-z=&%0-9-]{0,60}") {
            let uri: axum::http::Uri = format!("/v1/node/logs?{query}").parse().unwrap_or_default();
            let _ = axum::extract::Query::<LogQuery>::try_from_uri(&uri);
        }
    }
}
