//! What one poll of a device can end in, and the health a run of them leads to: the vocabulary
//! the bus runner reports in and the device table, events and API read, so none of them depends
//! on another for it.

use std::time::Duration;

/// Polls that must fail in a row before a device is reported offline rather than failing.
pub(crate) const OFFLINE_AFTER: u32 = 3;

/// Why one request failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PollError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("reply with a bad CRC")]
    Crc,
    #[error("malformed reply: {0}")]
    Framing(String),
    #[error("exception {0:#04x} ({name})", name = exception_name(*.0))]
    Exception(u8),
    #[error("I/O error: {0}")]
    Io(String),
}

/// The four classes errors are counted in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    Timeout,
    CrcFraming,
    Exception,
    Io,
}

impl PollError {
    pub(crate) fn class(&self) -> ErrorClass {
        match self {
            PollError::Timeout(_) => ErrorClass::Timeout,
            PollError::Crc | PollError::Framing(_) => ErrorClass::CrcFraming,
            PollError::Exception(_) => ErrorClass::Exception,
            PollError::Io(_) => ErrorClass::Io,
        }
    }
}

fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target failed to respond",
        _ => "unknown",
    }
}

/// How a device is doing, from its recent polls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    /// Not polled yet.
    Pending,
    /// The last poll succeeded.
    Online,
    /// The last poll failed, but fewer than [`OFFLINE_AFTER`] in a row.
    Failing,
    /// [`OFFLINE_AFTER`] or more polls failed in a row.
    Offline,
}

impl Health {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Health::Pending => "pending",
            Health::Online => "online",
            Health::Failing => "failing",
            Health::Offline => "offline",
        }
    }
}
