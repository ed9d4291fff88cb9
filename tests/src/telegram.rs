//! A local HTTP server speaking the parts of the Telegram Bot API the bot uses (`getUpdates`
//! and `sendMessage`), with Telegram's semantics where they matter for correctness:
//! - an update is confirmed, and never handed out again, once `getUpdates` is called with an
//!   offset above its id;
//! - a `getUpdates` call terminates the long poll already waiting with HTTP 409 "Conflict:
//!   terminated by other getUpdates request";
//! - requests with another token get 401.
//!
//! The test side injects user messages and reads every reply and poll, each with the address
//! of the node that made it.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::post};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};

const CONFLICT: &str = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running";

/// One `sendMessage` the server received.
#[derive(Clone, Debug)]
pub struct Sent {
    pub from: IpAddr,
    pub chat_id: i64,
    pub text: String,
    pub reply_to: Option<i64>,
    pub at: Instant,
}

/// One `getUpdates` call and how it ended.
#[derive(Clone, Debug)]
pub struct Poll {
    pub from: IpAddr,
    pub at: Instant,
    pub offset: i64,
    /// True when a later poller terminated it with 409.
    pub terminated: bool,
}

struct Inner {
    next_update: i64,
    next_message: i64,
    queue: VecDeque<Value>,
    /// The long poll waiting now: its serial and how to terminate it.
    waiting: Option<(usize, oneshot::Sender<()>)>,
    polls: Vec<Poll>,
    sent: Vec<Sent>,
}

struct Shared {
    token: String,
    inner: Mutex<Inner>,
    updates: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running fake; it serves until dropped.
pub struct FakeTelegram {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Runtime,
}

/// The owner's chat: private chats have the user's id.
pub const OWNER_CHAT: i64 = 4242;

impl FakeTelegram {
    /// Serves the Bot API for `token` on `listener`.
    pub fn serve(listener: std::net::TcpListener, token: &str) -> FakeTelegram {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            token: token.to_string(),
            inner: Mutex::new(Inner {
                next_update: 100_000,
                next_message: 1,
                queue: VecDeque::new(),
                waiting: None,
                polls: Vec::new(),
                sent: Vec::new(),
            }),
            updates: watch::channel(0).0,
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let app = Router::new()
            .route("/{bot}/{method}", post(method))
            .with_state(shared.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        FakeTelegram {
            addr,
            shared,
            runtime,
        }
    }

    /// The URL to give the bot (`[cluster] bot_api`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A user writes `text` to the bot; returns the message id.
    pub fn send(&self, username: &str, text: &str) -> i64 {
        let mut inner = self.shared.lock();
        let (update_id, message_id) = (inner.next_update, inner.next_message);
        inner.next_update += 1;
        inner.next_message += 1;
        let user_id = if username == "farm_owner" {
            OWNER_CHAT
        } else {
            9000 + message_id
        };
        let date = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let user =
            json!({"id": user_id, "is_bot": false, "first_name": username, "username": username});
        inner.queue.push_back(json!({
            "update_id": update_id,
            "message": {
                "message_id": message_id,
                "date": date,
                "chat": {"id": user_id, "type": "private", "first_name": username, "username": username},
                "from": user,
                "text": text,
            }
        }));
        drop(inner);
        self.shared.updates.send_modify(|n| *n += 1);
        message_id
    }

    /// Every reply to message `id`.
    pub fn replies_to(&self, id: i64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.reply_to == Some(id))
            .collect()
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.shared.lock().sent.clone()
    }

    pub fn polls(&self) -> Vec<Poll> {
        self.shared.lock().polls.clone()
    }

    /// Polls as another program using the same token would, for up to `timeout`. Returns true
    /// if that poll itself was terminated by a later one (409) rather than timing out.
    pub fn poll_as_intruder(&self, timeout: Duration) -> bool {
        let shared = self.shared.clone();
        let from = IpAddr::from([192, 0, 2, 1]);
        let (status, _) = self
            .runtime
            .block_on(get_updates(&shared, from, 0, timeout.as_secs()));
        status == StatusCode::CONFLICT
    }
}

async fn method(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((bot, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if bot.strip_prefix("bot") != Some(shared.token.as_str()) {
        return answer(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Telegram matches method names case-insensitively (teloxide sends `GetUpdates`).
    match method.to_ascii_lowercase().as_str() {
        "getupdates" => {
            let offset = params["offset"].as_i64().unwrap_or(0);
            let timeout = params["timeout"].as_u64().unwrap_or(0);
            let (status, body) = get_updates(&shared, peer.ip(), offset, timeout).await;
            (status, Json(body)).into_response()
        }
        "sendmessage" => send_message(&shared, peer.ip(), &params),
        _ => answer(StatusCode::NOT_FOUND, "Not Found: method not found"),
    }
}

async fn get_updates(
    shared: &Shared,
    from: IpAddr,
    offset: i64,
    timeout: u64,
) -> (StatusCode, Value) {
    let mut changed = shared.updates.subscribe();
    let (serial, mut terminated) = {
        let mut inner = shared.lock();
        if offset > 0 {
            inner
                .queue
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
        }
        if let Some((_, terminate)) = inner.waiting.take() {
            let _ = terminate.send(());
        }
        let (terminate, terminated) = oneshot::channel();
        let serial = inner.polls.len();
        inner.waiting = Some((serial, terminate));
        inner.polls.push(Poll {
            from,
            at: Instant::now(),
            offset,
            terminated: false,
        });
        (serial, terminated)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        changed.borrow_and_update();
        let ready: Vec<Value> = {
            let inner = shared.lock();
            inner
                .queue
                .iter()
                .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
                .take(100)
                .cloned()
                .collect()
        };
        if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
            let mut inner = shared.lock();
            if inner.waiting.as_ref().is_some_and(|(s, _)| *s == serial) {
                inner.waiting = None;
            }
            return (StatusCode::OK, json!({"ok": true, "result": ready}));
        }
        tokio::select! {
            _ = &mut terminated => {
                shared.lock().polls[serial].terminated = true;
                return (
                    StatusCode::CONFLICT,
                    json!({"ok": false, "error_code": 409, "description": CONFLICT}),
                );
            }
            _ = changed.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn send_message(shared: &Shared, from: IpAddr, params: &Value) -> Response {
    let (Some(chat_id), Some(text)) = (params["chat_id"].as_i64(), params["text"].as_str()) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "Bad Request: chat_id and text are required",
        );
    };
    let mut inner = shared.lock();
    let message_id = inner.next_message;
    inner.next_message += 1;
    inner.sent.push(Sent {
        from,
        chat_id,
        text: text.to_string(),
        reply_to: params["reply_parameters"]["message_id"].as_i64(),
        at: Instant::now(),
    });
    Json(json!({"ok": true, "result": {
        "message_id": message_id,
        "date": 0,
        "chat": {"id": chat_id, "type": "private", "first_name": "owner"},
        "from": {"id": 1, "is_bot": true, "first_name": "constella", "username": "constella_bot"},
        "text": text,
    }}))
    .into_response()
}

fn answer(status: StatusCode, description: &str) -> Response {
    (
        status,
        Json(json!({"ok": false, "error_code": status.as_u16(), "description": description})),
    )
        .into_response()
}
