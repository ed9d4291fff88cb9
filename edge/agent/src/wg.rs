//! The CLI's overlay commands, rendered the way WireGuard's own tools print: `wg show` (with
//! the path each member's traffic takes), `ping` through the tunnel, and the wg-quick
//! configuration of a standard WireGuard device (optionally as a QR code for the phone app).

use std::fmt::Write as _;
use std::time::Duration;

use constella_api::overlay::{DeviceAdded, OverlayPath, OverlayPeer, OverlayStatus};
use constella_overlay::{MTU, PrivateKey};

/// `constella wg show`: `wg show`'s layout, then one line per member with its path.
pub(crate) fn show(status: &OverlayStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "interface: {}", status.interface);
    let _ = writeln!(out, "  public key: {}", status.public_key);
    let _ = writeln!(out, "  private key: (hidden)");
    let _ = writeln!(out, "  listening port: {}", status.listen_port);
    let _ = writeln!(
        out,
        "  address: {} ({}{})",
        status.address,
        status.network,
        if status.hub { ", hub" } else { "" }
    );
    for peer in &status.peers {
        out.push('\n');
        peer_block(&mut out, peer);
    }
    if !status.members.is_empty() {
        let _ = writeln!(out, "\nmembers:");
        for member in &status.members {
            let path = match &member.path {
                OverlayPath::Direct => "direct".to_string(),
                OverlayPath::Relayed { via } => format!("relayed by {via}"),
                OverlayPath::Unreachable => "unreachable (no peer routes it)".to_string(),
            };
            let kind = if member.device { " (device)" } else { "" };
            let _ = writeln!(
                out,
                "  {:<15} {}{kind}: {path}",
                member.address, member.name
            );
        }
    }
    let d = &status.drops;
    if d.malformed + d.unknown_peer + d.rejected + d.spoofed + d.no_route + d.cookies_sent > 0 {
        let _ = writeln!(
            out,
            "\ndropped: {} malformed, {} unknown peer, {} rejected, {} spoofed, {} no route; {} cookie replies",
            d.malformed, d.unknown_peer, d.rejected, d.spoofed, d.no_route, d.cookies_sent
        );
    }
    out
}

fn peer_block(out: &mut String, peer: &OverlayPeer) {
    let _ = writeln!(out, "peer: {}", peer.public_key);
    if let Some(name) = &peer.name {
        let _ = writeln!(out, "  name: {name}");
    }
    if let Some(endpoint) = &peer.endpoint {
        let _ = writeln!(out, "  endpoint: {endpoint}");
    }
    let allowed = if peer.allowed_ips.is_empty() {
        "(none)".to_string()
    } else {
        peer.allowed_ips.join(", ")
    };
    let _ = writeln!(out, "  allowed ips: {allowed}");
    if let Some(secs) = peer.latest_handshake_secs {
        let _ = writeln!(out, "  latest handshake: {} ago", spelled(secs));
    }
    if peer.rx_bytes + peer.tx_bytes > 0 {
        let _ = writeln!(
            out,
            "  transfer: {} received, {} sent",
            bytes(peer.rx_bytes),
            bytes(peer.tx_bytes)
        );
    }
    if let Some(secs) = peer.persistent_keepalive_secs {
        let _ = writeln!(
            out,
            "  persistent keepalive: every {}",
            spelled(secs.into())
        );
    }
}

/// `1 minute, 5 seconds`, as `wg show` writes durations.
fn spelled(secs: u64) -> String {
    if secs == 0 {
        return "Now".into();
    }
    let units = [
        ("day", 86_400),
        ("hour", 3_600),
        ("minute", 60),
        ("second", 1),
    ];
    let mut rest = secs;
    let mut parts = Vec::new();
    for (name, size) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    parts.join(", ")
}

/// `1.50 KiB`, as `wg show` writes sizes.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// A standard wg-quick configuration for a device admitted as `added`, holding `key`.
pub(crate) fn quick_config(added: &DeviceAdded, key: &PrivateKey) -> String {
    format!(
        "# Constella overlay device {name}: wg-quick up ./{name}.conf, or import into the WireGuard app.\n\
         [Interface]\n\
         PrivateKey = {private}\n\
         Address = {address}/32\n\
         MTU = {MTU}\n\
         \n\
         [Peer]\n\
         # the hub\n\
         PublicKey = {hub}\n\
         Endpoint = {endpoint}\n\
         AllowedIPs = {network}\n\
         PersistentKeepalive = {keepalive}\n",
        name = added.name,
        private = key.to_base64(),
        address = added.address,
        hub = added.hub_public_key,
        endpoint = added.hub_endpoint,
        network = added.network,
        keepalive = added.persistent_keepalive_secs,
    )
}

/// The configuration as a QR code of half-height blocks, light on dark, which the WireGuard
/// phone apps scan from a terminal.
pub(crate) fn qr(config: &str) -> anyhow::Result<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(config.as_bytes())?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// One `ping` reply line.
pub(crate) fn echo_line(address: std::net::Ipv4Addr, sequence: u16, rtt_ms: f64) -> String {
    format!("64 bytes from {address}: icmp_seq={sequence} time={rtt_ms:.2} ms")
}

/// `ping`'s closing summary.
pub(crate) fn ping_summary(address: std::net::Ipv4Addr, sent: u32, rtts: &[f64]) -> String {
    let received = rtts.len() as u32;
    let loss = (100 * (sent - received)).checked_div(sent).unwrap_or(0);
    let mut out = format!(
        "--- {address} ping statistics (through the overlay) ---\n\
         {sent} packets transmitted, {received} received, {loss}% packet loss\n"
    );
    if !rtts.is_empty() {
        let min = rtts.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rtts.iter().copied().fold(0.0, f64::max);
        let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
        let _ = writeln!(out, "rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
    }
    out
}

/// How long `ping` waits between echoes.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_as_wg_show_writes_them() {
        assert_eq!(spelled(65), "1 minute, 5 seconds");
        assert_eq!(spelled(25), "25 seconds");
        assert_eq!(spelled(90_061), "1 day, 1 hour, 1 minute, 1 second");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.00 MiB");
    }

    #[test]
    fn a_device_configuration_is_what_wg_quick_reads() {
        let key = PrivateKey::from_bytes([3; 32]);
        let added = DeviceAdded {
            name: "phone".parse().expect("valid name"),
            address: "10.42.0.7".parse().expect("an address"),
            network: "10.42.0.0/24".into(),
            hub_public_key: "aHViaHViaHViaHViaHViaHViaHViaHViaHViaHViaHU=".into(),
            hub_endpoint: "hub.example.org:51820".into(),
            persistent_keepalive_secs: 25,
        };
        let config = quick_config(&added, &key);
        for line in [
            "[Interface]",
            &format!("PrivateKey = {}", key.to_base64()),
            "Address = 10.42.0.7/32",
            "[Peer]",
            "Endpoint = hub.example.org:51820",
            "AllowedIPs = 10.42.0.0/24",
            "PersistentKeepalive = 25",
        ] {
            assert!(config.lines().any(|l| l == line), "{line:?} in\n{config}");
        }
        let code = qr(&config).expect("a QR code");
        assert!(code.lines().count() > 20 && code.contains('\u{2588}'));
    }

    #[test]
    fn the_ping_summary_counts_losses() {
        let address = "10.42.0.3".parse().expect("an address");
        let summary = ping_summary(address, 4, &[1.0, 3.0]);
        assert!(summary.contains("4 packets transmitted, 2 received, 50% packet loss"));
        assert!(summary.contains("rtt min/avg/max = 1.000/2.000/3.000 ms"));
    }
}
