//! The cluster: identity, signed messages, membership, the bot lease and node-to-node calls.
//!
//! `start` loads the state directory written by `constella init`/`join`, binds the cluster
//! listener (envelopes and join requests, reachable by peers) and returns a `Handle` for the API
//! plus the loop to spawn.

mod netstate;
mod node;
mod setup;
mod transport;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use tokio::sync::oneshot;

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
    let app = Router::new()
        .route(transport::MESSAGE_PATH, post(message))
        .route(transport::JOIN_PATH, post(join_request))
        .layer(DefaultBodyLimit::max(
            constella_cluster::envelope::MAX_BODY + 4096,
        ))
        .with_state(ServerState {
            handle: handle.clone(),
            traffic,
        });
    let serve = Box::pin(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "cluster listener stopped");
        }
    });
    Ok(Started {
        handle,
        turns,
        listen,
        serve,
        run: Box::pin(node.run()),
    })
}

#[derive(Clone)]
struct ServerState {
    handle: Handle,
    traffic: Arc<transport::Traffic>,
}

async fn message(State(state): State<ServerState>, body: Bytes) -> axum::response::Response {
    add(&state.traffic.received, body.len());
    let (reply, answer) = oneshot::channel();
    state
        .handle
        .deliver(node::Event::Inbound {
            bytes: body.to_vec(),
            reply,
        })
        .await;
    match answer.await {
        Ok(Some(bytes)) => {
            add(&state.traffic.sent, bytes.len());
            bytes.into_response()
        }
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

async fn join_request(State(state): State<ServerState>, body: Bytes) -> axum::response::Response {
    let (reply, answer) = oneshot::channel();
    state
        .handle
        .deliver(node::Event::Join {
            bytes: body.to_vec(),
            reply,
        })
        .await;
    match answer.await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Served exchanges count toward the same traffic totals as the ones this node starts.
fn add(counter: &std::sync::atomic::AtomicU64, bytes: usize) {
    counter.fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
}
