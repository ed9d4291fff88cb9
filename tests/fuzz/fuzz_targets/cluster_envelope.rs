//! Anything on the cluster port's message path: the header screen, the inbox (parse, header
//! checks, signature, replay window) and the body decoders, which a member's signed message
//! reaches.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use constella_cluster::envelope::{self, NetworkId};
use constella_cluster::identity::{NodeId, NodeKey};
use constella_cluster::inbox::{Inbox, Members, Screen};
use constella_cluster::shared::PeerInfo;
use constella_cluster::wire::{self, Reply, Request};
use libfuzzer_sys::fuzz_target;

/// A node and one member, keyed once: deriving keys per input would dominate the run.
struct World {
    network: NetworkId,
    me: NodeKey,
    peers: BTreeMap<NodeId, PeerInfo>,
    removed: BTreeSet<NodeId>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let member = NodeKey::from_seed([2; 32]);
        World {
            network: NetworkId([7; 16]),
            me: NodeKey::from_seed([1; 32]),
            peers: BTreeMap::from([(
                member.id(),
                PeerInfo {
                    name: "member".into(),
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
    } = world();
    let (network, members) = (*network, || Members { peers, removed });
    let mut screen = Screen::new(network, me.id());
    screen.update(members());
    let _ = screen.check(&data[..data.len().min(envelope::HEADER_LEN)]);
    let mut inbox = Inbox::new(network, me.id(), &BTreeMap::new());
    let _ = inbox.accept(data, members());
    let _ = envelope::parse(data);
    let _ = wire::decode::<Request>(data);
    let _ = wire::decode::<Reply>(data);
});
