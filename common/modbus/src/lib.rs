//! Modbus as the KUB-1063 speaks it, independent of how bytes travel: request and reply PDUs with
//! their RTU (CRC-16) and TCP (MBAP) framings, the read plan that batches the register map into
//! requests, and serial line timing.
//!
//! `no_std` with `alloc`, so the simulator, the agent and the RS-485 bridge firmware share it; it
//! knows nothing of tokio, files or sockets. Every parser is length-checked and returns `None` on
//! malformed input; nothing here panics on outside bytes.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod line;
pub mod pdu;
pub mod plan;
pub mod unit;

pub use line::{LineParity, LineSettings};
pub use unit::{NotAUnitId, UnitId};
