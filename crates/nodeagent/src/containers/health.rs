//! Health checks: when to probe, what a result means, and the probes.
//!
//! [`HealthTracker`] is the sans-IO part: it is told when the container's
//! process started and what each probe returned, and it says when the next
//! probe is due and what the verdict is. The semantics are Docker's:
//! `retries` failures in a row make a container unhealthy, one success
//! makes it healthy, and failures within the start period do not count
//! (a success in it still counts). A restart of the process starts over.
//!
//! The TCP and HTTP probes are blocking and run on a thread of their own:
//! for a container with a private network the thread first enters the
//! container's network namespace (`setns` changes only the calling
//! thread's), so the probe reaches the container's loopback, not the
//! node's.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use api::types::{HealthProbe, HealthReport, HealthStatus, ProbeResult};

/// How many probe results a container keeps for `inspect`.
pub const KEPT_PROBES: usize = 5;
/// How much of a probe's output is kept.
pub const KEPT_OUTPUT: usize = 1024;

/// A health check's timing, parsed from the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// What to probe.
    pub probe: HealthProbe,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Failures in a row before unhealthy.
    pub retries: u32,
    /// Time after start during which failures do not count.
    pub start_period: Duration,
}

/// One container's health: the verdict and the probes behind it.
#[derive(Clone, Debug)]
pub struct HealthTracker {
    policy: HealthPolicy,
    /// When the current run of the process started, if it runs.
    started: Option<Instant>,
    next: Option<Instant>,
    status: HealthStatus,
    failing_streak: u32,
    probes: VecDeque<ProbeResult>,
}

impl HealthTracker {
    /// A tracker for a container that is not running yet.
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            started: None,
            next: None,
            status: HealthStatus::Starting,
            failing_streak: 0,
            probes: VecDeque::new(),
        }
    }

    /// What to probe and how long a probe may take.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// The process (re)started at `now`: the verdict starts over and the
    /// first probe is due one interval later.
    pub fn started(&mut self, now: Instant) {
        self.started = Some(now);
        self.next = Some(now + self.policy.interval);
        self.status = HealthStatus::Starting;
        self.failing_streak = 0;
    }

    /// The process is not running: no probes until it starts again.
    pub fn stopped(&mut self) {
        self.started = None;
        self.next = None;
    }

    /// When the next probe is due, if the process runs.
    pub fn next_probe(&self) -> Option<Instant> {
        self.next
    }

    /// Records a probe that started at `began` (wall clock `at`) and
    /// finished at `now`.
    pub fn record(&mut self, began: Instant, now: Instant, at: SystemTime, ok: bool, output: &str) {
        let Some(started) = self.started else {
            return;
        };
        if began < started {
            // A probe of a run that has since ended says nothing about this one.
            return;
        }
        if ok {
            self.status = HealthStatus::Healthy;
            self.failing_streak = 0;
        } else if began.duration_since(started) >= self.policy.start_period {
            self.failing_streak = self.failing_streak.saturating_add(1);
            if self.failing_streak >= self.policy.retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        if self.probes.len() == KEPT_PROBES {
            self.probes.pop_front();
        }
        self.probes.push_back(ProbeResult {
            at: api::Timestamp::from_system(at),
            ok,
            output: truncate(output),
        });
        self.next = Some(now + self.policy.interval);
    }

    /// The verdict.
    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// The report `inspect` shows.
    pub fn report(&self) -> HealthReport {
        HealthReport {
            status: self.status,
            failing_streak: self.failing_streak,
            probes: self.probes.iter().cloned().collect(),
        }
    }
}

/// The last [`KEPT_OUTPUT`] bytes of `text`, cut at a character boundary.
fn truncate(text: &str) -> String {
    if text.len() <= KEPT_OUTPUT {
        return text.to_owned();
    }
    let mut start = text.len() - KEPT_OUTPUT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// Where a TCP or HTTP probe connects from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeNet {
    /// The node's own network (the container shares it).
    Host,
    /// The network namespace of this file (`/proc/<pid>/ns/net`).
    Namespace(PathBuf),
}

/// A probe's outcome: passed or not, and what it said.
pub type ProbeOutcome = (bool, String);

/// Connects to `port` on loopback.
pub fn probe_tcp(net: &ProbeNet, port: u16, timeout: Duration) -> ProbeOutcome {
    on_probe_thread(net.clone(), move || match connect(port, timeout) {
        Ok(_) => (true, format!("port {port} accepted a connection")),
        Err(e) => (false, format!("port {port}: {e}")),
    })
}

/// `GET path` on `port` on loopback; 2xx and 3xx pass.
pub fn probe_http(net: &ProbeNet, port: u16, path: &str, timeout: Duration) -> ProbeOutcome {
    let path = path.to_owned();
    on_probe_thread(net.clone(), move || {
        let deadline = Instant::now() + timeout;
        let mut stream = match connect(port, timeout) {
            Ok(s) => s,
            Err(e) => return (false, format!("port {port}: {e}")),
        };
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: localhost:{port}\r\nUser-Agent: cairnd-health\r\nConnection: close\r\n\r\n"
        );
        let mut head = Vec::new();
        let result = stream
            .write_all(request.as_bytes())
            .and_then(|()| read_status_line(&mut stream, &mut head, deadline));
        match result {
            Err(e) => (false, format!("GET {path} on port {port}: {e}")),
            Ok(()) => match parse_status_line(&head) {
                Ok(code) if (200..400).contains(&code) => (true, format!("HTTP {code}")),
                Ok(code) => (false, format!("HTTP {code}")),
                Err(e) => (false, format!("GET {path} on port {port}: {e}")),
            },
        }
    })
}

fn connect(port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// Reads until the first line ends (or 1 KiB, or the deadline).
fn read_status_line(
    stream: &mut TcpStream,
    head: &mut Vec<u8>,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in time",
            ));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// What an HTTP answer's first line is not.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatusLineError {
    /// The server closed the connection without a line.
    #[error("the server closed the connection without answering")]
    Empty,
    /// The line is not `HTTP/1.x NNN ...`.
    #[error("the answer does not start with an HTTP status line: {0:?}")]
    Malformed(String),
}

/// The status code of an HTTP/1.x answer's first line.
pub fn parse_status_line(head: &[u8]) -> Result<u16, StatusLineError> {
    if head.is_empty() {
        return Err(StatusLineError::Empty);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    let malformed = || StatusLineError::Malformed(text.chars().take(80).collect());
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().ok_or_else(malformed)?;
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Err(malformed());
    }
    let code = parts.next().ok_or_else(malformed)?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    code.parse::<u16>()
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or_else(malformed)
}

/// Runs `probe` on a fresh thread, inside `net`, and waits for it.
fn on_probe_thread(
    net: ProbeNet,
    probe: impl FnOnce() -> ProbeOutcome + Send + 'static,
) -> ProbeOutcome {
    let thread = std::thread::Builder::new()
        .name("health-probe".to_owned())
        .spawn(move || {
            if let ProbeNet::Namespace(path) = &net
                && let Err(e) = enter_net_namespace(path)
            {
                return (false, e);
            }
            probe()
        });
    match thread {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| (false, "the probe thread panicked".to_owned())),
        Err(e) => (false, format!("cannot start a probe thread: {e}")),
    }
}

/// Moves the calling thread (only) into the network namespace at `path`.
fn enter_net_namespace(path: &std::path::Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| {
        format!(
            "cannot open the container's network namespace {}: {e}",
            path.display()
        )
    })?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        format!(
            "cannot enter the container's network namespace {}: {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use proptest::prelude::*;

    use super::*;

    fn policy(retries: u32, start_period: Duration) -> HealthPolicy {
        HealthPolicy {
            probe: HealthProbe::Tcp { port: 1 },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries,
            start_period,
        }
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy_and_one_success_heals_it() {
        let t0 = Instant::now();
        let mut h = HealthTracker::new(policy(3, Duration::ZERO));
        h.started(t0);
        assert_eq!(h.status(), HealthStatus::Starting);
        assert_eq!(h.next_probe(), Some(t0 + Duration::from_secs(1)));
        for i in 1..=2 {
            let at = t0 + Duration::from_secs(i);
            h.record(at, at, SystemTime::now(), false, "refused");
            assert_eq!(h.status(), HealthStatus::Starting, "after {i} failures");
        }
        let at = t0 + Duration::from_secs(3);
        h.record(at, at, SystemTime::now(), false, "refused");
        assert_eq!(h.status(), HealthStatus::Unhealthy);
        assert_eq!(h.report().failing_streak, 3);
        let at = t0 + Duration::from_secs(4);
        h.record(at, at, SystemTime::now(), true, "ok");
        assert_eq!(h.status(), HealthStatus::Healthy);
        assert_eq!(h.report().failing_streak, 0);
        assert_eq!(h.next_probe(), Some(at + Duration::from_secs(1)));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_but_a_success_does() {
        let t0 = Instant::now();
        let mut h = HealthTracker::new(policy(1, Duration::from_secs(10)));
        h.started(t0);
        let at = t0 + Duration::from_secs(5);
        h.record(at, at, SystemTime::now(), false, "not yet");
        assert_eq!(h.status(), HealthStatus::Starting);
        assert_eq!(h.report().failing_streak, 0);
        let at = t0 + Duration::from_secs(6);
        h.record(at, at, SystemTime::now(), true, "up");
        assert_eq!(h.status(), HealthStatus::Healthy);
        let at = t0 + Duration::from_secs(11);
        h.record(at, at, SystemTime::now(), false, "down");
        assert_eq!(h.status(), HealthStatus::Unhealthy);
    }

    #[test]
    fn a_restart_starts_the_verdict_over_and_ignores_the_old_runs_probes() {
        let t0 = Instant::now();
        let mut h = HealthTracker::new(policy(1, Duration::ZERO));
        h.started(t0);
        h.record(t0, t0, SystemTime::now(), false, "down");
        assert_eq!(h.status(), HealthStatus::Unhealthy);
        h.stopped();
        assert_eq!(h.next_probe(), None);
        let t1 = t0 + Duration::from_secs(30);
        h.started(t1);
        assert_eq!(h.status(), HealthStatus::Starting);
        // A probe begun before the restart finishes after it.
        h.record(
            t0 + Duration::from_secs(29),
            t1,
            SystemTime::now(),
            false,
            "late",
        );
        assert_eq!(h.status(), HealthStatus::Starting);
    }

    #[test]
    fn only_the_last_probes_and_the_end_of_long_output_are_kept() {
        let t0 = Instant::now();
        let mut h = HealthTracker::new(policy(100, Duration::ZERO));
        h.started(t0);
        for i in 0..(KEPT_PROBES as u64 + 3) {
            let at = t0 + Duration::from_secs(i);
            h.record(at, at, SystemTime::now(), false, &format!("probe {i}"));
        }
        let report = h.report();
        assert_eq!(report.probes.len(), KEPT_PROBES);
        assert_eq!(report.probes[0].output, "probe 3");
        let long = format!("{}é{}", "a".repeat(3000), "z".repeat(KEPT_OUTPUT - 1));
        h.record(t0, t0, SystemTime::now(), true, &long);
        let kept = &h.report().probes[KEPT_PROBES - 1].output;
        assert!(kept.len() <= KEPT_OUTPUT && kept.ends_with('z'));
    }

    #[test]
    fn status_lines_give_their_code_and_anything_else_is_named() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\nX: y"),
            Ok(503)
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r\n"), Ok(204));
        assert_eq!(parse_status_line(b""), Err(StatusLineError::Empty));
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n"[..],
            b"HTTP/1.1 2000 x",
            b"HTTP/2 200",
            b"HTTP/1.1 abc",
        ] {
            assert!(matches!(
                parse_status_line(bad),
                Err(StatusLineError::Malformed(_))
            ));
        }
    }

    #[test]
    fn tcp_and_http_probes_reach_a_real_listener_and_fail_on_a_closed_port() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            for answer in ["HTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 500 Oops\r\n\r\n"] {
                let (mut s, _) = listener.accept().expect("accept");
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf);
                s.write_all(answer.as_bytes()).expect("answer");
            }
            // The TCP probe's connection.
            let _ = listener.accept();
        });
        let second = Duration::from_secs(5);
        assert_eq!(
            probe_http(&ProbeNet::Host, port, "/", second),
            (true, "HTTP 200".into())
        );
        assert_eq!(
            probe_http(&ProbeNet::Host, port, "/", second),
            (false, "HTTP 500".into())
        );
        assert!(probe_tcp(&ProbeNet::Host, port, second).0);
        server.join().expect("server");
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed_port = closed.local_addr().expect("addr").port();
        drop(closed);
        let (ok, output) = probe_tcp(&ProbeNet::Host, closed_port, second);
        assert!(!ok);
        assert!(output.contains(&closed_port.to_string()), "{output}");
    }

    #[test]
    fn a_missing_namespace_fails_the_probe_with_its_path() {
        let net = ProbeNet::Namespace(PathBuf::from("/proc/0/ns/net"));
        let (ok, output) = probe_tcp(&net, 80, Duration::from_secs(1));
        assert!(!ok);
        assert!(output.contains("/proc/0/ns/net"), "{output}");
    }

    proptest! {
        #[test]
        fn any_answer_bytes_give_a_code_or_a_named_error(head in proptest::collection::vec(any::<u8>(), 0..300)) {
            match parse_status_line(&head) {
                Ok(code) => prop_assert!((100..600).contains(&code)),
                Err(StatusLineError::Empty) => prop_assert!(head.is_empty()),
                Err(StatusLineError::Malformed(text)) => prop_assert!(text.chars().count() <= 80),
            }
        }
    }
}
