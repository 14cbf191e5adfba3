//! The cluster bench's report: a table for people and JSON for tools,
//! rendered from the same values so they cannot disagree.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::bulk::{BulkOutcome, BulkSample, BulkSpec};
use super::kv::System;
use crate::apibench::report::TargetRounds;
use crate::apibench::stats::{TargetSummary, median, ms};

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
    pub bulk: Option<(BulkSpec, BulkOutcome)>,
}

impl Report {
    /// True when any request failed or the bulk run lost writes.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.systems.iter().any(|s| s.errors() > 0)
            || self
                .bulk
                .as_ref()
                .is_some_and(|(spec, out)| out.errors > 0 || out.acknowledged < spec.writes)
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
    if let Some((spec, outcome)) = &report.bulk {
        let _ = writeln!(out);
        let rate = outcome.acknowledged as f64 / outcome.wall.as_secs_f64();
        let _ = writeln!(
            out,
            "Cairn after {} acknowledged writes ({} asked; {} clients over {} keys, {}-byte values, {:.0} writes/s, {} errors):",
            outcome.acknowledged,
            spec.writes,
            spec.clients,
            spec.keys,
            spec.value_bytes,
            rate,
            outcome.errors
        );
        let peak = |f: fn(&BulkSample) -> &Vec<u64>| -> Vec<u64> {
            let n = outcome.settled.raft_bytes.len();
            (0..n)
                .map(|i| {
                    outcome
                        .samples
                        .iter()
                        .chain(std::iter::once(&outcome.settled))
                        .filter_map(|s| f(s).get(i).copied())
                        .max()
                        .unwrap_or(0)
                })
                .collect()
        };
        let s = &outcome.settled;
        let _ = writeln!(
            out,
            "  raft/ per member, MB:       {} after settling {} s; peak {}",
            mbs(&s.raft_bytes),
            spec.settle.as_secs(),
            mbs(&peak(|s| &s.raft_bytes))
        );
        let _ = writeln!(
            out,
            "  state dir per member, MB:   {}; peak {}",
            mbs(&s.state_bytes),
            mbs(&peak(|s| &s.state_bytes))
        );
        let _ = writeln!(
            out,
            "  cairnd RSS per member, MB:  {}; peak {}",
            mbs(&s.rss_bytes),
            mbs(&peak(|s| &s.rss_bytes))
        );
        let series = outcome
            .samples
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s.writes,
                    mb(s.raft_bytes.first().copied().unwrap_or(0))
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "  raft/ of member 1 over the run (writes:MB): {series}"
        );
        if let Some(e) = &outcome.first_error {
            let _ = writeln!(out, "  first bulk error: {e}");
        }
    }
    out
}

fn target_json(target: &TargetRounds) -> Value {
    let s: TargetSummary = target.summary();
    json!({
        "ops_per_s": s.requests_per_s,
        "p50_ms": s.p50_ms,
        "p99_ms": s.p99_ms,
        "server_cpu_ms_per_op": s.server_cpu_ms_per_request,
        "errors": s.errors,
        "first_error": target.first_error,
        "rounds": target.rounds.iter().map(|r| json!({
            "ops": r.requests,
            "errors": r.errors,
            "ops_per_s": r.requests_per_s,
            "p50_ms": ms(r.p50),
            "p99_ms": ms(r.p99),
            "max_ms": ms(r.max),
            "server_cpu_ms_per_op": ms(r.server_cpu_per_request),
        })).collect::<Vec<_>>(),
    })
}

fn system_json(s: &SystemRounds) -> Value {
    json!({
        "write_1_client": target_json(&s.write_one),
        "write_1_client_via_leader": s.write_one_via_leader,
        "write_many_clients": target_json(&s.write_many),
        "linearizable_read_many_clients": target_json(&s.read_many),
        "failover_ms": { "median": median(&s.failover_ms), "rounds": s.failover_ms, "failed": s.failover_errors },
        "errors": s.errors(),
    })
}

fn sample_json(s: &BulkSample) -> Value {
    json!({
        "writes": s.writes,
        "raft_bytes": s.raft_bytes,
        "state_bytes": s.state_bytes,
        "rss_bytes": s.rss_bytes,
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
        },
        "systems": systems,
        "ratio_cairn_to_etcd": ratios,
        "cairn_not_run": report.cairn_not_run,
        "cairn_bulk": report.bulk.as_ref().map(|(spec, out)| json!({
            "writes_asked": spec.writes,
            "acknowledged": out.acknowledged,
            "errors": out.errors,
            "first_error": out.first_error,
            "clients": spec.clients,
            "keys": spec.keys,
            "value_bytes": spec.value_bytes,
            "wall_s": out.wall.as_secs_f64(),
            "settle_s": spec.settle.as_secs_f64(),
            "samples": out.samples.iter().map(sample_json).collect::<Vec<_>>(),
            "settled": sample_json(&out.settled),
        })),
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

    #[test]
    fn json_carries_rounds_medians_ratios_and_bulk_samples() {
        let mut r = report();
        let sample = |w| BulkSample {
            writes: w,
            raft_bytes: vec![1_000_000, 2_000_000, 3_000_000],
            state_bytes: vec![2_000_000; 3],
            rss_bytes: vec![30_000_000; 3],
        };
        r.bulk = Some((
            BulkSpec {
                writes: 1000,
                clients: 16,
                keys: 100,
                value_bytes: 64,
                samples: 2,
                settle: Duration::from_secs(5),
            },
            BulkOutcome {
                acknowledged: 1000,
                errors: 0,
                first_error: None,
                wall: Duration::from_secs(2),
                samples: vec![sample(0), sample(500), sample(1000)],
                settled: sample(1000),
            },
        ));
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
        assert_eq!(value["cairn_bulk"]["samples"][1]["writes"], 500);
        let table = render_table(&r);
        assert!(
            table.contains("raft/ per member, MB:       1.0 / 2.0 / 3.0"),
            "{table}"
        );
        assert!(table.contains("500 writes/s"), "{table}");
        assert!(!r.has_errors());
    }

    #[test]
    fn failed_failovers_and_lost_bulk_writes_mark_the_report() {
        let mut r = report();
        r.systems[1].failover_errors.push("timeout".into());
        assert!(r.has_errors());
        assert!(render_table(&r).contains("etcd failover failed: timeout"));
    }
}
