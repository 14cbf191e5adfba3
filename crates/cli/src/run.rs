//! The commands: each resolves what it talks to, makes the calls through
//! [`NodeClient`], and prints with [`crate::output`].

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use api::types::{
    AgentRestartResponse, ApplyConfigRequest, ApplyConfigResponse, BootstrapRequest,
    BootstrapResponse, ClusterBackup, ClusterStatus, CreatedToken, ImageList, ImageRefQuery,
    ImageRemoved, ImportResponse, IssueCertificateRequest, IssuedCertificate, JoinRequest,
    JoinResponse, KernelLog, KvEvent, KvKeyQuery, KvList, KvListQuery, KvPutRequest, KvRecord,
    KvWatchQuery, KvWritten, LogEntry, LogQuery, MachineConfigDocument, MemberRemoved,
    NetworkState, NodeInfo, OCI_ARCHIVE, PowerResponse, PruneResponse, RestoreRequest,
    RestoreResponse, TokenCreateRequest, TokenInfo, TokenList, VersionInfo,
};
use clap::CommandFactory;
use cluster::join::token::JoinToken;
use cluster::pki::{Fingerprint, SubjectName};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use crate::args::{
    CertCommand, Cli, ClusterCommand, Command, ConfigCommand, Format, ImageCommand, InitArgs,
    IssueArgs, JoinArgs, KvCommand, LogsArgs, NodeCommand, NodeConfigCommand, RebootArgs,
    SnapshotCommand, TokenCommand,
};
use crate::client::{Call, NodeClient, RequestError};
use crate::config::{self, CliConfig, Context, ContextName};
use crate::duration::Span;
use crate::endpoint::Endpoint;
use crate::failure::{self, CommandError, Exit, Trust};
use crate::ndjson::LineSplitter;
use crate::output::{
    self, CertIssueReport, ContextSummary, ContextsReport, RebootReport, VersionReport,
};
use crate::wait::{Next, Observation, RebootWait};

mod ctr;
mod pull;

/// How long each poll of `reboot --wait` may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `node join` waits for the new node's answer. The new node
/// answers only once a member admitted it through a Raft configuration
/// change; giving up early would report a join that then succeeds, and a
/// retry would be refused as `already_member`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(180);

/// The global flags every command sees.
struct Globals {
    config_path: Option<PathBuf>,
    context: Option<ContextName>,
    endpoint: Option<Endpoint>,
    format: Format,
}

impl Globals {
    fn config_path(&self) -> Result<&Path, CommandError> {
        self.config_path
            .as_deref()
            .ok_or(CommandError::NoConfigPath)
    }

    fn load(&self) -> Result<CliConfig, CommandError> {
        let path = self.config_path()?;
        let config = config::load(path).map_err(CommandError::LoadConfig)?;
        if let Some(mode) = config::exposed_mode(path) {
            eprintln!(
                "warning: {} holds private keys but other users may access it (mode {mode:03o}); run chmod 600 on it",
                path.display()
            );
        }
        Ok(config)
    }

    fn save(&self, config: &CliConfig) -> Result<(), CommandError> {
        config::save(self.config_path()?, config).map_err(CommandError::SaveConfig)
    }
}

/// Runs a parsed command line.
/// Runs a command; the exit code is 0 except where a command passes one
/// on (`ctr exec`).
pub async fn run(cli: Cli) -> Result<u8, CommandError> {
    let globals = Globals {
        config_path: cli.config.clone().or_else(|| {
            config::default_path(
                std::env::var_os("XDG_CONFIG_HOME"),
                std::env::var_os("HOME"),
            )
        }),
        context: cli.context.clone(),
        endpoint: cli.endpoint.clone(),
        format: cli.output,
    };
    let done = match cli.command {
        Command::Ctr(command) => return ctr::ctr(&globals, command).await,
        Command::Cluster(ClusterCommand::Init(args)) => cluster_init(&globals, args).await,
        Command::Cluster(ClusterCommand::Status) => cluster_status(&globals).await,
        Command::Cluster(ClusterCommand::Token(command)) => token(&globals, command).await,
        Command::Cluster(ClusterCommand::Snapshot(command)) => snapshot(&globals, command).await,
        Command::Node(command) => node(&globals, command).await,
        Command::Kv(command) => kv(&globals, command).await,
        Command::Image(command) => image(&globals, command).await,
        Command::Cert(CertCommand::Issue(args)) => cert_issue(&globals, args).await,
        Command::Config(command) => config_command(&globals, command),
        Command::Version => version(&globals).await,
        Command::Completion { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut out);
            write_stdout(&out)
        }
    };
    done.map(|()| 0)
}

fn write_stdout(bytes: &[u8]) -> Result<(), CommandError> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(CommandError::Stdout)
}

/// Prints `value` as JSON, or the table `render` makes of it.
fn print<T: Serialize>(
    format: Format,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> Result<(), CommandError> {
    let text = match format {
        Format::Json => output::json(value),
        Format::Table => render(value),
    };
    write_stdout(text.as_bytes())
}

/// A client for the member node the flags and config point at.
fn member_client(
    globals: &Globals,
    config: &CliConfig,
) -> Result<(NodeClient, Trust), CommandError> {
    let target = config
        .resolve(globals.context.as_ref(), globals.endpoint.as_ref())
        .map_err(CommandError::Context)?;
    client_for(target)
}

/// A client for a resolved target, verifying the node against its
/// context's CA and presenting its credential.
fn client_for(target: config::Target<'_>) -> Result<(NodeClient, Trust), CommandError> {
    let tls =
        crate::tls::member_config(target.context).map_err(|source| CommandError::Credential {
            context: target.name.clone(),
            source,
        })?;
    let client = NodeClient::new(target.endpoint, tls, None).map_err(CommandError::Client)?;
    Ok((client, Trust::Member(target.name.clone())))
}

fn request_error(trust: &Trust) -> impl Fn(RequestError) -> CommandError + '_ {
    |source| CommandError::Request {
        trust: trust.clone(),
        source,
    }
}

async fn cluster_init(globals: &Globals, args: InitArgs) -> Result<(), CommandError> {
    let endpoint = globals.endpoint.clone().ok_or_else(|| {
        CommandError::Usage(
            "cluster init needs the node's address: pass --endpoint HOST:7443".to_owned(),
        )
    })?;
    let context_name = match args.context_name {
        Some(name) => name,
        None => args.cluster_name.parse().map_err(|e| {
            CommandError::Usage(format!("{e}; pass --context-name to name the context"))
        })?,
    };
    let admin = SubjectName::try_from(args.admin_name.as_str())
        .map_err(|e| CommandError::Usage(format!("--admin-name: {e}")))?;
    // Everything that can fail locally fails before the node is asked: the
    // bootstrap hands out the first admin credential exactly once.
    let mut config = globals.load()?;
    if config.contexts.contains_key(&context_name) {
        return Err(CommandError::Context(config::ContextError::Exists(
            context_name,
        )));
    }
    config::check_writable(globals.config_path()?).map_err(CommandError::SaveConfig)?;
    let csr = cluster::pki::client_csr(&admin).map_err(CommandError::Csr)?;

    let (tls, seen) = crate::tls::pinned_config(args.fingerprint).map_err(CommandError::Tls)?;
    let client =
        NodeClient::new(endpoint.clone(), tls, Some(seen)).map_err(CommandError::Client)?;
    let request = BootstrapRequest {
        setup_token: args.setup_token,
        cluster_name: Some(args.cluster_name.clone()),
        admin_name: admin.to_string(),
        admin_csr_pem: csr.csr_pem.clone(),
    };
    let result: Result<BootstrapResponse, _> =
        client.call("cluster_bootstrap", Some(&request)).await;
    if args.fingerprint.is_none()
        && let Some(seen) = client.seen_fingerprint()
    {
        eprintln!(
            "warning: the node at {endpoint} was not authenticated: its certificate fingerprint is {seen}; compare it with the one on the node's console and pass --fingerprint to pin it"
        );
    }
    let response = result.map_err(request_error(&Trust::Pinned))?;
    check_bootstrap(&response, &csr.key_pem)?;

    let context = Context {
        endpoints: vec![endpoint],
        cluster: Some(response.cluster_name.clone()),
        user: Some(response.admin.name.clone()),
        role: Some(response.admin.role),
        ca_pem: response.admin.ca_pem.clone(),
        cert_pem: response.admin.cert_pem.clone(),
        key_pem: csr.key_pem,
    };
    config
        .add_context(context_name.clone(), context, true)
        .map_err(CommandError::Context)?;
    if let Err(source) = config::save(globals.config_path()?, &config) {
        // The node will not hand out this credential again: keep it
        // somewhere private rather than lose it.
        let rescue = std::env::temp_dir().join(format!(
            "cairn-config-{}-{}.toml",
            context_name,
            std::process::id()
        ));
        return Err(match config::save(&rescue, &config) {
            Ok(()) => CommandError::SaveConfigRescued { rescue, source },
            Err(_) => CommandError::SaveConfig(source),
        });
    }
    print(globals.format, &response, |r| {
        output::bootstrap(r, context_name.as_str())
    })?;
    check_new_context(&config, &context_name).await;
    Ok(())
}

/// Tries the context `cluster init` just stored, so an endpoint the node's
/// certificate does not name (a NAT address, a DNS alias) shows up now
/// rather than at the next command. The cluster exists either way, so a
/// failure is a warning.
async fn check_new_context(config: &CliConfig, name: &ContextName) {
    let result = async {
        let target = config
            .resolve(Some(name), None)
            .map_err(CommandError::Context)?;
        let (mut client, trust) = client_for(target)?;
        client.set_request_timeout(POLL_TIMEOUT);
        client
            .call::<(), NodeInfo>("node_info", None)
            .await
            .map_err(request_error(&trust))
    }
    .await;
    if let Err(error) = result {
        eprintln!(
            "warning: the new context {name} does not work yet: {}",
            failure::describe(&error).message
        );
    }
}

/// Checks that the credential a node handed back holds together: the CA is
/// the one it names, and the certificate is for the key made here.
fn check_bootstrap(response: &BootstrapResponse, key_pem: &str) -> Result<(), CommandError> {
    check_issued(&response.admin, key_pem)
}

fn check_issued(issued: &IssuedCertificate, key_pem: &str) -> Result<(), CommandError> {
    let ca = CertificateDer::from_pem_slice(issued.ca_pem.as_bytes()).map_err(|e| {
        CommandError::BadCredential(format!(
            "the node sent a CA certificate that is not valid PEM: {e}"
        ))
    })?;
    let actual = Fingerprint::of_der(&ca);
    if issued.ca_fingerprint.parse::<Fingerprint>().ok() != Some(actual) {
        return Err(CommandError::BadCredential(format!(
            "the node sent a CA certificate with fingerprint {actual} but named {}",
            issued.ca_fingerprint
        )));
    }
    cluster::pki::check_pair(&issued.cert_pem, key_pem).map_err(|e| {
        CommandError::BadCredential(format!(
            "the node sent a certificate that does not belong to the key made here: {e}"
        ))
    })?;
    Ok(())
}

/// Connects to the member node the flags and config point at.
fn connect(globals: &Globals) -> Result<(NodeClient, Trust), CommandError> {
    let config = globals.load()?;
    member_client(globals, &config)
}

async fn node(globals: &Globals, command: NodeCommand) -> Result<(), CommandError> {
    let format = globals.format;
    match command {
        // The new node is in maintenance mode: no context, no mTLS.
        NodeCommand::Join(args) => node_join(globals, args).await,
        NodeCommand::Info => {
            let (client, trust) = connect(globals)?;
            let info: NodeInfo = client
                .call("node_info", None::<&()>)
                .await
                .map_err(request_error(&trust))?;
            print(format, &info, output::node_info)
        }
        NodeCommand::Logs(args) => {
            let (client, trust) = connect(globals)?;
            logs(&client, &trust, format, &args).await
        }
        NodeCommand::RestartAgent => {
            let (client, trust) = connect(globals)?;
            let restarting: AgentRestartResponse = client
                .call("node_agent_restart", None::<&()>)
                .await
                .map_err(request_error(&trust))?;
            print(format, &restarting, output::agent_restarting)
        }
        NodeCommand::Dmesg => {
            let (client, trust) = connect(globals)?;
            let log: KernelLog = client
                .call("node_dmesg", None::<&()>)
                .await
                .map_err(request_error(&trust))?;
            print(format, &log, output::kernel_log)
        }
        NodeCommand::Network => {
            let (client, trust) = connect(globals)?;
            let state: NetworkState = client
                .call("node_network", None::<&()>)
                .await
                .map_err(request_error(&trust))?;
            print(format, &state, output::network)
        }
        NodeCommand::Config(NodeConfigCommand::Get) => {
            let (client, trust) = connect(globals)?;
            let doc: MachineConfigDocument = client
                .call("node_config_get", None::<&()>)
                .await
                .map_err(request_error(&trust))?;
            print(format, &doc, output::config_document)
        }
        NodeCommand::Config(NodeConfigCommand::Apply { dry_run, file }) => {
            let (client, trust) = connect(globals)?;
            let toml = read_input(&file)?;
            let request = ApplyConfigRequest { toml, dry_run };
            let result: ApplyConfigResponse = client
                .call("node_config_apply", Some(&request))
                .await
                .map_err(request_error(&trust))?;
            print(format, &result, output::apply_result)
        }
        NodeCommand::Reboot(args) => {
            let (client, trust) = connect(globals)?;
            reboot(client, &trust, format, &args).await
        }
        NodeCommand::Shutdown => {
            let (client, trust) = connect(globals)?;
            let response: PowerResponse = client
                .call("node_shutdown", None::<&()>)
                .await
                .map_err(request_error(&trust))?;
            print(format, &response, output::power)
        }
        NodeCommand::Remove { name } => {
            let (client, trust) = connect(globals)?;
            let removed: MemberRemoved = client
                .call(Call::new("member_remove").path("name", name), None::<&()>)
                .await
                .map_err(request_error(&trust))?;
            print(format, &removed, output::member_removed)
        }
    }
}

/// `cairn node join`: tells a node in maintenance mode to join a cluster.
/// The new node is reached as `cluster init` reaches one: pinned by its
/// maintenance certificate's fingerprint, or trusted on first use with a
/// warning. The new node does the rest (pins the CA hash, asks the member
/// with the token, joins Raft).
async fn node_join(globals: &Globals, args: JoinArgs) -> Result<(), CommandError> {
    let endpoint = globals.endpoint.clone().ok_or_else(|| {
        CommandError::Usage(
            "node join needs the new node's address: pass --endpoint HOST:7443".to_owned(),
        )
    })?;
    // Parsed here rather than by clap, whose error would echo the secret.
    let token: JoinToken = args
        .token
        .parse()
        .map_err(|e| CommandError::Usage(format!("--token: {e}")))?;
    let (tls, seen) = crate::tls::pinned_config(args.fingerprint).map_err(CommandError::Tls)?;
    let mut client =
        NodeClient::new(endpoint.clone(), tls, Some(seen)).map_err(CommandError::Client)?;
    client.set_request_timeout(JOIN_TIMEOUT);
    let request = JoinRequest {
        setup_token: args.setup_token,
        cluster: args.cluster.to_string(),
        token: token.to_string(),
        ca_hash: args.ca_hash.to_string(),
    };
    let result: Result<JoinResponse, _> = client.call("cluster_join", Some(&request)).await;
    if args.fingerprint.is_none()
        && let Some(seen) = client.seen_fingerprint()
    {
        eprintln!(
            "warning: the node at {endpoint} was not authenticated: its certificate fingerprint is {seen}; compare it with the one on the node's console and pass --fingerprint to pin it"
        );
    }
    let response = result.map_err(request_error(&Trust::Pinned))?;
    print(globals.format, &response, output::joined)
}

/// The leader to ask for the full status, when the node that answered is
/// not the leader: only the leader knows each member's lag and last
/// contact. `None` when the answer is already the leader's, no leader is
/// known, or its address is unusable or the one already asked.
fn leader_to_ask(status: &ClusterStatus, asked: &Endpoint) -> Option<Endpoint> {
    let leader = status.leader.as_deref()?;
    if leader == status.answered_by {
        return None;
    }
    let member = status.members.iter().find(|m| m.name == leader)?;
    let endpoint: Endpoint = member.address.parse().ok()?;
    (endpoint != *asked).then_some(endpoint)
}

async fn cluster_status(globals: &Globals) -> Result<(), CommandError> {
    let config = globals.load()?;
    let target = config
        .resolve(globals.context.as_ref(), globals.endpoint.as_ref())
        .map_err(CommandError::Context)?;
    let (name, context) = (target.name, target.context);
    let (client, trust) = client_for(target)?;
    let fetch = |client: NodeClient, trust: Trust| async move {
        // Kept as the node sent it, so `-o json` passes on fields this
        // client does not know yet.
        let raw: serde_json::Value = client
            .call("cluster_status", None::<&()>)
            .await
            .map_err(request_error(&trust))?;
        let status = ClusterStatus::deserialize(&raw).map_err(|source| CommandError::Request {
            trust: trust.clone(),
            source: RequestError::Decode {
                operation: "cluster_status",
                source,
            },
        })?;
        Ok::<_, CommandError>((raw, status))
    };
    let asked = client.endpoint().clone();
    let (mut raw, mut status) = fetch(client, trust).await?;
    if let Some(leader) = leader_to_ask(&status, &asked) {
        let from_leader = tokio::time::timeout(LEADER_ASK_TIMEOUT, async {
            let (client, trust) = client_for(config::Target {
                name,
                context,
                endpoint: leader.clone(),
            })?;
            fetch(client, trust).await
        })
        .await;
        match from_leader {
            Ok(Ok(answer)) => (raw, status) = answer,
            Ok(Err(error)) => eprintln!(
                "warning: cannot ask the leader at {leader}, so lag and last contact are unknown: {}",
                failure::describe(&error).message
            ),
            Err(_) => eprintln!(
                "warning: the leader at {leader} did not answer within {} s (it may be down), so lag and last contact are unknown",
                LEADER_ASK_TIMEOUT.as_secs()
            ),
        }
    }
    print(globals.format, &raw, |_| output::cluster_status(&status))
}

async fn token(globals: &Globals, command: TokenCommand) -> Result<(), CommandError> {
    let (client, trust) = connect(globals)?;
    let fail = request_error(&trust);
    let format = globals.format;
    match command {
        TokenCommand::Create(args) => {
            let request = TokenCreateRequest {
                ttl_s: args.ttl.map(Span::as_secs),
                uses: args.uses,
                description: args.description,
            };
            let created: CreatedToken = client
                .call("token_create", Some(&request))
                .await
                .map_err(fail)?;
            print(format, &created, output::created_token)
        }
        TokenCommand::List => {
            let list: TokenList = client.call("token_list", None::<&()>).await.map_err(fail)?;
            print(format, &list, output::token_list)
        }
        TokenCommand::Revoke { id } => {
            let call = Call::new("token_revoke").path("id", id.as_str());
            let info: TokenInfo = client.call(call, None::<&()>).await.map_err(fail)?;
            print(format, &info, output::token_revoked)
        }
    }
}

/// How long `cluster status` waits for the leader the first answer named:
/// a leader that just died must not hold the status up.
const LEADER_ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a backup or a restore may take: the store can be tens of
/// megabytes.
const SNAPSHOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

async fn snapshot(globals: &Globals, command: SnapshotCommand) -> Result<(), CommandError> {
    let (mut client, trust) = connect(globals)?;
    client.set_request_timeout(SNAPSHOT_TIMEOUT);
    let fail = request_error(&trust);
    match command {
        SnapshotCommand::Save { file } => {
            let backup: ClusterBackup = client
                .call("cluster_backup", None::<&()>)
                .await
                .map_err(&fail)?;
            let mut text = output::json(&backup);
            if !text.ends_with('\n') {
                text.push('\n');
            }
            write_new_private(&file, text.as_bytes())?;
            print(globals.format, &backup, |b| output::backup_saved(b, &file))
        }
        SnapshotCommand::Restore { file, force } => {
            let path = file.display().to_string();
            let text = read_input(&path)?;
            let backup: ClusterBackup = serde_json::from_str(&text).map_err(|e| {
                CommandError::Usage(format!(
                    "{path} is not a backup written by `cairn cluster snapshot save`: {e}"
                ))
            })?;
            let restored: RestoreResponse = client
                .call("cluster_restore", Some(&RestoreRequest { backup, force }))
                .await
                .map_err(&fail)?;
            print(globals.format, &restored, output::restored)
        }
    }
}

/// Writes a new file readable by its owner only, synced; an existing file
/// is an error, not overwritten.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), CommandError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .map_err(|source| CommandError::WriteOutput {
            path: path.display().to_string(),
            source,
        })
}

async fn kv(globals: &Globals, command: KvCommand) -> Result<(), CommandError> {
    let (client, trust) = connect(globals)?;
    let fail = request_error(&trust);
    let format = globals.format;
    match command {
        KvCommand::Get { key } => {
            let call = Call::new("kv_get")
                .query(&KvKeyQuery {
                    key,
                    if_revision: None,
                })
                .map_err(&fail)?;
            let record: KvRecord = client.call(call, None::<&()>).await.map_err(&fail)?;
            print(format, &record, |r| format!("{}\n", r.value))
        }
        KvCommand::Put {
            key,
            value,
            if_revision,
        } => {
            let request = KvPutRequest {
                key,
                value,
                if_revision,
            };
            let written: KvWritten = client.call("kv_put", Some(&request)).await.map_err(&fail)?;
            print(format, &written, output::kv_put)
        }
        KvCommand::Del { key, if_revision } => {
            let call = Call::new("kv_delete")
                .query(&KvKeyQuery { key, if_revision })
                .map_err(&fail)?;
            let written: KvWritten = client.call(call, None::<&()>).await.map_err(&fail)?;
            print(format, &written, output::kv_del)
        }
        KvCommand::List { prefix, limit } => {
            let call = Call::new("kv_list")
                .query(&KvListQuery {
                    prefix: prefix.unwrap_or_default(),
                    limit,
                })
                .map_err(&fail)?;
            let list: KvList = client.call(call, None::<&()>).await.map_err(&fail)?;
            print(format, &list, output::kv_list)
        }
        KvCommand::Watch { prefix, after } => {
            let call = Call::new("kv_watch")
                .query(&KvWatchQuery {
                    prefix: prefix.unwrap_or_default(),
                    after,
                })
                .map_err(&fail)?;
            // A watch runs until the node ends it or the operator does.
            let response = client.stream(call, None).await.map_err(&fail)?;
            each_line(&client, response, &fail, |line| {
                let event: KvEvent =
                    serde_json::from_slice(line).map_err(|source| CommandError::BadLine {
                        what: "watch event",
                        source,
                    })?;
                match format {
                    Format::Json => write_line(line),
                    Format::Table => write_stdout(output::kv_event(&event).as_bytes()),
                }
            })
            .await
        }
    }
}

/// How long an image import or export may take: archives run to
/// gigabytes.
const IMAGE_TRANSFER_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// Bytes read from an archive per chunk sent.
const UPLOAD_CHUNK: usize = 256 * 1024;

async fn image(globals: &Globals, command: ImageCommand) -> Result<(), CommandError> {
    let (client, trust) = connect(globals)?;
    let fail = request_error(&trust);
    let format = globals.format;
    match command {
        ImageCommand::Import { file } => {
            let path = file.display().to_string();
            let opened = std::fs::File::open(&file).map_err(|source| CommandError::ReadInput {
                path: path.clone(),
                source,
            })?;
            let imported: ImportResponse = client
                .upload(
                    "image_import",
                    OCI_ARCHIVE,
                    file_body(opened),
                    IMAGE_TRANSFER_TIMEOUT,
                )
                .await
                .map_err(&fail)?;
            print(format, &imported, output::images_imported)
        }
        ImageCommand::Pull { reference } => pull::run(&client, &fail, format, reference).await,
        ImageCommand::Export { reference, file } => {
            let call = Call::new("image_export")
                .query(&ImageRefQuery { reference })
                .map_err(&fail)?;
            let mut response = client
                .download(call, OCI_ARCHIVE, IMAGE_TRANSFER_TIMEOUT)
                .await
                .map_err(&fail)?;
            let path = file.display().to_string();
            let write_err = |source| CommandError::WriteOutput {
                path: path.clone(),
                source,
            };
            // Written beside the target and renamed in once complete, so a
            // broken transfer never leaves a plausible-looking archive.
            let dir = match file.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
                _ => PathBuf::from("."),
            };
            let mut tmp = tempfile::Builder::new()
                .prefix(".cairn-export-")
                .tempfile_in(&dir)
                .map_err(write_err)?;
            let mut written: u64 = 0;
            while let Some(chunk) = client.next_chunk(&mut response).await.map_err(&fail)? {
                tmp.write_all(&chunk).map_err(write_err)?;
                written = written.saturating_add(chunk.len() as u64);
            }
            tmp.as_file().sync_all().map_err(write_err)?;
            tmp.persist_noclobber(&file)
                .map_err(|e| write_err(e.error))?;
            let report = output::ExportReport {
                file: path.clone(),
                bytes: written,
            };
            print(format, &report, output::image_exported)
        }
        ImageCommand::List => {
            let list: ImageList = client
                .call("image_list", None::<&()>)
                .await
                .map_err(&fail)?;
            print(format, &list, output::image_list)
        }
        ImageCommand::Rm { reference } => {
            let call = Call::new("image_remove").path("ref", reference);
            let removed: ImageRemoved = client.call(call, None::<&()>).await.map_err(&fail)?;
            print(format, &removed, output::image_removed)
        }
        ImageCommand::Prune => {
            let pruned: PruneResponse = client
                .call("image_prune", None::<&()>)
                .await
                .map_err(&fail)?;
            print(format, &pruned, output::image_pruned)
        }
    }
}

/// A request body that reads `file` a chunk at a time on a blocking
/// thread, so an archive is never held whole in memory.
fn file_body(file: std::fs::File) -> reqwest::Body {
    use http_body::Frame;
    use http_body_util::StreamBody;
    let chunks = futures_util::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, io::Error>((file, buf))
        })
        .await;
        match read {
            Ok(Ok((_, buf))) if buf.is_empty() => None,
            Ok(Ok((file, buf))) => Some((Ok(Frame::data(bytes::Bytes::from(buf))), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(io::Error::other(e)), None)),
        }
    });
    reqwest::Body::wrap(StreamBody::new(chunks))
}

/// Writes `line` and a newline to stdout: an NDJSON line passed on as the
/// node sent it, so fields this client does not know yet reach the script
/// too.
fn write_line(line: &[u8]) -> Result<(), CommandError> {
    let mut out = line.to_vec();
    out.push(b'\n');
    write_stdout(&out)
}

/// Hands each NDJSON line of `response` to `on_line` as it arrives.
async fn each_line(
    client: &NodeClient,
    mut response: reqwest::Response,
    fail: &impl Fn(RequestError) -> CommandError,
    mut on_line: impl FnMut(&[u8]) -> Result<(), CommandError>,
) -> Result<(), CommandError> {
    let mut splitter = LineSplitter::default();
    while let Some(chunk) = client.next_chunk(&mut response).await.map_err(fail)? {
        for line in splitter.push(&chunk) {
            on_line(&line)?;
        }
    }
    if let Some(line) = splitter.finish() {
        on_line(&line)?;
    }
    Ok(())
}

fn read_input(file: &str) -> Result<String, CommandError> {
    let read_err = |source| CommandError::ReadInput {
        path: file.to_owned(),
        source,
    };
    if file == "-" {
        let mut text = String::new();
        io::stdin().read_to_string(&mut text).map_err(read_err)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).map_err(read_err)
    }
}

async fn logs(
    client: &NodeClient,
    trust: &Trust,
    format: Format,
    args: &LogsArgs,
) -> Result<(), CommandError> {
    let fail = request_error(trust);
    let call = Call::new("node_logs")
        .query(&LogQuery {
            boot: args.boot,
            follow: args.follow,
            tail: args.tail,
        })
        .map_err(&fail)?;
    let timeout = (!args.follow).then_some(crate::client::REQUEST_TIMEOUT);
    let response = client.stream(call, timeout).await.map_err(&fail)?;
    each_line(client, response, &fail, |line| {
        let entry: LogEntry =
            serde_json::from_slice(line).map_err(|source| CommandError::BadLine {
                what: "log line",
                source,
            })?;
        match format {
            Format::Json => write_line(line),
            Format::Table => write_stdout(output::log_entry(&entry).as_bytes()),
        }
    })
    .await
}

async fn reboot(
    mut client: NodeClient,
    trust: &Trust,
    format: Format,
    args: &RebootArgs,
) -> Result<(), CommandError> {
    let fail = request_error(trust);
    let response: PowerResponse = client
        .call("node_reboot", None::<&()>)
        .await
        .map_err(&fail)?;
    if !args.wait {
        return print(format, &response, output::power);
    }
    let timeout = args.timeout.to_duration();
    eprintln!(
        "the node at {} is rebooting; waiting up to {} for it to come back",
        client.endpoint(),
        args.timeout
    );
    client.set_request_timeout(POLL_TIMEOUT);
    let started = Instant::now();
    let mut wait = RebootWait::new(response.boot_id.clone(), timeout);
    let mut next = Next::PollAfter(crate::wait::POLL_INTERVAL);
    loop {
        match next {
            Next::PollAfter(after) => tokio::time::sleep(after).await,
            Next::Back(boot_id) => {
                let report = RebootReport {
                    action: response.action,
                    previous_boot_id: response.boot_id,
                    boot_id,
                    waited_s: started.elapsed().as_secs(),
                };
                return print(format, &report, output::reboot_report);
            }
            Next::GiveUp(last) => {
                return Err(CommandError::WaitTimedOut {
                    endpoint: client.endpoint().clone(),
                    waited: args.timeout,
                    last,
                });
            }
        }
        let observation = match client.call::<(), NodeInfo>("node_info", None).await {
            Ok(info) => Observation::Booted(info.boot_id),
            Err(error @ RequestError::Refused { .. }) => {
                let described = failure::describe_request(&error, trust);
                // A node that refuses this credential after its reboot will
                // not change its mind by waiting.
                if matches!(
                    described.exit,
                    Exit::Authentication | Exit::PermissionDenied
                ) {
                    return Err(fail(error));
                }
                Observation::Unreachable(described.message)
            }
            Err(error) => {
                Observation::Unreachable(failure::describe_request(&error, trust).message)
            }
        };
        let step = wait.observe(started.elapsed(), observation);
        if let Some(progress) = step.progress {
            eprintln!("{progress}");
        }
        next = step.next;
    }
}

async fn cert_issue(globals: &Globals, args: IssueArgs) -> Result<(), CommandError> {
    let mut config = globals.load()?;
    let role = api::Role::from(args.role);
    let name_text = args.name.clone().unwrap_or_else(|| role.to_string());
    let holder = SubjectName::try_from(name_text.as_str())
        .map_err(|e| CommandError::Usage(format!("--name: {e}")))?;
    let target = config
        .resolve(globals.context.as_ref(), globals.endpoint.as_ref())
        .map_err(CommandError::Context)?;
    let (base_name, base) = (target.name.clone(), target.context.clone());
    let (client, trust) = client_for(target)?;

    // Decide where the credential goes, and that it can go there, before
    // the CA signs anything.
    let new_context = match &args.out_dir {
        Some(_) => None,
        None => {
            let name = match &args.add_context {
                Some(name) => name.clone(),
                None => format!("{base_name}-{holder}").parse().map_err(|e| {
                    CommandError::Usage(format!("{e}; pass --add-context to name the context"))
                })?,
            };
            if config.contexts.contains_key(&name) {
                return Err(CommandError::Context(config::ContextError::Exists(name)));
            }
            config::check_writable(globals.config_path()?).map_err(CommandError::SaveConfig)?;
            Some(name)
        }
    };
    let files = match &args.out_dir {
        Some(dir) => Some(OutFiles::prepare(dir, holder.as_str())?),
        None => None,
    };

    let csr = cluster::pki::client_csr(&holder).map_err(CommandError::Csr)?;
    let request = IssueCertificateRequest {
        name: holder.to_string(),
        role,
        ttl_s: args.ttl.as_secs(),
        csr_pem: csr.csr_pem.clone(),
    };
    let issued: IssuedCertificate = client
        .call("cert_issue", Some(&request))
        .await
        .map_err(request_error(&trust))?;
    check_issued(&issued, &csr.key_pem)?;

    let mut report = CertIssueReport {
        certificate: issued.clone(),
        context: None,
        files: Vec::new(),
    };
    if let Some(files) = files {
        report.files = files.write(&issued, &csr.key_pem)?;
    }
    if let Some(name) = new_context {
        let context = Context {
            endpoints: base.endpoints.clone(),
            cluster: base.cluster.clone(),
            user: Some(issued.name.clone()),
            role: Some(issued.role),
            ca_pem: issued.ca_pem.clone(),
            cert_pem: issued.cert_pem.clone(),
            key_pem: csr.key_pem,
        };
        config
            .add_context(name.clone(), context, false)
            .map_err(CommandError::Context)?;
        globals.save(&config)?;
        report.context = Some(name.to_string());
    }
    print(globals.format, &report, output::cert_issue)
}

/// The files `cert issue --out-dir` writes.
struct OutFiles {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl OutFiles {
    fn prepare(dir: &Path, name: &str) -> Result<Self, CommandError> {
        let files = OutFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.crt"),
        };
        for path in [&files.cert, &files.key] {
            if path.exists() {
                return Err(CommandError::WriteOutput {
                    path: path.display().to_string(),
                    source: io::Error::from(io::ErrorKind::AlreadyExists),
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| CommandError::WriteOutput {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(files)
    }

    fn write(
        &self,
        issued: &IssuedCertificate,
        key_pem: &str,
    ) -> Result<Vec<String>, CommandError> {
        use std::os::unix::fs::OpenOptionsExt;
        let write = |path: &Path, text: &str, mode: u32, new: bool| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).mode(mode);
            if new {
                options.create_new(true);
            } else {
                options.create(true).truncate(true);
            }
            options
                .open(path)
                .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
                .map_err(|source| CommandError::WriteOutput {
                    path: path.display().to_string(),
                    source,
                })
        };
        write(&self.key, key_pem, 0o600, true)?;
        write(&self.cert, &issued.cert_pem, 0o644, true)?;
        write(&self.ca, &issued.ca_pem, 0o644, false)?;
        Ok([&self.cert, &self.key, &self.ca]
            .iter()
            .map(|p| p.display().to_string())
            .collect())
    }
}

async fn version(globals: &Globals) -> Result<(), CommandError> {
    let client_version = VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        api: api::API_VERSION.to_owned(),
    };
    let server = async {
        let config = globals.load()?;
        let (client, trust) = member_client(globals, &config)?;
        client
            .call::<(), VersionInfo>("version", None)
            .await
            .map_err(request_error(&trust))
    }
    .await;
    let report = match server {
        Ok(server) => VersionReport {
            client: client_version,
            server: Some(server),
            server_error: None,
        },
        Err(error) => VersionReport {
            client: client_version,
            server: None,
            server_error: Some(failure::describe(&error).message),
        },
    };
    print(globals.format, &report, output::version)
}

fn config_command(globals: &Globals, command: ConfigCommand) -> Result<(), CommandError> {
    let mut config = globals.load()?;
    match command {
        ConfigCommand::Contexts => {
            let report = ContextsReport {
                current_context: config.current_context.as_ref().map(ToString::to_string),
                contexts: config
                    .contexts
                    .iter()
                    .map(|(name, c)| ContextSummary {
                        name: name.to_string(),
                        endpoints: c.endpoints.iter().map(ToString::to_string).collect(),
                        cluster: c.cluster.clone(),
                        user: c.user.clone(),
                        role: c.role,
                    })
                    .collect(),
            };
            print(globals.format, &report, output::contexts)
        }
        ConfigCommand::UseContext { name } => {
            config.use_context(&name).map_err(CommandError::Context)?;
            globals.save(&config)?;
            print(
                globals.format,
                &serde_json::json!({ "current_context": name.as_str() }),
                |_| format!("switched to context {name}\n"),
            )
        }
        ConfigCommand::RemoveContext { name } => {
            config
                .remove_context(&name)
                .map_err(CommandError::Context)?;
            globals.save(&config)?;
            print(
                globals.format,
                &serde_json::json!({ "removed": name.as_str() }),
                |_| format!("removed context {name}\n"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::types::{MemberRole, MemberState, MemberStatus};

    fn member(name: &str, address: &str) -> MemberStatus {
        MemberStatus {
            name: name.to_owned(),
            id: 1,
            address: address.to_owned(),
            peer_address: address.replace("7443", "7444"),
            role: MemberRole::Voter,
            state: MemberState::Ready,
            since: None,
            domain: None,
            matched: None,
            lag: None,
            last_contact_ms: None,
        }
    }

    fn status(answered_by: &str, leader: Option<&str>) -> ClusterStatus {
        ClusterStatus {
            name: "lab".to_owned(),
            answered_by: answered_by.to_owned(),
            leader: leader.map(str::to_owned),
            term: 3,
            commit: 10,
            applied: 10,
            members: vec![
                member("n1", "10.0.0.1:7443"),
                member("n2", "10.0.0.2:7443"),
                member("n3", "not an endpoint"),
            ],
        }
    }

    fn ep(text: &str) -> Endpoint {
        text.parse().expect("endpoint")
    }

    #[test]
    fn a_follower_answer_sends_the_cli_to_the_leader_address() {
        assert_eq!(
            leader_to_ask(&status("n2", Some("n1")), &ep("10.0.0.2")),
            Some(ep("10.0.0.1:7443"))
        );
    }

    #[test]
    fn the_leader_is_not_asked_when_it_answered_is_unknown_or_unusable() {
        // The leader answered itself.
        assert_eq!(
            leader_to_ask(&status("n1", Some("n1")), &ep("10.0.0.1")),
            None
        );
        // No leader (an election is running).
        assert_eq!(leader_to_ask(&status("n2", None), &ep("10.0.0.2")), None);
        // A leader that is not in the member list, or whose address is not
        // an endpoint.
        assert_eq!(
            leader_to_ask(&status("n2", Some("n9")), &ep("10.0.0.2")),
            None
        );
        assert_eq!(
            leader_to_ask(&status("n2", Some("n3")), &ep("10.0.0.2")),
            None
        );
        // The address is the one already asked (names differ in a stale
        // answer, the endpoint does not).
        assert_eq!(
            leader_to_ask(&status("n2", Some("n1")), &ep("10.0.0.1")),
            None
        );
    }
}
