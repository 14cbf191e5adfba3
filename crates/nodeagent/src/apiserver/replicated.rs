//! How handlers reach the replicated store: the running member, retries
//! that are safe, and the mapping from store errors to API errors.
//!
//! Reads are retried while no leader is known or a read went unanswered (a
//! new leader drops reads until it commits in its term); they change
//! nothing, so retrying is always safe. Writes are retried only when Raft
//! did not take them in (no leader, proposal dropped, another membership
//! change still in progress): a write that timed out may have been
//! applied, so it is reported as `outcome_unknown` and left to the caller.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use api::ErrorCode;
use cluster::node::{NodeHandle, Query, ReadResult, StoreError};
use cluster::raft::replica::ProposeError;
use cluster::store::{Command, Outcome};

use super::{Failure, ServerState};
use crate::member::RunningMember;

/// How long a request keeps retrying before it reports the last failure.
const RETRY_BUDGET: Duration = Duration::from_secs(10);
/// First pause between attempts; it doubles up to [`MAX_PAUSE`]. The
/// attempts only ask this node's own member, so they are cheap, and a
/// short cap lets a write through soon after a new leader is elected.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// The running member, or 503 when this node has none.
pub fn running(state: &ServerState) -> Result<Arc<RunningMember>, Failure> {
    state.running_member().ok_or_else(|| {
        Failure::new(
            ErrorCode::Unavailable,
            "this node's cluster member is not running (see the node's log)",
        )
    })
}

/// The API error for a store error; `write` says whether a timeout leaves
/// a change in doubt.
pub fn store_failure(error: &StoreError, write: bool) -> Failure {
    match error {
        StoreError::NoLeader | StoreError::Rejected(ProposeError::NoLeader) => Failure::new(
            ErrorCode::NoLeader,
            "the cluster has no leader right now (an election is running or a majority of voters is unreachable)",
        ),
        StoreError::Rejected(ProposeError::Dropped) => Failure::new(
            ErrorCode::NoLeader,
            "the leader did not take the request in (it is stepping down or handing over)",
        ),
        StoreError::Rejected(ProposeError::ChangeInProgress) => Failure::new(
            ErrorCode::Unavailable,
            "another membership change is still in progress; retry in a moment",
        ),
        StoreError::Timeout(after) if write => Failure::new(
            ErrorCode::OutcomeUnknown,
            format!(
                "the cluster did not confirm the write within {} s; it may or may not have been applied",
                after.as_secs()
            ),
        ),
        StoreError::Timeout(after) => Failure::new(
            ErrorCode::NoLeader,
            format!("no quorum answered the read within {} s", after.as_secs()),
        ),
        StoreError::Stopped => Failure::new(
            ErrorCode::Unavailable,
            "this node's cluster member has stopped",
        ),
    }
}

fn retryable(error: &StoreError, write: bool) -> bool {
    match error {
        // Raft did not take these in: nothing was written.
        StoreError::NoLeader
        | StoreError::Rejected(
            ProposeError::NoLeader | ProposeError::Dropped | ProposeError::ChangeInProgress,
        ) => true,
        StoreError::Timeout(_) => !write,
        StoreError::Stopped => false,
    }
}

async fn retrying<T, F, Fut>(write: bool, mut attempt: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + RETRY_BUDGET;
    let mut pause = FIRST_PAUSE;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) if retryable(&error, write) && Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(error) => return Err(store_failure(&error, write)),
        }
    }
}

/// A linearizable read, retried while the cluster has no leader.
pub async fn read(handle: &NodeHandle, query: Query) -> Result<ReadResult, Failure> {
    retrying(false, || handle.read(query.clone())).await
}

/// A write, retried only while Raft has not taken it in.
pub async fn write(handle: &NodeHandle, command: Command) -> Result<Outcome, Failure> {
    retrying(true, || handle.propose(command.clone())).await
}

/// A membership change, retried only while Raft has not taken it in.
pub async fn change_membership(
    handle: &NodeHandle,
    steps: Vec<cluster::raft::replica::MembershipStep>,
    upsert: Vec<cluster::store::Member>,
    remove: Vec<u64>,
) -> Result<(), Failure> {
    retrying(true, || {
        handle.change_membership(steps.clone(), upsert.clone(), remove.clone())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_write_is_in_doubt_and_never_retried() {
        let timeout = StoreError::Timeout(Duration::from_secs(5));
        assert!(!retryable(&timeout, true));
        assert!(retryable(&timeout, false), "reads change nothing");
        assert_eq!(
            store_failure(&timeout, true).error.code,
            ErrorCode::OutcomeUnknown
        );
        assert_eq!(
            store_failure(&timeout, false).error.code,
            ErrorCode::NoLeader
        );
    }

    #[test]
    fn a_write_raft_never_took_in_is_retried() {
        for error in [
            StoreError::NoLeader,
            StoreError::Rejected(ProposeError::Dropped),
            StoreError::Rejected(ProposeError::NoLeader),
            StoreError::Rejected(ProposeError::ChangeInProgress),
        ] {
            assert!(retryable(&error, true), "{error:?}");
        }
        assert!(!retryable(&StoreError::Stopped, true));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_budget_with_the_last_error() {
        let mut attempts = 0;
        let started = tokio::time::Instant::now();
        let result: Result<(), Failure> = retrying(false, || {
            attempts += 1;
            async { Err(StoreError::NoLeader) }
        })
        .await;
        assert_eq!(result.unwrap_err().error.code, ErrorCode::NoLeader);
        assert!(attempts > 5, "{attempts}");
        assert!(started.elapsed() <= RETRY_BUDGET);
    }
}
