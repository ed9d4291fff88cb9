//! The hardening issue's attacks, each against a real agent over real sockets: floods of stalled
//! bodies and of idle connections on the cluster port, slow senders on the API. The agent runs
//! under the usual service limit of 1,024 open files. Memory figures are printed for
//! `docs/BENCHMARKS.md`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use constella_tests::{Agent, constella, rss_mib, wait_until};
use serde_json::Value;

/// The whole suite shares one process; this file's tests change its open-file limit.
static LIMITS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A one-node network (`node-a`, running) with a second member `node-b` that joined but never
/// runs: a member id an attacker can claim in a header. Returns the agent, the cluster address
/// and the network, node-a and node-b ids.
fn network_with_an_absent_member() -> (Agent, SocketAddr, [String; 3]) {
    // The agent inherits this soft limit: what systemd gives a service by default.
    set_open_files(1024);
    let agent = Agent::start_in_network("");
    set_open_files(8192);
    let state = |dir: &std::path::Path| -> Value {
        let text = std::fs::read_to_string(dir.join("network_state.json")).expect("state");
        serde_json::from_str(&text).expect("json")
    };
    let a = state(&agent.dir.0.join("state"));
    let cluster: SocketAddr = a["listen"].as_str().expect("listen").parse().expect("addr");
    let (status, invite) = agent.post("/api/v1/cluster/invites", Some(r#"{"ttl":"15m"}"#));
    assert_eq!(status, 200, "invite: {invite}");
    let link = invite["link"].as_str().expect("link").to_string();
    let b_dir = agent.dir.0.join("node-b");
    let joined = Command::new(constella())
        .args(["join", "--name", "node-b", "--join", &link])
        .args(["--public-addr", "127.0.0.1:9", "--state-dir"])
        .arg(&b_dir)
        .output()
        .expect("join");
    assert!(
        joined.status.success(),
        "{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    let b = state(&b_dir);
    let ids = [
        a["network_id"].as_str().expect("network").to_string(),
        a["node_id"].as_str().expect("a").to_string(),
        b["node_id"].as_str().expect("b").to_string(),
    ];
    (agent, cluster, ids)
}

fn set_open_files(soft: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, soft.min(hard), hard).expect("setrlimit");
}

/// The 64-byte envelope header (layout in `edge/cluster/src/envelope.rs`) claiming `from`.
fn header(network: &str, from: &str, to: &str, body_len: u32) -> Vec<u8> {
    let field = |text: &str| hex::decode(text).expect("hex id");
    let mut out = b"CNS2".to_vec();
    out.extend(field(network));
    out.extend(field(from));
    out.extend(field(to));
    out.extend(1u64.to_be_bytes());
    out.extend(body_len.to_be_bytes());
    out
}

/// Opens a POST of an envelope declaring `body_len`, sends `send` bytes of it and leaves it open.
fn stalled_post(addr: SocketAddr, head: &[u8], body_len: u32, send: usize) -> TcpStream {
    let total = head.len() + body_len as usize + 64;
    let mut stream = TcpStream::connect(addr).expect("connect");
    // A refused sender's writes may stop being read before the node closes the connection.
    stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .expect("write timeout");
    let request =
        format!("POST /cluster/v1/message HTTP/1.1\r\nhost: x\r\ncontent-length: {total}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("request head");
    stream.write_all(head).expect("envelope header");
    let chunk = vec![0x5Au8; 64 << 10];
    let mut sent = 0;
    while sent < send {
        let n = chunk.len().min(send - sent);
        if stream.write_all(&chunk[..n]).is_err() {
            break; // refused and closed by the node: what we want
        }
        sent += n;
    }
    stream
}

/// True once the node closed `stream` (EOF or reset) or answered it.
fn answered_or_closed(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 256];
    let done =
        !matches!(stream.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("blocking");
    done
}

#[test]
fn stalled_bodies_claiming_a_member_cannot_take_the_nodes_memory() {
    let _serial = LIMITS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (agent, cluster, [network, a, b]) = network_with_an_absent_member();
    let pid = agent.proc.pid();
    let before = rss_mib(pid);

    // Strangers are refused from the header alone: nothing of their bodies is read.
    let stranger = "00112233445566778899aabbccddeeff";
    // In batches under the per-source connection limit, so each is judged by its header.
    let mut refused = Vec::new();
    for _ in 0..3 {
        let batch: Vec<TcpStream> = (0..10)
            .map(|_| {
                stalled_post(
                    cluster,
                    &header(&network, stranger, &a, 4_000_000),
                    4_000_000,
                    0,
                )
            })
            .collect();
        wait_until("every stranger refused", || {
            batch.iter().all(answered_or_closed)
        });
        refused.extend(batch);
    }

    // Headers claiming node-b pass the screen; their bodies draw on a bounded budget.
    const BODY: u32 = 4_000_000;
    let stalled: Vec<TcpStream> = (0..30)
        .map(|_| {
            stalled_post(
                cluster,
                &header(&network, &b, &a, BODY),
                BODY,
                BODY as usize - 4096,
            )
        })
        .collect();
    let during = rss_mib(pid);
    let busy = stalled.iter().filter(|s| answered_or_closed(s)).count();
    drop(stalled);
    drop(refused);
    wait_until("the node saw the connections close", || {
        agent.get("/api/v1/nodes").1["rejected_messages"]["busy"].as_u64() >= Some(20)
    });
    let after = rss_mib(pid);
    println!(
        "RSS MiB before {before:.1}, with 30 stalled 4 MB bodies {during:.1}, after they closed {after:.1}"
    );
    assert!(
        busy >= 20,
        "most were refused for want of budget: {busy} of 30"
    );
    assert!(
        during - before < 40.0,
        "30 stalled 4 MB bodies took {:.1} MB",
        during - before
    );
    let (status, _) = agent.get("/api/v1/nodes");
    assert_eq!(status, 200, "the node still answers");
    let rejected = agent.get("/api/v1/nodes").1["rejected_messages"].clone();
    assert!(
        rejected["unknown_sender"].as_u64() >= Some(30),
        "{rejected}"
    );
    assert!(rejected["busy"].as_u64() >= Some(20), "{rejected}");
    let log = agent.proc.output();
    let lines = log.matches("rejected a cluster message").count();
    assert!(
        lines <= 6,
        "rejections are logged once per reason a minute: {lines} lines"
    );
}

#[test]
fn floods_of_idle_and_slow_connections_leave_the_api_answering_and_state_writable() {
    let _serial = LIMITS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (agent, cluster, _) = network_with_an_absent_member();
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect(cluster).ok())
        .collect();
    let slow: Vec<TcpStream> = (0..500)
        .filter_map(|_| {
            let mut s = TcpStream::connect(agent.addr).ok()?;
            s.write_all(b"GET /api/v1/devices HTTP/1.1\r\nhost: x\r\n")
                .ok()?;
            Some(s)
        })
        .collect();
    // Over the caps, connections are closed at once.
    wait_until("idle connections over the cap closed", || {
        idle.iter().filter(|s| !answered_or_closed(s)).count() <= 16
    });
    wait_until("slow API connections over the cap closed", || {
        slow.iter().filter(|s| !answered_or_closed(s)).count() <= 32
    });
    // The API answers and state can be written (an invite is saved) meanwhile.
    let asked = Instant::now();
    let (status, _) = agent.get("/api/v1/devices");
    assert_eq!(status, 200);
    println!(
        "under 1,100 idle cluster and 500 slow API connections: API answered in {:?}, RSS {:.1} MiB",
        asked.elapsed(),
        rss_mib(agent.proc.pid())
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let (status, _) = agent.post("/api/v1/cluster/invites", Some(r#"{"ttl":"10m"}"#));
    assert_eq!(status, 200, "an invite is saved");
    // Those kept are closed once their headers are overdue (20 s cluster, 30 s API).
    wait_until("every idle and slow connection closed", || {
        idle.iter().chain(slow.iter()).all(answered_or_closed)
    });
    println!("all flood connections closed after {:?}", started.elapsed());
    let log = agent.proc.output();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(!log.contains("failed to save"), "{log}");
}
