//! The command line, as clap derive types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cluster::join::token::TokenId;
use cluster::pki::Fingerprint;

use crate::config::ContextName;
use crate::duration::Span;
use crate::endpoint::Endpoint;

/// Printed under `cairn --help`; a test keeps it equal to
/// [`crate::failure::Exit::help_table`].
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  failure (node error, local file, wait timed out)
  2  usage error (command line or CLI config file)
  3  node unreachable (DNS, refused, timeout, connection lost)
  4  TLS or authentication failure (fingerprint, CA, certificate)
  5  permission denied (role, setup token, maintenance mode)
  6  invalid input (config refused, bad request, unreadable file)
  7  not found or conflict (kv key, member, --if-revision mismatch)
";

/// Manage Cairn nodes and clusters.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Context to use instead of the current one.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<ContextName>,

    /// Node API endpoint, HOST or HOST:PORT (port 7443 when omitted);
    /// overrides the context's endpoint.
    #[arg(short = 'e', long, global = true, value_name = "HOST:PORT")]
    pub endpoint: Option<Endpoint>,

    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// CLI config file [default: $XDG_CONFIG_HOME/cairn/config.toml, else
    /// ~/.config/cairn/config.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    Table,
    /// One JSON object (NDJSON for logs and kv watch), snake_case, for
    /// scripts.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and join clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Inspect and manage a node.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The cluster's key-value store (linearizable through any member).
    #[command(subcommand)]
    Kv(KvCommand),
    /// The node's image store: import, export, list, remove, prune.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Containers on the node: run, list, logs, stop, start, rm, exec.
    #[command(subcommand)]
    Ctr(CtrCommand),
    /// Client certificates.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The CLI config file: contexts.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Client version, and the node's when it is reachable.
    Version,
    /// Print a shell completion script.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `cairn cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Turn a node in maintenance mode into the first member of a new
    /// cluster and store an admin credential as a new current context
    /// (needs --endpoint).
    Init(InitArgs),
    /// Members, their roles and conditions, leader, term and indexes.
    Status,
    /// Join tokens for new nodes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Back up the replicated store, or restore it after quorum is lost.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// `cairn cluster snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write the whole replicated store to FILE (admin only; mode 0600:
    /// it holds join token records and every key).
    Save {
        /// Where to write it; an existing file is not replaced.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Make the node a new one-voter cluster holding the backup in FILE.
    /// For a cluster that lost a majority of its voters for good: the
    /// other nodes must be reset and join again.
    Restore {
        /// A file written by `snapshot save`.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Restore even though the node still sees a leader (this splits
        /// a live cluster).
        #[arg(long)]
        force: bool,
    },
}

/// `cairn cluster token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a join token and print it with the command that joins a node
    /// with it (admin only; the secret is shown once).
    Create(TokenCreateArgs),
    /// List join tokens, without their secrets.
    List,
    /// Revoke a join token so no further node can join with it.
    Revoke {
        /// The token's id (the part before the dot).
        #[arg(value_name = "ID")]
        id: TokenId,
    },
}

/// `cairn cluster token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// How long the token is valid, 1m to 7d (90s, 30m, 24h, 7d, 1h30m)
    /// [default: the node's, 1h].
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<Span>,

    /// How many nodes may join with it [default: unlimited until it
    /// expires].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub uses: Option<u32>,

    /// What it is for, shown by `token list`.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
}

/// `cairn cluster init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The node's setup token (printed on its console, or
    /// cluster.setup-token in its machine config).
    #[arg(long, value_name = "TOKEN")]
    pub setup_token: String,

    /// SHA-256 fingerprint of the node's maintenance certificate as its
    /// console prints it (sha256:<64 hex>); without it the node is not
    /// authenticated.
    #[arg(long, value_name = "sha256:HEX")]
    pub fingerprint: Option<Fingerprint>,

    /// Name of the new cluster.
    #[arg(long, value_name = "NAME", default_value = "cairn")]
    pub cluster_name: String,

    /// Name of the context to store [default: the cluster name].
    #[arg(long, value_name = "NAME")]
    pub context_name: Option<ContextName>,

    /// Common name of the admin credential.
    #[arg(long, value_name = "NAME", default_value = "admin")]
    pub admin_name: String,
}

/// `cairn node ...`.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Name, version, addresses, uptime, kernel, boot and certificates.
    Info,
    /// System log of init and cairnd.
    Logs(LogsArgs),
    /// Kernel log.
    Dmesg,
    /// Links, addresses, routes and DNS.
    Network,
    /// The machine config.
    #[command(subcommand)]
    Config(NodeConfigCommand),
    /// Reboot the node.
    Reboot(RebootArgs),
    /// Power the node off.
    Shutdown,
    /// Restart the node agent (cairnd) without rebooting; containers keep
    /// running (admin only).
    RestartAgent,
    /// Have a node in maintenance mode join a cluster with a join token
    /// (--endpoint is the new node).
    Join(JoinArgs),
    /// Remove a member from the cluster (admin only).
    Remove {
        /// The member's node name, as `cairn cluster status` lists it.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

/// `cairn node join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// The new node's setup token (printed on its console, or
    /// cluster.setup-token in its machine config).
    #[arg(long, value_name = "TOKEN")]
    pub setup_token: String,

    /// SHA-256 fingerprint of the new node's maintenance certificate as its
    /// console prints it (sha256:<64 hex>); without it the new node is not
    /// authenticated.
    #[arg(long, value_name = "sha256:HEX")]
    pub fingerprint: Option<Fingerprint>,

    /// API endpoint of a cluster member the new node asks to join.
    #[arg(long, value_name = "HOST:PORT")]
    pub cluster: Endpoint,

    /// Join token from `cairn cluster token create` (<id>.<secret>).
    #[arg(long, value_name = "TOKEN")]
    pub token: String,

    /// SHA-256 fingerprint of the cluster CA (sha256:<64 hex>, printed by
    /// `cairn cluster token create`); the new node refuses a cluster whose
    /// CA differs.
    #[arg(long, value_name = "sha256:HEX")]
    pub ca_hash: Fingerprint,
}

/// `cairn kv ...`.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print a key's value alone (with -o json, the whole record).
    Get {
        /// The key.
        key: String,
    },
    /// Write a value.
    Put {
        /// The key.
        key: String,
        /// The value.
        #[arg(allow_hyphen_values = true)]
        value: String,
        /// Write only if the key's last change was this revision (0: only
        /// if the key does not exist).
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
        /// Delete only if the key's last change was this revision.
        #[arg(long, value_name = "N")]
        if_revision: Option<u64>,
    },
    /// List records whose keys start with PREFIX, in key order.
    List {
        /// Key prefix [default: every key].
        prefix: Option<String>,
        /// At most this many records [default: the node's, 1000].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
    /// Print changes to keys starting with PREFIX as they happen, until
    /// interrupted.
    Watch {
        /// Key prefix [default: every key].
        prefix: Option<String>,
        /// Start after this revision (a list's revision or the last event
        /// seen) instead of now.
        #[arg(long, value_name = "REV")]
        after: Option<u64>,
    },
}

/// `cairn image ...`. REF is a reference (`redis:latest`) or a manifest
/// digest (`sha256:<64 hex>`).
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import every named image of an OCI archive (as `skopeo copy …
    /// oci-archive:FILE:REF` writes it); prints the references imported.
    Import {
        /// The archive.
        file: PathBuf,
    },
    /// Pull an image from its registry (mirrors first) into the node's
    /// store: HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]. Shows a progress bar
    /// per layer on a terminal.
    Pull {
        /// The image, with its registry written out.
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Write one image to FILE as an OCI archive.
    Export {
        /// The image.
        #[arg(value_name = "REF")]
        reference: String,
        /// The archive to write; an existing file is an error.
        file: PathBuf,
    },
    /// Images on the node, once per reference.
    #[command(alias = "ls")]
    List,
    /// Remove a reference (for a digest, every reference to it); the
    /// content goes at the next prune.
    Rm {
        /// The image.
        #[arg(value_name = "REF")]
        reference: String,
    },
    /// Remove unnamed images and every blob and unpacked layer no image
    /// or container uses.
    Prune,
}

/// `cairn node logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new entries as they are written.
    #[arg(short = 'f', long)]
    pub follow: bool,

    /// Which boot: 0 is this one, -1 the one before, and so on.
    #[arg(
        long,
        default_value_t = 0,
        allow_hyphen_values = true,
        value_name = "N"
    )]
    pub boot: i32,

    /// Only the last N entries (before following).
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
}

/// `cairn node config ...`.
#[derive(Debug, Subcommand)]
pub enum NodeConfigCommand {
    /// Print the machine config in force (secrets redacted).
    Get,
    /// Validate and apply a machine config from FILE (`-` for stdin).
    Apply {
        /// Only validate and report what would change.
        #[arg(long)]
        dry_run: bool,
        /// The TOML file.
        #[arg(value_name = "FILE")]
        file: String,
    },
}

/// `cairn node reboot`.
#[derive(Debug, Args)]
pub struct RebootArgs {
    /// Wait until the node is back with a new boot id.
    #[arg(long)]
    pub wait: bool,

    /// How long --wait waits.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15m",
        requires = "wait"
    )]
    pub timeout: Span,
}

/// `cairn cert ...`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a key and CSR here, have the node's cluster CA sign it for a
    /// role, and store the credential (admin only).
    Issue(IssueArgs),
}

/// `cairn cert issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The role to grant.
    #[arg(long, value_enum, default_value_t = RoleArg::Reader)]
    pub role: RoleArg,

    /// How long the certificate is valid (90s, 30m, 24h, 7d, 1h30m).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub ttl: Span,

    /// Common name of the holder [default: the role name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Store it as this new context (same endpoints and CA as the context
    /// used) [default: CONTEXT-NAME].
    #[arg(long, value_name = "NAME", conflicts_with = "out_dir")]
    pub add_context: Option<ContextName>,

    /// Write NAME.crt, NAME.key (mode 0600) and ca.crt into DIR
    /// instead of adding a context.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// A role on the command line (listed in `--help` and completions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Read-only.
    Reader,
    /// Config, reboot, shutdown.
    Operator,
    /// Everything, including issuing credentials.
    Admin,
}

impl From<RoleArg> for api::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Reader => api::Role::Reader,
            RoleArg::Operator => api::Role::Operator,
            RoleArg::Admin => api::Role::Admin,
        }
    }
}

/// `cairn config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the contexts.
    Contexts,
    /// Make a context the current one.
    UseContext {
        /// The context.
        name: ContextName,
    },
    /// Delete a context and its credential.
    RemoveContext {
        /// The context.
        name: ContextName,
    },
}

/// `cairn ctr ...`: containers on the node the context points at.
#[derive(Debug, Subcommand)]
pub enum CtrCommand {
    /// Create a container from an image in the node's store and start it.
    Run(Box<RunArgs>),
    /// Containers on the node, with state, restarts and health.
    #[command(alias = "ls")]
    List,
    /// One container in detail.
    Inspect {
        /// The container.
        name: String,
    },
    /// A container's output (stdout and stderr, interleaved as written).
    Logs {
        /// The container.
        name: String,
        /// Keep printing new lines as they are written.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines (before following).
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
    },
    /// Stop a container: its stop signal, then SIGKILL after the timeout.
    Stop {
        /// The container.
        name: String,
        /// Seconds before SIGKILL [default: the container's, 10].
        #[arg(short = 't', long, value_name = "SECONDS")]
        timeout: Option<u32>,
    },
    /// Start a stopped or exited container.
    Start {
        /// The container.
        name: String,
    },
    /// Stop a container, then start it again.
    Restart {
        /// The container.
        name: String,
        /// Seconds before SIGKILL [default: the container's, 10].
        #[arg(short = 't', long, value_name = "SECONDS")]
        timeout: Option<u32>,
    },
    /// Remove a container with its logs and writable layer (volumes stay).
    Rm {
        /// The container.
        name: String,
        /// Stop it first if it is running.
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// Run a command in a running container; exits with the command's
    /// exit code.
    Exec {
        /// The container.
        name: String,
        /// KEY=VALUE added to the environment (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Working directory [default: the container's].
        #[arg(short = 'w', long, value_name = "DIR")]
        workdir: Option<String>,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
}

/// `cairn ctr run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The container's name on the node.
    pub name: String,
    /// A reference (`redis:7`) or manifest digest of an image in the
    /// node's store.
    pub image: String,
    /// never, on-failure[:MAX_RETRIES] or always.
    #[arg(long, value_name = "POLICY", default_value = "never", value_parser = parse_restart)]
    pub restart: api::types::RestartPolicy,
    /// KEY=VALUE added to the image's environment (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// VOLUME:/PATH[:ro]: a named volume on the node (repeatable).
    #[arg(short = 'v', long = "volume", value_name = "VOLUME:PATH[:ro]", value_parser = parse_volume)]
    pub volumes: Vec<api::types::VolumeMount>,
    /// Memory limit (64M, 1G); the kernel kills the container beyond it.
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<crate::quantity::Bytes>,
    /// CPU limit in CPUs (0.5, 2).
    #[arg(long, value_name = "CPUS")]
    pub cpus: Option<crate::quantity::Cpus>,
    /// Most processes and threads at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub pids: Option<u64>,
    /// Mount the image's root read-only.
    #[arg(long)]
    pub read_only: bool,
    /// host (the node's network) or private (loopback only).
    #[arg(long, value_enum, default_value_t = NetworkArg::Host)]
    pub network: NetworkArg,
    /// user, uid, user:group or uid:gid [default: the image's].
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory [default: the image's].
    #[arg(short = 'w', long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Replace the image's entrypoint (words split on spaces; "" clears it).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Add a capability to the default set (repeatable).
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from the default set; ALL drops every one.
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Health check: run this command in the container (words split on
    /// spaces; exit 0 is healthy).
    #[arg(long, value_name = "CMD", group = "probe")]
    pub health_cmd: Option<String>,
    /// Health check: GET PORT[/PATH] answers 2xx or 3xx.
    #[arg(long, value_name = "PORT[/PATH]", group = "probe")]
    pub health_http: Option<String>,
    /// Health check: PORT accepts a TCP connection.
    #[arg(long, value_name = "PORT", group = "probe")]
    pub health_tcp: Option<u16>,
    /// Time between probes [default: 30s].
    #[arg(long, value_name = "DURATION", requires = "probe")]
    pub health_interval: Option<Span>,
    /// Time a probe may take [default: 5s].
    #[arg(long, value_name = "DURATION", requires = "probe")]
    pub health_timeout: Option<Span>,
    /// Failures in a row before unhealthy [default: 3].
    #[arg(long, value_name = "N", requires = "probe", value_parser = clap::value_parser!(u32).range(1..))]
    pub health_retries: Option<u32>,
    /// Time after start during which failures do not count [default: 0s].
    #[arg(long, value_name = "DURATION", requires = "probe")]
    pub health_start_period: Option<Span>,
    /// Hostname inside the container [default: its name].
    #[arg(long)]
    pub hostname: Option<String>,
    /// Seconds between the stop signal and SIGKILL [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<u32>,
    /// Rotate the log file at this size [default: 10M].
    #[arg(long, value_name = "SIZE")]
    pub log_max_size: Option<crate::quantity::Bytes>,
    /// Rotated log files to keep [default: 3].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub log_max_files: Option<u32>,
    /// The command and its arguments, replacing the image's Cmd.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `--network`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// The node's network.
    Host,
    /// A private network namespace with loopback only.
    Private,
}

fn parse_restart(text: &str) -> Result<api::types::RestartPolicy, String> {
    use api::types::{RestartMode, RestartPolicy};
    let (mode, retries) = match text.split_once(':') {
        Some((mode, n)) => (mode, Some(n)),
        None => (text, None),
    };
    let policy = match mode {
        "never" | "no" => RestartMode::Never,
        "on-failure" => RestartMode::OnFailure,
        "always" => RestartMode::Always,
        _ => {
            return Err(format!(
                "unknown restart policy {mode:?}, expected never, on-failure[:N] or always"
            ));
        }
    };
    let max_retries = match (policy, retries) {
        (_, None) => None,
        (RestartMode::OnFailure, Some(n)) => Some(
            n.parse::<u32>()
                .map_err(|_| format!("invalid retry count {n:?} in on-failure:{n}"))?,
        ),
        (_, Some(_)) => return Err(format!("only on-failure takes a retry count, not {mode}")),
    };
    Ok(RestartPolicy {
        policy,
        max_retries,
    })
}

fn parse_volume(text: &str) -> Result<api::types::VolumeMount, String> {
    let mut parts = text.split(':');
    let (Some(volume), Some(path)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "invalid volume {text:?}, expected VOLUME:/PATH[:ro]"
        ));
    };
    let read_only = match parts.next() {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => {
            return Err(format!(
                "invalid volume option {other:?}, expected ro or rw"
            ));
        }
    };
    if parts.next().is_some() {
        return Err(format!(
            "invalid volume {text:?}, expected VOLUME:/PATH[:ro]"
        ));
    }
    Ok(api::types::VolumeMount {
        volume: volume.to_owned(),
        path: path.to_owned(),
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_the_exit_codes_the_code_uses() {
        assert_eq!(EXIT_CODES_HELP, crate::failure::Exit::help_table());
    }

    #[test]
    fn the_acceptance_check_command_lines_parse() {
        let cli = Cli::try_parse_from([
            "cairn",
            "cluster",
            "init",
            "--endpoint",
            "10.0.0.5:7443",
            "--setup-token",
            "t",
            "--fingerprint",
            &format!("sha256:{}", "ab".repeat(32)),
        ])
        .expect("init parses");
        assert_eq!(cli.endpoint.expect("endpoint").to_string(), "10.0.0.5:7443");

        let cli = Cli::try_parse_from(["cairn", "node", "info", "-o", "json"]).expect("info");
        assert_eq!(cli.output, Format::Json);

        let cli = Cli::try_parse_from(["cairn", "node", "logs", "--follow", "--boot", "-1"])
            .expect("logs");
        let Command::Node(NodeCommand::Logs(logs)) = cli.command else {
            panic!("not logs");
        };
        assert_eq!((logs.follow, logs.boot), (true, -1));

        let cli = Cli::try_parse_from([
            "cairn", "cert", "issue", "--role", "operator", "--ttl", "24h",
        ])
        .expect("cert");
        let Command::Cert(CertCommand::Issue(issue)) = cli.command else {
            panic!("not cert issue");
        };
        assert_eq!(
            (api::Role::from(issue.role), issue.ttl.as_secs()),
            (api::Role::Operator, 86_400)
        );
    }

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(args)
            .unwrap_or_else(|e| panic!("{args:?} should parse: {e}"))
            .command
    }

    #[test]
    fn token_create_takes_operator_durations_and_a_use_limit() {
        let Command::Cluster(ClusterCommand::Token(TokenCommand::Create(args))) = parse(&[
            "cairn",
            "cluster",
            "token",
            "create",
            "--ttl",
            "1h30m",
            "--uses",
            "3",
            "--description",
            "rack b",
        ]) else {
            panic!("not token create");
        };
        assert_eq!(args.ttl.map(Span::as_secs), Some(5400));
        assert_eq!(args.uses, Some(3));
        assert_eq!(args.description.as_deref(), Some("rack b"));

        let Command::Cluster(ClusterCommand::Token(TokenCommand::Create(args))) =
            parse(&["cairn", "cluster", "token", "create"])
        else {
            panic!("not token create");
        };
        // Left to the node's defaults.
        assert_eq!((args.ttl, args.uses), (None, None));
    }

    #[test]
    fn kv_commands_take_revisions_and_values_that_look_like_flags() {
        let Command::Kv(KvCommand::Put {
            key,
            value,
            if_revision,
        }) = parse(&[
            "cairn",
            "kv",
            "put",
            "site/ntp",
            "-5",
            "--if-revision",
            "42",
        ])
        else {
            panic!("not kv put");
        };
        assert_eq!(
            (key.as_str(), value.as_str(), if_revision),
            ("site/ntp", "-5", Some(42))
        );
        let Command::Kv(KvCommand::Watch { prefix, after }) =
            parse(&["cairn", "kv", "watch", "site/", "--after", "7"])
        else {
            panic!("not kv watch");
        };
        assert_eq!((prefix.as_deref(), after), (Some("site/"), Some(7)));
        let Command::Kv(KvCommand::List { prefix, limit }) = parse(&["cairn", "kv", "list"]) else {
            panic!("not kv list");
        };
        assert_eq!((prefix, limit), (None, None));
    }

    #[test]
    fn node_join_parses_the_acceptance_command_line() {
        let hash = format!("sha256:{}", "ab".repeat(32));
        let cli = Cli::try_parse_from([
            "cairn",
            "node",
            "join",
            "--endpoint",
            "10.0.0.6:7443",
            "--setup-token",
            "T",
            "--cluster",
            "10.0.0.5",
            "--token",
            "abcdef.0123456789abcdef",
            "--ca-hash",
            &hash,
        ])
        .expect("join parses");
        assert_eq!(cli.endpoint.expect("endpoint").to_string(), "10.0.0.6:7443");
        let Command::Node(NodeCommand::Join(join)) = cli.command else {
            panic!("not node join");
        };
        // The member's port defaults like every endpoint.
        assert_eq!(join.cluster.to_string(), "10.0.0.5:7443");
        assert_eq!(join.ca_hash.to_string(), hash);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["cairn", "node", "info", "-e", "host:99999"][..],
            &[
                "cairn",
                "cluster",
                "init",
                "--setup-token",
                "t",
                "--fingerprint",
                "md5:00",
            ],
            &["cairn", "cert", "issue", "--role", "root"],
            &[
                "cairn",
                "cert",
                "issue",
                "--out-dir",
                "x",
                "--add-context",
                "y",
            ],
            &["cairn", "node", "reboot", "--timeout", "5m"],
            &["cairn", "cluster", "token", "create", "--ttl", "1 hour"],
            &["cairn", "cluster", "token", "create", "--ttl", "0s"],
            &["cairn", "cluster", "token", "create", "--uses", "0"],
            &["cairn", "cluster", "token", "create", "--uses", "-1"],
            &["cairn", "cluster", "token", "revoke", "ABC!"],
            &["cairn", "kv", "put", "k", "v", "--if-revision", "x"],
            &["cairn", "kv", "list", "--limit", "0"],
            &["cairn", "kv", "get"],
            &[
                "cairn",
                "node",
                "join",
                "--setup-token",
                "t",
                "--cluster",
                "10.0.0.5",
                "--token",
                "abcdef.x",
                "--ca-hash",
                "sha256:abc",
            ],
            &[
                "cairn",
                "node",
                "join",
                "--setup-token",
                "t",
                "--cluster",
                "10.0.0.5",
                "--token",
                "abcdef.x",
            ],
        ] {
            let err = Cli::try_parse_from(args).expect_err("refused");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
