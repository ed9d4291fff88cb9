//! On-demand speed tests (never in the background: a farm's uplink may be metered). The client
//! side downloads from one URL and uploads to another, timing each; the server side
//! (`api/speedtest.rs`) gives every agent a blob to download and a sink to upload to, so any two
//! nodes can measure the path between them.
//!
//! Plain HTTP only: the agent ships no TLS stack. Between nodes the traffic is meant to cross the
//! (encrypted) overlay.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::cluster::{Connector, OverlayRoute};

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

/// Runs the configured download and upload, in that order. URLs whose host is inside the
/// overlay are reached through it.
pub(crate) async fn run(
    config: &SpeedtestConfig,
    overlay: Option<OverlayRoute>,
) -> anyhow::Result<Measurement> {
    if config.download_url.is_none() && config.upload_url.is_none() {
        bail!("no speed test is configured: set [speedtest] download_url and/or upload_url");
    }
    let client = Client::builder(TokioExecutor::new()).build(Connector::new(overlay));
    let mut measured = Measurement::default();
    if let Some(url) = &config.download_url {
        let request = request(
            hyper::Method::GET,
            url,
            config.token.as_deref(),
            Upload::new(0),
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
        measured.upload_bytes = config.upload_bytes.min(MAX_TRANSFER);
        let request = request(
            hyper::Method::POST,
            url,
            config.token.as_deref(),
            Upload::new(measured.upload_bytes),
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
    body: Upload,
) -> anyhow::Result<hyper::Request<Upload>> {
    let mut builder = hyper::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        builder = builder.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder
        .body(body)
        .with_context(|| format!("`{url}` is not a usable URL"))
}

/// An upload body of `remaining` bytes, sent as the same chunk over and over: a 256 MiB upload
/// costs one chunk of memory, not 256 MiB.
struct Upload {
    chunk: Bytes,
    remaining: u64,
}

impl Upload {
    const CHUNK: usize = 64 * 1024;

    fn new(bytes: u64) -> Upload {
        Upload {
            chunk: Bytes::from_static(&[0x5A; Self::CHUNK]),
            remaining: bytes,
        }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let take = self.remaining.min(Self::CHUNK as u64);
        self.remaining -= take;
        let data = self.chunk.slice(..take as usize);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
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
