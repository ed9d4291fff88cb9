//! The CLI's side of the local API: `invite`, `status` and `peers` ask the running agent, found
//! through its configuration file (API address) and state directory (token), with the typed
//! client of `constella_api`.

use std::fmt::Write as _;
use std::path::Path;

use constella_api::client::Client;
use constella_api::cluster::Nodes;

use crate::config::Config;
use crate::state;

/// A client of the agent configured by `config`.
pub(crate) fn local(config: &Path) -> anyhow::Result<Client> {
    let config = Config::load(config)?;
    let token = state::api_token(&config.state_dir)?;
    Ok(Client::new(config.api_listen.to_string(), token))
}

/// `constella status`: one line per node, with leader and lease markers.
pub(crate) fn status_table(table: &Nodes) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "network {}  owner @{}  lease holder {}  epoch {}",
        table.network_id,
        table.owner,
        table.lease_holder.as_deref().unwrap_or("none"),
        table.epoch
    );
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:<6} {:<10} {:<7} LEASE",
        "NAME", "ADDRESS", "STATUS", "LAST SEEN", "LEADER"
    );
    for node in &table.nodes {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<6} {:<10} {:<7} {}",
            node.name,
            node.addr,
            node.status.as_str(),
            ago(node.last_seen),
            if node.leader { "*" } else { "" },
            if node.lease_holder {
                format!("holder (epoch {})", table.epoch)
            } else {
                String::new()
            },
        );
    }
    out
}

/// `constella peers`: names, addresses, ids and election standing.
pub(crate) fn peers_table(table: &Nodes) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<22} {:<32} {:<8} BOT",
        "NAME", "ADDRESS", "NODE ID", "PRIORITY"
    );
    for node in &table.nodes {
        let _ = writeln!(
            out,
            "{:<16} {:<22} {:<32} {:<8} {}",
            node.name,
            node.addr,
            node.node_id,
            node.priority,
            if node.bot { "yes" } else { "no" },
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
