//! The cluster bench's report: a table for people and JSON for tools,
//! rendered from the same values so they cannot disagree.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::bulk::{BulkOutcome, BulkSample, BulkSpec, disk_parts};
use super::kv::System;
use crate::apibench::report::TargetRounds;
use crate::apibench::stats::median;

/// One system's rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemRounds {
    /// Which system.
    pub system: System,
    /// Writes with one client.
    pub write_one: TargetRounds,
    /// Writes with many clients.
    pub write_many: TargetRounds,
    /// Linearizable reads with many clients.
    pub read_many: TargetRounds,
    /// Failover time per round, milliseconds.
    pub failover_ms: Vec<f64>,
    /// Failover measurements that failed, with why.
    pub failover_errors: Vec<String>,
    /// Per round: whether the single writing client talked to the leader
    /// (a write through a follower takes one more hop).
    pub write_one_via_leader: Vec<Option<bool>>,
}

impl SystemRounds {
    /// No rounds yet.
    #[must_use]
    pub fn new(system: System) -> Self {
        let empty = || TargetRounds {
            rounds: Vec::new(),
            first_error: None,
        };
        Self {
            system,
            write_one: empty(),
            write_many: empty(),
            read_many: empty(),
            failover_ms: Vec::new(),
            failover_errors: Vec::new(),
            write_one_via_leader: Vec::new(),
        }
    }

    /// Requests that failed over all rounds, failovers that never
    /// completed included.
    #[must_use]
    pub fn errors(&self) -> u64 {
        let failed = u64::try_from(self.failover_errors.len()).unwrap_or(u64::MAX);
        [&self.write_one, &self.write_many, &self.read_many]
            .iter()
            .map(|t| t.summary().errors)
            .sum::<u64>()
            + failed
    }
}

/// How the run was set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    /// UTC start (RFC 3339).
    pub started: String,
    /// Rounds per system.
    pub rounds: usize,
    /// Seconds per load round.
    pub round_secs: u64,
    /// Clients of the "many clients" rounds.
    pub clients: usize,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Keys each writing client cycles through.
    pub keys_per_client: u64,
    /// CPUs of the machine.
    pub cpus: usize,
    /// Host kernel.
    pub kernel: String,
    /// The cairnd measured.
    pub cairnd_binary: String,
    /// `etcd --version`.
    pub etcd_version: String,
    /// Load generator threads.
    pub client_threads: usize,
    /// What Cairn keeps on disk (history, snapshots, log).
    pub cairn_keeps: String,
    /// What etcd keeps on disk, with the flags that make it so.
    pub etcd_keeps: String,
}

/// The bulk writes of every system that ran.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkReport {
    /// The workload, the same for each system.
    pub spec: BulkSpec,
    /// One outcome per system, Cairn first when it ran.
    pub systems: Vec<BulkOutcome>,
}

impl BulkReport {
    fn system(&self, system: System) -> Option<&BulkOutcome> {
        self.systems.iter().find(|o| o.system == system)
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Setup.
    pub conditions: Conditions,
    /// The systems that ran, Cairn first when it ran.
    pub systems: Vec<SystemRounds>,
    /// Why Cairn did not run, when it did not.
    pub cairn_not_run: Option<String>,
    /// The bulk writes, when they ran.
    pub bulk: Option<BulkReport>,
}

impl Report {
    /// True when any request failed or the bulk run lost writes.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.systems.iter().any(|s| s.errors() > 0)
            || self.bulk.as_ref().is_some_and(|b| {
                b.systems
                    .iter()
                    .any(|out| out.errors > 0 || out.acknowledged < b.spec.writes)
            })
    }

    fn system(&self, system: System) -> Option<&SystemRounds> {
        self.systems.iter().find(|s| s.system == system)
    }
}

type Metric = fn(&SystemRounds) -> f64;

fn rows(clients: usize) -> Vec<(String, Metric, usize)> {
    vec![
        (
            "write, 1 client      ops/s".into(),
            |s| s.write_one.summary().requests_per_s,
            1,
        ),
        (
            "write, 1 client      p50 ms".into(),
            |s| s.write_one.summary().p50_ms,
            2,
        ),
        (
            "write, 1 client      p99 ms".into(),
            |s| s.write_one.summary().p99_ms,
            2,
        ),
        (
            format!("write, {clients} clients    ops/s"),
            |s| s.write_many.summary().requests_per_s,
            1,
        ),
        (
            format!("write, {clients} clients    p50 ms"),
            |s| s.write_many.summary().p50_ms,
            2,
        ),
        (
            format!("write, {clients} clients    p99 ms"),
            |s| s.write_many.summary().p99_ms,
            2,
        ),
        (
            format!("write, {clients} clients    CPU ms/op"),
            |s| s.write_many.summary().server_cpu_ms_per_request,
            3,
        ),
        (
            format!("lin. read, {clients} clients ops/s"),
            |s| s.read_many.summary().requests_per_s,
            1,
        ),
        (
            format!("lin. read, {clients} clients p99 ms"),
            |s| s.read_many.summary().p99_ms,
            2,
        ),
        (
            "leader failover      ms".into(),
            |s| median(&s.failover_ms),
            0,
        ),
    ]
}

fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

fn mbs(values: &[u64]) -> String {
    values
        .iter()
        .map(|b| mb(*b))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The table printed on stdout.
#[must_use]
pub fn render_table(report: &Report) -> String {
    let c = &report.conditions;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Cluster benchmark: 3-node Cairn against 3-node etcd ({}) on loopback; 3 voters each, log fsynced before acknowledging, TLS 1.3 with client certificates, keep-alive connections",
        c.etcd_version
    );
    let _ = writeln!(
        out,
        "{} rounds per system, {} s per load round, systems alternating; medians over rounds; {}-byte values; clients spread over the members; {} CPUs",
        c.rounds, c.round_secs, c.value_bytes, c.cpus
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<32} {:>10} {:>10} {:>11}",
        "", "cairn", "etcd", "cairn/etcd"
    );
    let cairn = report.system(System::Cairn);
    let etcd = report.system(System::Etcd);
    let cell = |s: Option<&SystemRounds>, f: Metric, p: usize| {
        s.map_or_else(|| "-".to_owned(), |s| format!("{:.*}", p, f(s)))
    };
    for (label, f, precision) in rows(c.clients) {
        let ratio = match (cairn, etcd) {
            (Some(a), Some(b)) => format!("{:.2}", f(a) / f(b)),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{label:<32} {:>10} {:>10} {ratio:>11}",
            cell(cairn, f, precision),
            cell(etcd, f, precision)
        );
    }
    let errors =
        |s: Option<&SystemRounds>| s.map_or_else(|| "-".to_owned(), |s| s.errors().to_string());
    let _ = writeln!(
        out,
        "{:<32} {:>10} {:>10}",
        "errors",
        errors(cairn),
        errors(etcd)
    );
    for s in &report.systems {
        for (what, target) in [
            ("1-client write", &s.write_one),
            ("write", &s.write_many),
            ("read", &s.read_many),
        ] {
            if let Some(e) = &target.first_error {
                let _ = writeln!(out, "first {} {what} error: {e}", s.system.name());
            }
        }
        for e in &s.failover_errors {
            let _ = writeln!(out, "{} failover failed: {e}", s.system.name());
        }
        if !s.write_one_via_leader.is_empty() {
            let via = s
                .write_one_via_leader
                .iter()
                .map(|v| match v {
                    Some(true) => "leader",
                    Some(false) => "follower",
                    None => "?",
                })
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "{} 1-client writes went to, by round: {via}",
                s.system.name()
            );
        }
    }
    if let Some(why) = &report.cairn_not_run {
        let _ = writeln!(out, "Cairn did not run: {why}");
    }
    if let Some(bulk) = &report.bulk {
        render_bulk(&mut out, c, bulk);
    }
    out
}

type BulkMetric = fn(&BulkOutcome) -> f64;

fn largest(values: &[u64]) -> f64 {
    values.iter().copied().max().unwrap_or(0) as f64 / 1e6
}

/// The bulk rows: the rate, and the largest member's data directory and
/// RSS (what an operator sizes a machine for), settled and at the peak.
fn bulk_rows() -> Vec<(&'static str, BulkMetric, usize)> {
    vec![
        ("bulk writes/s", BulkOutcome::rate, 1),
        (
            "data dir MB, settled (largest)",
            |o| largest(&o.settled.data_bytes),
            1,
        ),
        (
            "data dir MB, peak (largest)",
            |o| largest(&o.peak(|s| &s.data_bytes)),
            1,
        ),
        (
            "RSS MB, settled (largest)",
            |o| largest(&o.settled.rss_bytes),
            1,
        ),
        (
            "RSS MB, peak (largest)",
            |o| largest(&o.peak(|s| &s.rss_bytes)),
            1,
        ),
    ]
}

fn data_dir_name(system: System) -> &'static str {
    match system {
        System::Cairn => "state dir",
        System::Etcd => "data dir",
    }
}

fn render_bulk(out: &mut String, c: &Conditions, bulk: &BulkReport) {
    let spec = &bulk.spec;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Bulk writes: {} per system, {} clients over {} keys, {}-byte values; settled = {} s after the last write",
        spec.writes,
        spec.clients,
        spec.keys,
        spec.value_bytes,
        spec.settle.as_secs()
    );
    let _ = writeln!(
        out,
        "{:<32} {:>10} {:>10} {:>11}",
        "", "cairn", "etcd", "cairn/etcd"
    );
    let cairn = bulk.system(System::Cairn);
    let etcd = bulk.system(System::Etcd);
    let cell = |o: Option<&BulkOutcome>, f: BulkMetric, p: usize| {
        o.map_or_else(|| "-".to_owned(), |o| format!("{:.*}", p, f(o)))
    };
    for (label, f, precision) in bulk_rows() {
        let ratio = match (cairn, etcd) {
            (Some(a), Some(b)) => format!("{:.2}", f(a) / f(b)),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{label:<32} {:>10} {:>10} {ratio:>11}",
            cell(cairn, f, precision),
            cell(etcd, f, precision)
        );
    }
    let acknowledged = |o: Option<&BulkOutcome>| {
        o.map_or_else(
            || "-".to_owned(),
            |o| format!("{}/{}", o.acknowledged, o.errors),
        )
    };
    let _ = writeln!(
        out,
        "{:<32} {:>10} {:>10}",
        "acknowledged/errors",
        acknowledged(cairn),
        acknowledged(etcd)
    );
    for o in &bulk.systems {
        let name = o.system.name();
        let _ = writeln!(out, "{name} per member, MB (settled; peak):");
        for (p, part) in disk_parts(o.system).iter().enumerate() {
            let _ = writeln!(
                out,
                "  {:<16} {}; peak {}",
                format!("{}:", part.path),
                mbs(o.settled.parts.get(p).map_or(&[], Vec::as_slice)),
                mbs(&o.peak(|s| s.parts.get(p).map_or(&[], Vec::as_slice)))
            );
        }
        let _ = writeln!(
            out,
            "  {:<16} {}; peak {}",
            format!("{}:", data_dir_name(o.system)),
            mbs(&o.settled.data_bytes),
            mbs(&o.peak(|s| &s.data_bytes))
        );
        let _ = writeln!(
            out,
            "  {:<16} {}; peak {}",
            "RSS:",
            mbs(&o.settled.rss_bytes),
            mbs(&o.peak(|s| &s.rss_bytes))
        );
        let series = o
            .samples
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s.writes,
                    mb(s.data_bytes.first().copied().unwrap_or(0))
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "  {} of member 1 over the run (writes:MB): {series}",
            data_dir_name(o.system)
        );
        if let Some(n) = o.compactions {
            let _ = writeln!(out, "  history compactions logged during the run: {n}");
        }
        if let Some(e) = &o.first_error {
            let _ = writeln!(out, "  first bulk error: {e}");
        }
    }
    if cairn.is_some() {
        let _ = writeln!(out, "Cairn keeps: {}", c.cairn_keeps);
    }
    if etcd.is_some() {
        let _ = writeln!(out, "etcd keeps: {}", c.etcd_keeps);
    }
}

fn system_json(s: &SystemRounds) -> Value {
    json!({
        "write_1_client": s.write_one.to_json("op"),
        "write_1_client_via_leader": s.write_one_via_leader,
        "write_many_clients": s.write_many.to_json("op"),
        "linearizable_read_many_clients": s.read_many.to_json("op"),
        "failover_ms": { "median": median(&s.failover_ms), "rounds": s.failover_ms, "failed": s.failover_errors },
        "errors": s.errors(),
    })
}

fn sample_json(system: System, s: &BulkSample) -> Value {
    let mut parts = serde_json::Map::new();
    for (part, bytes) in disk_parts(system).iter().zip(&s.parts) {
        parts.insert(part.path.to_owned(), json!(bytes));
    }
    json!({
        "writes": s.writes,
        "part_bytes": parts,
        "data_dir_bytes": s.data_bytes,
        "rss_bytes": s.rss_bytes,
    })
}

fn bulk_json(c: &Conditions, bulk: &BulkReport) -> Value {
    let spec = &bulk.spec;
    let mut systems = serde_json::Map::new();
    for o in &bulk.systems {
        systems.insert(
            o.system.name().to_owned(),
            json!({
                "acknowledged": o.acknowledged,
                "errors": o.errors,
                "first_error": o.first_error,
                "wall_s": o.wall.as_secs_f64(),
                "writes_per_s": o.rate(),
                "compactions_during_run": o.compactions,
                "keeps": match o.system {
                    System::Cairn => &c.cairn_keeps,
                    System::Etcd => &c.etcd_keeps,
                },
                "samples": o.samples.iter().map(|s| sample_json(o.system, s)).collect::<Vec<_>>(),
                "settled": sample_json(o.system, &o.settled),
                "peak": {
                    "data_dir_bytes": o.peak(|s| &s.data_bytes),
                    "rss_bytes": o.peak(|s| &s.rss_bytes),
                },
            }),
        );
    }
    let ratios = match (bulk.system(System::Cairn), bulk.system(System::Etcd)) {
        (Some(a), Some(b)) => Value::Object(
            bulk_rows()
                .into_iter()
                .map(|(label, f, _)| (label.to_owned(), json!(f(a) / f(b))))
                .collect(),
        ),
        _ => Value::Null,
    };
    json!({
        "writes_asked": spec.writes,
        "clients": spec.clients,
        "keys": spec.keys,
        "value_bytes": spec.value_bytes,
        "settle_s": spec.settle.as_secs_f64(),
        "systems": systems,
        "ratio_cairn_to_etcd": ratios,
    })
}

/// The JSON written beside the table.
#[must_use]
pub fn to_json(report: &Report) -> Value {
    let c = &report.conditions;
    let mut systems = serde_json::Map::new();
    for s in &report.systems {
        systems.insert(s.system.name().to_owned(), system_json(s));
    }
    let ratios = match (report.system(System::Cairn), report.system(System::Etcd)) {
        (Some(a), Some(b)) => {
            let mut map = serde_json::Map::new();
            for (label, f, _) in rows(c.clients) {
                let key = label.split_whitespace().collect::<Vec<_>>().join(" ");
                map.insert(key, json!(f(a) / f(b)));
            }
            Value::Object(map)
        }
        _ => Value::Null,
    };
    json!({
        "conditions": {
            "started": c.started,
            "rounds": c.rounds,
            "round_secs": c.round_secs,
            "clients": c.clients,
            "value_bytes": c.value_bytes,
            "keys_per_client": c.keys_per_client,
            "cpus": c.cpus,
            "kernel": c.kernel,
            "cairnd_binary": c.cairnd_binary,
            "etcd_version": c.etcd_version,
            "client_threads": c.client_threads,
            "cairn_keeps": c.cairn_keeps,
            "etcd_keeps": c.etcd_keeps,
        },
        "systems": systems,
        "ratio_cairn_to_etcd": ratios,
        "cairn_not_run": report.cairn_not_run,
        "bulk": report.bulk.as_ref().map(|b| bulk_json(c, b)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apibench::stats::RoundStats;
    use std::time::Duration;

    fn round(rps: f64, p50_us: u64) -> RoundStats {
        RoundStats {
            requests: 100,
            errors: 0,
            requests_per_s: rps,
            p50: Duration::from_micros(p50_us),
            p99: Duration::from_micros(p50_us * 3),
            max: Duration::from_micros(p50_us * 4),
            server_cpu_per_request: Duration::from_micros(200),
        }
    }

    fn rounds(system: System, rps: f64, failover: f64) -> SystemRounds {
        let mut s = SystemRounds::new(system);
        for r in [rps, rps * 2.0, rps * 0.5] {
            s.write_one.rounds.push(round(r / 10.0, 2000));
            s.write_many.rounds.push(round(r, 4000));
            s.read_many.rounds.push(round(r * 3.0, 1000));
        }
        s.failover_ms = vec![failover, failover * 10.0, failover * 0.9];
        s
    }

    fn report() -> Report {
        Report {
            conditions: Conditions {
                started: "2026-11-22T09:00:00Z".into(),
                rounds: 3,
                round_secs: 10,
                clients: 16,
                value_bytes: 64,
                keys_per_client: 1000,
                cpus: 2,
                kernel: "6.1".into(),
                cairnd_binary: "/x/cairnd".into(),
                etcd_version: "etcd Version: 3.4.23".into(),
                client_threads: 2,
                cairn_keeps: "the last 10000 changes".into(),
                etcd_keeps: "the last 10000 revisions".into(),
            },
            systems: vec![
                rounds(System::Cairn, 2000.0, 500.0),
                rounds(System::Etcd, 1000.0, 1000.0),
            ],
            cairn_not_run: None,
            bulk: None,
        }
    }

    fn row(table: &str, prefix: &str) -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_table_shows_median_rounds_and_ratios() {
        let mut r = report();
        r.systems[0].write_one_via_leader = vec![Some(true), Some(false), None];
        let table = render_table(&r);
        assert!(
            table.contains("cairn 1-client writes went to, by round: leader, follower, ?"),
            "{table}"
        );
        assert_eq!(
            row(&table, "write, 16 clients    ops/s"),
            [
                "write,", "16", "clients", "ops/s", "2000.0", "1000.0", "2.00"
            ]
        );
        assert_eq!(
            row(&table, "leader failover"),
            ["leader", "failover", "ms", "500", "1000", "0.50"]
        );
        assert_eq!(row(&table, "errors"), ["errors", "0", "0"]);
    }

    #[test]
    fn a_missing_system_leaves_dashes_and_says_why() {
        let mut r = report();
        r.systems.remove(0);
        r.cairn_not_run = Some("cairnd does not serve /v1/kv yet".into());
        let table = render_table(&r);
        assert_eq!(
            row(&table, "write, 1 client      ops/s"),
            ["write,", "1", "client", "ops/s", "-", "100.0", "-"]
        );
        assert!(table.contains("Cairn did not run: cairnd does not serve /v1/kv yet"));
        let value = to_json(&r);
        assert!(value["ratio_cairn_to_etcd"].is_null());
        assert_eq!(value["systems"]["etcd"]["failover_ms"]["median"], 1000.0);
    }

    fn bulk_outcome(system: System, scale: u64, wall_s: u64) -> BulkOutcome {
        let parts = disk_parts(system).len();
        let sample = |w: u64, grow: u64| BulkSample {
            writes: w,
            parts: vec![vec![scale, 2 * scale, 3 * scale]; parts],
            data_bytes: vec![2 * scale + grow, 2 * scale, 4 * scale],
            rss_bytes: vec![30_000_000, 40_000_000, 35_000_000],
        };
        BulkOutcome {
            system,
            acknowledged: 1000,
            errors: 0,
            first_error: None,
            wall: Duration::from_secs(wall_s),
            samples: vec![sample(0, 0), sample(500, 6 * scale), sample(1000, 0)],
            settled: sample(1000, 0),
            compactions: (system == System::Etcd).then_some(2),
        }
    }

    fn bulk_report() -> BulkReport {
        BulkReport {
            spec: BulkSpec {
                writes: 1000,
                clients: 16,
                keys: 100,
                value_bytes: 64,
                samples: 2,
                settle: Duration::from_secs(5),
            },
            systems: vec![
                bulk_outcome(System::Cairn, 1_000_000, 2),
                bulk_outcome(System::Etcd, 2_000_000, 1),
            ],
        }
    }

    #[test]
    fn json_carries_rounds_medians_ratios_and_bulk_samples() {
        let mut r = report();
        r.bulk = Some(bulk_report());
        let value = to_json(&r);
        assert_eq!(
            value["systems"]["cairn"]["write_many_clients"]["ops_per_s"],
            2000.0
        );
        assert_eq!(
            value["systems"]["cairn"]["write_1_client"]["rounds"]
                .as_array()
                .map(Vec::len),
            Some(3)
        );
        assert_eq!(value["ratio_cairn_to_etcd"]["leader failover ms"], 0.5);
        let bulk = &value["bulk"];
        assert_eq!(bulk["systems"]["cairn"]["samples"][1]["writes"], 500);
        assert_eq!(
            bulk["systems"]["cairn"]["settled"]["part_bytes"]["raft"][2],
            3_000_000
        );
        assert_eq!(
            bulk["systems"]["etcd"]["settled"]["part_bytes"]["member/wal"][0],
            2_000_000
        );
        assert_eq!(
            bulk["systems"]["etcd"]["peak"]["data_dir_bytes"][0],
            16_000_000
        );
        assert_eq!(bulk["systems"]["cairn"]["writes_per_s"], 500.0);
        assert_eq!(bulk["ratio_cairn_to_etcd"]["bulk writes/s"], 0.5);
        assert_eq!(
            bulk["ratio_cairn_to_etcd"]["data dir MB, settled (largest)"],
            0.5
        );
        assert!(!r.has_errors());
    }

    #[test]
    fn the_bulk_table_puts_both_systems_side_by_side_with_their_parts() {
        let mut r = report();
        r.bulk = Some(bulk_report());
        let table = render_table(&r);
        assert_eq!(
            row(&table, "bulk writes/s"),
            ["bulk", "writes/s", "500.0", "1000.0", "0.50"]
        );
        // Member 1 peaks mid-run at 2 + 6 MB for Cairn, 4 + 12 for etcd;
        // member 3 is the largest once settled.
        assert_eq!(
            row(&table, "data dir MB, peak (largest)"),
            [
                "data",
                "dir",
                "MB,",
                "peak",
                "(largest)",
                "8.0",
                "16.0",
                "0.50"
            ]
        );
        assert_eq!(
            row(&table, "data dir MB, settled (largest)"),
            [
                "data",
                "dir",
                "MB,",
                "settled",
                "(largest)",
                "4.0",
                "8.0",
                "0.50"
            ]
        );
        assert_eq!(
            row(&table, "RSS MB, settled (largest)"),
            ["RSS", "MB,", "settled", "(largest)", "40.0", "40.0", "1.00"]
        );
        assert!(
            table.contains("  raft:            1.0 / 2.0 / 3.0; peak 1.0 / 2.0 / 3.0"),
            "{table}"
        );
        assert!(
            table.contains("  member/wal:      2.0 / 4.0 / 6.0"),
            "{table}"
        );
        assert!(
            table.contains("  member/snap/db:  2.0 / 4.0 / 6.0"),
            "{table}"
        );
        assert!(
            table.contains("  state dir:       2.0 / 2.0 / 4.0; peak 8.0 / 2.0 / 4.0"),
            "{table}"
        );
        assert!(
            table.contains("etcd keeps: the last 10000 revisions"),
            "{table}"
        );
        assert!(
            table.contains("history compactions logged during the run: 2"),
            "{table}"
        );
    }

    #[test]
    fn a_bulk_run_of_one_system_leaves_dashes_and_no_ratios() {
        let mut r = report();
        let mut bulk = bulk_report();
        bulk.systems.remove(0);
        r.bulk = Some(bulk);
        let table = render_table(&r);
        assert_eq!(
            row(&table, "bulk writes/s"),
            ["bulk", "writes/s", "-", "1000.0", "-"]
        );
        assert!(!table.contains("Cairn keeps"), "{table}");
        assert!(to_json(&r)["bulk"]["ratio_cairn_to_etcd"].is_null());
    }

    #[test]
    fn failed_failovers_and_lost_bulk_writes_mark_the_report() {
        let mut r = report();
        r.systems[1].failover_errors.push("timeout".into());
        assert!(r.has_errors());
        assert!(render_table(&r).contains("etcd failover failed: timeout"));
        let mut r = report();
        let mut bulk = bulk_report();
        bulk.systems[1].acknowledged = 999;
        r.bulk = Some(bulk);
        assert!(r.has_errors());
    }
}
