//! Waiting for a rebooting node to come back, as a sans-IO state machine.
//!
//! The shell polls `GET /v1/node` and feeds each outcome in with the time
//! elapsed since the reboot was accepted; the machine answers with what to
//! say on stderr and whether to poll again, stop, or give up. Connection
//! failures are expected while the node is down and only move the phase
//! along. The node is back when it answers with a boot id other than the
//! one the reboot ended.

use std::time::Duration;

use crate::duration::Span;

/// How long to sleep between polls.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The default limit for `--wait`: generous, since a VM under TCG takes
/// tens of seconds to boot and firmware on real machines can take minutes.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What one poll saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The node answered with this boot id.
    Booted(String),
    /// No answer; the sentence says why.
    Unreachable(String),
}

/// What the shell does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Sleep this long, then poll again.
    PollAfter(Duration),
    /// The node is back with this boot id.
    Back(String),
    /// The limit passed; the string is the last observation, described.
    GiveUp(String),
}

/// One step's outcome: a progress line to print (when something changed)
/// and what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// A line for stderr.
    pub progress: Option<String>,
    /// What to do.
    pub next: Next,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The node still answers with the old boot id.
    GoingDown,
    /// The node stopped answering.
    Down,
}

/// The wait for a reboot.
#[derive(Debug)]
pub struct RebootWait {
    old_boot_id: String,
    timeout: Duration,
    phase: Phase,
}

impl RebootWait {
    /// Waits for a boot id other than `old_boot_id`, for at most `timeout`.
    pub fn new(old_boot_id: String, timeout: Duration) -> Self {
        RebootWait {
            old_boot_id,
            timeout,
            phase: Phase::GoingDown,
        }
    }

    /// Feeds one poll's outcome, seen `elapsed` after the reboot started.
    pub fn observe(&mut self, elapsed: Duration, observation: Observation) -> Step {
        let at = Span::from_secs(elapsed.as_secs());
        match observation {
            Observation::Booted(boot_id) if boot_id != self.old_boot_id => Step {
                progress: Some(format!("node is back after {at} (boot id {boot_id})")),
                next: Next::Back(boot_id),
            },
            Observation::Booted(_) => {
                // The old boot still answers: the node has not gone down
                // yet, or it came back so fast that this poll raced it.
                self.poll(elapsed, None, "the node still runs the old boot".to_owned())
            }
            Observation::Unreachable(why) => {
                let progress = match self.phase {
                    Phase::GoingDown => {
                        self.phase = Phase::Down;
                        Some(format!(
                            "node is down ({why}); waiting for it to come back (up to {})",
                            Span::from_secs(self.timeout.as_secs())
                        ))
                    }
                    Phase::Down => None,
                };
                self.poll(elapsed, progress, why)
            }
        }
    }

    fn poll(&self, elapsed: Duration, progress: Option<String>, last: String) -> Step {
        if elapsed >= self.timeout {
            return Step {
                progress: None,
                next: Next::GiveUp(last),
            };
        }
        Step {
            progress,
            next: Next::PollAfter(POLL_INTERVAL.min(self.timeout - elapsed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_reboot_is_seen_going_down_and_coming_back_with_a_new_boot_id() {
        let mut wait = RebootWait::new("old".to_owned(), S(900));
        let step = wait.observe(S(1), Observation::Booted("old".to_owned()));
        assert_eq!(
            step,
            Step {
                progress: None,
                next: Next::PollAfter(POLL_INTERVAL)
            }
        );

        let step = wait.observe(
            S(3),
            Observation::Unreachable("connection refused".to_owned()),
        );
        assert!(
            step.progress
                .expect("says it is down")
                .starts_with("node is down (connection refused)")
        );
        // Further failures stay quiet.
        let step = wait.observe(S(5), Observation::Unreachable("timed out".to_owned()));
        assert_eq!(step.progress, None);

        let step = wait.observe(S(40), Observation::Booted("new".to_owned()));
        assert_eq!(step.next, Next::Back("new".to_owned()));
        assert_eq!(
            step.progress.as_deref(),
            Some("node is back after 40s (boot id new)")
        );
    }

    #[test]
    fn a_node_that_never_goes_down_times_out_with_the_reason() {
        let mut wait = RebootWait::new("old".to_owned(), S(10));
        let step = wait.observe(S(10), Observation::Booted("old".to_owned()));
        assert_eq!(
            step.next,
            Next::GiveUp("the node still runs the old boot".to_owned())
        );
    }

    #[test]
    fn a_node_that_stays_down_times_out_with_the_last_error() {
        let mut wait = RebootWait::new("old".to_owned(), S(10));
        wait.observe(
            S(2),
            Observation::Unreachable("connection refused".to_owned()),
        );
        let step = wait.observe(
            S(11),
            Observation::Unreachable("no route to host".to_owned()),
        );
        assert_eq!(step.next, Next::GiveUp("no route to host".to_owned()));
    }

    #[test]
    fn the_last_poll_is_never_scheduled_past_the_deadline() {
        let mut wait = RebootWait::new("old".to_owned(), S(10));
        let step = wait.observe(
            Duration::from_millis(9_500),
            Observation::Booted("old".to_owned()),
        );
        assert_eq!(step.next, Next::PollAfter(Duration::from_millis(500)));
    }

    proptest! {
        #[test]
        fn the_wait_ends_exactly_when_a_new_boot_is_seen_or_time_is_up(
            events in proptest::collection::vec((0u64..30, any::<bool>(), any::<bool>()), 1..50),
        ) {
            let timeout = S(300);
            let mut wait = RebootWait::new("old".to_owned(), timeout);
            let mut elapsed = Duration::ZERO;
            for (advance, answered, new_boot) in events {
                elapsed += S(advance);
                let observation = match (answered, new_boot) {
                    (true, true) => Observation::Booted("new".to_owned()),
                    (true, false) => Observation::Booted("old".to_owned()),
                    (false, _) => Observation::Unreachable("refused".to_owned()),
                };
                let step = wait.observe(elapsed, observation);
                match step.next {
                    Next::Back(id) => {
                        prop_assert!(answered && new_boot);
                        prop_assert_eq!(id, "new");
                        break;
                    }
                    Next::GiveUp(_) => {
                        prop_assert!(elapsed >= timeout && !(answered && new_boot));
                        break;
                    }
                    Next::PollAfter(after) => {
                        prop_assert!(elapsed < timeout);
                        prop_assert!(after > Duration::ZERO && after <= POLL_INTERVAL);
                    }
                }
            }
        }
    }
}
