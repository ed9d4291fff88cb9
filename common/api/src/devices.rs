//! `/health` and the device endpoints: `/api/v1/devices`, `/api/v1/devices/{id}`,
//! `…/reset-alarms`.

use std::collections::BTreeMap;

use constella_modbus::UnitId;
use serde::{Deserialize, Serialize};

use crate::{BusName, DeviceName};

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok` when the agent answers.
    pub status: String,
    /// The agent's version.
    pub version: String,
}

/// How a device is doing, from its recent polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Not polled yet.
    Pending,
    /// The last poll succeeded.
    Online,
    /// Recent polls failed; it answered not long ago.
    Failing,
    /// It has not answered for a while.
    Offline,
}

impl DeviceStatus {
    /// The name as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Online => "online",
            DeviceStatus::Failing => "failing",
            DeviceStatus::Offline => "offline",
        }
    }
}

/// `GET /api/v1/devices`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceList {
    /// Every configured device, in configuration order.
    pub devices: Vec<DeviceSummary>,
}

/// One device's identity, link and poll health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// The device's name, its id in API paths.
    pub id: DeviceName,
    /// The controller model (`kub1063`).
    pub model: String,
    /// The bus it is on.
    pub bus: BusName,
    /// How the bus is reached (`rtu /dev/ttyUSB0`, `tcp 10.0.0.5:502`, …).
    pub link: String,
    /// Modbus unit id.
    pub unit: UnitId,
    /// Time between full polls, in milliseconds.
    pub poll_interval_ms: u64,
    /// Poll health.
    pub status: DeviceStatus,
    /// When the last poll ended (RFC 3339).
    pub last_poll: Option<String>,
    /// When a poll last succeeded (RFC 3339).
    pub last_ok: Option<String>,
    /// The last poll error, if the last poll failed.
    pub last_error: Option<String>,
    /// Polls failed in a row.
    pub consecutive_failures: u32,
    /// Poll and request counters.
    pub counters: Counters,
}

/// Poll and request counters of one device since the agent started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Complete polls that succeeded.
    pub polls_ok: u64,
    /// Polls that failed.
    pub polls_failed: u64,
    /// Modbus requests sent.
    pub requests: u64,
    /// Requests that got no answer in time.
    pub timeouts: u64,
    /// Replies with a bad CRC or framing.
    pub crc_framing: u64,
    /// Modbus exception replies.
    pub exceptions: u64,
    /// Connection-level errors.
    pub io: u64,
    /// Exception replies by code (`0x02`, …).
    pub exception_codes: BTreeMap<String, u64>,
}

/// `GET /api/v1/devices/{id}`: the summary plus every decoded register.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceDetail {
    /// Identity and health.
    #[serde(flatten)]
    pub summary: DeviceSummary,
    /// Every register of the map, decoded.
    pub fields: Vec<Field>,
    /// Alarm and warning groups with their set flags.
    pub alarms: Vec<AlarmGroup>,
    /// Closed output relays.
    pub outputs_on: Vec<Named>,
}

/// The register table a field lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterTable {
    /// Input registers (FC04).
    Input,
    /// Holding registers (FC03/FC06).
    Holding,
}

/// A field's status, from the controller's special codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldStatus {
    /// A value.
    Ok,
    /// Not read yet (or the sensor is warming up).
    Pending,
    /// Sensor line break.
    Break,
    /// Sensor error.
    Error,
    /// Switched off in the controller.
    Disabled,
    /// No sensor assigned.
    NotAssigned,
    /// The register is not used by this controller.
    Unused,
}

/// One decoded register.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// Stable key (`temp_inside_1`, `humidity`, …).
    pub key: String,
    /// Register address (`0x0101`).
    pub address: String,
    /// Which table.
    pub table: RegisterTable,
    /// Name in the requested language.
    pub name: String,
    /// The raw word.
    pub raw: u16,
    /// The value, when the status is `ok`.
    pub value: Option<f64>,
    /// The exact decimal text of the value, when the status is `ok`.
    pub text: Option<String>,
    /// Unit symbol (`°C`, `%`, …), empty if none.
    pub unit: String,
    /// Status from the special codes.
    pub status: FieldStatus,
    /// When the word was read (RFC 3339).
    pub at: String,
}

/// An alarm or warning group: its 64-bit mask and the flags set in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmGroup {
    /// `active_alarms`, `registered_alarms`, `active_warnings`, `registered_warnings`.
    pub group: String,
    /// The mask as `0x` and 16 hex digits.
    pub mask: String,
    /// The set bits.
    pub flags: Vec<AlarmFlag>,
}

/// One set alarm bit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmFlag {
    /// Bit number, 0–63.
    pub bit: u8,
    /// Stable key, or `None` for a bit the vendor sheet does not document.
    pub key: Option<String>,
    /// Text in the requested language.
    pub text: String,
}

/// A key with its text in the requested language.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    /// Stable key.
    pub key: String,
    /// Text in the requested language.
    pub text: String,
}

/// `POST /api/v1/devices/{id}/reset-alarms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetDone {
    /// The device.
    pub device: DeviceName,
    /// True once the unit echoed the write.
    pub reset: bool,
}
