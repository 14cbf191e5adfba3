//! Pulling images from OCI registries into the [`ImageStore`].
//!
//! A pull resolves the reference's manifest (following a manifest list or
//! index to linux/amd64, and checking that a manifest asked for by digest
//! hashes to it), then fetches the config and the layers, at most
//! [`Puller::concurrency`] at a time, each streamed chunk by chunk from
//! `oci-client`'s `pull_blob_stream` over a bounded channel into an
//! [`crate::images::IngestBlob`] on a blocking thread, which hashes while
//! writing and refuses a blob that does not match its digest. Blobs the
//! store already has are not fetched. Only when every blob is stored are
//! the image read back from the store, its layers unpacked and the
//! reference recorded, through the same [`Ingest`] steps an import takes.
//!
//! Which source to ask, whether to retry after a failure and after how
//! long, when to fall back from a mirror to the upstream and what to tell
//! the operator when nothing worked are decided by [`plan`], without I/O;
//! this module only carries the decisions out. Each registry gets its own
//! HTTP client, so a site CA trusted for one registry is trusted for that
//! registry only.

mod peers;
pub mod plan;
mod reference;

use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use oci::digest::Expected;
use oci::layout::{descriptor_digest, select_platform};
use oci::media::{self, ManifestKind};
use oci::{Digest, RefName, json};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use tokio::sync::mpsc;

pub use peers::Peers;
pub use plan::{Failure, FailureKind, RetryPolicy, Source, SourceRole, Verdict};
pub use reference::{PullRef, PullRefError, PullTarget, valid_repository, valid_tag};

use self::plan::{ProgressGate, SourceWalk, Step, sources_for};
use super::share::DistPath;
use super::{ChannelReader, CommitError, ImageStore, Ingest, IngestError};
use crate::config::{RegistryAuthConfig, RegistryCa, RegistryConfig, RegistryHost};
use crate::error_chain;

/// Blobs downloaded at the same time.
pub const DEFAULT_CONCURRENCY: usize = 3;
/// Chunks in flight between the network and the disk, per blob.
const BLOB_CHANNEL_CHUNKS: usize = 8;
/// Manifests are small; a bigger one is refused before it is parsed.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Progress events per blob at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);
/// And only after this many more bytes.
const PROGRESS_MIN_BYTES: u64 = 256 * 1024;

const ACCEPTED_MANIFESTS: &[&str] = &[
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
];

/// One blob of the image, as the resolved manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// The digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the store already had it (nothing to fetch).
    pub present: bool,
}

/// Where content came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A registry: a configured mirror or the reference's own registry.
    Registry(Source),
    /// Another node of the cluster.
    Peer(cluster::pki::SubjectName),
}

/// What a pull reports as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullEvent {
    /// The manifest is known.
    Resolved {
        /// The linux/amd64 manifest's digest.
        digest: Digest,
        /// Where it came from.
        source: Origin,
        /// The config, then the layers, base first.
        blobs: Vec<BlobInfo>,
    },
    /// Bytes of one blob arrived.
    Blob {
        /// Which blob.
        digest: Digest,
        /// Bytes stored so far.
        done: u64,
        /// Its size.
        total: u64,
        /// From where.
        source: Origin,
    },
}

/// What a pull recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// The reference recorded.
    pub reference: RefName,
    /// The linux/amd64 manifest it names.
    pub digest: Digest,
}

/// Why a pull failed. Nothing of it is recorded.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The reference cannot be recorded as a store name.
    #[error("{0} cannot be recorded as an image name")]
    Name(String),
    /// A registry refused the credentials.
    #[error("{}", auth_message(registries))]
    AuthFailed {
        /// Each registry and its answer.
        registries: Vec<(RegistryHost, String)>,
    },
    /// The upstream has no such image.
    #[error("{reference} not found: {detail}")]
    NotFound {
        /// The reference.
        reference: String,
        /// The registry's answer.
        detail: String,
    },
    /// No source answered usefully.
    #[error("{}", unreachable_message(tried))]
    Unreachable {
        /// Each source and its last error.
        tried: Vec<(RegistryHost, String)>,
    },
    /// A source served content that is not a valid image or does not match
    /// its digest.
    #[error("invalid image from the registry: {detail}")]
    Invalid {
        /// What was wrong.
        detail: String,
    },
    /// The image does not fit the node (no linux/amd64 image, unknown
    /// media types).
    #[error("{reference} cannot be used on this node")]
    Unusable {
        /// The reference.
        reference: String,
        /// Why.
        #[source]
        source: oci::LayoutError,
    },
    /// A registry's client could not be set up (its CA file).
    #[error("cannot set up the client for {host}")]
    Client {
        /// The registry.
        host: RegistryHost,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// Storing or unpacking failed.
    #[error("cannot store the image")]
    Store(#[source] IngestError),
    /// Recording failed.
    #[error("cannot record the image")]
    Commit(#[source] CommitError),
    /// A blocking task failed.
    #[error("a pull task failed")]
    Task(#[source] tokio::task::JoinError),
}

fn auth_message(registries: &[(RegistryHost, String)]) -> String {
    let hosts: Vec<&str> = registries.iter().map(|(h, _)| h.as_str()).collect();
    format!(
        "registry {} refused the credentials of the machine config ({})",
        hosts.join(", "),
        registries
            .iter()
            .map(|(h, d)| format!("{h}: {d}"))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

fn unreachable_message(tried: &[(RegistryHost, String)]) -> String {
    format!(
        "no registry could serve the image; tried {}",
        tried
            .iter()
            .map(|(h, d)| format!("{h} ({d})"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

impl PullError {
    /// Whether the image, not the node, is at fault.
    pub fn is_invalid_image(&self) -> bool {
        match self {
            PullError::Invalid { .. } | PullError::Unusable { .. } => true,
            PullError::Store(e) => e.is_bad_input(),
            PullError::Name(_)
            | PullError::AuthFailed { .. }
            | PullError::NotFound { .. }
            | PullError::Unreachable { .. }
            | PullError::Client { .. }
            | PullError::Commit(_)
            | PullError::Task(_) => false,
        }
    }

    /// How much a failure says when blobs fail differently: the node's
    /// own faults first, then bad content, refused credentials, missing
    /// content, unreachable sources.
    fn weight(&self) -> u8 {
        match self {
            PullError::Store(_)
            | PullError::Commit(_)
            | PullError::Task(_)
            | PullError::Client { .. }
            | PullError::Name(_) => 5,
            PullError::Invalid { .. } | PullError::Unusable { .. } => 4,
            PullError::AuthFailed { .. } => 3,
            PullError::NotFound { .. } => 2,
            PullError::Unreachable { .. } => 1,
        }
    }

    fn from_verdict(verdict: Verdict, reference: &PullRef) -> Self {
        match verdict {
            Verdict::Invalid { detail } => PullError::Invalid { detail },
            Verdict::AuthFailed { registries } => PullError::AuthFailed { registries },
            Verdict::NotFound { detail } => PullError::NotFound {
                reference: reference.to_string(),
                detail,
            },
            Verdict::Unreachable { tried } => PullError::Unreachable { tried },
        }
    }
}

/// Why a registry's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA file could not be read.
    #[error("cannot read the CA file {path}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The CA file holds no certificate.
    #[error("the CA file {path} holds no usable certificate: {why}")]
    CaPem {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
    /// The HTTP client refused its settings.
    #[error("the HTTP client refused its settings")]
    Build(#[source] OciDistributionError),
    /// The node has no CA roots (`/etc/ssl/certs/ca-certificates.crt`).
    #[error(
        "this node has no CA roots (/etc/ssl/certs/ca-certificates.crt), so no HTTPS client can be made"
    )]
    NoRoots,
}

/// One registry's client and credentials.
struct Connection {
    client: oci_client::Client,
    auth: RegistryAuth,
}

/// Pulls into one store with the registries of one machine config.
#[derive(Debug)]
pub struct Puller {
    store: Arc<ImageStore>,
    registries: Vec<RegistryConfig>,
    policy: RetryPolicy,
    concurrency: usize,
    peers: Option<Peers>,
}

impl Puller {
    /// A puller with the default retry policy and concurrency.
    pub fn new(store: Arc<ImageStore>, registries: Vec<RegistryConfig>) -> Self {
        Self {
            store,
            registries,
            policy: RetryPolicy::default(),
            concurrency: DEFAULT_CONCURRENCY,
            peers: None,
        }
    }

    /// Asks `peers` for content before the registries.
    pub fn with_peers(mut self, peers: Peers) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Blobs fetched at once.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    fn connect(&self, host: &RegistryHost) -> Result<Connection, PullError> {
        let entry = self.registries.iter().find(|r| &r.host == host);
        let client_err = |source| PullError::Client {
            host: host.clone(),
            source,
        };
        let mut config = ClientConfig {
            protocol: if entry.is_some_and(|e| e.plain_http) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("cairnd/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        if let Some(ca) = entry.and_then(|e| e.ca.as_ref()) {
            let certs = match ca {
                RegistryCa::Inline(certs) => certs.clone(),
                RegistryCa::File(path) => {
                    let pem = std::fs::read(path).map_err(|source| {
                        client_err(ClientError::CaFile {
                            path: path.clone(),
                            source,
                        })
                    })?;
                    crate::config::registries::parse_pem_certificates(&pem).map_err(|why| {
                        client_err(ClientError::CaPem {
                            path: path.clone(),
                            why,
                        })
                    })?
                }
            };
            // Only the site CA: a registry with its own CA is not also
            // trusted on the word of every public root.
            config.tls_certs_only = certs
                .iter()
                .map(|c| Certificate {
                    encoding: CertificateEncoding::Der,
                    data: c.to_vec(),
                })
                .collect();
        }
        // oci-client also builds a default HTTP client beside the
        // configured one, and that panics when the node has no CA roots
        // at all (an image built without its trust store): the pull must
        // fail saying so, not take the agent down.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            oci_client::Client::try_from(config)
        }))
        .map_err(|_| client_err(ClientError::NoRoots))?;
        let client = built.map_err(|e| client_err(ClientError::Build(e)))?;
        let auth = match entry.and_then(|e| e.auth.as_ref()) {
            None => RegistryAuth::Anonymous,
            Some(RegistryAuthConfig::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.expose().to_owned())
            }
            Some(RegistryAuthConfig::Bearer { token }) => {
                RegistryAuth::Bearer(token.expose().to_owned())
            }
        };
        Ok(Connection { client, auth })
    }

    /// Pulls `reference`, reporting progress on `events` (a closed
    /// receiver only stops the reports, not the pull).
    pub async fn pull(
        &self,
        reference: &PullRef,
        events: &mpsc::Sender<PullEvent>,
    ) -> Result<Pulled, PullError> {
        install_crypto_provider();
        let name = reference
            .store_name()
            .ok_or_else(|| PullError::Name(reference.to_string()))?;
        let sources = sources_for(&reference.registry, &self.registries);
        let mut connections = std::collections::BTreeMap::new();
        for source in &sources {
            let conn = self.connect(&source.host)?;
            conn.client
                .store_auth_if_needed(source.host.as_str(), &conn.auth)
                .await;
            connections.insert(source.host.clone(), Arc::new(conn));
        }
        let connections = Arc::new(connections);

        let resolved = self
            .resolve(reference, sources.clone(), &connections)
            .await?;
        let ingest = Arc::new(self.store.begin_ingest());
        // The manifest goes in first: the store reads the image back from
        // its own blobs.
        {
            let (ingest, bytes, digest) = (
                Arc::clone(&ingest),
                resolved.bytes.clone(),
                resolved.digest.clone(),
            );
            tokio::task::spawn_blocking(move || -> Result<(), IngestError> {
                if ingest.has_blob(&digest) {
                    return Ok(());
                }
                let mut w = ingest.blob_writer(Expected {
                    digest: digest.clone(),
                    size: Some(bytes.len() as u64),
                })?;
                w.write_all(&bytes).map_err(|source| IngestError::Io {
                    path: std::path::PathBuf::from(digest.to_string()),
                    source,
                })?;
                w.commit().map(drop)
            })
            .await
            .map_err(PullError::Task)?
            .map_err(PullError::Store)?;
        }

        let mut blobs = Vec::new();
        for desc in std::iter::once(resolved.manifest.config()).chain(resolved.manifest.layers()) {
            let digest = descriptor_digest(desc).map_err(|source| PullError::Unusable {
                reference: reference.to_string(),
                source,
            })?;
            blobs.push(BlobInfo {
                present: ingest.has_blob(&digest),
                digest,
                size: desc.size(),
            });
        }
        let _ = events
            .send(PullEvent::Resolved {
                digest: resolved.digest.clone(),
                source: resolved.source.clone(),
                blobs: blobs.clone(),
            })
            .await;

        // Blobs come from the registry that answered the manifest first.
        let mut order = sources.clone();
        if let Origin::Registry(source) = &resolved.source
            && let Some(at) = order.iter().position(|s| s == source)
        {
            order.rotate_left(at);
        }
        // The config first: with it the layers' chain ids are known and
        // each layer can be unpacked as soon as it is stored, while the
        // ones above it are still downloading.
        let (config, layers) = blobs.split_first().ok_or_else(|| PullError::Invalid {
            detail: "the manifest names no config".to_owned(),
        })?;
        if !config.present {
            let walk = SourceWalk::new(order.clone(), self.policy);
            self.fetch_blob(
                reference,
                config.clone(),
                walk,
                &connections,
                &ingest,
                events,
            )
            .await?;
        }
        let desc = resolved.descriptor();
        let image = {
            let (ingest, desc) = (Arc::clone(&ingest), desc.clone());
            tokio::task::spawn_blocking(move || ingest.read_image(&desc))
                .await
                .map_err(PullError::Task)?
                .map_err(PullError::Store)?
        };
        let (stored_tx, stored_rx) = std::sync::mpsc::channel::<()>();
        let unpacker = {
            let ingest = Arc::clone(&ingest);
            tokio::task::spawn_blocking(move || {
                ingest.unpack_chains(&image, |digest| {
                    loop {
                        if ingest.has_blob(digest) {
                            return true;
                        }
                        // Every download has ended once every sender is gone.
                        if stored_rx.recv().is_err() {
                            return ingest.has_blob(digest);
                        }
                    }
                })
            })
        };
        // Built in a loop, not with a closure: a closure here makes the
        // future's lifetimes too general for tokio::spawn.
        let mut fetches = Vec::new();
        for blob in layers.iter().filter(|b| !b.present) {
            let walk = SourceWalk::new(order.clone(), self.policy);
            let fetch =
                self.fetch_blob(reference, blob.clone(), walk, &connections, &ingest, events);
            let stored = stored_tx.clone();
            fetches.push(Box::pin(async move {
                let result = fetch.await;
                if result.is_ok() {
                    let _ = stored.send(());
                }
                result
            }));
        }
        drop(stored_tx);
        let results: Vec<Result<(), PullError>> = futures_util::stream::iter(fetches)
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        // Every blob's verdict is in; the one that says most about the
        // image wins, not whichever download happened to finish first.
        let download_error = results
            .into_iter()
            .filter_map(Result::err)
            .max_by_key(PullError::weight);
        let unpacked = unpacker.await.map_err(PullError::Task)?;
        if let Some(error) = download_error {
            return Err(error);
        }
        unpacked.map_err(PullError::Store)?;

        let store = Arc::clone(&self.store);
        let recorded = name.clone();
        let digest = tokio::task::spawn_blocking(move || -> Result<Digest, PullError> {
            let image = ingest.read_image(&desc).map_err(PullError::Store)?;
            let digest = ingest.add_image(&image).map_err(PullError::Store)?;
            store
                .commit_ingest(&ingest, &[(recorded, digest.clone())])
                .map_err(PullError::Commit)?;
            Ok(digest)
        })
        .await
        .map_err(PullError::Task)??;
        Ok(Pulled {
            reference: name,
            digest,
        })
    }

    /// Finds the linux/amd64 manifest. A manifest named by digest is asked
    /// of the peers first (it is verified either way); one named by tag
    /// comes from the registries, and from the peers only when no registry
    /// can be reached, so a tag moved upstream is seen whenever upstream is
    /// there to say so.
    async fn resolve(
        &self,
        reference: &PullRef,
        sources: Vec<Source>,
        connections: &std::collections::BTreeMap<RegistryHost, Arc<Connection>>,
    ) -> Result<Resolved, PullError> {
        let by_digest = matches!(reference.target, PullTarget::Digest(_));
        if by_digest && let Some(resolved) = self.resolve_on_peers(reference).await? {
            return Ok(resolved);
        }
        match self
            .resolve_on_registries(reference, sources, connections)
            .await
        {
            Err(PullError::Unreachable { tried }) if !by_digest => {
                match self.resolve_on_peers(reference).await? {
                    Some(resolved) => {
                        tracing::info!(image = %reference, "no registry reachable; the tag resolved on a peer");
                        Ok(resolved)
                    }
                    None => Err(PullError::Unreachable { tried }),
                }
            }
            other => other,
        }
    }

    /// The manifest from a peer that records it, if one does.
    async fn resolve_on_peers(&self, reference: &PullRef) -> Result<Option<Resolved>, PullError> {
        let Some(peers) = &self.peers else {
            return Ok(None);
        };
        let path = DistPath::Manifest {
            repository: reference.repository.clone(),
            target: reference.target.clone(),
        };
        let Some(peer) = peers.holder(&path, &reference.registry).await else {
            return Ok(None);
        };
        let fetched = async {
            let response = peers.get(&peer, &path, &reference.registry).await?;
            Peers::read_small(&peer.name, response, MAX_MANIFEST_BYTES).await
        };
        let bytes = match fetched.await {
            Ok(bytes) => bytes,
            Err(failure) => {
                tracing::debug!(image = %reference, node = %peer.name, error = %failure.detail, "manifest from peer failed");
                return Ok(None);
            }
        };
        let origin = Origin::Peer(peer.name.clone());
        match image_manifest(bytes, &reference.target, origin) {
            Ok(resolved) => Ok(Some(resolved)),
            Err(Attempt::Unusable(source)) => Err(PullError::Unusable {
                reference: reference.to_string(),
                source,
            }),
            Err(Attempt::Failed(failure)) => {
                tracing::warn!(image = %reference, node = %peer.name, error = %failure.detail, "a peer served an unusable manifest");
                Ok(None)
            }
        }
    }

    /// The manifest from the registries, walking mirrors and upstream.
    async fn resolve_on_registries(
        &self,
        reference: &PullRef,
        sources: Vec<Source>,
        connections: &std::collections::BTreeMap<RegistryHost, Arc<Connection>>,
    ) -> Result<Resolved, PullError> {
        let mut walk = SourceWalk::new(sources, self.policy);
        let mut step = walk.start();
        loop {
            let (source, after) = match step {
                Step::Try { source, after } => (source, after),
                Step::GiveUp(verdict) => return Err(PullError::from_verdict(verdict, reference)),
            };
            tokio::time::sleep(after).await;
            let Some(conn) = connections.get(&source.host) else {
                return Err(PullError::Unreachable {
                    tried: vec![(source.host.clone(), "no client".to_owned())],
                });
            };
            match resolve_on(reference, &source, conn).await {
                Ok(resolved) => return Ok(resolved),
                Err(Attempt::Unusable(source)) => {
                    return Err(PullError::Unusable {
                        reference: reference.to_string(),
                        source,
                    });
                }
                Err(Attempt::Failed(failure)) => {
                    tracing::debug!(
                        image = %reference, registry = %source.host,
                        error = %failure.detail, "manifest fetch failed"
                    );
                    step = walk.failed(failure);
                }
            }
        }
    }

    async fn fetch_blob(
        &self,
        reference: &PullRef,
        blob: BlobInfo,
        mut walk: SourceWalk,
        connections: &std::collections::BTreeMap<RegistryHost, Arc<Connection>>,
        ingest: &Arc<Ingest>,
        events: &mpsc::Sender<PullEvent>,
    ) -> Result<(), PullError> {
        if let Some(peers) = &self.peers {
            match fetch_blob_from_peers(peers, reference, &blob, ingest, events).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(BlobAttempt::Store(e)) => return Err(PullError::Store(e)),
                Err(BlobAttempt::Task(e)) => return Err(PullError::Task(e)),
                Err(BlobAttempt::Failed(failure)) => {
                    tracing::info!(
                        image = %reference, blob = %blob.digest, error = %failure.detail,
                        "blob from peer failed; asking the registries"
                    );
                }
            }
        }
        let mut step = walk.start();
        loop {
            let (source, after) = match step {
                Step::Try { source, after } => (source, after),
                Step::GiveUp(verdict) => return Err(PullError::from_verdict(verdict, reference)),
            };
            tokio::time::sleep(after).await;
            let Some(conn) = connections.get(&source.host) else {
                return Err(PullError::Unreachable {
                    tried: vec![(source.host.clone(), "no client".to_owned())],
                });
            };
            match fetch_blob_from(reference, &blob, &source, conn, ingest, events).await {
                Ok(()) => return Ok(()),
                Err(BlobAttempt::Store(e)) => return Err(PullError::Store(e)),
                Err(BlobAttempt::Task(e)) => return Err(PullError::Task(e)),
                Err(BlobAttempt::Failed(failure)) => {
                    tracing::debug!(
                        image = %reference, registry = %source.host, blob = %blob.digest,
                        error = %failure.detail, "blob fetch failed"
                    );
                    step = walk.failed(failure);
                }
            }
        }
    }
}

/// The manifest a reference resolved to.
struct Resolved {
    /// The linux/amd64 manifest, as served.
    bytes: Bytes,
    digest: Digest,
    media_type: String,
    manifest: ImageManifest,
    source: Origin,
}

impl Resolved {
    fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            MediaType::from(self.media_type.as_str()),
            self.bytes.len() as u64,
            self.digest.to_spec(),
        )
    }
}

enum Attempt {
    Failed(Failure),
    Unusable(oci::LayoutError),
}

/// The failure class of a registry client error.
pub fn classify(error: &OciDistributionError) -> FailureKind {
    match error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => FailureKind::Unauthorized,
        OciDistributionError::ImageManifestNotFoundError(_) => FailureKind::NotFound,
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                FailureKind::Unauthorized
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                FailureKind::NotFound
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Toomanyrequests))
            {
                FailureKind::Transient
            } else {
                FailureKind::Refused
            }
        }
        OciDistributionError::ServerError { code, .. } => match code {
            401 | 403 => FailureKind::Unauthorized,
            404 => FailureKind::NotFound,
            408 | 429 | 500..=599 => FailureKind::Transient,
            _ => FailureKind::Refused,
        },
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
            FailureKind::Transient
        }
        OciDistributionError::DigestError(_) => FailureKind::Invalid,
        _ => FailureKind::Refused,
    }
}

fn failure(error: &OciDistributionError) -> Failure {
    Failure {
        kind: classify(error),
        detail: error_chain(error),
    }
}

/// Fetches the manifest of `reference` from one source, following an
/// index to linux/amd64.
async fn resolve_on(
    reference: &PullRef,
    source: &Source,
    conn: &Connection,
) -> Result<Resolved, Attempt> {
    let target = reference.on(&source.host);
    let (bytes, _) = conn
        .client
        .pull_manifest_raw(&target, &conn.auth, ACCEPTED_MANIFESTS)
        .await
        .map_err(|e| Attempt::Failed(failure(&e)))?;
    let digest = checked_manifest(&bytes, &reference.target)?;
    let (_, kind) = manifest_kind(&bytes)?;
    if kind == ManifestKind::Index {
        let index: ImageIndex = json::parse(&bytes).map_err(|e| invalid_json(&digest, &e))?;
        let child = select_platform(&index).cloned().ok_or_else(|| {
            Attempt::Unusable(oci::LayoutError::NoPlatform {
                digest: digest.clone(),
                available: index
                    .manifests()
                    .iter()
                    .map(|d| match d.platform() {
                        Some(p) => format!("{}/{}", p.os(), p.architecture()),
                        None => "no platform".to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        })?;
        let child_digest = descriptor_digest(&child).map_err(Attempt::Unusable)?;
        let by_digest = oci_client::Reference::with_digest(
            source.host.to_string(),
            reference.repository.clone(),
            child_digest.to_string(),
        );
        let (child_bytes, _) = conn
            .client
            .pull_manifest_raw(&by_digest, &conn.auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| Attempt::Failed(failure(&e)))?;
        return image_manifest(
            child_bytes,
            &PullTarget::Digest(child_digest),
            Origin::Registry(source.clone()),
        );
    }
    image_manifest(bytes, &reference.target, Origin::Registry(source.clone()))
}

/// An image manifest (not an index), checked against `target` and for
/// media types this node can use.
fn image_manifest(bytes: Bytes, target: &PullTarget, source: Origin) -> Result<Resolved, Attempt> {
    let digest = checked_manifest(&bytes, target)?;
    let (media_type, kind) = manifest_kind(&bytes)?;
    if kind != ManifestKind::Image {
        return Err(Attempt::Unusable(oci::LayoutError::TooDeep { digest }));
    }
    let manifest: ImageManifest = json::parse(&bytes).map_err(|e| invalid_json(&digest, &e))?;
    media::check_config(manifest.config().media_type()).map_err(|e| Attempt::Unusable(e.into()))?;
    for layer in manifest.layers() {
        media::layer_compression(layer.media_type()).map_err(|e| Attempt::Unusable(e.into()))?;
    }
    Ok(Resolved {
        bytes,
        digest,
        media_type,
        manifest,
        source,
    })
}

fn invalid_json(digest: &Digest, e: &serde_json::Error) -> Attempt {
    Attempt::Failed(Failure {
        kind: FailureKind::Invalid,
        detail: format!("manifest {digest} is not valid JSON of the expected shape: {e}"),
    })
}

/// The manifest's digest, checked against the one asked for.
fn checked_manifest(bytes: &[u8], target: &PullTarget) -> Result<Digest, Attempt> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Attempt::Failed(Failure {
            kind: FailureKind::Invalid,
            detail: format!(
                "the manifest is {} bytes, more than {MAX_MANIFEST_BYTES}",
                bytes.len()
            ),
        }));
    }
    let actual = Digest::of(bytes);
    if let PullTarget::Digest(wanted) = target
        && *wanted != actual
    {
        return Err(Attempt::Failed(Failure {
            kind: FailureKind::Invalid,
            detail: format!("manifest {wanted} was served with digest {actual}"),
        }));
    }
    Ok(actual)
}

/// The media type a manifest declares (or implies: an OCI manifest may
/// leave `mediaType` out) and what kind of document it is.
fn manifest_kind(bytes: &[u8]) -> Result<(String, ManifestKind), Attempt> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|e| {
        Attempt::Failed(Failure {
            kind: FailureKind::Invalid,
            detail: format!("the manifest is not JSON: {e}"),
        })
    })?;
    let media_type = head.media_type.unwrap_or_else(|| {
        if head.manifests.is_some() {
            media::OCI_INDEX.to_owned()
        } else {
            media::OCI_MANIFEST.to_owned()
        }
    });
    let kind = media::manifest_kind(&MediaType::from(media_type.as_str()))
        .map_err(|e| Attempt::Unusable(e.into()))?;
    Ok((media_type, kind))
}

enum BlobAttempt {
    Failed(Failure),
    Store(IngestError),
    Task(tokio::task::JoinError),
}

/// Streams one blob from one registry into the store.
async fn fetch_blob_from(
    reference: &PullRef,
    blob: &BlobInfo,
    source: &Source,
    conn: &Connection,
    ingest: &Arc<Ingest>,
    events: &mpsc::Sender<PullEvent>,
) -> Result<(), BlobAttempt> {
    let target = reference.on(&source.host);
    let digest_text = blob.digest.to_string();
    let stream = conn
        .client
        .pull_blob_stream(&target, digest_text.as_str())
        .await
        .map_err(|e| BlobAttempt::Failed(failure(&e)))?;
    store_stream(
        blob,
        Origin::Registry(source.clone()),
        stream,
        ingest,
        events,
    )
    .await
}

/// Streams one blob from the first peer that has it: `Ok(false)` when no
/// peer does.
async fn fetch_blob_from_peers(
    peers: &Peers,
    reference: &PullRef,
    blob: &BlobInfo,
    ingest: &Arc<Ingest>,
    events: &mpsc::Sender<PullEvent>,
) -> Result<bool, BlobAttempt> {
    let path = DistPath::Blob {
        repository: reference.repository.clone(),
        digest: blob.digest.clone(),
    };
    let Some(peer) = peers.holder(&path, &reference.registry).await else {
        return Ok(false);
    };
    let response = peers
        .get(&peer, &path, &reference.registry)
        .await
        .map_err(BlobAttempt::Failed)?;
    let stream = http_body_util::BodyDataStream::new(response.into_body())
        .map(|chunk| chunk.map_err(io::Error::other));
    store_stream(blob, Origin::Peer(peer.name), stream, ingest, events)
        .await
        .map(|()| true)
}

/// Writes a blob's bytes as they arrive into the store, verifying them,
/// and reports progress.
async fn store_stream<S>(
    blob: &BlobInfo,
    source: Origin,
    mut stream: S,
    ingest: &Arc<Ingest>,
    events: &mpsc::Sender<PullEvent>,
) -> Result<(), BlobAttempt>
where
    S: futures_util::Stream<Item = io::Result<Bytes>> + Unpin,
{
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(BLOB_CHANNEL_CHUNKS);
    let writer = {
        let ingest = Arc::clone(ingest);
        let expected = Expected {
            digest: blob.digest.clone(),
            size: Some(blob.size),
        };
        tokio::task::spawn_blocking(move || -> Result<u64, IngestError> {
            let mut w = ingest.blob_writer(expected)?;
            let copied = io::copy(&mut ChannelReader::new(rx), &mut w);
            match copied {
                Ok(_) => w.commit(),
                Err(source) => Err(IngestError::Io {
                    path: std::path::PathBuf::from("<network>"),
                    source,
                }),
            }
        })
    };
    let mut gate = ProgressGate::<Instant>::new(PROGRESS_INTERVAL, PROGRESS_MIN_BYTES);
    let mut done = 0u64;
    let mut stream_failure = None;
    let report = |done: u64| PullEvent::Blob {
        digest: blob.digest.clone(),
        done,
        total: blob.size,
        source: source.clone(),
    };
    if gate.should_report(Instant::now(), 0, blob.size) {
        let _ = events.send(report(0)).await;
    }
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                done = done.saturating_add(bytes.len() as u64);
                if tx.send(Ok(bytes)).await.is_err() {
                    // The writer stopped: its error is the answer.
                    break;
                }
                if gate.should_report(Instant::now(), done, blob.size) {
                    let _ = events.send(report(done)).await;
                }
            }
            Err(e) => {
                let kind = if e
                    .get_ref()
                    .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>())
                {
                    FailureKind::Invalid
                } else {
                    FailureKind::Transient
                };
                stream_failure = Some(Failure {
                    kind,
                    detail: format!("blob {}: {}", blob.digest, error_chain(&e)),
                });
                let _ = tx.send(Err(io::Error::other("the download failed"))).await;
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(BlobAttempt::Task)?;
    if let Some(failure) = stream_failure {
        return Err(BlobAttempt::Failed(failure));
    }
    match written {
        Ok(_) => Ok(()),
        Err(e @ IngestError::Mismatch { .. }) => Err(BlobAttempt::Failed(Failure {
            kind: FailureKind::Invalid,
            detail: error_chain(&e),
        })),
        // Longer than declared shows up as an I/O error of kind
        // InvalidData from the writer.
        Err(IngestError::Io { source, .. }) if source.kind() == io::ErrorKind::InvalidData => {
            Err(BlobAttempt::Failed(Failure {
                kind: FailureKind::Invalid,
                detail: source.to_string(),
            }))
        }
        Err(e) => Err(BlobAttempt::Store(e)),
    }
}

/// reqwest is built without a default crypto provider; cairnd uses ring
/// everywhere. Installing twice is harmless (the first one stays).
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind_of(bytes: &[u8]) -> Option<ManifestKind> {
        manifest_kind(bytes).ok().map(|(_, k)| k)
    }

    #[test]
    fn a_manifest_without_media_type_is_told_apart_by_its_shape() {
        assert_eq!(
            kind_of(br#"{"schemaVersion":2,"manifests":[]}"#),
            Some(ManifestKind::Index)
        );
        assert_eq!(
            kind_of(br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            Some(ManifestKind::Image)
        );
        assert!(matches!(
            manifest_kind(br#"{"mediaType":"application/vnd.example+json"}"#),
            Err(Attempt::Unusable(_))
        ));
        assert!(matches!(
            manifest_kind(b"<html>"),
            Err(Attempt::Failed(Failure {
                kind: FailureKind::Invalid,
                ..
            }))
        ));
    }

    #[test]
    fn a_manifest_asked_for_by_digest_must_hash_to_it() {
        let bytes = br#"{"schemaVersion":2}"#;
        let right = PullTarget::Digest(Digest::of(bytes));
        assert_eq!(
            checked_manifest(bytes, &right).ok(),
            Some(Digest::of(bytes))
        );
        let wrong = PullTarget::Digest(Digest::of(b"something else"));
        assert!(matches!(
            checked_manifest(bytes, &wrong),
            Err(Attempt::Failed(Failure {
                kind: FailureKind::Invalid,
                ..
            }))
        ));
        let tag = PullTarget::Tag("1".to_owned());
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(checked_manifest(&huge, &tag).is_err());
    }

    #[test]
    fn registry_answers_map_to_the_decisions() {
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "https://registry.site.internal/v2/".to_owned(),
            message: String::new(),
        };
        assert_eq!(classify(&server(401)), FailureKind::Unauthorized);
        assert_eq!(classify(&server(404)), FailureKind::NotFound);
        assert_eq!(classify(&server(503)), FailureKind::Transient);
        assert_eq!(classify(&server(429)), FailureKind::Transient);
        assert_eq!(classify(&server(400)), FailureKind::Refused);
        assert_eq!(
            classify(&OciDistributionError::UnauthorizedError { url: String::new() }),
            FailureKind::Unauthorized
        );
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
        .unwrap();
        assert_eq!(
            classify(&OciDistributionError::RegistryError {
                envelope,
                url: String::new()
            }),
            FailureKind::NotFound
        );
        assert_eq!(
            classify(&OciDistributionError::DigestError(
                oci_client::errors::DigestError::MissingAlgorithm
            )),
            FailureKind::Invalid
        );
    }

    proptest! {
        #[test]
        fn registry_manifest_bytes_never_panic_the_parsers(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048)
        ) {
            let _ = manifest_kind(&bytes);
            let _ = checked_manifest(&bytes, &PullTarget::Tag("1".to_owned()));
            let _ = json::parse::<ImageIndex>(&bytes);
            let _ = json::parse::<ImageManifest>(&bytes);
        }

        #[test]
        fn json_shaped_manifests_never_panic_the_parsers(
            media in proptest::option::of("[a-z./+-]{0,60}"),
            manifests in any::<bool>(),
            extra in "[ -~]{0,200}",
        ) {
            let mut doc = serde_json::Map::new();
            if let Some(m) = media {
                doc.insert("mediaType".to_owned(), serde_json::Value::String(m));
            }
            if manifests {
                doc.insert("manifests".to_owned(), serde_json::json!([{"digest": extra}]));
            } else {
                doc.insert("layers".to_owned(), serde_json::json!([extra]));
            }
            let bytes = serde_json::to_vec(&doc).unwrap();
            let _ = manifest_kind(&bytes);
            let _ = json::parse::<ImageIndex>(&bytes);
        }
    }
}
