//! The cluster across real network namespaces: each `constella` runs in its own namespace with
//! its own address, joined through veth pairs to a bridge in a namespace of its own (the
//! "network"). Partitions take a node's bridge port down. Each node's API is reached from inside
//! its namespace.

use std::time::{Duration, Instant};

use constella_tests::lab::{Lab, Node, start_network};
use constella_tests::{Scratch, wait_until, wait_within};
use serde_json::Value;

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
    let mut alpha = Node::new(&lab, 1, "alpha", &dirs[0], "");
    let mut bravo = Node::new(&lab, 2, "bravo", &dirs[1], "");
    let mut charlie = Node::new(&lab, 3, "charlie", &dirs[2], "");
    let stranger = Node::new(&lab, 4, "stranger", &dirs[3], "");

    let (ok, out) = alpha.init("@farm_owner", Some("111:alpha"), 1);
    assert!(ok, "{out}");
    alpha.start();

    // Two joins, each with its own invite; bravo's goes through alpha, charlie's through bravo
    // (any live node redeems an invite).
    let link = alpha.invite("15m");
    assert!(
        link.starts_with(&format!("join://{}?net=", alpha.public_addr())),
        "{link}"
    );
    let (ok, out) = bravo.join(&link, Some("222:bravo"), 2);
    assert!(ok, "{out}");
    bravo.start();
    let link = alpha.invite("15m");
    let via_bravo = link.replace(&alpha.public_addr(), &bravo.public_addr());
    // Bravo learns of the invite by gossip; until then it answers "unknown".
    let mut joined = (false, String::new());
    wait_until("charlie joins through bravo", || {
        joined = charlie.join(&via_bravo, None, 3);
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
    // charlie learns of the new holder from bravo's claim and the gossiped record.
    wait_until("charlie sees bravo hold the lease", || {
        charlie.nodes()["lease_holder"] == "bravo"
    });
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
    // The lease moved on when alpha's renewals stopped; membership marks it down at its own,
    // slower pace (a probe every 5 s).
    wait_until("bravo counts only itself alive", || {
        alive_names(&bravo.nodes()) == ["bravo"]
    });
    charlie.kill();
}

/// Reads a JSON file from a node's state directory.
fn state_json(node: &Node, file: &str) -> Value {
    let text = std::fs::read_to_string(node.dir.join("state").join(file)).expect("state file");
    serde_json::from_str(&text).expect("state json")
}

/// A cluster envelope (the `CNS2` layout documented in `edge/cluster/src/envelope.rs`), built
/// here independently of the agent's code, with a `Call(GetStats)` body (postcard: variant 1,
/// variant 0).
fn envelope(network: &str, from: &str, to: &str, counter: u64, seed: [u8; 32]) -> Vec<u8> {
    use ed25519_dalek::Signer as _;
    let field = |text: &str| hex::decode(text).expect("hex id");
    let body = [1u8, 0u8];
    let mut out = b"CNS2".to_vec();
    out.extend(field(network));
    out.extend(field(from));
    out.extend(field(to));
    out.extend(counter.to_be_bytes());
    out.extend((body.len() as u32).to_be_bytes());
    out.extend(body);
    let signature = ed25519_dalek::SigningKey::from_bytes(&seed).sign(&out);
    out.extend(signature.to_bytes());
    out
}

/// POSTs an envelope to `addr` from inside `node`'s namespace; returns the HTTP status.
fn post_envelope(node: &Node, addr: &str, bytes: &[u8]) -> u16 {
    let file = node.dir.join("envelope.bin");
    std::fs::write(&file, bytes).expect("write envelope");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &node.ns, "curl", "-s", "-m", "10"])
        .args(["-o", "/dev/null", "-w", "%{http_code}", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{addr}/cluster/v1/message"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn a_hung_peer_does_not_flap_the_others_and_forged_or_replayed_messages_are_refused() {
    let lab = Lab::new(6);
    let scratch = Scratch::new("cluster-hung");
    let dirs: Vec<_> = (1..=6).map(|i| scratch.0.join(format!("n{i}"))).collect();
    let names = ["alpha", "bravo", "charlie", "delta"];
    let mut nodes = start_network(&lab, &dirs[..4], &names, "", Some("111:bot"));
    wait_until("every node knows alpha's lease", || {
        let views: Vec<_> = nodes.iter().map(|n| holder(&n.nodes())).collect();
        views[0].as_ref().is_some_and(|(h, _)| h == "alpha") && views.iter().all(|v| *v == views[0])
    });
    // Freeze delta: the kernel still accepts TCP connections on its port, nobody answers.
    let delta_pid = nodes[3].agent.as_ref().expect("running").pid().to_string();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &delta_pid])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let healthy = &nodes[..3];
    // SWIM probes each peer once per round of three 12 s periods here, and a peer that missed
    // its probe is down one period and a second later: up to 49 s, not the usual patience.
    let detection = Duration::from_secs(75);
    for node in healthy {
        wait_within(detection, &format!("{} sees delta down", node.name), || {
            alive_names(&node.nodes()) == ["alpha", "bravo", "charlie"]
        });
    }
    wait_until("alpha holds the lease", || {
        holder(&nodes[0].nodes()).is_some_and(|(h, _)| h == "alpha")
    });
    let (_, epoch_before) = holder(&nodes[0].nodes()).expect("holder");
    // Watch for a while: the healthy nodes never see each other go down, nor the lease move.
    let watch_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < watch_until {
        for node in healthy {
            let view = node.nodes();
            assert_eq!(alive_names(&view), ["alpha", "bravo", "charlie"], "{view}");
            assert_eq!(
                holder(&view),
                Some(("alpha".into(), epoch_before)),
                "{view}"
            );
        }
    }
    for node in healthy {
        let log = node.agent.as_ref().expect("running").output();
        for peer in ["alpha", "bravo", "charlie"] {
            let flap = format!("peer={peer} status=\"down\"");
            assert!(!log.contains(&flap), "{} logged {flap}", node.name);
        }
    }

    // Messages in delta's name, sent to alpha from delta's namespace by this test.
    let delta_state = state_json(&nodes[3], "network_state.json");
    let network = delta_state["network_id"].as_str().expect("network");
    let delta_id = delta_state["node_id"].as_str().expect("delta id");
    let alpha_id = state_json(&nodes[0], "network_state.json")["node_id"]
        .as_str()
        .expect("alpha id")
        .to_string();
    let delta_key: [u8; 32] = hex::decode(
        state_json(&nodes[3], "secrets.json")["node_key"]
            .as_str()
            .expect("key"),
    )
    .expect("hex")
    .try_into()
    .expect("32 bytes");
    // Far above anything delta sent, so the first copy is fresh.
    let counter = delta_state["counter_reserved"].as_u64().expect("counter") - 1;
    let alpha_addr = nodes[0].public_addr();
    let rejected = |kind: &str| nodes[0].nodes()["rejected_messages"][kind].as_u64();

    let forged = envelope(network, delta_id, &alpha_id, counter, [7; 32]);
    assert_eq!(post_envelope(&nodes[3], &alpha_addr, &forged), 403);
    assert_eq!(rejected("bad_signature"), Some(1));

    let genuine = envelope(network, delta_id, &alpha_id, counter, delta_key);
    assert_eq!(
        post_envelope(&nodes[3], &alpha_addr, &genuine),
        200,
        "first copy"
    );
    assert_eq!(
        post_envelope(&nodes[3], &alpha_addr, &genuine),
        403,
        "replay"
    );
    assert_eq!(rejected("replayed"), Some(1));

    let misrouted = envelope(network, delta_id, &alpha_id, counter + 1, delta_key);
    assert_eq!(
        post_envelope(&nodes[3], &nodes[1].public_addr(), &misrouted),
        403
    );
    assert_eq!(
        nodes[1].nodes()["rejected_messages"]["wrong_receiver"].as_u64(),
        Some(1)
    );

    let log = nodes[0].agent.as_ref().expect("running").output();
    assert!(log.contains("bad signature"), "{log}");
    assert!(
        log.contains(&format!("replayed or too old (counter {counter})")),
        "{log}"
    );

    // Two joiners race with one token at two different nodes: exactly one gets in.
    nodes[3].kill();
    let (ok, out) = nodes[0].command(&["peers", "remove", "delta", "--config", &nodes[0].config()]);
    assert!(ok, "{out}");
    for node in &nodes[..3] {
        wait_until(&format!("{} forgets delta", node.name), || {
            node.nodes()["nodes"].as_array().map(Vec::len) == Some(3)
        });
    }
    let link = nodes[0].invite("15m");
    wait_until("bravo knows the new invite", || {
        state_json(&nodes[1], "network_state.json")["invites"]
            .as_object()
            .is_some_and(|all| all.values().any(|i| i["used_by"].is_null()))
    });
    let via_bravo = link.replace(&nodes[0].public_addr(), &nodes[1].public_addr());
    let echo = Node::new(&lab, 5, "echo", &dirs[4], "");
    let foxtrot = Node::new(&lab, 6, "foxtrot", &dirs[5], "");
    let results: Vec<(bool, String)> = std::thread::scope(|scope| {
        let runs = [
            scope.spawn(|| {
                let echo = echo;
                echo.join(&link, None, 5)
            }),
            scope.spawn(|| {
                let foxtrot = foxtrot;
                foxtrot.join(&via_bravo, None, 6)
            }),
        ];
        runs.map(|r| r.join().expect("join thread")).into()
    });
    let admitted = results.iter().filter(|r| r.0).count();
    assert_eq!(admitted, 1, "{results:?}");
    let loser = results.iter().find(|r| !r.0).expect("one refused");
    assert!(loser.1.contains("already used"), "{}", loser.1);
    for node in &mut nodes {
        node.kill();
    }
}
