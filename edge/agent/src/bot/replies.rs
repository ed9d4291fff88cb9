//! Turns cluster tables and API answers into the bot's plain-text replies.

use std::fmt::Write as _;

use serde_json::Value;

use crate::cluster::Table;

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
            if row.status == "alive" {
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

pub(crate) fn devices(node: &str, list: &Value) -> String {
    let devices = list["devices"].as_array().cloned().unwrap_or_default();
    if devices.is_empty() {
        return format!("{node}: no controllers configured");
    }
    let mut out = format!("{node}: {} controllers\n", devices.len());
    for d in devices {
        let _ = writeln!(
            out,
            "{} {} on {} unit {}",
            health_mark(d["status"].as_str()),
            text(&d["id"]),
            text(&d["bus"]),
            d["unit"]
        );
    }
    clip(out)
}

pub(crate) fn device(node: &str, detail: &Value) -> String {
    let mut out = format!(
        "{node}/{}: {}\n",
        text(&detail["id"]),
        text(&detail["status"])
    );
    for field in detail["fields"].as_array().into_iter().flatten() {
        if field["status"] == "ok" {
            let _ = writeln!(
                out,
                "{}: {} {}",
                text(&field["name"]),
                text(&field["text"]),
                text(&field["unit"])
            );
        }
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
pub(crate) fn alarm_texts(detail: &Value) -> Vec<String> {
    detail["alarms"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["flags"].as_array().cloned().unwrap_or_default())
        .map(|flag| text(&flag["text"]))
        .collect()
}

pub(crate) fn alarms(found: &[(String, String, Vec<String>)], unreachable: &[String]) -> String {
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

pub(crate) fn stats(node: &str, answer: &Value) -> String {
    let m = &answer["metrics"];
    let get = |key: &str| m[key].as_f64();
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
    for (key, value) in m.as_object().into_iter().flatten() {
        if let (Some(mount), Some(pct)) = (
            key.strip_prefix("disk.")
                .and_then(|k| k.strip_suffix(".used_pct")),
            value.as_f64(),
        ) {
            let _ = writeln!(out, "disk {mount} {pct:.0}% used");
        }
    }
    if let Some(up) = answer["agent_uptime_s"].as_u64() {
        let _ = write!(out, "agent up {}", humantime::format_duration(secs(up)));
    }
    clip(out)
}

pub(crate) fn events(node: &str, answer: &Value) -> String {
    let events = answer["events"].as_array().cloned().unwrap_or_default();
    if events.is_empty() {
        return format!("{node}: no events");
    }
    let mut out = format!("{node}: latest events\n");
    for e in events.iter().rev().take(10).rev() {
        let _ = writeln!(
            out,
            "{} {} {} {} {}",
            text(&e["at"]),
            text(&e["device"]),
            text(&e["kind"]),
            text(&e["subject"]),
            text(&e["detail"])
        );
    }
    clip(out)
}

/// Any other answer: its fields, one per line.
pub(crate) fn fields(title: &str, answer: &Value) -> String {
    let mut out = format!("{title}\n");
    match answer.as_object() {
        Some(map) => {
            for (key, value) in map {
                let _ = writeln!(out, "{key}: {}", text(value));
            }
        }
        None => out.push_str(&text(answer)),
    }
    clip(out)
}

/// A failed API answer, with its message when it has one.
pub(crate) fn failure(what: &str, status: u16, body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("status {status}"));
    format!("{what} failed: {message}")
}

fn health_mark(status: Option<&str>) -> &'static str {
    match status {
        Some("online") => "🟢",
        Some("failing" | "pending") => "🟡",
        _ => "🔴",
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn secs(s: u64) -> std::time::Duration {
    std::time::Duration::from_secs(s)
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

    #[test]
    fn a_device_shows_good_readings_and_its_alarms() {
        let detail = json!({
            "id": "house1", "status": "online",
            "fields": [
                {"name": "Temperature", "text": "21.5", "unit": "°C", "status": "ok"},
                {"name": "Humidity", "text": null, "unit": "%", "status": "sensor_fault"}
            ],
            "alarms": [{"group": "alarms", "flags": [{"text": "High temperature"}]}]
        });
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
        let list = json!({"devices": (0..300).map(|i| json!({
            "id": format!("device-with-a-long-name-{i}"), "status": "online", "bus": "rs485-main", "unit": i
        })).collect::<Vec<_>>()});
        let reply = devices("farm1", &list);
        assert!(reply.chars().count() <= MAX_CHARS + 1);
        assert!(reply.ends_with('…'));
    }
}
