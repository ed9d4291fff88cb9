//! The CLI's side of the local API: `invite`, `status` and `peers` ask the running agent, found
//! through its configuration file (API address) and state directory (token).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::Config;
use crate::state;

/// Sends one request to the local agent's API and returns its JSON answer.
pub(crate) async fn request(
    config: &Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let config = Config::load(config)?;
    let token = state::api_token(&config.state_dir)?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", config.api_listen))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let response = client.request(request).await.with_context(|| {
        format!(
            "cannot reach the agent's API at {} (is it running?)",
            config.api_listen
        )
    })?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if !status.is_success() {
        bail!(
            "{}",
            json["error"]["message"].as_str().unwrap_or(status.as_str())
        );
    }
    Ok(json)
}

/// `constella status`: one line per node, with leader and lease markers.
pub(crate) fn status_table(table: &serde_json::Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "network {}  owner @{}  lease holder {}  epoch {}",
        table["network_id"].as_str().unwrap_or("?"),
        table["owner"].as_str().unwrap_or("?"),
        table["lease_holder"].as_str().unwrap_or("none"),
        table["epoch"]
    );
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:<6} {:<10} {:<7} LEASE",
        "NAME", "ADDRESS", "STATUS", "LAST SEEN", "LEADER"
    );
    for node in table["nodes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<6} {:<10} {:<7} {}",
            node["name"].as_str().unwrap_or("?"),
            node["addr"].as_str().unwrap_or("?"),
            node["status"].as_str().unwrap_or("?"),
            ago(node["last_seen"].as_u64()),
            if node["leader"] == true { "*" } else { "" },
            if node["lease_holder"] == true {
                format!("holder (epoch {})", table["epoch"])
            } else {
                String::new()
            },
        );
    }
    out
}

/// `constella peers`: names, addresses, ids and election standing.
pub(crate) fn peers_table(table: &serde_json::Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:<32} {:<8} BOT",
        "NAME", "ADDRESS", "NODE ID", "PRIORITY"
    );
    for node in table["nodes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<32} {:<8} {}",
            node["name"].as_str().unwrap_or("?"),
            node["addr"].as_str().unwrap_or("?"),
            node["node_id"].as_str().unwrap_or("?"),
            node["priority"],
            if node["bot"] == true { "yes" } else { "no" },
        );
    }
    out
}

fn ago(unix: Option<u64>) -> String {
    let Some(then) = unix else {
        return "never".into();
    };
    let now = crate::cluster::unix_now();
    format!("{}s ago", now.saturating_sub(then))
}
