//! The last steps of an orderly reboot or poweroff, after `cairnd` and every
//! other process are gone: flush, unmount, and hand the machine back.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::reboot::RebootMode;

use crate::log::Log;
use crate::state::{ESP_MOUNTPOINT, STATE_MOUNTPOINT};
use crate::sys::Sys;

/// What init was asked over D-Bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Take the machine down.
    Power(PowerAction),
    /// Stop cairnd in order and start a new one; the machine stays up.
    RestartAgent,
}

/// Why the machine is going down, and where to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Reboot,
    PowerOff,
}

impl PowerAction {
    pub fn verb(self) -> &'static str {
        match self {
            PowerAction::Reboot => "reboot",
            PowerAction::PowerOff => "poweroff",
        }
    }

    fn mode(self) -> RebootMode {
        match self {
            PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
            PowerAction::PowerOff => RebootMode::RB_POWER_OFF,
        }
    }
}

/// Syncs, unmounts STATE and the ESP (read-only remount when busy), syncs
/// again and calls reboot(2). Returns only if reboot(2) failed.
pub fn finish(sys: &mut dyn Sys, log: &Log, action: PowerAction) {
    sys.sync();
    for target in [STATE_MOUNTPOINT, ESP_MOUNTPOINT] {
        let path = Path::new(target);
        match sys.umount(path, MntFlags::empty()) {
            Ok(()) => log.info(format_args!("unmounted {target}")),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {} // not mounted
            Err(e) => {
                log.warn(format_args!(
                    "unmounting {target}: {e}; remounting read-only"
                ));
                let flags = MsFlags::MS_REMOUNT.union(MsFlags::MS_RDONLY);
                if let Err(e) = sys.mount("none", path, "", flags, None) {
                    log.error(format_args!("remounting {target} read-only: {e}"));
                }
            }
        }
    }
    sys.sync();
    log.info(format_args!(
        "{}: handing over to the kernel",
        action.verb()
    ));
    if let Err(e) = sys.reboot(action.mode()) {
        log.error(format_args!("reboot(2) for {} failed: {e}", action.verb()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, FakeSys};

    #[test]
    fn poweroff_syncs_and_unmounts_state_before_reboot_syscall() {
        let mut sys = FakeSys::new();
        finish(&mut sys, &Log::stderr(), PowerAction::PowerOff);
        assert_eq!(
            sys.calls,
            [
                Call::Sync,
                Call::Umount("/var".into()),
                Call::Umount("/efi".into()),
                Call::Sync,
                Call::Reboot(RebootMode::RB_POWER_OFF),
            ]
        );
    }

    #[test]
    fn reboot_uses_autoboot() {
        let mut sys = FakeSys::new();
        finish(&mut sys, &Log::stderr(), PowerAction::Reboot);
        assert_eq!(
            sys.calls.last(),
            Some(&Call::Reboot(RebootMode::RB_AUTOBOOT))
        );
    }
}
