//! # cairn-shim: one process per container
//!
//! cairnd writes `<dir>/spec.json` and runs `cairn-shim run --dir <dir>`.
//! The shim forks: the parent waits until the child reports the container
//! running (exit 0) or failed (exit 1, the error chain on stderr). The child
//! starts a new session, becomes a child subreaper, detaches from cairnd's
//! stdio (its own diagnostics go to `<dir>/shim.log`) and lives as long as
//! the container, restarts included, so cairnd can exit, restart or be
//! upgraded without touching the container.
//!
//! ## Moving parts
//!
//! - [`shim::Shim`]: the single-threaded `poll` loop. It mounts the
//!   overlay root (`spec.rootfs` read-only under `upper/` and `work/`),
//!   writes the OCI bundle, and drives youki's libcontainer (no tokio, no
//!   threads: libcontainer clones the caller). It reads the container's
//!   stdout/stderr pipes into the rotating CRI log, answers `shim.sock`,
//!   applies the restart policy ([`runtime::restart`]) and records every
//!   transition in `state.json`.
//! - [`sys`]: the syscalls the shim makes itself (overlay mount, pidfds,
//!   reaping, signals, `memory.events`).
//! - `cairn-shim ctl`: a small client for `shim.sock` (state, stop, kill,
//!   exec), for debugging a node and for the VM tests.
//!
//! libcontainer creates the container's init with `CLONE_PARENT` and no
//! exit signal, so it is the shim's child but sends no SIGCHLD; a pidfd
//! tells the loop when it exits.

mod shim;
mod sys;

use anyhow::{Context, bail};
use runtime::paths::{ContainerDir, RUNTIME_STATE_ROOT};
use runtime::protocol::{ExecEvent, ExecRequest, ShimClient};
use runtime::{ContainerSpec, ExitStatus};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  cairn-shim run --dir DIR [--runtime-root DIR] [--cgroup-root DIR]
  cairn-shim ctl --dir DIR state
  cairn-shim ctl --dir DIR stop [TIMEOUT_S]
  cairn-shim ctl --dir DIR kill SIGNAL
  cairn-shim ctl --dir DIR exec [--env K=V]... [--cwd DIR] -- CMD [ARGS...]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("cairn-shim: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    let mut dir = None;
    let mut runtime_root = PathBuf::from(RUNTIME_STATE_ROOT);
    let mut cgroup_root = PathBuf::from("/sys/fs/cgroup");
    let mut positional = Vec::new();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--runtime-root" => runtime_root = PathBuf::from(value("--runtime-root")?),
            "--cgroup-root" => cgroup_root = PathBuf::from(value("--cgroup-root")?),
            _ => {
                positional.push(arg.clone());
                positional.extend(it.by_ref().cloned());
            }
        }
    }
    let dir = ContainerDir::at(dir.with_context(|| format!("--dir is required\n{USAGE}"))?);
    match command.as_str() {
        "run" => {
            if !positional.is_empty() {
                bail!("unexpected arguments {positional:?}\n{USAGE}");
            }
            start(
                dir,
                shim::HostPaths {
                    runtime_root,
                    cgroup_root,
                },
            )
        }
        "ctl" => ctl(&dir, &positional),
        other => bail!("unknown command {other:?}\n{USAGE}"),
    }
}

/// `run`: validate, fork, report.
fn start(dir: ContainerDir, host: shim::HostPaths) -> anyhow::Result<ExitCode> {
    let spec_path = dir.spec();
    let bytes =
        std::fs::read(&spec_path).with_context(|| format!("reading {}", spec_path.display()))?;
    let spec: ContainerSpec = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {}", spec_path.display()))?;
    spec.validate()
        .with_context(|| format!("checking {}", spec_path.display()))?;

    let (mut ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map(|(r, w)| (std::fs::File::from(r), std::fs::File::from(w)))
        .context("creating the start pipe")?;
    // SAFETY: the shim has not started any thread (libcontainer and every
    // other part of it are single-threaded), so the child may run any code.
    match unsafe { nix::unistd::fork() }.context("forking the shim")? {
        nix::unistd::ForkResult::Parent { .. } => {
            drop(ready_w);
            // Read to the first newline, not to EOF: the container's
            // processes hold a copy of the pipe until they exec.
            let mut report = Vec::new();
            let mut byte = [0u8; 1];
            while ready_r.read(&mut byte).context("waiting for the shim")? == 1 {
                if byte[0] == b'\n' {
                    break;
                }
                report.push(byte[0]);
            }
            let report = String::from_utf8_lossy(&report);
            match report.strip_prefix("ok") {
                Some(_) => Ok(ExitCode::SUCCESS),
                None if report.is_empty() => bail!("the shim died while starting the container"),
                None => bail!("{report}"),
            }
        }
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            let code = match daemon(dir, spec, host, ready_w) {
                Ok(()) => 0,
                Err(err) => {
                    eprintln!("cairn-shim: {err:#}");
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// The long-lived child: detach, start the container, report, serve.
fn daemon(
    dir: ContainerDir,
    spec: ContainerSpec,
    host: shim::HostPaths,
    mut ready: std::fs::File,
) -> anyhow::Result<()> {
    let mut report = |line: String| {
        let _ = ready.write_all(line.as_bytes());
        let _ = ready.flush();
    };
    if let Err(err) = detach(&dir) {
        report(format!("{err:#}\n"));
        return Err(err);
    }
    if let Err(err) = sys::install_terminate_handler() {
        report(format!("{}\n", shim::chain(&err)));
        return Err(err.into());
    }
    match shim::Shim::start(dir, spec, host) {
        Ok(shim) => {
            report("ok\n".to_owned());
            drop(ready);
            shim.serve();
            Ok(())
        }
        Err(err) => {
            let message = shim::chain(&err);
            report(format!("{message}\n"));
            bail!("{message}")
        }
    }
}

/// New session, child subreaper, stdio away from the caller.
fn detach(dir: &ContainerDir) -> anyhow::Result<()> {
    nix::unistd::setsid().context("setsid")?;
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let log_path = dir.path().join("shim.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    nix::unistd::dup2_stdin(null.as_fd()).context("redirecting stdin")?;
    nix::unistd::dup2_stdout(null.as_fd()).context("redirecting stdout")?;
    nix::unistd::dup2_stderr(log.as_fd()).context("redirecting stderr")?;
    Ok(())
}

/// `ctl`: talk to a running shim.
fn ctl(dir: &ContainerDir, args: &[String]) -> anyhow::Result<ExitCode> {
    let client = ShimClient::new(&dir.socket());
    let Some((op, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    match op.as_str() {
        "state" => {
            let state = client.state().context("state")?;
            println!("{}", serde_json::to_string(&state)?);
            Ok(ExitCode::SUCCESS)
        }
        "stop" => {
            let timeout = rest
                .first()
                .map(|t| t.parse::<u64>())
                .transpose()
                .context("timeout")?;
            let state = client.stop(timeout).context("stop")?;
            println!("{}", serde_json::to_string(&state)?);
            Ok(ExitCode::SUCCESS)
        }
        "kill" => {
            let signal = rest.first().context("kill needs a signal")?.parse()?;
            client.kill(signal).context("kill")?;
            Ok(ExitCode::SUCCESS)
        }
        "exec" => {
            let mut env = Vec::new();
            let mut cwd = None;
            let mut it = rest.iter();
            let mut command = Vec::new();
            while let Some(arg) = it.next() {
                match arg.as_str() {
                    "--env" => env.push(it.next().context("--env needs K=V")?.clone()),
                    "--cwd" => cwd = Some(it.next().context("--cwd needs a path")?.clone()),
                    "--" => {
                        command.extend(it.by_ref().cloned());
                    }
                    other => bail!("unexpected {other:?}\n{USAGE}"),
                }
            }
            let request = ExecRequest {
                args: command,
                env,
                cwd,
                tty: false,
            };
            let status = client
                .exec(request, |event| {
                    let _ = match event {
                        ExecEvent::Stdout(b) => std::io::stdout().write_all(b),
                        ExecEvent::Stderr(b) => std::io::stderr().write_all(b),
                        ExecEvent::Exit(_) | ExecEvent::Error(_) => Ok(()),
                    };
                })
                .context("exec")?;
            let _ = std::io::stdout().flush();
            Ok(match status {
                ExitStatus::Code(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
                ExitStatus::Signal(sig) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(255)),
            })
        }
        other => bail!("unknown ctl command {other:?}\n{USAGE}"),
    }
}
