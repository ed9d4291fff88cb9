//! On-demand speed tests (never in the background: a farm's uplink may be metered). The client
//! side downloads from one URL and uploads to another, timing each; the server side
//! (`api/speedtest.rs`) gives every agent a blob to download and a sink to upload to, so any two
//! nodes can measure the path between them.
//!
//! Plain HTTP only: the agent ships no TLS stack. Between nodes the traffic is meant to cross the
//! (encrypted) overlay.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// `[speedtest]`: where to measure against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SpeedtestConfig {
    pub(crate) download_url: Option<String>,
    pub(crate) upload_url: Option<String>,
    /// Bearer token sent with both requests (another node's API token).
    pub(crate) token: Option<String>,
    pub(crate) upload_bytes: u64,
}

/// What one run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Measurement {
    pub(crate) download_bytes: u64,
    pub(crate) download_bps: Option<f64>,
    pub(crate) upload_bytes: u64,
    pub(crate) upload_bps: Option<f64>,
}

/// Largest download read and largest upload sent in one run.
pub(crate) const MAX_TRANSFER: u64 = 256 * 1024 * 1024;
const DEADLINE: Duration = Duration::from_secs(120);

/// Runs the configured download and upload, in that order.
pub(crate) async fn run(config: &SpeedtestConfig) -> anyhow::Result<Measurement> {
    if config.download_url.is_none() && config.upload_url.is_none() {
        bail!("no speed test is configured: set [speedtest] download_url and/or upload_url");
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut measured = Measurement::default();
    if let Some(url) = &config.download_url {
        let request = request(
            hyper::Method::GET,
            url,
            config.token.as_deref(),
            Full::new(Bytes::new()),
        )?;
        let started = Instant::now();
        let response = tokio::time::timeout(DEADLINE, client.request(request))
            .await
            .context("download timed out")?
            .with_context(|| format!("download from {url} failed"))?;
        if !response.status().is_success() {
            bail!("download from {url}: HTTP {}", response.status());
        }
        let mut body = response.into_body();
        while let Some(frame) = tokio::time::timeout(DEADLINE, body.frame())
            .await
            .context("download stalled")?
        {
            if let Some(data) = frame.context("download interrupted")?.data_ref() {
                measured.download_bytes += data.len() as u64;
                if measured.download_bytes > MAX_TRANSFER {
                    bail!("download from {url} is larger than {MAX_TRANSFER} bytes");
                }
            }
        }
        measured.download_bps =
            Some(measured.download_bytes as f64 * 8.0 / started.elapsed().as_secs_f64());
    }
    if let Some(url) = &config.upload_url {
        let payload = Bytes::from(vec![0x5A; config.upload_bytes.min(MAX_TRANSFER) as usize]);
        measured.upload_bytes = payload.len() as u64;
        let request = request(
            hyper::Method::POST,
            url,
            config.token.as_deref(),
            Full::new(payload),
        )?;
        let started = Instant::now();
        let response = tokio::time::timeout(DEADLINE, client.request(request))
            .await
            .context("upload timed out")?
            .with_context(|| format!("upload to {url} failed"))?;
        let status = response.status();
        // The upload is complete once the server has answered and its (small) reply is read.
        let _ = response.into_body().collect().await;
        if !status.is_success() {
            bail!("upload to {url}: HTTP {status}");
        }
        measured.upload_bps =
            Some(measured.upload_bytes as f64 * 8.0 / started.elapsed().as_secs_f64());
    }
    Ok(measured)
}

fn request(
    method: hyper::Method,
    url: &str,
    token: Option<&str>,
    body: Full<Bytes>,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let mut builder = hyper::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(body)
        .with_context(|| format!("`{url}` is not a usable URL"))
}

/// Only `http://` URLs are accepted (no TLS in the agent).
pub(crate) fn check_url(url: &str) -> Result<String, String> {
    match url.parse::<hyper::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Ok(url.to_string()),
        Ok(uri) if uri.scheme_str() == Some("https") => Err(format!(
            "`{url}`: https is not supported (the agent ships no TLS stack); use http:// over the overlay"
        )),
        _ => Err(format!("`{url}` is not an http://HOST[:PORT]/PATH URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_are_accepted() {
        assert!(check_url("http://10.8.0.2:4747/api/v1/speedtest/blob?bytes=1000").is_ok());
        assert!(
            check_url("https://speed.example/file")
                .expect_err("https")
                .contains("https is not supported")
        );
        assert!(
            check_url("ftp://x/y")
                .expect_err("ftp")
                .contains("not an http://")
        );
        assert!(check_url("not a url").is_err());
    }
}
