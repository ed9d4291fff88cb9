//! The part of a node's network state that every node converges on by gossip: the peer table,
//! removed nodes, the bot lease record, the invites and the overlay's WireGuard devices. `merge` is the one rule by which two
//! views combine; it must be a join (commutative, associative, idempotent) so that any order of
//! delivery, with any duplication, converges.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use constella_api::NodeName;
use serde::{Deserialize, Serialize};

use crate::identity::{NodeId, PublicKey};
use crate::lease;

/// The part of the state that every node converges on by gossip.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    pub peers: BTreeMap<NodeId, PeerInfo>,
    pub removed: BTreeSet<NodeId>,
    pub bot_lease: lease::Record,
    pub invites: BTreeMap<String, Invite>,
    /// Standard WireGuard devices (a phone, a laptop) by name, removed ones included.
    pub devices: BTreeMap<NodeName, Device>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: NodeName,
    pub addr: String,
    pub public_key: PublicKey,
    pub priority: u32,
    pub bot: bool,
    /// Its place in the WireGuard overlay, when the network has one.
    pub overlay: Option<OverlayInfo>,
}

/// A member's place in the WireGuard overlay.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OverlayInfo {
    /// Its WireGuard static public key.
    pub public_key: [u8; 32],
    /// Its overlay address; its cluster address is on it.
    pub address: Ipv4Addr,
    /// Present on a hub: where clients send their datagrams.
    pub hub: Option<HubInfo>,
}

/// What clients need to know of a hub.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HubInfo {
    /// The hub's public UDP endpoint, HOST:PORT.
    pub endpoint: String,
    /// The overlay's prefix length; the network is the hub's address under it.
    pub prefix_len: u8,
}

/// The overlay place an invite holds for its joiner: the address it will have, and the public
/// half of the WireGuard key derived from the invite key, which the hubs accept until the invite
/// is used or expires so the joiner can reach a member through the tunnel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Enrollment {
    pub public_key: [u8; 32],
    pub address: Ipv4Addr,
}

/// A standard WireGuard device admitted with `wg add-device`: the hubs make it a peer for its
/// address. A name's entry is a last-writer-wins register: the later `changed_at` wins, and at
/// one time a removal wins, so a removal is not undone by stale gossip and a name can be reused.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Device {
    /// Unix seconds of the last add or removal.
    pub changed_at: u64,
    pub removed: bool,
    pub public_key: [u8; 32],
    pub address: Ipv4Addr,
}

/// An invite: its key sealed under the network key, its expiry (unix seconds) and the key of
/// the node that used it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub sealed_key: Vec<u8>,
    pub expires_at: u64,
    pub used_by: Option<NodeId>,
    pub enrollment: Option<Enrollment>,
}

impl Shared {
    /// Merges another node's view, as a join of independent parts, so that nodes converge
    /// whatever order states arrive in and however often:
    /// - removals are a grow-only set, and a removed node is dropped from the peers;
    /// - peers are a union; two entries for one node id (which only a changed address or
    ///   priority could give) resolve to the greater by (name, addr, priority, bot, overlay);
    /// - the lease record with the higher epoch wins; at one epoch a release (no holder) wins,
    ///   then the smaller holder id; the bot offset only grows;
    /// - invites are a union; once used an invite stays used, and two redemptions resolve to the
    ///   smaller joiner id everywhere;
    /// - devices are a union of last-writer-wins registers (see `Device`).
    ///
    /// Two nodes admitted at once under one name through different seeds both stay (each was
    /// admitted by a quorum-confirmed invite); `peer_by_name` resolves the name to the smaller
    /// node id everywhere, and the table shows both so the operator can remove one.
    /// Returns true if anything changed.
    pub fn merge(&mut self, other: &Shared) -> bool {
        let before = self.clone();
        self.removed.extend(other.removed.iter().copied());
        for (id, info) in &other.peers {
            let entry = self.peers.entry(*id).or_insert_with(|| info.clone());
            if peer_rank(info) > peer_rank(entry) {
                entry.clone_from(info);
            }
        }
        let removed = &self.removed;
        self.peers.retain(|id, _| !removed.contains(id));
        if lease_rank(&other.bot_lease) > lease_rank(&self.bot_lease) {
            self.bot_lease.holder = other.bot_lease.holder;
            self.bot_lease.epoch = other.bot_lease.epoch;
        }
        self.bot_lease.offset = self.bot_lease.offset.max(other.bot_lease.offset);
        for (id, invite) in &other.invites {
            let entry = self
                .invites
                .entry(id.clone())
                .or_insert_with(|| invite.clone());
            let rank = |i: &Invite| (i.expires_at, i.sealed_key.clone(), i.enrollment.clone());
            if rank(invite) > rank(entry) {
                entry.expires_at = invite.expires_at;
                entry.sealed_key.clone_from(&invite.sealed_key);
                entry.enrollment.clone_from(&invite.enrollment);
            }
            let replace = match (&entry.used_by, &invite.used_by) {
                (None, Some(_)) => true,
                (Some(mine), Some(theirs)) => theirs < mine,
                _ => false,
            };
            if replace {
                entry.used_by.clone_from(&invite.used_by);
            }
        }
        for (name, device) in &other.devices {
            let entry = self
                .devices
                .entry(name.clone())
                .or_insert_with(|| device.clone());
            if device > entry {
                entry.clone_from(device);
            }
        }
        *self != before
    }

    /// A digest of the shared state, to skip sending it when a peer already has the same.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        // postcard of BTreeMaps is deterministic; encoding a plain struct cannot fail.
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        sha2::Sha256::digest(&bytes).into()
    }

    /// Drops invites that expired more than a day ago (used ones are kept as long, then go too).
    pub fn prune_invites(&mut self, unix_now: u64) {
        self.invites
            .retain(|_, i| i.expires_at.saturating_add(86_400) > unix_now);
    }

    /// The hub clients use: the first by node id (any hub relays for all; one is enough).
    pub fn hub(&self) -> Option<(NodeId, &OverlayInfo, &HubInfo)> {
        self.peers.iter().find_map(|(id, peer)| {
            let overlay = peer.overlay.as_ref()?;
            let hub = overlay.hub.as_ref()?;
            Some((*id, overlay, hub))
        })
    }

    /// Admits a standard WireGuard device under `name` with the lowest free overlay address.
    pub fn add_device(
        &mut self,
        name: &str,
        public_key: [u8; 32],
        unix_now: u64,
    ) -> Result<Ipv4Addr, String> {
        let name: NodeName = name
            .parse()
            .map_err(|reason: &str| reason.replace("node name", "device name"))?;
        if self.live_devices().any(|(other, _)| *other == name) {
            return Err(format!(
                "a device named {name:?} exists; remove it first (wg remove-device {name})"
            ));
        }
        // `wg show`, the API and the bot name nodes and devices side by side.
        if self.peers.values().any(|p| p.name == name) {
            return Err(format!(
                "a node is named {name:?}; a device needs a name of its own"
            ));
        }
        let taken = self.live_devices().map(|(_, d)| d.public_key).chain(
            self.peers
                .values()
                .filter_map(|p| Some(p.overlay.as_ref()?.public_key)),
        );
        if taken.into_iter().any(|key| key == public_key) {
            return Err("that public key is already in the overlay".into());
        }
        let address = self
            .free_overlay_address(unix_now)
            .ok_or("the overlay has no free address left (or no hub)")?;
        // Later than any earlier entry under this name, so the add wins everywhere.
        let changed_at = self
            .devices
            .get(&name)
            .map_or(unix_now, |old| unix_now.max(old.changed_at + 1));
        self.devices.insert(
            name,
            Device {
                changed_at,
                removed: false,
                public_key,
                address,
            },
        );
        Ok(address)
    }

    /// Withdraws a device: a tombstone, so stale gossip does not bring it back.
    pub fn remove_device(&mut self, name: &str, unix_now: u64) -> Result<(), String> {
        let Some(device) = self.devices.get_mut(name).filter(|d| !d.removed) else {
            return Err(format!("no device named {name:?}"));
        };
        device.removed = true;
        device.changed_at = unix_now.max(device.changed_at);
        Ok(())
    }

    /// The devices not removed.
    pub fn live_devices(&self) -> impl Iterator<Item = (&NodeName, &Device)> {
        self.devices.iter().filter(|(_, device)| !device.removed)
    }

    /// The lowest overlay address no member or device has and no live invite holds, in the hub's
    /// network (its network and broadcast addresses excluded).
    pub fn free_overlay_address(&self, unix_now: u64) -> Option<Ipv4Addr> {
        let (_, overlay, hub) = self.hub()?;
        let host_bits = 32 - u32::from(hub.prefix_len.min(30));
        let network = u32::from(overlay.address) >> host_bits << host_bits;
        let taken: BTreeSet<Ipv4Addr> = self
            .peers
            .values()
            .filter_map(|p| p.overlay.as_ref().map(|o| o.address))
            .chain(self.invites.values().filter_map(|invite| {
                let live = invite.used_by.is_none() && invite.expires_at > unix_now;
                invite
                    .enrollment
                    .as_ref()
                    .filter(|_| live)
                    .map(|e| e.address)
            }))
            .chain(self.live_devices().map(|(_, device)| device.address))
            .collect();
        (1..(1u32 << host_bits) - 1)
            .map(|host| Ipv4Addr::from(network | host))
            .find(|address| !taken.contains(address))
    }

    /// The node a name stands for (names compare without regard to case, so `Beta` typed finds
    /// `beta`): the smaller node id if two share it.
    pub fn peer_by_name(&self, name: &str) -> Option<(NodeId, &PeerInfo)> {
        self.peers
            .iter()
            .find(|(_, p)| p.name.eq_ignore_ascii_case(name))
            .map(|(id, p)| (*id, p))
    }
}

/// The order in which two entries for one node id resolve.
fn peer_rank(p: &PeerInfo) -> (&str, &str, u32, bool, &Option<OverlayInfo>) {
    (&p.name, &p.addr, p.priority, p.bot, &p.overlay)
}

/// The order in which two lease records resolve: higher epoch, then no holder (a release), then
/// the smaller holder.
fn lease_rank(r: &lease::Record) -> (u64, std::cmp::Reverse<Option<NodeId>>) {
    (r.epoch, std::cmp::Reverse(r.holder))
}

#[cfg(test)]
mod tests {
    //! The merge is a join: commutative, associative, idempotent, and so convergent under any
    //! delivery order with any duplication. States are drawn from a small universe of ids, names
    //! and invites so that conflicts (one id twice, one name twice, one invite redeemed twice,
    //! one epoch with two holders, removals of live peers) are common.
    use proptest::prelude::*;

    use super::*;
    use crate::identity::NodeKey;

    fn keys() -> &'static [NodeKey] {
        static KEYS: std::sync::OnceLock<Vec<NodeKey>> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| (0..5u8).map(|i| NodeKey::from_seed([i + 1; 32])).collect())
    }

    fn peer() -> impl Strategy<Value = (NodeId, PeerInfo)> {
        (0..5usize, 0..3u8, 0..2u8, 0..3u32, any::<bool>()).prop_map(
            |(k, name, addr, priority, bot)| {
                let key = &keys()[k];
                let info = PeerInfo {
                    name: format!("n{name}").parse().expect("valid name"),
                    addr: format!("10.0.0.{addr}:7300"),
                    public_key: key.public(),
                    priority,
                    bot,
                    // Some entries on the overlay, so the merge meets both kinds.
                    overlay: (addr % 2 == 1).then(|| OverlayInfo {
                        public_key: [addr; 32],
                        address: Ipv4Addr::new(10, 42, 0, addr),
                        hub: None,
                    }),
                };
                (key.id(), info)
            },
        )
    }

    fn invite() -> impl Strategy<Value = (String, Invite)> {
        (0..3u8, 0..2u8, 0..2u64, proptest::option::of(0..3u8)).prop_map(
            |(id, key, expiry, used_by)| {
                let invite = Invite {
                    sealed_key: vec![key; 4],
                    expires_at: 1_000 + expiry,
                    used_by: used_by.map(|n| keys()[usize::from(n)].id()),
                    enrollment: (expiry % 2 == 1).then(|| Enrollment {
                        public_key: [key; 32],
                        address: Ipv4Addr::new(10, 42, 0, key),
                    }),
                };
                (format!("invite-{id}"), invite)
            },
        )
    }

    fn device() -> impl Strategy<Value = (NodeName, Device)> {
        (0..2u8, 0..3u64, any::<bool>(), 0..2u8).prop_map(|(name, changed_at, removed, key)| {
            let device = Device {
                changed_at,
                removed,
                public_key: [key; 32],
                address: Ipv4Addr::new(10, 42, 0, 100 + key),
            };
            let name = format!("device-{name}").parse().expect("valid name");
            (name, device)
        })
    }

    fn shared() -> impl Strategy<Value = Shared> {
        (
            proptest::collection::vec(peer(), 0..5),
            proptest::collection::btree_set(0..5usize, 0..2),
            (0..3u64, proptest::option::of(0..5usize), 0..4u64),
            proptest::collection::vec(invite(), 0..3),
            proptest::collection::vec(device(), 0..3),
        )
            .prop_map(
                |(peers, removed, (epoch, holder, offset), invites, devices)| {
                    let mut state = Shared {
                        peers: BTreeMap::new(),
                        removed: removed.into_iter().map(|k| keys()[k].id()).collect(),
                        bot_lease: lease::Record {
                            holder: holder.map(|k| keys()[k].id()),
                            epoch,
                            offset,
                        },
                        invites: BTreeMap::new(),
                        devices: BTreeMap::new(),
                    };
                    // Built through merge, so every drawn state is one a node could hold.
                    for (id, info) in peers {
                        let one = Shared {
                            peers: [(id, info)].into_iter().collect(),
                            ..Shared::default()
                        };
                        state.merge(&one);
                    }
                    for (id, invite) in invites {
                        let one = Shared {
                            invites: [(id, invite)].into_iter().collect(),
                            ..Shared::default()
                        };
                        state.merge(&one);
                    }
                    for (name, device) in devices {
                        let one = Shared {
                            devices: [(name, device)].into_iter().collect(),
                            ..Shared::default()
                        };
                        state.merge(&one);
                    }
                    state.merge(&Shared {
                        removed: state.removed.clone(),
                        ..Shared::default()
                    });
                    state
                },
            )
    }

    fn merged(a: &Shared, b: &Shared) -> Shared {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in shared(), b in shared()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in shared(), b in shared(), c in shared()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent_and_reports_no_change(a in shared(), b in shared()) {
            let mut once = merged(&a, &b);
            let twice = merged(&once, &b);
            prop_assert_eq!(&twice, &once);
            prop_assert!(!once.merge(&b));
            prop_assert!(!once.merge(&once.clone()));
        }

        #[test]
        fn any_delivery_order_with_duplicates_converges(
            states in proptest::collection::vec(shared(), 1..5),
            order in proptest::collection::vec((0..4usize, 0..4usize), 0..40),
        ) {
            // Node i starts from states[i]; each step delivers node a's current state to node b
            // (a step may repeat, so messages are duplicated). A final round of full exchange
            // (all pairs, in order) must leave every node equal to the merge of all states.
            let n = states.len();
            let mut nodes = states.clone();
            for (a, b) in order {
                let (a, b) = (a % n, b % n);
                let sent = nodes[a].clone();
                nodes[b].merge(&sent);
            }
            for a in 0..n {
                for b in 0..n {
                    let sent = nodes[a].clone();
                    nodes[b].merge(&sent);
                }
            }
            let all = states.iter().fold(Shared::default(), |acc, s| merged(&acc, s));
            for node in &nodes {
                prop_assert_eq!(node, &all);
                prop_assert_eq!(node.digest(), all.digest());
            }
        }
    }

    #[test]
    fn a_free_overlay_address_skips_members_and_live_invites_only() {
        let key = |n: usize| &keys()[n];
        let on = |n: usize, last: u8, hub: bool| PeerInfo {
            name: format!("n{n}").parse().expect("valid name"),
            addr: format!("10.42.0.{last}:7300"),
            public_key: key(n).public(),
            priority: 1,
            bot: false,
            overlay: Some(OverlayInfo {
                public_key: [last; 32],
                address: Ipv4Addr::new(10, 42, 0, last),
                hub: hub.then(|| HubInfo {
                    endpoint: "203.0.113.1:51820".into(),
                    prefix_len: 24,
                }),
            }),
        };
        let mut shared = Shared::default();
        assert_eq!(shared.free_overlay_address(10), None, "no hub, no overlay");
        shared.peers.insert(key(0).id(), on(0, 1, true));
        shared.peers.insert(key(1).id(), on(1, 2, false));
        let held = |last: u8, expires_at: u64, used: bool| Invite {
            sealed_key: vec![last],
            expires_at,
            used_by: used.then(|| key(1).id()),
            enrollment: Some(Enrollment {
                public_key: [last; 32],
                address: Ipv4Addr::new(10, 42, 0, last),
            }),
        };
        shared.invites.insert("live".into(), held(3, 100, false));
        shared.invites.insert("expired".into(), held(4, 5, false));
        shared.invites.insert("used".into(), held(5, 100, true));
        let device = |last: u8, removed: bool| Device {
            changed_at: 1,
            removed,
            public_key: [last; 32],
            address: Ipv4Addr::new(10, 42, 0, last),
        };
        shared
            .devices
            .insert("phone".parse().expect("valid name"), device(4, false));
        shared
            .devices
            .insert("old-laptop".parse().expect("valid name"), device(6, true));
        assert_eq!(
            shared.free_overlay_address(10),
            Some(Ipv4Addr::new(10, 42, 0, 5))
        );
        assert_eq!(shared.hub().map(|(id, _, _)| id), Some(key(0).id()));
    }

    #[test]
    fn a_device_removal_survives_stale_gossip_and_a_later_add_wins() {
        let device = |changed_at: u64, removed: bool| Device {
            changed_at,
            removed,
            public_key: [7; 32],
            address: Ipv4Addr::new(10, 42, 0, 9),
        };
        let with = |d: Device| Shared {
            devices: [("phone".parse().expect("valid name"), d)]
                .into_iter()
                .collect(),
            ..Shared::default()
        };
        let mut node = with(device(5, true));
        assert!(
            !node.merge(&with(device(5, false))),
            "a removal wins at one time"
        );
        assert!(!node.merge(&with(device(4, false))), "stale adds lose");
        assert_eq!(node.live_devices().count(), 0);
        assert!(node.merge(&with(device(6, false))), "a later add wins");
        assert_eq!(node.live_devices().count(), 1);
    }

    #[test]
    fn devices_get_free_addresses_unique_names_and_keys_and_names_come_back_after_removal() {
        let mut shared = Shared::default();
        assert!(shared.add_device("phone", [9; 32], 10).is_err(), "no hub");
        shared.peers.insert(
            keys()[0].id(),
            PeerInfo {
                name: "hub".parse().expect("valid name"),
                addr: "10.42.0.1:7300".into(),
                public_key: keys()[0].public(),
                priority: 1,
                bot: false,
                overlay: Some(OverlayInfo {
                    public_key: [1; 32],
                    address: Ipv4Addr::new(10, 42, 0, 1),
                    hub: Some(HubInfo {
                        endpoint: "203.0.113.1:51820".into(),
                        prefix_len: 24,
                    }),
                }),
            },
        );
        assert_eq!(
            shared.add_device("phone", [9; 32], 10),
            Ok(Ipv4Addr::new(10, 42, 0, 2))
        );
        assert!(
            shared.add_device("phone", [8; 32], 10).is_err(),
            "name taken"
        );
        assert!(
            shared.add_device("tablet", [9; 32], 10).is_err(),
            "key taken"
        );
        assert!(
            shared.add_device("tablet", [1; 32], 10).is_err(),
            "the hub's key"
        );
        assert!(
            shared.add_device("Tablet", [8; 32], 10).is_err(),
            "bad name"
        );
        assert!(
            shared
                .add_device("hub", [8; 32], 10)
                .is_err_and(|e| e.contains("a node is named")),
            "a node's name"
        );
        assert!(shared.remove_device("tablet", 10).is_err());
        assert_eq!(shared.remove_device("phone", 10), Ok(()));
        assert!(shared.remove_device("phone", 10).is_err(), "already gone");
        // Re-added in the same second, the add still outranks the tombstone.
        assert_eq!(
            shared.add_device("phone", [7; 32], 10),
            Ok(Ipv4Addr::new(10, 42, 0, 2))
        );
        assert_eq!(shared.devices["phone"].changed_at, 11);
    }

    #[test]
    fn removals_win_and_used_invites_stay_used() {
        let key = &keys()[0];
        let mut a = Shared::default();
        a.peers.insert(
            key.id(),
            PeerInfo {
                name: "n0".parse().expect("valid name"),
                addr: "a".into(),
                public_key: key.public(),
                priority: 1,
                bot: false,
                overlay: None,
            },
        );
        let mut b = Shared::default();
        b.removed.insert(key.id());
        assert!(a.merge(&b));
        assert!(a.peers.is_empty());
        let invite = |used_by: Option<NodeId>| Invite {
            sealed_key: vec![1],
            expires_at: 5,
            used_by,
            enrollment: None,
        };
        let (small, large) = (NodeId([1; 16]), NodeId([2; 16]));
        let mut c = Shared::default();
        c.invites.insert("i".into(), invite(Some(large)));
        let mut d = Shared::default();
        d.invites.insert("i".into(), invite(None));
        d.merge(&c);
        assert_eq!(d.invites["i"].used_by, Some(large));
        c.invites.insert("i".into(), invite(Some(small)));
        d.merge(&c);
        assert_eq!(d.invites["i"].used_by, Some(small));
    }
}
