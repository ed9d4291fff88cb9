//! What a node keeps on disk about its network, in two files of the state directory:
//!
//! - `network_state.json`: network id, owner, this node's name and listen address, the peer table
//!   (`name`, `addr`, `node_id`, `status`, `last_seen`, key, priority, bot), removed nodes, the
//!   `bot_lease`, pending invites (their keys sealed under the network key), the replay floors,
//!   the message-counter reservation and the overlay settings (interface name, UDP listen
//!   address). Each peer's overlay place (WireGuard public key in base64, address, and for a
//!   hub its endpoint and prefix) sits in its row. No secret is stored here in clear.
//! - `secrets.json`: the node's private key, the network key, the bot token and the node's
//!   WireGuard private key.
//!
//! Both are written atomically with mode 0600 (`state::write_atomic`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use constella_api::NodeName;
use constella_cluster::identity::{NodeId, NodeKey, PublicKey};
use constella_cluster::lease;
use constella_cluster::shared::{Device, HubInfo, Invite, OverlayInfo, PeerInfo, Shared};

use crate::state;

pub(crate) const STATE_FILE: &str = "network_state.json";
pub(crate) const SECRETS_FILE: &str = "secrets.json";

/// What a node last saw of a peer (local, not gossiped).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    pub(crate) status: String,
    pub(crate) last_seen: Option<u64>,
}

/// `network_state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct NetworkState {
    pub(crate) network_id: String,
    pub(crate) owner_username: String,
    pub(crate) name: NodeName,
    pub(crate) node_id: NodeId,
    pub(crate) listen: String,
    #[serde(with = "peer_list")]
    pub(crate) peers: (BTreeMap<NodeId, PeerInfo>, BTreeMap<NodeId, Seen>),
    pub(crate) removed: BTreeSet<NodeId>,
    pub(crate) bot_lease: lease::Record,
    pub(crate) invites: BTreeMap<String, Invite>,
    /// The overlay's standard WireGuard devices, removed ones included (see `Shared::devices`).
    #[serde(default)]
    pub(crate) devices: BTreeMap<NodeName, Device>,
    /// Highest message counter accepted from each sender, so a restart does not reopen replays.
    pub(crate) replay_floor: BTreeMap<NodeId, u64>,
    /// This node's message counters start above this after a restart.
    pub(crate) counter_reserved: u64,
    /// This node's overlay settings; none when the network has no overlay.
    #[serde(default)]
    pub(crate) overlay: Option<OverlaySettings>,
}

/// How this node runs its end of the overlay (its place in it is in its peer row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OverlaySettings {
    /// The name `wg show` prints (and the TUN interface's, where there is one).
    pub(crate) interface: String,
    /// The UDP socket's address: the hub's public port, or port 0 on a client.
    pub(crate) listen: String,
    /// Whether the overlay is also a TUN interface of the operating system (`--tun`).
    #[serde(default)]
    pub(crate) tun: bool,
}

/// `secrets.json`.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Secrets {
    #[serde(with = "hex_bytes")]
    pub(crate) node_key: [u8; 32],
    #[serde(with = "hex_bytes")]
    pub(crate) network_key: [u8; 32],
    pub(crate) bot_token: Option<String>,
    /// The node's WireGuard private key, when the network has an overlay.
    #[serde(default, with = "optional_hex_bytes")]
    pub(crate) wireguard_key: Option<[u8; 32]>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(hidden)")
    }
}

impl Secrets {
    pub(crate) fn key(&self) -> NodeKey {
        NodeKey::from_seed(self.node_key)
    }
}

impl NetworkState {
    pub(crate) fn shared(&self) -> Shared {
        Shared {
            peers: self.peers.0.clone(),
            removed: self.removed.clone(),
            bot_lease: self.bot_lease,
            invites: self.invites.clone(),
            devices: self.devices.clone(),
        }
    }

    pub(crate) fn set_shared(&mut self, shared: Shared) {
        self.peers.1.retain(|id, _| shared.peers.contains_key(id));
        self.peers.0 = shared.peers;
        self.removed = shared.removed;
        self.bot_lease = shared.bot_lease;
        self.invites = shared.invites;
        self.devices = shared.devices;
    }
}

/// True if `dir` already holds a network.
pub(crate) fn exists(dir: &Path) -> bool {
    dir.join(STATE_FILE).exists()
}

pub(crate) fn load(dir: &Path) -> anyhow::Result<(NetworkState, Secrets)> {
    let state: NetworkState = read_json(&dir.join(STATE_FILE))?;
    let secrets: Secrets = read_json(&dir.join(SECRETS_FILE))?;
    if secrets.key().id() != state.node_id {
        bail!(
            "{}: node_key does not match node_id {} in {}",
            dir.join(SECRETS_FILE).display(),
            state.node_id,
            STATE_FILE
        );
    }
    Ok((state, secrets))
}

pub(crate) fn save_state(dir: &Path, state: &NetworkState) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(state)?;
    state::write_atomic(&dir.join(STATE_FILE), &json)
}

pub(crate) fn save_secrets(dir: &Path, secrets: &Secrets) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(secrets)?;
    state::write_atomic(&dir.join(SECRETS_FILE), &json)
}

/// Writes a new node's files: secrets first, so a crash in between leaves no state without keys.
pub(crate) fn create(dir: &Path, state: &NetworkState, secrets: &Secrets) -> anyhow::Result<()> {
    state::ensure_dir(dir)?;
    if exists(dir) {
        bail!(
            "{} already exists: this state directory belongs to a network (remove it to start over)",
            dir.join(STATE_FILE).display()
        );
    }
    save_secrets(dir, secrets)?;
    save_state(dir, state)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = crate::state::read_private(path)?;
    let de = &mut serde_json::Deserializer::from_slice(&text);
    serde_path_to_error::deserialize(de)
        .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))
}

/// The peer table as JSON: a list of objects with the fields operators look for.
mod peer_list {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Row {
        name: NodeName,
        addr: String,
        node_id: String,
        #[serde(with = "super::hex_bytes")]
        public_key: [u8; 32],
        priority: u32,
        bot: bool,
        status: String,
        last_seen: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        overlay: Option<OverlayRow>,
    }

    /// A peer's overlay place as operators read it: the key in the base64 form `wg` prints.
    #[derive(Serialize, Deserialize)]
    struct OverlayRow {
        public_key: String,
        address: std::net::Ipv4Addr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hub_endpoint: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_len: Option<u8>,
    }

    fn overlay_row(info: &OverlayInfo) -> OverlayRow {
        OverlayRow {
            public_key: constella_overlay::PublicKey::from_bytes(info.public_key).to_string(),
            address: info.address,
            hub_endpoint: info.hub.as_ref().map(|h| h.endpoint.clone()),
            prefix_len: info.hub.as_ref().map(|h| h.prefix_len),
        }
    }

    fn overlay_info(row: OverlayRow, peer: &str) -> Result<OverlayInfo, String> {
        let key = constella_overlay::PublicKey::from_base64(&row.public_key)
            .map_err(|e| format!("peer {peer}: overlay.public_key: {e}"))?;
        let hub = match (row.hub_endpoint, row.prefix_len) {
            (None, None) => None,
            (Some(endpoint), Some(prefix_len)) => Some(HubInfo {
                endpoint,
                prefix_len,
            }),
            _ => {
                return Err(format!(
                    "peer {peer}: overlay: a hub has both hub_endpoint and prefix_len"
                ));
            }
        };
        Ok(OverlayInfo {
            public_key: *key.as_bytes(),
            address: row.address,
            hub,
        })
    }

    type Table = (BTreeMap<NodeId, PeerInfo>, BTreeMap<NodeId, Seen>);

    pub(super) fn serialize<S: serde::Serializer>(table: &Table, s: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<Row> = table
            .0
            .iter()
            .map(|(id, p)| {
                let seen = table.1.get(id).cloned().unwrap_or_default();
                Row {
                    name: p.name.clone(),
                    addr: p.addr.clone(),
                    node_id: id.to_string(),
                    public_key: p.public_key.0,
                    priority: p.priority,
                    bot: p.bot,
                    status: seen.status,
                    last_seen: seen.last_seen,
                    overlay: p.overlay.as_ref().map(overlay_row),
                }
            })
            .collect();
        rows.serialize(s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Table, D::Error> {
        let rows = Vec::<Row>::deserialize(d)?;
        let mut table: Table = Default::default();
        for row in rows {
            let public_key = PublicKey(row.public_key);
            let id = NodeId::of(&public_key);
            if id.to_string() != row.node_id {
                return Err(serde::de::Error::custom(format!(
                    "peer {}: node_id does not match its public_key",
                    row.name
                )));
            }
            let overlay = row
                .overlay
                .map(|o| overlay_info(o, &row.name))
                .transpose()
                .map_err(serde::de::Error::custom)?;
            table.0.insert(
                id,
                PeerInfo {
                    name: row.name,
                    addr: row.addr,
                    public_key,
                    priority: row.priority,
                    bot: row.bot,
                    overlay,
                },
            );
            table.1.insert(
                id,
                Seen {
                    status: row.status,
                    last_seen: row.last_seen,
                },
            );
        }
        Ok(table)
    }
}

pub(crate) mod hex_bytes {
    pub(crate) fn serialize<S: serde::Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<[u8; 32], D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out)
            .map_err(|e| serde::de::Error::custom(format!("expected 64 hex digits: {e}")))?;
        Ok(out)
    }
}

/// `Option<[u8; 32]>` as 64 hex digits or absent.
pub(crate) mod optional_hex_bytes {
    pub(crate) fn serialize<S: serde::Serializer>(
        b: &Option<[u8; 32]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match b {
            Some(bytes) => super::hex_bytes::serialize(bytes, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<[u8; 32]>, D::Error> {
        let text = <Option<String> as serde::Deserialize>::deserialize(d)?;
        let Some(text) = text else {
            return Ok(None);
        };
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out)
            .map_err(|e| serde::de::Error::custom(format!("expected 64 hex digits: {e}")))?;
        Ok(Some(out))
    }
}
