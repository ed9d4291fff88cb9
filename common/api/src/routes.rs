//! The API's paths: the route patterns the server mounts, and builders for the concrete paths
//! clients call. Path segments (device and node names) are `a–z`, `0–9`, `-` and `_`, so they
//! need no escaping.

/// `GET`: liveness and version, no token.
pub const HEALTH: &str = "/health";
/// `GET`: every device.
pub const DEVICES: &str = "/api/v1/devices";
/// `GET`: one device, decoded (`?lang=en|ru`).
pub const DEVICE: &str = "/api/v1/devices/{id}";
/// `POST`: clear a device's registered alarms.
pub const DEVICE_RESET_ALARMS: &str = "/api/v1/devices/{id}/reset-alarms";
/// `GET`: a device field's history (`?field=&from=&to=&step=`).
pub const DEVICE_HISTORY: &str = "/api/v1/devices/{id}/history";
/// `GET`: the board (`?window=`).
pub const NODE: &str = "/api/v1/node";
/// `GET`: node metric series (`?series=&from=&to=&step=`).
pub const NODE_METRICS: &str = "/api/v1/node/metrics";
/// `POST`: run the configured speed test.
pub const NODE_SPEEDTEST: &str = "/api/v1/node/speedtest";
/// `GET`: device events (`?device=&since=&after=&limit=`).
pub const EVENTS: &str = "/api/v1/events";
/// `GET`: Prometheus exposition.
pub const METRICS: &str = "/metrics";
/// `GET`: bytes for another node's speed test (`?bytes=N`).
pub const SPEEDTEST_BLOB: &str = "/api/v1/speedtest/blob";
/// `POST`: where another node's speed test uploads.
pub const SPEEDTEST_SINK: &str = "/api/v1/speedtest/sink";
/// `GET`: the cluster table.
pub const NODES: &str = "/api/v1/nodes";
/// `DELETE`: remove a node from the network.
pub const NODE_BY_NAME: &str = "/api/v1/nodes/{name}";
/// `GET`/`POST`: any node's endpoint through the cluster (`/api/v1/nodes/{name}/devices`, …).
pub const NODE_MIRROR: &str = "/api/v1/nodes/{name}/{*rest}";
/// `POST`: a single-use join link.
pub const INVITES: &str = "/api/v1/cluster/invites";
/// `GET`: this node's end of the WireGuard overlay.
pub const OVERLAY: &str = "/api/v1/overlay";
/// `POST`: one ICMP echo through the overlay.
pub const OVERLAY_PING: &str = "/api/v1/overlay/ping";
/// `POST`: admit a standard WireGuard device.
pub const OVERLAY_DEVICES: &str = "/api/v1/overlay/devices";
/// `DELETE`: withdraw a device.
pub const OVERLAY_DEVICE: &str = "/api/v1/overlay/devices/{name}";

/// `/api/v1/devices/{id}`.
pub fn device(id: &str) -> String {
    format!("{DEVICES}/{id}")
}

/// `/api/v1/devices/{id}/reset-alarms`.
pub fn reset_alarms(id: &str) -> String {
    format!("{DEVICES}/{id}/reset-alarms")
}

/// `/api/v1/nodes/{name}`.
pub fn node(name: &str) -> String {
    format!("{NODES}/{name}")
}

/// `/api/v1/overlay/devices/{name}`.
pub fn overlay_device(name: &str) -> String {
    format!("{OVERLAY_DEVICES}/{name}")
}

/// `/api/v1/nodes/{name}/{local}`: another node's `local` endpoint (given without its
/// `/api/v1` prefix, e.g. `devices/house-1`) through the cluster.
pub fn on_node(name: &str, local: &str) -> String {
    format!("{NODES}/{name}/{}", local.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_match_the_patterns() {
        assert_eq!(device("house-1"), DEVICE.replace("{id}", "house-1"));
        assert_eq!(
            reset_alarms("house-1"),
            DEVICE_RESET_ALARMS.replace("{id}", "house-1")
        );
        assert_eq!(node("beta"), NODE_BY_NAME.replace("{name}", "beta"));
        assert_eq!(
            overlay_device("phone"),
            OVERLAY_DEVICE.replace("{name}", "phone")
        );
        assert_eq!(
            on_node("beta", "/devices/house-1"),
            "/api/v1/nodes/beta/devices/house-1"
        );
    }
}
