//! `cairnd`: see the `nodeagent` library docs.

use std::process::ExitCode;

use anyhow::Context;

fn run() -> anyhow::Result<()> {
    let mut options = nodeagent::agent::AgentOptions::from_env()?;
    options.journal = nodeagent::open_journal(&options.logs_dir);
    nodeagent::init_logging(options.journal.clone());
    // One thread is plenty for a handful of sockets and timers, and keeps
    // the resident set small; blocking work (config reads, /proc) goes to
    // a few on-demand blocking threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_name("cairnd")
        .build()
        .context("cannot build the tokio runtime")?;
    let result = runtime.block_on(nodeagent::agent::run(options));
    // Do not wait for blocking-pool threads stuck in a syscall: cairn-init
    // sends SIGKILL if the agent lingers after SIGTERM.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    Ok(result?)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cairnd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
