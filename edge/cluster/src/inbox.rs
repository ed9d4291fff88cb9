//! Which inbound envelopes a node accepts, and the replay windows that make each accepted once.
//!
//! An envelope is accepted only if it is for this network and this node, from a member that was
//! not removed, signed by that member's key, with a counter the sender's window has not seen, and
//! with a body that decodes. Nothing else reaches a core.

use std::collections::{BTreeMap, BTreeSet};

use crate::envelope::{self, Header, NetworkId, Rejected, ReplayWindow};
use crate::identity::NodeId;
use crate::shared::PeerInfo;
use crate::wire::{self, Request};

/// A refused envelope: the claimed sender (when the header parsed) and why.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// Who the header says sent it; unauthenticated unless `why` is a freshness or body error.
    pub from: Option<NodeId>,
    /// Why it was refused.
    pub why: Rejected,
}

/// The members an envelope may come from.
#[derive(Clone, Copy)]
pub struct Members<'a> {
    /// Current members and their keys.
    pub peers: &'a BTreeMap<NodeId, PeerInfo>,
    /// Removed nodes, refused even if a stale table still lists them.
    pub removed: &'a BTreeSet<NodeId>,
}

/// One node's inbound gate.
#[derive(Debug)]
pub struct Inbox {
    network: NetworkId,
    me: NodeId,
    windows: BTreeMap<NodeId, ReplayWindow>,
}

impl Inbox {
    /// A gate for `me` in `network`, whose windows start above the persisted `floors`.
    pub fn new(network: NetworkId, me: NodeId, floors: &BTreeMap<NodeId, u64>) -> Inbox {
        let windows = floors
            .iter()
            .map(|(id, floor)| (*id, ReplayWindow::starting_above(*floor)))
            .collect();
        Inbox {
            network,
            me,
            windows,
        }
    }

    /// Checks an inbound envelope; a counter is used up once the signature checks, even if the
    /// body then fails to decode.
    pub fn accept(
        &mut self,
        bytes: &[u8],
        members: Members<'_>,
    ) -> Result<(Header, Request), Refused> {
        let (header, body, signature) =
            envelope::parse(bytes).map_err(|why| Refused { from: None, why })?;
        let refuse = |why| Refused {
            from: Some(header.from),
            why,
        };
        if header.network != self.network {
            return Err(refuse(Rejected::WrongNetwork));
        }
        if header.to != self.me {
            return Err(refuse(Rejected::WrongReceiver));
        }
        if members.removed.contains(&header.from) {
            return Err(refuse(Rejected::RemovedSender));
        }
        let key = match members.peers.get(&header.from) {
            Some(peer) if header.from != self.me => peer.public_key,
            _ => return Err(refuse(Rejected::UnknownSender)),
        };
        if !envelope::verify(bytes, &signature, &key) {
            return Err(refuse(Rejected::BadSignature));
        }
        let window = self.windows.entry(header.from).or_default();
        if !window.accept(header.counter) {
            return Err(refuse(Rejected::Replayed(header.counter)));
        }
        let request = wire::decode::<Request>(body)
            .ok_or_else(|| refuse(Rejected::Malformed("undecodable body")))?;
        Ok((header, request))
    }

    /// The highest counter accepted from each sender: persisted before a mutating call runs,
    /// so a restart never accepts the same envelope again.
    pub fn floors(&self) -> BTreeMap<NodeId, u64> {
        self.windows
            .iter()
            .map(|(id, w)| (*id, w.highest()))
            .collect()
    }

    /// Drops the windows of removed nodes.
    pub fn forget(&mut self, removed: &BTreeSet<NodeId>) {
        self.windows.retain(|id, _| !removed.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    struct World {
        network: NetworkId,
        me: NodeKey,
        peer: NodeKey,
        stranger: NodeKey,
        peers: BTreeMap<NodeId, PeerInfo>,
        removed: BTreeSet<NodeId>,
    }

    fn info(key: &NodeKey, name: &str) -> PeerInfo {
        PeerInfo {
            name: name.into(),
            addr: "127.0.0.1:7300".into(),
            public_key: key.public(),
            priority: 1,
            bot: false,
        }
    }

    fn world() -> World {
        let (me, peer, stranger) = (
            NodeKey::generate(),
            NodeKey::generate(),
            NodeKey::generate(),
        );
        let peers = [(me.id(), info(&me, "me")), (peer.id(), info(&peer, "peer"))]
            .into_iter()
            .collect();
        World {
            network: NetworkId([7; 16]),
            me,
            peer,
            stranger,
            peers,
            removed: BTreeSet::new(),
        }
    }

    impl World {
        fn members(&self) -> Members<'_> {
            Members {
                peers: &self.peers,
                removed: &self.removed,
            }
        }

        fn envelope(
            &self,
            from: &NodeKey,
            to: NodeId,
            network: NetworkId,
            counter: u64,
        ) -> Vec<u8> {
            let header = Header {
                network,
                from: from.id(),
                to,
                counter,
            };
            envelope::seal(from, header, &wire::encode(&Request::Gossip(vec![1, 2, 3])))
        }

        fn peer_envelope(&self, counter: u64) -> Vec<u8> {
            self.envelope(&self.peer, self.me.id(), self.network, counter)
        }
    }

    fn why(result: Result<(Header, Request), Refused>) -> Option<Rejected> {
        result.err().map(|r| r.why)
    }

    #[test]
    fn a_members_envelope_is_accepted_once() {
        let w = world();
        let mut inbox = Inbox::new(w.network, w.me.id(), &BTreeMap::new());
        let (header, request) = inbox
            .accept(&w.peer_envelope(1), w.members())
            .expect("accepted");
        assert_eq!((header.from, header.counter), (w.peer.id(), 1));
        assert_eq!(request, Request::Gossip(vec![1, 2, 3]));
        assert_eq!(
            why(inbox.accept(&w.peer_envelope(1), w.members())),
            Some(Rejected::Replayed(1))
        );
        assert!(inbox.accept(&w.peer_envelope(2), w.members()).is_ok());
        assert_eq!(inbox.floors().get(&w.peer.id()), Some(&2));
    }

    #[test]
    fn each_wrong_envelope_is_refused_for_its_own_reason() {
        let mut w = world();
        let mut inbox = Inbox::new(w.network, w.me.id(), &BTreeMap::new());
        let other_network = w.envelope(&w.peer, w.me.id(), NetworkId([8; 16]), 1);
        assert_eq!(
            why(inbox.accept(&other_network, w.members())),
            Some(Rejected::WrongNetwork)
        );
        let misrouted = w.envelope(&w.peer, w.peer.id(), w.network, 1);
        assert_eq!(
            why(inbox.accept(&misrouted, w.members())),
            Some(Rejected::WrongReceiver)
        );
        let stranger = w.envelope(&w.stranger, w.me.id(), w.network, 1);
        assert_eq!(
            why(inbox.accept(&stranger, w.members())),
            Some(Rejected::UnknownSender)
        );
        let from_myself = w.envelope(&w.me, w.me.id(), w.network, 1);
        assert_eq!(
            why(inbox.accept(&from_myself, w.members())),
            Some(Rejected::UnknownSender)
        );
        let mut forged = w.peer_envelope(1);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            why(inbox.accept(&forged, w.members())),
            Some(Rejected::BadSignature)
        );
        assert_eq!(
            why(inbox.accept(&[0u8; 10], w.members())),
            Some(Rejected::Malformed("shorter than a header and signature"))
        );
        w.removed.insert(w.peer.id());
        assert_eq!(
            why(inbox.accept(&w.peer_envelope(1), w.members())),
            Some(Rejected::RemovedSender)
        );
    }

    #[test]
    fn persisted_floors_refuse_old_counters_after_a_restart() {
        let w = world();
        let floors = [(w.peer.id(), 41)].into_iter().collect();
        let mut inbox = Inbox::new(w.network, w.me.id(), &floors);
        assert_eq!(
            why(inbox.accept(&w.peer_envelope(41), w.members())),
            Some(Rejected::Replayed(41))
        );
        assert!(inbox.accept(&w.peer_envelope(42), w.members()).is_ok());
        inbox.forget(&[w.peer.id()].into_iter().collect());
        assert!(inbox.floors().is_empty());
    }
}
