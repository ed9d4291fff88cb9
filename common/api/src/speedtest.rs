//! The on-demand speed test: `POST /api/v1/node/speedtest` and the sink another node uploads to.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/node/speedtest`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Bytes downloaded.
    pub download_bytes: u64,
    /// Download rate in bits per second, if a download URL is configured.
    pub download_bps: Option<f64>,
    /// Bytes uploaded.
    pub upload_bytes: u64,
    /// Upload rate in bits per second, if an upload URL is configured.
    pub upload_bps: Option<f64>,
}

/// `POST /api/v1/speedtest/sink`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    /// Bytes received.
    pub bytes: u64,
    /// How long the upload took.
    pub seconds: f64,
}
