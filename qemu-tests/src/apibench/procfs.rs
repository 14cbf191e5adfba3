//! What the bench reads about the servers from `/proc`: resident memory
//! (`VmRSS` in `status`) and CPU time (`utime` + `stime` in `stat`, which
//! cover every thread of the process).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Clock ticks per second in `/proc/<pid>/stat`: Linux's `USER_HZ`, which
/// is 100 on x86_64 whatever the kernel's internal HZ.
pub const USER_HZ: u64 = 100;

/// `VmRSS` from a `/proc/<pid>/status` text, in bytes.
#[must_use]
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let kib: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => kib.checked_mul(1024),
        _ => None,
    }
}

/// The fields of `/proc/<pid>/stat` the bench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The parent's pid.
    pub ppid: u32,
    /// User plus system time, in [`USER_HZ`] ticks.
    pub cpu_ticks: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name may hold spaces and
/// parentheses, so fields are counted after its last `)`.
#[must_use]
pub fn parse_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), ..., utime (14), stime (15).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcStat {
        ppid,
        cpu_ticks: utime.checked_add(stime)?,
    })
}

/// Resident bytes of `pid`, `None` once it is gone.
#[must_use]
pub fn rss(pid: u32) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The stat fields of `pid`, `None` once it is gone.
#[must_use]
pub fn stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid` and its direct children (nginx's master and its worker).
#[must_use]
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let Ok(entries) = std::fs::read_dir(Path::new("/proc")) else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if stat(child).is_some_and(|s| s.ppid == pid) {
            out.push(child);
        }
    }
    out
}

/// CPU time of `pids` together.
#[must_use]
pub fn cpu_time(pids: &[u32]) -> Duration {
    let ticks: u64 = pids
        .iter()
        .filter_map(|p| stat(*p))
        .map(|s| s.cpu_ticks)
        .sum();
    Duration::from_millis(ticks.saturating_mul(1000) / USER_HZ)
}

/// Resident bytes of `pids` together (shared pages count once per process).
#[must_use]
pub fn rss_sum(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| rss(*p)).sum()
}

/// Samples the summed RSS of a fixed set of processes on a thread until
/// stopped, keeping the peak.
#[derive(Debug)]
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pids` every `every`.
    #[must_use]
    pub fn start(pids: Vec<u32>, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_sum(&pids)));
        let thread = {
            let stop = Arc::clone(&stop);
            let peak = Arc::clone(&peak);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_sum(&pids), Ordering::Relaxed);
                    std::thread::sleep(every);
                }
            })
        };
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops and returns the peak seen.
    #[must_use]
    pub fn finish(mut self) -> u64 {
        self.halt();
        self.peak.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status =
            "Name:\tcairnd\nVmPeak:\t  20000 kB\nVmRSS:\t    9876 kB\nRssAnon:\t 5000 kB\n";
        assert_eq!(parse_vm_rss(status), Some(9876 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let stat = "4242 (odd) name)) S 17 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 1 0 100 1000 200";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                ppid: 17,
                cpu_ticks: 325
            })
        );
        assert_eq!(parse_stat("4242 (cut) S 1 2"), None);
    }

    #[test]
    fn this_process_has_a_resident_size_and_cpu_time() {
        let me = std::process::id();
        assert!(rss(me).is_some_and(|b| b > 0));
        assert!(stat(me).is_some());
        assert!(with_children(me).contains(&me));
    }
}
