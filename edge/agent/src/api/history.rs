//! History endpoints: the node's identity and metrics, metric series, a device field's history,
//! and the event log. Queries run on the blocking pool; bad ranges and names get 400.

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path, State};
use constella_api::DeviceName;
use constella_api::history::{
    Event as ApiEvent, EventKind as ApiEventKind, EventList, Point as ApiPoint, Series, SeriesList,
};
use constella_api::node::{Node, Store, Summary};
use constella_kub1063::{Kind, REGISTERS};
use serde::Deserialize;

use super::{ApiError, ApiQuery, AppState, find, with_store};
use crate::events::EventKind;
use crate::recorder::unix_ms;
use crate::store::{Event, Point};
use crate::telemetry::FAMILIES;

/// Most buckets one query may return.
const MAX_BUCKETS: i64 = 10_000;
/// The last instant a query may name: 9999-12-31T23:59:59Z, the last one RFC 3339 can write.
const LAST_INSTANT_SECS: i64 = 253_402_300_799;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeQuery {
    window: Option<String>,
}

pub(super) async fn node(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<NodeQuery>,
) -> Result<Json<Node>, ApiError> {
    let window = match query.window {
        Some(text) => duration(&text, "window")?,
        None => Duration::from_secs(300),
    };
    let since = unix_ms(SystemTime::now()).saturating_sub(millis(window));
    let node = state
        .history
        .node
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let summaries = node
        .rings
        .names()
        .filter_map(|name| {
            let s = node.rings.summary(name, since)?;
            Some((
                name.to_string(),
                Summary {
                    min: s.min,
                    avg: s.avg,
                    max: s.max,
                    last: s.last,
                    count: s.count as u64,
                },
            ))
        })
        .collect();
    Ok(Json(Node {
        name: sysinfo::System::host_name().unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").into(),
        agent_uptime_s: state.started.elapsed().as_secs(),
        sampled_at: node.sampled_at.map(super::dto::rfc3339),
        sample_cost_us: u64::try_from(node.sample_cost.as_micros()).unwrap_or(u64::MAX),
        metrics: node.latest.values.iter().cloned().collect(),
        window_s: window.as_secs(),
        summaries,
        store: Store {
            path: state.history.path.display().to_string(),
            bytes: node.store_bytes,
        },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeQuery {
    series: Option<String>,
    field: Option<String>,
    from: Option<String>,
    to: Option<String>,
    step: Option<String>,
}

pub(super) async fn node_metrics(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<Json<SeriesList>, ApiError> {
    if query.field.is_some() {
        return Err(ApiError::bad_request(
            "`field` belongs to device history; node metrics take `series`".into(),
        ));
    }
    let family = query.series.as_deref().ok_or_else(|| {
        ApiError::bad_request(format!(
            "`series` is required: one of {}",
            FAMILIES.join(", ")
        ))
    })?;
    if !FAMILIES.contains(&family) {
        return Err(ApiError::bad_request(format!(
            "unknown series `{family}`: one of {}",
            FAMILIES.join(", ")
        )));
    }
    let range = Range::parse(&query)?;
    let prefix = format!("{family}.");
    let found = with_store(&state, move |store| {
        store.series(&prefix, range.from, range.to, range.step)
    })
    .await?;
    Ok(Json(SeriesList {
        from: range.show(range.from),
        to: range.show(range.to),
        step_s: range.step as f64 / 1000.0,
        series: found
            .into_iter()
            .map(|(name, points)| Series {
                name,
                points: points.iter().map(point).collect(),
            })
            .collect(),
    }))
}

pub(super) async fn device_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<Json<SeriesList>, ApiError> {
    let (_, device) = find(&state, &id)?;
    if query.series.is_some() {
        return Err(ApiError::bad_request(
            "`series` belongs to node metrics; device history takes `field`".into(),
        ));
    }
    let field = query.field.as_deref().ok_or_else(|| {
        ApiError::bad_request("`field` is required (a register key such as temp_inside)".into())
    })?;
    let register = REGISTERS
        .iter()
        .find(|r| r.key == field && !matches!(r.kind, Kind::Command))
        .ok_or_else(|| ApiError::bad_request(format!("unknown field `{field}`")))?;
    let range = Range::parse(&query)?;
    let key = register.key;
    let points = with_store(&state, move |store| {
        store.history(&device.name, key, range.from, range.to, range.step)
    })
    .await?;
    Ok(Json(SeriesList {
        from: range.show(range.from),
        to: range.show(range.to),
        step_s: range.step as f64 / 1000.0,
        series: vec![Series {
            name: key.to_string(),
            points: points.iter().map(point).collect(),
        }],
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    device: Option<String>,
    since: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

pub(super) async fn events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    let device = match query.device {
        Some(id) => Some(find(&state, &id)?.1.name),
        None => None,
    };
    let since = match query.since.as_deref() {
        Some(text) => instant(text, "since")?,
        None => 0,
    };
    let limit = match query.limit.unwrap_or(100) {
        n @ 1..=1000 => n,
        n => {
            return Err(ApiError::bad_request(format!(
                "limit {n} is outside 1–1000"
            )));
        }
    };
    let after = query.after.unwrap_or(0);
    let found: Vec<Event> = with_store(&state, move |store| {
        store.events(device.as_deref(), since, after, limit)
    })
    .await?;
    Ok(Json(EventList {
        events: found
            .into_iter()
            .filter_map(|e| {
                let Some(kind) = EventKind::parse(&e.kind) else {
                    tracing::warn!(id = e.id, kind = %e.kind, "a stored event of no known kind");
                    return None;
                };
                let Ok(device) = DeviceName::try_from(e.device) else {
                    tracing::warn!(id = e.id, "a stored event of a device with no valid name");
                    return None;
                };
                Some(ApiEvent {
                    id: e.id,
                    at: super::dto::rfc3339(from_ms(e.ts)),
                    device,
                    kind: event_kind(kind),
                    subject: e.subject,
                    detail: e.detail,
                })
            })
            .collect(),
    }))
}

/// A checked [from, to) range with a step, all in Unix milliseconds.
#[derive(Clone, Copy)]
struct Range {
    from: i64,
    to: i64,
    step: i64,
}

impl Range {
    fn parse(query: &RangeQuery) -> Result<Range, ApiError> {
        let now = unix_ms(SystemTime::now());
        let to = match query.to.as_deref() {
            Some(text) => instant(text, "to")?,
            None => now,
        };
        let from = match query.from.as_deref() {
            Some(text) => instant(text, "from")?,
            None => to - 3_600_000,
        };
        if from >= to {
            return Err(ApiError::bad_request("`from` must be before `to`".into()));
        }
        let step = match query.step.as_deref() {
            Some(text) => millis(duration(text, "step")?),
            None => ((to - from) / 300).max(1000),
        };
        if step < 1000 {
            return Err(ApiError::bad_request("`step` must be at least 1s".into()));
        }
        if (to - from) / step > MAX_BUCKETS {
            return Err(ApiError::bad_request(format!(
                "{} buckets asked for; at most {MAX_BUCKETS} (raise `step`)",
                (to - from) / step
            )));
        }
        Ok(Range { from, to, step })
    }

    fn show(&self, ms: i64) -> String {
        super::dto::rfc3339(from_ms(ms))
    }
}

/// RFC 3339 (`2026-11-23T06:00:00Z`) or Unix seconds, from 1970 to the end of year 9999 (so
/// every answer can write it back and no arithmetic on it can overflow).
fn instant(text: &str, name: &str) -> Result<i64, ApiError> {
    match text.parse::<i64>() {
        Ok(seconds) if (0..=LAST_INSTANT_SECS).contains(&seconds) => Ok(seconds * 1000),
        Ok(_) => Err(ApiError::bad_request(format!(
            "`{name}` = `{text}` is outside 0–{LAST_INSTANT_SECS} (1970 to the end of 9999)"
        ))),
        // Four-digit years only, and `unix_ms` clamps what precedes 1970.
        Err(_) => humantime::parse_rfc3339_weak(text)
            .map(unix_ms)
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "`{name}` = `{text}` is neither RFC 3339 nor Unix seconds"
                ))
            }),
    }
}

/// A parsed duration in milliseconds, saturating (humantime accepts thousands of years).
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn duration(text: &str, name: &str) -> Result<Duration, ApiError> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(ApiError::bad_request(format!(
            "`{name}` = `{text}` is not a positive duration like 1m"
        ))),
    }
}

fn event_kind(kind: EventKind) -> ApiEventKind {
    match kind {
        EventKind::Raised => ApiEventKind::Raised,
        EventKind::Cleared => ApiEventKind::Cleared,
        EventKind::SensorLost => ApiEventKind::SensorLost,
        EventKind::SensorBack => ApiEventKind::SensorBack,
        EventKind::DeviceUnreachable => ApiEventKind::DeviceUnreachable,
        EventKind::DeviceBack => ApiEventKind::DeviceBack,
    }
}

fn point(p: &Point) -> ApiPoint {
    ApiPoint {
        at: super::dto::rfc3339(from_ms(p.ts)),
        avg: p.avg,
        min: p.min,
        max: p.max,
        count: p.count,
    }
}

fn from_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Every query parser of this module over one query string, the way axum hands it over, down to
/// writing the range back as RFC 3339 (where the year 10000 once panicked). For the fuzz target.
#[cfg(feature = "fuzzing")]
pub(crate) fn parse_queries(query: &str) {
    use axum::extract::Query;
    let Ok(uri) = format!("/?{query}").parse::<axum::http::Uri>() else {
        return;
    };
    if let Ok(Query(range)) = Query::<RangeQuery>::try_from_uri(&uri)
        && let Ok(range) = Range::parse(&range)
    {
        let _ = (range.show(range.from), range.show(range.to));
    }
    if let Ok(Query(NodeQuery {
        window: Some(window),
    })) = Query::<NodeQuery>::try_from_uri(&uri)
    {
        let _ = duration(&window, "window").map(millis);
    }
    if let Ok(Query(EventsQuery {
        since: Some(since), ..
    })) = Query::<EventsQuery>::try_from_uri(&uri)
    {
        let _ = instant(&since, "since");
    }
}
