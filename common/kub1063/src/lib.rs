//! The KUB-1063 (КУБ-1063) climate controller: register map, decoding rules, alarm and output
//! flags, and the raw snapshots captured from a real unit — everything that is true of the
//! controller independent of how its bytes travel.
//!
//! Source of truth: `shared/kub1063/REGISTERS.md` (the vendor register sheet "V" and the captured
//! history "DB"). Enum and table order follows that sheet, not the alphabet.
//!
//! The crate is `no_std` with `alloc` so that RS-485 bridge firmware can reuse it; it knows nothing
//! of tokio, files, sockets or JSON. The `std` feature (default) only adds `std::error::Error` impls.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

extern crate alloc;

mod decode;
pub mod fixtures;
mod flags;
mod image;
mod map;

pub use decode::{Reading, Status, Value, decode};
pub use flags::{ALARM_BITS, AlarmBit, Flag, Group, OUTPUT_BITS, OutputBit, flags_of};
pub use image::{Decoded, Field, GroupState, Image};
pub use map::{
    ChannelKind, Kind, LATCH_ANCHORS, REGISTERS, Register, RegisterAddr, Table, Unit, latch_anchor,
    register,
};

/// Holding register that clears registered alarms and warnings when 1 is written to it (FC06).
pub const RESET_ALARMS: RegisterAddr = RegisterAddr(0x0020);
