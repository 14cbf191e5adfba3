//! Seeds for the DHCP client's PRNG, without waiting for the kernel.
//!
//! A blocking getrandom(2) waits until the kernel's CRNG is initialised. On
//! a machine with neither RDRAND nor a hardware RNG (QEMU under TCG with
//! its default CPU and no virtio-rng) that has been seen to take more than
//! four minutes, and the node must not sit without a network meanwhile.
//! DHCP transaction IDs and retransmission jitter need to differ between
//! clients and between exchanges, not to be secret (see
//! [`super::dhcp::client`]), so the seed comes from getrandom(2) with
//! `GRND_INSECURE` (Linux 5.6 and later): the kernel's best output so far,
//! never a wait. Failing that it is `GRND_NONBLOCK`, and failing that the
//! MAC mixed with the boot-time and wall clocks, which still differ
//! between machines and boots.
//!
//! Nothing here credits entropy to the kernel: the cluster CA keys made
//! later still get a properly initialised CRNG.

use rustix::rand::{GetRandomFlags, getrandom};

use crate::config::MacAddr;

/// 64 bits to seed the DHCP client for the link with `mac`. Never blocks.
pub fn dhcp_seed(mac: MacAddr) -> u64 {
    for flags in [GetRandomFlags::INSECURE, GetRandomFlags::NONBLOCK] {
        let mut bytes = [0u8; 8];
        if let Ok(8) = getrandom(&mut bytes[..], flags) {
            return u64::from_ne_bytes(bytes);
        }
    }
    fallback_seed(
        mac,
        clock_nanos(nix::time::ClockId::CLOCK_BOOTTIME),
        clock_nanos(nix::time::ClockId::CLOCK_REALTIME),
    )
}

fn clock_nanos(clock: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(clock)
        .map(|t| {
            u64::try_from(t.tv_sec())
                .unwrap_or(0)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(u64::try_from(t.tv_nsec()).unwrap_or(0))
        })
        .unwrap_or(0)
}

/// Mixes what tells this client apart from others when the kernel has no
/// random bytes for us: the MAC (unique on the link) and the clocks (which
/// differ between boots).
fn fallback_seed(mac: MacAddr, boot_nanos: u64, wall_nanos: u64) -> u64 {
    let mut mac_bits = [0u8; 8];
    mac_bits[..6].copy_from_slice(&mac.octets());
    let mut mix = super::dhcp::client::SplitMix64::new(u64::from_le_bytes(mac_bits));
    let a = mix.next_u64() ^ boot_nanos;
    let mut mix = super::dhcp::client::SplitMix64::new(a);
    let b = mix.next_u64() ^ wall_nanos;
    super::dhcp::client::SplitMix64::new(b).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(last: u8) -> MacAddr {
        format!("02:00:00:00:00:{last:02x}").parse().unwrap()
    }

    #[test]
    fn seeds_do_not_repeat_and_come_at_once() {
        // Fresh kernel bytes each time (the build host's CRNG is ready; on
        // a node without one GRND_INSECURE still answers at once).
        let started = std::time::Instant::now();
        assert_ne!(dhcp_seed(mac(1)), dhcp_seed(mac(1)));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn fallback_seed_differs_by_mac_and_by_boot_time() {
        let base = fallback_seed(mac(1), 5_000_000_000, 1_700_000_000_000_000_000);
        assert_ne!(
            base,
            fallback_seed(mac(2), 5_000_000_000, 1_700_000_000_000_000_000)
        );
        assert_ne!(
            base,
            fallback_seed(mac(1), 5_000_000_001, 1_700_000_000_000_000_000)
        );
        assert_ne!(
            base,
            fallback_seed(mac(1), 5_000_000_000, 1_700_000_000_000_000_001)
        );
    }
}
