//! WireGuard keys in the form `wg genkey` and `wg pubkey` print them: 32 bytes in standard base64.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519;

/// Why a key string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not base64: {0}")]
    Base64(String),
    #[error("a WireGuard key is 32 bytes, this one has {0}")]
    Length(usize),
}

fn decode(text: &str) -> Result<[u8; 32], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|error| KeyError::Base64(error.to_string()))?;
    let length = bytes.len();
    bytes.try_into().map_err(|_| KeyError::Length(length))
}

/// A node's static private key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct PrivateKey(x25519::StaticSecret);

impl PrivateKey {
    pub fn generate() -> Self {
        Self(x25519::StaticSecret::from(rand::random::<[u8; 32]>()))
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode(text).map(Self::from_bytes)
    }

    /// From raw scalar bytes (clamped when used, as X25519 does).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(x25519::StaticSecret::from(bytes))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The form `wg` reads: a secret, so only for state files and wg-quick output.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.0).to_bytes())
    }

    pub(crate) fn secret(&self) -> &x25519::StaticSecret {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(redacted)")
    }
}

/// A peer's static public key: its identity in the overlay.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode(text).map(Self)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn to_x25519(self) -> x25519::PublicKey {
        x25519::PublicKey::from(self.0)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        Self::from_base64(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_the_wg_text_form() {
        let private = PrivateKey::generate();
        let again = PrivateKey::from_base64(&private.to_base64()).expect("own output parses");
        assert_eq!(private.public_key(), again.public_key());
        let public = private.public_key();
        assert_eq!(PublicKey::from_base64(&public.to_string()), Ok(public));
    }

    #[test]
    fn a_known_wg_key_pair_matches() {
        // The pair checked with `echo <private> | wg pubkey` (wireguard-tools 1.0.20210914).
        let private = PrivateKey::from_base64("YFmpDT7P1ptaxiAYsjMrzs4ooBG2F3eaCKmyCWnRWEY=")
            .expect("a wg key");
        assert_eq!(
            private.public_key().to_string(),
            "8gq+gjmvJJ6kIgf1McXyVGlMaDjZBloOJX91bwdxux0="
        );
    }

    #[test]
    fn bad_key_text_says_why() {
        assert_eq!(PublicKey::from_base64("AAAA"), Err(KeyError::Length(3)));
        assert!(matches!(
            PublicKey::from_base64("not a key!"),
            Err(KeyError::Base64(_))
        ));
        assert!(!format!("{:?}", PrivateKey::generate()).contains('='));
    }
}
