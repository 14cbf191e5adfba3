//! The client side of cairn-init's `org.cairn.Init1` D-Bus interface,
//! peer to peer over its unix socket. cairn-init is the only process that
//! touches power and boot entries; the API asks it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

const PATH: &str = "/org/cairn/Init1";
const INTERFACE: &str = "org.cairn.Init1";

/// Why init could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum InitBusError {
    /// The socket is not there or refuses connections.
    #[error("cannot reach cairn-init at {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The D-Bus handshake or the call failed.
    #[error("cairn-init did not answer {method}")]
    Call {
        /// The method.
        method: &'static str,
        /// The failure.
        #[source]
        source: zbus::Error,
    },
}

/// A connection to init.
#[derive(Debug)]
pub struct InitBus {
    connection: zbus::Connection,
}

impl InitBus {
    /// Connects and authenticates.
    pub async fn connect(path: &Path) -> Result<Self, InitBusError> {
        let connect_error = |source| InitBusError::Connect {
            path: path.to_owned(),
            source,
        };
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .and_then(tokio::net::UnixStream::into_std)
            .map_err(connect_error)?;
        let connection = zbus::connection::Builder::unix_stream(stream)
            .p2p()
            .build()
            .await
            .map_err(|source| InitBusError::Call {
                method: "Hello",
                source,
            })?;
        Ok(Self { connection })
    }

    async fn call(&self, method: &'static str) -> Result<zbus::Message, InitBusError> {
        self.connection
            .call_method(None::<&str>, PATH, Some(INTERFACE), method, &())
            .await
            .map_err(|source| InitBusError::Call { method, source })
    }

    /// Orderly reboot.
    pub async fn reboot(&self) -> Result<(), InitBusError> {
        self.call("Reboot").await.map(drop)
    }

    /// Orderly power-off.
    pub async fn power_off(&self) -> Result<(), InitBusError> {
        self.call("PowerOff").await.map(drop)
    }

    /// Asks init to stop this agent in order and start a new one.
    pub async fn restart_agent(&self) -> Result<(), InitBusError> {
        self.call("RestartAgent").await.map(drop)
    }

    /// The boot loader's report (`firmware`, `entry`, `counter`, ...).
    pub async fn boot_status(&self) -> Result<HashMap<String, String>, InitBusError> {
        let reply = self.call("BootStatus").await?;
        reply
            .body()
            .deserialize()
            .map_err(|source| InitBusError::Call {
                method: "BootStatus",
                source,
            })
    }
}
