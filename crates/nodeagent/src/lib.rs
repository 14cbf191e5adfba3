//! `cairnd`, the Cairn node agent.
//!
//! The agent finds its machine config, brings the network up, answers
//! health probes, keeps the system log, and serves the node API through
//! which an operator bootstraps a cluster and manages the node. Later it
//! grows Raft, the container runtime and time sync on the same skeleton.
//!
//! # Moving parts
//!
//! - [`config`]: the machine config. [`config::source`] finds it (kernel
//!   command line, ESP, QEMU fw_cfg, embedded default, in that order) and
//!   [`config::parse`] turns bytes into a validated
//!   [`config::MachineConfig`] or an error naming the source and key path.
//!   A refused config never stops the node: it runs on the embedded default
//!   and says why on the console, on `/readyz` and in `/metrics`.
//! - [`net`]: links, addresses, routes, DHCP, resolv.conf and the host
//!   name. Decisions live in sans-IO modules ([`net::plan`], [`net::lease`],
//!   [`net::resolv`], [`net::hostname`]) with unit tests; the I/O shells are
//!   [`net::netlink`] (rtnetlink) and [`net::dhcp`] (our own DHCPv4
//!   client, itself a sans-IO core in a thin task). One task owns
//!   all link state and is reached through [`net::NetworkHandle`].
//! - [`health`]: the read-only HTTP port (`/healthz`, `/readyz`,
//!   `/metrics`).
//! - [`apiserver`]: the node API on `:7443` (HTTPS, mutual TLS once the
//!   node is a cluster member, maintenance mode before), built from the
//!   `api` crate's route table.
//! - [`journal`]: the system log on STATE (cairn-init's and cairnd's
//!   lines, per boot, rotated and capped) and the kernel log reader.
//! - [`agent`]: start-up order, the main loop and graceful shutdown.
//!
//! The binary (`src/main.rs`) only sets up logging, builds a
//! current-thread tokio runtime (small RSS, no worker pool) and calls
//! [`agent::run`].

#![forbid(unsafe_code)]

pub mod agent;
pub mod apiserver;
pub mod config;
pub mod containers;
mod files;
pub mod health;
pub mod images;
pub mod journal;
pub mod member;
pub mod net;

use std::io::IsTerminal;

/// Environment variable holding a tracing filter (`info`, `debug`,
/// `nodeagent=debug`, `nodeagent::net::dhcp=debug`, ...).
pub const ENV_LOG: &str = "CAIRN_LOG";

/// Kernel command line parameter with the same meaning, for booted nodes:
/// cairn-init starts cairnd with a clean environment.
pub const CMDLINE_LOG_PARAM: &str = "cairn.log";

/// The filter used when neither is set. netlink's crates log every
/// message at debug level, so they are held to warnings.
pub const DEFAULT_LOG_FILTER: &str = "info,netlink_proto=warn,netlink_sys=warn,rtnetlink=warn";

/// Renders an error and all its sources as `outer: inner: root`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The log filter: [`ENV_LOG`], else `cairn.log=` from `cmdline`, else
/// [`DEFAULT_LOG_FILTER`].
pub fn log_filter_spec(env: Option<String>, cmdline: &str) -> String {
    env.filter(|v| !v.trim().is_empty())
        .or_else(|| config::source::cmdline_param(cmdline, CMDLINE_LOG_PARAM))
        .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned())
}

/// Whether to colour the log: only on a terminal, and not when the
/// environment says no (`NO_COLOR`, `TERM` unset or `dumb`; cairn-init
/// starts cairnd without `TERM`, so the console log stays plain).
pub fn use_ansi(is_terminal: bool, term: Option<&str>, no_color: bool) -> bool {
    is_terminal && !no_color && term.is_some_and(|t| !t.is_empty() && t != "dumb")
}

/// Opens the system log in `dir` and starts its writer thread. A node
/// whose STATE is unusable still runs, without a persisted log: the reason
/// goes to the console (logging is not set up yet when this runs).
pub fn open_journal(dir: &std::path::Path) -> Option<journal::Journal> {
    let opened = journal::BootId::from_proc(std::path::Path::new(journal::BOOT_ID_PATH))
        .map_err(|e| error_chain(&e))
        .and_then(|boot| {
            let config = journal::JournalConfig {
                dir: dir.to_owned(),
                ..journal::JournalConfig::default()
            };
            journal::Journal::open(config, boot).map_err(|e| error_chain(&e))
        })
        .and_then(|(journal, task)| {
            task.spawn()
                .map(|_| journal)
                .map_err(|e| format!("cannot start the journal writer: {e}"))
        });
    match opened {
        Ok(journal) => Some(journal),
        Err(e) => {
            eprintln!("cairnd: ERROR: no persisted system log this boot: {e}");
            None
        }
    }
}

/// Sends tracing events (and `log` records from dependencies) to stderr,
/// which cairn-init connects to the console, and to the journal when there
/// is one. The filter applies to both.
pub fn init_logging(journal: Option<journal::Journal>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let spec = log_filter_spec(std::env::var(ENV_LOG).ok(), &cmdline);
    let filter = tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("cairnd: ignoring bad log filter {spec:?}: {e}");
        tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)
    });
    let ansi = use_ansi(
        std::io::stderr().is_terminal(),
        std::env::var("TERM").ok().as_deref(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    );
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(journal.map(journal::layer::JournalLayer::new))
        .try_init();
    if let Err(e) = result {
        eprintln!("cairnd: logging already initialised: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filter_comes_from_env_then_cmdline_then_default() {
        assert_eq!(
            log_filter_spec(Some("debug".into()), "cairn.log=warn"),
            "debug"
        );
        assert_eq!(
            log_filter_spec(Some(" ".into()), "quiet cairn.log=warn"),
            "warn"
        );
        assert_eq!(log_filter_spec(None, "quiet"), DEFAULT_LOG_FILTER);
    }

    #[test]
    fn colours_only_on_a_real_terminal() {
        assert!(use_ansi(true, Some("xterm-256color"), false));
        assert!(!use_ansi(false, Some("xterm"), false));
        assert!(!use_ansi(true, None, false), "cairn-init clears TERM");
        assert!(!use_ansi(true, Some("dumb"), false));
        assert!(!use_ansi(true, Some("xterm"), true), "NO_COLOR wins");
    }

    #[test]
    fn error_chain_joins_every_source() {
        let inner = std::io::Error::other("root cause");
        let outer = crate::config::source::ConfigLoadError::Read {
            origin: crate::config::ConfigOrigin::Esp("/efi/cairn/config.toml".into()),
            source: inner,
        };
        assert_eq!(
            error_chain(&outer),
            "/efi/cairn/config.toml (esp): cannot read the config: root cause"
        );
    }
}
