//! Message bodies carried in signed envelopes and sealed datagrams (postcard), the join
//! handshake's messages and the node-to-node calls. This is the cluster's protocol edge: the only
//! serializable cluster types.

use serde::{Deserialize, Serialize};

use crate::identity::{NodeId, PublicKey};
use crate::lease;
use crate::shared::{OverlayInfo, Shared};

/// What one node tells another in a sealed datagram: small, frequent and one-way. Nothing is
/// answered in the same exchange; a claim's vote is a datagram of its own, and a lost one is
/// made up by the next round.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Datagram {
    /// A SWIM message for the membership layer.
    Gossip(Vec<u8>),
    Lease(lease::Message),
    /// The answer to a `Lease` claim.
    Vote(lease::Vote),
    /// Anti-entropy's offer: the sender's shared-state digest. A receiver whose state differs
    /// syncs with the sender over the stream transport (the state does not fit a datagram).
    Digest([u8; 32]),
}

/// What one node asks another in a signed envelope over the stream transport, answered in the
/// same exchange.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Anti-entropy for the shared state: the sender's digest, and its state if the receiver
    /// may not have it.
    Sync {
        digest: [u8; 32],
        shared: Option<Box<Shared>>,
    },
    Call(Call),
    /// Asks a member to record an invite as redeemed by the joiner `joiner`, so that no other
    /// node admits someone else with it.
    Consume {
        invite_id: String,
        joiner: NodeId,
    },
}

/// The answer, sealed by the receiver and bound to the request's counter.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub in_reply_to: u64,
    pub response: Response,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    Sync {
        digest: [u8; 32],
        shared: Option<Box<Shared>>,
    },
    /// A call's result: an HTTP-like status and a JSON body.
    Call { status: u16, body: Vec<u8> },
    /// True if the invite is now recorded as redeemed by the asked-for joiner.
    Consumed(bool),
}

/// Calls any node can make to any other. Each maps onto one of the target's own API endpoints,
/// so `/api/v1/nodes/{name}/…` answers exactly as the target's local API would.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// The node summary with its latest metrics (`GET /api/v1/node`).
    GetStats,
    /// Node metric time series (`GET /api/v1/node/metrics?…`).
    GetTs {
        query: String,
    },
    ListDevices,
    GetDevice {
        device: String,
    },
    /// A device's history (`GET /api/v1/devices/{id}/history?…`).
    GetDeviceTs {
        device: String,
        query: String,
    },
    GetEvents {
        query: String,
    },
    ResetAlarms {
        device: String,
    },
    /// Runs the target's configured reboot command.
    Reboot,
    /// Throughput test: the target echoes back `download` bytes (at most `SPEEDTEST_BYTES`)
    /// after reading `upload`.
    Speedtest {
        download: u32,
        upload: Vec<u8>,
    },
}

/// Bytes a node-to-node speed test moves each way; the largest request body there is.
pub const SPEEDTEST_BYTES: u32 = 4_000_000;

/// How a call reaches a node's own HTTP API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Call {
    /// Maps a mirrored API path (the part after `/api/v1/nodes/{name}`) onto a call.
    pub fn from_path(method: Method, rest: &str, query: &str) -> Option<Call> {
        let query = query.to_string();
        let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
        let post = method == Method::Post;
        let call = match (post, parts.as_slice()) {
            (false, ["node"] | [""]) => Call::GetStats,
            (false, ["node", "metrics"]) => Call::GetTs { query },
            (false, ["devices"]) => Call::ListDevices,
            (false, ["devices", id]) => Call::GetDevice {
                device: (*id).to_string(),
            },
            (false, ["devices", id, "history"]) => Call::GetDeviceTs {
                device: (*id).to_string(),
                query,
            },
            (false, ["events"]) => Call::GetEvents { query },
            (true, ["devices", id, "reset-alarms"]) => Call::ResetAlarms {
                device: (*id).to_string(),
            },
            (true, ["reboot"]) => Call::Reboot,
            _ => return None,
        };
        Some(call)
    }

    /// The local API request that answers this call, if it is one.
    pub fn local_request(&self) -> Option<(Method, String)> {
        let with_query = |path: String, query: &str| {
            if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            }
        };
        Some(match self {
            Call::GetStats => (Method::Get, "/api/v1/node".into()),
            Call::GetTs { query } => (
                Method::Get,
                with_query("/api/v1/node/metrics".into(), query),
            ),
            Call::ListDevices => (Method::Get, "/api/v1/devices".into()),
            Call::GetDevice { device } => (Method::Get, format!("/api/v1/devices/{device}")),
            Call::GetDeviceTs { device, query } => (
                Method::Get,
                with_query(format!("/api/v1/devices/{device}/history"), query),
            ),
            Call::GetEvents { query } => (Method::Get, with_query("/api/v1/events".into(), query)),
            Call::ResetAlarms { device } => (
                Method::Post,
                format!("/api/v1/devices/{device}/reset-alarms"),
            ),
            Call::Reboot | Call::Speedtest { .. } => return None,
        })
    }

    /// Calls that change something are not answered twice, even across a restart.
    pub fn mutates(&self) -> bool {
        matches!(self, Call::ResetAlarms { .. } | Call::Reboot)
    }
}

/// A joiner's request, in clear except `sealed` (a `Hello` under the request key).
#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub network: [u8; 16],
    pub invite_id: String,
    pub ephemeral: [u8; 32],
    pub sealed: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    pub name: String,
    pub addr: String,
    pub public_key: PublicKey,
    pub priority: u32,
    pub bot: bool,
    /// The joiner's overlay key and the address its invite holds for it.
    pub overlay: Option<OverlayInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum JoinReply {
    /// `sealed` is a `Welcome` under the reply key.
    Welcome {
        ephemeral: [u8; 32],
        sealed: Vec<u8>,
    },
    Refused(Refusal),
}

/// Why a join was refused; each has its own message for the operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("the invite token is unknown to this network (mistyped, or never issued)")]
    UnknownToken,
    #[error("the invite token has expired; ask for a new invite")]
    ExpiredToken,
    #[error("the invite token was already used; ask for a new invite")]
    UsedToken,
    #[error("the seed node belongs to another network than the link names")]
    WrongNetwork,
    #[error("a node named {0:?} already exists in this network; choose another --name")]
    DuplicateName(String),
    #[error("the node name is not allowed: {0}")]
    BadName(String),
    #[error("this node's key was removed from the network")]
    RemovedKey,
    #[error("the network could not confirm the invite (too few members reachable); try again")]
    NotConfirmed,
    #[error("the overlay settings do not fit the invite: {0}")]
    BadOverlay(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Welcome {
    pub network_id: [u8; 16],
    pub owner_username: String,
    pub network_key: [u8; 32],
    pub seed: NodeId,
    pub shared: Shared,
}

/// Decodes a postcard body; any malformed input is an error, never a panic.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding into a growable buffer only fails for types serde cannot express.
    postcard::to_allocvec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrored_paths_map_to_calls_and_back() {
        for (post, rest, query, path) in [
            (Method::Get, "node", "", "/api/v1/node"),
            (
                Method::Get,
                "node/metrics",
                "step=60",
                "/api/v1/node/metrics?step=60",
            ),
            (Method::Get, "devices", "", "/api/v1/devices"),
            (Method::Get, "devices/house1", "", "/api/v1/devices/house1"),
            (
                Method::Get,
                "devices/house1/history",
                "field=t",
                "/api/v1/devices/house1/history?field=t",
            ),
            (Method::Get, "events", "limit=5", "/api/v1/events?limit=5"),
            (
                Method::Post,
                "devices/house1/reset-alarms",
                "",
                "/api/v1/devices/house1/reset-alarms",
            ),
        ] {
            let call = Call::from_path(post, rest, query).expect(rest);
            assert_eq!(call.local_request(), Some((post, path.to_string())));
        }
        assert_eq!(
            Call::from_path(Method::Post, "reboot", ""),
            Some(Call::Reboot)
        );
        assert_eq!(Call::from_path(Method::Get, "reboot", ""), None);
        assert_eq!(Call::from_path(Method::Post, "devices", ""), None);
        assert_eq!(Call::from_path(Method::Get, "speedtest/blob", ""), None);
    }

    #[test]
    fn garbage_bodies_decode_to_none() {
        for bytes in [&[][..], &[0xff; 3], &[2, 200, 200, 200, 200, 200]] {
            assert!(decode::<Request>(bytes).is_none());
            assert!(decode::<Datagram>(bytes).is_none());
        }
    }
}
