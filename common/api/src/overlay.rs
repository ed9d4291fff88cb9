//! The WireGuard overlay: `/api/v1/overlay` (what `wg show` prints, and how each member is
//! reached), the ping through it, and standard WireGuard devices.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::NodeName;

/// `GET /api/v1/overlay`: this node's end of the overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayStatus {
    /// The interface's name (`VPN_INTERFACE_NAME`).
    pub interface: String,
    /// This node's WireGuard public key, base64.
    pub public_key: String,
    /// This node's overlay address.
    pub address: Ipv4Addr,
    /// The overlay's network, CIDR.
    pub network: String,
    /// The UDP port WireGuard listens on.
    pub listen_port: u16,
    /// This node is a hub (it relays between its clients).
    pub hub: bool,
    /// The WireGuard peers, as `wg show` lists them.
    pub peers: Vec<OverlayPeer>,
    /// Every other member and device of the overlay, and how this node reaches it.
    pub members: Vec<OverlayMember>,
    /// Datagrams and packets refused, by reason.
    pub drops: OverlayDrops,
}

/// One WireGuard peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayPeer {
    /// Its public key, base64.
    pub public_key: String,
    /// The member or device with this key, or the invite that holds it, if the network knows
    /// it: a label, not always a name.
    pub name: Option<String>,
    /// Where its datagrams last came from (or were configured to go).
    pub endpoint: Option<String>,
    /// The inner addresses it may send from and is sent to, CIDR.
    pub allowed_ips: Vec<String>,
    /// Seconds since its last completed handshake.
    pub latest_handshake_secs: Option<u64>,
    /// Bytes received from it, WireGuard framing included.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Seconds between keepalives, if kept alive.
    pub persistent_keepalive_secs: Option<u16>,
}

/// A member or device and the way traffic to it goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayMember {
    /// Its name.
    pub name: NodeName,
    /// Its overlay address.
    pub address: Ipv4Addr,
    /// A standard WireGuard device (`wg add-device`), not a Constella node.
    pub device: bool,
    /// How this node reaches it.
    pub path: OverlayPath,
}

/// How traffic to a member goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OverlayPath {
    /// Straight to its own WireGuard peer.
    Direct,
    /// Through a hub, which relays it.
    Relayed {
        /// The hub's name (or public key, if the network does not know it).
        via: String,
    },
    /// No peer routes its address.
    Unreachable,
}

/// What the overlay refused, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayDrops {
    /// Not WireGuard, or failed to decrypt.
    pub malformed: u64,
    /// Handshakes from keys that are not peers.
    pub unknown_peer: u64,
    /// Rejected by the protocol (replays, bad MACs, expired sessions).
    pub rejected: u64,
    /// Inner source outside the sender's allowed IPs.
    pub spoofed: u64,
    /// Packets for addresses no peer routes.
    pub no_route: u64,
    /// Cookie replies sent to handshake floods.
    pub cookies_sent: u64,
}

/// `POST /api/v1/overlay/ping`: one ICMP echo through the overlay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingRequest {
    /// The overlay address to ping.
    pub address: Ipv4Addr,
    /// The echo's sequence number.
    pub sequence: u16,
}

/// The echo's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingReply {
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
}

/// `POST /api/v1/overlay/devices`: admit a standard WireGuard device. Only its public key
/// travels: its private key stays with whoever made the pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddDevice {
    /// Its name, unique among devices (`a–z`, `0–9`, `-`, `_`).
    pub name: String,
    /// Its WireGuard public key, base64.
    pub public_key: String,
}

/// What a device's configuration needs, from the network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAdded {
    /// The device's name.
    pub name: NodeName,
    /// Its overlay address.
    pub address: Ipv4Addr,
    /// The overlay's network, CIDR: what the device sends through the hub.
    pub network: String,
    /// The hub's WireGuard public key, base64.
    pub hub_public_key: String,
    /// The hub's public HOST:PORT.
    pub hub_endpoint: String,
    /// Seconds between keepalives the device should send.
    pub persistent_keepalive_secs: u16,
}
