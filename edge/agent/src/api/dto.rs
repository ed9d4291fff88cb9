//! The device table and `common/kub1063`'s decodings, converted by hand into the API's shapes
//! (`constella_api::devices`), so core types never carry serde derives.

use std::time::SystemTime;

use constella_api::devices::{
    AlarmFlag, AlarmGroup, Counters, DeviceDetail, DeviceStatus, DeviceSummary, Field, FieldStatus,
    Named, RegisterTable,
};
use constella_kub1063::{Flag, Status, Table, flags_of};

use crate::devices::DeviceState;
use crate::outcome::Health;

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

pub(super) fn summary(d: &DeviceState) -> DeviceSummary {
    let c = &d.counters;
    DeviceSummary {
        id: d.name.clone(),
        model: "kub1063".into(),
        bus: d.bus.clone(),
        link: d.link.clone(),
        unit: d.unit,
        poll_interval_ms: d.poll_interval.as_millis() as u64,
        status: match d.health() {
            Health::Pending => DeviceStatus::Pending,
            Health::Online => DeviceStatus::Online,
            Health::Failing => DeviceStatus::Failing,
            Health::Offline => DeviceStatus::Offline,
        },
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

pub(super) fn detail(d: &DeviceState, lang: Lang) -> DeviceDetail {
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
            Field {
                key: f.register.key.into(),
                address: f.register.addr.to_string(),
                table: match f.register.table {
                    Table::Input => RegisterTable::Input,
                    Table::Holding => RegisterTable::Holding,
                },
                name: lang.pick(f.register.en, f.register.ru).into(),
                raw: f.raw,
                value: f.reading.value.filter(|_| ok).map(|v| v.as_f64()),
                text: f.reading.value.filter(|_| ok).map(|v| v.to_string()),
                unit: f.register.unit.symbol().into(),
                status: field_status(f.reading.status),
                at: rfc3339(at),
            }
        })
        .collect();
    let alarms = decoded
        .groups
        .iter()
        .map(|g| AlarmGroup {
            group: g.group.as_str().into(),
            mask: format!("{:#018x}", g.mask),
            flags: flags_of(g.mask)
                .map(|flag| match flag {
                    Flag::Known(bit) => AlarmFlag {
                        bit: bit.bit,
                        key: Some(bit.key.into()),
                        text: lang.pick(bit.en, bit.ru).into(),
                    },
                    Flag::Undocumented(bit) => AlarmFlag {
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
        .map(|o| Named {
            key: o.key.into(),
            text: lang.pick(o.en, o.ru).into(),
        })
        .collect();
    DeviceDetail {
        summary: summary(d),
        fields,
        alarms,
        outputs_on,
    }
}

fn field_status(status: Status) -> FieldStatus {
    match status {
        Status::Ok => FieldStatus::Ok,
        Status::Pending => FieldStatus::Pending,
        Status::Break => FieldStatus::Break,
        Status::Error => FieldStatus::Error,
        Status::Disabled => FieldStatus::Disabled,
        Status::NotAssigned => FieldStatus::NotAssigned,
        Status::Unused => FieldStatus::Unused,
    }
}

pub(super) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}
