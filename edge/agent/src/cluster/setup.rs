//! `constella init` and `constella join`: create a node's state directory, either as the first
//! node of a new network or by redeeming an invite at any live member.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use rand::RngCore as _;

use super::identity::{NodeId, NodeKey};
use super::invite::Link;
use super::netstate::{self, NetworkState, PeerInfo, Secrets, Seen, Shared};
use super::transport::HttpTransport;
use super::wire::Hello;

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
    let welcome = super::node::join(&transport, &link, hello, options.attempts).await?;
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
    if name.is_empty()
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("--name: {name:?} must be 1-32 letters, digits, '-', '_' or '.'");
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
