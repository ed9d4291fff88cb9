//! The cluster across real network namespaces: each `constella` runs in its own namespace with
//! its own address, joined through veth pairs to a bridge in a namespace of its own (the
//! "network"). Partitions take a node's bridge port down. Each node's API is reached from inside
//! its namespace.

use std::time::{Duration, Instant};

use constella_tests::lab::{Lab, Node};
use constella_tests::{Scratch, wait_until};
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
