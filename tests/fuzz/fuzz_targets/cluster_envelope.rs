//! Anything on the cluster port: the envelope path (header screen, inbox: parse, header checks,
//! signature, replay window), the datagram path (header, pair keys, AEAD, window) and the body
//! decoders, which a member's signed or sealed message reaches.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};

use constella_cluster::datagram::{self, Pairs};
use constella_cluster::envelope::{self, NetworkId};
use constella_cluster::identity::{NodeId, NodeKey};
use constella_cluster::inbox::{Inbox, Members, Screen};
use constella_cluster::shared::PeerInfo;
use constella_cluster::wire::{self, Datagram, Reply, Request};
use libfuzzer_sys::fuzz_target;

/// A node and one member, keyed once: deriving keys per input would dominate the run.
struct World {
    network: NetworkId,
    me: NodeKey,
    peers: BTreeMap<NodeId, PeerInfo>,
    removed: BTreeSet<NodeId>,
    /// This node's pair keys, and the member's (to seal genuine datagrams), derived once.
    pairs: Mutex<Pairs>,
    member_pairs: Mutex<Pairs>,
    member: NodeKey,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let member = NodeKey::from_seed([2; 32]);
        let me = NodeKey::from_seed([1; 32]);
        let network = NetworkId([7; 16]);
        World {
            network,
            pairs: Mutex::new(Pairs::new(me.clone(), network)),
            member_pairs: Mutex::new(Pairs::new(member.clone(), network)),
            member: member.clone(),
            me,
            peers: BTreeMap::from([(
                member.id(),
                PeerInfo {
                    name: "member".parse().expect("valid name"),
                    addr: "127.0.0.1:7300".into(),
                    public_key: member.public(),
                    priority: 1,
                    bot: false,
                    overlay: None,
                },
            )]),
            removed: BTreeSet::new(),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let World {
        network,
        me,
        peers,
        removed,
        pairs,
        member_pairs,
        member,
    } = world();
    let (network, members) = (*network, || Members { peers, removed });
    let mut screen = Screen::new(network, me.id());
    screen.update(members());
    let _ = screen.check(&data[..data.len().min(envelope::HEADER_LEN)]);
    let mut inbox = Inbox::new(network, me.id(), &BTreeMap::new());
    let _ = inbox.accept(data, members());
    let _ = envelope::parse(data);
    let mut pairs = pairs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = inbox.accept_datagram(data, members(), &mut pairs);
    let _ = datagram::parse_header(data);
    // The same bytes as the body of a genuine datagram from the member: what a member's
    // datagram reaches past the AEAD.
    let mut member_pairs = member_pairs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(sealed) = member_pairs
        .with(me.id(), &me.public())
        .and_then(|keys| keys.seal(member.id(), 1, data))
    {
        let mut inbox = Inbox::new(network, me.id(), &BTreeMap::new());
        let _ = inbox.accept_datagram(&sealed, members(), &mut pairs);
    }
    let _ = wire::decode::<Datagram>(data);
    let _ = wire::decode::<Request>(data);
    let _ = wire::decode::<Reply>(data);
});
