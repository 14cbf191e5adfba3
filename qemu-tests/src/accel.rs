//! Choosing the QEMU accelerator.
//!
//! `/dev/kvm` existing proves little: on some hosts (nested, or emulated
//! `/dev/kvm`) QEMU starts under KVM and then spins without ever running
//! guest code. So KVM is used only after a probe boot under it succeeds:
//! the Cairn kernel with no initramfs and `panic=-1` must print its banner
//! and panic (which `-no-reboot` turns into a QEMU exit) within a few
//! seconds. Anything else means TCG. The verdict is cached per process;
//! `CAIRN_QEMU_ACCEL=tcg|kvm` skips the probe.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::tools;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation: always works, several times slower.
    Tcg,
}

impl Accel {
    /// The `-accel` and `-cpu` arguments for QEMU.
    #[must_use]
    pub fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Self::Kvm => &["-accel", "kvm", "-cpu", "host"],
            // QEMU's default CPU model, as an operator's plain `qemu-system`
            // command gets: it has no RDRAND, so the guest kernel's RNG stays
            // uninitialised for minutes, and the scenarios prove that boot,
            // DHCP and the health port never wait for it.
            Self::Tcg => &["-accel", "tcg"],
        }
    }

    /// `kvm` or `tcg`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

static DETECTED: OnceLock<Accel> = OnceLock::new();

/// How long a KVM boot of the kernel to its panic may take. Under working
/// KVM it takes about a second.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// The accelerator for this process: `CAIRN_QEMU_ACCEL` if set, else the
/// cached outcome of a probe boot of `kernel`.
#[must_use]
pub fn host_accel(kernel: &Path) -> Accel {
    match std::env::var("CAIRN_QEMU_ACCEL").as_deref() {
        Ok("tcg") => return Accel::Tcg,
        Ok("kvm") => return Accel::Kvm,
        _ => {}
    }
    *DETECTED.get_or_init(|| {
        let verdict = probe_kvm(kernel);
        match &verdict {
            Ok(()) => eprintln!("qemu-tests: KVM probe boot succeeded: using KVM"),
            Err(why) => eprintln!("qemu-tests: KVM unusable ({why}): using TCG"),
        }
        if verdict.is_ok() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    })
}

fn probe_kvm(kernel: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    let qemu = tools::QEMU.locate().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let console = dir.path().join("probe.log");
    let mut child = Command::new(qemu)
        .args([
            "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "256",
        ])
        .args(["-nodefaults", "-display", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting QEMU: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > PROBE_LIMIT => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = std::fs::read_to_string(&console).unwrap_or_default();
    match status {
        Some(_) if output.contains("Kernel panic") => Ok(()),
        Some(status) => Err(format!(
            "probe QEMU exited ({status}) without booting the kernel"
        )),
        None => Err(format!("probe boot did not finish within {PROBE_LIMIT:?}")),
    }
}
