//! `cairn-api-bench`: the node API under mTLS load, next to nginx.
//!
//! Builds the release cairnd (unless `--cairnd` names one), runs it in a
//! throwaway network namespace next to a stand-in for cairn-init's D-Bus
//! interface (node info asks init for the boot status), bootstraps a one-node cluster over the API,
//! issues a reader certificate, and starts Debian's nginx in the same
//! namespace with the node's certificate, the cluster CA and the NodeInfo
//! body cairnd served. Then it alternates rounds of 8 closed-loop clients
//! against each: first with a new TCP + TLS 1.3 connection per request
//! (the numbers the issue asks for), then with keep-alive. It samples
//! cairnd's RSS throughout. Output: a table on stdout and JSON in
//! `target/qemu-tests/api-bench.json`; cairnd's console and nginx's files
//! stay in `target/qemu-tests/logs/api-bench/`. Exits non-zero if any
//! request failed.
//!
//! Needs root (network namespaces) and nginx (`apt-get install nginx`;
//! `scripts/bench` installs it with services disabled).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::types::{BootstrapResponse, IssuedCertificate, NodeInfo};
use clap::Parser;
use cluster::pki::{self, Fingerprint, IssuedCert, SubjectName};
use qemu_tests::apibench::client::{self, RequestError};
use qemu_tests::apibench::fakeinit::FakeInit;
use qemu_tests::apibench::load::{self, Connections, RoundOutcome};
use qemu_tests::apibench::nginx::NginxConfig;
use qemu_tests::apibench::procfs::{self, RssSampler};
use qemu_tests::apibench::report::{
    self, Conditions, InitCalls, Memory, ModeReport, Report, TargetRounds,
};
use qemu_tests::apibench::sandbox::{self, BenchNamespace, ChildGuard};
use qemu_tests::apibench::stats::RoundStats;
use qemu_tests::benchrun::{self, Host};
use qemu_tests::clusterbench::binary::{self, Profile};
use qemu_tests::tools::Tool;
use rustls::ClientConfig;

/// API latency, throughput and RSS of cairnd under mTLS load, against nginx.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Rounds per server and connection mode (servers alternate).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per round.
    #[arg(long, default_value_t = 15)]
    round_secs: u64,
    /// Seconds of warm-up per server before the rounds.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Worker threads of the load generator's tokio runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Skip the keep-alive table.
    #[arg(long)]
    no_keep_alive: bool,
    /// Run without the stand-in for cairn-init's D-Bus interface. cairnd
    /// then finds no init socket and retries the connect on every node
    /// info call; on a node cairn-init is always there.
    #[arg(long)]
    no_init: bool,
    /// A cairnd binary to measure instead of building the release one.
    #[arg(long)]
    cairnd: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long)]
    json: Option<PathBuf>,
}

const API_ADDR: &str = "127.0.0.1:7443";
const HEALTH_ADDR: &str = "127.0.0.1:7480";
const NGINX_ADDR: &str = "127.0.0.1:8443";
const NODE_PATH: &str = "/v1/node";
/// cairnd's static address on the veth it manages.
const NODE_CIDR: &str = "10.254.77.1/24";
const FINGERPRINT_LINE: &str = "cairnd: certificate fingerprint: ";
const NGINX: Tool = Tool {
    program: "nginx",
    package: "nginx",
};
/// How long cairnd may take to serve its API after start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const SETUP_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
const SETTLE: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("cairn-api-bench: some requests failed (see the errors column)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cairn-api-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(message: &str) {
    eprintln!("cairn-api-bench: {message}");
}

/// Runs the bench; `Ok(false)` when it finished but some requests failed.
fn run(args: &Args) -> Result<bool> {
    if args.clients == 0 || args.rounds == 0 || args.round_secs == 0 || args.client_threads == 0 {
        bail!("--clients, --rounds, --round-secs and --client-threads must be at least 1");
    }
    benchrun::preflight()?;
    let nginx = NGINX.locate()?;
    let cairnd = match &args.cairnd {
        Some(path) => path.clone(),
        None => binary::cairnd(Profile::Image)?,
    };
    let host = Host::now();

    let dir = tempfile::Builder::new()
        .prefix("cairn-api-bench-")
        .tempdir()
        .context("creating the temporary directory")?;
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).context("creating the state directory")?;
    let token = format!("bench-setup-token-{}", std::process::id());
    std::fs::write(
        state.join("config.toml"),
        format!(
            "[cluster]\nsetup-token = \"{token}\"\n\n[[network.interfaces]]\nname = \"{}\"\naddresses = [\"{NODE_CIDR}\"]\n",
            sandbox::MANAGED_LINK
        ),
    )
    .context("writing the machine config")?;

    let ns = BenchNamespace::create().context("creating the network namespace")?;
    ns.teardown_on_signal(vec![dir.path().to_path_buf()])
        .context("watching for SIGINT and SIGTERM")?;
    say(&format!("network namespace {}", ns.name()));
    // Logs outlive the run (the state, with its keys, does not).
    let log_dir = benchrun::fresh_log_dir("api-bench")?;
    let cairnd_log = log_dir.join("cairnd.log");
    let init_socket = dir.path().join("init.sock");
    // With --no-init nothing listens there: node info then reports the
    // boot entry as unknown.
    let fake_init = if !args.no_init {
        Some(FakeInit::start(&init_socket).context("starting the fake init")?)
    } else {
        None
    };
    let mut command = ns.command(&cairnd);
    command
        .env("CAIRN_STATE_DIR", &state)
        .env("CAIRN_API_ADDR", API_ADDR)
        .env("CAIRN_HEALTH_ADDR", HEALTH_ADDR)
        .env("CAIRN_INIT_SOCKET", &init_socket);
    let spawned = Instant::now();
    let mut agent = ChildGuard::spawn("cairnd", command, &cairnd_log)
        .with_context(|| format!("starting {}", cairnd.display()))?;
    let fingerprint = wait_for_fingerprint(&mut agent, &cairnd_log)?;
    say(&format!(
        "cairnd (pid {}) in maintenance mode after {:.1} s, certificate {fingerprint}",
        agent.pid(),
        spawned.elapsed().as_secs_f64()
    ));

    let nginx_dir = log_dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).context("creating nginx's directory")?;
    let setup = Setup {
        ns: &ns,
        dir: dir.path(),
        state: &state,
        nginx: &nginx,
        nginx_dir: &nginx_dir,
        token: &token,
        fingerprint,
    };
    let result = ns
        .run_in(|| -> Result<Measured> {
            let runtime = runtime(args.client_threads).context("building the tokio runtime")?;
            runtime.block_on(bench(args, &setup, &mut agent))
        })
        .context("entering the network namespace")?;
    let Measured {
        modes,
        memory,
        node_info_requests,
    } = match result {
        Ok(measured) => measured,
        Err(e) => {
            let tail = tail(&cairnd_log, 30);
            return Err(e.context(format!(
                "cairnd log tail ({}):\n{tail}",
                cairnd_log.display()
            )));
        }
    };
    let report = Report {
        conditions: Conditions {
            started: host.started,
            clients: args.clients,
            rounds: args.rounds,
            round_secs: args.round_secs,
            warmup_secs: args.warmup_secs,
            client_threads: args.client_threads,
            cpus: host.cpus,
            path: NODE_PATH.to_owned(),
            cairnd_binary: cairnd.display().to_string(),
            nginx_version: nginx_version(&nginx),
            kernel: host.kernel,
            init: if args.no_init {
                "none (boot status unknown; a failed connect per call)".to_owned()
            } else {
                "stand-in answering BootStatus over D-Bus".to_owned()
            },
        },
        modes,
        memory,
        init_calls: fake_init.as_ref().map(|init| InitCalls {
            answered: init.calls(),
            node_info_requests,
        }),
    };
    drop(agent);
    drop(fake_init);
    drop(ns);

    benchrun::publish(
        &report::render_table(&report),
        &report::to_json(&report),
        args.json.as_deref(),
        "api-bench.json",
    )?;
    Ok(!report.has_errors())
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Waits for the console line with the maintenance certificate's
/// fingerprint (printed once the API is about to serve).
fn wait_for_fingerprint(agent: &mut ChildGuard, log: &Path) -> Result<Fingerprint> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find_map(|l| l.strip_prefix(FINGERPRINT_LINE)) {
            return line
                .trim()
                .parse()
                .with_context(|| format!("cairnd printed an unreadable fingerprint {line:?}"));
        }
        if let Some(status) = agent.exited() {
            bail!(
                "{} exited with {status} before serving its API:\n{}",
                agent.what(),
                tail(log, 30)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "cairnd printed no certificate fingerprint within {:?}:\n{}",
                START_TIMEOUT,
                tail(log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn nginx_version(nginx: &Path) -> String {
    Command::new(nginx)
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .trim_start_matches("nginx version: ")
                .to_owned()
        })
        .unwrap_or_default()
}

struct Setup<'a> {
    ns: &'a BenchNamespace,
    dir: &'a Path,
    state: &'a Path,
    nginx: &'a Path,
    nginx_dir: &'a Path,
    token: &'a str,
    fingerprint: Fingerprint,
}

/// Everything that talks to the servers; runs inside the namespace.
/// What [`bench`] measured.
struct Measured {
    modes: Vec<ModeReport>,
    memory: Memory,
    /// Successful `GET /v1/node` calls cairnd answered, setup and warm-ups
    /// included.
    node_info_requests: u64,
}

async fn bench(args: &Args, setup: &Setup<'_>, agent: &mut ChildGuard) -> Result<Measured> {
    let api: SocketAddr = API_ADDR.parse()?;
    let reference: SocketAddr = NGINX_ADDR.parse()?;
    let reader = credentials(api, setup).await?;

    let (status, body) = client::call(&reader, api, "GET", NODE_PATH, None, SETUP_CALL_TIMEOUT)
        .await
        .context("GET /v1/node as reader")?;
    if status != 200 {
        bail!(
            "GET /v1/node as reader answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let info: NodeInfo = serde_json::from_slice(&body).context("GET /v1/node is not NodeInfo")?;
    let init_answered = info.boot.firmware == "uefi";
    if init_answered == args.no_init {
        bail!(
            "node info's boot firmware is {:?}: the fake init was {}",
            info.boot.firmware,
            if args.no_init {
                "unexpectedly answering"
            } else {
                "not reached"
            }
        );
    }
    say(&format!(
        "node {} version {}, cluster {:?}; body {} bytes",
        info.name,
        info.version,
        info.cluster.as_ref().map(|c| c.name.as_str()),
        body.len()
    ));
    let body_file = setup.dir.join("node.json");
    std::fs::write(&body_file, &body).context("writing the NodeInfo body for nginx")?;

    let pki_dir = setup.state.join("pki");
    let config = NginxConfig {
        dir: setup.nginx_dir.to_path_buf(),
        listen: reference,
        cert: pki_dir.join(pki::store::NODE_CERT_FILE),
        key: pki_dir.join(pki::store::NODE_KEY_FILE),
        client_ca: pki_dir.join(pki::store::CA_CERT_FILE),
        location: NODE_PATH.to_owned(),
        body: body_file,
    };
    let conf_path = setup.nginx_dir.join("nginx.conf");
    std::fs::write(&conf_path, config.render()).context("writing nginx.conf")?;
    let mut command = setup.ns.command(setup.nginx);
    command
        .arg("-p")
        .arg(setup.nginx_dir)
        .arg("-e")
        .arg(config.error_log())
        .arg("-c")
        .arg(&conf_path);
    let mut nginx = ChildGuard::spawn("nginx", command, &setup.nginx_dir.join("stdout.log"))
        .context("starting nginx")?;
    wait_until_serving(&reader, reference, &mut nginx, &config.error_log()).await?;
    let nginx_pids = procfs::with_children(nginx.pid());
    say(&format!(
        "nginx serving on {reference} (pids {nginx_pids:?})"
    ));

    let agent_pid = agent.pid();
    if sandbox::comm(agent_pid).as_deref() != Some("cairnd") {
        bail!(
            "pid {agent_pid} is not cairnd ({:?})",
            sandbox::comm(agent_pid)
        );
    }
    tokio::time::sleep(SETTLE).await;
    let cairnd_before = procfs::rss(agent_pid).context("reading cairnd's RSS")?;

    let mut node_info_requests = 1;
    let mut modes = Vec::new();
    let mut cairnd_peak = cairnd_before;
    let mut nginx_peak = 0;
    let mut wanted = vec![Connections::PerRequest];
    if !args.no_keep_alive {
        wanted.push(Connections::KeepAlive);
    }
    let targets = [
        Target {
            name: "cairnd",
            addr: api,
            pids: vec![agent_pid],
        },
        Target {
            name: "nginx",
            addr: reference,
            pids: nginx_pids,
        },
    ];
    for mode in wanted {
        for target in &targets {
            say(&format!(
                "warm-up: {} ({}), {} s",
                target.name,
                mode.label(),
                args.warmup_secs
            ));
            let outcome = load::run_round(
                Arc::clone(&reader),
                target.addr,
                NODE_PATH,
                args.clients,
                Duration::from_secs(args.warmup_secs),
                mode,
            )
            .await;
            if let Some(error) = outcome.first_error {
                bail!("warm-up against {} failed: {error}", target.name);
            }
            if target.name == "cairnd" {
                node_info_requests += u64::try_from(outcome.latencies.len())?;
            }
        }
        let mut results = [
            TargetRounds {
                rounds: Vec::new(),
                first_error: None,
            },
            TargetRounds {
                rounds: Vec::new(),
                first_error: None,
            },
        ];
        for round in 0..args.rounds {
            // Alternate who goes first, so drift on the machine hits both.
            let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let target = &targets[i];
                let (stats, outcome, peak) = measure(args, &reader, target, mode).await?;
                say(&format!(
                    "round {}/{} {} ({}): {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, RSS peak {:.1} MB",
                    round + 1,
                    args.rounds,
                    target.name,
                    mode.label(),
                    stats.requests_per_s,
                    stats.p50.as_secs_f64() * 1e3,
                    stats.p99.as_secs_f64() * 1e3,
                    stats.errors,
                    peak as f64 / 1e6,
                ));
                if i == 0 {
                    cairnd_peak = cairnd_peak.max(peak);
                    node_info_requests += stats.requests;
                } else {
                    nginx_peak = nginx_peak.max(peak);
                }
                results[i].rounds.push(stats);
                if results[i].first_error.is_none() {
                    results[i].first_error = outcome.first_error;
                }
            }
        }
        let [cairnd, nginx_rounds] = results;
        modes.push(ModeReport {
            mode,
            cairnd,
            nginx: nginx_rounds,
        });
    }
    tokio::time::sleep(SETTLE).await;
    let cairnd_after = procfs::rss(agent_pid).context("reading cairnd's RSS after the load")?;
    if let Some(status) = agent.exited() {
        bail!("cairnd exited with {status} during the bench");
    }
    drop(nginx);
    Ok(Measured {
        modes,
        memory: Memory {
            cairnd_before,
            cairnd_peak,
            cairnd_after,
            nginx_peak,
        },
        node_info_requests,
    })
}

struct Target {
    name: &'static str,
    addr: SocketAddr,
    pids: Vec<u32>,
}

/// One round against one target, with its CPU time and RSS peak.
async fn measure(
    args: &Args,
    reader: &Arc<ClientConfig>,
    target: &Target,
    mode: Connections,
) -> Result<(RoundStats, RoundOutcome, u64)> {
    let sampler = RssSampler::start(target.pids.clone(), RSS_SAMPLE_EVERY);
    let cpu_before = procfs::cpu_time(&target.pids);
    let mut outcome = load::run_round(
        Arc::clone(reader),
        target.addr,
        NODE_PATH,
        args.clients,
        Duration::from_secs(args.round_secs),
        mode,
    )
    .await;
    let cpu = procfs::cpu_time(&target.pids).saturating_sub(cpu_before);
    let peak = sampler.finish();
    let stats = RoundStats::from_round(
        std::mem::take(&mut outcome.latencies),
        outcome.errors,
        outcome.wall,
        cpu,
    )
    .with_context(|| {
        format!(
            "no request against {} succeeded: {}",
            target.name,
            outcome
                .first_error
                .as_deref()
                .unwrap_or("no error recorded")
        )
    })?;
    Ok((stats, outcome, peak))
}

/// Bootstraps the cluster and returns a reader's client configuration.
async fn credentials(api: SocketAddr, setup: &Setup<'_>) -> Result<Arc<ClientConfig>> {
    let maintenance = client::pinned_config(setup.fingerprint)?;
    let admin_key = pki::client_csr(&SubjectName::try_from("bench-admin")?)?;
    let request = serde_json::json!({
        "setup_token": setup.token,
        "cluster_name": "bench",
        "admin_name": "bench-admin",
        "admin_csr_pem": admin_key.csr_pem,
    });
    let bytes = serde_json::to_vec(&request)?;
    let (status, body) = retry_connect(|| {
        client::call(
            &maintenance,
            api,
            "POST",
            "/v1/cluster/bootstrap",
            Some(&bytes),
            SETUP_CALL_TIMEOUT,
        )
    })
    .await
    .context("POST /v1/cluster/bootstrap")?;
    if status != 200 {
        bail!(
            "bootstrap answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let boot: BootstrapResponse =
        serde_json::from_slice(&body).context("bootstrap response is not BootstrapResponse")?;
    say(&format!(
        "bootstrapped cluster {} on node {}, CA {}",
        boot.cluster_name, boot.node_name, boot.admin.ca_fingerprint
    ));
    let admin = client::member_config(
        &boot.admin.ca_pem,
        &IssuedCert {
            cert_pem: boot.admin.cert_pem.clone(),
            key_pem: admin_key.key_pem.clone(),
        },
    )?;

    let reader_key = pki::client_csr(&SubjectName::try_from("bench-reader")?)?;
    let request = serde_json::json!({
        "name": "bench-reader",
        "role": api::Role::Reader,
        "ttl_s": 24 * 3600,
        "csr_pem": reader_key.csr_pem,
    });
    let bytes = serde_json::to_vec(&request)?;
    // The node switches from its maintenance certificate to the cluster's
    // right after answering the bootstrap; retry until it presents it.
    let deadline = Instant::now() + SETUP_CALL_TIMEOUT;
    let (status, body) = loop {
        match client::call(
            &admin,
            api,
            "POST",
            "/v1/certs",
            Some(&bytes),
            SETUP_CALL_TIMEOUT,
        )
        .await
        {
            Ok(answer) => break answer,
            Err(e) if Instant::now() < deadline => {
                say(&format!(
                    "POST /v1/certs not yet: {}",
                    qemu_tests::report(&e)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("POST /v1/certs"),
        }
    };
    if status != 200 {
        bail!(
            "issuing the reader certificate answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let issued: IssuedCertificate = serde_json::from_slice(&body)
        .context("POST /v1/certs response is not IssuedCertificate")?;
    let reader = client::member_config(
        &issued.ca_pem,
        &IssuedCert {
            cert_pem: issued.cert_pem,
            key_pem: reader_key.key_pem.clone(),
        },
    )?;
    Ok(reader)
}

/// Retries `call` while the connection is refused (the listener may bind
/// just after the fingerprint is printed).
async fn retry_connect<F, Fut>(mut call: F) -> Result<(u16, Vec<u8>), RequestError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(u16, Vec<u8>), RequestError>>,
{
    let deadline = Instant::now() + SETUP_CALL_TIMEOUT;
    loop {
        match call().await {
            Err(RequestError::Connect(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Waits until nginx answers `GET /v1/node` for the reader with 200.
async fn wait_until_serving(
    reader: &Arc<ClientConfig>,
    addr: SocketAddr,
    nginx: &mut ChildGuard,
    error_log: &Path,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = nginx.exited() {
            bail!("nginx exited with {status}:\n{}", tail(error_log, 20));
        }
        match client::call(reader, addr, "GET", NODE_PATH, None, SETUP_CALL_TIMEOUT).await {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => bail!(
                "nginx answered {status}: {}\n{}",
                String::from_utf8_lossy(&body),
                tail(error_log, 20)
            ),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("nginx does not serve:\n{}", tail(error_log, 20))));
            }
        }
    }
}
