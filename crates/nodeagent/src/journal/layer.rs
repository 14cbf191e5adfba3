//! cairnd's `tracing` events into the journal.
//!
//! The layer renders an event the way the console's fmt layer does (the
//! message, then every other field as `key=value`, strings quoted) and
//! hands it to [`Journal::append`], which never blocks, so logging from
//! any task, or from the journal's own writer, cannot stall. Filtering is
//! the subscriber's business: put the layer under the same `EnvFilter` as
//! the console, and the journal holds what the console shows. (A filter
//! given only to the fmt layer would leave this one seeing every debug
//! line of every dependency.) Span context is not rendered: cairnd logs
//! flat events with fields.

use std::fmt::{self, Write};

use api::types::{LogLevel, LogSource};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::Journal;

/// A [`Layer`] writing every event to the journal as a cairnd entry.
#[derive(Debug, Clone)]
pub struct JournalLayer {
    journal: Journal,
}

impl JournalLayer {
    /// A layer appending to `journal`.
    pub fn new(journal: Journal) -> Self {
        Self { journal }
    }
}

/// The journal level of a tracing level (trace has no level of its own).
pub fn level_of(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warn,
        Level::INFO => LogLevel::Info,
        Level::DEBUG | Level::TRACE => LogLevel::Debug,
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = EventText::default();
        event.record(&mut text);
        self.journal.log(
            LogSource::Cairnd,
            level_of(event.metadata().level()),
            text.finish(),
        );
    }
}

/// Collects an event's message and fields.
#[derive(Debug, Default)]
struct EventText {
    message: String,
    fields: String,
}

impl EventText {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }

    fn field(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        // `log.target` and friends are tracing-log's bookkeeping for records
        // from the `log` crate; the fmt layer hides them as well.
        if field.name().starts_with("log.") {
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={}", field.name(), value);
    }
}

impl Visit for EventText {
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let chain = crate::error_chain(value);
        if field.name() == "message" {
            self.message.push_str(&chain);
        } else {
            self.field(field, format_args!("{chain}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::journal::{BootId, JournalConfig};

    #[derive(Debug, thiserror::Error)]
    #[error("no route to host")]
    struct Unreachable(#[source] std::io::Error);

    #[tokio::test]
    async fn events_become_cairnd_entries_rendered_like_the_console() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = JournalConfig {
            dir: dir.path().to_owned(),
            ..JournalConfig::default()
        };
        let id = BootId::try_from("abc").expect("id");
        let (journal, task) = Journal::open(config, id).expect("opens");
        task.spawn().expect("spawns");
        let subscriber = tracing_subscriber::registry().with(JournalLayer::new(journal.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(link = "eth0", mtu = 1500, "link {} is up", 2);
            tracing::warn!("plain");
            tracing::error!(
                error = &Unreachable(std::io::Error::other("EHOSTUNREACH"))
                    as &(dyn std::error::Error + 'static),
                "fetch failed"
            );
            tracing::debug!(answered = true);
            tracing::trace!("very fine");
        });
        journal.flush().await.expect("flushes");
        let entries = journal.read(0, None).await.expect("reads");
        let got: Vec<(LogLevel, &str)> = entries
            .iter()
            .map(|e| (e.level, e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (LogLevel::Info, "link 2 is up link=\"eth0\" mtu=1500"),
                (LogLevel::Warn, "plain"),
                (
                    LogLevel::Error,
                    "fetch failed error=no route to host: EHOSTUNREACH"
                ),
                (LogLevel::Debug, "answered=true"),
                (LogLevel::Debug, "very fine"),
            ]
        );
        assert!(
            entries
                .iter()
                .all(|e| e.source == LogSource::Cairnd && e.boot_id == "abc")
        );
    }
}
