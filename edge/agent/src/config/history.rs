//! `[history]`: how node metrics and device history are kept.

use std::time::Duration;

use serde::Deserialize;

use super::{Invalid, positive_duration};

/// The largest history store one may ask for, in MiB; far beyond any board's disk, and small
/// enough that its size in bytes cannot overflow.
const MAX_SIZE_MB: u64 = 1 << 20;

/// How node metrics and device history are kept (`[history]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistoryConfig {
    pub(crate) telemetry_period: Duration,
    pub(crate) flush_interval: Duration,
    pub(crate) raw_keep: Duration,
    pub(crate) rollup_keep: Duration,
    pub(crate) max_size_mb: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            telemetry_period: Duration::from_secs(10),
            flush_interval: Duration::from_secs(60),
            raw_keep: Duration::from_secs(7 * 86_400),
            rollup_keep: Duration::from_secs(90 * 86_400),
            max_size_mb: 256,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryFile {
    telemetry_period: Option<String>,
    flush_interval: Option<String>,
    raw_keep: Option<String>,
    rollup_keep: Option<String>,
    max_size_mb: Option<u64>,
}

/// The checked section.
pub(super) fn parse(raw: HistoryFile) -> Result<HistoryConfig, Invalid> {
    let mut history = HistoryConfig::default();
    let set = |slot: &mut Duration, key: &str, text: Option<String>| -> Result<(), Invalid> {
        if let Some(text) = text {
            *slot = positive_duration(&text)
                .map_err(|reason| Invalid::new(format!("history.{key}"), reason))?;
        }
        Ok(())
    };
    set(
        &mut history.telemetry_period,
        "telemetry_period",
        raw.telemetry_period,
    )?;
    set(
        &mut history.flush_interval,
        "flush_interval",
        raw.flush_interval,
    )?;
    set(&mut history.raw_keep, "raw_keep", raw.raw_keep)?;
    set(&mut history.rollup_keep, "rollup_keep", raw.rollup_keep)?;
    if history.rollup_keep < history.raw_keep {
        return Err(Invalid::new(
            "history.rollup_keep",
            "must be at least raw_keep",
        ));
    }
    match raw.max_size_mb {
        Some(mb @ 1..=MAX_SIZE_MB) => history.max_size_mb = mb,
        Some(mb) => {
            return Err(Invalid::new(
                "history.max_size_mb",
                format!("{mb} is outside 1–{MAX_SIZE_MB} (1 TiB)"),
            ));
        }
        None => {}
    }
    Ok(history)
}
