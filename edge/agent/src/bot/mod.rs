//! The Telegram bot. It runs only on the node holding the bot lease: the cluster hands this node a
//! bot turn (`cluster::BotTurn`) while it holds the lease, and `host` runs the bot for that turn
//! and stops it when the turn ends. It answers only the network's owner.
//!
//! Each update is answered at most once across the cluster, by confirming it to Telegram before
//! acting on it: a batch from `getUpdates` is handled only after the next `getUpdates` call, whose
//! `offset` confirms it, succeeded. Telegram hands a confirmed update to nobody else, so a bot that
//! is stopped, or fenced by a 409, between the two calls drops the batch unanswered and the next
//! holder receives it. A 409 ("terminated by other getUpdates request") means another poller is
//! active: this bot stops at once and the cluster backs off (see `cluster::lease`).

mod commands;
mod replies;

use std::time::Duration;

use constella_api::devices::{DeviceDetail, DeviceList};
use constella_api::routes;
use serde::de::{DeserializeOwned, IgnoredAny};
use teloxide_core::payloads::{GetUpdatesSetters as _, SendMessageSetters as _};
use teloxide_core::requests::{Request as _, Requester as _};
use teloxide_core::types::{AllowedUpdate, Message, ReplyParameters, Update, UpdateKind};
use teloxide_core::{ApiError, Bot, RequestError};
use tokio::sync::watch;

use crate::cluster::{self, BotEvent, BotExit, BotTurn, Command, Event, Method};
use commands::BotCommand;
use constella_cluster::table::Liveness;

/// How long one `getUpdates` waits for news when there is nothing to confirm.
const LONG_POLL_SECS: u32 = 10;
/// How long a newly started bot leaves its first batch alone. Another poller still running
/// (the other side of a two-node partition) may have received the same updates and be about to
/// confirm them: it does so within milliseconds, after which Telegram no longer returns them.
const FIRST_BATCH_GRACE: Duration = Duration::from_secs(1);
/// Back-off bounds for network errors and a refused token.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the bot needs: where Telegram is, the token, who the owner is, and the cluster.
#[derive(Clone)]
pub(crate) struct BotSetup {
    pub(crate) api_url: url::Url,
    pub(crate) token: String,
    pub(crate) owner: String,
    pub(crate) cluster: cluster::Handle,
    pub(crate) local: cluster::LocalCall,
}

/// Runs the bot whenever the cluster gives this node a turn: starts it from the turn's offset,
/// stops it when the turn ends or moves to another epoch (letting a confirming call finish), and
/// reports confirmed offsets and how it ended back to the cluster.
pub(crate) async fn host(
    mut turns: watch::Receiver<Option<BotTurn>>,
    cluster: cluster::Handle,
    local: cluster::LocalCall,
) {
    loop {
        let turn = turns.borrow_and_update().clone();
        let Some(turn) = turn else {
            if turns.changed().await.is_err() {
                return;
            }
            continue;
        };
        let epoch = turn.epoch;
        let setup = BotSetup {
            api_url: turn.api_url,
            token: turn.token,
            owner: turn.owner,
            cluster: cluster.clone(),
            local: local.clone(),
        };
        let (stop, stopped) = watch::channel(false);
        let report = cluster.clone();
        let bot = run(setup, turn.offset, stopped, move |offset| {
            report.try_deliver(Event::Bot(BotEvent::Offset { epoch, offset }));
        });
        tokio::pin!(bot);
        let mut cluster_gone = false;
        let exit = loop {
            tokio::select! {
                exit = &mut bot => break exit,
                changed = turns.changed(), if !cluster_gone => {
                    cluster_gone = changed.is_err();
                    let same_turn = turns.borrow().as_ref().map(|t| t.epoch) == Some(epoch);
                    if cluster_gone || !same_turn {
                        let _ = stop.send(true);
                    }
                }
            }
        };
        if cluster_gone {
            return;
        }
        cluster
            .deliver(Event::Bot(BotEvent::Exited { epoch, exit }))
            .await;
    }
}

/// Polls Telegram from `offset` until `stop` turns true or another poller fences it. After every
/// confirmed batch, `on_offset` gets the next update id so the lease carries it to the next holder.
pub(crate) async fn run(
    setup: BotSetup,
    mut offset: u64,
    mut stop: watch::Receiver<bool>,
    on_offset: impl Fn(u64),
) -> BotExit {
    let client = match teloxide_core::net::default_reqwest_settings().build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the Telegram HTTP client");
            let _ = stop.wait_for(|s| *s).await;
            return BotExit::Stopped;
        }
    };
    let bot = Bot::with_client(setup.token.clone(), client).set_api_url(setup.api_url.clone());
    let mut pending: Vec<Update> = Vec::new();
    let mut retry = RETRY_MIN;
    let mut first_call = true;
    tracing::info!(offset, "bot polling Telegram");
    loop {
        let mut request = bot
            .get_updates()
            .timeout(if pending.is_empty() {
                LONG_POLL_SECS
            } else {
                0
            })
            .allowed_updates([AllowedUpdate::Message]);
        if offset > 0 {
            request = request.offset(i32::try_from(offset).unwrap_or(i32::MAX));
        }
        if *stop.borrow() {
            // Whatever is pending is unconfirmed: the next holder receives it.
            return BotExit::Stopped;
        }
        let answer = if pending.is_empty() {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return BotExit::Stopped,
                answer = request.send() => answer,
            }
        } else {
            // A confirming call returns at once; abandoning it midway could leave a batch
            // confirmed to us at Telegram and then dropped, lost to everyone.
            request.send().await
        };
        match answer {
            Ok(updates) if std::mem::take(&mut first_call) && !updates.is_empty() => {
                // Not ours yet: ask again after the grace; what is still there is unclaimed.
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return BotExit::Stopped,
                    () = tokio::time::sleep(FIRST_BATCH_GRACE) => {}
                }
            }
            Ok(updates) => {
                retry = RETRY_MIN;
                // This call confirmed `pending` to us: nobody else can receive it now.
                for update in std::mem::take(&mut pending) {
                    handle(&bot, &setup, update).await;
                }
                if let Some(last) = updates.last() {
                    offset = u64::from(last.id.0) + 1;
                    on_offset(offset);
                }
                pending = updates;
            }
            Err(RequestError::Api(ApiError::TerminatedByOtherGetUpdates)) => {
                tracing::warn!(
                    dropped = pending.len(),
                    "another getUpdates poller is active for this bot token; stopping the bot"
                );
                return BotExit::Fenced;
            }
            Err(e) => {
                let fatal = matches!(e, RequestError::Api(ApiError::InvalidToken));
                if fatal {
                    tracing::error!(error = %e, "Telegram refuses this bot token");
                } else {
                    tracing::warn!(error = %e, retry_in = ?retry, "Telegram getUpdates failed");
                }
                // Unconfirmed updates stay with Telegram and come back on the next call.
                pending.clear();
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return BotExit::Stopped,
                    () = tokio::time::sleep(if fatal { RETRY_MAX } else { retry }) => {}
                }
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Answers one confirmed update, if it is a message from the owner.
async fn handle(bot: &Bot, setup: &BotSetup, update: Update) {
    let UpdateKind::Message(message) = update.kind else {
        return;
    };
    let username = message.from.as_ref().and_then(|u| u.username.as_deref());
    if !commands::is_owner(&setup.owner, username) {
        tracing::warn!(
            user_id = message.from.as_ref().map(|u| u.id.0),
            username,
            "ignored a Telegram message from someone other than the owner"
        );
        return;
    }
    let text = message.text().unwrap_or_default();
    let reply = match commands::parse(text) {
        Ok(Some(command)) => execute(setup, command).await,
        Ok(None) => commands::HELP.to_string(),
        Err(usage) => usage,
    };
    send(bot, &message, reply).await;
}

async fn send(bot: &Bot, to: &Message, text: String) {
    let sent = bot
        .send_message(to.chat.id, text)
        .reply_parameters(ReplyParameters::new(to.id))
        .send()
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not send a Telegram reply");
    }
}

async fn execute(setup: &BotSetup, command: BotCommand) -> String {
    let node_path = routes::on_node;
    match command {
        BotCommand::Help => commands::HELP.to_string(),
        BotCommand::Status => match setup.cluster.ask(Command::Table).await {
            Some(table) => replies::table(&table),
            None => "The cluster is not running.".into(),
        },
        BotCommand::Devices { node } => {
            let what = format!("/devices {node}");
            api(
                setup,
                Method::Get,
                node_path(&node, "devices"),
                &what,
                |v| replies::devices(&node, v),
            )
            .await
        }
        BotCommand::Device { node, device } => {
            let what = format!("/device {node} {device}");
            let path = node_path(&node, &format!("devices/{device}"));
            api(setup, Method::Get, path, &what, |v| {
                replies::device(&node, v)
            })
            .await
        }
        BotCommand::Alarms => alarms(setup).await,
        BotCommand::Stats { node } => {
            let what = format!("/stats {node}");
            api(setup, Method::Get, node_path(&node, "node"), &what, |v| {
                replies::stats(&node, v)
            })
            .await
        }
        BotCommand::Events { node } => {
            let what = format!("/events {node}");
            api(setup, Method::Get, node_path(&node, "events"), &what, |v| {
                replies::events(&node, v)
            })
            .await
        }
        BotCommand::ResetAlarms { node, device } => {
            let what = format!("/reset {node} {device}");
            let path = node_path(&node, &format!("devices/{device}/reset-alarms"));
            api(setup, Method::Post, path, &what, |_: &IgnoredAny| {
                format!("Alarms of {node}/{device} reset.")
            })
            .await
        }
        BotCommand::Reboot { node } => {
            let what = format!("/reboot {node}");
            api(
                setup,
                Method::Post,
                node_path(&node, "reboot"),
                &what,
                |_: &IgnoredAny| format!("{node} is rebooting."),
            )
            .await
        }
        BotCommand::Speedtest { node } => {
            let what = format!("/speedtest {node}");
            api(
                setup,
                Method::Post,
                node_path(&node, "speedtest"),
                &what,
                |v| replies::throughput(&format!("Speed test with {node}"), v),
            )
            .await
        }
        BotCommand::Invite { ttl } => {
            let ttl = match cluster::parse_ttl(&ttl) {
                Ok(ttl) => ttl,
                Err(e) => return e.to_string(),
            };
            match setup
                .cluster
                .ask(|reply| Command::Invite { ttl, reply })
                .await
            {
                Some(Ok((link, _))) => {
                    format!("Run on the new node:\nconstella join --name NAME --join '{link}'")
                }
                Some(Err(e)) => format!("/invite failed: {e}"),
                None => "The cluster is not running.".into(),
            }
        }
    }
}

/// Calls this node's API in-process and renders the answer.
async fn api<T: DeserializeOwned>(
    setup: &BotSetup,
    method: Method,
    path: String,
    what: &str,
    render: impl FnOnce(&T) -> String,
) -> String {
    let (status, body) = (setup.local)(method, path).await;
    if status != 200 {
        return replies::failure(what, status, &body);
    }
    match serde_json::from_slice(&body) {
        Ok(value) => render(&value),
        Err(_) => replies::failure(what, status, b""),
    }
}

/// Every live node's devices with active alarms.
async fn alarms(setup: &BotSetup) -> String {
    let Some(table) = setup.cluster.ask(Command::Table).await else {
        return "The cluster is not running.".into();
    };
    let mut found = Vec::new();
    let mut unreachable = Vec::new();
    for row in table.nodes.iter().filter(|r| r.status == Liveness::Alive) {
        let list = (setup.local)(Method::Get, routes::on_node(&row.name, "devices")).await;
        let Some(list) = ok_json::<DeviceList>(list) else {
            unreachable.push(row.name.clone());
            continue;
        };
        for device in &list.devices {
            let path = routes::on_node(&row.name, &format!("devices/{}", device.id));
            if let Some(detail) = ok_json::<DeviceDetail>((setup.local)(Method::Get, path).await) {
                let texts = replies::alarm_texts(&detail);
                if !texts.is_empty() {
                    found.push((row.name.clone(), device.id.clone(), texts));
                }
            }
        }
    }
    replies::alarms(&found, &unreachable)
}

fn ok_json<T: DeserializeOwned>((status, body): (u16, Vec<u8>)) -> Option<T> {
    (status == 200)
        .then(|| serde_json::from_slice(&body).ok())
        .flatten()
}
