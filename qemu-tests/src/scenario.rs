//! What the VM scenario tests do with the `cairn` client: run it, require
//! that it succeeded or printed one JSON object, pick fields out of its
//! answers, and, when anything is wrong, fail the test with every log a
//! person needs to find out why.
//!
//! A test's own type (one node, or a whole cluster of them) implements
//! [`Scenario`] by naming its client and saying how it fails (which
//! consoles and transcripts the message points to); the checks on top are
//! the same for every test.

use std::time::Duration;

use serde_json::Value;

use crate::{Cli, CliOutput, timeout};

/// A test driving VMs with the `cairn` client.
pub trait Scenario {
    /// The client the test runs.
    fn cli(&self) -> &Cli<'_>;

    /// Fails the test with `what`, naming every log that could explain it.
    fn fail(&self, what: &str) -> !;

    /// Fails the test with `what()` unless `ok`.
    #[track_caller]
    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(&what());
        }
    }

    /// Runs the client; only a client that cannot run or hangs fails here
    /// (its exit status is the caller's to judge).
    #[track_caller]
    fn cairn(&self, args: &[&str], limit: Duration) -> CliOutput {
        match self.cli().run(args, timeout(limit)) {
            Ok(out) => out,
            Err(e) => self.fail(&crate::report(&e)),
        }
    }

    /// Runs the client and requires exit status 0.
    #[track_caller]
    fn cairn_ok(&self, args: &[&str], limit: Duration) -> CliOutput {
        let out = self.cairn(args, limit);
        self.check(out.status.success(), || {
            format!("the client failed:\n{}", out.describe())
        });
        out
    }

    /// `-o json` output that must be one JSON object.
    #[track_caller]
    fn cairn_json(&self, args: &[&str], limit: Duration) -> Value {
        let out = self.cairn_ok(args, limit);
        match out.json() {
            Ok(value) if value.is_object() => value,
            Ok(other) => self.fail(&format!(
                "expected one JSON object, got {other}\n{}",
                out.describe()
            )),
            Err(e) => self.fail(&format!(
                "stdout is not one JSON value ({e})\n{}",
                out.describe()
            )),
        }
    }

    /// Polls `probe` every half second until it gives a value, failing
    /// after `limit` (scaled by [`timeout`]) with what it saw last.
    #[track_caller]
    fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = std::time::Instant::now() + timeout(limit);
        loop {
            let seen = match probe() {
                Ok(value) => return value,
                Err(seen) => seen,
            };
            if std::time::Instant::now() >= deadline {
                self.fail(&format!(
                    "timed out after {limit:?} waiting for {what}; last seen: {seen}"
                ));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The string at a JSON pointer (`/cluster/ca_fingerprint`), which must
    /// be there.
    #[track_caller]
    fn text(&self, value: &Value, pointer: &str) -> String {
        match value.pointer(pointer).and_then(Value::as_str) {
            Some(s) => s.to_owned(),
            None => self.fail(&format!("no string at {pointer} in {value}")),
        }
    }
}

/// The lines a failure message needs about `vms`: where each serial
/// console is, and then the tail of each (what [`crate::Vm::failure_context`]
/// gives).
pub fn consoles<'a, 'n: 'a>(vms: impl IntoIterator<Item = &'a crate::Vm<'n>>) -> String {
    let mut logs = String::new();
    let mut tails = String::new();
    for vm in vms {
        logs.push_str(&format!(
            "serial console of {}: {}\n",
            vm.name(),
            vm.console_path().display()
        ));
        tails.push_str(&vm.failure_context());
    }
    logs + &tails
}

/// What a node in maintenance mode gives the operator who bootstraps or
/// joins it: its address, the setup token and the fingerprint of its
/// self-signed API certificate, all from its console and the DHCP lease.
#[derive(Debug, Clone)]
pub struct Maintenance {
    /// The leased address.
    pub ip: std::net::Ipv4Addr,
    /// `--setup-token`.
    pub token: String,
    /// `--fingerprint`.
    pub fingerprint: String,
}

/// Why a VM never showed what [`Maintenance`] needs.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Wait(#[from] crate::vm::VmWaitError),
    #[error("the console line `{line}` does not hold the {what}")]
    Capture { what: &'static str, line: String },
}

impl Maintenance {
    /// Waits (up to `limit` for each) for `vm` to print its setup token
    /// and fingerprint and to get a lease.
    ///
    /// # Errors
    /// [`MaintenanceError`] naming what did not show up.
    pub fn wait(vm: &mut crate::Vm<'_>, limit: Duration) -> Result<Self, MaintenanceError> {
        use crate::console::{MAINTENANCE_FINGERPRINT, SETUP_TOKEN, capture};
        let token_line = vm.wait_for_console(SETUP_TOKEN, timeout(limit))?;
        let fp_line = vm.wait_for_console(MAINTENANCE_FINGERPRINT, timeout(limit))?;
        let ip = vm.wait_for_lease(timeout(limit))?;
        let token = capture(SETUP_TOKEN, &token_line).ok_or(MaintenanceError::Capture {
            what: "setup token",
            line: token_line.clone(),
        })?;
        let fingerprint =
            capture(MAINTENANCE_FINGERPRINT, &fp_line).ok_or(MaintenanceError::Capture {
                what: "certificate fingerprint",
                line: fp_line.clone(),
            })?;
        Ok(Self {
            ip,
            token,
            fingerprint,
        })
    }

    /// `ip:7443`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("{}:7443", self.ip)
    }
}
