//! Turns cluster tables and API answers into the bot's plain-text replies.

use std::fmt::Write as _;

use constella_api::cluster::Throughput;
use constella_api::devices::{DeviceDetail, DeviceList, DeviceStatus, FieldStatus};
use constella_api::history::EventList;
use constella_api::node::Node;
use constella_api::{DeviceName, ErrorBody, NodeName};

use constella_cluster::table::{Liveness, Table};

/// Telegram refuses messages longer than 4096 characters.
const MAX_CHARS: usize = 4000;

pub(crate) fn table(table: &Table) -> String {
    let mut out = String::new();
    for row in &table.nodes {
        let mut marks = Vec::new();
        if row.leader {
            marks.push("leader");
        }
        if row.lease_holder {
            marks.push("bot");
        }
        let _ = writeln!(
            out,
            "{} {} ({}){}",
            if row.status == Liveness::Alive {
                "🟢"
            } else {
                "🔴"
            },
            row.name,
            row.addr,
            if marks.is_empty() {
                String::new()
            } else {
                format!(" [{}]", marks.join(", "))
            }
        );
    }
    let _ = write!(out, "lease epoch {}", table.epoch);
    out
}

pub(crate) fn devices(node: &str, list: &DeviceList) -> String {
    if list.devices.is_empty() {
        return format!("{node}: no controllers configured");
    }
    let mut out = format!("{node}: {} controllers\n", list.devices.len());
    for d in &list.devices {
        let _ = writeln!(
            out,
            "{} {} on {} unit {}",
            health_mark(d.status),
            d.id,
            d.bus,
            d.unit
        );
    }
    clip(out)
}

pub(crate) fn device(node: &str, detail: &DeviceDetail) -> String {
    let mut out = format!(
        "{node}/{}: {}\n",
        detail.summary.id,
        detail.summary.status.as_str()
    );
    for field in detail.fields.iter().filter(|f| f.status == FieldStatus::Ok) {
        let _ = writeln!(
            out,
            "{}: {} {}",
            field.name,
            field.text.as_deref().unwrap_or("-"),
            field.unit
        );
    }
    let alarms = alarm_texts(detail);
    if alarms.is_empty() {
        out.push_str("no alarms");
    } else {
        let _ = write!(out, "alarms: {}", alarms.join("; "));
    }
    clip(out)
}

/// The texts of a device's active alarm flags.
pub(crate) fn alarm_texts(detail: &DeviceDetail) -> Vec<String> {
    detail
        .alarms
        .iter()
        .flat_map(|group| &group.flags)
        .map(|flag| flag.text.clone())
        .collect()
}

pub(crate) fn alarms(
    found: &[(NodeName, DeviceName, Vec<String>)],
    unreachable: &[NodeName],
) -> String {
    let mut out = String::new();
    for (node, device, texts) in found {
        let _ = writeln!(out, "⚠️ {node}/{device}: {}", texts.join("; "));
    }
    if found.is_empty() {
        out.push_str("No active alarms.\n");
    }
    if !unreachable.is_empty() {
        let _ = writeln!(out, "Not reachable: {}", unreachable.join(", "));
    }
    clip(out.trim_end().to_string())
}

pub(crate) fn stats(node: &str, answer: &Node) -> String {
    let get = |key: &str| answer.metrics.get(key).copied();
    let mut out = format!("{node}\n");
    if let Some(cpu) = get("cpu.total") {
        let _ = writeln!(out, "CPU {cpu:.0}%");
    }
    if let (Some(l1), Some(l5)) = (get("load.1"), get("load.5")) {
        let _ = writeln!(out, "load {l1:.2} {l5:.2}");
    }
    if let (Some(used), Some(total)) = (get("mem.used"), get("mem.total")) {
        let _ = writeln!(
            out,
            "memory {:.0} / {:.0} MiB",
            used / 1048576.0,
            total / 1048576.0
        );
    }
    for (key, pct) in &answer.metrics {
        if let Some(mount) = key
            .strip_prefix("disk.")
            .and_then(|k| k.strip_suffix(".used_pct"))
        {
            let _ = writeln!(out, "disk {mount} {pct:.0}% used");
        }
    }
    let up = std::time::Duration::from_secs(answer.agent_uptime_s);
    let _ = write!(out, "agent up {}", humantime::format_duration(up));
    clip(out)
}

pub(crate) fn events(node: &str, answer: &EventList) -> String {
    if answer.events.is_empty() {
        return format!("{node}: no events");
    }
    let mut out = format!("{node}: latest events\n");
    let skip = answer.events.len().saturating_sub(10);
    for e in &answer.events[skip..] {
        let _ = writeln!(
            out,
            "{} {} {} {} {}",
            e.at,
            e.device,
            e.kind.as_str(),
            e.subject,
            e.detail
        );
    }
    clip(out)
}

pub(crate) fn throughput(title: &str, answer: &Throughput) -> String {
    clip(format!(
        "{title}\nnode: {}\nbytes: {}\ndownload_bps: {}\nupload_bps: {}",
        answer.node, answer.bytes, answer.download_bps, answer.upload_bps
    ))
}

/// A failed API answer, with its message when it has one.
pub(crate) fn failure(what: &str, status: u16, body: &[u8]) -> String {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.error.message)
        .unwrap_or_else(|_| format!("status {status}"));
    format!("{what} failed: {message}")
}

fn health_mark(status: DeviceStatus) -> &'static str {
    match status {
        DeviceStatus::Online => "🟢",
        DeviceStatus::Failing | DeviceStatus::Pending => "🟡",
        DeviceStatus::Offline => "🔴",
    }
}

fn clip(mut out: String) -> String {
    if out.chars().count() > MAX_CHARS {
        out = out.chars().take(MAX_CHARS).collect();
        out.push('…');
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Test answers are written as the API's JSON, the outside view the bot decodes.
    fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("an API answer")
    }

    fn summary(id: &str, bus: &str, unit: u8) -> serde_json::Value {
        json!({
            "id": id, "model": "kub1063", "bus": bus, "link": "tcp 127.0.0.1:5020", "unit": unit,
            "poll_interval_ms": 10000, "status": "online", "last_poll": null, "last_ok": null,
            "last_error": null, "consecutive_failures": 0,
            "counters": {"polls_ok": 1, "polls_failed": 0, "requests": 11, "timeouts": 0,
                "crc_framing": 0, "exceptions": 0, "io": 0, "exception_codes": {}}
        })
    }

    #[test]
    fn a_device_shows_good_readings_and_its_alarms() {
        let mut detail = summary("house1", "rs485", 1);
        let field = |name: &str, text: Option<&str>, unit: &str, status: &str| {
            json!({"key": name, "address": "0x0101", "table": "input", "name": name,
                "raw": 215, "value": null, "text": text, "unit": unit, "status": status,
                "at": "2026-12-02T04:00:00.000Z"})
        };
        detail["fields"] = json!([
            field("Temperature", Some("21.5"), "°C", "ok"),
            field("Humidity", None, "%", "break"),
        ]);
        detail["alarms"] = json!([{"group": "active_alarms", "mask": "0x0000000000000001",
            "flags": [{"bit": 0, "key": "high_temp", "text": "High temperature"}]}]);
        detail["outputs_on"] = json!([]);
        let detail: DeviceDetail = decode(detail);
        let reply = device("farm1", &detail);
        assert_eq!(
            reply,
            "farm1/house1: online\nTemperature: 21.5 °C\nalarms: High temperature"
        );
        assert_eq!(alarm_texts(&detail), ["High temperature"]);
    }

    #[test]
    fn failures_carry_the_api_message() {
        let body = br#"{"error":{"code":"not_found","message":"no device named x"}}"#;
        assert_eq!(
            failure("/device farm1 x", 404, body),
            "/device farm1 x failed: no device named x"
        );
        assert_eq!(failure("/stats a", 502, b""), "/stats a failed: status 502");
    }

    #[test]
    fn long_replies_are_clipped_for_telegram() {
        let devices: Vec<_> = (0..300)
            .map(|i| {
                summary(
                    &format!("device-with-a-long-name-{i}"),
                    "rs485-main",
                    (i % 247 + 1) as u8,
                )
            })
            .collect();
        let list: DeviceList = decode(json!({ "devices": devices }));
        let reply = super::devices("farm1", &list);
        assert!(reply.chars().count() <= MAX_CHARS + 1);
        assert!(reply.ends_with('…'));
    }
}
