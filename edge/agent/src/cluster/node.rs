//! The cluster's async shell: one task owns the membership core, the lease core, the shared
//! state and the replay windows, and reacts to a closed set of events. Every exchange with a
//! peer runs in its own task with its own deadline, so a hung peer never stalls the loop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};

use crate::bot;

use super::envelope::{self, Header, NetworkId, Rejected, ReplayWindow};
use super::identity::{NodeId, NodeKey, PublicKey};
use super::invite;
use super::lease::{self, Lease, LeaseConfig, Output, Standing, View};
use super::membership::{Change, Membership, Timing};
use super::netstate::{self, Invite, NetworkState, PeerInfo, Secrets, Seen, Shared};
use super::transport::{JOIN_PATH, MESSAGE_PATH, Transport, TransportError};
use super::wire::{
    self, Call, Hello, JoinReply, JoinRequest, Refusal, Reply, Request, Response, Welcome,
};

/// Cluster settings from the configuration file.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) timing: Timing,
    pub(crate) lease: LeaseConfig,
    pub(crate) reboot_command: Vec<String>,
    /// Where the Telegram Bot API is (a local Bot API server, or a test's).
    pub(crate) bot_api: url::Url,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timing: Timing::default(),
            lease: LeaseConfig::default(),
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            bot_api: url::Url::parse("https://api.telegram.org").expect("a valid constant URL"),
        }
    }
}

impl Settings {
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
        self.lease.renew_every = lease / 3;
        self.lease.guard = lease / 10;
        Ok(())
    }
}

/// Runs a call against this node's own API (the agent passes its router in).
pub(crate) type LocalCall = Arc<
    dyn Fn(bool, String) -> std::pin::Pin<Box<dyn Future<Output = (u16, Vec<u8>)> + Send>>
        + Send
        + Sync,
>;

/// One row of the cluster table.
#[derive(Clone, Debug)]
pub(crate) struct NodeRow {
    pub(crate) name: String,
    pub(crate) node_id: NodeId,
    pub(crate) addr: String,
    pub(crate) status: &'static str,
    pub(crate) last_seen: Option<u64>,
    pub(crate) priority: u32,
    pub(crate) bot: bool,
    pub(crate) leader: bool,
    pub(crate) lease_holder: bool,
    pub(crate) this_node: bool,
}

/// The cluster as this node sees it.
#[derive(Clone, Debug)]
pub(crate) struct Table {
    pub(crate) network_id: String,
    pub(crate) owner: String,
    pub(crate) nodes: Vec<NodeRow>,
    pub(crate) lease_holder: Option<String>,
    pub(crate) epoch: u64,
    pub(crate) bot_running: bool,
    /// A 409 from Telegram stopped this node's bot; it claims nothing until the fence ends.
    pub(crate) bot_fenced: bool,
    pub(crate) rejected: BTreeMap<String, u64>,
    pub(crate) traffic_sent: u64,
    pub(crate) traffic_received: u64,
}

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
    Call {
        name: String,
        call: Call,
        reply: oneshot::Sender<Result<(u16, Vec<u8>), String>>,
    },
}

/// Everything the loop reacts to.
pub(crate) enum Event {
    /// A signed envelope arrived; the answer (empty if refused) goes back on `reply`.
    Inbound {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
    Join {
        bytes: Vec<u8>,
        reply: oneshot::Sender<Vec<u8>>,
    },
    /// The members' answers to a redemption this node asked them to confirm.
    JoinConfirmed {
        pending: PendingJoin,
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

/// What the bot task reports to the loop.
pub(crate) enum BotEvent {
    /// Updates below `offset` are confirmed; the lease carries it to the next holder.
    Offset {
        epoch: u64,
        offset: u64,
    },
    Exited {
        epoch: u64,
        exit: bot::Exit,
    },
}

/// The bot task of the lease this node holds.
struct RunningBot {
    epoch: u64,
    stop: watch::Sender<bool>,
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
}

/// Signs outgoing envelopes; the counter is shared with call tasks.
#[derive(Clone)]
struct Signer {
    key: NodeKey,
    network: NetworkId,
    counter: Arc<AtomicU64>,
}

impl Signer {
    fn seal(&self, to: NodeId, body: &[u8]) -> (u64, Vec<u8>) {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
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
    windows: BTreeMap<NodeId, ReplayWindow>,
    peer_digest: BTreeMap<NodeId, [u8; 32]>,
    /// When each peer's last authenticated message arrived: evidence of life that also brings
    /// a healed partition back into the membership view.
    heard: BTreeMap<NodeId, Instant>,
    transport: Arc<dyn Transport>,
    traffic: Arc<super::transport::Traffic>,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    local: LocalCall,
    rejected: BTreeMap<String, u64>,
    bot: Option<RunningBot>,
    dirty: bool,
    next_persist: Instant,
    next_sync: Instant,
    sync_turn: usize,
}

const RESERVE: u64 = 1 << 32;
/// A peer heard from this recently counts as alive even before the membership layer agrees.
const HEARD_FOR: Duration = Duration::from_millis(2500);
const PERSIST_DEBOUNCE: Duration = Duration::from_secs(2);
/// Anti-entropy is the backstop: joins, invites and removals are pushed to everyone at once.
const SYNC_EVERY: Duration = Duration::from_secs(5);
const EXCHANGE_TIMEOUT: Duration = Duration::from_millis(1500);
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

impl Node {
    /// Loads the state directory and reserves a fresh range of message counters (saved before
    /// any message is sent, so a restart never reuses a counter).
    pub(crate) fn open(
        dir: PathBuf,
        settings: Settings,
        transport: Arc<dyn Transport>,
        traffic: Arc<super::transport::Traffic>,
        local: LocalCall,
    ) -> anyhow::Result<(Handle, Node)> {
        let (mut state, secrets) = netstate::load(&dir)?;
        let start = state.counter_reserved;
        state.counter_reserved = start.saturating_add(RESERVE);
        netstate::save_state(&dir, &state)?;
        let key = secrets.key();
        let me = key.id();
        let network = NetworkId::parse(&state.network_id).ok_or_else(|| {
            anyhow::anyhow!("{}: network_id is not 32 hex digits", netstate::STATE_FILE)
        })?;
        let now = Instant::now();
        let windows = state
            .replay_floor
            .iter()
            .map(|(id, floor)| (*id, ReplayWindow::starting_above(*floor)))
            .collect();
        let incarnation = (start / RESERVE) as u32;
        let membership = Membership::new(
            me,
            incarnation,
            settings.timing,
            start ^ u64::from_le_bytes(me.0[..8].try_into().unwrap_or_default()),
        );
        let record = lease::Record {
            holder: state.bot_lease.holder,
            epoch: state.bot_lease.epoch,
            offset: state.bot_lease.offset,
        };
        // Counters are reserved before the first message, so none reserved means never ran.
        let lease = Lease::new(me, settings.lease, record, now, start == 0);
        let (events_tx, events) = mpsc::channel(1024);
        let node = Node {
            dir,
            state,
            secrets,
            me,
            signer: Signer {
                key,
                network,
                counter: Arc::new(AtomicU64::new(start)),
            },
            settings,
            membership,
            lease,
            windows,
            peer_digest: BTreeMap::new(),
            heard: BTreeMap::new(),
            transport,
            traffic,
            events_tx: events_tx.clone(),
            events,
            local,
            rejected: BTreeMap::new(),
            bot: None,
            dirty: false,
            next_persist: now,
            next_sync: now,
            sync_turn: 0,
        };
        Ok((Handle { events: events_tx }, node))
    }

    pub(crate) fn listen(&self) -> &str {
        &self.state.listen
    }

    #[must_use = "the cluster does nothing unless its loop runs"]
    pub(crate) async fn run(mut self) {
        let now = Instant::now();
        let peers: Vec<NodeId> = self.others().collect();
        for peer in peers {
            self.membership.announce(peer, now);
        }
        self.flush_membership();
        loop {
            // Every timer is a deadline of a core or of the shell; with none due the loop
            // sleeps until an event arrives.
            let wake = [
                self.membership.poll_timeout(),
                self.lease.poll_timeout(),
                Some(self.next_sync),
                self.dirty.then_some(self.next_persist),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
                () = sleep_until(wake) => {}
            }
            self.tick(Instant::now());
        }
        self.persist();
    }

    fn tick(&mut self, now: Instant) {
        self.membership.handle_timeout(now);
        self.flush_membership();
        let view = self.view(now);
        self.lease.handle_tick(&view, now);
        self.flush_lease();
        if now >= self.next_sync {
            self.next_sync = now + SYNC_EVERY;
            self.sync_one();
        }
        if self.dirty && now >= self.next_persist {
            self.persist();
        }
    }

    fn handle(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Inbound { bytes, reply } => {
                let answer = match self.accept(&bytes) {
                    Ok((header, request)) => self.serve(header, request, now),
                    Err((from, why)) => {
                        *self.rejected.entry(reason_code(&why).into()).or_default() += 1;
                        tracing::warn!(from = ?from, reason = %why, "rejected a cluster message");
                        None
                    }
                };
                match answer {
                    Some(Served::Now(header, response)) => {
                        let _ = reply.send(Some(self.answer(header, response)));
                    }
                    Some(Served::Later(header, call)) => self.spawn_call(header, call, reply),
                    Some(Served::Silent) => {
                        let _ = reply.send(Some(Vec::new()));
                    }
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
            } => self.finish_join(pending, granted, refused),
            Event::Answer { from, response } => match response {
                Response::Vote(vote) => {
                    self.lease.handle_vote(from, vote, now);
                    self.flush_lease();
                }
                Response::Sync { digest, shared } => {
                    self.peer_digest.insert(from, digest);
                    if let Some(shared) = shared {
                        self.merge(&shared);
                    }
                }
                Response::Ack | Response::Call { .. } | Response::Consumed(_) => {}
            },
            Event::Command(command) => self.command(command),
            Event::Bot(BotEvent::Offset { epoch, offset }) => {
                tracing::debug!(epoch, offset, "bot confirmed updates");
                self.lease.set_offset(offset);
                self.flush_lease();
            }
            Event::Bot(BotEvent::Exited { epoch, exit }) => {
                if self.bot.as_ref().is_some_and(|b| b.epoch == epoch) {
                    self.bot = None;
                }
                if exit == bot::Exit::Fenced {
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

    /// Checks an inbound envelope: network, receiver, membership, signature, freshness, body.
    fn accept(&mut self, bytes: &[u8]) -> Result<(Header, Request), (Option<NodeId>, Rejected)> {
        let (header, body, signature) = envelope::parse(bytes).map_err(|e| (None, e))?;
        let from = Some(header.from);
        if header.network != self.signer.network {
            return Err((from, Rejected::WrongNetwork));
        }
        if header.to != self.me {
            return Err((from, Rejected::WrongReceiver));
        }
        if self.state.removed.contains(&header.from) {
            return Err((from, Rejected::RemovedSender));
        }
        let key = match self.state.peers.0.get(&header.from) {
            Some(peer) if header.from != self.me => peer.public_key,
            _ => return Err((from, Rejected::UnknownSender)),
        };
        if !envelope::verify(bytes, &signature, &key) {
            return Err((from, Rejected::BadSignature));
        }
        let window = self.windows.entry(header.from).or_default();
        if !window.accept(header.counter) {
            return Err((from, Rejected::Replayed(header.counter)));
        }
        let request =
            wire::decode::<Request>(body).ok_or((from, Rejected::Malformed("undecodable body")))?;
        let now = Instant::now();
        let previous = self.heard.insert(header.from, now);
        let known_live = self.membership.live().any(|id| id == header.from);
        let announce_due = previous.is_none_or(|at| now.duration_since(at) > HEARD_FOR);
        if !known_live && announce_due {
            self.membership.announce(header.from, now);
            self.flush_membership();
        }
        let seen = self.state.peers.1.entry(header.from).or_default();
        seen.last_seen = Some(unix_now());
        self.dirty = true;
        Ok((header, request))
    }

    fn serve(&mut self, header: Header, request: Request, now: Instant) -> Option<Served> {
        let response = match request {
            Request::Gossip(bytes) => {
                // SWIM answers with messages of its own (ack for ping), so the exchange itself
                // needs no signed reply: that halves the envelopes membership costs.
                self.membership.handle_data(&bytes, now);
                self.flush_membership();
                return Some(Served::Silent);
            }
            Request::Sync { digest, shared } => {
                if let Some(shared) = shared {
                    self.merge(&shared);
                }
                let mine = self.state.shared();
                let my_digest = mine.digest();
                self.peer_digest.insert(header.from, digest);
                Response::Sync {
                    digest: my_digest,
                    shared: (digest != my_digest).then(|| Box::new(mine)),
                }
            }
            Request::Lease(lease::Message::Claim {
                epoch,
                round,
                offset,
            }) => {
                let vote = self
                    .lease
                    .handle_claim(header.from, (epoch, round, offset), now);
                self.flush_lease();
                Response::Vote(vote)
            }
            Request::Lease(lease::Message::Release { epoch, offset }) => {
                self.lease.handle_release(header.from, epoch, offset, now);
                self.flush_lease();
                Response::Ack
            }
            Request::Consume { invite_id, name } => {
                Response::Consumed(self.consume(&invite_id, &name))
            }
            Request::Call(call) => {
                if call.mutates() {
                    // The replay floor must be on disk before a mutating call runs, or a
                    // restart could accept the same envelope again.
                    self.persist();
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

    fn command(&mut self, command: Command) {
        match command {
            Command::Table(reply) => {
                let _ = reply.send(self.table(Instant::now()));
            }
            Command::Invite { ttl, reply } => {
                let _ = reply.send(self.invite(ttl));
            }
            Command::Remove { name, reply } => {
                let _ = reply.send(self.remove(&name));
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
            if !self.state.removed.contains(&to)
                && let Some(peer) = self.state.peers.0.get(&to)
            {
                let (_, envelope) = self.signer.seal(to, &wire::encode(&Request::Gossip(bytes)));
                let send =
                    self.transport
                        .exchange(&peer.addr, MESSAGE_PATH, envelope, EXCHANGE_TIMEOUT);
                tokio::spawn(async move {
                    if let Err(e) = send.await {
                        tracing::trace!(to = ?to, error = %e, "gossip not delivered");
                    }
                });
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
        }
    }

    fn flush_lease(&mut self) {
        while let Some(output) = self.lease.poll_output() {
            match output {
                Output::Broadcast(message) => {
                    for to in self.others().collect::<Vec<_>>() {
                        self.send_and_feed(to, Request::Lease(message));
                    }
                }
                Output::StartBot { epoch, offset } => {
                    tracing::info!(epoch, offset, "this node holds the bot lease");
                    self.start_bot(epoch, offset);
                }
                Output::StopBot { epoch, reason } => {
                    tracing::info!(epoch, ?reason, "this node gave up the bot lease");
                    if let Some(bot) = self.bot.take() {
                        let _ = bot.stop.send(true);
                    }
                }
            }
        }
        let record = self.lease.record();
        if record.epoch > self.state.bot_lease.epoch || record.offset > self.state.bot_lease.offset
        {
            self.state.bot_lease.epoch = record.epoch;
            self.state.bot_lease.holder = record.holder;
            self.state.bot_lease.offset = self.state.bot_lease.offset.max(record.offset);
            self.dirty = true;
        }
    }

    /// Runs the bot for the lease at `epoch`, from the update id the lease carried.
    fn start_bot(&mut self, epoch: u64, offset: u64) {
        let Some(token) = self.secrets.bot_token.clone() else {
            tracing::warn!("this node holds the bot lease but has no bot token");
            return;
        };
        let setup = bot::BotSetup {
            api_url: self.settings.bot_api.clone(),
            token,
            owner: self.state.owner_username.clone(),
            cluster: Handle {
                events: self.events_tx.clone(),
            },
            local: self.local.clone(),
        };
        let (stop, stopped) = watch::channel(false);
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            let report = events.clone();
            let exit = bot::run(setup, offset, stopped, move |offset| {
                // A lost report is harmless: the next one carries a higher offset.
                let _ = report.try_send(Event::Bot(BotEvent::Offset { epoch, offset }));
            })
            .await;
            let _ = events
                .send(Event::Bot(BotEvent::Exited { epoch, exit }))
                .await;
        });
        self.bot = Some(RunningBot { epoch, stop });
    }

    fn view(&self, now: Instant) -> View {
        let mut live = BTreeMap::new();
        let standing = |p: &PeerInfo| Standing {
            priority: p.priority,
            can_host_bot: p.bot,
        };
        if let Some(me) = self.state.peers.0.get(&self.me) {
            live.insert(self.me, standing(me));
        }
        let heard = self
            .heard
            .iter()
            .filter(|(_, at)| now.duration_since(**at) < HEARD_FOR)
            .map(|(id, _)| *id);
        for id in self.membership.live().chain(heard) {
            if let Some(peer) = self.state.peers.0.get(&id) {
                live.insert(id, standing(peer));
            }
        }
        View {
            live,
            members: self.state.peers.0.len(),
        }
    }

    fn others(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.state
            .peers
            .0
            .keys()
            .copied()
            .filter(|id| *id != self.me)
    }

    /// Anti-entropy with one peer per round, in turn.
    fn sync_one(&mut self) {
        let others: Vec<NodeId> = self.others().collect();
        if others.is_empty() {
            return;
        }
        self.sync_turn = (self.sync_turn + 1) % others.len();
        self.sync_with(others[self.sync_turn]);
    }

    fn sync_with(&self, to: NodeId) {
        let shared = self.state.shared();
        let digest = shared.digest();
        let send_state = self.peer_digest.get(&to) != Some(&digest);
        self.send_and_feed(
            to,
            Request::Sync {
                digest,
                shared: send_state.then(|| Box::new(shared)),
            },
        );
    }

    /// Pushes the shared state to every peer at once (after a join, invite or removal).
    fn push_all(&mut self) {
        self.peer_digest.clear();
        for to in self.others().collect::<Vec<_>>() {
            self.sync_with(to);
        }
    }

    fn merge(&mut self, other: &Shared) {
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
        for id in &self.state.removed {
            self.windows.remove(id);
        }
        let now = Instant::now();
        for id in new_peers {
            self.membership.announce(id, now);
        }
        self.flush_membership();
        self.flush_lease();
        self.dirty = true;
    }

    fn table(&self, now: Instant) -> Table {
        let view = self.view(now);
        let leader = view.leader();
        let holder = if self.lease.holds(now) {
            Some(self.me)
        } else {
            self.state
                .bot_lease
                .holder
                .filter(|h| view.live.contains_key(h))
        };
        let nodes = self
            .state
            .peers
            .0
            .iter()
            .map(|(id, p)| {
                let seen = self.state.peers.1.get(id).cloned().unwrap_or_default();
                let status = if *id == self.me || view.live.contains_key(id) {
                    "alive"
                } else {
                    "down"
                };
                NodeRow {
                    name: p.name.clone(),
                    node_id: *id,
                    addr: p.addr.clone(),
                    status,
                    last_seen: if *id == self.me {
                        Some(unix_now())
                    } else {
                        seen.last_seen
                    },
                    priority: p.priority,
                    bot: p.bot,
                    leader: leader == Some(*id),
                    lease_holder: holder == Some(*id),
                    this_node: *id == self.me,
                }
            })
            .collect();
        Table {
            network_id: self.state.network_id.clone(),
            owner: self.state.owner_username.clone(),
            nodes,
            lease_holder: holder
                .and_then(|h| self.state.peers.0.get(&h))
                .map(|p| p.name.clone()),
            epoch: self.lease.record().epoch.max(self.state.bot_lease.epoch),
            bot_running: self.bot.is_some() && self.lease.holds(now),
            bot_fenced: self.lease.fenced(now),
            rejected: self.rejected.clone(),
            traffic_sent: self.traffic.sent.load(Ordering::Relaxed),
            traffic_received: self.traffic.received.load(Ordering::Relaxed),
        }
    }

    fn invite(&mut self, ttl: Duration) -> anyhow::Result<(String, u64)> {
        let token = invite::new_token();
        let expires_at = unix_now() + ttl.as_secs();
        let sealed_key = invite::seal(&self.secrets.network_key, &invite::invite_key(&token));
        self.state.invites.insert(
            invite::invite_id(&token),
            Invite {
                sealed_key,
                expires_at,
                used_by: None,
            },
        );
        let mut shared = self.state.shared();
        shared.prune_invites(unix_now());
        self.state.set_shared(shared);
        self.persist();
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
        };
        Ok((link.to_string(), expires_at))
    }

    fn remove(&mut self, name: &str) -> Result<(), String> {
        let shared = self.state.shared();
        let Some((id, _)) = shared.peer_by_name(name) else {
            return Err(format!("no node named {name:?} in this network"));
        };
        if id == self.me {
            return Err("a node cannot remove itself; run this on another node".into());
        }
        let mut shared = shared;
        shared.removed.insert(id);
        shared.peers.remove(&id);
        self.state.set_shared(shared);
        self.windows.remove(&id);
        self.persist();
        self.push_all();
        tracing::info!(peer = %name, "removed from the network");
        Ok(())
    }

    /// Serves a join request (see `invite` for the handshake).
    /// Checks a join request. An invite is redeemed only once a quorum of members (as for the
    /// lease) has recorded it as used by this joiner, so two joiners racing with one token at two
    /// nodes cannot both get in; the answer waits for that confirmation.
    fn join(&mut self, bytes: &[u8], reply: oneshot::Sender<Vec<u8>>) {
        let checked = match self.check_join(bytes) {
            Ok(checked) => checked,
            Err(refusal) => return refuse_join(reply, refusal),
        };
        let pending = PendingJoin { checked, reply };
        let quorum = self.join_quorum();
        if pending.checked.admitted || quorum <= 1 {
            return self.finish_join(pending, quorum, 0);
        }
        let (invite_id, name) = (
            pending.checked.invite_id.clone(),
            pending.checked.hello.name.clone(),
        );
        let mut shared = self.state.shared();
        if let Some(invite) = shared.invites.get_mut(&invite_id) {
            invite.used_by = Some(name.clone());
        }
        self.state.set_shared(shared);
        self.persist();
        let request = Request::Consume { invite_id, name };
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
                pending,
                granted,
                refused,
            };
            let _ = events.send(decided).await;
        });
    }

    /// Members needed to confirm a redemption: a majority, or one in networks of one or two.
    fn join_quorum(&self) -> usize {
        let members = self.state.peers.0.len();
        if members <= 2 { 1 } else { members / 2 + 1 }
    }

    /// Everything about a join request that needs no other node: token, network, name, key.
    fn check_join(&self, bytes: &[u8]) -> Result<CheckedJoin, Refusal> {
        let request = wire::decode::<JoinRequest>(bytes).ok_or(Refusal::UnknownToken)?;
        if request.network != self.signer.network.0 {
            return Err(Refusal::WrongNetwork);
        }
        let record = self
            .state
            .invites
            .get(&request.invite_id)
            .cloned()
            .ok_or(Refusal::UnknownToken)?;
        let key = invite::open(&self.secrets.network_key, &record.sealed_key)
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or(Refusal::UnknownToken)?;
        let hello = invite::open(
            &invite::request_key(&key, &request.ephemeral),
            &request.sealed,
        )
        .and_then(|plain| wire::decode::<Hello>(&plain))
        .ok_or(Refusal::UnknownToken)?;
        let id = NodeId::of(&hello.public_key);
        let shared = self.state.shared();
        let admitted = shared.peers.get(&id).is_some_and(|p| p.name == hello.name);
        match &record.used_by {
            // The joiner's earlier attempt succeeded but its answer was lost: answer again. Or
            // its confirmation is still open here: try it again.
            Some(used_by) if *used_by == hello.name => {}
            Some(_) => return Err(Refusal::UsedToken),
            None if record.expires_at <= unix_now() => return Err(Refusal::ExpiredToken),
            None => {}
        }
        if !admitted {
            if shared.removed.contains(&id) {
                return Err(Refusal::RemovedKey);
            }
            if shared.peer_by_name(&hello.name).is_some() || shared.peers.contains_key(&id) {
                return Err(Refusal::DuplicateName(hello.name));
            }
        }
        Ok(CheckedJoin {
            invite_id: request.invite_id,
            hello,
            id,
            key,
            ephemeral: request.ephemeral,
            admitted,
        })
    }

    /// Admits the joiner if `granted` members confirmed the redemption, and answers it.
    fn finish_join(&mut self, pending: PendingJoin, granted: usize, refused: usize) {
        let PendingJoin { checked, reply } = pending;
        let shared = self.state.shared();
        let admitted = shared
            .peers
            .get(&checked.id)
            .is_some_and(|p| p.name == checked.hello.name);
        if !admitted {
            if granted < self.join_quorum() {
                let refusal = if refused > 0 {
                    Refusal::UsedToken
                } else {
                    Refusal::NotConfirmed
                };
                return refuse_join(reply, refusal);
            }
            // Another joiner may have taken the name while the confirmation was out.
            if shared.peer_by_name(&checked.hello.name).is_some()
                || shared.peers.contains_key(&checked.id)
            {
                return refuse_join(reply, Refusal::DuplicateName(checked.hello.name));
            }
            self.admit(&checked);
        }
        let welcome = Welcome {
            network_id: self.signer.network.0,
            owner_username: self.state.owner_username.clone(),
            network_key: self.secrets.network_key,
            seed: self.me,
            shared: self.state.shared(),
        };
        let ephemeral = x25519_dalek::StaticSecret::random_from_rng(rand_core_compat());
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

    fn admit(&mut self, checked: &CheckedJoin) {
        let hello = &checked.hello;
        let mut shared = self.state.shared();
        shared.peers.insert(
            checked.id,
            PeerInfo {
                name: hello.name.clone(),
                addr: hello.addr.clone(),
                public_key: hello.public_key,
                priority: hello.priority,
                bot: hello.bot,
            },
        );
        if let Some(invite) = shared.invites.get_mut(&checked.invite_id) {
            invite.used_by = Some(hello.name.clone());
        }
        self.state.set_shared(shared);
        self.state.peers.1.insert(
            checked.id,
            Seen {
                status: "joining".into(),
                last_seen: Some(unix_now()),
            },
        );
        self.persist();
        self.push_all();
        self.membership.announce(checked.id, Instant::now());
        self.flush_membership();
        tracing::info!(peer = %hello.name, "a node joined");
    }

    /// A member asks us to record an invite as redeemed by `name`.
    fn consume(&mut self, invite_id: &str, name: &str) -> bool {
        let mut shared = self.state.shared();
        match shared.invites.get_mut(invite_id) {
            Some(invite) if invite.used_by.is_none() => {
                invite.used_by = Some(name.to_string());
                self.state.set_shared(shared);
                // On disk before the answer, so a restart cannot confirm a second joiner.
                self.persist();
                true
            }
            Some(invite) => invite.used_by.as_deref() == Some(name),
            // Not known here yet: we cannot vouch that nobody else redeemed it.
            None => false,
        }
    }

    fn persist(&mut self) {
        self.state.replay_floor = self
            .windows
            .iter()
            .map(|(id, w)| (*id, w.highest()))
            .collect();
        match netstate::save_state(&self.dir, &self.state) {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "failed to save the network state")
            }
        }
        self.next_persist = Instant::now() + PERSIST_DEBOUNCE;
    }
}

/// A join request that passed every local check.
pub(crate) struct CheckedJoin {
    invite_id: String,
    hello: Hello,
    id: NodeId,
    key: [u8; 32],
    ephemeral: [u8; 32],
    /// The joiner is already a member (its earlier answer was lost).
    admitted: bool,
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
    /// One-way: the HTTP answer carries no envelope.
    Silent,
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
    if let Some((post, path)) = call.local_request() {
        return local(post, path).await;
    }
    match call {
        Call::Speedtest { download, .. } => (200, vec![0x5A; download.min(64 << 20) as usize]),
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
    let body = serde_json::json!({"error": {"code": "call_failed", "message": message}});
    (status, body.to_string().into_bytes())
}

fn reason_code(why: &Rejected) -> &'static str {
    match why {
        Rejected::Malformed(_) => "malformed",
        Rejected::WrongNetwork => "wrong_network",
        Rejected::WrongReceiver => "wrong_receiver",
        Rejected::UnknownSender => "unknown_sender",
        Rejected::RemovedSender => "removed_sender",
        Rejected::BadSignature => "bad_signature",
        Rejected::Replayed(_) => "replayed",
    }
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

/// x25519-dalek takes a rand_core 0.6 RNG; the OS RNG through its own `getrandom` is that.
fn rand_core_compat() -> impl rand_core06::CryptoRng + rand_core06::RngCore {
    rand_core06::OsRng
}

/// Joins through a seed: proves the invite and returns the network's state for this node.
pub(crate) async fn join(
    transport: &dyn Transport,
    link: &invite::Link,
    hello: Hello,
    attempts: u32,
) -> anyhow::Result<Welcome> {
    let key = invite::invite_key(&link.token);
    let ephemeral = x25519_dalek::StaticSecret::random_from_rng(rand_core_compat());
    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let request = JoinRequest {
        network: link.network.0,
        invite_id: invite::invite_id(&link.token),
        ephemeral: ephemeral_public,
        sealed: invite::seal(
            &invite::request_key(&key, &ephemeral_public),
            &wire::encode(&hello),
        ),
    };
    let bytes = wire::encode(&request);
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    let answer = loop {
        match transport
            .exchange(
                &link.seed,
                JOIN_PATH,
                bytes.clone(),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(answer) => break answer,
            Err(e @ (TransportError::Unreachable { .. } | TransportError::Timeout(_)))
                if attempt < attempts =>
            {
                tracing::warn!(attempt, error = %e, "seed unreachable, retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
            Err(e) => anyhow::bail!(
                "cannot reach the seed {} after {attempt} attempts: {e}",
                link.seed
            ),
        }
    };
    match wire::decode::<JoinReply>(&answer) {
        Some(JoinReply::Welcome {
            ephemeral: seed_public,
            sealed,
        }) => {
            let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(seed_public));
            let welcome = invite::open(&invite::reply_key(&key, shared.as_bytes()), &sealed)
                .and_then(|plain| wire::decode::<Welcome>(&plain))
                .ok_or_else(|| anyhow::anyhow!("the seed's answer does not open with this invite: it is not a member of the network"))?;
            if welcome.network_id != link.network.0 {
                anyhow::bail!("{}", Refusal::WrongNetwork);
            }
            Ok(welcome)
        }
        Some(JoinReply::Refused(refusal)) => Err(anyhow::anyhow!("join refused: {refusal}")),
        None => anyhow::bail!("the seed {} did not answer as a Constella node", link.seed),
    }
}
