//! History, events and metrics through the real agent: events from injected faults (once each,
//! also across a restart), history and metric queries with their errors, the Prometheus endpoint,
//! and a store that survives being killed mid-write.

use constella_tests::{Agent, Sim, counter, devices, field};
use serde_json::Value;

const FAST_HISTORY: &str = "[history]\nflush_interval = \"200ms\"\ntelemetry_period = \"1s\"\n\n";

fn tcp_agent(sim: &Sim, poll: &str, extra_bus: &str) -> Agent {
    let bus = format!(
        "[[bus]]\nname = \"gw\"\ntcp = \"{}\"\n{extra_bus}\n",
        sim.tcp.expect("tcp")
    );
    Agent::start(&format!(
        "{FAST_HISTORY}{bus}{}",
        devices("gw", &[("house-1", 1)], poll)
    ))
}

fn event_lines(agent: &Agent) -> Vec<String> {
    let (status, body) = agent.get("/api/v1/events?limit=1000");
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["kind"].as_str().unwrap_or(""),
                e["subject"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn injected_faults_become_events_once_each_even_across_a_restart() {
    let dir = constella_tests::Scratch::new("events");
    let scenario = dir.0.join("scenario.toml");
    std::fs::write(
        &scenario,
        "[[step]]\nat = \"2s\"\nfault = \"1=pressure:break\"\n\n\
         [[step]]\nat = \"4s\"\nfault = \"1=silent\"\n\n\
         [[step]]\nat = \"7s\"\nfault = \"1=clear\"\n",
    )
    .expect("scenario");
    let sim = Sim::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--speed",
        "0",
        "--snapshot",
        "E",
        "--scenario",
        &scenario.display().to_string(),
    ]);
    let agent = tcp_agent(
        &sim,
        "300ms",
        "timeout = \"200ms\"\nmax_backoff = \"500ms\"",
    );
    let expected = [
        "raised active_alarms/41",
        "raised registered_alarms/41",
        "sensor_lost pressure",
        "device_unreachable device",
        "device_back device",
        "cleared active_alarms/41",
        "sensor_back pressure",
    ];
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + constella_tests::PATIENCE;
    while seen.len() < expected.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen = event_lines(&agent);
    }
    assert_eq!(seen, expected, "agent log:\n{}", agent.proc.output());
    let (_, body) = agent.get("/api/v1/events?device=house-1&limit=2&after=1");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["events"][0]["id"], 2);
    assert_eq!(body["events"][0]["detail"], "Pressure sensor break");

    // A crash and a restart: the agent compares against the stored state and says nothing new.
    let agent = agent.restart("KILL");
    agent.wait_device("house-1", "three polls after the restart", |d| {
        counter(d, "polls_ok") >= 3
    });
    assert_eq!(
        event_lines(&agent),
        expected,
        "no event repeated after a restart"
    );
}

#[test]
fn history_and_metric_queries_answer_and_refuse_bad_ranges() {
    let sim = Sim::start(&["--tcp", "127.0.0.1:0", "--speed", "0", "--snapshot", "A"]);
    let agent = tcp_agent(&sim, "200ms", "");
    let history = |query: &str| agent.get(&format!("/api/v1/devices/house-1/history?{query}"));
    constella_tests::wait_until("stored readings", || {
        history("field=temp_inside&step=1s").1["series"][0]["points"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    let (status, body) = history("field=temp_inside&step=1h");
    assert_eq!(status, 200, "{body}");
    let point = &body["series"][0]["points"][0];
    assert_eq!(
        (
            point["avg"].as_f64(),
            point["min"].as_f64(),
            point["max"].as_f64()
        ),
        (Some(25.5), Some(25.5), Some(25.5))
    );
    assert!(point["count"].as_i64().is_some_and(|n| n >= 1));

    constella_tests::wait_until("node samples stored", || {
        agent.get("/api/v1/node/metrics?series=mem&step=1s").1["series"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    });
    let (status, cpu) = agent.get("/api/v1/node/metrics?series=cpu&step=10s");
    assert_eq!(status, 200);
    let names: Vec<&str> = cpu["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&"cpu.total") && names.contains(&"cpu.core.0"),
        "{names:?}"
    );

    let (status, node) = agent.get("/api/v1/node?window=1m");
    assert_eq!(status, 200);
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    assert_eq!(node["metrics"]["mem.total"].as_f64(), Some(kib * 1024.0));
    assert!(
        node["summaries"]["cpu.total"]["count"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{node:#}"
    );
    assert!(node["store"]["bytes"].as_u64().is_some_and(|b| b > 0));

    let bad: &[(&str, u16)] = &[
        (
            "/api/v1/devices/house-1/history?field=temp_inside&from=2026-11-23T10:00:00Z&to=2026-11-23T09:00:00Z",
            400,
        ),
        (
            "/api/v1/devices/house-1/history?field=temp_inside&step=0s",
            400,
        ),
        (
            "/api/v1/devices/house-1/history?field=temp_inside&from=yesterday",
            400,
        ),
        (
            "/api/v1/devices/house-1/history?field=temp_inside&from=0&step=1s",
            400,
        ),
        ("/api/v1/devices/house-1/history?field=warp_core", 400),
        ("/api/v1/devices/house-1/history", 400),
        ("/api/v1/devices/house-9/history?field=temp_inside", 404),
        ("/api/v1/node/metrics?series=gpu", 400),
        ("/api/v1/node/metrics", 400),
        ("/api/v1/node?window=forever", 400),
        ("/api/v1/events?limit=0", 400),
        ("/api/v1/events?since=soon", 400),
        ("/api/v1/events?device=house-9", 404),
        // Hardening: the year 10000 panicked in formatting; i64::MIN skipped the bucket cap.
        (
            "/api/v1/devices/house-1/history?field=temp_inside&to=253402300800",
            400,
        ),
        ("/api/v1/node/metrics?series=cpu&to=253402300800", 400),
        (
            "/api/v1/devices/house-1/history?field=temp_inside&from=-9223372036854775808",
            400,
        ),
        ("/api/v1/events?since=99999999999999999", 400),
    ];
    // The far ends of the range are answered, not refused or panicked on.
    for path in [
        "/api/v1/node/metrics?series=cpu&from=253402300000&to=253402300799",
        "/api/v1/node?window=100000000000y",
    ] {
        let (got, body) = agent.get(path);
        assert_eq!(got, 200, "{path}: {body}");
    }
    for (path, status) in bad {
        let (got, body) = agent.get(path);
        assert_eq!(got, *status, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{path}: {body}"
        );
    }
}

#[test]
fn prometheus_metrics_parse_and_carry_node_device_and_poller_series() {
    let sim = Sim::start(&["--tcp", "127.0.0.1:0", "--speed", "0", "--snapshot", "A"]);
    let agent = tcp_agent(&sim, "200ms", "");
    agent.wait_device("house-1", "online", |d| {
        d["status"] == "online" && field(d, "pressure").is_some()
    });
    constella_tests::wait_until("a node sample", || {
        agent.get("/api/v1/node").1["sampled_at"].is_string()
    });
    let (status, body) = agent.get("/metrics");
    assert_eq!(status, 200);
    let Value::String(text) = body else {
        panic!("/metrics is text, got {body}")
    };
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition");
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .and_then(|s| match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    };
    assert_eq!(
        value("constella_device_up", &[("device", "house-1")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            "constella_device_field",
            &[("device", "house-1"), ("field", "pressure"), ("unit", "Pa")]
        ),
        Some(25.7)
    );
    assert_eq!(
        value(
            "constella_device_field",
            &[("device", "house-1"), ("field", "co2")]
        ),
        Some(2600.0)
    );
    assert!(
        value(
            "constella_device_polls_total",
            &[("device", "house-1"), ("result", "ok")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        value(
            "constella_device_errors_total",
            &[("device", "house-1"), ("class", "timeout")]
        ),
        Some(0.0)
    );
    assert!(value("constella_node", &[("series", "mem.total")]).is_some_and(|m| m > 0.0));
    let (status, _) = agent.request("GET", "/metrics", None, None);
    assert_eq!(status, 401, "metrics need the token too");
}

#[test]
fn killing_the_agent_during_heavy_writes_never_corrupts_the_store() {
    let sim = constella_tests::tcp_sim_with_units(16, &["--speed", "500", "--no-pace"]);
    let config = format!(
        "[history]\nflush_interval = \"50ms\"\ntelemetry_period = \"100ms\"\n\n[[bus]]\nname = \"gw\"\ntcp = \"{}\"\n\n{}",
        sim.tcp.expect("tcp"),
        constella_tests::numbered_devices("gw", 16, "20ms")
    );
    let mut agent = Agent::start(&config);
    let mut rows_before = 0;
    let mut seed: u64 = 1063;
    for round in 0..15 {
        agent.wait_device("u16", "polling", |d| counter(d, "polls_ok") >= 1);
        // Let it write for a pseudo-random 50–650 ms, then pull the plug.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(std::time::Duration::from_millis(50 + (seed >> 33) % 600));
        let db = agent.database();
        let pid = agent.proc.pid().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-s", "KILL", &pid])
            .status()
            .expect("kill");
        assert!(killed.success());
        let conn = rusqlite::Connection::open(&db).expect("reopen after SIGKILL");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok", "round {round}");
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))
            .expect("count");
        assert!(
            rows >= rows_before,
            "round {round}: committed rows vanished ({rows} < {rows_before})"
        );
        rows_before = rows;
        drop(conn);
        agent = agent.restart("KILL");
    }
    assert!(
        rows_before > 16 * 119,
        "every round wrote readings: {rows_before}"
    );
}

#[test]
fn a_clean_stop_writes_the_pending_batch() {
    let sim = Sim::start(&["--tcp", "127.0.0.1:0", "--speed", "0"]);
    let bus = format!(
        "[[bus]]\nname = \"gw\"\ntcp = \"{}\"\n\n",
        sim.tcp.expect("tcp")
    );
    let history = "[history]\nflush_interval = \"1h\"\ntelemetry_period = \"1s\"\n\n";
    let agent = Agent::start(&format!(
        "{history}{bus}{}",
        devices("gw", &[("house-1", 1)], "200ms")
    ));
    agent.wait_device("house-1", "a few polls", |d| counter(d, "polls_ok") >= 3);
    constella_tests::wait_until("a node sample", || {
        agent.get("/api/v1/node").1["sampled_at"].is_string()
    });
    let db = agent.database();
    let count = |table: &str| -> i64 {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count")
    };
    assert_eq!(
        count("readings"),
        0,
        "batched: nothing written before the hourly flush"
    );

    let Agent {
        proc, dir: _dir, ..
    } = agent;
    let pid = proc.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-s", "TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let (status, output) = proc.wait_exit();
    assert!(status.success(), "{output}");
    assert!(
        count("readings") >= 119,
        "every polled field written on stop"
    );
    assert!(count("samples") >= 1, "node samples written on stop");
}
