//! Sharing the content store with the cluster's other nodes: the
//! read-only part of the OCI distribution API, served on the peer port
//! (`:7444`, mutual TLS, `cairn:node` certificates only), so a node pulls
//! what another node already has instead of going to the registry again.
//!
//! Routes (`GET` and `HEAD`):
//!
//! - `/v2/`: 200, the API is here.
//! - `/v2/<repository>/blobs/<digest>`: any blob the store holds, by
//!   digest alone (content addressing makes the repository irrelevant; the
//!   receiver verifies every byte against the digest anyway).
//! - `/v2/<repository>/manifests/<digest>`: an image manifest the store
//!   records, with its media type.
//! - `/v2/<repository>/manifests/<tag>?ns=<registry>`: the manifest the
//!   store records under `<registry>/<repository>:<tag>`. A tag means
//!   nothing without its registry, so `ns` is required, as containerd's
//!   mirrors send it.
//!
//! Answers carry `Docker-Content-Digest` and `Content-Length`; refusals
//! are the spec's error documents (`BLOB_UNKNOWN`, `MANIFEST_UNKNOWN`,
//! `NAME_INVALID`, ...). [`DistPath`] is the one codec of these paths: the
//! server parses with it and the pulling side ([`super::pull`]) writes with
//! it.

use std::io::{self, Read};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use oci::{Digest, RefName};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::pull::{PullRef, PullTarget, valid_repository};
use super::{ChannelWriter, ImageRef, ImageStore};
use crate::config::RegistryHost;

/// The API's root.
pub const API_ROOT: &str = "/v2/";
/// The header that names the digest of what is served.
pub const DIGEST_HEADER: &str = "docker-content-digest";
/// Chunks a blob is sent in.
const BLOB_CHUNK: usize = 256 * 1024;
/// Chunks buffered towards a slow reader.
const CHUNKS_IN_FLIGHT: usize = 8;

/// A distribution API path this node answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DistPath {
    /// `/v2/`.
    Root,
    /// `/v2/<repository>/blobs/<digest>`.
    Blob {
        /// The repository the client asks in.
        repository: String,
        /// The blob.
        digest: Digest,
    },
    /// `/v2/<repository>/manifests/<tag or digest>`.
    Manifest {
        /// The repository.
        repository: String,
        /// Tag or digest.
        target: PullTarget,
    },
}

/// Why a path is not one [`DistPath`] knows.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DistPathError {
    /// Not under `/v2/`, or not blobs or manifests.
    #[error("{0:?} is not a distribution API path this node serves")]
    Unknown(String),
    /// The repository breaks the spec's grammar.
    #[error("{0:?} is not a valid repository name")]
    Repository(String),
    /// The blob is not named by a sha256 digest.
    #[error("{0:?} is not a sha256 digest")]
    Digest(String),
    /// The manifest is named by neither a tag nor a digest.
    #[error("{0:?} is neither a tag nor a sha256 digest")]
    Reference(String),
}

impl DistPath {
    /// Parses the path part of a request URI.
    pub fn parse(path: &str) -> Result<Self, DistPathError> {
        let unknown = || DistPathError::Unknown(path.to_owned());
        let rest = path.strip_prefix(API_ROOT).ok_or_else(unknown)?;
        if rest.is_empty() {
            return Ok(DistPath::Root);
        }
        let (head, last) = rest.rsplit_once('/').ok_or_else(unknown)?;
        let (repository, kind) = head.rsplit_once('/').ok_or_else(unknown)?;
        if !valid_repository(repository) {
            return Err(DistPathError::Repository(repository.to_owned()));
        }
        let repository = repository.to_owned();
        match kind {
            "blobs" => Digest::parse(last)
                .map(|digest| DistPath::Blob { repository, digest })
                .map_err(|_| DistPathError::Digest(last.to_owned())),
            "manifests" => {
                let target = if last.starts_with(oci::digest::SHA256_PREFIX) {
                    Digest::parse(last)
                        .map(PullTarget::Digest)
                        .map_err(|_| DistPathError::Reference(last.to_owned()))?
                } else if super::pull::valid_tag(last) {
                    PullTarget::Tag(last.to_owned())
                } else {
                    return Err(DistPathError::Reference(last.to_owned()));
                };
                Ok(DistPath::Manifest { repository, target })
            }
            _ => Err(unknown()),
        }
    }

    /// The path, as [`DistPath::parse`] reads it.
    pub fn render(&self) -> String {
        match self {
            DistPath::Root => API_ROOT.to_owned(),
            DistPath::Blob { repository, digest } => {
                format!("{API_ROOT}{repository}/blobs/{digest}")
            }
            DistPath::Manifest { repository, target } => match target {
                PullTarget::Tag(tag) => format!("{API_ROOT}{repository}/manifests/{tag}"),
                PullTarget::Digest(digest) => {
                    format!("{API_ROOT}{repository}/manifests/{digest}")
                }
            },
        }
    }

    /// The path with the registry the content belongs to as `ns`.
    pub fn with_ns(&self, ns: &RegistryHost) -> String {
        format!("{}?ns={ns}", self.render())
    }
}

/// The peer-port routes that serve `store`.
pub fn routes(store: Arc<ImageStore>) -> Router {
    Router::new()
        .route(API_ROOT, get(root))
        .route("/v2/{*rest}", get(serve))
        .with_state(store)
}

#[derive(Debug, Deserialize)]
struct NsQuery {
    ns: Option<String>,
}

async fn root() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from_static(b"{}"),
    )
        .into_response()
}

async fn serve(
    State(store): State<Arc<ImageStore>>,
    method: Method,
    uri: Uri,
    Query(query): Query<NsQuery>,
) -> Response {
    let path = match DistPath::parse(uri.path()) {
        Ok(path) => path,
        Err(e @ DistPathError::Unknown(_)) => {
            return refusal(StatusCode::NOT_FOUND, "UNSUPPORTED", &e.to_string());
        }
        Err(e @ DistPathError::Repository(_)) => {
            return refusal(StatusCode::BAD_REQUEST, "NAME_INVALID", &e.to_string());
        }
        Err(e @ DistPathError::Digest(_)) => {
            return refusal(StatusCode::BAD_REQUEST, "DIGEST_INVALID", &e.to_string());
        }
        Err(e @ DistPathError::Reference(_)) => {
            return refusal(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", &e.to_string());
        }
    };
    let head = method == Method::HEAD;
    match path {
        DistPath::Root => root().await,
        DistPath::Blob { digest, .. } => blob(store, digest, head).await,
        DistPath::Manifest { repository, target } => {
            manifest(store, &repository, target, query.ns, head).await
        }
    }
}

/// A distribution-spec error document.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message}]});
    (status, axum::Json(body)).into_response()
}

async fn blob(store: Arc<ImageStore>, digest: Digest, head: bool) -> Response {
    let path = store.blob_path(&digest);
    // Opened before answering: a prune that removes the blob afterwards
    // does not cut the transfer short, the open file stays readable.
    let opened = tokio::task::spawn_blocking(move || -> io::Result<(std::fs::File, u64)> {
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        Ok((file, len))
    })
    .await;
    let (file, len) = match opened {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
            return refusal(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                &format!("this node has no blob {digest}"),
            );
        }
        Ok(Err(e)) => {
            tracing::warn!(blob = %digest, "cannot open a blob for a peer: {e}");
            return refusal(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string());
        }
        Err(e) => {
            return refusal(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string());
        }
    };
    let headers = content_headers(&digest, len, "application/octet-stream");
    if head {
        return (headers, Body::empty()).into_response();
    }
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    let errors = tx.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = io::BufWriter::with_capacity(BLOB_CHUNK, ChannelWriter::new(tx));
        let copied = io::copy(&mut file.take(len), &mut out).and_then(|_| {
            out.into_inner()
                .map(drop)
                .map_err(io::IntoInnerError::into_error)
        });
        if let Err(e) = copied
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            tracing::warn!(blob = %digest, "serving a blob to a peer failed: {e}");
            // Breaking the body tells the peer the blob is incomplete.
            let _ = errors.blocking_send(Err(e));
        }
    });
    (headers, Body::from_stream(tokio_stream_of(rx))).into_response()
}

async fn manifest(
    store: Arc<ImageStore>,
    repository: &str,
    target: PullTarget,
    ns: Option<String>,
    head: bool,
) -> Response {
    let reference = match &target {
        PullTarget::Digest(digest) => ImageRef::Digest(digest.clone()),
        PullTarget::Tag(tag) => match recorded_name(ns.as_deref(), repository, tag) {
            Ok(name) => ImageRef::Name(name),
            Err(message) => return refusal(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", &message),
        },
    };
    let read = tokio::task::spawn_blocking(move || {
        let (digest, record) = store.resolve(&reference)?;
        let bytes = std::fs::read(store.blob_path(&digest)).ok()?;
        Some((digest, record.media_type, bytes))
    })
    .await;
    let Ok(Some((digest, media_type, bytes))) = read else {
        return refusal(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            &format!(
                "this node records no image manifest {}",
                DistPath::Manifest {
                    repository: repository.to_owned(),
                    target,
                }
                .render()
            ),
        );
    };
    let headers = content_headers(&digest, bytes.len() as u64, &media_type);
    if head {
        return (headers, Body::empty()).into_response();
    }
    (headers, Body::from(bytes)).into_response()
}

/// The store name of `<ns>/<repository>:<tag>`.
fn recorded_name(ns: Option<&str>, repository: &str, tag: &str) -> Result<RefName, String> {
    let ns = ns.ok_or_else(|| {
        format!("a manifest by tag needs its registry as ?ns= ({repository}:{tag})")
    })?;
    let reference: PullRef = format!("{ns}/{repository}:{tag}")
        .parse()
        .map_err(|e: super::pull::PullRefError| e.to_string())?;
    reference
        .store_name()
        .ok_or_else(|| format!("{reference} cannot be an image name"))
}

fn content_headers(
    digest: &Digest,
    len: u64,
    media_type: &str,
) -> [(header::HeaderName, HeaderValue); 3] {
    let value = |text: &str| {
        HeaderValue::from_str(text)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
    };
    [
        (header::CONTENT_TYPE, value(media_type)),
        (header::CONTENT_LENGTH, HeaderValue::from(len)),
        (
            header::HeaderName::from_static(DIGEST_HEADER),
            value(&digest.to_string()),
        ),
    ]
}

/// The receiving end of a channel as a body stream.
fn tokio_stream_of(
    rx: mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn digest() -> Digest {
        Digest::of(b"layer")
    }

    #[test]
    fn blob_and_manifest_paths_parse_into_what_they_name() {
        assert_eq!(DistPath::parse("/v2/"), Ok(DistPath::Root));
        assert_eq!(
            DistPath::parse(&format!("/v2/team/app/blobs/{}", digest())),
            Ok(DistPath::Blob {
                repository: "team/app".to_owned(),
                digest: digest()
            })
        );
        assert_eq!(
            DistPath::parse("/v2/redis/manifests/7.0"),
            Ok(DistPath::Manifest {
                repository: "redis".to_owned(),
                target: PullTarget::Tag("7.0".to_owned())
            })
        );
        assert_eq!(
            DistPath::parse(&format!("/v2/redis/manifests/{}", digest())),
            Ok(DistPath::Manifest {
                repository: "redis".to_owned(),
                target: PullTarget::Digest(digest())
            })
        );
    }

    #[test]
    fn paths_that_escape_or_break_the_grammar_are_refused_by_name() {
        assert!(matches!(
            DistPath::parse("/v2/../blobs/sha256:00"),
            Err(DistPathError::Repository(_))
        ));
        assert!(matches!(
            DistPath::parse("/v2/Upper/blobs/sha256:00"),
            Err(DistPathError::Repository(_))
        ));
        assert!(matches!(
            DistPath::parse("/v2/app/blobs/md5:00"),
            Err(DistPathError::Digest(_))
        ));
        assert!(matches!(
            DistPath::parse("/v2/app/manifests/.hidden"),
            Err(DistPathError::Reference(_))
        ));
        assert!(matches!(
            DistPath::parse("/v2/app/tags/list"),
            Err(DistPathError::Unknown(_))
        ));
        assert!(matches!(
            DistPath::parse("/v1/app/blobs/x"),
            Err(DistPathError::Unknown(_))
        ));
        assert!(matches!(
            DistPath::parse("/v2/blobs"),
            Err(DistPathError::Unknown(_))
        ));
    }

    #[test]
    fn a_tag_is_looked_up_under_its_registry_only() {
        assert_eq!(
            recorded_name(Some("registry.site:5000"), "team/app", "1")
                .unwrap()
                .as_str(),
            "registry.site:5000/team/app:1"
        );
        assert!(recorded_name(None, "team/app", "1").is_err());
        assert!(recorded_name(Some("not a host"), "team/app", "1").is_err());
    }

    proptest! {
        #[test]
        fn what_is_rendered_parses_back(
            repository in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}",
            tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            blob in any::<bool>(),
        ) {
            let path = if blob {
                DistPath::Blob { repository, digest: Digest::of(&bytes) }
            } else {
                DistPath::Manifest { repository, target: PullTarget::Tag(tag) }
            };
            prop_assert_eq!(DistPath::parse(&path.render()), Ok(path));
        }

        #[test]
        fn any_request_path_parses_or_is_refused_without_panicking(path in "/v2/[ -~]{0,120}") {
            let _ = DistPath::parse(&path);
        }
    }
}
