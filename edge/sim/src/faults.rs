//! Fault injection: the `--fault` flag syntax and scenario files of timed faults.
//!
//! A fault spec is `[tcp:|rtu:|rtu-tcp:]UNIT=FAULT[,FAULT…]`; FAULT is one of `silent`, `crc`,
//! `exception:CODE`, `slow:MS`, `alarm:BIT`, `FIELD:pending|break|error|disabled` (FIELD is a
//! sensor or temperature register key such as `pressure` or `temp_inside_1`), or `clear` (drop
//! every fault of the unit, applied first).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use constella_kub1063::{Kind, REGISTERS, Table};
use serde::Deserialize;

use super::model::{Faults, SensorCode};

/// Which simulated bus a spec addresses; `None` = every bus with that unit id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BusKind {
    Tcp,
    Rtu,
    RtuTcp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub(crate) bus: Option<BusKind>,
    pub(crate) unit: u8,
    clear: bool,
    changes: Vec<Change>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Change {
    Silent,
    Crc,
    Exception(u8),
    Slow(u64),
    Alarm(u8),
    Sensor(&'static str, SensorCode),
}

impl FaultSpec {
    pub fn parse(spec: &str) -> anyhow::Result<FaultSpec> {
        let (target, faults) = spec.split_once('=').with_context(|| {
            format!("fault `{spec}`: expected UNIT=FAULT[,FAULT…], e.g. rtu:2=silent")
        })?;
        let (bus, unit) = match target.split_once(':') {
            Some(("tcp", unit)) => (Some(BusKind::Tcp), unit),
            Some(("rtu", unit)) => (Some(BusKind::Rtu), unit),
            Some(("rtu-tcp", unit)) => (Some(BusKind::RtuTcp), unit),
            Some((bus, _)) => bail!("fault `{spec}`: unknown bus `{bus}` (tcp, rtu or rtu-tcp)"),
            None => (None, target),
        };
        let unit: u8 = unit
            .parse()
            .ok()
            .filter(|u| (1..=247).contains(u))
            .with_context(|| {
                format!("fault `{spec}`: unit `{unit}` is not a Modbus unit id (1–247)")
            })?;
        let mut clear = false;
        let mut changes = Vec::new();
        for fault in faults.split(',').map(str::trim) {
            let number = |what: &str, text: &str| -> anyhow::Result<u64> {
                text.parse()
                    .with_context(|| format!("fault `{spec}`: {what} `{text}` is not a number"))
            };
            let change = match fault.split_once(':') {
                None if fault == "clear" => {
                    clear = true;
                    continue;
                }
                None if fault == "silent" => Change::Silent,
                None if fault == "crc" => Change::Crc,
                Some(("exception", code)) => match number("exception code", code)? {
                    code @ 1..=255 => Change::Exception(code as u8),
                    _ => bail!("fault `{spec}`: exception code must be 1–255"),
                },
                Some(("slow", ms)) => Change::Slow(number("delay", ms)?),
                Some(("alarm", bit)) => match number("alarm bit", bit)? {
                    bit @ 0..=63 => Change::Alarm(bit as u8),
                    _ => bail!("fault `{spec}`: alarm bit must be 0–63"),
                },
                Some((field, code)) => {
                    let register = REGISTERS
                        .iter()
                        .find(|r| {
                            r.key == field
                                && r.table == Table::Input
                                && matches!(r.kind, Kind::Sensor { .. } | Kind::Temperature)
                        })
                        .with_context(|| {
                            format!("fault `{spec}`: `{field}` is not a sensor field")
                        })?;
                    let code = match code {
                        "pending" => SensorCode::Pending,
                        "break" => SensorCode::Break,
                        "error" => SensorCode::Error,
                        "disabled" => SensorCode::Disabled,
                        _ => bail!(
                            "fault `{spec}`: sensor code `{code}` (pending, break, error, disabled)"
                        ),
                    };
                    Change::Sensor(register.key, code)
                }
                None => bail!("fault `{spec}`: unknown fault `{fault}`"),
            };
            changes.push(change);
        }
        Ok(FaultSpec {
            bus,
            unit,
            clear,
            changes,
        })
    }

    pub(crate) fn matches(&self, bus: BusKind, unit: u8) -> bool {
        self.unit == unit && self.bus.is_none_or(|b| b == bus)
    }

    pub(crate) fn apply(&self, faults: &mut Faults) {
        if self.clear {
            *faults = Faults::default();
        }
        for change in &self.changes {
            match change {
                Change::Silent => faults.silent = true,
                Change::Crc => faults.corrupt_crc = true,
                Change::Exception(code) => faults.exception = Some(*code),
                Change::Slow(ms) => faults.slow_ms = *ms,
                Change::Alarm(bit) => faults.alarms |= 1 << bit,
                Change::Sensor(key, code) => {
                    faults.sensors.insert(key, *code);
                }
            }
        }
    }
}

/// A scenario file: faults applied at offsets from the simulator's start.
///
/// ```toml
/// [[step]]
/// at = "10s"
/// fault = "rtu:2=silent"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    step: Vec<StepFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    at: String,
    fault: String,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub(crate) at: Duration,
    pub(crate) fault: FaultSpec,
}

pub fn load_scenario(path: &Path) -> anyhow::Result<Vec<Step>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Failed to read {}", path.display()))?;
    let file: ScenarioFile =
        toml::from_str(&text).with_context(|| format!("{}: invalid scenario", path.display()))?;
    let mut steps = file
        .step
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            let at = humantime::parse_duration(&step.at).with_context(|| {
                format!(
                    "{}: step[{i}].at: `{}` is not a duration",
                    path.display(),
                    step.at
                )
            })?;
            let fault = FaultSpec::parse(&step.fault)
                .with_context(|| format!("{}: step[{i}].fault", path.display()))?;
            Ok(Step { at, fault })
        })
        .collect::<anyhow::Result<Vec<Step>>>()?;
    steps.sort_by_key(|s| s.at);
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_apply() {
        let spec =
            FaultSpec::parse("rtu:2=silent,slow:150,pressure:break,alarm:57").expect("valid");
        assert!(spec.matches(BusKind::Rtu, 2));
        assert!(!spec.matches(BusKind::Tcp, 2));
        let mut faults = Faults::default();
        spec.apply(&mut faults);
        assert!(faults.silent);
        assert_eq!(faults.slow_ms, 150);
        assert_eq!(faults.sensors.get("pressure"), Some(&SensorCode::Break));
        assert_eq!(faults.alarms, 1 << 57);
        FaultSpec::parse("2=clear")
            .expect("valid")
            .apply(&mut faults);
        assert_eq!(faults, Faults::default());
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s: &str| format!("{:#}", FaultSpec::parse(s).expect_err("invalid"));
        assert!(err("silent").contains("expected UNIT=FAULT"));
        assert!(err("0=silent").contains("not a Modbus unit id"));
        assert!(err("usb:1=silent").contains("unknown bus"));
        assert!(err("1=loud").contains("unknown fault `loud`"));
        assert!(err("1=co3:break").contains("not a sensor field"));
        assert!(err("1=co2:melted").contains("sensor code"));
        assert!(err("1=alarm:64").contains("0–63"));
    }
}
