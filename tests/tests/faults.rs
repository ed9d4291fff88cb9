//! Faults on real transports: silent units, garbled replies, exceptions, peers that go away and
//! come back, and the reset-alarms write.

use std::time::{Duration, Instant};

use constella_tests::{Agent, PtyPair, Sim, counter, devices, mask};
use serde_json::Value;

fn rtu_agent(path: &std::path::Path, units: &[u8], extra_bus: &str) -> Agent {
    let names: Vec<(String, u8)> = units.iter().map(|u| (format!("house-{u}"), *u)).collect();
    let named: Vec<(&str, u8)> = names.iter().map(|(n, u)| (n.as_str(), *u)).collect();
    Agent::start(&format!(
        "[[bus]]\nname = \"rs485\"\nrtu = \"{}\"\ntimeout = \"400ms\"\nmax_backoff = \"4s\"\n{extra_bus}\n{}",
        path.display(),
        devices("rs485", &named, "1s")
    ))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn has_output(device: &Value, key: &str) -> bool {
    device["outputs_on"]
        .as_array()
        .is_some_and(|o| o.iter().any(|x| x["key"] == key))
}

#[test]
fn a_silent_unit_backs_off_alone_on_a_shared_rtu_bus() {
    let pty = PtyPair::new();
    let _sim = Sim::on_pty(&pty, &["--rtu-units", "1,2,3", "--fault", "rtu:2=silent"]);
    let agent = rtu_agent(&pty.b, &[1, 2, 3], "");
    let started = Instant::now();
    let healthy = agent.wait_device("house-1", "ten good polls", |d| {
        counter(d, "polls_ok") >= 10
    });
    let elapsed = started.elapsed();
    let silent = agent.device("house-2");
    let other = agent.device("house-3");

    assert_eq!(silent["status"], "offline", "{silent:#}");
    assert_eq!(counter(&silent, "polls_ok"), 0);
    assert_eq!(
        counter(&silent, "timeouts"),
        counter(&silent, "polls_failed"),
        "silence is a timeout"
    );
    // Backoff 1, 2, 4, 4 … s: far fewer attempts than the healthy units' polls.
    let attempts = counter(&silent, "polls_failed");
    assert!(
        attempts <= counter(&healthy, "polls_ok") / 2 + 1,
        "silent unit polled {attempts} times: {silent:#}"
    );
    // The healthy units keep roughly their 1 s rate (a generous bound: twice the ideal time).
    assert!(
        elapsed < Duration::from_secs(20),
        "ten 1 s polls took {elapsed:?}"
    );
    assert!(
        counter(&other, "polls_ok") + 1 >= counter(&healthy, "polls_ok"),
        "{other:#}"
    );
    assert_eq!(other["status"], "online");
}

#[test]
fn crc_errors_and_exceptions_are_classified_and_counted() {
    let pty = PtyPair::new();
    let _sim = Sim::on_pty(
        &pty,
        &[
            "--rtu-units",
            "1,2,3,4",
            "--fault",
            "rtu:1=crc",
            "--fault",
            "rtu:4=slow:700",
            "--fault",
            "rtu:2=exception:4",
        ],
    );
    let agent = rtu_agent(&pty.b, &[1, 2, 3, 4], "");
    let crc = agent.wait_device("house-1", "CRC errors", |d| counter(d, "crc_framing") >= 2);
    assert_eq!(
        counter(&crc, "timeouts"),
        0,
        "a garbled reply is not silence: {crc:#}"
    );
    assert_eq!(crc["last_error"], "reply with a bad CRC");
    let refused = agent.wait_device("house-2", "exceptions", |d| counter(d, "exceptions") >= 2);
    assert_eq!(
        refused["counters"]["exception_codes"]["0x04"],
        counter(&refused, "exceptions")
    );
    assert_eq!(
        refused["last_error"],
        "exception 0x04 (server device failure)"
    );
    let fine = agent.wait_device("house-3", "online", |d| d["status"] == "online");
    assert_eq!(
        counter(&fine, "crc_framing") + counter(&fine, "exceptions"),
        0
    );
    // Replies slower than the 400 ms timeout count as timeouts, not as garbled frames.
    let slow = agent.wait_device("house-4", "timeouts", |d| counter(d, "timeouts") >= 2);
    assert_eq!(counter(&slow, "crc_framing"), 0, "{slow:#}");
    let (status, list) = agent.get("/api/v1/devices");
    assert_eq!(status, 200);
    let statuses: Vec<&str> = list["devices"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["status"].as_str())
        .collect();
    assert_eq!(statuses.len(), 4);
    assert_eq!(statuses[2], "online");
}

#[test]
fn the_agent_reconnects_when_a_tcp_peer_restarts() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sim = Sim::start(&["--tcp", &addr]);
    let agent = Agent::start(&format!(
        "[[bus]]\nname = \"gw\"\ntcp = \"{addr}\"\ntimeout = \"500ms\"\nmax_backoff = \"2s\"\n\n\
         [[device]]\nname = \"house-1\"\nmodel = \"kub1063\"\nbus = \"gw\"\nunit = 1\npoll_interval = \"1s\"\n"
    ));
    agent.wait_device("house-1", "online", |d| d["status"] == "online");
    drop(sim);
    let down = agent.wait_device("house-1", "the loss noticed", |d| d["status"] != "online");
    let ok_before = counter(&down, "polls_ok");
    let _sim = Sim::start(&["--tcp", &addr]);
    let back = agent.wait_device("house-1", "back online", |d| {
        d["status"] == "online" && counter(d, "polls_ok") > ok_before
    });
    assert!(
        counter(&back, "io") + counter(&back, "timeouts") >= 1,
        "{back:#}"
    );
}

#[test]
fn the_agent_reopens_a_serial_adapter_that_disappears_and_returns() {
    let pty = PtyPair::new();
    let (a, b) = (pty.a.clone(), pty.b.clone());
    let sim = Sim::start(&["--rtu", &a.display().to_string()]);
    let agent = rtu_agent(&b, &[1], "");
    agent.wait_device("house-1", "online", |d| d["status"] == "online");
    // Unplug: the pty pair and the device behind it vanish.
    drop(sim);
    drop(pty);
    let down = agent.wait_device("house-1", "the adapter gone", |d| d["status"] == "offline");
    assert!(counter(&down, "io") >= 1, "{down:#}");
    // Plug back in at the same path.
    let pty = constella_tests::PtyPair::at(a.parent().expect("dir"));
    assert_eq!((&pty.a, &pty.b), (&a, &b));
    let _sim = Sim::start(&["--rtu", &a.display().to_string()]);
    agent.wait_device("house-1", "online again", |d| d["status"] == "online");
}

#[test]
fn reset_alarms_clears_registered_alarms_and_the_alarm_relay() {
    // Snapshot A: CO2 break (bit 24) registered but no longer active, alarm relay on.
    let sim = Sim::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--tcp-units",
        "1,2",
        "--speed",
        "0",
        "--snapshot",
        "A",
        "--fault",
        "2=silent",
    ]);
    let tcp = sim.tcp.expect("tcp");
    let agent = Agent::start(&format!(
        "[[bus]]\nname = \"gw\"\ntcp = \"{tcp}\"\ntimeout = \"500ms\"\n\n\
         [[device]]\nname = \"house-1\"\nmodel = \"kub1063\"\nbus = \"gw\"\nunit = 1\npoll_interval = \"1h\"\n\n\
         [[device]]\nname = \"house-2\"\nmodel = \"kub1063\"\nbus = \"gw\"\nunit = 2\npoll_interval = \"1h\"\n"
    ));
    let before = agent.wait_device("house-1", "alarms read", |d| {
        mask(d, "registered_alarms").is_some()
    });
    assert_eq!(mask(&before, "registered_alarms"), Some(1 << 24));
    assert!(has_output(&before, "alarm_relay"));

    let (status, body) = agent.post("/api/v1/devices/house-1/reset-alarms", None);
    assert_eq!(
        (status, &body),
        (
            200,
            &serde_json::json!({"device": "house-1", "reset": true})
        )
    );
    // The agent re-reads at once after a verified reset (the poll interval is an hour).
    let after = agent.wait_device("house-1", "registered alarms cleared", |d| {
        mask(d, "registered_alarms") == Some(0)
    });
    assert!(!has_output(&after, "alarm_relay"), "{after:#}");

    let (status, body) = agent.post("/api/v1/devices/house-2/reset-alarms", None);
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "device_unreachable");
}

#[test]
fn a_scenario_file_breaks_and_restores_a_sensor_on_schedule() {
    let dir = constella_tests::Scratch::new("scenario");
    let scenario = dir.0.join("scenario.toml");
    std::fs::write(
        &scenario,
        "[[step]]\nat = \"1s\"\nfault = \"tcp:1=pressure:break\"\n\n[[step]]\nat = \"3s\"\nfault = \"1=clear\"\n",
    )
    .expect("write scenario");
    let sim = Sim::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--speed",
        "0",
        "--scenario",
        &scenario.display().to_string(),
    ]);
    let tcp = sim.tcp.expect("tcp");
    let agent = Agent::start(&format!(
        "[[bus]]\nname = \"gw\"\ntcp = \"{tcp}\"\n\n\
         [[device]]\nname = \"house-1\"\nmodel = \"kub1063\"\nbus = \"gw\"\nunit = 1\npoll_interval = \"200ms\"\n"
    ));
    let status = |d: &Value| constella_tests::field(d, "pressure").map(|f| f["status"].clone());
    let broken = agent.wait_device("house-1", "pressure break", |d| {
        status(d) == Some("break".into())
    });
    assert_eq!(mask(&broken, "active_alarms"), Some(1 << 41));
    let restored = agent.wait_device("house-1", "pressure back", |d| {
        status(d) == Some("ok".into())
    });
    assert_eq!(mask(&restored, "active_alarms"), Some(0));
    assert_eq!(
        mask(&restored, "registered_alarms"),
        Some(1 << 41),
        "registered until reset"
    );
}
