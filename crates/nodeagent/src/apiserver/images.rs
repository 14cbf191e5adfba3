//! `/v1/images`: the node's image content store ([`crate::images`]).
//!
//! Archives stream both ways. An import's request body goes chunk by chunk
//! over a bounded channel to the store's import on a blocking thread, so an
//! archive of gigabytes never sits in memory; an export's archive is
//! written on a blocking thread into a channel that the response body
//! drains. The store is opened on first use (the agent asks for it at
//! start), which is also when what a crash left half-done is cleaned up
//! and the baked images are imported ([`crate::images::baked`]).

use std::io;
use std::sync::Arc;

use api::ErrorCode;
use api::types::{
    ImageList, ImageRefQuery, ImageRemoved, ImageSummary, ImportResponse, ImportedImage,
    OCI_ARCHIVE, PruneResponse,
};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Failure, QueryParams, ServerState};
use crate::error_chain;
use crate::images::{
    ChannelReader, ChannelWriter, ExportError, ImageRef, ImageStore, ImportError, RemoveError,
};

type Shared = State<Arc<ServerState>>;

/// Largest import body: bigger than any image the catalog ships, small
/// enough that a runaway upload cannot fill STATE unnoticed.
pub const MAX_IMPORT_BYTES: u64 = 8 << 30;
/// Chunks in flight between the network and the blocking side.
const CHANNEL_CHUNKS: usize = 16;
/// How long an import may take to answer: the general request timeout
/// would cut large archives off mid-upload.
pub const IMPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// Size of the chunks an export sends.
const EXPORT_CHUNK: usize = 256 * 1024;

/// Parses a reference from a request.
pub fn parse_ref(text: &str) -> Result<ImageRef, Failure> {
    text.parse::<ImageRef>()
        .map_err(|e| Failure::new(ErrorCode::BadRequest, error_chain(&e)))
}

fn not_found(reference: &ImageRef) -> Failure {
    Failure::new(ErrorCode::ImageNotFound, format!("no image {reference}"))
}

impl ServerState {
    /// The content store, opened (and cleaned) on first use.
    pub(super) async fn image_store(&self) -> Result<Arc<ImageStore>, Failure> {
        self.images
            .get_or_try_init(|| async {
                let dir = self.options.images_dir.clone();
                let baked = self.options.baked_images_dir.clone();
                // Baked images are in before anyone gets the store, so a
                // `ctr run` right after first boot finds them.
                let opened = tokio::task::spawn_blocking(move || {
                    ImageStore::open(&dir).inspect(|store| {
                        crate::images::baked::import_all(store, &baked);
                    })
                })
                .await
                .map_err(|e| Failure::internal("the image store task failed", &e))?;
                opened
                    .map(Arc::new)
                    .map_err(|e| Failure::internal("cannot open the image store", &e))
            })
            .await
            .cloned()
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Failure::internal("the image store task failed", &e))
}

/// `GET /v1/images`.
pub async fn list(State(state): Shared) -> Result<Json<ImageList>, Failure> {
    let store = state.image_store().await?;
    let rows = blocking(move || store.list()).await?;
    Ok(Json(ImageList {
        images: rows
            .into_iter()
            .map(|row| ImageSummary {
                reference: row.reference.map(|r| r.as_str().to_owned()),
                digest: row.digest.to_string(),
                size: row.size,
                created: row.created,
            })
            .collect(),
    }))
}

/// `POST /v1/images/import`: the body is an oci-archive.
pub async fn import(State(state): Shared, body: Body) -> Result<Json<ImportResponse>, Failure> {
    let store = state.image_store().await?;
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let task = tokio::task::spawn_blocking(move || store.import(ChannelReader::new(rx)));
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    let mut too_large = false;
    while let Some(chunk) = stream.next().await {
        let item = match chunk {
            Ok(bytes) => {
                total = total.saturating_add(bytes.len() as u64);
                if total > MAX_IMPORT_BYTES {
                    too_large = true;
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the archive is larger than the import limit",
                    ))
                } else {
                    Ok(bytes)
                }
            }
            Err(e) => Err(io::Error::other(e)),
        };
        let last = item.is_err();
        // A closed channel means the import already stopped (a bad
        // archive); its error is the answer.
        if tx.send(item).await.is_err() || last {
            break;
        }
    }
    drop(tx);
    let result = task
        .await
        .map_err(|e| Failure::internal("the image import task failed", &e))?;
    if too_large {
        return Err(Failure::new(
            ErrorCode::PayloadTooLarge,
            format!("the archive is larger than {MAX_IMPORT_BYTES} bytes"),
        ));
    }
    match result {
        Ok(imported) => Ok(Json(ImportResponse {
            images: imported
                .into_iter()
                .map(|i| ImportedImage {
                    reference: i.reference.as_str().to_owned(),
                    digest: i.digest.to_string(),
                })
                .collect(),
        })),
        Err(e) => Err(import_failure(&e)),
    }
}

fn import_failure(e: &ImportError) -> Failure {
    if e.is_bad_input() {
        Failure::new(ErrorCode::InvalidImage, error_chain(e))
    } else {
        Failure::internal("cannot import the archive", e)
    }
}

/// `GET /v1/images/export?ref=…`: one image as an oci-archive.
pub async fn export(
    State(state): Shared,
    QueryParams(query): QueryParams<ImageRefQuery>,
) -> Result<Response, Failure> {
    let reference = parse_ref(&query.reference)?;
    let store = state.image_store().await?;
    // Refuse an unknown image before the 200 goes out.
    let known = {
        let (store, reference) = (Arc::clone(&store), reference.clone());
        blocking(move || store.resolve(&reference).is_some()).await?
    };
    if !known {
        return Err(not_found(&reference));
    }
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let errors = tx.clone();
    tokio::task::spawn_blocking(move || {
        let writer = io::BufWriter::with_capacity(EXPORT_CHUNK, ChannelWriter::new(tx));
        let result = store.export(&reference, writer).and_then(|w| {
            w.into_inner().map(drop).map_err(|e| ExportError::Io {
                path: store.root().to_owned(),
                source: e.into_error(),
            })
        });
        if let Err(e) = result {
            tracing::warn!(image = %reference, error = %error_chain(&e), "image export failed");
            // Breaking the body tells the client the archive is incomplete.
            let _ = errors.blocking_send(Err(io::Error::other(error_chain(&e))));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, OCI_ARCHIVE)],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `DELETE /v1/images/{ref}`.
pub async fn remove(
    State(state): Shared,
    Path(raw): Path<String>,
) -> Result<Json<ImageRemoved>, Failure> {
    let reference = parse_ref(&raw)?;
    let store = state.image_store().await?;
    let target = reference.clone();
    match blocking(move || store.remove(&target)).await? {
        Ok(removed) => Ok(Json(ImageRemoved {
            removed: removed.iter().map(|r| r.as_str().to_owned()).collect(),
        })),
        Err(RemoveError::NotFound(_)) => Err(not_found(&reference)),
        Err(e @ RemoveError::Save { .. }) => Err(Failure::internal("cannot remove the image", &e)),
    }
}

/// `POST /v1/images/prune`.
pub async fn prune(State(state): Shared) -> Result<Json<PruneResponse>, Failure> {
    let store = state.image_store().await?;
    let holds = state.containers().await?.holds();
    let report = blocking(move || store.prune(&holds))
        .await?
        .map_err(|e| Failure::internal("cannot prune the image store", &e))?;
    let text = |v: Vec<oci::Digest>| v.iter().map(ToString::to_string).collect();
    Ok(Json(PruneResponse {
        images: text(report.images),
        blobs: text(report.blobs),
        layers: text(report.layers),
        bytes_freed: report.bytes_freed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Query;
    use axum::http::Uri;
    use proptest::prelude::*;

    fn query_of(raw: &str) -> Option<ImageRefQuery> {
        let uri: Uri = format!("/v1/images/export?{raw}").parse().ok()?;
        Query::<ImageRefQuery>::try_from_uri(&uri).ok().map(|q| q.0)
    }

    #[test]
    fn the_export_query_takes_ref_and_nothing_else() {
        assert_eq!(
            query_of("ref=redis%3Alatest").map(|q| q.reference),
            Some("redis:latest".to_owned())
        );
        assert!(query_of("").is_none());
        assert!(query_of("ref=a&extra=1").is_none());
        assert!(parse_ref("redis:latest").is_ok());
        assert!(parse_ref("sha256:nothex").is_err());
    }

    proptest! {
        #[test]
        fn any_reference_survives_the_query_string(reference in "\\PC{0,100}") {
            let encoded = serde_urlencoded::to_string(ImageRefQuery { reference: reference.clone() }).unwrap();
            prop_assert_eq!(query_of(&encoded).map(|q| q.reference), Some(reference.clone()));
            // Whatever arrives, parsing answers instead of panicking.
            let _ = parse_ref(&reference);
        }

        #[test]
        fn raw_query_strings_never_panic(raw in "[ -~]{0,120}") {
            if let Some(q) = query_of(&raw) {
                let _ = parse_ref(&q.reference);
            }
        }
    }
}
