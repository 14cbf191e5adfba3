//! `cairn image pull REF`: follows the node's NDJSON progress.
//!
//! On a terminal (and with table output) every blob gets a progress bar on
//! stderr; otherwise nothing is shown until the end, when one line (or,
//! with `-o json`, one object) says what was recorded. A pull that fails
//! ends with the node's `error` line, reported like any refusal.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use api::ApiError;
use api::types::{PullEvent, PullRequest, PullSource, PullSourceRole};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::{each_line, print};
use crate::args::Format;
use crate::client::{NodeClient, RequestError};
use crate::failure::CommandError;

/// A pull of a large image over a slow link takes a while.
const PULL_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// What `-o json` prints.
#[derive(Debug, Serialize)]
struct Pulled {
    references: Vec<String>,
    digest: String,
    /// Where each blob fetched came from (blobs already stored are not
    /// listed).
    sources: BTreeMap<String, PullSource>,
}

fn render(pulled: &Pulled) -> String {
    let mut out: String = pulled
        .references
        .iter()
        .map(|r| format!("pulled {r} {}\n", pulled.digest))
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for source in pulled.sources.values() {
        *counts.entry(describe(source)).or_default() += 1;
    }
    for (from, n) in counts {
        let blobs = if n == 1 { "blob" } else { "blobs" };
        out.push_str(&format!("  {n} {blobs} from {from}\n"));
    }
    out
}

/// `registry 10.0.0.1:5000 (mirror)` or `node node-a (peer)`.
fn describe(source: &PullSource) -> String {
    match (&source.node, source.role) {
        (Some(node), _) => format!("node {node} (peer)"),
        (None, PullSourceRole::Mirror) => format!("{} (mirror)", source.registry),
        (None, _) => source.registry.clone(),
    }
}

/// Bars per blob, when showing them.
struct Bars {
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
}

impl Bars {
    fn new() -> Self {
        Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: BTreeMap::new(),
        }
    }

    fn resolved(&mut self, blobs: &[api::types::PullBlob]) {
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        for blob in blobs {
            let bar = self.multi.add(ProgressBar::new(blob.size));
            bar.set_style(style.clone());
            bar.set_prefix(short(&blob.digest));
            if blob.present {
                bar.set_position(blob.size);
                bar.finish_with_message("already stored");
            }
            self.bars.insert(blob.digest.clone(), bar);
        }
    }

    fn progress(&self, digest: &str, done: u64, total: u64, from: &str) {
        if let Some(bar) = self.bars.get(digest) {
            bar.set_length(total);
            bar.set_position(done);
            bar.set_message(from.to_owned());
            if done >= total {
                bar.finish();
            }
        }
    }

    fn clear(&self) {
        for bar in self.bars.values() {
            bar.finish();
        }
        let _ = self.multi.clear();
    }
}

fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

pub(super) async fn run(
    client: &NodeClient,
    fail: &impl Fn(RequestError) -> CommandError,
    format: Format,
    reference: String,
) -> Result<(), CommandError> {
    let response = client
        .stream_json("image_pull", &PullRequest { reference }, PULL_TIMEOUT)
        .await
        .map_err(fail)?;
    let mut bars = (format == Format::Table && std::io::stderr().is_terminal()).then(Bars::new);
    let mut outcome: Option<Result<Pulled, ApiError>> = None;
    let mut sources = BTreeMap::new();
    each_line(client, response, fail, |line| {
        let event: PullEvent =
            serde_json::from_slice(line).map_err(|source| CommandError::BadLine {
                what: "pull event",
                source,
            })?;
        match event {
            PullEvent::Resolved { blobs, .. } => {
                if let Some(bars) = bars.as_mut() {
                    bars.resolved(&blobs);
                }
            }
            PullEvent::Progress {
                digest,
                done,
                total,
                source,
            } => {
                if let Some(bars) = bars.as_ref() {
                    bars.progress(&digest, done, total, &describe(&source));
                }
                // A blob that failed at one source and came from another
                // ends with the one that served it.
                sources.insert(digest, source);
            }
            PullEvent::Done { references, digest } => {
                outcome = Some(Ok(Pulled {
                    references,
                    digest,
                    sources: std::mem::take(&mut sources),
                }));
            }
            PullEvent::Error { code, message } => {
                outcome = Some(Err(ApiError::new(code, message)));
            }
        }
        Ok(())
    })
    .await?;
    if let Some(bars) = bars.as_ref() {
        bars.clear();
    }
    match outcome {
        Some(Ok(pulled)) => print(format, &pulled, render),
        Some(Err(error)) => Err(fail(RequestError::Refused {
            operation: "image_pull",
            error,
            retry_after_s: None,
        })),
        None => Err(CommandError::Incomplete("the pull")),
    }
}
