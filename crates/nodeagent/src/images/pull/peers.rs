//! Asking the cluster's other nodes for content before the registries:
//! the pulling side of [`crate::images::share`].
//!
//! For each blob every peer is asked at once (`HEAD`, answered within
//! [`ASK_TIMEOUT`] or not at all) and the first that has it serves it; a
//! peer that fails half-way hands the blob back to the registries, whose
//! retries and fallbacks then apply as if no peer had been asked. Nothing
//! a peer serves is trusted: blobs and manifests are verified against
//! their digests exactly like a registry's.

use std::time::Duration;

use bytes::Bytes;
use cluster::pki::SubjectName;
use cluster::transport::{PeerAddress, PeerResponse, Transport};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http_body_util::{BodyExt, Empty};

use super::plan::{Failure, FailureKind};
use crate::config::RegistryHost;
use crate::error_chain;
use crate::images::share::DistPath;

/// How long a peer may take to say whether it has something.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer may take to start sending what it said it has.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The other nodes of this node's cluster.
#[derive(Clone, Debug)]
pub struct Peers {
    transport: Transport,
}

impl Peers {
    /// The nodes in `transport`'s directory.
    pub fn new(transport: Transport) -> Self {
        Self { transport }
    }

    /// The first peer that has `path` (content of registry `ns`), if any
    /// answers in time.
    pub(super) async fn holder(&self, path: &DistPath, ns: &RegistryHost) -> Option<PeerAddress> {
        let uri = path.with_ns(ns);
        let mut asks: FuturesUnordered<_> = self
            .transport
            .peers()
            .into_iter()
            .map(|peer| {
                let uri = uri.clone();
                async move {
                    let asked = async {
                        let head = request(hyper::Method::HEAD, &uri).map_err(|f| f.detail)?;
                        match tokio::time::timeout(ASK_TIMEOUT, self.transport.request(&peer, head))
                            .await
                        {
                            Ok(Ok(response)) => Ok(response.status()),
                            Ok(Err(e)) => Err(error_chain(&e)),
                            Err(_) => Err(format!("no answer in {ASK_TIMEOUT:?}")),
                        }
                    };
                    let status = asked.await;
                    (peer, status)
                }
            })
            .collect();
        while let Some((peer, status)) = asks.next().await {
            match status {
                Ok(hyper::StatusCode::OK) => return Some(peer),
                Ok(status) => {
                    tracing::trace!(node = %peer.name, %uri, %status, "peer does not have it");
                }
                Err(detail) => tracing::debug!(node = %peer.name, %uri, "peer not asked: {detail}"),
            }
        }
        None
    }

    /// `GET`s `path` from `peer`; anything but a 200 is a failure.
    pub(super) async fn get(
        &self,
        peer: &PeerAddress,
        path: &DistPath,
        ns: &RegistryHost,
    ) -> Result<PeerResponse, Failure> {
        let uri = path.with_ns(ns);
        let failed = |kind, detail: String| Failure {
            kind,
            detail: format!("node {}: {detail}", peer.name),
        };
        let get = request(hyper::Method::GET, &uri)?;
        let response = tokio::time::timeout(ANSWER_TIMEOUT, self.transport.request(peer, get))
            .await
            .map_err(|_| {
                failed(
                    FailureKind::Transient,
                    format!("no answer in {ANSWER_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| failed(FailureKind::Transient, error_chain(&e)))?;
        match response.status() {
            hyper::StatusCode::OK => Ok(response),
            hyper::StatusCode::NOT_FOUND => {
                Err(failed(FailureKind::NotFound, format!("{uri}: 404")))
            }
            status => Err(failed(FailureKind::Refused, format!("{uri}: {status}"))),
        }
    }

    /// The whole body of a small answer (a manifest), refused past `limit`.
    pub(super) async fn read_small(
        node: &SubjectName,
        response: PeerResponse,
        limit: usize,
    ) -> Result<Bytes, Failure> {
        let body = http_body_util::Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| Failure {
                kind: FailureKind::Invalid,
                detail: format!("node {node}: the manifest could not be read whole: {e}"),
            })?;
        Ok(body.to_bytes())
    }
}

fn request(method: hyper::Method, uri: &str) -> Result<hyper::Request<Empty<Bytes>>, Failure> {
    hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header(hyper::header::HOST, "cairn-peer")
        .body(Empty::new())
        .map_err(|e| Failure {
            kind: FailureKind::Refused,
            detail: format!("{uri} is not a request URI: {e}"),
        })
}
