//! Serial line settings and the timing they imply, shared by the poller and the simulator.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tokio_serial::{
    DataBits, FlowControl, Parity, SerialPortBuilderExt as _, SerialStream, StopBits,
};

/// Line settings of an RS-485 bus. The KUB-1063 runs 9600 8N1 (fact sheet §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LineSettings {
    pub(crate) baud: u32,
    pub(crate) data_bits: u8,
    pub(crate) parity: LineParity,
    pub(crate) stop_bits: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineParity {
    None,
    Even,
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
    pub(crate) fn bits_per_char(&self) -> u32 {
        1 + u32::from(self.data_bits)
            + u32::from(self.parity != LineParity::None)
            + u32::from(self.stop_bits)
    }

    /// Time to send `bytes` characters.
    pub(crate) fn wire_time(&self, bytes: usize) -> Duration {
        let bits = u64::from(self.bits_per_char()) * bytes as u64;
        Duration::from_nanos(bits * 1_000_000_000 / u64::from(self.baud.max(1)))
    }

    /// The RTU inter-frame silence t3.5. Above 19 200 baud the Modbus serial-line spec fixes it
    /// at 1.75 ms instead of scaling it with the character time.
    pub(crate) fn t35(&self) -> Duration {
        if self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            self.wire_time(1).mul_f64(3.5)
        }
    }

    /// Opens `path` as a serial port with these settings and discards anything already buffered.
    pub(crate) fn open(&self, path: &Path) -> anyhow::Result<SerialStream> {
        let path_text = path.to_string_lossy();
        let port = tokio_serial::new(path_text.as_ref(), self.baud)
            .data_bits(match self.data_bits {
                5 => DataBits::Five,
                6 => DataBits::Six,
                7 => DataBits::Seven,
                _ => DataBits::Eight,
            })
            .parity(match self.parity {
                LineParity::None => Parity::None,
                LineParity::Even => Parity::Even,
                LineParity::Odd => Parity::Odd,
            })
            .stop_bits(if self.stop_bits == 2 {
                StopBits::Two
            } else {
                StopBits::One
            })
            .flow_control(FlowControl::None)
            .open_native_async()
            .with_context(|| format!("Failed to open serial port {}", path.display()))?;
        tokio_serial::SerialPort::clear(&port, tokio_serial::ClearBuffer::Input)
            .with_context(|| format!("Failed to flush serial port {}", path.display()))?;
        Ok(port)
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
