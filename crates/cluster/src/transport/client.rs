//! Requests from this node to another node's peer-port routes other than
//! Raft (image sharing): one connection per request, dialled and checked
//! exactly like a Raft stream, so the answer comes from the node the
//! directory names and from nobody else.

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;

use super::peer::{DialError, dial};
use super::{PeerAddress, Shared};
use crate::pki::SubjectName;

/// Dialling, TLS and the HTTP handshake together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A peer's answer; its body streams from the peer as it is read.
pub type PeerResponse = hyper::Response<Incoming>;

/// Why a request to a peer got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerRequestError {
    /// The connection could not be opened.
    #[error(transparent)]
    Dial(DialError),
    /// Opening it took too long.
    #[error("connecting to node {node} timed out after {CONNECT_TIMEOUT:?}")]
    Timeout {
        /// The node.
        node: SubjectName,
    },
    /// HTTP failed (handshake, or the connection broke before the answer).
    #[error("HTTP to node {node} failed")]
    Http {
        /// The node.
        node: SubjectName,
        /// Why.
        #[source]
        source: hyper::Error,
    },
}

/// Sends `request` to `target` and returns its answer once the headers
/// are in. The connection lives until the body is read to the end or
/// dropped.
pub(super) async fn request(
    shared: &Shared,
    target: &PeerAddress,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<PeerResponse, PeerRequestError> {
    let tls = shared.tls();
    let open = async {
        let stream = dial(&tls, target).await.map_err(PeerRequestError::Dial)?;
        hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| PeerRequestError::Http {
                node: target.name.clone(),
                source,
            })
    };
    let (mut sender, connection) =
        tokio::time::timeout(CONNECT_TIMEOUT, open)
            .await
            .map_err(|_| PeerRequestError::Timeout {
                node: target.name.clone(),
            })??;
    let node = target.name.clone();
    shared.runtime.spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%node, "peer request connection ended: {e}");
        }
    });
    sender
        .send_request(request)
        .await
        .map_err(|source| PeerRequestError::Http {
            node: target.name.clone(),
            source,
        })
}
