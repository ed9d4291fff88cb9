//! The underlay socket: the one UDP socket WireGuard's datagrams travel in. Per-datagram
//! system calls, and the kernel's per-packet work behind each, were most of a bulk transfer's
//! cost, so on Linux a train of same-sized datagrams to one peer leaves in one GSO send
//! (`UDP_SEGMENT`: one trip through the stack, cut into datagrams as late as possible) and a
//! receive takes a whole train when the sender used GSO too (`UDP_GRO`). Elsewhere, or where
//! the kernel refuses, it is one datagram per call. The kernel's path-MTU behaviour is left as
//! it is: datagrams may still be fragmented on a narrow path, as kernel WireGuard's are.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, sockopt};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::stack::Datagram;

/// The largest UDP payload, and so the largest GRO train or GSO send.
const MAX_PAYLOAD: usize = 65_507;
/// The kernel's limit on segments per GSO send (`UDP_MAX_SEGMENTS`), and GRO's.
const MAX_SEGMENTS: usize = 64;

pub(crate) struct Underlay {
    socket: UdpSocket,
    /// Whether sends may carry `UDP_SEGMENT`; cleared for good when the kernel refuses one.
    gso: AtomicBool,
}

/// Memory for receives, kept across calls.
pub(crate) struct ReceiveBuffer {
    bytes: Vec<u8>,
    control: Vec<u8>,
}

impl ReceiveBuffer {
    pub(crate) fn new() -> Self {
        Self {
            bytes: vec![0; MAX_PAYLOAD],
            // Room for `UDP_GRO`'s control message, an int: the train's segment size.
            control: nix::cmsg_space!(i32),
        }
    }
}

impl Underlay {
    pub(crate) fn new(socket: UdpSocket) -> Self {
        // Both options exist since Linux 5.0; without them this is a plain UDP socket.
        let gro = socket::setsockopt(&socket, sockopt::UdpGroSegment, &true).is_ok();
        let gso = socket::getsockopt(&socket, sockopt::UdpGsoSegment).is_ok();
        tracing::debug!(gso, gro, "overlay UDP socket");
        Self {
            socket,
            gso: AtomicBool::new(gso),
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub(crate) async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.socket.writable().await
    }

    /// One receive: hands each datagram of what arrived (one, or a GRO train of up to
    /// [`MAX_SEGMENTS`]) to `each`. `WouldBlock` when nothing was waiting.
    pub(crate) fn try_receive(
        &self,
        buffer: &mut ReceiveBuffer,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<()> {
        let ReceiveBuffer { bytes, control } = buffer;
        let (length, stride, from) = self.socket.try_io(Interest::READABLE, || {
            let mut slices = [IoSliceMut::new(bytes)];
            let message = socket::recvmsg::<SockaddrIn>(
                self.socket.as_raw_fd(),
                &mut slices,
                Some(control),
                MsgFlags::empty(),
            )?;
            let stride = message.cmsgs().ok().and_then(|mut messages| {
                messages.find_map(|message| match message {
                    ControlMessageOwned::UdpGroSegments(size) => usize::try_from(size).ok(),
                    _ => None,
                })
            });
            let from = message.address.map(SocketAddrV4::from);
            Ok((message.bytes, stride, from))
        })?;
        let Some(from) = from else {
            return Ok(());
        };
        let received = &bytes[..length.min(bytes.len())];
        for datagram in received.chunks(stride.unwrap_or(length).max(1)) {
            each(SocketAddr::V4(from), datagram);
        }
        Ok(())
    }

    /// Sends the train at the front of `datagrams` (see [`train`]) in one call and returns how
    /// many datagrams it held: they are done with, sent or, on an error other than
    /// `WouldBlock` (the only one returned), given up: a peer's unreachable endpoint must not
    /// hold up the others.
    /// `scratch` holds a train's bytes.
    pub(crate) fn try_send<'a>(
        &self,
        datagrams: impl Iterator<Item = &'a Datagram> + Clone,
        scratch: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let max_segments = if self.gso.load(Ordering::Relaxed) {
            MAX_SEGMENTS
        } else {
            1
        };
        let Some(train) = train(datagrams.clone(), max_segments, MAX_PAYLOAD) else {
            return Ok(0);
        };
        let SocketAddr::V4(to) = train.to else {
            // This overlay runs over IPv4 only; no such endpoint is ever stored.
            return Ok(train.count);
        };
        let contents = if train.count == 1 {
            datagrams
                .clone()
                .next()
                .map_or(&[][..], |datagram| datagram.bytes.as_slice())
        } else {
            scratch.clear();
            for datagram in datagrams.take(train.count) {
                scratch.extend_from_slice(&datagram.bytes);
            }
            scratch.as_slice()
        };
        let segment_size = u16::try_from(train.segment_size).unwrap_or(u16::MAX);
        let segments = [ControlMessage::UdpGsoSegments(&segment_size)];
        let control: &[ControlMessage<'_>] = if train.count > 1 { &segments } else { &[] };
        let sent = self.socket.try_io(Interest::WRITABLE, || {
            socket::sendmsg(
                self.socket.as_raw_fd(),
                &[IoSlice::new(contents)],
                control,
                MsgFlags::empty(),
                Some(&SockaddrIn::from(to)),
            )
            .map_err(io::Error::from)
        });
        match sent {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Err(error),
            Err(error) => {
                // A device that cannot segment answers EIO (or EINVAL): the train is lost,
                // as a dropped datagram would be, and later ones go one by one.
                let refused = [Errno::EIO, Errno::EINVAL].map(|errno| errno as i32);
                if train.count > 1
                    && error
                        .raw_os_error()
                        .is_some_and(|code| refused.contains(&code))
                {
                    tracing::info!(%error, "the kernel refused a GSO send; sending datagrams one by one");
                    self.gso.store(false, Ordering::Relaxed);
                }
                tracing::debug!(%to, %error, "overlay UDP send");
            }
        }
        Ok(train.count)
    }
}

/// Datagrams that can leave in one GSO send: the same destination, the same size but for a
/// shorter last one.
#[derive(Debug, PartialEq, Eq)]
struct Train {
    to: SocketAddr,
    count: usize,
    segment_size: usize,
}

/// The train at the front of `datagrams`, at most `max_segments` long and `max_bytes` in all.
fn train<'a>(
    mut datagrams: impl Iterator<Item = &'a Datagram>,
    max_segments: usize,
    max_bytes: usize,
) -> Option<Train> {
    let first = datagrams.next()?;
    let segment_size = first.bytes.len();
    let mut count = 1;
    let mut bytes = segment_size;
    for next in datagrams {
        let size = next.bytes.len();
        if count >= max_segments
            || next.to != first.to
            || size > segment_size
            || size == 0
            || bytes + size > max_bytes
        {
            break;
        }
        count += 1;
        bytes += size;
        if size < segment_size {
            break;
        }
    }
    Some(Train {
        to: first.to,
        count,
        segment_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(to: &str, size: usize) -> Datagram {
        Datagram {
            to: to.parse().expect("an address"),
            bytes: vec![7; size],
        }
    }

    fn front(outbox: &[Datagram], max_segments: usize) -> Option<(usize, usize)> {
        train(outbox.iter(), max_segments, MAX_PAYLOAD).map(|t| (t.count, t.segment_size))
    }

    #[test]
    fn a_train_is_same_sized_datagrams_to_one_peer_ending_at_a_shorter_one() {
        let a = "10.0.0.1:51820";
        let b = "10.0.0.2:51820";
        let outbox = [
            datagram(a, 1452),
            datagram(a, 1452),
            datagram(a, 600),
            datagram(a, 1452),
        ];
        assert_eq!(front(&outbox, 64), Some((3, 1452)));
        let outbox = [datagram(a, 1452), datagram(a, 1452), datagram(b, 1452)];
        assert_eq!(front(&outbox, 64), Some((2, 1452)));
        // A larger one cannot be a segment of the smaller size.
        let outbox = [datagram(a, 96), datagram(a, 1452)];
        assert_eq!(front(&outbox, 64), Some((1, 96)));
        assert_eq!(front(&[], 64), None);
    }

    #[tokio::test]
    async fn a_train_leaves_in_one_send_and_arrives_as_its_datagrams() {
        let bind = || async {
            let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            Underlay::new(socket)
        };
        let (sender, receiver) = (bind().await, bind().await);
        let to = receiver.local_addr().expect("address");
        let outbox: Vec<Datagram> = [300, 300, 300, 120]
            .iter()
            .enumerate()
            .map(|(i, &size)| Datagram {
                to,
                bytes: vec![u8::try_from(i).expect("small"); size],
            })
            .collect();
        let mut scratch = Vec::new();
        sender.writable().await.expect("writable");
        assert_eq!(sender.try_send(outbox.iter(), &mut scratch).ok(), Some(4));
        let mut buffer = ReceiveBuffer::new();
        let mut arrived = Vec::new();
        while arrived.len() < outbox.len() {
            receiver.readable().await.expect("readable");
            let _ = receiver.try_receive(&mut buffer, |from, datagram| {
                assert_eq!(from, sender.local_addr().expect("address"));
                arrived.push(datagram.to_vec());
            });
        }
        let sent: Vec<Vec<u8>> = outbox.into_iter().map(|d| d.bytes).collect();
        assert_eq!(arrived, sent);
    }

    #[test]
    fn a_train_keeps_to_the_segment_and_byte_limits() {
        let a = "10.0.0.1:51820";
        let outbox: Vec<_> = (0..100).map(|_| datagram(a, 1452)).collect();
        assert_eq!(front(&outbox, 64), Some((45, 1452)));
        assert_eq!(front(&outbox, 1), Some((1, 1452)));
        let small: Vec<_> = (0..100).map(|_| datagram(a, 32)).collect();
        assert_eq!(front(&small, 64), Some((64, 32)));
    }
}
