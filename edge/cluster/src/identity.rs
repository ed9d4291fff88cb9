//! A node's identity: an ed25519 key pair whose public half names the node. The node id is the
//! first 16 bytes of SHA-256 over the public key, so it cannot be chosen without the key.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A cluster member's id, derived from its public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    pub fn of(public: &PublicKey) -> NodeId {
        let digest = Sha256::digest(public.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        NodeId(id)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &hex::encode(self.0)[..8])
    }
}

/// A node's ed25519 public key, as carried in the peer table.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// Checks `signature` over `message`; false for keys that are not valid curve points.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        match VerifyingKey::from_bytes(&self.0) {
            Ok(key) => key
                .verify(message, &Signature::from_bytes(signature))
                .is_ok(),
            Err(_) => false,
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &hex::encode(self.0)[..8])
    }
}

/// Hex text in JSON (and as map keys), raw bytes in postcard.
macro_rules! bytes_serde {
    ($ty:ident, $n:expr) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(self.0))
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let text = String::deserialize(d)?;
                    let mut out = [0u8; $n];
                    hex::decode_to_slice(&text, &mut out).map_err(|e| {
                        serde::de::Error::custom(format!("expected {} hex digits: {e}", 2 * $n))
                    })?;
                    Ok($ty(out))
                } else {
                    Ok($ty(<[u8; $n]>::deserialize(d)?))
                }
            }
        }
    };
}

bytes_serde!(NodeId, 16);
bytes_serde!(PublicKey, 32);

/// The node's private key. Never serialized except into the 0600 secrets file.
#[derive(Clone)]
pub struct NodeKey(SigningKey);

impl NodeKey {
    pub fn generate() -> NodeKey {
        let mut seed = [0u8; 32];
        rand::rng().fill_bytes(&mut seed);
        NodeKey(SigningKey::from_bytes(&seed))
    }

    pub fn from_seed(seed: [u8; 32]) -> NodeKey {
        NodeKey(SigningKey::from_bytes(&seed))
    }

    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn id(&self) -> NodeId {
        NodeId::of(&self.public())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The X25519 agreement with `peer` (both ed25519 keys taken to Montgomery form): the same
    /// 32 bytes at both ends of the pair. `None` for a key that is no point or has small order,
    /// whose agreement anyone could predict.
    pub fn agree(&self, peer: &PublicKey) -> Option<[u8; 32]> {
        let peer = VerifyingKey::from_bytes(&peer.0).ok()?;
        if peer.is_weak() {
            return None;
        }
        Some(
            peer.to_montgomery()
                .mul_clamped(self.0.to_scalar_bytes())
                .to_bytes(),
        )
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({:?}, secret hidden)", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_follows_the_key_and_signatures_check() {
        let key = NodeKey::generate();
        let again = NodeKey::from_seed(key.seed());
        assert_eq!(key.id(), again.id());
        assert_eq!(key.id().to_string().len(), 32);
        let sig = key.sign(b"hello");
        assert!(key.public().verify(b"hello", &sig));
        assert!(!key.public().verify(b"hellO", &sig));
        assert!(!NodeKey::generate().public().verify(b"hello", &sig));
        let other = NodeKey::generate();
        assert_eq!(key.agree(&other.public()), other.agree(&key.public()));
        assert_ne!(
            key.agree(&other.public()),
            key.agree(&NodeKey::generate().public())
        );
        assert!(!format!("{key:?}").contains(&hex::encode(key.seed())));
    }
}
