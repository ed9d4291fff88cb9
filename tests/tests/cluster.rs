//! The cluster across real network namespaces: each `constella` runs in its own namespace with
//! its own address, joined through veth pairs to a bridge in a namespace of its own (the
//! "network"). Partitions take a node's bridge port down. Each node's API is reached from inside
//! its namespace.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use constella_tests::{Proc, Scratch, constella, wait_until};
use serde_json::Value;

/// The bridge namespace and one namespace per node, deleted on drop.
struct Lab {
    tag: String,
    nodes: usize,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new(nodes: usize) -> Lab {
        let tag = format!("c{}", std::process::id() % 100_000);
        let lab = Lab { tag, nodes };
        let bridge = lab.bridge();
        ip(&["netns", "add", &bridge]);
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
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

    fn bridge(&self) -> String {
        format!("{}-net", self.tag)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-node{i}", self.tag)
    }

    fn addr(&self, i: usize) -> String {
        format!("10.77.0.{i}")
    }

    /// Cuts node `i` off the network (`up = false`) or heals it.
    fn link(&self, i: usize, up: bool) {
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
struct Node<'a> {
    lab: &'a Lab,
    index: usize,
    name: &'static str,
    dir: &'a Path,
    agent: Option<Proc>,
}

impl<'a> Node<'a> {
    fn new(lab: &'a Lab, index: usize, name: &'static str, dir: &'a Path) -> Node<'a> {
        std::fs::create_dir_all(dir).expect("node dir");
        let config = format!(
            "state_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:8400\"\n",
            dir.join("state").display()
        );
        std::fs::write(dir.join("config.toml"), config).expect("config");
        Node {
            lab,
            index,
            name,
            dir,
            agent: None,
        }
    }

    fn public_addr(&self) -> String {
        format!("{}:7300", self.lab.addr(self.index))
    }

    fn state(&self) -> String {
        self.dir.join("state").display().to_string()
    }

    fn config(&self) -> String {
        self.dir.join("config.toml").display().to_string()
    }

    /// Runs a `constella` command inside this node's namespace.
    fn command(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.lab.ns(self.index)])
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

    fn start(&mut self) {
        let ns = self.lab.ns(self.index);
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

    fn kill(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill();
        }
    }

    /// GET (or POST) on this node's API, from inside its namespace.
    fn api(&self, method: &str, path: &str) -> Value {
        let token = std::fs::read_to_string(self.dir.join("state/api-token")).expect("token");
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.lab.ns(self.index),
                "curl",
                "-s",
                "-m",
                "20",
            ])
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

    fn nodes(&self) -> Value {
        self.api("GET", "/api/v1/nodes")
    }

    fn invite(&self, ttl: &str) -> String {
        let (ok, out) = self.command(&["invite", "--ttl", ttl, "--config", &self.config()]);
        assert!(ok, "invite failed: {out}");
        out.trim().to_string()
    }
}

/// `link` with the query parameter `key` set to `value`.
fn with_param(link: &str, key: &str, value: &str) -> String {
    let (head, query) = link.split_once('?').expect("query");
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k == key => format!("{k}={value}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

fn holder(nodes: &Value) -> Option<(String, u64)> {
    let name = nodes["lease_holder"].as_str()?;
    Some((name.to_string(), nodes["epoch"].as_u64()?))
}

fn alive_names(nodes: &Value) -> Vec<String> {
    let mut names: Vec<String> = nodes["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["status"] == "alive")
        .map(|n| n["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn three_nodes_join_elect_fail_over_and_survive_a_partition() {
    let lab = Lab::new(4);
    let scratch = Scratch::new("cluster");
    let dirs: Vec<_> = (1..=4).map(|i| scratch.0.join(format!("n{i}"))).collect();
    let mut alpha = Node::new(&lab, 1, "alpha", &dirs[0]);
    let mut bravo = Node::new(&lab, 2, "bravo", &dirs[1]);
    let mut charlie = Node::new(&lab, 3, "charlie", &dirs[2]);
    let stranger = Node::new(&lab, 4, "stranger", &dirs[3]);

    let (ok, out) = alpha.command(&[
        "init",
        "--name",
        "alpha",
        "--public-addr",
        &alpha.public_addr(),
        "--owner",
        "@farm_owner",
        "--bot-token",
        "111:alpha",
        "--priority",
        "1",
        "--state-dir",
        &alpha.state(),
    ]);
    assert!(ok, "{out}");
    alpha.start();

    // Two joins, each with its own invite; bravo's goes through alpha, charlie's through bravo
    // (any live node redeems an invite).
    let link = alpha.invite("15m");
    assert!(
        link.starts_with(&format!("join://{}?net=", alpha.public_addr())),
        "{link}"
    );
    let (ok, out) = bravo.command(&[
        "join",
        "--name",
        "bravo",
        "--join",
        &link,
        "--public-addr",
        &bravo.public_addr(),
        "--bot-token",
        "222:bravo",
        "--priority",
        "2",
        "--state-dir",
        &bravo.state(),
    ]);
    assert!(ok, "{out}");
    bravo.start();
    let link = alpha.invite("15m");
    let via_bravo = link.replace(&alpha.public_addr(), &bravo.public_addr());
    wait_until("bravo knows the new invite", || {
        let (ok, _) = stranger.command(&[
            "join",
            "--name",
            "probe",
            "--join",
            "join://10.77.0.99:1?net=00&token=00",
            "--state-dir",
            "/nonexistent",
        ]);
        !ok
    });
    let mut joined = (false, String::new());
    wait_until("charlie joins through bravo", || {
        joined = charlie.command(&[
            "join",
            "--name",
            "charlie",
            "--join",
            &via_bravo,
            "--public-addr",
            &charlie.public_addr(),
            "--priority",
            "3",
            "--state-dir",
            &charlie.state(),
        ]);
        joined.0 || !joined.1.contains("unknown")
    });
    assert!(joined.0, "{}", joined.1);
    charlie.start();

    // Everyone sees everyone; the leader is alpha (priority 1 with a bot token).
    for node in [&alpha, &bravo, &charlie] {
        wait_until(&format!("{} sees all three alive", node.name), || {
            alive_names(&node.nodes()) == ["alpha", "bravo", "charlie"]
        });
        wait_until(&format!("{} sees alpha hold the lease", node.name), || {
            holder(&node.nodes()).is_some_and(|(h, _)| h == "alpha")
        });
        assert_eq!(node.nodes()["leader"], "alpha");
    }
    let (ok, table) = charlie.command(&["status", "--config", &charlie.config()]);
    assert!(
        ok && table.contains("alpha") && table.contains("holder (epoch"),
        "{table}"
    );

    // Refused joins, each with its own error, nothing overwritten.
    let join_as = |name: &str, link: &str| {
        stranger.command(&[
            "join",
            "--name",
            name,
            "--join",
            link,
            "--public-addr",
            &stranger.public_addr(),
            "--state-dir",
            &format!("{}/{name}", stranger.state()),
            "--attempts",
            "1",
        ])
    };
    let used = join_as("delta", &via_bravo);
    assert!(!used.0 && used.1.contains("already used"), "{}", used.1);
    let fresh = alpha.invite("15m");
    let dup = join_as("bravo", &fresh);
    assert!(!dup.0 && dup.1.contains("already exists"), "{}", dup.1);
    let unknown = with_param(&fresh, "token", &"0".repeat(32));
    let unknown = join_as("delta", &unknown);
    assert!(!unknown.0 && unknown.1.contains("unknown"), "{}", unknown.1);
    let short = alpha.invite("1s");
    let begin = Instant::now();
    wait_until("the 1 s invite expires", || {
        begin.elapsed() > Duration::from_secs(2)
    });
    let expired = join_as("delta", &short);
    assert!(!expired.0 && expired.1.contains("expired"), "{}", expired.1);
    let wrong_net = join_as("delta", &with_param(&fresh, "net", &"0".repeat(32)));
    assert!(
        !wrong_net.0 && wrong_net.1.contains("another network"),
        "{}",
        wrong_net.1
    );
    let unreachable = join_as(
        "delta",
        &fresh.replace(&alpha.public_addr(), "10.77.0.99:7300"),
    );
    assert!(
        !unreachable.0 && unreachable.1.contains("cannot reach the seed"),
        "{}",
        unreachable.1
    );
    assert_eq!(alpha.nodes()["nodes"].as_array().map(Vec::len), Some(3));
    let bravo_row = alpha.nodes()["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "bravo").cloned())
        .expect("bravo");
    assert_eq!(
        bravo_row["addr"],
        bravo.public_addr(),
        "bravo was not overwritten"
    );

    // Every node's API answers for every other node.
    for node in [&alpha, &bravo, &charlie] {
        for other in ["alpha", "bravo", "charlie"] {
            let stats = node.api("GET", &format!("/api/v1/nodes/{other}/node"));
            assert!(
                stats["metrics"].is_object(),
                "{} for {other}: {stats}",
                node.name
            );
            let devices = node.api("GET", &format!("/api/v1/nodes/{other}/devices"));
            assert!(devices["devices"].is_array(), "{devices}");
        }
    }

    // Partition the leader away: it stops, the majority elects bravo; healing gives exactly one.
    let (_, epoch) = holder(&alpha.nodes()).expect("holder");
    lab.link(1, false);
    wait_until("alpha gives up the lease", || {
        alpha.nodes()["bot_running"] == false
    });
    wait_until("bravo takes over in the majority", || {
        holder(&bravo.nodes()).is_some_and(|(h, e)| h == "bravo" && e > epoch)
    });
    assert_eq!(charlie.nodes()["lease_holder"], "bravo");
    assert_eq!(
        alpha.nodes()["bot_running"],
        false,
        "no second holder in the minority"
    );
    lab.link(1, true);
    wait_until("after healing, alpha holds it again and alone", || {
        let views = [alpha.nodes(), bravo.nodes(), charlie.nodes()];
        let running = views.iter().filter(|v| v["bot_running"] == true).count();
        running == 1 && views.iter().all(|v| v["lease_holder"] == "alpha")
    });

    // Kill the leader: a new holder with a higher epoch, within the failover target.
    let (_, epoch) = holder(&bravo.nodes()).expect("holder");
    let killed = Instant::now();
    alpha.kill();
    wait_until("bravo holds the lease after alpha dies", || {
        holder(&bravo.nodes()).is_some_and(|(h, e)| h == "bravo" && e > epoch)
    });
    let failover = killed.elapsed();
    eprintln!("failover after kill: {failover:?}");
    assert!(
        failover < Duration::from_secs(8),
        "failover took {failover:?}"
    );

    // Remove charlie: its key stops being accepted, and the refusal is counted and logged.
    let (ok, out) = bravo.command(&["peers", "remove", "charlie", "--config", &bravo.config()]);
    assert!(ok, "{out}");
    wait_until("bravo rejects charlie's messages", || {
        bravo.nodes()["rejected_messages"]["removed_sender"].as_u64() > Some(0)
    });
    let log = bravo.agent.as_ref().expect("running").output();
    assert!(log.contains("sender was removed from the network"), "{log}");
    assert_eq!(alive_names(&bravo.nodes()), ["bravo"]);
    charlie.kill();
}
