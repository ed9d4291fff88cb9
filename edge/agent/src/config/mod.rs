//! The agent's configuration file (TOML): what it looks like on disk (`File`, `BusFile`,
//! `DeviceFile`) and the typed, checked form the agent runs on (`Config`). Every error names the
//! file, the field and the reason.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::speedtest::{MAX_TRANSFER, SpeedtestConfig, check_url};
use constella_modbus::{LineParity, LineSettings};

/// Where `constella run` looks when `--config` is not given.
pub(crate) const DEFAULT_PATH: &str = "/etc/constella/constella.toml";
pub(crate) const DEFAULT_STATE_DIR: &str = "/var/lib/constella";
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:4747";

/// A checked configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) state_dir: PathBuf,
    pub(crate) api_listen: SocketAddr,
    pub(crate) buses: Vec<Bus>,
    pub(crate) devices: Vec<Device>,
    pub(crate) history: HistoryConfig,
    pub(crate) speedtest: SpeedtestConfig,
    pub(crate) cluster: crate::cluster::Settings,
}

/// How node metrics and device history are kept (`[history]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistoryConfig {
    pub(crate) telemetry_period: Duration,
    pub(crate) flush_interval: Duration,
    pub(crate) raw_keep: Duration,
    pub(crate) rollup_keep: Duration,
    pub(crate) max_size_mb: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            telemetry_period: Duration::from_secs(10),
            flush_interval: Duration::from_secs(60),
            raw_keep: Duration::from_secs(7 * 86_400),
            rollup_keep: Duration::from_secs(90 * 86_400),
            max_size_mb: 256,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bus {
    pub(crate) name: String,
    pub(crate) link: Link,
    pub(crate) timing: BusTiming,
    pub(crate) max_block: u16,
    pub(crate) max_gap: u16,
    pub(crate) max_backoff: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Link {
    Rtu { path: PathBuf, line: LineSettings },
    Tcp { addr: String },
    RtuOverTcp { addr: String },
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::Rtu { path, line } => write!(f, "rtu {} {}", path.display(), line.baud),
            Link::Tcp { addr } => write!(f, "tcp {addr}"),
            Link::RtuOverTcp { addr } => write!(f, "rtu-over-tcp {addr}"),
        }
    }
}

/// Per-request timing of a bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BusTiming {
    /// How long to wait for a reply.
    pub(crate) timeout: Duration,
    /// Silence kept before every frame (≥ t3.5 on serial lines).
    pub(crate) frame_gap: Duration,
    /// Extra silence after a unit's reply before the next frame.
    pub(crate) reply_gap: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Device {
    pub(crate) name: String,
    pub(crate) bus: String,
    pub(crate) unit: u8,
    pub(crate) poll_interval: Duration,
}

/// A configuration error: `file: field: reason`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {field}: {reason}", file.display())]
pub(crate) struct ConfigError {
    pub(crate) file: PathBuf,
    pub(crate) field: String,
    pub(crate) reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    state_dir: Option<PathBuf>,
    api: Option<ApiFile>,
    history: Option<HistoryFile>,
    speedtest: Option<SpeedtestFile>,
    cluster: Option<ClusterFile>,
    #[serde(default)]
    bus: Vec<BusFile>,
    #[serde(default)]
    device: Vec<DeviceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFile {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeedtestFile {
    download_url: Option<String>,
    upload_url: Option<String>,
    token: Option<String>,
    upload_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    reboot_command: Option<Vec<String>>,
    probe_period: Option<String>,
    down_after: Option<String>,
    lease_duration: Option<String>,
    bot_api: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryFile {
    telemetry_period: Option<String>,
    flush_interval: Option<String>,
    raw_keep: Option<String>,
    rollup_keep: Option<String>,
    max_size_mb: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BusFile {
    name: String,
    rtu: Option<PathBuf>,
    tcp: Option<String>,
    rtu_over_tcp: Option<String>,
    baud: Option<u32>,
    data_bits: Option<u8>,
    parity: Option<String>,
    stop_bits: Option<u8>,
    timeout: Option<String>,
    frame_gap: Option<String>,
    reply_gap: Option<String>,
    max_block: Option<u16>,
    max_gap: Option<u16>,
    max_backoff: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFile {
    name: String,
    model: String,
    bus: String,
    unit: i64,
    poll_interval: Option<String>,
}

/// Largest block the fact sheet's own client read in one request.
pub(crate) const DEFAULT_MAX_BLOCK: u16 = 20;
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

impl Config {
    /// Reads and checks a configuration file.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            field: "(file)".into(),
            reason: format!("cannot be read: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Checks configuration text; `path` is only used in error messages.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let fail = |field: &str, reason: String| ConfigError {
            file: path.to_path_buf(),
            field: field.into(),
            reason,
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| fail("(syntax)", located(text, &e)))?;
        let file: File = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let field = match e.path().to_string() {
                p if p == "." => "(top level)".to_string(),
                p => p,
            };
            fail(&field, located(text, e.inner()))
        })?;

        let api_listen = match file.api.and_then(|a| a.listen) {
            Some(listen) => listen.parse().map_err(|_| {
                fail(
                    "api.listen",
                    format!("`{listen}` is not an IP:port address"),
                )
            })?,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| fail("api.listen", "bad default".into()))?,
        };

        let mut history = HistoryConfig::default();
        if let Some(raw) = file.history {
            let set =
                |slot: &mut Duration, key: &str, text: Option<String>| -> Result<(), ConfigError> {
                    if let Some(text) = text {
                        *slot = positive_duration(&text)
                            .map_err(|reason| fail(&format!("history.{key}"), reason))?;
                    }
                    Ok(())
                };
            set(
                &mut history.telemetry_period,
                "telemetry_period",
                raw.telemetry_period,
            )?;
            set(
                &mut history.flush_interval,
                "flush_interval",
                raw.flush_interval,
            )?;
            set(&mut history.raw_keep, "raw_keep", raw.raw_keep)?;
            set(&mut history.rollup_keep, "rollup_keep", raw.rollup_keep)?;
            if history.rollup_keep < history.raw_keep {
                return Err(fail(
                    "history.rollup_keep",
                    "must be at least raw_keep".into(),
                ));
            }
            match raw.max_size_mb {
                Some(0) => return Err(fail("history.max_size_mb", "must be at least 1".into())),
                Some(mb) => history.max_size_mb = mb,
                None => {}
            }
        }

        let mut cluster = crate::cluster::Settings::default();
        if let Some(raw) = file.cluster {
            if let Some(command) = raw.reboot_command {
                if command.is_empty() || command[0].is_empty() {
                    return Err(fail(
                        "cluster.reboot_command",
                        "must name a program, e.g. [\"systemctl\", \"reboot\"]".into(),
                    ));
                }
                cluster.reboot_command = command;
            }
            if let Some(text) = raw.bot_api {
                cluster.bot_api = url::Url::parse(&text)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                    .ok_or_else(|| {
                        fail(
                            "cluster.bot_api",
                            format!(
                                "{text:?} is not an http(s) URL such as https://api.telegram.org"
                            ),
                        )
                    })?;
            }
            let set =
                |slot: &mut Duration, key: &str, text: Option<String>| -> Result<(), ConfigError> {
                    if let Some(text) = text {
                        *slot = positive_duration(&text)
                            .map_err(|reason| fail(&format!("cluster.{key}"), reason))?;
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
                .map_err(|(field, reason)| fail(&format!("cluster.{field}"), reason))?;
        }

        let mut speedtest = SpeedtestConfig {
            upload_bytes: 10_000_000,
            ..SpeedtestConfig::default()
        };
        if let Some(raw) = file.speedtest {
            let url = |key: &str, text: Option<String>| -> Result<Option<String>, ConfigError> {
                text.map(|t| {
                    check_url(&t).map_err(|reason| fail(&format!("speedtest.{key}"), reason))
                })
                .transpose()
            };
            speedtest.download_url = url("download_url", raw.download_url)?;
            speedtest.upload_url = url("upload_url", raw.upload_url)?;
            speedtest.token = raw.token;
            match raw.upload_bytes {
                Some(n @ 1..=MAX_TRANSFER) => speedtest.upload_bytes = n,
                Some(n) => {
                    return Err(fail(
                        "speedtest.upload_bytes",
                        format!("{n} is outside 1–{MAX_TRANSFER}"),
                    ));
                }
                None => {}
            }
        }

        let mut buses = Vec::new();
        let mut bus_names = BTreeSet::new();
        for (i, raw) in file.bus.into_iter().enumerate() {
            let at = |key: &str| format!("bus[{i}].{key}");
            check_name(&raw.name).map_err(|reason| fail(&at("name"), reason))?;
            if !bus_names.insert(raw.name.clone()) {
                return Err(fail(
                    &at("name"),
                    format!("`{}` is used by another bus", raw.name),
                ));
            }
            let bus = parse_bus(raw, &at).map_err(|(field, reason)| fail(&field, reason))?;
            if let Link::Rtu { path, .. } = &bus.link {
                // One task owns each serial line; a second bus on it would fight for the port.
                let owner = buses
                    .iter()
                    .find(|b: &&Bus| matches!(&b.link, Link::Rtu { path: p, .. } if p == path));
                if let Some(owner) = owner {
                    return Err(fail(
                        &at("rtu"),
                        format!("{} is already bus `{}`", path.display(), owner.name),
                    ));
                }
            }
            buses.push(bus);
        }

        let mut devices = Vec::new();
        let mut device_names = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for (i, raw) in file.device.into_iter().enumerate() {
            let at = |key: &str| format!("device[{i}].{key}");
            check_name(&raw.name).map_err(|reason| fail(&at("name"), reason))?;
            if !device_names.insert(raw.name.clone()) {
                return Err(fail(
                    &at("name"),
                    format!("`{}` is used by another device", raw.name),
                ));
            }
            if raw.model != "kub1063" {
                return Err(fail(
                    &at("model"),
                    format!("unknown model `{}` (supported: kub1063)", raw.model),
                ));
            }
            if !bus_names.contains(&raw.bus) {
                let known: Vec<&str> = bus_names.iter().map(String::as_str).collect();
                return Err(fail(
                    &at("bus"),
                    format!("no bus named `{}` (defined: {})", raw.bus, list(&known)),
                ));
            }
            let unit = u8::try_from(raw.unit)
                .ok()
                .filter(|u| (1..=247).contains(u))
                .ok_or_else(|| {
                    fail(
                        &at("unit"),
                        format!("{} is not a Modbus unit id (1–247)", raw.unit),
                    )
                })?;
            if !addresses.insert((raw.bus.clone(), unit)) {
                return Err(fail(
                    &at("unit"),
                    format!("unit {unit} on bus `{}` is already a device", raw.bus),
                ));
            }
            let poll_interval = match raw.poll_interval {
                Some(text) => {
                    positive_duration(&text).map_err(|reason| fail(&at("poll_interval"), reason))?
                }
                None => DEFAULT_POLL_INTERVAL,
            };
            devices.push(Device {
                name: raw.name,
                bus: raw.bus,
                unit,
                poll_interval,
            });
        }

        Ok(Config {
            state_dir: file
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            api_listen,
            buses,
            devices,
            history,
            speedtest,
            cluster,
        })
    }
}

fn parse_bus(raw: BusFile, at: &dyn Fn(&str) -> String) -> Result<Bus, (String, String)> {
    let err = |key: &str, reason: String| (at(key), reason);
    let link = match (raw.rtu, raw.tcp, raw.rtu_over_tcp) {
        (Some(path), None, None) => {
            let line = LineSettings {
                baud: match raw.baud.unwrap_or(9600) {
                    0 => return Err(err("baud", "must be greater than 0".into())),
                    baud => baud,
                },
                data_bits: match raw.data_bits.unwrap_or(8) {
                    bits @ 5..=8 => bits,
                    bits => return Err(err("data_bits", format!("{bits} is not 5, 6, 7 or 8"))),
                },
                parity: match raw.parity.as_deref().unwrap_or("none") {
                    "none" => LineParity::None,
                    "even" => LineParity::Even,
                    "odd" => LineParity::Odd,
                    other => {
                        return Err(err("parity", format!("`{other}` is not none, even or odd")));
                    }
                },
                stop_bits: match raw.stop_bits.unwrap_or(1) {
                    bits @ 1..=2 => bits,
                    bits => return Err(err("stop_bits", format!("{bits} is not 1 or 2"))),
                },
            };
            Link::Rtu { path, line }
        }
        (None, Some(addr), None) => Link::Tcp {
            addr: check_host_port(&addr).map_err(|r| err("tcp", r))?,
        },
        (None, None, Some(addr)) => Link::RtuOverTcp {
            addr: check_host_port(&addr).map_err(|r| err("rtu_over_tcp", r))?,
        },
        (None, None, None) => {
            return Err(err(
                "rtu",
                "a bus needs exactly one of `rtu` (serial device), `tcp` or `rtu_over_tcp`".into(),
            ));
        }
        _ => {
            return Err(err(
                "rtu",
                "a bus takes only one of `rtu`, `tcp` and `rtu_over_tcp`".into(),
            ));
        }
    };
    let serial = matches!(link, Link::Rtu { .. });
    for (key, given) in [
        ("baud", raw.baud.is_some()),
        ("data_bits", raw.data_bits.is_some()),
        ("parity", raw.parity.is_some()),
        ("stop_bits", raw.stop_bits.is_some()),
    ] {
        if given && !serial {
            return Err(err(
                key,
                "line settings apply only to a serial (`rtu`) bus".into(),
            ));
        }
    }
    let t35 = match &link {
        Link::Rtu { line, .. } => line.t35(),
        _ => Duration::ZERO,
    };
    let timing = BusTiming {
        timeout: match raw.timeout {
            Some(text) => positive_duration(&text).map_err(|r| err("timeout", r))?,
            None => Duration::from_secs(1),
        },
        frame_gap: match raw.frame_gap {
            Some(text) => {
                let gap = duration(&text).map_err(|r| err("frame_gap", r))?;
                if gap < t35 {
                    return Err(err(
                        "frame_gap",
                        format!(
                            "{text} is shorter than 3.5 character times on this line ({} µs)",
                            t35.as_micros()
                        ),
                    ));
                }
                gap
            }
            None => t35,
        },
        reply_gap: match raw.reply_gap {
            Some(text) => duration(&text).map_err(|r| err("reply_gap", r))?,
            None => Duration::ZERO,
        },
    };
    let max_block = match raw.max_block.unwrap_or(DEFAULT_MAX_BLOCK) {
        n @ 4..=125 => n,
        n => {
            return Err(err(
                "max_block",
                format!("{n} is outside 4–125 (an alarm group is 4 words; Modbus allows 125)"),
            ));
        }
    };
    let max_gap = match raw.max_gap.unwrap_or(0) {
        n if n < max_block => n,
        n => {
            return Err(err(
                "max_gap",
                format!("{n} must be smaller than max_block ({max_block})"),
            ));
        }
    };
    let max_backoff = match raw.max_backoff {
        Some(text) => positive_duration(&text).map_err(|r| err("max_backoff", r))?,
        None => Duration::from_secs(60),
    };
    Ok(Bus {
        name: raw.name,
        link,
        timing,
        max_block,
        max_gap,
        max_backoff,
    })
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` must be 1–64 characters of a–z, 0–9, `-` and `_` (it appears in API paths)"
        ))
    }
}

fn check_host_port(addr: &str) -> Result<String, String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(addr.to_string())
        }
        _ => Err(format!("`{addr}` is not HOST:PORT")),
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 500ms or 10s ({e})"))
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        d if d.is_zero() => Err(format!("`{text}` must be longer than zero")),
        d => Ok(d),
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// toml's message with the line and column it points at.
fn located(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("{message} (line {line}, column {column}: `{source}`)")
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
state_dir = "/tmp/constella"
[api]
listen = "127.0.0.1:4747"

[[bus]]
name = "rs485"
rtu = "/dev/ttyUSB0"
baud = 9600
timeout = "800ms"

[[bus]]
name = "gw"
tcp = "10.0.0.5:502"

[[device]]
name = "house-1"
model = "kub1063"
bus = "rs485"
unit = 1
poll_interval = "5s"

[[device]]
name = "house-2"
model = "kub1063"
bus = "gw"
unit = 3
"#;

    #[test]
    fn a_good_file_parses_with_defaults() {
        let config = Config::parse(Path::new("c.toml"), GOOD).expect("valid");
        assert_eq!(config.buses.len(), 2);
        assert_eq!(config.buses[0].timing.timeout, Duration::from_millis(800));
        assert_eq!(config.buses[0].timing.frame_gap.as_micros(), 3645);
        assert_eq!(config.buses[0].max_block, 20);
        assert_eq!(config.devices[1].poll_interval, Duration::from_secs(10));
        assert_eq!(
            config.buses[1].link,
            Link::Tcp {
                addr: "10.0.0.5:502".into()
            }
        );
    }

    /// Applies each (find, replace) edit to the good file; each result must fail with its message.
    #[test]
    fn each_bad_input_gets_its_own_message() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "baud = 9600",
                "baud_rate = 9600",
                "bus[0].baud_rate: unknown field `baud_rate`, expected one of `name`, `rtu`, `tcp`, `rtu_over_tcp`, `baud`, `data_bits`, `parity`, `stop_bits`, `timeout`, `frame_gap`, `reply_gap`, `max_block`, `max_gap`, `max_backoff` (line 9, column 1: `baud_rate = 9600`)",
            ),
            (
                "baud = 9600",
                "baud = \"fast\"",
                "bus[0].baud: invalid type: string \"fast\", expected u32 (line 9, column 8: `baud = \"fast\"`)",
            ),
            (
                "unit = 3",
                "unit = 300",
                "device[1].unit: 300 is not a Modbus unit id (1–247)",
            ),
            (
                "bus = \"gw\"",
                "bus = \"nope\"",
                "device[1].bus: no bus named `nope` (defined: gw, rs485)",
            ),
            (
                "model = \"kub1063\"",
                "model = \"kub9000\"",
                "device[0].model: unknown model `kub9000` (supported: kub1063)",
            ),
            (
                "name = \"house-2\"",
                "name = \"house-1\"",
                "device[1].name: `house-1` is used by another device",
            ),
            (
                "name = \"house-2\"",
                "name = \"House 2\"",
                "device[1].name: `House 2` must be 1–64 characters of a–z, 0–9, `-` and `_` (it appears in API paths)",
            ),
            (
                "unit = 3",
                "unit = 1\nbus = \"rs485\"",
                "(syntax): duplicate key (line 28, column 1: `bus = \"rs485\"`)",
            ),
            (
                "poll_interval = \"5s\"",
                "poll_interval = \"often\"",
                "device[0].poll_interval: `often` is not a duration like 500ms or 10s (expected number at 0)",
            ),
            (
                "poll_interval = \"5s\"",
                "poll_interval = \"0s\"",
                "device[0].poll_interval: `0s` must be longer than zero",
            ),
            (
                "tcp = \"10.0.0.5:502\"",
                "tcp = \"10.0.0.5\"",
                "bus[1].tcp: `10.0.0.5` is not HOST:PORT",
            ),
            (
                "tcp = \"10.0.0.5:502\"",
                "tcp = \"10.0.0.5:502\"\nbaud = 19200",
                "bus[1].baud: line settings apply only to a serial (`rtu`) bus",
            ),
            (
                "tcp = \"10.0.0.5:502\"",
                "",
                "bus[1].rtu: a bus needs exactly one of `rtu` (serial device), `tcp` or `rtu_over_tcp`",
            ),
            (
                "timeout = \"800ms\"",
                "frame_gap = \"1ms\"",
                "bus[0].frame_gap: 1ms is shorter than 3.5 character times on this line (3645 µs)",
            ),
            (
                "timeout = \"800ms\"",
                "max_block = 2",
                "bus[0].max_block: 2 is outside 4–125 (an alarm group is 4 words; Modbus allows 125)",
            ),
            (
                "tcp = \"10.0.0.5:502\"",
                "rtu = \"/dev/ttyUSB0\"",
                "bus[1].rtu: /dev/ttyUSB0 is already bus `rs485`",
            ),
            (
                "timeout = \"800ms\"",
                "parity = \"mark\"",
                "bus[0].parity: `mark` is not none, even or odd",
            ),
            (
                "[api]",
                "[history]\nraw_keep = \"30d\"\nrollup_keep = \"7d\"\n[api]",
                "history.rollup_keep: must be at least raw_keep",
            ),
            (
                "[api]",
                "[speedtest]\ndownload_url = \"https://speed.example/10MB\"\n[api]",
                "speedtest.download_url: `https://speed.example/10MB`: https is not supported (the agent ships no TLS stack); use http:// over the overlay",
            ),
            (
                "[api]",
                "[history]\nflush_interval = \"0s\"\n[api]",
                "history.flush_interval: `0s` must be longer than zero",
            ),
            (
                "listen = \"127.0.0.1:4747\"",
                "listen = \"localhost\"",
                "api.listen: `localhost` is not an IP:port address",
            ),
            (
                "state_dir",
                "stat_dir",
                "stat_dir: unknown field `stat_dir`, expected one of `state_dir`, `api`, `history`, `speedtest`, `cluster`, `bus`, `device` (line 2, column 1: `stat_dir = \"/tmp/constella\"`)",
            ),
        ];
        let mut wrong = Vec::new();
        for (from, to, expect) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "edit `{from}` did not apply");
            let got = match Config::parse(Path::new("/etc/constella/constella.toml"), &text) {
                Ok(_) => "accepted".to_string(),
                Err(e) => e.to_string(),
            };
            let expect = format!("/etc/constella/constella.toml: {expect}");
            if got != expect {
                wrong.push(format!(
                    "edit {from:?} -> {to:?}\n  got:    {got}\n  wanted: {expect}"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn unreadable_file_names_itself() {
        let err = Config::load(Path::new("/nonexistent/constella.toml")).expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/constella.toml: (file): cannot be read"),
            "{err}"
        );
    }
}
