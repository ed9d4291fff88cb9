//! The overlay against a WireGuard nobody here wrote: Debian's `wireguard-go` on a TUN device,
//! configured with `wg`, in its own network namespace, with the kernel's TCP/IP on its side.
//! The overlay runs in this process on a UDP socket in the lab's network namespace.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use constella_overlay::{OverlayConfig, PeerConfig, PrivateKey, PublicKey};
use constella_tests::lab::{Lab, ip};
use constella_tests::{Proc, Scratch, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(20);

async fn in_ns(ns: &str, command: &[&str]) -> Output {
    tokio::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(command)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {command:?} in {ns}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn wireguard_go_and_the_overlay_handshake_ping_and_carry_tcp_both_ways() {
    let lab = Lab::new(1);
    let ns = lab.ns(1);
    // wireguard-go's control socket (/var/run/wireguard/NAME.sock) is shared by every
    // namespace, so the name is unique to this test process.
    let wg = format!("wg{}", std::process::id() % 100_000);
    let scratch = Scratch::new("wg-interop");

    // The standard peer's keys come from the standard tool.
    let genkey = std::process::Command::new("wg")
        .arg("genkey")
        .output()
        .expect("wg genkey (wireguard-tools)");
    let peer_private = String::from_utf8(genkey.stdout).expect("base64");
    let key_file = scratch.0.join("peer.key");
    std::fs::write(&key_file, &peer_private).expect("write the key");
    let pubkey = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("wg pubkey < {}", key_file.display()))
        .output()
        .expect("wg pubkey");
    let peer_public = PublicKey::from_base64(&String::from_utf8_lossy(&pubkey.stdout))
        .expect("wg prints a key the overlay reads");

    // Our side: 10.42.0.1 on the lab network's address.
    let socket = lab.in_bridge(|| {
        std::net::UdpSocket::bind((Lab::SERVICE_ADDR, 0)).expect("a UDP port in the lab")
    });
    socket.set_nonblocking(true).expect("nonblocking");
    let ours = PrivateKey::generate();
    let (overlay, runner) = constella_overlay::new(
        OverlayConfig {
            private_key: ours.clone(),
            address: "10.42.0.1".parse().expect("an address"),
            network: "10.42.0.0/24".parse().expect("a CIDR"),
            peers: vec![PeerConfig {
                public_key: peer_public,
                allowed_ips: vec!["10.42.0.2/32".parse().expect("a CIDR")],
                endpoint: None,
                persistent_keepalive: None,
            }],
        },
        tokio::net::UdpSocket::from_std(socket).expect("a tokio socket"),
    )
    .expect("a valid overlay");
    let endpoint = runner.local_addr().expect("bound");
    tokio::spawn(runner.run());
    let listener = overlay.listen(4747).expect("listen on the overlay");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut line = [0; 6];
        stream.read_exact(&mut line).await.expect("read");
        stream.write_all(b"pong\n").await.expect("write");
    });

    // Their side: wireguard-go on a TUN device in the node namespace, 10.42.0.2.
    let _wireguard_go = Proc::spawn(
        Path::new("ip"),
        &["netns", "exec", &ns, "wireguard-go", "-f", &wg],
    );
    wait_until("wireguard-go creates its interface", || {
        std::process::Command::new("ip")
            .args(["-n", &ns, "link", "show", &wg])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    let set = in_ns(
        &ns,
        &[
            "wg",
            "set",
            &wg,
            "private-key",
            &key_file.display().to_string(),
            "peer",
            &ours.public_key().to_string(),
            "endpoint",
            &endpoint.to_string(),
            "allowed-ips",
            "10.42.0.0/24",
            "persistent-keepalive",
            "25",
        ],
    )
    .await;
    assert!(set.status.success(), "wg set: {}", text(&set));
    ip(&["-n", &ns, "addr", "add", "10.42.0.2/24", "dev", &wg]);
    ip(&["-n", &ns, "link", "set", &wg, "up"]);

    // The kernel pings the overlay (smoltcp answers), handshake included.
    let ping = in_ns(&ns, &["ping", "-c", "3", "-W", "10", "10.42.0.1"]).await;
    assert!(ping.status.success(), "ping 10.42.0.1: {}", text(&ping));

    // A kernel TCP client talks to a listener inside the overlay.
    let client = in_ns(
        &ns,
        &[
            "sh",
            "-c",
            "printf 'ping\\n\\n' | timeout 20 socat -t 5 - TCP:10.42.0.1:4747",
        ],
    )
    .await;
    assert_eq!(text(&client), "pong\n", "socat through the overlay");

    // And the other way: the overlay pings the kernel and connects to a kernel listener.
    let rtt = overlay
        .ping("10.42.0.2".parse().expect("an address"), 1, DEADLINE)
        .await
        .expect("wireguard-go's kernel answers the overlay's ping");
    assert!(rtt < DEADLINE);
    let mut server = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "socat",
            "TCP-LISTEN:7000,bind=10.42.0.2,reuseaddr",
        ])
        .arg("SYSTEM:echo served-by-the-kernel")
        .kill_on_drop(true)
        .spawn()
        .expect("socat listens in the namespace");
    // The runtime's thread may block here: nothing the overlay does is needed to listen.
    wait_until("socat listens on 10.42.0.2:7000", || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "ss", "-ltnH", "sport = :7000"])
            .output()
            .is_ok_and(|out| !out.stdout.is_empty())
    });
    let mut reply = String::new();
    let read = async {
        let mut stream = overlay
            .connect("10.42.0.2:7000".parse().expect("an address"))
            .await
            .expect("connects to the kernel's listener");
        stream.read_to_string(&mut reply).await.expect("read");
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the kernel's listener answers in time");
    assert_eq!(reply, "served-by-the-kernel\n");
    let _ = server.wait().await;

    let shown = in_ns(&ns, &["wg", "show", &wg, "latest-handshakes"]).await;
    let handshake: u64 = text(&shown)
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .expect("wg show prints the handshake time");
    assert!(handshake > 0, "wg saw a completed handshake");
    assert!(overlay.peers()[0].since_handshake.is_some());
    assert_eq!(overlay.drops().spoofed, 0);
}
