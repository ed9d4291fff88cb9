//! The async shell: one task that owns the UDP socket and drives the [`Stack`]. It sleeps
//! until a datagram arrives, the socket can take more, a socket operation asks for a poll, or
//! the stack's next deadline: an idle overlay wakes about once a second, for WireGuard's
//! timers, and not otherwise. With an OS interface it also moves packets between the TUN
//! device and the stack, with the same backpressure.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::device::MTU;
use crate::keys::{PrivateKey, PublicKey};
use crate::os_interface::OsInterface;
use crate::ping;
use crate::router::{Drops, PeerConfig, PeerStatus, Router, RouterError};
use crate::stack::Stack;
use crate::tcp::{TcpListener, TcpStream};
use crate::udp::UdpSocket as OverlayUdpSocket;
use crate::underlay::{ReceiveBuffer, Underlay};

/// Receives (each a datagram or a GRO train) taken in one go before smoltcp gets to answer.
const RECEIVE_BATCH: usize = 16;
/// Packets read from the OS interface in one go.
const HOST_BATCH: usize = 64;
/// The most datagrams one receive can hand over (a GRO train): the queues must have room for
/// that many before a receive.
const RECEIVE_ROOM: usize = 64;
/// Listening sockets kept ready per port: connections that can complete their handshake
/// while the application has not called `accept` yet.
const LISTEN_BACKLOG: usize = 4;

pub struct OverlayConfig {
    pub private_key: PrivateKey,
    /// This node's overlay address.
    pub address: Ipv4Addr,
    /// The overlay's address range; every address in it is reached through a peer.
    pub network: Ipv4Net,
    pub peers: Vec<PeerConfig>,
}

pub(crate) struct Shared {
    stack: Mutex<Stack>,
    /// Asks the runner to poll: data was written, a buffer drained, a socket opened.
    wake: Notify,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Stack> {
        // The stack holds no invariant a panicking socket call could leave half-done that
        // is worse than stopping the overlay, so a poisoned lock is taken over, not fatal.
        self.stack.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn wake_runner(&self) {
        self.wake.notify_one();
    }
}

/// The overlay as applications see it: cheap to clone, every call is short and non-blocking
/// apart from the waits that are awaited.
#[derive(Clone)]
pub struct Overlay {
    shared: Arc<Shared>,
}

/// Drives the overlay; must be spawned for anything to move.
#[must_use = "the overlay does nothing until its runner is spawned"]
pub struct Runner {
    shared: Arc<Shared>,
    socket: Underlay,
    network: Ipv4Net,
    /// The optional TUN device sharing this node's overlay address with the kernel.
    host: Option<OsInterface>,
}

/// Builds the overlay over an already bound UDP socket (the caller picks address and port).
pub fn new(config: OverlayConfig, socket: UdpSocket) -> Result<(Overlay, Runner), RouterError> {
    let now = Instant::now();
    let mut router = Router::new(config.private_key, config.address, now);
    for peer in config.peers {
        router.add_peer(peer)?;
    }
    let stack = Stack::new(router, config.network.prefix_len(), now);
    let network = config.network;
    let shared = Arc::new(Shared {
        stack: Mutex::new(stack),
        wake: Notify::new(),
    });
    Ok((
        Overlay {
            shared: Arc::clone(&shared),
        },
        Runner {
            shared,
            socket: Underlay::new(socket),
            network,
            host: None,
        },
    ))
}

impl Overlay {
    pub fn address(&self) -> Ipv4Addr {
        self.shared.lock().address()
    }

    pub fn public_key(&self) -> PublicKey {
        self.shared.lock().router.public_key()
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        self.shared.lock().router.peers()
    }

    pub fn drops(&self) -> Drops {
        self.shared.lock().router.drops()
    }

    /// The peer that carries traffic for `address`.
    pub fn route(&self, address: Ipv4Addr) -> Option<PublicKey> {
        self.shared.lock().router.route(address)
    }

    /// Adds or replaces a peer while running.
    pub fn add_peer(&self, peer: PeerConfig) -> Result<(), RouterError> {
        let result = self.shared.lock().router.add_peer(peer);
        self.shared.wake_runner();
        result
    }

    pub fn remove_peer(&self, key: &PublicKey) -> bool {
        self.shared.lock().router.remove_peer(key)
    }

    /// Opens a TCP connection through the overlay.
    pub async fn connect(&self, remote: SocketAddrV4) -> io::Result<TcpStream> {
        TcpStream::connect(Arc::clone(&self.shared), remote).await
    }

    /// Accepts TCP connections on the overlay address, port `port`.
    pub fn listen(&self, port: u16) -> io::Result<TcpListener> {
        TcpListener::bind(Arc::clone(&self.shared), port, LISTEN_BACKLOG)
    }

    /// A UDP socket on the overlay address, port `port`.
    pub fn bind_udp(&self, port: u16) -> io::Result<OverlayUdpSocket> {
        OverlayUdpSocket::bind(Arc::clone(&self.shared), port)
    }

    /// One ICMP echo round trip to `destination`.
    pub async fn ping(
        &self,
        destination: Ipv4Addr,
        sequence: u16,
        timeout: Duration,
    ) -> io::Result<Duration> {
        ping::echo(Arc::clone(&self.shared), destination, sequence, timeout).await
    }
}

impl Runner {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Also shows the overlay to the operating system as the TUN interface `name`, holding
    /// this node's overlay address (needs CAP_NET_ADMIN).
    pub fn with_os_interface(mut self, name: &str) -> io::Result<Runner> {
        let address = self.shared.lock().address();
        self.host = Some(OsInterface::create(name, address, self.network)?);
        self.shared.lock().enable_host();
        Ok(self)
    }

    /// Runs until the UDP socket (or the TUN device) fails for good.
    pub async fn run(self) -> io::Result<()> {
        let mut buffer = ReceiveBuffer::new();
        let mut train = Vec::new();
        let mut host_buffer = vec![0; MTU];
        loop {
            let now = Instant::now();
            let (deadline, take_datagrams, take_host, blocked, host_blocked) = {
                let mut stack = self.shared.lock();
                let (blocked, host_blocked) = loop {
                    stack.poll(now);
                    let host_blocked = self.flush_host(&mut stack);
                    match self.flush(&mut stack, &mut train) {
                        Flushed::Blocked => break (true, host_blocked),
                        Flushed::Nothing => break (false, host_blocked),
                        Flushed::Some => {}
                    }
                };
                (
                    stack.poll_timeout(now),
                    stack.datagram_room() >= RECEIVE_ROOM,
                    stack.can_take_host_packet(),
                    blocked,
                    host_blocked,
                )
            };
            let sleep = tokio::time::sleep_until(
                deadline.map_or_else(far_future, tokio::time::Instant::from_std),
            );
            let host = self.host.as_ref();
            tokio::select! {
                ready = self.socket.readable(), if take_datagrams => {
                    ready?;
                    self.receive(&mut buffer);
                }
                ready = self.socket.writable(), if blocked => ready?,
                read = read_host(host, &mut host_buffer, &self.shared), if take_host => read?,
                ready = host_writable(host), if host_blocked => ready?,
                () = self.shared.wake.notified() => {}
                () = sleep => {}
            }
        }
    }

    /// Hands the kernel what arrived for it; `true` when the TUN device is full.
    fn flush_host(&self, stack: &mut Stack) -> bool {
        let Some(host) = &self.host else {
            return false;
        };
        while let Some(packet) = stack.next_host_packet() {
            if !host.try_send(packet) {
                return true;
            }
            stack.pop_host_packet();
        }
        false
    }

    fn receive(&self, buffer: &mut ReceiveBuffer) {
        let mut stack = self.shared.lock();
        let now = Instant::now();
        for _ in 0..RECEIVE_BATCH {
            if stack.datagram_room() < RECEIVE_ROOM {
                break;
            }
            let received = self.socket.try_receive(buffer, |from, datagram| {
                stack.handle_datagram(now, from, datagram);
            });
            match received {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                // An ICMP error for an earlier send (a peer's port closed) surfaces here; it
                // says nothing about this socket, so keep reading.
                Err(error) => tracing::debug!(%error, "overlay UDP receive"),
            }
        }
    }

    fn flush(&self, stack: &mut Stack, train: &mut Vec<u8>) -> Flushed {
        let mut sent = false;
        loop {
            match self.socket.try_send(stack.datagrams(), train) {
                Ok(0) => break,
                Ok(count) => {
                    stack.pop_datagrams(count);
                    sent = true;
                }
                // `try_send` fails only with `WouldBlock`: other errors lose that train.
                Err(_) => return Flushed::Blocked,
            }
        }
        if sent {
            Flushed::Some
        } else {
            Flushed::Nothing
        }
    }
}

/// Reads a batch of the kernel's packets into the overlay; never ready without a TUN device.
async fn read_host(
    host: Option<&OsInterface>,
    buffer: &mut [u8],
    shared: &Shared,
) -> io::Result<()> {
    let Some(host) = host else {
        return std::future::pending().await;
    };
    host.read_batch(buffer, HOST_BATCH, |packet| {
        let mut stack = shared.lock();
        stack.handle_host_packet(packet);
        stack.can_take_host_packet()
    })
    .await
}

async fn host_writable(host: Option<&OsInterface>) -> io::Result<()> {
    match host {
        Some(host) => host.writable().await,
        None => std::future::pending().await,
    }
}

enum Flushed {
    Nothing,
    Some,
    Blocked,
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}
