//! What the owner can ask the bot, parsed from a message's text; and who counts as the owner.

/// One bot command with its arguments checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BotCommand {
    Help,
    /// The cluster table.
    Status,
    /// A node's devices and their link status.
    Devices {
        node: String,
    },
    /// One device's readings and alarms.
    Device {
        node: String,
        device: String,
    },
    /// Active alarms on every live node.
    Alarms,
    /// A node's metrics (CPU, memory, disk).
    Stats {
        node: String,
    },
    /// A node's latest events.
    Events {
        node: String,
    },
    ResetAlarms {
        node: String,
        device: String,
    },
    Reboot {
        node: String,
    },
    Speedtest {
        node: String,
    },
    /// A join link for a new node.
    Invite {
        ttl: String,
    },
}

pub(crate) const HELP: &str = "Commands:
/status: the nodes, the leader and the bot lease
/devices NODE: a node's controllers
/device NODE DEVICE: readings and alarms of one controller
/alarms: active alarms on every node
/stats NODE: CPU, memory and disk of a node
/events NODE: a node's latest events
/reset NODE DEVICE: reset a controller's latched alarms
/reboot NODE: reboot a node
/speedtest NODE: throughput between this node and NODE
/invite [TTL]: a join link for a new node (default 15m)";

/// Parses a message. `Ok(None)` is text that is not a command (answered with the help);
/// `Err` is a command with missing or bad arguments, with its usage.
pub(crate) fn parse(text: &str) -> Result<Option<BotCommand>, String> {
    let mut words = text.split_whitespace();
    let Some(first) = words.next().filter(|w| w.starts_with('/')) else {
        return Ok(None);
    };
    // In groups Telegram appends the bot's name: `/status@farm_bot`.
    let name = first[1..].split('@').next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    if let Some(bad) = args.iter().find(|a| !is_plain(a)) {
        return Err(format!(
            "{bad:?} is not a node, device or duration name (letters, digits, '-', '_', '.')"
        ));
    }
    let arg = |i: usize| args.get(i).map(|s| (*s).to_string());
    let usage = |form: &str| Err(format!("Usage: /{name} {form}"));
    let command = match (name, args.len()) {
        ("start" | "help", _) => BotCommand::Help,
        ("status" | "nodes", 0) => BotCommand::Status,
        ("alarms", 0) => BotCommand::Alarms,
        ("devices", 1) => BotCommand::Devices {
            node: arg(0).unwrap_or_default(),
        },
        ("device", 2) => BotCommand::Device {
            node: arg(0).unwrap_or_default(),
            device: arg(1).unwrap_or_default(),
        },
        ("stats", 1) => BotCommand::Stats {
            node: arg(0).unwrap_or_default(),
        },
        ("events", 1) => BotCommand::Events {
            node: arg(0).unwrap_or_default(),
        },
        ("reset", 2) => BotCommand::ResetAlarms {
            node: arg(0).unwrap_or_default(),
            device: arg(1).unwrap_or_default(),
        },
        ("reboot", 1) => BotCommand::Reboot {
            node: arg(0).unwrap_or_default(),
        },
        ("speedtest", 1) => BotCommand::Speedtest {
            node: arg(0).unwrap_or_default(),
        },
        ("invite", 0 | 1) => BotCommand::Invite {
            ttl: arg(0).unwrap_or_else(|| "15m".into()),
        },
        ("status" | "nodes" | "alarms", _) => return usage("(no arguments)"),
        ("devices" | "stats" | "events" | "reboot" | "speedtest", _) => return usage("NODE"),
        ("device" | "reset", _) => return usage("NODE DEVICE"),
        ("invite", _) => return usage("[TTL]"),
        _ => return Err(format!("Unknown command /{name}.\n\n{HELP}")),
    };
    Ok(Some(command))
}

/// Arguments end up in API paths, so only plain names pass.
fn is_plain(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= 64
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && word != "."
        && word != ".."
}

/// The bot answers only its owner: the sender's Telegram username must equal the network's
/// owner (without `@`, case-insensitive). No username, or no owner, means no answer.
pub(crate) fn is_owner(owner: &str, username: Option<&str>) -> bool {
    let owner = owner.trim_start_matches('@');
    !owner.is_empty()
        && username.is_some_and(|u| u.trim_start_matches('@').eq_ignore_ascii_case(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_their_arguments() {
        assert_eq!(parse("/status"), Ok(Some(BotCommand::Status)));
        assert_eq!(parse("/status@farm_bot"), Ok(Some(BotCommand::Status)));
        assert_eq!(parse("  /help me"), Ok(Some(BotCommand::Help)));
        assert_eq!(
            parse("/device farm-1 house_2"),
            Ok(Some(BotCommand::Device {
                node: "farm-1".into(),
                device: "house_2".into()
            }))
        );
        assert_eq!(
            parse("/invite"),
            Ok(Some(BotCommand::Invite { ttl: "15m".into() }))
        );
        assert_eq!(
            parse("/invite 2h"),
            Ok(Some(BotCommand::Invite { ttl: "2h".into() }))
        );
        assert_eq!(parse("hello"), Ok(None));
        assert_eq!(parse(""), Ok(None));
    }

    #[test]
    fn bad_commands_get_their_usage() {
        assert_eq!(parse("/reboot"), Err("Usage: /reboot NODE".into()));
        assert_eq!(parse("/reset a"), Err("Usage: /reset NODE DEVICE".into()));
        assert_eq!(
            parse("/status now"),
            Err("Usage: /status (no arguments)".into())
        );
        assert!(parse("/frobnicate").is_err_and(|e| e.contains("Unknown command /frobnicate")));
        assert!(parse("/devices ../etc").is_err());
        assert!(parse("/devices a/b").is_err());
        assert!(parse("/devices a?x=1").is_err());
        assert!(parse("/devices ..").is_err());
    }

    #[test]
    fn only_the_owner_is_answered() {
        assert!(is_owner("farm_owner", Some("farm_owner")));
        assert!(is_owner("farm_owner", Some("Farm_Owner")));
        assert!(is_owner("@farm_owner", Some("farm_owner")));
        assert!(!is_owner("farm_owner", Some("farm_owner2")));
        assert!(!is_owner("farm_owner", None));
        assert!(!is_owner("", Some("")));
        assert!(!is_owner("", None));
    }
}
