//! Invites and the join handshake's cryptography.
//!
//! An invite is a random token shown to the owner once, as
//! `join://HOST:PORT?net=NETWORK_ID&token=TOKEN&ttl=900s`. The network stores only
//! `invite_id(token)` and the invite key `HKDF(token)` sealed under the network key, so any node
//! can redeem it and no node, log or packet holds the token itself.
//!
//! The join request carries the joiner's ephemeral X25519 key and its details sealed under a key
//! derived from the invite key and that ephemeral key: only a holder of the token can make it,
//! only a member can read it. The reply is sealed under a key derived from an X25519 exchange
//! with the seed's ephemeral key *and* the invite key, so an eavesdropper learns nothing (not
//! even with the token later) and a fake seed without the invite key cannot answer.
//!
//! In a network with a WireGuard overlay the link also names a hub (`hub=HOST:PORT`, its key
//! `hubkey=`) and the address the invite holds (`addr=IP/PREFIX`), and the seed is a member's
//! overlay address: the joiner enters the overlay with a WireGuard key derived from the invite
//! key (`enrollment_secret`), which the hubs accept until the invite is used or expires, and
//! sends its join request inside the tunnel. No cluster port has to face the internet.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use chacha20poly1305::aead::{Aead as _, KeyInit as _};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore as _;
use sha2::Sha256;

use crate::envelope::NetworkId;

pub const DEFAULT_TTL: Duration = Duration::from_secs(900);
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A parsed `join://` link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub seed: String,
    pub network: NetworkId,
    pub token: [u8; 16],
    pub ttl: Duration,
    pub overlay: Option<LinkOverlay>,
}

/// The overlay part of a link: how the joiner reaches a hub, and its address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkOverlay {
    pub hub_endpoint: String,
    pub hub_public_key: [u8; 32],
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl Link {
    pub fn parse(text: &str) -> anyhow::Result<Link> {
        let rest = text
            .trim()
            .strip_prefix("join://")
            .context("a join link starts with join://")?;
        let (seed, query) = rest
            .split_once('?')
            .context("a join link has ?net=…&token=…&ttl=…")?;
        if seed.is_empty() || !seed.contains(':') {
            bail!("the join link's seed must be HOST:PORT, got {seed:?}");
        }
        let (mut network, mut token, mut ttl) = (None, None, None);
        let (mut hub, mut hub_key, mut address) = (None, None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("net", v)) => {
                    network = Some(NetworkId::parse(v).context("net= is not a network id")?)
                }
                Some(("token", v)) => {
                    let mut t = [0u8; 16];
                    hex::decode_to_slice(v, &mut t).context("token= is not an invite token")?;
                    token = Some(t);
                }
                Some(("ttl", v)) => ttl = Some(parse_ttl(v)?),
                Some(("hub", v)) if v.contains(':') => hub = Some(v.to_string()),
                Some(("hub", v)) => bail!("hub= must be HOST:PORT, got {v:?}"),
                Some(("hubkey", v)) => {
                    let mut k = [0u8; 32];
                    hex::decode_to_slice(v, &mut k).context("hubkey= is not a WireGuard key")?;
                    hub_key = Some(k);
                }
                Some(("addr", v)) => address = Some(parse_address(v)?),
                _ => bail!("unknown part {pair:?} in the join link"),
            }
        }
        let overlay = match (hub, hub_key, address) {
            (None, None, None) => None,
            (Some(hub_endpoint), Some(hub_public_key), Some((address, prefix_len))) => {
                Some(LinkOverlay {
                    hub_endpoint,
                    hub_public_key,
                    address,
                    prefix_len,
                })
            }
            _ => bail!("the join link's overlay part needs all of hub=, hubkey= and addr="),
        };
        Ok(Link {
            seed: seed.to_string(),
            network: network.context("the join link has no net=")?,
            token: token.context("the join link has no token=")?,
            ttl: ttl.unwrap_or(DEFAULT_TTL),
            overlay,
        })
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "join://{}?net={}&token={}&ttl={}s",
            self.seed,
            self.network,
            hex::encode(self.token),
            self.ttl.as_secs()
        )?;
        if let Some(overlay) = &self.overlay {
            write!(
                f,
                "&hub={}&hubkey={}&addr={}/{}",
                overlay.hub_endpoint,
                hex::encode(overlay.hub_public_key),
                overlay.address,
                overlay.prefix_len
            )?;
        }
        Ok(())
    }
}

fn parse_address(text: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let parsed = text.split_once('/').and_then(|(ip, prefix)| {
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| (8..=30).contains(p))?;
        Some((ip, prefix))
    });
    parsed.with_context(|| {
        format!("addr= must be an IPv4 address with a prefix such as 10.42.0.5/24, got {text:?}")
    })
}

/// The WireGuard private key (raw X25519 scalar bytes) a joiner uses to enter the overlay
/// before it is a member: derived from the invite key, so the joiner (from the token) and every
/// member (by unsealing) know it and nobody else does. Dead once the invite is used.
pub fn enrollment_secret(invite_key: &[u8; 32]) -> [u8; 32] {
    derive(invite_key, b"constella invite wireguard key")
}

/// Parses an invite lifetime such as `15m`, `900s` or `7d`: at least a second, at most 7 days.
pub fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let ttl = humantime::parse_duration(text).with_context(|| {
        format!("invalid TTL {text:?}: expected a duration such as 15m, 900s or 2d")
    })?;
    if ttl < Duration::from_secs(1) {
        bail!("invalid TTL {text:?}: must be at least 1s");
    }
    if ttl > MAX_TTL {
        bail!("invalid TTL {text:?}: the maximum is 7 days");
    }
    Ok(ttl)
}

pub fn new_token() -> [u8; 16] {
    let mut t = [0u8; 16];
    rand::rng().fill_bytes(&mut t);
    t
}

/// The public id under which the network files an invite.
pub fn invite_id(token: &[u8; 16]) -> String {
    hex::encode(&derive(token, b"constella invite id")[..8])
}

/// The invite key both sides derive: the joiner from the token, members by unsealing.
pub fn invite_key(token: &[u8; 16]) -> [u8; 32] {
    derive(token, b"constella invite key")
}

/// Key for the joiner's request: invite key and the joiner's ephemeral public key.
pub fn request_key(invite_key: &[u8; 32], joiner_ephemeral: &[u8; 32]) -> [u8; 32] {
    let mut ikm = invite_key.to_vec();
    ikm.extend_from_slice(joiner_ephemeral);
    derive(&ikm, b"constella join request")
}

/// Key for the seed's reply: the X25519 shared secret bound to the invite key.
pub fn reply_key(invite_key: &[u8; 32], shared: &[u8; 32]) -> [u8; 32] {
    let mut ikm = invite_key.to_vec();
    ikm.extend_from_slice(shared);
    derive(&ikm, b"constella join reply")
}

/// ChaCha20-Poly1305 with a random nonce prepended.
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    // Encryption only fails for plaintexts beyond 256 GiB.
    let body = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&body);
    out
}

/// Opens `seal`'s output; `None` if it was not sealed under `key` or was altered.
pub fn open(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 12 + 16 {
        return None;
    }
    let cipher = ChaCha20Poly1305::new(Key::from_slice(key));
    cipher
        .decrypt(Nonce::from_slice(&sealed[..12]), &sealed[12..])
        .ok()
}

fn derive(ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
    let _ = Hkdf::<Sha256>::new(None, ikm).expand(info, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_bad_ones_say_why() {
        let link = Link {
            seed: "203.0.113.5:7300".into(),
            network: NetworkId([0xab; 16]),
            token: [3; 16],
            ttl: Duration::from_secs(900),
            overlay: None,
        };
        let text = link.to_string();
        assert!(text.starts_with("join://203.0.113.5:7300?net=abab"));
        assert!(text.ends_with("&ttl=900s"));
        assert_eq!(Link::parse(&text).expect("parses"), link);
        let with_overlay = Link {
            seed: "10.42.0.1:7300".into(),
            overlay: Some(LinkOverlay {
                hub_endpoint: "hub.example.org:51820".into(),
                hub_public_key: [0xcd; 32],
                address: Ipv4Addr::new(10, 42, 0, 7),
                prefix_len: 24,
            }),
            ..link
        };
        let text = with_overlay.to_string();
        assert!(text.contains("&hub=hub.example.org:51820&hubkey=cdcd"));
        assert!(text.ends_with("&addr=10.42.0.7/24"));
        assert_eq!(Link::parse(&text).expect("parses"), with_overlay);
        for (bad, why) in [
            ("http://x:1?net=00", "starts with join://"),
            ("join://x:1", "?net="),
            ("join://x:1?net=zz&token=00", "not a network id"),
            (
                "join://x:1?token=00000000000000000000000000000000",
                "no net=",
            ),
            (
                "join://x:1?net=00000000000000000000000000000000&hub=h:1",
                "all of hub=",
            ),
            (
                "join://x:1?net=00000000000000000000000000000000&addr=10.42.0.7",
                "with a prefix",
            ),
            (
                "join://x:1?net=00000000000000000000000000000000&hubkey=12",
                "not a WireGuard key",
            ),
        ] {
            let err = format!("{:#}", Link::parse(bad).expect_err(bad));
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn ttl_limits() {
        assert_eq!(parse_ttl("15m").expect("ok"), Duration::from_secs(900));
        assert_eq!(parse_ttl("7d").expect("ok"), MAX_TTL);
        for (bad, why) in [
            ("8d", "maximum is 7 days"),
            ("0s", "at least 1s"),
            ("soon", "expected a duration"),
        ] {
            let err = format!("{:#}", parse_ttl(bad).expect_err(bad));
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn sealed_data_opens_only_with_its_key() {
        let key = invite_key(&[1; 16]);
        let sealed = seal(&key, b"network key");
        assert_eq!(open(&key, &sealed).as_deref(), Some(&b"network key"[..]));
        assert_eq!(open(&invite_key(&[2; 16]), &sealed), None);
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(open(&key, &tampered), None);
        assert_eq!(open(&key, &sealed[..10]), None);
        assert_ne!(invite_id(&[1; 16]), invite_id(&[2; 16]));
    }
}
