//! Which peer owns which overlay addresses: the `AllowedIPs` of WireGuard, used both ways.
//! Outbound it picks the peer a packet goes to (longest prefix wins); inbound it checks that
//! a decrypted packet's source belongs to the peer that sent it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::router::PeerId;

/// Kept sorted longest prefix first, so the first match is the best one. A linear scan is
/// fine for the hundreds of peers a hub has; a trie would pay off only far beyond that.
#[derive(Debug, Default)]
pub(crate) struct AllowedIps {
    routes: Vec<(Ipv4Net, PeerId)>,
}

impl AllowedIps {
    pub(crate) fn insert(&mut self, net: Ipv4Net, peer: PeerId) {
        let net = net.trunc();
        self.routes.retain(|(existing, _)| *existing != net);
        let at = self
            .routes
            .partition_point(|(existing, _)| existing.prefix_len() >= net.prefix_len());
        self.routes.insert(at, (net, peer));
    }

    pub(crate) fn remove_peer(&mut self, peer: PeerId) {
        self.routes.retain(|(_, owner)| *owner != peer);
    }

    pub(crate) fn lookup(&self, address: Ipv4Addr) -> Option<PeerId> {
        self.routes
            .iter()
            .find(|(net, _)| net.contains(&address))
            .map(|(_, peer)| *peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().expect("a test CIDR")
    }

    #[test]
    fn the_longest_prefix_wins_and_a_later_owner_replaces_an_earlier_one() {
        let mut table = AllowedIps::default();
        table.insert(net("10.42.0.0/24"), PeerId(1));
        table.insert(net("10.42.0.7/32"), PeerId(2));
        assert_eq!(table.lookup(Ipv4Addr::new(10, 42, 0, 7)), Some(PeerId(2)));
        assert_eq!(table.lookup(Ipv4Addr::new(10, 42, 0, 8)), Some(PeerId(1)));
        assert_eq!(table.lookup(Ipv4Addr::new(10, 43, 0, 1)), None);

        table.insert(net("10.42.0.7/32"), PeerId(3));
        assert_eq!(table.lookup(Ipv4Addr::new(10, 42, 0, 7)), Some(PeerId(3)));
        table.remove_peer(PeerId(3));
        assert_eq!(table.lookup(Ipv4Addr::new(10, 42, 0, 7)), Some(PeerId(1)));
    }

    #[test]
    fn host_bits_in_a_prefix_are_ignored() {
        let mut table = AllowedIps::default();
        table.insert(net("10.42.0.9/24"), PeerId(1));
        assert_eq!(table.lookup(Ipv4Addr::new(10, 42, 0, 200)), Some(PeerId(1)));
    }
}
