//! The unit id a device answers on. Frames carry any byte in that place (0 is broadcast,
//! 248–255 are reserved), so the framing takes a plain `u8`; what names a device is this type.

use core::fmt;

/// A Modbus unit id that can name one device on a bus: 1–247. Unit 0 is broadcast (nobody
/// answers) and 248–255 are reserved by the Modbus specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "i64", into = "u8")
)]
pub struct UnitId(u8);

impl UnitId {
    /// The smallest and largest ids a device may have.
    pub const MIN: u8 = 1;
    pub const MAX: u8 = 247;

    /// The id as it goes on the wire.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// A number that is not a device's unit id; says which and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotAUnitId(pub i64);

impl fmt::Display for NotAUnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is not a Modbus unit id ({}–{})",
            self.0,
            UnitId::MIN,
            UnitId::MAX
        )
    }
}

impl core::error::Error for NotAUnitId {}

impl TryFrom<i64> for UnitId {
    type Error = NotAUnitId;

    fn try_from(value: i64) -> Result<UnitId, NotAUnitId> {
        u8::try_from(value)
            .ok()
            .filter(|u| (UnitId::MIN..=UnitId::MAX).contains(u))
            .map(UnitId)
            .ok_or(NotAUnitId(value))
    }
}

impl TryFrom<u8> for UnitId {
    type Error = NotAUnitId;

    fn try_from(value: u8) -> Result<UnitId, NotAUnitId> {
        UnitId::try_from(i64::from(value))
    }
}

impl From<UnitId> for u8 {
    fn from(unit: UnitId) -> u8 {
        unit.0
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_1_to_247_name_a_device() {
        for good in [1i64, 2, 247] {
            assert_eq!(UnitId::try_from(good).map(UnitId::get), Ok(good as u8));
        }
        for bad in [0i64, 248, 255, 256, -1, i64::MAX] {
            assert_eq!(UnitId::try_from(bad), Err(NotAUnitId(bad)));
        }
        assert_eq!(
            NotAUnitId(300).to_string(),
            "300 is not a Modbus unit id (1–247)"
        );
    }
}
