//! The cluster as one node sees it, sans-IO: who is live (the lease's `View`), and the table the
//! API, the CLI and the bot show, derived from the peer table, the membership view and the lease.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use constella_api::NodeName;

use crate::identity::NodeId;
use crate::lease::{Lease, Record, Standing, View};
use crate::shared::PeerInfo;

/// A peer heard from this recently counts as alive even before the membership layer agrees: an
/// authenticated message is evidence of life, and it brings a healed partition back at once.
pub const HEARD_FOR: Duration = Duration::from_millis(2500);

/// Who is live for the election: this node, the members the failure detector holds alive, and
/// any peer heard from within [`HEARD_FOR`].
pub fn live_view(
    me: NodeId,
    peers: &BTreeMap<NodeId, PeerInfo>,
    alive: impl Iterator<Item = NodeId>,
    heard: &BTreeMap<NodeId, Instant>,
    now: Instant,
) -> View {
    let standing = |p: &PeerInfo| Standing {
        priority: p.priority,
        can_host_bot: p.bot,
    };
    let recently_heard = heard
        .iter()
        .filter(|(_, at)| now.duration_since(**at) < HEARD_FOR)
        .map(|(id, _)| *id);
    let live = std::iter::once(me)
        .chain(alive)
        .chain(recently_heard)
        .filter_map(|id| Some((id, standing(peers.get(&id)?))))
        .collect();
    View {
        live,
        members: peers.len(),
    }
}

/// Whether a member answers, as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Live in this node's view.
    Alive,
    /// Not live.
    Down,
}

/// One row of the cluster table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub name: NodeName,
    pub node_id: NodeId,
    pub addr: String,
    pub status: Liveness,
    /// Unix seconds; this node itself is always seen now.
    pub last_seen: Option<u64>,
    pub priority: u32,
    pub bot: bool,
    pub leader: bool,
    pub lease_holder: bool,
    pub this_node: bool,
}

/// The cluster as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub network_id: String,
    pub owner: String,
    pub nodes: Vec<NodeRow>,
    pub lease_holder: Option<NodeName>,
    pub epoch: u64,
    pub bot_running: bool,
    /// A 409 from Telegram stopped this node's bot; it claims nothing until the fence ends.
    pub bot_fenced: bool,
    pub rejected: BTreeMap<String, u64>,
    pub traffic_sent: u64,
    pub traffic_received: u64,
}

/// Everything the table is derived from.
pub struct Sources<'a> {
    pub network_id: &'a str,
    pub owner: &'a str,
    pub me: NodeId,
    pub peers: &'a BTreeMap<NodeId, PeerInfo>,
    /// When each peer was last heard from (Unix seconds).
    pub last_seen: &'a BTreeMap<NodeId, u64>,
    pub view: &'a View,
    pub lease: &'a Lease,
    /// The replicated lease record.
    pub record: Record,
    /// The bot task of this node's lease is running.
    pub bot_task: bool,
    pub rejected: &'a BTreeMap<String, u64>,
    pub traffic: (u64, u64),
    pub now: Instant,
    pub unix_now: u64,
}

/// The table at `sources.now`. The lease holder is this node while it holds the lease, else the
/// replicated holder if it is live: a holder that fell out of the view is not shown as holding.
pub fn table(sources: &Sources<'_>) -> Table {
    let Sources {
        me,
        view,
        lease,
        now,
        ..
    } = *sources;
    let leader = view.leader();
    let holder = if lease.holds(now) {
        Some(me)
    } else {
        sources.record.holder.filter(|h| view.live.contains_key(h))
    };
    let nodes = sources
        .peers
        .iter()
        .map(|(id, p)| NodeRow {
            name: p.name.clone(),
            node_id: *id,
            addr: p.addr.clone(),
            status: if *id == me || view.live.contains_key(id) {
                Liveness::Alive
            } else {
                Liveness::Down
            },
            last_seen: if *id == me {
                Some(sources.unix_now)
            } else {
                sources.last_seen.get(id).copied()
            },
            priority: p.priority,
            bot: p.bot,
            leader: leader == Some(*id),
            lease_holder: holder == Some(*id),
            this_node: *id == me,
        })
        .collect();
    Table {
        network_id: sources.network_id.to_string(),
        owner: sources.owner.to_string(),
        nodes,
        lease_holder: holder
            .and_then(|h| sources.peers.get(&h))
            .map(|p| p.name.clone()),
        epoch: lease.record().epoch.max(sources.record.epoch),
        bot_running: sources.bot_task && lease.holds(now),
        bot_fenced: lease.fenced(now),
        rejected: sources.rejected.clone(),
        traffic_sent: sources.traffic.0,
        traffic_received: sources.traffic.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;
    use crate::lease::{LeaseConfig, Start};

    fn peer(name: &str, priority: u32, bot: bool) -> (NodeId, PeerInfo) {
        let key = NodeKey::generate();
        let info = PeerInfo {
            name: name.parse().expect("valid name"),
            addr: format!("{name}:7300"),
            public_key: key.public(),
            priority,
            bot,
            overlay: None,
        };
        (key.id(), info)
    }

    #[test]
    fn the_view_counts_me_the_live_and_the_recently_heard() {
        let now = Instant::now() + Duration::from_secs(60);
        let peers: BTreeMap<_, _> = [
            peer("me", 3, true),
            peer("live", 2, true),
            peer("heard", 1, false),
            peer("stale", 0, true),
            peer("silent", 0, true),
        ]
        .into_iter()
        .collect();
        let id = |name: &str| *peers.iter().find(|(_, p)| p.name == name).expect(name).0;
        let heard = [
            (id("heard"), now - Duration::from_secs(1)),
            (id("stale"), now - HEARD_FOR),
        ]
        .into_iter()
        .collect();
        let view = live_view(id("me"), &peers, [id("live")].into_iter(), &heard, now);
        let live: Vec<&str> = view.live.keys().map(|i| peers[i].name.as_str()).collect();
        let mut expected = vec!["me", "live", "heard"];
        expected.sort_by_key(|n| id(n));
        assert_eq!(live, expected);
        assert_eq!(view.members, 5);
        // `heard` has the best priority but no bot token: `live` leads.
        assert_eq!(view.leader(), Some(id("live")));
    }

    #[test]
    fn rows_show_status_leader_and_holder_as_this_node_sees_them() {
        let now = Instant::now();
        let peers: BTreeMap<_, _> = [peer("a", 1, true), peer("b", 2, true), peer("c", 3, false)]
            .into_iter()
            .collect();
        let id = |name: &str| *peers.iter().find(|(_, p)| p.name == name).expect(name).0;
        let (me, b) = (id("c"), id("b"));
        let view = live_view(me, &peers, [b].into_iter(), &BTreeMap::new(), now);
        let lease = Lease::new(
            me,
            LeaseConfig::default(),
            Record::default(),
            now,
            Start::FirstRun,
        );
        let record = Record {
            holder: Some(b),
            epoch: 4,
            offset: 0,
        };
        let last_seen = [(b, 1_700_000_000)].into_iter().collect();
        let rejected = BTreeMap::new();
        let sources = Sources {
            network_id: "net",
            owner: "owner",
            me,
            peers: &peers,
            last_seen: &last_seen,
            view: &view,
            lease: &lease,
            record,
            bot_task: false,
            rejected: &rejected,
            traffic: (1, 2),
            now,
            unix_now: 1_800_000_000,
        };
        let t = table(&sources);
        let row = |name: &str| t.nodes.iter().find(|r| r.name == name).expect(name);
        assert_eq!(row("a").status, Liveness::Down);
        assert_eq!(row("b").status, Liveness::Alive);
        assert!(
            row("b").leader && row("b").lease_holder,
            "a is down, so b leads"
        );
        assert_eq!(row("b").last_seen, Some(1_700_000_000));
        assert!(row("c").this_node && row("c").last_seen == Some(1_800_000_000));
        assert_eq!((t.lease_holder.as_deref(), t.epoch), (Some("b"), 4));
        assert!(!t.bot_running && !t.bot_fenced);
        // A holder that dropped out of the view is not shown as holding.
        let alone = live_view(me, &peers, std::iter::empty(), &BTreeMap::new(), now);
        let t = table(&Sources {
            view: &alone,
            ..sources
        });
        assert_eq!(t.lease_holder, None);
    }
}
