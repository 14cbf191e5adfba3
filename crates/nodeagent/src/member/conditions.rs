//! The leader's judgement of its members: who it has heard from, how long
//! ago, and what that makes each one. Pure: the controller feeds it Raft
//! status snapshots and the time.
//!
//! raft-rs marks a peer `recently_active` when any message from it arrived
//! within the last election timeout (check-quorum resets the mark), so a
//! status snapshot that shows the mark means "heard within about a
//! second". [`Contact`] turns the marks into a last-heard time per member.
//! A member the leader has not heard from since it took office counts as
//! silent since then: a new leader gives everyone the benefit of the doubt
//! for one grace period, never more.
//!
//! Conditions follow from silence: ready while heard within
//! `healthy_within`, not ready after that, lost after the grace period.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use api::Timestamp;
use api::types::MemberState;
use cluster::raft::replica::ReplicaStatus;
use serde::{Deserialize, Serialize};

/// When silence changes a member's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Silence up to this is ready.
    pub healthy_within: Duration,
    /// Silence beyond this is lost.
    pub grace: Duration,
}

/// The condition that `silent_for` of silence earns.
pub fn condition(silent_for: Duration, thresholds: &Thresholds) -> MemberState {
    if silent_for <= thresholds.healthy_within {
        MemberState::Ready
    } else if silent_for <= thresholds.grace {
        MemberState::NotReady
    } else {
        MemberState::Lost
    }
}

/// Last-heard times, kept by a leader for its term in office.
#[derive(Clone, Debug)]
pub struct Contact {
    own_id: u64,
    in_office_since: Instant,
    heard: HashMap<u64, Instant>,
}

impl Contact {
    /// A leader that took office at `now`.
    pub fn new(own_id: u64, now: Instant) -> Self {
        Self {
            own_id,
            in_office_since: now,
            heard: HashMap::new(),
        }
    }

    /// Takes in a status snapshot taken at `now`.
    pub fn observe(&mut self, now: Instant, status: &ReplicaStatus) {
        for (id, progress) in &status.progress {
            if progress.recently_active {
                self.heard.insert(*id, now);
            }
        }
    }

    /// How long `id` has been silent at `now` (zero for the leader).
    pub fn silent_for(&self, id: u64, now: Instant) -> Duration {
        if id == self.own_id {
            return Duration::ZERO;
        }
        let since = self.heard.get(&id).copied().unwrap_or(self.in_office_since);
        now.saturating_duration_since(since)
    }

    /// How long since the leader last heard from `id`, if it ever did in
    /// this term.
    pub fn last_contact(&self, id: u64, now: Instant) -> Option<Duration> {
        if id == self.own_id {
            return Some(Duration::ZERO);
        }
        self.heard
            .get(&id)
            .map(|at| now.saturating_duration_since(*at))
    }
}

/// What the store keeps under `nodes/<id>`: a member's condition and when
/// it last changed, so that every member can report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionRecord {
    /// The condition.
    pub state: MemberState,
    /// When it took this value.
    pub since: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::raft::replica::{PeerProgress, StateRole};
    use std::collections::BTreeMap;

    const T: Thresholds = Thresholds {
        healthy_within: Duration::from_secs(3),
        grace: Duration::from_secs(30),
    };

    fn status(active: &[(u64, bool)]) -> ReplicaStatus {
        ReplicaStatus {
            id: 1,
            leader: 1,
            term: 2,
            role: StateRole::Leader,
            commit: 10,
            applied: 10,
            voters: vec![1, 2, 3],
            learners: vec![],
            progress: active
                .iter()
                .map(|(id, recently_active)| {
                    (
                        *id,
                        PeerProgress {
                            matched: 10,
                            recently_active: *recently_active,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn silence_makes_a_member_not_ready_then_lost() {
        assert_eq!(condition(Duration::ZERO, &T), MemberState::Ready);
        assert_eq!(condition(Duration::from_secs(3), &T), MemberState::Ready);
        assert_eq!(condition(Duration::from_secs(4), &T), MemberState::NotReady);
        assert_eq!(
            condition(Duration::from_secs(30), &T),
            MemberState::NotReady
        );
        assert_eq!(condition(Duration::from_secs(31), &T), MemberState::Lost);
    }

    #[test]
    fn a_member_is_silent_since_it_was_last_marked_active() {
        let start = Instant::now();
        let mut contact = Contact::new(1, start);
        contact.observe(start, &status(&[(1, true), (2, true), (3, true)]));
        let later = start + Duration::from_secs(10);
        contact.observe(later, &status(&[(1, true), (2, true), (3, false)]));
        assert_eq!(contact.silent_for(2, later), Duration::ZERO);
        assert_eq!(contact.silent_for(3, later), Duration::from_secs(10));
        assert_eq!(
            contact.last_contact(3, later),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn a_new_leader_counts_silence_from_when_it_took_office() {
        let start = Instant::now();
        let contact = Contact::new(1, start);
        let later = start + Duration::from_secs(7);
        assert_eq!(contact.silent_for(4, later), Duration::from_secs(7));
        assert_eq!(contact.last_contact(4, later), None);
        assert_eq!(contact.silent_for(1, later), Duration::ZERO, "itself");
    }

    #[test]
    fn condition_records_round_trip_and_refuse_unknown_fields() {
        let record = ConditionRecord {
            state: MemberState::NotReady,
            since: Timestamp::from_unix(1_700_000_000).unwrap(),
        };
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(
            serde_json::from_slice::<ConditionRecord>(&json).unwrap(),
            record
        );
        assert!(
            serde_json::from_str::<ConditionRecord>(
                r#"{"state":"ready","since":"2024-01-01T00:00:00Z","x":1}"#
            )
            .is_err()
        );
    }
}
