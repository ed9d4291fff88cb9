//! `GET /metrics`: Prometheus text exposition (prometheus-client) of node metrics, every decoded
//! device field, and the pollers' counters. Built from the current state on each scrape.

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use constella_kub1063::Status;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, AppState};

type Labels = Vec<(String, String)>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Counters = Family<Labels, Counter<u64>>;

pub(super) async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let mut registry = Registry::with_prefix("constella");
    let node = Gauges::default();
    let field = Gauges::default();
    let up = Gauges::default();
    let polls = Counters::default();
    let errors = Counters::default();
    registry.register(
        "node",
        "Node metric by series name (cpu.total %, mem.used bytes, net.IF.rx_bytes_per_s, …)",
        node.clone(),
    );
    registry.register(
        "device_field",
        "Decoded KUB-1063 field value (fields with status ok)",
        field.clone(),
    );
    registry.register(
        "device_up",
        "1 when the device answered its last poll",
        up.clone(),
    );
    registry.register("device_polls", "Completed polls by result", polls.clone());
    registry.register("device_errors", "Failed requests by class", errors.clone());

    let samples = state
        .history
        .node
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .latest
        .values
        .clone();
    for (series, value) in samples {
        node.get_or_create(&vec![("series".into(), series)])
            .set(value);
    }
    for device in state.registry.snapshot() {
        let name = ("device".to_string(), device.name.to_string());
        up.get_or_create(&vec![name.clone()]).set(
            if device.consecutive_failures == 0 && device.last_ok.is_some() {
                1.0
            } else {
                0.0
            },
        );
        let c = &device.counters;
        polls
            .get_or_create(&vec![name.clone(), ("result".into(), "ok".into())])
            .inc_by(c.polls_ok);
        polls
            .get_or_create(&vec![name.clone(), ("result".into(), "failed".into())])
            .inc_by(c.polls_failed);
        for (class, count) in [
            ("timeout", c.timeouts),
            ("crc_framing", c.crc_framing),
            ("exception", c.exceptions),
            ("io", c.io),
        ] {
            errors
                .get_or_create(&vec![name.clone(), ("class".into(), class.into())])
                .inc_by(count);
        }
        for f in device.image().decode().fields {
            if let (Status::Ok, Some(value)) = (f.reading.status, f.reading.value) {
                let labels = vec![
                    name.clone(),
                    ("field".into(), f.register.key.into()),
                    ("unit".into(), f.register.unit.symbol().into()),
                ];
                field.get_or_create(&labels).set(value.as_f64());
            }
        }
    }
    let mut body = String::new();
    encode(&mut body, &registry).map_err(|e| ApiError::internal(&e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}
