//! The agent polls the simulator over every transport and sees exactly what the simulator serves.

use constella_tests::{Agent, PtyPair, Sim, counter, field, raw};
use serde_json::Value;
use tokio_modbus::client::Reader as _;
use tokio_modbus::prelude::{Slave, SlaveContext as _};

/// Every (table, address, raw) the agent reports for `id`, once all 119 polled registers are in.
fn agent_words(agent: &Agent, id: &str) -> Vec<(String, u16, u64)> {
    let device = agent.wait_device(id, "a complete poll", |d| {
        d["status"] == "online" && d["fields"].as_array().is_some_and(|f| f.len() == 119)
    });
    device["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            let addr = u16::from_str_radix(
                f["address"]
                    .as_str()
                    .expect("address")
                    .trim_start_matches("0x"),
                16,
            );
            (
                f["table"].as_str().expect("table").to_string(),
                addr.expect("hex"),
                f["raw"].as_u64().expect("raw"),
            )
        })
        .collect()
}

/// Reads every register the agent reported, one request each, with an independent client.
async fn direct_words(
    mut ctx: tokio_modbus::client::Context,
    unit: u8,
    words: &[(String, u16, u64)],
) -> Vec<(String, u16, u64)> {
    ctx.set_slave(Slave(unit));
    let mut out = Vec::new();
    for (table, addr, _) in words {
        let read = if table == "input" {
            ctx.read_input_registers(*addr, 1).await
        } else {
            ctx.read_holding_registers(*addr, 1).await
        };
        let word = read.expect("transport").expect("no exception")[0];
        out.push((table.clone(), *addr, u64::from(word)));
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn tcp_full_poll_matches_what_the_simulator_serves() {
    let sim = Sim::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--tcp-units",
        "1,7",
        "--speed",
        "0",
        "--snapshot",
        "B",
    ]);
    let tcp = sim.tcp.expect("tcp endpoint");
    let agent = Agent::start(&format!(
        r#"
[[bus]]
name = "gw"
tcp = "{tcp}"

[[device]]
name = "house-1"
model = "kub1063"
bus = "gw"
unit = 1
poll_interval = "1s"

[[device]]
name = "house-7"
model = "kub1063"
bus = "gw"
unit = 7
poll_interval = "1s"
"#
    ));
    for (id, unit) in [("house-1", 1), ("house-7", 7)] {
        let words = agent_words(&agent, id);
        let direct = runtime().block_on(async {
            let ctx = tokio_modbus::client::tcp::connect(tcp)
                .await
                .expect("connect");
            direct_words(ctx, unit, &words).await
        });
        assert_eq!(words, direct, "{id}: agent and direct reads differ");
    }
    // Snapshot B decodes as the fact sheet says: pressure sensor break, bit 41 active.
    let device = agent.device("house-1");
    assert_eq!(
        field(&device, "pressure").expect("pressure")["status"],
        "break"
    );
    assert_eq!(
        field(&device, "humidity").expect("humidity")["value"],
        Value::from(52.4)
    );
    assert_eq!(
        constella_tests::mask(&device, "active_alarms"),
        Some(1 << 41)
    );
    let flags = &device["alarms"][0]["flags"];
    assert_eq!(flags[0]["key"], "pressure_sensor_break");
    assert_eq!(
        counter(&device, "timeouts") + counter(&device, "crc_framing") + counter(&device, "io"),
        0
    );
}

#[test]
fn rtu_over_a_pty_pair_polls_two_units_on_one_bus() {
    let pty = PtyPair::new();
    let sim = Sim::on_pty(
        &pty,
        &["--rtu-units", "1,2", "--speed", "0", "--snapshot", "A"],
    );
    assert_eq!(sim.rtu.as_deref(), Some(pty.a.as_path()));
    let agent = Agent::start(&format!(
        r#"
[[bus]]
name = "rs485"
rtu = "{}"
baud = 9600
timeout = "1s"

[[device]]
name = "house-1"
model = "kub1063"
bus = "rs485"
unit = 1
poll_interval = "1s"

[[device]]
name = "house-2"
model = "kub1063"
bus = "rs485"
unit = 2
poll_interval = "1s"
"#,
        pty.b.display()
    ));
    let snapshot = constella_kub1063::fixtures::snapshot('A').expect("A");
    for id in ["house-1", "house-2"] {
        let words = agent_words(&agent, id);
        for &(addr, expect) in snapshot.words {
            let got = words
                .iter()
                .find(|(t, a, _)| t == "input" && *a == addr)
                .map(|w| w.2);
            assert_eq!(got, Some(u64::from(expect)), "{id} word {addr:#06X}");
        }
    }
    let device = agent.device("house-1");
    assert_eq!(
        field(&device, "software_version").expect("version")["text"],
        "4.14"
    );
    assert_eq!(raw(&device, "co2"), Some(2600));
    let outputs: Vec<&str> = device["outputs_on"]
        .as_array()
        .expect("outputs")
        .iter()
        .filter_map(|o| o["key"].as_str())
        .collect();
    assert_eq!(outputs, ["gnv_base_1", "grv_base_1_run", "alarm_relay"]);
    // Twelve requests a poll: the batched plan, not one request per register.
    let polls = counter(&device, "polls_ok");
    assert!(
        polls >= 1 && counter(&device, "requests") <= 11 * polls + 11,
        "{device:#}"
    );
    drop(sim);
}

#[test]
fn rtu_over_tcp_reads_a_serial_device_server() {
    let sim = Sim::start(&[
        "--rtu-tcp",
        "127.0.0.1:0",
        "--rtu-tcp-units",
        "4",
        "--speed",
        "0",
        "--snapshot",
        "D",
    ]);
    let addr = sim.rtu_tcp.expect("rtu-tcp endpoint");
    let agent = Agent::start(&format!(
        r#"
[[bus]]
name = "moxa"
rtu_over_tcp = "{addr}"

[[device]]
name = "house-4"
model = "kub1063"
bus = "moxa"
unit = 4
poll_interval = "1s"
"#
    ));
    let words = agent_words(&agent, "house-4");
    let direct = runtime().block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        direct_words(tokio_modbus::client::rtu::attach(stream), 4, &words).await
    });
    assert_eq!(words, direct);
    let device = agent.device("house-4");
    assert_eq!(
        field(&device, "ventilation_target").expect("target")["text"],
        "91.2"
    );
    assert_eq!(
        constella_tests::mask(&device, "registered_alarms"),
        Some(1 << 57)
    );
}
