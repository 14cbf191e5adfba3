//! The restart policy as a sans-IO state machine.
//!
//! The shim tells it when the process started and how it exited (with the
//! time, in milliseconds on a monotonic clock the caller owns); it answers
//! whether and when to start the process again. It never reads a clock.

use crate::spec::{RestartConfig, RestartPolicy};
use crate::state::ExitStatus;

/// A run that lasted this long resets the backoff.
pub const RESET_AFTER_MS: u64 = 10_000;

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start the process again after this many milliseconds.
    RestartAfter { delay_ms: u64 },
    /// Leave it down: the policy does not restart this exit, or retries are
    /// used up.
    GiveUp,
}

/// Restart bookkeeping for one container.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    config: RestartConfig,
    /// Consecutive failures since the last good run (drives backoff and
    /// `max_retries`).
    attempts: u32,
    started_at_ms: Option<u64>,
}

impl RestartTracker {
    #[must_use]
    pub fn new(config: RestartConfig) -> Self {
        Self {
            config,
            attempts: 0,
            started_at_ms: None,
        }
    }

    /// The process was started at `now_ms`.
    pub fn started(&mut self, now_ms: u64) {
        self.started_at_ms = Some(now_ms);
    }

    /// The process exited at `now_ms` with `status`.
    pub fn exited(&mut self, status: ExitStatus, now_ms: u64) -> RestartDecision {
        let ran_ms = self
            .started_at_ms
            .take()
            .map_or(0, |s| now_ms.saturating_sub(s));
        if ran_ms >= RESET_AFTER_MS {
            self.attempts = 0;
        }
        let restart = match self.config.policy {
            RestartPolicy::Never => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => {
                !status.success()
                    && self
                        .config
                        .max_retries
                        .is_none_or(|max| self.attempts < max)
            }
        };
        if !restart {
            return RestartDecision::GiveUp;
        }
        let delay_ms = self
            .config
            .backoff_initial_ms
            .saturating_mul(1u64.checked_shl(self.attempts).unwrap_or(u64::MAX))
            .min(self.config.backoff_max_ms);
        self.attempts = self.attempts.saturating_add(1);
        RestartDecision::RestartAfter { delay_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: RestartPolicy, max_retries: Option<u32>) -> RestartConfig {
        RestartConfig {
            policy,
            max_retries,
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
        }
    }

    fn delays(tracker: &mut RestartTracker, status: ExitStatus, n: usize) -> Vec<RestartDecision> {
        let mut now = 0;
        (0..n)
            .map(|_| {
                tracker.started(now);
                now += 50;
                let d = tracker.exited(status, now);
                if let RestartDecision::RestartAfter { delay_ms } = d {
                    now += delay_ms;
                }
                d
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut t = RestartTracker::new(config(RestartPolicy::Always, None));
        let got = delays(&mut t, ExitStatus::Code(1), 6);
        let want: Vec<_> = [100, 200, 400, 800, 1000, 1000]
            .into_iter()
            .map(|delay_ms| RestartDecision::RestartAfter { delay_ms })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn on_failure_stops_after_max_retries_and_ignores_success() {
        let mut t = RestartTracker::new(config(RestartPolicy::OnFailure, Some(2)));
        let got = delays(&mut t, ExitStatus::Signal(9), 3);
        assert_eq!(
            got,
            vec![
                RestartDecision::RestartAfter { delay_ms: 100 },
                RestartDecision::RestartAfter { delay_ms: 200 },
                RestartDecision::GiveUp
            ]
        );
        let mut t = RestartTracker::new(config(RestartPolicy::OnFailure, None));
        t.started(0);
        assert_eq!(t.exited(ExitStatus::Code(0), 10), RestartDecision::GiveUp);
    }

    #[test]
    fn never_never_restarts_and_always_restarts_success_too() {
        let mut t = RestartTracker::new(config(RestartPolicy::Never, None));
        t.started(0);
        assert_eq!(t.exited(ExitStatus::Code(1), 5), RestartDecision::GiveUp);
        let mut t = RestartTracker::new(config(RestartPolicy::Always, None));
        t.started(0);
        assert_eq!(
            t.exited(ExitStatus::Code(0), 5),
            RestartDecision::RestartAfter { delay_ms: 100 }
        );
    }

    #[test]
    fn ten_seconds_of_good_running_resets_backoff_and_retries() {
        let mut t = RestartTracker::new(config(RestartPolicy::OnFailure, Some(2)));
        delays(&mut t, ExitStatus::Code(1), 2);
        t.started(100_000);
        assert_eq!(
            t.exited(ExitStatus::Code(1), 100_000 + RESET_AFTER_MS),
            RestartDecision::RestartAfter { delay_ms: 100 },
            "a long run starts the count again"
        );
    }
}
