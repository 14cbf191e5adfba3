//! The boot sequence and the event loop of PID 1.
//!
//! [`boot`] runs once: pseudo-filesystems, kernel modules, STATE. Then
//! [`EventLoop::run`] waits on one epoll set for signals (signalfd), the
//! power button, uevents and D-Bus requests, with a timeout taken from the
//! supervisor's next deadline and the watchdog's next pet. The loop is the
//! only owner of the supervisor and of the shutdown sequence.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal as NixSignal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::dbus::{self, RequestSender};
use crate::log::{Log, chain};
use crate::modules::Loader;
use crate::power::PowerButtons;
use crate::shutdown::{self, PowerAction, Request};
use crate::state::{self, ESP_LABEL, STATE_LABEL, StateMount};
use crate::supervisor::{Action, Signal, Supervisor};
use crate::sys::{RealSys, Sys};
use crate::uevent::Uevents;
use crate::watchdog::Watchdog;

pub const AGENT_PATH: &str = "/usr/bin/cairnd";
const MODULES_LOAD_LIST: &str = "/etc/cairn/modules-load";
const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// How long STATE may take to show up (USB sticks enumerate slowly).
const STATE_WAIT_MAX: Duration = Duration::from_secs(10);
/// Stop waiting for STATE once no module has loaded and no block device
/// appeared for this long.
const STATE_WAIT_SETTLE: Duration = Duration::from_secs(3);
/// After the agent is gone, other processes get this long after SIGTERM.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// A `key=value` word of the kernel command line.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// What the boot sequence leaves for the event loop.
#[derive(Debug)]
pub struct Booted {
    pub loader: Option<Loader>,
    pub state: StateMount,
}

/// Loads modules, finds and mounts the ESP and STATE.
pub fn boot(sys: &mut dyn Sys, log: &Log, sys_root: &Path, state_wait: Duration) -> Booted {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let modroot = PathBuf::from("/lib/modules").join(&release);
    let mut loader = match Loader::open(sys, &modroot) {
        Ok(l) => Some(l),
        Err(e) => {
            log.error(format_args!("no kernel modules will load: {}", chain(&e)));
            None
        }
    };
    if let Some(loader) = loader.as_mut() {
        let fixed: Vec<String> = sys
            .read(Path::new(MODULES_LOAD_LIST))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let n = loader.load(sys, log, &fixed);
        let mut hw = 0;
        for _ in 0..10 {
            let round = loader.load_for_hardware(sys, log, sys_root);
            hw += round;
            if round == 0 {
                break;
            }
        }
        log.info(format_args!(
            "loaded {n} fixed and {hw} hardware kernel modules"
        ));
    }
    for e in crate::mounts::mount_pseudo(sys, crate::mounts::Phase::AfterModules) {
        log.error(format_args!("{}", chain(&e)));
    }

    let state_part = wait_for_state(sys, log, loader.as_mut(), sys_root, state_wait);
    if let Some(esp) = state::find_by_partname(sys, sys_root, ESP_LABEL).first() {
        state::mount_esp(sys, log, esp);
    }
    let state = state::mount_state(sys, log, state_part);
    for dir in ["/var/lib/cairn", "/run/cairn"] {
        if let Err(e) = sys.mkdir_all(Path::new(dir), 0o755) {
            log.error(format_args!("creating {dir}: {e}"));
        }
    }
    Booted { loader, state }
}

/// Waits for a STATE partition while devices keep appearing; gives up when
/// things settle or after `max`.
fn wait_for_state(
    sys: &mut dyn Sys,
    log: &Log,
    mut loader: Option<&mut Loader>,
    sys_root: &Path,
    max: Duration,
) -> Option<state::Partition> {
    let start = Instant::now();
    let mut last_change = start;
    let mut block_devices = 0;
    loop {
        let mut found = state::find_by_partname(sys, sys_root, STATE_LABEL);
        if found.len() > 1 {
            let devs: Vec<String> = found.iter().map(|p| p.dev.display().to_string()).collect();
            log.warn(format_args!(
                "several STATE partitions ({}); using the first",
                devs.join(", ")
            ));
        }
        if !found.is_empty() {
            return Some(found.swap_remove(0));
        }
        let now = Instant::now();
        if now.duration_since(start) >= max || now.duration_since(last_change) >= STATE_WAIT_SETTLE
        {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
        let loaded = loader
            .as_deref_mut()
            .map_or(0, |l| l.load_for_hardware(sys, log, sys_root));
        let blocks = sys
            .list_dir(&sys_root.join("class/block"))
            .map_or(0, |d| d.len());
        if loaded > 0 || blocks != block_devices {
            block_devices = blocks;
            last_change = Instant::now();
        }
    }
}

/// Epoll tokens.
const TOKEN_SIGNAL: u64 = 1;
const TOKEN_WAKE: u64 = 2;
const TOKEN_UEVENT: u64 = 3;
const TOKEN_BUTTON: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Running,
    /// Waiting for the agent to exit.
    StoppingAgent(PowerAction),
    /// SIGTERM went to every process at the given time.
    KillingRest(PowerAction, Instant),
}

/// Everything the running system needs; owned by the loop alone.
#[derive(Debug)]
pub struct EventLoop {
    log: Arc<Log>,
    sys: RealSys,
    epoll: Epoll,
    signals: SignalFd,
    wake: Arc<EventFd>,
    requests: mpsc::Receiver<Request>,
    uevents: Option<Uevents>,
    buttons: PowerButtons,
    watchdog: Option<Watchdog>,
    next_pet: Instant,
    loader: Option<Loader>,
    supervisor: Supervisor,
    shutdown: Shutdown,
}

/// The signals init handles; blocked in every thread and read via signalfd.
fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        NixSignal::SIGCHLD,
        NixSignal::SIGTERM,
        NixSignal::SIGINT,
        NixSignal::SIGUSR2,
        NixSignal::SIGPWR,
    ] {
        set.add(s);
    }
    set
}

/// Why the event loop could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoopInitError {
    #[error("blocking signals")]
    SigMask(#[source] Errno),
    #[error("creating the signalfd")]
    SignalFd(#[source] Errno),
    #[error("creating the epoll set")]
    Epoll(#[source] Errno),
    #[error("creating the wake eventfd")]
    EventFd(#[source] Errno),
    #[error("adding a descriptor to the epoll set")]
    EpollAdd(#[source] Errno),
}

/// Blocks the handled signals in this thread (and every thread spawned from
/// it) so they are only seen through the signalfd. Call before any thread
/// starts.
pub fn block_signals() -> Result<SignalFd, LoopInitError> {
    let set = handled_signals();
    set.thread_block().map_err(LoopInitError::SigMask)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(LoopInitError::SignalFd)
}

impl EventLoop {
    pub fn new(log: Arc<Log>, signals: SignalFd, booted: Booted) -> Result<Self, LoopInitError> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(LoopInitError::Epoll)?;
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(LoopInitError::EventFd)?,
        );
        let (tx, requests) = mpsc::channel();
        epoll
            .add(
                signals.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNAL),
            )
            .map_err(LoopInitError::EpollAdd)?;
        epoll
            .add(
                wake.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_WAKE),
            )
            .map_err(LoopInitError::EpollAdd)?;
        let uevents = match Uevents::open() {
            Ok(u) => {
                epoll
                    .add(
                        u.as_fd(),
                        EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_UEVENT),
                    )
                    .map_err(LoopInitError::EpollAdd)?;
                Some(u)
            }
            Err(e) => {
                log.error(format_args!("no hotplug: opening the uevent socket: {e}"));
                None
            }
        };
        if let Err(e) = dbus::serve(
            Path::new(dbus::SOCKET_PATH),
            RequestSender::new(tx, Arc::clone(&wake)),
            PathBuf::from(EFIVARS),
            Arc::clone(&log),
        ) {
            log.error(format_args!("no D-Bus interface: {}", chain(&e)));
        } else {
            log.info(format_args!(
                "serving {} on {}",
                dbus::INTERFACE,
                dbus::SOCKET_PATH
            ));
        }
        let mut this = EventLoop {
            log,
            sys: RealSys,
            epoll,
            signals,
            wake,
            requests,
            uevents,
            buttons: PowerButtons::default(),
            watchdog: None,
            next_pet: Instant::now(),
            loader: booted.loader,
            supervisor: Supervisor::new(Instant::now()),
            shutdown: Shutdown::Running,
        };
        this.rescan_devices();
        Ok(this)
    }

    /// Picks up power buttons and a watchdog that appeared.
    fn rescan_devices(&mut self) {
        if let Some(loader) = self.loader.as_mut() {
            loader.load_for_hardware(&mut self.sys, &self.log, Path::new("/sys"));
        }
        for (name, result) in self.buttons.refresh(Path::new("/sys"), Path::new("/dev")) {
            match result {
                Ok(()) => self
                    .log
                    .info(format_args!("watching power button /dev/input/{name}")),
                Err(e) => self
                    .log
                    .warn(format_args!("opening power button /dev/input/{name}: {e}")),
            }
        }
        // The set of button fds may have changed: re-register them all.
        for file in self.buttons.files() {
            let event = EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_BUTTON);
            match self.epoll.add(file.as_fd(), event) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => self.log.error(format_args!("watching a power button: {e}")),
            }
        }
        if self.watchdog.is_none() {
            match Watchdog::open(Path::new("/dev/watchdog0")) {
                Ok(Some(w)) => {
                    self.log.info(format_args!(
                        "hardware watchdog armed: {} s timeout, petted every {} s",
                        w.timeout.as_secs(),
                        w.interval().as_secs()
                    ));
                    self.watchdog = Some(w);
                    self.next_pet = Instant::now();
                }
                Ok(None) => {}
                Err(e) => self.log.warn(format_args!("opening /dev/watchdog0: {e}")),
            }
        }
    }

    /// Runs until reboot(2).
    pub fn run(mut self) -> ! {
        loop {
            let now = Instant::now();
            self.step_timers(now);
            let timeout = self.timeout(Instant::now());
            let mut events = [EpollEvent::empty(); 16];
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    self.log.error(format_args!("epoll_wait: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                    0
                }
            };
            for event in &events[..n] {
                match event.data() {
                    TOKEN_SIGNAL => self.on_signals(),
                    TOKEN_WAKE => self.on_requests(),
                    TOKEN_UEVENT => {
                        if self.uevents.as_ref().is_some_and(Uevents::drain) {
                            self.rescan_devices();
                        }
                    }
                    TOKEN_BUTTON => {
                        if self.buttons.pressed() {
                            self.log.info(format_args!("power button pressed"));
                            self.begin_shutdown(PowerAction::PowerOff);
                        }
                    }
                    other => self
                        .log
                        .warn(format_args!("unexpected epoll token {other}")),
                }
            }
        }
    }

    fn timeout(&self, now: Instant) -> EpollTimeout {
        let mut deadlines = vec![self.supervisor.deadline()];
        if self.watchdog.is_some() {
            deadlines.push(Some(self.next_pet));
        }
        if let Shutdown::KillingRest(_, at) = self.shutdown {
            deadlines.push(Some(at + KILL_GRACE));
        }
        match deadlines.into_iter().flatten().min() {
            None => EpollTimeout::NONE,
            Some(at) => {
                let wait = at.saturating_duration_since(now) + Duration::from_millis(1);
                let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
                EpollTimeout::from(ms)
            }
        }
    }

    fn step_timers(&mut self, now: Instant) {
        if let Some(w) = &self.watchdog
            && now >= self.next_pet
        {
            if let Err(e) = w.pet() {
                self.log.warn(format_args!("petting the watchdog: {e}"));
            }
            self.next_pet = now + w.interval();
        }
        let actions = self.supervisor.tick(now);
        self.carry_out(actions);
        if let Shutdown::KillingRest(action, at) = self.shutdown
            && now >= at + KILL_GRACE
        {
            self.finish(action);
        }
    }

    fn carry_out(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Spawn => self.spawn_agent(),
                Action::Signal(pid, sig) => {
                    let sig = match sig {
                        Signal::Term => NixSignal::SIGTERM,
                        Signal::Kill => NixSignal::SIGKILL,
                    };
                    if sig == NixSignal::SIGKILL {
                        self.log
                            .warn(format_args!("cairnd did not stop in time; killing it"));
                    }
                    if let Err(e) = kill(Pid::from_raw(pid), sig) {
                        self.log
                            .warn(format_args!("signalling cairnd ({pid}): {e}"));
                    }
                }
            }
        }
    }

    fn spawn_agent(&mut self) {
        let mut cmd = Command::new(AGENT_PATH);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/var/lib/cairn")
            .current_dir("/");
        // SAFETY: the closure runs in the forked child before exec and only
        // calls sigprocmask and setsid, both async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                SigSet::all()
                    .thread_unblock()
                    .map_err(std::io::Error::from)?;
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let now = Instant::now();
        match cmd.spawn() {
            Ok(child) => {
                let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
                self.log.info(format_args!("started cairnd (pid {pid})"));
                self.supervisor.spawned(now, pid);
            }
            Err(e) => {
                let delay = self.supervisor.spawn_failed(now);
                self.log.error(format_args!(
                    "starting {AGENT_PATH}: {e}; retrying in {} s",
                    delay.as_secs()
                ));
            }
        }
    }

    fn on_signals(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
                    match NixSignal::try_from(signo) {
                        Ok(NixSignal::SIGCHLD) => self.reap(),
                        Ok(NixSignal::SIGTERM | NixSignal::SIGINT) => {
                            self.log
                                .info(format_args!("received signal {signo}: orderly reboot"));
                            self.begin_shutdown(PowerAction::Reboot);
                        }
                        Ok(NixSignal::SIGUSR2 | NixSignal::SIGPWR) => {
                            self.log
                                .info(format_args!("received signal {signo}: orderly poweroff"));
                            self.begin_shutdown(PowerAction::PowerOff);
                        }
                        _ => {}
                    }
                }
                Ok(None) | Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => {
                    self.log.error(format_args!("reading the signalfd: {e}"));
                    break;
                }
            }
        }
        // A SIGCHLD can be coalesced with others; reaping is cheap, do it anyway.
        self.reap();
    }

    /// Reaps every exited child, ours or re-parented orphans.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    if Some(pid.as_raw()) == self.supervisor.pid() {
                        let now = Instant::now();
                        match self.supervisor.exited(now, pid.as_raw()) {
                            // Only a requested restart comes back at once.
                            Some(Duration::ZERO) => self.log.info(format_args!(
                                "cairnd stopped for a restart ({}); starting a new one",
                                describe(status)
                            )),
                            Some(delay) => self.log.error(format_args!(
                                "cairnd exited ({}); restarting in {} s (restart {})",
                                describe(status),
                                delay.as_secs(),
                                self.supervisor.restarts()
                            )),
                            None => self
                                .log
                                .info(format_args!("cairnd stopped ({})", describe(status))),
                        }
                        if let Shutdown::StoppingAgent(action) = self.shutdown
                            && self.supervisor.is_stopped()
                        {
                            self.kill_rest(action);
                        }
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    if let Shutdown::KillingRest(action, _) = self.shutdown {
                        self.finish(action);
                    }
                    break;
                }
                Err(e) => {
                    self.log.error(format_args!("waitpid: {e}"));
                    break;
                }
            }
        }
    }

    fn on_requests(&mut self) {
        let _ = self.wake.read();
        while let Ok(request) = self.requests.try_recv() {
            match request {
                Request::Power(action) => {
                    self.log
                        .info(format_args!("{} requested over D-Bus", action.verb()));
                    self.begin_shutdown(action);
                }
                Request::RestartAgent => {
                    self.log
                        .info(format_args!("cairnd restart requested over D-Bus"));
                    let actions = self.supervisor.restart(Instant::now());
                    self.carry_out(actions);
                }
            }
        }
    }

    fn begin_shutdown(&mut self, action: PowerAction) {
        match self.shutdown {
            Shutdown::Running => {}
            // A poweroff request wins over a reboot already under way.
            Shutdown::StoppingAgent(PowerAction::Reboot) if action == PowerAction::PowerOff => {
                self.shutdown = Shutdown::StoppingAgent(action);
                return;
            }
            Shutdown::StoppingAgent(_) | Shutdown::KillingRest(..) => return,
        }
        self.log
            .info(format_args!("orderly {}: stopping cairnd", action.verb()));
        self.shutdown = Shutdown::StoppingAgent(action);
        let actions = self.supervisor.stop(Instant::now());
        self.carry_out(actions);
        if self.supervisor.is_stopped() {
            self.kill_rest(action);
        }
    }

    fn kill_rest(&mut self, action: PowerAction) {
        self.log.info(format_args!(
            "orderly {}: stopping remaining processes",
            action.verb()
        ));
        // kill(-1) reaches every process but init itself.
        let _ = kill(Pid::from_raw(-1), NixSignal::SIGTERM);
        self.shutdown = Shutdown::KillingRest(action, Instant::now());
        self.reap();
    }

    fn finish(&mut self, action: PowerAction) -> ! {
        let _ = kill(Pid::from_raw(-1), NixSignal::SIGKILL);
        shutdown::finish(&mut self.sys, &self.log, action);
        // reboot(2) failed: there is nothing left to do but stay alive.
        loop {
            self.reap();
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit code {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("killed by {sig}"),
        other => format!("{other:?}"),
    }
}

/// PID 1's whole life.
pub fn run() -> ! {
    let early = Log::stderr();
    if crate::rootfs::on_initramfs() {
        // Returns only when the switch failed; boot on regardless.
        let error = crate::rootfs::leave_initramfs();
        early.error(format_args!(
            "staying on the initramfs root, where containers cannot run: {}",
            chain(&error)
        ));
    }
    let mut sys = RealSys;
    let mount_errors = crate::mounts::mount_pseudo(&mut sys, crate::mounts::Phase::Early);
    let log = Arc::new(Log::open());
    for e in &mount_errors {
        log.error(format_args!("{}", chain(e)));
    }
    // Let every line of ours reach the kernel log, not just the first few.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    // Ctrl-Alt-Del becomes SIGINT to us (an orderly reboot), not an instant reset.
    let _ = nix::sys::reboot::set_cad_enabled(false);
    let signals = match block_signals() {
        Ok(s) => s,
        Err(e) => {
            early.error(format_args!("{}", chain(&e)));
            halt_forever(&log)
        }
    };
    log.info(format_args!("Cairn {} starting", env!("CARGO_PKG_VERSION")));
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let state_wait = cmdline_value(&cmdline, "cairn.state_wait")
        .and_then(|s| s.parse().ok())
        .map_or(STATE_WAIT_MAX, Duration::from_secs);
    let booted = boot(&mut sys, &log, Path::new("/sys"), state_wait);
    match EventLoop::new(Arc::clone(&log), signals, booted) {
        Ok(event_loop) => event_loop.run(),
        Err(e) => {
            log.error(format_args!("cannot run the event loop: {}", chain(&e)));
            halt_forever(&log)
        }
    }
}

/// Never return from PID 1: the kernel would panic. Reap and wait.
fn halt_forever(log: &Log) -> ! {
    log.error(format_args!(
        "init is degraded; the node needs a power cycle"
    ));
    loop {
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::FakeSys;

    #[test]
    fn cmdline_values_are_found_by_key() {
        let cmdline = "console=ttyS0 cairn.state_wait=30 panic=10\n";
        assert_eq!(cmdline_value(cmdline, "cairn.state_wait"), Some("30"));
        assert_eq!(cmdline_value(cmdline, "cairn.state"), None);
        assert_eq!(cmdline_value(cmdline, "panic"), Some("10"));
    }

    #[test]
    fn a_diskless_boot_gives_up_on_state_once_devices_settle_and_uses_tmpfs() {
        let mut sys = FakeSys::new();
        sys.dirs.insert("/sys/class/block".into());
        let start = Instant::now();
        let booted = boot(
            &mut sys,
            &Log::stderr(),
            Path::new("/sys"),
            Duration::from_secs(10),
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "settling ends the wait early"
        );
        assert!(matches!(booted.state, StateMount::Tmpfs { .. }));
        assert!(booted.loader.is_none(), "no module index in this fake");
        assert!(sys.dirs.contains(Path::new("/var/lib/cairn")));
    }

    #[test]
    fn efivarfs_is_mounted_after_the_fixed_modules_are_loaded() {
        let mut sys = FakeSys::new();
        sys.dirs.insert("/sys/firmware/efi".into());
        sys.dirs.insert("/sys/class/block".into());
        let release = nix::sys::utsname::uname()
            .unwrap()
            .release()
            .to_string_lossy()
            .into_owned();
        let modroot = format!("/lib/modules/{release}");
        sys.file(
            &format!("{modroot}/modules.dep"),
            "kernel/fs/efivarfs/efivarfs.ko:\n",
        );
        sys.file(&format!("{modroot}/modules.alias"), "");
        sys.file(&format!("{modroot}/kernel/fs/efivarfs/efivarfs.ko"), "ko");
        sys.file(MODULES_LOAD_LIST, "efivarfs\n");
        boot(
            &mut sys,
            &Log::stderr(),
            Path::new("/sys"),
            Duration::from_secs(1),
        );
        let position =
            |wanted: &dyn Fn(&crate::sys::fake::Call) -> bool| sys.calls.iter().position(wanted);
        let loaded = position(
            &|c| matches!(c, crate::sys::fake::Call::LoadModule(p) if p.ends_with("efivarfs.ko")),
        )
        .expect("the efivarfs module is loaded");
        let mounted = position(
            &|c| matches!(c, crate::sys::fake::Call::Mount { fstype, .. } if fstype == "efivarfs"),
        )
        .expect("efivarfs is mounted");
        assert!(loaded < mounted, "module first, then the mount");
    }
}
