//! The cluster's async shell: one task owns the cores of `constella_cluster` (membership, lease,
//! inbox, anti-entropy) and the node's state, and reacts to a closed set of events. Small
//! one-way messages (SWIM, lease claims and votes, digests) go out as sealed datagrams without
//! waiting; every exchange over the stream transport runs in its own task with its own
//! deadline, so a hung peer never stalls the loop. Decisions live in the cores; this file does
//! I/O, the clock and persistence.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use constella_cluster::admission::{self, CheckedJoin, Consumed, Decision};
use constella_cluster::datagram::{self, Pairs};
use constella_cluster::envelope::{self, Header, NetworkId};
use constella_cluster::identity::{NodeId, NodeKey, PublicKey};
use constella_cluster::inbox::{Inbox, Members, Refused, Screen};
use constella_cluster::invite;
use constella_cluster::lease::{self, Claim, Lease, LeaseConfig, Output, Start};
use constella_cluster::membership::{Change, Membership, Timing};
use constella_cluster::shared::{Enrollment, Invite, PeerInfo, Shared};
use constella_cluster::sync::AntiEntropy;
use constella_cluster::table::{self, Sources, Table};
use constella_cluster::wire::{
    self, Call, Datagram, JoinReply, Method, Refusal, Reply, Request, Response, Welcome,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::datagrams::Datagrams;
use super::netstate::{self, NetworkState, Secrets, Seen};
use super::rejections::Rejections;
use super::transport::{MESSAGE_PATH, Traffic, Transport};
use crate::throttle::Throttle;

/// A timing profile: how often a node probes, renews the lease and syncs, traded against how
/// soon a dead lease holder is replaced and a dead member is shown down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    /// Failover in under 5 s; under 20 MB a day per node on the wire with the overlay.
    Standard,
    /// For farm boards on metered LTE: under 3 MB a day per node, failover within 30 s, a dead
    /// member shown down within a few minutes.
    Metered,
}

impl Profile {
    pub(crate) const NAMES: [&str; 2] = ["standard", "metered"];

    pub(crate) fn parse(name: &str) -> Option<Profile> {
        match name {
            "standard" => Some(Profile::Standard),
            "metered" => Some(Profile::Metered),
            _ => None,
        }
    }

    /// The probe period, `down_after` and lease duration the profile starts from.
    fn defaults(self) -> (Duration, Duration, Duration) {
        match self {
            Profile::Standard => (
                Duration::from_secs(12),
                Duration::from_secs(1),
                Duration::from_secs(5),
            ),
            Profile::Metered => (
                Duration::from_secs(60),
                Duration::from_secs(10),
                Duration::from_secs(28),
            ),
        }
    }

    /// When in its lease the holder renews. A renewal that loses a datagram is resent every
    /// tenth of the lease, so what is left after the renewal (less the guard) is room for
    /// resends: three at the standard 5 s, two at the metered 28 s, where each renewal costs
    /// more of the day's budget.
    fn renew_every(self, lease: Duration) -> Duration {
        match self {
            Profile::Standard => lease * 3 / 5,
            Profile::Metered => lease * 5 / 7,
        }
    }

    /// How often one peer is synced with: a backstop, since changes are pushed as they happen.
    fn sync_every(self) -> Duration {
        match self {
            Profile::Standard => Duration::from_secs(60),
            Profile::Metered => Duration::from_secs(300),
        }
    }
}

/// Cluster settings from the configuration file.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) profile: Profile,
    pub(crate) timing: Timing,
    pub(crate) lease: LeaseConfig,
    pub(crate) sync_every: Duration,
    pub(crate) reboot_command: Vec<String>,
    /// Where the Telegram Bot API is (a local Bot API server, or a test's).
    pub(crate) bot_api: url::Url,
}

impl Default for Settings {
    fn default() -> Self {
        Settings::for_profile(Profile::Standard)
    }
}

impl Settings {
    pub(crate) fn for_profile(profile: Profile) -> Settings {
        let (probe_period, down_after, lease) = profile.defaults();
        let mut settings = Settings {
            profile,
            timing: Timing::default(),
            lease: LeaseConfig::default(),
            sync_every: profile.sync_every(),
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            bot_api: url::Url::parse("https://api.telegram.org").expect("a valid constant URL"),
        };
        settings
            .apply_timing(probe_period, down_after, lease)
            .expect("the profiles' own timing is consistent");
        settings
    }

    /// Sets failure detection and lease timing together, keeping them consistent: foca needs
    /// the probe round trip below the period, and the lease must outlast a renewal.
    pub(crate) fn apply_timing(
        &mut self,
        probe_period: Duration,
        down_after: Duration,
        lease: Duration,
    ) -> Result<(), (&'static str, String)> {
        if probe_period < Duration::from_millis(100) {
            return Err(("probe_period", "must be at least 100ms".into()));
        }
        if lease < Duration::from_millis(500) {
            return Err(("lease_duration", "must be at least 500ms".into()));
        }
        self.timing.probe_period = probe_period;
        self.timing.probe_rtt = probe_period * 2 / 5;
        self.timing.suspect_after = down_after;
        self.lease.duration = lease;
        self.lease.renew_every = self.profile.renew_every(lease);
        self.lease.guard = lease * 3 / 50;
        self.lease.resend_every = lease / 10;
        Ok(())
    }
}

/// Runs a call against this node's own API (the agent passes its router in).
pub(crate) type LocalCall = Arc<
    dyn Fn(Method, String) -> std::pin::Pin<Box<dyn Future<Output = (u16, Vec<u8>)> + Send>>
        + Send
        + Sync,
>;

/// What the API can ask of the cluster.
pub(crate) enum Command {
    Table(oneshot::Sender<Table>),
    Invite {
        ttl: Duration,
        reply: oneshot::Sender<anyhow::Result<(String, u64)>>,
    },
    Remove {
        name: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Admit a standard WireGuard device (see `Shared::add_device`).
    AddDevice {
        name: String,
        public_key: [u8; 32],
        reply: oneshot::Sender<Result<DeviceGrant, String>>,
    },
    RemoveDevice {
        name: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Call {
        name: String,
        call: Call,
        reply: oneshot::Sender<Result<(u16, Vec<u8>), String>>,
    },
}

/// What a device's WireGuard configuration needs.
pub(crate) struct DeviceGrant {
    pub(crate) address: std::net::Ipv4Addr,
    pub(crate) network: ipnet::Ipv4Net,
    pub(crate) hub_public_key: [u8; 32],
    pub(crate) hub_endpoint: String,
}

/// Everything the loop reacts to.
pub(crate) enum Event {
    /// A signed envelope arrived; the answer (empty if refused) goes back on `reply`.
    Inbound {
        bytes: Bytes,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    Join {
        bytes: Bytes,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// The members' answers to a redemption this node asked them to confirm.
    JoinConfirmed {
        // Boxed: a join request is far larger than every other event.
        pending: Box<PendingJoin>,
        granted: usize,
        refused: usize,
    },
    /// A verified answer from a peer to one of our requests.
    Answer {
        from: NodeId,
        response: Response,
    },
    Command(Command),
    Bot(BotEvent),
}

/// The bot's turn this node holds: the agent runs the bot while it is `Some`.
#[derive(Clone)]
pub(crate) struct BotTurn {
    pub(crate) epoch: u64,
    /// The first update id to ask Telegram for.
    pub(crate) offset: u64,
    pub(crate) token: String,
    pub(crate) owner: String,
    pub(crate) api_url: url::Url,
}

/// How the bot of a turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BotExit {
    /// The turn ended and the bot was told to stop.
    Stopped,
    /// Another `getUpdates` poller terminated ours (HTTP 409).
    Fenced,
}

/// What the bot reports to the loop.
pub(crate) enum BotEvent {
    /// Updates below `offset` are confirmed; the lease carries it to the next holder.
    Offset {
        epoch: u64,
        offset: u64,
    },
    Exited {
        epoch: u64,
        exit: BotExit,
    },
}

/// A cheap handle to the running cluster.
#[derive(Clone)]
pub(crate) struct Handle {
    events: mpsc::Sender<Event>,
}

impl Handle {
    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.events.send(Event::Command(make(tx))).await.ok()?;
        rx.await.ok()
    }

    pub(crate) async fn deliver(&self, event: Event) {
        let _ = self.events.send(event).await;
    }

    /// Reports without waiting; a report lost to a full queue is harmless when a later one
    /// supersedes it (offsets only grow).
    pub(crate) fn try_deliver(&self, event: Event) {
        let _ = self.events.try_send(event);
    }
}

/// Signs outgoing envelopes; the counter is shared with call tasks.
#[derive(Clone)]
struct Signer {
    key: NodeKey,
    network: NetworkId,
    counter: Arc<AtomicU64>,
}

impl Signer {
    /// The next message counter: envelopes and datagrams draw from one sequence.
    fn next_counter(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn seal(&self, to: NodeId, body: &[u8]) -> (u64, Vec<u8>) {
        let counter = self.next_counter();
        let header = Header {
            network: self.network,
            from: self.key.id(),
            to,
            counter,
        };
        (counter, envelope::seal(&self.key, header, body))
    }
}

/// The loop's state.
pub(crate) struct Node {
    dir: PathBuf,
    state: NetworkState,
    secrets: Secrets,
    me: NodeId,
    signer: Signer,
    settings: Settings,
    membership: Membership,
    lease: Lease,
    inbox: Inbox,
    /// Keys for the sealed datagrams, one pair per member.
    pairs: Pairs,
    datagrams: Datagrams,
    /// The listen address from the state file.
    listen: std::net::SocketAddr,
    sync: AntiEntropy,
    /// When each peer's last authenticated message arrived (see `table::HEARD_FOR`).
    heard: BTreeMap<NodeId, Instant>,
    transport: Arc<dyn Transport>,
    traffic: Arc<Traffic>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    local: LocalCall,
    rejections: Arc<Rejections>,
    save_failures: Throttle,
    /// What the listener lets through before reading a body: follows the member table.
    screen: watch::Sender<Screen>,
    /// The bot turn the agent is asked to run.
    bot: watch::Sender<Option<BotTurn>>,
    /// The gossiped state, for the overlay's peers: follows members and invites.
    table: watch::Sender<Shared>,
    /// The shared state or this node's own records changed: saved within `PERSIST_DEBOUNCE`.
    dirty: bool,
    next_persist: Instant,
    /// Only when peers were last heard from (and the replay floors) changed: saved within
    /// `SEEN_PERSIST_EVERY`, since every message moves them and an SD card should not be
    /// rewritten every two seconds for that.
    seen_dirty: bool,
    next_seen_persist: Instant,
}

const RESERVE: u64 = 1 << 32;
const PERSIST_DEBOUNCE: Duration = Duration::from_secs(2);
/// A restart forgets at most this much of when peers were last heard from, and a datagram
/// replayed after a restart can only have been sent in this window: datagrams mutate nothing
/// that must survive a restart (docs/SECURITY.md), and mutating calls save their floor first.
const SEEN_PERSIST_EVERY: Duration = Duration::from_secs(60);
const EXCHANGE_TIMEOUT: Duration = Duration::from_millis(1500);
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

impl Node {
    /// Loads the state directory and reserves a fresh range of message counters (saved before
    /// any message is sent, so a restart never reuses a counter). The receiver tells the agent
    /// when to run the bot.
    ///
    /// The cluster's datagram socket is bound here, on the listen port: inside the overlay
    /// when there is one.
    pub(crate) fn open(
        dir: PathBuf,
        settings: Settings,
        transport: Arc<dyn Transport>,
        traffic: Arc<Traffic>,
        local: LocalCall,
        overlay: Option<&constella_overlay::Overlay>,
    ) -> anyhow::Result<(Handle, Node, watch::Receiver<Option<BotTurn>>)> {
        let (mut state, secrets) = netstate::load(&dir)?;
        let start = state.counter_reserved;
        state.counter_reserved = start.saturating_add(RESERVE);
        // A full disk must not keep the node from running: the reservation is held in memory
        // and saved by the loop's retries. Until it is, a crash would make the next start
        // reuse counters, which only gets this node's own messages refused as replays.
        let reserved = netstate::save_state(&dir, &state);
        if let Err(e) = &reserved {
            tracing::error!(
                error = %format!("{e:#}"),
                "cannot save the network state at start; running on and retrying"
            );
        }
        let key = secrets.key();
        let me = key.id();
        let network = NetworkId::parse(&state.network_id).ok_or_else(|| {
            anyhow::anyhow!("{}: network_id is not 32 hex digits", netstate::STATE_FILE)
        })?;
        let now = Instant::now();
        let incarnation = (start / RESERVE) as u32;
        let membership = Membership::new(
            me,
            incarnation,
            settings.timing,
            start ^ u64::from_le_bytes(me.0[..8].try_into().unwrap_or_default()),
        );
        // Counters are reserved before the first message, so none reserved means never ran.
        let run = if start == 0 {
            Start::FirstRun
        } else {
            Start::Restart
        };
        let lease = Lease::new(me, settings.lease, state.bot_lease, now, run);
        let sync_every = settings.sync_every;
        let inbox = Inbox::new(network, me, &state.replay_floor);
        let listen = state.listen.parse().with_context(|| {
            format!(
                "{}: listen: {:?} is not HOST:PORT",
                dir.join(netstate::STATE_FILE).display(),
                state.listen
            )
        })?;
        let datagrams = Datagrams::bind(listen, overlay)?;
        let (events_tx, events) = mpsc::channel(1024);
        let (bot, turns) = watch::channel(None);
        let table = watch::channel(state.shared()).0;
        let node = Node {
            dir,
            state,
            secrets,
            me,
            pairs: Pairs::new(key.clone(), network),
            datagrams,
            listen,
            signer: Signer {
                key,
                network,
                counter: Arc::new(AtomicU64::new(start)),
            },
            settings,
            membership,
            lease,
            inbox,
            sync: AntiEntropy::new(now, sync_every),
            heard: BTreeMap::new(),
            transport,
            traffic,
            events_tx: events_tx.clone(),
            events,
            local,
            rejections: Arc::default(),
            save_failures: Throttle::default(),
            screen: watch::channel(Screen::new(network, me)).0,
            table,
            bot,
            dirty: reserved.is_err(),
            next_persist: now + PERSIST_DEBOUNCE,
            seen_dirty: false,
            next_seen_persist: now + SEEN_PERSIST_EVERY,
        };
        Ok((Handle { events: events_tx }, node, turns))
    }

    /// Where peers reach this node: the cluster port (TCP for the stream transport, UDP for
    /// datagrams).
    pub(crate) fn listen(&self) -> std::net::SocketAddr {
        self.listen
    }

    /// The listener's screen, kept in step with the member table.
    pub(crate) fn screen(&self) -> watch::Receiver<Screen> {
        self.publish_members();
        self.screen.subscribe()
    }

    /// The member table and invites as they change, for the overlay's peers.
    pub(crate) fn member_table(&self) -> watch::Receiver<Shared> {
        self.table.subscribe()
    }

    pub(crate) fn id(&self) -> NodeId {
        self.me
    }

    /// Refused input, counted where the listener and the inbox both report it.
    pub(crate) fn rejections(&self) -> Arc<Rejections> {
        self.rejections.clone()
    }

    fn publish_members(&self) {
        let members = Members {
            peers: &self.state.peers.0,
            removed: &self.state.removed,
        };
        self.screen
            .send_if_modified(|screen| screen.update(members));
        let state = &self.state;
        self.table.send_if_modified(|table| {
            let changed = table.peers != state.peers.0
                || table.invites != state.invites
                || table.devices != state.devices;
            if changed {
                *table = state.shared();
            }
            changed
        });
    }

    #[must_use = "the cluster does nothing unless its loop runs"]
    pub(crate) async fn run(mut self) {
        let now = Instant::now();
        let peers: Vec<NodeId> = self.others().collect();
        for peer in peers {
            self.membership.announce(peer, now);
        }
        self.flush_membership();
        let mut buffer = [0u8; datagram::MAX_LEN + 1];
        loop {
            // Every timer is a deadline of a core or of the shell; with none due the loop
            // sleeps until an event arrives.
            let wake = [
                self.membership.poll_timeout(),
                self.lease.poll_timeout(),
                self.sync.poll_timeout(),
                self.dirty.then_some(self.next_persist),
                self.seen_dirty.then_some(self.next_seen_persist),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.handle(event, Instant::now()),
                    None => break,
                },
                bytes = self.datagrams.recv(&mut buffer) => {
                    self.receive_datagram(&bytes, Instant::now());
                }
                () = sleep_until(wake) => {}
            }
            self.tick(Instant::now());
            self.publish_members();
        }
        // Reported inside; at shutdown there is nothing else to do about it.
        let _ = self.persist();
    }

    fn tick(&mut self, now: Instant) {
        self.membership.handle_timeout(now);
        self.flush_membership();
        let view = self.view(now);
        self.lease.handle_tick(&view, now);
        self.flush_lease();
        let others: Vec<NodeId> = self.others().collect();
        if let Some(peer) = self.sync.handle_timeout(now, &others) {
            let digest = self.state.shared().digest();
            self.send_datagram(peer, &Datagram::Digest(digest));
        }
        let due = (self.dirty && now >= self.next_persist)
            || (self.seen_dirty && now >= self.next_seen_persist);
        if due {
            // Failures are reported inside and retried at the next deadline.
            let _ = self.persist();
        }
    }

    fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Inbound { bytes, reply } => {
                let answer = match self.accept(&bytes, now) {
                    Ok((header, request)) => self.serve(header, request, now),
                    Err(Refused { from, why }) => {
                        self.rejections.note(why.code(), from, &why);
                        None
                    }
                };
                match answer {
                    Some(Served::Now(header, response)) => {
                        let _ = reply.send(Some(self.answer(header, response)));
                    }
                    Some(Served::Later(header, call)) => self.spawn_call(header, call, reply),
                    None => {
                        let _ = reply.send(None);
                    }
                }
            }
            Event::Join { bytes, reply } => self.join(&bytes, reply),
            Event::JoinConfirmed {
                pending,
                granted,
                refused,
            } => self.finish_join(*pending, granted, refused, now),
            Event::Answer { from, response } => match response {
                Response::Sync { digest, shared } => {
                    self.sync.heard(from, digest);
                    if let Some(shared) = shared {
                        self.merge(&shared, now);
                    }
                }
                Response::Call { .. } | Response::Consumed(_) => {}
            },
            Event::Command(command) => self.command(command, now),
            Event::Bot(BotEvent::Offset { epoch, offset }) => {
                tracing::debug!(epoch, offset, "bot confirmed updates");
                self.lease.set_offset(offset);
                self.flush_lease();
            }
            Event::Bot(BotEvent::Exited { epoch, exit }) => {
                if self.running_epoch() == Some(epoch) {
                    self.bot.send_replace(None);
                }
                if exit == BotExit::Fenced {
                    tracing::warn!(
                        epoch,
                        "bot fenced by another poller; not claiming the lease for a while"
                    );
                    self.lease.fence(now);
                    self.flush_lease();
                }
            }
        }
    }

    /// Lets an inbound envelope through the inbox.
    fn accept(&mut self, bytes: &[u8], now: Instant) -> Result<(Header, Request), Refused> {
        let members = Members {
            peers: &self.state.peers.0,
            removed: &self.state.removed,
        };
        let (header, request) = self.inbox.accept(bytes, members)?;
        self.heard_from(header.from, now);
        Ok((header, request))
    }

    /// A member heard from is evidence of life.
    fn heard_from(&mut self, from: NodeId, now: Instant) {
        let previous = self.heard.insert(from, now);
        let known_live = self.membership.live().any(|id| id == from);
        let announce_due = previous.is_none_or(|at| now.duration_since(at) > table::HEARD_FOR);
        if !known_live && announce_due {
            self.membership.announce(from, now);
            self.flush_membership();
        }
        let seen = self.state.peers.1.entry(from).or_default();
        seen.last_seen = Some(unix_now());
        self.seen_dirty = true;
    }

    /// A datagram from the cluster port: through the inbox, then to its core.
    fn receive_datagram(&mut self, bytes: &[u8], now: Instant) {
        self.traffic
            .received
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let members = Members {
            peers: &self.state.peers.0,
            removed: &self.state.removed,
        };
        let (from, message) = match self.inbox.accept_datagram(bytes, members, &mut self.pairs) {
            Ok(accepted) => accepted,
            Err(Refused { from, why }) => {
                self.rejections.note(why.code(), from, &why);
                return;
            }
        };
        self.heard_from(from, now);
        match message {
            Datagram::Gossip(bytes) => {
                self.membership.handle_data(&bytes, now);
                self.flush_membership();
            }
            Datagram::Lease(lease::Message::Claim {
                epoch,
                round,
                offset,
                watch,
            }) => {
                let claim = Claim {
                    epoch,
                    round,
                    offset,
                    watch,
                };
                let vote = self.lease.handle_claim(from, claim, now);
                if round == 0 || !vote.granted {
                    tracing::debug!(%from, epoch, round, granted = vote.granted, known_epoch = vote.known_epoch, "lease claim");
                }
                self.flush_lease();
                self.send_datagram(from, &Datagram::Vote(vote));
            }
            Datagram::Lease(lease::Message::Release { epoch, offset }) => {
                self.lease.handle_release(from, epoch, offset, now);
                self.flush_lease();
            }
            Datagram::Vote(vote) => {
                if vote.round == 0 || !vote.granted {
                    tracing::debug!(%from, epoch = vote.epoch, round = vote.round, granted = vote.granted, known_epoch = vote.known_epoch, "lease vote");
                }
                self.lease.handle_vote(from, vote, now);
                self.flush_lease();
            }
            Datagram::Digest(digest) => {
                self.sync.heard(from, digest);
                if digest != self.state.shared().digest() {
                    // The states differ: exchange them over the stream transport.
                    self.sync_with(from);
                }
            }
        }
    }

    /// Seals `message` for `to` and sends it without waiting.
    fn send_datagram(&mut self, to: NodeId, message: &Datagram) {
        let Some(peer) = self.state.peers.0.get(&to) else {
            return;
        };
        let Some(keys) = self.pairs.with(to, &peer.public_key) else {
            tracing::debug!(to = ?to, "no datagram keys for this member's key");
            return;
        };
        let counter = self.signer.next_counter();
        let Some(bytes) = keys.seal(self.me, counter, &wire::encode(message)) else {
            tracing::warn!(to = ?to, "cluster datagram too large; not sent");
            return;
        };
        let length = bytes.len() as u64;
        match self.datagrams.send(&peer.addr, bytes) {
            Ok(()) => {
                self.traffic.sent.fetch_add(length, Ordering::Relaxed);
            }
            Err(error) => tracing::trace!(to = ?to, %error, "cluster datagram not sent"),
        }
    }

    fn serve(&mut self, header: Header, request: Request, now: Instant) -> Option<Served> {
        let response = match request {
            Request::Sync { digest, shared } => {
                if let Some(shared) = shared {
                    self.merge(&shared, now);
                }
                self.sync.answer(header.from, digest, &self.state.shared())
            }
            Request::Consume { invite_id, joiner } => {
                Response::Consumed(self.consume(&invite_id, joiner))
            }
            Request::Call(call) => {
                if call.mutates() {
                    // The replay floor must be on disk before a mutating call runs, or a
                    // restart could accept the same envelope again: if it cannot be saved,
                    // nothing runs.
                    if let Err(error) = self.persist() {
                        let (status, body) = json_error(
                            507,
                            &format!("this node cannot save its state ({error}); nothing was run"),
                        );
                        return Some(Served::Now(header, Response::Call { status, body }));
                    }
                }
                return Some(Served::Later(header, call));
            }
        };
        Some(Served::Now(header, response))
    }

    fn answer(&self, header: Header, response: Response) -> Vec<u8> {
        let body = wire::encode(&Reply {
            in_reply_to: header.counter,
            response,
        });
        self.signer.seal(header.from, &body).1
    }

    fn spawn_call(&self, header: Header, call: Call, reply: oneshot::Sender<Option<Vec<u8>>>) {
        let signer = self.signer.clone();
        let local = self.local.clone();
        let reboot = self.settings.reboot_command.clone();
        tokio::spawn(async move {
            let (status, body) = run_call(call, &local, &reboot).await;
            let body = wire::encode(&Reply {
                in_reply_to: header.counter,
                response: Response::Call { status, body },
            });
            let _ = reply.send(Some(signer.seal(header.from, &body).1));
        });
    }

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Table(reply) => {
                let _ = reply.send(self.table(now));
            }
            Command::Invite { ttl, reply } => {
                let _ = reply.send(self.invite(ttl));
            }
            Command::Remove { name, reply } => {
                let _ = reply.send(self.remove(&name));
            }
            Command::AddDevice {
                name,
                public_key,
                reply,
            } => {
                let _ = reply.send(self.add_device(&name, public_key));
            }
            Command::RemoveDevice { name, reply } => {
                let _ = reply
                    .send(self.change_shared(|shared| shared.remove_device(&name, unix_now())));
            }
            Command::Call { name, call, reply } => {
                let Some((id, peer)) = self
                    .state
                    .shared()
                    .peer_by_name(&name)
                    .map(|(i, p)| (i, p.clone()))
                else {
                    let _ = reply.send(Err(format!("no node named {name:?} in this network")));
                    return;
                };
                if id == self.me {
                    let local = self.local.clone();
                    let reboot = self.settings.reboot_command.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(Ok(run_call(call, &local, &reboot).await));
                    });
                    return;
                }
                let request = Request::Call(call);
                let exchange = self.exchange(id, &peer, &request, CALL_TIMEOUT);
                tokio::spawn(async move {
                    let result = match exchange.await {
                        Ok(Response::Call { status, body }) => Ok((status, body)),
                        Ok(_) => Err("unexpected answer".to_string()),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                });
            }
        }
    }

    /// Sends `request` to a peer and returns a future of its verified response.
    fn exchange(
        &self,
        to: NodeId,
        peer: &PeerInfo,
        request: &Request,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response, String>> + Send + 'static {
        let (counter, bytes) = self.signer.seal(to, &wire::encode(request));
        let send = self
            .transport
            .exchange(&peer.addr, MESSAGE_PATH, bytes, timeout);
        let key = peer.public_key;
        let (me, network) = (self.me, self.signer.network);
        async move {
            let answer = send.await.map_err(|e| e.to_string())?;
            verify_reply(
                &answer,
                Expect {
                    network,
                    from: to,
                    to: me,
                    key,
                    counter,
                },
            )
        }
    }

    fn send_and_feed(&self, to: NodeId, request: Request) {
        let Some(peer) = self.state.peers.0.get(&to) else {
            return;
        };
        let exchange = self.exchange(to, peer, &request, EXCHANGE_TIMEOUT);
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            match exchange.await {
                Ok(response) => {
                    let _ = events.send(Event::Answer { from: to, response }).await;
                }
                Err(e) => tracing::trace!(to = ?to, error = %e, "cluster exchange failed"),
            }
        });
    }

    fn flush_membership(&mut self) {
        while let Some((to, bytes)) = self.membership.poll_transmit() {
            if !self.state.removed.contains(&to) {
                self.send_datagram(to, &Datagram::Gossip(bytes));
            }
        }
        while let Some(change) = self.membership.poll_change() {
            let (id, status) = match change {
                Change::Up(id) => (id, "alive"),
                Change::Down(id) => (id, "down"),
            };
            if let Some(peer) = self.state.peers.0.get(&id) {
                tracing::info!(peer = %peer.name, status, "membership changed");
            }
            self.state.peers.1.entry(id).or_default().status = status.into();
            self.dirty = true;
            // A member back from a partition (or a restart) may hold another lease epoch or
            // miss changes: compare digests now rather than at its next sync turn, a minute
            // or more away.
            if matches!(change, Change::Up(_)) && !self.state.removed.contains(&id) {
                let digest = self.state.shared().digest();
                self.send_datagram(id, &Datagram::Digest(digest));
            }
        }
    }

    fn flush_lease(&mut self) {
        while let Some(output) = self.lease.poll_output() {
            match output {
                Output::Broadcast(message) => {
                    for to in self.others().collect::<Vec<_>>() {
                        self.send_datagram(to, &Datagram::Lease(message));
                    }
                }
                Output::Send(to, message) => self.send_datagram(to, &Datagram::Lease(message)),
                Output::StartBot { epoch, offset } => {
                    tracing::info!(epoch, offset, "this node holds the bot lease");
                    self.start_bot(epoch, offset);
                }
                Output::StopBot { epoch, reason } => {
                    tracing::info!(epoch, ?reason, "this node gave up the bot lease");
                    self.bot.send_replace(None);
                }
            }
        }
        let record = self.lease.record();
        let saved = self.state.bot_lease;
        if record.epoch > saved.epoch || record.offset > saved.offset {
            self.state.bot_lease.epoch = record.epoch;
            self.state.bot_lease.holder = record.holder;
            self.state.bot_lease.offset = saved.offset.max(record.offset);
            self.dirty = true;
        }
    }

    /// Asks the agent to run the bot for the lease at `epoch`, from the update id it carried.
    fn start_bot(&mut self, epoch: u64, offset: u64) {
        let Some(token) = self.secrets.bot_token.clone() else {
            tracing::warn!("this node holds the bot lease but has no bot token");
            return;
        };
        self.bot.send_replace(Some(BotTurn {
            epoch,
            offset,
            token,
            owner: self.state.owner_username.clone(),
            api_url: self.settings.bot_api.clone(),
        }));
    }

    fn running_epoch(&self) -> Option<u64> {
        self.bot.borrow().as_ref().map(|turn| turn.epoch)
    }

    fn view(&self, now: Instant) -> lease::View {
        table::live_view(
            self.me,
            &self.state.peers.0,
            self.membership.live(),
            &self.heard,
            now,
        )
    }

    fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.state
            .peers
            .0
            .keys()
            .copied()
            .filter(|id| *id != self.me)
    }

    fn sync_with(&self, to: NodeId) {
        let request = self.sync.request(to, &self.state.shared());
        self.send_and_feed(to, request);
    }

    /// Pushes the shared state to every peer at once (after a join, invite or removal).
    fn push_all(&mut self) {
        self.sync.forget_digests();
        for to in self.others().collect::<Vec<_>>() {
            self.sync_with(to);
        }
    }

    fn merge(&mut self, other: &Shared, now: Instant) {
        let mut shared = self.state.shared();
        if !shared.merge(other) {
            return;
        }
        let new_peers: Vec<NodeId> = shared
            .peers
            .keys()
            .filter(|id| !self.state.peers.0.contains_key(id))
            .copied()
            .collect();
        if shared.removed.contains(&self.me) {
            tracing::warn!("this node was removed from the network; it no longer takes part");
        }
        self.lease.handle_record(
            shared.bot_lease.holder,
            shared.bot_lease.epoch,
            shared.bot_lease.offset,
        );
        self.state.set_shared(shared);
        self.inbox.forget(&self.state.removed);
        self.pairs.forget(&self.state.removed);
        for id in new_peers {
            self.membership.announce(id, now);
        }
        self.flush_membership();
        self.flush_lease();
        self.dirty = true;
    }

    fn table(&self, now: Instant) -> Table {
        let last_seen = self
            .state
            .peers
            .1
            .iter()
            .filter_map(|(id, seen)| Some((*id, seen.last_seen?)))
            .collect();
        table::table(&Sources {
            network_id: &self.state.network_id,
            owner: &self.state.owner_username,
            me: self.me,
            peers: &self.state.peers.0,
            last_seen: &last_seen,
            view: &self.view(now),
            lease: &self.lease,
            record: self.state.bot_lease,
            bot_task: self.running_epoch().is_some(),
            rejected: &self.rejections.counts(),
            traffic: (
                self.traffic.sent.load(Ordering::Relaxed),
                self.traffic.received.load(Ordering::Relaxed),
            ),
            now,
            unix_now: unix_now(),
        })
    }

    fn invite(&mut self, ttl: Duration) -> anyhow::Result<(String, u64)> {
        let token = invite::new_token();
        let expires_at = unix_now() + ttl.as_secs();
        let invite_key = invite::invite_key(&token);
        let sealed_key = invite::seal(&self.secrets.network_key, &invite_key);
        let before = self.state.shared();
        let mut shared = before.clone();
        // In a network with a hub the invite holds an overlay address and admits a WireGuard
        // key derived from its own key, so the joiner can reach a member through the tunnel.
        let overlay = match shared.hub() {
            Some((_, hub_overlay, hub)) => {
                let address = shared
                    .free_overlay_address(unix_now())
                    .context("the overlay has no free address left; remove a node or widen it")?;
                let enrollment = constella_overlay::PrivateKey::from_bytes(
                    invite::enrollment_secret(&invite_key),
                );
                Some((
                    Enrollment {
                        public_key: *enrollment.public_key().as_bytes(),
                        address,
                    },
                    invite::LinkOverlay {
                        hub_endpoint: hub.endpoint.clone(),
                        hub_public_key: hub_overlay.public_key,
                        address,
                        prefix_len: hub.prefix_len,
                    },
                ))
            }
            None => None,
        };
        shared.invites.insert(
            invite::invite_id(&token),
            Invite {
                sealed_key,
                expires_at,
                used_by: None,
                enrollment: overlay.as_ref().map(|(enrollment, _)| enrollment.clone()),
            },
        );
        shared.prune_invites(unix_now());
        self.state.set_shared(shared);
        if let Err(error) = self.persist() {
            // An invite only this node's memory knows would vanish at a restart: none at all.
            self.state.set_shared(before);
            anyhow::bail!("cannot save the invite: {error}");
        }
        self.push_all();
        let seed = self
            .state
            .peers
            .0
            .get(&self.me)
            .map(|p| p.addr.clone())
            .unwrap_or_default();
        let link = invite::Link {
            seed,
            network: self.signer.network,
            token,
            ttl,
            overlay: overlay.map(|(_, link)| link),
        };
        Ok((link.to_string(), expires_at))
    }

    fn remove(&mut self, name: &str) -> Result<(), String> {
        let mut shared = self.state.shared();
        let Some((id, _)) = shared.peer_by_name(name) else {
            return Err(format!("no node named {name:?} in this network"));
        };
        if id == self.me {
            return Err("a node cannot remove itself; run this on another node".into());
        }
        let before = shared.clone();
        shared.removed.insert(id);
        shared.peers.remove(&id);
        self.state.set_shared(shared);
        if let Err(error) = self.persist() {
            self.state.set_shared(before);
            return Err(format!("cannot save the removal: {error}"));
        }
        self.inbox.forget(&self.state.removed);
        self.pairs.forget(&self.state.removed);
        self.push_all();
        tracing::info!(peer = %name, "removed from the network");
        Ok(())
    }

    fn add_device(&mut self, name: &str, public_key: [u8; 32]) -> Result<DeviceGrant, String> {
        let address =
            self.change_shared(|shared| shared.add_device(name, public_key, unix_now()))?;
        let shared = self.state.shared();
        let (_, hub_overlay, hub) = shared.hub().ok_or("the network has no hub")?;
        let network = ipnet::Ipv4Net::new(hub_overlay.address, hub.prefix_len)
            .map_err(|e| e.to_string())?
            .trunc();
        tracing::info!(device = name, %address, "WireGuard device added");
        Ok(DeviceGrant {
            address,
            network,
            hub_public_key: hub_overlay.public_key,
            hub_endpoint: hub.endpoint.clone(),
        })
    }

    /// Applies `change` to the shared state, saves it and gossips it; a failed save undoes it.
    fn change_shared<T>(
        &mut self,
        change: impl FnOnce(&mut Shared) -> Result<T, String>,
    ) -> Result<T, String> {
        let before = self.state.shared();
        let mut shared = before.clone();
        let out = change(&mut shared)?;
        self.state.set_shared(shared);
        if let Err(error) = self.persist() {
            self.state.set_shared(before);
            return Err(format!("cannot save the change: {error}"));
        }
        self.push_all();
        Ok(out)
    }

    /// Serves a join request (see `constella_cluster::admission`): the answer waits until a
    /// quorum of members confirmed the invite as redeemed by this joiner.
    fn join(&mut self, bytes: &[u8], reply: oneshot::Sender<Vec<u8>>) {
        let shared = self.state.shared();
        let checked = match admission::check(
            bytes,
            self.signer.network,
            &self.secrets.network_key,
            &shared,
            unix_now(),
        ) {
            Ok(checked) => checked,
            Err(refusal) => return refuse_join(reply, refusal),
        };
        let pending = PendingJoin { checked, reply };
        let quorum = lease::quorum(shared.peers.len());
        if pending.checked.admitted || quorum <= 1 {
            return self.finish_join(pending, quorum, 0, Instant::now());
        }
        let (invite_id, joiner) = (pending.checked.invite_id.clone(), pending.checked.id);
        let before = shared.clone();
        let mut shared = shared;
        admission::mark_used(&mut shared, &invite_id, joiner);
        self.state.set_shared(shared);
        if self.persist().is_err() {
            self.state.set_shared(before);
            return refuse_join(pending.reply, Refusal::NotConfirmed);
        }
        let request = Request::Consume { invite_id, joiner };
        let mut asks = tokio::task::JoinSet::new();
        for id in self.others().collect::<Vec<_>>() {
            if let Some(peer) = self.state.peers.0.get(&id) {
                asks.spawn(self.exchange(id, peer, &request, EXCHANGE_TIMEOUT));
            }
        }
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let (mut granted, mut refused) = (1, 0);
            while let Some(answer) = asks.join_next().await {
                match answer {
                    Ok(Ok(Response::Consumed(true))) => granted += 1,
                    Ok(Ok(Response::Consumed(false))) => refused += 1,
                    _ => {}
                }
            }
            let decided = Event::JoinConfirmed {
                pending: Box::new(pending),
                granted,
                refused,
            };
            let _ = events.send(decided).await;
        });
    }

    /// Admits the joiner if `granted` members confirmed the redemption, and answers it.
    fn finish_join(&mut self, pending: PendingJoin, granted: usize, refused: usize, now: Instant) {
        let PendingJoin { checked, reply } = pending;
        match admission::decide(&checked, &self.state.shared(), granted, refused) {
            Decision::Refuse(refusal) => return refuse_join(reply, refusal),
            Decision::Admit => self.admit(&checked, now),
            Decision::Welcome => {}
        }
        let welcome = Welcome {
            network_id: self.signer.network.0,
            owner_username: self.state.owner_username.clone(),
            network_key: self.secrets.network_key,
            seed: self.me,
            shared: self.state.shared(),
        };
        let ephemeral =
            x25519_dalek::StaticSecret::random_from_rng(super::setup::rand_core_compat());
        let shared_secret =
            ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(checked.ephemeral));
        let answer = JoinReply::Welcome {
            ephemeral: x25519_dalek::PublicKey::from(&ephemeral).to_bytes(),
            sealed: invite::seal(
                &invite::reply_key(&checked.key, shared_secret.as_bytes()),
                &wire::encode(&welcome),
            ),
        };
        let _ = reply.send(wire::encode(&answer));
    }

    fn admit(&mut self, checked: &CheckedJoin, now: Instant) {
        let mut shared = self.state.shared();
        admission::admit(&mut shared, checked);
        self.state.set_shared(shared);
        self.state.peers.1.insert(
            checked.id,
            Seen {
                status: "joining".into(),
                last_seen: Some(unix_now()),
            },
        );
        // A failed save is retried; the members that confirmed the redemption hold it too.
        let _ = self.persist();
        self.push_all();
        self.membership.announce(checked.id, now);
        self.flush_membership();
        tracing::info!(peer = %checked.hello.name, "a node joined");
    }

    /// A member asks us to record an invite as redeemed by the joiner `joiner`.
    fn consume(&mut self, invite_id: &str, joiner: NodeId) -> bool {
        let before = self.state.shared();
        let mut shared = before.clone();
        let consumed = admission::consume(&mut shared, invite_id, joiner);
        if consumed == Consumed::Recorded {
            self.state.set_shared(shared);
            // On disk before the answer, so a restart cannot confirm a second joiner.
            if self.persist().is_err() {
                self.state.set_shared(before);
                return false;
            }
        }
        consumed.confirms()
    }

    /// Saves the network state; on failure it stays dirty and is tried again at the next
    /// deadline. Callers that promise durability (a mutating call, an invite, a confirmation)
    /// check the result and refuse instead of answering success.
    fn persist(&mut self) -> Result<(), String> {
        self.state.replay_floor = self.inbox.floors();
        let now = Instant::now();
        self.next_persist = now + PERSIST_DEBOUNCE;
        self.next_seen_persist = now + SEEN_PERSIST_EVERY;
        match netstate::save_state(&self.dir, &self.state) {
            Ok(()) => {
                self.dirty = false;
                self.seen_dirty = false;
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                let error = format!("{e:#}");
                if let Some(unlogged) = self.save_failures.due("save_state", Instant::now()) {
                    tracing::error!(error = %error, unlogged, "failed to save the network state; will retry");
                }
                Err(error)
            }
        }
    }
}

/// A join waiting for the members to confirm its invite.
pub(crate) struct PendingJoin {
    checked: CheckedJoin,
    reply: oneshot::Sender<Vec<u8>>,
}

fn refuse_join(reply: oneshot::Sender<Vec<u8>>, refusal: Refusal) {
    tracing::warn!(reason = %refusal, "refused a join");
    let _ = reply.send(wire::encode(&JoinReply::Refused(refusal)));
}

enum Served {
    Now(Header, Response),
    Later(Header, Call),
}

struct Expect {
    network: NetworkId,
    from: NodeId,
    to: NodeId,
    key: PublicKey,
    counter: u64,
}

/// Checks that an answer is sealed by the peer we asked, for us, in reply to our request.
fn verify_reply(bytes: &[u8], expect: Expect) -> Result<Response, String> {
    let (header, body, signature) = envelope::parse(bytes).map_err(|e| e.to_string())?;
    if header.network != expect.network || header.from != expect.from || header.to != expect.to {
        return Err("answer from the wrong node".into());
    }
    if !envelope::verify(bytes, &signature, &expect.key) {
        return Err("answer with a bad signature".into());
    }
    let reply = wire::decode::<Reply>(body).ok_or("undecodable answer")?;
    if reply.in_reply_to != expect.counter {
        return Err("answer to another request".into());
    }
    Ok(reply.response)
}

async fn run_call(call: Call, local: &LocalCall, reboot: &[String]) -> (u16, Vec<u8>) {
    if let Some((method, path)) = call.local_request() {
        return local(method, path).await;
    }
    match call {
        Call::Speedtest { download, .. } => {
            let bytes = download.min(constella_cluster::wire::SPEEDTEST_BYTES);
            (200, vec![0x5A; bytes as usize])
        }
        Call::Reboot => {
            let Some((program, args)) = reboot.split_first() else {
                return json_error(500, "no reboot command is configured");
            };
            tracing::warn!(command = ?reboot, "reboot requested through the cluster");
            match tokio::process::Command::new(program)
                .args(args)
                .status()
                .await
            {
                Ok(status) if status.success() => (202, b"{\"rebooting\":true}".to_vec()),
                Ok(status) => json_error(500, &format!("reboot command failed: {status}")),
                Err(e) => json_error(500, &format!("reboot command failed: {e}")),
            }
        }
        _ => json_error(404, "no such call"),
    }
}

fn json_error(status: u16, message: &str) -> (u16, Vec<u8>) {
    let body = constella_api::ErrorBody {
        error: constella_api::ErrorDetail {
            code: "call_failed".into(),
            message: message.into(),
        },
    };
    (status, serde_json::to_vec(&body).unwrap_or_default())
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
