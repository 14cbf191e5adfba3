//! Kernel uevents (NETLINK_KOBJECT_UEVENT): how init hears about hotplug.
//!
//! After boot, a device that appears (a NIC, a disk, an input device, a
//! watchdog) sends an `add` uevent. Init does not interpret each event: any
//! `add` triggers one rescan of modaliases, input devices and watchdogs, so a
//! lost or overflowed event costs nothing but the wait for the next one.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket,
};

/// Whether a uevent message announces a new device.
pub fn is_add(msg: &[u8]) -> bool {
    msg.starts_with(b"add@") || msg.split(|&b| b == 0).any(|field| field == b"ACTION=add")
}

#[derive(Debug)]
pub struct Uevents {
    fd: OwnedFd,
}

impl Uevents {
    pub fn open() -> nix::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &NetlinkAddr::new(0, 1),
        )?;
        Ok(Uevents { fd })
    }

    /// Drains pending events; true if any announced a new device, or if the
    /// socket overflowed (events were lost, so assume one did).
    pub fn drain(&self) -> bool {
        let mut any_add = false;
        let mut buf = [0u8; 8192];
        loop {
            match recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                &mut buf,
                MsgFlags::empty(),
            ) {
                Ok(0) => break,
                Ok(n) => any_add |= is_add(&buf[..n]),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::ENOBUFS) => any_add = true,
                Err(_) => break,
            }
        }
        any_add
    }
}

impl AsFd for Uevents {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn add_events_are_recognised_and_others_are_not() {
        assert!(is_add(
            b"add@/devices/pci0000:00/0000:00:03.0\0ACTION=add\0MODALIAS=pci:v1AF4\0"
        ));
        assert!(!is_add(b"remove@/devices/x\0ACTION=remove\0"));
        assert!(!is_add(b"change@/devices/x\0ACTION=change\0"));
        // udev's re-broadcast format has a header but the same fields.
        assert!(is_add(b"libudev\0\xfe\xed\xca\xfe\0ACTION=add\0"));
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = is_add(&bytes);
        }
    }
}
