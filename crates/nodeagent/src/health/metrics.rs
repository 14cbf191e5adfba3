//! The `/metrics` document.
//!
//! A scrape first takes a [`MetricsSnapshot`] (reading `/proc` once, on a
//! blocking thread), then [`encode`]s it with prometheus-client in the
//! OpenMetrics text format. Encoding is pure, so tests feed it a snapshot
//! and read the text.
//!
//! Names (stable; the benchmark and the QEMU tests read them):
//! - `cairn_build_info{version}` 1
//! - `cairn_uptime_seconds`: since cairnd started
//! - `cairn_boot_duration_seconds`: CLOCK_BOOTTIME when the node first
//!   became ready (absent until then)
//! - `cairn_ready`: 1 while /readyz answers 200
//! - `cairn_network_addressed_links`: links holding an address
//! - `cairn_memory_total_bytes`, `cairn_memory_available_bytes`: /proc/meminfo
//! - `cairn_process_resident_bytes{process="cairnd"|"cairn-init"}`: VmRSS of
//!   cairnd and of PID 1
//! - `cairn_config_source{source,requested,error}` 1: the config in force
//!   (`source`), the source that had one (`requested`), and `error="1"` when
//!   that config was refused and the embedded default runs instead

use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::config::ConfigReport;

/// The Content-Type of the `/metrics` response.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Numbers read from `/proc` for one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// MemTotal, bytes.
    pub memory_total: Option<u64>,
    /// MemAvailable, bytes.
    pub memory_available: Option<u64>,
    /// VmRSS of cairnd, bytes.
    pub rss_self: Option<u64>,
    /// VmRSS of PID 1 (cairn-init), bytes.
    pub rss_init: Option<u64>,
}

/// Reads a `kB` field (`MemTotal:  16384 kB`) from /proc text, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let value: u64 = parts.next()?.parse().ok()?;
        match parts.next() {
            Some("kB") => value.checked_mul(1024),
            _ => None,
        }
    })
}

/// Parses MemTotal and MemAvailable from `/proc/meminfo`.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    (kib_field(text, "MemTotal"), kib_field(text, "MemAvailable"))
}

/// Parses VmRSS from `/proc/<pid>/status` (absent for kernel threads).
pub fn parse_vm_rss(text: &str) -> Option<u64> {
    kib_field(text, "VmRSS")
}

/// Reads a [`ProcSample`] under `proc_root` (normally `/proc`). Blocking.
pub fn sample(proc_root: &Path) -> ProcSample {
    let read = |rel: &str| std::fs::read_to_string(proc_root.join(rel)).ok();
    let (memory_total, memory_available) = read("meminfo")
        .map(|t| parse_meminfo(&t))
        .unwrap_or_default();
    ProcSample {
        memory_total,
        memory_available,
        rss_self: read("self/status").as_deref().and_then(parse_vm_rss),
        rss_init: read("1/status").as_deref().and_then(parse_vm_rss),
    }
}

/// Everything one scrape reports.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    /// cairnd's version.
    pub version: &'static str,
    /// Time since cairnd started.
    pub uptime: Duration,
    /// CLOCK_BOOTTIME at first readiness.
    pub boot_duration: Option<Duration>,
    /// Whether /readyz would answer 200.
    pub ready: bool,
    /// Links holding an address.
    pub addressed_links: usize,
    /// The /proc numbers.
    pub proc: ProcSample,
    /// Which config is in force.
    pub config: ConfigReport,
    /// The Raft member, when the node runs one.
    pub cluster: Option<ClusterSample>,
}

/// The Raft member's numbers, sampled by the agent once a second.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterSample {
    /// Whether the member knows a leader.
    pub has_leader: bool,
    /// Whether it is the leader.
    pub is_leader: bool,
    /// Raft term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Voters in the configuration.
    pub voters: u64,
    /// Learners in the configuration.
    pub learners: u64,
    /// The peer port's counters.
    pub peer: cluster::transport::TransportStats,
}

#[derive(Debug)]
struct SnapshotCollector(MetricsSnapshot);

fn gauge<
    V: prometheus_client::encoding::EncodeGaugeValue + std::fmt::Debug + Send + Sync + 'static,
>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: V,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        {
            let mut metric = encoder.encode_descriptor(
                "cairn_build",
                "Version of cairnd.",
                None,
                MetricType::Info,
            )?;
            metric.encode_info(&[("version", s.version)])?;
        }
        gauge(
            &mut encoder,
            "cairn_uptime_seconds",
            "Seconds since cairnd started.",
            s.uptime.as_secs_f64(),
        )?;
        if let Some(boot) = s.boot_duration {
            gauge(
                &mut encoder,
                "cairn_boot_duration_seconds",
                "CLOCK_BOOTTIME seconds when the node first became ready.",
                boot.as_secs_f64(),
            )?;
        }
        gauge(
            &mut encoder,
            "cairn_ready",
            "1 when /readyz answers 200.",
            i64::from(s.ready),
        )?;
        gauge(
            &mut encoder,
            "cairn_network_addressed_links",
            "Links holding an address from config or DHCP.",
            u64::try_from(s.addressed_links).unwrap_or(u64::MAX),
        )?;
        if let Some(v) = s.proc.memory_total {
            gauge(
                &mut encoder,
                "cairn_memory_total_bytes",
                "MemTotal from /proc/meminfo.",
                v,
            )?;
        }
        if let Some(v) = s.proc.memory_available {
            gauge(
                &mut encoder,
                "cairn_memory_available_bytes",
                "MemAvailable from /proc/meminfo.",
                v,
            )?;
        }
        {
            let mut metric = encoder.encode_descriptor(
                "cairn_process_resident_bytes",
                "Resident set size (VmRSS) of Cairn's processes.",
                None,
                MetricType::Gauge,
            )?;
            for (process, rss) in [("cairnd", s.proc.rss_self), ("cairn-init", s.proc.rss_init)] {
                if let Some(rss) = rss {
                    metric
                        .encode_family(&[("process", process)])?
                        .encode_gauge(&rss)?;
                }
            }
        }
        {
            let mut metric = encoder.encode_descriptor(
                "cairn_config_source",
                "Machine config in force; error=\"1\" when the requested one was refused.",
                None,
                MetricType::Gauge,
            )?;
            let labels = [
                ("source", s.config.effective.kind()),
                ("requested", s.config.requested.kind()),
                ("error", if s.config.error.is_some() { "1" } else { "0" }),
            ];
            metric.encode_family(&labels)?.encode_gauge(&1i64)?;
        }
        if let Some(c) = &s.cluster {
            encode_cluster(&mut encoder, c)?;
        }
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = prometheus_client::metrics::counter::ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

fn encode_cluster(
    encoder: &mut DescriptorEncoder<'_>,
    c: &ClusterSample,
) -> Result<(), std::fmt::Error> {
    gauge(
        encoder,
        "cairn_raft_has_leader",
        "1 when this member knows a leader.",
        i64::from(c.has_leader),
    )?;
    gauge(
        encoder,
        "cairn_raft_is_leader",
        "1 when this member leads.",
        i64::from(c.is_leader),
    )?;
    gauge(encoder, "cairn_raft_term", "Raft term.", c.term)?;
    gauge(
        encoder,
        "cairn_raft_commit_index",
        "Highest committed log index.",
        c.commit,
    )?;
    gauge(
        encoder,
        "cairn_raft_applied_index",
        "Highest applied log index.",
        c.applied,
    )?;
    gauge(
        encoder,
        "cairn_raft_voters",
        "Voters in the Raft configuration.",
        c.voters,
    )?;
    gauge(
        encoder,
        "cairn_raft_learners",
        "Learners (stand-bys) in the Raft configuration.",
        c.learners,
    )?;
    counter(
        encoder,
        "cairn_peer_messages_sent",
        "Raft messages handed to peer connections.",
        c.peer.sent,
    )?;
    counter(
        encoder,
        "cairn_peer_messages_received",
        "Raft messages received from peers.",
        c.peer.received,
    )?;
    let mut metric = encoder.encode_descriptor(
        "cairn_peer_messages_dropped",
        "Raft messages dropped on the peer port, by reason.",
        None,
        MetricType::Counter,
    )?;
    for (reason, value) in [
        ("queue_full", c.peer.dropped_queue_full),
        ("oversized", c.peer.dropped_oversized),
        ("malformed", c.peer.dropped_malformed),
        ("misrouted", c.peer.dropped_misrouted),
        ("no_route", c.peer.dropped_no_route),
    ] {
        metric
            .encode_family(&[("reason", reason)])?
            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&value, None)?;
    }
    counter(
        encoder,
        "cairn_peer_connections_rejected",
        "Peer connections refused: failed handshakes, certificates that are not node certificates, wrong sender ids.",
        c.peer.rejected_connections,
    )
}

/// Renders a snapshot as OpenMetrics text.
pub fn encode(snapshot: MetricsSnapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Where [`sample`] reads: `/proc`.
pub fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigOrigin;

    const MEMINFO: &str =
        "MemTotal:        2030000 kB\nMemFree:          100000 kB\nMemAvailable:    1500000 kB\n";
    const STATUS: &str = "Name:\tcairnd\nVmPeak:\t  20000 kB\nVmRSS:\t    9876 kB\nThreads:\t2\n";

    #[test]
    fn meminfo_and_status_are_parsed_in_bytes() {
        assert_eq!(
            parse_meminfo(MEMINFO),
            (Some(2_030_000 * 1024), Some(1_500_000 * 1024))
        );
        assert_eq!(parse_vm_rss(STATUS), Some(9876 * 1024));
        assert_eq!(
            parse_vm_rss("Name:\tkthreadd\n"),
            None,
            "kernel threads have no VmRSS"
        );
        assert_eq!(parse_meminfo("MemTotal: lots\n"), (None, None));
    }

    #[test]
    fn sample_reads_self_and_pid1_from_the_proc_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        std::fs::create_dir_all(dir.path().join("1")).unwrap();
        std::fs::write(dir.path().join("meminfo"), MEMINFO).unwrap();
        std::fs::write(dir.path().join("self/status"), STATUS).unwrap();
        std::fs::write(dir.path().join("1/status"), "VmRSS:\t 1200 kB\n").unwrap();
        let s = sample(dir.path());
        assert_eq!(s.rss_self, Some(9876 * 1024));
        assert_eq!(s.rss_init, Some(1200 * 1024));
        assert_eq!(s.memory_available, Some(1_500_000 * 1024));
    }

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            version: "0.1.0",
            uptime: Duration::from_millis(12_500),
            boot_duration: Some(Duration::from_millis(4_250)),
            ready: true,
            addressed_links: 1,
            proc: ProcSample {
                memory_total: Some(2048),
                memory_available: Some(1024),
                rss_self: Some(9_000_000),
                rss_init: Some(1_000_000),
            },
            config: ConfigReport {
                effective: ConfigOrigin::Default,
                requested: ConfigOrigin::FwCfg("/x".into()),
                error: Some("bad".into()),
            },
            cluster: Some(ClusterSample {
                has_leader: true,
                is_leader: false,
                term: 7,
                commit: 120,
                applied: 119,
                voters: 3,
                learners: 1,
                peer: cluster::transport::TransportStats {
                    sent: 10,
                    received: 9,
                    dropped_oversized: 2,
                    rejected_connections: 1,
                    ..Default::default()
                },
            }),
        }
    }

    #[test]
    fn metrics_text_has_every_documented_series() {
        let text = encode(snapshot()).unwrap();
        for line in [
            "cairn_build_info{version=\"0.1.0\"} 1",
            "cairn_uptime_seconds 12.5",
            "cairn_boot_duration_seconds 4.25",
            "cairn_ready 1",
            "cairn_network_addressed_links 1",
            "cairn_memory_total_bytes 2048",
            "cairn_memory_available_bytes 1024",
            "cairn_process_resident_bytes{process=\"cairnd\"} 9000000",
            "cairn_process_resident_bytes{process=\"cairn-init\"} 1000000",
            "cairn_config_source{source=\"default\",requested=\"fw_cfg\",error=\"1\"} 1",
            "cairn_raft_has_leader 1",
            "cairn_raft_is_leader 0",
            "cairn_raft_term 7",
            "cairn_raft_commit_index 120",
            "cairn_raft_applied_index 119",
            "cairn_raft_voters 3",
            "cairn_raft_learners 1",
            "cairn_peer_messages_sent_total 10",
            "cairn_peer_messages_received_total 9",
            "cairn_peer_messages_dropped_total{reason=\"oversized\"} 2",
            "cairn_peer_messages_dropped_total{reason=\"malformed\"} 0",
            "cairn_peer_connections_rejected_total 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn boot_duration_is_absent_until_ready() {
        let mut s = snapshot();
        s.boot_duration = None;
        s.ready = false;
        let text = encode(s).unwrap();
        assert!(!text.contains("cairn_boot_duration_seconds"), "{text}");
        assert!(text.lines().any(|l| l == "cairn_ready 0"), "{text}");
    }
}
