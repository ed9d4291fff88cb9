//! The cluster's datagram socket: UDP on the cluster port, inside the overlay (on the overlay
//! address) when the network has one and over the operating system otherwise. The loop sends
//! without waiting: a full send buffer drops the datagram, as UDP may anyway, and the protocols
//! above (SWIM, lease rounds, anti-entropy) send again. What arrives is read by the loop itself.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;

use anyhow::Context as _;
use constella_cluster::datagram::MAX_LEN;

pub(crate) enum Datagrams {
    Kernel(Arc<tokio::net::UdpSocket>),
    Overlay(constella_overlay::UdpSocket),
}

impl Datagrams {
    /// Binds the cluster port: on `listen` itself without an overlay, on the overlay address
    /// (the same port) with one.
    pub(crate) fn bind(
        listen: SocketAddr,
        overlay: Option<&constella_overlay::Overlay>,
    ) -> anyhow::Result<Datagrams> {
        match overlay {
            Some(overlay) => Ok(Datagrams::Overlay(
                overlay.bind_udp(listen.port()).with_context(|| {
                    format!("Failed to bind the overlay's UDP port {}", listen.port())
                })?,
            )),
            None => {
                let socket = std::net::UdpSocket::bind(listen)
                    .and_then(|socket| {
                        socket.set_nonblocking(true)?;
                        tokio::net::UdpSocket::from_std(socket)
                    })
                    .with_context(|| {
                        format!("Failed to bind the cluster's UDP port on {listen}")
                    })?;
                Ok(Datagrams::Kernel(Arc::new(socket)))
            }
        }
    }

    /// Sends one datagram to a peer's cluster address (`HOST:PORT`). A host name is looked up
    /// off the loop, so that send completes later or not at all.
    pub(crate) fn send(&self, to: &str, bytes: Vec<u8>) -> io::Result<()> {
        match self {
            Datagrams::Overlay(socket) => {
                let to: SocketAddrV4 = to.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "not an overlay IPv4:PORT")
                })?;
                socket.try_send_to(&bytes, to)
            }
            Datagrams::Kernel(socket) => match to.parse::<SocketAddr>() {
                Ok(to) => socket.try_send_to(&bytes, to).map(drop),
                Err(_) => {
                    let (socket, to) = (Arc::clone(socket), to.to_string());
                    tokio::spawn(async move {
                        if let Err(error) = socket.send_to(&bytes, &to).await {
                            tracing::trace!(%to, %error, "cluster datagram not sent");
                        }
                    });
                    Ok(())
                }
            },
        }
    }

    /// The next datagram that could be a cluster datagram (longer ones are read and dropped).
    /// Cancel-safe: the loop waits on it next to its other events.
    pub(crate) async fn recv(&self, buffer: &mut [u8; MAX_LEN + 1]) -> Vec<u8> {
        loop {
            match self {
                Datagrams::Overlay(socket) => return socket.recv_from().await.0,
                Datagrams::Kernel(socket) => match socket.recv_from(buffer).await {
                    Ok((length, _)) => return buffer[..length].to_vec(),
                    // An ICMP error for an earlier send (a peer's port closed) surfaces
                    // here; it says nothing about this socket.
                    Err(error) => tracing::trace!(%error, "cluster UDP receive"),
                },
            }
        }
    }
}
