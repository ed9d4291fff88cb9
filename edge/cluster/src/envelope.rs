//! The signed envelope every node-to-node message travels in, and the replay window that accepts
//! each (sender, counter) once.
//!
//! Layout (all integers big-endian):
//!
//! | bytes      | field                                        |
//! |------------|----------------------------------------------|
//! | 0..4       | magic `CNS2`                                 |
//! | 4..20      | network id                                   |
//! | 20..36     | sender node id                               |
//! | 36..52     | receiver node id                             |
//! | 52..60     | sender's message counter                     |
//! | 60..64     | body length `n`                              |
//! | 64..64+n   | body (postcard-encoded `wire::Message`)      |
//! | +64        | ed25519 signature by the sender over all above |
//!
//! Binding network, sender and receiver into the signed bytes means a message cannot be replayed
//! to another node or network; the counter makes it single use at its receiver. Parsing checks
//! every length before reading and never panics on any input.

use crate::identity::{NodeId, NodeKey, PublicKey};

/// `CNS1` nodes carried membership and lease messages in envelopes; their bodies would decode
/// as something else here, so the versions refuse each other.
const MAGIC: &[u8; 4] = b"CNS2";
/// The fixed-size header, readable (and screenable) before the body arrives.
pub const HEADER_LEN: usize = 64;
const SIGNATURE_LEN: usize = 64;
/// Largest body of any envelope: a reply carrying a day of time series.
pub const MAX_BODY: usize = 16 << 20;
/// Largest body of a request a node accepts from the network: the speed test's upload (the
/// largest request any node sends) with room for its framing. A listener never buffers more
/// than this for one message, whoever claims to send it.
pub const MAX_REQUEST_BODY: usize = crate::wire::SPEEDTEST_BYTES as usize + (64 << 10);

/// A network's id (16 random bytes made at `init`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct NetworkId(pub [u8; 16]);

impl NetworkId {
    pub fn parse(text: &str) -> Option<NetworkId> {
        let mut id = [0u8; 16];
        hex::decode_to_slice(text, &mut id).ok()?;
        Some(NetworkId(id))
    }
}

impl std::fmt::Display for NetworkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// An envelope's header fields, read before the signature is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub network: NetworkId,
    pub from: NodeId,
    pub to: NodeId,
    pub counter: u64,
}

/// Why an envelope was refused. Logged with the sender; never answered in detail.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    #[error("envelope for another network")]
    WrongNetwork,
    #[error("envelope addressed to another node")]
    WrongReceiver,
    #[error("sender is not a member")]
    UnknownSender,
    #[error("sender was removed from the network")]
    RemovedSender,
    #[error("bad signature")]
    BadSignature,
    #[error("replayed or too old (counter {0})")]
    Replayed(u64),
}

impl Rejected {
    /// The reason as a stable code, for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Rejected::Malformed(_) => "malformed",
            Rejected::WrongNetwork => "wrong_network",
            Rejected::WrongReceiver => "wrong_receiver",
            Rejected::UnknownSender => "unknown_sender",
            Rejected::RemovedSender => "removed_sender",
            Rejected::BadSignature => "bad_signature",
            Rejected::Replayed(_) => "replayed",
        }
    }
}

/// Builds a signed envelope around `body`.
pub fn seal(key: &NodeKey, header: Header, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + SIGNATURE_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header.network.0);
    out.extend_from_slice(&header.from.0);
    out.extend_from_slice(&header.to.0);
    out.extend_from_slice(&header.counter.to_be_bytes());
    // Bodies are bounded by MAX_BODY (well under u32::MAX) by every caller.
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    let signature = key.sign(&out);
    out.extend_from_slice(&signature);
    out
}

/// Reads the fixed-size header at the start of `bytes`: the header fields and the whole
/// envelope's length as it declares it (at most `max_body` of body).
pub fn parse_header(bytes: &[u8], max_body: usize) -> Result<(Header, usize), Rejected> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Err(Rejected::Malformed("shorter than a header"));
    };
    if &head[..4] != MAGIC {
        return Err(Rejected::Malformed("bad magic"));
    }
    let field16 = |at: usize| {
        let mut out = [0u8; 16];
        out.copy_from_slice(&head[at..at + 16]);
        out
    };
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&head[52..60]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&head[60..64]);
    let len = u32::from_be_bytes(len) as usize;
    if len > max_body {
        return Err(Rejected::Malformed("body longer than allowed"));
    }
    let header = Header {
        network: NetworkId(field16(4)),
        from: NodeId(field16(20)),
        to: NodeId(field16(36)),
        counter: u64::from_be_bytes(counter),
    };
    Ok((header, HEADER_LEN + len + SIGNATURE_LEN))
}

/// Splits an envelope into header, body and signature without checking the signature.
pub fn parse(bytes: &[u8]) -> Result<(Header, &[u8], [u8; 64]), Rejected> {
    if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
        return Err(Rejected::Malformed("shorter than a header and signature"));
    }
    let (header, total) = match parse_header(bytes, MAX_BODY) {
        Err(Rejected::Malformed("body longer than allowed")) => {
            return Err(Rejected::Malformed("length does not match"));
        }
        other => other?,
    };
    if bytes.len() != total {
        return Err(Rejected::Malformed("length does not match"));
    }
    let body_end = total - SIGNATURE_LEN;
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&bytes[body_end..]);
    Ok((header, &bytes[HEADER_LEN..body_end], signature))
}

/// Checks the signature of a parsed envelope with the sender's key.
pub fn verify(bytes: &[u8], signature: &[u8; 64], sender: &PublicKey) -> bool {
    let signed = bytes.len().saturating_sub(SIGNATURE_LEN);
    sender.verify(&bytes[..signed], signature)
}

/// Accepts each counter of one sender at most once: counters above the highest seen, or up to
/// `WINDOW - 1` below it if not seen yet (concurrent messages may arrive out of order).
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayWindow {
    highest: u64,
    seen: u128,
}

const WINDOW: u64 = 128;

impl ReplayWindow {
    /// A window that refuses everything at or below `floor` (restored from disk after a restart).
    pub fn starting_above(floor: u64) -> ReplayWindow {
        ReplayWindow {
            highest: floor,
            seen: u128::MAX,
        }
    }

    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Records `counter` if it is fresh; false if it was seen or is older than the window.
    pub fn accept(&mut self, counter: u64) -> bool {
        if counter > self.highest {
            let shift = counter - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.highest = counter;
            return true;
        }
        let age = self.highest - counter;
        if age >= WINDOW {
            return false;
        }
        let bit = 1u128 << age;
        if self.seen & bit != 0 {
            return false;
        }
        self.seen |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(from: &NodeKey, to: NodeId, counter: u64) -> Header {
        Header {
            network: NetworkId([7; 16]),
            from: from.id(),
            to,
            counter,
        }
    }

    #[test]
    fn sealed_envelope_parses_and_verifies() {
        let a = NodeKey::generate();
        let b = NodeKey::generate();
        let bytes = seal(&a, header(&a, b.id(), 42), b"body");
        let (h, body, sig) = parse(&bytes).expect("parses");
        assert_eq!(h, header(&a, b.id(), 42));
        assert_eq!(body, b"body");
        assert!(verify(&bytes, &sig, &a.public()));
        assert!(!verify(&bytes, &sig, &b.public()));
    }

    #[test]
    fn any_flipped_bit_breaks_the_signature_or_the_parse() {
        let a = NodeKey::generate();
        let bytes = seal(&a, header(&a, NodeId([1; 16]), 9), b"payload");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            if let Ok((_, _, sig)) = parse(&bad) {
                assert!(!verify(&bad, &sig, &a.public()), "bit in byte {i}");
            }
        }
    }

    #[test]
    fn truncated_and_oversized_inputs_are_refused_without_panics() {
        let a = NodeKey::generate();
        let bytes = seal(&a, header(&a, NodeId([1; 16]), 9), b"payload");
        for len in 0..bytes.len() {
            assert!(parse(&bytes[..len]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(parse(&long).is_err());
        let mut huge = bytes;
        huge[60..64].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            parse(&huge).err(),
            Some(Rejected::Malformed("length does not match"))
        );
    }

    #[test]
    fn replay_window_accepts_each_counter_once() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(10));
        assert!(!w.accept(10));
        assert!(w.accept(8), "out of order but inside the window");
        assert!(!w.accept(8));
        assert!(w.accept(200));
        assert!(!w.accept(10), "older than the window");
        assert!(w.accept(199));
        let mut restored = ReplayWindow::starting_above(500);
        assert!(!restored.accept(500));
        assert!(!restored.accept(450));
        assert!(restored.accept(501));
    }
}
