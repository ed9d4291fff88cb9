//! A lab with NAT, the way farms really sit: a "public" network (a bridge namespace) where the
//! hub lives, and each farm behind its own router namespace that masquerades outbound traffic
//! (iptables MASQUERADE) and forwards nothing inbound but replies, as a mobile or rural router
//! does. Farms have no route to each other's LAN.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::lab::{Node, ip};
use crate::{Proc, wait_until};

/// The namespaces of a NAT lab, deleted on drop.
pub struct NatLab {
    tag: String,
    farms: usize,
    outsiders: std::cell::Cell<usize>,
}

/// Runs `command` in namespace `ns`, which must succeed.
pub fn must_in_ns(ns: &str, command: &[&str]) {
    let (ok, out) = in_ns(ns, command);
    assert!(ok, "{command:?} in {ns}: {out}");
}

impl NatLab {
    /// The hub's address on the public network.
    pub const HUB_ADDR: &str = "10.99.0.10";

    pub fn new(farms: usize) -> NatLab {
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let lab = NatLab {
            tag: format!("n{}x{n}", std::process::id() % 100_000),
            farms,
            outsiders: std::cell::Cell::new(0),
        };
        let internet = lab.internet();
        ip(&["netns", "add", &internet]);
        ip(&["-n", &internet, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &internet, "link", "set", "br0", "up"]);
        lab.attach(
            &lab.hub_ns(),
            "eth0",
            &format!("{}/24", NatLab::HUB_ADDR),
            "h",
        );
        for i in 1..=farms {
            let (router, farm) = (lab.router_ns(i), lab.farm_ns(i));
            lab.attach(
                &router,
                "wan",
                &format!("{}/24", lab.router_wan(i)),
                &format!("w{i}"),
            );
            ip(&["netns", "add", &farm]);
            let (inner, outer) = (format!("{}f{i}", lab.tag), format!("{}l{i}", lab.tag));
            ip(&[
                "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ]);
            ip(&["link", "set", &inner, "netns", &farm, "name", "eth0"]);
            ip(&["link", "set", &outer, "netns", &router, "name", "lan"]);
            ip(&[
                "-n",
                &router,
                "addr",
                "add",
                &format!("192.168.{i}.1/24"),
                "dev",
                "lan",
            ]);
            ip(&["-n", &router, "link", "set", "lan", "up"]);
            ip(&[
                "-n",
                &farm,
                "addr",
                "add",
                &format!("{}/24", lab.farm_addr(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &farm, "link", "set", "eth0", "up"]);
            ip(&["-n", &farm, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                &farm,
                "route",
                "add",
                "default",
                "via",
                &format!("192.168.{i}.1"),
            ]);
            must_in_ns(&router, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
            must_in_ns(
                &router,
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "wan",
                    "-j",
                    "MASQUERADE",
                ],
            );
            must_in_ns(
                &router,
                &[
                    "iptables",
                    "-A",
                    "FORWARD",
                    "-i",
                    "wan",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                ],
            );
            must_in_ns(
                &router,
                &["iptables", "-A", "FORWARD", "-i", "wan", "-j", "DROP"],
            );
        }
        lab
    }

    /// A namespace on the public network with address `cidr` on interface `name`.
    fn attach(&self, ns: &str, name: &str, cidr: &str, suffix: &str) {
        let internet = self.internet();
        ip(&["netns", "add", ns]);
        let (inner, outer) = (
            format!("{}{suffix}", self.tag),
            format!("{}p{suffix}", self.tag),
        );
        ip(&[
            "link", "add", &inner, "type", "veth", "peer", "name", &outer,
        ]);
        ip(&["link", "set", &inner, "netns", ns, "name", name]);
        ip(&[
            "link",
            "set",
            &outer,
            "netns",
            &internet,
            "name",
            &format!("p{suffix}"),
        ]);
        ip(&[
            "-n",
            &internet,
            "link",
            "set",
            &format!("p{suffix}"),
            "master",
            "br0",
            "up",
        ]);
        ip(&["-n", ns, "addr", "add", cidr, "dev", name]);
        ip(&["-n", ns, "link", "set", name, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }

    /// A new namespace straight on the public network, as a laptop in a café is: its address
    /// is `outsider_addr(i)`, its namespace `outsider_ns(i)`. Returns `i`.
    pub fn add_outsider(&self) -> usize {
        let i = self.outsiders.get() + 1;
        self.outsiders.set(i);
        self.attach(
            &self.outsider_ns(i),
            "eth0",
            &format!("{}/24", self.outsider_addr(i)),
            &format!("o{i}"),
        );
        i
    }

    pub fn outsider_ns(&self, i: usize) -> String {
        format!("{}-o{i}", self.tag)
    }

    pub fn outsider_addr(&self, i: usize) -> String {
        format!("10.99.0.{}", 200 + i)
    }

    fn internet(&self) -> String {
        format!("{}-inet", self.tag)
    }

    pub fn hub_ns(&self) -> String {
        format!("{}-hub", self.tag)
    }

    pub fn router_ns(&self, i: usize) -> String {
        format!("{}-r{i}", self.tag)
    }

    pub fn farm_ns(&self, i: usize) -> String {
        format!("{}-f{i}", self.tag)
    }

    /// Farm `i`'s address on its own LAN, behind its router.
    pub fn farm_addr(&self, i: usize) -> String {
        format!("192.168.{i}.2")
    }

    /// Router `i`'s public address: what the hub sees farm `i` as.
    pub fn router_wan(&self, i: usize) -> String {
        format!("10.99.0.{}", 100 + i)
    }
}

/// Members a node sees alive.
pub fn alive(node: &Node<'_>) -> usize {
    node.nodes()["nodes"].as_array().map_or(0, |rows| {
        rows.iter().filter(|r| r["status"] == "alive").count()
    })
}

/// An overlay network in `lab`: the hub (`names[0]`, priority 1, `hub_bot`) initialised on the
/// public network, then farm `i` (`names[i]`, priority `i + 1`, `farm_bot`) joined from one
/// link each, with no public address and with `farm_flags` added to `join`; returned once every
/// node sees every node alive. `extra` goes into every config file.
pub fn overlay_network<'a>(
    lab: &NatLab,
    dirs: &'a [PathBuf],
    names: &[&'static str],
    extra: &str,
    (hub_bot, farm_bot): (Option<&str>, Option<&str>),
    farm_flags: &[&str],
) -> Vec<Node<'a>> {
    let mut hub = Node::at(
        lab.hub_ns(),
        NatLab::HUB_ADDR.into(),
        names[0],
        &dirs[0],
        extra,
    );
    let public = hub.public_addr();
    let init = [
        "--owner",
        "@farm_owner",
        "--public-addr",
        &public,
        "--vpn-mode",
        "hub",
    ];
    let (ok, out) = hub.enroll_with("init", &init, hub_bot, 1);
    assert!(ok, "init the hub: {out}");
    hub.start();
    let mut nodes = vec![hub];
    for (i, name) in names.iter().enumerate().skip(1) {
        let link = nodes[0].invite("15m");
        assert!(
            link.contains(&format!("hub={}:51820", NatLab::HUB_ADDR)),
            "the link names the hub: {link}"
        );
        let mut farm = Node::at(lab.farm_ns(i), lab.farm_addr(i), name, &dirs[i], extra);
        // One link and nothing else: no --public-addr, no keys, no addresses.
        let mut join = vec!["--join", &link];
        join.extend(farm_flags);
        let (ok, out) = farm.enroll_with("join", &join, farm_bot, i as u32 + 1);
        let hub_log = nodes[0]
            .agent
            .as_ref()
            .map(|a| a.output())
            .unwrap_or_default();
        assert!(ok, "{name} joins: {out}\nthe hub's log:\n{hub_log}");
        farm.start();
        nodes.push(farm);
    }
    wait_until("every node sees every node alive", || {
        nodes.iter().all(|node| alive(node) == names.len())
    });
    nodes
}

impl Drop for NatLab {
    fn drop(&mut self) {
        let mut names = vec![self.hub_ns(), self.internet()];
        for i in 1..=self.farms {
            names.extend([self.router_ns(i), self.farm_ns(i)]);
        }
        names.extend((1..=self.outsiders.get()).map(|i| self.outsider_ns(i)));
        for ns in names {
            let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

/// Runs `command` in namespace `ns`: whether it succeeded, and its stdout and stderr.
pub fn in_ns(ns: &str, command: &[&str]) -> (bool, String) {
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

/// Debian's `wireguard-go` in the foreground in namespace `ns`, once its interface exists, and
/// the interface's name: `prefix` plus this process's id, because wireguard-go's control socket
/// directory is shared by all namespaces.
pub fn wireguard_go(ns: &str, prefix: &str) -> (Proc, String) {
    let iface = format!("{prefix}{}", std::process::id() % 100_000);
    let process = Proc::spawn(
        Path::new("ip"),
        &["netns", "exec", ns, "wireguard-go", "-f", &iface],
    );
    wait_until("wireguard-go creates its interface", || {
        in_ns(ns, &["ip", "link", "show", &iface]).0
    });
    (process, iface)
}

/// Restarts `node` with a `[speedtest]` section aimed at the API of the node at overlay
/// address `target` (whose directory is `target_dir`, for its token): `download` bytes from
/// its blob, `upload` bytes to its sink.
pub fn aim_speed_test(
    node: &mut Node<'_>,
    target: &str,
    target_dir: &Path,
    (download, upload): (u64, u64),
) {
    let token = std::fs::read_to_string(target_dir.join("state/api-token")).expect("token");
    let base = format!("http://{target}:8400/api/v1/speedtest");
    node.kill();
    let config = std::fs::read_to_string(node.config()).expect("config");
    std::fs::write(
        node.config(),
        format!(
            "{config}\n[speedtest]\ndownload_url = \"{base}/blob?bytes={download}\"\n\
             upload_url = \"{base}/sink\"\ntoken = \"{}\"\nupload_bytes = {upload}\n",
            token.trim()
        ),
    )
    .expect("write config");
    node.start();
}

/// A node's overlay as its API reports it.
pub fn overlay_status(node: &Node<'_>) -> constella_api::overlay::OverlayStatus {
    let answer = node.api("GET", constella_api::routes::OVERLAY);
    crate::round_trip::<constella_api::overlay::OverlayStatus>("GET /api/v1/overlay", &answer);
    serde_json::from_value(answer).expect("an overlay status")
}

/// `constella wg add-device NAME` run on `node`; its wg-quick configuration, once the hub has
/// made the device a peer.
pub fn add_device(node: &Node<'_>, hub: &Node<'_>, name: &str) -> String {
    let (ok, config) = node.command(&["wg", "add-device", name, "--config", &node.config()]);
    assert!(ok, "wg add-device: {config}");
    wait_until("the hub makes the device a peer", || {
        overlay_status(hub)
            .peers
            .iter()
            .any(|p| p.name.as_deref() == Some(name))
    });
    config
}

/// A standard WireGuard device brought up from `constella wg add-device` output the way the
/// official tools take it: `wg-quick strip` drops the wg-quick-only lines, `wg setconf` loads
/// the rest into Debian's `wireguard-go` in namespace `ns`, which routes the overlay through it.
pub struct StandardDevice {
    pub iface: String,
    /// What `wg setconf` loaded, to load again.
    pub wg_config: PathBuf,
    _wireguard_go: Proc,
}

impl StandardDevice {
    /// `dir` holds the configuration files (the private key's one is 0600).
    pub fn up(ns: &str, config: &str, dir: &Path) -> StandardDevice {
        let address = config
            .lines()
            .find_map(|l| l.strip_prefix("Address = "))
            .expect("an Address line")
            .to_string();
        let file = dir.join("device.conf");
        std::fs::write(&file, config).expect("write the config");
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("a private key's file is private");
        let strip = Command::new("wg-quick")
            .args(["strip", &file.display().to_string()])
            .output()
            .expect("wg-quick (wireguard-tools)");
        let stripped = String::from_utf8_lossy(&strip.stdout).to_string();
        assert!(strip.status.success(), "wg-quick strip: {stripped}");
        let stripped_file = dir.join("device.wg");
        std::fs::write(&stripped_file, &stripped).expect("write the stripped config");
        let (process, iface) = wireguard_go(ns, "wgd");
        let setup: [&[&str]; 4] = [
            &[
                "wg",
                "setconf",
                &iface,
                &stripped_file.display().to_string(),
            ],
            &["ip", "addr", "add", &address, "dev", &iface],
            &["ip", "link", "set", &iface, "up"],
            &["ip", "route", "add", "10.42.0.0/24", "dev", &iface],
        ];
        for command in setup {
            must_in_ns(ns, command);
        }
        StandardDevice {
            iface,
            wg_config: stripped_file,
            _wireguard_go: process,
        }
    }
}
