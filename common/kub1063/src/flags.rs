//! Named flags: the 64-bit alarm/warning catalogue (fact sheet §3.4) and the digital-output bits
//! (§3.3), with English and Russian texts.

use super::map::RegisterAddr;

/// One of the four 64-bit groups. Bit n of a group lives in word `base + n / 16`, bit `n % 16`;
/// the lower address holds the lower bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Alarms active now (0x00C0–0x00C3).
    ActiveAlarms,
    /// Alarms active now or since the last reset (0x00C4–0x00C7).
    RegisteredAlarms,
    /// Warnings active now (0x00C8–0x00CB).
    ActiveWarnings,
    /// Warnings active now or since the last reset (0x00CC–0x00CF).
    RegisteredWarnings,
}

impl Group {
    /// All groups in register order.
    pub const ALL: [Group; 4] = [
        Group::ActiveAlarms,
        Group::RegisteredAlarms,
        Group::ActiveWarnings,
        Group::RegisteredWarnings,
    ];

    /// Address of the group's first word (its latch anchor).
    pub fn base(self) -> RegisterAddr {
        RegisterAddr(match self {
            Group::ActiveAlarms => 0x00C0,
            Group::RegisteredAlarms => 0x00C4,
            Group::ActiveWarnings => 0x00C8,
            Group::RegisteredWarnings => 0x00CC,
        })
    }

    /// Stable snake-case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::ActiveAlarms => "active_alarms",
            Group::RegisteredAlarms => "registered_alarms",
            Group::ActiveWarnings => "active_warnings",
            Group::RegisteredWarnings => "registered_warnings",
        }
    }

    /// Combines the group's four words (lowest address first) into its 64-bit mask.
    pub fn mask(words: [u16; 4]) -> u64 {
        words.iter().enumerate().fold(0u64, |mask, (i, word)| {
            mask | (u64::from(*word) << (16 * i))
        })
    }

    /// Splits a 64-bit mask into the group's four words, lowest address first.
    pub fn words(mask: u64) -> [u16; 4] {
        [0, 1, 2, 3].map(|i| (mask >> (16 * i)) as u16)
    }
}

/// One documented bit of the alarm/warning catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmBit {
    /// Bit number, 0–63.
    pub bit: u8,
    /// Stable machine name.
    pub key: &'static str,
    /// English text.
    pub en: &'static str,
    /// Russian text.
    pub ru: &'static str,
}

/// A set bit of a group mask: documented, or not (the vendor sheet leaves bits 0–23, 25, 29, 31,
/// 32 and 48–50 undocumented; a unit may still set them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// A bit with a catalogue entry.
    Known(&'static AlarmBit),
    /// A bit the catalogue does not describe.
    Undocumented(u8),
}

impl Flag {
    /// The bit number.
    pub fn bit(self) -> u8 {
        match self {
            Flag::Known(b) => b.bit,
            Flag::Undocumented(bit) => bit,
        }
    }
}

/// The set bits of `mask`, lowest first, each with its catalogue entry where there is one.
pub fn flags_of(mask: u64) -> impl Iterator<Item = Flag> {
    (0u8..64)
        .filter(move |bit| mask & (1u64 << bit) != 0)
        .map(
            |bit| match ALARM_BITS.binary_search_by_key(&bit, |b| b.bit) {
                Ok(i) => Flag::Known(&ALARM_BITS[i]),
                Err(_) => Flag::Undocumented(bit),
            },
        )
}

const fn a(bit: u8, key: &'static str, en: &'static str, ru: &'static str) -> AlarmBit {
    AlarmBit { bit, key, en, ru }
}

/// The alarm/warning bit catalogue, sorted by bit. Bit 24 is inferred from the captured history
/// (set exactly when CO2 read 0xFFFE); every other entry is from the vendor sheet.
#[rustfmt::skip]
pub static ALARM_BITS: &[AlarmBit] = &[
    a(24, "co2_sensor_break", "CO2 sensor break (inferred from captured data)", "Обрыв датчика CO2"),
    a(26, "air_intake_3_emergency", "Air inlet 3 control in emergency mode", "Включён аварийный режим управления воздухозаборником 3"),
    a(27, "air_intake_4_emergency", "Air inlet 4 control in emergency mode", "Включён аварийный режим управления воздухозаборником 4"),
    a(28, "low_supply_voltage", "Low supply voltage", "Низкое напряжение питания"),
    a(30, "date_time_not_set", "Date and time not set", "Не установлены дата и время"),
    a(33, "system_overload", "System overload", "Перегрузка системы"),
    a(34, "initial_setup_required", "Initial setup required", "Требуется первичная настройка"),
    a(35, "max_inside_temperature_exceeded", "Maximum inside temperature exceeded", "Превышена максимальная внутренняя температура"),
    a(36, "low_inside_temperature", "Low inside temperature", "Низкая внутренняя температура"),
    a(37, "high_humidity", "High humidity", "Высокая влажность"),
    a(38, "high_negative_pressure", "High negative pressure", "Высокое отрицательное давление"),
    a(39, "low_negative_pressure", "Low negative pressure", "Низкое отрицательное давление"),
    a(40, "humidity_sensor_break", "Humidity sensor break", "Обрыв датчика влажности"),
    a(41, "pressure_sensor_break", "Pressure sensor break", "Обрыв датчика отрицательного давления"),
    a(42, "inside_temperature_1_sensor_break", "Inside temperature sensor 1 break", "Обрыв датчика внутренней температуры 1"),
    a(43, "inside_temperature_2_sensor_break", "Inside temperature sensor 2 break", "Обрыв датчика внутренней температуры 2"),
    a(44, "outside_temperature_sensor_break", "Outside temperature sensor break", "Обрыв датчика наружной температуры"),
    a(45, "ventilation_emergency", "Temperature-based ventilation control in emergency mode", "Включён аварийный режим управления вентиляцией по температуре"),
    a(46, "humidity_control_emergency", "Humidity control in emergency mode", "Включён аварийный режим контроля влажности"),
    a(47, "cooler_emergency", "Cooler control in emergency mode", "Включён аварийный режим управления охладителем"),
    a(51, "air_intake_1_emergency", "Air inlet 1 control in emergency mode", "Включён аварийный режим управления воздухозаборником 1"),
    a(52, "air_intake_2_emergency", "Air inlet 2 control in emergency mode", "Включён аварийный режим управления воздухозаборником 2"),
    a(53, "heater_1_emergency", "Heater 1 control in emergency mode", "Включён аварийный режим управления нагревателем 1"),
    a(54, "heater_2_emergency", "Heater 2 control in emergency mode", "Включён аварийный режим управления нагревателем 2"),
    a(55, "damper_emergency", "Damper control in emergency mode", "Включён аварийный режим управления демпфером"),
    a(56, "invalid_setpoints", "Invalid setpoints", "Неправильные уставки"),
    a(57, "high_inside_temperature", "High inside temperature", "Высокая внутренняя температура"),
    a(58, "air_intake_tunnel_emergency", "Tunnel air inlet control in emergency mode", "Включён аварийный режим управления туннельным воздухозаборником"),
    a(59, "temperature_sensor_break", "Temperature sensor break", "Обрыв датчика температуры"),
    a(60, "inside_temperature_3_sensor_break", "Inside temperature sensor 3 break", "Обрыв датчика внутренней температуры 3"),
    a(61, "inside_temperature_4_sensor_break", "Inside temperature sensor 4 break", "Обрыв датчика внутренней температуры 4"),
    a(62, "heater_3_emergency", "Heater 3 control in emergency mode", "Включён аварийный режим управления нагревателем 3"),
    a(63, "heater_4_emergency", "Heater 4 control in emergency mode", "Включён аварийный режим управления нагревателем 4"),
];

/// One digital-output bit (1 = contact closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputBit {
    /// The bitfield register.
    pub register: RegisterAddr,
    /// Bit number in that register, 0 = least significant.
    pub bit: u8,
    /// Stable machine name.
    pub key: &'static str,
    /// English text.
    pub en: &'static str,
    /// Russian text.
    pub ru: &'static str,
}

const fn o(
    register: u16,
    bit: u8,
    key: &'static str,
    en: &'static str,
    ru: &'static str,
) -> OutputBit {
    OutputBit {
        register: RegisterAddr(register),
        bit,
        key,
        en,
        ru,
    }
}

/// Every documented digital-output bit, in register and bit order. 0x00A2 bit 5 is timer 2
/// output 4: the vendor sheet repeats "output 3", a typo.
#[rustfmt::skip]
pub static OUTPUT_BITS: &[OutputBit] = &[
    o(0x0081, 0, "gnv_base_1", "On/off fans 1, base", "ГНВ1 базовой вентиляции"),
    o(0x0081, 1, "gnv_base_2", "On/off fans 2, base", "ГНВ2 базовой вентиляции"),
    o(0x0081, 2, "gnv_base_3", "On/off fans 3, base", "ГНВ3 базовой вентиляции"),
    o(0x0081, 3, "gnv_base_4", "On/off fans 4, base", "ГНВ4 базовой вентиляции"),
    o(0x0081, 4, "gnv_base_5", "On/off fans 5, base", "ГНВ5 базовой вентиляции"),
    o(0x0081, 5, "gnv_base_6", "On/off fans 6, base", "ГНВ6 базовой вентиляции"),
    o(0x0081, 6, "gnv_base_7", "On/off fans 7, base", "ГНВ7 базовой вентиляции"),
    o(0x0081, 7, "gnv_base_8", "On/off fans 8, base", "ГНВ8 базовой вентиляции"),
    o(0x0081, 8, "gnv_tunnel_1", "On/off fans 1, tunnel", "ГНВ1 туннельной вентиляции"),
    o(0x0081, 9, "gnv_tunnel_2", "On/off fans 2, tunnel", "ГНВ2 туннельной вентиляции"),
    o(0x0081, 10, "gnv_tunnel_3", "On/off fans 3, tunnel", "ГНВ3 туннельной вентиляции"),
    o(0x0081, 11, "gnv_tunnel_4", "On/off fans 4, tunnel", "ГНВ4 туннельной вентиляции"),
    o(0x0081, 12, "gnv_tunnel_5", "On/off fans 5, tunnel", "ГНВ5 туннельной вентиляции"),
    o(0x0081, 13, "gnv_tunnel_6", "On/off fans 6, tunnel", "ГНВ6 туннельной вентиляции"),
    o(0x0081, 14, "gnv_tunnel_7", "On/off fans 7, tunnel", "ГНВ7 туннельной вентиляции"),
    o(0x0081, 15, "gnv_tunnel_8", "On/off fans 8, tunnel", "ГНВ8 туннельной вентиляции"),
    o(0x0082, 0, "grv_base_1_run", "Variable fans 1 run, base", "Пуск/стоп ГРВ1 базовой вентиляции"),
    o(0x0082, 1, "grv_base_2_run", "Variable fans 2 run, base", "Пуск/стоп ГРВ2 базовой вентиляции"),
    o(0x0082, 2, "grv_tunnel_run", "Variable fans run, tunnel", "Пуск/стоп ГРВ туннельной вентиляции"),
    o(0x0082, 3, "tunnel_scheme_active", "Tunnel scheme active", "Текущая схема вентиляции (туннельная)"),
    o(0x0082, 4, "heater_1", "Heater 1", "Нагреватель 1"),
    o(0x0082, 5, "heater_2", "Heater 2", "Нагреватель 2"),
    o(0x0082, 6, "cooler", "Cooler", "Охладитель"),
    o(0x0082, 7, "alarm_relay", "Alarm relay", "Авария"),
    o(0x0082, 8, "heater_3", "Heater 3", "Нагреватель 3"),
    o(0x0082, 9, "heater_4", "Heater 4", "Нагреватель 4"),
    o(0x0082, 10, "lighting_1", "Lighting 1", "Освещение 1"),
    o(0x0082, 11, "lighting_2", "Lighting 2", "Освещение 2"),
    o(0x0082, 12, "lighting_3", "Lighting 3", "Освещение 3"),
    o(0x0082, 13, "lighting_4", "Lighting 4", "Освещение 4"),
    o(0x0082, 14, "timer_1_out_1", "Timer 1 output 1", "Таймер 1, выход 1"),
    o(0x0082, 15, "timer_1_out_2", "Timer 1 output 2", "Таймер 1, выход 2"),
    o(0x00A2, 0, "timer_1_out_3", "Timer 1 output 3", "Таймер 1, выход 3"),
    o(0x00A2, 1, "timer_1_out_4", "Timer 1 output 4", "Таймер 1, выход 4"),
    o(0x00A2, 2, "timer_2_out_1", "Timer 2 output 1", "Таймер 2, выход 1"),
    o(0x00A2, 3, "timer_2_out_2", "Timer 2 output 2", "Таймер 2, выход 2"),
    o(0x00A2, 4, "timer_2_out_3", "Timer 2 output 3", "Таймер 2, выход 3"),
    o(0x00A2, 5, "timer_2_out_4", "Timer 2 output 4", "Таймер 2, выход 4"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn mask_word_order_is_lowest_address_lowest_bits() {
        assert_eq!(Group::mask([0, 0x0100, 0, 0]), 1 << 24);
        assert_eq!(Group::mask([0, 0, 0x0200, 0]), 1 << 41);
        assert_eq!(Group::mask([0, 0, 0, 0x0200]), 1 << 57);
        assert_eq!(Group::words(1 << 57), [0, 0, 0, 0x0200]);
        let mask = 0x8000_0200_0100_0001;
        assert_eq!(Group::mask(Group::words(mask)), mask);
    }

    #[test]
    fn flags_name_documented_bits_and_keep_the_rest() {
        let flags: Vec<Flag> = flags_of((1 << 24) | (1 << 41) | (1 << 57) | (1 << 3)).collect();
        assert_eq!(flags.len(), 4);
        assert_eq!(flags[0], Flag::Undocumented(3));
        let Flag::Known(pressure) = flags[2] else {
            panic!("bit 41 is documented")
        };
        assert_eq!(pressure.en, "Pressure sensor break");
        assert_eq!(pressure.ru, "Обрыв датчика отрицательного давления");
        let Flag::Known(hot) = flags[3] else {
            panic!("bit 57 is documented")
        };
        assert_eq!(hot.key, "high_inside_temperature");
        assert_eq!(hot.ru, "Высокая внутренняя температура");
    }

    #[test]
    fn catalogues_are_sorted_and_unique() {
        assert!(ALARM_BITS.windows(2).all(|w| w[0].bit < w[1].bit));
        assert!(
            ALARM_BITS
                .iter()
                .all(|b| b.bit < 64 && !b.en.is_empty() && !b.ru.is_empty())
        );
        assert!(
            OUTPUT_BITS
                .windows(2)
                .all(|w| (w[0].register, w[0].bit) < (w[1].register, w[1].bit))
        );
        assert_eq!(OUTPUT_BITS.len(), 16 + 16 + 6);
    }
}
