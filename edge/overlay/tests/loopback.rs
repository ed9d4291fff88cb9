//! Three overlay endpoints on real UDP sockets on loopback: a hub and two clients that know only
//! the hub. TCP, ping and relaying through the hub, with nothing mocked.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use constella_overlay::{Overlay, OverlayConfig, PeerConfig, PrivateKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const DEADLINE: Duration = Duration::from_secs(20);

fn overlay_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, 0, n)
}

async fn start(config: OverlayConfig) -> (Overlay, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let (overlay, runner) = constella_overlay::new(config, socket).expect("a valid config");
    let at = runner.local_addr().expect("bound");
    tokio::spawn(runner.run());
    (overlay, at)
}

/// A hub on 10.42.0.1 and clients on .2, .3, …
async fn hub_and_clients(clients: u8) -> (Overlay, Vec<Overlay>) {
    let hub_key = PrivateKey::generate();
    let client_keys: Vec<PrivateKey> = (0..clients).map(|_| PrivateKey::generate()).collect();
    let (hub, hub_at) = start(OverlayConfig {
        private_key: hub_key.clone(),
        address: overlay_ip(1),
        network: "10.42.0.0/24".parse().expect("a CIDR"),
        peers: client_keys
            .iter()
            .zip(2..)
            .map(|(key, n)| PeerConfig {
                public_key: key.public_key(),
                allowed_ips: vec![overlay_ip(n).into()],
                endpoint: None,
                persistent_keepalive: None,
            })
            .collect(),
    })
    .await;
    let mut started = Vec::new();
    for (key, n) in client_keys.into_iter().zip(2..) {
        let (client, _) = start(OverlayConfig {
            private_key: key,
            address: overlay_ip(n),
            network: "10.42.0.0/24".parse().expect("a CIDR"),
            peers: vec![PeerConfig {
                public_key: hub_key.public_key(),
                allowed_ips: vec!["10.42.0.0/24".parse().expect("a CIDR")],
                endpoint: Some(hub_at),
                persistent_keepalive: Some(25),
            }],
        })
        .await;
        started.push(client);
    }
    (hub, started)
}

/// Serves one connection: echoes everything back until the peer closes.
fn echo_server(overlay: &Overlay, port: u16) {
    let listener = overlay.listen(port).expect("a free overlay port");
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let mut buffer = vec![0; 16 * 1024];
                loop {
                    let read = stream.read(&mut buffer).await.expect("read");
                    if read == 0 {
                        break;
                    }
                    stream.write_all(&buffer[..read]).await.expect("write");
                }
            });
        }
    });
}

async fn round_trip(from: &Overlay, to: SocketAddrV4, message: &[u8]) -> Vec<u8> {
    let mut stream = tokio::time::timeout(DEADLINE, from.connect(to))
        .await
        .expect("connects in time")
        .expect("connects");
    stream.write_all(message).await.expect("write");
    let mut back = vec![0; message.len()];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut back))
        .await
        .expect("echoed in time")
        .expect("echoed");
    back
}

#[tokio::test]
async fn a_client_talks_tcp_to_the_hub_and_the_hub_to_the_client() {
    let (hub, clients) = hub_and_clients(1).await;
    echo_server(&hub, 4747);
    echo_server(&clients[0], 4747);
    let hello = b"hello through wireguard";
    assert_eq!(
        round_trip(&clients[0], SocketAddrV4::new(overlay_ip(1), 4747), hello).await,
        hello
    );
    assert_eq!(
        round_trip(&hub, SocketAddrV4::new(overlay_ip(2), 4747), hello).await,
        hello
    );
    let peers = hub.peers();
    assert_eq!(peers.len(), 1);
    assert!(peers[0].since_handshake.is_some());
    assert!(peers[0].endpoint.is_some());
}

#[tokio::test]
async fn two_clients_reach_each_other_through_the_hub() {
    let (hub, clients) = hub_and_clients(2).await;
    echo_server(&clients[1], 7000);
    // The second client has to have greeted the hub once, so the hub knows its endpoint.
    clients[1]
        .ping(overlay_ip(1), 1, DEADLINE)
        .await
        .expect("the hub answers");
    let message = vec![7; 200_000];
    assert_eq!(
        round_trip(
            &clients[0],
            SocketAddrV4::new(overlay_ip(3), 7000),
            &message
        )
        .await,
        message
    );
    assert_eq!(clients[0].route(overlay_ip(3)), Some(hub.public_key()));
    assert_eq!(hub.drops().spoofed, 0);
}

#[tokio::test]
async fn udp_datagrams_cross_the_hub_and_a_port_binds_once() {
    let (hub, clients) = hub_and_clients(2).await;
    let at_hub = hub.bind_udp(7300).expect("a free port");
    assert!(hub.bind_udp(7300).is_err(), "the port is taken");
    let first = clients[0].bind_udp(7300).expect("a free port");
    let second = clients[1].bind_udp(7300).expect("a free port");
    first
        .try_send_to(b"to the hub", SocketAddrV4::new(overlay_ip(1), 7300))
        .expect("queued");
    let (bytes, from) = tokio::time::timeout(DEADLINE, at_hub.recv_from())
        .await
        .expect("arrives in time");
    assert_eq!(
        (bytes.as_slice(), from),
        (&b"to the hub"[..], SocketAddrV4::new(overlay_ip(2), 7300))
    );
    // The second client greets the hub, so the hub knows where to relay to it.
    second
        .try_send_to(b"hello", SocketAddrV4::new(overlay_ip(1), 7300))
        .expect("queued");
    tokio::time::timeout(DEADLINE, at_hub.recv_from())
        .await
        .expect("arrives in time");
    first
        .try_send_to(b"farm to farm", SocketAddrV4::new(overlay_ip(3), 7300))
        .expect("queued");
    let (bytes, from) = tokio::time::timeout(DEADLINE, second.recv_from())
        .await
        .expect("relayed in time");
    assert_eq!(
        (bytes.as_slice(), from),
        (&b"farm to farm"[..], SocketAddrV4::new(overlay_ip(2), 7300))
    );
    drop(at_hub);
    hub.bind_udp(7300).expect("free again once dropped");
}

#[tokio::test]
async fn ping_measures_a_round_trip_and_times_out_on_silence() {
    let (_hub, clients) = hub_and_clients(1).await;
    let first = clients[0]
        .ping(overlay_ip(1), 1, DEADLINE)
        .await
        .expect("the hub answers, handshake included");
    assert!(first < DEADLINE);
    let nobody = clients[0]
        .ping(overlay_ip(77), 2, Duration::from_millis(300))
        .await
        .expect_err("nobody owns .77");
    assert_eq!(nobody.kind(), std::io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn a_large_transfer_arrives_whole_in_both_directions() {
    let (hub, clients) = hub_and_clients(1).await;
    echo_server(&hub, 9000);
    let mut stream = clients[0]
        .connect(SocketAddrV4::new(overlay_ip(1), 9000))
        .await
        .expect("connects");
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut reader, mut writer) = tokio::io::split(&mut stream);
    let sent = data.clone();
    let write = async move {
        writer.write_all(&sent).await.expect("write");
    };
    let read = async {
        let mut back = vec![0; data.len()];
        reader.read_exact(&mut back).await.expect("read");
        back
    };
    let ((), back) = tokio::time::timeout(DEADLINE, async { tokio::join!(write, read) })
        .await
        .expect("8 MiB echo in time");
    assert!(back == data, "bytes arrive in order and intact");
}

#[tokio::test]
async fn connecting_to_a_port_nobody_listens_on_is_refused() {
    let (_hub, clients) = hub_and_clients(1).await;
    let error = tokio::time::timeout(
        DEADLINE,
        clients[0].connect(SocketAddrV4::new(overlay_ip(1), 1)),
    )
    .await
    .expect("refused in time")
    .err()
    .expect("refused");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
}
