//! The bench's report: a table for people and JSON for tools, rendered from
//! the same values so they cannot disagree.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::load::Connections;
use super::stats::{RoundStats, TargetSummary, ms};

/// One server's rounds in one connection mode.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRounds {
    /// Rounds in the order they ran.
    pub rounds: Vec<RoundStats>,
    /// The first failed request's error, if any.
    pub first_error: Option<String>,
}

impl TargetRounds {
    /// Medians over the rounds.
    #[must_use]
    pub fn summary(&self) -> TargetSummary {
        TargetSummary::of(&self.rounds)
    }

    /// The medians, the first error and every round as JSON, with what
    /// one request is called in the keys (`requests_per_s`,
    /// `server_cpu_ms_per_request` for `"request"`; `ops_per_s` for
    /// `"op"`).
    #[must_use]
    pub fn to_json(&self, unit: &str) -> Value {
        let s = self.summary();
        let rounds: Vec<Value> = self
            .rounds
            .iter()
            .map(|r| {
                json!({
                    format!("{unit}s"): r.requests,
                    "errors": r.errors,
                    format!("{unit}s_per_s"): r.requests_per_s,
                    "p50_ms": ms(r.p50),
                    "p99_ms": ms(r.p99),
                    "max_ms": ms(r.max),
                    format!("server_cpu_ms_per_{unit}"): ms(r.server_cpu_per_request),
                })
            })
            .collect();
        json!({
            format!("{unit}s_per_s"): s.requests_per_s,
            "p50_ms": s.p50_ms,
            "p99_ms": s.p99_ms,
            format!("server_cpu_ms_per_{unit}"): s.server_cpu_ms_per_request,
            "errors": s.errors,
            "first_error": self.first_error,
            "rounds": rounds,
        })
    }
}

/// Both servers in one connection mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeReport {
    /// How clients used connections.
    pub mode: Connections,
    /// cairnd serving `GET /v1/node`.
    pub cairnd: TargetRounds,
    /// nginx serving the same body from a file.
    pub nginx: TargetRounds,
}

/// Resident memory, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// cairnd after bootstrap, before any load.
    pub cairnd_before: u64,
    /// cairnd's peak while it was under load.
    pub cairnd_peak: u64,
    /// cairnd after the load, once idle again.
    pub cairnd_after: u64,
    /// nginx master + worker, peak under load.
    pub nginx_peak: u64,
}

/// How the run was set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conditions {
    /// UTC time the run started (RFC 3339).
    pub started: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Rounds per server and mode.
    pub rounds: usize,
    /// Seconds per round.
    pub round_secs: u64,
    /// Warm-up seconds per server before the rounds.
    pub warmup_secs: u64,
    /// Worker threads of the load generator's runtime.
    pub client_threads: usize,
    /// CPUs the machine has.
    pub cpus: usize,
    /// The path requested.
    pub path: String,
    /// The cairnd binary measured.
    pub cairnd_binary: String,
    /// `nginx -v`.
    pub nginx_version: String,
    /// The host kernel release.
    pub kernel: String,
    /// What answered cairnd's `BootStatus` calls.
    pub init: String,
}

/// How many node info requests reached init (with the fake init only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitCalls {
    /// `BootStatus` calls the fake init answered.
    pub answered: u64,
    /// Successful `GET /v1/node` requests cairnd served, warm-ups included.
    pub node_info_requests: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Setup.
    pub conditions: Conditions,
    /// One entry per connection mode measured, per-request first.
    pub modes: Vec<ModeReport>,
    /// Memory.
    pub memory: Memory,
    /// Init round trips, when a fake init ran.
    pub init_calls: Option<InitCalls>,
}

impl Report {
    /// True when any request in any round failed.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.modes
            .iter()
            .any(|m| m.cairnd.summary().errors + m.nginx.summary().errors > 0)
    }
}

fn mb(bytes: u64) -> String {
    let value = bytes as f64 / 1e6;
    format!("{value:.1} MB")
}

/// The table printed on stdout.
#[must_use]
pub fn render_table(report: &Report) -> String {
    let c = &report.conditions;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Cairn API benchmark: GET {} with {} concurrent mTLS clients on loopback, {} rounds x {} s per server (medians over rounds)",
        c.path, c.clients, c.rounds, c.round_secs
    );
    let _ = writeln!(
        out,
        "cairnd: single-threaded tokio runtime, init: {}; nginx: worker_processes 1, same certificate, same CA, body from a file; {} CPUs, load generator {} threads",
        c.init, c.cpus, c.client_threads
    );
    for mode in &report.modes {
        let cairnd = mode.cairnd.summary();
        let nginx = mode.nginx.summary();
        let _ = writeln!(out);
        let title = match mode.mode {
            Connections::PerRequest => {
                "new TCP + TLS 1.3 connection per request (full handshake with client certificate, no resumption)"
            }
            Connections::KeepAlive => {
                "keep-alive: one connection per client, reused (handshakes NOT included)"
            }
        };
        let _ = writeln!(out, "{title}");
        let _ = writeln!(
            out,
            "{:<22} {:>10} {:>9} {:>9} {:>16} {:>7}",
            "", "req/s", "p50 ms", "p99 ms", "server CPU ms/req", "errors"
        );
        for (name, s) in [("cairnd", &cairnd), ("nginx (static file)", &nginx)] {
            let _ = writeln!(
                out,
                "{name:<22} {:>10.1} {:>9.2} {:>9.2} {:>16.3} {:>7}",
                s.requests_per_s, s.p50_ms, s.p99_ms, s.server_cpu_ms_per_request, s.errors
            );
        }
        let _ = writeln!(
            out,
            "{:<22} {:>10.2} {:>9.2} {:>9.2} {:>16.2}",
            "ratio cairnd / nginx",
            cairnd.requests_per_s / nginx.requests_per_s,
            cairnd.p50_ms / nginx.p50_ms,
            cairnd.p99_ms / nginx.p99_ms,
            cairnd.server_cpu_ms_per_request / nginx.server_cpu_ms_per_request,
        );
        for (name, target) in [("cairnd", &mode.cairnd), ("nginx", &mode.nginx)] {
            if let Some(error) = &target.first_error {
                let _ = writeln!(out, "first {name} error: {error}");
            }
        }
    }
    let m = report.memory;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "cairnd RSS: {} at rest before load, {} peak under load, {} at rest after",
        mb(m.cairnd_before),
        mb(m.cairnd_peak),
        mb(m.cairnd_after)
    );
    let _ = writeln!(
        out,
        "nginx RSS (master + worker): {} peak under load",
        mb(m.nginx_peak)
    );
    if let Some(init) = report.init_calls {
        let _ = writeln!(
            out,
            "init stand-in: {} BootStatus call(s) answered for {} node info requests (cairnd keeps the answer)",
            init.answered, init.node_info_requests
        );
    }
    out
}

/// The JSON written next to the boot bench's `bench.json`.
#[must_use]
pub fn to_json(report: &Report) -> Value {
    let c = &report.conditions;
    let mut modes = serde_json::Map::new();
    for mode in &report.modes {
        let cairnd = mode.cairnd.summary();
        let nginx = mode.nginx.summary();
        modes.insert(
            mode.mode.key().to_owned(),
            json!({
                "label": mode.mode.label(),
                "cairnd": mode.cairnd.to_json("request"),
                "nginx": mode.nginx.to_json("request"),
                "ratio_cairnd_to_nginx": {
                    "requests_per_s": cairnd.requests_per_s / nginx.requests_per_s,
                    "p50": cairnd.p50_ms / nginx.p50_ms,
                    "p99": cairnd.p99_ms / nginx.p99_ms,
                    "server_cpu_per_request": cairnd.server_cpu_ms_per_request / nginx.server_cpu_ms_per_request,
                },
            }),
        );
    }
    json!({
        "conditions": {
            "started": c.started,
            "path": c.path,
            "clients": c.clients,
            "rounds": c.rounds,
            "round_seconds": c.round_secs,
            "warmup_seconds": c.warmup_secs,
            "client_threads": c.client_threads,
            "cpus": c.cpus,
            "cairnd_binary": c.cairnd_binary,
            "nginx_version": c.nginx_version,
            "kernel": c.kernel,
            "init": c.init,
        },
        "modes": modes,
        "rss_bytes": {
            "cairnd_before_load": report.memory.cairnd_before,
            "cairnd_peak_under_load": report.memory.cairnd_peak,
            "cairnd_after_load": report.memory.cairnd_after,
            "nginx_peak_under_load": report.memory.nginx_peak,
        },
        "init_calls": report.init_calls.map(|i| json!({
            "answered": i.answered,
            "node_info_requests": i.node_info_requests,
        })),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn round(rps: f64, p50_us: u64, p99_us: u64, errors: u64) -> RoundStats {
        RoundStats {
            requests: 1000,
            errors,
            requests_per_s: rps,
            p50: Duration::from_micros(p50_us),
            p99: Duration::from_micros(p99_us),
            max: Duration::from_micros(p99_us * 2),
            server_cpu_per_request: Duration::from_micros(400),
        }
    }

    fn report() -> Report {
        Report {
            conditions: Conditions {
                started: "2026-11-22T03:30:00Z".into(),
                clients: 8,
                rounds: 3,
                round_secs: 15,
                warmup_secs: 2,
                client_threads: 2,
                cpus: 2,
                path: "/v1/node".into(),
                cairnd_binary: "/x/cairnd".into(),
                nginx_version: "nginx/1.22.1".into(),
                kernel: "6.1.0".into(),
                init: "none".into(),
            },
            modes: vec![ModeReport {
                mode: Connections::PerRequest,
                cairnd: TargetRounds {
                    rounds: vec![
                        round(500.0, 4000, 9000, 0),
                        round(400.0, 5000, 10_000, 0),
                        round(450.0, 4500, 9500, 0),
                    ],
                    first_error: None,
                },
                nginx: TargetRounds {
                    rounds: vec![
                        round(1000.0, 2000, 4000, 0),
                        round(900.0, 2500, 5000, 1),
                        round(950.0, 2250, 4750, 0),
                    ],
                    first_error: Some("reading the response".into()),
                },
            }],
            memory: Memory {
                cairnd_before: 9_500_000,
                cairnd_peak: 12_000_000,
                cairnd_after: 10_000_000,
                nginx_peak: 8_000_000,
            },
            init_calls: Some(InitCalls {
                answered: 2990,
                node_info_requests: 3000,
            }),
        }
    }

    #[test]
    fn the_table_shows_medians_ratios_and_memory() {
        let table = render_table(&report());
        let line = |prefix: &str| {
            table
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} line in\n{table}"))
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            line("cairnd   "),
            ["cairnd", "450.0", "4.50", "9.50", "0.400", "0"]
        );
        assert_eq!(
            line("nginx (static"),
            [
                "nginx", "(static", "file)", "950.0", "2.25", "4.75", "0.400", "1"
            ]
        );
        assert_eq!(
            line("ratio"),
            [
                "ratio", "cairnd", "/", "nginx", "0.47", "2.00", "2.00", "1.00"
            ]
        );
        assert!(
            table.contains("first nginx error: reading the response"),
            "{table}"
        );
        assert!(table.contains("cairnd RSS: 9.5 MB at rest before load, 12.0 MB peak under load, 10.0 MB at rest after"), "{table}");
        assert!(table.contains("full handshake"), "{table}");
        assert!(
            table.contains(
                "init stand-in: 2990 BootStatus call(s) answered for 3000 node info requests"
            ),
            "{table}"
        );
    }

    #[test]
    fn json_carries_rounds_medians_and_ratios() {
        let value = to_json(&report());
        let per = &value["modes"]["per_request"];
        assert_eq!(per["cairnd"]["requests_per_s"], 450.0);
        assert_eq!(per["nginx"]["errors"], 1);
        assert_eq!(per["cairnd"]["rounds"].as_array().map(Vec::len), Some(3));
        let ratio = per["ratio_cairnd_to_nginx"]["requests_per_s"]
            .as_f64()
            .unwrap();
        assert!((ratio - 450.0 / 950.0).abs() < 1e-9);
        assert_eq!(value["rss_bytes"]["cairnd_peak_under_load"], 12_000_000);
        assert_eq!(value["conditions"]["clients"], 8);
        assert_eq!(value["init_calls"]["answered"], 2990);
    }

    #[test]
    fn any_failed_request_marks_the_report() {
        assert!(report().has_errors());
        let mut clean = report();
        clean.modes[0].nginx.rounds[1].errors = 0;
        assert!(!clean.has_errors());
    }
}
