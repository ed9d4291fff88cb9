//! Cluster endpoints: the node table, invites, removal, and `/api/v1/nodes/{name}/…`, which
//! answers for any node by making the matching authenticated call to it through the cluster.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use constella_api::cluster::{InviteLink, InviteRequest, NodeRow, NodeStatus, Nodes, Throughput};

use constella_api::NodeName;
use constella_cluster::table::Liveness;

use super::{ApiError, AppState};
use crate::cluster::{self, Call, Command, Handle};

pub(super) fn handle(state: &AppState) -> Result<&Handle, ApiError> {
    state.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_network",
            "this node is not part of a network (run `constella init` or `constella join`)",
        )
    })
}

pub(super) fn gone() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "cluster_stopped",
        "the cluster task is not running",
    )
}

/// `GET /api/v1/nodes`.
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Nodes>, ApiError> {
    let table = handle(&state)?.ask(Command::Table).await.ok_or_else(gone)?;
    let leader = table
        .nodes
        .iter()
        .find(|n| n.leader)
        .map(|n| n.name.clone());
    Ok(Json(Nodes {
        network_id: table.network_id,
        owner: table.owner,
        leader,
        lease_holder: table.lease_holder,
        epoch: table.epoch,
        bot_running: table.bot_running,
        bot_fenced: table.bot_fenced,
        nodes: table
            .nodes
            .into_iter()
            .map(|n| NodeRow {
                name: n.name,
                node_id: n.node_id.to_string(),
                addr: n.addr,
                status: match n.status {
                    Liveness::Alive => NodeStatus::Alive,
                    Liveness::Down => NodeStatus::Down,
                },
                last_seen: n.last_seen,
                priority: n.priority,
                bot: n.bot,
                leader: n.leader,
                lease_holder: n.lease_holder,
                this_node: n.this_node,
            })
            .collect(),
        rejected_messages: table.rejected,
        control_bytes_sent: table.traffic_sent,
        control_bytes_received: table.traffic_received,
    }))
}

/// `POST /api/v1/cluster/invites` with `{"ttl": "15m"}`.
pub(super) async fn invite(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<InviteLink>, ApiError> {
    let body: InviteRequest = if body.is_empty() {
        InviteRequest { ttl: None }
    } else {
        ApiError::parse_body(&body)?
    };
    let ttl = match body.ttl {
        Some(text) => {
            cluster::parse_ttl(&text).map_err(|e| ApiError::bad_request(format!("ttl: {e:#}")))?
        }
        None => Duration::from_secs(900),
    };
    let made = handle(&state)?
        .ask(|reply| Command::Invite { ttl, reply })
        .await
        .ok_or_else(gone)?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "invite_failed",
                &format!("{e:#}"),
            )
        })?;
    Ok(Json(InviteLink {
        link: made.0,
        expires_at: made.1,
    }))
}

/// `DELETE /api/v1/nodes/{name}`: forget a node network-wide; its key stops being accepted.
pub(super) async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    handle(&state)?
        .ask(|reply| Command::Remove {
            name: name.clone(),
            reply,
        })
        .await
        .ok_or_else(gone)?
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "no_such_node", &e))?;
    Ok(Json(serde_json::json!({ "removed": name })))
}

/// `GET|POST /api/v1/nodes/{name}/{*rest}`: the named node's own endpoint, through the cluster.
pub(super) async fn proxy(
    State(state): State<AppState>,
    method: Method,
    Path((name, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    if method == Method::POST && rest == "speedtest" {
        return speedtest(&state, name).await;
    }
    let method = if method == Method::POST {
        cluster::Method::Post
    } else {
        cluster::Method::Get
    };
    let call = Call::from_path(method, &rest, query.as_deref().unwrap_or("")).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint on a node",
        )
    })?;
    let (status, body) = call_node(&state, name, call).await?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn call_node(state: &AppState, name: String, call: Call) -> Result<(u16, Vec<u8>), ApiError> {
    handle(state)?
        .ask(|reply| Command::Call { name, call, reply })
        .await
        .ok_or_else(gone)?
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "node_unreachable", &e))
}

/// Throughput between this node and `name`, over the cluster transport, both ways.
async fn speedtest(state: &AppState, name: String) -> Result<Response, ApiError> {
    const BYTES: u32 = constella_cluster::wire::SPEEDTEST_BYTES;
    let node =
        NodeName::from_any_case(&name).map_err(|reason| ApiError::bad_request(reason.into()))?;
    let started = Instant::now();
    call_node(
        state,
        name.clone(),
        Call::Speedtest {
            download: BYTES,
            upload: Vec::new(),
        },
    )
    .await?;
    let download = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let upload = vec![0x5A; BYTES as usize];
    call_node(
        state,
        name.clone(),
        Call::Speedtest {
            download: 0,
            upload,
        },
    )
    .await?;
    let upload = started.elapsed().as_secs_f64();
    Ok(Json(Throughput {
        node,
        bytes: BYTES,
        download_bps: f64::from(BYTES) * 8.0 / download.max(1e-6),
        upload_bps: f64::from(BYTES) * 8.0 / upload.max(1e-6),
    })
    .into_response())
}
