//! The journal on disk: one directory per boot, numbered segment files of
//! JSON lines inside it, and the pruning that keeps the whole thing under
//! its caps.
//!
//! ```text
//! /var/lib/cairn/logs/
//!   000041-6f1c...-boot-id/
//!     log-000001.jsonl
//!     log-000002.jsonl      <- the highest number is the one being written
//!     init-kmsg-seq         <- last /dev/kmsg sequence number taken
//!   000042-a672...-boot-id/
//!     log-000001.jsonl
//! ```
//!
//! Segments are never renamed: rotation starts the next number and pruning
//! deletes the lowest. A reader that lists a directory and then opens each
//! file therefore never sees a file change its name under it; at worst a
//! file it listed has been pruned, and that file held the oldest entries.
//!
//! The decisions (which boot directory to use, what to delete to get under
//! the caps, which lines of a segment are whole) are plain functions over
//! plain data; [`BootLog`] and the readers around them do the I/O.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::{BootId, JournalLimits, JournalRecord};

/// Name of the file holding the last `/dev/kmsg` sequence number taken.
pub const KMSG_SEQ_FILE: &str = "init-kmsg-seq";

const SEGMENT_PREFIX: &str = "log-";
const SEGMENT_SUFFIX: &str = ".jsonl";

/// A boot directory's place in the order of boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDir {
    /// Monotonic boot sequence number (the directory name's prefix).
    pub seq: u64,
    /// The kernel's boot id for that boot.
    pub boot_id: String,
    /// The directory.
    pub path: PathBuf,
}

/// Directory name of boot number `seq`.
pub fn boot_dir_name(seq: u64, boot_id: &BootId) -> String {
    format!("{seq:06}-{}", boot_id.as_str())
}

/// `000042-<boot id>` → `(42, "<boot id>")`. Anything else is not ours.
pub fn parse_boot_dir_name(name: &str) -> Option<(u64, &str)> {
    let (seq, boot_id) = name.split_once('-')?;
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    BootId::try_from(boot_id).ok()?;
    Some((seq.parse().ok()?, boot_id))
}

/// File name of segment `index`.
pub fn segment_name(index: u64) -> String {
    format!("{SEGMENT_PREFIX}{index:06}{SEGMENT_SUFFIX}")
}

/// `log-000003.jsonl` → `3`.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Which boot directory this boot writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootChoice {
    /// cairnd restarted within the boot: carry on in the existing directory.
    Reuse(u64),
    /// A new boot: a new directory with this sequence number.
    Create(u64),
}

/// Picks the directory for `boot_id` among `existing` (sequence number and
/// boot id of each directory found).
pub fn choose_boot(existing: &[(u64, String)], boot_id: &BootId) -> BootChoice {
    if let Some((seq, _)) = existing.iter().find(|(_, id)| id == boot_id.as_str()) {
        return BootChoice::Reuse(*seq);
    }
    let next = existing
        .iter()
        .map(|(seq, _)| *seq)
        .max()
        .map_or(1, |s| s + 1);
    BootChoice::Create(next)
}

/// How much one boot directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootUsage {
    /// Boot sequence number.
    pub seq: u64,
    /// `(segment index, size in bytes)`, any order.
    pub segments: Vec<(u64, u64)>,
}

/// One step of getting under the caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneAction {
    /// Delete a whole boot directory.
    RemoveBoot { boot: u64 },
    /// Delete one segment of a boot.
    RemoveSegment { boot: u64, index: u64 },
}

/// What to delete so that at most `limits.max_boots` boots are kept and
/// the total size, counting the segment being written as if it were full,
/// stays within `limits.max_total_bytes`. Oldest boots go first, and within
/// a boot the oldest segments; the current boot's active segment (its
/// highest index) is never deleted.
pub fn plan_prune(usage: &[BootUsage], current: u64, limits: &JournalLimits) -> Vec<PruneAction> {
    let mut boots: Vec<BootUsage> = usage.to_vec();
    boots.sort_by_key(|b| b.seq);
    for boot in &mut boots {
        boot.segments.sort_by_key(|(index, _)| *index);
    }
    let active = boots
        .iter()
        .find(|b| b.seq == current)
        .and_then(|b| b.segments.last().map(|(index, _)| *index));

    let mut actions = Vec::new();
    let max_boots = usize::try_from(limits.max_boots).unwrap_or(usize::MAX);
    let mut excess = boots.len().saturating_sub(max_boots);
    boots.retain(|boot| {
        if excess > 0 && boot.seq != current {
            excess -= 1;
            actions.push(PruneAction::RemoveBoot { boot: boot.seq });
            false
        } else {
            true
        }
    });

    let charged = |boot: &BootUsage, index: u64, size: u64| {
        if boot.seq == current && Some(index) == active {
            size.max(limits.max_file_bytes)
        } else {
            size
        }
    };
    let mut total: u64 = boots
        .iter()
        .flat_map(|b| b.segments.iter().map(move |(i, s)| charged(b, *i, *s)))
        .sum();
    for boot in &boots {
        if total <= limits.max_total_bytes {
            break;
        }
        let mut removed_all = true;
        let mut removed = Vec::new();
        for (index, size) in &boot.segments {
            if total <= limits.max_total_bytes || (boot.seq == current && Some(*index) == active) {
                removed_all = false;
                break;
            }
            total -= size;
            removed.push(*index);
        }
        if removed_all && boot.seq != current {
            actions.push(PruneAction::RemoveBoot { boot: boot.seq });
        } else {
            actions.extend(removed.into_iter().map(|index| PruneAction::RemoveSegment {
                boot: boot.seq,
                index,
            }));
        }
    }
    actions
}

/// Whole lines of a segment, parsed. A last line without its newline is a
/// write cut short (by a crash, or still in progress) and is not counted as
/// written; a line that does not parse is skipped. Returns the records and
/// how many lines were skipped.
pub fn parse_segment(bytes: &[u8]) -> (Vec<JournalRecord>, usize) {
    let mut records = Vec::new();
    let mut skipped = 0;
    let complete = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &[][..],
    };
    if complete.len() < bytes.len() {
        skipped += 1;
    }
    for line in complete.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<JournalRecord>(line) {
            Ok(record) => records.push(record),
            Err(_) => skipped += 1,
        }
    }
    (records, skipped)
}

/// Length of the whole-line prefix of a segment: where a torn last line
/// starts.
pub fn whole_lines_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |end| end + 1)
}

/// The boot directories under `root`, oldest first. A missing root holds
/// no boots.
pub fn list_boots(root: &Path) -> io::Result<Vec<BootDir>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut boots = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((seq, boot_id)) = parse_boot_dir_name(name) else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            boots.push(BootDir {
                seq,
                boot_id: boot_id.to_owned(),
                path: entry.path(),
            });
        }
    }
    boots.sort_by_key(|b| b.seq);
    Ok(boots)
}

/// The segments of one boot directory, `(index, path, size)`, oldest first.
pub fn list_segments(boot: &Path) -> io::Result<Vec<(u64, PathBuf, u64)>> {
    let entries = match fs::read_dir(boot) {
        Ok(entries) => entries,
        // Pruned between listing the boots and reading this one.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(index) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let size = match entry.metadata() {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        segments.push((index, entry.path(), size));
    }
    segments.sort_by_key(|(index, _, _)| *index);
    Ok(segments)
}

/// Reads a whole segment; `None` when it was pruned meanwhile.
fn read_segment(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reading a boot's entries failed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentReadError {
    #[error("cannot list {}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The records of one boot directory, oldest first; with `tail`, only the
/// last that many (reading only the newest segments needed).
pub fn read_boot(boot: &Path, tail: Option<u32>) -> Result<Vec<JournalRecord>, SegmentReadError> {
    let segments = list_segments(boot).map_err(|source| SegmentReadError::List {
        path: boot.to_owned(),
        source,
    })?;
    let want = tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX));
    let mut chunks: Vec<Vec<JournalRecord>> = Vec::new();
    let mut have = 0usize;
    for (_, path, _) in segments.iter().rev() {
        if want.is_some_and(|want| have >= want) {
            break;
        }
        let Some(bytes) = read_segment(path).map_err(|source| SegmentReadError::Read {
            path: path.clone(),
            source,
        })?
        else {
            continue;
        };
        let (records, _) = parse_segment(&bytes);
        have += records.len();
        chunks.push(records);
    }
    let mut records: Vec<JournalRecord> = chunks.into_iter().rev().flatten().collect();
    if let Some(want) = want {
        let skip = records.len().saturating_sub(want);
        records.drain(..skip);
    }
    Ok(records)
}

/// Opening the journal's directory for this boot failed.
#[derive(Debug, thiserror::Error)]
pub enum BootLogOpenError {
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list {}", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open {}", path.display())]
    OpenSegment {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot cut the torn last line off {}", path.display())]
    Truncate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {} to stay under the caps", path.display())]
    Prune {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Appending to the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum BootLogWriteError {
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start segment {}", path.display())]
    Rotate {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {} to stay under the caps", path.display())]
    Prune {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot record the kernel log position in {}", path.display())]
    KmsgSeq {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What opening found, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// The directory was there already (cairnd restarted within the boot).
    pub reused: bool,
    /// Bytes of a torn last line cut off the active segment.
    pub torn_bytes: u64,
    /// What pruning removed.
    pub pruned: Vec<PruneAction>,
}

/// The writing side of one boot's directory. Owned by the journal's writer
/// thread alone.
#[derive(Debug)]
pub struct BootLog {
    root: PathBuf,
    boot: BootDir,
    limits: JournalLimits,
    active: File,
    active_index: u64,
    active_size: u64,
    next_seq: u64,
    kmsg_seq: Option<u64>,
    kmsg_seq_saved: Option<u64>,
}

impl BootLog {
    /// Opens (or creates) the directory of `boot_id` under `root`, cuts off
    /// a torn last line, finds where the sequence numbers carry on, and
    /// prunes to the caps.
    pub fn open(
        root: &Path,
        boot_id: &BootId,
        limits: JournalLimits,
    ) -> Result<(Self, OpenReport), BootLogOpenError> {
        fs::create_dir_all(root).map_err(|source| BootLogOpenError::CreateDir {
            path: root.to_owned(),
            source,
        })?;
        let list_err = |source| BootLogOpenError::List {
            path: root.to_owned(),
            source,
        };
        let boots = list_boots(root).map_err(list_err)?;
        let existing: Vec<(u64, String)> =
            boots.iter().map(|b| (b.seq, b.boot_id.clone())).collect();
        let (seq, reused) = match choose_boot(&existing, boot_id) {
            BootChoice::Reuse(seq) => (seq, true),
            BootChoice::Create(seq) => (seq, false),
        };
        let path = root.join(boot_dir_name(seq, boot_id));
        fs::create_dir_all(&path).map_err(|source| BootLogOpenError::CreateDir {
            path: path.clone(),
            source,
        })?;
        let boot = BootDir {
            seq,
            boot_id: boot_id.as_str().to_owned(),
            path,
        };

        let segments = list_segments(&boot.path).map_err(|source| BootLogOpenError::List {
            path: boot.path.clone(),
            source,
        })?;
        let mut torn_bytes = 0;
        let mut last_seq = None;
        let mut kmsg_seq = None;
        // Newest first: the active segment tells where to carry on; an
        // empty one (rotated just before a crash) sends us one further back.
        for (position, (_, seg_path, _)) in segments.iter().rev().enumerate() {
            let bytes = read_segment(seg_path)
                .map_err(|source| BootLogOpenError::OpenSegment {
                    path: seg_path.clone(),
                    source,
                })?
                .unwrap_or_default();
            if position == 0 {
                let whole = whole_lines_len(&bytes);
                if whole < bytes.len() {
                    torn_bytes = (bytes.len() - whole) as u64;
                    let file = OpenOptions::new()
                        .write(true)
                        .open(seg_path)
                        .map_err(|source| BootLogOpenError::Truncate {
                            path: seg_path.clone(),
                            source,
                        })?;
                    file.set_len(whole as u64)
                        .map_err(|source| BootLogOpenError::Truncate {
                            path: seg_path.clone(),
                            source,
                        })?;
                }
            }
            let (records, _) = parse_segment(&bytes);
            if position == 0 {
                kmsg_seq = records.iter().filter_map(|r| r.kmsg_seq).max();
            }
            if let Some(last) = records.last() {
                last_seq = Some(last.seq);
                break;
            }
        }
        let saved = read_kmsg_seq(&boot.path.join(KMSG_SEQ_FILE));
        let kmsg_seq = kmsg_seq.max(saved);

        let (active_index, active_size) = match segments.last() {
            Some((index, seg_path, _)) => {
                let size = fs::metadata(seg_path)
                    .map_err(|source| BootLogOpenError::OpenSegment {
                        path: seg_path.clone(),
                        source,
                    })?
                    .len();
                (*index, size)
            }
            None => (1, 0),
        };
        let active_path = boot.path.join(segment_name(active_index));
        let active = open_append(&active_path).map_err(|source| BootLogOpenError::OpenSegment {
            path: active_path.clone(),
            source,
        })?;
        let log = BootLog {
            root: root.to_owned(),
            boot,
            limits,
            active,
            active_index,
            active_size,
            next_seq: last_seq.map_or(1, |s| s + 1),
            kmsg_seq,
            kmsg_seq_saved: saved,
        };
        let pruned = log
            .prune()
            .map_err(|(path, source)| BootLogOpenError::Prune { path, source })?;
        Ok((
            log,
            OpenReport {
                reused,
                torn_bytes,
                pruned,
            },
        ))
    }

    /// This boot's directory.
    pub fn boot(&self) -> &BootDir {
        &self.boot
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last `/dev/kmsg` sequence number taken in this boot.
    pub fn kmsg_seq(&self) -> Option<u64> {
        self.kmsg_seq
    }

    /// Numbers `entries` and appends them as whole lines, starting a new
    /// segment whenever the next line would overflow the current one, then
    /// records the kernel log position if it moved. Returns the records as
    /// written.
    pub fn append(
        &mut self,
        entries: Vec<(api::types::LogEntry, Option<u64>)>,
    ) -> Result<Vec<JournalRecord>, BootLogWriteError> {
        let mut records = Vec::with_capacity(entries.len());
        let mut pending: Vec<u8> = Vec::new();
        for (entry, kmsg_seq) in entries {
            let record = JournalRecord {
                seq: self.next_seq,
                kmsg_seq,
                entry,
            };
            let mut line = match serde_json::to_vec(&record) {
                Ok(line) => line,
                // LogEntry holds strings, enums and a timestamp; there is
                // nothing in it serde_json could refuse.
                Err(_) => continue,
            };
            line.push(b'\n');
            let len = line.len() as u64;
            let used = self.active_size + pending.len() as u64;
            if used > 0 && used + len > self.limits.max_file_bytes {
                self.write_pending(&mut pending)?;
                self.rotate()?;
            }
            pending.extend_from_slice(&line);
            self.next_seq += 1;
            if let Some(seq) = kmsg_seq {
                self.kmsg_seq = Some(self.kmsg_seq.map_or(seq, |s| s.max(seq)));
            }
            records.push(record);
        }
        self.write_pending(&mut pending)?;
        if self.kmsg_seq != self.kmsg_seq_saved
            && let Some(seq) = self.kmsg_seq
        {
            let path = self.boot.path.join(KMSG_SEQ_FILE);
            write_kmsg_seq(&path, seq)
                .map_err(|source| BootLogWriteError::KmsgSeq { path, source })?;
            self.kmsg_seq_saved = Some(seq);
        }
        Ok(records)
    }

    fn write_pending(&mut self, pending: &mut Vec<u8>) -> Result<(), BootLogWriteError> {
        if pending.is_empty() {
            return Ok(());
        }
        if let Err(source) = self.active.write_all(pending) {
            // Part of the batch may have gone out; cut it off so the next
            // write starts on a line of its own rather than gluing onto a
            // fragment (and so losing a good line as well).
            let _ = self.active.set_len(self.active_size);
            pending.clear();
            return Err(BootLogWriteError::Write {
                path: self.boot.path.join(segment_name(self.active_index)),
                source,
            });
        }
        self.active_size += pending.len() as u64;
        pending.clear();
        Ok(())
    }

    /// Forces what was written to the disk (for shutdown: an entry that is
    /// only in the page cache is lost by a power cut).
    pub fn sync(&self) -> Result<(), BootLogWriteError> {
        self.active
            .sync_data()
            .map_err(|source| BootLogWriteError::Write {
                path: self.boot.path.join(segment_name(self.active_index)),
                source,
            })
    }

    fn rotate(&mut self) -> Result<(), BootLogWriteError> {
        let index = self.active_index + 1;
        let path = self.boot.path.join(segment_name(index));
        self.active = open_append(&path).map_err(|source| BootLogWriteError::Rotate {
            path: path.clone(),
            source,
        })?;
        self.active_index = index;
        self.active_size = 0;
        self.prune()
            .map_err(|(path, source)| BootLogWriteError::Prune { path, source })?;
        Ok(())
    }

    /// Deletes what [`plan_prune`] says, from a fresh listing.
    fn prune(&self) -> Result<Vec<PruneAction>, (PathBuf, io::Error)> {
        let boots = list_boots(&self.root).map_err(|e| (self.root.clone(), e))?;
        let mut usage = Vec::with_capacity(boots.len());
        for boot in &boots {
            let segments = list_segments(&boot.path).map_err(|e| (boot.path.clone(), e))?;
            usage.push(BootUsage {
                seq: boot.seq,
                segments: segments.iter().map(|(i, _, s)| (*i, *s)).collect(),
            });
        }
        let actions = plan_prune(&usage, self.boot.seq, &self.limits);
        for action in &actions {
            let result = match action {
                PruneAction::RemoveBoot { boot } => boots
                    .iter()
                    .find(|b| b.seq == *boot)
                    .map(|b| (b.path.clone(), fs::remove_dir_all(&b.path))),
                PruneAction::RemoveSegment { boot, index } => {
                    boots.iter().find(|b| b.seq == *boot).map(|b| {
                        let path = b.path.join(segment_name(*index));
                        let result = fs::remove_file(&path);
                        (path, result)
                    })
                }
            };
            match result {
                Some((_, Ok(()))) | None => {}
                Some((_, Err(e))) if e.kind() == io::ErrorKind::NotFound => {}
                Some((path, Err(e))) => return Err((path, e)),
            }
        }
        Ok(actions)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The saved kernel log position; unreadable or garbled counts as none
/// (the records themselves are the fallback).
fn read_kmsg_seq(path: &Path) -> Option<u64> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Replaces the saved position atomically, so a crash leaves the old one
/// or the new one, never half of either.
fn write_kmsg_seq(path: &Path, seq: u64) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{seq}\n"))?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::Timestamp;
    use api::types::{LogEntry, LogLevel, LogSource};

    fn boot_id(n: u8) -> BootId {
        BootId::try_from(format!("0000000{n}-aaaa-bbbb-cccc-dddddddddddd").as_str())
            .expect("valid boot id")
    }

    fn entry(message: &str) -> LogEntry {
        LogEntry {
            ts: Timestamp::from_unix(1_800_000_000).expect("in range"),
            boot_id: boot_id(1).as_str().to_owned(),
            source: LogSource::Cairnd,
            level: LogLevel::Info,
            message: message.to_owned(),
        }
    }

    fn limits(file: u64, total: u64, boots: u32) -> JournalLimits {
        JournalLimits {
            max_file_bytes: file,
            max_total_bytes: total,
            max_boots: boots,
        }
    }

    fn messages(records: &[JournalRecord]) -> Vec<String> {
        records.iter().map(|r| r.entry.message.clone()).collect()
    }

    #[test]
    fn boot_directory_names_round_trip_and_foreign_names_are_ignored() {
        let id = boot_id(7);
        let name = boot_dir_name(42, &id);
        assert_eq!(name, format!("000042-{}", id.as_str()));
        assert_eq!(parse_boot_dir_name(&name), Some((42, id.as_str())));
        assert_eq!(parse_boot_dir_name("lost+found"), None);
        assert_eq!(parse_boot_dir_name("-abc"), None);
        assert_eq!(parse_boot_dir_name("12-NOT/AN/ID"), None);
        assert_eq!(parse_segment_name(&segment_name(3)), Some(3));
        assert_eq!(parse_segment_name("log-.jsonl"), None);
        assert_eq!(parse_segment_name("log-000001.jsonl.tmp"), None);
    }

    #[test]
    fn a_restart_within_the_boot_reuses_its_directory_and_a_new_boot_numbers_on() {
        let existing = vec![
            (3, boot_id(1).as_str().to_owned()),
            (9, boot_id(2).as_str().to_owned()),
        ];
        assert_eq!(choose_boot(&existing, &boot_id(1)), BootChoice::Reuse(3));
        assert_eq!(choose_boot(&existing, &boot_id(3)), BootChoice::Create(10));
        assert_eq!(choose_boot(&[], &boot_id(3)), BootChoice::Create(1));
    }

    #[test]
    fn pruning_drops_the_oldest_boots_beyond_the_count() {
        let usage: Vec<BootUsage> = (1..=5)
            .map(|seq| BootUsage {
                seq,
                segments: vec![(1, 10)],
            })
            .collect();
        let actions = plan_prune(&usage, 5, &limits(1024, 1 << 20, 3));
        assert_eq!(
            actions,
            vec![
                PruneAction::RemoveBoot { boot: 1 },
                PruneAction::RemoveBoot { boot: 2 }
            ]
        );
    }

    #[test]
    fn pruning_to_the_size_cap_takes_oldest_segments_first_and_spares_the_active_one() {
        let usage = vec![
            BootUsage {
                seq: 2,
                segments: vec![(2, 1000), (1, 1000)],
            },
            BootUsage {
                seq: 1,
                segments: vec![(1, 1000)],
            },
            BootUsage {
                seq: 3,
                segments: vec![(1, 1000), (2, 10)],
            },
        ];
        // Counted: 1000 + 2000 + 1000 + 1000 (the active one, as if full) = 5000.
        let actions = plan_prune(&usage, 3, &limits(1000, 3000, 10));
        assert_eq!(
            actions,
            vec![
                PruneAction::RemoveBoot { boot: 1 },
                PruneAction::RemoveSegment { boot: 2, index: 1 },
            ]
        );
        // A boot emptied entirely goes as a whole.
        let actions = plan_prune(&usage, 3, &limits(1000, 2000, 10));
        assert_eq!(
            actions,
            vec![
                PruneAction::RemoveBoot { boot: 1 },
                PruneAction::RemoveBoot { boot: 2 },
            ]
        );
        // Even a cap the current boot alone breaks keeps its active segment.
        let actions = plan_prune(&usage, 3, &limits(1000, 100, 10));
        assert!(actions.contains(&PruneAction::RemoveSegment { boot: 3, index: 1 }));
        assert!(!actions.contains(&PruneAction::RemoveSegment { boot: 3, index: 2 }));
        assert!(!actions.contains(&PruneAction::RemoveBoot { boot: 3 }));
    }

    #[test]
    fn a_torn_last_line_and_a_garbled_line_are_skipped_not_fatal() {
        let mut bytes = Vec::new();
        for (seq, message) in [(1, "one"), (2, "two")] {
            let record = JournalRecord {
                seq,
                kmsg_seq: None,
                entry: entry(message),
            };
            bytes.extend(serde_json::to_vec(&record).expect("serialises"));
            bytes.push(b'\n');
            if seq == 1 {
                bytes.extend_from_slice(b"{\"seq\":\n");
            }
        }
        bytes.extend_from_slice(br#"{"seq":3,"ts":"2027-01-15T08:00:00Z","boot_id":"#);
        let (records, skipped) = parse_segment(&bytes);
        assert_eq!(messages(&records), ["one", "two"]);
        assert_eq!(skipped, 2);
        assert_eq!(parse_segment(b"no newline at all"), (Vec::new(), 1));
    }

    #[test]
    fn segments_rotate_by_size_and_the_total_stays_under_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let caps = limits(1024, 4096, 10);
        let (mut log, _) = BootLog::open(dir.path(), &boot_id(1), caps).expect("opens");
        for i in 0..200 {
            log.append(vec![(
                entry(&format!("line {i:03} {}", "x".repeat(40))),
                None,
            )])
            .expect("appends");
        }
        let segments = list_segments(&log.boot().path).expect("lists");
        assert!(segments.len() >= 3, "rotated: {segments:?}");
        let total: u64 = segments.iter().map(|(_, _, size)| size).sum();
        assert!(total <= 4096, "total {total} over the cap");
        assert!(segments.iter().all(|(_, _, size)| *size <= 1024));
        // The oldest went first: what is left is the newest, in order.
        let records = read_boot(&log.boot().path, None).expect("reads");
        let last = records.last().expect("records");
        assert_eq!(last.seq, 200);
        assert!(last.entry.message.starts_with("line 199"));
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        let first = seqs[0];
        assert!(first > 1, "oldest records pruned");
        assert_eq!(seqs, (first..=200).collect::<Vec<_>>());
        // tail reads only the newest.
        let tail = read_boot(&log.boot().path, Some(3)).expect("reads");
        assert_eq!(
            tail.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [198, 199, 200]
        );
    }

    #[test]
    fn older_boots_are_pruned_by_count_when_a_new_boot_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let caps = limits(1024, 1 << 20, 2);
        for n in 1..=3 {
            let (mut log, _) = BootLog::open(dir.path(), &boot_id(n), caps).expect("opens");
            log.append(vec![(entry("hello"), None)]).expect("appends");
        }
        let boots = list_boots(dir.path()).expect("lists");
        let ids: Vec<&str> = boots.iter().map(|b| b.boot_id.as_str()).collect();
        assert_eq!(ids, [boot_id(2).as_str(), boot_id(3).as_str()]);
        assert_eq!(boots.iter().map(|b| b.seq).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn a_restart_after_a_crash_cuts_the_torn_line_and_carries_on_numbering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let caps = limits(1 << 20, 1 << 22, 10);
        let path = {
            let (mut log, report) = BootLog::open(dir.path(), &boot_id(1), caps).expect("opens");
            assert!(!report.reused);
            log.append(vec![(entry("a"), None), (entry("b"), None)])
                .expect("appends");
            log.boot().path.join(segment_name(1))
        };
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(br#"{"seq":3,"ts":"20"#).expect("tear");
        let (mut log, report) = BootLog::open(dir.path(), &boot_id(1), caps).expect("reopens");
        assert!(report.reused);
        assert_eq!(report.torn_bytes, 17);
        assert_eq!(log.next_seq(), 3);
        log.append(vec![(entry("c"), None)]).expect("appends");
        let records = read_boot(&log.boot().path, None).expect("reads");
        assert_eq!(messages(&records), ["a", "b", "c"]);
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn the_kernel_log_position_survives_a_restart_even_without_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let caps = limits(1 << 20, 1 << 22, 10);
        let boot_path = {
            let (mut log, _) = BootLog::open(dir.path(), &boot_id(1), caps).expect("opens");
            log.append(vec![
                (entry("init 1"), Some(40)),
                (entry("init 2"), Some(41)),
            ])
            .expect("appends");
            assert_eq!(log.kmsg_seq(), Some(41));
            log.boot().path.clone()
        };
        assert_eq!(read_kmsg_seq(&boot_path.join(KMSG_SEQ_FILE)), Some(41));
        let (log, _) = BootLog::open(dir.path(), &boot_id(1), caps).expect("reopens");
        assert_eq!(log.kmsg_seq(), Some(41));
        // A crash between writing the lines and the position file: the
        // lines themselves say how far init's log was copied.
        fs::remove_file(boot_path.join(KMSG_SEQ_FILE)).expect("remove");
        let (log, _) = BootLog::open(dir.path(), &boot_id(1), caps).expect("reopens");
        assert_eq!(log.kmsg_seq(), Some(41));
        // A new boot starts from nothing.
        let (log, _) = BootLog::open(dir.path(), &boot_id(2), caps).expect("opens");
        assert_eq!(log.kmsg_seq(), None);
    }
}
