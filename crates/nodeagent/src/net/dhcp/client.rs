//! The DHCPv4 client state machine (RFC 2131 section 4.4), without I/O.
//!
//! [`DhcpClient`] takes what happened (a packet arrived, time passed, the
//! carrier changed, the agent is stopping) with the current time and
//! returns [`DhcpAction`]s for the shell: send these bytes, apply this
//! lease, withdraw it. [`DhcpClient::deadline`] says when it next wants a
//! [`DhcpClient::tick`]. It never reads a clock, so tests drive it through
//! hours of lease time in microseconds.
//!
//! ```text
//! INIT       --(send DISCOVER)--> SELECTING
//! SELECTING  --OFFER (send REQUEST)--> REQUESTING
//! REQUESTING --ACK--> BOUND;  --NAK--> INIT;  --4 REQUESTs unanswered--> SELECTING
//! BOUND      --T1 (send REQUEST by unicast to the server)--> RENEWING
//! RENEWING   --ACK--> BOUND;  --T2 (send REQUEST by broadcast)--> REBINDING
//! REBINDING  --ACK--> BOUND;  --lease expired--> INIT (and DISCOVER at once)
//! RENEWING, REBINDING --NAK--> INIT
//! ```
//!
//! Transaction IDs and retransmission jitter come from [`SplitMix64`], a
//! small PRNG seeded once by the shell. An xid only has to differ from
//! other clients' on the same link and from our previous ones, so that
//! stale or foreign replies are not taken for ours; nobody gains from
//! guessing it (a host on the link can spoof any reply anyway). That is
//! why the client never waits for the kernel's CRNG, which on a VM without
//! a hardware RNG can take minutes to initialise.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::packet::{DhcpMessage, DhcpOptions, MessageType, Op, REQUESTED_OPTIONS};

/// First retransmission delay; it doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_secs(4);
/// Longest retransmission delay (RFC 2131 4.1).
const MAX_BACKOFF: Duration = Duration::from_secs(64);
/// Retransmissions are moved by up to this much either way (RFC 2131 4.1).
const JITTER_MS: u64 = 1000;
/// REQUESTs sent in REQUESTING before discovery starts over.
const REQUEST_ATTEMPTS: u32 = 4;
/// While renewing or rebinding, wait half the time left, but at least this
/// (RFC 2131 4.4.5).
const MIN_RENEW_INTERVAL: Duration = Duration::from_secs(60);
/// Pause after a NAK before discovering again, so a server that NAKs
/// everything does not get a packet storm.
const NAK_PAUSE: Duration = Duration::from_secs(1);
/// What we tell servers we can receive (option 57).
pub const MAX_MESSAGE_SIZE: u16 = 1500;

/// A small, fast PRNG (SplitMix64, Steele et al., 2014). Not for secrets:
/// see the module docs.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_u32(&mut self) -> u32 {
        u32::try_from(self.next_u64() >> 32).unwrap_or(0)
    }
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:67 on the link.
    Broadcast,
    /// The server that granted the lease, port 67.
    Server(Ipv4Addr),
}

/// Why a lease stopped being ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReason {
    /// It ran out without being renewed.
    Expired,
    /// The server refused to extend it.
    Nak,
    /// We gave it back (shutdown).
    Released,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpAction {
    /// Send a packet.
    Send {
        /// Where to.
        to: Destination,
        /// The encoded message.
        packet: Vec<u8>,
        /// Its type, for logs.
        kind: MessageType,
    },
    /// A lease was granted or extended: apply it. The ACK carries the
    /// address (`yiaddr`) and all options.
    Apply(Box<DhcpMessage>),
    /// The lease is gone: remove its address and routes.
    Withdraw(LossReason),
}

/// What identifies this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The link's MAC.
    pub mac: [u8; 6],
    /// Host name to send (option 12).
    pub hostname: Option<String>,
}

/// A lease we hold, with its timers as instants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    address: Ipv4Addr,
    server: Ipv4Addr,
    renew_at: Option<Instant>,
    rebind_at: Option<Instant>,
    expires_at: Option<Instant>,
}

/// One exchange in flight: its xid, when it began, when to send again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Exchange {
    xid: u32,
    started: Instant,
    attempts: u32,
    retransmit_at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not discovering: waiting for the carrier, or until `restart_at`.
    Init {
        restart_at: Option<Instant>,
    },
    Selecting(Exchange),
    Requesting {
        exchange: Exchange,
        server: Ipv4Addr,
        address: Ipv4Addr,
    },
    Bound(Held),
    Renewing(Held, Exchange),
    Rebinding(Held, Exchange),
    Stopped,
}

/// The public name of the state, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Idle, no lease.
    Init,
    /// Sent DISCOVER.
    Selecting,
    /// Sent REQUEST for an offer.
    Requesting,
    /// Holding a lease.
    Bound,
    /// Extending with the granting server.
    Renewing,
    /// Extending with any server.
    Rebinding,
    /// Shut down.
    Stopped,
}

/// The client. See the module docs.
#[derive(Debug)]
pub struct DhcpClient {
    config: ClientConfig,
    rng: SplitMix64,
    state: State,
}

impl DhcpClient {
    /// A client in INIT; [`DhcpClient::link_up`] starts it.
    pub fn new(config: ClientConfig, seed: u64) -> Self {
        Self {
            config,
            rng: SplitMix64::new(seed),
            state: State::Init { restart_at: None },
        }
    }

    /// Where the protocol stands.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Init { .. } => Phase::Init,
            State::Selecting(_) => Phase::Selecting,
            State::Requesting { .. } => Phase::Requesting,
            State::Bound(_) => Phase::Bound,
            State::Renewing(..) => Phase::Renewing,
            State::Rebinding(..) => Phase::Rebinding,
            State::Stopped => Phase::Stopped,
        }
    }

    /// When [`DhcpClient::tick`] has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Init { restart_at } => *restart_at,
            State::Selecting(x) | State::Requesting { exchange: x, .. } => Some(x.retransmit_at),
            State::Bound(held) => earliest(held.renew_at, held.expires_at),
            State::Renewing(held, x) => earliest(
                Some(x.retransmit_at),
                earliest(held.rebind_at, held.expires_at),
            ),
            State::Rebinding(held, x) => earliest(Some(x.retransmit_at), held.expires_at),
            State::Stopped => None,
        }
    }

    /// The link is usable: at start-up, or its carrier came back. Without
    /// a lease, discovery starts over at once rather than waiting out the
    /// backoff; a lease is kept (RFC 2131 4.4.5 leaves checking it to
    /// renewal).
    pub fn link_up(&mut self, now: Instant) -> Vec<DhcpAction> {
        match self.state {
            State::Init { .. } | State::Selecting(_) | State::Requesting { .. } => {
                self.discover(now)
            }
            State::Bound(_) | State::Renewing(..) | State::Rebinding(..) | State::Stopped => {
                Vec::new()
            }
        }
    }

    /// The carrier is gone: stop shouting into the void until it returns.
    /// A lease is kept.
    pub fn link_down(&mut self) {
        match self.state {
            State::Selecting(_) | State::Requesting { .. } => {
                self.state = State::Init { restart_at: None };
            }
            State::Init { .. }
            | State::Bound(_)
            | State::Renewing(..)
            | State::Rebinding(..)
            | State::Stopped => {}
        }
    }

    /// The agent is stopping: release a lease if we hold one.
    pub fn shutdown(&mut self) -> Vec<DhcpAction> {
        let state = std::mem::replace(&mut self.state, State::Stopped);
        let held = match state {
            State::Bound(held) | State::Renewing(held, _) | State::Rebinding(held, _) => held,
            State::Init { .. }
            | State::Selecting(_)
            | State::Requesting { .. }
            | State::Stopped => {
                return Vec::new();
            }
        };
        let xid = self.rng.next_u32();
        let mut release = self.message(xid, 0, MessageType::Release);
        release.ciaddr = held.address;
        release.options.server_id = Some(held.server);
        // A release carries neither a request list nor a host name.
        release.options.parameter_request.clear();
        release.options.hostname = None;
        release.options.max_message_size = None;
        vec![
            DhcpAction::Send {
                to: Destination::Server(held.server),
                packet: release.encode(),
                kind: MessageType::Release,
            },
            DhcpAction::Withdraw(LossReason::Released),
        ]
    }

    /// Time passed: retransmit, move to RENEWING/REBINDING, or expire.
    pub fn tick(&mut self, now: Instant) -> Vec<DhcpAction> {
        match self.deadline() {
            Some(at) if now >= at => {}
            Some(_) | None => return Vec::new(),
        }
        match self.state.clone() {
            State::Init { .. } => self.discover(now),
            State::Selecting(mut x) => {
                x.attempts += 1;
                x.retransmit_at = now + self.backoff(x.attempts);
                let packet = self.discover_packet(&x, now);
                self.state = State::Selecting(x);
                vec![packet]
            }
            State::Requesting {
                mut exchange,
                server,
                address,
            } => {
                if exchange.attempts + 1 >= REQUEST_ATTEMPTS {
                    return self.discover(now);
                }
                exchange.attempts += 1;
                exchange.retransmit_at = now + self.backoff(exchange.attempts);
                let packet = self.select_packet(&exchange, now, server, address);
                self.state = State::Requesting {
                    exchange,
                    server,
                    address,
                };
                vec![packet]
            }
            State::Bound(held) | State::Renewing(held, _) | State::Rebinding(held, _)
                if reached(held.expires_at, now) =>
            {
                let mut actions = vec![DhcpAction::Withdraw(LossReason::Expired)];
                actions.extend(self.discover(now));
                actions
            }
            State::Bound(held) | State::Renewing(held, _) if reached(held.rebind_at, now) => {
                self.extend(now, held, true, None)
            }
            State::Bound(held) => self.extend(now, held, false, None),
            State::Renewing(held, x) => self.extend(now, held, false, Some(x)),
            State::Rebinding(held, x) => self.extend(now, held, true, Some(x)),
            State::Stopped => Vec::new(),
        }
    }

    /// A datagram arrived on port 68 of our link.
    pub fn handle_packet(&mut self, now: Instant, bytes: &[u8]) -> Vec<DhcpAction> {
        let Ok(reply) = DhcpMessage::decode(bytes) else {
            return Vec::new();
        };
        if reply.op != Op::Reply || reply.chaddr != self.config.mac {
            return Vec::new();
        }
        let Some(kind) = reply.options.message_type else {
            return Vec::new();
        };
        match (self.state.clone(), kind) {
            (State::Selecting(x), MessageType::Offer) if x.xid == reply.xid => {
                let (Some(server), true) = (reply.options.server_id, usable(reply.yiaddr)) else {
                    return Vec::new();
                };
                // Take the first usable offer (RFC 2131 allows waiting for
                // more; one server per segment is the norm).
                let exchange = Exchange {
                    xid: x.xid,
                    started: x.started,
                    attempts: 0,
                    retransmit_at: now + self.backoff(0),
                };
                let packet = self.select_packet(&exchange, now, server, reply.yiaddr);
                self.state = State::Requesting {
                    exchange,
                    server,
                    address: reply.yiaddr,
                };
                vec![packet]
            }
            (
                State::Requesting {
                    exchange,
                    server,
                    address,
                },
                MessageType::Ack,
            ) if exchange.xid == reply.xid
                && reply.options.server_id == Some(server)
                && reply.yiaddr == address =>
            {
                self.bind(exchange.started, reply)
            }
            (
                State::Requesting {
                    exchange, server, ..
                },
                MessageType::Nak,
            ) if exchange.xid == reply.xid && reply.options.server_id == Some(server) => {
                self.state = State::Init {
                    restart_at: Some(now + NAK_PAUSE),
                };
                Vec::new()
            }
            (State::Renewing(held, x) | State::Rebinding(held, x), MessageType::Ack)
                if x.xid == reply.xid && reply.yiaddr == held.address =>
            {
                self.bind(x.started, reply)
            }
            (State::Renewing(_, x) | State::Rebinding(_, x), MessageType::Nak)
                if x.xid == reply.xid =>
            {
                self.state = State::Init {
                    restart_at: Some(now + NAK_PAUSE),
                };
                vec![DhcpAction::Withdraw(LossReason::Nak)]
            }
            (
                State::Init { .. }
                | State::Selecting(_)
                | State::Requesting { .. }
                | State::Bound(_)
                | State::Renewing(..)
                | State::Rebinding(..)
                | State::Stopped,
                MessageType::Discover
                | MessageType::Offer
                | MessageType::Request
                | MessageType::Decline
                | MessageType::Ack
                | MessageType::Nak
                | MessageType::Release
                | MessageType::Inform,
            ) => Vec::new(),
        }
    }

    /// Takes an ACK: lease times count from when the exchange began
    /// (RFC 2131 4.4.1), so a slow server cannot stretch them.
    fn bind(&mut self, started: Instant, ack: DhcpMessage) -> Vec<DhcpAction> {
        let Some(server) = ack.options.server_id else {
            return Vec::new();
        };
        let Some(lease) = ack.options.lease_time else {
            return Vec::new();
        };
        if !usable(ack.yiaddr) {
            return Vec::new();
        }
        let (t1, t2) = lease_timers(lease, ack.options.renewal_time, ack.options.rebinding_time);
        let at = |secs: Option<u32>| {
            secs.and_then(|s| started.checked_add(Duration::from_secs(s.into())))
        };
        let infinite = lease == u32::MAX;
        self.state = State::Bound(Held {
            address: ack.yiaddr,
            server,
            renew_at: if infinite { None } else { at(Some(t1)) },
            rebind_at: if infinite { None } else { at(Some(t2)) },
            expires_at: if infinite { None } else { at(Some(lease)) },
        });
        vec![DhcpAction::Apply(Box::new(ack))]
    }

    /// Sends a REQUEST to extend `held`: unicast to its server when
    /// renewing, broadcast when rebinding.
    fn extend(
        &mut self,
        now: Instant,
        held: Held,
        rebinding: bool,
        current: Option<Exchange>,
    ) -> Vec<DhcpAction> {
        // Retransmissions keep the exchange; a new phase starts a new one.
        let mut x = current.unwrap_or_else(|| Exchange {
            xid: self.rng.next_u32(),
            started: now,
            attempts: 0,
            retransmit_at: now,
        });
        let next_phase = if rebinding {
            held.expires_at
        } else {
            held.rebind_at
        };
        let wait = next_phase
            .map(|at| at.saturating_duration_since(now) / 2)
            .unwrap_or(MIN_RENEW_INTERVAL)
            .max(MIN_RENEW_INTERVAL);
        x.attempts += 1;
        x.retransmit_at = now + wait;
        let mut request = self.message(x.xid, secs_since(x.started, now), MessageType::Request);
        // We have an address now: replies can come by unicast.
        request.broadcast = false;
        request.ciaddr = held.address;
        let to = if rebinding {
            Destination::Broadcast
        } else {
            Destination::Server(held.server)
        };
        self.state = if rebinding {
            State::Rebinding(held, x)
        } else {
            State::Renewing(held, x)
        };
        vec![DhcpAction::Send {
            to,
            packet: request.encode(),
            kind: MessageType::Request,
        }]
    }

    /// Starts discovery with a fresh xid.
    fn discover(&mut self, now: Instant) -> Vec<DhcpAction> {
        let x = Exchange {
            xid: self.rng.next_u32(),
            started: now,
            attempts: 0,
            retransmit_at: now + self.backoff(0),
        };
        let packet = self.discover_packet(&x, now);
        self.state = State::Selecting(x);
        vec![packet]
    }

    fn discover_packet(&self, x: &Exchange, now: Instant) -> DhcpAction {
        let message = self.message(x.xid, secs_since(x.started, now), MessageType::Discover);
        DhcpAction::Send {
            to: Destination::Broadcast,
            packet: message.encode(),
            kind: MessageType::Discover,
        }
    }

    /// The REQUEST that answers an offer (SELECTING in RFC 2131 4.3.2).
    fn select_packet(
        &self,
        x: &Exchange,
        now: Instant,
        server: Ipv4Addr,
        address: Ipv4Addr,
    ) -> DhcpAction {
        let mut message = self.message(x.xid, secs_since(x.started, now), MessageType::Request);
        message.options.requested_ip = Some(address);
        message.options.server_id = Some(server);
        DhcpAction::Send {
            to: Destination::Broadcast,
            packet: message.encode(),
            kind: MessageType::Request,
        }
    }

    /// A client message with the options every one of ours carries.
    fn message(&self, xid: u32, secs: u16, kind: MessageType) -> DhcpMessage {
        let mut client_id = vec![1];
        client_id.extend_from_slice(&self.config.mac);
        DhcpMessage {
            op: Op::Request,
            xid,
            secs,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: self.config.mac,
            options: DhcpOptions {
                message_type: Some(kind),
                parameter_request: REQUESTED_OPTIONS.to_vec(),
                client_id: Some(client_id),
                max_message_size: Some(MAX_MESSAGE_SIZE),
                hostname: self.config.hostname.clone(),
                ..DhcpOptions::default()
            },
        }
    }

    /// 4 s, 8 s, ... 64 s, each moved by up to a second either way.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = INITIAL_BACKOFF
            .saturating_mul(1u32 << attempt.min(5))
            .min(MAX_BACKOFF);
        let jitter = self.rng.next_u64() % (2 * JITTER_MS + 1);
        (base + Duration::from_millis(jitter)).saturating_sub(Duration::from_millis(JITTER_MS))
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn reached(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|at| now >= at)
}

fn secs_since(start: Instant, now: Instant) -> u16 {
    u16::try_from(now.saturating_duration_since(start).as_secs()).unwrap_or(u16::MAX)
}

fn usable(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback())
}

/// T1 and T2 in seconds: the server's when they make sense (T1 < T2 <
/// lease), else the defaults of RFC 2131 4.4.5 (50 % and 87.5 %).
fn lease_timers(lease: u32, t1: Option<u32>, t2: Option<u32>) -> (u32, u32) {
    let default_t1 = lease / 2;
    let default_t2 = u32::try_from(u64::from(lease) * 7 / 8).unwrap_or(lease);
    let t2 = t2.filter(|t2| *t2 <= lease).unwrap_or(default_t2);
    let t1 = t1.filter(|t1| *t1 <= t2).unwrap_or(default_t1.min(t2));
    (t1, t2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 7];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 50);

    fn client() -> DhcpClient {
        DhcpClient::new(
            ClientConfig {
                mac: MAC,
                hostname: Some("node-1".into()),
            },
            42,
        )
    }

    /// The one packet in `actions`, decoded, with where it goes.
    fn sent(actions: &[DhcpAction]) -> (Destination, DhcpMessage) {
        let sends: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                DhcpAction::Send { to, packet, .. } => Some((
                    *to,
                    DhcpMessage::decode(packet).expect("our own packet decodes"),
                )),
                DhcpAction::Apply(_) | DhcpAction::Withdraw(_) => None,
            })
            .collect();
        assert_eq!(sends.len(), 1, "{actions:?}");
        sends.into_iter().next().expect("one send")
    }

    fn reply(to: &DhcpMessage, kind: MessageType, server: Ipv4Addr) -> DhcpMessage {
        DhcpMessage {
            op: Op::Reply,
            xid: to.xid,
            secs: 0,
            broadcast: to.broadcast,
            ciaddr: to.ciaddr,
            yiaddr: if kind == MessageType::Nak {
                Ipv4Addr::UNSPECIFIED
            } else {
                ADDRESS
            },
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: to.chaddr,
            options: DhcpOptions {
                message_type: Some(kind),
                server_id: Some(server),
                lease_time: Some(120),
                renewal_time: Some(60),
                rebinding_time: Some(105),
                subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
                ..DhcpOptions::default()
            },
        }
    }

    /// Runs DISCOVER/OFFER/REQUEST/ACK at `t0` and returns the client
    /// bound.
    fn bound(t0: Instant) -> DhcpClient {
        let mut c = client();
        let (_, discover) = sent(&c.link_up(t0));
        let offer = reply(&discover, MessageType::Offer, SERVER);
        let (_, request) = sent(&c.handle_packet(t0, &offer.encode()));
        let ack = reply(&request, MessageType::Ack, SERVER);
        let actions = c.handle_packet(t0, &ack.encode());
        assert!(matches!(actions[..], [DhcpAction::Apply(_)]), "{actions:?}");
        c
    }

    #[test]
    fn full_handshake_binds_the_offered_address() {
        let t0 = Instant::now();
        let mut c = client();
        let (to, discover) = sent(&c.link_up(t0));
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(discover.options.message_type, Some(MessageType::Discover));
        assert!(
            discover.broadcast,
            "no address yet: replies must be broadcast"
        );
        assert_eq!(discover.chaddr, MAC);
        assert_eq!(
            discover.options.client_id.as_deref(),
            Some(&[1, 2, 0, 0, 0, 0, 7][..])
        );
        assert_eq!(discover.options.hostname.as_deref(), Some("node-1"));
        assert!(
            discover.options.parameter_request.contains(&42),
            "asks for NTP"
        );
        assert_eq!(c.phase(), Phase::Selecting);

        let offer = reply(&discover, MessageType::Offer, SERVER);
        let (to, request) = sent(&c.handle_packet(t0, &offer.encode()));
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(request.xid, discover.xid);
        assert_eq!(request.options.message_type, Some(MessageType::Request));
        assert_eq!(request.options.requested_ip, Some(ADDRESS));
        assert_eq!(request.options.server_id, Some(SERVER));
        assert_eq!(request.ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(c.phase(), Phase::Requesting);

        let ack = reply(&request, MessageType::Ack, SERVER);
        let actions = c.handle_packet(t0 + Duration::from_secs(1), &ack.encode());
        assert_eq!(actions, [DhcpAction::Apply(Box::new(ack))]);
        assert_eq!(c.phase(), Phase::Bound);
        assert_eq!(
            c.deadline(),
            Some(t0 + Duration::from_secs(60)),
            "T1 counts from the start of the exchange"
        );
    }

    #[test]
    fn discover_is_retransmitted_with_exponential_backoff_and_jitter() {
        let t0 = Instant::now();
        let mut c = client();
        let (_, first) = sent(&c.link_up(t0));
        let mut now = t0;
        for base in [4u64, 8, 16, 32, 64, 64, 64] {
            let at = c.deadline().expect("a retransmission is due");
            let wait = at - now;
            assert!(
                wait >= Duration::from_secs(base - 1) && wait <= Duration::from_secs(base + 1),
                "waited {wait:?}, expected {base} s +/- 1 s"
            );
            assert!(
                c.tick(at - Duration::from_millis(1)).is_empty(),
                "not before the deadline"
            );
            now = at;
            let (to, again) = sent(&c.tick(now));
            assert_eq!(to, Destination::Broadcast);
            assert_eq!(again.xid, first.xid, "same exchange, same xid");
            assert_eq!(u64::from(again.secs), (now - t0).as_secs());
        }
    }

    #[test]
    fn jitter_differs_between_clients_seeded_differently() {
        let t0 = Instant::now();
        let mut a = client();
        let mut b = DhcpClient::new(a.config.clone(), 43);
        let (_, da) = sent(&a.link_up(t0));
        let (_, db) = sent(&b.link_up(t0));
        assert_ne!(da.xid, db.xid);
        assert_ne!(a.deadline(), b.deadline());
    }

    #[test]
    fn replies_for_another_xid_or_client_are_ignored() {
        let t0 = Instant::now();
        let mut c = client();
        let (_, discover) = sent(&c.link_up(t0));
        let mut wrong_xid = reply(&discover, MessageType::Offer, SERVER);
        wrong_xid.xid ^= 1;
        assert!(c.handle_packet(t0, &wrong_xid.encode()).is_empty());
        let mut wrong_mac = reply(&discover, MessageType::Offer, SERVER);
        wrong_mac.chaddr[5] ^= 1;
        assert!(c.handle_packet(t0, &wrong_mac.encode()).is_empty());
        let mut not_reply = reply(&discover, MessageType::Offer, SERVER);
        not_reply.op = Op::Request;
        assert!(c.handle_packet(t0, &not_reply.encode()).is_empty());
        assert!(c.handle_packet(t0, b"garbage").is_empty());
        let ack_while_selecting = reply(&discover, MessageType::Ack, SERVER);
        assert!(
            c.handle_packet(t0, &ack_while_selecting.encode())
                .is_empty()
        );
        assert_eq!(c.phase(), Phase::Selecting);
    }

    #[test]
    fn while_requesting_only_the_chosen_server_is_heard() {
        let t0 = Instant::now();
        let mut c = client();
        let (_, discover) = sent(&c.link_up(t0));
        let offer = reply(&discover, MessageType::Offer, SERVER);
        let (_, request) = sent(&c.handle_packet(t0, &offer.encode()));
        let other = Ipv4Addr::new(10, 0, 0, 2);
        for kind in [MessageType::Offer, MessageType::Ack, MessageType::Nak] {
            let foreign = reply(&request, kind, other);
            assert!(
                c.handle_packet(t0, &foreign.encode()).is_empty(),
                "{kind:?}"
            );
            assert_eq!(c.phase(), Phase::Requesting);
        }
        let ack = reply(&request, MessageType::Ack, SERVER);
        assert!(matches!(
            c.handle_packet(t0, &ack.encode())[..],
            [DhcpAction::Apply(_)]
        ));
    }

    #[test]
    fn nak_while_requesting_restarts_discovery_after_a_pause() {
        let t0 = Instant::now();
        let mut c = client();
        let (_, discover) = sent(&c.link_up(t0));
        let offer = reply(&discover, MessageType::Offer, SERVER);
        let (_, request) = sent(&c.handle_packet(t0, &offer.encode()));
        let nak = reply(&request, MessageType::Nak, SERVER);
        assert!(
            c.handle_packet(t0, &nak.encode()).is_empty(),
            "no lease to withdraw"
        );
        assert_eq!(c.phase(), Phase::Init);
        assert_eq!(c.deadline(), Some(t0 + NAK_PAUSE));
        let (_, again) = sent(&c.tick(t0 + NAK_PAUSE));
        assert_eq!(again.options.message_type, Some(MessageType::Discover));
        assert_ne!(again.xid, discover.xid, "a new exchange gets a new xid");
    }

    #[test]
    fn unanswered_requests_fall_back_to_discovery() {
        let t0 = Instant::now();
        let mut c = client();
        let (_, discover) = sent(&c.link_up(t0));
        let offer = reply(&discover, MessageType::Offer, SERVER);
        sent(&c.handle_packet(t0, &offer.encode()));
        for _ in 1..REQUEST_ATTEMPTS {
            let at = c.deadline().expect("retransmission");
            let (_, r) = sent(&c.tick(at));
            assert_eq!(r.options.message_type, Some(MessageType::Request));
        }
        let at = c.deadline().expect("give up");
        let (_, d) = sent(&c.tick(at));
        assert_eq!(d.options.message_type, Some(MessageType::Discover));
        assert_eq!(c.phase(), Phase::Selecting);
    }

    #[test]
    fn renewal_at_t1_is_unicast_to_the_server_and_extends_the_lease() {
        let t0 = Instant::now();
        let mut c = bound(t0);
        let t1 = t0 + Duration::from_secs(60);
        assert!(c.tick(t1 - Duration::from_millis(1)).is_empty());
        let (to, renew) = sent(&c.tick(t1));
        assert_eq!(to, Destination::Server(SERVER));
        assert_eq!(c.phase(), Phase::Renewing);
        assert_eq!(renew.ciaddr, ADDRESS);
        assert!(!renew.broadcast);
        assert_eq!(
            renew.options.requested_ip, None,
            "RFC 2131 4.3.2: not when renewing"
        );
        assert_eq!(renew.options.server_id, None);

        let ack = reply(&renew, MessageType::Ack, SERVER);
        let later = t1 + Duration::from_secs(1);
        assert!(matches!(
            c.handle_packet(later, &ack.encode())[..],
            [DhcpAction::Apply(_)]
        ));
        assert_eq!(c.phase(), Phase::Bound);
        assert_eq!(
            c.deadline(),
            Some(t1 + Duration::from_secs(60)),
            "new T1 from the renewal"
        );
    }

    #[test]
    fn unanswered_renewal_rebinds_by_broadcast_at_t2() {
        let t0 = Instant::now();
        let mut c = bound(t0);
        let (_, renew) = sent(&c.tick(t0 + Duration::from_secs(60)));
        // Half of the 45 s to T2 is under a minute: no retransmission
        // before T2.
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(105)));
        let (to, rebind) = sent(&c.tick(t0 + Duration::from_secs(105)));
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(c.phase(), Phase::Rebinding);
        assert_ne!(rebind.xid, renew.xid);
        assert_eq!(rebind.ciaddr, ADDRESS);

        // Any server may answer a rebind.
        let other = Ipv4Addr::new(10, 0, 0, 2);
        let ack = reply(&rebind, MessageType::Ack, other);
        assert!(matches!(
            c.handle_packet(t0 + Duration::from_secs(106), &ack.encode())[..],
            [DhcpAction::Apply(_)]
        ));
        let (to, _) = sent(&c.tick(t0 + Duration::from_secs(106 + 60)));
        assert_eq!(
            to,
            Destination::Server(other),
            "renews with the server that answered"
        );
    }

    #[test]
    fn expired_lease_is_withdrawn_and_discovery_starts_over() {
        let t0 = Instant::now();
        let mut c = bound(t0);
        sent(&c.tick(t0 + Duration::from_secs(60)));
        sent(&c.tick(t0 + Duration::from_secs(105)));
        assert_eq!(c.deadline(), Some(t0 + Duration::from_secs(120)));
        let actions = c.tick(t0 + Duration::from_secs(120));
        assert_eq!(actions[0], DhcpAction::Withdraw(LossReason::Expired));
        let (to, discover) = sent(&actions);
        assert_eq!(to, Destination::Broadcast);
        assert_eq!(discover.options.message_type, Some(MessageType::Discover));
        assert_eq!(c.phase(), Phase::Selecting);
    }

    #[test]
    fn nak_while_renewing_withdraws_the_lease() {
        let t0 = Instant::now();
        let mut c = bound(t0);
        let (_, renew) = sent(&c.tick(t0 + Duration::from_secs(60)));
        let nak = reply(&renew, MessageType::Nak, SERVER);
        assert_eq!(
            c.handle_packet(t0 + Duration::from_secs(61), &nak.encode()),
            [DhcpAction::Withdraw(LossReason::Nak)]
        );
        assert_eq!(c.phase(), Phase::Init);
    }

    #[test]
    fn shutdown_releases_a_held_lease_to_its_server() {
        let t0 = Instant::now();
        let mut c = bound(t0);
        let actions = c.shutdown();
        let (to, release) = sent(&actions);
        assert_eq!(to, Destination::Server(SERVER));
        assert_eq!(release.options.message_type, Some(MessageType::Release));
        assert_eq!(release.ciaddr, ADDRESS);
        assert_eq!(release.options.server_id, Some(SERVER));
        assert_eq!(actions[1], DhcpAction::Withdraw(LossReason::Released));
        assert_eq!(c.phase(), Phase::Stopped);
        assert_eq!(c.deadline(), None);
        assert!(c.link_up(t0).is_empty(), "a stopped client stays stopped");

        let mut idle = client();
        sent(&idle.link_up(t0));
        assert!(idle.shutdown().is_empty(), "nothing to release");
    }

    #[test]
    fn carrier_changes_restart_discovery_but_keep_a_lease() {
        let t0 = Instant::now();
        let mut c = client();
        let (_, first) = sent(&c.link_up(t0));
        c.link_down();
        assert_eq!(c.phase(), Phase::Init);
        assert_eq!(c.deadline(), None, "no retransmissions without carrier");
        let (_, again) = sent(&c.link_up(t0 + Duration::from_secs(6)));
        assert_ne!(again.xid, first.xid);
        assert_eq!(again.secs, 0);

        let mut held = bound(t0);
        held.link_down();
        assert!(held.link_up(t0).is_empty());
        assert_eq!(held.phase(), Phase::Bound);
    }

    #[test]
    fn server_timers_are_used_only_when_consistent() {
        assert_eq!(lease_timers(120, Some(8), Some(14)), (8, 14));
        assert_eq!(lease_timers(120, None, None), (60, 105));
        assert_eq!(lease_timers(120, Some(200), Some(300)), (60, 105));
        assert_eq!(lease_timers(120, Some(110), None), (60, 105));
    }

    #[test]
    fn infinite_lease_has_no_timers() {
        let t0 = Instant::now();
        let mut c = client();
        let (_, discover) = sent(&c.link_up(t0));
        let (_, request) =
            sent(&c.handle_packet(t0, &reply(&discover, MessageType::Offer, SERVER).encode()));
        let mut ack = reply(&request, MessageType::Ack, SERVER);
        ack.options.lease_time = Some(u32::MAX);
        c.handle_packet(t0, &ack.encode());
        assert_eq!(c.phase(), Phase::Bound);
        assert_eq!(c.deadline(), None);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Tick(u16),
        Up,
        Down,
        Garbage(Vec<u8>),
        Reply {
            kind: u8,
            other_server: bool,
            lease: u32,
            t1: Option<u32>,
        },
    }

    fn event() -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        prop_oneof![
            (0u16..200).prop_map(Event::Tick),
            Just(Event::Up),
            Just(Event::Down),
            proptest::collection::vec(any::<u8>(), 0..400).prop_map(Event::Garbage),
            (
                1u8..=8,
                any::<bool>(),
                1u32..400,
                proptest::option::of(0u32..500)
            )
                .prop_map(|(kind, other_server, lease, t1)| Event::Reply {
                    kind,
                    other_server,
                    lease,
                    t1
                }),
        ]
    }

    proptest::proptest! {
        /// Whatever arrives, the client never panics and never asks the
        /// shell to spin: a deadline that has passed is acted on by the
        /// next tick.
        #[test]
        fn any_event_sequence_keeps_the_timer_moving(events in proptest::collection::vec(event(), 1..60)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut c = client();
            let mut last_sent: Option<DhcpMessage> = None;
            for e in events {
                let actions = match e {
                    Event::Tick(secs) => {
                        now += Duration::from_secs(secs.into());
                        c.tick(now)
                    }
                    Event::Up => c.link_up(now),
                    Event::Down => {
                        c.link_down();
                        Vec::new()
                    }
                    Event::Garbage(bytes) => c.handle_packet(now, &bytes),
                    Event::Reply { kind, other_server, lease, t1 } => match &last_sent {
                        Some(to) => {
                            let kind = MessageType::from_code(kind).unwrap_or(MessageType::Ack);
                            let server = if other_server { Ipv4Addr::new(10, 0, 0, 2) } else { SERVER };
                            let mut r = reply(to, kind, server);
                            r.options.lease_time = Some(lease);
                            r.options.renewal_time = t1;
                            r.options.rebinding_time = None;
                            c.handle_packet(now, &r.encode())
                        }
                        None => Vec::new(),
                    },
                };
                for a in &actions {
                    if let DhcpAction::Send { packet, .. } = a {
                        last_sent = Some(DhcpMessage::decode(packet).expect("our packet decodes"));
                    }
                }
                if let Some(at) = c.deadline().filter(|at| *at <= now) {
                    let before = c.deadline();
                    let acted = c.tick(now);
                    proptest::prop_assert!(
                        !acted.is_empty() || c.deadline() != before,
                        "deadline {at:?} passed but tick did nothing in {:?}",
                        c.phase()
                    );
                }
            }
        }
    }
}
