//! The API's JSON shapes, converted by hand from the device table and `common`'s types so that
//! core types never carry serde derives.

use std::time::SystemTime;

use constella_kub1063::{Flag, Status, Table, flags_of};
use serde::Serialize;

use crate::devices::DeviceState;

#[derive(Clone, Copy)]
pub(super) enum Lang {
    En,
    Ru,
}

impl Lang {
    fn pick(self, en: &'static str, ru: &'static str) -> &'static str {
        match self {
            Lang::En => en,
            Lang::Ru => ru,
        }
    }
}

#[derive(Serialize)]
pub(super) struct Health {
    pub(super) status: &'static str,
    pub(super) version: &'static str,
}

#[derive(Serialize)]
pub(super) struct ErrorBody {
    pub(super) error: ErrorDetail,
}

#[derive(Serialize)]
pub(super) struct ErrorDetail {
    pub(super) code: &'static str,
    pub(super) message: String,
}

#[derive(Serialize)]
pub(super) struct ResetDone {
    pub(super) device: String,
    pub(super) reset: bool,
}

#[derive(Serialize)]
pub(super) struct DeviceList {
    pub(super) devices: Vec<DeviceSummary>,
}

#[derive(Serialize)]
pub(super) struct DeviceSummary {
    id: String,
    model: &'static str,
    bus: String,
    link: String,
    unit: u8,
    poll_interval_ms: u64,
    status: &'static str,
    last_poll: Option<String>,
    last_ok: Option<String>,
    last_error: Option<String>,
    consecutive_failures: u32,
    counters: Counters,
}

#[derive(Serialize)]
struct Counters {
    polls_ok: u64,
    polls_failed: u64,
    requests: u64,
    timeouts: u64,
    crc_framing: u64,
    exceptions: u64,
    io: u64,
    exception_codes: std::collections::BTreeMap<String, u64>,
}

impl DeviceSummary {
    pub(super) fn from_state(d: &DeviceState) -> DeviceSummary {
        let c = &d.counters;
        DeviceSummary {
            id: d.name.clone(),
            model: "kub1063",
            bus: d.bus.clone(),
            link: d.link.clone(),
            unit: d.unit,
            poll_interval_ms: d.poll_interval.as_millis() as u64,
            status: d.health().as_str(),
            last_poll: d.last_poll.map(rfc3339),
            last_ok: d.last_ok.map(rfc3339),
            last_error: d.last_error.clone(),
            consecutive_failures: d.consecutive_failures,
            counters: Counters {
                polls_ok: c.polls_ok,
                polls_failed: c.polls_failed,
                requests: c.requests,
                timeouts: c.timeouts,
                crc_framing: c.crc_framing,
                exceptions: c.exceptions,
                io: c.io,
                exception_codes: c
                    .exception_codes
                    .iter()
                    .map(|(k, v)| (format!("{k:#04x}"), *v))
                    .collect(),
            },
        }
    }
}

#[derive(Serialize)]
pub(super) struct DeviceDetail {
    #[serde(flatten)]
    summary: DeviceSummary,
    fields: Vec<FieldDto>,
    alarms: Vec<GroupDto>,
    outputs_on: Vec<NamedDto>,
}

#[derive(Serialize)]
struct FieldDto {
    key: &'static str,
    address: String,
    table: &'static str,
    name: &'static str,
    raw: u16,
    value: Option<f64>,
    text: Option<String>,
    unit: &'static str,
    status: &'static str,
    at: String,
}

#[derive(Serialize)]
struct GroupDto {
    group: &'static str,
    mask: String,
    flags: Vec<FlagDto>,
}

#[derive(Serialize)]
struct FlagDto {
    bit: u8,
    key: Option<&'static str>,
    text: String,
}

#[derive(Serialize)]
struct NamedDto {
    key: &'static str,
    text: &'static str,
}

impl DeviceDetail {
    pub(super) fn from_state(d: &DeviceState, lang: Lang) -> DeviceDetail {
        let decoded = d.image().decode();
        let fields = decoded
            .fields
            .iter()
            .map(|f| {
                let at = d
                    .words
                    .get(&(f.register.table, f.register.addr))
                    .map(|s| s.at)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let ok = f.reading.status == Status::Ok;
                FieldDto {
                    key: f.register.key,
                    address: f.register.addr.to_string(),
                    table: match f.register.table {
                        Table::Input => "input",
                        Table::Holding => "holding",
                    },
                    name: lang.pick(f.register.en, f.register.ru),
                    raw: f.raw,
                    value: f.reading.value.filter(|_| ok).map(|v| v.as_f64()),
                    text: f.reading.value.filter(|_| ok).map(|v| v.to_string()),
                    unit: f.register.unit.symbol(),
                    status: f.reading.status.as_str(),
                    at: rfc3339(at),
                }
            })
            .collect();
        let alarms = decoded
            .groups
            .iter()
            .map(|g| GroupDto {
                group: g.group.as_str(),
                mask: format!("{:#018x}", g.mask),
                flags: flags_of(g.mask)
                    .map(|flag| match flag {
                        Flag::Known(bit) => FlagDto {
                            bit: bit.bit,
                            key: Some(bit.key),
                            text: lang.pick(bit.en, bit.ru).into(),
                        },
                        Flag::Undocumented(bit) => FlagDto {
                            bit,
                            key: None,
                            text: match lang {
                                Lang::En => format!("undocumented bit {bit}"),
                                Lang::Ru => format!("недокументированный бит {bit}"),
                            },
                        },
                    })
                    .collect(),
            })
            .collect();
        let outputs_on = decoded
            .outputs_on
            .iter()
            .map(|o| NamedDto {
                key: o.key,
                text: lang.pick(o.en, o.ru),
            })
            .collect();
        DeviceDetail {
            summary: DeviceSummary::from_state(d),
            fields,
            alarms,
            outputs_on,
        }
    }
}

pub(super) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}
