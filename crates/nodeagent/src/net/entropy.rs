//! Waiting for the kernel's random number generator, off the runtime.
//!
//! mozim takes DHCP transaction IDs and retransmission jitter from `rand`,
//! which seeds itself with getrandom(2) and so blocks until the kernel's
//! CRNG is initialised. On a machine with neither RDRAND nor a hardware RNG
//! (QEMU under TCG with its default CPU and no virtio-rng) that can take
//! minutes, and a block on the agent's single runtime thread would freeze
//! everything, `/healthz` included. So DHCP clients first wait on this
//! gate, which makes the one blocking call on a thread of its own.

use tokio::sync::watch;

/// Opens once getrandom(2) no longer blocks. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EntropyGate(watch::Receiver<bool>);

impl EntropyGate {
    /// Starts the wait on a detached thread (a detached one, so that a
    /// shutdown never waits for a getrandom that may not return).
    pub fn start() -> Self {
        let (tx, rx) = watch::channel(false);
        let spawned = std::thread::Builder::new()
            .name("cairnd-entropy".into())
            .spawn(move || {
                let mut byte = [0u8; 1];
                if let Err(e) = getrandom::fill(&mut byte) {
                    // Not a readiness problem; mozim will report its own
                    // failure if it cannot get random numbers either.
                    tracing::error!(error = %e, "getrandom failed");
                }
                let _ = tx.send(true);
            });
        match spawned {
            Ok(_) => Self(rx),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the entropy wait; DHCP may block the agent");
                Self::open()
            }
        }
    }

    /// A gate that is already open.
    pub fn open() -> Self {
        Self(watch::channel(true).1)
    }

    /// Whether random numbers are available without blocking.
    pub fn is_open(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the gate opens.
    pub async fn wait(&mut self) {
        // An error means the sender is gone without opening, which only
        // happens if the thread panicked; treat that as open.
        let _ = self.0.wait_for(|ready| *ready).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn gate_opens_once_the_kernel_rng_is_ready() {
        // The build host's CRNG is long initialised, so this opens at once.
        let mut gate = EntropyGate::start();
        tokio::time::timeout(Duration::from_secs(5), gate.wait())
            .await
            .unwrap();
        assert!(gate.is_open());
        assert!(EntropyGate::open().is_open());
    }
}
