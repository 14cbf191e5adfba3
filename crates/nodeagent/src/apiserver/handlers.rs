//! One handler per operation of `api::ROUTES`. Authorization already
//! happened ([`super::authorize_request`]); handlers only do the work.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::types::{
    AgentRestartResponse, ApplyConfigRequest, ApplyConfigResponse, BootInfo, CertificateInfo,
    ClusterInfo, IssueCertificateRequest, IssuedCertificate, KernelLog, LogQuery,
    MachineConfigDocument, NetworkState, NodeInfo, PowerResponse, VersionInfo,
};
use api::{ErrorCode, Route, Timestamp};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Json};
use cluster::pki::{CertificateAuthority, SubjectName};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;

use super::initbus::InitBus;
use super::{
    Connection, Failure, JsonBody, Mode, QueryParams, ServerState, containers, identity, images,
    kv, membership, system,
};
use crate::config::{ActiveConfig, ConfigOrigin, ConfigReport, changed_sections, parse};
use crate::error_chain;

type Shared = State<Arc<ServerState>>;

/// Lifetime of the admin certificate made at bootstrap.
pub const ADMIN_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Shortest and longest client certificate `POST /v1/certs` issues.
pub const MIN_CERT_TTL: Duration = Duration::from_secs(60);
/// See [`MIN_CERT_TTL`].
pub const MAX_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How long a call to cairn-init may take before the API gives up on it.
const INIT_DEADLINE: Duration = Duration::from_secs(2);
/// How long a power request waits before asking init, so its response
/// gets out first.
const POWER_DELAY: Duration = Duration::from_millis(300);

/// The handler of `route`.
///
/// # Panics
///
/// On an operation without a handler: the server's tests build the router
/// from every route, so this cannot ship.
pub fn method_router(route: &Route) -> MethodRouter<Arc<ServerState>> {
    match route.operation {
        "version" => get(version),
        "node_info" => get(node_info),
        "node_logs" => get(node_logs),
        "node_dmesg" => get(node_dmesg),
        "node_network" => get(node_network),
        "node_config_get" => get(config_get),
        "node_config_apply" => put(config_apply),
        "node_reboot" => post(reboot),
        "node_shutdown" => post(shutdown),
        "cert_issue" => post(cert_issue),
        "cluster_bootstrap" => post(membership::bootstrap),
        "cluster_join" => post(membership::join),
        "cluster_status" => get(membership::status),
        "token_create" => post(membership::token_create),
        "token_list" => get(membership::token_list),
        "token_revoke" => post(membership::token_revoke),
        "member_add" => post(membership::member_add),
        "member_remove" => delete(membership::member_remove),
        "cluster_backup" => get(membership::backup),
        "cluster_restore" => post(membership::restore).layer(axum::extract::DefaultBodyLimit::max(
            membership::MAX_RESTORE_BYTES,
        )),
        "kv_list" => get(kv::list),
        "kv_get" => get(kv::get),
        "kv_put" => put(kv::put),
        "kv_delete" => delete(kv::delete),
        "kv_watch" => get(kv::watch),
        "image_list" => get(images::list),
        // The body is streamed to the store with its own cap
        // (images::MAX_IMPORT_BYTES), never buffered.
        "image_import" => post(images::import).layer(axum::extract::DefaultBodyLimit::disable()),
        "image_pull" => post(super::pull::pull),
        "image_export" => get(images::export),
        "image_remove" => delete(images::remove),
        "image_prune" => post(images::prune),
        "node_agent_restart" => post(restart_agent),
        "container_list" => get(containers::list),
        "container_create" => post(containers::create),
        "container_inspect" => get(containers::inspect),
        "container_remove" => delete(containers::remove),
        "container_start" => post(containers::start),
        "container_stop" => post(containers::stop),
        "container_restart" => post(containers::restart),
        "container_logs" => get(containers::logs),
        "container_exec" => post(containers::exec),
        other => panic!("api route {other} has no handler"),
    }
}

async fn version() -> Json<VersionInfo> {
    Json(VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        api: api::API_VERSION.to_owned(),
    })
}

fn certificate_info(purpose: &str, pem: &str) -> Option<CertificateInfo> {
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let summary = cluster::pki::describe(&der).ok()?;
    Some(CertificateInfo {
        purpose: purpose.to_owned(),
        subject: summary.common_name,
        fingerprint: summary.fingerprint.to_string(),
        not_before: Timestamp::from_system(summary.not_before),
        not_after: Timestamp::from_system(summary.not_after),
    })
}

fn boot_info(status: Option<std::collections::HashMap<String, String>>) -> BootInfo {
    let status = status.unwrap_or_default();
    let field = |k: &str| status.get(k).cloned().unwrap_or_default();
    let counter = field("counter");
    BootInfo {
        firmware: status
            .get("firmware")
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
        entry: field("entry"),
        counter: if counter.is_empty() {
            "unknown".into()
        } else {
            counter
        },
        tries_left: status.get("tries-left").and_then(|v| v.parse().ok()),
        loader: field("loader"),
    }
}

async fn node_info(State(state): Shared) -> Json<NodeInfo> {
    // A missing or stuck init must not hold node info up: after the
    // deadline the boot fields read "unknown" and the next call asks again.
    let boot = tokio::time::timeout(
        INIT_DEADLINE,
        state.boot_status.get_or_try_init(|| async {
            let bus = InitBus::connect(&state.options.init_socket).await?;
            bus.boot_status().await
        }),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .cloned();
    let (cluster, certificates) = state.read_mode(|mode| match mode {
        Mode::Member(m) => {
            let ca = certificate_info("cluster-ca", m.ca.cert_pem());
            let cluster = ca.as_ref().map(|ca| ClusterInfo {
                name: identity::cluster_name(&ca.subject).to_owned(),
                ca_fingerprint: ca.fingerprint.clone(),
            });
            let certs = [ca, certificate_info("node", &m.node.cert_pem)]
                .into_iter()
                .flatten()
                .collect();
            (cluster, certs)
        }
        Mode::Maintenance(m) => (
            None,
            certificate_info("maintenance", &m.cert.cert_pem)
                .into_iter()
                .collect(),
        ),
    });
    let status = state.network.status().borrow().clone();
    Json(NodeInfo {
        name: system::node_name(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        addresses: system::addresses(&status),
        uptime_s: system::uptime().as_secs(),
        kernel: system::kernel_release(),
        boot_id: state.boot_id.clone(),
        boot: boot_info(boot),
        cluster,
        certificates,
    })
}

async fn node_logs(State(state): Shared, QueryParams(query): QueryParams<LogQuery>) -> Response {
    let Some(journal) = state.journal.clone() else {
        return Failure::new(
            ErrorCode::Unavailable,
            "the system log is not available: the journal could not be opened at start (see the console)",
        )
        .into_response();
    };
    super::logs::respond(journal, query).await
}

async fn node_dmesg(State(state): Shared) -> Result<Json<KernelLog>, Failure> {
    let path = state.options.kmsg.clone();
    let entries = tokio::task::spawn_blocking(move || crate::journal::kmsg::read_kernel_log(&path))
        .await
        .map_err(|e| Failure::internal("reading the kernel log", &e))?
        .map_err(|e| Failure::internal("reading the kernel log", &e))?;
    Ok(Json(KernelLog { entries }))
}

async fn node_network(State(state): Shared) -> Json<NetworkState> {
    let status = state.network.status().borrow().clone();
    let routes = tokio::fs::read_to_string(state.options.proc_root.join("net/route"))
        .await
        .map(|text| system::parse_proc_net_route(&text))
        .unwrap_or_default();
    Json(system::network_state(&status, routes))
}

fn origin_name(origin: &ConfigOrigin) -> String {
    format!("{}: {origin}", origin.kind())
}

async fn config_get(State(state): Shared) -> Json<MachineConfigDocument> {
    let active = state.config.borrow().clone();
    let (toml, redacted) = active.redacted();
    Json(MachineConfigDocument {
        source: origin_name(&active.origin),
        toml,
        redacted,
    })
}

async fn config_apply(
    State(state): Shared,
    JsonBody(request): JsonBody<ApplyConfigRequest>,
) -> Result<Json<ApplyConfigResponse>, Failure> {
    let path = state.options.applied_config.clone();
    let origin = ConfigOrigin::Applied(path.clone());
    let config = parse(request.toml.as_bytes(), &origin)
        .map_err(|e| Failure::new(ErrorCode::InvalidConfig, error_chain(&e)))?;
    let _changing = state.changes.lock().await;
    let changed = changed_sections(&state.config.borrow().config, &config)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if request.dry_run {
        return Ok(Json(ApplyConfigResponse {
            applied: false,
            dry_run: true,
            changed,
        }));
    }
    let text = request.toml;
    let bytes = text.clone().into_bytes();
    let target = path.clone();
    tokio::task::spawn_blocking(move || crate::files::write_atomic(&target, &bytes))
        .await
        .map_err(|e| Failure::internal("saving the machine config", &e))?
        .map_err(|e| {
            Failure::internal(
                &format!("saving the machine config to {}", path.display()),
                &e,
            )
        })?;
    state
        .network
        .reconfigure(config.clone())
        .await
        .map_err(|e| Failure::internal("applying the machine config", &e))?;
    state.config.send_replace(ActiveConfig {
        config,
        origin: origin.clone(),
        text,
    });
    state.report.send_replace(ConfigReport::ok(origin));
    tracing::info!(?changed, "machine config applied through the API");
    Ok(Json(ApplyConfigResponse {
        applied: true,
        dry_run: false,
        changed,
    }))
}

#[derive(Clone, Copy)]
enum Power {
    Reboot,
    PowerOff,
}

/// A connection to cairn-init's D-Bus interface.
async fn init_bus(state: &ServerState) -> Result<InitBus, Failure> {
    tokio::time::timeout(INIT_DEADLINE, InitBus::connect(&state.options.init_socket))
        .await
        .map_err(|_| {
            Failure::new(
                ErrorCode::Unavailable,
                format!(
                    "cairn-init did not answer within {} s",
                    INIT_DEADLINE.as_secs()
                ),
            )
        })?
        .map_err(|e| Failure::new(ErrorCode::Unavailable, error_chain(&e)))
}

async fn power(
    state: &ServerState,
    action: Power,
) -> Result<(StatusCode, Json<PowerResponse>), Failure> {
    let bus = init_bus(state).await?;
    let name = match action {
        Power::Reboot => "reboot",
        Power::PowerOff => "poweroff",
    };
    tracing::warn!("{name} requested through the API");
    tokio::spawn(async move {
        tokio::time::sleep(POWER_DELAY).await;
        let result = match action {
            Power::Reboot => bus.reboot().await,
            Power::PowerOff => bus.power_off().await,
        };
        if let Err(e) = result {
            tracing::error!("{name} through cairn-init failed: {}", error_chain(&e));
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(PowerResponse {
            action: name.to_owned(),
            boot_id: state.boot_id.clone(),
        }),
    ))
}

async fn reboot(State(state): Shared) -> Result<(StatusCode, Json<PowerResponse>), Failure> {
    power(&state, Power::Reboot).await
}

async fn shutdown(State(state): Shared) -> Result<(StatusCode, Json<PowerResponse>), Failure> {
    power(&state, Power::PowerOff).await
}

/// Asks cairn-init for a new agent once the answer has left: init stops
/// this one as on shutdown (SIGTERM: leadership handed over, connections
/// drained) and starts another at once. Containers keep running under
/// their shims, and the new agent re-attaches to them.
async fn restart_agent(
    State(state): Shared,
) -> Result<(StatusCode, Json<AgentRestartResponse>), Failure> {
    let bus = init_bus(&state).await?;
    tracing::warn!("agent restart requested through the API");
    tokio::spawn(async move {
        tokio::time::sleep(POWER_DELAY).await;
        if let Err(e) = bus.restart_agent().await {
            tracing::error!("restart through cairn-init failed: {}", error_chain(&e));
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(AgentRestartResponse {
            pid: std::process::id(),
        }),
    ))
}

pub(super) fn subject_name(field: &str, value: &str) -> Result<SubjectName, Failure> {
    SubjectName::try_from(value)
        .map_err(|e| Failure::new(ErrorCode::BadRequest, format!("{field}: {e}")))
}

pub(super) fn csr_der(field: &str, pem: &str) -> Result<Vec<u8>, Failure> {
    CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.as_ref().to_vec())
        .map_err(|e| {
            Failure::new(
                ErrorCode::BadRequest,
                format!("{field}: not a PEM certificate signing request: {e}"),
            )
        })
}

fn pki_role(role: api::Role) -> cluster::pki::Role {
    match role {
        api::Role::Reader => cluster::pki::Role::Reader,
        api::Role::Operator => cluster::pki::Role::Operator,
        api::Role::Admin => cluster::pki::Role::Admin,
    }
}

pub(super) fn issued(
    ca: &CertificateAuthority,
    name: &SubjectName,
    role: api::Role,
    cert_pem: String,
) -> Result<IssuedCertificate, Failure> {
    let not_after = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .ok()
        .and_then(|der| cluster::pki::describe(&der).ok())
        .map(|s| Timestamp::from_system(s.not_after))
        .ok_or_else(|| {
            Failure::new(ErrorCode::Internal, "the issued certificate does not parse")
        })?;
    Ok(IssuedCertificate {
        name: name.as_str().to_owned(),
        role,
        cert_pem,
        ca_pem: ca.cert_pem().to_owned(),
        ca_fingerprint: ca.fingerprint().to_string(),
        not_after,
    })
}

async fn cert_issue(
    State(state): Shared,
    Extension(connection): Extension<Connection>,
    JsonBody(request): JsonBody<IssueCertificateRequest>,
) -> Result<Json<IssuedCertificate>, Failure> {
    let name = subject_name("name", &request.name)?;
    let ttl = Duration::from_secs(request.ttl_s);
    if !(MIN_CERT_TTL..=MAX_CERT_TTL).contains(&ttl) {
        return Err(Failure::new(
            ErrorCode::BadRequest,
            format!(
                "ttl_s: {} is out of range; certificates live {} to {} seconds",
                request.ttl_s,
                MIN_CERT_TTL.as_secs(),
                MAX_CERT_TTL.as_secs()
            ),
        ));
    }
    let csr = csr_der("csr_pem", &request.csr_pem)?;
    let ca = state
        .read_mode(|mode| match mode {
            Mode::Member(m) => Some(Arc::clone(&m.ca)),
            Mode::Maintenance(_) => None,
        })
        .ok_or_else(|| {
            Failure::new(
                ErrorCode::MaintenanceMode,
                "this node has no cluster CA yet",
            )
        })?;
    let role = request.role;
    let signer = Arc::clone(&ca);
    let subject = name.clone();
    let cert_pem = tokio::task::spawn_blocking(move || {
        signer.sign_client_csr(&csr, &subject, pki_role(role), ttl, SystemTime::now())
    })
    .await
    .map_err(|e| Failure::internal("signing the certificate", &e))?
    .map_err(|e| {
        Failure::new(
            ErrorCode::BadRequest,
            format!("csr_pem: {}", error_chain(&e)),
        )
    })?;
    tracing::info!(
        issued_to = name.as_str(),
        %role,
        ttl_s = request.ttl_s,
        by = connection.caller.name(),
        "client certificate issued"
    );
    Ok(Json(issued(&ca, &name, role, cert_pem)?))
}
