//! `constella init` and `constella join`: create a node's state directory, either as the first
//! node of a new network or by redeeming an invite at any live member.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rand::RngCore as _;

use constella_cluster::identity::{NodeId, NodeKey};
use constella_cluster::invite::{self, Link};
use constella_cluster::shared::{PeerInfo, Shared};
use constella_cluster::wire::{self, Hello, JoinReply, JoinRequest, Refusal, Welcome};

use super::netstate::{self, NetworkState, Secrets, Seen};
use super::transport::{HttpTransport, JOIN_PATH, Transport, TransportError};

/// What every new node states about itself.
pub(crate) struct NodeOptions {
    pub(crate) name: String,
    pub(crate) public_addr: String,
    pub(crate) listen: Option<String>,
    pub(crate) bot_token: Option<String>,
    pub(crate) priority: u32,
    pub(crate) state_dir: PathBuf,
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
    let key = NodeKey::generate();
    let mut network = [0u8; 16];
    rand::rng().fill_bytes(&mut network);
    let mut network_key = [0u8; 32];
    rand::rng().fill_bytes(&mut network_key);
    let network_id = hex::encode(network);
    let mut shared = Shared::default();
    shared.peers.insert(key.id(), node.info(&key));
    write(
        &options.node,
        &key,
        network_id.clone(),
        owner,
        shared,
        network_key,
    )?;
    Ok((network_id, key.id()))
}

/// Redeems an invite and writes this node's state. Returns the network id and node id.
pub(crate) async fn join(options: JoinOptions) -> anyhow::Result<(String, NodeId)> {
    let node = checked(&options.node)?;
    let link = Link::parse(&options.link).context("--join")?;
    let key = NodeKey::generate();
    let info = node.info(&key);
    let hello = Hello {
        name: info.name.clone(),
        addr: info.addr.clone(),
        public_key: info.public_key,
        priority: info.priority,
        bot: info.bot,
    };
    let transport = HttpTransport::new();
    let welcome = redeem(&transport, &link, hello, options.attempts).await?;
    if welcome.shared.peers.get(&key.id()) != Some(&info) {
        bail!("the seed accepted the join but did not list this node; try again");
    }
    write(
        &options.node,
        &key,
        hex::encode(welcome.network_id),
        welcome.owner_username,
        welcome.shared,
        welcome.network_key,
    )?;
    Ok((hex::encode(welcome.network_id), key.id()))
}

struct Checked<'a> {
    options: &'a NodeOptions,
}

impl Checked<'_> {
    fn info(&self, key: &NodeKey) -> PeerInfo {
        PeerInfo {
            name: self.options.name.clone(),
            addr: self.options.public_addr.clone(),
            public_key: key.public(),
            priority: self.options.priority,
            bot: self
                .options
                .bot_token
                .as_deref()
                .is_some_and(|t| !t.is_empty()),
        }
    }
}

fn checked(options: &NodeOptions) -> anyhow::Result<Checked<'_>> {
    let name = &options.name;
    if let Err(reason) = constella_cluster::names::check(name) {
        bail!("--name: {name:?}: {reason}");
    }
    let port = options
        .public_addr
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.is_empty()).then_some(port))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0);
    if port.is_none() {
        bail!("--public-addr: {:?} is not HOST:PORT", options.public_addr);
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

fn write(
    options: &NodeOptions,
    key: &NodeKey,
    network_id: String,
    owner_username: String,
    shared: Shared,
    network_key: [u8; 32],
) -> anyhow::Result<()> {
    let port = options
        .public_addr
        .rsplit_once(':')
        .map(|(_, p)| p)
        .unwrap_or("7300");
    let listen = options
        .listen
        .clone()
        .unwrap_or_else(|| format!("0.0.0.0:{port}"));
    let seen = shared
        .peers
        .keys()
        .map(|id| (*id, Seen::default()))
        .collect();
    let state = NetworkState {
        network_id,
        owner_username,
        name: options.name.clone(),
        node_id: key.id(),
        listen,
        peers: (shared.peers, seen),
        removed: shared.removed,
        bot_lease: shared.bot_lease,
        invites: shared.invites,
        replay_floor: BTreeMap::new(),
        counter_reserved: 0,
    };
    let secrets = Secrets {
        node_key: key.seed(),
        network_key,
        bot_token: options.bot_token.clone().filter(|t| !t.is_empty()),
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
