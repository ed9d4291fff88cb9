//! `GET /api/v1/node`: the board the agent runs on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Host name, version, uptime, the latest node metrics and their summaries over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Host name.
    pub name: String,
    /// Agent version.
    pub version: String,
    /// Seconds since the agent started.
    pub agent_uptime_s: u64,
    /// When the latest sample was taken (RFC 3339), if any yet.
    pub sampled_at: Option<String>,
    /// What taking the latest sample cost, in microseconds.
    pub sample_cost_us: u64,
    /// The latest value of every series (`cpu.total`, `mem.used_pct`, …).
    pub metrics: BTreeMap<String, f64>,
    /// The summary window, in seconds.
    pub window_s: u64,
    /// Min, average, max and last of every series over the window.
    pub summaries: BTreeMap<String, Summary>,
    /// The history store.
    pub store: Store,
}

/// Min, average, max and last of one series over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Smallest value.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Largest value.
    pub max: f64,
    /// Latest value.
    pub last: f64,
    /// Samples in the window.
    pub count: u64,
}

/// Where the history store is and how big it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    /// Path of the SQLite file.
    pub path: String,
    /// Its size with the write-ahead log.
    pub bytes: u64,
}
