//! The agent's runtime: wires config, network and health together and runs
//! the main loop until SIGTERM.
//!
//! Start-up order matters for the operator: the config is resolved first
//! (a refused config is logged at error level and the embedded default
//! runs), then the network task starts, then the health server binds, so
//! `/readyz` is reachable as soon as any link has an address. A config
//! named by an `http://` URL on the kernel command line is fetched once
//! the default network is up, and applied over it.
//!
//! The main loop beats once a second (that is what `/healthz` checks) and
//! records the boot duration when the node first becomes ready. SIGTERM or
//! SIGINT stop the health server, release DHCP leases and return; the
//! whole shutdown is bounded to a couple of seconds because cairn-init
//! sends SIGKILL after its deadline.

use std::io;
use std::net::{AddrParseError, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{oneshot, watch};

use crate::apiserver::{self, ApiOptions, ServerState};
use crate::config::source::{ConfigLoadError, Discovered, FetchPolicy, HttpUrl, discover, fetch};
use crate::config::{ActiveConfig, ConfigOrigin, ConfigPaths, ConfigReport, parse};
use crate::error_chain;
use crate::health::metrics::ClusterSample;
use crate::health::{self, HealthState, Liveness};
use crate::journal::{self, Journal};
use crate::member::MemberOptions;
use crate::net::netlink::NetlinkError;
use crate::net::{NetworkHandle, NetworkOptions, NetworkStatus};

/// Overrides the health server address (default `0.0.0.0:7480`).
pub const ENV_HEALTH_ADDR: &str = "CAIRN_HEALTH_ADDR";
/// Overrides the API address (default `0.0.0.0:7443`).
pub const ENV_API_ADDR: &str = "CAIRN_API_ADDR";
/// Overrides the state directory (default `/var/lib/cairn`): PKI, applied
/// config, logs.
pub const ENV_STATE_DIR: &str = "CAIRN_STATE_DIR";
/// Overrides cairn-init's D-Bus socket (default `/run/cairn/init.sock`).
pub const ENV_INIT_SOCKET: &str = "CAIRN_INIT_SOCKET";
/// Overrides the Raft peer port's address (default `0.0.0.0:7444`).
pub const ENV_PEER_ADDR: &str = "CAIRN_PEER_ADDR";

/// The state directory on STATE.
pub const STATE_DIR: &str = "/var/lib/cairn";

/// How long the network may take to release leases at shutdown.
const NETWORK_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long the Raft member may take to hand leadership over and close
/// its peer port at shutdown (cairn-init waits 10 s before SIGKILL).
const MEMBER_STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long in-flight health requests may take at shutdown.
const SERVER_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an `http://` config fetch waits for the network first.
const FETCH_NETWORK_WAIT: Duration = Duration::from_secs(120);

/// Everything the agent reads from its environment.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Config source paths.
    pub config_paths: ConfigPaths,
    /// Network manager paths and knobs.
    pub network: NetworkOptions,
    /// Health server address.
    pub health_addr: SocketAddr,
    /// Where /proc is.
    pub proc_root: PathBuf,
    /// Retry policy for an `http://` config.
    pub fetch_policy: FetchPolicy,
    /// The API server.
    pub api: ApiOptions,
    /// The system log's directory.
    pub logs_dir: PathBuf,
    /// The system log, when it could be opened.
    pub journal: Option<Journal>,
}

impl ApiOptions {
    /// The API's paths under a state directory.
    pub fn under(state_dir: &Path) -> Self {
        Self {
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, api::API_PORT)),
            pki_dir: state_dir.join("pki"),
            applied_config: state_dir.join("config.toml"),
            init_socket: PathBuf::from("/run/cairn/init.sock"),
            kmsg: PathBuf::from("/dev/kmsg"),
            proc_root: PathBuf::from("/proc"),
            network_wait: API_NETWORK_WAIT,
            renew_check: RENEW_CHECK_INTERVAL,
            member: MemberOptions::under(state_dir),
            images_dir: state_dir.join(crate::images::IMAGES_DIR),
            baked_images_dir: crate::images::baked::default_dir(),
            containers_dir: state_dir.join(crate::containers::CONTAINERS_DIR),
            volumes_dir: state_dir.join(crate::containers::VOLUMES_DIR),
            shim: PathBuf::from(runtime::paths::SHIM_BINARY),
        }
    }
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            config_paths: ConfigPaths::default(),
            network: NetworkOptions::default(),
            health_addr: SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                health::HEALTH_PORT,
            )),
            proc_root: health::metrics::default_proc_root(),
            fetch_policy: FetchPolicy::default(),
            api: ApiOptions::under(Path::new(STATE_DIR)),
            logs_dir: PathBuf::from(journal::DEFAULT_DIR),
            journal: None,
        }
    }
}

impl AgentOptions {
    /// Defaults, with the `CAIRN_*` overrides applied.
    pub fn from_env() -> Result<Self, AgentError> {
        let mut options = Self::default();
        let addr = |name: &'static str| -> Result<Option<SocketAddr>, AgentError> {
            let Some(value) = std::env::var_os(name) else {
                return Ok(None);
            };
            let value = value.to_string_lossy().into_owned();
            value.parse().map(Some).map_err(|source| AgentError::Addr {
                name,
                value,
                source,
            })
        };
        if let Some(a) = addr(ENV_HEALTH_ADDR)? {
            options.health_addr = a;
        }
        if let Some(dir) = std::env::var_os(ENV_STATE_DIR) {
            let dir = PathBuf::from(dir);
            options.config_paths.applied = dir.join("config.toml");
            options.api = ApiOptions::under(&dir);
            options.logs_dir = dir.join("logs");
        }
        if let Some(a) = addr(ENV_API_ADDR)? {
            options.api.addr = a;
        }
        if let Some(socket) = std::env::var_os(ENV_INIT_SOCKET) {
            options.api.init_socket = PathBuf::from(socket);
        }
        if let Some(a) = addr(ENV_PEER_ADDR)? {
            options.api.member.peer_addr = a;
        }
        Ok(options)
    }
}

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An address override is not a socket address.
    #[error("invalid {name} {value:?}")]
    Addr {
        /// The variable.
        name: &'static str,
        /// The value.
        value: String,
        /// The parse failure.
        #[source]
        source: AddrParseError,
    },
    /// A signal handler could not be installed.
    #[error("cannot install the {name} handler")]
    Signal {
        /// Signal name.
        name: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The config discovery thread died.
    #[error("config discovery failed")]
    Discover(#[source] tokio::task::JoinError),
    /// The network task could not start.
    #[error("cannot start the network task")]
    Network(#[source] NetlinkError),
    /// The health port could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The health server stopped on its own.
    #[error("health server failed")]
    Serve(#[source] io::Error),
    /// The network task stopped on its own.
    #[error("the network task stopped unexpectedly")]
    NetworkStopped,
}

/// The config to start on, what to report, and a URL to fetch if any.
fn resolve(discovered: Discovered) -> (ActiveConfig, ConfigReport, Option<HttpUrl>) {
    let refuse = |error: ConfigLoadError| {
        let message = error_chain(&error);
        tracing::error!("machine config refused: {message}; running on the embedded default");
        (
            ActiveConfig::embedded_default(),
            ConfigReport::failed(error.origin(), message),
            None,
        )
    };
    match discovered {
        Discovered::Document { origin, bytes } => match parse(&bytes, &origin) {
            Ok(config) => {
                tracing::info!(source = %origin, "machine config loaded");
                let active = ActiveConfig {
                    config,
                    origin: origin.clone(),
                    text: String::from_utf8_lossy(&bytes).into_owned(),
                };
                (active, ConfigReport::ok(origin), None)
            }
            Err(e) => refuse(ConfigLoadError::Parse(e)),
        },
        Discovered::Fetch(url) => {
            tracing::info!(%url, "machine config will be fetched once the network is up");
            let report = ConfigReport {
                effective: ConfigOrigin::Default,
                requested: ConfigOrigin::CmdlineUrl(url.clone()),
                error: None,
            };
            (ActiveConfig::embedded_default(), report, Some(url))
        }
        Discovered::Nothing => {
            tracing::info!(
                "no machine config found; running on the embedded default (DHCP on every physical link)"
            );
            (
                ActiveConfig::embedded_default(),
                ConfigReport::ok(ConfigOrigin::Default),
                None,
            )
        }
        Discovered::Failed(e) => refuse(e),
    }
}

/// Fetches an `http://` config once the network is up and applies it.
async fn fetch_and_apply(
    url: HttpUrl,
    policy: FetchPolicy,
    network: NetworkHandle,
    active: watch::Sender<ActiveConfig>,
    report: watch::Sender<ConfigReport>,
) {
    let mut status = network.status();
    if tokio::time::timeout(
        FETCH_NETWORK_WAIT,
        status.wait_for(NetworkStatus::is_configured),
    )
    .await
    .is_err()
    {
        tracing::warn!(%url, "network still not configured; trying the config fetch anyway");
    }
    let origin = ConfigOrigin::CmdlineUrl(url.clone());
    let result = match fetch(&url, policy).await {
        Ok(bytes) => parse(&bytes, &origin)
            .map(|config| (config, bytes))
            .map_err(ConfigLoadError::Parse),
        Err(e) => Err(e),
    };
    match result {
        Ok((config, bytes)) => {
            tracing::info!(source = %origin, "machine config fetched; applying it");
            if network.reconfigure(config.clone()).await.is_err() {
                tracing::error!("network task is gone; fetched config not applied");
                return;
            }
            active.send_replace(ActiveConfig {
                config,
                origin: origin.clone(),
                text: String::from_utf8_lossy(&bytes).into_owned(),
            });
            report.send_replace(ConfigReport::ok(origin));
        }
        Err(e) => {
            let message = error_chain(&e);
            tracing::error!("machine config refused: {message}; running on the embedded default");
            report.send_replace(ConfigReport::failed(origin, message));
        }
    }
}

/// How long the API waits for an address before it announces itself
/// anyway (the console line then has no endpoint).
const API_NETWORK_WAIT: Duration = Duration::from_secs(60);
/// How often the node certificate is checked for renewal.
const RENEW_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// Starts the API once the network has an address and keys exist, then
/// serves it until `stop`. A failure here is logged, not fatal: the node
/// keeps its network and health port, and cairn-init's restart of cairnd
/// would not fix a broken PKI.
async fn run_api(
    options: ApiOptions,
    network: NetworkHandle,
    active: watch::Sender<ActiveConfig>,
    report: watch::Sender<ConfigReport>,
    journal: Option<Journal>,
    cluster_metrics: watch::Sender<Option<ClusterSample>>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut status = network.status();
    tokio::select! {
        _ = tokio::time::timeout(options.network_wait, status.wait_for(NetworkStatus::is_configured)) => {}
        () = &mut stop => return,
    }
    let addr = options.addr;
    let renew_check = options.renew_check;
    let mut config_changes = active.subscribe();
    let loading = tokio::task::spawn_blocking(move || {
        ServerState::load(options, network, active, report, journal)
    });
    let state = tokio::select! {
        loaded = loading => match loaded {
            Ok(Ok(state)) => Arc::new(state),
            Ok(Err(e)) => {
                tracing::error!("api not started: {}", error_chain(&e));
                return;
            }
            Err(e) => {
                tracing::error!("api not started: {e}");
                return;
            }
        },
        () = &mut stop => return,
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("api not started: cannot listen on {addr}: {e}");
            return;
        }
    };
    tracing::info!(%addr, "api listening");
    state.announce();
    // The API serves while the member starts: node info and logs help
    // most when the member cannot.
    let resume = {
        let state = Arc::clone(&state);
        async move {
            if let Err(e) = state.resume_member().await {
                tracing::error!("the raft member did not start: {}", error_chain(&e));
            }
            state.join_from_config().await;
            std::future::pending::<()>().await;
        }
    };
    let renewals = {
        let state = Arc::clone(&state);
        async move {
            let mut tick = tokio::time::interval(renew_check);
            loop {
                tick.tick().await;
                state.renew_if_due().await;
            }
        }
    };
    // A config fetched or applied later may carry another setup token:
    // the console must show the one in force.
    let reannounce = {
        let state = Arc::clone(&state);
        async move {
            let mut shown = state.setup_token();
            while config_changes.changed().await.is_ok() {
                let now = state.setup_token();
                if now != shown {
                    state.announce();
                    shown = now;
                }
            }
            // The config channel closes only at shutdown; keep serving.
            std::future::pending::<()>().await;
        }
    };
    // Containers keep running through an agent restart; re-attach to
    // their shims (and start what a reboot stopped) without waiting for
    // the first request.
    let containers = {
        let state = Arc::clone(&state);
        async move {
            if let Err(e) = state.containers().await {
                tracing::error!("containers not available: {}", e.message());
            }
            std::future::pending::<()>().await;
        }
    };
    // The health port's view of the member, refreshed once a second.
    let sampling = {
        let state = Arc::clone(&state);
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let sample = state.running_member().and_then(|m| m.sample());
                cluster_metrics.send_replace(sample);
            }
        }
    };
    tokio::select! {
        () = apiserver::serve(listener, Arc::clone(&state), &mut stop) => {}
        () = renewals => {}
        () = reannounce => {}
        () = resume => {}
        () = sampling => {}
        () = containers => {}
    }
    if tokio::time::timeout(MEMBER_STOP_TIMEOUT, state.stop_member())
        .await
        .is_err()
    {
        tracing::warn!("the raft member did not stop in time");
    }
}

/// CLOCK_BOOTTIME now: time since the kernel started, suspend included.
fn boottime() -> Option<Duration> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    Some(Duration::from(ts))
}

fn note_readiness(status: &NetworkStatus, liveness: &Liveness) {
    if status.is_configured()
        && liveness.boot_duration().is_none()
        && let Some(since_boot) = boottime()
        && liveness.mark_ready(since_boot)
    {
        tracing::info!(
            boot_secs = format!("{:.2}", since_boot.as_secs_f64()),
            "node ready"
        );
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(options: AgentOptions) -> Result<(), AgentError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| AgentError::Signal {
        name: "SIGTERM",
        source,
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| AgentError::Signal {
        name: "SIGINT",
        source,
    })?;
    let stop = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = sigint.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    };
    run_until(options, stop).await
}

/// Runs the agent until `stop` completes (or something fails).
pub async fn run_until(
    options: AgentOptions,
    stop: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let started = Instant::now();
    let liveness = Arc::new(Liveness::new(started));
    liveness.beat(started);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "cairnd starting");
    let mut stop = std::pin::pin!(stop);

    let paths = options.config_paths.clone();
    let discovered = tokio::task::spawn_blocking(move || discover(&paths))
        .await
        .map_err(AgentError::Discover)?;
    let (active, report, fetch_url) = resolve(discovered);
    let config = active.config.clone();
    let (report_tx, report_rx) = watch::channel(report);
    let (active_tx, _) = watch::channel(active);

    let (network, mut network_task) =
        NetworkHandle::spawn(config, options.network.clone()).map_err(AgentError::Network)?;
    let mut status = network.status();

    let listener = tokio::net::TcpListener::bind(options.health_addr)
        .await
        .map_err(|source| AgentError::Bind {
            addr: options.health_addr,
            source,
        })?;
    tracing::info!(addr = %options.health_addr, "health server listening");
    let (cluster_tx, cluster_rx) = watch::channel(None);
    let state = HealthState {
        liveness: Arc::clone(&liveness),
        network: network.status(),
        config: report_rx,
        proc_root: options.proc_root.clone(),
        cluster: cluster_rx,
    };
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(
        axum::serve(listener, health::router(state))
            .with_graceful_shutdown(async move {
                let _ = server_stopped.await;
            })
            .into_future(),
    );

    let fetcher = fetch_url.map(|url| {
        tokio::spawn(fetch_and_apply(
            url,
            options.fetch_policy,
            network.clone(),
            active_tx.clone(),
            report_tx.clone(),
        ))
    });

    let init_lines = options.journal.clone().map(|journal| {
        let kmsg = options.api.kmsg.clone();
        tokio::spawn(async move {
            if let Err(e) = journal::kmsg::run_init_reader(journal, kmsg).await {
                tracing::warn!(
                    "cairn-init's lines will not reach the journal: {}",
                    error_chain(&e)
                );
            }
        })
    });

    let (stop_api, api_stopped) = oneshot::channel::<()>();
    let api = tokio::spawn(run_api(
        options.api.clone(),
        network.clone(),
        active_tx.clone(),
        report_tx.clone(),
        options.journal.clone(),
        cluster_tx,
        async move {
            let _ = api_stopped.await;
        },
    ));

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            _ = tick.tick() => {
                liveness.beat(Instant::now());
                note_readiness(&status.borrow(), &liveness);
            }
            changed = status.changed() => {
                if changed.is_err() {
                    break Err(AgentError::NetworkStopped);
                }
                note_readiness(&status.borrow_and_update(), &liveness);
            }
            () = &mut stop => break Ok(()),
            result = &mut server => {
                break Err(match result {
                    Ok(Ok(())) => AgentError::Serve(io::Error::other("server exited")),
                    Ok(Err(e)) => AgentError::Serve(e),
                    Err(e) => AgentError::Serve(io::Error::other(e)),
                });
            }
            _ = &mut network_task => break Err(AgentError::NetworkStopped),
        }
    };

    if let Some(fetcher) = fetcher {
        fetcher.abort();
    }
    if let Some(reader) = init_lines {
        reader.abort();
    }
    let _ = stop_api.send(());
    let _ = stop_server.send(());
    if tokio::time::timeout(NETWORK_SHUTDOWN_TIMEOUT, network.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("network shutdown timed out");
    }
    if !server.is_finished()
        && tokio::time::timeout(SERVER_SHUTDOWN_TIMEOUT, &mut server)
            .await
            .is_err()
    {
        server.abort();
    }
    if tokio::time::timeout(SERVER_SHUTDOWN_TIMEOUT + MEMBER_STOP_TIMEOUT, api)
        .await
        .is_err()
    {
        tracing::warn!("api server shutdown timed out");
    }
    tracing::info!("cairnd stopped");
    if let Some(journal) = &options.journal
        && tokio::time::timeout(SERVER_SHUTDOWN_TIMEOUT, journal.flush())
            .await
            .is_err()
    {
        eprintln!("cairnd: the journal did not flush in time");
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_config_falls_back_to_the_default_and_is_reported() {
        let origin = ConfigOrigin::FwCfg("/raw".into());
        let (config, report, url) = resolve(Discovered::Document {
            origin: origin.clone(),
            bytes: b"[network]\nbogus = 1\n".to_vec(),
        });
        assert_eq!(config, ActiveConfig::embedded_default());
        assert!(url.is_none());
        assert_eq!(report.effective, ConfigOrigin::Default);
        assert_eq!(report.requested, origin);
        let error = report.error.unwrap();
        assert!(
            error.starts_with("opt/cairn/config (fw_cfg): network.bogus: unknown field `bogus`"),
            "{error}"
        );
    }

    #[test]
    fn a_good_config_is_used_as_is() {
        let origin = ConfigOrigin::Esp("/efi/cairn/config.toml".into());
        let (config, report, _) = resolve(Discovered::Document {
            origin: origin.clone(),
            bytes: b"[node]\nhostname = \"n1\"\n".to_vec(),
        });
        assert_eq!(config.config.node.hostname.unwrap().as_str(), "n1");
        assert_eq!(config.text, "[node]\nhostname = \"n1\"\n");
        assert_eq!(report, ConfigReport::ok(origin));
    }

    #[test]
    fn an_http_config_starts_on_the_default_and_asks_for_a_fetch() {
        let url = HttpUrl::parse("http://10.0.0.1/c.toml").unwrap();
        let (config, report, fetch) = resolve(Discovered::Fetch(url.clone()));
        assert_eq!(config, ActiveConfig::embedded_default());
        assert_eq!(report.requested, ConfigOrigin::CmdlineUrl(url.clone()));
        assert!(report.error.is_none());
        assert_eq!(fetch, Some(url));
    }

    #[test]
    fn boottime_is_readable() {
        assert!(boottime().is_some_and(|t| t > Duration::ZERO));
    }
}
