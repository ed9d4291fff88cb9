//! The recorder: turns completed polls into stored readings and events, samples node metrics on
//! a timer, and writes everything to the store in batches (at most one SD-card write per
//! `flush_interval`, except that events are written at once). Runs as one task; SQLite work runs
//! on the blocking pool so polling never waits for the disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use constella_kub1063::Status;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};

use crate::config::HistoryConfig;
use crate::devices::Registry;
use crate::events::View;
use crate::outcome::Health;
use crate::store::{Batch, Event, Reading, Store};
use crate::telemetry::{NodeSample, Rings, Sampler};

/// A field is written again after this long even if unchanged, so every history bucket of a
/// quiet field still has a point and a restart never leaves a gap longer than this.
const KEYFRAME: Duration = Duration::from_secs(300);
/// Rows kept while the store cannot be written; beyond this the oldest readings are dropped.
const MAX_PENDING_ROWS: usize = 200_000;
/// Recent node samples kept in memory: one hour at the default 10 s period.
const RING_CAPACITY: usize = 360;

/// What the API reads: the store (`None` while it cannot be opened, e.g. on a full disk), the
/// latest node sample and the event feed.
#[derive(Clone)]
pub(crate) struct History {
    pub(crate) store: Arc<Mutex<Option<Store>>>,
    pub(crate) path: PathBuf,
    pub(crate) node: Arc<RwLock<NodeState>>,
    pub(crate) events: broadcast::Sender<Event>,
}

/// The node's latest sample and its recent history.
pub(crate) struct NodeState {
    pub(crate) latest: NodeSample,
    pub(crate) sampled_at: Option<SystemTime>,
    pub(crate) rings: Rings,
    pub(crate) store_bytes: u64,
    /// How long the last sample took (sampling must stay cheap on a small board).
    pub(crate) sample_cost: Duration,
}

pub(crate) struct Recorder {
    history: History,
    registry: Registry,
    polls: mpsc::Receiver<usize>,
    config: HistoryConfig,
    sampler: Option<Sampler>,
    views: Vec<View>,
    /// Per device: field → (raw word, status, when last written).
    written: Vec<BTreeMap<&'static str, (u16, Status, Instant)>>,
    batch: Batch,
    /// Whether `views` hold each device's last state from the store. Until they do (the store
    /// could not be opened) no events are derived, so none is raised twice once it opens.
    restored: bool,
}

impl Recorder {
    /// Opens the store in `state_dir` and restores each device's last event state from it.
    pub(crate) fn open(
        state_dir: &Path,
        config: HistoryConfig,
        registry: Registry,
        polls: mpsc::Receiver<usize>,
    ) -> anyhow::Result<(History, Recorder)> {
        let path = state_dir.join("history.db");
        let devices = registry.snapshot();
        // A store that cannot be opened (a full disk, say) must not keep the agent from polling
        // and answering: it runs without history and the flush timer tries again.
        let (store, views) = match open_store(&path, &registry) {
            Ok((store, views)) => (Some(store), Some(views)),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "history is unavailable; polling and the API run on, retrying");
                (None, None)
            }
        };
        let sampler = match Sampler::new() {
            Ok(sampler) => Some(sampler),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "node metrics unavailable");
                None
            }
        };
        let node = NodeState {
            latest: NodeSample::default(),
            sampled_at: None,
            rings: Rings::new(RING_CAPACITY),
            store_bytes: store.as_ref().map_or(0, Store::size_bytes),
            sample_cost: Duration::ZERO,
        };
        let history = History {
            store: Arc::new(Mutex::new(store)),
            path,
            node: Arc::new(RwLock::new(node)),
            events: broadcast::channel(256).0,
        };
        let recorder = Recorder {
            history: history.clone(),
            registry,
            polls,
            config,
            sampler,
            restored: views.is_some(),
            views: views.unwrap_or_else(|| vec![View::default(); devices.len()]),
            written: vec![BTreeMap::new(); devices.len()],
            batch: Batch::default(),
        };
        Ok((history, recorder))
    }

    /// Runs until `stop` fires (or its sender is dropped), then writes what is pending.
    pub(crate) async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut telemetry = tokio::time::interval(self.config.telemetry_period);
        // The first flush is one interval away: an immediate first tick would race the first
        // poll and write it at once, which is what batching is for not doing.
        let mut flush = tokio::time::interval_at(
            tokio::time::Instant::now() + self.config.flush_interval,
            self.config.flush_interval,
        );
        let mut retention = tokio::time::interval(Duration::from_secs(3600));
        for timer in [&mut telemetry, &mut flush, &mut retention] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                Some(device) = self.polls.recv() => {
                    if self.record_poll(device) {
                        self.flush().await;
                    }
                }
                _ = telemetry.tick() => self.sample(),
                _ = flush.tick() => self.flush().await,
                _ = retention.tick() => self.retain().await,
                _ = &mut stop => {
                    self.flush().await;
                    return;
                }
            }
        }
    }

    /// Records one completed poll; returns true when it produced events.
    fn record_poll(&mut self, index: usize) -> bool {
        let Some(device) = self.registry.get(index) else {
            return false;
        };
        let ts = unix_ms(SystemTime::now());
        let health = device.health();
        let decoded = device.image().decode();
        let before = &self.views[index];
        let next = before.observe(health, &decoded);
        let changes = if self.restored {
            before.changes(&next)
        } else {
            Vec::new()
        };
        if !changes.is_empty() {
            for change in &changes {
                self.batch.events.push(Event {
                    id: 0,
                    ts,
                    device: device.name.to_string(),
                    kind: change.kind.as_str().to_string(),
                    subject: change.subject.clone(),
                    detail: change.detail.clone(),
                });
            }
            self.batch.state.extend(
                next.to_rows()
                    .into_iter()
                    .map(|(k, v)| (device.name.to_string(), k, v)),
            );
            self.views[index] = next;
        }
        if health == Health::Online {
            let now = Instant::now();
            let written = &mut self.written[index];
            for field in decoded.fields {
                let key = field.register.key;
                let status = field.reading.status;
                let fresh = written.get(key).is_some_and(|&(raw, s, at)| {
                    raw == field.raw && s == status && now.duration_since(at) < KEYFRAME
                });
                if fresh {
                    continue;
                }
                let at = device
                    .words
                    .get(&(field.register.table, field.register.addr))
                    .map_or(ts, |s| unix_ms(s.at));
                self.batch.readings.push(Reading {
                    ts: at,
                    device: device.name.to_string(),
                    field: key,
                    value: field
                        .reading
                        .value
                        .filter(|_| status == Status::Ok)
                        .map(|v| v.as_f64()),
                    status: status.as_str(),
                });
                written.insert(key, (field.raw, status, now));
            }
        }
        !changes.is_empty()
    }

    fn sample(&mut self) {
        let Some(sampler) = self.sampler.as_mut() else {
            return;
        };
        let started = Instant::now();
        let sample = sampler.sample();
        let cost = started.elapsed();
        let at = SystemTime::now();
        let ts = unix_ms(at);
        self.batch.samples.extend(
            sample
                .values
                .iter()
                .map(|(name, value)| (ts, name.clone(), *value)),
        );
        let mut node = self
            .history
            .node
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, value) in &sample.values {
            node.rings.push(name, ts, *value);
        }
        node.latest = sample;
        node.sampled_at = Some(at);
        node.sample_cost = cost;
    }

    /// Writes the pending batch; on failure keeps it (bounded) for the next attempt.
    async fn flush(&mut self) {
        if !self.restored && !self.reopen().await {
            self.keep(Batch::default());
            return;
        }
        if self.batch.samples.is_empty()
            && self.batch.readings.is_empty()
            && self.batch.events.is_empty()
        {
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let store = self.history.store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut store = store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(store) = store.as_mut() else {
                return (batch, Err(rusqlite::Error::InvalidQuery), 0);
            };
            let result = store.write(&mut batch);
            (batch, result, store.size_bytes())
        })
        .await;
        match result {
            Ok((batch, Ok(()), size)) => {
                debug!(
                    samples = batch.samples.len(),
                    readings = batch.readings.len(),
                    events = batch.events.len(),
                    "history flushed"
                );
                self.history
                    .node
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .store_bytes = size;
                for event in batch.events {
                    let _ = self.history.events.send(event);
                }
            }
            Ok((batch, Err(e), _)) => {
                warn!(error = %e, path = %self.history.path.display(), "history write failed; keeping the batch");
                self.keep(batch);
            }
            Err(e) => warn!(error = %e, "history writer task failed"),
        }
    }

    /// Puts an unwritten `batch` back before what came since, dropping the oldest readings
    /// beyond `MAX_PENDING_ROWS`.
    fn keep(&mut self, mut batch: Batch) {
        batch
            .samples
            .extend(std::mem::take(&mut self.batch.samples));
        batch
            .readings
            .extend(std::mem::take(&mut self.batch.readings));
        batch.events.extend(std::mem::take(&mut self.batch.events));
        batch.state.extend(std::mem::take(&mut self.batch.state));
        let excess = (batch.samples.len() + batch.readings.len()).saturating_sub(MAX_PENDING_ROWS);
        batch.readings.drain(..excess.min(batch.readings.len()));
        self.batch = batch;
    }

    /// Tries again to open a store that could not be opened; on success each device's event
    /// state is restored from it. Returns whether the store is open.
    async fn reopen(&mut self) -> bool {
        let path = self.history.path.clone();
        let registry = self.registry.clone();
        let Ok(opened) = tokio::task::spawn_blocking(move || open_store(&path, &registry)).await
        else {
            return false;
        };
        match opened {
            Ok((store, views)) => {
                tracing::info!(path = %self.history.path.display(), "history store opened");
                self.history
                    .node
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .store_bytes = store.size_bytes();
                *self
                    .history
                    .store
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(store);
                self.views = views;
                self.restored = true;
                true
            }
            Err(e) => {
                debug!(error = %format!("{e:#}"), "history store still unavailable");
                false
            }
        }
    }

    async fn retain(&mut self) {
        let store = self.history.store.clone();
        let config = self.config;
        let now = unix_ms(SystemTime::now());
        let result = tokio::task::spawn_blocking(move || {
            let mut store = store
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(store) = store.as_mut() else {
                return Ok((None, 0));
            };
            let report = store.enforce_retention(now, config.raw_keep, config.rollup_keep)?;
            store.enforce_size(config.max_size_mb * 1024 * 1024)?;
            store.checkpoint()?;
            Ok::<_, rusqlite::Error>((Some(report), store.size_bytes()))
        })
        .await;
        match result {
            Ok(Ok((report, size))) => {
                debug!(?report, size, "history retention applied");
                self.history
                    .node
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .store_bytes = size;
            }
            Ok(Err(e)) => warn!(error = %e, "history retention failed"),
            Err(e) => warn!(error = %e, "history retention task failed"),
        }
    }
}

/// Opens the store at `path` and reads each device's last event state from it.
fn open_store(path: &Path, registry: &Registry) -> anyhow::Result<(Store, Vec<View>)> {
    let store = Store::open(path)?;
    let views = registry
        .snapshot()
        .iter()
        .map(|device| {
            store
                .device_state(&device.name)
                .map(|rows| View::from_rows(&rows))
                .with_context(|| format!("Failed to read {}", path.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((store, views))
}

pub(crate) fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    //! The recorder fed by a bus runner polling the simulator over an in-memory pipe, writing a
    //! real store, in tokio's paused time: an hour of batching runs in milliseconds.
    use std::path::Path;

    use constella_sim::{FaultSpec, SimOptions};

    use super::*;
    use crate::config::Config;
    use crate::modbus::over_pipe;

    const CONFIG: &str = r#"
[history]
flush_interval = "1h"

[[bus]]
name = "rs485"
rtu = "/dev/ttyUSB-in-memory"

[[device]]
name = "house-1"
model = "kub1063"
bus = "rs485"
unit = 1
"#;

    /// Fields of one full poll of a healthy KUB-1063 (what the process-level test sees too).
    const FIELDS_PER_POLL: i64 = 119;

    /// A recorder running in a scratch state directory, stopped by `stop`.
    struct Recording {
        dir: PathBuf,
        db: PathBuf,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<()>>,
    }

    impl Recording {
        /// Starts polling, then the recorder a little later, so polls are already queued when it
        /// starts (as on a loaded board, where this raced the first flush tick).
        async fn start(name: &str, faults: &[&str]) -> Recording {
            let config = Config::parse(Path::new("test.toml"), CONFIG).expect("a valid config");
            let dir = std::env::temp_dir()
                .join(format!("constella-recorder-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("a scratch directory");
            let (polls, polled) = mpsc::channel(256);
            let options = SimOptions {
                faults: faults
                    .iter()
                    .map(|f| FaultSpec::parse(f).expect("a fault"))
                    .collect(),
                ..SimOptions::default()
            };
            let registry = over_pipe(&config, &[1], &options, polls);
            let (history, recorder) =
                Recorder::open(&dir, config.history, registry, polled).expect("the store opens");
            tokio::time::sleep(Duration::from_secs(15)).await;
            let (stop, stopped) = tokio::sync::oneshot::channel();
            Recording {
                db: history.path.clone(),
                dir,
                stop: Some(stop),
                task: Some(tokio::spawn(recorder.run(stopped))),
            }
        }

        fn count(&self, table: &str) -> i64 {
            let conn = rusqlite::Connection::open(&self.db).expect("open the store");
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .expect("count")
        }

        async fn stop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(task) = self.task.take() {
                task.await.expect("the recorder ends");
            }
        }
    }

    impl Drop for Recording {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_polls_wait_for_the_flush_interval_and_a_stop_writes_them() {
        let mut recording = Recording::start("quiet", &[]).await;
        tokio::time::sleep(Duration::from_secs(30 * 60)).await;
        assert_eq!(
            recording.count("readings"),
            0,
            "nothing before the hourly flush"
        );
        recording.stop().await;
        assert!(recording.count("readings") >= FIELDS_PER_POLL);
        assert_eq!(recording.count("events"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_flush_interval_writes_the_batch() {
        let recording = Recording::start("hourly", &[]).await;
        tokio::time::sleep(Duration::from_secs(3600 + 60)).await;
        assert!(recording.count("readings") >= FIELDS_PER_POLL);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_is_written_at_once_with_what_was_pending() {
        let recording = Recording::start("alarm", &["1=alarm:3"]).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(recording.count("events") >= 1, "the raised alarm is stored");
        assert!(recording.count("readings") >= FIELDS_PER_POLL);
    }
}
