//! Device events, sans-IO: what changed in a device between two observations. A [`View`] keeps
//! only what events are about (reachability, the four alarm/warning masks, sensor statuses); it is
//! saved in the store after every change so a restart compares against the last state instead of
//! announcing everything again.

use std::collections::BTreeMap;

use constella_kub1063::{Decoded, Flag, Group, Kind, Status, flags_of};

use crate::outcome::Health;

/// The event-relevant state of one device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct View {
    reachable: Option<bool>,
    groups: BTreeMap<Group, u64>,
    sensors: BTreeMap<&'static str, Status>,
}

/// What kind of transition an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    Raised,
    Cleared,
    SensorLost,
    SensorBack,
    DeviceUnreachable,
    DeviceBack,
}

impl EventKind {
    const ALL: [EventKind; 6] = [
        EventKind::Raised,
        EventKind::Cleared,
        EventKind::SensorLost,
        EventKind::SensorBack,
        EventKind::DeviceUnreachable,
        EventKind::DeviceBack,
    ];

    /// The name the store keeps and the API shows.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Raised => "raised",
            EventKind::Cleared => "cleared",
            EventKind::SensorLost => "sensor_lost",
            EventKind::SensorBack => "sensor_back",
            EventKind::DeviceUnreachable => "device_unreachable",
            EventKind::DeviceBack => "device_back",
        }
    }

    /// The kind a stored name stands for.
    pub(crate) fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One transition; `subject` names what changed (`active_alarms/41`, `pressure`, …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) kind: EventKind,
    pub(crate) subject: String,
    pub(crate) detail: String,
}

impl View {
    /// The view after observing a device in `health` whose image decodes to `decoded`, starting
    /// from `self`. Data of a device that did not answer its last poll is stale, so only its
    /// reachability is taken then.
    pub(crate) fn observe(&self, health: Health, decoded: &Decoded) -> View {
        let mut next = self.clone();
        match health {
            Health::Online => next.reachable = Some(true),
            Health::Offline => next.reachable = Some(false),
            Health::Pending | Health::Failing => {}
        }
        if health != Health::Online {
            return next;
        }
        for state in &decoded.groups {
            next.groups.insert(state.group, state.mask);
        }
        for field in decoded.fields.iter().filter(|f| is_sensor(f.register.kind)) {
            next.sensors
                .insert(field.register.key, field.reading.status);
        }
        next
    }

    /// Transitions from `self` to `next`, in a fixed order: reachability, groups, sensors.
    pub(crate) fn changes(&self, next: &View) -> Vec<Change> {
        let mut out = Vec::new();
        match (self.reachable, next.reachable) {
            (Some(false), Some(true)) => {
                out.push(change(EventKind::DeviceBack, "device", "answers again"))
            }
            (before, Some(false)) if before != Some(false) => {
                out.push(change(
                    EventKind::DeviceUnreachable,
                    "device",
                    "stopped answering",
                ));
            }
            _ => {}
        }
        for (group, &mask) in &next.groups {
            let before = self.groups.get(group).copied().unwrap_or(0);
            for (kind, bits) in [
                (EventKind::Raised, mask & !before),
                (EventKind::Cleared, before & !mask),
            ] {
                for flag in flags_of(bits) {
                    let text = match flag {
                        Flag::Known(bit) => bit.en.to_string(),
                        Flag::Undocumented(bit) => format!("undocumented bit {bit}"),
                    };
                    out.push(change(
                        kind,
                        &format!("{}/{}", group.as_str(), flag.bit()),
                        &text,
                    ));
                }
            }
        }
        for (key, &status) in &next.sensors {
            let before = self.sensors.get(key).copied();
            let lost = |s: Option<Status>| {
                matches!(s, Some(Status::Break | Status::Error | Status::Pending))
            };
            if lost(Some(status)) && !lost(before) {
                out.push(change(EventKind::SensorLost, key, status.as_str()));
            } else if status == Status::Ok && lost(before) {
                out.push(change(EventKind::SensorBack, key, "ok"));
            }
        }
        out
    }

    /// The view as (key, value) rows for the store.
    pub(crate) fn to_rows(&self) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        if let Some(reachable) = self.reachable {
            rows.push(("reachable".into(), if reachable { "1" } else { "0" }.into()));
        }
        rows.extend(
            self.groups
                .iter()
                .map(|(g, m)| (format!("group.{}", g.as_str()), m.to_string())),
        );
        rows.extend(
            self.sensors
                .iter()
                .map(|(k, s)| (format!("sensor.{k}"), s.as_str().to_string())),
        );
        rows
    }

    /// Rebuilds a view from stored rows; rows it does not understand are ignored.
    pub(crate) fn from_rows(rows: &[(String, String)]) -> View {
        let mut view = View::default();
        for (key, value) in rows {
            if key == "reachable" {
                view.reachable = Some(value == "1");
            } else if let Some(name) = key.strip_prefix("group.") {
                let group = Group::ALL.into_iter().find(|g| g.as_str() == name);
                if let (Some(group), Ok(mask)) = (group, value.parse()) {
                    view.groups.insert(group, mask);
                }
            } else if let Some(name) = key.strip_prefix("sensor.") {
                let register = constella_kub1063::REGISTERS
                    .iter()
                    .find(|r| r.key == name && is_sensor(r.kind));
                let status = SENSOR_STATUSES.iter().find(|s| s.as_str() == value);
                if let (Some(register), Some(status)) = (register, status) {
                    view.sensors.insert(register.key, *status);
                }
            }
        }
        view
    }
}

const SENSOR_STATUSES: [Status; 5] = [
    Status::Ok,
    Status::Pending,
    Status::Break,
    Status::Error,
    Status::Disabled,
];

fn is_sensor(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Sensor { .. } | Kind::Temperature | Kind::ControlTemperature
    )
}

fn change(kind: EventKind, subject: &str, detail: &str) -> Change {
    Change {
        kind,
        subject: subject.to_string(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{Counters, DeviceState, Sample};
    use constella_kub1063::{RegisterAddr, Table, fixtures::snapshot};
    use std::time::{Duration, SystemTime};

    fn device(snapshot_id: char, failures: u32) -> DeviceState {
        let words = snapshot(snapshot_id)
            .expect("snapshot")
            .words
            .iter()
            .map(|&(a, raw)| {
                (
                    (Table::Input, RegisterAddr(a)),
                    Sample {
                        raw,
                        at: SystemTime::UNIX_EPOCH,
                    },
                )
            })
            .collect();
        DeviceState {
            name: "house-1".parse().expect("valid name"),
            bus: "gw".parse().expect("valid name"),
            link: "tcp".into(),
            unit: constella_modbus::UnitId::try_from(1u8).expect("valid unit"),
            poll_interval: Duration::from_secs(10),
            words,
            last_poll: Some(SystemTime::UNIX_EPOCH),
            last_ok: None,
            consecutive_failures: failures,
            last_error: None,
            counters: Counters::default(),
        }
    }

    /// `view` after observing `device`, as the recorder does.
    fn seen(view: &View, device: &DeviceState) -> View {
        view.observe(device.health(), &device.image().decode())
    }

    fn kinds(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{} {}", c.kind.as_str(), c.subject))
            .collect()
    }

    #[test]
    fn a_sequence_of_observations_gives_each_transition_once() {
        let start = seen(&View::default(), &device('E', 0));
        assert_eq!(
            kinds(&View::default().changes(&start)),
            [] as [String; 0],
            "E has nothing to report"
        );
        // B: pressure break, bit 41 active and registered.
        let broken = seen(&start, &device('B', 0));
        assert_eq!(
            kinds(&start.changes(&broken)),
            [
                "raised active_alarms/41",
                "raised registered_alarms/41",
                "sensor_lost pressure"
            ]
        );
        assert_eq!(
            kinds(&broken.changes(&seen(&broken, &device('B', 0)))),
            [] as [String; 0],
            "no repeat"
        );
        // Failing twice changes nothing; the third failure makes it unreachable.
        let failing = seen(&broken, &device('B', 2));
        assert!(broken.changes(&failing).is_empty());
        let gone = seen(&failing, &device('B', 3));
        assert_eq!(
            kinds(&failing.changes(&gone)),
            ["device_unreachable device"]
        );
        // Back, with the sensor restored; registered bit 41 stays latched (C also raises bit 24).
        let back = seen(&gone, &device('C', 0));
        assert_eq!(
            kinds(&gone.changes(&back)),
            [
                "device_back device",
                "raised active_alarms/24",
                "cleared active_alarms/41",
                "raised registered_alarms/24",
                "cleared registered_alarms/41",
                "sensor_lost co2",
                "sensor_back pressure"
            ]
        );
        assert_eq!(back.changes(&back).len(), 0);
    }

    #[test]
    fn a_restored_view_remembers_everything_events_depend_on() {
        let view = seen(&View::default(), &device('G', 0));
        let restored = View::from_rows(&view.to_rows());
        assert_eq!(restored, view);
        assert!(
            restored
                .changes(&seen(&restored, &device('G', 0)))
                .is_empty()
        );
        assert_eq!(
            View::from_rows(&[
                ("group.bogus".into(), "1".into()),
                ("sensor.co2".into(), "melted".into())
            ]),
            View::default()
        );
    }
}
