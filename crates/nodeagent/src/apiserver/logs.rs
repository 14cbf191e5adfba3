//! `GET /v1/node/logs`: the journal as NDJSON, one `LogEntry` per line,
//! oldest first; with `follow`, the connection stays open and new entries
//! are streamed as they are written.

use api::types::{LogEntry, LogLevel, LogQuery, LogSource};
use api::{ErrorCode, NDJSON, Timestamp};
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::stream;

use super::Failure;
use crate::journal::{FollowEvent, Journal, JournalReadError};

fn line(entry: &LogEntry) -> Bytes {
    let mut bytes = serde_json::to_vec(entry).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn refusal(error: &JournalReadError) -> Failure {
    match error {
        JournalReadError::FutureBoot { .. } | JournalReadError::NoSuchBoot { .. } => {
            Failure::new(ErrorCode::BadRequest, error.to_string())
        }
        _ => Failure::internal("reading the journal", error),
    }
}

/// An in-band note for a follower that fell behind.
fn missed(journal: &Journal, count: u64) -> LogEntry {
    LogEntry {
        ts: Timestamp::from_system(std::time::SystemTime::now()),
        boot_id: journal.boot_id().as_str().to_owned(),
        source: LogSource::Cairnd,
        level: LogLevel::Warn,
        message: format!("journal: this reader fell behind and missed {count} entries"),
    }
}

fn ndjson(body: Body) -> Response {
    ([(header::CONTENT_TYPE, NDJSON)], body).into_response()
}

/// Answers a log query from `journal`.
pub async fn respond(journal: Journal, query: LogQuery) -> Response {
    if !query.follow {
        return match journal.read(query.boot, query.tail).await {
            Ok(entries) => {
                let mut bytes = Vec::new();
                for entry in &entries {
                    bytes.extend_from_slice(&line(entry));
                }
                ndjson(Body::from(bytes))
            }
            Err(e) => refusal(&e).into_response(),
        };
    }
    if query.boot != 0 {
        return Failure::new(
            ErrorCode::BadRequest,
            format!(
                "follow works for this boot (0) only, not boot {}",
                query.boot
            ),
        )
        .into_response();
    }
    let follow = match journal.follow(query.tail).await {
        Ok(f) => f,
        Err(e) => return refusal(&e).into_response(),
    };
    let mut follow = follow;
    let history: Vec<Bytes> = std::mem::take(&mut follow.history)
        .iter()
        .map(line)
        .collect();
    let live = stream::unfold((follow, journal), |(mut follow, journal)| async move {
        let bytes = match follow.next().await? {
            FollowEvent::Entry(entry) => line(&entry),
            FollowEvent::Missed(count) => line(&missed(&journal, count)),
        };
        Some((Ok::<_, std::convert::Infallible>(bytes), (follow, journal)))
    });
    let history = stream::iter(history.into_iter().map(Ok));
    ndjson(Body::from_stream(futures_util::StreamExt::chain(
        history, live,
    )))
}
