//! The WireGuard side of the overlay, sans-IO: a peer table of boringtun tunnels that turns
//! UDP datagrams into IP packets and back, and relays between peers when this node is a hub.
//!
//! Inputs are [`Router::handle_datagram`], [`Router::handle_packet`] and
//! [`Router::handle_timeout`]; outputs go to a [`Sink`]. Nothing here opens a socket or
//! sleeps. boringtun reads the clock inside its tunnels, so only the tick schedule and the
//! rate-limiter window follow the `now` given here.
//!
//! What every datagram goes through, in order:
//! 1. one rate limiter for the whole interface, fed the datagram's source address, so a flood
//!    of handshake initiations gets cookie replies instead of costing a Diffie-Hellman each;
//! 2. the peer: by static key for an initiation (that costs one DH, after the limiter), by
//!    the receiver index otherwise; an unknown or removed key ends here;
//! 3. the tunnel, which authenticates and refuses replays (counter window, TAI64N timestamp);
//! 4. the inner source address must be one the sender owns (its allowed IPs);
//! 5. only then does the peer's endpoint move to where the datagram came from (roaming).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519;
use ipnet::Ipv4Net;

use crate::allowed_ips::AllowedIps;
use crate::keys::{PrivateKey, PublicKey};

/// Handshake messages per second the interface takes before it asks for cookies
/// (boringtun's own device uses the same figure).
const HANDSHAKES_PER_SECOND: u64 = 100;
/// boringtun's timers count in whole seconds; ticking faster only costs wake-ups.
const TICK: Duration = Duration::from_secs(1);
/// The largest UDP payload, so any datagram a peer sends fits after decryption.
const BUFFER: usize = 65_536;

/// Where the router's output goes: the UDP socket and the local IP stack.
pub trait Sink {
    fn to_network(&mut self, to: SocketAddr, datagram: &[u8]);
    fn to_local(&mut self, packet: &[u8]);
}

/// The index a tunnel was created with; boringtun puts it in the top 24 bits of its session
/// indices, so an incoming packet names its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PeerId(pub(crate) u32);

/// The message type of a cookie reply, the one WireGuard message that proves nothing about
/// its sender.
const COOKIE_REPLY: u8 = 3;

const MAX_PEER_ID: u32 = (1 << 24) - 1;

/// What a peer is allowed and where to find it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub allowed_ips: Vec<Ipv4Net>,
    /// Known up front for a hub; a hub learns its clients' endpoints from their packets.
    pub endpoint: Option<SocketAddr>,
    /// Seconds; a client behind NAT sets it so the mapping stays open.
    pub persistent_keepalive: Option<u16>,
}

/// One peer as `wg show` would print it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<Ipv4Net>,
    pub since_handshake: Option<Duration>,
    pub rx_bytes: usize,
    pub tx_bytes: usize,
    pub persistent_keepalive: Option<u16>,
}

/// Packets the router refused, by reason: the evidence for floods, spoofing and config gaps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Not a WireGuard message, or a bad mac1.
    pub malformed: u64,
    /// No peer with that key or index (a removed peer lands here).
    pub unknown_peer: u64,
    /// The tunnel refused it: bad authentication, a replay, an expired session.
    pub rejected: u64,
    /// Decrypted, but from an address the sender does not own (or, from the OS interface,
    /// not from this node's address).
    pub spoofed: u64,
    /// No peer's allowed IPs cover the destination, or that peer has no endpoint yet.
    pub no_route: u64,
    /// Cookie replies sent because handshakes came faster than a limiter takes: the
    /// interface's (100 a second from anyone) or a peer's (10 a second from it).
    pub cookies_sent: u64,
}

struct Peer {
    config: PeerConfig,
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    /// When a packet from it last authenticated: of two peers that own one address, the
    /// fresher gets the traffic.
    last_authenticated: Option<Instant>,
}

impl Peer {
    /// A genuine packet came from `from`: the endpoint roams there.
    fn authenticated(&mut self, from: SocketAddr, now: Instant) {
        self.endpoint = Some(from);
        self.last_authenticated = Some(now);
    }
}

/// Of the peers owning the longest prefix for `address`, the one that authenticated last (the
/// newest added while none has).
fn best_route(
    routes: &AllowedIps,
    peers: &BTreeMap<PeerId, Peer>,
    address: Ipv4Addr,
) -> Option<PeerId> {
    routes
        .lookup(address)
        .filter_map(|id| peers.get(&id).map(|peer| (peer.last_authenticated, id)))
        .max()
        .map(|(_, id)| id)
}

pub struct Router {
    private_key: PrivateKey,
    public_key: x25519::PublicKey,
    address: Ipv4Addr,
    limiter: Arc<RateLimiter>,
    limiter_window_start: Instant,
    peers: BTreeMap<PeerId, Peer>,
    by_key: BTreeMap<PublicKey, PeerId>,
    routes: AllowedIps,
    last_id: u32,
    next_tick: Instant,
    drops: Drops,
    inbound: Box<[u8]>,
    outbound: Box<[u8]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouterError {
    #[error("{0} is this node's own key")]
    OwnKey(PublicKey),
    #[error("no free peer index left")]
    Full,
}

impl Router {
    pub fn new(private_key: PrivateKey, address: Ipv4Addr, now: Instant) -> Self {
        let public_key = x25519::PublicKey::from(private_key.secret());
        Self {
            limiter: Arc::new(RateLimiter::new(&public_key, HANDSHAKES_PER_SECOND)),
            private_key,
            public_key,
            address,
            limiter_window_start: now,
            peers: BTreeMap::new(),
            by_key: BTreeMap::new(),
            routes: AllowedIps::default(),
            last_id: 0,
            next_tick: now + TICK,
            drops: Drops::default(),
            inbound: vec![0; BUFFER].into_boxed_slice(),
            outbound: vec![0; BUFFER].into_boxed_slice(),
        }
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn public_key(&self) -> PublicKey {
        self.private_key.public_key()
    }

    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Adds a peer, or replaces the one with the same key (fresh tunnel, new settings).
    pub fn add_peer(&mut self, config: PeerConfig) -> Result<(), RouterError> {
        if config.public_key == self.public_key() {
            return Err(RouterError::OwnKey(config.public_key));
        }
        self.remove_peer(&config.public_key);
        let id = self.free_id().ok_or(RouterError::Full)?;
        let tunn = Tunn::new(
            self.private_key.secret().clone(),
            config.public_key.to_x25519(),
            None,
            config.persistent_keepalive,
            id.0,
            // Each tunnel keeps its own small limiter as well (reset by its timers): the
            // shared one above runs first, so this one only ever sees a single peer's share.
            None,
        );
        for net in &config.allowed_ips {
            self.routes.insert(*net, id);
        }
        self.by_key.insert(config.public_key, id);
        self.peers.insert(
            id,
            Peer {
                endpoint: config.endpoint,
                last_authenticated: None,
                config,
                tunn,
            },
        );
        Ok(())
    }

    /// Forgets a peer: its sessions die with its tunnel, and its key no longer completes a
    /// handshake because the key lookup fails first.
    pub fn remove_peer(&mut self, key: &PublicKey) -> bool {
        let Some(id) = self.by_key.remove(key) else {
            return false;
        };
        self.peers.remove(&id);
        self.routes.remove_peer(id);
        true
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers
            .values()
            .map(|peer| {
                let (since_handshake, tx_bytes, rx_bytes, _, _) = peer.tunn.stats();
                PeerStatus {
                    public_key: peer.config.public_key,
                    endpoint: peer.endpoint,
                    allowed_ips: peer.config.allowed_ips.clone(),
                    since_handshake,
                    rx_bytes,
                    tx_bytes,
                    persistent_keepalive: peer.config.persistent_keepalive,
                }
            })
            .collect()
    }

    /// The peer that carries packets for `address`, if any.
    pub fn route(&self, address: Ipv4Addr) -> Option<PublicKey> {
        let id = best_route(&self.routes, &self.peers, address)?;
        self.peers.get(&id).map(|peer| peer.config.public_key)
    }

    fn free_id(&mut self) -> Option<PeerId> {
        for _ in 0..MAX_PEER_ID {
            self.last_id = self.last_id % MAX_PEER_ID + 1;
            let id = PeerId(self.last_id);
            if !self.peers.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// A UDP datagram arrived from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        sink: &mut impl Sink,
    ) {
        if now.duration_since(self.limiter_window_start) >= Duration::from_secs(1) {
            self.limiter.reset_count();
            self.limiter_window_start = now;
        }
        let id = match self
            .limiter
            .verify_packet(Some(from.ip()), datagram, &mut self.outbound)
        {
            Ok(packet) => self.peer_of(&packet),
            Err(TunnResult::WriteToNetwork(cookie)) => {
                self.drops.cookies_sent += 1;
                sink.to_network(from, cookie);
                return;
            }
            Err(_) => {
                self.drops.malformed += 1;
                return;
            }
        };
        let Some(id) = id else {
            self.drops.unknown_peer += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            self.drops.unknown_peer += 1;
            return;
        };
        let is_cookie_reply = |bytes: &[u8]| bytes.first() == Some(&COOKIE_REPLY);
        match peer
            .tunn
            .decapsulate(Some(from.ip()), datagram, &mut self.inbound)
        {
            // A keepalive, or a cookie reply taken in: only the first is proof of the peer.
            TunnResult::Done => {
                if !is_cookie_reply(datagram) {
                    peer.authenticated(from, now);
                }
            }
            TunnResult::Err(error) => {
                tracing::trace!(%from, ?error, "datagram refused by its tunnel");
                self.drops.rejected += 1;
            }
            TunnResult::WriteToNetwork(reply) => {
                // A cookie reply is sent before anything is authenticated (here by the
                // tunnel's own limiter: more than 10 handshakes a second from one peer); anything
                // else (a handshake response, queued data) means the datagram was genuine.
                if is_cookie_reply(reply) {
                    self.drops.cookies_sent += 1;
                } else {
                    peer.authenticated(from, now);
                }
                sink.to_network(from, reply);
                // Packets queued while the handshake ran go out now.
                while let TunnResult::WriteToNetwork(queued) =
                    peer.tunn.decapsulate(None, &[], &mut self.inbound)
                {
                    sink.to_network(from, queued);
                }
            }
            TunnResult::WriteToTunnelV4(packet, source) => {
                if !peer
                    .config
                    .allowed_ips
                    .iter()
                    .any(|net| net.contains(&source))
                {
                    self.drops.spoofed += 1;
                    return;
                }
                peer.authenticated(from, now);
                let length = packet.len();
                self.forward(id, length, sink);
            }
            TunnResult::WriteToTunnelV6(..) => self.drops.no_route += 1,
        }
    }

    /// Delivers a decrypted packet (in `self.inbound[..length]`) from peer `from`: to this
    /// node, or on to the peer that owns the destination.
    fn forward(&mut self, from: PeerId, length: usize, sink: &mut impl Sink) {
        let packet = &self.inbound[..length];
        let Some(IpAddr::V4(destination)) = Tunn::dst_address(packet) else {
            self.drops.no_route += 1;
            return;
        };
        if destination == self.address {
            sink.to_local(packet);
            return;
        }
        match best_route(&self.routes, &self.peers, destination) {
            // Never back where it came from: that would loop between two routers.
            Some(to) if to != from => {
                Self::encapsulate_to(
                    &mut self.peers,
                    &mut self.drops,
                    to,
                    packet,
                    &mut self.outbound,
                    sink,
                );
            }
            _ => self.drops.no_route += 1,
        }
    }

    /// An IP packet from the local stack, to be sent to the peer that owns its destination.
    pub fn handle_packet(&mut self, packet: &[u8], sink: &mut impl Sink) {
        let Some(IpAddr::V4(destination)) = Tunn::dst_address(packet) else {
            self.drops.no_route += 1;
            return;
        };
        if destination == self.address {
            sink.to_local(packet);
            return;
        }
        let Some(to) = best_route(&self.routes, &self.peers, destination) else {
            self.drops.no_route += 1;
            return;
        };
        Self::encapsulate_to(
            &mut self.peers,
            &mut self.drops,
            to,
            packet,
            &mut self.outbound,
            sink,
        );
    }

    /// A packet the operating system sent into the overlay (through an OS interface). Only
    /// this node's own address may be its source: the kernel would otherwise send whatever it
    /// forwards into the tunnel, which peers drop anyway; it counts as spoofed here.
    pub fn handle_host_packet(&mut self, packet: &[u8], sink: &mut impl Sink) {
        let ipv4_source = match packet {
            [first, _, _, _, _, _, _, _, _, _, _, _, a, b, c, d, ..] if first >> 4 == 4 => {
                Some(Ipv4Addr::new(*a, *b, *c, *d))
            }
            _ => None,
        };
        if ipv4_source != Some(self.address) {
            self.drops.spoofed += 1;
            return;
        }
        self.handle_packet(packet, sink);
    }

    fn encapsulate_to(
        peers: &mut BTreeMap<PeerId, Peer>,
        drops: &mut Drops,
        to: PeerId,
        packet: &[u8],
        buffer: &mut [u8],
        sink: &mut impl Sink,
    ) {
        let Some(peer) = peers.get_mut(&to) else {
            drops.no_route += 1;
            return;
        };
        let Some(endpoint) = peer.endpoint else {
            drops.no_route += 1;
            return;
        };
        match peer.tunn.encapsulate(packet, buffer) {
            // Without a session boringtun queues the packet and hands out an initiation.
            TunnResult::WriteToNetwork(datagram) => sink.to_network(endpoint, datagram),
            TunnResult::Err(error) => {
                tracing::debug!(peer = %peer.config.public_key, ?error, "could not encrypt");
                drops.no_route += 1;
            }
            TunnResult::Done
            | TunnResult::WriteToTunnelV4(..)
            | TunnResult::WriteToTunnelV6(..) => {}
        }
    }

    fn peer_of(&self, packet: &Packet<'_>) -> Option<PeerId> {
        match packet {
            Packet::HandshakeInit(init) => {
                let half =
                    parse_handshake_anon(self.private_key.secret(), &self.public_key, init).ok()?;
                self.by_key
                    .get(&PublicKey::from_bytes(half.peer_static_public))
                    .copied()
            }
            Packet::HandshakeResponse(response) => Some(PeerId(response.receiver_idx >> 8)),
            Packet::PacketCookieReply(reply) => Some(PeerId(reply.receiver_idx >> 8)),
            Packet::PacketData(data) => Some(PeerId(data.receiver_idx >> 8)),
        }
    }

    /// Runs the tunnels' timers: keepalives, rekeying, handshake retries. A client whose
    /// tunnel to the hub expired starts over, so a hub that was down is found again.
    pub fn handle_timeout(&mut self, now: Instant, sink: &mut impl Sink) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        for peer in self.peers.values_mut() {
            let Some(endpoint) = peer.endpoint else {
                continue;
            };
            match peer.tunn.update_timers(&mut self.outbound) {
                TunnResult::WriteToNetwork(datagram) => sink.to_network(endpoint, datagram),
                TunnResult::Err(WireGuardError::ConnectionExpired)
                    if peer.config.persistent_keepalive.is_some() =>
                {
                    if let TunnResult::WriteToNetwork(datagram) = peer
                        .tunn
                        .format_handshake_initiation(&mut self.outbound, false)
                    {
                        sink.to_network(endpoint, datagram);
                    }
                }
                _ => {}
            }
        }
    }

    /// When [`Router::handle_timeout`] next has work: once a second while there are peers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.peers.is_empty()).then_some(self.next_tick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a router emitted, in order.
    #[derive(Default)]
    struct Captured {
        network: Vec<(SocketAddr, Vec<u8>)>,
        local: Vec<Vec<u8>>,
    }

    impl Sink for Captured {
        fn to_network(&mut self, to: SocketAddr, datagram: &[u8]) {
            self.network.push((to, datagram.to_vec()));
        }
        fn to_local(&mut self, packet: &[u8]) {
            self.local.push(packet.to_vec());
        }
    }

    /// Routers on made-up underlay addresses, with datagrams delivered in memory.
    struct Lab {
        nodes: Vec<(SocketAddr, Router)>,
        delivered: Vec<Vec<Vec<u8>>>,
        now: Instant,
    }

    fn underlay(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 51_820))
    }

    fn overlay(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 42, 0, n)
    }

    fn net(text: &str) -> Ipv4Net {
        text.parse().expect("a test CIDR")
    }

    /// A minimal IPv4 header plus payload: enough for boringtun to find the length and the
    /// addresses (it checks neither checksum nor protocol).
    fn ipv4(source: Ipv4Addr, destination: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let length = u16::try_from(20 + payload.len()).expect("a small test packet");
        let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
        packet[2..4].copy_from_slice(&length.to_be_bytes());
        packet.extend_from_slice(&source.octets());
        packet.extend_from_slice(&destination.octets());
        packet.extend_from_slice(payload);
        packet
    }

    impl Lab {
        /// Node 0 is a hub on 10.42.0.1 with a /32 per client; clients route the /24 to it.
        fn hub_and_clients(clients: u8) -> (Self, Vec<PrivateKey>) {
            let now = Instant::now();
            let keys: Vec<PrivateKey> = (0..=clients).map(|_| PrivateKey::generate()).collect();
            let mut hub = Router::new(keys[0].clone(), overlay(1), now);
            let mut nodes = Vec::new();
            for n in 1..=clients {
                hub.add_peer(PeerConfig {
                    public_key: keys[usize::from(n)].public_key(),
                    allowed_ips: vec![Ipv4Net::from(overlay(n + 1))],
                    endpoint: None,
                    persistent_keepalive: None,
                })
                .expect("a client key");
            }
            nodes.push((underlay(1), hub));
            for n in 1..=clients {
                let mut client = Router::new(keys[usize::from(n)].clone(), overlay(n + 1), now);
                client
                    .add_peer(PeerConfig {
                        public_key: keys[0].public_key(),
                        allowed_ips: vec![net("10.42.0.0/24")],
                        endpoint: Some(underlay(1)),
                        persistent_keepalive: Some(25),
                    })
                    .expect("the hub key");
                nodes.push((underlay(n + 1), client));
            }
            let delivered = vec![Vec::new(); nodes.len()];
            (
                Self {
                    nodes,
                    delivered,
                    now,
                },
                keys,
            )
        }

        fn index_of(&self, address: SocketAddr) -> Option<usize> {
            self.nodes.iter().position(|(at, _)| *at == address)
        }

        /// Delivers datagrams until the network is quiet; returns how many moved.
        fn run(&mut self, mut pending: Vec<(SocketAddr, SocketAddr, Vec<u8>)>) -> usize {
            let mut moved = 0;
            while let Some((from, to, datagram)) = pending.pop() {
                moved += 1;
                let Some(index) = self.index_of(to) else {
                    continue;
                };
                let mut out = Captured::default();
                self.nodes[index]
                    .1
                    .handle_datagram(self.now, from, &datagram, &mut out);
                self.delivered[index].extend(out.local);
                pending.extend(
                    out.network
                        .into_iter()
                        .map(|(next, bytes)| (to, next, bytes)),
                );
            }
            moved
        }

        fn send(&mut self, node: usize, packet: &[u8]) -> usize {
            let mut out = Captured::default();
            self.nodes[node].1.handle_packet(packet, &mut out);
            let from = self.nodes[node].0;
            self.delivered[node].extend(out.local);
            self.run(
                out.network
                    .into_iter()
                    .map(|(to, bytes)| (from, to, bytes))
                    .collect(),
            )
        }

        fn drops(&self, node: usize) -> Drops {
            self.nodes[node].1.drops()
        }
    }

    #[test]
    fn a_client_reaches_the_hub_and_the_hub_learns_its_endpoint() {
        let (mut lab, _) = Lab::hub_and_clients(1);
        let packet = ipv4(overlay(2), overlay(1), b"hello hub");
        lab.send(1, &packet);
        assert_eq!(lab.delivered[0], vec![packet]);

        let reply = ipv4(overlay(1), overlay(2), b"hello client");
        lab.send(0, &reply);
        assert_eq!(lab.delivered[1], vec![reply]);
        assert_eq!(lab.nodes[0].1.peers()[0].endpoint, Some(underlay(2)));
    }

    #[test]
    fn the_hub_relays_between_two_clients() {
        let (mut lab, _) = Lab::hub_and_clients(2);
        // Both clients need a session with the hub before it can relay to them.
        lab.send(2, &ipv4(overlay(3), overlay(1), b"up"));
        let packet = ipv4(overlay(2), overlay(3), b"farm to farm");
        lab.send(1, &packet);
        assert_eq!(lab.delivered[2], vec![packet]);
        assert!(
            lab.delivered[0].len() == 1,
            "the hub kept nothing of the relay"
        );
    }

    #[test]
    fn a_packet_from_an_address_the_peer_does_not_own_is_dropped() {
        let (mut lab, _) = Lab::hub_and_clients(2);
        lab.send(1, &ipv4(overlay(2), overlay(1), b"handshake first"));
        let forged = ipv4(overlay(3), overlay(1), b"I am the other farm");
        lab.send(1, &forged);
        assert_eq!(lab.delivered[0].len(), 1);
        assert_eq!(lab.drops(0).spoofed, 1);
    }

    #[test]
    fn a_removed_peer_cannot_complete_a_handshake() {
        let (mut lab, keys) = Lab::hub_and_clients(1);
        assert!(lab.nodes[0].1.remove_peer(&keys[1].public_key()));
        lab.send(1, &ipv4(overlay(2), overlay(1), b"let me in"));
        assert!(lab.delivered[0].is_empty());
        assert_eq!(lab.drops(0).unknown_peer, 1);
        assert!(lab.nodes[0].1.peers().is_empty());
    }

    #[test]
    fn a_replayed_handshake_initiation_is_ignored() {
        let (mut lab, _) = Lab::hub_and_clients(1);
        let mut out = Captured::default();
        lab.nodes[1]
            .1
            .handle_packet(&ipv4(overlay(2), overlay(1), b"x"), &mut out);
        let (_, initiation) = out.network.pop().expect("an initiation");
        let mut first = Captured::default();
        let now = lab.now;
        lab.nodes[0]
            .1
            .handle_datagram(now, underlay(2), &initiation, &mut first);
        assert_eq!(first.network.len(), 1, "a response to the genuine one");

        // The same bytes again, from somewhere else: no response, and no roaming.
        let mut replayed = Captured::default();
        lab.nodes[0]
            .1
            .handle_datagram(now, underlay(9), &initiation, &mut replayed);
        assert!(replayed.network.is_empty());
        assert_eq!(lab.drops(0).rejected, 1);
        assert_eq!(lab.nodes[0].1.peers()[0].endpoint, Some(underlay(2)));
    }

    #[test]
    fn garbage_and_a_handshake_flood_cost_no_session() {
        let (mut lab, _) = Lab::hub_and_clients(1);
        let now = lab.now;
        let hub = &mut lab.nodes[0].1;
        let mut out = Captured::default();
        for length in [0, 1, 3, 4, 31, 32, 148, 1500] {
            hub.handle_datagram(now, underlay(9), &vec![0xa5; length], &mut out);
        }
        assert_eq!(hub.drops().malformed, 8);

        // Initiations from a key the hub does not know, faster than the limiter allows:
        // past the limit the hub answers with cookies instead of doing the DH.
        let stranger = PrivateKey::generate();
        let mut tunn = Tunn::new(
            stranger.secret().clone(),
            hub.public_key().to_x25519(),
            None,
            None,
            1,
            None,
        );
        let mut buffer = vec![0; 256];
        for _ in 0..150 {
            let TunnResult::WriteToNetwork(initiation) =
                tunn.format_handshake_initiation(&mut buffer, true)
            else {
                panic!("boringtun always formats an initiation");
            };
            hub.handle_datagram(now, underlay(9), initiation, &mut out);
        }
        let drops = hub.drops();
        assert!(drops.cookies_sent >= 50, "{drops:?}");
        assert_eq!(drops.unknown_peer + drops.cookies_sent, 150, "{drops:?}");
        assert!(out.local.is_empty());
        assert!(
            out.network
                .iter()
                .all(|(_, reply)| reply[0] == COOKIE_REPLY)
        );
    }

    #[test]
    fn timers_tick_once_a_second_and_only_with_peers() {
        let now = Instant::now();
        let mut lonely = Router::new(PrivateKey::generate(), overlay(1), now);
        assert_eq!(lonely.poll_timeout(), None);
        let (lab, _) = Lab::hub_and_clients(1);
        assert_eq!(lab.nodes[1].1.poll_timeout(), Some(lab.now + TICK));
        let mut out = Captured::default();
        lonely.handle_timeout(now + TICK, &mut out);
        assert!(out.network.is_empty());
    }
}
