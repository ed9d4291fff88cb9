//! `constella init` and `constella join`: create a node's state directory, either as the first
//! node of a new network or by redeeming an invite at any live member.
//!
//! With `--vpn-mode hub` the first node is also the overlay's hub: it makes its WireGuard key,
//! takes the first address of the overlay network and puts its cluster address on it. A joiner
//! whose link names a hub enters the overlay with the invite's enrollment key, sends its join
//! request to the seed through the tunnel, and comes out a client with its own WireGuard key,
//! the address the invite held, and its cluster address on that.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rand::RngCore as _;

use constella_api::NodeName;
use constella_cluster::identity::{NodeId, NodeKey};
use constella_cluster::invite::{self, Link};
use constella_cluster::shared::{HubInfo, OverlayInfo, PeerInfo, Shared};
use constella_cluster::wire::{self, Hello, JoinReply, JoinRequest, Refusal, Welcome};
use constella_overlay::{PeerConfig, PrivateKey, PublicKey};
use ipnet::Ipv4Net;

use super::netstate::{self, NetworkState, OverlaySettings, Secrets, Seen};
use super::transport::{HttpTransport, JOIN_PATH, OverlayRoute, Transport, TransportError};

/// What every new node states about itself.
pub(crate) struct NodeOptions {
    pub(crate) name: NodeName,
    /// HOST:PORT where the other nodes reach this one; a hub's clients send to HOST.
    pub(crate) public_addr: Option<String>,
    pub(crate) listen: Option<String>,
    pub(crate) bot_token: Option<String>,
    pub(crate) priority: u32,
    pub(crate) state_dir: PathBuf,
    pub(crate) overlay: OverlayOptions,
}

/// `VPN_MODE`: whether and how a node is on the WireGuard overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum VpnMode {
    None,
    Hub,
    Client,
}

/// The `--vpn-*` settings, as in the reference deployment's environment.
pub(crate) struct OverlayOptions {
    /// Unset: none for `init`; for `join`, client when the link names a hub.
    pub(crate) mode: Option<VpnMode>,
    pub(crate) interface: String,
    pub(crate) cidr: Ipv4Net,
    pub(crate) listen_port: u16,
    /// Overrides for a client: the hub as seen from here, its key, this node's address, and
    /// what goes through the hub.
    pub(crate) hub_endpoint: Option<String>,
    pub(crate) hub_public_key: Option<String>,
    pub(crate) address: Option<Ipv4Addr>,
    pub(crate) allowed_ips: Option<Vec<Ipv4Net>>,
    /// Also a TUN interface named `interface` (`--tun`).
    pub(crate) tun: bool,
}

pub(crate) struct InitOptions {
    pub(crate) node: NodeOptions,
    pub(crate) owner: String,
}

pub(crate) struct JoinOptions {
    pub(crate) node: NodeOptions,
    pub(crate) link: String,
    pub(crate) attempts: u32,
}

/// Creates a new network with this node as its only member. Returns the node id.
pub(crate) fn init(options: InitOptions) -> anyhow::Result<(String, NodeId)> {
    let node = checked(&options.node)?;
    let owner = options.owner.trim().trim_start_matches('@').to_string();
    if owner.is_empty() || !owner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!(
            "--owner: {:?} is not a Telegram username such as @farm_owner",
            options.owner
        );
    }
    let public_addr = node.public_addr("init")?;
    let vpn = &options.node.overlay;
    let (addr, overlay) = match vpn.mode.unwrap_or(VpnMode::None) {
        VpnMode::None => (public_addr.to_string(), None),
        VpnMode::Client => bail!(
            "--vpn-mode client: the first node of a network is its hub; use --vpn-mode hub here and join clients with invites"
        ),
        VpnMode::Hub => {
            let network = vpn.cidr.trunc();
            let address = match vpn.address {
                Some(address) if network.contains(&address) => address,
                Some(address) => {
                    bail!("--vpn-address {address} is not inside --vpn-cidr {network}")
                }
                None => network
                    .hosts()
                    .next()
                    .with_context(|| format!("--vpn-cidr {network} has no host addresses"))?,
            };
            let (host, port) = split_host_port(public_addr);
            let key = PrivateKey::generate();
            let info = OverlayInfo {
                public_key: *key.public_key().as_bytes(),
                address,
                hub: Some(HubInfo {
                    endpoint: format!("{host}:{}", vpn.listen_port),
                    prefix_len: network.prefix_len(),
                }),
            };
            let settings = OverlaySettings {
                interface: vpn.interface.clone(),
                listen: format!("0.0.0.0:{}", vpn.listen_port),
                tun: vpn.tun,
            };
            (format!("{address}:{port}"), Some((info, settings, key)))
        }
    };
    let key = NodeKey::generate();
    let mut network = [0u8; 16];
    rand::rng().fill_bytes(&mut network);
    let mut network_key = [0u8; 32];
    rand::rng().fill_bytes(&mut network_key);
    let network_id = hex::encode(network);
    let mut shared = Shared::default();
    let mut info = node.info(&key, addr);
    info.overlay = overlay.as_ref().map(|(info, _, _)| info.clone());
    shared.peers.insert(key.id(), info);
    write(
        &options.node,
        &key,
        Joined {
            network_id: network_id.clone(),
            owner_username: owner,
            shared,
            network_key,
        },
        overlay.map(|(_, settings, key)| (settings, key)),
    )?;
    Ok((network_id, key.id()))
}

/// Redeems an invite and writes this node's state. Returns the network id and node id.
pub(crate) async fn join(options: JoinOptions) -> anyhow::Result<(String, NodeId)> {
    let node = checked(&options.node)?;
    let link = Link::parse(&options.link).context("--join")?;
    let key = NodeKey::generate();
    let vpn = &options.node.overlay;
    let (info, transport, overlay) = match (&link.overlay, vpn.mode) {
        (None, Some(VpnMode::Hub | VpnMode::Client)) => bail!(
            "--vpn-mode: this network has no overlay (the invite names no hub); join without --vpn-mode"
        ),
        (None, _) => {
            let addr = node.public_addr("join")?.to_string();
            (node.info(&key, addr), HttpTransport::new(None), None)
        }
        (Some(_), Some(VpnMode::None)) => bail!(
            "--vpn-mode none: this network's nodes talk only inside its overlay; join as a client"
        ),
        (Some(_), Some(VpnMode::Hub)) => {
            bail!("--vpn-mode hub: a network has one hub, made by `init`; join as a client")
        }
        (Some(enroll), _) => {
            let wireguard = PrivateKey::generate();
            let address = vpn.address.unwrap_or(enroll.address);
            let port = split_host_port(&link.seed).1;
            let mut info = node.info(&key, format!("{address}:{port}"));
            info.overlay = Some(OverlayInfo {
                public_key: *wireguard.public_key().as_bytes(),
                address,
                hub: None,
            });
            let route = enrollment_overlay(&link, vpn).await?;
            let settings = OverlaySettings {
                interface: vpn.interface.clone(),
                listen: "0.0.0.0:0".into(),
                tun: vpn.tun,
            };
            (
                info,
                HttpTransport::new(Some(route)),
                Some((settings, wireguard)),
            )
        }
    };
    let hello = Hello {
        name: info.name.to_string(),
        addr: info.addr.clone(),
        public_key: info.public_key,
        priority: info.priority,
        bot: info.bot,
        overlay: info.overlay.clone(),
    };
    let welcome = redeem(&transport, &link, hello, options.attempts).await?;
    if welcome.shared.peers.get(&key.id()) != Some(&info) {
        bail!("the seed accepted the join but did not list this node; try again");
    }
    write(
        &options.node,
        &key,
        Joined {
            network_id: hex::encode(welcome.network_id),
            owner_username: welcome.owner_username,
            shared: welcome.shared,
            network_key: welcome.network_key,
        },
        overlay,
    )?;
    Ok((hex::encode(welcome.network_id), key.id()))
}

/// A one-peer overlay to the hub with the invite's enrollment key, on the address it holds:
/// just long enough to send the join request through the tunnel.
async fn enrollment_overlay(link: &Link, vpn: &OverlayOptions) -> anyhow::Result<OverlayRoute> {
    let Some(enroll) = &link.overlay else {
        bail!("the invite names no hub");
    };
    let network = Ipv4Net::new(enroll.address, enroll.prefix_len)
        .context("the invite's addr= prefix is not valid")?
        .trunc();
    let hub_key = match &vpn.hub_public_key {
        Some(text) => PublicKey::from_base64(text).context("--vpn-hub-public-key")?,
        None => PublicKey::from_bytes(enroll.hub_public_key),
    };
    let endpoint_text = vpn.hub_endpoint.as_deref().unwrap_or(&enroll.hub_endpoint);
    let endpoint = tokio::net::lookup_host(endpoint_text)
        .await
        .with_context(|| format!("cannot resolve the hub's endpoint {endpoint_text}"))?
        .find(std::net::SocketAddr::is_ipv4)
        .with_context(|| format!("the hub's endpoint {endpoint_text} has no IPv4 address"))?;
    let key = invite::invite_key(&link.token);
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .context("Failed to bind a UDP socket for the overlay")?;
    let (overlay, runner) = constella_overlay::new(
        constella_overlay::OverlayConfig {
            private_key: PrivateKey::from_bytes(invite::enrollment_secret(&key)),
            address: enroll.address,
            network,
            peers: vec![PeerConfig {
                public_key: hub_key,
                allowed_ips: vpn.allowed_ips.clone().unwrap_or_else(|| vec![network]),
                endpoint: Some(endpoint),
                persistent_keepalive: Some(super::overlay::KEEPALIVE),
            }],
        },
        socket,
    )?;
    // The runner ends with the process: `join` exits once the state is written.
    tokio::spawn(runner.run());
    Ok(OverlayRoute { overlay, network })
}

fn split_host_port(addr: &str) -> (&str, &str) {
    addr.rsplit_once(':').unwrap_or((addr, "7300"))
}

struct Checked<'a> {
    options: &'a NodeOptions,
}

impl Checked<'_> {
    fn info(&self, key: &NodeKey, addr: String) -> PeerInfo {
        PeerInfo {
            name: self.options.name.clone(),
            addr,
            public_key: key.public(),
            priority: self.options.priority,
            bot: self
                .options
                .bot_token
                .as_deref()
                .is_some_and(|t| !t.is_empty()),
            overlay: None,
        }
    }

    fn public_addr(&self, command: &str) -> anyhow::Result<&str> {
        self.options.public_addr.as_deref().with_context(|| {
            format!("--public-addr is needed for `{command}` in a network without an overlay")
        })
    }
}

fn checked(options: &NodeOptions) -> anyhow::Result<Checked<'_>> {
    if let Some(public_addr) = &options.public_addr {
        let port = public_addr
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0);
        if port.is_none() {
            bail!("--public-addr: {public_addr:?} is not HOST:PORT");
        }
    }
    if let Some(listen) = &options.listen
        && listen.parse::<std::net::SocketAddr>().is_err()
    {
        bail!("--listen: {listen:?} is not IP:PORT");
    }
    if netstate::exists(&options.state_dir) {
        bail!(
            "{} already belongs to a network; use another --state-dir",
            options.state_dir.display()
        );
    }
    Ok(Checked { options })
}

/// What the network told (or, for `init`, is) a new node.
struct Joined {
    network_id: String,
    owner_username: String,
    shared: Shared,
    network_key: [u8; 32],
}

fn write(
    options: &NodeOptions,
    key: &NodeKey,
    joined: Joined,
    overlay: Option<(OverlaySettings, PrivateKey)>,
) -> anyhow::Result<()> {
    let own_addr = joined
        .shared
        .peers
        .get(&key.id())
        .map(|p| p.addr.clone())
        .unwrap_or_default();
    let listen = match (&overlay, &options.listen) {
        // On the overlay the cluster listens on its overlay address and nowhere else.
        (Some(_), _) => own_addr,
        (None, Some(listen)) => listen.clone(),
        (None, None) => format!("0.0.0.0:{}", split_host_port(&own_addr).1),
    };
    let seen = joined
        .shared
        .peers
        .keys()
        .map(|id| (*id, Seen::default()))
        .collect();
    let (settings, wireguard_key) = match overlay {
        Some((settings, key)) => (Some(settings), Some(key.to_bytes())),
        None => (None, None),
    };
    let state = NetworkState {
        network_id: joined.network_id,
        owner_username: joined.owner_username,
        name: options.name.clone(),
        node_id: key.id(),
        listen,
        peers: (joined.shared.peers, seen),
        removed: joined.shared.removed,
        bot_lease: joined.shared.bot_lease,
        invites: joined.shared.invites,
        devices: joined.shared.devices,
        replay_floor: BTreeMap::new(),
        counter_reserved: 0,
        overlay: settings,
    };
    let secrets = Secrets {
        node_key: key.seed(),
        network_key: joined.network_key,
        bot_token: options.bot_token.clone().filter(|t| !t.is_empty()),
        wireguard_key,
    };
    netstate::create(&options.state_dir, &state, &secrets)
}

/// x25519-dalek takes a rand_core 0.6 RNG; the OS RNG through its own `getrandom` is that.
pub(super) fn rand_core_compat() -> impl rand_core06::CryptoRng + rand_core06::RngCore {
    rand_core06::OsRng
}

/// Joins through a seed: proves the invite and returns the network's state for this node.
async fn redeem(
    transport: &dyn Transport,
    link: &invite::Link,
    hello: Hello,
    attempts: u32,
) -> anyhow::Result<Welcome> {
    let key = invite::invite_key(&link.token);
    let ephemeral = x25519_dalek::StaticSecret::random_from_rng(rand_core_compat());
    let ephemeral_public = x25519_dalek::PublicKey::from(&ephemeral).to_bytes();
    let request = JoinRequest {
        network: link.network.0,
        invite_id: invite::invite_id(&link.token),
        ephemeral: ephemeral_public,
        sealed: invite::seal(
            &invite::request_key(&key, &ephemeral_public),
            &wire::encode(&hello),
        ),
    };
    let bytes = wire::encode(&request);
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    let answer = loop {
        match transport
            .exchange(
                &link.seed,
                JOIN_PATH,
                bytes.clone(),
                Duration::from_secs(10),
            )
            .await
        {
            Ok(answer) => break answer,
            Err(e @ (TransportError::Unreachable { .. } | TransportError::Timeout(_)))
                if attempt < attempts =>
            {
                tracing::warn!(attempt, error = %e, "seed unreachable, retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                attempt += 1;
            }
            Err(e) => anyhow::bail!(
                "cannot reach the seed {} after {attempt} attempts: {e}",
                link.seed
            ),
        }
    };
    match wire::decode::<JoinReply>(&answer) {
        Some(JoinReply::Welcome {
            ephemeral: seed_public,
            sealed,
        }) => {
            let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(seed_public));
            let welcome = invite::open(&invite::reply_key(&key, shared.as_bytes()), &sealed)
                .and_then(|plain| wire::decode::<Welcome>(&plain))
                .ok_or_else(|| anyhow::anyhow!("the seed's answer does not open with this invite: it is not a member of the network"))?;
            if welcome.network_id != link.network.0 {
                anyhow::bail!("{}", Refusal::WrongNetwork);
            }
            Ok(welcome)
        }
        Some(JoinReply::Refused(refusal)) => Err(anyhow::anyhow!("join refused: {refusal}")),
        None => anyhow::bail!("the seed {} did not answer as a Constella node", link.seed),
    }
}
