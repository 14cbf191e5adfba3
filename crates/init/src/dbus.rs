//! `org.cairn.Init1`: init's D-Bus interface, peer to peer on a unix socket.
//!
//! There is no bus daemon on a Cairn node. `cairnd` (root only: the socket is
//! mode 0600) connects to `/run/cairn/init.sock` and talks D-Bus directly to
//! PID 1. Power requests are queued to the main loop, which alone carries
//! them out; the call returns as soon as the request is queued.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use nix::sys::eventfd::EventFd;

use crate::log::Log;
use crate::shutdown::{PowerAction, Request};

pub const SOCKET_PATH: &str = "/run/cairn/init.sock";
pub const OBJECT_PATH: &str = "/org/cairn/Init1";
pub const INTERFACE: &str = "org.cairn.Init1";

/// Hands a request to the main loop and wakes it.
#[derive(Debug, Clone)]
pub struct RequestSender {
    tx: mpsc::Sender<Request>,
    wake: Arc<EventFd>,
}

impl RequestSender {
    pub fn new(tx: mpsc::Sender<Request>, wake: Arc<EventFd>) -> Self {
        RequestSender { tx, wake }
    }

    fn send(&self, request: Request) -> zbus::fdo::Result<()> {
        self.tx
            .send(request)
            .map_err(|_| zbus::fdo::Error::Failed("init is not taking requests".into()))?;
        self.wake
            .write(1)
            .map_err(|e| zbus::fdo::Error::Failed(format!("waking init: {e}")))?;
        Ok(())
    }
}

/// The object served at [`OBJECT_PATH`].
#[derive(Debug)]
pub struct Init1 {
    requests: RequestSender,
    efivars: PathBuf,
}

#[zbus::interface(name = "org.cairn.Init1")]
impl Init1 {
    /// Orderly reboot: stop the agent, unmount STATE, reboot.
    fn reboot(&self) -> zbus::fdo::Result<()> {
        self.requests.send(Request::Power(PowerAction::Reboot))
    }

    /// Orderly poweroff.
    fn power_off(&self) -> zbus::fdo::Result<()> {
        self.requests.send(Request::Power(PowerAction::PowerOff))
    }

    /// Orderly restart of cairnd: SIGTERM, SIGKILL after the deadline, and
    /// a new cairnd as soon as the old one is gone. Containers, run by
    /// their shims, keep running.
    fn restart_agent(&self) -> zbus::fdo::Result<()> {
        self.requests.send(Request::RestartAgent)
    }

    /// The booted entry, its boot-counter state and the firmware.
    fn boot_status(&self) -> HashMap<String, String> {
        crate::bootstatus::read(&self.efivars)
    }
}

/// Why the D-Bus server could not start.
#[derive(Debug, thiserror::Error)]
#[error("listening on {path}")]
pub struct ServeError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// Binds the socket and serves each connection on its own thread.
pub fn serve(
    path: &Path,
    requests: RequestSender,
    efivars: PathBuf,
    log: Arc<Log>,
) -> Result<(), ServeError> {
    let err = |source| ServeError {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    std::thread::Builder::new()
        .name("dbus-accept".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let requests = requests.clone();
                        let efivars = efivars.clone();
                        let conn_log = Arc::clone(&log);
                        let spawned =
                            std::thread::Builder::new()
                                .name("dbus-conn".into())
                                .spawn(move || {
                                    if let Err(e) = serve_connection(stream, requests, efivars) {
                                        conn_log.warn(format_args!(
                                            "D-Bus connection: {}",
                                            crate::log::chain(&e)
                                        ));
                                    }
                                });
                        if let Err(e) = spawned {
                            log.error(format_args!("starting a D-Bus connection thread: {e}"));
                        }
                    }
                    Err(e) => log.warn(format_args!("accepting on {SOCKET_PATH}: {e}")),
                }
            }
        })
        .map_err(err)?;
    Ok(())
}

/// Serves one peer until it hangs up. Blocks the calling thread, which
/// drives the connection (zbus's runtime runs inside `block_on`).
pub fn serve_connection(
    stream: UnixStream,
    requests: RequestSender,
    efivars: PathBuf,
) -> zbus::Result<()> {
    zbus::block_on(async move {
        let conn = zbus::connection::Builder::unix_stream(stream)
            .server(zbus::Guid::generate())
            .p2p()
            .serve_at(OBJECT_PATH, Init1 { requests, efivars })
            .build()
            .await?;
        conn.closed().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::EfdFlags;

    /// Calls a method of the interface as `cairnd` would.
    fn call(stream: UnixStream, methods: &[&str]) -> Vec<zbus::Message> {
        zbus::block_on(async move {
            let conn = zbus::connection::Builder::unix_stream(stream)
                .p2p()
                .build()
                .await
                .unwrap();
            let mut replies = Vec::new();
            for m in methods {
                replies.push(
                    conn.call_method(None::<&str>, OBJECT_PATH, Some(INTERFACE), *m, &())
                        .await
                        .unwrap(),
                );
            }
            replies
        })
    }

    #[test]
    fn power_and_agent_requests_over_dbus_are_queued_and_wake_the_loop() {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let wake = Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK).unwrap());
        let sender = RequestSender::new(tx, Arc::clone(&wake));
        let dir = tempfile::tempdir().unwrap();
        let efivars = dir.path().join("efivars");
        std::thread::spawn(move || serve_connection(server_end, sender, efivars));
        call(client_end, &["PowerOff", "Reboot", "RestartAgent"]);
        assert_eq!(rx.recv().unwrap(), Request::Power(PowerAction::PowerOff));
        assert_eq!(rx.recv().unwrap(), Request::Power(PowerAction::Reboot));
        assert_eq!(rx.recv().unwrap(), Request::RestartAgent);
        assert_eq!(wake.read().unwrap(), 3, "each request wakes the loop");
    }

    #[test]
    fn boot_status_over_dbus_reports_the_firmware() {
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let (tx, _rx) = mpsc::channel();
        let wake = Arc::new(EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK).unwrap());
        let dir = tempfile::tempdir().unwrap();
        // No efivarfs directory's parent check: the tempdir exists, so "uefi".
        let efivars = dir.path().join("efivars");
        std::thread::spawn(move || {
            serve_connection(server_end, RequestSender::new(tx, wake), efivars)
        });
        let reply = call(client_end, &["BootStatus"]).pop().unwrap();
        let status: HashMap<String, String> = reply.body().deserialize().unwrap();
        assert_eq!(status["firmware"], "uefi");
        assert_eq!(status["counter"], "unknown");
    }
}
