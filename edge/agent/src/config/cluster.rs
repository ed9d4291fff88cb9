//! `[cluster]`: the timing profile, failure detection and lease timing, the reboot command, the Bot API's address.

use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, positive_duration};
use crate::cluster::{Profile, Settings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterFile {
    reboot_command: Option<Vec<String>>,
    profile: Option<String>,
    probe_period: Option<String>,
    down_after: Option<String>,
    lease_duration: Option<String>,
    bot_api: Option<String>,
}

/// The checked section, over the defaults of its timing profile: explicit timing keys win.
pub(super) fn parse(raw: ClusterFile) -> Result<Settings, Invalid> {
    let profile = match raw.profile.as_deref() {
        None => Profile::Standard,
        Some(name) => Profile::parse(name).ok_or_else(|| {
            Invalid::new(
                "cluster.profile",
                format!(
                    "`{name}` is not a timing profile; choose one of {}",
                    Profile::NAMES.join(", ")
                ),
            )
        })?,
    };
    let mut cluster = Settings::for_profile(profile);
    if let Some(command) = raw.reboot_command {
        if command.is_empty() || command[0].is_empty() {
            return Err(Invalid::new(
                "cluster.reboot_command",
                "must name a program, e.g. [\"systemctl\", \"reboot\"]",
            ));
        }
        cluster.reboot_command = command;
    }
    if let Some(text) = raw.bot_api {
        cluster.bot_api = url::Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                Invalid::new(
                    "cluster.bot_api",
                    format!("{text:?} is not an http(s) URL such as https://api.telegram.org"),
                )
            })?;
    }
    let set = |slot: &mut Duration, key: &str, text: Option<String>| -> Result<(), Invalid> {
        if let Some(text) = text {
            *slot = positive_duration(&text)
                .map_err(|reason| Invalid::new(format!("cluster.{key}"), reason))?;
        }
        Ok(())
    };
    let mut period = cluster.timing.probe_period;
    set(&mut period, "probe_period", raw.probe_period)?;
    let mut down_after = cluster.timing.suspect_after;
    set(&mut down_after, "down_after", raw.down_after)?;
    let mut lease = cluster.lease.duration;
    set(&mut lease, "lease_duration", raw.lease_duration)?;
    cluster
        .apply_timing(period, down_after, lease)
        .map_err(|(field, reason)| Invalid::new(format!("cluster.{field}"), reason))?;
    Ok(cluster)
}
