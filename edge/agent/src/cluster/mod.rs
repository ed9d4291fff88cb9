//! The cluster: identity, signed messages, membership, the bot lease and node-to-node calls.
//!
//! `start` loads the state directory written by `constella init`/`join`, binds the cluster
//! listener (envelopes and join requests, reachable by peers) and returns a `Handle` for the API
//! plus the loop to spawn.

mod netstate;
mod node;
mod rejections;
mod server;
mod setup;
mod transport;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

pub(crate) use constella_cluster::invite::parse_ttl;
pub(crate) use constella_cluster::wire::{Call, Method};
pub(crate) use netstate::exists;
pub(crate) use node::unix_now;
pub(crate) use node::{BotEvent, BotExit, BotTurn, Command, Event, Handle, LocalCall, Settings};
pub(crate) use setup::{InitOptions, JoinOptions, NodeOptions, init, join};

/// A started cluster: the handle, the address peers reach, and the tasks to spawn.
pub(crate) struct Started {
    pub(crate) handle: Handle,
    /// The bot turns this node is given while it holds the lease.
    pub(crate) turns: tokio::sync::watch::Receiver<Option<BotTurn>>,
    pub(crate) listen: SocketAddr,
    pub(crate) serve: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    pub(crate) run: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

pub(crate) async fn start(
    dir: &Path,
    settings: Settings,
    local: LocalCall,
) -> anyhow::Result<Started> {
    let transport = transport::HttpTransport::new();
    let traffic = transport.traffic.clone();
    let (handle, node, turns) = node::Node::open(
        dir.to_path_buf(),
        settings,
        Arc::new(transport),
        traffic.clone(),
        local,
    )?;
    let listen_text = node.listen().to_string();
    let listen: SocketAddr = listen_text.parse().with_context(|| {
        format!(
            "{}: listen: {listen_text:?} is not HOST:PORT",
            dir.join(netstate::STATE_FILE).display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("Failed to bind the cluster listener on {listen}"))?;
    let listen = listener.local_addr()?;
    let app = server::router(handle.clone(), traffic, node.screen(), node.rejections());
    let serve = Box::pin(crate::listener::serve(
        listener,
        app,
        server::LIMITS,
        "cluster",
    ));
    Ok(Started {
        handle,
        turns,
        listen,
        serve,
        run: Box::pin(node.run()),
    })
}
