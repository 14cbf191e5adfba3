//! One QEMU virtual machine on a [`Network`].
//!
//! Every VM gets: `-machine q35`, OVMF (read-only code plus its own copy of
//! the variable store), a copy-on-write qcow2 overlay over the image under
//! test (so the image itself is never written and STATE has room to grow),
//! a tap device on the network's bridge with a MAC unique in the process,
//! a serial console written to `target/qemu-tests/logs/<test>/<vm>.console.log`,
//! and a QMP socket. QEMU runs inside the network namespace via
//! `ip netns exec`, so the tap it opens is the namespace's.
//!
//! Building the command line ([`qemu_args`]) is pure and unit tested; the
//! [`Vm`] handle runs it, waits on the console, the lease file and the
//! health port, and kills QEMU when dropped, including during a panic.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::accel::{self, Accel};
use crate::image::Image;
use crate::leases::MacAddr;
use crate::network::{self, CommandError, GuestRequestError, LeaseReadError, Network};
use crate::qmp::{QmpClient, QmpError};
use crate::tools::{self, ToolError};

/// The agent's plain-HTTP health port.
pub const HEALTH_PORT: u16 = 7480;

/// QEMU's id for every VM's NIC backend: what QMP `set_link` takes.
pub const NETDEV: &str = "net0";

/// Virtual size of every overlay: larger than the image, like a real disk,
/// so first-boot growth of STATE has something to do.
const OVERLAY_SIZE: &str = "4G";

/// How the disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskBus {
    /// `virtio-blk-pci` (KVM/QEMU clouds).
    VirtioBlk,
    /// `usb-storage` on a `qemu-xhci` controller (a USB stick).
    UsbStorage,
    /// `scsi-hd` on a VMware `pvscsi` controller.
    Pvscsi,
}

/// On-disk format of the base image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
}

impl DiskFormat {
    /// The name QEMU uses.
    #[must_use]
    pub fn qemu_name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
        }
    }
}

/// A base image and how to attach it (through a per-VM overlay).
#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub base: PathBuf,
    pub format: DiskFormat,
    pub bus: DiskBus,
}

/// The emulated NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    VirtioNet,
    /// VMware's paravirtual NIC.
    Vmxnet3,
}

impl NicModel {
    fn device(self) -> &'static str {
        match self {
            Self::VirtioNet => "virtio-net-pci",
            Self::Vmxnet3 => "vmxnet3",
        }
    }
}

/// Everything that distinguishes one VM from another.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// Short name: `[a-z0-9-]`, used in file names and QEMU's `-name`.
    pub name: String,
    /// `None` boots from the network (PXE).
    pub disk: Option<DiskSpec>,
    pub nic: NicModel,
    pub memory_mib: u32,
    /// Handed to the guest as fw_cfg `opt/cairn/config`.
    pub machine_config: Option<PathBuf>,
    /// Load kernel and initramfs through QEMU's fw_cfg instead of from the
    /// disk's ESP (OVMF still runs; only the boot loader step is skipped).
    pub direct_kernel: Option<DirectKernel>,
    /// Make a guest reboot exit QEMU instead (a panic becomes visible as an exit).
    pub no_reboot: bool,
    /// `None` picks [`accel::host_accel`].
    pub accel: Option<Accel>,
    /// Kernel used for the KVM probe boot.
    pub probe_kernel: PathBuf,
}

impl VmSpec {
    fn with_disk(name: &str, image: &Image, disk: Option<DiskSpec>, nic: NicModel) -> Self {
        Self {
            name: name.to_owned(),
            disk,
            nic,
            memory_mib: 1024,
            machine_config: None,
            direct_kernel: None,
            no_reboot: true,
            accel: None,
            probe_kernel: image.vmlinuz(),
        }
    }

    /// `cairn.raw` on virtio-blk, virtio NIC.
    #[must_use]
    pub fn virtio_disk(name: &str, image: &Image) -> Self {
        let disk = DiskSpec {
            base: image.raw(),
            format: DiskFormat::Raw,
            bus: DiskBus::VirtioBlk,
        };
        Self::with_disk(name, image, Some(disk), NicModel::VirtioNet)
    }

    /// `cairn.qcow2` (the KVM template) on virtio-blk, virtio NIC.
    #[must_use]
    pub fn virtio_qcow2(name: &str, image: &Image) -> Self {
        let disk = DiskSpec {
            base: image.qcow2(),
            format: DiskFormat::Qcow2,
            bus: DiskBus::VirtioBlk,
        };
        Self::with_disk(name, image, Some(disk), NicModel::VirtioNet)
    }

    /// `cairn.raw` as a USB stick on an xHCI controller, virtio NIC.
    #[must_use]
    pub fn usb_stick(name: &str, image: &Image) -> Self {
        let disk = DiskSpec {
            base: image.raw(),
            format: DiskFormat::Raw,
            bus: DiskBus::UsbStorage,
        };
        Self::with_disk(name, image, Some(disk), NicModel::VirtioNet)
    }

    /// `cairn.vmdk` on pvscsi with a vmxnet3 NIC: VMware's hardware.
    ///
    /// Debian 12's OVMF has no PVSCSI driver (edk2 builds it only on
    /// request), so the firmware cannot read the ESP through pvscsi the way
    /// VMware's firmware does. The kernel, initramfs and command line of the
    /// slot (the `pxe/` copies, identical to the ESP's) are therefore handed
    /// in via fw_cfg; everything after the kernel starts -- the pvscsi and
    /// vmxnet3 drivers, finding STATE on the VMDK -- is the real path.
    ///
    /// # Errors
    /// [`BootScriptError`] if `pxe/boot.ipxe` cannot be read or parsed.
    pub fn vmware(name: &str, image: &Image) -> Result<Self, BootScriptError> {
        let disk = DiskSpec {
            base: image.vmdk(),
            format: DiskFormat::Vmdk,
            bus: DiskBus::Pvscsi,
        };
        let mut spec = Self::with_disk(name, image, Some(disk), NicModel::Vmxnet3);
        spec.direct_kernel = Some(DirectKernel::from_image(image)?);
        Ok(spec)
    }

    /// No disk: the firmware boots from the NIC (iPXE ROM, DHCP, TFTP).
    #[must_use]
    pub fn pxe(name: &str, image: &Image) -> Self {
        Self::with_disk(name, image, None, NicModel::VirtioNet)
    }

    /// Any disk and NIC (benchmarks boot the baseline image this way).
    #[must_use]
    pub fn custom(name: &str, image: &Image, disk: Option<DiskSpec>, nic: NicModel) -> Self {
        Self::with_disk(name, image, disk, nic)
    }

    /// Hands `path` to the guest as fw_cfg `opt/cairn/config`.
    #[must_use]
    pub fn with_machine_config(mut self, path: &Path) -> Self {
        self.machine_config = Some(path.to_path_buf());
        self
    }

    /// Lets a guest reboot restart the machine (same QEMU process, same
    /// overlay, same MAC and console file) instead of ending QEMU. Only
    /// for scenarios that reboot on purpose: a kernel panic then shows as
    /// a second boot on the console rather than as an exit.
    #[must_use]
    pub fn allowing_reboot(mut self) -> Self {
        self.no_reboot = false;
        self
    }
}

/// A kernel, initramfs and command line for QEMU's `-kernel` boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectKernel {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// `pxe/boot.ipxe` could not be used to find the slot's command line.
#[derive(Debug, thiserror::Error)]
pub enum BootScriptError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no `kernel` line")]
    NoKernelLine { path: PathBuf },
}

impl DirectKernel {
    /// The image's kernel and initramfs with the command line its iPXE
    /// script (and ESP entry) uses.
    ///
    /// # Errors
    /// [`BootScriptError`] if the script is unreadable or has no kernel line.
    pub fn from_image(image: &Image) -> Result<Self, BootScriptError> {
        let path = image.pxe_dir().join("boot.ipxe");
        let script = std::fs::read_to_string(&path).map_err(|source| BootScriptError::Read {
            path: path.clone(),
            source,
        })?;
        let cmdline = ipxe_kernel_cmdline(&script).ok_or(BootScriptError::NoKernelLine { path })?;
        Ok(Self {
            kernel: image.vmlinuz(),
            initrd: image.initramfs(),
            cmdline,
        })
    }
}

/// The kernel command line of an iPXE script's `kernel <file> <args...>`
/// line, without iPXE's own `initrd=` argument (which names an iPXE image).
#[must_use]
pub fn ipxe_kernel_cmdline(script: &str) -> Option<String> {
    let line = script
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kernel ") || l.starts_with("chain "))?;
    let mut words = line.split_ascii_whitespace().skip(1);
    // Options of the `kernel` command itself precede the file; `--name`
    // and `--timeout` (and their short forms) take a value.
    let mut file = words.next()?;
    while file.starts_with('-') {
        if matches!(file, "--name" | "-n" | "--timeout" | "-t") {
            words.next()?;
        }
        file = words.next()?;
    }
    let args: Vec<&str> = words.filter(|w| !w.starts_with("initrd=")).collect();
    Some(args.join(" "))
}

/// Host-side paths and names one QEMU invocation needs.
#[derive(Debug, Clone)]
pub struct QemuPlan {
    pub spec: VmSpec,
    pub accel: Accel,
    pub mac: MacAddr,
    pub tap: String,
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
    /// The per-VM overlay (present iff `spec.disk` is).
    pub overlay: Option<PathBuf>,
    pub console: PathBuf,
    pub qmp_socket: PathBuf,
}

/// The QEMU command line for `plan` (without the program name).
#[must_use]
pub fn qemu_args(plan: &QemuPlan) -> Vec<String> {
    let spec = &plan.spec;
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| (*s).to_owned()));
    push(&["-name", &spec.name, "-machine", "q35"]);
    push(plan.accel.qemu_args());
    push(&["-m", &spec.memory_mib.to_string(), "-smp", "1"]);
    push(&["-nodefaults", "-display", "none"]);
    // Without RDRAND (QEMU's default CPU under TCG) the guest's CRNG takes
    // minutes to seed, and every getrandom() for a key or a setup token
    // waits for it; a virtio RNG fed from the host seeds it in moments.
    push(&[
        "-object",
        "rng-random,filename=/dev/urandom,id=rng0",
        "-device",
        "virtio-rng-pci,rng=rng0",
    ]);
    if spec.no_reboot {
        push(&["-no-reboot"]);
    }
    push(&[
        "-drive",
        &format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            plan.ovmf_code.display()
        ),
        "-drive",
        &format!(
            "if=pflash,format=raw,unit=1,file={}",
            plan.ovmf_vars.display()
        ),
    ]);
    push(&[
        "-chardev",
        &format!("file,id=console,path={}", plan.console.display()),
        "-serial",
        "chardev:console",
    ]);
    push(&[
        "-qmp",
        &format!("unix:{},server=on,wait=off", plan.qmp_socket.display()),
    ]);
    push(&[
        "-netdev",
        &format!(
            "tap,id={NETDEV},ifname={},script=no,downscript=no",
            plan.tap
        ),
    ]);
    let nic = match (&spec.disk, &plan.overlay) {
        // Without a disk the NIC is the boot device, through its iPXE ROM.
        (None, _) | (_, None) => {
            format!(
                "{},netdev={NETDEV},mac={},bootindex=0",
                spec.nic.device(),
                plan.mac
            )
        }
        // With a disk, leave the option ROM out: the firmware then never
        // tries the network, and boots faster.
        (Some(_), Some(_)) => format!(
            "{},netdev={NETDEV},mac={},romfile=",
            spec.nic.device(),
            plan.mac
        ),
    };
    push(&["-device", &nic]);
    if let (Some(disk), Some(overlay)) = (&spec.disk, &plan.overlay) {
        let drive = format!("if=none,id=disk0,format=qcow2,file={}", overlay.display());
        push(&["-drive", &drive]);
        match disk.bus {
            DiskBus::VirtioBlk => push(&["-device", "virtio-blk-pci,drive=disk0,bootindex=1"]),
            DiskBus::UsbStorage => push(&[
                "-device",
                "qemu-xhci,id=xhci",
                "-device",
                "usb-storage,bus=xhci.0,drive=disk0,removable=on,bootindex=1",
            ]),
            DiskBus::Pvscsi => push(&[
                "-device",
                "pvscsi,id=scsi0",
                "-device",
                "scsi-hd,bus=scsi0.0,drive=disk0,bootindex=1",
            ]),
        }
    }
    if let Some(direct) = &spec.direct_kernel {
        push(&["-kernel", &direct.kernel.display().to_string()]);
        push(&["-initrd", &direct.initrd.display().to_string()]);
        push(&["-append", &direct.cmdline]);
    }
    if let Some(config) = &spec.machine_config {
        push(&[
            "-fw_cfg",
            &format!("name=opt/cairn/config,file={}", config.display()),
        ]);
    }
    args
}

/// The command line for starting the same machine again: identical, except
/// that the serial console is appended to rather than truncated, so the
/// console log holds every boot of the VM in order.
#[must_use]
pub fn restart_args(args: &[String]) -> Vec<String> {
    args.iter()
        .map(|arg| {
            if arg.starts_with("file,id=console,") && !arg.contains(",append=") {
                format!("{arg},append=on")
            } else {
                arg.clone()
            }
        })
        .collect()
}

/// Starting a VM failed.
#[derive(Debug, thiserror::Error)]
pub enum VmStartError {
    #[error("host is not ready for VM tests")]
    Host(#[from] ToolError),
    #[error("vm name `{0}` must be non-empty [a-z0-9-]")]
    Name(String),
    #[error("creating the VM's work directory")]
    WorkDir(#[source] std::io::Error),
    #[error("copying OVMF variables to {path}")]
    Vars {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating the disk overlay")]
    Overlay(#[source] CommandError),
    #[error("creating the tap device")]
    Tap(#[source] CommandError),
    #[error("creating console log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting QEMU")]
    Spawn(#[source] std::io::Error),
}

/// Waiting for something from a VM failed. The message carries the tail of
/// the console and of QEMU's stderr, so a CI failure explains itself.
#[derive(Debug, thiserror::Error)]
pub enum VmWaitError {
    #[error("vm {vm}: {what}: nothing within {waited:?}{context}")]
    Timeout {
        vm: String,
        what: String,
        waited: Duration,
        context: String,
    },
    #[error("vm {vm}: QEMU exited ({status}) while waiting for {what}{context}")]
    Exited {
        vm: String,
        what: String,
        status: ExitStatus,
        context: String,
    },
    #[error("vm {vm}: invalid console pattern")]
    Pattern {
        vm: String,
        #[source]
        source: regex::Error,
    },
    #[error("vm {vm}: reading DHCP leases")]
    Leases {
        vm: String,
        #[source]
        source: LeaseReadError,
    },
    #[error("vm {vm}: waiting on QEMU")]
    Wait {
        vm: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running VM. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Vm<'n> {
    net: &'n Network,
    name: String,
    mac: MacAddr,
    tap: String,
    console: PathBuf,
    qemu_log: PathBuf,
    qmp_socket: PathBuf,
    qmp: Option<QmpClient>,
    child: Child,
    exit: Option<ExitStatus>,
    started: Instant,
    accel: Accel,
    /// The QEMU binary and its arguments, for [`Vm::restart`].
    qemu: PathBuf,
    args: Vec<String>,
    // Holds the overlay, OVMF vars and QMP socket; removed after QEMU dies.
    _work: tempfile::TempDir,
}

impl<'n> Vm<'n> {
    /// Creates the overlay, vars copy and tap, and starts QEMU.
    ///
    /// # Errors
    /// [`VmStartError`] for any failed step.
    pub fn start(net: &'n Network, spec: VmSpec) -> Result<Self, VmStartError> {
        let valid_name = !spec.name.is_empty()
            && spec
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            return Err(VmStartError::Name(spec.name));
        }
        let qemu = tools::QEMU.locate()?;
        let ovmf_code = tools::OVMF_CODE.locate()?.to_path_buf();
        let ovmf_vars_template = tools::OVMF_VARS.locate()?;
        let accel = spec
            .accel
            .unwrap_or_else(|| accel::host_accel(&spec.probe_kernel));

        let work = tempfile::Builder::new()
            .prefix(&format!("cairn-vm-{}-", spec.name))
            .tempdir()
            .map_err(VmStartError::WorkDir)?;
        let ovmf_vars = work.path().join("OVMF_VARS.fd");
        std::fs::copy(ovmf_vars_template, &ovmf_vars).map_err(|source| VmStartError::Vars {
            path: ovmf_vars.clone(),
            source,
        })?;

        let overlay = match &spec.disk {
            None => None,
            Some(disk) => {
                let overlay = work.path().join("disk.qcow2");
                let base = std::path::absolute(&disk.base).unwrap_or_else(|_| disk.base.clone());
                let qemu_img = tools::QEMU_IMG.locate()?;
                network::run(
                    std::process::Command::new(qemu_img)
                        .args([
                            "create",
                            "-q",
                            "-f",
                            "qcow2",
                            "-F",
                            disk.format.qemu_name(),
                            "-b",
                        ])
                        .arg(&base)
                        .arg(&overlay)
                        .arg(OVERLAY_SIZE),
                )
                .map_err(VmStartError::Overlay)?;
                Some(overlay)
            }
        };

        let tap = net.add_tap().map_err(VmStartError::Tap)?;
        let console = net.log_dir().join(format!("{}.console.log", spec.name));
        let qemu_log = net.log_dir().join(format!("{}.qemu.log", spec.name));
        let plan = QemuPlan {
            mac: net.next_mac(),
            tap: tap.clone(),
            accel,
            ovmf_code,
            ovmf_vars,
            overlay,
            console: console.clone(),
            qmp_socket: work.path().join("qmp.sock"),
            spec,
        };
        let stderr = std::fs::File::create(&qemu_log).map_err(|source| VmStartError::Log {
            path: qemu_log.clone(),
            source,
        })?;
        let args = qemu_args(&plan);
        // Saved so a failed VM can be rerun by hand with the same arguments.
        let cmdline = net.log_dir().join(format!("{}.cmdline", plan.spec.name));
        std::fs::write(&cmdline, args.join(" ")).map_err(|source| VmStartError::Log {
            path: cmdline,
            source,
        })?;
        let started = Instant::now();
        let child = net
            .command(&qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(VmStartError::Spawn)?;
        Ok(Self {
            net,
            name: plan.spec.name,
            mac: plan.mac,
            tap,
            console,
            qemu_log,
            qmp_socket: plan.qmp_socket,
            qmp: None,
            child,
            exit: None,
            started,
            accel,
            qemu: qemu.to_path_buf(),
            args,
            _work: work,
        })
    }

    /// Starts the machine again after QEMU has ended (or kills it first,
    /// like pulling the plug): the same overlay (so STATE and everything
    /// on it survive), OVMF variables, MAC (so dnsmasq leases the same
    /// address), tap and QMP socket. The console log and QEMU's stderr log
    /// are appended to, not replaced; take [`Vm::console_len`] before the
    /// restart to look only at the new boot.
    ///
    /// # Errors
    /// [`VmStartError`] if QEMU cannot be started or its log opened.
    pub fn restart(&mut self) -> Result<(), VmStartError> {
        self.qmp = None;
        if self.try_exit().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let log_error = |source| VmStartError::Log {
            path: self.qemu_log.clone(),
            source,
        };
        let stderr = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.qemu_log)
            .map_err(log_error)?;
        self.args = restart_args(&self.args);
        let started = Instant::now();
        self.child = self
            .net
            .command(&self.qemu)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(VmStartError::Spawn)?;
        self.exit = None;
        self.started = started;
        Ok(())
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }
    #[must_use]
    pub fn mac(&self) -> MacAddr {
        self.mac
    }
    /// The tap device on the host side of the VM's NIC.
    #[must_use]
    pub fn tap(&self) -> &str {
        &self.tap
    }
    /// QEMU's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// When QEMU was spawned.
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }
    #[must_use]
    pub fn accel(&self) -> Accel {
        self.accel
    }
    #[must_use]
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// The whole serial console so far.
    #[must_use]
    pub fn console(&self) -> String {
        self.console_from(0)
    }

    /// The serial console from byte `from` on (invalid UTF-8 replaced).
    #[must_use]
    pub fn console_from(&self, from: usize) -> String {
        let bytes = std::fs::read(&self.console).unwrap_or_default();
        let start = from.min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// Bytes of console output so far; pass to
    /// [`Vm::wait_for_console_sequence_from`] to look only at later output.
    #[must_use]
    pub fn console_len(&self) -> usize {
        std::fs::metadata(&self.console)
            .map_or(0, |m| usize::try_from(m.len()).unwrap_or(usize::MAX))
    }

    /// Exit status if QEMU has exited.
    ///
    /// # Errors
    /// I/O errors from waitpid.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>, VmWaitError> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().map_err(|source| VmWaitError::Wait {
                vm: self.name.clone(),
                source,
            })?;
        }
        Ok(self.exit)
    }

    /// The last console lines and QEMU's stderr, for error messages.
    #[must_use]
    pub fn failure_context(&self) -> String {
        let console = self.console();
        let tail: Vec<&str> = console.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        let qemu = std::fs::read_to_string(&self.qemu_log).unwrap_or_default();
        format!(
            "\n--- last console lines of {} ({}) ---\n{}\n--- QEMU stderr ({}) ---\n{}",
            self.name,
            self.console.display(),
            tail.join("\n"),
            self.qemu_log.display(),
            qemu.trim_end()
        )
    }

    /// Polls `check` every `interval` until it yields a value, QEMU exits
    /// (error), or `timeout` passes (error).
    fn poll<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        interval: Duration,
        mut check: impl FnMut(&mut Self) -> Result<Option<T>, VmWaitError>,
    ) -> Result<T, VmWaitError> {
        let start = Instant::now();
        loop {
            if let Some(value) = check(self)? {
                return Ok(value);
            }
            if let Some(status) = self.try_exit()? {
                // One last look: the awaited output may precede the exit.
                if let Some(value) = check(self)? {
                    return Ok(value);
                }
                return Err(VmWaitError::Exited {
                    vm: self.name.clone(),
                    what: what.to_owned(),
                    status,
                    context: self.failure_context(),
                });
            }
            if start.elapsed() >= timeout {
                return Err(VmWaitError::Timeout {
                    vm: self.name.clone(),
                    what: what.to_owned(),
                    waited: start.elapsed(),
                    context: self.failure_context(),
                });
            }
            std::thread::sleep(interval);
        }
    }

    /// Waits until the console matches `pattern`; returns the matched line.
    ///
    /// # Errors
    /// [`VmWaitError`] on timeout, QEMU exit or a bad pattern.
    pub fn wait_for_console(
        &mut self,
        pattern: &str,
        timeout: Duration,
    ) -> Result<String, VmWaitError> {
        self.wait_for_console_sequence(&[pattern], timeout)
            .map(|mut lines| lines.remove(0))
    }

    /// Waits until the console matches every pattern, each after the
    /// previous one's match; returns the matched lines. After QEMU exits
    /// the console is checked once more, so this also suits checking the
    /// console of a VM that has already powered off.
    ///
    /// # Errors
    /// [`VmWaitError`] on timeout, QEMU exit or a bad pattern.
    pub fn wait_for_console_sequence(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<Vec<String>, VmWaitError> {
        self.wait_for_console_sequence_from(0, patterns, timeout)
    }

    /// Like [`Vm::wait_for_console_sequence`], ignoring the first `from`
    /// bytes of the console (see [`Vm::console_len`]).
    ///
    /// # Errors
    /// [`VmWaitError`] on timeout, QEMU exit or a bad pattern.
    pub fn wait_for_console_sequence_from(
        &mut self,
        from: usize,
        patterns: &[&str],
        timeout: Duration,
    ) -> Result<Vec<String>, VmWaitError> {
        let regexes = patterns
            .iter()
            .map(|p| Regex::new(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| VmWaitError::Pattern {
                vm: self.name.clone(),
                source,
            })?;
        let what = format!("console lines matching {patterns:?} in order");
        self.poll(&what, timeout, Duration::from_millis(200), |vm| {
            Ok(match_in_order(&vm.console_from(from), &regexes))
        })
    }

    /// Waits for dnsmasq to lease an address to this VM's MAC.
    ///
    /// # Errors
    /// [`VmWaitError`] on timeout, QEMU exit or an unreadable lease file.
    pub fn wait_for_lease(&mut self, timeout: Duration) -> Result<Ipv4Addr, VmWaitError> {
        let what = format!("a DHCP lease for {}", self.mac);
        self.poll(&what, timeout, Duration::from_millis(250), |vm| {
            vm.net
                .lease_for(vm.mac)
                .map(|lease| lease.map(|l| l.ip))
                .map_err(|source| VmWaitError::Leases {
                    vm: vm.name.clone(),
                    source,
                })
        })
    }

    /// Waits until `GET http://<leased ip>:7480/readyz` answers 200; returns the IP.
    ///
    /// # Errors
    /// [`VmWaitError`] on timeout (the message includes the last HTTP
    /// outcome), QEMU exit or an unreadable lease file.
    pub fn wait_for_ready(&mut self, timeout: Duration) -> Result<Ipv4Addr, VmWaitError> {
        let mut last = String::from("no lease yet");
        let start = Instant::now();
        let result = self.poll(
            "/readyz to answer 200",
            timeout,
            Duration::from_millis(500),
            |vm| {
                let lease = vm
                    .net
                    .lease_for(vm.mac)
                    .map_err(|source| VmWaitError::Leases {
                        vm: vm.name.clone(),
                        source,
                    })?;
                let Some(lease) = lease else { return Ok(None) };
                match vm
                    .net
                    .http_get(lease.ip, HEALTH_PORT, "/readyz", Duration::from_secs(3))
                {
                    Ok(resp) if resp.status == 200 => return Ok(Some(lease.ip)),
                    Ok(resp) => {
                        last = format!("{}: HTTP {} {}", lease.ip, resp.status, resp.text().trim())
                    }
                    Err(e) => last = format!("{}: {}", lease.ip, crate::report(&e)),
                }
                Ok(None)
            },
        );
        result.map_err(|e| match e {
            VmWaitError::Timeout {
                vm,
                what,
                waited,
                context,
            } => VmWaitError::Timeout {
                vm,
                what: format!("{what} (last attempt after {:?}: {last})", start.elapsed()),
                waited,
                context,
            },
            other @ (VmWaitError::Exited { .. }
            | VmWaitError::Pattern { .. }
            | VmWaitError::Leases { .. }
            | VmWaitError::Wait { .. }) => other,
        })
    }

    /// Waits for QEMU to exit by itself.
    ///
    /// # Errors
    /// [`VmWaitError::Timeout`] if it is still running after `timeout`.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Result<ExitStatus, VmWaitError> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit()? {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                return Err(VmWaitError::Timeout {
                    vm: self.name.clone(),
                    what: "QEMU to exit".to_owned(),
                    waited: start.elapsed(),
                    context: self.failure_context(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The VM's leased address, if it has one.
    ///
    /// # Errors
    /// An unreadable lease file.
    pub fn ip(&self) -> Result<Option<Ipv4Addr>, LeaseReadError> {
        Ok(self.net.lease_for(self.mac)?.map(|l| l.ip))
    }

    /// `GET http://<ip>:7480<path>` from the namespace.
    ///
    /// # Errors
    /// [`GuestRequestError`] on failure.
    pub fn health_get(
        &self,
        ip: Ipv4Addr,
        path: &str,
    ) -> Result<crate::http::HttpResponse, GuestRequestError> {
        self.net
            .http_get(ip, HEALTH_PORT, path, Duration::from_secs(5))
    }

    /// The QMP session, connected on first use.
    ///
    /// # Errors
    /// [`QmpError`] if QEMU's socket cannot be reached or negotiated.
    pub fn qmp(&mut self) -> Result<&mut QmpClient, QmpError> {
        let client = match self.qmp.take() {
            Some(client) => client,
            None => QmpClient::connect(
                &self.qmp_socket,
                Duration::from_secs(10),
                Duration::from_secs(10),
            )?,
        };
        Ok(self.qmp.insert(client))
    }
}

impl Drop for Vm<'_> {
    fn drop(&mut self) {
        self.qmp = None;
        if self.exit.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = self.net.ip(&["link", "del", &self.tap]);
    }
}

/// Matches `regexes` one after another, each starting after the previous
/// match; returns the full line around each match.
fn match_in_order(text: &str, regexes: &[Regex]) -> Option<Vec<String>> {
    let mut from = 0;
    let mut lines = Vec::with_capacity(regexes.len());
    for regex in regexes {
        let m = regex.find_at(text, from)?;
        let line_start = text[..m.start()].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[m.end()..]
            .find('\n')
            .map_or(text.len(), |i| m.end() + i);
        lines.push(text[line_start..line_end].trim_end_matches('\r').to_owned());
        from = m.end();
    }
    Some(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(spec: VmSpec) -> QemuPlan {
        let overlay = spec.disk.as_ref().map(|_| PathBuf::from("/w/disk.qcow2"));
        QemuPlan {
            spec,
            accel: Accel::Tcg,
            mac: MacAddr([0x52, 0x54, 0, 1, 2, 3]),
            tap: "tap0".into(),
            ovmf_code: "/fw/CODE.fd".into(),
            ovmf_vars: "/w/VARS.fd".into(),
            overlay,
            console: "/logs/vm.console.log".into(),
            qmp_socket: "/w/qmp.sock".into(),
        }
    }

    fn image() -> Image {
        Image::from_dir_unchecked("/img")
    }

    fn joined(spec: VmSpec) -> String {
        qemu_args(&plan(spec)).join(" ")
    }

    #[test]
    fn every_vm_gets_uefi_with_private_vars_console_and_qmp() {
        let args = joined(VmSpec::virtio_disk("a", &image()));
        assert!(args.contains("-machine q35"));
        assert!(args.contains("-accel tcg"));
        assert!(args.contains("if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"));
        assert!(args.contains("if=pflash,format=raw,unit=1,file=/w/VARS.fd"));
        assert!(args.contains("file,id=console,path=/logs/vm.console.log"));
        assert!(args.contains("-qmp unix:/w/qmp.sock,server=on,wait=off"));
        assert!(args.contains("tap,id=net0,ifname=tap0,script=no,downscript=no"));
        assert!(args.contains("-m 1024"));
        assert!(args.contains("-display none"));
    }

    #[test]
    fn every_vm_gets_a_virtio_rng_fed_from_the_host() {
        for spec in [
            VmSpec::virtio_disk("a", &image()),
            VmSpec::pxe("p", &image()),
            VmSpec::usb_stick("u", &image()),
        ] {
            let args = joined(spec);
            assert!(args.contains("-object rng-random,filename=/dev/urandom,id=rng0"));
            assert!(args.contains("-device virtio-rng-pci,rng=rng0"));
        }
    }

    #[test]
    fn a_guest_reboot_ends_qemu_unless_the_spec_allows_rebooting() {
        assert!(joined(VmSpec::virtio_qcow2("a", &image())).contains("-no-reboot"));
        assert!(
            !joined(VmSpec::virtio_qcow2("a", &image()).allowing_reboot()).contains("-no-reboot")
        );
    }

    #[test]
    fn disk_boots_attach_the_overlay_and_keep_the_nic_rom_out() {
        let args = joined(VmSpec::virtio_disk("a", &image()));
        assert!(args.contains("if=none,id=disk0,format=qcow2,file=/w/disk.qcow2"));
        assert!(args.contains("virtio-blk-pci,drive=disk0,bootindex=1"));
        assert!(args.contains("virtio-net-pci,netdev=net0,mac=52:54:00:01:02:03,romfile="));
        assert!(!args.contains("bootindex=0"));
    }

    #[test]
    fn pxe_boot_has_no_disk_and_boots_the_nic_first() {
        let args = joined(VmSpec::pxe("p", &image()));
        assert!(!args.contains("disk0"));
        assert!(args.contains("virtio-net-pci,netdev=net0,mac=52:54:00:01:02:03,bootindex=0"));
        assert!(!args.contains("romfile="));
    }

    #[test]
    fn ipxe_script_yields_the_kernel_cmdline_without_initrd_arg() {
        let script = "#!ipxe\nkernel vmlinuz initrd=initramfs.img console=tty0 console=ttyS0,115200 panic=10\ninitrd initramfs.img\nboot\n";
        assert_eq!(
            ipxe_kernel_cmdline(script).as_deref(),
            Some("console=tty0 console=ttyS0,115200 panic=10")
        );
        assert_eq!(
            ipxe_kernel_cmdline("kernel --name k vmlinuz quiet\n").as_deref(),
            Some("quiet")
        );
        assert_eq!(
            ipxe_kernel_cmdline("kernel --autofree -n k --timeout=5 vmlinuz a=b\n").as_deref(),
            Some("a=b")
        );
        assert_eq!(ipxe_kernel_cmdline("#!ipxe\nboot\n"), None);
    }

    #[test]
    fn vmware_boot_uses_pvscsi_and_vmxnet3() {
        let mut spec = VmSpec::custom(
            "v",
            &image(),
            Some(DiskSpec {
                base: "/img/cairn.vmdk".into(),
                format: DiskFormat::Vmdk,
                bus: DiskBus::Pvscsi,
            }),
            NicModel::Vmxnet3,
        );
        spec.direct_kernel = Some(DirectKernel {
            kernel: "/img/pxe/vmlinuz".into(),
            initrd: "/img/pxe/initramfs.img".into(),
            cmdline: "console=ttyS0 panic=10".into(),
        });
        assert_eq!(spec.disk.as_ref().map(|d| d.format), Some(DiskFormat::Vmdk));
        let args = joined(spec);
        assert!(args.contains("-device pvscsi,id=scsi0"));
        assert!(args.contains("scsi-hd,bus=scsi0.0,drive=disk0"));
        assert!(args.contains("-device vmxnet3,netdev=net0"));
        // The only virtio device is the entropy source every VM gets.
        assert!(!args.replace("virtio-rng-pci", "").contains("virtio"));
        assert!(args.contains(
            "-kernel /img/pxe/vmlinuz -initrd /img/pxe/initramfs.img -append console=ttyS0 panic=10"
        ));
    }

    #[test]
    fn usb_boot_attaches_a_removable_stick_on_xhci() {
        let args = joined(VmSpec::usb_stick("u", &image()));
        assert!(args.contains("-device qemu-xhci,id=xhci"));
        assert!(args.contains("usb-storage,bus=xhci.0,drive=disk0,removable=on"));
        assert!(!args.contains("virtio-blk"));
    }

    #[test]
    fn machine_config_goes_in_as_fw_cfg() {
        let args = joined(
            VmSpec::virtio_disk("a", &image()).with_machine_config(Path::new("/c/bad.toml")),
        );
        assert!(args.contains("-fw_cfg name=opt/cairn/config,file=/c/bad.toml"));
        assert!(!joined(VmSpec::virtio_disk("a", &image())).contains("fw_cfg"));
    }

    #[test]
    fn a_restart_appends_to_the_console_and_changes_nothing_else() {
        let first = qemu_args(&plan(VmSpec::virtio_qcow2("a", &image())));
        let again = restart_args(&first);
        assert_eq!(first.len(), again.len());
        let changed: Vec<(&String, &String)> =
            first.iter().zip(&again).filter(|(a, b)| a != b).collect();
        assert_eq!(
            changed,
            [(
                &"file,id=console,path=/logs/vm.console.log".to_owned(),
                &"file,id=console,path=/logs/vm.console.log,append=on".to_owned()
            )]
        );
        assert_eq!(restart_args(&again), again, "restarting twice appends once");
    }

    #[test]
    fn console_patterns_must_match_in_order() {
        let regexes: Vec<Regex> = ["power button", "orderly poweroff", "unmounted /var"]
            .iter()
            .map(|p| Regex::new(p).unwrap())
            .collect();
        let good =
            "x\ninit: power button pressed\ninit: orderly poweroff\ninit: unmounted /var\r\n";
        assert_eq!(
            match_in_order(good, &regexes).unwrap(),
            vec![
                "init: power button pressed",
                "init: orderly poweroff",
                "init: unmounted /var"
            ]
        );
        let reordered =
            "init: unmounted /var\ninit: power button pressed\ninit: orderly poweroff\n";
        assert_eq!(match_in_order(reordered, &regexes), None);
    }
}
