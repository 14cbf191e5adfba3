//! `cairn-cluster-bench`: a 3-node Cairn cluster against a 3-node etcd.
//!
//! Builds the release cairnd (profile `image`, what the image ships)
//! unless `--cairnd` names one, then in one throwaway network namespace
//! forms a Cairn cluster of three cairnd processes (bootstrap, join token,
//! join) on 127.0.0.1-3 and an etcd cluster of three members on the same
//! addresses, both with TLS client certificates and fsynced logs. Rounds
//! alternate between the systems; each round measures write throughput
//! and latency with 1 and with `--clients` clients, linearizable read
//! throughput, and the leader failover time (SIGKILL the leader, then a
//! write every 10 ms through the survivors until one is acknowledged; the
//! killed member is restarted before the next round). Afterwards each
//! cluster in turn takes `--bulk-writes` writes (default 1,000,000) while
//! its data directories (Cairn's `raft/`, etcd's `member/wal` and
//! `member/snap`, and the whole directory) and RSS are sampled; etcd runs
//! with revision auto-compaction keeping as much history as Cairn keeps.
//! Output: a table on stdout and
//! JSON in `target/qemu-tests/cluster-bench.json`; members' logs stay in
//! `target/qemu-tests/logs/cluster-bench/`. Exits non-zero if any request
//! failed or Cairn could not run.
//!
//! Needs root (network namespaces) and etcd (Debian `etcd-server`,
//! installed with a policy-rc.d that keeps its service from starting on
//! the host). `--quick` is a run of about two minutes plus the build.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use qemu_tests::apibench::load::RoundOutcome;
use qemu_tests::apibench::procfs;
use qemu_tests::apibench::sandbox::BenchNamespace;
use qemu_tests::apibench::stats::{RoundStats, ms};
use qemu_tests::benchrun::{self, Host};
use qemu_tests::clusterbench::binary::{self, Profile};
use qemu_tests::clusterbench::bulk::{self, BulkSpec};
use qemu_tests::clusterbench::cairn::{self, CairnCluster};
use qemu_tests::clusterbench::etcd::{self, EtcdCluster};
use qemu_tests::clusterbench::kv::System;
use qemu_tests::clusterbench::load::{self, Op, Workload};
use qemu_tests::clusterbench::report::{self, BulkReport, Conditions, Report, SystemRounds};
use qemu_tests::clusterbench::target::Cluster;

/// Write/read throughput, latency and failover of Cairn's replicated store
/// against etcd; both systems' disk and memory after many writes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Rounds per system (systems alternate).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per load round.
    #[arg(long, default_value_t = 10)]
    round_secs: u64,
    /// Clients of the "many clients" write and read rounds.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    value_bytes: usize,
    /// Keys each writing client cycles through.
    #[arg(long, default_value_t = 1000)]
    keys_per_client: u64,
    /// Writes per system for the disk and memory measurement (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    bulk_writes: u64,
    /// Distinct keys the bulk writes overwrite.
    #[arg(long, default_value_t = 10_000)]
    bulk_keys: u64,
    /// Samples of disk and memory during the bulk writes.
    #[arg(long, default_value_t = 20)]
    bulk_samples: u64,
    /// Seconds to wait after the bulk writes before the last sample.
    #[arg(long, default_value_t = 10)]
    settle_secs: u64,
    /// A short run: 1 round of 5 s, 20,000 bulk writes, 5 s settling.
    #[arg(long)]
    quick: bool,
    /// Run one system only (`cairn` or `etcd`).
    #[arg(long, value_parser = ["cairn", "etcd"])]
    only: Option<String>,
    /// Worker threads of the load generator's tokio runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// A cairnd binary to run instead of building the release one.
    #[arg(long)]
    cairnd: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long)]
    json: Option<PathBuf>,
}

const MEMBERS: usize = 3;
const FORM_TIMEOUT: Duration = Duration::from_secs(90);
const RESTART_TIMEOUT: Duration = Duration::from_secs(90);
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);
const WARMUP: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    let mut args = Args::parse();
    if args.quick {
        args.rounds = 1;
        args.round_secs = 5;
        args.bulk_writes = args.bulk_writes.min(20_000);
        args.settle_secs = 5;
    }
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "cairn-cluster-bench: some requests failed or Cairn did not run (see the table)"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cairn-cluster-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(message: &str) {
    eprintln!("cairn-cluster-bench: {message}");
}

fn wants(args: &Args, system: System) -> bool {
    args.only.as_deref().is_none_or(|o| o == system.name())
}

fn run(args: &Args) -> Result<bool> {
    if args.rounds == 0 || args.round_secs == 0 || args.clients == 0 || args.client_threads == 0 {
        bail!("--rounds, --round-secs, --clients and --client-threads must be at least 1");
    }
    benchrun::preflight()?;
    let etcd_binary = if wants(args, System::Etcd) {
        Some(etcd::ETCD.locate().context(
            "etcd is the reference; install it without starting its service on the host: \
             put a /usr/sbin/policy-rc.d that exits 101 in place, then apt-get install etcd-server",
        )?)
    } else {
        None
    };
    let cairnd = if wants(args, System::Cairn) {
        Some(match &args.cairnd {
            Some(path) => path.clone(),
            None => binary::cairnd(Profile::Image)?,
        })
    } else {
        None
    };
    let host = Host::now();
    let dir = tempfile::Builder::new()
        .prefix("cairn-cluster-bench-")
        .tempdir()
        .context("creating the temporary directory")?;
    let ns = BenchNamespace::create().context("creating the network namespace")?;
    ns.teardown_on_signal(vec![dir.path().to_path_buf()])
        .context("watching for SIGINT and SIGTERM")?;
    say(&format!("network namespace {}", ns.name()));
    let log_dir = benchrun::fresh_log_dir("cluster-bench")?;

    let conditions = Conditions {
        started: host.started,
        rounds: args.rounds,
        round_secs: args.round_secs,
        clients: args.clients,
        value_bytes: args.value_bytes,
        keys_per_client: args.keys_per_client,
        cpus: host.cpus,
        kernel: host.kernel,
        cairnd_binary: cairnd
            .as_ref()
            .map_or_else(|| "(not run)".to_owned(), |p| p.display().to_string()),
        etcd_version: etcd_binary
            .as_deref()
            .map_or_else(|| "(not run)".to_owned(), etcd::version),
        client_threads: args.client_threads,
        cairn_keeps: cairn::keeps(),
        etcd_keeps: etcd::keeps(),
    };
    let setup = Setup {
        ns: &ns,
        dir: dir.path(),
        log_dir: &log_dir,
        cairnd: cairnd.as_deref(),
        etcd: etcd_binary.as_deref(),
    };
    let report = ns
        .run_in(|| -> Result<Report> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(args.client_threads)
                .enable_all()
                .build()
                .context("building the tokio runtime")?;
            runtime.block_on(bench(args, &setup, conditions))
        })
        .context("entering the network namespace")??;
    drop(ns);

    benchrun::publish(
        &report::render_table(&report),
        &report::to_json(&report),
        args.json.as_deref(),
        "cluster-bench.json",
    )?;
    println!("logs: {}", log_dir.display());
    let cairn_missing = wants(args, System::Cairn) && report.cairn_not_run.is_some();
    Ok(!report.has_errors() && !cairn_missing)
}

struct Setup<'a> {
    ns: &'a BenchNamespace,
    dir: &'a Path,
    log_dir: &'a Path,
    cairnd: Option<&'a Path>,
    etcd: Option<&'a Path>,
}

async fn bench(args: &Args, setup: &Setup<'_>, conditions: Conditions) -> Result<Report> {
    let mut clusters: Vec<Cluster<'_>> = Vec::new();
    let mut cairn_not_run = None;
    if let Some(binary) = setup.cairnd {
        let mut cairn = CairnCluster::prepare(setup.ns, binary, setup.dir, setup.log_dir, MEMBERS)
            .context("preparing the Cairn members")?;
        say("forming the Cairn cluster (bootstrap, join token, 2 joins)");
        match cairn.form().await {
            Ok(()) => {
                say(&format!(
                    "Cairn cluster formed: pids {:?}",
                    cairn.nodes().pids()
                ));
                clusters.push(Cluster::Cairn(cairn));
            }
            Err(e) => {
                let why = qemu_tests::report(&e);
                say(&format!(
                    "the Cairn cluster did not form; measuring etcd only: {why}"
                ));
                cairn.nodes_mut().stop_all();
                cairn_not_run = Some(why);
            }
        }
    }
    if let Some(binary) = setup.etcd {
        let mut etcd = EtcdCluster::prepare(setup.ns, binary, setup.dir, setup.log_dir, MEMBERS)
            .context("preparing the etcd members")?;
        say("starting the etcd cluster");
        etcd.form(FORM_TIMEOUT)
            .await
            .context("forming the etcd cluster")?;
        say(&format!(
            "etcd cluster formed: pids {:?}",
            etcd.nodes().pids()
        ));
        clusters.push(Cluster::Etcd(etcd));
    }
    if clusters.is_empty() {
        bail!(
            "nothing to measure: {}",
            cairn_not_run.unwrap_or_else(|| "no system selected".into())
        );
    }
    let mut results: Vec<SystemRounds> = clusters
        .iter()
        .map(|c| SystemRounds::new(c.system()))
        .collect();
    for cluster in &clusters {
        let config = cluster.client()?;
        load::preload(
            cluster.system(),
            Arc::clone(&config),
            &cluster.members(),
            args.value_bytes,
        )
        .await
        .with_context(|| format!("preloading {}'s read keys", cluster.system().name()))?;
        let warm = Workload {
            op: Op::Write,
            clients: args.clients,
            duration: WARMUP,
            value_bytes: args.value_bytes,
            keys_per_client: args.keys_per_client,
            member_offset: 0,
            tag: "warm".into(),
        };
        let outcome = load::run(cluster.system(), config, &cluster.members(), &warm).await;
        if let Some(e) = outcome.first_error {
            bail!("warm-up writes to {} failed: {e}", cluster.system().name());
        }
    }
    for round in 0..args.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..clusters.len()).collect()
        } else {
            (0..clusters.len()).rev().collect()
        };
        for i in order {
            one_round(args, round, &mut clusters[i], &mut results[i]).await?;
        }
    }
    let mut bulk_result = None;
    if args.bulk_writes > 0 {
        let spec = BulkSpec {
            writes: args.bulk_writes,
            clients: args.clients,
            keys: args.bulk_keys,
            value_bytes: args.value_bytes,
            samples: args.bulk_samples,
            settle: Duration::from_secs(args.settle_secs),
        };
        let mut outcomes = Vec::new();
        // Cairn first, as in the table; each system's bulk run is on its
        // own while the other idles.
        clusters.sort_by_key(|c| c.system() != System::Cairn);
        for cluster in &clusters {
            let name = cluster.system().name();
            say(&format!(
                "bulk {name}: {} writes over {} keys with {} clients, sampling disk and RSS",
                spec.writes, spec.keys, spec.clients
            ));
            let compactions_before = cluster.compactions_logged();
            let mut outcome = bulk::run(cluster.client()?, &cluster.bulk_members(), &spec).await;
            outcome.compactions = cluster
                .compactions_logged()
                .zip(compactions_before)
                .map(|(after, before)| after.saturating_sub(before));
            say(&format!(
                "bulk {name}: {} acknowledged in {:.0} s ({:.0} writes/s), {} errors",
                outcome.acknowledged,
                outcome.wall.as_secs_f64(),
                outcome.rate(),
                outcome.errors
            ));
            outcomes.push(outcome);
        }
        bulk_result = Some(BulkReport {
            spec,
            systems: outcomes,
        });
    }
    for cluster in &mut clusters {
        cluster.stop_all();
    }
    // Cairn first in the report, whatever order they ran in.
    results.sort_by_key(|r| r.system != System::Cairn);
    Ok(Report {
        conditions,
        systems: results,
        cairn_not_run,
        bulk: bulk_result,
    })
}

async fn one_round(
    args: &Args,
    round: usize,
    cluster: &mut Cluster<'_>,
    out: &mut SystemRounds,
) -> Result<()> {
    let system = cluster.system();
    let config = cluster.client()?;
    let members = cluster.members();
    let shape = |op, clients, tag: &str| Workload {
        op,
        clients,
        duration: Duration::from_secs(args.round_secs),
        value_bytes: args.value_bytes,
        keys_per_client: args.keys_per_client,
        member_offset: round,
        tag: format!("{tag}-r{round}"),
    };
    // A write through a follower takes one more hop (in both systems),
    // so the single client gets the same roles in both: a follower in odd
    // rounds, the leader in even ones (followers win the median of an odd
    // number of rounds, as two of three clients of a 3-node cluster talk
    // to one).
    let leader_before = cluster.leader().await.ok();
    let single = match leader_before {
        Some(l) if round % 2 == 1 => l,
        Some(l) => (l + 1) % members.len(),
        None => round % members.len(),
    };
    out.write_one_via_leader
        .push(leader_before.map(|l| l == single));
    let mut write_one = shape(Op::Write, 1, "w1");
    write_one.member_offset = single;
    for (what, workload) in [
        ("write, 1 client", write_one),
        ("write, many clients", shape(Op::Write, args.clients, "wn")),
        (
            "linearizable read, many clients",
            shape(Op::Read, args.clients, "rn"),
        ),
    ] {
        let pids = cluster.pids();
        let cpu_before = procfs::cpu_time(&pids);
        let mut outcome = load::run(system, Arc::clone(&config), &members, &workload).await;
        let cpu = procfs::cpu_time(&pids).saturating_sub(cpu_before);
        let stats = summarise(system, what, &mut outcome, cpu)?;
        say(&format!(
            "round {}/{} {} {what}: {:.1} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
            round + 1,
            args.rounds,
            system.name(),
            stats.requests_per_s,
            ms(stats.p50),
            ms(stats.p99),
            stats.errors
        ));
        let target = match workload.op {
            Op::Read => &mut out.read_many,
            Op::Write if workload.clients == 1 => &mut out.write_one,
            Op::Write => &mut out.write_many,
        };
        target.rounds.push(stats);
        if target.first_error.is_none() {
            target.first_error = outcome.first_error;
        }
    }

    let leader = cluster.leader().await.context("finding the leader")?;
    let leader_name = cluster.name(leader).to_owned();
    let survivors: Vec<_> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, a)| *a)
        .collect();
    let measured = {
        let kill_target = &mut *cluster;
        load::failover(
            system,
            Arc::clone(&config),
            &survivors,
            &format!("failover-r{round}"),
            || kill_target.kill(leader),
            FAILOVER_LIMIT,
        )
        .await
    };
    match measured {
        Ok(f) => {
            say(&format!(
                "round {}/{} {} failover: leader {leader_name} killed; first write acknowledged after {:.0} ms via {} ({} attempts)",
                round + 1,
                args.rounds,
                system.name(),
                ms(f.time),
                f.via,
                f.attempts
            ));
            out.failover_ms.push(ms(f.time));
        }
        Err(e) => {
            let why = qemu_tests::report(&e);
            say(&format!("{} failover failed: {why}", system.name()));
            out.failover_errors.push(why);
        }
    }
    cluster
        .restart(leader, RESTART_TIMEOUT)
        .await
        .with_context(|| format!("restarting {leader_name} after the failover"))?;
    Ok(())
}

fn summarise(
    system: System,
    what: &str,
    outcome: &mut RoundOutcome,
    cpu: Duration,
) -> Result<RoundStats> {
    RoundStats::from_round(
        std::mem::take(&mut outcome.latencies),
        outcome.errors,
        outcome.wall,
        cpu,
    )
    .with_context(|| {
        format!(
            "no {what} against {} succeeded: {}",
            system.name(),
            outcome
                .first_error
                .as_deref()
                .unwrap_or("no error recorded")
        )
    })
}
