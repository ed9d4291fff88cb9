//! Raw word → typed reading. Special codes are checked on the raw unsigned word first; only an
//! ordinary word is sign-converted and scaled (fact sheet §3.6).

use core::fmt;

use super::map::{ChannelKind, Kind, Register};

/// Health of one field, as the controller reports it through special codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// An ordinary value.
    Ok,
    /// Not yet measured or computed (0xFFFF / 0x7FFF).
    Pending,
    /// Sensor break (0xFFFE / 0x7FFE on sensors and temperatures).
    Break,
    /// Other measurement or computation error.
    Error,
    /// Disabled in the controller's settings, or undefined.
    Disabled,
    /// No controller output or channel assigned to this signal.
    NotAssigned,
    /// The output is not used with the current settings.
    Unused,
}

impl Status {
    /// Stable lower-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Pending => "pending",
            Status::Break => "break",
            Status::Error => "error",
            Status::Disabled => "disabled",
            Status::NotAssigned => "not_assigned",
            Status::Unused => "unused",
        }
    }
}

/// A decoded value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    /// A fixed-point quantity: `raw × 10^-decimals`. Kept exact so 25.7 stays 25.7.
    Quantity {
        /// Signed raw value.
        raw: i32,
        /// Number of decimal places.
        decimals: u8,
    },
    /// A bitfield word (digital outputs, one alarm word).
    Bits(u16),
    /// The ventilation scheme.
    Scheme(Scheme),
    /// A software version such as 4.14.
    Version {
        /// Major part (raw / 100).
        major: u16,
        /// Minor part (raw % 100), shown with two digits.
        minor: u16,
    },
    /// A 0-based channel number of the given kind (0 = K1, AI1, AO1).
    Channel(ChannelKind, u16),
    /// A raw word of a write-only command register.
    Word(u16),
}

impl Value {
    /// The value as a floating-point number, where one makes sense (quantities, channels as their
    /// 1-based number, the scheme as 0/1, bitfields and words as integers).
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Quantity { raw, decimals } => f64::from(raw) / pow10(decimals),
            Value::Bits(bits) | Value::Word(bits) => f64::from(bits),
            Value::Scheme(scheme) => f64::from(scheme as u8),
            Value::Version { major, minor } => f64::from(major) + f64::from(minor) / 100.0,
            Value::Channel(_, n) => f64::from(n) + 1.0,
        }
    }
}

fn pow10(decimals: u8) -> f64 {
    let mut p = 1.0;
    for _ in 0..decimals {
        p *= 10.0;
    }
    p
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Quantity { raw, decimals: 0 } => write!(f, "{raw}"),
            Value::Quantity { raw, decimals } => {
                let scale = 10u32.pow(u32::from(decimals));
                let sign = if raw < 0 { "-" } else { "" };
                let abs = raw.unsigned_abs();
                write!(
                    f,
                    "{sign}{}.{:0width$}",
                    abs / scale,
                    abs % scale,
                    width = usize::from(decimals)
                )
            }
            Value::Bits(bits) => write!(f, "0x{bits:04X}"),
            Value::Scheme(scheme) => f.write_str(scheme.as_str()),
            Value::Version { major, minor } => write!(f, "{major}.{minor:02}"),
            Value::Channel(kind, n) => write!(f, "{}{}", kind.prefix(), u32::from(n) + 1),
            Value::Word(word) => write!(f, "{word}"),
        }
    }
}

/// The ventilation scheme (0x00D2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Base (minimum / side-wall) ventilation, "базовая".
    Base = 0,
    /// Tunnel ventilation, "туннельная".
    Tunnel = 1,
}

impl Scheme {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Base => "base",
            Scheme::Tunnel => "tunnel",
        }
    }
}

/// One decoded field: a status and, when the status is [`Status::Ok`], a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Health of the field.
    pub status: Status,
    /// The value; `None` exactly when a special code was read.
    pub value: Option<Value>,
}

impl Reading {
    fn ok(value: Value) -> Self {
        Reading {
            status: Status::Ok,
            value: Some(value),
        }
    }

    fn special(status: Status) -> Self {
        Reading {
            status,
            value: None,
        }
    }
}

/// Decodes one raw word of `register`.
pub fn decode(register: &Register, raw: u16) -> Reading {
    let signed = i32::from(raw as i16);
    let quantity = |raw: i32, decimals: u8| Reading::ok(Value::Quantity { raw, decimals });
    match register.kind {
        Kind::Outputs | Kind::GroupWord => Reading::ok(Value::Bits(raw)),
        Kind::Sensor { decimals } => match raw {
            0xFFFF => Reading::special(Status::Pending),
            0xFFFE => Reading::special(Status::Break),
            0xFFFD => Reading::special(Status::Error),
            0xFFFC => Reading::special(Status::Disabled),
            _ => quantity(i32::from(raw), decimals),
        },
        Kind::Output => match raw {
            0xFFFF => Reading::special(Status::Pending),
            0xFFFE => Reading::special(Status::NotAssigned),
            0xFFFD => Reading::special(Status::Error),
            0xFFFC => Reading::special(Status::Unused),
            _ => quantity(i32::from(raw), 1),
        },
        Kind::Temperature => match raw {
            0x7FFF => Reading::special(Status::Pending),
            0x7FFE => Reading::special(Status::Break),
            0x7FFD => Reading::special(Status::Error),
            0x7FFC => Reading::special(Status::Disabled),
            _ => quantity(signed, 1),
        },
        Kind::Level => quantity(i32::from(raw), 1),
        Kind::Scheme => match raw {
            0 => Reading::ok(Value::Scheme(Scheme::Base)),
            1 => Reading::ok(Value::Scheme(Scheme::Tunnel)),
            _ => Reading::special(Status::Error),
        },
        Kind::DayCounter => match raw {
            0x7FFF => Reading::special(Status::Disabled),
            _ => quantity(signed, 0),
        },
        Kind::Setpoint => match raw {
            0x7FFF => Reading::special(Status::Disabled),
            _ => quantity(signed, 1),
        },
        Kind::ControlTemperature => match raw {
            0x7FFF => Reading::special(Status::Pending),
            0x7FFE => Reading::special(Status::Error),
            _ => quantity(signed, 1),
        },
        Kind::Version => Reading::ok(Value::Version {
            major: raw / 100,
            minor: raw % 100,
        }),
        Kind::Channel(kind) => match raw as i16 {
            -1 => Reading::special(Status::NotAssigned),
            n if n < 0 => Reading::special(Status::Error),
            n => Reading::ok(Value::Channel(kind, n.unsigned_abs())),
        },
        Kind::Command => Reading::ok(Value::Word(raw)),
        Kind::Minutes => quantity(signed, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RegisterAddr, Table, register};
    use alloc::string::ToString;

    #[track_caller]
    fn check(table: Table, addr: u16, raw: u16, status: Status, shown: &str) {
        let register = register(table, RegisterAddr(addr)).expect("register in map");
        let reading = decode(register, raw);
        assert_eq!(
            reading.status, status,
            "status of {addr:#06X} raw {raw:#06X}"
        );
        let text = reading.value.map(|v| v.to_string()).unwrap_or_default();
        assert_eq!(text, shown, "value of {addr:#06X} raw {raw:#06X}");
    }

    #[test]
    fn sensors_scale_and_special_codes() {
        check(Table::Input, 0x0083, 257, Status::Ok, "25.7");
        check(Table::Input, 0x0084, 481, Status::Ok, "48.1");
        check(Table::Input, 0x0085, 2600, Status::Ok, "2600");
        check(Table::Input, 0x0086, 0xFFFC, Status::Disabled, "");
        check(Table::Input, 0x0083, 0xFFFF, Status::Pending, "");
        check(Table::Input, 0x0083, 0xFFFE, Status::Break, "");
        check(Table::Input, 0x0085, 0xFFFD, Status::Error, "");
        // 0xFFFB is not a code: a (nonsensical but) ordinary reading, never a sign flip.
        check(Table::Input, 0x0085, 0xFFFB, Status::Ok, "65531");
    }

    #[test]
    fn outputs_have_their_own_code_words() {
        check(Table::Input, 0x0087, 191, Status::Ok, "19.1");
        check(Table::Input, 0x0087, 0xFFFF, Status::Pending, "");
        check(Table::Input, 0x0088, 0xFFFE, Status::NotAssigned, "");
        check(Table::Input, 0x0089, 0xFFFD, Status::Error, "");
        check(Table::Input, 0x009F, 0xFFFC, Status::Unused, "");
    }

    #[test]
    fn temperatures_check_codes_before_sign() {
        check(Table::Input, 0x008D, 255, Status::Ok, "25.5");
        check(Table::Input, 0x008F, 0xFFCB, Status::Ok, "-5.3");
        check(Table::Input, 0x008F, 0xFFFF, Status::Ok, "-0.1");
        check(Table::Input, 0x008E, 0x7FFF, Status::Pending, "");
        check(Table::Input, 0x0090, 0x7FFE, Status::Break, "");
        check(Table::Input, 0x0091, 0x7FFD, Status::Error, "");
        check(Table::Input, 0x008D, 0x7FFC, Status::Disabled, "");
    }

    #[test]
    fn control_values() {
        check(Table::Input, 0x00D0, 912, Status::Ok, "91.2");
        check(Table::Input, 0x00D1, 1000, Status::Ok, "100.0");
        check(Table::Input, 0x00D2, 0, Status::Ok, "base");
        check(Table::Input, 0x00D2, 1, Status::Ok, "tunnel");
        check(Table::Input, 0x00D2, 7, Status::Error, "");
        check(Table::Input, 0x00D3, 41, Status::Ok, "41");
        check(Table::Input, 0x00D3, 0x7FFF, Status::Disabled, "");
        check(Table::Input, 0x00D4, 248, Status::Ok, "24.8");
        check(Table::Input, 0x00D4, 0x7FFF, Status::Disabled, "");
        check(Table::Input, 0x00D6, 0x7FFF, Status::Disabled, "");
        check(Table::Input, 0x00D5, 0x7FFF, Status::Pending, "");
        check(Table::Input, 0x00D5, 0x7FFE, Status::Error, "");
        check(Table::Input, 0x00D5, 0xFFF6, Status::Ok, "-1.0");
    }

    #[test]
    fn versions_bits_channels_minutes() {
        check(Table::Input, 0x0301, 414, Status::Ok, "4.14");
        check(Table::Input, 0x0301, 401, Status::Ok, "4.01");
        check(Table::Input, 0x0081, 0x000F, Status::Ok, "0x000F");
        check(Table::Input, 0x00C1, 0x0100, Status::Ok, "0x0100");
        check(Table::Holding, 0x0100, 0, Status::Ok, "K1");
        check(Table::Holding, 0x0118, 2, Status::Ok, "AI3");
        check(Table::Holding, 0x011A, 0, Status::Ok, "AO1");
        check(Table::Holding, 0x0117, 0xFFFF, Status::NotAssigned, "");
        check(Table::Holding, 0x0117, 0xFFFE, Status::Error, "");
        check(Table::Holding, 0x003F, 180, Status::Ok, "180");
        check(Table::Holding, 0x003F, (-120i16) as u16, Status::Ok, "-120");
        check(Table::Holding, 0x0020, 0, Status::Ok, "0");
    }

    #[test]
    fn quantity_as_f64() {
        let v = Value::Quantity {
            raw: -53,
            decimals: 1,
        };
        assert!((v.as_f64() + 5.3).abs() < 1e-9);
    }
}
