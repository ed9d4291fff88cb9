//! The device API over a real socket: authentication, errors as JSON with the right status, and
//! the device documents.

use constella_tests::{Agent, Sim, field, round_trip};

fn agent_with_one_device() -> (Sim, Agent) {
    let sim = Sim::start(&["--tcp", "127.0.0.1:0", "--speed", "0", "--snapshot", "C"]);
    let tcp = sim.tcp.expect("tcp");
    let agent = Agent::start(&format!(
        "[[bus]]\nname = \"gw\"\ntcp = \"{tcp}\"\n\n\
         [[device]]\nname = \"house-1\"\nmodel = \"kub1063\"\nbus = \"gw\"\nunit = 1\npoll_interval = \"1s\"\n"
    ));
    (sim, agent)
}

#[test]
fn everything_but_health_needs_the_token() {
    let (_sim, agent) = agent_with_one_device();
    let (status, body) = agent.request("GET", "/health", None, None);
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    for (method, path) in [
        ("GET", "/api/v1/devices"),
        ("GET", "/api/v1/devices/house-1"),
        ("POST", "/api/v1/devices/house-1/reset-alarms"),
    ] {
        let (status, body) = agent.request(method, path, None, None);
        assert_eq!(status, 401, "{method} {path} without a token: {body}");
        assert_eq!(body["error"]["code"], "unauthorized");
        let (status, _) =
            agent.request(method, path, Some("0123456789abcdef0123456789abcdef"), None);
        assert_eq!(status, 401, "{method} {path} with a wrong token");
    }
    let (status, body) = agent.get("/api/v1/devices");
    assert_eq!(status, 200);
    assert_eq!(body["devices"][0]["id"], "house-1");
    // Every state file (token, history database, its WAL and shared memory) is owner-only.
    use std::os::unix::fs::PermissionsExt as _;
    let state = agent.dir.0.join("state");
    assert_eq!(
        std::fs::metadata(&state)
            .expect("state dir")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&state).expect("state dir") {
        let entry = entry.expect("entry");
        let mode = entry.metadata().expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?}", entry.file_name());
        names.push(entry.file_name().to_string_lossy().to_string());
    }
    names.sort();
    assert!(
        names.starts_with(&["api-token".to_string(), "history.db".to_string()]),
        "{names:?}"
    );
}

#[test]
fn errors_are_json_with_the_right_status() {
    let (_sim, agent) = agent_with_one_device();
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        (
            "GET",
            "/api/v1/devices/house-9",
            None,
            404,
            "unknown_device",
        ),
        (
            "POST",
            "/api/v1/devices/house-9/reset-alarms",
            None,
            404,
            "unknown_device",
        ),
        ("GET", "/api/v1/devices/House%201", None, 400, "bad_request"),
        (
            "GET",
            "/api/v1/devices/house-1?lang=de",
            None,
            400,
            "bad_request",
        ),
        (
            "GET",
            "/api/v1/devices/house-1?colour=red",
            None,
            400,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/devices/house-1/reset-alarms",
            Some("{not json"),
            400,
            "bad_request",
        ),
        ("GET", "/api/v1/nothing-here", None, 404, "not_found"),
        ("POST", "/api/v1/devices", None, 405, "method_not_allowed"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, json) = agent.request(method, path, Some(&agent.token), *body);
        assert_eq!(
            (got, json["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{method} {path}: {json}"
        );
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

#[test]
fn device_documents_carry_every_field_with_status_and_names() {
    let (_sim, agent) = agent_with_one_device();
    let device = agent.wait_device("house-1", "a full poll", |d| {
        d["fields"].as_array().is_some_and(|f| f.len() == 119)
    });
    // Snapshot C: CO2 sensor break, bit 24 active and registered.
    let co2 = field(&device, "co2").expect("co2");
    assert_eq!(
        (
            co2["status"].as_str(),
            co2["value"].is_null(),
            co2["raw"].as_u64()
        ),
        (Some("break"), true, Some(0xFFFE))
    );
    let pressure = field(&device, "pressure").expect("pressure");
    assert_eq!(
        (pressure["value"].as_f64(), pressure["unit"].as_str()),
        (Some(17.7), Some("Pa"))
    );
    assert_eq!(field(&device, "nh3").expect("nh3")["status"], "disabled");
    assert_eq!(
        field(&device, "grv_tunnel").expect("grv")["status"],
        "unused"
    );
    assert_eq!(
        field(&device, "heater_2_relay_channel").expect("relay")["status"],
        "not_assigned"
    );
    assert_eq!(
        field(&device, "heater_1_relay_channel").expect("relay")["text"],
        "K6"
    );
    assert!(
        field(&device, "temp_inside").expect("t")["at"]
            .as_str()
            .is_some_and(|t| t.starts_with("20"))
    );
    let active = &device["alarms"][0];
    assert_eq!(active["group"], "active_alarms");
    assert_eq!(active["flags"][0]["key"], "co2_sensor_break");
    let (status, ru) = agent.get("/api/v1/devices/house-1?lang=ru");
    assert_eq!(status, 200);
    assert_eq!(
        field(&ru, "humidity").expect("humidity")["name"],
        "Относительная влажность"
    );
    assert_eq!(ru["alarms"][0]["flags"][0]["text"], "Обрыв датчика CO2");
}

#[test]
fn every_answer_round_trips_through_its_api_type() {
    use constella_api::{cluster, devices, history, node, speedtest};
    let sim = Sim::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--speed",
        "0",
        "--fault",
        "1=alarm:5",
    ]);
    let tcp = sim.tcp.expect("tcp");
    let agent = Agent::start_in_network(&format!(
        "[[bus]]\nname = \"gw\"\ntcp = \"{tcp}\"\n\n\
         [[device]]\nname = \"house-1\"\nmodel = \"kub1063\"\nbus = \"gw\"\nunit = 1\npoll_interval = \"1s\"\n"
    ));
    agent.wait_device("house-1", "a first poll", |d| d["status"] == "online");
    constella_tests::wait_until("the raised alarm is stored as an event", || {
        let (_, events) = agent.get("/api/v1/events");
        events["events"].as_array().is_some_and(|e| !e.is_empty())
    });
    let ok = |method: &str, path: &str| {
        let (status, body) = agent.request(method, path, Some(&agent.token), None);
        assert_eq!(status, 200, "{method} {path}: {body}");
        body
    };
    let (_, health) = agent.request("GET", "/health", None, None);
    round_trip::<devices::Health>("/health", &health);
    round_trip::<devices::DeviceList>("devices", &ok("GET", "/api/v1/devices"));
    for lang in ["en", "ru"] {
        let path = format!("/api/v1/devices/house-1?lang={lang}");
        round_trip::<devices::DeviceDetail>(&path, &ok("GET", &path));
    }
    round_trip::<devices::ResetDone>("reset", &ok("POST", "/api/v1/devices/house-1/reset-alarms"));
    round_trip::<history::SeriesList>(
        "device history",
        &ok("GET", "/api/v1/devices/house-1/history?field=temp_inside_1"),
    );
    round_trip::<history::SeriesList>(
        "node metrics",
        &ok("GET", "/api/v1/node/metrics?series=cpu"),
    );
    round_trip::<history::EventList>("events", &ok("GET", "/api/v1/events"));
    round_trip::<node::Node>("node", &ok("GET", "/api/v1/node"));
    round_trip::<speedtest::SinkReport>("sink", &ok("POST", "/api/v1/speedtest/sink"));
    round_trip::<cluster::Nodes>("nodes", &ok("GET", "/api/v1/nodes"));
    round_trip::<cluster::InviteLink>("invite", &ok("POST", "/api/v1/cluster/invites"));
    round_trip::<devices::DeviceList>(
        "a node's devices through the cluster",
        &ok("GET", "/api/v1/nodes/node-a/devices"),
    );
    round_trip::<cluster::Throughput>(
        "a node-to-node speed test",
        &ok("POST", "/api/v1/nodes/node-a/speedtest"),
    );
    let (status, error) = agent.get("/api/v1/devices/nope");
    assert_eq!(status, 404);
    round_trip::<constella_api::ErrorBody>("an error", &error);
}
