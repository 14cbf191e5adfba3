//! A stand-in for cairn-init's `org.cairn.Init1` D-Bus interface.
//!
//! `GET /v1/node` reports the boot loader's status, which cairnd asks
//! cairn-init for over a peer-to-peer D-Bus connection and keeps once it
//! has an answer. Without an init the connect fails, nothing is kept, and
//! every node info call tries again, which is not what a node does. So the
//! bench serves this stand-in on a unix socket and points
//! `CAIRN_INIT_SOCKET` at it (`--no-init` turns it off). Like cairn-init it
//! serves each connection until the peer hangs up; unlike cairn-init it
//! answers from a fixed table instead of reading EFI variables. It counts
//! the calls, so the report shows how often cairnd really asked. It runs on
//! its own thread and runtime so the load generator's runtime does not
//! carry it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// The object path cairnd calls.
pub const OBJECT_PATH: &str = "/org/cairn/Init1";

/// What a UEFI node with a fresh boot entry reports.
const BOOT_STATUS: [(&str, &str); 6] = [
    ("firmware", "uefi"),
    ("entry", "cairn-0.1.0+2-1.conf"),
    ("counter", "indeterminate"),
    ("tries-left", "2"),
    ("tries-done", "1"),
    ("loader", "systemd-boot 252"),
];

/// The served object; counts the calls it answered.
#[derive(Debug)]
struct Init1Stub {
    calls: Arc<AtomicU64>,
}

#[zbus::interface(name = "org.cairn.Init1")]
impl Init1Stub {
    fn boot_status(&self) -> HashMap<String, String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        BOOT_STATUS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
}

/// Starting the stand-in failed.
#[derive(Debug, thiserror::Error)]
pub enum FakeInitError {
    /// Its runtime could not be built.
    #[error("cannot build the fake init's runtime")]
    Runtime(#[source] std::io::Error),
    /// The socket could not be bound.
    #[error("cannot bind {0}")]
    Bind(PathBuf, #[source] std::io::Error),
    /// The thread could not be started.
    #[error("cannot start the fake init's thread")]
    Thread(#[source] std::io::Error),
}

/// The running stand-in; stops when dropped.
#[derive(Debug)]
pub struct FakeInit {
    calls: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeInit {
    /// Binds `socket` and serves on a thread of its own.
    ///
    /// # Errors
    /// [`FakeInitError`] if the runtime, socket or thread cannot be made.
    pub fn start(socket: &Path) -> Result<Self, FakeInitError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FakeInitError::Runtime)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::UnixListener::bind(socket)
                .map_err(|e| FakeInitError::Bind(socket.to_path_buf(), e))?
        };
        let (stop, stopped) = oneshot::channel();
        let calls = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&calls);
        let thread = std::thread::Builder::new()
            .name("fake-init".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = serve(listener, counter) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(FakeInitError::Thread)?;
        Ok(Self {
            calls,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl FakeInit {
    /// `BootStatus` calls answered so far.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for FakeInit {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: tokio::net::UnixListener, calls: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let calls = Arc::clone(&calls);
        tokio::spawn(async move {
            let Ok(stream) = stream.into_std() else {
                return;
            };
            let built = zbus::connection::Builder::unix_stream(stream)
                .server(zbus::Guid::generate())
                .p2p()
                .serve_at(OBJECT_PATH, Init1Stub { calls })
                .build()
                .await;
            // A peer that goes away mid-handshake is not an error worth
            // reporting: cairnd's own request then fails and the round
            // counts it.
            if let Ok(connection) = built {
                connection.closed().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn boot_status(socket: &Path) -> HashMap<String, String> {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .unwrap()
            .into_std()
            .unwrap();
        let connection = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .unwrap();
        let reply = connection
            .call_method(
                None::<&str>,
                OBJECT_PATH,
                Some("org.cairn.Init1"),
                "BootStatus",
                &(),
            )
            .await
            .unwrap();
        reply.body().deserialize().unwrap()
    }

    #[test]
    fn every_connection_gets_a_boot_status_like_cairnds_client_asks() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("init.sock");
        let init = FakeInit::start(&socket).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for _ in 0..3 {
            let status = runtime.block_on(boot_status(&socket));
            assert_eq!(status.get("firmware").map(String::as_str), Some("uefi"));
        }
        assert_eq!(init.calls(), 3);
    }

    #[test]
    fn concurrent_connections_are_all_answered() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("init.sock");
        let init = FakeInit::start(&socket).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let socket = socket.clone();
                tasks.spawn(async move {
                    for _ in 0..20 {
                        let status = boot_status(&socket).await;
                        assert_eq!(status.len(), BOOT_STATUS.len());
                    }
                });
            }
            tokio::time::timeout(std::time::Duration::from_secs(20), async {
                while let Some(joined) = tasks.join_next().await {
                    joined.unwrap();
                }
            })
            .await
            .expect("every call is answered in time");
        });
        assert_eq!(init.calls(), 160);
    }
}
