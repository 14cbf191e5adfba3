//! Supervision of `cairnd`, as a state machine that returns actions.
//!
//! The event loop feeds it what happened (the child started or exited, time
//! passed, a shutdown began) with the current monotonic time, and carries out
//! the actions it returns. It never touches a process or a clock itself, so
//! restart backoff and the stop deadline are tested in memory.

use std::time::{Duration, Instant};

/// First restart delay; doubled after each quick failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Restart delays never grow past this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A child that ran this long was healthy: the next failure starts the
/// backoff from the beginning.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long `cairnd` gets to exit after SIGTERM before SIGKILL.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Kill,
}

/// What the event loop must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Spawn,
    Signal(i32, Signal),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting to (re)start at the given time.
    Waiting {
        at: Instant,
    },
    Running {
        pid: i32,
        since: Instant,
    },
    Stopping {
        pid: i32,
        kill_at: Instant,
        killed: bool,
        /// Start it again once it is gone (an agent restart, not a
        /// shutdown).
        restart: bool,
    },
    Stopped,
}

#[derive(Debug)]
pub struct Supervisor {
    state: State,
    backoff: Duration,
    restarts: u32,
}

impl Supervisor {
    /// A supervisor that starts the child at `now`.
    pub fn new(now: Instant) -> Self {
        Supervisor {
            state: State::Waiting { at: now },
            backoff: BACKOFF_MIN,
            restarts: 0,
        }
    }

    /// The loop should call [`Supervisor::tick`] no later than this.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { at } => Some(at),
            State::Stopping {
                kill_at,
                killed: false,
                ..
            } => Some(kill_at),
            State::Running { .. } | State::Stopping { killed: true, .. } | State::Stopped => None,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. } | State::Stopping { pid, .. } => Some(pid),
            State::Waiting { .. } | State::Stopped => None,
        }
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// True once a stop has finished: the child is gone and stays gone.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Time passed.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Waiting { at } if now >= at => vec![Action::Spawn],
            State::Stopping {
                pid,
                kill_at,
                killed: false,
                restart,
            } if now >= kill_at => {
                self.state = State::Stopping {
                    pid,
                    kill_at,
                    killed: true,
                    restart,
                };
                vec![Action::Signal(pid, Signal::Kill)]
            }
            _ => Vec::new(),
        }
    }

    /// The loop spawned the child.
    pub fn spawned(&mut self, now: Instant, pid: i32) {
        self.state = State::Running { pid, since: now };
    }

    /// The loop could not spawn the child: try again after the backoff.
    pub fn spawn_failed(&mut self, now: Instant) -> Duration {
        self.schedule_restart(now, Duration::ZERO)
    }

    /// A process exited. Returns the restart delay when it was our child and
    /// it will be restarted.
    pub fn exited(&mut self, now: Instant, pid: i32) -> Option<Duration> {
        match self.state {
            State::Running { pid: p, since } if p == pid => {
                Some(self.schedule_restart(now, now.saturating_duration_since(since)))
            }
            State::Stopping {
                pid: p,
                restart: true,
                ..
            } if p == pid => {
                self.restarts += 1;
                self.state = State::Waiting { at: now };
                Some(Duration::ZERO)
            }
            State::Stopping { pid: p, .. } if p == pid => {
                self.state = State::Stopped;
                None
            }
            _ => None,
        }
    }

    fn schedule_restart(&mut self, now: Instant, ran: Duration) -> Duration {
        if ran >= STABLE_AFTER {
            self.backoff = BACKOFF_MIN;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.restarts += 1;
        self.state = State::Waiting { at: now + delay };
        delay
    }

    /// Begin an orderly stop: SIGTERM now, SIGKILL at the deadline. A
    /// restart under way becomes a stop.
    pub fn stop(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Running { pid, .. } => {
                self.state = State::Stopping {
                    pid,
                    kill_at: now + STOP_DEADLINE,
                    killed: false,
                    restart: false,
                };
                vec![Action::Signal(pid, Signal::Term)]
            }
            State::Waiting { .. } => {
                self.state = State::Stopped;
                Vec::new()
            }
            State::Stopping {
                ref mut restart, ..
            } => {
                *restart = false;
                Vec::new()
            }
            State::Stopped => Vec::new(),
        }
    }

    /// An operator asked for a new agent: an orderly stop as for a
    /// shutdown, then a start as soon as it is gone, without backoff. While
    /// waiting out a backoff it starts at once; during a shutdown it does
    /// nothing.
    pub fn restart(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Running { pid, .. } => {
                self.state = State::Stopping {
                    pid,
                    kill_at: now + STOP_DEADLINE,
                    killed: false,
                    restart: true,
                };
                vec![Action::Signal(pid, Signal::Term)]
            }
            State::Waiting { .. } => {
                self.state = State::Waiting { at: now };
                vec![Action::Spawn]
            }
            State::Stopping { .. } | State::Stopped => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_agent_starts_at_boot() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0);
        assert_eq!(s.tick(t0), [Action::Spawn]);
    }

    #[test]
    fn quick_crashes_back_off_exponentially_up_to_the_cap() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for pid in 1..=8 {
            s.tick(now);
            s.spawned(now, pid);
            now += secs(1);
            let d = s.exited(now, pid).unwrap();
            delays.push(d.as_secs());
            assert!(s.tick(now).is_empty(), "no restart before the backoff ends");
            now += d;
            assert_eq!(s.tick(now), [Action::Spawn]);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(s.restarts(), 8);
    }

    #[test]
    fn a_crash_after_a_long_healthy_run_restarts_after_the_minimum_delay() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0);
        for pid in 1..=4 {
            s.spawned(t0, pid);
            s.exited(t0, pid);
        }
        s.spawned(t0, 10);
        assert_eq!(s.exited(t0 + secs(120), 10), Some(BACKOFF_MIN));
    }

    #[test]
    fn exits_of_other_processes_are_ignored() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0);
        s.spawned(t0, 42);
        assert_eq!(s.exited(t0, 7), None);
        assert_eq!(s.pid(), Some(42));
    }

    #[test]
    fn stop_sends_sigterm_then_sigkill_at_the_deadline() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0);
        s.spawned(t0, 42);
        assert_eq!(s.stop(t0), [Action::Signal(42, Signal::Term)]);
        assert!(s.tick(t0 + secs(9)).is_empty());
        assert_eq!(
            s.tick(t0 + STOP_DEADLINE),
            [Action::Signal(42, Signal::Kill)]
        );
        assert!(s.tick(t0 + secs(20)).is_empty(), "SIGKILL is sent once");
        assert_eq!(
            s.exited(t0 + secs(11), 42),
            None,
            "no restart while stopping"
        );
        assert!(s.is_stopped());
        assert_eq!(s.tick(t0 + secs(60)), []);
    }

    #[test]
    fn a_requested_restart_stops_the_agent_and_starts_it_again_at_once() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0);
        s.spawned(t0, 42);
        assert_eq!(s.restart(t0), [Action::Signal(42, Signal::Term)]);
        assert_eq!(
            s.tick(t0 + STOP_DEADLINE),
            [Action::Signal(42, Signal::Kill)],
            "a restart that hangs is forced like a stop"
        );
        assert_eq!(s.exited(t0 + secs(11), 42), Some(Duration::ZERO));
        assert_eq!(s.tick(t0 + secs(11)), [Action::Spawn]);
        assert_eq!(s.restarts(), 1);
        assert!(!s.is_stopped());
    }

    #[test]
    fn a_shutdown_during_a_restart_wins() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0);
        s.spawned(t0, 42);
        s.restart(t0);
        assert!(s.stop(t0).is_empty(), "SIGTERM went already");
        assert_eq!(s.exited(t0 + secs(1), 42), None);
        assert!(s.is_stopped());
        assert!(
            s.restart(t0 + secs(2)).is_empty(),
            "no restart once stopped"
        );
    }

    #[test]
    fn stop_during_backoff_cancels_the_restart() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(t0);
        s.spawned(t0, 42);
        s.exited(t0, 42);
        assert!(s.stop(t0).is_empty());
        assert!(s.is_stopped());
        assert!(s.tick(t0 + secs(5)).is_empty());
    }
}
