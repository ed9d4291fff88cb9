//! Anti-entropy, sans-IO: every round (60 s by default) a node offers its shared state's digest to one peer
//! in turn, sending the whole state only when that peer's last known digest differs. Joins,
//! invites and removals are pushed to every peer at once (`push_all`); this is the backstop that
//! repairs whatever a lost push missed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::identity::NodeId;
use crate::shared::Shared;
use crate::wire::{Request, Response};

/// What this node knows of its peers' shared state, and whose turn it is.
#[derive(Debug)]
pub struct AntiEntropy {
    peer_digest: BTreeMap<NodeId, [u8; 32]>,
    turn: usize,
    next_sync: Instant,
    /// How often one peer is synced with: a backstop (changes are pushed as they happen), so
    /// rare.
    every: Duration,
}

impl AntiEntropy {
    /// The first round is due at `now`, then one every `every`.
    pub fn new(now: Instant, every: Duration) -> AntiEntropy {
        AntiEntropy {
            peer_digest: BTreeMap::new(),
            turn: 0,
            next_sync: now,
            every,
        }
    }

    /// When the next round is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_sync)
    }

    /// The peer (of `others`, in a stable order) to sync with now, if a round is due.
    pub fn handle_timeout(&mut self, now: Instant, others: &[NodeId]) -> Option<NodeId> {
        if now < self.next_sync {
            return None;
        }
        self.next_sync = now + self.every;
        if others.is_empty() {
            return None;
        }
        self.turn = (self.turn + 1) % others.len();
        Some(others[self.turn])
    }

    /// The sync request for `to`: the digest, and the state unless `to` is known to have it.
    pub fn request(&self, to: NodeId, mine: &Shared) -> Request {
        let digest = mine.digest();
        let send_state = self.peer_digest.get(&to) != Some(&digest);
        Request::Sync {
            digest,
            shared: send_state.then(|| Box::new(mine.clone())),
        }
    }

    /// Answers a peer's sync (after the shell merged any state it carried): this node's digest,
    /// and its state when the peer's digest differs.
    pub fn answer(&mut self, from: NodeId, their_digest: [u8; 32], mine: &Shared) -> Response {
        self.peer_digest.insert(from, their_digest);
        let digest = mine.digest();
        Response::Sync {
            digest,
            shared: (their_digest != digest).then(|| Box::new(mine.clone())),
        }
    }

    /// A peer told us its digest (in an answer to our sync).
    pub fn heard(&mut self, from: NodeId, digest: [u8; 32]) {
        self.peer_digest.insert(from, digest);
    }

    /// Forgets every peer's digest, so the next requests carry the whole state (a push).
    pub fn forget_digests(&mut self) {
        self.peer_digest.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u8) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId([i; 16])).collect()
    }

    fn carries_state(request: &Request) -> bool {
        matches!(
            request,
            Request::Sync {
                shared: Some(_),
                ..
            }
        )
    }

    #[test]
    fn one_peer_per_round_in_turn_and_nothing_between_rounds() {
        let start = Instant::now();
        let every = Duration::from_secs(30);
        let mut sync = AntiEntropy::new(start, every);
        let others = ids(3);
        let mut picked = Vec::new();
        let mut now = start;
        for _ in 0..6 {
            picked.push(sync.handle_timeout(now, &others).expect("a round is due"));
            assert_eq!(sync.handle_timeout(now, &others), None, "not due again yet");
            assert_eq!(sync.poll_timeout(), Some(now + every));
            now += every;
        }
        assert_eq!(picked[..3], [others[1], others[2], others[0]]);
        assert_eq!(picked[3..], picked[..3]);
        assert_eq!(sync.handle_timeout(now, &[]), None);
    }

    #[test]
    fn the_state_travels_only_where_the_digest_differs() {
        let mut sync = AntiEntropy::new(Instant::now(), Duration::from_secs(30));
        let peer = NodeId([1; 16]);
        let mine = Shared::default();
        assert!(carries_state(&sync.request(peer, &mine)), "unknown digest");
        sync.heard(peer, mine.digest());
        assert!(!carries_state(&sync.request(peer, &mine)), "same digest");
        sync.forget_digests();
        assert!(carries_state(&sync.request(peer, &mine)), "after a push");
        let answer = sync.answer(peer, [0; 32], &mine);
        assert!(matches!(
            answer,
            Response::Sync {
                shared: Some(_),
                ..
            }
        ));
        let answer = sync.answer(peer, mine.digest(), &mine);
        assert!(matches!(answer, Response::Sync { shared: None, .. }));
    }
}
