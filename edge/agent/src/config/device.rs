//! `[[device]]`: a controller on a bus, its unit id and poll interval.

use std::collections::BTreeSet;
use std::time::Duration;

use constella_api::{BusName, DeviceName};
use constella_modbus::UnitId;
use serde::Deserialize;

use super::{Bus, Invalid, list, positive_duration};

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Device {
    pub(crate) name: DeviceName,
    pub(crate) bus: BusName,
    pub(crate) unit: UnitId,
    pub(crate) poll_interval: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceFile {
    name: String,
    model: String,
    bus: String,
    unit: i64,
    poll_interval: Option<String>,
}

/// Every `[[device]]` table, in order: names unique, on a defined bus, one device per unit id.
pub(super) fn parse_all(raw: Vec<DeviceFile>, buses: &[Bus]) -> Result<Vec<Device>, Invalid> {
    let mut devices = Vec::new();
    let mut device_names = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("device[{i}].{key}");
        let name =
            DeviceName::try_from(raw.name).map_err(|reason| Invalid::new(at("name"), reason))?;
        if !device_names.insert(name.clone()) {
            return Err(Invalid::new(
                at("name"),
                format!("`{name}` is used by another device"),
            ));
        }
        if raw.model != "kub1063" {
            return Err(Invalid::new(
                at("model"),
                format!("unknown model `{}` (supported: kub1063)", raw.model),
            ));
        }
        let Some(bus) = buses.iter().find(|b| b.name == raw.bus.as_str()) else {
            // Sorted, so the message does not depend on the file's order.
            let known: BTreeSet<&str> = buses.iter().map(|b| b.name.as_str()).collect();
            let known: Vec<&str> = known.into_iter().collect();
            return Err(Invalid::new(
                at("bus"),
                format!("no bus named `{}` (defined: {})", raw.bus, list(&known)),
            ));
        };
        let unit =
            UnitId::try_from(raw.unit).map_err(|e| Invalid::new(at("unit"), e.to_string()))?;
        if !addresses.insert((bus.name.clone(), unit)) {
            return Err(Invalid::new(
                at("unit"),
                format!("unit {unit} on bus `{}` is already a device", bus.name),
            ));
        }
        let poll_interval = match raw.poll_interval {
            Some(text) => positive_duration(&text)
                .map_err(|reason| Invalid::new(at("poll_interval"), reason))?,
            None => DEFAULT_POLL_INTERVAL,
        };
        devices.push(Device {
            name,
            bus: bus.name.clone(),
            unit,
            poll_interval,
        });
    }

    Ok(devices)
}
