//! Joins, sans-IO: the checks a redeeming node makes on a join request, the quorum that must
//! confirm an invite's redemption, and the decision once the members answered.
//!
//! An invite is redeemed only once a quorum of members (a majority; one in networks of one or
//! two) recorded it as used by this joiner's key (`consume`), so two joiners racing with one
//! token at two nodes cannot both get in. A used invite answers again only the key that used it
//! (its answer was lost), and only until shortly after the invite expires; a removed key never.

use constella_api::NodeName;

use crate::envelope::NetworkId;
use crate::identity::NodeId;
use crate::invite;
use crate::lease;
use crate::shared::{Invite, PeerInfo, Shared};
use crate::wire::{self, Hello, JoinRequest, Refusal};

/// How long after its expiry a used invite still answers the key that used it, for a joiner
/// whose welcome was lost just before the invite ran out.
pub const RETRY_GRACE_SECS: u64 = 60;

/// A join request that passed every check that needs no other node.
#[derive(Debug)]
pub struct CheckedJoin {
    /// The invite it redeems.
    pub invite_id: String,
    /// The joiner's name, checked.
    pub name: NodeName,
    /// What the joiner says of itself.
    pub hello: Hello,
    /// The joiner's node id (from its key).
    pub id: NodeId,
    /// The invite's key, for the reply's key.
    pub key: [u8; 32],
    /// The joiner's X25519 ephemeral key.
    pub ephemeral: [u8; 32],
    /// The joiner is already a member (its earlier answer was lost).
    pub admitted: bool,
}

/// Checks a join request against this node's view: token, network, name and key.
pub fn check(
    bytes: &[u8],
    network: NetworkId,
    network_key: &[u8; 32],
    shared: &Shared,
    unix_now: u64,
) -> Result<CheckedJoin, Refusal> {
    let request = wire::decode::<JoinRequest>(bytes).ok_or(Refusal::UnknownToken)?;
    if request.network != network.0 {
        return Err(Refusal::WrongNetwork);
    }
    let record = shared
        .invites
        .get(&request.invite_id)
        .ok_or(Refusal::UnknownToken)?;
    let key = invite::open(network_key, &record.sealed_key)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or(Refusal::UnknownToken)?;
    let hello = invite::open(
        &invite::request_key(&key, &request.ephemeral),
        &request.sealed,
    )
    .and_then(|plain| wire::decode::<Hello>(&plain))
    .ok_or(Refusal::UnknownToken)?;
    let id = NodeId::of(&hello.public_key);
    let name: NodeName = hello
        .name
        .parse()
        .map_err(|reason: &str| Refusal::BadName(reason.to_string()))?;
    if shared.removed.contains(&id) {
        return Err(Refusal::RemovedKey);
    }
    let admitted = is_member(shared, id, &name);
    match record.used_by {
        // This joiner's earlier attempt succeeded but its answer was lost (answer again), or its
        // confirmation is still open here (try it again): the same key only, and not for ever.
        Some(used_by) if used_by == id => {
            let retry_until = record.expires_at.saturating_add(RETRY_GRACE_SECS);
            if retry_until <= unix_now {
                return Err(Refusal::ExpiredToken);
            }
        }
        Some(_) => return Err(Refusal::UsedToken),
        None if record.expires_at <= unix_now => return Err(Refusal::ExpiredToken),
        None => {}
    }
    if !admitted {
        name_free(shared, id, &name)?;
        overlay_fits(shared, record, id, &hello)?;
    }
    Ok(CheckedJoin {
        invite_id: request.invite_id,
        name,
        hello,
        id,
        key,
        ephemeral: request.ephemeral,
        admitted,
    })
}

/// In a network with an overlay the invite holds an address for its joiner: the joiner must
/// take exactly that one, as a client, with its cluster address on it, and nobody else may
/// have it meanwhile.
fn overlay_fits(
    shared: &Shared,
    record: &Invite,
    id: NodeId,
    hello: &Hello,
) -> Result<(), Refusal> {
    let bad = |reason: String| Err(Refusal::BadOverlay(reason));
    match (&record.enrollment, &hello.overlay) {
        (None, None) => Ok(()),
        (None, Some(_)) => bad("the invite holds no overlay address".into()),
        (Some(held), None) => bad(format!(
            "the invite is for overlay address {}",
            held.address
        )),
        (Some(held), Some(asked)) => {
            if asked.address != held.address {
                return bad(format!(
                    "the invite is for overlay address {}",
                    held.address
                ));
            }
            if asked.hub.is_some() {
                return bad("a node joins the overlay as a client".into());
            }
            let host = hello.addr.rsplit_once(':').map(|(host, _)| host);
            if host != Some(held.address.to_string().as_str()) {
                return bad(format!("the cluster address must be on {}", held.address));
            }
            let taken = shared.peers.iter().any(|(other, peer)| {
                *other != id
                    && peer
                        .overlay
                        .as_ref()
                        .is_some_and(|o| o.address == held.address)
            });
            if taken {
                return bad(format!(
                    "{} is already taken; ask for a new invite",
                    held.address
                ));
            }
            Ok(())
        }
    }
}

/// What to do with a checked join once `granted` members confirmed it and `refused` said it
/// was used by someone else.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Already a member: answer with the welcome again.
    Welcome,
    /// Add the joiner, then welcome it.
    Admit,
    /// Refuse it.
    Refuse(Refusal),
}

/// Decides a join after its confirmation round, against the state as it is now (another joiner
/// may have taken the name meanwhile).
pub fn decide(checked: &CheckedJoin, shared: &Shared, granted: usize, refused: usize) -> Decision {
    if is_member(shared, checked.id, &checked.name) {
        return Decision::Welcome;
    }
    if granted < lease::quorum(shared.peers.len()) {
        return Decision::Refuse(if refused > 0 {
            Refusal::UsedToken
        } else {
            Refusal::NotConfirmed
        });
    }
    match name_free(shared, checked.id, &checked.hello.name) {
        Ok(()) => Decision::Admit,
        Err(refusal) => Decision::Refuse(refusal),
    }
}

/// Adds the joiner to the peer table and records the invite as used by it.
pub fn admit(shared: &mut Shared, checked: &CheckedJoin) {
    let hello = &checked.hello;
    shared.peers.insert(
        checked.id,
        PeerInfo {
            name: checked.name.clone(),
            addr: hello.addr.clone(),
            public_key: hello.public_key,
            priority: hello.priority,
            bot: hello.bot,
            overlay: hello.overlay.clone(),
        },
    );
    mark_used(shared, &checked.invite_id, checked.id);
}

/// Records `invite_id` as used by the joiner `id` (before this node asks the others to confirm).
pub fn mark_used(shared: &mut Shared, invite_id: &str, id: NodeId) {
    if let Some(invite) = shared.invites.get_mut(invite_id) {
        invite.used_by = Some(id);
    }
}

/// A member's answer when asked to record an invite as redeemed by the joiner `id`: true if it
/// was free (now recorded: the caller persists before answering) or already recorded for `id`.
/// An invite not known here yet is refused (this node cannot vouch that nobody else redeemed
/// it), and so is a removed key.
pub fn consume(shared: &mut Shared, invite_id: &str, id: NodeId) -> Consumed {
    if shared.removed.contains(&id) {
        return Consumed::Refused;
    }
    match shared.invites.get_mut(invite_id) {
        Some(invite) if invite.used_by.is_none() => {
            invite.used_by = Some(id);
            Consumed::Recorded
        }
        Some(invite) if invite.used_by == Some(id) => Consumed::AlreadyThisJoiner,
        Some(_) | None => Consumed::Refused,
    }
}

/// The outcome of [`consume`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumed {
    /// Free until now; recorded for this joiner (persist it before answering).
    Recorded,
    /// Already recorded for this joiner.
    AlreadyThisJoiner,
    /// Used by another joiner, or unknown here.
    Refused,
}

impl Consumed {
    /// Whether the answer confirms the redemption.
    pub fn confirms(self) -> bool {
        self != Consumed::Refused
    }
}

fn is_member(shared: &Shared, id: NodeId, name: &NodeName) -> bool {
    shared.peers.get(&id).is_some_and(|p| p.name == *name)
}

fn name_free(shared: &Shared, id: NodeId, name: &str) -> Result<(), Refusal> {
    if shared.peer_by_name(name).is_some() || shared.peers.contains_key(&id) {
        return Err(Refusal::DuplicateName(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;
    use crate::shared::Invite;

    const NOW: u64 = 1_800_000_000;
    const NETWORK: NetworkId = NetworkId([3; 16]);
    const NETWORK_KEY: [u8; 32] = [9; 32];

    /// A network with one member (`seed`) and one invite; returns the state, the token's
    /// invite id and key.
    fn network(expires_at: u64) -> (Shared, String, [u8; 32]) {
        let mut shared = Shared::default();
        let seed = NodeKey::generate();
        shared.peers.insert(seed.id(), peer(&seed, "seed"));
        let token = invite::new_token();
        let key = invite::invite_key(&token);
        let id = invite::invite_id(&token);
        shared.invites.insert(
            id.clone(),
            Invite {
                sealed_key: invite::seal(&NETWORK_KEY, &key),
                expires_at,
                used_by: None,
                enrollment: None,
            },
        );
        (shared, id, key)
    }

    fn peer(key: &NodeKey, name: &str) -> PeerInfo {
        PeerInfo {
            name: name.parse().expect("valid name"),
            addr: "10.0.0.1:7300".into(),
            public_key: key.public(),
            priority: 1,
            bot: false,
            overlay: None,
        }
    }

    fn hello(joiner: &NodeKey, name: &str) -> Hello {
        Hello {
            name: name.parse().expect("valid name"),
            addr: "10.0.0.2:7300".into(),
            public_key: joiner.public(),
            priority: 2,
            bot: false,
            overlay: None,
        }
    }

    fn request(invite_id: &str, key: &[u8; 32], joiner: &NodeKey, name: &str) -> Vec<u8> {
        sealed_request(invite_id, key, &hello(joiner, name))
    }

    fn sealed_request(invite_id: &str, key: &[u8; 32], hello: &Hello) -> Vec<u8> {
        let ephemeral = [5u8; 32];
        wire::encode(&JoinRequest {
            network: NETWORK.0,
            invite_id: invite_id.into(),
            ephemeral,
            sealed: invite::seal(&invite::request_key(key, &ephemeral), &wire::encode(hello)),
        })
    }

    fn check_at(bytes: &[u8], shared: &Shared) -> Result<CheckedJoin, Refusal> {
        check(bytes, NETWORK, &NETWORK_KEY, shared, NOW)
    }

    #[test]
    fn a_fresh_invite_admits_once_a_quorum_confirms() {
        let (mut shared, id, key) = network(NOW + 900);
        let joiner = NodeKey::generate();
        let checked = check_at(&request(&id, &key, &joiner, "beta"), &shared).expect("checked");
        assert!(!checked.admitted);
        assert_eq!(decide(&checked, &shared, 1, 0), Decision::Admit);
        admit(&mut shared, &checked);
        assert_eq!(
            shared.peer_by_name("beta").map(|(i, _)| i),
            Some(joiner.id())
        );
        assert_eq!(shared.invites[&id].used_by, Some(joiner.id()));
        // The same joiner asking again (its answer was lost) is welcomed again.
        let again = check_at(&request(&id, &key, &joiner, "beta"), &shared).expect("again");
        assert!(again.admitted);
        assert_eq!(decide(&again, &shared, 0, 0), Decision::Welcome);
    }

    #[test]
    fn an_overlay_invite_admits_only_a_client_on_the_address_it_holds() {
        let (mut shared, id, key) = network(NOW + 900);
        let held = std::net::Ipv4Addr::new(10, 42, 0, 5);
        if let Some(invite) = shared.invites.get_mut(&id) {
            invite.enrollment = Some(crate::shared::Enrollment {
                public_key: [7; 32],
                address: held,
            });
        }
        let joiner = NodeKey::generate();
        let on = |address: std::net::Ipv4Addr, addr: &str, hub: bool| {
            let mut hello = hello(&joiner, "beta");
            hello.addr = addr.into();
            hello.overlay = Some(crate::shared::OverlayInfo {
                public_key: [8; 32],
                address,
                hub: hub.then(|| crate::shared::HubInfo {
                    endpoint: "203.0.113.1:51820".into(),
                    prefix_len: 24,
                }),
            });
            sealed_request(&id, &key, &hello)
        };
        let refused = |bytes: Vec<u8>, shared: &Shared| {
            matches!(check_at(&bytes, shared), Err(Refusal::BadOverlay(_)))
        };
        assert!(
            refused(request(&id, &key, &joiner, "beta"), &shared),
            "no overlay at all"
        );
        assert!(
            refused(on(held, "10.0.0.2:7300", false), &shared),
            "cluster address elsewhere"
        );
        assert!(refused(
            on(
                std::net::Ipv4Addr::new(10, 42, 0, 6),
                "10.42.0.6:7300",
                false
            ),
            &shared
        ));
        assert!(
            refused(on(held, "10.42.0.5:7300", true), &shared),
            "claims to be a hub"
        );

        // Someone else got the address meanwhile (two invites raced for it).
        let squatter = NodeKey::generate();
        let mut info = peer(&squatter, "gamma");
        info.overlay = Some(crate::shared::OverlayInfo {
            public_key: [9; 32],
            address: held,
            hub: None,
        });
        shared.peers.insert(squatter.id(), info);
        assert!(
            refused(on(held, "10.42.0.5:7300", false), &shared),
            "address taken"
        );
        shared.peers.remove(&squatter.id());

        let checked = check_at(&on(held, "10.42.0.5:7300", false), &shared).expect("fits");
        admit(&mut shared, &checked);
        let overlay = shared.peers[&joiner.id()]
            .overlay
            .clone()
            .expect("admitted on the overlay");
        assert_eq!(overlay.address, held);
    }

    #[test]
    fn bad_requests_are_refused_each_for_its_reason() {
        let (mut shared, id, key) = network(NOW + 900);
        let joiner = NodeKey::generate();
        assert_eq!(
            check_at(b"junk", &shared).err(),
            Some(Refusal::UnknownToken)
        );
        let unknown = request("no-such-invite", &key, &joiner, "beta");
        assert_eq!(
            check_at(&unknown, &shared).err(),
            Some(Refusal::UnknownToken)
        );
        let wrong_key = request(&id, &[1; 32], &joiner, "beta");
        assert_eq!(
            check_at(&wrong_key, &shared).err(),
            Some(Refusal::UnknownToken)
        );
        let taken = request(&id, &key, &joiner, "seed");
        assert_eq!(
            check_at(&taken, &shared).err(),
            Some(Refusal::DuplicateName("seed".into()))
        );
        let other = check(
            &request(&id, &key, &joiner, "beta"),
            NetworkId([4; 16]),
            &NETWORK_KEY,
            &shared,
            NOW,
        );
        assert_eq!(other.err(), Some(Refusal::WrongNetwork));
        shared.removed.insert(joiner.id());
        let removed = request(&id, &key, &joiner, "beta");
        assert_eq!(check_at(&removed, &shared).err(), Some(Refusal::RemovedKey));
        let (expired, id, key) = network(NOW);
        let late = request(&id, &key, &joiner, "beta");
        assert_eq!(check_at(&late, &expired).err(), Some(Refusal::ExpiredToken));
    }

    #[test]
    fn a_used_invite_refuses_another_joiner() {
        let (mut shared, id, key) = network(NOW + 900);
        mark_used(&mut shared, &id, NodeKey::generate().id());
        let other = request(&id, &key, &NodeKey::generate(), "gamma");
        assert_eq!(check_at(&other, &shared).err(), Some(Refusal::UsedToken));
    }

    /// The attack of the hardening issue: a node joined, was removed, and comes back with the
    /// same old link under the same name, with a fresh key or its old one, before or after the
    /// invite expired. Every way in is shut.
    #[test]
    fn a_used_link_never_brings_a_removed_node_back() {
        for expires_at in [NOW + 900, NOW - 10, NOW - 10 * RETRY_GRACE_SECS] {
            let (mut shared, id, key) = network(expires_at);
            let delta = NodeKey::generate();
            let checked = check(
                &request(&id, &key, &delta, "delta"),
                NETWORK,
                &NETWORK_KEY,
                &shared,
                expires_at - 5,
            )
            .expect("joined while the invite was fresh");
            admit(&mut shared, &checked);
            shared.peers.remove(&delta.id());
            shared.removed.insert(delta.id());
            let fresh_key = request(&id, &key, &NodeKey::generate(), "delta");
            assert_eq!(
                check_at(&fresh_key, &shared).err(),
                Some(Refusal::UsedToken)
            );
            let old_key = request(&id, &key, &delta, "delta");
            assert_eq!(check_at(&old_key, &shared).err(), Some(Refusal::RemovedKey));
            assert_eq!(consume(&mut shared, &id, delta.id()), Consumed::Refused);
        }
    }

    #[test]
    fn a_joiner_whose_answer_was_lost_may_retry_until_shortly_after_expiry() {
        let (mut shared, id, key) = network(NOW + 10);
        let joiner = NodeKey::generate();
        let checked = check_at(&request(&id, &key, &joiner, "beta"), &shared).expect("checked");
        admit(&mut shared, &checked);
        let retry = request(&id, &key, &joiner, "beta");
        let at = |t| check(&retry, NETWORK, &NETWORK_KEY, &shared, t).map(|c| c.admitted);
        assert_eq!(at(NOW), Ok(true));
        assert_eq!(at(NOW + 10 + RETRY_GRACE_SECS - 1), Ok(true));
        assert_eq!(at(NOW + 10 + RETRY_GRACE_SECS), Err(Refusal::ExpiredToken));
        // Another key under the same name gets nothing, expired or not.
        let impostor = request(&id, &key, &NodeKey::generate(), "beta");
        assert_eq!(check_at(&impostor, &shared).err(), Some(Refusal::UsedToken));
    }

    #[test]
    fn names_that_differ_only_in_case_are_one_name() {
        let (shared, id, key) = network(NOW + 900);
        let joiner = NodeKey::generate();
        let shouting = request(&id, &key, &joiner, "SEED");
        assert!(matches!(
            check_at(&shouting, &shared).err(),
            Some(Refusal::BadName(_))
        ));
        // A peer recorded as `Beta` before names had to be lower case loads as `beta`.
        let mut legacy = shared.clone();
        let old = NodeKey::generate();
        let stored = postcard::to_allocvec("Beta").expect("encodes");
        let mut old_peer = peer(&old, "x");
        old_peer.name = postcard::from_bytes(&stored).expect("a legacy name loads");
        legacy.peers.insert(old.id(), old_peer);
        let lower = request(&id, &key, &joiner, "beta");
        assert_eq!(
            check_at(&lower, &legacy).err(),
            Some(Refusal::DuplicateName("beta".into()))
        );
    }

    #[test]
    fn without_a_quorum_the_join_is_refused_with_the_right_reason() {
        let (mut shared, id, key) = network(NOW + 900);
        for name in ["b", "c"] {
            let k = NodeKey::generate();
            shared.peers.insert(k.id(), peer(&k, name));
        }
        assert_eq!(lease::quorum(shared.peers.len()), 2);
        let checked =
            check_at(&request(&id, &key, &NodeKey::generate(), "d"), &shared).expect("checked");
        assert_eq!(
            decide(&checked, &shared, 1, 1),
            Decision::Refuse(Refusal::UsedToken)
        );
        assert_eq!(
            decide(&checked, &shared, 1, 0),
            Decision::Refuse(Refusal::NotConfirmed)
        );
        assert_eq!(decide(&checked, &shared, 2, 0), Decision::Admit);
    }

    #[test]
    fn consume_records_one_joiner_and_refuses_the_rest() {
        let (mut shared, id, _) = network(NOW + 900);
        let (beta, gamma) = (NodeKey::generate().id(), NodeKey::generate().id());
        assert_eq!(consume(&mut shared, &id, beta), Consumed::Recorded);
        assert_eq!(consume(&mut shared, &id, beta), Consumed::AlreadyThisJoiner);
        assert_eq!(consume(&mut shared, &id, gamma), Consumed::Refused);
        assert_eq!(consume(&mut shared, "unknown", beta), Consumed::Refused);
        assert!(Consumed::AlreadyThisJoiner.confirms() && !Consumed::Refused.confirms());
    }

    #[test]
    fn quorums_are_majorities_from_three_members() {
        let quorums: Vec<usize> = (1..=6).map(lease::quorum).collect();
        assert_eq!(quorums, [1, 1, 2, 3, 3, 4]);
    }
}
