//! # qemu-tests: Cairn on real (emulated) machinery
//!
//! This crate boots the artifacts `cairn-image build` produces in QEMU and
//! checks what an operator would check: the machine comes up from disk, USB,
//! PXE or a VMware disk, gets an address by DHCP, answers on its health
//! port, and powers off cleanly when its power button is pressed.
//!
//! ## Moving parts
//!
//! - [`image::Image`] finds or builds the image once per process (a
//!   `OnceLock` plus an `flock`, so parallel test binaries do not build
//!   twice). [`image::BaselineImage`] does the same for the benchmark's
//!   busybox baseline.
//! - [`network::Network`] is a private L2 network: a fresh network
//!   namespace (`cairnt-<pid>-<n>`) holding a bridge and dnsmasq (DHCP, and
//!   TFTP for PXE). Nothing is routed out of it. The harness talks to
//!   guests from threads that have entered the namespace
//!   ([`network::Network::run_in`], [`network::Network::http_get`]), and
//!   reads dnsmasq's lease file ([`leases`]) to learn guest addresses.
//! - [`vm::Vm`] is one QEMU process in that namespace: q35, OVMF, a
//!   copy-on-write overlay over the image, a tap on the bridge, a serial
//!   console captured to a file and a QMP socket ([`qmp`]). It waits for
//!   console lines, leases, `/readyz` and its own exit, and dies with its
//!   handle.
//! - [`accel`] picks TCG unless a probe boot proves KVM works.
//! - [`lock::VmLock`] serialises VM work: two cores emulating two guests at
//!   once would make every timeout a coin toss.
//! - [`console`] holds the console lines the scenarios expect from
//!   `cairn-init` and `cairnd`, in one place.
//! - [`apibench`] is not about VMs: it runs the release cairnd and nginx
//!   in a network namespace and measures the node API under mTLS load
//!   (binary `cairn-api-bench`).
//! - [`cli::Cli`] runs the `cairn` client the image build shipped, inside
//!   the network's namespace, with a config file of the test's own;
//!   [`scenario::Scenario`] is what the VM tests build on it: run the
//!   client, require success or one JSON object, and fail naming every
//!   console and the client transcript.
//! - [`clusterbench`] runs three cairnd and three etcd processes on
//!   loopback (binary `cairn-cluster-bench`, and the kill -9 test);
//!   [`benchrun`] is what both network benchmarks do before and after
//!   measuring (root and tools, host facts, log directory, JSON report).
//! - [`containerbench`] is the container benchmark (binary
//!   `cairn-container-bench`): cairn-shim against crun in one VM booted
//!   with a test initramfs ([`initramfs`]), and the shim's memory.
//!
//! ## Teardown
//!
//! Every resource is owned by a value whose `Drop` releases it, so a test
//! that panics still kills its QEMU processes and dnsmasq and deletes its
//! namespace. Logs are kept under `target/qemu-tests/logs/<test>/`, and
//! wait errors carry the tail of the console so a CI failure shows why.
//! A process killed with SIGKILL leaves its namespace behind; the next run
//! removes namespaces whose owning pid is dead.
//!
//! ## Failing, not skipping
//!
//! The scenarios need root, QEMU, OVMF, iPXE ROMs and dnsmasq. Without
//! them they fail with the Debian package to install ([`tools`]); they are
//! never silently skipped.

#![forbid(unsafe_code)]

pub mod accel;
pub mod apibench;
pub mod benchrun;
pub mod cli;
pub mod clusterbench;
pub mod console;
pub mod containerbench;
pub mod http;
pub mod image;
pub mod initramfs;
pub mod leases;
pub mod lock;
pub mod metrics;
pub mod network;
pub mod paths;
pub mod pxe;
pub mod qmp;
pub mod registry;
pub mod scenario;
pub mod tools;
pub mod vm;

pub use cli::{Cli, CliOutput};
pub use image::{BaselineImage, Image};
pub use network::{Network, NetworkConfig};
pub use vm::{Vm, VmSpec};

use std::error::Error;
use std::time::Duration;

/// An error and all its causes, one per line.
#[must_use]
pub fn report(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str("\n  caused by: ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Turns a harness error into a test failure that prints the whole chain
/// (and, for VM waits, the console tail the error carries).
pub trait OrPanic<T> {
    /// Returns the value or panics with `what` and the error report.
    fn or_panic(self, what: &str) -> T;
}

impl<T, E: Error + 'static> OrPanic<T> for Result<T, E> {
    #[track_caller]
    fn or_panic(self, what: &str) -> T {
        match self {
            Ok(value) => value,
            Err(err) => panic!("{what}: {}", report(&err)),
        }
    }
}

/// `base` scaled by `CAIRN_TIMEOUT_SCALE` (a float, default 1) for slow hosts.
#[must_use]
pub fn timeout(base: Duration) -> Duration {
    let scale = std::env::var("CAIRN_TIMEOUT_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0);
    base.mul_f64(scale)
}
