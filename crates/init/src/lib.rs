//! `cairn-init`, PID 1 of a Cairn node.
//!
//! The kernel unpacks the initramfs and runs `/init`, which is this program.
//! It must never exit (the kernel would panic) and never hang the node, so it
//! is small, synchronous and has no async runtime. Its life has two parts.
//!
//! **Boot** ([`pid1::boot`]), once, in order:
//! 0. [`rootfs`]: the initramfs is copied into a tmpfs that moves over `/`,
//!    and init executes itself again from it, so that container runtimes
//!    can `pivot_root` (the kernel's `rootfs` cannot be pivoted away).
//! 1. [`mounts`]: devtmpfs, proc, sysfs, devpts, /dev/shm, /run, /tmp,
//!    cgroup2 and (on UEFI) efivarfs. A failed mount is logged; the rest
//!    still mount.
//! 2. [`modules`]: the modules named in `/etc/cairn/modules-load`, then
//!    hardware detection: every device modalias under `/sys/bus` is matched
//!    against `modules.alias`, and the matching modules are loaded with their
//!    dependencies, round after round while new devices keep appearing.
//! 3. [`state`]: the ESP (GPT name `CAIRN-ESP`) is mounted read-only on
//!    `/efi`; STATE (`CAIRN-STATE`) is grown to fill its disk on first boot
//!    ([`gpt`]) and mounted on `/var`. Without one, `/var` is a tmpfs.
//!
//! **Run** ([`pid1::EventLoop`]): one epoll loop, the single owner of all
//! mutable state. It supervises `cairnd` ([`supervisor`], restart with
//! exponential backoff), reaps every zombie, reads signals through a
//! signalfd, the ACPI power button through evdev ([`power`]), hotplug through
//! kernel uevents ([`uevent`]), and power and agent-restart requests from the
//! `org.cairn.Init1` D-Bus interface ([`dbus`]), and pets the hardware
//! watchdog ([`watchdog`]).
//!
//! **Shutdown** is always orderly: SIGTERM/SIGINT mean reboot; SIGUSR2,
//! SIGPWR, the power button and D-Bus `PowerOff` mean poweroff. The agent gets
//! SIGTERM and a deadline before SIGKILL, every other process gets SIGTERM
//! then SIGKILL, then [`shutdown::finish`] syncs, unmounts STATE and calls
//! reboot(2). The watchdog stays armed throughout, so a hang on the way down
//! still resets the machine.
//!
//! Everything that touches the machine during boot and shutdown goes through
//! the [`sys::Sys`] trait, so those sequences are unit-tested against a
//! recording fake without root.

pub mod bootstatus;
pub mod dbus;
pub mod gpt;
pub mod log;
pub mod modules;
pub mod mounts;
pub mod pid1;
pub mod power;
pub mod rootfs;
pub mod shutdown;
pub mod state;
pub mod supervisor;
pub mod sys;
pub mod uevent;
pub mod watchdog;
