//! `POST /v1/images/pull`: a pull ([`crate::images::pull`]) with its
//! progress streamed back as NDJSON.
//!
//! The request is checked (JSON, reference) before the answer starts, so
//! a malformed one is an ordinary 400. From then on the pull runs in its
//! own task and the answer is a 200 whose lines are [`PullEvent`]s, the
//! last one `done` or `error`. A client that goes away stops receiving
//! lines but not the pull: what it fetched is stored and named as if it
//! had stayed, as `docker pull` does.

use std::sync::Arc;

use api::ErrorCode;
use api::types::{PullBlob, PullEvent, PullRequest, PullSource, PullSourceRole};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::{Failure, JsonBody, ServerState};
use crate::config::RegistryHost;
use crate::error_chain;
use crate::images::pull::{self, Origin, Peers, PullError, PullRef, Puller, SourceRole};

/// Lines buffered towards a slow client before the pull waits for it.
const LINES_IN_FLIGHT: usize = 64;

fn source(origin: &Origin, registry: &RegistryHost) -> PullSource {
    match origin {
        Origin::Registry(s) => PullSource {
            registry: s.host.to_string(),
            role: match s.role {
                SourceRole::Mirror => PullSourceRole::Mirror,
                SourceRole::Upstream => PullSourceRole::Upstream,
            },
            node: None,
        },
        Origin::Peer(node) => PullSource {
            registry: registry.to_string(),
            role: PullSourceRole::Peer,
            node: Some(node.to_string()),
        },
    }
}

fn event(e: pull::PullEvent, registry: &RegistryHost) -> PullEvent {
    match e {
        pull::PullEvent::Resolved {
            digest,
            source: from,
            blobs,
        } => PullEvent::Resolved {
            digest: digest.to_string(),
            source: source(&from, registry),
            blobs: blobs
                .into_iter()
                .map(|b| PullBlob {
                    digest: b.digest.to_string(),
                    size: b.size,
                    present: b.present,
                })
                .collect(),
        },
        pull::PullEvent::Blob {
            digest,
            done,
            total,
            source: from,
        } => PullEvent::Progress {
            digest: digest.to_string(),
            done,
            total,
            source: source(&from, registry),
        },
    }
}

/// The API code of a failed pull.
pub fn failure_code(e: &PullError) -> ErrorCode {
    match e {
        PullError::AuthFailed { .. } => ErrorCode::RegistryAuthFailed,
        PullError::NotFound { .. } => ErrorCode::ImageNotFound,
        PullError::Unreachable { .. } => ErrorCode::RegistryUnreachable,
        PullError::Name(_) => ErrorCode::BadRequest,
        PullError::Invalid { .. }
        | PullError::Unusable { .. }
        | PullError::Store(_)
        | PullError::Client { .. }
        | PullError::Commit(_)
        | PullError::Task(_) => {
            if e.is_invalid_image() {
                ErrorCode::InvalidImage
            } else {
                ErrorCode::Internal
            }
        }
    }
}

fn line(event: &PullEvent) -> Bytes {
    let mut bytes = serde_json::to_vec(event).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// `POST /v1/images/pull`.
pub async fn pull(
    State(state): State<Arc<ServerState>>,
    JsonBody(request): JsonBody<PullRequest>,
) -> Result<Response, Failure> {
    let reference: PullRef = request
        .reference
        .parse()
        .map_err(|e: pull::PullRefError| Failure::new(ErrorCode::BadRequest, e.to_string()))?;
    let store = state.image_store().await?;
    let registries = state.config.borrow().config.registries.clone();
    let mut puller = Puller::new(store, registries);
    if let Some(member) = state.running_member() {
        puller = puller.with_peers(Peers::new(member.transport().clone()));
    }

    let (lines, rx) = mpsc::channel::<Bytes>(LINES_IN_FLIGHT);
    tokio::spawn(async move {
        let (events, mut progress) = mpsc::channel(LINES_IN_FLIGHT);
        let run = async {
            let result = puller.pull(&reference, &events).await;
            drop(events);
            result
        };
        let forward = async {
            while let Some(e) = progress.recv().await {
                // A client that left stops the lines, not the pull.
                let _ = lines.send(line(&event(e, &reference.registry))).await;
            }
        };
        let (result, ()) = tokio::join!(run, forward);
        let last = match result {
            Ok(pulled) => {
                tracing::info!(image = %pulled.reference, digest = %pulled.digest, "image pulled");
                PullEvent::Done {
                    references: vec![pulled.reference.to_string()],
                    digest: pulled.digest.to_string(),
                }
            }
            Err(e) => {
                let message = error_chain(&e);
                tracing::warn!(image = %reference, error = %message, "image pull failed");
                PullEvent::Error {
                    code: failure_code(&e),
                    message,
                }
            }
        };
        let _ = lines.send(line(&last)).await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|l| (Ok::<_, std::convert::Infallible>(l), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, api::NDJSON)],
        Body::from_stream(stream),
    )
        .into_response())
}
