//! The agent's configuration file (TOML): what it looks like on disk (`File`, `BusFile`,
//! `DeviceFile`) and the typed, checked form the agent runs on (`Config`). Every error names the
//! file, the field and the reason.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod bus;
mod cluster;
mod device;
mod history;
mod speedtest;

pub(crate) use bus::{Bus, Link};
pub(crate) use device::Device;
pub(crate) use history::HistoryConfig;

use crate::speedtest::SpeedtestConfig;

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

/// A section's error before the file is named: the field and the reason.
#[derive(Debug)]
pub(super) struct Invalid {
    field: String,
    reason: String,
}

impl Invalid {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
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
    history: Option<history::HistoryFile>,
    speedtest: Option<speedtest::SpeedtestFile>,
    cluster: Option<cluster::ClusterFile>,
    #[serde(default)]
    bus: Vec<bus::BusFile>,
    #[serde(default)]
    device: Vec<device::DeviceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiFile {
    listen: Option<String>,
}

impl Config {
    /// Reads and checks a configuration file.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            field: "(file)".into(),
            reason: format!("cannot be read: {e}"),
        })?;
        let config = Config::parse(path, &text)?;
        // Named here, where the field is known, rather than by the first write into it.
        if config.state_dir.exists() && !config.state_dir.is_dir() {
            return Err(ConfigError {
                file: path.to_path_buf(),
                field: "state_dir".into(),
                reason: format!("{} is not a directory", config.state_dir.display()),
            });
        }
        Ok(config)
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

        let history = match file.history {
            Some(raw) => history::parse(raw).map_err(|e| fail(&e.field, e.reason))?,
            None => HistoryConfig::default(),
        };

        let cluster = match file.cluster {
            Some(raw) => cluster::parse(raw).map_err(|e| fail(&e.field, e.reason))?,
            None => crate::cluster::Settings::default(),
        };

        let speedtest = match file.speedtest {
            Some(raw) => speedtest::parse(raw).map_err(|e| fail(&e.field, e.reason))?,
            None => speedtest::unconfigured(),
        };

        let buses = bus::parse_all(file.bus).map_err(|e| fail(&e.field, e.reason))?;
        let devices =
            device::parse_all(file.device, &buses).map_err(|e| fail(&e.field, e.reason))?;

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

/// The longest duration a setting may take. Timers add durations to the clock, and humantime
/// accepts thousands of years; ten years is past any retention or timeout anyone means.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

fn duration(text: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 500ms or 10s ({e})"))?;
    if parsed > MAX_DURATION {
        return Err(format!("`{text}` is longer than 10 years"));
    }
    Ok(parsed)
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
                "[api]",
                "[history]\nraw_keep = \"100000y\"\n[api]",
                "history.raw_keep: `100000y` is longer than 10 years",
            ),
            (
                "[api]",
                "[history]\nmax_size_mb = 17592186044416\n[api]",
                "history.max_size_mb: 17592186044416 is outside 1–1048576 (1 TiB)",
            ),
            (
                "[api]",
                "[cluster]\nprofile = \"lte\"\n[api]",
                "cluster.profile: `lte` is not a timing profile; choose one of standard, metered",
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
    fn a_timing_profile_sets_the_defaults_and_explicit_keys_win() {
        // The example config with a `[cluster]` section holding `keys`.
        let with_cluster = |keys: &str| {
            let text = GOOD.replacen("[api]", &format!("[cluster]\n{keys}[api]"), 1);
            Config::parse(Path::new("c.toml"), &text)
                .expect("valid")
                .cluster
        };
        let cluster = with_cluster("profile = \"metered\"\n");
        assert_eq!(cluster.lease.duration, Duration::from_secs(28));
        assert_eq!(cluster.lease.renew_every, Duration::from_secs(20));
        assert_eq!(cluster.timing.probe_period, Duration::from_secs(60));
        assert_eq!(cluster.sync_every, Duration::from_secs(300));

        let cluster = with_cluster("profile = \"metered\"\nlease_duration = \"14s\"\n");
        assert_eq!(cluster.lease.duration, Duration::from_secs(14));
        assert_eq!(cluster.lease.renew_every, Duration::from_secs(10));
        assert_eq!(cluster.timing.probe_period, Duration::from_secs(60));

        let standard = Config::parse(Path::new("c.toml"), GOOD)
            .expect("valid")
            .cluster;
        assert_eq!(cluster.profile, crate::cluster::Profile::Metered);
        assert_eq!(standard.profile, crate::cluster::Profile::Standard);
        assert_eq!(standard.lease.renew_every, Duration::from_secs(3));
        assert_eq!(standard.timing.probe_period, Duration::from_secs(12));
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
