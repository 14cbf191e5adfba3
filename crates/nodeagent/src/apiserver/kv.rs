//! `/v1/kv`: the operators' key-value namespace on the replicated store.
//!
//! Keys live under the store's `kv/` namespace, so nothing here can reach
//! join tokens or node conditions. Reads are linearizable through any
//! member; writes go through any member to the leader.

use std::sync::Arc;

use api::ErrorCode;
use api::types::{
    KvEvent, KvEventKind, KvKeyQuery, KvList, KvListQuery, KvPutRequest, KvRecord, KvWatchQuery,
    KvWritten,
};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cluster::node::{Query, WatchError};
use cluster::store::{
    Command, Event, EventKind, Expect, Key, MAX_KEY_BYTES, Namespace, Outcome, Record, Value,
};

use super::{Failure, JsonBody, QueryParams, ServerState, replicated};

type Shared = State<Arc<ServerState>>;

/// Most records one list returns.
pub const MAX_LIST: u32 = 1000;

fn key(text: &str) -> Result<Key, Failure> {
    Namespace::Kv.key(text).map_err(|e| {
        Failure::new(
            ErrorCode::BadRequest,
            format!("key: {e} (keys are 1 to {MAX_KEY_BYTES} bytes without control characters)"),
        )
    })
}

fn text(bytes: &[u8]) -> String {
    // Values enter through this API as UTF-8; anything else is shown, not
    // refused.
    String::from_utf8_lossy(bytes).into_owned()
}

fn record(key: &Key, record: &Record) -> KvRecord {
    KvRecord {
        key: Namespace::Kv.strip(key).unwrap_or(key.as_str()).to_owned(),
        value: text(&record.value),
        revision: record.mod_revision,
        create_revision: record.create_revision,
        version: record.version,
    }
}

fn conflict(key: &str, wanted: Option<u64>, current: Option<u64>) -> Failure {
    let now = match current {
        Some(revision) => format!("is at revision {revision}"),
        None => "does not exist".to_owned(),
    };
    let asked = match wanted {
        Some(0) => "asked for it to be absent".to_owned(),
        Some(revision) => format!("asked for revision {revision}"),
        None => "asked for no revision".to_owned(),
    };
    Failure::new(
        ErrorCode::RevisionConflict,
        format!("key {key:?} {now}; the request {asked}"),
    )
}

pub async fn get(
    State(state): Shared,
    QueryParams(query): QueryParams<KvKeyQuery>,
) -> Result<Json<KvRecord>, Failure> {
    let store_key = key(&query.key)?;
    let member = replicated::running(&state)?;
    let read = replicated::read(member.handle(), Query::Get(store_key)).await?;
    let (found_key, found) = read.records.first().ok_or_else(|| {
        Failure::new(
            ErrorCode::KeyNotFound,
            format!("key {:?} does not exist", query.key),
        )
    })?;
    Ok(Json(record(found_key, found)))
}

pub async fn put(
    State(state): Shared,
    JsonBody(request): JsonBody<KvPutRequest>,
) -> Result<Json<KvWritten>, Failure> {
    let store_key = key(&request.key)?;
    let value = Value::new(request.value.into_bytes())
        .map_err(|e| Failure::new(ErrorCode::PayloadTooLarge, format!("value: {e}")))?;
    let member = replicated::running(&state)?;
    let command = Command::Put {
        key: store_key,
        value: value.into_bytes(),
        expect: Expect::from_if_revision(request.if_revision),
    };
    match replicated::write(member.handle(), command).await? {
        Outcome::Written { revision } => Ok(Json(KvWritten {
            key: request.key,
            revision,
            deleted: None,
        })),
        Outcome::Conflict { current } => Err(conflict(&request.key, request.if_revision, current)),
        other => Err(Failure::new(
            ErrorCode::Internal,
            format!("a write answered {other:?}"),
        )),
    }
}

pub async fn delete(
    State(state): Shared,
    QueryParams(query): QueryParams<KvKeyQuery>,
) -> Result<Json<KvWritten>, Failure> {
    let store_key = key(&query.key)?;
    let member = replicated::running(&state)?;
    let command = Command::Delete {
        key: store_key.clone(),
        expect: Expect::from_if_revision(query.if_revision),
    };
    let written = |revision, deleted| {
        Json(KvWritten {
            key: query.key.clone(),
            revision,
            deleted: Some(deleted),
        })
    };
    match replicated::write(member.handle(), command).await? {
        Outcome::Deleted { revision } => Ok(written(revision, true)),
        Outcome::NotFound => {
            // Report the revision the absence was seen at.
            let read = replicated::read(member.handle(), Query::Get(store_key)).await?;
            Ok(written(read.revision, false))
        }
        Outcome::Conflict { current } => Err(conflict(&query.key, query.if_revision, current)),
        Outcome::Written { .. } => Err(Failure::new(
            ErrorCode::Internal,
            "a delete answered as a write",
        )),
    }
}

pub async fn list(
    State(state): Shared,
    QueryParams(query): QueryParams<KvListQuery>,
) -> Result<Json<KvList>, Failure> {
    let limit = query.limit.unwrap_or(MAX_LIST);
    if !(1..=MAX_LIST).contains(&limit) {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            format!("limit: {limit} is out of range 1 to {MAX_LIST}"),
        ));
    }
    let member = replicated::running(&state)?;
    let read = replicated::read(
        member.handle(),
        Query::List {
            prefix: Namespace::Kv.scan_prefix(&query.prefix),
            // One more than asked says whether there is more.
            limit: limit as usize + 1,
        },
    )
    .await?;
    let more = read.records.len() > limit as usize;
    let records = read
        .records
        .iter()
        .take(limit as usize)
        .map(|(k, r)| record(k, r))
        .collect();
    Ok(Json(KvList {
        revision: read.revision,
        records,
        more,
    }))
}

fn event_line(event: &Event) -> Option<Bytes> {
    let key = Namespace::Kv.strip(&event.key)?.to_owned();
    let (kind, value) = match &event.kind {
        EventKind::Put(record) => (KvEventKind::Put, Some(text(&record.value))),
        EventKind::Delete => (KvEventKind::Delete, None),
    };
    let mut bytes = serde_json::to_vec(&KvEvent {
        revision: event.revision,
        key,
        kind,
        value,
    })
    .unwrap_or_default();
    bytes.push(b'\n');
    Some(Bytes::from(bytes))
}

pub async fn watch(
    State(state): Shared,
    QueryParams(query): QueryParams<KvWatchQuery>,
) -> Response {
    match open_watch(&state, query).await {
        Ok(watch) => {
            let lines = futures_util::stream::unfold(watch, |mut watch| async move {
                loop {
                    match watch.next().await {
                        Ok(event) => {
                            if let Some(line) = event_line(&event) {
                                return Some((Ok::<_, std::convert::Infallible>(line), watch));
                            }
                        }
                        // The stream ends; the client resumes from the last
                        // revision it saw and learns why if it cannot.
                        Err(_) => return None,
                    }
                }
            });
            (
                [(header::CONTENT_TYPE, api::NDJSON)],
                Body::from_stream(lines),
            )
                .into_response()
        }
        Err(failure) => failure.into_response(),
    }
}

async fn open_watch(
    state: &ServerState,
    query: KvWatchQuery,
) -> Result<cluster::node::Watch, Failure> {
    let member = replicated::running(state)?;
    let prefix = Namespace::Kv.scan_prefix(&query.prefix);
    let after = match query.after {
        Some(after) => after,
        // From now on: the revision a linearizable read sees.
        None => {
            replicated::read(
                member.handle(),
                Query::List {
                    prefix: prefix.clone(),
                    limit: 0,
                },
            )
            .await?
            .revision
        }
    };
    member
        .handle()
        .watch(prefix, after)
        .await
        .map_err(|e| match e {
            WatchError::Compacted(c) => Failure::new(ErrorCode::Compacted, c.to_string()),
            WatchError::Stopped => {
                replicated::store_failure(&cluster::node::StoreError::Stopped, false)
            }
        })
}
