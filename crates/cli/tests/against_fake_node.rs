//! Runs the real `cairn` binary against a minimal in-test node API: HTTPS
//! on 127.0.0.1 with a self-signed certificate until bootstrap, then the
//! cluster CA's node certificate with client certificates required. Only
//! what the CLI's behaviour depends on is faked; the real server is
//! tested in nodeagent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use api::types::{
    BootInfo, BootstrapRequest, BootstrapResponse, ClusterInfo, IssuedCertificate, LogEntry,
    LogLevel, LogSource, NodeInfo, VersionInfo,
};
use api::{ApiError, ErrorCode, Timestamp};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cluster::pki::{CertificateAuthority, Fingerprint, NodeCertRequest, Role, SubjectName};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const TOKEN: &str = "correct-horse";

struct NodeState {
    ca: CertificateAuthority,
    bootstrapped: AtomicBool,
    maintenance: TlsAcceptor,
    member: TlsAcceptor,
    maintenance_fingerprint: Fingerprint,
    /// Released by the test to let the followed log go on.
    release_log: Notify,
    /// The query string the last logs request carried.
    logs_query: Mutex<Option<String>>,
    /// Whether reboots are allowed (else they are refused as role_too_low).
    allow_reboot: AtomicBool,
    /// Node info calls since the last accepted reboot; the first one
    /// answers 503 as a node still coming up would.
    polls_since_reboot: Mutex<Option<u32>>,
}

/// Accepts TCP connections and completes the TLS handshake with the
/// acceptor for the node's current mode; failed handshakes (a client that
/// refused the certificate) are dropped and the next one is taken.
struct TlsListener {
    tcp: TcpListener,
    state: Arc<NodeState>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            let acceptor = if self.state.bootstrapped.load(Ordering::SeqCst) {
                &self.state.member
            } else {
                &self.state.maintenance
            };
            if let Ok(tls) = acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn name(s: &str) -> SubjectName {
    SubjectName::try_from(s).expect("valid name")
}

fn maintenance_acceptor() -> (TlsAcceptor, Fingerprint) {
    let own = cluster::pki::self_signed_server(
        &NodeCertRequest {
            name: name("node-1"),
            dns_names: vec![],
            ip_addresses: vec![],
        },
        SystemTime::now(),
    )
    .expect("self-signed certificate");
    let cert = CertificateDer::from_pem_slice(own.cert_pem.as_bytes()).expect("cert pem");
    let key = PrivateKeyDer::from_pem_slice(own.key_pem.as_bytes()).expect("key pem");
    let fingerprint = Fingerprint::of_der(&cert);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("server config");
    (TlsAcceptor::from(Arc::new(config)), fingerprint)
}

fn member_acceptor(ca: &CertificateAuthority) -> TlsAcceptor {
    let own = ca
        .issue_node(
            &NodeCertRequest {
                name: name("node-1"),
                dns_names: vec!["localhost".to_owned()],
                ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            },
            SystemTime::now(),
        )
        .expect("node certificate");
    let config = cluster::pki::tls::server_config(ca.cert_der(), &own).expect("server config");
    TlsAcceptor::from(Arc::new(config))
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(body).expect("serialise"),
    )
        .into_response()
}

fn refuse(code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.status()).expect("status");
    json_response(status, &ApiError::new(code, message))
}

async fn bootstrap(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<BootstrapRequest>(&body) else {
        return refuse(ErrorCode::BadRequest, "bad bootstrap request");
    };
    if request.setup_token != TOKEN {
        return refuse(
            ErrorCode::InvalidSetupToken,
            "the setup token does not match",
        );
    }
    let csr = CertificateSigningRequestDer::from_pem_slice(request.admin_csr_pem.as_bytes())
        .expect("csr pem");
    let cert_pem = state
        .ca
        .sign_client_csr(
            &csr,
            &name(&request.admin_name),
            Role::Admin,
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .expect("sign");
    state.bootstrapped.store(true, Ordering::SeqCst);
    json_response(
        StatusCode::OK,
        &BootstrapResponse {
            node_name: "node-1".to_owned(),
            cluster_name: request.cluster_name.unwrap_or_else(|| "cairn".to_owned()),
            admin: IssuedCertificate {
                name: request.admin_name,
                role: api::Role::Admin,
                cert_pem,
                ca_pem: state.ca.cert_pem().to_owned(),
                ca_fingerprint: state.ca.fingerprint().to_string(),
                not_after: Timestamp::from_system(SystemTime::now() + Duration::from_secs(3600)),
            },
        },
    )
}

async fn node_info(State(state): State<Arc<NodeState>>) -> Response {
    let boot_id = {
        let mut polls = state.polls_since_reboot.lock().expect("lock");
        match polls.as_mut() {
            None => "boot-1",
            Some(n) => {
                *n += 1;
                if *n == 1 {
                    return refuse(ErrorCode::Unavailable, "the node is starting");
                }
                "boot-2"
            }
        }
    };
    json_response(
        StatusCode::OK,
        &NodeInfo {
            name: "node-1".to_owned(),
            version: "0.1.0".to_owned(),
            addresses: vec!["127.0.0.1/8".to_owned()],
            uptime_s: 42,
            kernel: "6.1.0-56-amd64".to_owned(),
            boot_id: boot_id.to_owned(),
            boot: BootInfo {
                firmware: "uefi".to_owned(),
                entry: "cairn-0.1.0.conf".to_owned(),
                counter: "good".to_owned(),
                tries_left: None,
                loader: "systemd-boot".to_owned(),
            },
            cluster: Some(ClusterInfo {
                name: "cairn".to_owned(),
                ca_fingerprint: state.ca.fingerprint().to_string(),
            }),
            certificates: vec![],
        },
    )
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &VersionInfo {
            version: "0.1.0".to_owned(),
            api: "v1".to_owned(),
        },
    )
}

async fn reboot(State(state): State<Arc<NodeState>>) -> Response {
    if !state.allow_reboot.load(Ordering::SeqCst) {
        return refuse(
            ErrorCode::RoleTooLow,
            "role reader is too low for node_reboot (needs operator)",
        );
    }
    *state.polls_since_reboot.lock().expect("lock") = Some(0);
    json_response(
        StatusCode::ACCEPTED,
        &api::types::PowerResponse {
            action: "reboot".to_owned(),
            boot_id: "boot-1".to_owned(),
        },
    )
}

async fn apply_config(body: Bytes) -> Response {
    let request: api::types::ApplyConfigRequest =
        serde_json::from_slice(&body).expect("apply request");
    if request.toml.contains("bad") {
        return refuse(
            ErrorCode::InvalidConfig,
            "node.hostname: \"bad name\" is not a valid host name",
        );
    }
    json_response(
        StatusCode::OK,
        &api::types::ApplyConfigResponse {
            applied: !request.dry_run,
            dry_run: request.dry_run,
            changed: vec!["node".to_owned()],
        },
    )
}

async fn issue_cert(State(state): State<Arc<NodeState>>, body: Bytes) -> Response {
    let request: api::types::IssueCertificateRequest =
        serde_json::from_slice(&body).expect("issue request");
    let csr =
        CertificateSigningRequestDer::from_pem_slice(request.csr_pem.as_bytes()).expect("csr pem");
    let role = match request.role {
        api::Role::Reader => Role::Reader,
        api::Role::Operator => Role::Operator,
        api::Role::Admin => Role::Admin,
    };
    let ttl = Duration::from_secs(request.ttl_s);
    let cert_pem = state
        .ca
        .sign_client_csr(&csr, &name(&request.name), role, ttl, SystemTime::now())
        .expect("sign");
    json_response(
        StatusCode::OK,
        &IssuedCertificate {
            name: request.name,
            role: request.role,
            cert_pem,
            ca_pem: state.ca.cert_pem().to_owned(),
            ca_fingerprint: state.ca.fingerprint().to_string(),
            not_after: Timestamp::from_system(SystemTime::now() + ttl),
        },
    )
}

fn log_line(n: u32) -> String {
    let entry = LogEntry {
        ts: Timestamp::from_unix(1_800_000_000 + i64::from(n)).expect("ts"),
        boot_id: "boot-1".to_owned(),
        source: LogSource::Cairnd,
        level: LogLevel::Info,
        message: format!("entry {n}"),
    };
    format!("{}\n", serde_json::to_string(&entry).expect("serialise"))
}

/// Two entries at once, then (split across writes) a third only after the
/// test releases it, then the end of the stream.
async fn logs(State(state): State<Arc<NodeState>>, RawQuery(query): RawQuery) -> Response {
    *state.logs_query.lock().expect("lock") = query;
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let state = state.clone();
        async move {
            let chunk = match step {
                0 => format!("{}{}", log_line(1), log_line(2)),
                1 => {
                    state.release_log.notified().await;
                    let line = log_line(3);
                    line[..10].to_owned()
                }
                2 => log_line(3)[10..].to_owned(),
                _ => return None,
            };
            Some((Ok::<_, std::convert::Infallible>(chunk), step + 1))
        }
    });
    (
        [(header::CONTENT_TYPE, api::NDJSON)],
        Body::from_stream(stream),
    )
        .into_response()
}

struct FakeNode {
    addr: SocketAddr,
    state: Arc<NodeState>,
}

impl FakeNode {
    fn start() -> Self {
        Self::start_on("127.0.0.1:0")
    }

    /// A node listening on `bind`; its member certificate still names only
    /// 127.0.0.1 and localhost.
    fn start_on(bind: &'static str) -> Self {
        let ca = CertificateAuthority::create(&name("test"), SystemTime::now()).expect("ca");
        let (maintenance, maintenance_fingerprint) = maintenance_acceptor();
        let state = Arc::new(NodeState {
            member: member_acceptor(&ca),
            ca,
            bootstrapped: AtomicBool::new(false),
            maintenance,
            maintenance_fingerprint,
            release_log: Notify::new(),
            logs_query: Mutex::new(None),
            allow_reboot: AtomicBool::new(false),
            polls_since_reboot: Mutex::new(None),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let server_state = state.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let tcp = TcpListener::bind(bind).await.expect("bind");
                tx.send(tcp.local_addr().expect("addr")).expect("send addr");
                let router = Router::new()
                    .route("/v1/cluster/bootstrap", post(bootstrap))
                    .route("/v1/node", get(node_info))
                    .route("/v1/version", get(version))
                    .route("/v1/node/reboot", post(reboot))
                    .route("/v1/node/logs", get(logs))
                    .route("/v1/node/config", axum::routing::put(apply_config))
                    .route("/v1/certs", post(issue_cert))
                    .with_state(server_state.clone());
                let listener = TlsListener {
                    tcp,
                    state: server_state,
                };
                axum::serve(listener, router).await.expect("serve");
            });
        });
        let addr = rx.recv().expect("server address");
        FakeNode { addr, state }
    }

    fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    fn fingerprint(&self) -> String {
        self.state.maintenance_fingerprint.to_string()
    }
}

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("xdg")
            .join("cairn")
            .join("config.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
        command
            .args(args)
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .env("HOME", self.dir.path())
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cairn")
    }

    fn init(&self, node: &FakeNode) -> Output {
        let endpoint = node.endpoint();
        let fingerprint = node.fingerprint();
        self.run(&[
            "cluster",
            "init",
            "--endpoint",
            &endpoint,
            "--setup-token",
            TOKEN,
            "--fingerprint",
            &fingerprint,
        ])
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn cluster_init_with_the_right_fingerprint_stores_a_private_context_that_works() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let out = ws.init(&node);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .starts_with("cluster cairn created on node node-1; context cairn is now current"),
        "{}",
        text(&out.stdout)
    );
    // The stored context was tried at once and worked: no warning.
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));

    let path = ws.config_path();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().expect("dir")), 0o700);
    let config = cli::config::load(&path).expect("config parses");
    assert_eq!(
        config.current_context.as_ref().map(|c| c.as_str()),
        Some("cairn")
    );
    let context = config.contexts.values().next().expect("one context");
    assert_eq!(context.endpoints[0].to_string(), node.endpoint());
    assert!(context.key_pem.contains("PRIVATE KEY"));

    let out = ws.run(&["node", "info", "-o", "json"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in ["name", "version", "addresses", "uptime_s", "boot"] {
        assert!(info.get(key).is_some(), "{key} missing: {info}");
    }
    assert_eq!(info["name"], "node-1");

    let out = ws.run(&["version", "-o", "json"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(version["server"]["api"], "v1");
}

#[test]
fn cluster_init_with_a_wrong_fingerprint_is_refused_and_writes_nothing() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let wrong = format!("sha256:{}", "00".repeat(32));
    let endpoint = node.endpoint();
    let out = ws.run(&[
        "cluster",
        "init",
        "-e",
        &endpoint,
        "--setup-token",
        TOKEN,
        "--fingerprint",
        &wrong,
    ]);
    assert_eq!(out.status.code(), Some(4), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "cairn: the node's certificate fingerprint {} does not match the pinned {wrong}",
            node.fingerprint()
        )),
        "{stderr}"
    );
    // Not even the config directory is left behind.
    assert!(!ws.config_path().parent().expect("dir").exists());
    assert!(!node.state.bootstrapped.load(Ordering::SeqCst));
}

#[test]
fn cluster_init_without_a_fingerprint_warns_and_names_what_it_trusted() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let endpoint = node.endpoint();
    let out = ws.run(&["cluster", "init", "-e", &endpoint, "--setup-token", TOKEN]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("warning: the node at"), "{stderr}");
    assert!(stderr.contains(&node.fingerprint()), "{stderr}");
}

#[test]
fn a_wrong_setup_token_is_refused_as_permission_denied() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    let endpoint = node.endpoint();
    let fingerprint = node.fingerprint();
    let out = ws.run(&[
        "cluster",
        "init",
        "-e",
        &endpoint,
        "--setup-token",
        "guess",
        "--fingerprint",
        &fingerprint,
    ]);
    assert_eq!(out.status.code(), Some(5), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .starts_with("cairn: the node refused the request: the setup token does not match"),
        "{}",
        text(&out.stderr)
    );
    assert!(!ws.config_path().exists());
}

#[test]
fn role_too_low_is_one_sentence_and_exit_code_5() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    let out = ws.run(&["node", "reboot"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        text(&out.stderr),
        "cairn: the node refused the request: role reader is too low for node_reboot (needs operator)\n"
    );
}

#[test]
fn followed_logs_stream_ndjson_lines_as_the_node_writes_them() {
    use std::io::{BufRead, BufReader};
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    let mut child = ws
        .command(&[
            "node", "logs", "--follow", "--boot", "-1", "--tail", "5", "-o", "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut read_entry = || {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read a line");
        serde_json::from_str::<LogEntry>(&line).expect("an NDJSON log entry")
    };
    // The first two arrive while the node still holds the third back.
    assert_eq!(read_entry().message, "entry 1");
    assert_eq!(read_entry().message, "entry 2");
    node.state.release_log.notify_one();
    assert_eq!(read_entry().message, "entry 3");
    let status = child.wait().expect("wait");
    assert!(status.success());
    assert_eq!(
        node.state.logs_query.lock().expect("lock").as_deref(),
        Some("boot=-1&follow=true&tail=5")
    );
}

#[test]
fn an_unreachable_node_is_exit_code_3_with_the_cause() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let endpoint = format!("127.0.0.1:{port}");
    let out = ws.run(&["node", "info", "-e", &endpoint]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr),
        format!("cairn: cannot reach {endpoint}: connection refused\n")
    );
}

#[test]
fn a_node_of_another_cluster_is_refused_as_untrusted() {
    let ours = FakeNode::start();
    let theirs = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&ours).status.success());
    let other = Workspace::new();
    assert!(other.init(&theirs).status.success());
    let endpoint = theirs.endpoint();
    let out = ws.run(&["node", "info", "-e", &endpoint]);
    assert_eq!(out.status.code(), Some(4), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not signed by the cluster CA of context cairn"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_invalid_config_is_refused_with_the_key_and_exit_code_6() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    let file = ws.dir.path().join("node.toml");
    std::fs::write(&file, "[node]\nhostname = \"bad name\"\n").expect("write");
    let file = file.to_str().expect("utf-8 path");
    let out = ws.run(&["node", "config", "apply", "--dry-run", file]);
    assert_eq!(out.status.code(), Some(6), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "cairn: the node refused the request: node.hostname: \"bad name\" is not a valid host name\n"
    );

    std::fs::write(
        ws.dir.path().join("good.toml"),
        "[node]\nhostname = \"n2\"\n",
    )
    .expect("write");
    let good = ws.dir.path().join("good.toml");
    let out = ws.run(&[
        "node",
        "config",
        "apply",
        "--dry-run",
        good.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "the config is valid; applying it would change: node\n"
    );

    let out = ws.run(&["node", "config", "apply", "/nonexistent/node.toml"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(text(&out.stderr).starts_with("cairn: cannot read /nonexistent/node.toml: "));
}

#[test]
fn reboot_wait_returns_once_the_node_answers_with_a_new_boot_id() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());
    node.state.allow_reboot.store(true, Ordering::SeqCst);
    let out = ws.run(&["node", "reboot", "--wait", "--timeout", "1m", "-o", "json"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["previous_boot_id"], "boot-1");
    assert_eq!(report["boot_id"], "boot-2");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("is rebooting; waiting up to 1m"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "node is down (the node failed to carry out node_info: the node is starting)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("node is back after"), "{stderr}");
}

#[test]
fn issued_certificates_become_a_new_context_or_private_files() {
    let node = FakeNode::start();
    let ws = Workspace::new();
    assert!(ws.init(&node).status.success());

    let out = ws.run(&[
        "cert", "issue", "--role", "operator", "--ttl", "2h", "-o", "json",
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["role"], "operator");
    assert_eq!(report["context"], "cairn-operator");
    let config = cli::config::load(&ws.config_path()).expect("config");
    assert_eq!(
        config.current_context.as_ref().map(|c| c.as_str()),
        Some("cairn")
    );
    let context = &config.contexts[&"cairn-operator".parse().expect("name")];
    assert_eq!(context.role, Some(api::Role::Operator));
    assert_eq!(mode(&ws.config_path()), 0o600);

    // The new credential works on its own.
    let out = ws.run(&["node", "info", "--context", "cairn-operator"]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("NAME "),
        "{}",
        text(&out.stdout)
    );

    let dir = ws.dir.path().join("creds");
    let dir_arg = dir.to_str().expect("utf-8");
    let out = ws.run(&["cert", "issue", "--name", "carol", "--out-dir", dir_arg]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(mode(&dir.join("carol.key")), 0o600);
    let cert = std::fs::read_to_string(dir.join("carol.crt")).expect("cert");
    let key = std::fs::read_to_string(dir.join("carol.key")).expect("key");
    cluster::pki::check_pair(&cert, &key).expect("certificate is for the key");
    assert!(dir.join("ca.crt").exists());
    // A second issue would overwrite the key: refused before asking the node.
    let out = ws.run(&["cert", "issue", "--name", "carol", "--out-dir", dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("carol.crt"),
        "{}",
        text(&out.stderr)
    );

    let out = ws.run(&["config", "contexts", "-o", "json"]);
    let contexts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(contexts["current_context"], "cairn");
    assert_eq!(contexts["contexts"].as_array().expect("array").len(), 2);
}

#[test]
fn cluster_init_warns_at_once_when_the_node_certificate_does_not_name_the_endpoint() {
    // As through NAT: the node is reached at an address it does not hold.
    let node = FakeNode::start_on("127.0.0.2:0");
    let ws = Workspace::new();
    let out = ws.init(&node);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("warning: the new context cairn does not work yet: the certificate of the node at 127.0.0.2:"),
        "{stderr}"
    );
    assert!(stderr.contains("does not name this host"), "{stderr}");
    assert!(ws.config_path().exists());
}
