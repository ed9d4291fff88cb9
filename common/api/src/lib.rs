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
pub mod node;
pub mod routes;
pub mod speedtest;

#[cfg(feature = "client")]
pub mod client;

pub use error::{ErrorBody, ErrorDetail};
