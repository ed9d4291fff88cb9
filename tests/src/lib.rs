//! Harness for the process-level tests in `tests/tests/`: the real `constella` binary as separate
//! processes (simulator, agent), a socat pty pair as the serial line, and the API over HTTP.
//!
//! Tests wait on observable conditions (an API answer, a line on a pipe, a file appearing) with a
//! generous deadline; nothing sleeps to synchronise.

pub mod lab;
pub mod nat;
pub mod telegram;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Deadline for anything a test waits on.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The `constella` binary, built once per test process with the profile the tests use.
///
/// A debug build asks cargo for exactly what `cargo test --workspace` builds (every package, test
/// targets included), so features unify the same way and the binary reuses that build's artifacts
/// in the workspace's own target directory: only `main.rs` is compiled and linked. Benchmarks
/// (release) build the package alone, as a user would.
pub fn constella() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .arg("build")
            .arg("--quiet")
            .arg("--manifest-path")
            .arg(&manifest);
        let profile = if cfg!(debug_assertions) {
            build.args(["--workspace", "--lib", "--bins", "--tests"]);
            "debug"
        } else {
            build.args(["--release", "-p", "constella", "--bin", "constella"]);
            "release"
        };
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cargo build of constella failed");
        target_dir().join(profile).join("constella")
    })
}

/// The workspace's target directory: this test executable lives in `TARGET/PROFILE/deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    exe.ancestors()
        .nth(3)
        .expect("the test executable sits in TARGET/PROFILE/deps")
        .to_path_buf()
}

/// Decodes an answer as the typed API shape and encodes it again: equal JSON means the type
/// names every field the server sends, with the same names and value shapes.
#[track_caller]
pub fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, answer: &Value) {
    let typed: T = serde_json::from_value(answer.clone())
        .unwrap_or_else(|e| panic!("{what}: does not decode as its API type: {e}\n{answer}"));
    let again = serde_json::to_value(&typed).expect("encode");
    assert_eq!(
        &again, answer,
        "{what}: the API type drops or renames a field"
    );
}

/// Waits until `check` returns true, polling every 50 ms; panics with `what` after `PATIENCE`.
#[track_caller]
pub fn wait_until(what: &str, check: impl FnMut() -> bool) {
    wait_within(PATIENCE, what, check);
}

/// `wait_until` with a deadline of its own, for what is slow by design (a long lease).
#[track_caller]
pub fn wait_within(patience: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {patience:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a bench binary's output: prints the markdown table header and returns the parts asked
/// for on the command line (none means all).
pub fn bench_parts() -> Vec<String> {
    println!("\n| benchmark | result | alternative | ratio |");
    println!("|---|---|---|---|");
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect()
}

/// A scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "constella-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop, with its output lines collected.
pub struct Proc {
    child: Child,
    pub lines: mpsc::Receiver<String>,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(program: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info,constella=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for pipe in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    log.lock().expect("log").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        Proc { child, lines, log }
    }

    /// The first output line (stdout or stderr) for which `pick` returns a value.
    #[track_caller]
    pub fn wait_line<T>(&self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = pick(&line) {
                        return found;
                    }
                }
                Err(_) => panic!(
                    "timed out waiting for {what}; output so far:\n{}",
                    self.output()
                ),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("wait");
        // The reader threads finish once the pipes close.
        let deadline = Instant::now() + PATIENCE;
        while self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
        {}
        (status, self.output())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `constella sim` as a separate process.
pub struct Sim {
    pub proc: Proc,
    pub tcp: Option<SocketAddr>,
    pub rtu_tcp: Option<SocketAddr>,
    pub rtu: Option<PathBuf>,
}

impl Sim {
    pub fn start(args: &[&str]) -> Sim {
        let proc = Proc::spawn(constella(), &[&["sim"], args].concat());
        let (mut tcp, mut rtu_tcp, mut rtu) = (None, None, None);
        proc.wait_line("simulator ready", |line| {
            let mut words = line.splitn(2, ' ');
            match (words.next(), words.next()) {
                (Some("tcp"), Some(addr)) => tcp = addr.parse().ok(),
                (Some("rtu-tcp"), Some(addr)) => rtu_tcp = addr.parse().ok(),
                (Some("rtu"), Some(path)) => rtu = Some(PathBuf::from(path)),
                (Some("ready"), None) => return Some(()),
                _ => {}
            }
            None
        });
        Sim {
            proc,
            tcp,
            rtu_tcp,
            rtu,
        }
    }

    /// A simulator serving RTU on end `a` of `pty`, with more `args`.
    pub fn on_pty(pty: &PtyPair, args: &[&str]) -> Sim {
        let path = pty.a.display().to_string();
        Sim::start(&[&["--rtu", path.as_str()], args].concat())
    }
}

/// A simulator serving units `1..=count` on Modbus TCP, with more `args`.
pub fn tcp_sim_with_units(count: u8, args: &[&str]) -> Sim {
    let units: Vec<String> = (1..=count).map(|u| u.to_string()).collect();
    let units = units.join(",");
    Sim::start(
        &[
            &["--tcp", "127.0.0.1:0", "--tcp-units", units.as_str()],
            args,
        ]
        .concat(),
    )
}

/// `[[device]]` tables for units `1..=count` on `bus`, named `u1`, `u2`, …
pub fn numbered_devices(bus: &str, count: u8, poll: &str) -> String {
    let names: Vec<(String, u8)> = (1..=count).map(|u| (format!("u{u}"), u)).collect();
    let named: Vec<(&str, u8)> = names.iter().map(|(n, u)| (n.as_str(), *u)).collect();
    devices(bus, &named, poll)
}

/// `[[device]]` tables for KUB-1063 units `(name, unit)` on `bus`, polled every `poll`.
pub fn devices(bus: &str, units: &[(&str, u8)], poll: &str) -> String {
    units
        .iter()
        .map(|(name, unit)| {
            format!(
                "[[device]]\nname = \"{name}\"\nmodel = \"kub1063\"\nbus = \"{bus}\"\nunit = {unit}\npoll_interval = \"{poll}\"\n\n"
            )
        })
        .collect()
}

/// A socat pty pair: two serial devices joined back to back, as a null-modem cable would.
pub struct PtyPair {
    _socat: Proc,
    _dir: Scratch,
    pub a: PathBuf,
    pub b: PathBuf,
}

impl PtyPair {
    pub fn new() -> PtyPair {
        PtyPair::in_scratch(Scratch::new("pty"))
    }

    /// A new pair linked at the same `a` and `b` paths in `dir` (a replugged adapter).
    pub fn at(dir: &Path) -> PtyPair {
        std::fs::create_dir_all(dir).expect("pty dir");
        PtyPair::in_scratch(Scratch(dir.to_path_buf()))
    }

    fn in_scratch(dir: Scratch) -> PtyPair {
        let (a, b) = (dir.0.join("a"), dir.0.join("b"));
        let socat = Proc::spawn(
            Path::new("socat"),
            &[
                &format!("pty,raw,echo=0,link={}", a.display()),
                &format!("pty,raw,echo=0,link={}", b.display()),
            ],
        );
        wait_until("socat pty links", || a.exists() && b.exists());
        PtyPair {
            _socat: socat,
            _dir: dir,
            a,
            b,
        }
    }
}

impl Default for PtyPair {
    fn default() -> Self {
        PtyPair::new()
    }
}

/// `constella run` as a separate process, with its API client.
pub struct Agent {
    pub proc: Proc,
    pub dir: Scratch,
    api: Api,
}

impl std::ops::Deref for Agent {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Agent {
    /// Starts an agent with `buses_and_devices` (TOML `[[bus]]` and `[[device]]` tables, and any
    /// other sections); the harness adds a scratch state directory and an API on a free port.
    pub fn start(buses_and_devices: &str) -> Agent {
        Agent::run_in(Agent::configured(buses_and_devices))
    }

    /// Like [`Agent::start`], for the first node of a network of its own (`constella init` as
    /// `node-a`, owner `@farm_owner`, cluster port on a free loopback port, no bot token).
    pub fn start_in_network(buses_and_devices: &str) -> Agent {
        let dir = Agent::configured(buses_and_devices);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let public = format!("127.0.0.1:{port}");
        let state = dir.0.join("state").display().to_string();
        let init = Command::new(constella())
            .args(["init", "--name", "node-a", "--owner", "@farm_owner"])
            .args(["--public-addr", &public, "--state-dir", &state])
            .output()
            .expect("run constella init");
        assert!(
            init.status.success(),
            "init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        Agent::run_in(dir)
    }

    /// A scratch directory with a configuration file: a state directory inside it and an API on
    /// a free port, plus `buses_and_devices`.
    fn configured(buses_and_devices: &str) -> Scratch {
        let dir = Scratch::new("agent");
        let text = format!(
            "state_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\n\n{buses_and_devices}",
            dir.0.join("state").display()
        );
        std::fs::write(dir.0.join("constella.toml"), text).expect("write config");
        dir
    }

    /// Stops the agent with `signal` (`TERM` or `KILL`), waits for it to exit, and starts it again
    /// on the same configuration and state directory.
    pub fn restart(self, signal: &str) -> Agent {
        let Agent {
            mut proc,
            dir,
            api: _,
        } = self;
        let pid = proc.pid().to_string();
        let sent = Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -s {signal} {pid}");
        let _ = proc.child.wait();
        drop(proc);
        Agent::run_in(dir)
    }

    /// The store's database file.
    pub fn database(&self) -> PathBuf {
        self.dir.0.join("state/history.db")
    }

    fn run_in(dir: Scratch) -> Agent {
        let config_arg = dir.0.join("constella.toml").display().to_string();
        let proc = Proc::spawn(constella(), &["run", "--config", &config_arg]);
        let addr = proc.wait_line("agent running", |line| {
            let rest = line.split("api=").nth(1)?;
            rest.split_whitespace().next()?.parse::<SocketAddr>().ok()
        });
        let token = std::fs::read_to_string(dir.0.join("state/api-token"))
            .expect("token file")
            .trim()
            .to_string();
        let api = Api::new(addr, token, proc.log.clone());
        Agent { proc, dir, api }
    }
}

/// A client of one agent's API.
pub struct Api {
    pub addr: SocketAddr,
    pub token: String,
    http: ureq::Agent,
    log: Arc<Mutex<Vec<String>>>,
}

impl Api {
    /// `log` is the agent's output, shown when a wait times out.
    pub fn new(addr: SocketAddr, token: String, log: Arc<Mutex<Vec<String>>>) -> Api {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(40)))
            .build()
            .new_agent();
        Api {
            addr,
            token,
            http,
            log,
        }
    }

    /// GET with the token; returns status and JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, Some(&self.token), None)
    }

    pub fn post(&self, path: &str, body: Option<&str>) -> (u16, Value) {
        self.request("POST", path, Some(&self.token), body)
    }

    /// Any request, with an optional token and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let url = format!("http://{}{path}", self.addr);
        let auth = token.map(|t| format!("Bearer {t}"));
        let response = match method {
            "GET" => {
                let mut request = self.http.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            _ => {
                let mut request = self.http.post(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                match body {
                    Some(body) => request
                        .header("Content-Type", "application/json")
                        .send(body),
                    None => request.send_empty(),
                }
            }
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The device's detail document.
    #[track_caller]
    pub fn device(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/devices/{id}"));
        assert_eq!(status, 200, "GET device {id}: {body}");
        body
    }

    /// Waits until `check` holds for the device's detail document.
    #[track_caller]
    pub fn wait_device(
        &self,
        id: &str,
        what: &str,
        mut check: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let last = self.device(id);
            if check(&last) {
                return last;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {id}: {what}; last document:\n{last:#}\nprocess log:\n{}",
                self.log.lock().expect("log").join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The raw word of field `key` in a device document.
pub fn raw(device: &Value, key: &str) -> Option<u64> {
    field(device, key).and_then(|f| f["raw"].as_u64())
}

/// Field `key` of a device document.
pub fn field<'a>(device: &'a Value, key: &str) -> Option<&'a Value> {
    device["fields"]
        .as_array()?
        .iter()
        .find(|f| f["key"] == key)
}

/// The 64-bit mask of alarm group `group` ("registered_alarms", …).
pub fn mask(device: &Value, group: &str) -> Option<u64> {
    let entry = device["alarms"]
        .as_array()?
        .iter()
        .find(|g| g["group"] == group)?;
    u64::from_str_radix(entry["mask"].as_str()?.trim_start_matches("0x"), 16).ok()
}

/// Counter `name` of a device document.
pub fn counter(device: &Value, name: &str) -> u64 {
    device["counters"][name].as_u64().unwrap_or(0)
}

/// User + system CPU seconds a process has used (Linux clock ticks of 10 ms).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    (fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime")) / 100.0
}

/// Context switches of each of a process's threads so far, by thread id. A thread blocked in
/// `epoll_wait` or on a futex switches out once per wake-up, so the growth between two snapshots
/// counts the wake-ups in between.
pub struct Switches(std::collections::BTreeMap<String, u64>);

impl Switches {
    pub fn of(pid: u32) -> Switches {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("proc tasks");
        let counts = tasks
            .filter_map(|task| {
                let path = task.ok()?.path();
                let status = std::fs::read_to_string(path.join("status")).ok()?;
                let switches = status
                    .lines()
                    .filter(|l| l.contains("ctxt_switches:"))
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum();
                Some((path.file_name()?.to_string_lossy().into_owned(), switches))
            })
            .collect();
        Switches(counts)
    }

    /// Wake-ups since `earlier`. A thread that exited in between (the blocking pool lets idle
    /// threads go) takes its last switches with it, which only undercounts an idle thread.
    pub fn since(&self, earlier: &Switches) -> u64 {
        self.0
            .iter()
            .map(|(tid, now)| now.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum()
    }
}

/// A process's peak resident set (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    proc_status_mib(pid, "VmHWM:")
}

/// A process's resident set now (VmRSS), in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    proc_status_mib(pid, "VmRSS:")
}

/// A size line of `/proc/PID/status` (given in kB), in MiB.
fn proc_status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"));
    kib / 1024.0
}
