//! Container logs in the CRI format, rotated by size.
//!
//! Every line of `logs/container.log` is
//! `<RFC 3339 UTC time, nanoseconds> <stdout|stderr> <F|P> <content>\n`,
//! the format kubelet and containerd use, so existing tools read it. A line
//! longer than [`MAX_LINE`] is cut into `P` (partial) records followed by
//! one `F` (full) record. When the file would grow past `max_bytes` it is
//! renamed to `container.log.1` (older ones shift up to `.max_files`, the
//! oldest is dropped) and a new file is started.
//!
//! The shim writes with [`LogWriter`], feeding pipe reads through a
//! [`LineSplitter`] per stream; cairnd reads with [`read_tail`] and follows
//! with [`LogFollower`], which notices rotation by the inode changing.

use crate::spec::LogConfig;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// The longest content of one record; longer lines become `P` records.
pub const MAX_LINE: usize = 16 * 1024;
/// The current log file's name in the logs directory.
pub const LOG_FILE: &str = "container.log";

const TIME_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Which of the container's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One parsed log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub time: OffsetDateTime,
    pub stream: LogStream,
    /// `P`: the line continues in the next record of the same stream.
    pub partial: bool,
    /// The bytes of the line, without its newline.
    pub content: Vec<u8>,
}

/// Why a line is not a CRI log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogParseError {
    #[error("log line has fewer than four fields")]
    MissingField,
    #[error("log line timestamp is not RFC 3339")]
    BadTime,
    #[error("log line stream is neither stdout nor stderr")]
    BadStream,
    #[error("log line tag is neither F nor P")]
    BadTag,
}

impl LogRecord {
    /// The line as written to the file, newline included.
    #[must_use]
    pub fn format(&self) -> Vec<u8> {
        let time = self
            .time
            .to_offset(time::UtcOffset::UTC)
            .format(TIME_FORMAT)
            .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000000000Z"));
        let mut line = Vec::with_capacity(time.len() + 10 + self.content.len());
        line.extend_from_slice(time.as_bytes());
        line.push(b' ');
        line.extend_from_slice(self.stream.as_str().as_bytes());
        line.extend_from_slice(if self.partial { b" P " } else { b" F " });
        line.extend_from_slice(&self.content);
        line.push(b'\n');
        line
    }

    /// Parses one line (without or with its trailing newline).
    ///
    /// # Errors
    /// When the line is not in the CRI format.
    pub fn parse(line: &[u8]) -> Result<Self, LogParseError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut fields = line.splitn(4, |b| *b == b' ');
        let time = fields.next().ok_or(LogParseError::MissingField)?;
        let stream = fields.next().ok_or(LogParseError::MissingField)?;
        let tag = fields.next().ok_or(LogParseError::MissingField)?;
        let content = fields.next().ok_or(LogParseError::MissingField)?;
        let time = std::str::from_utf8(time).map_err(|_| LogParseError::BadTime)?;
        let time = OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
            .map_err(|_| LogParseError::BadTime)?;
        let stream = match stream {
            b"stdout" => LogStream::Stdout,
            b"stderr" => LogStream::Stderr,
            _ => return Err(LogParseError::BadStream),
        };
        let partial = match tag {
            b"F" => false,
            b"P" => true,
            _ => return Err(LogParseError::BadTag),
        };
        Ok(Self {
            time,
            stream,
            partial,
            content: content.to_vec(),
        })
    }
}

/// A piece of output ready to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Cuts one stream's bytes into lines (sans-IO): whole lines come out as
/// full chunks, and a line reaching [`MAX_LINE`] without a newline comes out
/// as a partial chunk.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes read from the stream; returns the chunks now complete.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Chunk> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let room = MAX_LINE - self.pending.len();
            let window = &data[..data.len().min(room)];
            if let Some(nl) = window.iter().position(|b| *b == b'\n') {
                self.pending.extend_from_slice(&window[..nl]);
                out.push(Chunk {
                    partial: false,
                    content: std::mem::take(&mut self.pending),
                });
                data = &data[nl + 1..];
            } else {
                self.pending.extend_from_slice(window);
                data = &data[window.len()..];
                if self.pending.len() == MAX_LINE {
                    // A newline right after the cap still ends this line as
                    // full rather than leaving an empty full record.
                    if data.first() == Some(&b'\n') {
                        out.push(Chunk {
                            partial: false,
                            content: std::mem::take(&mut self.pending),
                        });
                        data = &data[1..];
                    } else {
                        out.push(Chunk {
                            partial: true,
                            content: std::mem::take(&mut self.pending),
                        });
                    }
                }
            }
        }
        out
    }

    /// The stream ended: whatever is left is a last, full line.
    pub fn finish(&mut self) -> Option<Chunk> {
        if self.pending.is_empty() {
            None
        } else {
            Some(Chunk {
                partial: false,
                content: std::mem::take(&mut self.pending),
            })
        }
    }
}

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    #[error("could not create the log directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not rotate {path}")]
    Rotate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The path of `container.log.<n>` (n = 0 is `container.log`).
#[must_use]
pub fn log_path(dir: &Path, n: u32) -> PathBuf {
    if n == 0 {
        dir.join(LOG_FILE)
    } else {
        dir.join(format!("{LOG_FILE}.{n}"))
    }
}

/// Appends records to `container.log`, rotating by size.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    config: LogConfig,
    file: File,
    size: u64,
}

impl LogWriter {
    /// Opens (or creates) `dir/container.log` for appending.
    ///
    /// # Errors
    /// When the directory or file cannot be created.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Self, LogFileError> {
        std::fs::create_dir_all(dir).map_err(|source| LogFileError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = log_path(dir, 0);
        let file = open_append(&path)?;
        let size = file
            .metadata()
            .map_err(|source| LogFileError::Open {
                path: path.clone(),
                source,
            })?
            .len();
        Ok(Self {
            dir: dir.to_owned(),
            config,
            file,
            size,
        })
    }

    /// Writes one record, rotating first if it would not fit.
    ///
    /// # Errors
    /// When writing or rotating fails.
    pub fn write(&mut self, record: &LogRecord) -> Result<(), LogFileError> {
        let line = record.format();
        if self.size > 0 && self.size + line.len() as u64 > self.config.max_bytes {
            self.rotate()?;
        }
        self.file
            .write_all(&line)
            .map_err(|source| LogFileError::Write {
                path: log_path(&self.dir, 0),
                source,
            })?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Writes the chunks of one stream read at `time`.
    ///
    /// # Errors
    /// As [`LogWriter::write`].
    pub fn write_chunks(
        &mut self,
        time: OffsetDateTime,
        stream: LogStream,
        chunks: Vec<Chunk>,
    ) -> Result<(), LogFileError> {
        for chunk in chunks {
            self.write(&LogRecord {
                time,
                stream,
                partial: chunk.partial,
                content: chunk.content,
            })?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), LogFileError> {
        let rotate_err = |path: &Path| {
            let path = path.to_owned();
            move |source| LogFileError::Rotate { path, source }
        };
        for n in (1..self.config.max_files).rev() {
            let from = log_path(&self.dir, n);
            match std::fs::rename(&from, log_path(&self.dir, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(rotate_err(&from)(e)),
            }
        }
        let current = log_path(&self.dir, 0);
        std::fs::rename(&current, log_path(&self.dir, 1)).map_err(rotate_err(&current))?;
        self.file = open_append(&current)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<File, LogFileError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogFileError::Open {
            path: path.to_owned(),
            source,
        })
}

/// The existing log files, oldest first (`.N` … `.1`, then the current).
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let n = name
                .to_str()?
                .strip_prefix(LOG_FILE)?
                .strip_prefix('.')?
                .parse::<u32>()
                .ok()?;
            Some((n, entry.path()))
        })
        .collect();
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    files.push(log_path(dir, 0));
    files
}

/// Splits complete lines off `buf` and parses them; malformed lines (only
/// a crash mid-write can make one) are skipped.
fn drain_lines(buf: &mut Vec<u8>, out: &mut VecDeque<LogRecord>, keep: Option<usize>) {
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
        if let Ok(record) = LogRecord::parse(&buf[start..start + nl]) {
            out.push_back(record);
            if let Some(keep) = keep
                && out.len() > keep
            {
                out.pop_front();
            }
        }
        start += nl + 1;
    }
    buf.drain(..start);
}

/// Reads every record in `dir` (rotated files included), keeping only the
/// last `tail` when given.
///
/// # Errors
/// When a log file exists but cannot be read.
pub fn read_tail(dir: &Path, tail: Option<usize>) -> Result<Vec<LogRecord>, LogFileError> {
    let mut out = VecDeque::new();
    for path in log_files(dir) {
        let mut buf = match std::fs::read(&path) {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LogFileError::Read { path, source }),
        };
        drain_lines(&mut buf, &mut out, tail);
    }
    Ok(out.into())
}

/// Follows `container.log` across rotations: [`LogFollower::poll`] returns
/// what was appended since the last call. A rotation is seen as the path
/// naming a new inode; the old file is read to its end first, so nothing is
/// lost unless the log rotates twice between two polls.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    file: Option<(File, u64)>,
    pending: Vec<u8>,
}

impl LogFollower {
    /// Starts following `dir`, returning the last `tail` records (all when
    /// `None`) that exist now.
    ///
    /// # Errors
    /// When a log file exists but cannot be read.
    pub fn open(dir: &Path, tail: Option<usize>) -> Result<(Vec<LogRecord>, Self), LogFileError> {
        let mut follower = Self {
            path: log_path(dir, 0),
            file: None,
            pending: Vec::new(),
        };
        // Open the current file before reading the rotated ones, so a
        // rotation in between shows up as an inode change on the next poll
        // rather than as lost lines.
        follower.reopen()?;
        let mut out = VecDeque::new();
        let files = log_files(dir);
        for path in &files[..files.len() - 1] {
            let mut buf = match std::fs::read(path) {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(LogFileError::Read {
                        path: path.clone(),
                        source,
                    });
                }
            };
            drain_lines(&mut buf, &mut out, tail);
        }
        follower.read_open(&mut out, tail)?;
        Ok((out.into(), follower))
    }

    fn reopen(&mut self) -> Result<bool, LogFileError> {
        match File::open(&self.path) {
            Ok(file) => {
                let ino = file
                    .metadata()
                    .map_err(|source| LogFileError::Read {
                        path: self.path.clone(),
                        source,
                    })?
                    .ino();
                self.file = Some((file, ino));
                self.pending.clear();
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(LogFileError::Open {
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn read_open(
        &mut self,
        out: &mut VecDeque<LogRecord>,
        keep: Option<usize>,
    ) -> Result<(), LogFileError> {
        if let Some((file, _)) = &mut self.file {
            file.read_to_end(&mut self.pending)
                .map_err(|source| LogFileError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            drain_lines(&mut self.pending, out, keep);
        }
        Ok(())
    }

    /// The records appended since the last call.
    ///
    /// # Errors
    /// When the log cannot be read.
    pub fn poll(&mut self) -> Result<Vec<LogRecord>, LogFileError> {
        let mut out = VecDeque::new();
        self.read_open(&mut out, None)?;
        let current_ino = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        let rotated = match (&self.file, current_ino) {
            (Some((_, open_ino)), Some(ino)) => *open_ino != ino,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if rotated && self.reopen()? {
            if let Some((file, _)) = &mut self.file {
                file.seek(SeekFrom::Start(0))
                    .map_err(|source| LogFileError::Read {
                        path: self.path.clone(),
                        source,
                    })?;
            }
            self.read_open(&mut out, None)?;
        }
        Ok(out.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn record(stream: LogStream, partial: bool, content: &[u8]) -> LogRecord {
        LogRecord {
            time: datetime!(2026-11-22 14:00:00.000000123 UTC),
            stream,
            partial,
            content: content.to_vec(),
        }
    }

    #[test]
    fn a_record_is_written_in_the_cri_format() {
        let line = record(LogStream::Stderr, true, b"hello world").format();
        assert_eq!(
            line,
            b"2026-11-22T14:00:00.000000123Z stderr P hello world\n".to_vec()
        );
        let parsed = LogRecord::parse(&line).expect("parse");
        assert_eq!(parsed, record(LogStream::Stderr, true, b"hello world"));
    }

    #[test]
    fn lines_from_other_runtimes_parse() {
        let r = LogRecord::parse(b"2016-10-06T00:17:09.669794202Z stdout F some log")
            .expect("containerd line");
        assert_eq!(r.content, b"some log");
        let r = LogRecord::parse(b"2016-10-06T00:17:10.1Z stdout F ").expect("empty content");
        assert!(r.content.is_empty());
        assert_eq!(
            LogRecord::parse(b"2016-10-06T00:17:10Z stdout X a"),
            Err(LogParseError::BadTag)
        );
        assert_eq!(
            LogRecord::parse(b"yesterday stdout F a"),
            Err(LogParseError::BadTime)
        );
        assert_eq!(
            LogRecord::parse(b"2016-10-06T00:17:10Z stdout F"),
            Err(LogParseError::MissingField)
        );
    }

    #[test]
    fn the_splitter_cuts_long_lines_into_partial_records() {
        let mut s = LineSplitter::new();
        assert!(s.push(b"abc").is_empty());
        let out = s.push(b"def\nxy");
        assert_eq!(
            out,
            vec![Chunk {
                partial: false,
                content: b"abcdef".to_vec()
            }]
        );
        let long = vec![b'z'; MAX_LINE * 2 + 5];
        let out = s.push(&long);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|c| c.partial && c.content.len() == MAX_LINE));
        assert_eq!(&out[0].content[..2], b"xy");
        let out = s.push(b"\n");
        assert_eq!(out.len(), 1);
        assert!(!out[0].partial);
        assert_eq!(out[0].content.len(), 7);
        assert!(s.push(b"tail").is_empty());
        assert_eq!(
            s.finish(),
            Some(Chunk {
                partial: false,
                content: b"tail".to_vec()
            })
        );
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_line_of_exactly_the_cap_is_one_full_record() {
        let mut s = LineSplitter::new();
        let mut data = vec![b'a'; MAX_LINE];
        data.push(b'\n');
        let out = s.push(&data);
        assert_eq!(out.len(), 1);
        assert!(!out[0].partial);
    }

    #[test]
    fn rotation_keeps_max_files_and_tail_reads_across_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            max_bytes: 4096,
            max_files: 2,
        };
        let mut w = LogWriter::open(dir.path(), config).expect("open");
        for i in 0..400 {
            w.write(&record(
                LogStream::Stdout,
                false,
                format!("line {i:04}").as_bytes(),
            ))
            .expect("write");
        }
        assert!(log_path(dir.path(), 1).exists());
        assert!(log_path(dir.path(), 2).exists());
        assert!(!log_path(dir.path(), 3).exists());
        for n in 0..=2 {
            let len = std::fs::metadata(log_path(dir.path(), n))
                .expect("meta")
                .len();
            assert!(len <= 4096, "file {n} is {len} bytes");
        }
        let all = read_tail(dir.path(), None).expect("read");
        // Contiguous and ending at the last line: rotation dropped only the
        // oldest lines.
        let numbers: Vec<u32> = all
            .iter()
            .map(|r| {
                std::str::from_utf8(&r.content).expect("utf8")[5..]
                    .parse()
                    .expect("number")
            })
            .collect();
        assert_eq!(numbers.last(), Some(&399));
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(numbers.len() > 100);
        let tail = read_tail(dir.path(), Some(3)).expect("tail");
        assert_eq!(tail.len(), 3);
        assert_eq!(tail[2].content, b"line 0399");
    }

    #[test]
    fn the_follower_sees_lines_written_across_a_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            max_bytes: 4096,
            max_files: 3,
        };
        let mut w = LogWriter::open(dir.path(), config).expect("open");
        w.write(&record(LogStream::Stdout, false, b"before"))
            .expect("write");
        let (initial, mut follower) = LogFollower::open(dir.path(), Some(10)).expect("follow");
        assert_eq!(initial.len(), 1);
        let mut seen = Vec::new();
        for i in 0..120 {
            w.write(&record(
                LogStream::Stdout,
                false,
                format!("l{i:03}").as_bytes(),
            ))
            .expect("write");
            if i % 7 == 0 {
                seen.extend(follower.poll().expect("poll"));
            }
        }
        seen.extend(follower.poll().expect("poll"));
        assert!(log_path(dir.path(), 1).exists(), "the log rotated");
        let got: Vec<String> = seen
            .iter()
            .map(|r| String::from_utf8(r.content.clone()).expect("utf8"))
            .collect();
        let want: Vec<String> = (0..120).map(|i| format!("l{i:03}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_follower_waits_for_a_log_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (initial, mut follower) = LogFollower::open(dir.path(), None).expect("follow");
        assert!(initial.is_empty());
        assert!(follower.poll().expect("poll").is_empty());
        let mut w = LogWriter::open(dir.path(), LogConfig::default()).expect("open");
        w.write(&record(LogStream::Stderr, false, b"first"))
            .expect("write");
        let got = follower.poll().expect("poll");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].content, b"first");
    }

    proptest! {
        #[test]
        fn any_record_round_trips(
            content in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..300),
            nanos in 0i64..4_000_000_000_000_000_000,
            partial in any::<bool>(),
            stderr in any::<bool>(),
        ) {
            let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).expect("time");
            let stream = if stderr { LogStream::Stderr } else { LogStream::Stdout };
            let r = LogRecord { time, stream, partial, content };
            let parsed = LogRecord::parse(&r.format()).expect("parse");
            prop_assert_eq!(parsed, r);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = LogRecord::parse(&bytes);
        }

        #[test]
        fn splitting_preserves_every_byte(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40_000), 0..5)
        ) {
            let mut s = LineSplitter::new();
            let mut rebuilt = Vec::new();
            let mut chunks = Vec::new();
            for p in &pieces {
                chunks.extend(s.push(p));
            }
            chunks.extend(s.finish());
            for c in &chunks {
                prop_assert!(c.content.len() <= MAX_LINE);
                prop_assert!(!c.content.contains(&b'\n'));
                rebuilt.extend_from_slice(&c.content);
                if !c.partial {
                    rebuilt.push(b'\n');
                }
            }
            let mut input: Vec<u8> = pieces.concat();
            if !input.is_empty() && input.last() != Some(&b'\n') {
                input.push(b'\n');
            }
            prop_assert_eq!(rebuilt, input);
        }
    }
}
