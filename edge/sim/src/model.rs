//! One simulated KUB-1063 unit, sans-IO: plant physics advanced by [`Unit::tick`], Modbus requests
//! answered by [`Unit::handle`]. No clock, no sockets; randomness comes from a seeded generator.
//!
//! Behaviour modelled after the fact sheet (§5): drifting climate, ventilation following the inside
//! temperature against the target, heaters and fans consistent with the outputs, latched reads of
//! 0x0082/0x00A2 and of each 4-word group, registered alarms sticky until FC06 0x0020 ← 1, and the
//! alarm relay (0x0082 bit 7) following the registered alarms.

use std::collections::BTreeMap;

use constella_kub1063::{
    Group, Kind, LATCH_ANCHORS, REGISTERS, RESET_ALARMS, Table, fixtures::Snapshot,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

use constella_modbus::pdu::{Exception, Reply, Request};

/// How the unit answers reads it has no register for, and FC03 reads of input addresses (neither is
/// documented for the real device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undocumented {
    /// Exception 02 (illegal data address).
    Exception,
    /// Zeros for gaps; the input value for FC03 on an input address.
    Answer,
    /// No reply at all.
    Silent,
}

/// A sensor special code a fault can force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SensorCode {
    Pending,
    Break,
    Error,
    Disabled,
}

/// Faults injected into one unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    /// Never reply.
    pub(crate) silent: bool,
    /// Reply with a corrupted CRC (RTU framing only).
    pub(crate) corrupt_crc: bool,
    /// Answer every request with this exception code.
    pub(crate) exception: Option<u8>,
    /// Delay every reply by this many milliseconds.
    pub(crate) slow_ms: u64,
    /// Sensor fields forced to a special code, by register key.
    pub(crate) sensors: BTreeMap<&'static str, SensorCode>,
    /// Alarm bits forced active.
    pub(crate) alarms: u64,
}

/// The plant state behind the registers, in engineering units.
#[derive(Clone, Debug)]
struct Plant {
    inside: f64,
    outside: f64,
    humidity: f64,
    co2: f64,
    target: f64,
    activation: f64,
    level: f64,
    day: i16,
    seconds_into_day: f64,
    heater: bool,
}

/// One simulated unit.
pub(crate) struct Unit {
    plant: Plant,
    rng: StdRng,
    /// Live input words, as the controller computes them.
    live: BTreeMap<u16, u16>,
    /// Words served for latched addresses (refreshed only by a read of their anchor).
    latched: BTreeMap<u16, u16>,
    /// A captured snapshot's words, served exactly until the plant first moves, a reset, or a
    /// fault is applied.
    pinned: BTreeMap<u16, u16>,
    holding: BTreeMap<u16, u16>,
    registered_alarms: u64,
    registered_warnings: u64,
    pub(crate) faults: Faults,
    undocumented: Undocumented,
    fc03_on_input: Undocumented,
    day_length_s: f64,
}

/// Static configuration of a unit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UnitConfig {
    pub(crate) seed: u64,
    pub(crate) undocumented: Undocumented,
    pub(crate) fc03_on_input: Undocumented,
    /// Seconds of simulated time per day-counter step (86 400 on a real farm).
    pub(crate) day_length_s: f64,
}

impl Unit {
    /// A unit in a plausible mid-flock state, or the state of a captured snapshot.
    pub(crate) fn new(config: UnitConfig, start: Option<&Snapshot>) -> Unit {
        let mut unit = Unit {
            plant: Plant {
                inside: 25.5,
                outside: 12.0,
                humidity: 52.0,
                co2: 2400.0,
                target: 24.8,
                activation: 24.8,
                level: 30.0,
                day: 36,
                seconds_into_day: 0.0,
                heater: false,
            },
            rng: StdRng::seed_from_u64(config.seed),
            live: BTreeMap::new(),
            latched: BTreeMap::new(),
            pinned: BTreeMap::new(),
            holding: default_holding(),
            registered_alarms: 0,
            registered_warnings: 0,
            faults: Faults::default(),
            undocumented: config.undocumented,
            fc03_on_input: config.fc03_on_input,
            day_length_s: config.day_length_s,
        };
        unit.recompute();
        if let Some(snapshot) = start {
            unit.load_snapshot(snapshot);
        }
        for &(anchor, _) in LATCH_ANCHORS {
            unit.refresh_latch(anchor.0);
        }
        unit
    }

    /// Stops serving a captured snapshot's words exactly: called when faults change, so the unit
    /// carries on from the snapshot's plant state with the faults visible.
    pub(crate) fn unpin(&mut self) {
        self.pinned.clear();
        self.recompute();
    }

    /// Advances the plant by `dt_s` seconds of simulated time.
    pub(crate) fn tick(&mut self, dt_s: f64) {
        if dt_s > 0.0 {
            self.pinned.clear();
        }
        let p = &mut self.plant;
        let noise =
            |rng: &mut StdRng, scale: f64| (rng.random::<f64>() - 0.5) * scale * dt_s.sqrt();
        // Birds warm the house toward ~28 °C, ventilation pulls it toward outside, the heater adds.
        let birds = 0.004 * (28.0 - p.inside);
        let vent = 0.006 * (p.level / 100.0) * (p.inside - p.outside);
        let heat = if p.heater { 0.01 } else { 0.0 };
        p.inside = (p.inside + dt_s * (birds - vent + heat) + noise(&mut self.rng, 0.04))
            .clamp(-20.0, 45.0);
        p.outside = (p.outside + 0.001 * dt_s * (12.0 - p.outside) + noise(&mut self.rng, 0.02))
            .clamp(-35.0, 40.0);
        // Ventilation target rises 20 %/°C above the activation temperature; the level slews 5 %/s.
        let target_level = (10.0 + 20.0 * (p.inside - p.activation)).clamp(10.0, 100.0);
        let step = 5.0 * dt_s;
        p.level += (target_level - p.level).clamp(-step, step);
        p.humidity = (p.humidity
            + 0.01 * dt_s * (60.0 - 15.0 * p.level / 100.0 - p.humidity)
            + noise(&mut self.rng, 0.2))
        .clamp(20.0, 95.0);
        p.co2 = (p.co2
            + 0.01 * dt_s * (3200.0 - 2400.0 * p.level / 100.0 - p.co2)
            + noise(&mut self.rng, 20.0))
        .clamp(400.0, 9000.0);
        if p.inside < p.target - 1.0 {
            p.heater = true;
        } else if p.inside > p.target - 0.3 {
            p.heater = false;
        }
        p.seconds_into_day += dt_s;
        while p.seconds_into_day >= self.day_length_s {
            p.seconds_into_day -= self.day_length_s;
            p.day = p.day.saturating_add(1);
        }
        self.recompute();
    }

    /// Answers one request PDU addressed to this unit. `None` means no reply (a silent unit, or an
    /// FC03 read of input addresses configured to be ignored).
    pub(crate) fn handle(&mut self, request: &Request) -> Option<Reply> {
        if self.faults.silent {
            return None;
        }
        if let Some(code) = self.faults.exception {
            return Some(Reply::Exception(request.function(), Exception(code)));
        }
        match *request {
            Request::ReadInput { start, count } => Some(self.read(Table::Input, start, count)),
            Request::ReadHolding { start, count } => self.read_holding(start, count),
            Request::WriteSingle { addr, value } => Some(self.write(addr, value)),
            Request::Unsupported { function } => {
                Some(Reply::Exception(function, Exception::ILLEGAL_FUNCTION))
            }
        }
    }

    fn read_holding(&mut self, start: u16, count: u16) -> Option<Reply> {
        let on_input = (start..start.saturating_add(count)).any(|a| self.live.contains_key(&a));
        if !on_input {
            return Some(self.read(Table::Holding, start, count));
        }
        match self.fc03_on_input {
            Undocumented::Exception => {
                Some(Reply::Exception(0x03, Exception::ILLEGAL_DATA_ADDRESS))
            }
            Undocumented::Silent => None,
            Undocumented::Answer => match self.read(Table::Input, start, count) {
                Reply::Registers(_, words) => Some(Reply::Registers(0x03, words)),
                other => Some(other),
            },
        }
    }

    fn read(&mut self, table: Table, start: u16, count: u16) -> Reply {
        let function = table.read_function();
        if count == 0 || count > 125 || u32::from(start) + u32::from(count) > 0x1_0000 {
            return Reply::Exception(function, Exception::ILLEGAL_DATA_VALUE);
        }
        let end = start + (count - 1);
        if table == Table::Input {
            for &(anchor, _) in LATCH_ANCHORS {
                if (start..=end).contains(&anchor.0) {
                    self.refresh_latch(anchor.0);
                }
            }
        }
        let mut words = Vec::with_capacity(usize::from(count));
        for addr in start..=end {
            let word = match table {
                Table::Input => self.latched.get(&addr).or_else(|| self.live.get(&addr)),
                Table::Holding => self.holding.get(&addr),
            };
            match (word, self.undocumented) {
                (Some(&w), _) => words.push(w),
                (None, Undocumented::Answer) => words.push(0),
                (None, _) => return Reply::Exception(function, Exception::ILLEGAL_DATA_ADDRESS),
            }
        }
        Reply::Registers(function, words)
    }

    fn write(&mut self, addr: u16, value: u16) -> Reply {
        match addr {
            a if a == RESET_ALARMS.0 => {
                if value == 1 {
                    self.pinned.clear();
                    // Registered = active now + active since the reset: still-active alarms re-latch.
                    self.registered_alarms = self.active_alarms();
                    self.registered_warnings = self.active_warnings();
                    self.recompute();
                }
                Reply::Echo(addr, value)
            }
            0x003F => {
                self.holding.insert(addr, value);
                Reply::Echo(addr, value)
            }
            _ => Reply::Exception(0x06, Exception::ILLEGAL_DATA_ADDRESS),
        }
    }

    fn refresh_latch(&mut self, anchor: u16) {
        if let Some((_, followers)) = LATCH_ANCHORS.iter().find(|(a, _)| a.0 == anchor) {
            for follower in followers.iter() {
                if let Some(&word) = self.live.get(&follower.0) {
                    self.latched.insert(follower.0, word);
                }
            }
        }
    }

    fn load_snapshot(&mut self, snapshot: &Snapshot) {
        let word = |addr: u16| {
            snapshot
                .words
                .iter()
                .find(|(a, _)| *a == addr)
                .map(|&(_, w)| w)
        };
        let tenths = |addr: u16| {
            word(addr)
                .filter(|w| *w < 0x7FF0)
                .map(|w| f64::from(w as i16) / 10.0)
        };
        let p = &mut self.plant;
        if let Some(t) = tenths(0x00D5) {
            p.inside = t;
        }
        if let Some(t) = tenths(0x00D4) {
            p.target = t;
            p.activation = t;
        }
        if let Some(level) = word(0x00D1) {
            p.level = f64::from(level) / 10.0;
        }
        if let Some(h) = word(0x0084).filter(|w| *w < 0xFFF0) {
            p.humidity = f64::from(h) / 10.0;
        }
        if let Some(c) = word(0x0085).filter(|w| *w < 0xFFF0) {
            p.co2 = f64::from(c);
        }
        if let Some(day) = word(0x00D3).filter(|w| *w != 0x7FFF) {
            p.day = day as i16;
        }
        p.heater = word(0x0082).is_some_and(|w| w & (1 << 4) != 0);
        for (key, addr) in [
            ("pressure", 0x0083),
            ("co2", 0x0085),
            ("humidity", 0x0084),
            ("nh3", 0x0086),
        ] {
            let code = match word(addr) {
                Some(0xFFFF) => Some(SensorCode::Pending),
                Some(0xFFFE) => Some(SensorCode::Break),
                Some(0xFFFD) => Some(SensorCode::Error),
                Some(0xFFFC) => Some(SensorCode::Disabled),
                _ => None,
            };
            if let Some(code) = code {
                self.faults.sensors.insert(key, code);
            }
        }
        let group = |base: u16| -> u64 {
            let words = [0, 1, 2, 3].map(|i| word(base + i).unwrap_or(0));
            Group::mask(words)
        };
        self.registered_alarms = group(0x00C4);
        self.registered_warnings = group(0x00CC);
        self.pinned = snapshot.words.iter().copied().collect();
        self.recompute();
    }

    fn active_alarms(&self) -> u64 {
        let p = &self.plant;
        let mut mask = self.faults.alarms;
        let set = |mask: &mut u64, bit: u8, on: bool| {
            if on {
                *mask |= 1 << bit;
            }
        };
        set(&mut mask, 57, p.inside > p.target + 1.5);
        set(&mut mask, 35, p.inside > p.target + 10.0);
        set(&mut mask, 36, p.inside < p.target - 5.0);
        for (key, bit) in SENSOR_BREAK_BITS {
            set(
                &mut mask,
                *bit,
                self.faults.sensors.get(key) == Some(&SensorCode::Break),
            );
        }
        mask
    }

    fn active_warnings(&self) -> u64 {
        let any_temperature_break = TEMPERATURE_KEYS
            .iter()
            .any(|key| self.faults.sensors.get(key) == Some(&SensorCode::Break));
        if any_temperature_break { 1 << 59 } else { 0 }
    }

    /// Derives every live input word from the plant, the faults and the registered masks.
    fn recompute(&mut self) {
        let active_alarms = self.active_alarms();
        let active_warnings = self.active_warnings();
        self.registered_alarms |= active_alarms;
        self.registered_warnings |= active_warnings;
        let p = self.plant.clone();
        let tenths = |v: f64| (v * 10.0).round() as i16 as u16;
        let offsets = [0.0, 0.3, -0.2, 0.4];
        let mut live = BTreeMap::new();
        for register in REGISTERS.iter().filter(|r| r.table == Table::Input) {
            let word = match register.key {
                "pressure" => tenths(5.0 + 20.0 * p.level / 100.0),
                "humidity" => tenths(p.humidity),
                "co2" => p.co2.round() as u16,
                "nh3" => 0xFFFC,
                "grv_base" => tenths(p.level),
                "temp_inside_1" => tenths(p.inside + offsets[0]),
                "temp_inside_2" => tenths(p.inside + offsets[1]),
                "temp_outside" => tenths(p.outside),
                "temp_inside_3" => tenths(p.inside + offsets[2]),
                "temp_inside_4" => tenths(p.inside + offsets[3]),
                "lighting_1" => 1000,
                "digital_outputs_1" => {
                    // One more on/off fan group per 15 % above 40 %.
                    (0..4u16)
                        .filter(|k| p.level > 40.0 + 15.0 * f64::from(*k))
                        .fold(0, |w, k| w | (1 << k))
                }
                "digital_outputs_2" => {
                    let mut w = 0u16;
                    if p.level > 0.0 {
                        w |= 1;
                    }
                    if p.heater {
                        w |= 1 << 4;
                    }
                    if self.registered_alarms != 0 {
                        w |= 1 << 7;
                    }
                    w | (1 << 10)
                }
                "digital_outputs_3" => 0,
                "ventilation_target" => {
                    tenths((10.0 + 20.0 * (p.inside - p.activation)).clamp(10.0, 100.0))
                }
                "ventilation_level" => tenths(p.level),
                "ventilation_scheme" => 0,
                "day_counter" => p.day as u16,
                "temp_target" => tenths(p.target),
                "temp_vent_activation" => tenths(p.activation),
                "software_version" => 414,
                _ if register.kind == Kind::GroupWord => 0,
                _ if register.kind == Kind::Output => 0xFFFC,
                _ => 0,
            };
            live.insert(register.addr.0, word);
        }
        for (key, code) in &self.faults.sensors {
            let Some(register) = REGISTERS
                .iter()
                .find(|r| r.key == *key && r.table == Table::Input)
            else {
                continue;
            };
            let base: u16 = if register.kind == Kind::Temperature {
                0x7FFF
            } else {
                0xFFFF
            };
            let word = match code {
                SensorCode::Pending => base,
                SensorCode::Break => base - 1,
                SensorCode::Error => base - 2,
                SensorCode::Disabled => base - 3,
            };
            live.insert(register.addr.0, word);
        }
        // The control temperature is the mean of inside sensors 1 and 2 that read; none → error.
        let readable: Vec<f64> = [0x008D, 0x008E]
            .iter()
            .filter_map(|a| {
                live.get(a)
                    .copied()
                    .filter(|w| !(0x7FFC..=0x7FFF).contains(w))
            })
            .map(|w| f64::from(w as i16) / 10.0)
            .collect();
        let control = if readable.is_empty() {
            0x7FFE
        } else {
            tenths(readable.iter().sum::<f64>() / readable.len() as f64)
        };
        live.insert(0x00D5, control);
        for (group, mask) in [
            (Group::ActiveAlarms, active_alarms),
            (Group::RegisteredAlarms, self.registered_alarms),
            (Group::ActiveWarnings, active_warnings),
            (Group::RegisteredWarnings, self.registered_warnings),
        ] {
            for (i, word) in Group::words(mask).into_iter().enumerate() {
                live.insert(group.base().0 + i as u16, word);
            }
        }
        live.extend(self.pinned.iter().map(|(&a, &w)| (a, w)));
        self.live = live;
    }
}

/// Sensor break → alarm bit, as observed (41, 24) or documented (the rest).
const SENSOR_BREAK_BITS: &[(&str, u8)] = &[
    ("pressure", 41),
    ("co2", 24),
    ("humidity", 40),
    ("temp_inside_1", 42),
    ("temp_inside_2", 43),
    ("temp_outside", 44),
    ("temp_inside_3", 60),
    ("temp_inside_4", 61),
];

const TEMPERATURE_KEYS: &[&str] = &[
    "temp_inside_1",
    "temp_inside_2",
    "temp_outside",
    "temp_inside_3",
    "temp_inside_4",
];

/// Channel assignments of a typical poultry house: four on/off fan groups on K1–K4, variable fans
/// on K5 and AO1, heater 1 on K6, the alarm relay on K8; humidity, pressure and CO2 on AI1–AI3.
fn default_holding() -> BTreeMap<u16, u16> {
    let mut holding: BTreeMap<u16, u16> = REGISTERS
        .iter()
        .filter(|r| r.table == Table::Holding)
        .map(|r| (r.addr.0, 0xFFFF))
        .collect();
    for (addr, value) in [
        (0x0020, 0),
        (0x003F, 180),
        (0x0100, 0),
        (0x0101, 1),
        (0x0102, 2),
        (0x0103, 3),
        (0x0110, 4),
        (0x0114, 5),
        (0x0117, 7),
        (0x0118, 0),
        (0x0119, 1),
        (0x011A, 0),
        (0x0124, 1),
        (0x0130, 8),
        (0x013C, 2),
    ] {
        holding.insert(addr, value);
    }
    holding
}

#[cfg(test)]
mod tests {
    use super::*;
    use constella_kub1063::fixtures::snapshot;

    fn unit(start: Option<char>) -> Unit {
        let config = UnitConfig {
            seed: 7,
            undocumented: Undocumented::Exception,
            fc03_on_input: Undocumented::Exception,
            day_length_s: 86_400.0,
        };
        Unit::new(config, start.and_then(snapshot))
    }

    fn read(unit: &mut Unit, start: u16, count: u16) -> Vec<u16> {
        match unit.handle(&Request::ReadInput { start, count }) {
            Some(Reply::Registers(4, words)) => words,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_snapshot_is_served_exactly_until_the_plant_moves() {
        let mut u = unit(Some('A'));
        let words = snapshot('A').expect("A").words;
        for &(addr, raw) in words {
            assert_eq!(read(&mut u, addr, 1), [raw], "word {addr:#06X}");
        }
        u.tick(1.0);
        assert_ne!(
            read(&mut u, 0x0083, 1),
            [257],
            "pressure follows the plant once it runs"
        );
    }

    #[test]
    fn latched_words_refresh_only_through_their_anchor() {
        let mut u = unit(None);
        let before = read(&mut u, 0x00C4, 4);
        u.faults.sensors.insert("pressure", SensorCode::Break);
        u.tick(0.0);
        assert_eq!(
            read(&mut u, 0x00C5, 3),
            before[1..],
            "a read past the first word serves the old latch"
        );
        assert_eq!(
            read(&mut u, 0x00C4, 4)[2],
            0x0200,
            "bit 41 after a read from 0x00C4"
        );
        // 0x0082 bit 7 (alarm relay) follows the registered mask, latched by 0x0081.
        assert_eq!(read(&mut u, 0x0082, 1)[0] & 0x80, 0);
        assert_eq!(read(&mut u, 0x0081, 2)[1] & 0x80, 0x80);
    }

    #[test]
    fn registered_alarms_stick_until_reset() {
        let mut u = unit(None);
        u.faults.sensors.insert("co2", SensorCode::Break);
        u.tick(0.0);
        u.faults.sensors.clear();
        u.tick(0.0);
        assert_eq!(
            read(&mut u, 0x00C0, 8),
            [0, 0, 0, 0, 0, 0x0100, 0, 0],
            "active clear, registered bit 24"
        );
        assert_eq!(
            u.handle(&Request::WriteSingle {
                addr: 0x0020,
                value: 1
            }),
            Some(Reply::Echo(0x0020, 1))
        );
        assert_eq!(read(&mut u, 0x00C4, 4), [0, 0, 0, 0]);
        assert_eq!(read(&mut u, 0x0081, 2)[1] & 0x80, 0, "alarm relay released");
    }

    #[test]
    fn undocumented_reads_and_writes_are_refused() {
        let mut u = unit(None);
        let refused = |r: Option<Reply>| {
            matches!(
                r,
                Some(Reply::Exception(_, Exception::ILLEGAL_DATA_ADDRESS))
            )
        };
        assert!(refused(u.handle(&Request::ReadInput {
            start: 0x00A0,
            count: 1
        })));
        assert!(
            refused(u.handle(&Request::ReadHolding {
                start: 0x0083,
                count: 1
            })),
            "FC03 on input"
        );
        assert!(refused(u.handle(&Request::WriteSingle {
            addr: 0x0100,
            value: 3
        })));
        assert!(matches!(
            u.handle(&Request::Unsupported { function: 0x10 }),
            Some(Reply::Exception(0x10, Exception::ILLEGAL_FUNCTION))
        ));
        u.faults.silent = true;
        assert_eq!(
            u.handle(&Request::ReadInput {
                start: 0x0081,
                count: 1
            }),
            None
        );
    }

    #[test]
    fn ventilation_and_heating_follow_temperature() {
        let mut u = unit(None);
        u.plant.inside = 30.0;
        u.plant.outside = 30.0;
        for _ in 0..60 {
            u.tick(1.0);
        }
        assert!(
            read(&mut u, 0x00D1, 1)[0] >= 900,
            "hot house: ventilation near full"
        );
        assert_ne!(
            read(&mut u, 0x0081, 1)[0] & 0x000F,
            0,
            "on/off fan groups running"
        );
        u.plant.inside = 20.0;
        u.plant.outside = 0.0;
        for _ in 0..60 {
            u.tick(1.0);
        }
        assert_eq!(
            read(&mut u, 0x0081, 2)[1] & 0x10,
            0x10,
            "cold house: heater 1 on"
        );
        assert_eq!(read(&mut u, 0x00D1, 1)[0], 100, "minimum ventilation");
    }
}
