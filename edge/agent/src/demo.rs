//! `constella demo`: the whole system on one machine with no hardware. The simulator serves two
//! units on a pty RTU bus and one on Modbus TCP; the agent polls them through the same
//! configuration path a farm uses; the API serves the result; a summary line per device refreshes
//! until Ctrl-C.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use constella_kub1063::{Group, Status, flags_of};

use crate::agent::Agent;
use crate::config::Config;
use crate::devices::DeviceState;
use constella_sim::{self as sim, SimOptions};

pub(crate) async fn run(
    listen: SocketAddr,
    state_dir: Option<PathBuf>,
    poll: Duration,
) -> anyhow::Result<()> {
    let sim = sim::start(SimOptions {
        tcp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        tcp_units: vec![3],
        rtu_pty: Some(None),
        rtu_units: vec![1, 2],
        ..SimOptions::default()
    })
    .await
    .context("Failed to start the simulator")?;
    let (Some(tcp), Some(pty)) = (sim.tcp, sim.rtu_path.clone()) else {
        anyhow::bail!("the simulator did not open its endpoints");
    };
    let temporary = state_dir.is_none();
    let state_dir = state_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("constella-demo-{}", std::process::id()))
    });
    let text = demo_config(&state_dir, listen, &pty, tcp, poll);
    let config = Config::parse(Path::new("(demo)"), &text)?;
    let agent = Agent::start(&config).await?;

    println!(
        "Constella demo: 3 simulated KUB-1063 units (house-1 and house-2 on RTU {}, house-3 on Modbus TCP {tcp})",
        pty.display()
    );
    println!("API:   http://{}/api/v1/devices", agent.api_addr);
    println!("Token: {}", agent.token);
    println!(
        "Try:   curl -H 'Authorization: Bearer {}' http://{}/api/v1/devices/house-1",
        agent.token, agent.api_addr
    );
    println!("Ctrl-C stops.\n");

    let tty = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(poll);
    let mut shown = 0usize;
    let result = loop {
        tokio::select! {
            result = crate::shutdown::signal() => break result,
            _ = tick.tick() => {
                let mut lines = vec![node_line(&agent)];
                lines.extend(agent.registry.snapshot().iter().map(summary));
                if tty && shown > 0 {
                    // Redraw in place: cursor up over the previous block.
                    print!("\x1b[{shown}A");
                }
                for line in &lines {
                    if tty { println!("\x1b[2K{line}") } else { println!("{line}") }
                }
                shown = lines.len();
            }
        }
    };
    agent.stop().await;
    drop(sim);
    if temporary {
        let _ = std::fs::remove_dir_all(&state_dir);
    }
    println!("\nStopped.");
    result
}

fn demo_config(
    state_dir: &Path,
    listen: SocketAddr,
    pty: &Path,
    tcp: SocketAddr,
    poll: Duration,
) -> String {
    let poll = humantime::format_duration(poll);
    format!(
        r#"state_dir = "{state}"
[api]
listen = "{listen}"

[[bus]]
name = "rs485"
rtu = "{pty}"
baud = 9600

[[bus]]
name = "gateway"
tcp = "{tcp}"

[[device]]
name = "house-1"
model = "kub1063"
bus = "rs485"
unit = 1
poll_interval = "{poll}"

[[device]]
name = "house-2"
model = "kub1063"
bus = "rs485"
unit = 2
poll_interval = "{poll}"

[[device]]
name = "house-3"
model = "kub1063"
bus = "gateway"
unit = 3
poll_interval = "{poll}"
"#,
        state = state_dir.display(),
        pty = pty.display(),
    )
}

/// The board itself: CPU and memory from the latest node sample.
fn node_line(agent: &Agent) -> String {
    let node = agent
        .history
        .node
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cpu = node.latest.get("cpu.total");
    let (used, total) = (node.latest.get("mem.used"), node.latest.get("mem.total"));
    match (cpu, used, total) {
        (Some(cpu), Some(used), Some(total)) => {
            format!(
                "board    cpu {cpu:>5.1} %  memory {:.0} / {:.0} MiB",
                used / 1048576.0,
                total / 1048576.0
            )
        }
        _ => "board    sampling…".to_string(),
    }
}

/// One line: name, health, climate, ventilation, alarms.
pub(crate) fn summary(device: &DeviceState) -> String {
    let decoded = device.image().decode();
    let field = |key: &str| -> String {
        match decoded.fields.iter().find(|f| f.register.key == key) {
            Some(f) if f.reading.status == Status::Ok => {
                f.reading.value.map(|v| v.to_string()).unwrap_or_default()
            }
            Some(f) => f.reading.status.as_str().to_string(),
            None => "–".into(),
        }
    };
    let alarms: Vec<String> = decoded
        .groups
        .iter()
        .filter(|g| g.group == Group::RegisteredAlarms)
        .flat_map(|g| flags_of(g.mask))
        .map(|flag| match flag {
            constella_kub1063::Flag::Known(bit) => bit.key.to_string(),
            constella_kub1063::Flag::Undocumented(bit) => format!("bit{bit}"),
        })
        .collect();
    format!(
        "{:<8} {:<8} inside {:>5} °C (target {}) RH {:>4} % CO2 {:>4} ppm vent {:>5} % day {:>3} alarms: {}",
        device.name,
        device.health().as_str(),
        field("temp_inside"),
        field("temp_target"),
        field("humidity"),
        field("co2"),
        field("ventilation_level"),
        field("day_counter"),
        if alarms.is_empty() {
            "none".to_string()
        } else {
            alarms.join(", ")
        },
    )
}
