//! Stored history: bucketed series (`/api/v1/node/metrics`, `/api/v1/devices/{id}/history`)
//! and device events (`/api/v1/events`).

use serde::{Deserialize, Serialize};

use crate::DeviceName;

/// Series over a range, in buckets of `step_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesList {
    /// Start of the range (RFC 3339).
    pub from: String,
    /// End of the range (RFC 3339).
    pub to: String,
    /// Bucket width in seconds.
    pub step_s: f64,
    /// One entry per series.
    pub series: Vec<Series>,
}

/// One named series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// `cpu.total`, `net.eth0.rx_bytes_per_s`, a device field key, …
    pub name: String,
    /// Non-empty buckets, oldest first.
    pub points: Vec<Point>,
}

/// One bucket of a series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Start of the bucket (RFC 3339).
    pub at: String,
    /// Mean of the values in the bucket.
    pub avg: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// How many values (raw samples, or samples behind the rollups).
    pub count: i64,
}

/// `GET /api/v1/events`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventList {
    /// Events, oldest first.
    pub events: Vec<Event>,
}

/// What happened to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An alarm or warning bit was set.
    Raised,
    /// An alarm or warning bit was cleared.
    Cleared,
    /// A sensor reading turned into a special code.
    SensorLost,
    /// A sensor reads a value again.
    SensorBack,
    /// The device stopped answering.
    DeviceUnreachable,
    /// The device answers again.
    DeviceBack,
}

impl EventKind {
    /// The name as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Raised => "raised",
            EventKind::Cleared => "cleared",
            EventKind::SensorLost => "sensor_lost",
            EventKind::SensorBack => "sensor_back",
            EventKind::DeviceUnreachable => "device_unreachable",
            EventKind::DeviceBack => "device_back",
        }
    }
}

/// One stored event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing id; `after=ID` pages on it.
    pub id: i64,
    /// When it was seen (RFC 3339).
    pub at: String,
    /// The device.
    pub device: DeviceName,
    /// What happened.
    pub kind: EventKind,
    /// What it is about: `active_alarms/41`, `pressure`, `device`, …
    pub subject: String,
    /// Detail text (a status, an error).
    pub detail: String,
}
