//! `/v1/containers`: the node's containers ([`crate::containers`]).
//!
//! Each handler is a thin shell over [`Containers`]: it parses the path
//! and body, calls one operation, and maps [`ContainerError`] to the API's
//! codes. Logs and exec answer NDJSON streams fed by channels, so a slow
//! client holds back only its own reader.

use std::sync::Arc;
use std::time::Duration;

use api::ErrorCode;
use api::types::{
    ContainerCreateRequest, ContainerInfo, ContainerList, ContainerLogQuery, ContainerRemoveQuery,
    ContainerRemoved, ContainerStopRequest, ExecFrame, ExecRequest,
};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Failure, JsonBody, QueryParams, ServerState};
use crate::containers::{ContainerError, ContainerOptions, Containers};
use crate::error_chain;

type Shared = State<Arc<ServerState>>;

/// How long a change to a container may take before the answer: the
/// longest stop timeout (10 minutes) plus a shim's start.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(13 * 60);

/// The operations that may take [`CHANGE_TIMEOUT`].
pub fn is_slow(operation: &str) -> bool {
    matches!(
        operation,
        "container_create"
            | "container_start"
            | "container_stop"
            | "container_restart"
            | "container_remove"
    )
}

impl ServerState {
    /// The container manager, opened (with the image store) on first use;
    /// the agent asks for it once at start, which re-attaches to running
    /// shims.
    pub async fn containers(&self) -> Result<Arc<Containers>, Failure> {
        self.containers
            .get_or_try_init(|| async {
                let images = self.image_store().await?;
                let options = ContainerOptions {
                    root: self.options.containers_dir.clone(),
                    volumes: self.options.volumes_dir.clone(),
                    shim: self.options.shim.clone(),
                    ..ContainerOptions::under(std::path::Path::new("/"))
                };
                Containers::open(options, images)
                    .await
                    .map_err(|e| Failure::internal("cannot open the containers", &e))
            })
            .await
            .cloned()
    }
}

impl From<ContainerError> for Failure {
    fn from(error: ContainerError) -> Self {
        let code = match &error {
            ContainerError::Invalid(_)
            | ContainerError::Process { .. }
            | ContainerError::Spec(_) => ErrorCode::InvalidContainer,
            ContainerError::ImageNotFound(_) => ErrorCode::ImageNotFound,
            ContainerError::NotFound(_) => ErrorCode::ContainerNotFound,
            ContainerError::Exists(_) => ErrorCode::ContainerExists,
            ContainerError::Running(_) => ErrorCode::ContainerRunning,
            ContainerError::NotRunning(_) => ErrorCode::ContainerNotRunning,
            ContainerError::StartFailed { .. } => ErrorCode::ContainerStartFailed,
            ContainerError::Shim { .. }
            | ContainerError::Io { .. }
            | ContainerError::ImageConfig { .. }
            | ContainerError::Task(_)
            | ContainerError::Thread(_) => ErrorCode::Internal,
        };
        Failure::new(code, error_chain(&error))
    }
}

/// `GET /v1/containers`.
pub async fn list(State(state): Shared) -> Result<Json<ContainerList>, Failure> {
    let containers = state.containers().await?;
    Ok(Json(ContainerList {
        containers: containers.list().await,
    }))
}

/// `POST /v1/containers`.
pub async fn create(
    State(state): Shared,
    JsonBody(request): JsonBody<ContainerCreateRequest>,
) -> Result<(StatusCode, Json<ContainerInfo>), Failure> {
    let containers = state.containers().await?;
    let info = containers.create(request).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// `GET /v1/containers/{name}`.
pub async fn inspect(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Json<ContainerInfo>, Failure> {
    Ok(Json(state.containers().await?.inspect(&name).await?))
}

/// `DELETE /v1/containers/{name}`.
pub async fn remove(
    State(state): Shared,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<ContainerRemoveQuery>,
) -> Result<Json<ContainerRemoved>, Failure> {
    state.containers().await?.remove(&name, query.force).await?;
    Ok(Json(ContainerRemoved { name }))
}

/// `POST /v1/containers/{name}/start`.
pub async fn start(
    State(state): Shared,
    Path(name): Path<String>,
) -> Result<Json<ContainerInfo>, Failure> {
    Ok(Json(state.containers().await?.start(&name).await?))
}

/// `POST /v1/containers/{name}/stop`. The body is optional.
pub async fn stop(
    State(state): Shared,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ContainerInfo>, Failure> {
    let request = optional_body::<ContainerStopRequest>(&body)?;
    Ok(Json(
        state
            .containers()
            .await?
            .stop(&name, request.timeout_s)
            .await?,
    ))
}

/// `POST /v1/containers/{name}/restart`. The body is optional.
pub async fn restart(
    State(state): Shared,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ContainerInfo>, Failure> {
    let request = optional_body::<ContainerStopRequest>(&body)?;
    Ok(Json(
        state
            .containers()
            .await?
            .restart(&name, request.timeout_s)
            .await?,
    ))
}

/// `GET /v1/containers/{name}/logs`.
pub async fn logs(
    State(state): Shared,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<ContainerLogQuery>,
) -> Result<Response, Failure> {
    let lines = state
        .containers()
        .await?
        .logs(&name, query.tail, query.follow)
        .await?;
    Ok(ndjson(lines))
}

/// `POST /v1/containers/{name}/exec`.
pub async fn exec(
    State(state): Shared,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<ExecRequest>,
) -> Result<Response, Failure> {
    if request.command.is_empty() || request.command[0].is_empty() {
        return Err(Failure::new(ErrorCode::BadRequest, "exec needs a command"));
    }
    let frames: mpsc::Receiver<ExecFrame> = state.containers().await?.exec(&name, request).await?;
    Ok(ndjson(frames))
}

/// An absent or empty body is the type's default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    super::parse_body(body)
}

/// Streams what arrives on `rx` as NDJSON until the sender is done.
fn ndjson<T: Serialize + Send + 'static>(rx: mpsc::Receiver<T>) -> Response {
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        let mut line = serde_json::to_vec(&item)
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode: {e}\"}}").into_bytes());
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    (
        [(header::CONTENT_TYPE, api::NDJSON)],
        Body::from_stream(lines),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use api::types::ContainerStopRequest;

    use super::*;

    #[test]
    fn a_stop_body_may_be_absent_but_not_wrong() {
        assert_eq!(
            optional_body::<ContainerStopRequest>(b"").expect("empty"),
            ContainerStopRequest::default()
        );
        assert_eq!(
            optional_body::<ContainerStopRequest>(br#"{"timeout_s":3}"#)
                .expect("valid")
                .timeout_s,
            Some(3)
        );
        assert!(optional_body::<ContainerStopRequest>(br#"{"timeout":3}"#).is_err());
    }

    #[test]
    fn every_container_error_maps_to_its_code() {
        let cases = [
            (
                ContainerError::NotFound("x".into()),
                ErrorCode::ContainerNotFound,
            ),
            (
                ContainerError::Exists("x".into()),
                ErrorCode::ContainerExists,
            ),
            (
                ContainerError::Running("x".into()),
                ErrorCode::ContainerRunning,
            ),
            (
                ContainerError::NotRunning("x".into()),
                ErrorCode::ContainerNotRunning,
            ),
            (
                ContainerError::ImageNotFound("x".into()),
                ErrorCode::ImageNotFound,
            ),
            (
                ContainerError::StartFailed {
                    name: "x".into(),
                    message: "no such file".into(),
                },
                ErrorCode::ContainerStartFailed,
            ),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            let failure = Failure::from(error);
            assert_eq!(failure.error.code, code, "{text}");
            assert!(failure.error.message.contains('x'), "{text}");
        }
    }
}
