//! The membership controller: a loop on every member that acts only while
//! its member leads.
//!
//! Once a second the leader takes its Raft status, updates its
//! [`Contact`] book, and then
//! 1. records each member's condition (ready, not ready, lost) under
//!    `nodes/<id>` when it changed, so any member can report it with a
//!    timestamp; and
//! 2. asks [`cluster::membership::decide`] whether voters should change:
//!    promote caught-up stand-bys while there are fewer voters than wanted,
//!    and replace a voter silent past the grace period with a stand-by in
//!    one joint-consensus change. Raft takes one change at a time; a change
//!    refused because another is in progress is simply tried again on a
//!    later turn.
//!
//! A member that loses leadership drops its book; the next leader starts
//! its own, so silence is never judged by two leaders at once.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use api::Timestamp;
use api::types::MemberState;
use cluster::membership::{self, MemberView, Policy, Role};
use cluster::node::{NodeHandle, Query, StoreError};
use cluster::raft::replica::{MembershipStep, ReplicaStatus, StateRole};
use cluster::store::{Command, Expect, Member, Namespace};

use super::conditions::{ConditionRecord, Contact, Thresholds, condition};
use crate::error_chain;

/// How often the leader looks.
const PERIOD: Duration = Duration::from_secs(1);
/// A learner this close to the leader's commit index may vote at once.
pub const CATCH_UP_LAG: u64 = 100;

/// The leader's contact book as of its last turn, for status output;
/// `None` while this member does not lead.
pub type SharedContact = std::sync::Arc<std::sync::Mutex<Option<Contact>>>;

fn publish(shared: &SharedContact, contact: Option<&Contact>) {
    *shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = contact.cloned();
}

/// Runs until the member stops.
pub async fn run(handle: NodeHandle, policy: super::PolicySource, shared: SharedContact) {
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut office: Option<Office> = None;
    loop {
        ticker.tick().await;
        let Some(status) = handle.status() else {
            return;
        };
        if status.role != StateRole::Leader {
            if office.take().is_some() {
                publish(&shared, None);
            }
            continue;
        }
        let now = Instant::now();
        let office = match &mut office {
            Some(office) => office,
            None => office.insert(Office::take(&handle, status.id, now).await),
        };
        let policy = policy();
        office.contact.observe(now, &status);
        publish(&shared, Some(&office.contact));
        let members = match handle.members().await {
            Ok(members) => members,
            Err(StoreError::Stopped) => return,
            Err(e) => {
                tracing::warn!("membership controller: {}", error_chain(&e));
                continue;
            }
        };
        office
            .record_conditions(&handle, &members, now, &policy)
            .await;
        office
            .adjust_voters(&handle, &status, &members, now, &policy)
            .await;
    }
}

/// The thresholds conditions are judged by under `policy`.
pub fn thresholds(policy: &Policy) -> Thresholds {
    Thresholds {
        healthy_within: policy.healthy_within,
        grace: policy.grace,
    }
}

/// A leader's term in office.
struct Office {
    contact: Contact,
    /// The condition last recorded in the store per member.
    recorded: HashMap<u64, MemberState>,
}

impl Office {
    async fn take(handle: &NodeHandle, own_id: u64, now: Instant) -> Self {
        let mut recorded = HashMap::new();
        let query = Query::List {
            prefix: Namespace::Nodes.prefix().to_owned(),
            limit: usize::MAX,
        };
        match handle.read(query).await {
            Ok(read) => {
                for (key, record) in read.records {
                    let id = Namespace::Nodes
                        .strip(&key)
                        .and_then(|id| id.parse::<u64>().ok());
                    let parsed = serde_json::from_slice::<ConditionRecord>(&record.value).ok();
                    if let (Some(id), Some(parsed)) = (id, parsed) {
                        recorded.insert(id, parsed.state);
                    }
                }
            }
            Err(e) => tracing::debug!(
                "new leader could not read recorded conditions: {}",
                error_chain(&e)
            ),
        }
        tracing::info!("this member leads; watching the members' conditions");
        Self {
            contact: Contact::new(own_id, now),
            recorded,
        }
    }

    async fn record_conditions(
        &mut self,
        handle: &NodeHandle,
        members: &[Member],
        now: Instant,
        policy: &Policy,
    ) {
        let thresholds = thresholds(policy);
        for member in members {
            let state = condition(self.contact.silent_for(member.id, now), &thresholds);
            if self.recorded.get(&member.id) == Some(&state) {
                continue;
            }
            let record = ConditionRecord {
                state,
                since: Timestamp::from_system(SystemTime::now()),
            };
            let Ok(key) = Namespace::Nodes.key(&member.id.to_string()) else {
                continue;
            };
            let command = Command::Put {
                key,
                value: serde_json::to_vec(&record).unwrap_or_default(),
                expect: Expect::Any,
            };
            match handle.propose(command).await {
                Ok(_) => {
                    let level_warn = state != MemberState::Ready;
                    if level_warn {
                        tracing::warn!(member = %member.name, ?state, "member condition changed");
                    } else {
                        tracing::info!(member = %member.name, ?state, "member condition changed");
                    }
                    self.recorded.insert(member.id, state);
                }
                Err(e) => tracing::warn!(
                    member = %member.name,
                    "cannot record the member's condition: {}",
                    error_chain(&e)
                ),
            }
        }
        let gone: Vec<u64> = self
            .recorded
            .keys()
            .copied()
            .filter(|id| !members.iter().any(|m| m.id == *id))
            .collect();
        for id in gone {
            let Ok(key) = Namespace::Nodes.key(&id.to_string()) else {
                continue;
            };
            let command = Command::Delete {
                key,
                expect: Expect::Any,
            };
            if handle.propose(command).await.is_ok() {
                self.recorded.remove(&id);
            }
        }
    }

    async fn adjust_voters(
        &self,
        handle: &NodeHandle,
        status: &ReplicaStatus,
        members: &[Member],
        now: Instant,
        policy: &Policy,
    ) {
        let views = views(status, members, |id| self.contact.silent_for(id, now));
        let decision = membership::decide(&views, status.id, policy);
        if decision.is_empty() {
            return;
        }
        let name = |id: u64| {
            members
                .iter()
                .find(|m| m.id == id)
                .map_or_else(|| id.to_string(), |m| m.name.clone())
        };
        let promote: Vec<String> = decision.promote.iter().map(|id| name(*id)).collect();
        let demote: Vec<String> = decision.demote.iter().map(|id| name(*id)).collect();
        let steps = decision
            .promote
            .iter()
            .map(|id| MembershipStep::AddVoter(*id))
            .chain(
                decision
                    .demote
                    .iter()
                    .map(|id| MembershipStep::AddLearner(*id)),
            )
            .collect();
        match handle
            .change_membership(steps, Vec::new(), Vec::new())
            .await
        {
            Ok(()) => tracing::info!(?promote, ?demote, "voters changed"),
            Err(e) => tracing::info!(
                ?promote,
                ?demote,
                "voter change not made this turn: {}",
                error_chain(&e)
            ),
        }
    }
}

/// The leader's view of every member in Raft's configuration, for
/// [`membership::decide`].
pub fn views(
    status: &ReplicaStatus,
    members: &[Member],
    silent_for: impl Fn(u64) -> Duration,
) -> Vec<MemberView> {
    members
        .iter()
        .filter_map(|m| {
            let role = if status.voters.contains(&m.id) {
                Role::Voter
            } else if status.learners.contains(&m.id) {
                Role::Learner
            } else {
                return None;
            };
            let caught_up = m.id == status.id
                || status
                    .progress
                    .get(&m.id)
                    .is_some_and(|p| p.matched + CATCH_UP_LAG >= status.commit);
            Some(MemberView {
                id: m.id,
                role,
                domain: m.domain.clone(),
                silent_for: silent_for(m.id),
                caught_up,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::raft::replica::PeerProgress;

    fn member(id: u64) -> Member {
        Member {
            id,
            name: format!("n{id}"),
            peer_addr: format!("10.0.0.{id}:7444").parse().unwrap(),
            api_addr: format!("10.0.0.{id}:7443").parse().unwrap(),
            domain: None,
        }
    }

    #[test]
    fn views_cover_configured_members_and_judge_catching_up_by_the_commit_index() {
        let status = ReplicaStatus {
            id: 1,
            leader: 1,
            term: 3,
            role: StateRole::Leader,
            commit: 1000,
            applied: 1000,
            voters: vec![1],
            learners: vec![2, 3],
            progress: [(2, 950), (3, 10)]
                .into_iter()
                .map(|(id, matched)| {
                    (
                        id,
                        PeerProgress {
                            matched,
                            recently_active: true,
                        },
                    )
                })
                .collect(),
        };
        let members = [member(1), member(2), member(3), member(4)];
        let views = views(&status, &members, |_| Duration::ZERO);
        let summary: Vec<_> = views.iter().map(|v| (v.id, v.role, v.caught_up)).collect();
        assert_eq!(
            summary,
            [
                (1, Role::Voter, true),
                (2, Role::Learner, true),
                (3, Role::Learner, false)
            ],
            "member 4 is in the directory but not in Raft's configuration"
        );
    }
}
