//! `/dev/kmsg`: the kernel log, record by record.
//!
//! Each `read(2)` of `/dev/kmsg` returns exactly one record:
//!
//! ```text
//! 6,1234,5678901,-;cairn-init: mounted /var
//!  SUBSYSTEM=block
//! ```
//!
//! `priority,seq,microseconds since boot,flags[,...];message`, then
//! optional dictionary lines that start with a space. The kernel escapes
//! bytes outside printable ASCII, and the backslash itself, as `\xNN`, so
//! the message is unescaped here. The priority field packs the facility
//! above the level (`facility * 8 + level`); the kernel's own lines have
//! facility 0, and anything written to `/dev/kmsg` from user space gets
//! at least facility 1 (`LOG_USER`), which is how cairn-init's lines are
//! told from a kernel line that merely looks like one.
//!
//! Reads start at the oldest record still in the ring buffer. When the
//! kernel overwrites records a reader has not reached, the next read fails
//! with `EPIPE` once and the reader carries on from the oldest record
//! left. With `O_NONBLOCK`, `EAGAIN` means "nothing more yet".
//!
//! [`parse_record`] and [`InitLines`] are the sans-IO part; the shells are
//! [`read_kernel_log`] (everything now in the buffer, for `node dmesg`) and
//! [`run_init_reader`] (cairn-init's lines into the journal, for as long
//! as cairnd runs). The latter waits for records with tokio's `AsyncFd`:
//! `/dev/kmsg` supports `poll`, so new lines arrive as they are written
//! rather than a poll interval later, and an idle node does no work.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use api::Timestamp;
use api::types::{KernelLogEntry, LogEntry, LogLevel, LogSource};
use tokio::io::unix::AsyncFd;

use super::{Journal, JournalClosed};

/// The kernel log device.
pub const KMSG_PATH: &str = "/dev/kmsg";

/// What cairn-init puts in front of every line it writes.
pub const INIT_PREFIX: &str = "cairn-init: ";

/// Big enough for any record: the kernel refuses a read into a buffer too
/// small for the record with `EINVAL`, and its own limit for one record
/// in this format is 8 KiB.
const RECORD_BUFFER: usize = 16 * 1024;

/// One kernel log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Syslog facility (0 for the kernel's own lines).
    pub facility: u32,
    /// Syslog level, 0 (emergency) to 7 (debug).
    pub level: u8,
    /// Sequence number in the ring buffer.
    pub seq: u64,
    /// Microseconds since boot.
    pub monotonic_us: u64,
    /// The message, unescaped (dictionary lines left out).
    pub message: String,
}

impl KmsgRecord {
    /// As the API's dmesg entry (which carries the level as `priority`).
    pub fn to_kernel_log_entry(&self) -> KernelLogEntry {
        KernelLogEntry {
            seq: self.seq,
            monotonic_us: self.monotonic_us,
            priority: self.level,
            message: self.message.clone(),
        }
    }
}

/// A record that is not in the `/dev/kmsg` format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsgParseError {
    #[error("no `;` between the header and the message")]
    NoMessage,
    #[error("header field `{0}` is missing")]
    Missing(&'static str),
    #[error("header field `{field}` is not a number: {value:?}")]
    NotANumber { field: &'static str, value: String },
}

/// Parses one record as a `read(2)` of `/dev/kmsg` returns it.
pub fn parse_record(bytes: &[u8]) -> Result<KmsgRecord, KmsgParseError> {
    let semi = bytes
        .iter()
        .position(|b| *b == b';')
        .ok_or(KmsgParseError::NoMessage)?;
    let header = &bytes[..semi];
    let mut fields = header.split(|b| *b == b',');
    let prio: u32 = number(fields.next(), "priority")?;
    let seq: u64 = number(fields.next(), "sequence")?;
    let monotonic_us: u64 = number(fields.next(), "timestamp")?;
    // Flags and later fields (caller id on newer kernels) are not needed.
    let rest = &bytes[semi + 1..];
    let text = match rest.iter().position(|b| *b == b'\n') {
        Some(end) => &rest[..end],
        None => rest,
    };
    Ok(KmsgRecord {
        facility: prio >> 3,
        level: level_bits(prio),
        seq,
        monotonic_us,
        message: String::from_utf8_lossy(&unescape(text)).into_owned(),
    })
}

/// The level is the priority's low three bits.
fn level_bits(prio: u32) -> u8 {
    (prio & 7) as u8
}

fn number<T: std::str::FromStr>(
    field: Option<&[u8]>,
    name: &'static str,
) -> Result<T, KmsgParseError> {
    let field = field.ok_or(KmsgParseError::Missing(name))?;
    std::str::from_utf8(field)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| KmsgParseError::NotANumber {
            field: name,
            value: String::from_utf8_lossy(field).into_owned(),
        })
}

/// Undoes the kernel's `\xNN` escaping; anything else is kept as it is.
fn unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\'
            && text.get(i + 1) == Some(&b'x')
            && let Some(byte) = text
                .get(i + 2..i + 4)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 4;
            continue;
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// The journal level of a syslog level: emergency to error are errors,
/// notice counts as info.
pub fn level_of(syslog_level: u8) -> LogLevel {
    match syslog_level {
        0..=3 => LogLevel::Error,
        4 => LogLevel::Warn,
        5 | 6 => LogLevel::Info,
        _ => LogLevel::Debug,
    }
}

/// One of cairn-init's lines, ready for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitLine {
    /// The kernel log record it came from.
    pub kmsg_seq: u64,
    /// Microseconds since boot when init wrote it.
    pub monotonic_us: u64,
    /// Its level.
    pub level: LogLevel,
    /// The text, without the `cairn-init: ` prefix.
    pub message: String,
}

/// Picks cairn-init's lines out of the kernel log, each once: records at
/// or before the last one taken (`after`, persisted in the boot's
/// directory) were copied by an earlier cairnd of this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitLines {
    after: Option<u64>,
}

impl InitLines {
    /// Starts after record `after` (none: from the first).
    pub fn new(after: Option<u64>) -> Self {
        Self { after }
    }

    /// The line to copy for `record`, if it is a new one of cairn-init's.
    pub fn accept(&mut self, record: &KmsgRecord) -> Option<InitLine> {
        if self.after.is_some_and(|after| record.seq <= after) {
            return None;
        }
        self.after = Some(record.seq);
        if record.facility == 0 {
            return None;
        }
        let message = record.message.strip_prefix(INIT_PREFIX)?;
        Some(InitLine {
            kmsg_seq: record.seq,
            monotonic_us: record.monotonic_us,
            level: level_of(record.level),
            message: message.to_owned(),
        })
    }
}

/// The wall-clock time of `monotonic_us` since boot, given one reading of
/// both clocks taken together.
pub fn wall_clock_at(
    monotonic_us: u64,
    now_wall: SystemTime,
    now_monotonic: Duration,
) -> SystemTime {
    let boot = now_wall
        .checked_sub(now_monotonic)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    boot.checked_add(Duration::from_micros(monotonic_us))
        .unwrap_or(boot)
}

/// Opening or reading the kernel log failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelLogError {
    #[error("cannot open {}", path.display())]
    Open {
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

fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
}

/// Every record now in the kernel log (normally [`KMSG_PATH`]), oldest
/// first; records that do not parse are left out. Reads until the kernel
/// has nothing more, so it returns promptly; it does blocking I/O, so run
/// it in `spawn_blocking`.
pub fn read_kernel_log(path: &Path) -> Result<Vec<KernelLogEntry>, KernelLogError> {
    let file = open_nonblocking(path).map_err(|source| KernelLogError::Open {
        path: path.to_owned(),
        source,
    })?;
    read_records_now(&file)
        .map(|records| {
            records
                .iter()
                .map(KmsgRecord::to_kernel_log_entry)
                .collect()
        })
        .map_err(|source| KernelLogError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Reads records from a non-blocking kmsg-like descriptor until it has no
/// more for now (or ends).
fn read_records_now(mut file: &File) -> io::Result<Vec<KmsgRecord>> {
    let mut buf = vec![0u8; RECORD_BUFFER];
    let mut records = Vec::new();
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(records),
            Ok(n) => {
                if let Ok(record) = parse_record(&buf[..n]) {
                    records.push(record);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(records),
            // Overwritten before we got there; the next read has the oldest
            // record left.
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Copying cairn-init's lines stopped.
#[derive(Debug, thiserror::Error)]
pub enum InitReaderError {
    #[error("cannot open {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot wait for {}", path.display())]
    Poll {
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
    #[error("cannot hand init's lines to the journal")]
    Journal(#[source] JournalClosed),
}

/// Copies cairn-init's lines from `path` (normally [`KMSG_PATH`]) into the
/// journal as they appear, starting after the last one already written
/// (by an earlier cairnd of this boot, or an earlier run of this reader:
/// it is safe to restart after an error). Runs until the journal closes or
/// the device fails.
pub async fn run_init_reader(journal: Journal, path: PathBuf) -> Result<(), InitReaderError> {
    let file = open_nonblocking(&path).map_err(|source| InitReaderError::Open {
        path: path.clone(),
        source,
    })?;
    copy_init_lines(journal, file, &path).await
}

/// [`run_init_reader`] on an open non-blocking descriptor; returns when it
/// reads end-of-file (which `/dev/kmsg` never does, a test's socket does).
async fn copy_init_lines(journal: Journal, file: File, path: &Path) -> Result<(), InitReaderError> {
    let fd = register(file).map_err(|source| InitReaderError::Poll {
        path: path.to_owned(),
        source,
    })?;
    // Lines a previous run queued must be written before the position is
    // read, or they would be copied again.
    journal.flush().await.map_err(InitReaderError::Journal)?;
    let mut lines = InitLines::new(journal.init_kmsg_seq());
    let mut buf = vec![0u8; RECORD_BUFFER];
    loop {
        let mut guard = fd
            .readable()
            .await
            .map_err(|source| InitReaderError::Poll {
                path: path.to_owned(),
                source,
            })?;
        let read = guard.try_io(|fd| {
            let mut file: &File = fd.get_ref();
            file.read(&mut buf)
        });
        let n = match read {
            // Would block: try_io has cleared readiness; wait again.
            Err(_) => continue,
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EPIPE) => {
                journal.log(
                    LogSource::Cairnd,
                    LogLevel::Warn,
                    "journal: the kernel log wrapped before some of cairn-init's lines were copied",
                );
                continue;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(source)) => {
                return Err(InitReaderError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let Ok(record) = parse_record(&buf[..n]) else {
            continue;
        };
        let Some(line) = lines.accept(&record) else {
            continue;
        };
        let ts = wall_clock_at(line.monotonic_us, SystemTime::now(), monotonic_now());
        let entry = LogEntry {
            ts: Timestamp::from_system(ts),
            boot_id: journal.boot_id().as_str().to_owned(),
            source: LogSource::Init,
            level: line.level,
            message: super::cap_message(line.message),
        };
        journal
            .append_from_kmsg(entry, line.kmsg_seq)
            .await
            .map_err(InitReaderError::Journal)?;
    }
}

/// Registers `file` with tokio's reactor. `AsyncFd::new` is deprecated
/// because an arbitrary `AsRawFd` type may change or close its descriptor
/// behind the reactor's back; a `File` owned by the `AsyncFd` cannot, and
/// the replacement (`AsyncFd::register`) is `unsafe`, which this crate
/// forbids.
#[expect(
    deprecated,
    reason = "sound for an owned File, see above; the replacement needs unsafe"
)]
fn register(file: File) -> io::Result<AsyncFd<File>> {
    AsyncFd::new(file)
}

/// `CLOCK_MONOTONIC`, the clock kmsg timestamps count on. It cannot fail
/// on Linux; zero would only place init's lines at the boot's start.
fn monotonic_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(Duration::from)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    use proptest::prelude::*;

    use super::*;
    use crate::journal::{BootId, JournalConfig};

    fn record(bytes: &[u8]) -> KmsgRecord {
        parse_record(bytes).expect("parses")
    }

    #[test]
    fn a_record_splits_into_facility_level_seq_time_and_message() {
        let r = record(b"14,1234,5678901,-;cairn-init: mounted /var\n");
        assert_eq!(
            r,
            KmsgRecord {
                facility: 1,
                level: 6,
                seq: 1234,
                monotonic_us: 5_678_901,
                message: "cairn-init: mounted /var".into(),
            }
        );
        let kernel = record(b"3,7,100,c,caller=T1;EXT4-fs error\n");
        assert_eq!((kernel.facility, kernel.level), (0, 3));
        assert_eq!(kernel.message, "EXT4-fs error");
        assert_eq!(
            kernel.to_kernel_log_entry(),
            KernelLogEntry {
                seq: 7,
                monotonic_us: 100,
                priority: 3,
                message: "EXT4-fs error".into(),
            }
        );
    }

    #[test]
    fn dictionary_lines_are_not_part_of_the_message() {
        let r = record(b"6,2,3,-;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n");
        assert_eq!(r.message, "usb 1-1: new device");
    }

    #[test]
    fn kernel_escapes_are_undone() {
        let r = record(b"6,2,3,-;a\\x5cb\\x0ac \\xc3\\xa9 \\xzz \\x4\n");
        assert_eq!(r.message, "a\\b\nc \u{e9} \\xzz \\x4");
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        assert_eq!(parse_record(b"6,1,2"), Err(KmsgParseError::NoMessage));
        assert_eq!(
            parse_record(b"6,1;x"),
            Err(KmsgParseError::Missing("timestamp"))
        );
        assert_eq!(
            parse_record(b"6,-1,2,-;x"),
            Err(KmsgParseError::NotANumber {
                field: "sequence",
                value: "-1".into()
            })
        );
        assert!(parse_record(b"99999999999,1,2,-;x").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_record(&bytes);
        }

        #[test]
        fn well_formed_records_parse_back(
            prio in 0u32..200,
            seq in any::<u64>(),
            us in any::<u64>(),
            text in "[ -\\[\\]-~]{0,80}",
        ) {
            let raw = format!("{prio},{seq},{us},-;{text}\n");
            let r = parse_record(raw.as_bytes()).expect("parses");
            prop_assert_eq!(r.facility, prio >> 3);
            prop_assert_eq!(u32::from(r.level), prio & 7);
            prop_assert_eq!((r.seq, r.monotonic_us), (seq, us));
            prop_assert_eq!(r.message, text);
        }
    }

    #[test]
    fn syslog_levels_map_onto_the_journal_levels() {
        let levels: Vec<LogLevel> = (0..=7).map(level_of).collect();
        use LogLevel::{Debug, Error, Info, Warn};
        assert_eq!(
            levels,
            [Error, Error, Error, Error, Warn, Info, Info, Debug]
        );
    }

    #[test]
    fn only_init_lines_from_user_space_are_taken_each_once() {
        let mut lines = InitLines::new(Some(10));
        assert_eq!(lines.accept(&record(b"12,9,5,-;cairn-init: old")), None);
        assert_eq!(lines.accept(&record(b"12,10,5,-;cairn-init: old")), None);
        assert_eq!(
            lines.accept(&record(b"6,11,5,-;cairn-init: from the kernel")),
            None,
            "facility 0 is the kernel's own"
        );
        assert_eq!(lines.accept(&record(b"14,12,5,-;sshd: not init")), None);
        assert_eq!(
            lines.accept(&record(b"12,13,77,-;cairn-init: power button")),
            Some(InitLine {
                kmsg_seq: 13,
                monotonic_us: 77,
                level: LogLevel::Warn,
                message: "power button".into(),
            })
        );
        assert_eq!(
            lines.accept(&record(b"12,13,77,-;cairn-init: power button")),
            None
        );
    }

    #[test]
    fn kmsg_time_is_placed_on_the_wall_clock_from_the_boot_instant() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = wall_clock_at(2_500_000, now, Duration::from_secs(10));
        assert_eq!(
            at,
            SystemTime::UNIX_EPOCH + Duration::from_millis(999_992_500)
        );
    }

    /// A `SOCK_SEQPACKET` pair keeps message boundaries and supports
    /// epoll, as `/dev/kmsg` does: one write is one record read.
    fn fake_kmsg(records: &[String]) -> File {
        let (reader, writer) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let mut writer = File::from(writer);
        for r in records {
            writer.write_all(r.as_bytes()).expect("write record");
        }
        File::from(reader)
    }

    fn init_record(seq: u64) -> String {
        format!("14,{seq},{},-;cairn-init: line {seq}\n", seq * 1000)
    }

    #[tokio::test]
    async fn init_lines_are_not_copied_twice_when_cairnd_restarts_within_a_boot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = JournalConfig {
            dir: dir.path().to_owned(),
            ..JournalConfig::default()
        };
        let boot = BootId::try_from("a672bac3-de5c-459d-bbee-86f97f28d3ec").expect("id");
        let first: Vec<String> = (1..=3).map(init_record).collect();
        {
            let (journal, task) = Journal::open(config.clone(), boot.clone()).expect("opens");
            let writer = task.spawn().expect("spawns");
            copy_init_lines(journal.clone(), fake_kmsg(&first), Path::new("fake"))
                .await
                .expect("copies");
            journal.flush().await.expect("flushes");
            drop(journal);
            writer.join().expect("writer ends");
        }
        // The new cairnd reads the ring buffer from its start again.
        let mut again: Vec<String> = (1..=3).map(init_record).collect();
        again.push("6,4,4000,-;kernel noise\n".into());
        again.extend((5..=6).map(init_record));
        let (journal, task) = Journal::open(config, boot).expect("reopens");
        assert_eq!(journal.init_kmsg_seq(), Some(3));
        task.spawn().expect("spawns");
        copy_init_lines(journal.clone(), fake_kmsg(&again), Path::new("fake"))
            .await
            .expect("copies");
        // The reader restarted within the same cairnd.
        copy_init_lines(journal.clone(), fake_kmsg(&again), Path::new("fake"))
            .await
            .expect("copies");
        journal.flush().await.expect("flushes");
        assert_eq!(journal.init_kmsg_seq(), Some(6));
        let entries = journal.read(0, None).await.expect("reads");
        let init: Vec<&str> = entries
            .iter()
            .filter(|e| e.source == LogSource::Init)
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(init, ["line 1", "line 2", "line 3", "line 5", "line 6"]);
        assert!(
            entries
                .iter()
                .all(|e| e.boot_id == journal.boot_id().as_str())
        );
    }

    #[test]
    fn reading_a_kmsg_source_stops_when_it_has_nothing_more() {
        let records: Vec<String> = vec![
            "6,1,10,-;first\n".into(),
            "garbage".into(),
            "4,2,20,-;second\n SUBSYSTEM=x\n".into(),
        ];
        let file = fake_kmsg(&records);
        let got = read_records_now(&file).expect("reads");
        let messages: Vec<&str> = got.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(messages, ["first", "second"]);
    }

    /// This machine's own kernel log: the tests run as root on Linux, and
    /// a booted kernel always has records.
    #[test]
    fn dmesg_reads_this_machines_kernel_log_in_sequence_order() {
        let entries = read_kernel_log(Path::new(KMSG_PATH)).expect("reads /dev/kmsg");
        assert!(!entries.is_empty());
        assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(entries.iter().all(|e| e.priority <= 7));
    }

    #[tokio::test]
    async fn the_init_reader_waits_on_the_real_kmsg_without_failing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = JournalConfig {
            dir: dir.path().to_owned(),
            ..JournalConfig::default()
        };
        let boot = BootId::try_from("0123").expect("id");
        let (journal, task) = Journal::open(config, boot).expect("opens");
        task.spawn().expect("spawns");
        let reader = run_init_reader(journal, PathBuf::from(KMSG_PATH));
        // It reads to the end of the buffer and then waits for more: it must
        // still be running, not have returned an error.
        let outcome = tokio::time::timeout(Duration::from_millis(300), reader).await;
        assert!(outcome.is_err(), "reader stopped: {outcome:?}");
    }

    #[test]
    fn a_missing_kmsg_is_an_open_error_naming_the_path() {
        let err = read_kernel_log(Path::new("/nonexistent/kmsg")).expect_err("fails");
        assert_eq!(err.to_string(), "cannot open /nonexistent/kmsg");
    }
}
