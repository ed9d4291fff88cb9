//! The cluster: identity, signed messages, membership, the bot lease and node-to-node calls.
//!
//! `start` loads the state directory written by `constella init`/`join`, starts the WireGuard
//! overlay when the network has one, binds the cluster listener (envelopes and join requests,
//! reachable by peers: on the overlay address only when there is an overlay) and returns a
//! `Handle` for the API plus the tasks to spawn.

mod datagrams;
mod netstate;
mod node;
mod overlay;
mod rejections;
mod server;
mod setup;
mod transport;

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::Context as _;

pub(crate) use constella_cluster::invite::parse_ttl;
pub(crate) use constella_cluster::wire::{Call, Method};
pub(crate) use netstate::exists;
pub(crate) use node::unix_now;
pub(crate) use node::{
    BotEvent, BotExit, BotTurn, Command, DeviceGrant, Event, Handle, LocalCall, Profile, Settings,
};
pub(crate) use overlay::{KEEPALIVE, View as OverlayView};
pub(crate) use setup::{
    InitOptions, JoinOptions, NodeOptions, OverlayOptions, VpnMode, init, join,
};
pub(crate) use transport::{Connector, OverlayRoute};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A started cluster: the handle, the address peers reach, and the tasks to spawn.
pub(crate) struct Started {
    pub(crate) handle: Handle,
    /// The bot turns this node is given while it holds the lease.
    pub(crate) turns: tokio::sync::watch::Receiver<Option<BotTurn>>,
    pub(crate) listen: SocketAddr,
    pub(crate) serve: Task,
    pub(crate) run: Task,
    /// The overlay, when the network has one, and its tasks (the runner, the peer keeper).
    pub(crate) overlay: Option<(OverlayView, Vec<Task>)>,
}

pub(crate) async fn start(
    dir: &Path,
    settings: Settings,
    local: LocalCall,
) -> anyhow::Result<Started> {
    let overlay = match overlay_place(dir)? {
        Some(place) => Some(overlay::start(place).await?),
        None => None,
    };
    let transport =
        transport::HttpTransport::new(overlay.as_ref().map(|started| transport::OverlayRoute {
            overlay: started.overlay.clone(),
            network: started.network,
        }));
    let traffic = transport.traffic.clone();
    let (handle, node, turns) = node::Node::open(
        dir.to_path_buf(),
        settings,
        Arc::new(transport),
        traffic.clone(),
        local,
        overlay.as_ref().map(|started| &started.overlay),
    )?;
    let listen = node.listen();
    let app = server::router(handle.clone(), traffic, node.screen(), node.rejections());
    let (listen, serve, overlay): (SocketAddr, Task, _) = match overlay {
        // With an overlay the cluster answers only inside it: no cluster port faces the
        // underlay, and every message has come through a WireGuard peer.
        Some(started) => {
            let listener = started.overlay.listen(listen.port()).with_context(|| {
                format!("Failed to listen on the overlay, port {}", listen.port())
            })?;
            let listen = listener.local_addr();
            let serve = Box::pin(crate::listener::serve(
                listener,
                app,
                server::LIMITS,
                "cluster",
            ));
            let view = OverlayView {
                overlay: started.overlay.clone(),
                interface: started.interface,
                network: started.network,
                listen_port: started.listen_port,
                me: node.id(),
                table: node.member_table(),
            };
            let overlay = started.overlay;
            let runner = started.runner;
            let tasks: Vec<Task> = vec![
                Box::pin(async move {
                    if let Err(error) = runner.run().await {
                        tracing::error!(%error, "the overlay's UDP socket failed; the overlay is down");
                    }
                }),
                Box::pin(overlay::keep_peers(
                    overlay.clone(),
                    node.id(),
                    node.member_table(),
                )),
            ];
            (listen, serve, Some((view, tasks)))
        }
        None => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("Failed to bind the cluster listener on {listen}"))?;
            let listen = listener.local_addr()?;
            let serve = Box::pin(crate::listener::serve(
                listener,
                app,
                server::LIMITS,
                "cluster",
            ));
            (listen, serve, None)
        }
    };
    Ok(Started {
        handle,
        turns,
        listen,
        serve,
        run: Box::pin(node.run()),
        overlay,
    })
}

/// This node's overlay place from its state files, if the network has an overlay.
fn overlay_place(dir: &Path) -> anyhow::Result<Option<overlay::Place>> {
    let (state, secrets) = netstate::load(dir)?;
    let Some(settings) = &state.overlay else {
        return Ok(None);
    };
    let file = dir.join(netstate::STATE_FILE);
    let shared = state.shared();
    let mine = shared
        .peers
        .get(&state.node_id)
        .and_then(|p| p.overlay.as_ref())
        .with_context(|| {
            format!(
                "{}: overlay is set, but this node's peer row has no overlay place",
                file.display()
            )
        })?;
    let prefix_len = match &mine.hub {
        Some(hub) => hub.prefix_len,
        None => shared
            .hub()
            .map(|(_, _, hub)| hub.prefix_len)
            .with_context(|| {
                format!(
                    "{}: the overlay has no hub in the peer table",
                    file.display()
                )
            })?,
    };
    let network = ipnet::Ipv4Net::new(mine.address, prefix_len)
        .with_context(|| {
            format!(
                "{}: overlay prefix /{prefix_len} is not valid",
                file.display()
            )
        })?
        .trunc();
    let key = secrets.wireguard_key.with_context(|| {
        format!(
            "{}: wireguard_key is missing, but the node is on the overlay",
            dir.join(netstate::SECRETS_FILE).display()
        )
    })?;
    Ok(Some(overlay::Place {
        key: constella_overlay::PrivateKey::from_bytes(key),
        address: mine.address,
        network,
        listen: settings.listen.clone(),
        interface: settings.interface.clone(),
        tun: settings.tun,
    }))
}
