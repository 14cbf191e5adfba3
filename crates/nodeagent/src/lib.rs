//! `cairnd`, the Cairn node agent.
//!
//! Today the agent does what a freshly booted node needs before it can be
//! part of anything: it finds its machine config, brings the network up,
//! and answers health probes. Later it grows the mTLS API, Raft, the
//! container runtime and time sync on the same skeleton.
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
//!   [`net::netlink`] (rtnetlink) and [`net::dhcp`] (mozim). One task owns
//!   all link state and is reached through [`net::NetworkHandle`].
//! - [`health`]: the read-only HTTP port (`/healthz`, `/readyz`,
//!   `/metrics`).
//! - [`agent`]: start-up order, the main loop and graceful shutdown.
//!
//! The binary (`src/main.rs`) only sets up logging, builds a
//! current-thread tokio runtime (small RSS, no worker pool) and calls
//! [`agent::run`].

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod health;
pub mod net;

use std::io::IsTerminal;

/// Environment variable holding a tracing filter (`info`, `debug`,
/// `nodeagent=debug,mozim=debug`, ...).
pub const ENV_LOG: &str = "CAIRN_LOG";

/// The filter used when [`ENV_LOG`] is unset. netlink's crates log every
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

/// Sends tracing events (and `log` records from dependencies) to stderr,
/// which cairn-init connects to the console. Colours only on a terminal.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(ENV_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let result = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
    if let Err(e) = result {
        eprintln!("cairnd: logging already initialised: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
