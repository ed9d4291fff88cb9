//! `[[bus]]`: an RS-485 line, a Modbus TCP gateway or RTU over TCP, with its line settings and
//! request timing.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use constella_modbus::{LineParity, LineSettings};
use serde::Deserialize;

use constella_api::BusName;

use super::{Invalid, duration, positive_duration};

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bus {
    pub(crate) name: BusName,
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

/// Largest block the fact sheet's own client read in one request.
const DEFAULT_MAX_BLOCK: u16 = 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BusFile {
    pub(super) name: String,
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

fn parse_bus(raw: BusFile, name: BusName, at: &dyn Fn(&str) -> String) -> Result<Bus, Invalid> {
    let err = |key: &str, reason: String| Invalid::new(at(key), reason);
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
        name,
        link,
        timing,
        max_block,
        max_gap,
        max_backoff,
    })
}

fn check_host_port(addr: &str) -> Result<String, String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(addr.to_string())
        }
        _ => Err(format!("`{addr}` is not HOST:PORT")),
    }
}

/// Every `[[bus]]` table, in order: names unique, one bus per serial device.
pub(super) fn parse_all(raw: Vec<BusFile>) -> Result<Vec<Bus>, Invalid> {
    let mut buses = Vec::new();
    let mut bus_names = BTreeSet::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("bus[{i}].{key}");
        let name = BusName::try_from(raw.name.clone())
            .map_err(|reason| Invalid::new(at("name"), reason))?;
        if !bus_names.insert(name.clone()) {
            return Err(Invalid::new(
                at("name"),
                format!("`{name}` is used by another bus"),
            ));
        }
        let bus = parse_bus(raw, name, &at)?;
        if let Link::Rtu { path, .. } = &bus.link {
            // One task owns each serial line; a second bus on it would fight for the port.
            let owner = buses
                .iter()
                .find(|b: &&Bus| matches!(&b.link, Link::Rtu { path: p, .. } if p == path));
            if let Some(owner) = owner {
                return Err(Invalid::new(
                    at("rtu"),
                    format!("{} is already bus `{}`", path.display(), owner.name),
                ));
            }
        }
        buses.push(bus);
    }

    Ok(buses)
}
