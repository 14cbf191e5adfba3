//! The system log: cairn-init's and cairnd's lines, kept on STATE across
//! boots, and the kernel log behind `node dmesg`.
//!
//! # Moving parts
//!
//! - [`store`]: the files. `/var/lib/cairn/logs/<boot seq>-<boot id>/`
//!   holds one boot as numbered segments of JSON lines
//!   ([`JournalRecord`]: an [`api::types::LogEntry`] plus its sequence number in
//!   the boot). Rotation, the caps and torn lines are decided there by plain
//!   functions with unit tests.
//! - [`Journal`]: the cheap, clonable handle everyone holds, and
//!   [`JournalTask`], the one writer. [`Journal::append`] never blocks: it
//!   puts the entry on a bounded queue and, when the queue is full, drops
//!   it and counts; the writer logs the count as soon as it has room again.
//!   The writer runs on a thread of its own, because every batch ends in a
//!   `write(2)` on the disk and cairnd's runtime is single-threaded.
//! - [`layer::JournalLayer`]: a `tracing` layer turning cairnd's events
//!   into entries, to sit next to the console's fmt layer.
//! - [`kmsg`]: the `/dev/kmsg` record parser, the task that copies
//!   cairn-init's lines (`<level>cairn-init: ...`) into the journal, and
//!   [`kmsg::read_kernel_log`] for `node dmesg`.
//!
//! # Wiring (for `main` and the agent)
//!
//! ```text
//! let boot_id = BootId::from_proc(Path::new(BOOT_ID_PATH))?;
//! let (journal, task) = Journal::open(JournalConfig::default(), boot_id)?;
//! task.spawn()?;                                   // the writer thread
//! registry().with(fmt_layer).with(JournalLayer::new(journal.clone())).init();
//! // inside the runtime:
//! tokio::spawn(kmsg::run_init_reader(journal.clone(), PathBuf::from(kmsg::KMSG_PATH)));
//! // GET /v1/node/logs:
//! journal.read(query.boot, query.tail).await?;     // or, with follow:
//! let mut follow = journal.follow(query.tail).await?;  // history + live
//! // GET /v1/node/dmesg:
//! spawn_blocking(|| kmsg::read_kernel_log(Path::new(kmsg::KMSG_PATH))).await??;
//! // shutdown:
//! journal.flush().await;
//! ```
//!
//! # Following without a gap or a duplicate
//!
//! The writer numbers every record of a boot (`seq`, carried on across
//! cairnd restarts), writes it, and only then broadcasts it.
//! [`Journal::follow`] subscribes to the broadcast *first* and reads the
//! files *second*: a record sent before the subscription was on disk before
//! the read began, so the read has it; a record sent after is in the
//! subscription. The overlap (written after subscribing, before the read
//! ended) is dropped from the live side by `seq`. A follower that falls
//! more than [`JournalConfig::follow_buffer`] records behind gets
//! [`FollowEvent::Missed`] with the number it lost, then carries on with
//! the oldest record still buffered.

pub mod kmsg;
pub mod layer;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use api::Timestamp;
use api::types::{LogEntry, LogLevel, LogSource};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

use store::{BootLog, BootLogOpenError, OpenReport, SegmentReadError};

/// Where the journal lives: on STATE, which cairn-init mounts at `/var`.
pub const DEFAULT_DIR: &str = "/var/lib/cairn/logs";

/// The kernel's identity of the running boot.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// Longest message kept; longer ones are cut (at a character boundary) and
/// marked, so one runaway line cannot eat a segment.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// The kernel's boot id (`/proc/sys/kernel/random/boot_id`), checked once:
/// lowercase hex digits and dashes, so it is safe in a directory name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BootId(String);

/// A boot id that is not one.
#[derive(Debug, thiserror::Error)]
#[error("invalid boot id {0:?}: expected hex digits and dashes")]
pub struct InvalidBootId(String);

impl TryFrom<&str> for BootId {
    type Error = InvalidBootId;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidBootId(value.to_owned()))
        }
    }
}

/// Reading the boot id failed.
#[derive(Debug, thiserror::Error)]
pub enum BootIdError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no boot id", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: InvalidBootId,
    },
}

impl BootId {
    /// Reads it from `path` (normally [`BOOT_ID_PATH`]).
    pub fn from_proc(path: &Path) -> Result<Self, BootIdError> {
        let text = std::fs::read_to_string(path).map_err(|source| BootIdError::Read {
            path: path.to_owned(),
            source,
        })?;
        BootId::try_from(text.trim()).map_err(|source| BootIdError::Invalid {
            path: path.to_owned(),
            source,
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Size and count caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimits {
    /// A segment is closed and the next one started before it would grow
    /// past this (a single line bigger than this still gets a segment of
    /// its own).
    pub max_file_bytes: u64,
    /// All boots together, the segment being written counted as full.
    pub max_total_bytes: u64,
    /// Boots kept, this one included.
    pub max_boots: u32,
}

impl Default for JournalLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 4 * 1024 * 1024,
            max_total_bytes: 64 * 1024 * 1024,
            max_boots: 10,
        }
    }
}

/// Limits that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JournalLimitsError {
    #[error("max-file-bytes is {0}, at least 1024 is needed")]
    FileTooSmall(u64),
    #[error("max-total-bytes ({total}) must hold at least two segments of {file} bytes")]
    TotalTooSmall { total: u64, file: u64 },
    #[error("max-boots must be at least 1")]
    NoBoots,
}

impl JournalLimits {
    /// Checks the limits fit together: two segments so rotation can prune
    /// the older one, and this boot kept.
    pub fn validate(&self) -> Result<(), JournalLimitsError> {
        if self.max_file_bytes < 1024 {
            return Err(JournalLimitsError::FileTooSmall(self.max_file_bytes));
        }
        if self.max_total_bytes < self.max_file_bytes.saturating_mul(2) {
            return Err(JournalLimitsError::TotalTooSmall {
                total: self.max_total_bytes,
                file: self.max_file_bytes,
            });
        }
        if self.max_boots == 0 {
            return Err(JournalLimitsError::NoBoots);
        }
        Ok(())
    }
}

/// How the journal is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// Root directory (default [`DEFAULT_DIR`]).
    pub dir: PathBuf,
    /// Caps.
    pub limits: JournalLimits,
    /// Entries that may wait for the writer before [`Journal::append`]
    /// starts dropping.
    pub queue: usize,
    /// Records a follower may fall behind before it misses some.
    pub follow_buffer: usize,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_DIR),
            limits: JournalLimits::default(),
            queue: 4096,
            follow_buffer: 1024,
        }
    }
}

/// One line of a segment file: the entry, its place in the boot, and for
/// cairn-init's lines the `/dev/kmsg` sequence number it was copied from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRecord {
    /// Position in the boot: from 1, increasing in the order written, and
    /// carried on when cairnd restarts within the boot.
    pub seq: u64,
    /// For cairn-init's lines: the kernel log record it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmsg_seq: Option<u64>,
    /// The entry as the API serves it.
    #[serde(flatten)]
    pub entry: LogEntry,
}

/// Opening the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalOpenError {
    #[error("invalid journal limits")]
    Limits(#[source] JournalLimitsError),
    #[error("cannot open the journal in {}", dir.display())]
    Store {
        dir: PathBuf,
        #[source]
        source: BootLogOpenError,
    },
}

/// Reading the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalReadError {
    #[error("boot {requested} is in the future: 0 is this boot, -1 the one before")]
    FutureBoot { requested: i32 },
    #[error(
        "boot {requested} is not kept: the journal holds {kept} boot(s), 0 to -{}",
        kept.saturating_sub(1)
    )]
    NoSuchBoot { requested: i32, kept: usize },
    #[error("cannot list the boots in {}", dir.display())]
    ListBoots {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the journal")]
    Segments(#[source] SegmentReadError),
    #[error("the journal reader stopped")]
    Join(#[source] tokio::task::JoinError),
}

/// The journal's writer is gone (its thread ended).
#[derive(Debug, thiserror::Error)]
#[error("the journal writer has stopped")]
pub struct JournalClosed;

enum Command {
    Append {
        entry: LogEntry,
        kmsg_seq: Option<u64>,
    },
    Flush(oneshot::Sender<()>),
}

/// The handle to the journal. Clone it freely.
#[derive(Debug, Clone)]
pub struct Journal {
    commands: mpsc::Sender<Command>,
    live: broadcast::Sender<JournalRecord>,
    dropped_pending: Arc<AtomicU64>,
    dropped_total: Arc<AtomicU64>,
    boot_id: BootId,
    root: PathBuf,
    boot_dir: PathBuf,
    init_copied: Arc<AtomicU64>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Append { .. } => f.write_str("Append"),
            Command::Flush(_) => f.write_str("Flush"),
        }
    }
}

/// The journal's one writer. Start it with [`JournalTask::spawn`].
#[derive(Debug)]
pub struct JournalTask {
    log: BootLog,
    commands: mpsc::Receiver<Command>,
    live: broadcast::Sender<JournalRecord>,
    dropped_pending: Arc<AtomicU64>,
    report: OpenReport,
    boot_id: BootId,
    batch: usize,
    init_copied: Arc<AtomicU64>,
}

impl Journal {
    /// Opens this boot's directory (creating it, or carrying on in it after
    /// a cairnd restart), prunes to the caps, and returns the handle and the
    /// writer, which must be started for entries to reach the disk. Does
    /// blocking file I/O: call it before the runtime, or in
    /// `spawn_blocking`.
    pub fn open(
        config: JournalConfig,
        boot_id: BootId,
    ) -> Result<(Journal, JournalTask), JournalOpenError> {
        config.limits.validate().map_err(JournalOpenError::Limits)?;
        let (log, report) =
            BootLog::open(&config.dir, &boot_id, config.limits).map_err(|source| {
                JournalOpenError::Store {
                    dir: config.dir.clone(),
                    source,
                }
            })?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let (live, _) = broadcast::channel(config.follow_buffer.max(1));
        let dropped_pending = Arc::new(AtomicU64::new(0));
        let init_copied = Arc::new(AtomicU64::new(encode_kmsg_seq(log.kmsg_seq())));
        let journal = Journal {
            commands: tx,
            live: live.clone(),
            dropped_pending: dropped_pending.clone(),
            dropped_total: Arc::new(AtomicU64::new(0)),
            boot_id: boot_id.clone(),
            root: config.dir.clone(),
            boot_dir: log.boot().path.clone(),
            init_copied: init_copied.clone(),
        };
        let task = JournalTask {
            log,
            commands: rx,
            live,
            dropped_pending,
            report,
            boot_id,
            batch: config.queue.clamp(1, 256),
            init_copied,
        };
        Ok((journal, task))
    }

    /// This boot's id.
    pub fn boot_id(&self) -> &BootId {
        &self.boot_id
    }

    /// This boot's directory.
    pub fn boot_dir(&self) -> &Path {
        &self.boot_dir
    }

    /// The last `/dev/kmsg` record of cairn-init's written to the journal
    /// in this boot, by this cairnd or an earlier one.
    pub fn init_kmsg_seq(&self) -> Option<u64> {
        self.init_copied.load(Ordering::Acquire).checked_sub(1)
    }

    /// Queues `entry` for the writer. Never blocks: when the queue is full
    /// the entry is dropped and counted, and the writer logs the count once
    /// it catches up.
    pub fn append(&self, mut entry: LogEntry) {
        entry.message = cap_message(entry.message);
        let command = Command::Append {
            entry,
            kmsg_seq: None,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = self.commands.try_send(command) {
            self.dropped_pending.fetch_add(1, Ordering::Relaxed);
            self.dropped_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`Journal::append`] of an entry stamped now, in this boot.
    pub fn log(&self, source: LogSource, level: LogLevel, message: impl Into<String>) {
        self.append(self.entry_at(SystemTime::now(), source, level, message.into()));
    }

    /// Entries dropped because the queue was full, since the journal opened.
    pub fn dropped(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    fn entry_at(
        &self,
        at: SystemTime,
        source: LogSource,
        level: LogLevel,
        message: String,
    ) -> LogEntry {
        LogEntry {
            ts: Timestamp::from_system(at),
            boot_id: self.boot_id.as_str().to_owned(),
            source,
            level,
            message,
        }
    }

    /// Queues a line copied from `/dev/kmsg`, waiting for room: the kernel
    /// keeps the record meanwhile, and a dropped one would never come back.
    async fn append_from_kmsg(&self, entry: LogEntry, kmsg_seq: u64) -> Result<(), JournalClosed> {
        self.commands
            .send(Command::Append {
                entry,
                kmsg_seq: Some(kmsg_seq),
            })
            .await
            .map_err(|_| JournalClosed)
    }

    /// Waits until everything appended before the call is written and
    /// synced to the disk (call it at shutdown).
    pub async fn flush(&self) -> Result<(), JournalClosed> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Flush(tx))
            .await
            .map_err(|_| JournalClosed)?;
        rx.await.map_err(|_| JournalClosed)
    }

    /// New records of this boot as they are written. See
    /// [`Journal::follow`] for history plus live without a seam; on its
    /// own, a receiver that falls behind gets
    /// `broadcast::error::RecvError::Lagged(missed)`.
    pub fn subscribe(&self) -> broadcast::Receiver<JournalRecord> {
        self.live.subscribe()
    }

    /// The entries of a boot, oldest first: `boot` 0 is this one, -1 the
    /// one before, and so on; `tail` keeps only the last that many.
    pub async fn read(
        &self,
        boot: i32,
        tail: Option<u32>,
    ) -> Result<Vec<LogEntry>, JournalReadError> {
        let records = self.read_records(boot, tail).await?;
        Ok(records.into_iter().map(|r| r.entry).collect())
    }

    async fn read_records(
        &self,
        boot: i32,
        tail: Option<u32>,
    ) -> Result<Vec<JournalRecord>, JournalReadError> {
        let root = self.root.clone();
        let current = self.boot_dir.clone();
        tokio::task::spawn_blocking(move || read_boot_records(&root, &current, boot, tail))
            .await
            .map_err(JournalReadError::Join)?
    }

    /// This boot's entries (the last `tail` of them, if given) and then new
    /// ones as they are written, with nothing missed or repeated at the
    /// seam (see the module docs for why).
    pub async fn follow(&self, tail: Option<u32>) -> Result<Follow, JournalReadError> {
        let live = self.subscribe();
        let records = self.read_records(0, tail).await?;
        Ok(Follow::new(records, live))
    }
}

fn read_boot_records(
    root: &Path,
    current: &Path,
    boot: i32,
    tail: Option<u32>,
) -> Result<Vec<JournalRecord>, JournalReadError> {
    if boot > 0 {
        return Err(JournalReadError::FutureBoot { requested: boot });
    }
    let path = if boot == 0 {
        current.to_owned()
    } else {
        let boots = store::list_boots(root).map_err(|source| JournalReadError::ListBoots {
            dir: root.to_owned(),
            source,
        })?;
        let kept = boots.len();
        let here = boots.iter().position(|b| b.path == current);
        let back = usize::try_from(boot.unsigned_abs()).unwrap_or(usize::MAX);
        match here.and_then(|here| here.checked_sub(back)) {
            Some(index) => boots[index].path.clone(),
            None => {
                return Err(JournalReadError::NoSuchBoot {
                    requested: boot,
                    kept,
                });
            }
        }
    };
    store::read_boot(&path, tail).map_err(JournalReadError::Segments)
}

/// `None` as 0, `Some(seq)` as `seq + 1`, for an atomic. The kernel's
/// sequence numbers start at 0 and would take millennia to reach `u64::MAX`.
fn encode_kmsg_seq(seq: Option<u64>) -> u64 {
    seq.map_or(0, |s| s.saturating_add(1))
}

/// Cuts a message to [`MAX_MESSAGE_BYTES`] at a character boundary.
fn cap_message(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(" [truncated]");
    message
}

/// What a follower gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// The next entry.
    Entry(LogEntry),
    /// The follower fell behind and this many entries went by unseen; the
    /// stream carries on after them. The API tells the client so in-band.
    Missed(u64),
}

/// This boot's history followed by its live entries.
#[derive(Debug)]
pub struct Follow {
    /// What was on disk when following began, oldest first.
    pub history: Vec<LogEntry>,
    live: broadcast::Receiver<JournalRecord>,
    last_seq: u64,
}

impl Follow {
    /// Joins a history read *after* `live` subscribed.
    fn new(history: Vec<JournalRecord>, live: broadcast::Receiver<JournalRecord>) -> Self {
        let last_seq = history.last().map_or(0, |r| r.seq);
        Follow {
            history: history.into_iter().map(|r| r.entry).collect(),
            live,
            last_seq,
        }
    }

    /// The next live entry; `None` once the journal's writer has stopped.
    pub async fn next(&mut self) -> Option<FollowEvent> {
        loop {
            match self.live.recv().await {
                Ok(record) if record.seq <= self.last_seq => continue,
                Ok(record) => {
                    self.last_seq = record.seq;
                    return Some(FollowEvent::Entry(record.entry));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(FollowEvent::Missed(missed));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl JournalTask {
    /// Starts the writer on a thread of its own. It ends when every
    /// [`Journal`] handle is gone.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || self.run())
    }

    /// The writer loop: takes whatever is queued (up to a batch), writes
    /// it in one go, broadcasts it, answers flushes. Blocking; run it on a
    /// thread that may block.
    pub fn run(mut self) {
        self.report_open();
        let mut failing = false;
        while let Some(first) = self.commands.blocking_recv() {
            let mut entries = Vec::new();
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append { entry, kmsg_seq } => entries.push((entry, kmsg_seq)),
                    Command::Flush(reply) => flushes.push(reply),
                }
                if entries.len() < self.batch {
                    next = self.commands.try_recv().ok();
                }
            }
            let dropped = self.dropped_pending.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                entries.push((
                    self.own_entry(
                        LogLevel::Warn,
                        format!("journal: queue full, {dropped} entries dropped"),
                    ),
                    None,
                ));
            }
            match self.log.append(entries) {
                Ok(records) => {
                    self.init_copied
                        .store(encode_kmsg_seq(self.log.kmsg_seq()), Ordering::Release);
                    if failing {
                        failing = false;
                        tracing::info!("journal: writing again");
                    }
                    for record in records {
                        // No followers is not an error.
                        let _ = self.live.send(record);
                    }
                }
                // Logged once per failure streak: every line logged here
                // comes back through the journal and would fail again.
                Err(e) => {
                    if !failing {
                        failing = true;
                        tracing::error!("journal: entries lost: {}", crate::error_chain(&e));
                    }
                }
            }
            if !flushes.is_empty()
                && let Err(e) = self.log.sync()
            {
                tracing::warn!("journal: {}", crate::error_chain(&e));
            }
            for reply in flushes {
                let _ = reply.send(());
            }
        }
    }

    fn own_entry(&self, level: LogLevel, message: String) -> LogEntry {
        LogEntry {
            ts: Timestamp::from_system(SystemTime::now()),
            boot_id: self.boot_id.as_str().to_owned(),
            source: LogSource::Cairnd,
            level,
            message,
        }
    }

    fn report_open(&mut self) {
        let report = &self.report;
        let mut lines = Vec::new();
        if report.torn_bytes > 0 {
            lines.push(format!(
                "journal: cut a torn last line ({} bytes) left by a crash",
                report.torn_bytes
            ));
        }
        if !report.pruned.is_empty() {
            lines.push(format!(
                "journal: pruned to the caps ({} removals)",
                report.pruned.len()
            ));
        }
        if report.reused {
            lines.push("journal: cairnd restarted, carrying on in this boot's log".into());
        }
        let entries = lines
            .into_iter()
            .map(|line| (self.own_entry(LogLevel::Info, line), None))
            .collect::<Vec<_>>();
        if !entries.is_empty()
            && let Ok(records) = self.log.append(entries)
        {
            for record in records {
                let _ = self.live.send(record);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn boot(n: u8) -> BootId {
        BootId::try_from(format!("{n:08x}-0000-4000-8000-000000000000").as_str()).expect("id")
    }

    fn config(dir: &Path) -> JournalConfig {
        JournalConfig {
            dir: dir.to_owned(),
            ..JournalConfig::default()
        }
    }

    fn started(config: JournalConfig, id: BootId) -> Journal {
        let (journal, task) = Journal::open(config, id).expect("opens");
        task.spawn().expect("spawns");
        journal
    }

    fn texts(entries: &[LogEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.message.as_str()).collect()
    }

    #[test]
    fn boot_ids_are_hex_and_dashes_only() {
        assert!(BootId::try_from("a672bac3-de5c-459d-bbee-86f97f28d3ec").is_ok());
        assert!(BootId::try_from("").is_err());
        assert!(BootId::try_from("../etc").is_err());
        assert!(BootId::try_from("A672").is_err());
    }

    #[test]
    fn this_machines_boot_id_reads() {
        let id = BootId::from_proc(Path::new(BOOT_ID_PATH)).expect("reads");
        assert_eq!(id.as_str().len(), 36);
    }

    #[test]
    fn limits_that_cannot_rotate_are_refused() {
        assert_eq!(JournalLimits::default().validate(), Ok(()));
        let small = JournalLimits {
            max_file_bytes: 100,
            ..JournalLimits::default()
        };
        assert_eq!(small.validate(), Err(JournalLimitsError::FileTooSmall(100)));
        let tight = JournalLimits {
            max_file_bytes: 4096,
            max_total_bytes: 4097,
            max_boots: 1,
        };
        assert!(matches!(
            tight.validate(),
            Err(JournalLimitsError::TotalTooSmall { .. })
        ));
        let none = JournalLimits {
            max_boots: 0,
            ..JournalLimits::default()
        };
        assert_eq!(none.validate(), Err(JournalLimitsError::NoBoots));
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = cap_message(long);
        assert!(cut.ends_with(" [truncated]"));
        assert!(cut.len() <= MAX_MESSAGE_BYTES + " [truncated]".len());
        assert_eq!(cap_message("short".into()), "short");
    }

    #[tokio::test]
    async fn boots_are_selected_by_offset_and_a_missing_one_says_how_many_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in 1..=2 {
            let journal = started(config(dir.path()), boot(n));
            journal.log(LogSource::Cairnd, LogLevel::Info, format!("boot {n}"));
            journal.flush().await.expect("flushes");
        }
        let journal = started(config(dir.path()), boot(3));
        journal.log(LogSource::Cairnd, LogLevel::Info, "boot 3");
        journal.flush().await.expect("flushes");

        assert_eq!(texts(&journal.read(0, None).await.expect("0")), ["boot 3"]);
        let previous = journal.read(-1, None).await.expect("-1");
        assert_eq!(texts(&previous), ["boot 2"]);
        assert_eq!(previous[0].boot_id, boot(2).as_str());
        assert_eq!(
            texts(&journal.read(-2, None).await.expect("-2")),
            ["boot 1"]
        );

        let missing = journal.read(-3, None).await.expect_err("not kept");
        assert!(matches!(
            missing,
            JournalReadError::NoSuchBoot {
                requested: -3,
                kept: 3
            }
        ));
        assert_eq!(
            missing.to_string(),
            "boot -3 is not kept: the journal holds 3 boot(s), 0 to -2"
        );
        assert!(matches!(
            journal.read(1, None).await,
            Err(JournalReadError::FutureBoot { requested: 1 })
        ));
    }

    #[tokio::test]
    async fn tail_returns_the_last_entries_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = started(config(dir.path()), boot(1));
        for i in 0..10 {
            journal.log(LogSource::Cairnd, LogLevel::Info, format!("{i}"));
        }
        journal.flush().await.expect("flushes");
        assert_eq!(
            texts(&journal.read(0, Some(3)).await.expect("reads")),
            ["7", "8", "9"]
        );
        assert_eq!(journal.read(0, Some(0)).await.expect("reads"), []);
        assert_eq!(journal.read(0, Some(99)).await.expect("reads").len(), 10);
    }

    #[tokio::test]
    async fn a_full_queue_drops_without_blocking_and_the_count_is_logged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = JournalConfig {
            queue: 2,
            ..config(dir.path())
        };
        let (journal, task) = Journal::open(config, boot(1)).expect("opens");
        // The writer is not running yet, so the queue fills.
        for i in 0..5 {
            journal.log(LogSource::Cairnd, LogLevel::Info, format!("{i}"));
        }
        assert_eq!(journal.dropped(), 3);
        task.spawn().expect("spawns");
        journal.flush().await.expect("flushes");
        let entries = journal.read(0, None).await.expect("reads");
        assert_eq!(
            texts(&entries),
            ["0", "1", "journal: queue full, 3 entries dropped"]
        );
        assert_eq!(entries[2].level, LogLevel::Warn);
    }

    #[tokio::test]
    async fn following_sees_history_then_live_without_gap_or_duplicate() {
        const N: usize = 3000;
        for round in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = JournalConfig {
                queue: N,
                follow_buffer: N,
                ..config(dir.path())
            };
            let journal = started(config, boot(1));
            let writer = journal.clone();
            // Appends race with the follow: from another thread, with the
            // follow starting part-way through.
            let (half_tx, half_rx) = oneshot::channel();
            let producer = std::thread::spawn(move || {
                let mut half = Some(half_tx);
                for i in 0..N {
                    writer.log(LogSource::Cairnd, LogLevel::Info, format!("{i}"));
                    if i == N / 3
                        && let Some(tx) = half.take()
                    {
                        let _ = tx.send(());
                    }
                }
            });
            half_rx.await.expect("producer started");
            let mut follow = journal.follow(None).await.expect("follows");
            let mut seen: Vec<usize> = follow
                .history
                .iter()
                .map(|e| e.message.parse().expect("number"))
                .collect();
            let history = seen.len();
            while seen.len() < N {
                let event = tokio::time::timeout(Duration::from_secs(10), follow.next())
                    .await
                    .expect("live entries keep coming")
                    .expect("journal open");
                match event {
                    FollowEvent::Entry(e) => seen.push(e.message.parse().expect("number")),
                    FollowEvent::Missed(n) => panic!("round {round}: missed {n}"),
                }
            }
            producer.join().expect("producer");
            assert_eq!(
                seen,
                (0..N).collect::<Vec<_>>(),
                "round {round}, history {history}"
            );
        }
    }

    #[tokio::test]
    async fn entries_written_between_subscribing_and_reading_are_not_repeated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = started(config(dir.path()), boot(1));
        journal.log(LogSource::Cairnd, LogLevel::Info, "old");
        journal.flush().await.expect("flushes");
        // The window `follow` has to handle, held open on purpose: these
        // land both in the subscription and in the files read after it.
        let live = journal.subscribe();
        journal.log(LogSource::Cairnd, LogLevel::Info, "overlap 1");
        journal.log(LogSource::Cairnd, LogLevel::Info, "overlap 2");
        journal.flush().await.expect("flushes");
        let history = journal.read_records(0, None).await.expect("reads");
        let mut follow = Follow::new(history, live);
        journal.log(LogSource::Cairnd, LogLevel::Info, "new");
        assert_eq!(texts(&follow.history), ["old", "overlap 1", "overlap 2"]);
        let next = tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("an entry comes");
        assert!(
            matches!(&next, Some(FollowEvent::Entry(e)) if e.message == "new"),
            "{next:?}"
        );
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_is_told_how_many_it_missed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = JournalConfig {
            follow_buffer: 4,
            ..config(dir.path())
        };
        let journal = started(config, boot(1));
        let mut follow = journal.follow(None).await.expect("follows");
        assert!(follow.history.is_empty());
        for i in 0..10 {
            journal.log(LogSource::Cairnd, LogLevel::Info, format!("{i}"));
        }
        journal.flush().await.expect("flushes");
        assert_eq!(follow.next().await, Some(FollowEvent::Missed(6)));
        let mut rest = Vec::new();
        for _ in 0..4 {
            match follow.next().await {
                Some(FollowEvent::Entry(e)) => rest.push(e.message),
                other => panic!("expected an entry, got {other:?}"),
            }
        }
        assert_eq!(rest, ["6", "7", "8", "9"]);
    }

    #[tokio::test]
    async fn the_writer_reports_a_restart_and_followers_end_when_it_stops() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let journal = started(config(dir.path()), boot(1));
            journal.log(LogSource::Cairnd, LogLevel::Info, "before");
            journal.flush().await.expect("flushes");
        }
        let (journal, task) = Journal::open(config(dir.path()), boot(1)).expect("reopens");
        let writer = task.spawn().expect("spawns");
        let mut follow = journal.follow(None).await.expect("follows");
        journal.flush().await.expect("flushes");
        let entries = journal.read(0, None).await.expect("reads");
        assert_eq!(
            texts(&entries),
            [
                "before",
                "journal: cairnd restarted, carrying on in this boot's log"
            ]
        );
        drop(journal);
        writer.join().expect("writer ends");
        // Whatever was live before the end is still delivered, then None.
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            let mut live = 0;
            while let Some(event) = follow.next().await {
                assert!(matches!(event, FollowEvent::Entry(_)));
                live += 1;
            }
            live
        })
        .await
        .expect("the follow ends with the writer");
        assert!(drained <= 1);
    }
}
