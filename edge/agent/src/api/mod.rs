//! The agent's HTTP API (axum): the only module that knows HTTP and JSON. Everything but `/health`
//! needs `Authorization: Bearer <token>`; every error is JSON `{"error": {"code", "message"}}`.

mod dto;
mod history;
#[cfg(feature = "fuzzing")]
pub(crate) use history::parse_queries;
mod nodes;
mod overlay;
mod prometheus;
mod speedtest;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use constella_api::devices::{DeviceDetail, DeviceList, ResetDone};
use constella_api::{ErrorBody, ErrorDetail};
use serde::Deserialize;

use crate::devices::Registry;
use crate::outcome::ErrorClass;
use crate::recorder::History;

#[derive(Clone)]
struct AppState {
    registry: Registry,
    history: History,
    token: Arc<str>,
    started: std::time::Instant,
    speedtest: Arc<crate::speedtest::SpeedtestConfig>,
    cluster: Option<crate::cluster::Handle>,
    overlay: Option<crate::cluster::OverlayView>,
}

/// The API's connection limits: room for the desktop app, the CLI, Prometheus and a few
/// browsers; far under the usual 1,024 open files with the cluster listener's share.
const LIMITS: crate::listener::Limits = crate::listener::Limits {
    connections: 128,
    per_source: 32,
    header_timeout: Duration::from_secs(30),
};

/// Binds `addr` and serves until the task is aborted.
pub(crate) async fn bind(
    addr: SocketAddr,
    registry: Registry,
    history: History,
    speedtest: crate::speedtest::SpeedtestConfig,
    token: String,
    cluster: Option<crate::cluster::Handle>,
    overlay: Option<crate::cluster::OverlayView>,
) -> anyhow::Result<(SocketAddr, Router, impl Future<Output = ()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("Failed to bind the API on {addr}"))?;
    let local = listener.local_addr()?;
    let app = router(AppState {
        registry,
        history,
        token: token.into(),
        started: std::time::Instant::now(),
        speedtest: Arc::new(speedtest),
        cluster,
        overlay,
    });
    let router = app.clone();
    let serve = crate::listener::serve(listener, app, LIMITS, "api");
    Ok((local, router, serve))
}

/// Serves the same API on the node's overlay address (same token, same limits), so the bot,
/// the desktop app and a standard WireGuard device reach it through the tunnel.
pub(crate) fn serve_on_overlay(
    listener: constella_overlay::TcpListener,
    app: Router,
) -> impl Future<Output = ()> {
    crate::listener::serve(listener, app, LIMITS, "api-overlay")
}

fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(device))
        .route("/api/v1/devices/{id}/reset-alarms", post(reset_alarms))
        .route("/api/v1/devices/{id}/history", get(history::device_history))
        .route("/api/v1/node", get(history::node))
        .route("/api/v1/node/metrics", get(history::node_metrics))
        .route("/api/v1/events", get(history::events))
        .route("/metrics", get(prometheus::metrics))
        .route("/api/v1/node/speedtest", post(speedtest::run))
        .route("/api/v1/speedtest/blob", get(speedtest::blob))
        .route("/api/v1/speedtest/sink", post(speedtest::sink))
        .route("/api/v1/nodes", get(nodes::list))
        .route("/api/v1/nodes/{name}", axum::routing::delete(nodes::remove))
        .route(
            "/api/v1/nodes/{name}/{*rest}",
            get(nodes::proxy).post(nodes::proxy),
        )
        .route("/api/v1/cluster/invites", post(nodes::invite))
        .route("/api/v1/overlay", get(overlay::status))
        .route("/api/v1/overlay/ping", post(overlay::ping))
        .route("/api/v1/overlay/devices", post(overlay::add_device))
        .route(
            "/api/v1/overlay/devices/{name}",
            axum::routing::delete(overlay::remove_device),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .merge(api)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.trim().as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid bearer token",
        )
        .into_response(),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing `Authorization: Bearer <token>` (see `constella token`)",
        )
        .into_response(),
    }
}

/// Compares without an early exit, so response time does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health() -> Json<constella_api::devices::Health> {
    Json(constella_api::devices::Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn list_devices(State(state): State<AppState>) -> Json<DeviceList> {
    Json(DeviceList {
        devices: state.registry.snapshot().iter().map(dto::summary).collect(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceQuery {
    lang: Option<String>,
}

async fn device(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeviceQuery>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let lang = match query.lang.as_deref() {
        None | Some("en") => dto::Lang::En,
        Some("ru") => dto::Lang::Ru,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "lang `{other}` is not `en` or `ru`"
            )));
        }
    };
    let (_, device) = find(&state, &id)?;
    Ok(Json(dto::detail(&device, lang)))
}

async fn reset_alarms(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ResetDone>, ApiError> {
    if !body.is_empty()
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body).is_err()
    {
        return Err(ApiError::bad_request(
            "the body must be empty or a JSON object".into(),
        ));
    }
    let (index, device) = find(&state, &id)?;
    match tokio::time::timeout(Duration::from_secs(30), state.registry.reset_alarms(index)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "bus_busy",
            "the bus did not get to the write within 30 s",
        )),
        Ok(Ok(())) => Ok(Json(ResetDone {
            device: device.name,
            reset: true,
        })),
        Ok(Err(error)) => {
            let code = match error.class() {
                ErrorClass::Exception => "device_refused",
                _ => "device_unreachable",
            };
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                code,
                &format!("reset alarms failed: {error}"),
            ))
        }
    }
}

fn find(state: &AppState, id: &str) -> Result<(usize, crate::devices::DeviceState), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        return Err(ApiError::bad_request(format!(
            "`{id}` is not a device id (a–z, 0–9, `-`, `_`)"
        )));
    }
    state.registry.find(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_device",
            &format!("no device `{id}`"),
        )
    })
}

/// `Query<T>` whose rejection is a JSON 400 like every other API error.
struct ApiQuery<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// Runs `f` on the store on the blocking pool: SQLite calls block.
async fn with_store<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut crate::store::Store) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.history.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let store = store.as_mut().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "history_unavailable",
                "the history store cannot be opened (see the agent's log); it is retried every flush interval",
            )
        })?;
        f(store).map_err(|e| ApiError::internal(&e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(&e.to_string()))?
}

/// A JSON error response.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: &str) -> ApiError {
        ApiError {
            status,
            code,
            message: message.to_string(),
        }
    }

    fn internal(message: &str) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    fn bad_request(message: String) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message,
        }
    }

    /// A request body as its API shape, or a 400 saying why not.
    fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
