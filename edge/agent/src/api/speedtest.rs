//! Speed-test endpoints. Every agent serves a blob to download and a sink to upload to, so another
//! node can measure the path to it; `POST /api/v1/node/speedtest` runs this node's configured test
//! and stores the result as node samples (`speedtest.download_bps`, `speedtest.upload_bps`).

use std::convert::Infallible;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use constella_api::speedtest::{RunReport, SinkReport};
use futures_util::StreamExt as _;
use serde::Deserialize;

use super::{ApiError, ApiQuery, AppState, with_store};
use crate::recorder::unix_ms;
use crate::speedtest::{self, MAX_TRANSFER};
use crate::store::Batch;

const CHUNK: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BlobQuery {
    bytes: Option<u64>,
}

/// `GET /api/v1/speedtest/blob?bytes=N`: N bytes (default 10 MB, at most 256 MiB), streamed.
pub(super) async fn blob(
    ApiQuery(query): ApiQuery<BlobQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let total = match query.bytes.unwrap_or(10_000_000) {
        n @ 1..=MAX_TRANSFER => n,
        n => {
            return Err(ApiError::bad_request(format!(
                "bytes {n} is outside 1–{MAX_TRANSFER}"
            )));
        }
    };
    let chunk = Bytes::from(vec![b'Z'; CHUNK]);
    let chunks = total.div_ceil(CHUNK as u64);
    let stream = futures_util::stream::iter((0..chunks).map(move |i| {
        let len = if i + 1 == chunks {
            (total - i * CHUNK as u64) as usize
        } else {
            CHUNK
        };
        Ok::<Bytes, Infallible>(chunk.slice(..len))
    }));
    Ok((
        [(axum::http::header::CONTENT_LENGTH, total.to_string())],
        Body::from_stream(stream),
    ))
}

/// `POST /api/v1/speedtest/sink`: reads and discards the body, reporting its size and duration.
pub(super) async fn sink(body: Body) -> Result<Json<SinkReport>, ApiError> {
    let started = Instant::now();
    let mut stream = body.into_data_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("upload interrupted: {e}")))?;
        bytes += chunk.len() as u64;
        if bytes > MAX_TRANSFER {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("at most {MAX_TRANSFER} bytes"),
            ));
        }
    }
    Ok(Json(SinkReport {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// `POST /api/v1/node/speedtest`: runs the configured test now and stores the result.
pub(super) async fn run(State(state): State<AppState>) -> Result<Json<RunReport>, ApiError> {
    if state.speedtest.download_url.is_none() && state.speedtest.upload_url.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_configured",
            "no speed test is configured: set [speedtest] download_url and/or upload_url",
        ));
    }
    let measured = speedtest::run(
        &state.speedtest,
        state.overlay.as_ref().map(|view| view.route()),
    )
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "speedtest_failed",
            &format!("{e:#}"),
        )
    })?;
    let ts = unix_ms(SystemTime::now());
    let mut batch = Batch::default();
    for (series, value) in [
        ("speedtest.download_bps", measured.download_bps),
        ("speedtest.upload_bps", measured.upload_bps),
    ] {
        if let Some(value) = value {
            batch.samples.push((ts, series.to_string(), value));
        }
    }
    with_store(&state, move |store| store.write(&mut batch)).await?;
    Ok(Json(RunReport {
        download_bytes: measured.download_bytes,
        download_bps: measured.download_bps,
        upload_bytes: measured.upload_bytes,
        upload_bps: measured.upload_bps,
    }))
}
