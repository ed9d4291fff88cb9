//! Serial line settings and the timing they imply, shared by the poller, the simulator and the
//! bridge firmware.

use core::time::Duration;

/// Line settings of an RS-485 bus. The KUB-1063 runs 9600 8N1 (fact sheet §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineSettings {
    /// Bits per second.
    pub baud: u32,
    /// Data bits per character (5–8).
    pub data_bits: u8,
    /// Parity bit, if any.
    pub parity: LineParity,
    /// Stop bits (1 or 2).
    pub stop_bits: u8,
}

/// The parity bit of a serial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineParity {
    /// No parity bit.
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

impl Default for LineSettings {
    fn default() -> Self {
        LineSettings {
            baud: 9600,
            data_bits: 8,
            parity: LineParity::None,
            stop_bits: 1,
        }
    }
}

impl LineSettings {
    /// Bits on the wire per character: start + data + parity + stop.
    pub fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != LineParity::None)
            + u32::from(self.stop_bits)
    }

    /// Time to send `bytes` characters.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        let bits = u64::from(self.bits_per_char()) * bytes as u64;
        Duration::from_nanos(bits * 1_000_000_000 / u64::from(self.baud.max(1)))
    }

    /// The RTU inter-frame silence t3.5. Above 19 200 baud the Modbus serial-line spec fixes it
    /// at 1.75 ms instead of scaling it with the character time.
    pub fn t35(&self) -> Duration {
        if self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            // 3.5 character times, in integer arithmetic (no float in no_std).
            self.wire_time(7) / 2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_at_9600_8n1() {
        let line = LineSettings::default();
        assert_eq!(line.bits_per_char(), 10);
        assert_eq!(line.wire_time(8), Duration::from_nanos(8_333_333));
        assert_eq!(line.t35().as_micros(), 3645);
        let fast = LineSettings {
            baud: 115_200,
            ..line
        };
        assert_eq!(fast.t35(), Duration::from_micros(1750));
    }
}
