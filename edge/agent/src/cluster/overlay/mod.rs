//! The agent's end of the WireGuard overlay: starts `constella_overlay` from the node's state
//! (its key, address and UDP port), and keeps the overlay's peers in step with the network's
//! member table as it changes (a join, a removal, an invite used or expired), live.

mod peers;
mod status;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use constella_cluster::identity::NodeId;
use constella_cluster::shared::Shared;
use constella_overlay::{Overlay, OverlayConfig, PeerConfig, PrivateKey, PublicKey, Runner};
use ipnet::Ipv4Net;
use tokio::sync::watch;

pub(crate) use peers::KEEPALIVE;
pub(crate) use status::View;

/// This node's place in the overlay, from its state directory.
pub(crate) struct Place {
    pub(crate) key: PrivateKey,
    pub(crate) address: Ipv4Addr,
    pub(crate) network: Ipv4Net,
    /// The UDP socket's address.
    pub(crate) listen: String,
    /// The name `wg show` gives the interface.
    pub(crate) interface: String,
    /// Also a TUN interface of that name.
    pub(crate) tun: bool,
}

/// A started overlay: the handle, and the runner to spawn.
pub(crate) struct Started {
    pub(crate) overlay: Overlay,
    pub(crate) network: Ipv4Net,
    pub(crate) interface: String,
    pub(crate) listen_port: u16,
    pub(crate) runner: Runner,
}

/// Binds the overlay's UDP socket and builds the overlay (no peers yet: `keep_peers` adds them).
pub(crate) async fn start(place: Place) -> anyhow::Result<Started> {
    let socket = tokio::net::UdpSocket::bind(&place.listen)
        .await
        .with_context(|| {
            format!(
                "Failed to bind the overlay's UDP socket on {}",
                place.listen
            )
        })?;
    let (overlay, runner) = constella_overlay::new(
        OverlayConfig {
            private_key: place.key,
            address: place.address,
            network: place.network,
            peers: Vec::new(),
        },
        socket,
    )?;
    let runner = if place.tun {
        runner.with_os_interface(&place.interface)?
    } else {
        runner
    };
    Ok(Started {
        overlay,
        network: place.network,
        interface: place.interface,
        listen_port: runner.local_addr()?.port(),
        runner,
    })
}

/// How long a used invite's enrollment key is kept at most when the joiner's own key has not
/// shaken hands yet (its first start may take a while on a slow board).
const ENROLLMENT_AFTER_USE: Duration = Duration::from_secs(120);
/// How often that is checked while an enrollment waits for its successor.
const RETIRE_CHECK: Duration = Duration::from_secs(5);

/// Applies the member table to the overlay's peers whenever it changes, and when a live
/// invite's enrollment lapses. Ends when the cluster loop does.
pub(crate) async fn keep_peers(overlay: Overlay, me: NodeId, mut table: watch::Receiver<Shared>) {
    let mut applied: BTreeMap<PublicKey, PeerConfig> = BTreeMap::new();
    let mut retired = BTreeSet::new();
    let mut used_since: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let shared = table.borrow_and_update().clone();
        let waiting = retire_enrollments(&overlay, &shared, &mut retired, &mut used_since);
        let (wanted, next_change) = peers::wanted(me, &shared, super::node::unix_now(), &retired);
        let mut configs = BTreeMap::new();
        for peer in wanted {
            let key = PublicKey::from_bytes(peer.public_key);
            let endpoint = match &peer.endpoint {
                Some(name) => resolve(name).await,
                None => None,
            };
            configs.insert(
                key,
                PeerConfig {
                    public_key: key,
                    allowed_ips: peer.allowed_ips,
                    endpoint,
                    persistent_keepalive: peer.keepalive,
                },
            );
        }
        for key in applied.keys() {
            if !configs.contains_key(key) && overlay.remove_peer(key) {
                tracing::info!(peer = %key, "overlay peer removed");
            }
        }
        for (key, config) in &configs {
            // Re-adding resets the tunnel, so only a peer whose settings changed is touched.
            if applied.get(key) == Some(config) {
                continue;
            }
            match overlay.add_peer(config.clone()) {
                Ok(()) => {
                    tracing::info!(peer = %key, allowed_ips = ?config.allowed_ips, "overlay peer added")
                }
                Err(error) => tracing::warn!(peer = %key, %error, "overlay peer not added"),
            }
        }
        applied = configs;
        let lapse = next_change
            .map(|at| Duration::from_secs(at.saturating_sub(super::node::unix_now()).max(1)));
        let lapse = if waiting {
            Some(lapse.map_or(RETIRE_CHECK, |l| l.min(RETIRE_CHECK)))
        } else {
            lapse
        };
        tokio::select! {
            changed = table.changed() => if changed.is_err() { return },
            () = sleep_for(lapse) => {}
        }
    }
}

/// Retires the enrollment key of every used invite whose joiner's own key has shaken hands,
/// or that was used long enough ago. Returns whether any is still waiting.
fn retire_enrollments(
    overlay: &Overlay,
    shared: &Shared,
    retired: &mut BTreeSet<String>,
    used_since: &mut BTreeMap<String, Instant>,
) -> bool {
    let shaken: BTreeSet<PublicKey> = overlay
        .peers()
        .into_iter()
        .filter(|peer| peer.since_handshake.is_some())
        .map(|peer| peer.public_key)
        .collect();
    let now = Instant::now();
    let mut waiting = false;
    for (id, invite) in &shared.invites {
        let (Some(joiner), Some(_)) = (invite.used_by, &invite.enrollment) else {
            continue;
        };
        if retired.contains(id) {
            continue;
        }
        let successor = shared
            .peers
            .get(&joiner)
            .and_then(|p| p.overlay.as_ref())
            .map(|o| PublicKey::from_bytes(o.public_key));
        let since = *used_since.entry(id.clone()).or_insert(now);
        if successor.is_some_and(|key| shaken.contains(&key))
            || now.duration_since(since) >= ENROLLMENT_AFTER_USE
        {
            retired.insert(id.clone());
            used_since.remove(id);
        } else {
            waiting = true;
        }
    }
    retired.retain(|id| shared.invites.contains_key(id));
    waiting
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// A hub's endpoint, HOST:PORT, to its first IPv4 address; `None` (logged) if it does not
/// resolve, and the next table change tries again.
async fn resolve(endpoint: &str) -> Option<SocketAddr> {
    match tokio::net::lookup_host(endpoint).await {
        Ok(mut addresses) => {
            let found = addresses.find(SocketAddr::is_ipv4);
            if found.is_none() {
                tracing::warn!(endpoint, "the hub's endpoint has no IPv4 address");
            }
            found
        }
        Err(error) => {
            tracing::warn!(endpoint, %error, "cannot resolve the hub's endpoint");
            None
        }
    }
}
