//! Sealed datagrams: the cluster's small, frequent, one-way messages (membership probes, lease
//! claims and votes, state digests), one UDP datagram each, with no per-message signature.
//!
//! Layout (integers big-endian):
//!
//! | bytes   | field                                                        |
//! |---------|--------------------------------------------------------------|
//! | 0..4    | magic `CND1`                                                 |
//! | 4..20   | sender node id                                               |
//! | 20..28  | sender's message counter (the same sequence as its envelopes) |
//! | 28..    | ChaCha20-Poly1305 ciphertext of the postcard body, tag last   |
//!
//! The key belongs to one direction of one pair of members: HKDF-SHA256 over the X25519
//! agreement of the two nodes' identity keys (ed25519, taken to Montgomery form), salted with
//! the network id and labelled with the sender's and the receiver's ids. Only the two nodes can
//! compute it, so a datagram that opens was sealed by its claimed sender, for this receiver and
//! this network; a relay in between (the overlay's hub) can neither read nor forge one. The
//! counter is the nonce (one key per direction and a counter that never repeats keep it unique)
//! and goes through the receiver's replay window. See `docs/SECURITY.md`.

use std::collections::{BTreeMap, BTreeSet};

use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::envelope::{NetworkId, Rejected};
use crate::identity::{NodeId, NodeKey, PublicKey};

const MAGIC: &[u8; 4] = b"CND1";
/// The clear header: magic, sender, counter.
pub const HEADER_LEN: usize = 28;
const TAG_LEN: usize = 16;
/// Largest datagram a node sends or reads: inside the overlay's 1420-byte MTU with its IP and
/// UDP headers, and below the 1280 bytes every IPv6 path (and so any sane IPv4 one) carries
/// without fragments.
pub const MAX_LEN: usize = 1232;
/// Largest body that fits.
pub const MAX_BODY: usize = MAX_LEN - HEADER_LEN - TAG_LEN;
const LABEL: &[u8] = b"constella datagram v1";

/// The two keys of one pair: this node's to the peer, and the peer's to this node.
pub struct PairKeys {
    to_peer: ChaCha20Poly1305,
    from_peer: ChaCha20Poly1305,
}

impl PairKeys {
    /// The pair's keys, or `None` for a peer key that is not a usable curve point (a weak or
    /// malformed key: the agreement would be predictable).
    pub fn derive(me: &NodeKey, peer: &PublicKey, network: NetworkId) -> Option<PairKeys> {
        let shared = me.agree(peer)?;
        let (mine, theirs) = (me.id(), NodeId::of(peer));
        let direction = |from: NodeId, to: NodeId| {
            let hkdf = Hkdf::<Sha256>::new(Some(&network.0), &shared);
            let mut info = Vec::with_capacity(LABEL.len() + 32);
            info.extend_from_slice(LABEL);
            info.extend_from_slice(&from.0);
            info.extend_from_slice(&to.0);
            let mut key = [0u8; 32];
            hkdf.expand(&info, &mut key)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            ChaCha20Poly1305::new(Key::from_slice(&key))
        };
        Some(PairKeys {
            to_peer: direction(mine, theirs),
            from_peer: direction(theirs, mine),
        })
    }

    /// Seals `body` from `from` with `counter`; `None` if the body is too large for a datagram.
    pub fn seal(&self, from: NodeId, counter: u64, body: &[u8]) -> Option<Vec<u8>> {
        if body.len() > MAX_BODY {
            return None;
        }
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&from.0);
        out.extend_from_slice(&counter.to_be_bytes());
        let sealed = self
            .to_peer
            .encrypt(
                &nonce(counter),
                Payload {
                    msg: body,
                    aad: &out,
                },
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// The body of a datagram from the peer, if it is authentic. The caller has read the
    /// header with [`parse_header`] and checks the counter against its replay window after.
    pub fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, Rejected> {
        let header = parse_header(datagram)?;
        let (aad, sealed) = datagram.split_at(HEADER_LEN);
        self.from_peer
            .decrypt(&nonce(header.counter), Payload { msg: sealed, aad })
            .map_err(|_| Rejected::BadSignature)
    }
}

/// This node's keys with each member, derived on first use: one X25519 agreement per member,
/// not per datagram. Only members' keys are derived, so the cache is as large as the network.
pub struct Pairs {
    me: NodeKey,
    network: NetworkId,
    keys: BTreeMap<NodeId, PairKeys>,
}

impl Pairs {
    pub fn new(me: NodeKey, network: NetworkId) -> Pairs {
        Pairs {
            me,
            network,
            keys: BTreeMap::new(),
        }
    }

    /// The keys with `peer`, whose identity key is `key` (the id follows from the key, so a
    /// cached entry never goes stale); `None` if that key is unusable.
    pub fn with(&mut self, peer: NodeId, key: &PublicKey) -> Option<&PairKeys> {
        if !self.keys.contains_key(&peer) {
            let keys = PairKeys::derive(&self.me, key, self.network)?;
            self.keys.insert(peer, keys);
        }
        self.keys.get(&peer)
    }

    /// Drops the keys of nodes that left the network.
    pub fn forget(&mut self, gone: &BTreeSet<NodeId>) {
        self.keys.retain(|id, _| !gone.contains(id));
    }
}

/// A datagram's clear header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub from: NodeId,
    pub counter: u64,
}

/// Reads the clear header; checks lengths only (nothing in it is authenticated yet).
pub fn parse_header(datagram: &[u8]) -> Result<Header, Rejected> {
    if datagram.len() < HEADER_LEN + TAG_LEN {
        return Err(Rejected::Malformed("datagram too short"));
    }
    if datagram.len() > MAX_LEN {
        return Err(Rejected::Malformed("datagram too long"));
    }
    if &datagram[..4] != MAGIC {
        return Err(Rejected::Malformed("bad datagram magic"));
    }
    let mut from = [0u8; 16];
    from.copy_from_slice(&datagram[4..20]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&datagram[20..28]);
    Ok(Header {
        from: NodeId(from),
        counter: u64::from_be_bytes(counter),
    })
}

fn nonce(counter: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    *Nonce::from_slice(&nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (NodeKey, NodeKey, NetworkId) {
        (NodeKey::generate(), NodeKey::generate(), NetworkId([9; 16]))
    }

    #[test]
    fn a_sealed_datagram_opens_only_at_its_receiver_in_its_network() {
        let (a, b, network) = pair();
        let at_a = PairKeys::derive(&a, &b.public(), network).expect("valid keys");
        let at_b = PairKeys::derive(&b, &a.public(), network).expect("valid keys");
        let datagram = at_a.seal(a.id(), 7, b"claim").expect("fits");
        assert_eq!(
            parse_header(&datagram),
            Ok(Header {
                from: a.id(),
                counter: 7
            })
        );
        assert_eq!(at_b.open(&datagram).as_deref(), Ok(&b"claim"[..]));
        assert_eq!(
            at_a.open(&datagram),
            Err(Rejected::BadSignature),
            "not valid in the other direction: a node cannot be fed its own datagram back"
        );

        let c = NodeKey::generate();
        let at_c = PairKeys::derive(&c, &a.public(), network).expect("valid keys");
        assert_eq!(at_c.open(&datagram), Err(Rejected::BadSignature));
        let elsewhere = PairKeys::derive(&b, &a.public(), NetworkId([1; 16])).expect("keys");
        assert_eq!(elsewhere.open(&datagram), Err(Rejected::BadSignature));
    }

    #[test]
    fn any_changed_byte_or_a_forged_counter_is_refused() {
        let (a, b, network) = pair();
        let at_a = PairKeys::derive(&a, &b.public(), network).expect("valid keys");
        let at_b = PairKeys::derive(&b, &a.public(), network).expect("valid keys");
        let datagram = at_a.seal(a.id(), 1, b"vote").expect("fits");
        for at in 0..datagram.len() {
            let mut bent = datagram.clone();
            bent[at] ^= 0x01;
            assert!(at_b.open(&bent).is_err(), "byte {at} changed");
        }
        assert_eq!(
            at_b.open(&datagram[..20]),
            Err(Rejected::Malformed("datagram too short"))
        );
    }

    #[test]
    fn bodies_are_bounded_and_weak_keys_give_no_pair() {
        let (a, b, network) = pair();
        let keys = PairKeys::derive(&a, &b.public(), network).expect("valid keys");
        assert!(
            keys.seal(a.id(), 1, &[0; MAX_BODY])
                .is_some_and(|d| d.len() == MAX_LEN)
        );
        assert!(keys.seal(a.id(), 1, &[0; MAX_BODY + 1]).is_none());
        // The identity point: every agreement with it is the same.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(PairKeys::derive(&a, &PublicKey(identity), network).is_none());
    }
}
