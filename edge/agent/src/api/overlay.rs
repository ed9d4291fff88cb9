//! Overlay endpoints: `GET /api/v1/overlay` (the facts `constella wg show` prints), one ping
//! through the tunnel per `POST /api/v1/overlay/ping`, and the standard WireGuard devices.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use constella_api::NodeName;
use constella_api::overlay::{AddDevice, DeviceAdded, OverlayStatus, PingReply, PingRequest};
use constella_overlay::PublicKey;

use super::nodes::{gone, handle};
use super::{ApiError, AppState};
use crate::cluster::{Command, DeviceGrant, KEEPALIVE, OverlayView};

fn view(state: &AppState) -> Result<&OverlayView, ApiError> {
    state.overlay.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no_overlay",
            "this node is not on a WireGuard overlay (VPN_MODE=none)",
        )
    })
}

/// `GET /api/v1/overlay`.
pub(super) async fn status(State(state): State<AppState>) -> Result<Json<OverlayStatus>, ApiError> {
    Ok(Json(view(&state)?.status()))
}

/// `POST /api/v1/overlay/ping` with `{"address": "10.42.0.3", "sequence": 1}`.
pub(super) async fn ping(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<PingReply>, ApiError> {
    let request: PingRequest = ApiError::parse_body(&body)?;
    let rtt = view(&state)?
        .ping(request.address, request.sequence)
        .await
        .map_err(|e| ApiError::new(StatusCode::GATEWAY_TIMEOUT, "no_echo", &e.to_string()))?;
    Ok(Json(PingReply {
        rtt_ms: rtt.as_secs_f64() * 1e3,
    }))
}

/// `POST /api/v1/overlay/devices` with `{"name": "phone", "public_key": "<base64>"}`.
pub(super) async fn add_device(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<DeviceAdded>, ApiError> {
    let request: AddDevice = ApiError::parse_body(&body)?;
    let name: NodeName = request.name.parse().map_err(|reason: &str| {
        ApiError::bad_request(reason.replace("node name", "device name"))
    })?;
    let key = PublicKey::from_base64(&request.public_key)
        .map_err(|e| ApiError::bad_request(format!("public_key: {e}")))?;
    let grant: DeviceGrant = handle(&state)?
        .ask(|reply| Command::AddDevice {
            name: request.name.clone(),
            public_key: *key.as_bytes(),
            reply,
        })
        .await
        .ok_or_else(gone)?
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "device_refused", &e))?;
    Ok(Json(DeviceAdded {
        name,
        address: grant.address,
        network: grant.network.to_string(),
        hub_public_key: PublicKey::from_bytes(grant.hub_public_key).to_string(),
        hub_endpoint: grant.hub_endpoint,
        persistent_keepalive_secs: KEEPALIVE,
    }))
}

/// `DELETE /api/v1/overlay/devices/{name}`.
pub(super) async fn remove_device(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    handle(&state)?
        .ask(|reply| Command::RemoveDevice {
            name: name.clone(),
            reply,
        })
        .await
        .ok_or_else(gone)?
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "no_such_device", &e))?;
    Ok(Json(serde_json::json!({ "removed": name })))
}
