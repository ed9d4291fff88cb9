//! Which inbound envelopes a node accepts, and the replay windows that make each accepted once.
//!
//! An envelope is accepted only if it is for this network and this node, from a member that was
//! not removed, signed by that member's key, with a counter the sender's window has not seen, and
//! with a body that decodes. Nothing else reaches a core.

use std::collections::{BTreeMap, BTreeSet};

use crate::datagram::{self, Pairs};
use crate::envelope::{self, Header, NetworkId, Rejected, ReplayWindow};
use crate::identity::NodeId;
use crate::shared::PeerInfo;
use crate::wire::{self, Datagram, Request};

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
        check_header(&header, self.network, self.me, |id| {
            if members.removed.contains(&id) {
                Sender::Removed
            } else if members.peers.contains_key(&id) {
                Sender::Member
            } else {
                Sender::Unknown
            }
        })
        .map_err(refuse)?;
        let Some(key) = members.peers.get(&header.from).map(|p| p.public_key) else {
            return Err(refuse(Rejected::UnknownSender));
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

    /// Checks an inbound datagram: from a member other than this node that was not removed,
    /// sealed with that pair's key, with a counter the sender's window has not seen (datagrams
    /// and envelopes share one counter sequence and one window), and a body that decodes.
    pub fn accept_datagram(
        &mut self,
        bytes: &[u8],
        members: Members<'_>,
        pairs: &mut Pairs,
    ) -> Result<(NodeId, Datagram), Refused> {
        let header = datagram::parse_header(bytes).map_err(|why| Refused { from: None, why })?;
        let from = header.from;
        let refuse = |why| Refused {
            from: Some(from),
            why,
        };
        if members.removed.contains(&from) {
            return Err(refuse(Rejected::RemovedSender));
        }
        let key = match members.peers.get(&from) {
            Some(peer) if from != self.me => peer.public_key,
            _ => return Err(refuse(Rejected::UnknownSender)),
        };
        let keys = pairs
            .with(from, &key)
            .ok_or_else(|| refuse(Rejected::UnknownSender))?;
        let body = keys.open(bytes).map_err(refuse)?;
        let window = self.windows.entry(from).or_default();
        if !window.accept(header.counter) {
            return Err(refuse(Rejected::Replayed(header.counter)));
        }
        let message = wire::decode::<Datagram>(&body)
            .ok_or_else(|| refuse(Rejected::Malformed("undecodable body")))?;
        Ok((from, message))
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

/// What a node knows of a claimed sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    Member,
    Removed,
    Unknown,
}

/// The checks an envelope's header allows on its own: this network, this node, from a member
/// other than this node that was not removed.
fn check_header(
    header: &Header,
    network: NetworkId,
    me: NodeId,
    sender: impl Fn(NodeId) -> Sender,
) -> Result<(), Rejected> {
    if header.network != network {
        return Err(Rejected::WrongNetwork);
    }
    if header.to != me {
        return Err(Rejected::WrongReceiver);
    }
    match sender(header.from) {
        Sender::Removed => Err(Rejected::RemovedSender),
        Sender::Member if header.from != me => Ok(()),
        Sender::Member | Sender::Unknown => Err(Rejected::UnknownSender),
    }
}

/// The listener's first gate: judges a request from its fixed-size header alone, before the
/// body is read, so a stranger cannot make a node buffer a body. The header is not yet
/// authenticated (a stranger can claim a member's id), so the shell still bounds what it
/// buffers at once; the signature is checked by [`Inbox::accept`] once the body is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screen {
    network: NetworkId,
    me: NodeId,
    members: BTreeSet<NodeId>,
    removed: BTreeSet<NodeId>,
}

impl Screen {
    /// A screen for `me` in `network` that lets through nobody yet.
    pub fn new(network: NetworkId, me: NodeId) -> Screen {
        Screen {
            network,
            me,
            members: BTreeSet::new(),
            removed: BTreeSet::new(),
        }
    }

    /// Follows the member table; true if the members changed.
    pub fn update(&mut self, members: Members<'_>) -> bool {
        let current = members
            .peers
            .keys()
            .filter(|id| !members.removed.contains(id))
            .copied()
            .collect::<BTreeSet<_>>();
        if current == self.members && *members.removed == self.removed {
            return false;
        }
        self.members = current;
        self.removed.clone_from(members.removed);
        true
    }

    /// Judges the first `HEADER_LEN` bytes of a request (or fewer, if that is all there is);
    /// the whole envelope's declared length if it may be read.
    pub fn check(&self, head: &[u8]) -> Result<usize, Rejected> {
        let (header, total) = envelope::parse_header(head, envelope::MAX_REQUEST_BODY)?;
        check_header(&header, self.network, self.me, |id| {
            if self.removed.contains(&id) {
                Sender::Removed
            } else if self.members.contains(&id) {
                Sender::Member
            } else {
                Sender::Unknown
            }
        })?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;
    use crate::wire::Call;

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
            name: name.parse().expect("valid name"),
            addr: "127.0.0.1:7300".into(),
            public_key: key.public(),
            priority: 1,
            bot: false,
            overlay: None,
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
            envelope::seal(
                from,
                header,
                &wire::encode(&Request::Call(Call::ListDevices)),
            )
        }

        fn peer_envelope(&self, counter: u64) -> Vec<u8> {
            self.envelope(&self.peer, self.me.id(), self.network, counter)
        }

        /// A datagram sealed by `from` for this node.
        fn datagram(&self, from: &NodeKey, counter: u64) -> Vec<u8> {
            let mut pairs = Pairs::new(from.clone(), self.network);
            pairs
                .with(self.me.id(), &self.me.public())
                .expect("valid keys")
                .seal(
                    from.id(),
                    counter,
                    &wire::encode(&Datagram::Digest([3; 32])),
                )
                .expect("fits")
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
        assert_eq!(request, Request::Call(Call::ListDevices));
        assert_eq!(
            why(inbox.accept(&w.peer_envelope(1), w.members())),
            Some(Rejected::Replayed(1))
        );
        assert!(inbox.accept(&w.peer_envelope(2), w.members()).is_ok());
        assert_eq!(inbox.floors().get(&w.peer.id()), Some(&2));
    }

    #[test]
    fn the_screen_judges_a_request_by_its_header_before_the_body() {
        let mut w = world();
        let mut screen = Screen::new(w.network, w.me.id());
        let from_peer = w.peer_envelope(1);
        let head = &from_peer[..envelope::HEADER_LEN];
        assert_eq!(
            screen.check(head),
            Err(Rejected::UnknownSender),
            "no members yet"
        );
        assert!(screen.update(w.members()));
        assert!(!screen.update(w.members()), "unchanged");
        assert_eq!(screen.check(head), Ok(from_peer.len()));
        assert!(screen.check(&from_peer[..10]).is_err(), "a partial header");
        let stranger = w.envelope(&w.stranger, w.me.id(), w.network, 1);
        assert_eq!(
            screen.check(&stranger[..envelope::HEADER_LEN]),
            Err(Rejected::UnknownSender)
        );
        let mut huge = from_peer.clone();
        let too_long = (envelope::MAX_REQUEST_BODY + 1) as u32;
        huge[60..64].copy_from_slice(&too_long.to_be_bytes());
        assert!(matches!(
            screen.check(&huge[..envelope::HEADER_LEN]),
            Err(Rejected::Malformed(_))
        ));
        w.removed.insert(w.peer.id());
        assert!(screen.update(w.members()));
        assert_eq!(screen.check(head), Err(Rejected::RemovedSender));
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
    fn a_members_datagram_is_accepted_once_and_shares_the_envelopes_window() {
        let mut w = world();
        let mut inbox = Inbox::new(w.network, w.me.id(), &BTreeMap::new());
        let mut pairs = Pairs::new(w.me.clone(), w.network);
        let accepted = inbox.accept_datagram(&w.datagram(&w.peer, 5), w.members(), &mut pairs);
        assert_eq!(accepted, Ok((w.peer.id(), Datagram::Digest([3; 32]))));
        let again = inbox.accept_datagram(&w.datagram(&w.peer, 5), w.members(), &mut pairs);
        assert_eq!(again.err().map(|r| r.why), Some(Rejected::Replayed(5)));
        assert_eq!(
            why(inbox.accept(&w.peer_envelope(5), w.members())),
            Some(Rejected::Replayed(5)),
            "an envelope cannot reuse a datagram's counter"
        );
        let refused = |inbox: &mut Inbox, w: &World, bytes: &[u8], pairs: &mut Pairs| {
            inbox
                .accept_datagram(bytes, w.members(), pairs)
                .err()
                .map(|r| r.why)
        };
        let stranger = w.datagram(&w.stranger, 6);
        assert_eq!(
            refused(&mut inbox, &w, &stranger, &mut pairs),
            Some(Rejected::UnknownSender)
        );
        let mut claims_peer = stranger.clone();
        claims_peer[4..20].copy_from_slice(&w.peer.id().0);
        assert_eq!(
            refused(&mut inbox, &w, &claims_peer, &mut pairs),
            Some(Rejected::BadSignature)
        );
        assert_eq!(
            refused(&mut inbox, &w, &w.datagram(&w.me, 7), &mut pairs),
            Some(Rejected::UnknownSender),
            "from itself"
        );
        w.removed.insert(w.peer.id());
        assert_eq!(
            refused(&mut inbox, &w, &w.datagram(&w.peer, 8), &mut pairs),
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
