//! The KUB-1063 (КУБ-1063) controller: register map, decoding rules, alarm and output flags, and the
//! raw snapshots captured from a real unit.
//!
//! Source of truth: `shared/kub1063/REGISTERS.md` (the vendor register sheet "V" and the captured
//! history "DB"). Enum and table order follows that sheet, not the alphabet.

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
