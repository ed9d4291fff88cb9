//! Opening a serial port with the line settings of `constella_modbus::line`, for the poller and
//! for `constella sim --rtu`.

use std::path::Path;

use anyhow::Context as _;
use constella_modbus::{LineParity, LineSettings};
use tokio_serial::{
    DataBits, FlowControl, Parity, SerialPortBuilderExt as _, SerialStream, StopBits,
};

/// Opens `path` as a serial port with `line`'s settings and discards anything already buffered.
pub(crate) fn open(path: &Path, line: &LineSettings) -> anyhow::Result<SerialStream> {
    let path_text = path.to_string_lossy();
    let port = tokio_serial::new(path_text.as_ref(), line.baud)
        .data_bits(match line.data_bits {
            5 => DataBits::Five,
            6 => DataBits::Six,
            7 => DataBits::Seven,
            _ => DataBits::Eight,
        })
        .parity(match line.parity {
            LineParity::None => Parity::None,
            LineParity::Even => Parity::Even,
            LineParity::Odd => Parity::Odd,
        })
        .stop_bits(if line.stop_bits == 2 {
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
