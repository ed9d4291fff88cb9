//! The whole overlay endpoint, sans-IO: the [`Router`] for WireGuard and a smoltcp interface
//! with its sockets for TCP/IP, joined by a [`QueueDevice`]. The shell feeds it datagrams and
//! time and sends what [`Stack::next_datagram`] hands out.
//!
//! Every queue is bounded and none drops. A datagram is read only when there is room for what
//! it can produce; smoltcp emits only while the device has room; the device is drained only
//! while the outbox has room; and the outbox empties only as fast as the UDP socket takes it.
//! A slow path therefore stops writers at their socket buffers instead of growing memory.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::wire::{HardwareAddress, IpCidr, IpEndpoint};

use crate::device::QueueDevice;
use crate::host;
use crate::router::{Router, Sink};

/// Packets the device holds each way.
const DEVICE_QUEUE: usize = 256;
/// Datagrams waiting for the UDP socket. One incoming datagram can add a few more than this
/// (a handshake releases the packets queued behind it), which keeps the bound soft but finite.
const OUTBOX: usize = 256;
/// Bytes of socket buffer each way per TCP connection, and so the window (scaled past 64 KiB).
/// A bulk transfer is window-bound on a fast path: 64 KiB gave 1.6 Gbit/s in the lab, 128 KiB
/// 2.7. Larger stalls: a window of 256 KiB overflows the peer's UDP receive buffer (208 KiB by
/// default, and an unprivileged process cannot raise it) and smoltcp recovers from a burst of
/// losses slowly.
const TCP_BUFFER: usize = 128 * 1024;
/// TCP connections open at once, listeners included: 64 × 256 KiB bounds the buffers at 16 MiB.
const MAX_TCP_SOCKETS: usize = 64;
/// A connection whose data goes unacknowledged this long is given up.
const TCP_TIMEOUT: Duration = Duration::from_secs(30);
/// Datagrams (and bytes) a UDP socket buffers each way: bursts of small cluster messages.
const UDP_PACKETS: usize = 64;
const UDP_BUFFER: usize = 64 * 1024;
/// Local ports for smoltcp's own connections: above Linux's default ephemeral range
/// (32768–60999), so that with an OS interface sharing the address (`host`) a reply always
/// reaches the stack that opened the connection.
pub(crate) const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 61_000..=65_535;
/// Packets waiting for the OS interface, when there is one.
const HOST_QUEUE: usize = 256;

pub(crate) struct Datagram {
    pub(crate) to: SocketAddr,
    pub(crate) bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StackError {
    #[error("too many overlay connections open ({MAX_TCP_SOCKETS})")]
    TooManySockets,
    #[error("no free local port")]
    NoFreePort,
    #[error("overlay port {0} is already listened on")]
    PortInUse(u16),
}

/// The router's outputs land in the outbox and in the device's inbound queue, or in the OS
/// interface's queue for flows smoltcp does not own.
struct Outputs<'a> {
    network: &'a mut VecDeque<Datagram>,
    local: &'a mut VecDeque<Vec<u8>>,
    host: Option<HostOutput<'a>>,
}

struct HostOutput<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
    sockets: &'a SocketSet<'static>,
    echo_idents: &'a BTreeMap<SocketHandle, u16>,
}

impl Sink for Outputs<'_> {
    fn to_network(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.network.push_back(Datagram {
            to,
            bytes: datagram.to_vec(),
        });
    }

    fn to_local(&mut self, packet: &[u8]) {
        match &mut self.host {
            Some(host) if !host::belongs_to_stack(packet, host.sockets, host.echo_idents) => {
                host.queue.push_back(packet.to_vec());
            }
            _ => self.local.push_back(packet.to_vec()),
        }
    }
}

pub(crate) struct Stack {
    pub(crate) router: Router,
    iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    device: QueueDevice,
    outbox: VecDeque<Datagram>,
    /// smoltcp counts time from here.
    epoch: Instant,
    listeners: BTreeMap<u16, Vec<SocketHandle>>,
    /// Sockets their owner let go of; removed once closed.
    closing: Vec<SocketHandle>,
    tcp_sockets: usize,
    last_port: u16,
    /// ICMP sockets and the echo identifier each is bound to.
    echo_idents: BTreeMap<SocketHandle, u16>,
    /// Packets for the OS interface; `None` without one.
    host: Option<VecDeque<Vec<u8>>>,
}

impl Stack {
    pub(crate) fn new(router: Router, prefix_len: u8, now: Instant) -> Self {
        let mut device = QueueDevice::new(DEVICE_QUEUE);
        let epoch = now;
        let mut iface = Interface::new(
            Config::new(HardwareAddress::Ip),
            &mut device,
            smoltcp::time::Instant::ZERO,
        );
        let address = router.address();
        iface.update_ip_addrs(|addresses| {
            addresses
                .push(IpCidr::new(address.into(), prefix_len))
                .expect("a fresh interface has room for one address");
        });
        Self {
            router,
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            outbox: VecDeque::with_capacity(OUTBOX),
            epoch,
            listeners: BTreeMap::new(),
            closing: Vec::new(),
            tcp_sockets: 0,
            // A random start, as RFC 6056 advises: a restarted agent (or the joiner's short-lived
            // enrollment overlay before it) must not reopen the 4-tuple of a connection the
            // peer still holds from the previous run.
            last_port: rand::random_range(EPHEMERAL_PORTS),
            echo_idents: BTreeMap::new(),
            host: None,
        }
    }

    fn smoltcp_time(&self, now: Instant) -> smoltcp::time::Instant {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        smoltcp::time::Instant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// How many datagrams can be taken in without overfilling a queue (each yields at most one
    /// packet for smoltcp, the outbox or the OS interface).
    pub(crate) fn datagram_room(&self) -> usize {
        let host = self
            .host
            .as_ref()
            .map_or(usize::MAX, |queue| HOST_QUEUE.saturating_sub(queue.len()));
        self.device
            .inbound_room()
            .min(OUTBOX.saturating_sub(self.outbox.len()))
            .min(host)
    }

    pub(crate) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let mut outputs = Outputs {
            network: &mut self.outbox,
            local: &mut self.device.inbound,
            host: self.host.as_mut().map(|queue| HostOutput {
                queue,
                sockets: &self.sockets,
                echo_idents: &self.echo_idents,
            }),
        };
        self.router
            .handle_datagram(now, from, datagram, &mut outputs);
    }

    /// From now on packets for this node that smoltcp does not own go to the OS interface.
    pub(crate) fn enable_host(&mut self) {
        self.host
            .get_or_insert_with(|| VecDeque::with_capacity(HOST_QUEUE));
    }

    /// Whether a packet from the OS interface can be taken in: it can produce a datagram.
    pub(crate) fn can_take_host_packet(&self) -> bool {
        self.outbox.len() < OUTBOX
    }

    /// A packet the kernel sent into the overlay.
    pub(crate) fn handle_host_packet(&mut self, packet: &[u8]) {
        let mut outputs = Outputs {
            network: &mut self.outbox,
            local: &mut self.device.inbound,
            host: None,
        };
        self.router.handle_host_packet(packet, &mut outputs);
    }

    pub(crate) fn next_host_packet(&self) -> Option<&[u8]> {
        self.host.as_ref()?.front().map(Vec::as_slice)
    }

    pub(crate) fn pop_host_packet(&mut self) {
        if let Some(queue) = &mut self.host {
            queue.pop_front();
        }
    }

    /// Moves everything that can move: packets into and out of smoltcp, timers, reaping.
    pub(crate) fn poll(&mut self, now: Instant) {
        let time = self.smoltcp_time(now);
        loop {
            self.iface.poll(time, &mut self.device, &mut self.sockets);
            let mut moved = false;
            while self.outbox.len() < OUTBOX {
                let Some(packet) = self.device.outbound.pop_front() else {
                    break;
                };
                // smoltcp's packets to this node's own address come straight back to it.
                let mut outputs = Outputs {
                    network: &mut self.outbox,
                    local: &mut self.device.inbound,
                    host: None,
                };
                self.router.handle_packet(&packet, &mut outputs);
                moved = true;
            }
            // Room was made, or a packet to this node's own address came straight back in:
            // either way smoltcp has more to do.
            if !moved {
                break;
            }
        }
        let mut outputs = Outputs {
            network: &mut self.outbox,
            local: &mut self.device.inbound,
            host: self.host.as_mut().map(|queue| HostOutput {
                queue,
                sockets: &self.sockets,
                echo_idents: &self.echo_idents,
            }),
        };
        self.router.handle_timeout(now, &mut outputs);
        self.reap();
    }

    /// The next moment [`Stack::poll`] has work without new input. While the outbox is full
    /// only the UDP socket becoming writable can help, so smoltcp's "now" is not a deadline.
    pub(crate) fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        let router = self.router.poll_timeout();
        if self.outbox.len() >= OUTBOX {
            return router;
        }
        let time = self.smoltcp_time(now);
        let smoltcp = self
            .iface
            .poll_delay(time, &self.sockets)
            .map(|delay| now + Duration::from_micros(delay.total_micros()));
        match (router, smoltcp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The datagrams waiting for the UDP socket, oldest first.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = &Datagram> + Clone {
        self.outbox.iter()
    }

    /// The socket took the oldest `count`.
    pub(crate) fn pop_datagrams(&mut self, count: usize) {
        self.outbox.drain(..count.min(self.outbox.len()));
    }

    fn new_tcp_socket(&mut self) -> Result<tcp::Socket<'static>, StackError> {
        if self.tcp_sockets >= MAX_TCP_SOCKETS {
            return Err(StackError::TooManySockets);
        }
        self.tcp_sockets += 1;
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
            tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        );
        // A delayed ACK caps throughput at about a window per delay (asterinas#485); Nagle
        // only adds latency to the small request/response messages this overlay carries.
        socket.set_ack_delay(None);
        socket.set_nagle_enabled(false);
        socket.set_timeout(Some(smoltcp::time::Duration::from_secs(
            TCP_TIMEOUT.as_secs(),
        )));
        Ok(socket)
    }

    fn port_in_use(&self, port: u16) -> bool {
        self.sockets.iter().any(|(_, socket)| match socket {
            smoltcp::socket::Socket::Tcp(tcp) => {
                tcp.local_endpoint().map(|end| end.port) == Some(port)
                    || tcp.listen_endpoint().port == port
            }
            _ => false,
        })
    }

    fn free_port(&mut self) -> Result<u16, StackError> {
        for _ in EPHEMERAL_PORTS {
            self.last_port = if self.last_port == *EPHEMERAL_PORTS.end() {
                *EPHEMERAL_PORTS.start()
            } else {
                self.last_port + 1
            };
            if !self.port_in_use(self.last_port) {
                return Ok(self.last_port);
            }
        }
        Err(StackError::NoFreePort)
    }

    pub(crate) fn tcp_connect(&mut self, remote: SocketAddrV4) -> Result<SocketHandle, StackError> {
        let port = self.free_port()?;
        let mut socket = self.new_tcp_socket()?;
        let remote = IpEndpoint::new((*remote.ip()).into(), remote.port());
        if socket.connect(self.iface.context(), remote, port).is_err() {
            // Only an unspecified remote or port zero fails here; report it as refused by
            // handing back a closed socket the caller sees as reset.
            tracing::debug!(%remote, "connect refused by smoltcp");
        }
        Ok(self.sockets.add(socket))
    }

    pub(crate) fn tcp_listen(&mut self, port: u16, backlog: usize) -> Result<(), StackError> {
        if self.listeners.contains_key(&port) {
            return Err(StackError::PortInUse(port));
        }
        let mut pool = Vec::with_capacity(backlog);
        for _ in 0..backlog.max(1) {
            pool.push(self.listening_socket(port)?);
        }
        self.listeners.insert(port, pool);
        Ok(())
    }

    fn listening_socket(&mut self, port: u16) -> Result<SocketHandle, StackError> {
        let mut socket = self.new_tcp_socket()?;
        socket
            .listen(port)
            .map_err(|_| StackError::PortInUse(port))?;
        Ok(self.sockets.add(socket))
    }

    /// A connection that completed its handshake on `port`, if any; its place in the pool
    /// goes to a fresh listening socket (when the socket limit allows).
    pub(crate) fn tcp_accept(
        &mut self,
        port: u16,
        waker: &std::task::Waker,
    ) -> Option<SocketHandle> {
        let pool = self.listeners.get(&port)?;
        let ready = pool.iter().position(|handle| {
            let socket = self.sockets.get::<tcp::Socket>(*handle);
            !matches!(socket.state(), tcp::State::Listen | tcp::State::SynReceived)
        });
        let Some(at) = ready else {
            for handle in pool {
                self.sockets
                    .get_mut::<tcp::Socket>(*handle)
                    .register_recv_waker(waker);
            }
            return None;
        };
        let handle = self.listeners.get_mut(&port)?.swap_remove(at);
        match self.listening_socket(port) {
            Ok(fresh) => self.listeners.get_mut(&port)?.push(fresh),
            Err(error) => tracing::debug!(port, %error, "listener pool shrinks"),
        }
        Some(handle)
    }

    pub(crate) fn tcp_unlisten(&mut self, port: u16) {
        for handle in self.listeners.remove(&port).unwrap_or_default() {
            self.release(handle);
        }
    }

    /// The owner is done with a socket: close it gracefully and remove it once closed.
    pub(crate) fn release(&mut self, handle: SocketHandle) {
        match self.sockets.get_mut::<smoltcp::socket::Socket>(handle) {
            smoltcp::socket::Socket::Tcp(socket) => {
                socket.close();
                self.closing.push(handle);
            }
            _ => {
                self.echo_idents.remove(&handle);
                self.sockets.remove(handle);
            }
        }
    }

    fn reap(&mut self) {
        let sockets = &mut self.sockets;
        let tcp_sockets = &mut self.tcp_sockets;
        self.closing.retain(|handle| {
            let state = sockets.get::<tcp::Socket>(*handle).state();
            // TIME-WAIT guards against stray segments of an old connection; inside an
            // authenticated tunnel with fresh ephemeral ports that is not worth 128 KiB.
            let done = matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            if done {
                sockets.remove(*handle);
                *tcp_sockets -= 1;
            }
            !done
        });
    }

    pub(crate) fn udp_bind(&mut self, port: u16) -> Result<SocketHandle, StackError> {
        let taken = self.sockets.iter().any(|(_, socket)| {
            matches!(socket, smoltcp::socket::Socket::Udp(udp) if udp.endpoint().port == port)
        });
        if taken {
            return Err(StackError::PortInUse(port));
        }
        let buffer = || {
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0; UDP_BUFFER],
            )
        };
        let mut socket = udp::Socket::new(buffer(), buffer());
        socket.bind(port).map_err(|_| StackError::PortInUse(port))?;
        Ok(self.sockets.add(socket))
    }

    pub(crate) fn add_icmp_socket(&mut self, ident: u16) -> SocketHandle {
        let mut socket = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        );
        socket
            .bind(icmp::Endpoint::Ident(ident))
            .expect("a nonzero ident binds");
        let handle = self.sockets.add(socket);
        self.echo_idents.insert(handle, ident);
        handle
    }

    pub(crate) fn checksums(&self) -> smoltcp::phy::ChecksumCapabilities {
        smoltcp::phy::Device::capabilities(&self.device).checksum
    }

    pub(crate) fn address(&self) -> Ipv4Addr {
        self.router.address()
    }
}
