//! The embedded store: one SQLite database in the state directory (WAL mode) holding node metric
//! samples, device readings, device events, 5-minute rollups of the first two, and the last
//! event-relevant state of each device (so a restart does not repeat events).
//!
//! Durability: writes arrive in batches ([`Batch`]); each batch is one transaction committed with
//! `synchronous=FULL`, so a crash or power cut loses at most the batch not yet written and never
//! corrupts the database (SQLite's WAL guarantees). Retention: raw rows older than `raw_keep` are
//! folded into 5-minute rollups and deleted; rollups older than `rollup_keep` are deleted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension as _, params};

/// Width of a rollup bucket.
pub(crate) const ROLLUP_MS: i64 = 5 * 60 * 1000;

pub(crate) struct Store {
    conn: Connection,
    path: PathBuf,
}

/// Rows to write in one transaction. Timestamps are Unix milliseconds.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) samples: Vec<(i64, String, f64)>,
    pub(crate) readings: Vec<Reading>,
    pub(crate) events: Vec<Event>,
    /// (device, key, value) state rows to upsert.
    pub(crate) state: Vec<(String, String, String)>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Reading {
    pub(crate) ts: i64,
    pub(crate) device: String,
    pub(crate) field: &'static str,
    pub(crate) value: Option<f64>,
    pub(crate) status: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub(crate) id: i64,
    pub(crate) ts: i64,
    pub(crate) device: String,
    pub(crate) kind: String,
    pub(crate) subject: String,
    pub(crate) detail: String,
}

/// One bucket of a queried series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Point {
    pub(crate) ts: i64,
    pub(crate) avg: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) count: i64,
}

/// What a retention pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Retention {
    pub(crate) rolled_up: usize,
    pub(crate) deleted_raw: usize,
    pub(crate) deleted_rollups: usize,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS samples (ts INTEGER NOT NULL, series TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX IF NOT EXISTS samples_by_series ON samples (series, ts);
CREATE TABLE IF NOT EXISTS readings (
    ts INTEGER NOT NULL, device TEXT NOT NULL, field TEXT NOT NULL, value REAL, status TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS readings_by_field ON readings (device, field, ts);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
    subject TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_device ON events (device, id);
CREATE TABLE IF NOT EXISTS sample_rollups (
    bucket INTEGER NOT NULL, series TEXT NOT NULL, avg REAL NOT NULL, min REAL NOT NULL,
    max REAL NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (series, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reading_rollups (
    bucket INTEGER NOT NULL, device TEXT NOT NULL, field TEXT NOT NULL, avg REAL NOT NULL,
    min REAL NOT NULL, max REAL NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (device, field, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_state (
    device TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (device, key)) WITHOUT ROWID;
";

impl Store {
    /// Opens (creating if needed) the database at `path`, mode 0600.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Store> {
        let conn =
            Connection::open(path).with_context(|| format!("Failed to open {}", path.display()))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("Failed to restrict {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("Failed to create the schema in {}", path.display()))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Writes a batch in one transaction and sets each event's id.
    pub(crate) fn write(&mut self, batch: &mut Batch) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO samples (ts, series, value) VALUES (?1, ?2, ?3)")?;
            for (ts, series, value) in &batch.samples {
                insert.execute(params![ts, series, value])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO readings (ts, device, field, value, status) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for r in &batch.readings {
                insert.execute(params![r.ts, r.device, r.field, r.value, r.status])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (ts, device, kind, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for e in &mut batch.events {
                insert.execute(params![e.ts, e.device, e.kind, e.subject, e.detail])?;
                e.id = tx.last_insert_rowid();
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO device_state (device, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (device, key) DO UPDATE SET value = excluded.value",
            )?;
            for (device, key, value) in &batch.state {
                upsert.execute(params![device, key, value])?;
            }
        }
        tx.commit()
    }

    /// Node metric series whose name starts with `prefix`, bucketed by `step_ms` over [from, to).
    pub(crate) fn series(
        &self,
        prefix: &str,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> rusqlite::Result<Vec<(String, Vec<Point>)>> {
        let mut names = self.conn.prepare_cached(
            "SELECT DISTINCT series FROM samples WHERE series >= ?1 AND series < ?2
             UNION SELECT DISTINCT series FROM sample_rollups WHERE series >= ?1 AND series < ?2 ORDER BY 1",
        )?;
        let upper = format!("{prefix}\u{10FFFF}");
        let series: Vec<String> = names
            .query_map(params![prefix, upper], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        let mut query = self.conn.prepare_cached(
            "SELECT (ts / ?4) * ?4 AS b, SUM(v * n) / SUM(n), MIN(mn), MAX(mx), SUM(n) FROM (
                 SELECT ts, value AS v, value AS mn, value AS mx, 1 AS n FROM samples
                     WHERE series = ?1 AND ts >= ?2 AND ts < ?3
                 UNION ALL
                 SELECT bucket, avg, min, max, n FROM sample_rollups
                     WHERE series = ?1 AND bucket >= ?2 AND bucket < ?3)
             GROUP BY b ORDER BY b",
        )?;
        let mut out = Vec::new();
        for name in series {
            let points = query
                .query_map(params![name, from, to, step_ms], point)?
                .collect::<Result<_, _>>()?;
            out.push((name, points));
        }
        Ok(out)
    }

    /// A device field's numeric history (readings with status ok), bucketed by `step_ms`.
    pub(crate) fn history(
        &self,
        device: &str,
        field: &str,
        from: i64,
        to: i64,
        step_ms: i64,
    ) -> rusqlite::Result<Vec<Point>> {
        let mut query = self.conn.prepare_cached(
            "SELECT (ts / ?5) * ?5 AS b, SUM(v * n) / SUM(n), MIN(mn), MAX(mx), SUM(n) FROM (
                 SELECT ts, value AS v, value AS mn, value AS mx, 1 AS n FROM readings
                     WHERE device = ?1 AND field = ?2 AND ts >= ?3 AND ts < ?4 AND value IS NOT NULL
                 UNION ALL
                 SELECT bucket, avg, min, max, n FROM reading_rollups
                     WHERE device = ?1 AND field = ?2 AND bucket >= ?3 AND bucket < ?4)
             GROUP BY b ORDER BY b",
        )?;
        query
            .query_map(params![device, field, from, to, step_ms], point)?
            .collect()
    }

    /// Events with id greater than `after`, oldest first, optionally of one device.
    pub(crate) fn events(
        &self,
        device: Option<&str>,
        since_ms: i64,
        after_id: i64,
        limit: usize,
    ) -> rusqlite::Result<Vec<Event>> {
        let mut query = self.conn.prepare_cached(
            "SELECT id, ts, device, kind, subject, detail FROM events
             WHERE (?1 IS NULL OR device = ?1) AND ts >= ?2 AND id > ?3 ORDER BY id LIMIT ?4",
        )?;
        query
            .query_map(params![device, since_ms, after_id, limit as i64], |row| {
                Ok(Event {
                    id: row.get(0)?,
                    ts: row.get(1)?,
                    device: row.get(2)?,
                    kind: row.get(3)?,
                    subject: row.get(4)?,
                    detail: row.get(5)?,
                })
            })?
            .collect()
    }

    /// The stored state rows of `device`.
    pub(crate) fn device_state(&self, device: &str) -> rusqlite::Result<Vec<(String, String)>> {
        let mut query = self
            .conn
            .prepare_cached("SELECT key, value FROM device_state WHERE device = ?1 ORDER BY key")?;
        query
            .query_map(params![device], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
    }

    /// Folds raw rows older than `now - raw_keep` into rollups, deletes them, and deletes rollups
    /// older than `now - rollup_keep`. One transaction.
    pub(crate) fn enforce_retention(
        &mut self,
        now_ms: i64,
        raw_keep: Duration,
        rollup_keep: Duration,
    ) -> rusqlite::Result<Retention> {
        // Cut on a bucket boundary so a bucket is never rolled up twice.
        let raw_cut = ((now_ms - raw_keep.as_millis() as i64) / ROLLUP_MS) * ROLLUP_MS;
        let rollup_cut = now_ms - rollup_keep.as_millis() as i64;
        let tx = self.conn.transaction()?;
        let mut rolled_up = tx.execute(
            "INSERT INTO sample_rollups (bucket, series, avg, min, max, n)
                 SELECT (ts / ?2) * ?2, series, AVG(value), MIN(value), MAX(value), COUNT(*)
                 FROM samples WHERE ts < ?1 GROUP BY 1, 2
             ON CONFLICT (series, bucket) DO UPDATE SET
                 avg = (avg * n + excluded.avg * excluded.n) / (n + excluded.n),
                 min = MIN(min, excluded.min), max = MAX(max, excluded.max), n = n + excluded.n",
            params![raw_cut, ROLLUP_MS],
        )?;
        rolled_up += tx.execute(
            "INSERT INTO reading_rollups (bucket, device, field, avg, min, max, n)
                 SELECT (ts / ?2) * ?2, device, field, AVG(value), MIN(value), MAX(value), COUNT(*)
                 FROM readings WHERE ts < ?1 AND value IS NOT NULL GROUP BY 1, 2, 3
             ON CONFLICT (device, field, bucket) DO UPDATE SET
                 avg = (avg * n + excluded.avg * excluded.n) / (n + excluded.n),
                 min = MIN(min, excluded.min), max = MAX(max, excluded.max), n = n + excluded.n",
            params![raw_cut, ROLLUP_MS],
        )?;
        let deleted_raw = tx.execute("DELETE FROM samples WHERE ts < ?1", params![raw_cut])?
            + tx.execute("DELETE FROM readings WHERE ts < ?1", params![raw_cut])?;
        let deleted_rollups = tx.execute(
            "DELETE FROM sample_rollups WHERE bucket < ?1",
            params![rollup_cut],
        )? + tx.execute(
            "DELETE FROM reading_rollups WHERE bucket < ?1",
            params![rollup_cut],
        )? + tx
            .execute("DELETE FROM events WHERE ts < ?1", params![rollup_cut])?;
        tx.commit()?;
        Ok(Retention {
            rolled_up,
            deleted_raw,
            deleted_rollups,
        })
    }

    /// Keeps the database under `max_bytes`: while it is larger, deletes the oldest tenth of the
    /// raw rows (deleted pages are reused, so the file stops growing). Returns rows deleted.
    pub(crate) fn enforce_size(&mut self, max_bytes: u64) -> rusqlite::Result<usize> {
        let mut deleted = 0;
        for _ in 0..10 {
            let live: i64 = self.conn.query_row(
                "SELECT (page_count - freelist_count) * page_size FROM pragma_page_count, pragma_freelist_count, pragma_page_size",
                [],
                |row| row.get(0),
            )?;
            if (live as u64) <= max_bytes {
                break;
            }
            let tx = self.conn.transaction()?;
            for table in ["readings", "samples"] {
                deleted += tx.execute(
                    &format!("DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} ORDER BY ts LIMIT (SELECT COUNT(*) / 10 + 1 FROM {table}))"),
                    [],
                )?;
            }
            tx.commit()?;
        }
        Ok(deleted)
    }

    /// Bytes on disk: the database file plus its write-ahead log.
    pub(crate) fn size_bytes(&self) -> u64 {
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        [self.path.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Copies the WAL into the database and truncates it (bounds the WAL's size on disk).
    pub(crate) fn checkpoint(&self) -> rusqlite::Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .optional()
            .map(drop)
    }
}

fn point(row: &rusqlite::Row<'_>) -> rusqlite::Result<Point> {
    Ok(Point {
        ts: row.get(0)?,
        avg: row.get(1)?,
        min: row.get(2)?,
        max: row.get(3)?,
        count: row.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const DAY: i64 = 24 * 60 * MIN;

    fn scratch(name: &str) -> (PathBuf, Store) {
        let dir =
            std::env::temp_dir().join(format!("constella-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::open(&dir.join("history.db")).expect("open");
        (dir, store)
    }

    fn reading(ts: i64, value: Option<f64>) -> Reading {
        Reading {
            ts,
            device: "house-1".into(),
            field: "temp_inside",
            value,
            status: if value.is_some() { "ok" } else { "break" },
        }
    }

    #[test]
    fn history_buckets_by_step_and_skips_non_ok_readings() {
        let (dir, mut store) = scratch("history");
        let mut batch = Batch::default();
        // One reading every 10 s for 3 minutes: 20.0, 20.1, … ; one break in the middle.
        for i in 0..18 {
            let value = if i == 7 {
                None
            } else {
                Some(20.0 + i as f64 / 10.0)
            };
            batch.readings.push(reading(i * 10_000, value));
        }
        store.write(&mut batch).expect("write");
        let points = store
            .history("house-1", "temp_inside", 0, 3 * MIN, MIN)
            .expect("query");
        let summary: Vec<(i64, i64, f64, f64)> = points
            .iter()
            .map(|p| (p.ts, p.count, p.min, p.max))
            .collect();
        assert_eq!(
            summary,
            [
                (0, 6, 20.0, 20.5),
                (MIN, 5, 20.6, 21.1),
                (2 * MIN, 6, 21.2, 21.7)
            ]
        );
        assert!((points[0].avg - 20.25).abs() < 1e-9);
        let narrow = store
            .history("house-1", "temp_inside", 30_000, 50_000, 10_000)
            .expect("query");
        assert_eq!(
            narrow.iter().map(|p| p.ts).collect::<Vec<_>>(),
            [30_000, 40_000]
        );
        assert!(
            store
                .history("house-1", "humidity", 0, DAY, MIN)
                .expect("query")
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn retention_rolls_up_old_raw_rows_and_drops_old_rollups() {
        let (dir, mut store) = scratch("retention");
        let now = 100 * DAY;
        let mut batch = Batch::default();
        // 95 days ago (beyond 90 days), 10 days ago (rolled up), and 1 day ago (kept raw).
        for (age, value) in [
            (95 * DAY, 1.0),
            (10 * DAY, 2.0),
            (10 * DAY - 60_000, 4.0),
            (DAY, 8.0),
        ] {
            batch.samples.push((now - age, "cpu.total".into(), value));
            batch.readings.push(reading(now - age, Some(value)));
        }
        store.write(&mut batch).expect("write");
        let first = store
            .enforce_retention(
                now,
                Duration::from_secs(7 * 86_400),
                Duration::from_secs(90 * 86_400),
            )
            .expect("retention");
        assert_eq!(first.deleted_raw, 6, "three old rows of each table");
        assert!(
            first.deleted_rollups >= 2,
            "the 95-day-old bucket goes: {first:?}"
        );
        let series = store.series("cpu.", 0, now, DAY).expect("series");
        let points = &series[0].1;
        assert_eq!(series[0].0, "cpu.total");
        // The two 10-day-old samples share one day bucket via their rollup; the recent one is raw.
        assert_eq!(
            points.iter().map(|p| (p.count, p.avg)).collect::<Vec<_>>(),
            [(2, 3.0), (1, 8.0)]
        );
        let history = store
            .history("house-1", "temp_inside", 0, now, DAY)
            .expect("history");
        assert_eq!(history.iter().map(|p| p.count).sum::<i64>(), 3);
        // A second pass finds nothing left to do.
        let second = store
            .enforce_retention(
                now,
                Duration::from_secs(7 * 86_400),
                Duration::from_secs(90 * 86_400),
            )
            .expect("again");
        assert_eq!(second, Retention::default());
        assert!(store.size_bytes() > 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_size_bound_deletes_the_oldest_raw_rows_first() {
        let (dir, mut store) = scratch("size");
        let mut batch = Batch::default();
        for i in 0..20_000 {
            batch.readings.push(reading(i * 1000, Some(i as f64)));
        }
        store.write(&mut batch).expect("write");
        assert_eq!(store.enforce_size(u64::MAX).expect("no-op"), 0);
        let deleted = store.enforce_size(64 * 1024).expect("bound");
        assert!(deleted > 0);
        let left = store
            .history("house-1", "temp_inside", 0, i64::MAX, 1_000_000_000)
            .expect("query");
        let (count, oldest) = (left.iter().map(|p| p.count).sum::<i64>(), left[0].min);
        assert_eq!(count, 20_000 - deleted as i64);
        assert_eq!(oldest, deleted as f64, "the oldest rows went first");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn events_and_state_round_trip() {
        let (dir, mut store) = scratch("events");
        let mut batch = Batch::default();
        for (i, device) in ["house-1", "house-2", "house-1"].iter().enumerate() {
            batch.events.push(Event {
                id: 0,
                ts: 1000 + i as i64,
                device: device.to_string(),
                kind: "alarm_raised".into(),
                subject: "active_alarms.57".into(),
                detail: "High inside temperature".into(),
            });
        }
        batch
            .state
            .push(("house-1".into(), "reachable".into(), "1".into()));
        store.write(&mut batch).expect("write");
        store
            .write(&mut Batch {
                state: vec![("house-1".into(), "reachable".into(), "0".into())],
                ..Batch::default()
            })
            .expect("upsert");
        let all = store.events(None, 0, 0, 10).expect("events");
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
        let one = store.events(Some("house-1"), 0, 1, 10).expect("events");
        assert_eq!(one.iter().map(|e| e.id).collect::<Vec<_>>(), [3]);
        assert_eq!(store.events(None, 1002, 0, 10).expect("since").len(), 1);
        assert_eq!(
            store.device_state("house-1").expect("state"),
            [("reachable".to_string(), "0".to_string())]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
