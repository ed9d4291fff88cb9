//! The cluster listener's handlers. A message's fixed-size header is screened before its body
//! is read (a stranger never makes the node buffer a body), a body is read against a deadline
//! and only up to the length its header declares, large bodies draw on a shared byte budget
//! (the header is not authenticated yet, so a stranger can claim a member's id), and the bytes
//! are handed to the node loop without a copy. Join requests are small and read under a limit.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::BytesMut;
use constella_cluster::envelope::{HEADER_LEN, Rejected};
use constella_cluster::inbox::Screen;
use http_body_util::{BodyExt as _, Limited};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};

use super::node::{self, Handle};
use super::rejections::Rejections;
use super::transport::{self, Traffic};

/// The cluster listener's connection limits: a few pooled connections per peer, for networks of
/// tens of nodes; far under the usual 1,024 open files with the API's share.
pub(super) const LIMITS: crate::listener::Limits = crate::listener::Limits {
    connections: 128,
    per_source: 16,
    // Longer than the sending side keeps an idle pooled connection (see `transport`), so a
    // connection is never closed under a request that is just being sent.
    header_timeout: Duration::from_secs(20),
};

/// Time to deliver a whole message body: a speed test's 4 MB upload over a slow rural uplink.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Time to deliver a join request.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest join request (a name, an address and keys, sealed).
const MAX_JOIN: usize = 16 << 10;
/// Bodies up to this size are read without drawing on the budget: the connection caps bound them.
const SMALL_BODY: usize = 64 << 10;
/// Bytes of larger bodies buffered at once, in KiB (the semaphore's unit).
const BUDGET_KIB: usize = 16 << 10;

#[derive(Clone)]
struct ServerState {
    handle: Handle,
    traffic: Arc<Traffic>,
    screen: watch::Receiver<Screen>,
    budget: Arc<Semaphore>,
    rejections: Arc<Rejections>,
}

/// The router for `transport::MESSAGE_PATH` and `transport::JOIN_PATH`.
pub(super) fn router(
    handle: Handle,
    traffic: Arc<Traffic>,
    screen: watch::Receiver<Screen>,
    rejections: Arc<Rejections>,
) -> Router {
    Router::new()
        .route(transport::MESSAGE_PATH, post(message))
        .route(transport::JOIN_PATH, post(join_request))
        .with_state(ServerState {
            handle,
            traffic,
            screen,
            budget: Arc::new(Semaphore::new(BUDGET_KIB)),
            rejections,
        })
}

/// Why a message body was not read.
enum Unread {
    Refused(Rejected),
    /// The byte budget is spent; the sender tries again on its next round.
    Busy,
    TimedOut,
}

async fn message(State(state): State<ServerState>, request: Request) -> Response {
    let read = tokio::time::timeout(
        BODY_TIMEOUT,
        read_screened(request.into_body(), &state.screen, &state.budget),
    )
    .await
    .unwrap_or(Err(Unread::TimedOut));
    let (bytes, _permit) = match read {
        Ok(read) => read,
        Err(Unread::Refused(why)) => {
            state.rejections.note(why.code(), None, &why);
            return StatusCode::FORBIDDEN.into_response();
        }
        Err(Unread::Busy) => {
            state.rejections.note("busy", None, &"message budget spent");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Err(Unread::TimedOut) => {
            state
                .rejections
                .note("slow_body", None, &"body not sent in time");
            return StatusCode::REQUEST_TIMEOUT.into_response();
        }
    };
    add(&state.traffic.received, bytes.len());
    let (reply, answer) = oneshot::channel();
    state
        .handle
        .deliver(node::Event::Inbound { bytes, reply })
        .await;
    match answer.await {
        Ok(Some(bytes)) => {
            add(&state.traffic.sent, bytes.len());
            bytes.into_response()
        }
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

/// Reads one envelope: the header first, screened; then exactly the length it declares.
async fn read_screened(
    mut body: Body,
    screen: &watch::Receiver<Screen>,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Unread> {
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    let mut declared: Option<usize> = None;
    let mut permit = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(Unread::Refused(Rejected::Malformed("body broke off")));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let room = declared.unwrap_or(HEADER_LEN) - buf.len();
        let (now, later) = data.split_at(data.len().min(room));
        buf.extend_from_slice(now);
        if declared.is_none() && buf.len() == HEADER_LEN {
            let total = screen.borrow().check(&buf).map_err(Unread::Refused)?;
            if total > SMALL_BODY {
                let kib = u32::try_from(total.div_ceil(1024)).map_err(|_| Unread::Busy)?;
                permit = Some(
                    budget
                        .clone()
                        .try_acquire_many_owned(kib)
                        .map_err(|_| Unread::Busy)?,
                );
            }
            buf.reserve(total - buf.len());
            declared = Some(total);
            buf.extend_from_slice(&later[..later.len().min(total - HEADER_LEN)]);
            if later.len() > total - HEADER_LEN {
                return Err(Unread::Refused(Rejected::Malformed("longer than declared")));
            }
        } else if !later.is_empty() {
            return Err(Unread::Refused(Rejected::Malformed("longer than declared")));
        }
    }
    match declared {
        Some(total) if buf.len() == total => Ok((buf.freeze(), permit)),
        _ => Err(Unread::Refused(Rejected::Malformed(
            "shorter than declared",
        ))),
    }
}

async fn join_request(State(state): State<ServerState>, body: Body) -> Response {
    let read = tokio::time::timeout(JOIN_TIMEOUT, Limited::new(body, MAX_JOIN).collect()).await;
    let bytes = match read {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            state
                .rejections
                .note("bad_join", None, &"join request too long or broken");
            return StatusCode::PAYLOAD_TOO_LARGE.into_response();
        }
        Err(_) => {
            state
                .rejections
                .note("slow_body", None, &"join request not sent in time");
            return StatusCode::REQUEST_TIMEOUT.into_response();
        }
    };
    let (reply, answer) = oneshot::channel();
    state
        .handle
        .deliver(node::Event::Join { bytes, reply })
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
