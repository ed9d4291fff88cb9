//! A lab of network namespaces for multi-host tests: a bridge namespace acting as the network,
//! one namespace per node joined to it by a veth pair, and `constella` processes run inside them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{Proc, constella};

/// The bridge namespace and one namespace per node, deleted on drop.
pub struct Lab {
    tag: String,
    nodes: usize,
}

/// Runs `make` in the network namespace `ns` (on a thread of its own, which `setns` moves); a
/// socket made there keeps its namespace wherever it is used later.
pub fn in_netns<T: Send + 'static>(ns: &str, make: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("open the namespace");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        make()
    })
    .join()
    .expect("namespace thread")
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    pub fn new(nodes: usize) -> Lab {
        // Unique per process and per lab; short, since interface names are `{tag}n{i}` (≤ 15).
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("c{}x{n}", std::process::id() % 100_000);
        let lab = Lab { tag, nodes };
        // The kernel's ARP table is shared by every namespace; a full mesh of n nodes needs
        // about n² entries, past the default hard limit (1024) at ~32 nodes.
        let wanted = (nodes * nodes * 2).max(1024);
        for (level, value) in [(1, wanted / 8), (2, wanted / 2), (3, wanted)] {
            let path = format!("/proc/sys/net/ipv4/neigh/default/gc_thresh{level}");
            let current: usize = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            if current < value {
                std::fs::write(&path, value.to_string()).expect("raise the ARP table limit");
            }
        }
        let bridge = lab.bridge();
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        let service = format!("{}/24", Lab::SERVICE_ADDR);
        ip(&["-n", &bridge, "addr", "add", &service, "dev", "br0"]);
        for i in 1..=nodes {
            let ns = lab.ns(i);
            let (inner, outer) = (format!("{}n{i}", lab.tag), format!("{}b{i}", lab.tag));
            ip(&["netns", "add", &ns]);
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &ns, "name", "eth0"]);
            ip(&[
                "link",
                "set",
                &outer,
                "netns",
                &bridge,
                "name",
                &format!("port{i}"),
            ]);
            ip(&[
                "-n",
                &bridge,
                "link",
                "set",
                &format!("port{i}"),
                "master",
                "br0",
                "up",
            ]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lab.addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// The network's own address, in the bridge namespace: shared services (a fake Telegram)
    /// listen there, reachable from every node until its port is cut.
    pub const SERVICE_ADDR: &str = "10.77.0.254";

    /// Binds a TCP listener on `SERVICE_ADDR:port` inside the bridge namespace. The socket keeps
    /// its namespace, so the caller serves it from any thread.
    pub fn service_listener(&self, port: u16) -> std::net::TcpListener {
        self.in_bridge(move || {
            std::net::TcpListener::bind((Lab::SERVICE_ADDR, port)).expect("bind in the bridge")
        })
    }

    /// Runs `make` in the bridge namespace (on a thread of its own, which `setns` moves), for
    /// sockets that must live there; a socket keeps its namespace wherever it is used later.
    pub fn in_bridge<T: Send + 'static>(&self, make: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.bridge(), make)
    }

    pub fn bridge(&self) -> String {
        format!("{}-net", self.tag)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}-node{i}", self.tag)
    }

    pub fn addr(&self, i: usize) -> String {
        format!("10.77.0.{i}")
    }

    /// Cuts (or restores) traffic between nodes `a` and `b` only, with blackhole routes on both
    /// sides: each still reaches every other node and the service address.
    pub fn cut_between(&self, a: usize, b: usize, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        for (from, to) in [(a, b), (b, a)] {
            let target = format!("{}/32", self.addr(to));
            ip(&["-n", &self.ns(from), "route", verb, "blackhole", &target]);
        }
    }

    /// Cuts node `i` off the network (`up = false`) or heals it.
    pub fn link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.bridge(),
            "link",
            "set",
            &format!("port{i}"),
            state,
        ]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 1..=self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(i)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.bridge()])
            .status();
    }
}

/// One node: its namespace, state directory and (when running) its agent.
pub struct Node<'a> {
    /// The network namespace it runs in.
    pub ns: String,
    /// Its address on the underlay, where `--public-addr` points.
    pub host: String,
    pub name: &'static str,
    pub dir: &'a Path,
    pub agent: Option<Proc>,
}

impl<'a> Node<'a> {
    /// A node whose config file gets `extra` appended (sections such as `[cluster]`).
    pub fn new(
        lab: &Lab,
        index: usize,
        name: &'static str,
        dir: &'a Path,
        extra: &str,
    ) -> Node<'a> {
        Node::at(lab.ns(index), lab.addr(index), name, dir, extra)
    }

    /// A node in namespace `ns` at underlay address `host`.
    pub fn at(
        ns: String,
        host: String,
        name: &'static str,
        dir: &'a Path,
        extra: &str,
    ) -> Node<'a> {
        std::fs::create_dir_all(dir).expect("node dir");
        let config = format!(
            "state_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:8400\"\n{extra}",
            dir.join("state").display()
        );
        std::fs::write(dir.join("config.toml"), config).expect("config");
        Node {
            ns,
            host,
            name,
            dir,
            agent: None,
        }
    }

    pub fn public_addr(&self) -> String {
        format!("{}:7300", self.host)
    }

    pub fn state(&self) -> String {
        self.dir.join("state").display().to_string()
    }

    pub fn config(&self) -> String {
        self.dir.join("config.toml").display().to_string()
    }

    /// Runs a `constella` command inside this node's namespace.
    pub fn command(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(constella())
            .args(args)
            .output()
            .expect("run constella");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `constella init` for this node as the network's first member.
    pub fn init(&self, owner: &str, bot_token: Option<&str>, priority: u32) -> (bool, String) {
        self.enroll("init", ["--owner", owner], bot_token, priority)
    }

    /// `constella join` through `link`.
    pub fn join(&self, link: &str, bot_token: Option<&str>, priority: u32) -> (bool, String) {
        self.enroll("join", ["--join", link], bot_token, priority)
    }

    /// `init` or `join` with this node's name, address and state directory.
    fn enroll(
        &self,
        verb: &str,
        extra: [&str; 2],
        bot_token: Option<&str>,
        priority: u32,
    ) -> (bool, String) {
        let addr = self.public_addr();
        self.enroll_with(
            verb,
            &[&extra[..], &["--public-addr", &addr]].concat(),
            bot_token,
            priority,
        )
    }

    /// `init` or `join` with this node's name and state directory and the given arguments.
    pub fn enroll_with(
        &self,
        verb: &str,
        extra: &[&str],
        bot_token: Option<&str>,
        priority: u32,
    ) -> (bool, String) {
        let (state, priority) = (self.state(), priority.to_string());
        let mut args = vec![verb, "--name", self.name];
        args.extend(extra);
        args.extend(["--priority", &priority, "--state-dir", &state]);
        if let Some(token) = bot_token {
            args.extend(["--bot-token", token]);
        }
        self.command(&args)
    }

    pub fn start(&mut self) {
        let ns = self.ns.clone();
        let exe = constella().display().to_string();
        let config = self.config();
        let agent = Proc::spawn(
            Path::new("ip"),
            &["netns", "exec", &ns, &exe, "run", "--config", &config],
        );
        agent.wait_line("agent running", |l| {
            l.contains("agent running").then_some(())
        });
        self.agent = Some(agent);
    }

    pub fn kill(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill();
        }
    }

    /// GET (or POST) on this node's API, from inside its namespace.
    pub fn api(&self, method: &str, path: &str) -> Value {
        let token = std::fs::read_to_string(self.dir.join("state/api-token")).expect("token");
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-s", "-m", "20"])
            .args([
                "-X",
                method,
                "-H",
                &format!("Authorization: Bearer {}", token.trim()),
            ])
            .arg(format!("http://127.0.0.1:8400{path}"))
            .output()
            .expect("curl");
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    pub fn nodes(&self) -> Value {
        self.api("GET", "/api/v1/nodes")
    }

    pub fn invite(&self, ttl: &str) -> String {
        let (ok, out) = self.command(&["invite", "--ttl", ttl, "--config", &self.config()]);
        assert!(ok, "invite failed: {out}");
        out.trim().to_string()
    }
}

/// A running network in `lab`: node `i` is named `names[i]`, has priority `i + 1` and, where
/// `bot_token` is given, can host the bot; the first inits, the others join with an invite from
/// it. Returns once every node sees every node alive.
pub fn start_network<'a>(
    lab: &'a Lab,
    dirs: &'a [std::path::PathBuf],
    names: &[&'static str],
    extra_config: &str,
    bot_token: Option<&str>,
) -> Vec<Node<'a>> {
    let mut nodes: Vec<Node<'a>> = dirs
        .iter()
        .zip(names)
        .enumerate()
        .map(|(i, (dir, name))| Node::new(lab, i + 1, name, dir, extra_config))
        .collect();
    let (ok, out) = nodes[0].init("@farm_owner", bot_token, 1);
    assert!(ok, "{out}");
    nodes[0].start();
    for i in 1..nodes.len() {
        let link = nodes[0].invite("15m");
        let (ok, out) = nodes[i].join(&link, bot_token, i as u32 + 1);
        assert!(ok, "{out}");
        nodes[i].start();
    }
    let size = nodes.len();
    crate::wait_until("every node sees every node alive", || {
        nodes.iter().all(|n| {
            n.nodes()["nodes"]
                .as_array()
                .is_some_and(|rows| rows.iter().filter(|r| r["status"] == "alive").count() == size)
        })
    });
    nodes
}
