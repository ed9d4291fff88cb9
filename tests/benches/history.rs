//! History benchmarks, run with `cargo bench -p constella-tests --bench history`. Prints a
//! markdown table for docs/BENCHMARKS.md:
//! - the telemetry loop at its default 10 s period: CPU, RSS and the time one sample takes;
//! - recording 32 devices' full register maps every 10 s: bytes the agent writes to disk per hour
//!   (SD-card wear) and rows stored, against storing every field of every poll;
//! - latency of a 24 h history at 1-minute step over a store holding 24 h of one device's 119
//!   fields, through the API, against the same query forced past the index.

use std::time::{Duration, Instant};

use constella_tests::{Agent, numbered_devices, tcp_sim_with_units};

const UNITS: u8 = 32;

/// `cargo bench -p constella-tests --bench history [-- telemetry|disk|query …]` runs all parts,
/// or the named ones. Each row is printed as soon as it is measured.
fn main() {
    let wanted = constella_tests::bench_parts();
    let run = |part: &str| wanted.is_empty() || wanted.iter().any(|w| w == part);
    if run("telemetry") {
        let t = telemetry_cost();
        println!(
            "| Telemetry loop, default 10 s period, no devices (60 s) | {:.3} % CPU, {:.1} MiB RSS, {} µs per sample | — | — |",
            t.cpu_percent, t.rss_mib, t.sample_us
        );
    }
    if run("disk") {
        let d = disk_writes();
        println!(
            "| Recording 32 devices' full maps every 10 s ({:.0} s) | {:.1} MB written per hour, {:.0} rows/h | every field every poll: {:.0} rows/h | {:.1}× fewer rows |",
            d.seconds,
            d.bytes_per_hour / 1e6,
            d.rows_per_hour,
            d.naive_rows_per_hour,
            d.naive_rows_per_hour / d.rows_per_hour
        );
    }
    if run("query") {
        let q = query_latency();
        println!(
            "| 24 h history at 1-minute step ({} rows stored), via the API | median {:.1} ms, max {:.1} ms | same SQL without the index: {:.1} ms | {:.0}× faster |",
            q.rows,
            q.median_ms,
            q.max_ms,
            q.unindexed_ms,
            q.unindexed_ms / q.median_ms
        );
    }
}

struct Telemetry {
    cpu_percent: f64,
    rss_mib: f64,
    sample_us: u64,
}

fn telemetry_cost() -> Telemetry {
    let agent = Agent::start("");
    constella_tests::wait_until("a node sample", || {
        agent.get("/api/v1/node").1["sampled_at"].is_string()
    });
    let pid = agent.proc.pid();
    let (cpu0, t0) = (constella_tests::cpu_seconds(pid), Instant::now());
    let mut costs = Vec::new();
    while t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_secs(10));
        costs.push(
            agent.get("/api/v1/node").1["sample_cost_us"]
                .as_u64()
                .unwrap_or(0),
        );
    }
    costs.sort_unstable();
    Telemetry {
        cpu_percent: 100.0 * (constella_tests::cpu_seconds(pid) - cpu0)
            / t0.elapsed().as_secs_f64(),
        rss_mib: constella_tests::peak_rss_mib(pid),
        sample_us: costs[costs.len() / 2],
    }
}

struct Disk {
    seconds: f64,
    bytes_per_hour: f64,
    rows_per_hour: f64,
    naive_rows_per_hour: f64,
}

fn disk_writes() -> Disk {
    let sim = tcp_sim_with_units(UNITS, &[]);
    let agent = Agent::start(&format!(
        "[[bus]]\nname = \"gw\"\ntcp = \"{}\"\n\n{}",
        sim.tcp.expect("tcp"),
        numbered_devices("gw", UNITS, "10s")
    ));
    agent.wait_device("u32", "first poll", |d| d["status"] == "online");
    // Measure from just after the first flush (the first poll writes every field once).
    std::thread::sleep(Duration::from_secs(65));
    let pid = agent.proc.pid();
    let db = agent.database();
    let rows = || -> i64 {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
            .expect("count")
    };
    let (bytes0, rows0, t0) = (write_bytes(pid), rows(), Instant::now());
    std::thread::sleep(Duration::from_secs(240));
    let seconds = t0.elapsed().as_secs_f64();
    let per_hour = 3600.0 / seconds;
    Disk {
        seconds,
        bytes_per_hour: (write_bytes(pid) - bytes0) as f64 * per_hour,
        rows_per_hour: (rows() - rows0) as f64 * per_hour,
        naive_rows_per_hour: f64::from(UNITS) * 119.0 * 360.0,
    }
}

struct Query {
    rows: i64,
    median_ms: f64,
    max_ms: f64,
    unindexed_ms: f64,
}

fn query_latency() -> Query {
    let agent = Agent::start(
        "[[bus]]\nname = \"gw\"\ntcp = \"127.0.0.1:1\"\n\n[[device]]\nname = \"u1\"\nmodel = \"kub1063\"\nbus = \"gw\"\nunit = 1\n",
    );
    constella_tests::wait_until("the store", || agent.database().exists());
    let db = agent.database();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let day_ms = 86_400_000;
    let fields: Vec<String> = (0..119)
        .map(|i| {
            if i == 0 {
                "temp_inside".to_string()
            } else {
                format!("field_{i}")
            }
        })
        .collect();
    {
        let mut conn = rusqlite::Connection::open(&db).expect("open");
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx.prepare("INSERT INTO readings (ts, device, field, value, status) VALUES (?1, 'u1', ?2, ?3, 'ok')").expect("prepare");
            let mut ts = now_ms - day_ms;
            while ts < now_ms {
                for (i, field) in fields.iter().enumerate() {
                    insert
                        .execute(rusqlite::params![
                            ts,
                            field,
                            20.0 + (ts % 1000) as f64 / 100.0 + i as f64
                        ])
                        .expect("insert");
                }
                ts += 10_000;
            }
        }
        tx.commit().expect("commit");
    }
    let path = format!(
        "/api/v1/devices/u1/history?field=temp_inside&from={}&to={}&step=1m",
        (now_ms - day_ms) / 1000,
        now_ms / 1000
    );
    let mut times = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let (status, body) = agent.get(&path);
        times.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["series"][0]["points"].as_array().map(Vec::len),
            Some(1440)
        );
    }
    times.sort_by(f64::total_cmp);
    let conn = rusqlite::Connection::open(&db).expect("open");
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
        .expect("count");
    let started = Instant::now();
    let buckets: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT (ts / 60000) * 60000 AS b, AVG(value) FROM readings NOT INDEXED
             WHERE device = 'u1' AND field = 'temp_inside' AND ts >= ?1 AND ts < ?2 AND value IS NOT NULL GROUP BY b)",
            rusqlite::params![now_ms - day_ms, now_ms],
            |r| r.get(0),
        )
        .expect("scan");
    assert_eq!(buckets, 1440);
    Query {
        rows,
        median_ms: times[times.len() / 2],
        max_ms: times[times.len() - 1],
        unindexed_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

fn write_bytes(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("proc io");
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("write_bytes")
}
