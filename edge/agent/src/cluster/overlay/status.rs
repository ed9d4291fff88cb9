//! What `wg show` and `GET /api/v1/overlay` report: the overlay's own peers, and for every
//! other member and device of the network, the peer its traffic goes to (its own: direct; a
//! hub's: relayed). Names come from the member table, so keys read as farms.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cluster::OverlayRoute;
use constella_api::overlay::{
    OverlayDrops, OverlayMember, OverlayPath, OverlayPeer, OverlayStatus,
};
use constella_cluster::identity::NodeId;
use constella_cluster::shared::Shared;
use constella_overlay::{Overlay, PublicKey};
use ipnet::Ipv4Net;
use tokio::sync::watch;

/// The overlay seen from the API: the handle, the settings it was started with, and the
/// member table that names its peers.
#[derive(Clone)]
pub(crate) struct View {
    pub(crate) overlay: Overlay,
    pub(crate) interface: String,
    pub(crate) network: Ipv4Net,
    pub(crate) listen_port: u16,
    pub(crate) me: NodeId,
    pub(crate) table: watch::Receiver<Shared>,
}

impl View {
    /// How to reach addresses inside the overlay.
    pub(crate) fn route(&self) -> OverlayRoute {
        OverlayRoute {
            overlay: self.overlay.clone(),
            network: self.network,
        }
    }

    pub(crate) fn status(&self) -> OverlayStatus {
        let shared = self.table.borrow().clone();
        let names = names(&shared);
        let name_of = |key: &PublicKey| names.get(key.as_bytes()).cloned();
        let peers = self
            .overlay
            .peers()
            .into_iter()
            .map(|peer| OverlayPeer {
                public_key: peer.public_key.to_string(),
                name: name_of(&peer.public_key),
                endpoint: peer.endpoint.map(|e| e.to_string()),
                allowed_ips: peer.allowed_ips.iter().map(Ipv4Net::to_string).collect(),
                latest_handshake_secs: peer.since_handshake.map(|d| d.as_secs()),
                rx_bytes: peer.rx_bytes as u64,
                tx_bytes: peer.tx_bytes as u64,
                persistent_keepalive_secs: peer.persistent_keepalive,
            })
            .collect();
        let path = |own: [u8; 32], address: Ipv4Addr| match self.overlay.route(address) {
            None => OverlayPath::Unreachable,
            Some(key) if *key.as_bytes() == own => OverlayPath::Direct,
            Some(key) => OverlayPath::Relayed {
                via: name_of(&key).unwrap_or_else(|| key.to_string()),
            },
        };
        let nodes = shared.peers.iter().filter(|(id, _)| **id != self.me);
        let mut members: Vec<OverlayMember> = nodes
            .filter_map(|(_, peer)| {
                let overlay = peer.overlay.as_ref()?;
                Some(OverlayMember {
                    name: peer.name.clone(),
                    address: overlay.address,
                    device: false,
                    path: path(overlay.public_key, overlay.address),
                })
            })
            .collect();
        members.extend(shared.live_devices().map(|(name, device)| OverlayMember {
            name: name.clone(),
            address: device.address,
            device: true,
            path: path(device.public_key, device.address),
        }));
        members.sort_by_key(|member| member.address);
        let drops = self.overlay.drops();
        OverlayStatus {
            interface: self.interface.clone(),
            public_key: self.overlay.public_key().to_string(),
            address: self.overlay.address(),
            network: self.network.to_string(),
            listen_port: self.listen_port,
            hub: shared
                .peers
                .get(&self.me)
                .and_then(|p| p.overlay.as_ref())
                .is_some_and(|o| o.hub.is_some()),
            peers,
            members,
            drops: OverlayDrops {
                malformed: drops.malformed,
                unknown_peer: drops.unknown_peer,
                rejected: drops.rejected,
                spoofed: drops.spoofed,
                no_route: drops.no_route,
                cookies_sent: drops.cookies_sent,
            },
        }
    }

    pub(crate) async fn ping(&self, address: Ipv4Addr, sequence: u16) -> io::Result<Duration> {
        self.overlay.ping(address, sequence, PING_TIMEOUT).await
    }
}

/// How long one echo waits, as `ping -W`'s usual value.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Every overlay key the network knows, by the name it goes by.
fn names(shared: &Shared) -> BTreeMap<[u8; 32], String> {
    let members = shared
        .peers
        .values()
        .filter_map(|peer| Some((peer.overlay.as_ref()?.public_key, peer.name.to_string())));
    let devices = shared
        .live_devices()
        .map(|(name, device)| (device.public_key, name.to_string()));
    let enrollments = shared.invites.values().filter_map(|invite| {
        let enrollment = invite.enrollment.as_ref()?;
        Some((
            enrollment.public_key,
            format!("(invite for {})", enrollment.address),
        ))
    });
    enrollments.chain(devices).chain(members).collect()
}
