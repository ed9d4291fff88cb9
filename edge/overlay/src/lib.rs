//! Constella's WireGuard overlay in userspace: boringtun speaks the protocol, smoltcp is the
//! TCP/IP stack inside the process, and one UDP socket carries everything. No root, no kernel
//! module, no TUN device (one is optional: `Runner::with_os_interface`).
//!
//! The core is sans-IO: [`router`] (the peer table: demux, anti-spoofing, roaming, hub relay)
//! and `stack` (router plus smoltcp over bounded queues) take datagrams and time and never
//! touch a socket; `host` decides which arriving packets an OS interface gets. The shell is
//! [`runner`] (the task that drives the stack), `underlay` (the UDP socket, with batched
//! sends and receives), `os_interface` (the optional TUN device), `tcp`, `udp` and `ping`.

mod allowed_ips;
mod device;
mod host;
pub mod keys;
mod os_interface;
mod ping;
pub mod router;
pub mod runner;
mod stack;
mod tcp;
mod udp;
mod underlay;

pub use device::MTU;
pub use keys::{KeyError, PrivateKey, PublicKey};
pub use router::{Drops, PeerConfig, PeerStatus, RouterError};
pub use runner::{Overlay, OverlayConfig, Runner, new};
pub use stack::StackError;
pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
