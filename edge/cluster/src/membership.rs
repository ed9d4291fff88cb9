//! Membership and failure detection: foca's SWIM (direct probes, indirect probes through other
//! members, suspicion, gossip dissemination), wrapped as a sans-IO core that speaks `NodeId`s.
//! Probes are independent datagrams with their own deadlines, so one hung peer delays nobody.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::{Duration, Instant};

use foca::{
    AccumulatingRuntime, Config, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer,
};
use rand::SeedableRng as _;
use serde::{Deserialize, Serialize};

use crate::identity::NodeId;

/// Failure-detection timing. A silent node is declared down after about
/// `probe_period + suspect_after` (plus up to one probe period before it is probed).
///
/// The default probes every 12 s: each probe is a ping and an ack each way, the largest share
/// of an idle member's traffic and wake-ups, and the bot's failover does not wait for it (a
/// holder whose renewals stop is left out of the election when its lease lapses, see
/// `lease.rs`), so only the table's up/down status follows this pace.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub suspect_after: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            probe_period: Duration::from_secs(12),
            probe_rtt: Duration::from_millis(4800),
            suspect_after: Duration::from_millis(1000),
        }
    }
}

/// A member as foca knows it: the node id plus an incarnation that a restart bumps, so a
/// restarted node is not mistaken for its own earlier, declared-down self.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    id: NodeId,
    incarnation: u32,
}

impl foca::Identity for Member {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Member {
            id: self.id,
            incarnation: self.incarnation.wrapping_add(1),
        })
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

/// A change in who is alive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Up(NodeId),
    Down(NodeId),
}

pub struct Membership {
    foca: Foca<Member, PostcardCodec, rand::rngs::StdRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<Member>,
    timers: Vec<(Instant, Timer<Member>)>,
    /// The next gossip round, due while foca has updates to spread.
    next_gossip: Option<Instant>,
}

/// How soon news (a join, a member down) goes to two random members beyond the probes it rides
/// on.
const GOSSIP_EVERY: Duration = Duration::from_millis(500);

impl Membership {
    /// `incarnation` must grow across restarts (the caller derives it from the persisted
    /// message-counter reservation); `seed` feeds foca's member selection.
    pub fn new(me: NodeId, incarnation: u32, timing: Timing, seed: u64) -> Membership {
        let mut config = Config::simple();
        config.probe_period = timing.probe_period;
        config.probe_rtt = timing.probe_rtt;
        config.suspect_to_down_after = timing.suspect_after;
        config.num_indirect_probes = NonZeroUsize::MIN.saturating_add(1);
        config.max_transmissions = NonZeroU8::new(8).unwrap_or(NonZeroU8::MIN);
        // A SWIM message rides in a sealed datagram, with a few bytes of `wire::Datagram` framing.
        config.max_packet_size =
            NonZeroUsize::new(crate::datagram::MAX_BODY - 8).unwrap_or(NonZeroUsize::MIN);
        config.notify_down_members = true;
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: NonZeroUsize::MIN.saturating_add(2),
        });
        // Gossip rounds are driven here (`next_gossip`), only while there is news to spread:
        // foca's own periodic gossip keeps a timer firing twice a second for ever.
        config.periodic_gossip = None;
        let foca = Foca::new(
            Member {
                id: me,
                incarnation,
            },
            config,
            rand::rngs::StdRng::seed_from_u64(seed),
            PostcardCodec,
        );
        Membership {
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: Vec::new(),
            next_gossip: None,
        }
    }

    /// Asks `to` to let us in (at start, and for members we know from the shared state).
    pub fn announce(&mut self, to: NodeId, now: Instant) {
        let member = Member {
            id: to,
            incarnation: 0,
        };
        if let Err(e) = self.foca.announce(member, &mut self.runtime) {
            tracing::debug!(error = %e, "announce failed");
        }
        self.collect(now);
    }

    /// A SWIM datagram from an authenticated member.
    pub fn handle_data(&mut self, bytes: &[u8], now: Instant) {
        if let Err(e) = self.foca.handle_data(bytes, &mut self.runtime) {
            tracing::trace!(error = %e, "gossip datagram dropped");
        }
        self.collect(now);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        self.timers = rest;
        for (_, timer) in due {
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(error = %e, "membership timer failed");
            }
        }
        if self.next_gossip.is_some_and(|at| at <= now) {
            self.next_gossip = None;
            if let Err(e) = self.foca.gossip(&mut self.runtime) {
                tracing::debug!(error = %e, "gossip failed");
            }
        }
        self.collect(now);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers
            .iter()
            .map(|(at, _)| *at)
            .chain(self.next_gossip)
            .min()
    }

    /// The next datagram to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.runtime
            .to_send()
            .map(|(member, bytes)| (member.id, bytes.to_vec()))
    }

    pub fn poll_change(&mut self) -> Option<Change> {
        while let Some(note) = self.runtime.to_notify() {
            match note {
                OwnedNotification::MemberUp(m) => return Some(Change::Up(m.id)),
                OwnedNotification::MemberDown(m) => return Some(Change::Down(m.id)),
                _ => {}
            }
        }
        None
    }

    /// Members foca currently considers alive (suspects included, as SWIM intends).
    pub fn live(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.foca.iter_members().map(|m| m.id().id)
    }

    fn collect(&mut self, now: Instant) {
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timers.push((now + after, timer));
        }
        if self.next_gossip.is_none() && self.foca.updates_backlog() > 0 {
            self.next_gossip = Some(now + GOSSIP_EVERY);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Members wired to each other in virtual time, datagrams delivered at once.
    use super::*;

    struct Net {
        nodes: Vec<Membership>,
        ids: Vec<NodeId>,
        alive: Vec<bool>,
        now: Instant,
        wakes: Vec<usize>,
    }

    impl Net {
        fn new(size: u8) -> Net {
            let now = Instant::now();
            let ids: Vec<NodeId> = (1..=size).map(|i| NodeId([i; 16])).collect();
            let mut nodes: Vec<Membership> = ids
                .iter()
                .map(|&id| Membership::new(id, 1, Timing::default(), u64::from(id.0[0])))
                .collect();
            for node in &mut nodes[1..] {
                node.announce(ids[0], now);
            }
            let mut net = Net {
                nodes,
                ids,
                alive: vec![true; usize::from(size)],
                now,
                wakes: vec![0; usize::from(size)],
            };
            net.deliver();
            net
        }

        fn deliver(&mut self) {
            while let Some((from, (to, bytes))) = (0..self.nodes.len())
                .find_map(|i| self.nodes[i].poll_transmit().map(|sent| (i, sent)))
            {
                let to = self.ids.iter().position(|&id| id == to).expect("a member");
                if self.alive[from] && self.alive[to] {
                    self.nodes[to].handle_data(&bytes, self.now);
                }
            }
        }

        /// Runs every deadline of the live nodes up to `now + span`.
        fn run(&mut self, span: Duration) {
            let end = self.now + span;
            loop {
                let next = (0..self.nodes.len())
                    .filter(|&i| self.alive[i])
                    .filter_map(|i| self.nodes[i].poll_timeout())
                    .min();
                let Some(next) = next.filter(|&at| at <= end) else {
                    break;
                };
                self.now = self.now.max(next);
                for i in 0..self.nodes.len() {
                    let due = self.nodes[i]
                        .poll_timeout()
                        .is_some_and(|at| at <= self.now);
                    if self.alive[i] && due {
                        self.wakes[i] += 1;
                        self.nodes[i].handle_timeout(self.now);
                    }
                }
                self.deliver();
            }
            self.now = end;
        }

        fn live(&self, i: usize) -> usize {
            self.nodes[i].live().count()
        }
    }

    #[test]
    fn idle_members_wake_only_to_probe() {
        let mut net = Net::new(3);
        net.run(Duration::from_secs(30));
        assert!(
            (0..3).all(|i| net.live(i) == 2),
            "everyone sees both others"
        );
        net.wakes = vec![0; 3];
        net.run(Duration::from_secs(60));
        // A probe every 12 s, its round-trip and indirect-probe deadlines and the
        // announce-to-down round: about four deadlines per period. A gossip timer of its own
        // would add 120.
        for (i, wakes) in net.wakes.iter().enumerate() {
            assert!(
                *wakes <= 25,
                "node {i} woke {wakes} times in a quiet minute"
            );
        }
    }

    #[test]
    fn a_silent_member_is_marked_down_within_a_few_probe_periods() {
        let mut net = Net::new(3);
        net.run(Duration::from_secs(30));
        net.alive[2] = false;
        let timing = Timing::default();
        net.run(3 * timing.probe_period + timing.suspect_after);
        assert_eq!((net.live(0), net.live(1)), (1, 1));
    }
}
