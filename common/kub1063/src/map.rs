//! The register map as data: every documented input (FC04) and holding (FC03) register of the
//! KUB-1063, with its type, scaling, unit and names.
//!
//! Only registers in the vendor sheet are listed. The unverified 0x0302/0x0303 and AD2's curve
//! registers are left out on purpose: reading an address a unit does not implement could make it
//! answer a whole block with an exception.

use core::fmt;

/// A Modbus protocol (PDU) address, 0-based: 0x0301 is sent as 0x0301, never with a 30001 offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegisterAddr(pub u16);

impl fmt::Display for RegisterAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.0)
    }
}

/// Which register table an address lives in; it decides the read function code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Live data, read with FC04 (Read Input Registers).
    Input,
    /// Settings and commands, read with FC03 (Read Holding Registers).
    Holding,
}

impl Table {
    /// The Modbus function code that reads this table.
    pub fn read_function(self) -> u8 {
        match self {
            Table::Input => 0x04,
            Table::Holding => 0x03,
        }
    }
}

/// Engineering unit of a register's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// No unit (bitfields, enums, versions, channel numbers).
    None,
    /// Pascal (negative static pressure, shown positive).
    Pascal,
    /// Relative humidity, percent.
    PercentRh,
    /// Parts per million.
    Ppm,
    /// Percent of full output.
    Percent,
    /// Degrees Celsius.
    Celsius,
    /// Days.
    Days,
    /// Minutes.
    Minutes,
}

impl Unit {
    /// Short symbol for display ("" for [`Unit::None`]).
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::None => "",
            Unit::Pascal => "Pa",
            Unit::PercentRh => "%RH",
            Unit::Ppm => "ppm",
            Unit::Percent => "%",
            Unit::Celsius => "°C",
            Unit::Days => "days",
            Unit::Minutes => "min",
        }
    }
}

/// What a channel-assignment register points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelKind {
    /// A relay: 0 = K1, 1 = K2, …
    Relay,
    /// An analog input: 0 = AI1, …
    AnalogInput,
    /// An analog output: 0 = AO1, …
    AnalogOutput,
}

impl ChannelKind {
    /// The label prefix the controller's display uses ("K", "AI", "AO").
    pub fn prefix(self) -> &'static str {
        match self {
            ChannelKind::Relay => "K",
            ChannelKind::AnalogInput => "AI",
            ChannelKind::AnalogOutput => "AO",
        }
    }
}

/// How a register's raw word is interpreted. The special codes of each kind are checked on the raw
/// unsigned word before any sign conversion or scaling (fact sheet §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Digital-output bitfield (0 = contact open, 1 = closed).
    Outputs,
    /// One word of a 64-bit alarm or warning group.
    GroupWord,
    /// Unsigned sensor value; 0xFFFF pending, 0xFFFE break, 0xFFFD error, 0xFFFC disabled.
    Sensor {
        /// Decimal places of the raw value (1 means raw × 0.1).
        decimals: u8,
    },
    /// Unsigned output signal in 0.1 %; 0xFFFF pending, 0xFFFE not assigned, 0xFFFD error,
    /// 0xFFFC unused.
    Output,
    /// Signed temperature in 0.1 °C; 0x7FFF pending, 0x7FFE break, 0x7FFD error, 0x7FFC disabled.
    Temperature,
    /// Unsigned level in 0.1 %, no special codes.
    Level,
    /// Ventilation scheme: 0 base, 1 tunnel.
    Scheme,
    /// Signed day counter; 0x7FFF = counter disabled.
    DayCounter,
    /// Signed set-point temperature in 0.1 °C; 0x7FFF = undefined (reported as disabled).
    Setpoint,
    /// Signed control temperature in 0.1 °C; 0x7FFF not yet measured, 0x7FFE measurement error.
    ControlTemperature,
    /// Software version: raw / 100 major, raw % 100 minor.
    Version,
    /// Signed channel assignment; -1 (0xFFFF) = not assigned.
    Channel(ChannelKind),
    /// Write-only command register (reads carry no meaning).
    Command,
    /// Signed minutes (time-zone offset).
    Minutes,
}

/// One register of the map.
#[derive(Clone, Copy, Debug)]
pub struct Register {
    /// Protocol address.
    pub addr: RegisterAddr,
    /// Table (decides FC03 or FC04).
    pub table: Table,
    /// Stable machine name, used in the API and in configuration.
    pub key: &'static str,
    /// Interpretation of the raw word.
    pub kind: Kind,
    /// Engineering unit.
    pub unit: Unit,
    /// English name.
    pub en: &'static str,
    /// Russian name (as the controller's documentation words it).
    pub ru: &'static str,
}

/// The register that must be read before, or in the same request as, `addr` so that the unit
/// refreshes `addr`'s latched value (fact sheet §2.2 "Group latching").
///
/// 0x0082 and 0x00A2 latch on a read of 0x0081; each 4-word alarm or warning group latches on a
/// read of its first word.
pub fn latch_anchor(addr: RegisterAddr) -> Option<RegisterAddr> {
    LATCH_ANCHORS
        .iter()
        .find(|(anchor, followers)| *anchor != addr && followers.contains(&addr))
        .map(|(anchor, _)| *anchor)
}

/// Every latch anchor with the addresses it refreshes (the anchor itself included).
pub static LATCH_ANCHORS: &[(RegisterAddr, &[RegisterAddr])] = &[
    (
        RegisterAddr(0x0081),
        &[
            RegisterAddr(0x0081),
            RegisterAddr(0x0082),
            RegisterAddr(0x00A2),
        ],
    ),
    (RegisterAddr(0x00C0), &group(0x00C0)),
    (RegisterAddr(0x00C4), &group(0x00C4)),
    (RegisterAddr(0x00C8), &group(0x00C8)),
    (RegisterAddr(0x00CC), &group(0x00CC)),
];

const fn group(base: u16) -> [RegisterAddr; 4] {
    [
        RegisterAddr(base),
        RegisterAddr(base + 1),
        RegisterAddr(base + 2),
        RegisterAddr(base + 3),
    ]
}

/// Looks a register up by table and address.
pub fn register(table: Table, addr: RegisterAddr) -> Option<&'static Register> {
    REGISTERS
        .binary_search_by(|r| (r.table, r.addr).cmp(&(table, addr)))
        .ok()
        .map(|i| &REGISTERS[i])
}

const fn reg(
    addr: u16,
    table: Table,
    key: &'static str,
    kind: Kind,
    unit: Unit,
    en: &'static str,
    ru: &'static str,
) -> Register {
    Register {
        addr: RegisterAddr(addr),
        table,
        key,
        kind,
        unit,
        en,
        ru,
    }
}

use ChannelKind::{AnalogInput as AI, AnalogOutput as AO, Relay};
use Kind::*;
use Table::{Holding as H, Input as I};

const S1: Kind = Sensor { decimals: 1 };
const S0: Kind = Sensor { decimals: 0 };
const PCT: Unit = Unit::Percent;
const C: Unit = Unit::Celsius;
const NO: Unit = Unit::None;

/// The complete map, sorted by (table, address). Input registers first, then holding registers.
#[rustfmt::skip]
pub static REGISTERS: &[Register] = &[
    reg(0x0081, I, "digital_outputs_1", Outputs, NO, "Digital outputs (1)", "Состояние цифровых выходов (1)"),
    reg(0x0082, I, "digital_outputs_2", Outputs, NO, "Digital outputs (2)", "Состояние цифровых выходов (2)"),
    reg(0x0083, I, "pressure", S1, Unit::Pascal, "Negative pressure", "Отрицательное давление"),
    reg(0x0084, I, "humidity", S1, Unit::PercentRh, "Relative humidity", "Относительная влажность"),
    reg(0x0085, I, "co2", S0, Unit::Ppm, "CO2 concentration", "Концентрация CO2"),
    reg(0x0086, I, "nh3", S1, Unit::Ppm, "NH3 concentration", "Концентрация NH3"),
    reg(0x0087, I, "grv_base", Output, PCT, "Variable fans, base scheme", "Выход управления ГРВ базовой вентиляции"),
    reg(0x0088, I, "grv_tunnel", Output, PCT, "Variable fans, tunnel scheme", "Выход управления ГРВ туннельной вентиляции"),
    reg(0x0089, I, "damper", Output, PCT, "Damper", "Выход управления демпфером"),
    reg(0x008A, I, "air_intake_1", Output, PCT, "Air inlet 1", "Выход управления воздухозаборником 1"),
    reg(0x008B, I, "air_intake_2", Output, PCT, "Air inlet 2", "Выход управления воздухозаборником 2"),
    reg(0x008C, I, "air_intake_tunnel", Output, PCT, "Tunnel air inlet", "Выход управления туннельным воздухозаборником"),
    reg(0x008D, I, "temp_inside_1", Temperature, C, "Inside temperature 1", "Внутренняя температура 1"),
    reg(0x008E, I, "temp_inside_2", Temperature, C, "Inside temperature 2", "Внутренняя температура 2"),
    reg(0x008F, I, "temp_outside", Temperature, C, "Outside temperature", "Наружная температура"),
    reg(0x0090, I, "temp_inside_3", Temperature, C, "Inside temperature 3", "Внутренняя температура 3"),
    reg(0x0091, I, "temp_inside_4", Temperature, C, "Inside temperature 4", "Внутренняя температура 4"),
    reg(0x0092, I, "air_intake_3", Output, PCT, "Air inlet 3", "Выход управления воздухозаборником 3"),
    reg(0x0093, I, "air_intake_4", Output, PCT, "Air inlet 4", "Выход управления воздухозаборником 4"),
    reg(0x0094, I, "lighting_1", Output, PCT, "Lighting 1", "Выход управления освещением 1"),
    reg(0x0095, I, "lighting_2", Output, PCT, "Lighting 2", "Выход управления освещением 2"),
    reg(0x0096, I, "lighting_3", Output, PCT, "Lighting 3", "Выход управления освещением 3"),
    reg(0x0097, I, "lighting_4", Output, PCT, "Lighting 4", "Выход управления освещением 4"),
    reg(0x0098, I, "timer_1_output_1", Output, PCT, "Timer 1, output 1", "Таймер 1, выход 1"),
    reg(0x0099, I, "timer_1_output_2", Output, PCT, "Timer 1, output 2", "Таймер 1, выход 2"),
    reg(0x009A, I, "timer_1_output_3", Output, PCT, "Timer 1, output 3", "Таймер 1, выход 3"),
    reg(0x009B, I, "timer_1_output_4", Output, PCT, "Timer 1, output 4", "Таймер 1, выход 4"),
    reg(0x009C, I, "timer_2_output_1", Output, PCT, "Timer 2, output 1", "Таймер 2, выход 1"),
    reg(0x009D, I, "timer_2_output_2", Output, PCT, "Timer 2, output 2", "Таймер 2, выход 2"),
    reg(0x009E, I, "timer_2_output_3", Output, PCT, "Timer 2, output 3", "Таймер 2, выход 3"),
    reg(0x009F, I, "timer_2_output_4", Output, PCT, "Timer 2, output 4", "Таймер 2, выход 4"),
    reg(0x00A2, I, "digital_outputs_3", Outputs, NO, "Digital outputs (3)", "Состояние цифровых выходов (3)"),
    reg(0x00C0, I, "active_alarms_0", GroupWord, NO, "Active alarms, word 0", "Активные аварии, слово 0"),
    reg(0x00C1, I, "active_alarms_1", GroupWord, NO, "Active alarms, word 1", "Активные аварии, слово 1"),
    reg(0x00C2, I, "active_alarms_2", GroupWord, NO, "Active alarms, word 2", "Активные аварии, слово 2"),
    reg(0x00C3, I, "active_alarms_3", GroupWord, NO, "Active alarms, word 3", "Активные аварии, слово 3"),
    reg(0x00C4, I, "registered_alarms_0", GroupWord, NO, "Registered alarms, word 0", "Зарегистрированные аварии, слово 0"),
    reg(0x00C5, I, "registered_alarms_1", GroupWord, NO, "Registered alarms, word 1", "Зарегистрированные аварии, слово 1"),
    reg(0x00C6, I, "registered_alarms_2", GroupWord, NO, "Registered alarms, word 2", "Зарегистрированные аварии, слово 2"),
    reg(0x00C7, I, "registered_alarms_3", GroupWord, NO, "Registered alarms, word 3", "Зарегистрированные аварии, слово 3"),
    reg(0x00C8, I, "active_warnings_0", GroupWord, NO, "Active warnings, word 0", "Активные предупреждения, слово 0"),
    reg(0x00C9, I, "active_warnings_1", GroupWord, NO, "Active warnings, word 1", "Активные предупреждения, слово 1"),
    reg(0x00CA, I, "active_warnings_2", GroupWord, NO, "Active warnings, word 2", "Активные предупреждения, слово 2"),
    reg(0x00CB, I, "active_warnings_3", GroupWord, NO, "Active warnings, word 3", "Активные предупреждения, слово 3"),
    reg(0x00CC, I, "registered_warnings_0", GroupWord, NO, "Registered warnings, word 0", "Зарегистрированные предупреждения, слово 0"),
    reg(0x00CD, I, "registered_warnings_1", GroupWord, NO, "Registered warnings, word 1", "Зарегистрированные предупреждения, слово 1"),
    reg(0x00CE, I, "registered_warnings_2", GroupWord, NO, "Registered warnings, word 2", "Зарегистрированные предупреждения, слово 2"),
    reg(0x00CF, I, "registered_warnings_3", GroupWord, NO, "Registered warnings, word 3", "Зарегистрированные предупреждения, слово 3"),
    reg(0x00D0, I, "ventilation_target", Level, PCT, "Target ventilation level", "Целевой уровень вентиляции"),
    reg(0x00D1, I, "ventilation_level", Level, PCT, "Actual ventilation level", "Фактический уровень вентиляции"),
    reg(0x00D2, I, "ventilation_scheme", Scheme, NO, "Active ventilation scheme", "Активная схема вентиляции"),
    reg(0x00D3, I, "day_counter", DayCounter, Unit::Days, "Day counter", "Счётчик дней"),
    reg(0x00D4, I, "temp_target", Setpoint, C, "Target temperature", "Целевая температура"),
    reg(0x00D5, I, "temp_inside", ControlTemperature, C, "Control temperature", "Текущая температура, по которой работает вентиляция"),
    reg(0x00D6, I, "temp_vent_activation", Setpoint, C, "Ventilation activation temperature", "Температура начала роста вентиляции"),
    reg(0x0301, I, "software_version", Version, NO, "Software version", "Версия ПО"),
    reg(0x0020, H, "reset_alarms", Command, NO, "Reset registered alarms (write 1)", "Сброс зарегистрированных аварий/предупреждений"),
    reg(0x003F, H, "timezone", Minutes, Unit::Minutes, "Time zone offset", "Часовой пояс, в минутах"),
    reg(0x0100, H, "gnv_base_1_relay_channel", Channel(Relay), NO, "Relay of on/off fans 1, base", "Номер реле для ГНВ1 базовой схемы"),
    reg(0x0101, H, "gnv_base_2_relay_channel", Channel(Relay), NO, "Relay of on/off fans 2, base", "Номер реле для ГНВ2 базовой схемы"),
    reg(0x0102, H, "gnv_base_3_relay_channel", Channel(Relay), NO, "Relay of on/off fans 3, base", "Номер реле для ГНВ3 базовой схемы"),
    reg(0x0103, H, "gnv_base_4_relay_channel", Channel(Relay), NO, "Relay of on/off fans 4, base", "Номер реле для ГНВ4 базовой схемы"),
    reg(0x0104, H, "gnv_base_5_relay_channel", Channel(Relay), NO, "Relay of on/off fans 5, base", "Номер реле для ГНВ5 базовой схемы"),
    reg(0x0105, H, "gnv_base_6_relay_channel", Channel(Relay), NO, "Relay of on/off fans 6, base", "Номер реле для ГНВ6 базовой схемы"),
    reg(0x0106, H, "gnv_base_7_relay_channel", Channel(Relay), NO, "Relay of on/off fans 7, base", "Номер реле для ГНВ7 базовой схемы"),
    reg(0x0107, H, "gnv_base_8_relay_channel", Channel(Relay), NO, "Relay of on/off fans 8, base", "Номер реле для ГНВ8 базовой схемы"),
    reg(0x0108, H, "gnv_tunnel_1_relay_channel", Channel(Relay), NO, "Relay of on/off fans 1, tunnel", "Номер реле для ГНВ1 туннельной схемы"),
    reg(0x0109, H, "gnv_tunnel_2_relay_channel", Channel(Relay), NO, "Relay of on/off fans 2, tunnel", "Номер реле для ГНВ2 туннельной схемы"),
    reg(0x010A, H, "gnv_tunnel_3_relay_channel", Channel(Relay), NO, "Relay of on/off fans 3, tunnel", "Номер реле для ГНВ3 туннельной схемы"),
    reg(0x010B, H, "gnv_tunnel_4_relay_channel", Channel(Relay), NO, "Relay of on/off fans 4, tunnel", "Номер реле для ГНВ4 туннельной схемы"),
    reg(0x010C, H, "gnv_tunnel_5_relay_channel", Channel(Relay), NO, "Relay of on/off fans 5, tunnel", "Номер реле для ГНВ5 туннельной схемы"),
    reg(0x010D, H, "gnv_tunnel_6_relay_channel", Channel(Relay), NO, "Relay of on/off fans 6, tunnel", "Номер реле для ГНВ6 туннельной схемы"),
    reg(0x010E, H, "gnv_tunnel_7_relay_channel", Channel(Relay), NO, "Relay of on/off fans 7, tunnel", "Номер реле для ГНВ7 туннельной схемы"),
    reg(0x010F, H, "gnv_tunnel_8_relay_channel", Channel(Relay), NO, "Relay of on/off fans 8, tunnel", "Номер реле для ГНВ8 туннельной схемы"),
    reg(0x0110, H, "grv_base_1_relay_channel", Channel(Relay), NO, "Start/stop relay of variable fans 1, base", "Реле пуск/стоп ГРВ1 базовой схемы"),
    reg(0x0111, H, "grv_base_2_relay_channel", Channel(Relay), NO, "Start/stop relay of variable fans 2, base", "Реле пуск/стоп ГРВ2 базовой схемы"),
    reg(0x0112, H, "grv_tunnel_relay_channel", Channel(Relay), NO, "Start/stop relay of variable fans, tunnel", "Реле пуск/стоп ГРВ туннельной схемы"),
    reg(0x0113, H, "tunnel_mode_indicator_relay_channel", Channel(Relay), NO, "Tunnel-mode indicator relay", "Реле индикации туннельного режима"),
    reg(0x0114, H, "heater_1_relay_channel", Channel(Relay), NO, "Heater 1 relay", "Реле нагревателя 1"),
    reg(0x0115, H, "heater_2_relay_channel", Channel(Relay), NO, "Heater 2 relay", "Реле нагревателя 2"),
    reg(0x0116, H, "cooler_relay_channel", Channel(Relay), NO, "Cooler relay", "Реле охладителя"),
    reg(0x0117, H, "emergency_relay_channel", Channel(Relay), NO, "Alarm indicator relay", "Реле индикации аварии"),
    reg(0x0118, H, "humidity_input_channel", Channel(AI), NO, "Humidity sensor analog input", "Аналоговый вход датчика влажности"),
    reg(0x0119, H, "pressure_input_channel", Channel(AI), NO, "Pressure sensor analog input", "Аналоговый вход датчика отрицательного давления"),
    reg(0x011A, H, "grv_base_signal_channel", Channel(AO), NO, "Analog output, variable fans 1 and 2, base", "Аналоговый выход ГРВ1 и ГРВ2 базовой схемы"),
    reg(0x011B, H, "grv_tunnel_signal_channel", Channel(AO), NO, "Analog output, variable fans, tunnel", "Аналоговый выход ГРВ туннельной схемы"),
    reg(0x011C, H, "damper_signal_channel", Channel(AO), NO, "Analog output, damper", "Аналоговый выход демпфера"),
    reg(0x011D, H, "air_intake_1_signal_channel", Channel(AO), NO, "Analog output, air inlet 1", "Аналоговый выход воздухозаборника 1"),
    reg(0x011E, H, "air_intake_2_signal_channel", Channel(AO), NO, "Analog output, air inlet 2", "Аналоговый выход воздухозаборника 2"),
    reg(0x011F, H, "air_intake_tunnel_signal_channel", Channel(AO), NO, "Analog output, tunnel air inlet", "Аналоговый выход туннельного воздухозаборника"),
    reg(0x0120, H, "air_intake_3_signal_channel", Channel(AO), NO, "Analog output, air inlet 3", "Аналоговый выход воздухозаборника 3"),
    reg(0x0121, H, "air_intake_4_signal_channel", Channel(AO), NO, "Analog output, air inlet 4", "Аналоговый выход воздухозаборника 4"),
    reg(0x0122, H, "heater_3_relay_channel", Channel(Relay), NO, "Heater 3 relay", "Реле нагревателя 3"),
    reg(0x0123, H, "heater_4_relay_channel", Channel(Relay), NO, "Heater 4 relay", "Реле нагревателя 4"),
    reg(0x0124, H, "lighting_1_signal_channel", Channel(AO), NO, "Analog output, lighting 1", "Аналоговый выход освещения 1"),
    reg(0x0125, H, "lighting_2_signal_channel", Channel(AO), NO, "Analog output, lighting 2", "Аналоговый выход освещения 2"),
    reg(0x0126, H, "lighting_3_signal_channel", Channel(AO), NO, "Analog output, lighting 3", "Аналоговый выход освещения 3"),
    reg(0x0127, H, "lighting_4_signal_channel", Channel(AO), NO, "Analog output, lighting 4", "Аналоговый выход освещения 4"),
    reg(0x0128, H, "timer1_1_signal_channel", Channel(AO), NO, "Analog output, timer 1 output 1", "Аналоговый выход 1 таймера 1"),
    reg(0x0129, H, "timer1_2_signal_channel", Channel(AO), NO, "Analog output, timer 1 output 2", "Аналоговый выход 2 таймера 1"),
    reg(0x012A, H, "timer1_3_signal_channel", Channel(AO), NO, "Analog output, timer 1 output 3", "Аналоговый выход 3 таймера 1"),
    reg(0x012B, H, "timer1_4_signal_channel", Channel(AO), NO, "Analog output, timer 1 output 4", "Аналоговый выход 4 таймера 1"),
    reg(0x012C, H, "timer2_1_signal_channel", Channel(AO), NO, "Analog output, timer 2 output 1", "Аналоговый выход 1 таймера 2"),
    reg(0x012D, H, "timer2_2_signal_channel", Channel(AO), NO, "Analog output, timer 2 output 2", "Аналоговый выход 2 таймера 2"),
    reg(0x012E, H, "timer2_3_signal_channel", Channel(AO), NO, "Analog output, timer 2 output 3", "Аналоговый выход 3 таймера 2"),
    reg(0x012F, H, "timer2_4_signal_channel", Channel(AO), NO, "Analog output, timer 2 output 4", "Аналоговый выход 4 таймера 2"),
    reg(0x0130, H, "lighting_1_relay_channel", Channel(Relay), NO, "Lighting 1 relay", "Реле освещения 1"),
    reg(0x0131, H, "lighting_2_relay_channel", Channel(Relay), NO, "Lighting 2 relay", "Реле освещения 2"),
    reg(0x0132, H, "lighting_3_relay_channel", Channel(Relay), NO, "Lighting 3 relay", "Реле освещения 3"),
    reg(0x0133, H, "lighting_4_relay_channel", Channel(Relay), NO, "Lighting 4 relay", "Реле освещения 4"),
    reg(0x0134, H, "timer1_1_relay_channel", Channel(Relay), NO, "Timer 1 output 1 relay", "Реле выхода 1 таймера 1"),
    reg(0x0135, H, "timer1_2_relay_channel", Channel(Relay), NO, "Timer 1 output 2 relay", "Реле выхода 2 таймера 1"),
    reg(0x0136, H, "timer1_3_relay_channel", Channel(Relay), NO, "Timer 1 output 3 relay", "Реле выхода 3 таймера 1"),
    reg(0x0137, H, "timer1_4_relay_channel", Channel(Relay), NO, "Timer 1 output 4 relay", "Реле выхода 4 таймера 1"),
    reg(0x0138, H, "timer2_1_relay_channel", Channel(Relay), NO, "Timer 2 output 1 relay", "Реле выхода 1 таймера 2"),
    reg(0x0139, H, "timer2_2_relay_channel", Channel(Relay), NO, "Timer 2 output 2 relay", "Реле выхода 2 таймера 2"),
    reg(0x013A, H, "timer2_3_relay_channel", Channel(Relay), NO, "Timer 2 output 3 relay", "Реле выхода 3 таймера 2"),
    reg(0x013B, H, "timer2_4_relay_channel", Channel(Relay), NO, "Timer 2 output 4 relay", "Реле выхода 4 таймера 2"),
    reg(0x013C, H, "co2_input_channel", Channel(AI), NO, "CO2 sensor analog input", "Аналоговый вход датчика CO2"),
    reg(0x013D, H, "nh3_input_channel", Channel(AI), NO, "NH3 sensor analog input", "Аналоговый вход датчика NH3"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_is_sorted_unique_and_named() {
        assert!(
            REGISTERS
                .windows(2)
                .all(|w| (w[0].table, w[0].addr) < (w[1].table, w[1].addr))
        );
        let mut keys: alloc::vec::Vec<&str> = REGISTERS.iter().map(|r| r.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), REGISTERS.len());
        assert!(
            REGISTERS
                .iter()
                .all(|r| !r.en.is_empty() && !r.ru.is_empty())
        );
        // Input: 0x81–0x9F (31), 0xA2, 0xC0–0xD6 (23), 0x301. Holding: 0x20, 0x3F, 0x100–0x13D (62).
        assert_eq!(
            REGISTERS.iter().filter(|r| r.table == Table::Input).count(),
            56
        );
        assert_eq!(
            REGISTERS
                .iter()
                .filter(|r| r.table == Table::Holding)
                .count(),
            64
        );
    }

    #[test]
    fn latch_anchors_follow_the_sheet() {
        assert_eq!(
            latch_anchor(RegisterAddr(0x0082)),
            Some(RegisterAddr(0x0081))
        );
        assert_eq!(
            latch_anchor(RegisterAddr(0x00A2)),
            Some(RegisterAddr(0x0081))
        );
        assert_eq!(latch_anchor(RegisterAddr(0x0081)), None);
        assert_eq!(
            latch_anchor(RegisterAddr(0x00C3)),
            Some(RegisterAddr(0x00C0))
        );
        assert_eq!(
            latch_anchor(RegisterAddr(0x00CF)),
            Some(RegisterAddr(0x00CC))
        );
        assert_eq!(latch_anchor(RegisterAddr(0x00C4)), None);
        assert_eq!(latch_anchor(RegisterAddr(0x0083)), None);
        assert_eq!(Table::Input.read_function(), 4);
    }
}
