//! A deterministic simulation of a Cairn Raft cluster in one thread.
//!
//! Real replicas ([`Replica`] on real sled [`LogStore`]s in temporary
//! directories) exchange messages through a simulated network driven by a
//! seeded random generator: every message gets a delay, may be dropped, and
//! is lost when a partition separates its ends or either end is down.
//! Time is simulated in milliseconds; each replica ticks every 100 ms.
//! Clients issue kv operations to random replicas and record them in a
//! [`lincheck::History`]; a fault schedule crashes and restarts replicas
//! (reopening their logs from disk), partitions them away and isolates the
//! leader. Faults, delays and client choices come from the seed; raft-rs
//! randomises election timeouts itself, so two runs of one seed are alike
//! but not identical.

#![allow(dead_code, reason = "each test uses a different subset")]
#![expect(
    clippy::unwrap_used,
    reason = "test harness: a failed unwrap is a failed test"
)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::path::PathBuf;

use cluster::raft::logger::logger;
use cluster::raft::replica::{Applied, MembershipChange, MembershipStep, Replica, ReplicaConfig};
use cluster::raft::storage::LogStore;
use cluster::store::{Command, EventKind, Expect, Key, Member, Outcome, RequestId};
use lincheck::{History, Op, OpId};
use raft::eraftpb::{Message, MessageType};

/// A small, fast, seedable generator (xorshift64*); the simulation needs
/// reproducibility, not cryptographic quality.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.below(items.len() as u64)).unwrap()]
    }
}

/// Network behaviour.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Chance, in thousandths, that a message is lost.
    pub drop_per_mille: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: 1,
            max_delay_ms: 15,
            drop_per_mille: 10,
        }
    }
}

struct Node {
    dir: PathBuf,
    replica: Option<Replica>,
    next_tick: u64,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { op: OpId, key: String, client: u64 },
    Read { op: OpId, key: Key, client: u64 },
    Membership,
}

/// The simulated cluster.
pub struct Sim {
    pub now: u64,
    pub rng: Rng,
    pub net: NetConfig,
    nodes: BTreeMap<u64, Node>,
    /// Pairs of replicas that cannot talk (both directions).
    cut: BTreeSet<(u64, u64)>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    in_flight: Vec<Option<Message>>,
    seq: u64,
    pending: HashMap<RequestId, (Pending, u64)>,
    pub history: History,
    pub config: fn(u64) -> ReplicaConfig,
    _root: tempfile::TempDir,
    /// Definite outcomes recorded so far.
    pub completed: usize,
    /// Operations that timed out.
    pub unknown: usize,
    pub memberships_applied: usize,
    /// The revision each (key, value) was written at, as applied.
    revisions: HashMap<(String, String), u64>,
    /// Clients with an operation in flight.
    busy: BTreeSet<u64>,
    /// What each client last read for each key.
    last_read: HashMap<(u64, String), Option<String>>,
    values_written: u64,
}

/// How long a client waits before giving up on an operation.
pub const CLIENT_TIMEOUT_MS: u64 = 3_000;

pub fn member(id: u64) -> Member {
    Member {
        id,
        name: format!("n{id}"),
        peer_addr: format!("10.0.0.{id}:7444").parse().unwrap(),
        api_addr: format!("10.0.0.{id}:7443").parse().unwrap(),
        domain: None,
    }
}

impl Sim {
    /// Bootstraps replica 1 and adds `voters - 1` more as voters, the way a
    /// real cluster grows: learner first, then promotion.
    pub fn new(seed: u64, voters: u64, config: fn(u64) -> ReplicaConfig) -> Self {
        let root = tempfile::tempdir().unwrap();
        let mut sim = Self {
            now: 0,
            rng: Rng::new(seed),
            net: NetConfig::default(),
            nodes: BTreeMap::new(),
            cut: BTreeSet::new(),
            queue: BinaryHeap::new(),
            in_flight: Vec::new(),
            seq: 0,
            pending: HashMap::new(),
            history: History::new(),
            config,
            completed: 0,
            unknown: 0,
            memberships_applied: 0,
            revisions: HashMap::new(),
            busy: BTreeSet::new(),
            last_read: HashMap::new(),
            values_written: 0,
            _root: root,
        };
        let dir = sim._root.path().join("n1");
        let store = LogStore::open(&dir).unwrap();
        let mut replica = Replica::bootstrap(config(1), store, member(1), &logger()).unwrap();
        replica.campaign().unwrap();
        sim.nodes.insert(
            1,
            Node {
                dir,
                replica: Some(replica),
                next_tick: 100,
            },
        );
        sim.run_until(Sim::leader, 5_000).expect("first leader");
        for id in 2..=voters {
            sim.add_node(id);
            sim.change_membership(vec![MembershipStep::AddLearner(id)], vec![member(id)]);
            sim.run_until(|s| s.caught_up(id), 20_000)
                .unwrap_or_else(|| {
                    let statuses: Vec<_> = sim
                        .ids()
                        .iter()
                        .filter_map(|i| sim.replica(*i).map(|r| r.status()))
                        .collect();
                    panic!("replica {id} did not catch up as a learner: {statuses:#?}")
                });
            sim.change_membership(vec![MembershipStep::AddVoter(id)], vec![]);
        }
        sim
    }

    /// Creates an empty replica `id` (not yet a member).
    pub fn add_node(&mut self, id: u64) {
        let dir = self._root.path().join(format!("n{id}"));
        let store = LogStore::open(&dir).unwrap();
        let replica = Replica::open((self.config)(id), store, &logger()).unwrap();
        let offset = self.rng.below(100);
        self.nodes.insert(
            id,
            Node {
                dir,
                replica: Some(replica),
                next_tick: self.now + offset + 1,
            },
        );
    }

    /// Proposes a membership change on the leader and runs until it is
    /// applied; panics with the refusals and every replica's status when
    /// 50 attempts fail.
    pub fn change_membership(&mut self, steps: Vec<MembershipStep>, upsert: Vec<Member>) {
        let before = self.memberships_applied;
        let mut refusals = Vec::new();
        for _ in 0..50 {
            let leader = self
                .run_until(|s| s.leader(), 20_000)
                .expect("a leader for the membership change");
            let id = self.next_request(leader);
            let change = MembershipChange {
                id,
                upsert: upsert.clone(),
                remove: Vec::new(),
                steps: steps.clone(),
            };
            let replica = self
                .nodes
                .get_mut(&leader)
                .unwrap()
                .replica
                .as_mut()
                .unwrap();
            match replica.propose_membership(change) {
                Ok(()) => {
                    self.pending
                        .insert(id, (Pending::Membership, self.now + 10_000));
                    if self
                        .run_until(|s| (s.memberships_applied > before).then_some(()), 10_000)
                        .is_some()
                    {
                        return;
                    }
                }
                Err(error) => {
                    refusals.push((self.now, leader, error));
                    self.run_for(200);
                }
            }
        }
        let statuses: Vec<_> = self
            .ids()
            .iter()
            .filter_map(|i| self.replica(*i).map(|r| r.status()))
            .collect();
        panic!(
            "membership change {steps:?} not applied; refusals {refusals:?}; replicas {statuses:#?}"
        );
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn up_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.replica.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn replica(&self, id: u64) -> Option<&Replica> {
        self.nodes.get(&id)?.replica.as_ref()
    }

    /// The leader that a majority-connected, running replica reports,
    /// if that replica believes it leads.
    pub fn leader(&self) -> Option<u64> {
        self.nodes.iter().find_map(|(id, node)| {
            let status = node.replica.as_ref()?.status();
            (status.role == raft::StateRole::Leader && !self.isolated(*id)).then_some(*id)
        })
    }

    fn isolated(&self, id: u64) -> bool {
        let others: Vec<_> = self.nodes.keys().filter(|o| **o != id).collect();
        !others.is_empty() && others.iter().all(|o| self.is_cut(id, **o))
    }

    fn caught_up(&self, id: u64) -> Option<()> {
        let leader = self.leader()?;
        let leader_applied = self.replica(leader)?.status().applied;
        let applied = self.replica(id)?.status().applied;
        (applied >= leader_applied && applied > 0).then_some(())
    }

    fn is_cut(&self, a: u64, b: u64) -> bool {
        self.cut.contains(&(a.min(b), a.max(b)))
    }

    pub fn cut_link(&mut self, a: u64, b: u64) {
        self.cut.insert((a.min(b), a.max(b)));
    }

    /// Cuts `id` off from every other replica.
    pub fn isolate(&mut self, id: u64) {
        for other in self.ids() {
            if other != id {
                self.cut_link(id, other);
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Stops a replica as a crash would: whatever it had not flushed is
    /// gone (the replica flushes before it acknowledges, so nothing
    /// promised is).
    pub fn crash(&mut self, id: u64) {
        if let Some(node) = self.nodes.get_mut(&id) {
            node.replica = None;
        }
    }

    /// Restarts a crashed replica from its log on disk.
    pub fn restart(&mut self, id: u64) {
        let config = (self.config)(id);
        let node = self.nodes.get_mut(&id).unwrap();
        if node.replica.is_none() {
            let store = LogStore::open(&node.dir).unwrap();
            node.replica = Some(Replica::open(config, store, &logger()).unwrap());
            node.next_tick = self.now + 1;
        }
    }

    fn next_request(&mut self, node: u64) -> RequestId {
        self.seq += 1;
        RequestId {
            node,
            seq: self.seq,
        }
    }

    /// Starts one client operation on replica `via`. Returns false when the
    /// replica refused it at once (no leader known): then nothing happened
    /// and nothing is recorded.
    pub fn submit(&mut self, client: u64, via: u64, key: &str, op: Op) -> bool {
        let id = self.next_request(via);
        let store_key = Key::new(key).unwrap();
        let expect_cas = match &op {
            Op::CompareAndSet { expected: None, .. } => Some(Expect::Absent),
            Op::CompareAndSet {
                expected: Some(expected),
                ..
            } => match self.revisions.get(&(key.to_owned(), expected.clone())) {
                Some(revision) => Some(Expect::Revision(*revision)),
                None => return false,
            },
            _ => None,
        };
        let Some(replica) = self.nodes.get_mut(&via).and_then(|n| n.replica.as_mut()) else {
            return false;
        };
        let accepted = match &op {
            Op::Get => replica.read(id).is_ok(),
            Op::Put { value } => replica
                .propose(
                    id,
                    Command::Put {
                        key: store_key.clone(),
                        value: value.clone().into_bytes(),
                        expect: Expect::Any,
                    },
                )
                .is_ok(),
            Op::Delete => replica
                .propose(
                    id,
                    Command::Delete {
                        key: store_key.clone(),
                        expect: Expect::Any,
                    },
                )
                .is_ok(),
            Op::CompareAndSet { value, .. } => replica
                .propose(
                    id,
                    Command::Put {
                        key: store_key.clone(),
                        value: value.clone().into_bytes(),
                        expect: expect_cas.unwrap_or_default(),
                    },
                )
                .is_ok(),
        };
        if !accepted {
            return false;
        }
        let is_read = matches!(op, Op::Get);
        let op_id = self.history.invoke(client, key, op);
        let pending = if is_read {
            Pending::Read {
                op: op_id,
                key: store_key,
                client,
            }
        } else {
            Pending::Write {
                op: op_id,
                key: key.to_owned(),
                client,
            }
        };
        self.busy.insert(client);
        self.pending
            .insert(id, (pending, self.now + CLIENT_TIMEOUT_MS));
        true
    }

    /// Lets every idle client among `clients` start its next operation,
    /// with `per_mille` chance each millisecond: a mix of reads, writes,
    /// deletes and compare-and-sets over `keys`, through a random running
    /// replica.
    pub fn drive_clients(&mut self, clients: u64, keys: &[&str], per_mille: u64) {
        for client in 0..clients {
            if self.busy.contains(&client) || !self.rng.chance(per_mille) {
                continue;
            }
            let up = self.up_ids();
            if up.is_empty() {
                return;
            }
            let via = self.rng.pick(&up);
            let key = self.rng.pick(keys);
            self.values_written += 1;
            let value = format!("c{client}-{}", self.values_written);
            let op = match self.rng.below(10) {
                0..=3 => Op::Get,
                4..=6 => Op::put(value),
                7 => Op::Delete,
                _ => {
                    let seen = self
                        .last_read
                        .get(&(client, key.to_owned()))
                        .cloned()
                        .flatten();
                    Op::cas(seen.as_deref(), value)
                }
            };
            self.submit(client, via, key, op);
        }
    }

    /// Operations still waiting for an answer.
    pub fn in_progress(&self) -> usize {
        self.pending.len()
    }

    /// Advances simulated time by one millisecond.
    pub fn step(&mut self) {
        self.now += 1;
        // Deliver what is due.
        while let Some(Reverse((at, _, slot))) = self.queue.peek().copied() {
            if at > self.now {
                break;
            }
            self.queue.pop();
            let Some(message) = self.in_flight[slot].take() else {
                continue;
            };
            if self.is_cut(message.from, message.to) {
                continue;
            }
            if let Some(replica) = self
                .nodes
                .get_mut(&message.to)
                .and_then(|n| n.replica.as_mut())
            {
                // Messages from replicas Raft does not know are refused;
                // that is the network's problem, not the test's.
                let _ = replica.step(message);
            }
        }
        if self.queue.is_empty() {
            self.in_flight.clear();
        }
        // Tick.
        for node in self.nodes.values_mut() {
            if let Some(replica) = node.replica.as_mut()
                && node.next_tick <= self.now
            {
                replica.tick();
                node.next_tick += 100;
            }
        }
        // Ready cycles.
        let ids = self.up_ids();
        for id in ids {
            let mut outbox = Vec::new();
            let output = {
                let replica = self.nodes.get_mut(&id).unwrap().replica.as_mut().unwrap();
                replica
                    .advance(&mut |m| outbox.push(m))
                    .unwrap_or_else(|e| panic!("replica {id} failed: {e:?}"))
            };
            for message in outbox {
                self.send(message);
            }
            for applied in output.applied {
                if let Applied::Command {
                    event: Some(event), ..
                } = &applied
                    && let EventKind::Put(record) = &event.kind
                {
                    let value = String::from_utf8(record.value.clone()).unwrap();
                    self.revisions
                        .insert((event.key.as_str().to_owned(), value), event.revision);
                }
                let Some(request) = applied.request() else {
                    continue;
                };
                if request.node != id {
                    continue;
                }
                let Some((pending, _)) = self.pending.remove(&request) else {
                    continue;
                };
                self.complete(pending, applied);
            }
            for read in output.reads {
                let Some((Pending::Read { op, key, client }, _)) = self.pending.remove(&read)
                else {
                    continue;
                };
                self.busy.remove(&client);
                let replica = self.nodes[&id].replica.as_ref().unwrap();
                let seen = replica
                    .state()
                    .get(&key)
                    .map(|record| String::from_utf8(record.value.clone()).unwrap());
                self.last_read
                    .insert((client, key.as_str().to_owned()), seen.clone());
                let outcome = match seen {
                    Some(value) => lincheck::Outcome::found(value),
                    None => lincheck::Outcome::NotFound,
                };
                self.history.complete(op, outcome);
                self.completed += 1;
            }
        }
        // Client timeouts.
        let now = self.now;
        let expired: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((pending, _)) = self.pending.remove(&id) {
                match pending {
                    Pending::Read { op, client, .. } | Pending::Write { op, client, .. } => {
                        self.busy.remove(&client);
                        self.history.complete(op, lincheck::Outcome::Unknown);
                        self.unknown += 1;
                    }
                    Pending::Membership => {}
                }
            }
        }
    }

    fn complete(&mut self, pending: Pending, applied: Applied) {
        match (pending, applied) {
            (Pending::Write { op, key, client }, Applied::Command { outcome, event, .. }) => {
                self.busy.remove(&client);
                if let Some(event) = &event {
                    assert_eq!(event.key.as_str(), key, "outcome for the wrong key");
                }
                let outcome = match outcome {
                    Outcome::Written { .. } => lincheck::Outcome::Ok,
                    Outcome::Deleted { .. } => lincheck::Outcome::Deleted,
                    Outcome::NotFound => lincheck::Outcome::NotFound,
                    Outcome::Conflict { .. } => lincheck::Outcome::Conflict,
                };
                self.history.complete(op, outcome);
                self.completed += 1;
            }
            (Pending::Membership, Applied::Membership { .. }) => {
                self.memberships_applied += 1;
            }
            (pending, applied) => panic!("request {pending:?} answered by {applied:?}"),
        }
    }

    fn send(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        let lost = self.is_cut(from, to) || self.rng.chance(self.net.drop_per_mille);
        if message.get_msg_type() == MessageType::MsgSnapshot {
            // As the real transport does: a snapshot is reported sent when
            // it leaves, failed when it cannot.
            if let Some(replica) = self.nodes.get_mut(&from).and_then(|n| n.replica.as_mut()) {
                replica.report_snapshot(to, !lost);
            }
        }
        if lost {
            return;
        }
        let delay = self.net.min_delay_ms
            + self
                .rng
                .below(self.net.max_delay_ms - self.net.min_delay_ms + 1);
        let slot = self.in_flight.len();
        self.in_flight.push(Some(message));
        self.queue
            .push(Reverse((self.now + delay, slot as u64, slot)));
    }

    pub fn run_for(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Steps until `done` gives a value or `limit_ms` pass.
    pub fn run_until<T>(
        &mut self,
        mut done: impl FnMut(&Self) -> Option<T>,
        limit_ms: u64,
    ) -> Option<T> {
        for _ in 0..limit_ms {
            if let Some(value) = done(self) {
                return Some(value);
            }
            self.step();
        }
        done(self)
    }

    /// After healing: every running replica has applied the same entries
    /// and holds the same state.
    pub fn converged(&self) -> Option<()> {
        let up: Vec<_> = self
            .nodes
            .values()
            .filter_map(|n| n.replica.as_ref())
            .collect();
        let first = up.first()?;
        let applied = first.status().applied;
        let all_same = up.iter().all(|r| {
            r.status().applied == applied
                && r.state() == first.state()
                && r.status().commit == applied
        });
        (all_same && self.leader().is_some()).then_some(())
    }
}
