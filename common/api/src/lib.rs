//! The Constella HTTP API as types: every JSON answer (and request body) as a `Serialize +
//! Deserialize` struct, statuses and kinds as enums, and the route paths. The agent's server
//! renders these, and every client (the CLI, the bot, the tests, the desktop app) reads them, so a
//! renamed field is a compile error instead of a silent `null`.
//!
//! The crate knows JSON shapes only: no HTTP server, no files, no clock. With the `client`
//! feature it adds a small typed client over hyper.
#![warn(missing_docs)]

pub mod cluster;
pub mod devices;
pub mod error;
pub mod history;
pub mod names;
pub mod node;
pub mod overlay;
pub mod routes;
pub mod speedtest;

#[cfg(feature = "client")]
pub mod client;

pub use error::{ErrorBody, ErrorDetail};
pub use names::{BusName, DeviceName, NodeName};

#[cfg(test)]
mod tests {
    use serde::Serialize;

    use crate::cluster::NodeStatus;
    use crate::devices::DeviceStatus;
    use crate::history::EventKind;

    fn json_name<T: Serialize>(value: T) -> String {
        serde_json::to_value(value)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    #[test]
    fn as_str_is_the_json_name() {
        for s in [
            DeviceStatus::Pending,
            DeviceStatus::Online,
            DeviceStatus::Failing,
            DeviceStatus::Offline,
        ] {
            assert_eq!(s.as_str(), json_name(s));
        }
        for k in [
            EventKind::Raised,
            EventKind::Cleared,
            EventKind::SensorLost,
            EventKind::SensorBack,
            EventKind::DeviceUnreachable,
            EventKind::DeviceBack,
        ] {
            assert_eq!(k.as_str(), json_name(k));
        }
        for n in [NodeStatus::Alive, NodeStatus::Down] {
            assert_eq!(n.as_str(), json_name(n));
        }
    }
}
