//! The load generator: N clients in a closed loop against one target.
//!
//! Each client sends its next request as soon as the previous one finished,
//! until the round's deadline. A request's latency runs from just before
//! the TCP connect (or, with a reused connection, the write) to the last
//! body byte, so with [`Connections::PerRequest`] it includes the TCP and
//! the full TLS 1.3 handshake with the client certificate. Failures are
//! counted with the first one kept for the report; they do not stop the
//! round.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::client::{self, RequestError};
use super::wire;

/// How clients use connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// A new TCP + TLS connection per request (`Connection: close`).
    PerRequest,
    /// One connection per client, reused for every request.
    KeepAlive,
}

impl Connections {
    /// A short label for tables and JSON.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Connections::PerRequest => "new connection per request",
            Connections::KeepAlive => "keep-alive",
        }
    }

    /// The JSON key.
    #[must_use]
    pub fn key(self) -> &'static str {
        match self {
            Connections::PerRequest => "per_request",
            Connections::KeepAlive => "keep_alive",
        }
    }
}

/// What one round produced, before summarising.
#[derive(Debug, Default)]
pub struct RoundOutcome {
    /// Latency of every successful request.
    pub latencies: Vec<Duration>,
    /// Failed requests.
    pub errors: u64,
    /// The first failure, with its cause chain.
    pub first_error: Option<String>,
    /// Wall time from the first request to the last client finishing.
    pub wall: Duration,
}

impl RoundOutcome {
    /// Adds one client's outcome to the round's. A client task that did
    /// not finish (it panicked) counts as one failed request.
    pub fn absorb(&mut self, client: Result<RoundOutcome, tokio::task::JoinError>) {
        match client {
            Ok(one) => {
                self.latencies.extend(one.latencies);
                self.errors += one.errors;
                if self.first_error.is_none() {
                    self.first_error = one.first_error;
                }
            }
            Err(e) => {
                self.errors += 1;
                self.first_error
                    .get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
}

/// The longest one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `clients` closed-loop clients against `addr` for `duration`.
pub async fn run_round(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
    path: &str,
    clients: usize,
    duration: Duration,
    mode: Connections,
) -> RoundOutcome {
    let started = Instant::now();
    let deadline = started + duration;
    let request: Arc<[u8]> = wire::get_request(path, mode == Connections::KeepAlive).into();
    let connector = TlsConnector::from(config);
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(client_loop(
            connector.clone(),
            addr,
            Arc::clone(&request),
            deadline,
            mode,
        ));
    }
    let mut outcome = RoundOutcome::default();
    while let Some(joined) = tasks.join_next().await {
        outcome.absorb(joined);
    }
    outcome.wall = started.elapsed();
    outcome
}

async fn client_loop(
    connector: TlsConnector,
    addr: SocketAddr,
    request: Arc<[u8]>,
    deadline: Instant,
    mode: Connections,
) -> RoundOutcome {
    let mut outcome = RoundOutcome::default();
    let mut kept: Option<TlsStream<TcpStream>> = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    while Instant::now() < deadline {
        let started = Instant::now();
        let attempt = tokio::time::timeout(
            REQUEST_TIMEOUT,
            one_request(&connector, addr, &request, &mut kept, &mut buf, mode),
        )
        .await
        .unwrap_or(Err(Failure::Request(RequestError::Timeout(
            REQUEST_TIMEOUT,
        ))));
        match attempt {
            Ok(()) => outcome.latencies.push(started.elapsed()),
            Err(failure) => {
                kept = None;
                outcome.errors += 1;
                outcome
                    .first_error
                    .get_or_insert_with(|| failure.describe());
            }
        }
    }
    outcome
}

#[derive(Debug)]
enum Failure {
    Request(RequestError),
    Response(wire::ResponseError),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Request(e) => crate::report(e),
            Failure::Response(e) => crate::report(e),
        }
    }
}

async fn one_request(
    connector: &TlsConnector,
    addr: SocketAddr,
    request: &[u8],
    kept: &mut Option<TlsStream<TcpStream>>,
    buf: &mut Vec<u8>,
    mode: Connections,
) -> Result<(), Failure> {
    let mut stream = match kept.take() {
        Some(stream) => stream,
        None => client::connect(connector, addr)
            .await
            .map_err(Failure::Request)?,
    };
    let head = client::exchange(&mut stream, request, buf)
        .await
        .map_err(Failure::Request)?;
    wire::check_json_ok(&head, buf).map_err(Failure::Response)?;
    match mode {
        Connections::KeepAlive => *kept = Some(stream),
        // Dropping closes the socket; the server already sent its reply
        // and closes its side after `Connection: close`.
        Connections::PerRequest => drop(stream),
    }
    Ok(())
}
