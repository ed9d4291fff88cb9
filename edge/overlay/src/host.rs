//! Sharing this node's overlay address with the operating system, sans-IO. With an OS
//! interface (a TUN device, see `os_interface`) the kernel holds the same address as smoltcp,
//! so every packet that arrives for this node goes to one of the two: to smoltcp when one of
//! its sockets owns the flow (the agent's API, the cluster's datagrams, its own connections
//! and pings), to the kernel otherwise (`ping` run by hand, a program's own TCP connection).
//!
//! Flows are told apart by the destination port (TCP, UDP) or the echo identifier (ICMP). The
//! two never pick the same local port: smoltcp's ephemeral ports (`stack::EPHEMERAL_PORTS`)
//! lie above Linux's default range (32768–60999).

use std::collections::BTreeMap;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::Socket;
use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

/// Whether smoltcp should take `packet`, an IPv4 packet for this node's address: a flow one
/// of its sockets owns, an echo reply to one of its pings (`echo_idents`, by socket), or an
/// echo request (smoltcp answers those itself). Anything it cannot parse goes to smoltcp too,
/// which drops it, rather than to the kernel.
pub(crate) fn belongs_to_stack(
    packet: &[u8],
    sockets: &SocketSet<'_>,
    echo_idents: &BTreeMap<SocketHandle, u16>,
) -> bool {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return true;
    };
    let payload = ip.payload();
    match ip.next_header() {
        IpProtocol::Tcp => {
            TcpPacket::new_checked(payload).is_ok_and(|tcp| tcp_port_open(sockets, tcp.dst_port()))
        }
        IpProtocol::Udp => {
            UdpPacket::new_checked(payload).is_ok_and(|udp| udp_port_open(sockets, udp.dst_port()))
        }
        IpProtocol::Icmp => match Icmpv4Packet::new_checked(payload) {
            Ok(icmp) => match icmp.msg_type() {
                Icmpv4Message::EchoRequest => true,
                Icmpv4Message::EchoReply => echo_idents.values().any(|&id| id == icmp.echo_ident()),
                _ => false,
            },
            Err(_) => true,
        },
        _ => false,
    }
}

fn tcp_port_open(sockets: &SocketSet<'_>, port: u16) -> bool {
    sockets.iter().any(|(_, socket)| match socket {
        Socket::Tcp(tcp) => {
            tcp.local_endpoint().map(|end| end.port) == Some(port)
                || (tcp.is_listening() && tcp.listen_endpoint().port == port)
        }
        _ => false,
    })
}

fn udp_port_open(sockets: &SocketSet<'_>, port: u16) -> bool {
    sockets
        .iter()
        .any(|(_, socket)| matches!(socket, Socket::Udp(udp) if udp.endpoint().port == port))
}

#[cfg(test)]
mod tests {
    use smoltcp::socket::{tcp, udp};

    use super::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const ICMP: u8 = 1;

    /// An IPv4 packet from 10.42.0.1 to 10.42.0.2 (checksums are not checked here).
    fn ipv4(protocol: u8, payload: &[u8]) -> Vec<u8> {
        let length = u16::try_from(20 + payload.len()).expect("small");
        let mut packet = vec![0x45, 0];
        packet.extend(length.to_be_bytes());
        packet.extend([0, 0, 0, 0, 64, protocol, 0, 0, 10, 42, 0, 1, 10, 42, 0, 2]);
        packet.extend(payload);
        packet
    }

    fn tcp_to(port: u16) -> Vec<u8> {
        let mut segment = vec![0xc3, 0x50];
        segment.extend(port.to_be_bytes());
        segment.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        ipv4(TCP, &segment)
    }

    fn udp_to(port: u16) -> Vec<u8> {
        let mut datagram = vec![0xc3, 0x50];
        datagram.extend(port.to_be_bytes());
        datagram.extend([0, 8, 0, 0]);
        ipv4(UDP, &datagram)
    }

    fn echo(kind: u8, ident: u16) -> Vec<u8> {
        let mut message = vec![kind, 0, 0, 0];
        message.extend(ident.to_be_bytes());
        message.extend([0, 1]);
        ipv4(ICMP, &message)
    }

    fn sockets() -> SocketSet<'static> {
        let mut sockets = SocketSet::new(Vec::new());
        let mut listener = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 64]),
            tcp::SocketBuffer::new(vec![0; 64]),
        );
        listener.listen(4747).expect("listen");
        sockets.add(listener);
        let buffer = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 1], vec![0; 64]);
        let mut datagrams = udp::Socket::new(buffer(), buffer());
        datagrams.bind(4748).expect("bind");
        sockets.add(datagrams);
        sockets
    }

    #[test]
    fn the_stacks_own_flows_stay_with_it_and_the_rest_goes_to_the_kernel() {
        let sockets = sockets();
        let mut idents = BTreeMap::new();
        let ping = sockets
            .iter()
            .next()
            .map(|(handle, _)| handle)
            .expect("one");
        idents.insert(ping, 7);
        let owned = |packet: &[u8]| belongs_to_stack(packet, &sockets, &idents);

        assert!(owned(&tcp_to(4747)), "the API's listener");
        assert!(!owned(&tcp_to(45_000)), "a kernel connection's reply");
        assert!(owned(&udp_to(4748)), "the cluster's datagrams");
        assert!(!owned(&udp_to(53)), "a kernel socket's datagram");
        assert!(owned(&echo(8, 99)), "smoltcp answers echo requests");
        assert!(owned(&echo(0, 7)), "the reply to the overlay's own ping");
        assert!(!owned(&echo(0, 8)), "the reply to the kernel's ping");
        assert!(!owned(&echo(3, 0)), "other ICMP is the kernel's");
        assert!(owned(&[0x45, 0, 0]), "garbage goes where it is dropped");
    }
}
