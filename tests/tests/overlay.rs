//! The overlay as operators meet it: a hub on a public network and two farms, each behind its
//! own NAT router with no inbound forwarding, join from one invite link each with no public
//! address, see each other, and call each other through the hub. Separate processes in
//! network namespaces; the only underlay traffic a farm can make is to the hub's UDP port.

use std::process::Command;

use constella_tests::lab::Node;
use constella_tests::nat::NatLab;
use constella_tests::{Scratch, wait_until};

fn in_ns(ns: &str, command: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(command)
        .output()
        .expect("run a command in a namespace");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn alive(node: &Node<'_>) -> usize {
    node.nodes()["nodes"].as_array().map_or(0, |rows| {
        rows.iter().filter(|r| r["status"] == "alive").count()
    })
}

#[test]
fn farms_behind_nat_join_from_one_link_and_reach_each_other_through_the_hub() {
    let lab = NatLab::new(2);
    let scratch = Scratch::new("overlay-nat");
    let dirs: Vec<_> = ["hub", "farm1", "farm2"]
        .iter()
        .map(|name| scratch.0.join(name))
        .collect();
    let mut hub = Node::at(lab.hub_ns(), NatLab::HUB_ADDR.into(), "hub", &dirs[0], "");
    let public = hub.public_addr();
    let (ok, out) = hub.enroll_with(
        "init",
        &[
            "--owner",
            "@farm_owner",
            "--public-addr",
            &public,
            "--vpn-mode",
            "hub",
        ],
        None,
        1,
    );
    assert!(ok, "init the hub: {out}");
    hub.start();

    let mut farms = Vec::new();
    for (i, name) in [(1, "farm1"), (2, "farm2")] {
        let link = hub.invite("15m");
        assert!(
            link.contains(&format!("hub={}:51820", NatLab::HUB_ADDR)),
            "the link names the hub: {link}"
        );
        let mut farm = Node::at(lab.farm_ns(i), lab.farm_addr(i), name, &dirs[i], "");
        // One link and nothing else: no --public-addr, no keys, no addresses.
        let (ok, out) = farm.enroll_with("join", &["--join", &link], None, i as u32 + 1);
        let hub_log = hub.agent.as_ref().map(|a| a.output()).unwrap_or_default();
        assert!(ok, "{name} joins: {out}\nthe hub's log:\n{hub_log}");
        farm.start();
        farms.push(farm);
    }
    wait_until("every node sees every node alive", || {
        alive(&hub) == 3 && farms.iter().all(|farm| alive(farm) == 3)
    });

    // Each farm got an overlay address and its cluster address is on it.
    let rows = hub.nodes()["nodes"].as_array().cloned().unwrap_or_default();
    for name in ["farm1", "farm2"] {
        let row = rows
            .iter()
            .find(|r| r["name"] == name)
            .expect("a row per farm");
        let addr = row["addr"].as_str().unwrap_or_default();
        assert!(
            addr.starts_with("10.42.0."),
            "{name} is on the overlay: {row}"
        );
    }

    // A farm calls the other; the only path is through the hub.
    let devices = farms[0].api("GET", "/api/v1/nodes/farm2/devices");
    assert!(
        devices.is_array() || devices.get("devices").is_some(),
        "farm1 → farm2: {devices}"
    );
    let (reached, _) = in_ns(
        &lab.farm_ns(1),
        &["ping", "-c", "1", "-W", "1", &lab.farm_addr(2)],
    );
    assert!(!reached, "farm1 has no underlay path to farm2");

    // No cluster port faces the underlay anywhere: the cluster listens only inside WireGuard.
    for ns in [lab.hub_ns(), lab.farm_ns(1), lab.farm_ns(2)] {
        let (_, listening) = in_ns(&ns, &["ss", "-ltnH", "sport = :7300"]);
        assert!(
            listening.trim().is_empty(),
            "{ns} listens on TCP 7300: {listening}"
        );
    }
    let (connected, _) = in_ns(
        &lab.hub_ns(),
        &[
            "curl",
            "-s",
            "-m",
            "3",
            &format!("http://{}:7300/", lab.router_wan(1)),
        ],
    );
    assert!(
        !connected,
        "a plain TCP connection to a farm's cluster port fails"
    );
    drop(farms);
    drop(hub);
}
