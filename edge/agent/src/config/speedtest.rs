//! `[speedtest]`: the on-demand throughput test's URLs, token and upload size.

use serde::Deserialize;

use super::Invalid;
use crate::speedtest::{MAX_TRANSFER, SpeedtestConfig, check_url};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SpeedtestFile {
    download_url: Option<String>,
    upload_url: Option<String>,
    token: Option<String>,
    upload_bytes: Option<u64>,
}

/// The test nothing is configured for: it refuses to run.
pub(super) fn unconfigured() -> SpeedtestConfig {
    SpeedtestConfig {
        upload_bytes: 10_000_000,
        ..SpeedtestConfig::default()
    }
}

/// The checked section.
pub(super) fn parse(raw: SpeedtestFile) -> Result<SpeedtestConfig, Invalid> {
    let mut speedtest = unconfigured();
    let url = |key: &str, text: Option<String>| -> Result<Option<String>, Invalid> {
        text.map(|t| {
            check_url(&t).map_err(|reason| Invalid::new(format!("speedtest.{key}"), reason))
        })
        .transpose()
    };
    speedtest.download_url = url("download_url", raw.download_url)?;
    speedtest.upload_url = url("upload_url", raw.upload_url)?;
    speedtest.token = raw.token;
    match raw.upload_bytes {
        Some(n @ 1..=MAX_TRANSFER) => speedtest.upload_bytes = n,
        Some(n) => {
            return Err(Invalid::new(
                "speedtest.upload_bytes",
                format!("{n} is outside 1–{MAX_TRANSFER}"),
            ));
        }
        None => {}
    }
    Ok(speedtest)
}
