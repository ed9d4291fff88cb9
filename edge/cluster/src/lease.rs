//! Leader election and the bot lease, as a sans-IO state machine.
//!
//! The leader is the live node with the smallest `(priority, node id)` among nodes that can host
//! the bot. It holds the lease only while a quorum of members (a majority; one in networks of one
//! or two nodes) has promised it: each member promises at most one holder at a time, for
//! `duration` measured on its own monotonic clock from when it received the claim. The holder
//! counts its lease from when it *sent* the claim, minus a guard, so its own view always ends
//! before any member's promise does and two quorums can never overlap in time.
//!
//! Calling protocol: feed every inbound lease message (`handle_claim`, `handle_release`,
//! `handle_vote`) and call `handle_tick` with the current membership view at least every
//! `poll_timeout()`; then drain `poll_output()`. `now` must never go backwards. Time, the
//! membership view and message delivery are all inputs, so the tests drive it in virtual time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::identity::NodeId;

/// Lease timing. A dead holder is replaced when the successor's promise to it lapses:
/// `duration` after the last renewal it received, so between `duration - renew_every` and
/// `duration` after the death.
#[derive(Clone, Copy, Debug)]
pub struct LeaseConfig {
    /// How long a member's promise lasts after it receives a claim.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// Safety margin taken off the holder's own view of its lease (clock-rate drift).
    pub guard: Duration,
    /// How soon a renewal goes again to live members that have not answered it. A lost renewal
    /// costs a resend, not the lease: renewals can be rare (each is a claim and a vote per
    /// member, the largest share of an idle node's traffic) and still survive loss.
    pub resend_every: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            duration: Duration::from_millis(5000),
            renew_every: Duration::from_millis(3000),
            guard: Duration::from_millis(300),
            resend_every: Duration::from_millis(500),
        }
    }
}

/// How a live node stands for election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Standing {
    pub priority: u32,
    pub can_host_bot: bool,
}

/// What the membership layer says: who is alive now, and how many members vote.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub live: BTreeMap<NodeId, Standing>,
    pub members: usize,
}

impl View {
    /// The node that should lead: smallest `(priority, id)` among live nodes able to host the bot.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader_without(&BTreeSet::new())
    }

    /// The leader if the nodes in `gone` (leaders whose claims stopped reaching us) are left out.
    fn leader_without(&self, gone: &BTreeSet<NodeId>) -> Option<NodeId> {
        self.live
            .iter()
            .filter(|(id, s)| s.can_host_bot && !gone.contains(id))
            .min_by_key(|(id, s)| (s.priority, **id))
            .map(|(id, _)| *id)
    }

    /// The live nodes other than `me`.
    fn others(&self, me: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.live.keys().copied().filter(move |&id| id != me)
    }

    fn quorum(&self) -> usize {
        quorum(self.members)
    }
}

/// Members whose agreement a decision needs: a majority, or one in networks of one or two (where
/// a majority of two would make either node's loss stop everything). The lease and invite
/// redemption use the same quorum.
pub fn quorum(members: usize) -> usize {
    if members <= 2 { 1 } else { members / 2 + 1 }
}

/// A lease message between nodes; the sender is the (authenticated) claimant or holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Acquire (new epoch) or renew (same epoch) the lease; `offset` is the bot's next update id.
    /// `watch`: the claimant renews with this member every round, so its silence for a lease
    /// duration means it is gone. A holder renews only with enough members for a quorum, its
    /// successor first; the others learn of its death from membership, at membership's pace.
    Claim {
        epoch: u64,
        round: u64,
        offset: u64,
        watch: bool,
    },
    /// The holder gives the lease up (stepping down for a better node).
    Release { epoch: u64, offset: u64 },
}

/// A claim as a member receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub epoch: u64,
    pub round: u64,
    /// The bot's next update id, as the claimant knows it.
    pub offset: u64,
    /// This member hears every renewal (see [`Message::Claim`]).
    pub watch: bool,
}

/// Whether a node has run before: a restarted node cannot know what it promised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// No state from an earlier run: it never promised anything.
    FirstRun,
    /// It ran before and may have promised its vote to a holder.
    Restart,
}

/// A member's answer to a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub epoch: u64,
    pub round: u64,
    pub granted: bool,
    /// The highest epoch this member knows, so a stale claimant learns it lost.
    pub known_epoch: u64,
    pub offset: u64,
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send to every other member.
    Broadcast(Message),
    /// Send to one member (a renewal it has not answered).
    Send(NodeId, Message),
    /// This node holds the lease: start the bot from `offset`.
    StartBot { epoch: u64, offset: u64 },
    /// Stop the bot now.
    StopBot { epoch: u64, reason: StopReason },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Lapsed,
    HigherEpoch,
    SteppedDown,
    /// Telegram told the bot another poller is active (HTTP 409).
    Fenced,
}

/// The lease record as the cluster knows it (for display, and replicated in the shared state).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    pub holder: Option<NodeId>,
    pub epoch: u64,
    pub offset: u64,
}

#[derive(Clone, Copy, Debug)]
struct Promise {
    holder: Option<NodeId>,
    epoch: u64,
    until: Instant,
}

#[derive(Debug)]
enum Role {
    Idle,
    Claiming {
        epoch: u64,
        sent_at: Instant,
        /// When to give this claim up and, if still the leader, claim again.
        retry_at: Instant,
        grants: BTreeSet<NodeId>,
        /// Live members when the claim went out: all were told to watch.
        told: BTreeSet<NodeId>,
    },
    Holding {
        epoch: u64,
        valid_until: Instant,
        next_renew: Instant,
        round: u64,
        round_sent_at: Instant,
        grants: BTreeSet<NodeId>,
        /// Members this round goes to, and those of them that have not answered yet, and
        /// when they next hear it.
        renewed: BTreeSet<NodeId>,
        awaiting: BTreeSet<NodeId>,
        resend_at: Instant,
    },
}

/// One node's election and lease state.
#[derive(Debug)]
pub struct Lease {
    me: NodeId,
    config: LeaseConfig,
    promise: Promise,
    record: Record,
    role: Role,
    quorum: usize,
    /// A starting node claims nothing for one lease duration, so it sees its peers first.
    claim_after: Instant,
    /// After a fence, this node does not claim before this instant.
    fenced_until: Option<Instant>,
    /// The leader the last tick's view named.
    leader: Option<NodeId>,
    /// When the last claim heard from a node runs out here, and its epoch; kept for the leader
    /// only, and dropped when it releases (a node that let go is alive and not expected to
    /// claim: after a fence it waits on purpose).
    claim_heard: BTreeMap<NodeId, (u64, Instant)>,
    /// Leaders whose claims stopped reaching us for a whole lease duration without a release.
    /// They count as gone from the election until a claim of theirs is heard (membership
    /// marking one down and up again does not bring it back: a fenced node that went quiet in
    /// a partition must not make the holder step down for a leader that will not claim; a
    /// restarted one claims within a lease duration of starting). So a dead holder
    /// is replaced one lease duration after its last claim, however slowly the membership
    /// layer notices the death (its probes may be minutes apart), and whether or not we had
    /// granted that claim.
    gone_quiet: BTreeSet<NodeId>,
    outputs: VecDeque<Output>,
}

/// The members a holder renews with: enough for a quorum (and at least one, so in a network of
/// two the other node hears the holder), best placed to succeed it first, since the member
/// that would take over is the one that must notice the holder's silence.
fn renewal_set(me: NodeId, view: &View, quorum: usize) -> BTreeSet<NodeId> {
    let mut others: Vec<(bool, u32, NodeId)> = view
        .live
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, s)| (!s.can_host_bot, s.priority, *id))
        .collect();
    others.sort_unstable();
    let wanted = quorum.saturating_sub(1).max(1);
    others.into_iter().take(wanted).map(|(.., id)| id).collect()
}

/// How many lease durations a fenced node waits before it claims again.
const FENCE_LEASES: u32 = 10;

impl Lease {
    /// A node starting at `now` that knows `record` from its saved state. After a restart it
    /// promises nobody for one lease duration, since it cannot know what it promised before; a
    /// node on its first run never promised anything and votes at once. Either way it claims
    /// nothing for that long, so it knows who else is alive before it stands.
    pub fn new(
        me: NodeId,
        config: LeaseConfig,
        record: Record,
        now: Instant,
        start: Start,
    ) -> Lease {
        Lease {
            me,
            config,
            promise: Promise {
                holder: None,
                epoch: record.epoch,
                until: if start == Start::FirstRun {
                    now
                } else {
                    now + config.duration
                },
            },
            record,
            role: Role::Idle,
            quorum: 1,
            claim_after: now + config.duration,
            fenced_until: None,
            leader: None,
            claim_heard: BTreeMap::new(),
            gone_quiet: BTreeSet::new(),
            outputs: VecDeque::new(),
        }
    }

    /// The lease as this node knows it.
    pub fn record(&self) -> Record {
        self.record
    }

    /// True while this node holds the lease.
    pub fn holds(&self, now: Instant) -> bool {
        matches!(self.role, Role::Holding { valid_until, .. } if now < valid_until)
    }

    /// The bot reports the next update id it needs; carried on renewals and handovers.
    pub fn set_offset(&mut self, offset: u64) {
        self.record.offset = self.record.offset.max(offset);
    }

    /// Another poller fenced our bot (Telegram's 409): give the lease up, tell the members, and
    /// claim nothing for `FENCE_LEASES` lease durations, so two pollers cannot keep taking the
    /// bot from each other faster than that.
    pub fn fence(&mut self, now: Instant) {
        self.fenced_until = Some(now + self.config.duration * FENCE_LEASES);
        if let Role::Holding { epoch, .. } = self.role {
            self.release(epoch, StopReason::Fenced, now);
        }
    }

    /// True while a fence keeps this node from claiming.
    pub fn fenced(&self, now: Instant) -> bool {
        self.fenced_until.is_some_and(|until| now < until)
    }

    /// A member claims (or renews) the lease.
    pub fn handle_claim(&mut self, from: NodeId, claim: Claim, now: Instant) -> Vote {
        let Claim {
            epoch,
            round,
            offset,
            watch,
        } = claim;
        self.gone_quiet.remove(&from);
        if watch {
            self.claim_heard
                .insert(from, (epoch, now + self.config.duration));
        } else {
            self.claim_heard.remove(&from);
        }
        let promise_live = now < self.promise.until;
        let free = !promise_live || self.promise.holder == Some(from);
        let fresh = epoch > self.promise.epoch
            || (epoch == self.promise.epoch && self.promise.holder == Some(from));
        let granted = free && fresh && epoch >= self.record.epoch;
        if granted {
            self.promise = Promise {
                holder: Some(from),
                epoch,
                until: now + self.config.duration,
            };
            self.observe(Some(from), epoch);
        }
        self.record.offset = self.record.offset.max(offset);
        Vote {
            epoch,
            round,
            granted,
            known_epoch: self.record.epoch,
            offset: self.record.offset,
        }
    }

    /// The holder gave the lease up: our promise to it ends now.
    pub fn handle_release(&mut self, from: NodeId, epoch: u64, offset: u64, now: Instant) {
        self.record.offset = self.record.offset.max(offset);
        if self
            .claim_heard
            .get(&from)
            .is_some_and(|&(claimed, _)| claimed <= epoch)
        {
            self.claim_heard.remove(&from);
        }
        if self.promise.holder == Some(from) && self.promise.epoch == epoch {
            // Ended, not lapsed: the node that let go is alive and stays in the election.
            self.promise.holder = None;
            self.promise.until = now;
        }
        if self.record.holder == Some(from) && self.record.epoch == epoch {
            self.record.holder = None;
        }
    }

    /// A member answered one of our claims.
    pub fn handle_vote(&mut self, from: NodeId, vote: Vote, now: Instant) {
        self.record.offset = self.record.offset.max(vote.offset);
        let quorum = self.quorum;
        match &mut self.role {
            Role::Claiming {
                epoch,
                sent_at,
                retry_at,
                grants,
                told,
            } if vote.epoch == *epoch && vote.round == 0 => {
                if vote.granted {
                    grants.insert(from);
                    if grants.len() >= quorum {
                        let (epoch, sent_at, told) = (*epoch, *sent_at, std::mem::take(told));
                        self.become_holder(epoch, sent_at, told, now);
                    }
                } else if vote.known_epoch >= *epoch {
                    self.role = Role::Idle;
                } else {
                    // Refused over a promise to the old holder that is about to end (members'
                    // promises end within moments of each other): try again soon, not after a
                    // whole renewal period.
                    *retry_at = (*retry_at).min(now + self.config.guard);
                }
            }
            Role::Holding {
                epoch,
                valid_until,
                round,
                round_sent_at,
                grants,
                renewed,
                awaiting,
                ..
            } if vote.epoch == *epoch => {
                if vote.round == *round {
                    awaiting.remove(&from);
                }
                if vote.granted && vote.round == *round {
                    grants.insert(from);
                    if grants.len() >= quorum {
                        let until = *round_sent_at + self.config.duration - self.config.guard;
                        *valid_until = (*valid_until).max(until);
                        // Renewed: members the round widened to need not hear it again.
                        awaiting.retain(|id| renewed.contains(id));
                    }
                } else if !vote.granted && vote.known_epoch > *epoch {
                    let epoch = *epoch;
                    self.stop(epoch, StopReason::HigherEpoch);
                }
            }
            _ => {}
        }
    }

    /// Replicated state says a lease with `epoch` exists; a holder with a lower epoch stops.
    pub fn handle_record(&mut self, holder: Option<NodeId>, epoch: u64, offset: u64) {
        self.record.offset = self.record.offset.max(offset);
        if epoch > self.record.epoch {
            self.observe(holder, epoch);
        }
    }

    /// Advances time and re-evaluates who should lead under `view`.
    pub fn handle_tick(&mut self, view: &View, now: Instant) {
        self.quorum = view.quorum();
        let leader = loop {
            let leader = view.leader_without(&self.gone_quiet);
            match leader {
                Some(id)
                    if self
                        .claim_heard
                        .get(&id)
                        .is_some_and(|&(_, until)| now >= until) =>
                {
                    self.gone_quiet.insert(id);
                }
                _ => break leader,
            }
        };
        self.claim_heard.retain(|&id, _| Some(id) == leader);
        self.leader = leader;
        match &mut self.role {
            Role::Holding {
                epoch,
                valid_until,
                next_renew,
                round,
                round_sent_at,
                grants,
                renewed,
                awaiting,
                resend_at,
            } => {
                let epoch = *epoch;
                if now >= *valid_until {
                    self.stop(epoch, StopReason::Lapsed);
                } else if leader.is_some_and(|l| l != self.me) {
                    self.release(epoch, StopReason::SteppedDown, now);
                } else if now >= *next_renew {
                    *round += 1;
                    *round_sent_at = now;
                    *next_renew = now + self.config.renew_every;
                    *resend_at = now + self.config.resend_every;
                    let next = renewal_set(self.me, view, self.quorum);
                    let offset = self.record.offset;
                    let claim = |watch| Message::Claim {
                        epoch,
                        round: *round,
                        offset,
                        watch,
                    };
                    // Members dropped from the set are told once not to watch any more.
                    for &to in renewed.difference(&next) {
                        self.outputs.push_back(Output::Send(to, claim(false)));
                    }
                    for &to in &next {
                        self.outputs.push_back(Output::Send(to, claim(true)));
                    }
                    awaiting.clone_from(&next);
                    *renewed = next;
                    grants.clear();
                    grants.insert(self.me);
                    if self.quorum <= 1 {
                        *valid_until = now + self.config.duration - self.config.guard;
                    }
                    self.promise.until = now + self.config.duration;
                } else if now >= *resend_at && !awaiting.is_empty() {
                    *resend_at = now + self.config.resend_every;
                    if grants.len() < self.quorum {
                        // A member of the set is slow or gone: ask every live member.
                        awaiting.extend(view.others(self.me).filter(|id| !grants.contains(id)));
                    }
                    for &to in awaiting.iter() {
                        self.outputs.push_back(Output::Send(
                            to,
                            Message::Claim {
                                epoch,
                                round: *round,
                                offset: self.record.offset,
                                watch: renewed.contains(&to),
                            },
                        ));
                    }
                }
            }
            Role::Claiming { retry_at, .. } => {
                if now >= *retry_at {
                    self.role = Role::Idle;
                }
            }
            Role::Idle => {}
        }
        let may_claim = now >= self.claim_after && !self.fenced(now);
        if matches!(self.role, Role::Idle) && leader == Some(self.me) && may_claim {
            let promise_free = now >= self.promise.until || self.promise.holder == Some(self.me);
            if promise_free {
                self.claim(view, now);
            }
        }
    }

    /// The next instant at which `handle_tick` has something to do, or `None` while only a new
    /// view or message can change anything: an idle node that is not the leader has no deadline
    /// of its own (no live node may host the bot, say), so its shell sleeps until an event.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.role {
            Role::Holding {
                valid_until,
                next_renew,
                awaiting,
                resend_at,
                ..
            } => {
                let resend = (!awaiting.is_empty()).then_some(*resend_at);
                [Some(*valid_until), Some(*next_renew), resend]
                    .into_iter()
                    .flatten()
                    .min()
            }
            Role::Claiming { retry_at, .. } => Some(*retry_at),
            Role::Idle if self.leader == Some(self.me) => {
                let promise = self.promise.until;
                Some(
                    promise
                        .max(self.claim_after)
                        .max(self.fenced_until.unwrap_or(promise)),
                )
            }
            // When the leader's last claim runs out, it goes quiet and the election may change.
            Role::Idle => self
                .leader
                .and_then(|leader| self.claim_heard.get(&leader))
                .map(|&(_, until)| until),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Claims a new epoch from every member, all told to watch: the set this node will renew
    /// with is chosen at its first renewal, and the others are told then to stop watching.
    fn claim(&mut self, view: &View, now: Instant) {
        let epoch = self.record.epoch.max(self.promise.epoch) + 1;
        self.promise = Promise {
            holder: Some(self.me),
            epoch,
            until: now + self.config.duration,
        };
        self.observe(Some(self.me), epoch);
        let told = view.others(self.me).collect();
        if self.quorum <= 1 {
            self.become_holder(epoch, now, told, now);
        } else {
            let mut grants = BTreeSet::new();
            grants.insert(self.me);
            self.role = Role::Claiming {
                epoch,
                sent_at: now,
                retry_at: now + self.config.renew_every,
                grants,
                told,
            };
        }
        self.outputs.push_back(Output::Broadcast(Message::Claim {
            epoch,
            round: 0,
            offset: self.record.offset,
            watch: true,
        }));
    }

    fn become_holder(
        &mut self,
        epoch: u64,
        sent_at: Instant,
        told: BTreeSet<NodeId>,
        now: Instant,
    ) {
        let valid_until = sent_at + self.config.duration - self.config.guard;
        if now >= valid_until {
            self.role = Role::Idle;
            return;
        }
        let was_holding = matches!(self.role, Role::Holding { .. });
        let mut grants = BTreeSet::new();
        grants.insert(self.me);
        self.role = Role::Holding {
            epoch,
            valid_until,
            next_renew: sent_at + self.config.renew_every,
            round: 0,
            round_sent_at: sent_at,
            grants,
            renewed: told,
            awaiting: BTreeSet::new(),
            resend_at: sent_at + self.config.renew_every,
        };
        if !was_holding {
            self.outputs.push_back(Output::StartBot {
                epoch,
                offset: self.record.offset,
            });
        }
    }

    /// Learns of a lease at `epoch`; any lease of ours with a lower epoch ends at once.
    fn observe(&mut self, holder: Option<NodeId>, epoch: u64) {
        if epoch < self.record.epoch {
            return;
        }
        self.record.epoch = epoch;
        self.record.holder = holder;
        let ours = match self.role {
            Role::Holding { epoch, .. } | Role::Claiming { epoch, .. } => Some(epoch),
            Role::Idle => None,
        };
        if let Some(ours) = ours
            && (ours < epoch || holder != Some(self.me))
        {
            self.stop(ours, StopReason::HigherEpoch);
        }
    }

    /// Stops holding and tells the members, so the next holder need not wait for a lapse.
    fn release(&mut self, epoch: u64, reason: StopReason, now: Instant) {
        self.stop(epoch, reason);
        self.promise.holder = None;
        self.promise.until = now;
        self.record.holder = None;
        self.outputs.push_back(Output::Broadcast(Message::Release {
            epoch,
            offset: self.record.offset,
        }));
    }

    fn stop(&mut self, epoch: u64, reason: StopReason) {
        if matches!(self.role, Role::Holding { .. }) {
            self.outputs.push_back(Output::StopBot { epoch, reason });
        }
        self.role = Role::Idle;
    }
}

#[cfg(test)]
mod tests {
    //! A simulated network of lease cores in virtual time: latency, partitions, crashes,
    //! restarts, frozen processes and clock jumps. Membership is modelled as SWIM behaves: a node
    //! drops out of a peer's view `DETECT` after it stopped being reachable.
    use super::*;
    use rand::{Rng as _, SeedableRng as _};

    const STEP: Duration = Duration::from_millis(10);
    const DETECT: Duration = Duration::from_millis(2000);

    struct Node {
        id: NodeId,
        standing: Standing,
        lease: Lease,
        alive: bool,
        frozen: bool,
        /// Forward jumps of this node's monotonic clock (suspend, VM pause).
        skew: Duration,
        bot: Option<u64>,
    }

    enum Packet {
        Message(Message),
        Vote(Vote),
    }

    struct Sim {
        start: Instant,
        now: Instant,
        nodes: Vec<Node>,
        cut: BTreeSet<usize>,
        latency: Duration,
        loss: f64,
        rng: rand::rngs::StdRng,
        queue: Vec<(Instant, usize, usize, Packet)>,
        last_seen: BTreeMap<(usize, usize), Instant>,
        holders: Vec<(usize, u64)>,
        /// How long after a node stops being reachable it leaves a peer's view.
        detect: Duration,
        /// Latency added on one direction of a link, to reorder messages.
        slow_links: BTreeMap<(usize, usize), Duration>,
        /// Claims sent, by receiver.
        claims_to: BTreeMap<usize, usize>,
    }

    impl Sim {
        fn new(standings: &[(u32, bool)]) -> Sim {
            let start = Instant::now();
            let nodes = standings
                .iter()
                .enumerate()
                .map(|(i, &(priority, can_host_bot))| {
                    let id = NodeId([i as u8 + 1; 16]);
                    Node {
                        id,
                        standing: Standing {
                            priority,
                            can_host_bot,
                        },
                        lease: Lease::new(
                            id,
                            LeaseConfig::default(),
                            Record::default(),
                            start,
                            Start::Restart,
                        ),
                        alive: true,
                        frozen: false,
                        skew: Duration::ZERO,
                        bot: None,
                    }
                })
                .collect();
            Sim {
                start,
                now: start,
                nodes,
                cut: BTreeSet::new(),
                latency: Duration::from_millis(20),
                loss: 0.0,
                rng: rand::rngs::StdRng::seed_from_u64(1),
                queue: Vec::new(),
                last_seen: BTreeMap::new(),
                holders: Vec::new(),
                detect: DETECT,
                slow_links: BTreeMap::new(),
                claims_to: BTreeMap::new(),
            }
        }

        fn reachable(&self, a: usize, b: usize) -> bool {
            a == b || self.cut.contains(&a) == self.cut.contains(&b)
        }

        fn local(&self, i: usize) -> Instant {
            self.now + self.nodes[i].skew
        }

        fn view(&mut self, i: usize) -> View {
            let mut live = BTreeMap::new();
            for j in 0..self.nodes.len() {
                if self.nodes[j].alive && !self.nodes[j].frozen && self.reachable(i, j) {
                    self.last_seen.insert((i, j), self.now);
                }
                let seen = self.last_seen.get(&(i, j)).copied().unwrap_or(self.start);
                if self.now.duration_since(seen) < self.detect {
                    live.insert(self.nodes[j].id, self.nodes[j].standing);
                }
            }
            View {
                live,
                members: self.nodes.len(),
            }
        }

        fn step(&mut self) {
            self.now += STEP;
            let due: Vec<_> = {
                let now = self.now;
                let (due, rest) = std::mem::take(&mut self.queue)
                    .into_iter()
                    .partition(|(at, ..)| *at <= now);
                self.queue = rest;
                due
            };
            for (_, from, to, packet) in due {
                let up = self.nodes[to].alive && !self.nodes[to].frozen;
                if !up || !self.reachable(from, to) {
                    continue;
                }
                let now = self.local(to);
                let from_id = self.nodes[from].id;
                match packet {
                    Packet::Message(Message::Claim {
                        epoch,
                        round,
                        offset,
                        watch,
                    }) => {
                        let vote = self.nodes[to].lease.handle_claim(
                            from_id,
                            Claim {
                                epoch,
                                round,
                                offset,
                                watch,
                            },
                            now,
                        );
                        self.send(to, from, Packet::Vote(vote));
                    }
                    Packet::Message(Message::Release { epoch, offset }) => self.nodes[to]
                        .lease
                        .handle_release(from_id, epoch, offset, now),
                    Packet::Vote(vote) => self.nodes[to].lease.handle_vote(from_id, vote, now),
                }
                self.drain(to);
            }
            for i in 0..self.nodes.len() {
                if self.nodes[i].alive && !self.nodes[i].frozen {
                    let view = self.view(i);
                    let now = self.local(i);
                    self.nodes[i].lease.handle_tick(&view, now);
                    self.drain(i);
                    // No busy loop: after a tick the next deadline is in the future, or there
                    // is none and the shell sleeps until an event.
                    let next = self.nodes[i].lease.poll_timeout();
                    assert!(
                        next.is_none_or(|at| at > now),
                        "node {i} has a deadline in the past: {next:?} at {now:?}"
                    );
                }
            }
            self.check();
        }

        fn send(&mut self, from: usize, to: usize, packet: Packet) {
            if matches!(packet, Packet::Message(Message::Claim { .. })) {
                *self.claims_to.entry(to).or_default() += 1;
            }
            if self.loss > 0.0 && self.rng.random_bool(self.loss) {
                return;
            }
            let jitter = Duration::from_millis(self.rng.random_range(0..=10));
            let slow = self
                .slow_links
                .get(&(from, to))
                .copied()
                .unwrap_or_default();
            self.queue
                .push((self.now + self.latency + jitter + slow, from, to, packet));
        }

        fn drain(&mut self, i: usize) {
            while let Some(out) = self.nodes[i].lease.poll_output() {
                match out {
                    Output::Broadcast(m) => {
                        for j in 0..self.nodes.len() {
                            if j != i {
                                self.send(i, j, Packet::Message(m));
                            }
                        }
                    }
                    Output::Send(to, m) => {
                        let j = self.index(to);
                        self.send(i, j, Packet::Message(m));
                    }
                    Output::StartBot { epoch, .. } => {
                        assert!(self.nodes[i].bot.is_none(), "bot started twice");
                        assert!(self.nodes[i].standing.can_host_bot);
                        self.nodes[i].bot = Some(epoch);
                    }
                    Output::StopBot { epoch, .. } => {
                        assert_eq!(self.nodes[i].bot.take(), Some(epoch));
                    }
                }
            }
        }

        /// Safety, checked after every step: at most one node holds the lease, and each new
        /// holder has a higher epoch than every earlier one.
        fn check(&mut self) {
            let holding: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].alive && self.nodes[i].lease.holds(self.local(i)))
                .collect();
            assert!(holding.len() <= 1, "two holders at once: {holding:?}");
            if let Some(&i) = holding.first() {
                let epoch = self.nodes[i].lease.record().epoch;
                match self.holders.last() {
                    Some(&(h, e)) if h == i && e == epoch => {}
                    Some(&(_, e)) => {
                        assert!(epoch > e, "epoch went from {e} to {epoch}");
                        self.holders.push((i, epoch));
                    }
                    None => self.holders.push((i, epoch)),
                }
            }
        }

        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.step();
            }
        }

        /// Runs until `node` holds the lease; returns how long that took.
        fn until_holder(&mut self, node: usize, limit: Duration) -> Duration {
            let begin = self.now;
            while !self.nodes[node].lease.holds(self.local(node)) {
                assert!(
                    self.now - begin < limit,
                    "node {node} did not get the lease within {limit:?}"
                );
                self.step();
            }
            self.now - begin
        }

        fn index(&self, id: NodeId) -> usize {
            self.nodes
                .iter()
                .position(|n| n.id == id)
                .expect("a node of the simulation")
        }

        fn holder(&self) -> Option<usize> {
            (0..self.nodes.len())
                .find(|&i| self.nodes[i].alive && self.nodes[i].lease.holds(self.local(i)))
        }

        fn crash(&mut self, i: usize) {
            self.nodes[i].alive = false;
            self.nodes[i].bot = None;
        }

        fn restart(&mut self, i: usize) {
            let record = self.nodes[i].lease.record();
            let now = self.local(i);
            self.nodes[i].lease = Lease::new(
                self.nodes[i].id,
                LeaseConfig::default(),
                record,
                now,
                Start::Restart,
            );
            self.nodes[i].alive = true;
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    /// The default lease duration: a starting node claims after one, a dead holder is replaced
    /// within one after its last renewal.
    fn lease() -> Duration {
        LeaseConfig::default().duration
    }

    #[test]
    fn the_best_bot_capable_node_leads_and_others_never_do() {
        // Node 0 has the best priority but no bot token; node 2 beats node 1 on priority.
        let mut sim = Sim::new(&[(0, false), (5, true), (1, true)]);
        sim.until_holder(2, lease() + SECOND);
        sim.run(20 * SECOND);
        assert_eq!(sim.holder(), Some(2));
        assert_eq!(
            sim.holders,
            [(2, 1)],
            "one holder, one epoch, renewed throughout"
        );
        assert_eq!(sim.nodes[0].bot, None);
        assert_eq!(sim.nodes[1].bot, None);
    }

    #[test]
    fn with_no_bot_token_anywhere_no_node_has_a_deadline() {
        for standings in [&[(1, false)][..], &[(1, false), (2, false), (3, false)]] {
            let mut sim = Sim::new(standings);
            sim.run(5 * SECOND);
            for node in &sim.nodes {
                assert_eq!(node.lease.poll_timeout(), None, "{standings:?}");
                assert!(node.bot.is_none());
            }
        }
    }

    #[test]
    fn equal_priorities_fall_back_to_the_smaller_node_id() {
        let mut sim = Sim::new(&[(1, true), (1, true), (1, true)]);
        sim.until_holder(0, lease() + SECOND);
    }

    #[test]
    fn killing_the_holder_moves_the_lease_within_the_failover_target() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.until_holder(0, lease() + SECOND);
        sim.run(5 * SECOND);
        sim.crash(0);
        let took = sim.until_holder(1, 3 * lease());
        assert!(took <= lease() + SECOND / 2, "failover took {took:?}");
        assert_eq!(sim.holders.iter().map(|h| h.1).collect::<Vec<_>>(), [1, 2]);
        // The old holder comes back: it is the better node, so the lease moves back to it.
        sim.restart(0);
        sim.until_holder(0, 3 * lease());
        assert_eq!(sim.holders.last(), Some(&(0, 3)));
    }

    #[test]
    fn a_dead_holder_is_replaced_after_one_lease_even_when_membership_is_slow_to_notice() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        // Membership that takes a minute to declare a node down (sparse probes).
        sim.detect = 60 * SECOND;
        sim.until_holder(0, lease() + SECOND);
        sim.run(5 * SECOND);
        sim.crash(0);
        let took = sim.until_holder(1, 3 * lease());
        assert!(took <= lease() + SECOND / 2, "failover took {took:?}");
        // The old holder comes back: its first claim puts it back in the election, and as the
        // better node it takes the lease back.
        sim.restart(0);
        sim.until_holder(0, 3 * lease());
        assert_eq!(sim.holders.last().map(|h| h.0), Some(0));
    }

    #[test]
    fn a_holder_that_dies_before_its_first_renewal_is_replaced_after_one_lease() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.detect = 60 * SECOND;
        sim.until_holder(0, lease() + SECOND);
        // Node 1 holds during a partition. After healing, node 0 claims the lease back: node 1,
        // still holding when the claim comes, refuses it and steps down; its release reaches
        // node 2 before node 0's claim does, so node 2 grants it and node 0 holds. Node 1 has
        // promised node 0 nothing, so no promise of its can lapse when node 0 dies.
        sim.cut.insert(0);
        sim.until_holder(1, 3 * lease());
        sim.slow_links.insert((0, 2), Duration::from_millis(60));
        sim.cut.clear();
        sim.until_holder(0, 3 * lease());
        assert_eq!(
            sim.holders.len(),
            3,
            "node 0's first claim after healing won"
        );
        sim.crash(0);
        let took = sim.until_holder(1, 3 * lease());
        assert!(took <= lease() + SECOND / 2, "failover took {took:?}");
    }

    #[test]
    fn the_holder_renews_with_a_quorum_only_its_successor_first() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, false), (4, true), (5, true)]);
        sim.detect = 60 * SECOND;
        sim.until_holder(0, lease() + SECOND);
        // The first renewal tells the members left out of the set to stop watching.
        sim.run(lease());
        sim.claims_to.clear();
        sim.run(60 * SECOND);
        let renew = LeaseConfig::default().renew_every;
        let rounds = usize::try_from((60 * SECOND).as_millis() / renew.as_millis()).expect("few");
        // A quorum of five is three: the holder and two members, the successor (node 1) and
        // the best-placed voter after it (node 3 cannot host the bot, so node 4 comes next).
        for member in [1, 3] {
            let got = sim.claims_to.get(&member).copied().unwrap_or(0);
            assert!((rounds..=rounds + 1).contains(&got), "node {member}: {got}");
        }
        for member in [2, 4] {
            assert_eq!(
                sim.claims_to.get(&member),
                None,
                "node {member} is not renewed"
            );
        }
        // The successor watches: it replaces a dead holder one lease after the last renewal,
        // long before membership (a minute here) notices.
        sim.crash(0);
        let took = sim.until_holder(1, 3 * lease());
        assert!(took <= lease() + SECOND / 2, "failover took {took:?}");
    }

    #[test]
    fn a_holder_whose_successor_dies_renews_with_the_other_members() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.detect = 60 * SECOND;
        sim.until_holder(0, lease() + SECOND);
        sim.crash(1);
        sim.run(50 * SECOND);
        assert_eq!(sim.holders, [(0, 1)], "one holder, one epoch");
    }

    #[test]
    fn renewals_lost_on_a_lossy_link_are_resent_and_the_lease_holds() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.until_holder(0, lease() + SECOND);
        // One datagram in five lost: renewals are three seconds apart, so without resends a
        // round whose claims or votes are lost would end the lease.
        sim.loss = 0.2;
        sim.run(120 * SECOND);
        assert_eq!(sim.holders, [(0, 1)], "one holder, one epoch");
    }

    #[test]
    fn a_partitioned_holder_stops_and_the_majority_elects_one() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.until_holder(0, lease() + SECOND);
        sim.cut.insert(0);
        let begin = sim.now;
        // The minority holder cannot renew: it stops by the end of its lease.
        while sim.nodes[0].lease.holds(sim.local(0)) {
            sim.step();
        }
        assert!(sim.now - begin <= lease());
        assert_eq!(sim.nodes[0].bot, None);
        sim.until_holder(1, lease() + SECOND);
        sim.run(30 * SECOND);
        assert_eq!(
            sim.holder(),
            Some(1),
            "the isolated node never regains it alone"
        );
        sim.cut.clear();
        sim.until_holder(0, 3 * lease());
        sim.run(10 * SECOND);
        assert_eq!(sim.holder(), Some(0));
        // Epochs only grow (checked at every step); the isolated node's failed claims used some.
        let holders: Vec<usize> = sim.holders.iter().map(|h| h.0).collect();
        assert_eq!(holders, [0, 1, 0]);
    }

    #[test]
    fn an_isolated_non_holder_cannot_take_the_lease() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.until_holder(0, lease() + SECOND);
        sim.cut.insert(1);
        sim.run(30 * SECOND);
        assert_eq!(sim.holders, [(0, 1)]);
        assert_eq!(sim.nodes[1].bot, None);
    }

    #[test]
    fn handover_to_a_better_node_carries_the_bot_offset() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.crash(0);
        sim.until_holder(1, 3 * lease());
        sim.nodes[1].lease.set_offset(4242);
        sim.run(2 * SECOND);
        sim.restart(0);
        sim.until_holder(0, 3 * lease());
        assert!(sim.nodes[0].lease.record().offset >= 4242);
        assert_eq!(sim.nodes[1].bot, None);
    }

    #[test]
    fn a_fenced_holder_releases_and_waits_before_claiming_again() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.until_holder(0, lease() + SECOND);
        let now = sim.local(0);
        sim.nodes[0].lease.fence(now);
        sim.drain(0);
        assert_eq!(sim.nodes[0].bot, None, "the bot stops at once");
        assert!(!sim.nodes[0].lease.holds(now));
        // Nobody holds while the leader is fenced: the others defer to it, it defers to the fence.
        sim.run(LeaseConfig::default().duration * FENCE_LEASES - SECOND);
        assert_eq!(sim.holder(), None);
        let waited = sim.until_holder(0, lease() + SECOND);
        assert!(waited <= 2 * SECOND, "claims again once the fence ends");
        let epochs: Vec<u64> = sim.holders.iter().map(|h| h.1).collect();
        assert_eq!(epochs, [1, 2], "the new lease has a higher epoch");
    }

    #[test]
    fn a_frozen_holder_stops_at_once_when_it_resumes() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.until_holder(0, lease() + SECOND);
        sim.nodes[0].frozen = true;
        sim.until_holder(1, 3 * lease());
        sim.nodes[0].frozen = false;
        sim.step();
        assert_eq!(sim.nodes[0].bot, None, "stopped on its first tick");
        sim.until_holder(0, 3 * lease());
    }

    #[test]
    fn a_holder_whose_clock_jumps_forward_stops_instead_of_overrunning() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.until_holder(0, lease() + SECOND);
        sim.nodes[0].skew = Duration::from_secs(3600);
        sim.step();
        sim.run(10 * SECOND);
        assert_eq!(sim.holder(), Some(0), "it renews again on its new clock");
        assert!(sim.holders.len() >= 2, "the jump ended the old lease");
    }

    #[test]
    fn a_restarted_voter_does_not_promise_twice() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.until_holder(0, lease() + SECOND);
        // Node 2 restarts and at once hears a claim from node 1: it must refuse while its old
        // promise to node 0 could still be live.
        sim.restart(2);
        let now = sim.local(2);
        let claimant = sim.nodes[1].id;
        let vote = sim.nodes[2].lease.handle_claim(
            claimant,
            Claim {
                epoch: 2,
                round: 0,
                offset: 0,
                watch: true,
            },
            now,
        );
        assert!(!vote.granted);
        sim.run(10 * SECOND);
        assert_eq!(sim.holders, [(0, 1)]);
    }

    #[test]
    fn two_node_networks_fail_over_without_a_majority() {
        let mut sim = Sim::new(&[(1, true), (2, true)]);
        sim.until_holder(0, lease() + SECOND);
        sim.crash(0);
        let took = sim.until_holder(1, 3 * lease());
        assert!(took <= lease() + SECOND / 2, "failover took {took:?}");
    }

    #[test]
    fn stale_records_from_gossip_stop_a_holder_with_a_lower_epoch() {
        let mut sim = Sim::new(&[(1, true), (2, true), (3, true)]);
        sim.until_holder(0, lease() + SECOND);
        let other = sim.nodes[1].id;
        sim.nodes[0].lease.handle_record(Some(other), 9, 0);
        sim.drain(0);
        assert_eq!(sim.nodes[0].bot, None);
        sim.run(10 * SECOND);
        assert_eq!(sim.nodes[0].lease.record().epoch, 10, "it reclaims above 9");
    }

    #[test]
    fn random_crashes_partitions_and_loss_never_give_two_holders() {
        for seed in 0..40 {
            let mut sim = Sim::new(&[(1, true), (2, true), (3, false), (4, true), (5, true)]);
            sim.rng = rand::rngs::StdRng::seed_from_u64(seed);
            sim.loss = 0.05;
            for _ in 0..30 {
                let pick = sim.rng.random_range(0..sim.nodes.len());
                match sim.rng.random_range(0..6) {
                    0 => sim.crash(pick),
                    1 if !sim.nodes[pick].alive => sim.restart(pick),
                    2 => {
                        sim.cut.insert(pick);
                    }
                    3 => sim.cut.clear(),
                    4 => sim.nodes[pick].frozen = !sim.nodes[pick].frozen,
                    _ => sim.latency = Duration::from_millis(sim.rng.random_range(1..400)),
                }
                let ms = sim.rng.random_range(100..4000);
                sim.run(Duration::from_millis(ms));
            }
            // Heal everything: exactly one holder, the best live bot-capable node.
            sim.cut.clear();
            sim.loss = 0.0;
            sim.latency = Duration::from_millis(20);
            for i in 0..sim.nodes.len() {
                sim.nodes[i].frozen = false;
                if !sim.nodes[i].alive {
                    sim.restart(i);
                }
            }
            sim.until_holder(0, 20 * SECOND);
        }
    }
}
