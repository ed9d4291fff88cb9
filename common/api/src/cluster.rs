//! The cluster: `/api/v1/nodes`, invites, and the node-to-node speed test.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::NodeName;

/// A member's state as this node's failure detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Answering.
    Alive,
    /// Not answering.
    Down,
}

impl NodeStatus {
    /// The name as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Alive => "alive",
            NodeStatus::Down => "down",
        }
    }
}

/// `GET /api/v1/nodes`: the cluster as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nodes {
    /// The network's id (32 hex digits).
    pub network_id: String,
    /// The owner's Telegram username.
    pub owner: String,
    /// The node that should hold the bot lease.
    pub leader: Option<NodeName>,
    /// The node that holds it.
    pub lease_holder: Option<NodeName>,
    /// The lease's epoch.
    pub epoch: u64,
    /// This node runs the bot now.
    pub bot_running: bool,
    /// Telegram's 409 stopped this node's bot; it claims nothing until the fence ends.
    pub bot_fenced: bool,
    /// Every member.
    pub nodes: Vec<NodeRow>,
    /// Refused cluster messages by reason.
    pub rejected_messages: BTreeMap<String, u64>,
    /// Bytes of cluster messages sent.
    pub control_bytes_sent: u64,
    /// Bytes of cluster messages received.
    pub control_bytes_received: u64,
}

/// One member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRow {
    /// Its name.
    pub name: NodeName,
    /// Its id (32 hex digits, from its public key).
    pub node_id: String,
    /// Where peers reach it.
    pub addr: String,
    /// Alive or down.
    pub status: NodeStatus,
    /// When it was last heard from (Unix seconds).
    pub last_seen: Option<u64>,
    /// Election priority (smaller leads).
    pub priority: u32,
    /// It has a bot token.
    pub bot: bool,
    /// It should lead.
    pub leader: bool,
    /// It holds the lease.
    pub lease_holder: bool,
    /// It is the node that answered.
    pub this_node: bool,
}

/// `POST /api/v1/cluster/invites` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// How long the link stays valid (`15m`, `2h`, at most 7 days).
    pub ttl: Option<String>,
}

/// A single-use join link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteLink {
    /// `join://HOST:PORT?net=…&token=…&ttl=…`
    pub link: String,
    /// When it expires (Unix seconds).
    pub expires_at: u64,
}

/// `POST /api/v1/nodes/{name}/speedtest`: throughput between this node and another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// The other node.
    pub node: NodeName,
    /// Bytes moved each way.
    pub bytes: u32,
    /// Download rate in bits per second.
    pub download_bps: f64,
    /// Upload rate in bits per second.
    pub upload_bps: f64,
}
