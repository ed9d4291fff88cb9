//! TCP over the overlay as tokio's `AsyncRead`/`AsyncWrite`, so hyper, axum and the cluster
//! transport use an overlay connection the way they use a kernel one.
//!
//! Readiness comes from smoltcp's socket wakers (as in embassy-net): a call that cannot make
//! progress registers the task's waker and returns `Pending`; the runner's poll wakes it.

use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::runner::Shared;

pub struct TcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
}

fn socket_addr(endpoint: Option<smoltcp::wire::IpEndpoint>) -> io::Result<SocketAddr> {
    match endpoint {
        Some(endpoint) => {
            let IpAddress::Ipv4(address) = endpoint.addr;
            Ok(SocketAddr::V4(SocketAddrV4::new(address, endpoint.port)))
        }
        None => Err(io::ErrorKind::NotConnected.into()),
    }
}

impl TcpStream {
    pub(crate) async fn connect(shared: Arc<Shared>, remote: SocketAddrV4) -> io::Result<Self> {
        let handle = shared
            .lock()
            .tcp_connect(remote)
            .map_err(io::Error::other)?;
        shared.wake_runner();
        // Built before the wait, so a cancelled connect still releases its socket.
        let stream = Self { shared, handle };
        poll_fn(|cx| stream.poll_established(cx)).await?;
        Ok(stream)
    }

    fn poll_established(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut stack = self.shared.lock();
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        match socket.state() {
            tcp::State::SynSent | tcp::State::SynReceived => {
                socket.register_send_waker(cx.waker());
                Poll::Pending
            }
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen => {
                Poll::Ready(Err(io::ErrorKind::ConnectionRefused.into()))
            }
            _ => Poll::Ready(Ok(())),
        }
    }

    pub(crate) fn accepted(shared: Arc<Shared>, handle: SocketHandle) -> Self {
        Self { shared, handle }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let stack = self.shared.lock();
        socket_addr(
            stack
                .sockets
                .get::<tcp::Socket>(self.handle)
                .remote_endpoint(),
        )
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        let stack = self.shared.lock();
        socket_addr(
            stack
                .sockets
                .get::<tcp::Socket>(self.handle)
                .local_endpoint(),
        )
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut stack = self.shared.lock();
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if socket.can_recv() {
            let window_was_closed = socket.recv_capacity() == socket.recv_queue();
            match socket.recv_slice(buffer.initialize_unfilled()) {
                Ok(read) => buffer.advance(read),
                Err(_) => return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
            }
            drop(stack);
            // The peer may be waiting for window: tell smoltcp to announce it.
            if window_was_closed {
                self.shared.wake_runner();
            }
            return Poll::Ready(Ok(()));
        }
        if !socket.may_recv() {
            // The peer closed (FIN) or the connection is gone: end of stream.
            return Poll::Ready(Ok(()));
        }
        socket.register_recv_waker(cx.waker());
        Poll::Pending
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut stack = self.shared.lock();
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if !socket.may_send() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if !socket.can_send() {
            socket.register_send_waker(cx.waker());
            return Poll::Pending;
        }
        let written = socket
            .send_slice(data)
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        drop(stack);
        self.shared.wake_runner();
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is in smoltcp's send buffer, which is what a kernel socket promises too.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared
            .lock()
            .sockets
            .get_mut::<tcp::Socket>(self.handle)
            .close();
        self.shared.wake_runner();
        Poll::Ready(Ok(()))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.shared.lock().release(self.handle);
        self.shared.wake_runner();
    }
}

/// Accepts connections to one port of this node's overlay address.
pub struct TcpListener {
    shared: Arc<Shared>,
    port: u16,
}

impl TcpListener {
    pub(crate) fn bind(shared: Arc<Shared>, port: u16, backlog: usize) -> io::Result<Self> {
        shared
            .lock()
            .tcp_listen(port, backlog)
            .map_err(io::Error::other)?;
        Ok(Self { shared, port })
    }

    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.shared.lock().address(), self.port))
    }

    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let handle = poll_fn(
            |cx| match self.shared.lock().tcp_accept(self.port, cx.waker()) {
                Some(handle) => Poll::Ready(handle),
                None => Poll::Pending,
            },
        )
        .await;
        self.shared.wake_runner();
        let stream = TcpStream::accepted(Arc::clone(&self.shared), handle);
        let peer = stream.peer_addr()?;
        Ok((stream, peer))
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shared.lock().tcp_unlisten(self.port);
    }
}
