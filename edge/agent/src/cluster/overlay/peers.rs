//! Which WireGuard peers this node should have, from the network's member table: a pure
//! function of the gossiped state and the time, so every hub and client derives the same.
//!
//! - A hub has every client member (its address as a /32), every live invite's enrollment key
//!   (the address it holds), and every other hub (reached at its endpoint, kept alive). A used
//!   invite's key stays until the shell retires it (the joiner's own key has shaken hands, or
//!   a grace period passed), because the joiner's welcome travels back through that tunnel.
//!   It also has every standard WireGuard device (`wg add-device`) not removed, for its /32.
//! - A client has the hub, for the whole overlay network, kept alive through its NAT.
//!
//! A removed member or device is gone from the table, so it is gone from here, and its key no
//! longer completes a handshake anywhere.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use constella_cluster::admission::RETRY_GRACE_SECS;
use constella_cluster::identity::NodeId;
use constella_cluster::shared::Shared;
use ipnet::Ipv4Net;

/// Seconds between keepalives through a NAT: WireGuard's usual 25 s stays under the 30 s
/// that the shortest common UDP mapping timeouts allow.
pub(crate) const KEEPALIVE: u16 = 25;

/// One peer as the table says it should be; the endpoint is still a name to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) public_key: [u8; 32],
    pub(crate) allowed_ips: Vec<Ipv4Net>,
    pub(crate) endpoint: Option<String>,
    pub(crate) keepalive: Option<u16>,
}

/// The peers `me` should have, and when that next changes by itself (an invite expiring).
/// `retired` names used invites whose enrollment key is no longer needed.
pub(crate) fn wanted(
    me: NodeId,
    shared: &Shared,
    unix_now: u64,
    retired: &BTreeSet<String>,
) -> (Vec<Wanted>, Option<u64>) {
    let Some(mine) = shared.peers.get(&me).and_then(|p| p.overlay.as_ref()) else {
        return (Vec::new(), None);
    };
    let host = |address: Ipv4Addr| vec![Ipv4Net::from(address)];
    let mut peers = Vec::new();
    let mut next_change = None;
    if mine.hub.is_some() {
        for (id, peer) in &shared.peers {
            let Some(overlay) = peer.overlay.as_ref().filter(|_| *id != me) else {
                continue;
            };
            peers.push(Wanted {
                public_key: overlay.public_key,
                allowed_ips: host(overlay.address),
                endpoint: overlay.hub.as_ref().map(|hub| hub.endpoint.clone()),
                keepalive: overlay.hub.as_ref().map(|_| KEEPALIVE),
            });
        }
        for (id, invite) in &shared.invites {
            let Some(enrollment) = &invite.enrollment else {
                continue;
            };
            // A used invite still answers its joiner's retries for a grace after expiry.
            let until = match invite.used_by {
                None => invite.expires_at,
                Some(_) if retired.contains(id) => continue,
                Some(_) => invite.expires_at.saturating_add(RETRY_GRACE_SECS),
            };
            if until <= unix_now {
                continue;
            }
            next_change = Some(next_change.map_or(until, |t: u64| t.min(until)));
            peers.push(Wanted {
                public_key: enrollment.public_key,
                allowed_ips: host(enrollment.address),
                endpoint: None,
                keepalive: None,
            });
        }
        for (_, device) in shared.live_devices() {
            peers.push(Wanted {
                public_key: device.public_key,
                allowed_ips: host(device.address),
                endpoint: None,
                keepalive: None,
            });
        }
    } else if let Some((_, hub_overlay, hub)) = shared.hub() {
        let network = Ipv4Net::new(hub_overlay.address, hub.prefix_len)
            .map(|net| net.trunc())
            .unwrap_or_else(|_| Ipv4Net::from(hub_overlay.address));
        peers.push(Wanted {
            public_key: hub_overlay.public_key,
            allowed_ips: vec![network],
            endpoint: Some(hub.endpoint.clone()),
            keepalive: Some(KEEPALIVE),
        });
    }
    (peers, next_change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_cluster::identity::NodeKey;
    use constella_cluster::shared::{Device, Enrollment, HubInfo, Invite, OverlayInfo, PeerInfo};

    fn member(shared: &mut Shared, last: u8, hub: bool) -> NodeId {
        let key = NodeKey::generate();
        shared.peers.insert(
            key.id(),
            PeerInfo {
                name: format!("n{last}").parse().expect("valid name"),
                addr: format!("10.42.0.{last}:7300"),
                public_key: key.public(),
                priority: 1,
                bot: false,
                overlay: Some(OverlayInfo {
                    public_key: [last; 32],
                    address: Ipv4Addr::new(10, 42, 0, last),
                    hub: hub.then(|| HubInfo {
                        endpoint: "hub.example.org:51820".into(),
                        prefix_len: 24,
                    }),
                }),
            },
        );
        key.id()
    }

    fn invite(shared: &mut Shared, last: u8, expires_at: u64, used: Option<NodeId>) {
        shared.invites.insert(
            format!("i{last}"),
            Invite {
                sealed_key: vec![last],
                expires_at,
                used_by: used,
                enrollment: Some(Enrollment {
                    public_key: [100 + last; 32],
                    address: Ipv4Addr::new(10, 42, 0, last),
                }),
            },
        );
    }

    #[test]
    fn a_hub_has_its_clients_and_live_enrollments_and_a_client_has_the_hub() {
        let mut shared = Shared::default();
        let hub = member(&mut shared, 1, true);
        let farm = member(&mut shared, 2, false);
        member(&mut shared, 3, false);
        invite(&mut shared, 4, 500, None);
        invite(&mut shared, 5, 50, None);
        invite(&mut shared, 6, 500, Some(farm));

        let none = BTreeSet::new();
        let (peers, next) = wanted(hub, &shared, 100, &none);
        // Members come in node-id order, and the ids here are random.
        let mut keys: Vec<u8> = peers.iter().map(|p| p.public_key[0]).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            vec![2, 3, 104, 106],
            "clients, the live invite, the used one"
        );
        let farm_peer = peers
            .iter()
            .find(|p| p.public_key[0] == 2)
            .expect("the farm is a peer");
        assert_eq!(
            farm_peer.allowed_ips,
            vec!["10.42.0.2/32".parse().expect("a CIDR")]
        );
        assert_eq!(
            farm_peer.endpoint, None,
            "a hub learns a client's endpoint from it"
        );
        assert_eq!(next, Some(500), "the enrollment lapses with its invite");
        let retired: BTreeSet<String> = ["i6".to_string()].into();
        let (peers, _) = wanted(hub, &shared, 100, &retired);
        assert_eq!(peers.len(), 3, "a retired used invite's key goes");
        let (after, next) = wanted(hub, &shared, 500, &none);
        assert_eq!(after.len(), 3, "the used one answers retries for a grace");
        assert_eq!(next, Some(500 + RETRY_GRACE_SECS));
        assert_eq!(
            wanted(hub, &shared, 500 + RETRY_GRACE_SECS, &none).0.len(),
            2
        );

        let (peers, next) = wanted(farm, &shared, 100, &none);
        assert_eq!(
            peers,
            vec![Wanted {
                public_key: [1; 32],
                allowed_ips: vec!["10.42.0.0/24".parse().expect("a CIDR")],
                endpoint: Some("hub.example.org:51820".into()),
                keepalive: Some(KEEPALIVE),
            }]
        );
        assert_eq!(next, None);
    }

    #[test]
    fn a_hub_has_each_device_until_it_is_removed_and_clients_do_not() {
        let mut shared = Shared::default();
        let hub = member(&mut shared, 1, true);
        let farm = member(&mut shared, 2, false);
        let device = |removed: bool| Device {
            changed_at: 1,
            removed,
            public_key: [50; 32],
            address: Ipv4Addr::new(10, 42, 0, 50),
        };
        shared
            .devices
            .insert("phone".parse().expect("valid name"), device(false));
        let none = BTreeSet::new();
        let (peers, _) = wanted(hub, &shared, 0, &none);
        assert_eq!(
            peers.last(),
            Some(&Wanted {
                public_key: [50; 32],
                allowed_ips: vec!["10.42.0.50/32".parse().expect("a CIDR")],
                endpoint: None,
                keepalive: None,
            })
        );
        assert_eq!(wanted(farm, &shared, 0, &none).0.len(), 1, "the hub only");
        shared
            .devices
            .insert("phone".parse().expect("valid name"), device(true));
        assert_eq!(wanted(hub, &shared, 0, &none).0.len(), 1, "the farm only");
    }

    #[test]
    fn a_removed_member_and_a_node_off_the_overlay_have_no_peers() {
        let mut shared = Shared::default();
        let hub = member(&mut shared, 1, true);
        let farm = member(&mut shared, 2, false);
        shared.peers.remove(&farm);
        shared.removed.insert(farm);
        let none = BTreeSet::new();
        assert!(wanted(hub, &shared, 0, &none).0.is_empty());
        assert!(wanted(farm, &shared, 0, &none).0.is_empty());
    }
}
