//! Helpers shared by the namespace tests: a thread in fresh network and
//! UTS namespaces, commands that must succeed, a tokio runtime whose log
//! goes to the test's output.

#![allow(dead_code, reason = "each test binary uses a different subset")]
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::process::Command;

pub mod agent;
pub mod api_client;
pub mod cluster;
pub mod oci_image;
pub mod registry;

use nix::sched::{CloneFlags, unshare};

/// Runs `f` on a thread inside fresh network and UTS namespaces.
pub fn in_fresh_netns<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWUTS)
                .expect("unshare(CLONE_NEWNET|CLONE_NEWUTS) failed: these tests must run as root");
            f()
        });
        match worker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(args: &str) -> String {
    run("ip", &args.split_whitespace().collect::<Vec<_>>())
}

pub fn runtime() -> tokio::runtime::Runtime {
    // The agent's log goes to the test's captured output: shown only for
    // a failing test.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            nodeagent::DEFAULT_LOG_FILTER,
        ))
        .try_init();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
