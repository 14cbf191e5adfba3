//! The workload, the same for both systems.
//!
//! Closed-loop clients, each on one kept-alive mTLS connection opened
//! before the clock starts, spread over the members round-robin (client
//! `c` talks to member `(c + offset) mod 3`; the bench picks the offset,
//! which for a single client decides whether it talks to the leader or a
//! follower). Writes overwrite a bounded set of keys per client with
//! values of a fixed size; reads are linearizable reads of keys preloaded
//! once, each checked against the value written. A request's latency runs
//! from writing it to the last byte of the answer.
//!
//! Failover is measured apart from the load: the leader gets SIGKILL, and
//! from that moment a write is started every 10 ms through the surviving
//! members (on connections opened beforehand, more opened as needed, so
//! a write stuck waiting for a leader does not hold the next one back).
//! The failover time is from the kill to the first acknowledged write.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use tokio::sync::{Barrier, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::kv::{KvConnection, KvError, System};
use super::node::ClusterError;
use crate::apibench::load::RoundOutcome;

/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Keys the read workload reads (written once by [`preload`]).
pub const READ_KEYS: u64 = 256;
/// How often failover writes are started.
pub const FAILOVER_RETRY: Duration = Duration::from_millis(10);

/// Writes or reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Acknowledged, durable writes.
    Write,
    /// Linearizable reads.
    Read,
}

/// One round's shape.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Writes or reads.
    pub op: Op,
    /// Concurrent clients.
    pub clients: usize,
    /// How long the round runs.
    pub duration: Duration,
    /// Bytes per value.
    pub value_bytes: usize,
    /// Distinct keys each writing client cycles through.
    pub keys_per_client: u64,
    /// Turns the client-to-member assignment.
    pub member_offset: usize,
    /// Prefix of the keys written (keeps rounds apart).
    pub tag: String,
}

/// The `i`-th preloaded read key.
#[must_use]
pub fn read_key(i: u64) -> String {
    format!("bench-read-{i}")
}

/// A value of exactly `len` bytes that encodes `seed`, so a read can be
/// checked and two writes of the same key differ.
#[must_use]
pub fn value_of(seed: u64, len: usize) -> String {
    let digits = format!("{seed:016x}");
    let mut out = String::with_capacity(len.max(digits.len()));
    while out.len() < len {
        out.push_str(&digits);
    }
    out.truncate(len);
    out
}

/// Writes the read keys through the first member.
///
/// # Errors
/// The first write that fails.
pub async fn preload(
    system: System,
    config: Arc<ClientConfig>,
    members: &[SocketAddr],
    value_bytes: usize,
) -> Result<(), KvError> {
    let Some(first) = members.first() else {
        return Ok(());
    };
    let mut connection = KvConnection::new(system, config, *first);
    for i in 0..READ_KEYS {
        connection
            .put(&read_key(i), &value_of(i, value_bytes), REQUEST_TIMEOUT)
            .await?;
    }
    Ok(())
}

/// Runs one round of `workload` against `members`.
pub async fn run(
    system: System,
    config: Arc<ClientConfig>,
    members: &[SocketAddr],
    workload: &Workload,
) -> RoundOutcome {
    let mut outcome = RoundOutcome::default();
    if members.is_empty() || workload.clients == 0 {
        outcome.first_error = Some("no members or no clients".into());
        return outcome;
    }
    let barrier = Arc::new(Barrier::new(workload.clients + 1));
    let mut tasks = JoinSet::new();
    for c in 0..workload.clients {
        let addr = members[(c + workload.member_offset) % members.len()];
        let connection = KvConnection::new(system, Arc::clone(&config), addr);
        tasks.spawn(client_loop(
            connection,
            c,
            workload.clone(),
            Arc::clone(&barrier),
        ));
    }
    barrier.wait().await;
    let started = Instant::now();
    while let Some(joined) = tasks.join_next().await {
        outcome.absorb(joined);
    }
    outcome.wall = started.elapsed();
    outcome
}

async fn client_loop(
    mut connection: KvConnection,
    client: usize,
    workload: Workload,
    barrier: Arc<Barrier>,
) -> RoundOutcome {
    let mut outcome = RoundOutcome::default();
    // The handshake happens before the clock starts: these are keep-alive
    // numbers. A failure here shows up as the first request's error.
    let _ = connection.open().await;
    barrier.wait().await;
    let deadline = Instant::now() + workload.duration;
    let client_seed = u64::try_from(client).unwrap_or(u64::MAX);
    let mut seq: u64 = 0;
    while Instant::now() < deadline {
        let started = Instant::now();
        let result = match workload.op {
            Op::Write => {
                let key = format!(
                    "{}-{client}-{}",
                    workload.tag,
                    seq % workload.keys_per_client.max(1)
                );
                let value = value_of(seq, workload.value_bytes);
                connection.put(&key, &value, REQUEST_TIMEOUT).await
            }
            Op::Read => {
                let i = (client_seed.wrapping_mul(7919).wrapping_add(seq)) % READ_KEYS;
                match connection.get(&read_key(i), REQUEST_TIMEOUT).await {
                    Ok(Some(value)) if value == value_of(i, workload.value_bytes) => Ok(()),
                    Ok(Some(value)) => Err(KvError::Shape(format!(
                        "{} read back {} bytes that are not the value written",
                        read_key(i),
                        value.len()
                    ))),
                    Ok(None) => Err(KvError::Shape(format!(
                        "{} is missing although it was written",
                        read_key(i)
                    ))),
                    Err(e) => Err(e),
                }
            }
        };
        match result {
            Ok(()) => outcome.latencies.push(started.elapsed()),
            Err(e) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert_with(|| {
                    format!("via {}: {}", connection.addr(), crate::report(&e))
                });
            }
        }
        seq += 1;
    }
    outcome
}

/// What a failover measurement saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverOutcome {
    /// From the kill to the first acknowledged write.
    pub time: Duration,
    /// Writes started until then.
    pub attempts: u64,
    /// The member that acknowledged it.
    pub via: SocketAddr,
}

/// Connections kept open before the kill, per surviving member.
const FAILOVER_WARM: usize = 4;

/// Kills the leader with `kill` and measures until a write through one of
/// `survivors` is acknowledged, giving up after `limit`.
///
/// # Errors
/// [`ClusterError`] from `kill`, or a timeout with the last write error.
pub async fn failover(
    system: System,
    config: Arc<ClientConfig>,
    survivors: &[SocketAddr],
    tag: &str,
    kill: impl FnOnce() -> Result<(), ClusterError>,
    limit: Duration,
) -> Result<FailoverOutcome, ClusterError> {
    if survivors.is_empty() {
        return Err(ClusterError::State(
            "no surviving member to write to".into(),
        ));
    }
    let mut pools: Vec<Vec<KvConnection>> = Vec::with_capacity(survivors.len());
    for addr in survivors {
        let mut pool = Vec::with_capacity(FAILOVER_WARM);
        for _ in 0..FAILOVER_WARM {
            let mut connection = KvConnection::new(system, Arc::clone(&config), *addr);
            connection.open().await.map_err(|e| {
                ClusterError::State(format!("connecting to {addr}: {}", crate::report(&e)))
            })?;
            pool.push(connection);
        }
        pools.push(pool);
    }
    let (done_tx, mut done_rx) =
        mpsc::unbounded_channel::<(usize, Result<Instant, KvError>, KvConnection)>();
    kill()?;
    let killed = Instant::now();
    let deadline = killed + limit;
    let mut ticker = tokio::time::interval(FAILOVER_RETRY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = JoinSet::new();
    let mut attempts: u64 = 0;
    let mut last_error = String::from("no write finished");
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if Instant::now() > deadline {
                    return Err(ClusterError::Timeout {
                        what: format!("a write through a surviving {} member after the leader was killed", system.name()),
                        limit,
                        detail: last_error,
                    });
                }
                let k = usize::try_from(attempts).unwrap_or(0) % survivors.len();
                let mut connection = pools[k]
                    .pop()
                    .unwrap_or_else(|| KvConnection::new(system, Arc::clone(&config), survivors[k]));
                let key = format!("{tag}-{attempts}");
                let done = done_tx.clone();
                tasks.spawn(async move {
                    let result = connection
                        .put(&key, "failover", REQUEST_TIMEOUT)
                        .await
                        .map(|()| Instant::now());
                    let _ = done.send((k, result, connection));
                });
                attempts += 1;
            }
            Some((k, result, connection)) = done_rx.recv() => {
                match result {
                    Ok(at) => {
                        tasks.abort_all();
                        return Ok(FailoverOutcome {
                            time: at.saturating_duration_since(killed),
                            attempts,
                            via: survivors[k],
                        });
                    }
                    Err(e) => {
                        last_error = format!("via {}: {}", survivors[k], crate::report(&e));
                        pools[k].push(connection);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_have_the_asked_length_and_differ_by_seed() {
        assert_eq!(value_of(1, 64).len(), 64);
        assert_eq!(value_of(1, 3).len(), 3);
        assert_eq!(value_of(7, 0), "");
        assert_ne!(value_of(1, 64), value_of(2, 64));
        assert_eq!(value_of(5, 40), value_of(5, 40));
    }
}
