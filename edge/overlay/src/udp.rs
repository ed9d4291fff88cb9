//! UDP through the overlay: a socket on a port of this node's overlay address, for the cluster's
//! datagrams. A send never waits: with the send buffer full it is refused (`WouldBlock`) as a
//! kernel socket's would be, and the protocol above makes up for a lost datagram. Received
//! datagrams wait in a bounded buffer; when that is full smoltcp drops new ones, as a kernel
//! socket does, and counts nothing: the sender's protocol already expects loss.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddrV4};
use std::sync::Arc;
use std::task::Poll;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::runner::Shared;

pub struct UdpSocket {
    shared: Arc<Shared>,
    handle: SocketHandle,
}

impl UdpSocket {
    pub(crate) fn bind(shared: Arc<Shared>, port: u16) -> io::Result<UdpSocket> {
        let handle = shared
            .lock()
            .udp_bind(port)
            .map_err(|error| io::Error::new(io::ErrorKind::AddrInUse, error.to_string()))?;
        Ok(UdpSocket { shared, handle })
    }

    /// Queues one datagram for `to`; `WouldBlock` if the send buffer is full.
    pub fn try_send_to(&self, bytes: &[u8], to: SocketAddrV4) -> io::Result<()> {
        {
            let mut stack = self.shared.lock();
            let socket = stack.sockets.get_mut::<udp::Socket>(self.handle);
            let remote = IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port());
            socket
                .send_slice(bytes, remote)
                .map_err(|error| match error {
                    udp::SendError::BufferFull => io::Error::from(io::ErrorKind::WouldBlock),
                    udp::SendError::Unaddressable => {
                        io::Error::new(io::ErrorKind::InvalidInput, "unaddressable destination")
                    }
                })?;
        }
        self.shared.wake_runner();
        Ok(())
    }

    /// The next datagram and who sent it.
    pub async fn recv_from(&self) -> (Vec<u8>, SocketAddrV4) {
        poll_fn(|cx| {
            let mut stack = self.shared.lock();
            let socket = stack.sockets.get_mut::<udp::Socket>(self.handle);
            while let Ok((bytes, meta)) = socket.recv() {
                // Only IPv4 runs inside this overlay; anything else is not for us.
                if let IpAddr::V4(ip) = IpAddr::from(meta.endpoint.addr) {
                    return Poll::Ready((
                        bytes.to_vec(),
                        SocketAddrV4::new(ip, meta.endpoint.port),
                    ));
                }
            }
            socket.register_recv_waker(cx.waker());
            Poll::Pending
        })
        .await
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.shared.lock().release(self.handle);
    }
}
