//! Who votes: the leader's decision which members are Raft voters.
//!
//! Pure: it takes the leader's view of the members and the time, and says
//! which configuration change (if any) to propose next. The leader runs it
//! periodically and proposes the answer as one Raft configuration change,
//! so a replacement (promote a stand-by, demote a lost voter) is a single
//! joint-consensus step that never leaves the cluster with fewer voters.
//!
//! The rules, in order (after dqlite's role management):
//! 1. **Replace lost voters.** A voter the leader has not heard from for
//!    longer than the grace period is swapped for a healthy, caught-up
//!    learner, preferring one whose failure domain no remaining voter
//!    shares.
//! 2. **Grow to the target.** With fewer voters than wanted, healthy,
//!    caught-up learners are promoted, again preferring new failure
//!    domains. The voter count stays odd: two voters tolerate no more
//!    failures than one and need both to be up, so the cluster goes from
//!    one voter straight to three, or stays at one.
//! 3. **Shrink to the target.** With more voters than wanted (the target was
//!    lowered), the least useful voters are demoted: lost ones first, then
//!    ones sharing a failure domain, never the leader.
//!
//! A change is proposed only if healthy voters form a majority of both the
//! current and the new configuration: a joint change needs both to commit,
//! and the decision itself must never cost quorum.

use std::collections::BTreeSet;
use std::time::Duration;

/// A member's Raft role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Votes and counts towards quorum.
    Voter,
    /// Receives the log, does not vote (a stand-by).
    Learner,
}

/// The leader's view of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Raft id.
    pub id: u64,
    /// Current role.
    pub role: Role,
    /// Failure domain label (rack, host, site); `None` counts as its own
    /// domain shared with no one.
    pub domain: Option<String>,
    /// How long since the leader last heard from it (`Duration::ZERO` for
    /// the leader itself).
    pub silent_for: Duration,
    /// Whether its log is close enough to the leader's to vote at once.
    pub caught_up: bool,
}

/// The operator's wishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Voters wanted: 3 or 5 (1 for a one-node cluster is implied).
    pub voters: usize,
    /// Silence after which a voter counts as lost and is replaced.
    pub grace: Duration,
    /// Silence after which a member no longer counts as healthy (a learner
    /// is not promoted, a voter does not count towards the quorum check).
    pub healthy_within: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            voters: 3,
            grace: Duration::from_secs(300),
            healthy_within: Duration::from_secs(5),
        }
    }
}

/// The configuration change to propose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Learners to make voters.
    pub promote: Vec<u64>,
    /// Voters to make learners.
    pub demote: Vec<u64>,
}

impl Decision {
    /// True when nothing should change.
    pub fn is_empty(&self) -> bool {
        self.promote.is_empty() && self.demote.is_empty()
    }
}

fn largest_odd_at_most(n: usize) -> usize {
    if n == 0 {
        0
    } else if n % 2 == 1 {
        n
    } else {
        n - 1
    }
}

/// Decides the next change. `leader` is the deciding member's id.
pub fn decide(members: &[MemberView], leader: u64, policy: &Policy) -> Decision {
    let healthy = |m: &MemberView| m.id == leader || m.silent_for <= policy.healthy_within;
    let lost = |m: &MemberView| m.id != leader && m.silent_for > policy.grace;
    let voters: Vec<&MemberView> = members.iter().filter(|m| m.role == Role::Voter).collect();
    let mut candidates: Vec<&MemberView> = members
        .iter()
        .filter(|m| m.role == Role::Learner && m.caught_up && healthy(m))
        .collect();
    candidates.sort_by_key(|m| m.id);
    let target = largest_odd_at_most(policy.voters.max(1));

    let mut decision = Decision::default();
    let mut remaining: Vec<&MemberView> = voters.clone();

    // 1. Replace lost voters, one for one.
    let mut lost_voters: Vec<&MemberView> = voters.iter().copied().filter(|m| lost(m)).collect();
    lost_voters.sort_by_key(|m| m.id);
    for voter in lost_voters {
        let Some(pick) = pick_by_domain(&mut candidates, &remaining, Some(voter.id)) else {
            break;
        };
        decision.promote.push(pick.id);
        decision.demote.push(voter.id);
        remaining.retain(|m| m.id != voter.id);
        remaining.push(pick);
    }

    // 2. Grow towards the target, keeping the count odd.
    let reachable = remaining.len() + candidates.len();
    let goal = largest_odd_at_most(target.min(reachable));
    while remaining.len() < goal {
        let Some(pick) = pick_by_domain(&mut candidates, &remaining, None) else {
            break;
        };
        decision.promote.push(pick.id);
        remaining.push(pick);
    }

    // 3. Shrink towards the target.
    while remaining.len() > target {
        let Some(victim) = least_useful(&remaining, leader, &lost) else {
            break;
        };
        decision.demote.push(victim);
        remaining.retain(|m| m.id != victim);
    }

    // A joint change commits only with a majority of both the old and the
    // new voters; never propose one whose healthy voters are not.
    let majority = |set: &[&MemberView]| set.iter().filter(|m| healthy(m)).count() * 2 > set.len();
    if !majority(&voters) || !majority(&remaining) {
        return Decision::default();
    }
    decision
}

/// Takes the candidate that adds a failure domain the voters (other than
/// `leaving`) do not have yet; otherwise the lowest id.
fn pick_by_domain<'a>(
    candidates: &mut Vec<&'a MemberView>,
    voters: &[&MemberView],
    leaving: Option<u64>,
) -> Option<&'a MemberView> {
    let domains: BTreeSet<&str> = voters
        .iter()
        .filter(|m| Some(m.id) != leaving)
        .filter_map(|m| m.domain.as_deref())
        .collect();
    let index = candidates
        .iter()
        .position(|c| c.domain.as_deref().is_none_or(|d| !domains.contains(d)))
        .or(if candidates.is_empty() { None } else { Some(0) })?;
    Some(candidates.remove(index))
}

/// The voter whose demotion costs least: a lost one, else one sharing its
/// failure domain with another voter, else the highest id; never the
/// leader.
fn least_useful(
    voters: &[&MemberView],
    leader: u64,
    lost: &dyn Fn(&MemberView) -> bool,
) -> Option<u64> {
    let others: Vec<&&MemberView> = voters.iter().filter(|m| m.id != leader).collect();
    if let Some(m) = others.iter().filter(|m| lost(m)).max_by_key(|m| m.id) {
        return Some(m.id);
    }
    let shares = |m: &MemberView| {
        m.domain.is_some() && voters.iter().any(|o| o.id != m.id && o.domain == m.domain)
    };
    if let Some(m) = others.iter().filter(|m| shares(m)).max_by_key(|m| m.id) {
        return Some(m.id);
    }
    others.iter().map(|m| m.id).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn voter(id: u64, domain: &str) -> MemberView {
        MemberView {
            id,
            role: Role::Voter,
            domain: Some(domain.into()),
            silent_for: Duration::ZERO,
            caught_up: true,
        }
    }

    fn learner(id: u64, domain: &str) -> MemberView {
        MemberView {
            role: Role::Learner,
            ..voter(id, domain)
        }
    }

    fn silent(mut m: MemberView, secs: u64) -> MemberView {
        m.silent_for = Duration::from_secs(secs);
        m
    }

    fn policy() -> Policy {
        Policy {
            voters: 3,
            grace: 60 * SEC,
            healthy_within: 5 * SEC,
        }
    }

    fn decide1(members: &[MemberView]) -> Decision {
        decide(members, 1, &policy())
    }

    #[test]
    fn a_lone_voter_stays_alone_with_one_stand_by_because_two_voters_are_worse() {
        assert!(decide1(&[voter(1, "a"), learner(2, "b")]).is_empty());
    }

    #[test]
    fn one_voter_and_two_caught_up_learners_become_three_voters_in_one_change() {
        let d = decide1(&[voter(1, "a"), learner(2, "b"), learner(3, "c")]);
        assert_eq!(d.promote, [2, 3]);
        assert!(d.demote.is_empty());
    }

    #[test]
    fn a_learner_still_catching_up_is_not_promoted() {
        let mut lagging = learner(3, "c");
        lagging.caught_up = false;
        assert!(decide1(&[voter(1, "a"), learner(2, "b"), lagging]).is_empty());
    }

    #[test]
    fn promotion_prefers_a_failure_domain_the_voters_lack() {
        let d = decide1(&[
            voter(1, "a"),
            learner(2, "a"),
            learner(3, "b"),
            learner(4, "c"),
        ]);
        assert_eq!(d.promote, [3, 4]);
    }

    #[test]
    fn further_nodes_stay_stand_by_learners_once_the_target_is_reached() {
        let d = decide1(&[
            voter(1, "a"),
            voter(2, "b"),
            voter(3, "c"),
            learner(4, "d"),
            learner(5, "e"),
        ]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_voter_silent_past_the_grace_period_is_replaced_in_one_change() {
        let d = decide1(&[
            voter(1, "a"),
            voter(2, "b"),
            silent(voter(3, "c"), 61),
            learner(4, "a"),
            learner(5, "c"),
        ]);
        assert_eq!(d.promote, [5], "the stand-by in the lost voter's domain");
        assert_eq!(d.demote, [3]);
    }

    #[test]
    fn a_voter_silent_within_the_grace_period_is_left_alone() {
        let d = decide1(&[
            voter(1, "a"),
            voter(2, "b"),
            silent(voter(3, "c"), 59),
            learner(4, "d"),
        ]);
        assert!(d.is_empty());
    }

    #[test]
    fn a_lost_voter_with_no_healthy_stand_by_is_kept() {
        let d = decide1(&[
            voter(1, "a"),
            voter(2, "b"),
            silent(voter(3, "c"), 600),
            silent(learner(4, "d"), 600),
        ]);
        assert!(d.is_empty());
    }

    #[test]
    fn the_leader_is_never_demoted_or_counted_lost() {
        let mut members = vec![
            voter(1, "a"),
            voter(2, "b"),
            voter(3, "c"),
            voter(4, "d"),
            voter(5, "e"),
        ];
        members[0].silent_for = Duration::from_secs(1000);
        let d = decide1(&members);
        assert_eq!(d.demote.len(), 2, "five voters shrink to three");
        assert!(!d.demote.contains(&1));
    }

    #[test]
    fn lowering_the_target_demotes_voters_that_share_a_domain_first() {
        let members = [
            voter(1, "a"),
            voter(2, "b"),
            voter(3, "b"),
            voter(4, "c"),
            voter(5, "d"),
        ];
        let d = decide1(&members);
        assert!(d.demote.contains(&3) || d.demote.contains(&2), "{d:?}");
        assert_eq!(d.demote.len(), 2);
    }

    #[test]
    fn with_five_wanted_two_stand_bys_join_three_voters() {
        let p = Policy {
            voters: 5,
            ..policy()
        };
        let members = [
            voter(1, "a"),
            voter(2, "b"),
            voter(3, "c"),
            learner(4, "d"),
            learner(5, "e"),
        ];
        assert_eq!(decide(&members, 1, &p).promote, [4, 5]);
    }

    #[test]
    fn no_change_is_proposed_that_leaves_healthy_voters_without_a_majority() {
        // Two of three voters lost: the current configuration has no
        // healthy majority, so no change could commit (that needs the
        // documented snapshot restore).
        let d = decide1(&[
            voter(1, "a"),
            silent(voter(2, "b"), 600),
            silent(voter(3, "c"), 600),
            learner(4, "d"),
        ]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn the_decision_never_makes_an_even_number_of_voters_by_promotion() {
        for learners in 0..6u64 {
            let mut members = vec![voter(1, "a")];
            for i in 0..learners {
                members.push(learner(2 + i, &format!("d{i}")));
            }
            for target in [1, 3, 5] {
                let p = Policy {
                    voters: target,
                    ..policy()
                };
                let d = decide(&members, 1, &p);
                let voters = 1 + d.promote.len() - d.demote.len();
                assert_eq!(voters % 2, 1, "{learners} learners, target {target}: {d:?}");
                assert!(voters <= target.max(1));
            }
        }
    }

    fn view() -> impl proptest::strategy::Strategy<Value = Vec<MemberView>> {
        use proptest::prelude::*;
        proptest::collection::vec((any::<bool>(), 0..4u8, 0..700u64, any::<bool>()), 1..9).prop_map(
            |specs| {
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (is_voter, domain, silent, caught_up))| MemberView {
                        id: i as u64 + 1,
                        role: if is_voter || i == 0 {
                            Role::Voter
                        } else {
                            Role::Learner
                        },
                        domain: Some(format!("d{domain}")),
                        silent_for: if i == 0 {
                            Duration::ZERO
                        } else {
                            Duration::from_secs(silent)
                        },
                        caught_up,
                    })
                    .collect()
            },
        )
    }

    proptest::proptest! {
        #[test]
        fn decisions_only_promote_ready_learners_only_demote_voters_and_never_the_leader(
            members in view(),
            target in proptest::sample::select(vec![1usize, 3, 5]),
        ) {
            let p = Policy { voters: target, ..policy() };
            let d = decide(&members, 1, &p);
            for id in &d.promote {
                let m = members.iter().find(|m| m.id == *id).unwrap();
                proptest::prop_assert_eq!(m.role, Role::Learner);
                proptest::prop_assert!(m.caught_up && m.silent_for <= p.healthy_within);
            }
            for id in &d.demote {
                let m = members.iter().find(|m| m.id == *id).unwrap();
                proptest::prop_assert_eq!(m.role, Role::Voter);
                proptest::prop_assert_ne!(*id, 1);
            }
            let before = members.iter().filter(|m| m.role == Role::Voter).count();
            let after = before + d.promote.len() - d.demote.len();
            if !d.is_empty() {
                proptest::prop_assert!(after >= 1);
                proptest::prop_assert!(after <= before.max(target), "{} -> {}", before, after);
            }
        }
    }
}
