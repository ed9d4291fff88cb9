//! Which peer owns which overlay addresses: the `AllowedIPs` of WireGuard, used both ways.
//! Outbound it picks the peers a packet may go to (longest prefix wins); inbound the router
//! checks a decrypted packet's source against the sending peer's own list.
//!
//! Unlike kernel WireGuard, two peers may own the same prefix for a while: a node that
//! enrolled with an invite's key and then comes back with its own key has both for its
//! address, and the router sends to whichever authenticated last.

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
        self.routes.retain(|route| *route != (net, peer));
        let at = self
            .routes
            .partition_point(|(existing, _)| existing.prefix_len() >= net.prefix_len());
        self.routes.insert(at, (net, peer));
    }

    pub(crate) fn remove_peer(&mut self, peer: PeerId) {
        self.routes.retain(|(_, owner)| *owner != peer);
    }

    /// The owners of the longest prefix that covers `address` (usually one).
    pub(crate) fn lookup(&self, address: Ipv4Addr) -> impl Iterator<Item = PeerId> + '_ {
        let best = self
            .routes
            .iter()
            .find(|(net, _)| net.contains(&address))
            .map(|(net, _)| *net);
        self.routes
            .iter()
            .filter(move |(net, _)| Some(*net) == best)
            .map(|(_, peer)| *peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().expect("a test CIDR")
    }

    fn owners(table: &AllowedIps, last: u8) -> Vec<PeerId> {
        table.lookup(Ipv4Addr::new(10, 42, 0, last)).collect()
    }

    #[test]
    fn the_longest_prefix_wins_and_shared_prefixes_list_every_owner() {
        let mut table = AllowedIps::default();
        table.insert(net("10.42.0.0/24"), PeerId(1));
        table.insert(net("10.42.0.7/32"), PeerId(2));
        assert_eq!(owners(&table, 7), vec![PeerId(2)]);
        assert_eq!(owners(&table, 8), vec![PeerId(1)]);
        assert_eq!(table.lookup(Ipv4Addr::new(10, 43, 0, 1)).count(), 0);

        table.insert(net("10.42.0.7/32"), PeerId(3));
        table.insert(net("10.42.0.7/32"), PeerId(3));
        assert_eq!(owners(&table, 7), vec![PeerId(2), PeerId(3)]);
        table.remove_peer(PeerId(3));
        table.remove_peer(PeerId(2));
        assert_eq!(owners(&table, 7), vec![PeerId(1)]);
    }

    #[test]
    fn host_bits_in_a_prefix_are_ignored() {
        let mut table = AllowedIps::default();
        table.insert(net("10.42.0.9/24"), PeerId(1));
        assert_eq!(owners(&table, 200), vec![PeerId(1)]);
    }
}
