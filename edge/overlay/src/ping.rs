//! ICMP echo through the overlay, for `constella ping`: what `ping` measures, from inside the
//! process, with no raw socket and so no privilege.

use std::future::poll_fn;
use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::icmp;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress};

use crate::runner::Shared;

/// What `ping` sends by default: 56 bytes of payload.
const PAYLOAD: [u8; 56] = [0x5a; 56];

/// Removes the socket however the wait ends.
struct Probe {
    shared: Arc<Shared>,
    handle: SocketHandle,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.shared.lock().release(self.handle);
    }
}

pub(crate) async fn echo(
    shared: Arc<Shared>,
    destination: Ipv4Addr,
    sequence: u16,
    timeout: Duration,
) -> io::Result<Duration> {
    // Nonzero: smoltcp refuses to bind identifier 0.
    let ident = rand::random::<u16>().max(1);
    let (probe, sent_at) = {
        let mut stack = shared.lock();
        let checksums = stack.checksums();
        let handle = stack.add_icmp_socket(ident);
        let request = Icmpv4Repr::EchoRequest {
            ident,
            seq_no: sequence,
            data: &PAYLOAD,
        };
        let socket = stack.sockets.get_mut::<icmp::Socket>(handle);
        let target = IpAddress::Ipv4(destination);
        let buffer = socket
            .send(request.buffer_len(), target)
            .map_err(|error| io::Error::other(error.to_string()))?;
        request.emit(&mut Icmpv4Packet::new_unchecked(buffer), &checksums);
        (
            Probe {
                shared: Arc::clone(&shared),
                handle,
            },
            Instant::now(),
        )
    };
    shared.wake_runner();
    let reply = poll_fn(|cx| {
        let mut stack = probe.shared.lock();
        let checksums = stack.checksums();
        let socket = stack.sockets.get_mut::<icmp::Socket>(probe.handle);
        while let Ok((bytes, from)) = socket.recv() {
            let Ok(packet) = Icmpv4Packet::new_checked(bytes) else {
                continue;
            };
            let matches = matches!(
                Icmpv4Repr::parse(&packet, &checksums),
                Ok(Icmpv4Repr::EchoReply { ident: got, seq_no, .. })
                    if got == ident && seq_no == sequence
            );
            if matches && from == IpAddress::Ipv4(destination) {
                return Poll::Ready(());
            }
        }
        socket.register_recv_waker(cx.waker());
        Poll::Pending
    });
    tokio::time::timeout(timeout, reply)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?;
    Ok(sent_at.elapsed())
}
