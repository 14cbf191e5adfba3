//! The health port: plain, read-only HTTP on `:7480`.
//!
//! - `GET /healthz`: 200 `ok` while the agent's main loop is ticking (it
//!   beats every second; ten seconds of silence count as stalled, 503).
//! - `GET /readyz`: 200 once the agent is alive and at least one link holds
//!   an address (from DHCP or static config), else 503 with a one-line
//!   reason. When the machine config was refused the body says so, but
//!   readiness is unaffected: the node is up on the embedded default.
//! - `GET /metrics`: see [`metrics`].
//!
//! Unknown paths answer 404, other methods 405. Requests are not logged:
//! probes hit these endpoints every few seconds.

pub mod metrics;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use self::metrics::{ClusterSample, MetricsSnapshot, ProcSample};
use crate::config::ConfigReport;
use crate::net::{Addressing, NetworkStatus};

/// The port of the health server.
pub const HEALTH_PORT: u16 = 7480;

/// How long the main loop may stay silent before /healthz fails.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// The agent loop's heartbeat and the first-ready time.
#[derive(Debug)]
pub struct Liveness {
    started: Instant,
    /// Milliseconds after `started` of the last beat.
    last_beat_ms: AtomicU64,
    /// CLOCK_BOOTTIME in milliseconds when first ready, 0 until then.
    ready_boottime_ms: AtomicU64,
}

impl Liveness {
    /// A heartbeat that starts beating now.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            last_beat_ms: AtomicU64::new(0),
            ready_boottime_ms: AtomicU64::new(0),
        }
    }

    fn ms_since_start(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// Records a beat at `now`.
    pub fn beat(&self, now: Instant) {
        self.last_beat_ms
            .store(self.ms_since_start(now), Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn silence(&self, now: Instant) -> Duration {
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.ms_since_start(now).saturating_sub(last))
    }

    /// Records the first readiness; later calls keep the first value.
    pub fn mark_ready(&self, boottime: Duration) -> bool {
        let ms = u64::try_from(boottime.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.ready_boottime_ms
            .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// CLOCK_BOOTTIME at first readiness.
    pub fn boot_duration(&self) -> Option<Duration> {
        match self.ready_boottime_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Time since the agent started.
    pub fn uptime(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }
}

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HealthState {
    /// Heartbeat and boot time.
    pub liveness: Arc<Liveness>,
    /// Network status from the network task.
    pub network: watch::Receiver<NetworkStatus>,
    /// Which config is in force.
    pub config: watch::Receiver<ConfigReport>,
    /// Where /proc is (a temp dir in tests).
    pub proc_root: PathBuf,
    /// The Raft member's numbers, when the node runs one.
    pub cluster: watch::Receiver<Option<ClusterSample>>,
}

/// Why the node is not ready, or `None` when it is.
pub fn not_ready_reason(state: &HealthState, now: Instant) -> Option<String> {
    let silence = state.liveness.silence(now);
    if silence > STALL_AFTER {
        return Some(format!("agent loop stalled for {}s", silence.as_secs()));
    }
    let network = state.network.borrow();
    if !network.is_configured() {
        let mut reason = "network not configured: no link has an address yet".to_owned();
        // Name what each addressable link is waiting for, so an operator
        // reading /readyz sees "no DHCP answer" vs "static address refused".
        let details: Vec<String> = network
            .links
            .values()
            .filter_map(|l| {
                let waiting = match l.addressing {
                    Addressing::Loopback | Addressing::UpOnly => return None,
                    Addressing::Dhcp | Addressing::DhcpAndStatic => "waiting for a DHCP lease",
                    Addressing::Static => "static addresses not applied",
                };
                Some(match &l.error {
                    Some(e) => format!("{}: {waiting} ({e})", l.name),
                    None => format!("{}: {waiting}", l.name),
                })
            })
            .collect();
        if !details.is_empty() {
            reason.push_str("; ");
            reason.push_str(&details.join("; "));
        }
        return Some(reason);
    }
    None
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn healthz(State(state): State<HealthState>) -> Response {
    let silence = state.liveness.silence(Instant::now());
    if silence > STALL_AFTER {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("agent loop stalled for {}s\n", silence.as_secs()),
        );
    }
    text(StatusCode::OK, "ok\n".to_owned())
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let config_note = state
        .config
        .borrow()
        .error
        .as_ref()
        .map(|e| format!("config: running on the embedded default: {e}\n"))
        .unwrap_or_default();
    match not_ready_reason(&state, Instant::now()) {
        Some(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n{config_note}"),
        ),
        None => text(StatusCode::OK, format!("ready\n{config_note}")),
    }
}

async fn metrics_handler(State(state): State<HealthState>) -> Response {
    let now = Instant::now();
    let addressed_links = state
        .network
        .borrow()
        .links
        .values()
        .filter(|l| l.is_addressed())
        .count();
    let ready = not_ready_reason(&state, now).is_none();
    let config = state.config.borrow().clone();
    let cluster = state.cluster.borrow().clone();
    let liveness = Arc::clone(&state.liveness);
    let proc_root = state.proc_root.clone();
    // One blocking hop for all /proc reads and the encoding.
    let rendered = tokio::task::spawn_blocking(move || {
        let proc: ProcSample = metrics::sample(&proc_root);
        metrics::encode(MetricsSnapshot {
            version: env!("CARGO_PKG_VERSION"),
            uptime: liveness.uptime(now),
            boot_duration: liveness.boot_duration(),
            ready,
            addressed_links,
            proc,
            config,
            cluster,
        })
    })
    .await;
    match rendered {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Ok(Err(std::fmt::Error)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n".to_owned(),
        ),
        Err(e) => {
            tracing::error!(error = %e, "metrics task failed");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics task failed\n".to_owned(),
            )
        }
    }
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "not found\n".to_owned())
}

/// The health router.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .fallback(not_found)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::config::{ConfigOrigin, Ipv4Cidr};
    use crate::net::LinkStatus;

    struct Fixture {
        state: HealthState,
        network: watch::Sender<NetworkStatus>,
        config: watch::Sender<ConfigReport>,
    }

    fn fixture() -> Fixture {
        let (network, network_rx) = watch::channel(NetworkStatus::default());
        let (config, config_rx) = watch::channel(ConfigReport::ok(ConfigOrigin::Default));
        let liveness = Arc::new(Liveness::new(Instant::now()));
        liveness.beat(Instant::now());
        Fixture {
            state: HealthState {
                liveness,
                network: network_rx,
                config: config_rx,
                proc_root: metrics::default_proc_root(),
                cluster: watch::channel(None).1,
            },
            network,
            config,
        }
    }

    fn addressed() -> NetworkStatus {
        let mut status = NetworkStatus::default();
        status.links.insert(
            2,
            LinkStatus {
                name: "eth0".into(),
                mac: None,
                addressing: Addressing::Static,
                static_addresses: vec!["10.0.0.5/24".parse::<Ipv4Cidr>().unwrap()],
                lease: None,
                error: None,
            },
        );
        status
    }

    async fn call(
        state: &HealthState,
        method: &str,
        uri: &str,
    ) -> (StatusCode, String, Option<String>) {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            content_type,
        )
    }

    #[tokio::test]
    async fn healthz_is_ok_while_the_loop_beats() {
        let f = fixture();
        assert_eq!(call(&f.state, "GET", "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn healthz_fails_when_the_loop_stalls() {
        let f = fixture();
        let long_ago = Instant::now().checked_sub(Duration::from_secs(60)).unwrap();
        let liveness = Arc::new(Liveness::new(long_ago));
        liveness.beat(long_ago);
        let state = HealthState {
            liveness,
            ..f.state.clone()
        };
        let (code, body, _) = call(&state, "GET", "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.starts_with("agent loop stalled"), "{body}");
    }

    #[tokio::test]
    async fn readyz_names_what_each_link_waits_for() {
        let f = fixture();
        let mut status = addressed();
        for link in status.links.values_mut() {
            link.static_addresses.clear();
            link.error = Some("cannot add address 10.0.0.5/24 to link 2: File exists".into());
        }
        status.links.insert(
            3,
            LinkStatus {
                name: "eth1".into(),
                mac: None,
                addressing: Addressing::Dhcp,
                static_addresses: vec![],
                lease: None,
                error: None,
            },
        );
        f.network.send(status).unwrap();
        let (code, body, _) = call(&f.state, "GET", "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "not ready: network not configured: no link has an address yet; \
             eth0: static addresses not applied (cannot add address 10.0.0.5/24 to link 2: File exists); \
             eth1: waiting for a DHCP lease\n"
        );
    }

    #[tokio::test]
    async fn readyz_waits_for_an_address() {
        let f = fixture();
        let (code, body, _) = call(&f.state, "GET", "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "not ready: network not configured: no link has an address yet\n"
        );
        f.network.send(addressed()).unwrap();
        let (code, body, _) = call(&f.state, "GET", "/readyz").await;
        assert_eq!((code, body.as_str()), (StatusCode::OK, "ready\n"));
    }

    #[tokio::test]
    async fn readyz_stays_ready_on_a_refused_config_but_says_why() {
        let f = fixture();
        f.network.send(addressed()).unwrap();
        f.config
            .send(ConfigReport::failed(
                ConfigOrigin::FwCfg("/x".into()),
                "opt/cairn/config (fw_cfg): network.bogus: unknown field".into(),
            ))
            .unwrap();
        let (code, body, _) = call(&f.state, "GET", "/readyz").await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            body.contains(
                "config: running on the embedded default: opt/cairn/config (fw_cfg): network.bogus"
            ),
            "{body}"
        );
        let (_, metrics, _) = call(&f.state, "GET", "/metrics").await;
        assert!(
            metrics.contains(
                "cairn_config_source{source=\"default\",requested=\"fw_cfg\",error=\"1\"} 1"
            ),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn metrics_reports_this_process_in_openmetrics_text() {
        let f = fixture();
        let (code, body, content_type) = call(&f.state, "GET", "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(metrics::CONTENT_TYPE));
        assert!(
            body.contains("cairn_process_resident_bytes{process=\"cairnd\"} "),
            "{body}"
        );
        assert!(body.contains("cairn_memory_total_bytes "), "{body}");
        assert!(body.contains(&format!(
            "cairn_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(body.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_wrong_methods_405() {
        let f = fixture();
        assert_eq!(
            call(&f.state, "GET", "/nope").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&f.state, "POST", "/readyz").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            call(&f.state, "DELETE", "/metrics").await.0,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(call(&f.state, "HEAD", "/healthz").await.0, StatusCode::OK);
    }

    #[test]
    fn first_readiness_is_kept() {
        let l = Liveness::new(Instant::now());
        assert_eq!(l.boot_duration(), None);
        assert!(l.mark_ready(Duration::from_millis(4200)));
        assert!(!l.mark_ready(Duration::from_millis(9000)));
        assert_eq!(l.boot_duration(), Some(Duration::from_millis(4200)));
    }
}
