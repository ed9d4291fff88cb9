//! Modbus benchmarks, run with `cargo bench -p constella-tests --bench modbus`. They print a
//! markdown table for docs/BENCHMARKS.md:
//! - Modbus TCP on loopback: registers per second for full-map polls of 32 units by the agent,
//!   against a client that reads one register per request;
//! - RTU at 9600 baud over a pty (the simulator paces replies to the wire time): one full read by
//!   the agent against the wire-time limit of its plan, and against one register per request;
//! - the agent's peak RSS while polling 32 units with the API up, and its CPU use at the default
//!   10 s poll interval.

use std::time::{Duration, Instant};

use constella_tests::{Agent, Sim, counter};
use tokio_modbus::client::Reader as _;
use tokio_modbus::prelude::{Slave, SlaveContext as _};

const UNITS: u8 = 32;
const WINDOW: Duration = Duration::from_secs(10);
const REGISTERS: u64 = 119;
/// The default plan: (words per request) of the 11 FC03/FC04 requests of a full poll.
const PLAN: [u64; 11] = [20, 11, 1, 20, 3, 1, 1, 20, 20, 20, 2];

fn main() {
    let idle_cpu = idle_cpu_percent();
    let tcp = tcp_throughput();
    let (rtu_agent, rtu_single) = rtu_full_read();
    let bits_per_char = 10.0;
    let frame_bytes = |words: u64| 8 + 5 + 2 * words;
    let t35 = 3.5 * bits_per_char / 9600.0;
    let wire_plan: f64 = PLAN
        .iter()
        .map(|&w| frame_bytes(w) as f64 * bits_per_char / 9600.0 + t35)
        .sum();
    let wire_single = REGISTERS as f64 * (frame_bytes(1) as f64 * bits_per_char / 9600.0 + t35);
    println!("\n| benchmark | result | alternative | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| Modbus TCP loopback, 32 units, full-map polls | {:.0} registers/s ({:.1} unit polls/s) | one register per request: {:.0} registers/s | {:.1}× |",
        tcp.agent_rate,
        tcp.polls_rate,
        tcp.single_rate,
        tcp.agent_rate / tcp.single_rate
    );
    println!(
        "| RTU 9600 8N1 over a pty, one full read (119 registers, 11 requests) | {:.0} ms | wire-time limit {:.0} ms | {:.2}× the limit |",
        rtu_agent * 1e3,
        wire_plan * 1e3,
        rtu_agent / wire_plan
    );
    println!(
        "| RTU 9600 8N1, one register per request (119 requests) | {:.0} ms | wire-time limit {:.0} ms | batched read is {:.1}× faster |",
        rtu_single * 1e3,
        wire_single * 1e3,
        rtu_single / rtu_agent
    );
    println!(
        "| Agent peak RSS, 32 units on TCP, API up | {:.1} MiB | budget 20 MiB | {:.2}× budget |",
        tcp.rss_mib,
        tcp.rss_mib / 20.0
    );
    println!(
        "| Agent CPU, 32 units polled every 10 s on TCP | {idle_cpu:.2} % of one core | budget: near zero | — |"
    );
}

struct TcpResult {
    agent_rate: f64,
    polls_rate: f64,
    single_rate: f64,
    rss_mib: f64,
}

fn tcp_throughput() -> TcpResult {
    let sim = constella_tests::tcp_sim_with_units(UNITS, &[]);
    let addr = sim.tcp.expect("tcp");
    let agent = agent_for_32_units(&sim, "1ms");
    agent.wait_device("u32", "first poll", |d| d["status"] == "online");
    let total = |agent: &Agent| -> u64 {
        let (_, list) = agent.get("/api/v1/devices");
        list["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .map(|d| counter(d, "polls_ok"))
            .sum()
    };
    let (start_polls, start) = (total(&agent), Instant::now());
    std::thread::sleep(WINDOW);
    let polls = total(&agent) - start_polls;
    let elapsed = start.elapsed().as_secs_f64();
    let rss_mib = constella_tests::peak_rss_mib(agent.proc.pid());
    drop(agent);

    let single = runtime().block_on(async {
        let mut ctx = tokio_modbus::client::tcp::connect(addr)
            .await
            .expect("connect");
        ctx.set_slave(Slave(1));
        let (start, mut reads) = (Instant::now(), 0u64);
        while start.elapsed() < WINDOW {
            for addr in 0x0081..=0x009F {
                ctx.read_input_registers(addr, 1)
                    .await
                    .expect("io")
                    .expect("no exception");
                reads += 1;
            }
        }
        reads as f64 / start.elapsed().as_secs_f64()
    });
    TcpResult {
        agent_rate: polls as f64 * REGISTERS as f64 / elapsed,
        polls_rate: polls as f64 / elapsed,
        single_rate: single,
        rss_mib,
    }
}

/// Mean seconds per full read by the agent, and per full read one register at a time.
fn rtu_full_read() -> (f64, f64) {
    let pty = constella_tests::PtyPair::new();
    let sim = Sim::on_pty(&pty, &["--rtu-units", "1"]);
    let agent = Agent::start(&format!(
        "[[bus]]\nname = \"rs485\"\nrtu = \"{}\"\n\n[[device]]\nname = \"u1\"\nmodel = \"kub1063\"\nbus = \"rs485\"\nunit = 1\npoll_interval = \"1ms\"\n",
        pty.b.display()
    ));
    agent.wait_device("u1", "first poll", |d| d["status"] == "online");
    let start_polls = counter(&agent.device("u1"), "polls_ok");
    let start = Instant::now();
    std::thread::sleep(WINDOW);
    let polls = counter(&agent.device("u1"), "polls_ok") - start_polls;
    let per_poll = start.elapsed().as_secs_f64() / polls as f64;
    drop(agent);

    let line = tokio_serial::new(pty.b.display().to_string(), 9600);
    let per_single_read = runtime().block_on(async move {
        let port = tokio_serial::SerialStream::open(&line).expect("open pty");
        // The stopped agent may have left a reply on its way; let the line settle, then flush.
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio_serial::SerialPort::clear(&port, tokio_serial::ClearBuffer::Input).expect("flush");
        let mut ctx = tokio_modbus::client::rtu::attach_slave(port, Slave(1));
        let t35 = Duration::from_micros(3646);
        let start = Instant::now();
        let addresses: Vec<(bool, u16)> = (0x0081..=0x009F)
            .chain([0x00A2])
            .chain(0x00C0..=0x00D6)
            .chain([0x0301])
            .map(|a| (true, a))
            .chain(
                [0x003F]
                    .into_iter()
                    .chain(0x0100..=0x013D)
                    .map(|a| (false, a)),
            )
            .collect();
        for (input, addr) in &addresses {
            let words = if *input {
                ctx.read_input_registers(*addr, 1).await
            } else {
                ctx.read_holding_registers(*addr, 1).await
            };
            words.expect("io").expect("no exception");
            tokio::time::sleep(t35).await;
        }
        assert_eq!(addresses.len() as u64, REGISTERS);
        start.elapsed().as_secs_f64()
    });
    drop(sim);
    (per_poll, per_single_read)
}

/// An agent polling every unit of a 32-unit simulator over Modbus TCP every `poll`.
fn agent_for_32_units(sim: &Sim, poll: &str) -> Agent {
    let bus = format!(
        "[[bus]]\nname = \"gw\"\ntcp = \"{}\"\n\n",
        sim.tcp.expect("tcp")
    );
    Agent::start(&(bus + &constella_tests::numbered_devices("gw", UNITS, poll)))
}

/// CPU use of an agent polling 32 units at the default 10 s interval, over 30 s.
fn idle_cpu_percent() -> f64 {
    let sim = constella_tests::tcp_sim_with_units(UNITS, &[]);
    let agent = agent_for_32_units(&sim, "10s");
    agent.wait_device("u32", "first poll", |d| d["status"] == "online");
    let pid = agent.proc.pid();
    let (cpu0, t0) = (constella_tests::cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(30));
    100.0 * (constella_tests::cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}
