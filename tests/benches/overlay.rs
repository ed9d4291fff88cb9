//! Overlay throughput and memory, side by side in one run and the same namespaces: a hub on the
//! "public" network and a farm behind a NAT router (`constella_tests::nat`). Run with
//! `cargo bench -p constella-tests --bench overlay`; prints markdown rows for docs/BENCHMARKS.md.
//! - Constella: the farm's speed test against the hub's blob and sink on the hub's overlay
//!   address (one HTTP stream each way through boringtun + smoltcp in both agents);
//! - wireguard-go: Debian's `wireguard-go` on a TUN device in both namespaces, kernel TCP,
//!   `iperf3` one stream each way;
//! - onetun: the `onetun` binary in the farm namespace forwarding a local port to `iperf3`
//!   behind the hub's `wireguard-go` (install it with
//!   `cargo install onetun --version 0.3.10 --locked --root target/bench-tools`; skipped when
//!   absent).
//!
//! CPU is the user + system time of the WireGuard processes (both agents; both wireguard-go
//! processes; onetun and the hub's wireguard-go) per GB carried; the kernel's TCP work for
//! wireguard-go and onetun is not in it, the agents' own TCP (smoltcp) and HTTP are.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use constella_tests::lab::Node;
use constella_tests::nat::{
    NatLab, StandardDevice, add_device, aim_speed_test, in_ns, must_in_ns, overlay_network,
    overlay_status, wireguard_go,
};
use constella_tests::{Proc, Scratch, cpu_seconds, rss_mib};

/// Bytes each way through the Constella overlay.
const TRANSFER: u64 = 200_000_000;
/// Seconds of each iperf3 run.
const IPERF_SECONDS: &str = "10";
/// The baselines' overlay network, apart from Constella's 10.42.0.0/24.
const HUB_TUN: &str = "10.77.0.1";
const FARM_TUN: &str = "10.77.0.2";
const ONETUN_SOURCE: &str = "10.77.0.3";
const BASELINE_PORT: &str = "51900";

/// One implementation's figures.
struct Row {
    name: &'static str,
    download_mbit: f64,
    upload_mbit: f64,
    cpu_s_per_gb: f64,
    memory: String,
}

fn main() {
    let lab = NatLab::new(2);
    let scratch = Scratch::new("bench-overlay");
    let mut rows = vec![constella(&lab, &scratch)];
    let baseline = Baseline::start(&lab, &scratch);
    rows.push(baseline.wireguard_go());
    match onetun_binary() {
        Some(onetun) => rows.push(baseline.onetun(&onetun, &scratch)),
        None => eprintln!("onetun not installed: skipped (see the header of this file)"),
    }
    let ours = &rows[0];
    println!(
        "| implementation | download (hub → farm) | upload (farm → hub) | CPU s per GB | RSS (MiB) |"
    );
    println!("|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        let ratio = |ours: f64, theirs: f64| match i {
            0 => String::new(),
            _ => format!(" (Constella {:.2}×)", ours / theirs),
        };
        println!(
            "| {} | {:.0} Mbit/s{} | {:.0} Mbit/s{} | {:.1} | {} |",
            row.name,
            row.download_mbit,
            ratio(ours.download_mbit, row.download_mbit),
            row.upload_mbit,
            ratio(ours.upload_mbit, row.upload_mbit),
            row.cpu_s_per_gb,
            row.memory
        );
    }
}

/// The hub and one farm joined from a link; the farm's speed test against the hub.
fn constella(lab: &NatLab, scratch: &Scratch) -> Row {
    let dirs: Vec<PathBuf> = ["hub", "farm1"]
        .iter()
        .map(|name| scratch.0.join(name))
        .collect();
    let mut nodes = overlay_network(lab, &dirs, &["hub", "farm1"], "", (None, None), &[]);
    let hub_address = overlay_status(&nodes[0]).address.to_string();
    aim_speed_test(&mut nodes[1], &hub_address, &dirs[0], (TRANSFER, TRANSFER));
    // One exchange first, so the measured run starts on a live tunnel.
    nodes[1].api("GET", "/api/v1/nodes");
    let pids: Vec<u32> = nodes
        .iter()
        .map(|n| n.agent.as_ref().expect("running").pid())
        .collect();
    let idle: Vec<f64> = pids.iter().map(|&p| rss_mib(p)).collect();
    let cpu_before: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
    let peak = PeakRss::watch(pids.clone());
    let token = std::fs::read_to_string(dirs[1].join("state/api-token")).expect("token");
    let (ok, out) = in_ns(
        &nodes[1].ns,
        &[
            "curl",
            "-sf",
            "-m",
            "600",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            "http://127.0.0.1:8400/api/v1/node/speedtest",
        ],
    );
    assert!(ok, "the speed test: {out}");
    let peaks = peak.stop();
    let cpu = pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>() - cpu_before;
    let report: serde_json::Value = serde_json::from_str(&out).expect("a speed-test report");
    std::thread::sleep(Duration::from_secs(5));
    let after: Vec<f64> = pids.iter().map(|&p| rss_mib(p)).collect();
    join_latency(lab, &nodes, &hub_address, &scratch.0.join("farm2"));
    first_ping_without_session(lab, &nodes, &hub_address, scratch);
    let memory = ["hub", "farm"]
        .iter()
        .enumerate()
        .map(|(i, who)| {
            format!(
                "{who} {:.1} idle / {:.1} peak / {:.1} 5 s after",
                idle[i], peaks[i], after[i]
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Row {
        name: "Constella (boringtun + smoltcp, HTTP)",
        download_mbit: report["download_bps"].as_f64().expect("download") / 1e6,
        upload_mbit: report["upload_bps"].as_f64().expect("upload") / 1e6,
        cpu_s_per_gb: cpu / (2.0 * TRANSFER as f64 / 1e9),
        memory,
    }
}

/// A second farm joins from a link: time from `constella join` to the first echo reply from the
/// hub through the overlay (the join request, the agent's start, the handshake, the first
/// ping), then the first round trips to the hub and to farm1 (relayed by the hub).
fn join_latency(lab: &NatLab, nodes: &[Node<'_>], hub_address: &str, dir: &Path) {
    let link = nodes[0].invite("15m");
    let mut farm = Node::at(lab.farm_ns(2), lab.farm_addr(2), "farm2", dir, "");
    let started = Instant::now();
    let (ok, out) = farm.enroll_with("join", &["--join", &link], None, 3);
    assert!(ok, "join: {out}");
    let joined = started.elapsed();
    farm.start();
    let running = started.elapsed();
    let ping =
        |address: &str| farm.command(&["ping", "-c", "1", address, "--config", &farm.config()]);
    loop {
        if ping(hub_address).0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no reply from the hub"
        );
    }
    let replied = started.elapsed();
    let farm1 = overlay_status(&nodes[1]).address.to_string();
    let (ok, relayed) = ping(&farm1);
    assert!(ok, "ping farm1: {relayed}");
    let (_, direct) = ping(hub_address);
    let first_rtt = |out: &str| {
        out.split_once("time=")
            .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("?").to_string())
            .unwrap_or_else(|| "?".to_string())
    };
    println!(
        "join → first overlay reply: {:.0} ms (join command {:.0} ms, agent running at {:.0} ms); \
         then a ping to the hub {} ms, to farm1 via the hub {} ms (first packet to farm1)",
        replied.as_secs_f64() * 1e3,
        joined.as_secs_f64() * 1e3,
        running.as_secs_f64() * 1e3,
        first_rtt(&direct),
        first_rtt(&relayed),
    );
}

/// A standard WireGuard device with no session, as after an idle spell (a session ends 180 s
/// after its handshake) and without a keepalive: the kernel's first ping, which waits for the
/// handshake with the hub, to the hub and to farm1 through the hub. `wg setconf` before each
/// sample drops the device's session, so every sample has its handshake.
fn first_ping_without_session(
    lab: &NatLab,
    nodes: &[Node<'_>],
    hub_address: &str,
    scratch: &Scratch,
) {
    let config = add_device(&nodes[1], &nodes[0], "bench-laptop")
        .lines()
        .filter(|line| !line.starts_with("PersistentKeepalive"))
        .map(|line| format!("{line}\n"))
        .collect::<String>();
    let ns = lab.outsider_ns(lab.add_outsider());
    let device = StandardDevice::up(&ns, &config, &scratch.0);
    let farm1 = overlay_status(&nodes[1]).address.to_string();
    let wg_config = device.wg_config.display().to_string();
    let [to_hub, to_farm1] = [hub_address, farm1.as_str()].map(|target| {
        samples_summary(|| {
            must_in_ns(&ns, &["wg", "setconf", &device.iface, &wg_config]);
            first_ping_ms(&ns, target)
        })
    });
    println!(
        "first ping with no session (handshake included), standard device: to the hub {to_hub}; \
         to farm1 through the hub {to_farm1}"
    );
}

/// Sessions dropped and first pings timed per target.
const FIRST_PING_SAMPLES: usize = 10;

/// Samples are spaced so that each handshake is taken as a real device's would be: a responder
/// answers more than 10 initiations a second from one peer with a cookie (the sample is then
/// lost for 5 s), and wireguard-go rounds its TAI64N timestamps down to about 16.8 ms, so two
/// initiations within that window look like a replay.
const HANDSHAKE_SPACING: Duration = Duration::from_millis(150);

/// "median M ms, max X ms" of `FIRST_PING_SAMPLES` runs of `sample`, and how many went
/// unanswered (`None`).
fn samples_summary(mut sample: impl FnMut() -> Option<f64>) -> String {
    let results: Vec<Option<f64>> = (0..FIRST_PING_SAMPLES)
        .map(|_| {
            std::thread::sleep(HANDSHAKE_SPACING);
            sample()
        })
        .collect();
    let mut samples: Vec<f64> = results.iter().flatten().copied().collect();
    samples.sort_by(f64::total_cmp);
    let lost = FIRST_PING_SAMPLES - samples.len();
    let order: Vec<String> = results
        .iter()
        .map(|r| r.map_or_else(|| "lost".to_string(), |ms| format!("{ms:.2}")))
        .collect();
    match samples.as_slice() {
        [] => format!("all {FIRST_PING_SAMPLES} unanswered within 5 s"),
        answered => format!(
            "median {:.2} ms, max {:.2} ms ({} of {FIRST_PING_SAMPLES} answered within 5 s: {})",
            answered[answered.len() / 2],
            answered[answered.len() - 1],
            FIRST_PING_SAMPLES - lost,
            order.join(", ")
        ),
    }
}

/// The round trip of the kernel's first echo request to `target` from namespace `ns`, if it
/// was answered within 5 s.
fn first_ping_ms(ns: &str, target: &str) -> Option<f64> {
    let (ok, out) = in_ns(ns, &["ping", "-c", "1", "-W", "5", target]);
    if !ok {
        return None;
    }
    out.split_once("time=")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
}

/// The highest resident set of each process while a run goes on, sampled every 50 ms.
struct PeakRss {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<Vec<f64>>,
}

impl PeakRss {
    fn watch(pids: Vec<u32>) -> PeakRss {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peaks = vec![0.0f64; pids.len()];
            while !flag.load(Ordering::Relaxed) {
                for (peak, &pid) in peaks.iter_mut().zip(&pids) {
                    *peak = peak.max(rss_mib(pid));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peaks
        });
        PeakRss { stop, sampler }
    }

    fn stop(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().expect("sampler")
    }
}

/// `wireguard-go` in the hub's and the farm's namespaces and an `iperf3` server on the hub's.
struct Baseline {
    hub_ns: String,
    farm_ns: String,
    hub_iface: String,
    hub_public: String,
    hub: Proc,
    farm: Proc,
    _iperf: Proc,
}

fn wg_key(stdin: Option<&str>, verb: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("wg")
        .arg(verb)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wg (wireguard-tools)");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wg");
    String::from_utf8(out.stdout)
        .expect("key")
        .trim()
        .to_string()
}

impl Baseline {
    fn start(lab: &NatLab, scratch: &Scratch) -> Baseline {
        let (hub_ns, farm_ns) = (lab.hub_ns(), lab.farm_ns(1));
        let (hub_private, farm_private) = (wg_key(None, "genkey"), wg_key(None, "genkey"));
        let hub_public = wg_key(Some(&hub_private), "pubkey");
        let farm_public = wg_key(Some(&farm_private), "pubkey");
        let key_file = |name: &str, key: &str| {
            let path = scratch.0.join(name);
            std::fs::write(&path, key).expect("key file");
            path.display().to_string()
        };
        let (hub, hub_iface) = wireguard_go(&hub_ns, "wgh");
        let (farm, farm_iface) = wireguard_go(&farm_ns, "wgf");
        let hub_key = key_file("hub.key", &hub_private);
        let farm_key = key_file("farm.key", &farm_private);
        must_in_ns(
            &hub_ns,
            &[
                "wg",
                "set",
                &hub_iface,
                "listen-port",
                BASELINE_PORT,
                "private-key",
                &hub_key,
                "peer",
                &farm_public,
                "allowed-ips",
                &format!("{FARM_TUN}/32"),
            ],
        );
        // No persistent keepalive: the first ping below then waits for the handshake, as a
        // Constella device's does; the iperf3 runs keep the NAT mapping alive.
        let endpoint = format!("{}:{BASELINE_PORT}", NatLab::HUB_ADDR);
        let farm_peer = [
            "wg",
            "set",
            &farm_iface,
            "private-key",
            &farm_key,
            "peer",
            &hub_public,
            "endpoint",
            &endpoint,
            "allowed-ips",
            "10.77.0.0/24",
        ];
        must_in_ns(&farm_ns, &farm_peer);
        for (ns, iface, address) in [
            (&hub_ns, &hub_iface, HUB_TUN),
            (&farm_ns, &farm_iface, FARM_TUN),
        ] {
            must_in_ns(
                ns,
                &["ip", "addr", "add", &format!("{address}/24"), "dev", iface],
            );
            must_in_ns(ns, &["ip", "link", "set", iface, "up"]);
        }
        let iperf = Proc::spawn(
            Path::new("ip"),
            &[
                "netns",
                "exec",
                &hub_ns,
                "iperf3",
                "-s",
                "-p",
                "5201",
                "--forceflush",
            ],
        );
        iperf.wait_line("iperf3 listens", |l| l.contains("listening").then_some(()));
        let first_ping = samples_summary(|| {
            must_in_ns(
                &farm_ns,
                &["wg", "set", &farm_iface, "peer", &hub_public, "remove"],
            );
            must_in_ns(&farm_ns, &farm_peer);
            first_ping_ms(&farm_ns, HUB_TUN)
        });
        println!(
            "first ping with no session (handshake included), wireguard-go ↔ wireguard-go: \
             {first_ping}"
        );
        Baseline {
            hub_ns,
            farm_ns,
            hub_iface,
            hub_public,
            hub,
            farm,
            _iperf: iperf,
        }
    }

    fn wireguard_go(&self) -> Row {
        let pids = [self.hub.pid(), self.farm.pid()];
        let peak = PeakRss::watch(pids.to_vec());
        let (download_mbit, upload_mbit, cpu_s_per_gb) =
            iperf_both_ways(&self.farm_ns, (HUB_TUN, "5201"), &pids);
        let peaks = peak.stop();
        Row {
            name: "wireguard-go ↔ wireguard-go (TUN, kernel TCP, iperf3)",
            download_mbit,
            upload_mbit,
            cpu_s_per_gb,
            memory: format!("hub {:.1} peak; farm {:.1} peak", peaks[0], peaks[1]),
        }
    }

    fn onetun(&self, onetun: &Path, scratch: &Scratch) -> Row {
        let private = wg_key(None, "genkey");
        let public = wg_key(Some(&private), "pubkey");
        must_in_ns(
            &self.hub_ns,
            &[
                "wg",
                "set",
                &self.hub_iface,
                "peer",
                &public,
                "allowed-ips",
                &format!("{ONETUN_SOURCE}/32"),
            ],
        );
        let key = scratch.0.join("onetun.key");
        std::fs::write(&key, &private).expect("key file");
        // No persistent keepalive: the first ping below then waits for the handshake, as a
        // Constella device's does; the iperf3 runs keep the NAT mapping alive.
        let endpoint = format!("{}:{BASELINE_PORT}", NatLab::HUB_ADDR);
        let forward = format!("127.0.0.1:15201:{HUB_TUN}:5201");
        let tunnel = Proc::spawn(
            Path::new("ip"),
            &[
                "netns",
                "exec",
                &self.farm_ns,
                &onetun.display().to_string(),
                &forward,
                "--endpoint-addr",
                &endpoint,
                "--endpoint-public-key",
                &self.hub_public,
                "--private-key-file",
                &key.display().to_string(),
                "--source-peer-ip",
                ONETUN_SOURCE,
                "--keep-alive",
                "25",
            ],
        );
        tunnel.wait_line("onetun listens", |l| {
            l.contains("127.0.0.1:15201").then_some(())
        });
        let pids = [tunnel.pid(), self.hub.pid()];
        let (download_mbit, upload_mbit, cpu_s_per_gb) =
            iperf_both_ways(&self.farm_ns, ("127.0.0.1", "15201"), &pids);
        Row {
            name: "onetun 0.3.10 → wireguard-go (iperf3)",
            download_mbit,
            upload_mbit,
            cpu_s_per_gb,
            memory: format!(
                "onetun {:.1} after the run (peak {:.1})",
                rss_mib(tunnel.pid()),
                constella_tests::peak_rss_mib(tunnel.pid())
            ),
        }
    }
}

/// An `iperf3` download then upload from namespace `ns` to `(host, port)`: Mbit/s each way and
/// the CPU seconds of `pids` per GB carried.
fn iperf_both_ways(ns: &str, (host, port): (&str, &str), pids: &[u32]) -> (f64, f64, f64) {
    let cpu_before: f64 = pids.iter().map(|&p| cpu_seconds(p)).sum();
    let (download, download_bytes) = iperf(ns, host, port, true);
    let (upload, upload_bytes) = iperf(ns, host, port, false);
    let cpu = pids.iter().map(|&p| cpu_seconds(p)).sum::<f64>() - cpu_before;
    (
        download,
        upload,
        cpu / ((download_bytes + upload_bytes) / 1e9),
    )
}

/// One `iperf3` stream from namespace `ns` to `host:port` (`reverse`: the server sends), as the
/// receiver counted it: Mbit/s and bytes.
fn iperf(ns: &str, host: &str, port: &str, reverse: bool) -> (f64, f64) {
    let mut command = vec![
        "timeout",
        "90",
        "iperf3",
        "-c",
        host,
        "-p",
        port,
        "-t",
        IPERF_SECONDS,
        "-J",
    ];
    if reverse {
        command.push("-R");
    }
    let (ok, out) = in_ns(ns, &command);
    assert!(ok, "iperf3 {command:?}: {out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
    let received = &report["end"]["sum_received"];
    (
        received["bits_per_second"]
            .as_f64()
            .expect("bits_per_second")
            / 1e6,
        received["bytes"].as_f64().expect("bytes"),
    )
}

/// The onetun binary where the header's install command puts it, or on `PATH`.
fn onetun_binary() -> Option<PathBuf> {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tools/bin/onetun");
    if local.exists() {
        return Some(local);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join("onetun"))
        .find(|p| p.exists())
}
