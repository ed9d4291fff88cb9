//! Raw-register snapshots reconstructed from the history captured on a real KUB-1063 (firmware
//! 4.14, 2025-08-29 … 2025-09-03; fact sheet §4.1). They are test vectors for the decoder and
//! starting states for the simulator.
//!
//! Snapshot G's pressure, CO2 and NH3 words are inferred (the row stored NULL; its break bits show
//! the sensors were lost). Snapshot H is a partial row.

use super::image::Image;
use super::map::{RegisterAddr, Table};

/// One captured state of a unit: input-register words only.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    /// Letter used in the fact sheet (A–H).
    pub id: char,
    /// When the row was captured (unit local time).
    pub captured: &'static str,
    /// What the row shows.
    pub label: &'static str,
    /// (address, raw word) pairs of input registers.
    pub words: &'static [(u16, u16)],
}

impl Snapshot {
    /// The snapshot as a register image.
    pub fn image(&self) -> Image {
        let mut image = Image::default();
        for &(addr, raw) in self.words {
            image.set(Table::Input, RegisterAddr(addr), raw);
        }
        image
    }
}

/// Looks a snapshot up by its letter (case-insensitive).
pub fn snapshot(id: char) -> Option<&'static Snapshot> {
    SNAPSHOTS.iter().find(|s| s.id.eq_ignore_ascii_case(&id))
}

macro_rules! row {
    ($do1:expr, $do2:expr, $do3:expr, $p:expr, $h:expr, $co2:expr, $nh3:expr,
     [$a0:expr, $a1:expr, $a2:expr, $a3:expr], [$r0:expr, $r1:expr, $r2:expr, $r3:expr],
     $d0:expr, $d1:expr, $d2:expr, $d3:expr, $d4:expr, $d5:expr, $ver:expr) => {
        &[
            (0x0081, $do1),
            (0x0082, $do2),
            (0x00A2, $do3),
            (0x0083, $p),
            (0x0084, $h),
            (0x0085, $co2),
            (0x0086, $nh3),
            (0x00C0, $a0),
            (0x00C1, $a1),
            (0x00C2, $a2),
            (0x00C3, $a3),
            (0x00C4, $r0),
            (0x00C5, $r1),
            (0x00C6, $r2),
            (0x00C7, $r3),
            (0x00D0, $d0),
            (0x00D1, $d1),
            (0x00D2, $d2),
            (0x00D3, $d3),
            (0x00D4, $d4),
            (0x00D5, $d5),
            (0x0301, $ver),
        ]
    };
}

/// The captured snapshots, in the fact sheet's order.
#[rustfmt::skip]
pub static SNAPSHOTS: &[Snapshot] = &[
    Snapshot { id: 'A', captured: "2025-09-03 15:31:12", label: "latest row: CO2 break latched, GRV1 running, alarm relay on",
        words: row!(0x0001, 0x0081, 0, 257, 481, 2600, 0xFFFC, [0, 0, 0, 0], [0, 0x0100, 0, 0], 289, 289, 0, 41, 248, 255, 414) },
    Snapshot { id: 'B', captured: "2025-09-02 06:29:32", label: "pressure sensor break",
        words: row!(0x0000, 0x0091, 0, 0xFFFE, 524, 1761, 0xFFFC, [0, 0, 0x0200, 0], [0, 0, 0x0200, 0], 158, 158, 0, 40, 248, 240, 414) },
    Snapshot { id: 'C', captured: "2025-09-02 07:05:05", label: "CO2 sensor break",
        words: row!(0x0000, 0x0091, 0, 177, 523, 0xFFFE, 0xFFFC, [0, 0x0100, 0, 0], [0, 0x0100, 0, 0], 150, 150, 0, 40, 248, 244, 414) },
    Snapshot { id: 'D', captured: "2025-09-02 07:46:58", label: "hot, full ventilation, high temperature latched",
        words: row!(0x000F, 0x0080, 0, 177, 521, 2845, 0xFFFC, [0, 0, 0, 0], [0, 0, 0, 0x0200], 912, 1000, 0, 40, 248, 302, 414) },
    Snapshot { id: 'E', captured: "2025-09-02 07:49:41", label: "right after a reset",
        words: row!(0x0003, 0x0001, 0, 177, 520, 2848, 0xFFFC, [0, 0, 0, 0], [0, 0, 0, 0], 477, 477, 0, 40, 248, 260, 414) },
    Snapshot { id: 'F', captured: "2025-09-02 06:11:57", label: "heater 1 on, CO2 4430 ppm",
        words: row!(0x0000, 0x0091, 0, 184, 525, 4430, 0xFFFC, [0, 0, 0, 0], [0, 0x0100, 0, 0], 165, 165, 0, 40, 248, 239, 414) },
    Snapshot { id: 'G', captured: "2025-09-01 15:34:01", label: "pressure and CO2 lost",
        words: row!(0x0001, 0x0081, 0, 0xFFFE, 513, 0xFFFE, 0xFFFC, [0, 0x0100, 0x0200, 0], [0, 0x0100, 0x0200, 0], 245, 245, 0, 39, 248, 252, 414) },
    Snapshot { id: 'H', captured: "2025-09-01 06:14:13", label: "partial row: the only tunnel-scheme reading",
        words: &[(0x00D0, 0), (0x00D1, 0), (0x00D2, 1), (0x00D3, 39), (0x00D4, 248), (0x00D5, 253), (0x0301, 414)] },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Flag, Group, Status, flags_of};
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    /// Decodes snapshot `id` and renders `key=value` (or `key=status`) for the given keys.
    #[track_caller]
    fn check(id: char, keys: &[&str], expect: &str) {
        let decoded = snapshot(id).expect("snapshot").image().decode();
        let mut out = Vec::new();
        for key in keys {
            let field = decoded
                .fields
                .iter()
                .find(|f| f.register.key == *key)
                .expect("field present");
            let shown = match field.reading.value {
                Some(v) if field.reading.status == Status::Ok => v.to_string(),
                _ => String::from(field.reading.status.as_str()),
            };
            out.push(alloc::format!("{key}={shown}"));
        }
        assert_eq!(out.join(" "), expect);
    }

    fn bits(id: char, group: Group) -> Vec<u8> {
        let mask = snapshot(id)
            .expect("snapshot")
            .image()
            .group_mask(group)
            .expect("group read");
        flags_of(mask).map(Flag::bit).collect()
    }

    fn outputs(id: char) -> Vec<&'static str> {
        let decoded = snapshot(id).expect("snapshot").image().decode();
        decoded.outputs_on.iter().map(|o| o.key).collect()
    }

    const MAIN: &[&str] = &[
        "pressure",
        "humidity",
        "co2",
        "nh3",
        "ventilation_target",
        "ventilation_level",
        "ventilation_scheme",
        "day_counter",
        "temp_target",
        "temp_inside",
        "software_version",
    ];

    #[test]
    fn snapshot_a_latest() {
        check(
            'A',
            MAIN,
            "pressure=25.7 humidity=48.1 co2=2600 nh3=disabled ventilation_target=28.9 \
            ventilation_level=28.9 ventilation_scheme=base day_counter=41 temp_target=24.8 temp_inside=25.5 \
            software_version=4.14",
        );
        assert_eq!(bits('A', Group::ActiveAlarms), [0u8; 0]);
        assert_eq!(bits('A', Group::RegisteredAlarms), [24]);
        assert_eq!(
            outputs('A'),
            ["gnv_base_1", "grv_base_1_run", "alarm_relay"]
        );
    }

    #[test]
    fn snapshot_b_pressure_break() {
        check(
            'B',
            &["pressure", "humidity", "co2", "temp_inside"],
            "pressure=break humidity=52.4 co2=1761 temp_inside=24.0",
        );
        assert_eq!(bits('B', Group::ActiveAlarms), [41]);
        assert_eq!(outputs('B'), ["grv_base_1_run", "heater_1", "alarm_relay"]);
    }

    #[test]
    fn snapshot_c_co2_break() {
        check(
            'C',
            &["pressure", "co2", "temp_inside"],
            "pressure=17.7 co2=break temp_inside=24.4",
        );
        assert_eq!(bits('C', Group::ActiveAlarms), [24]);
    }

    #[test]
    fn snapshot_d_hot() {
        check(
            'D',
            &["ventilation_target", "ventilation_level", "temp_inside"],
            "ventilation_target=91.2 ventilation_level=100.0 temp_inside=30.2",
        );
        assert_eq!(bits('D', Group::RegisteredAlarms), [57]);
        assert_eq!(
            outputs('D'),
            [
                "gnv_base_1",
                "gnv_base_2",
                "gnv_base_3",
                "gnv_base_4",
                "alarm_relay"
            ]
        );
    }

    #[test]
    fn snapshot_e_after_reset() {
        check(
            'E',
            &["ventilation_level", "temp_inside"],
            "ventilation_level=47.7 temp_inside=26.0",
        );
        assert_eq!(bits('E', Group::RegisteredAlarms), [0u8; 0]);
        assert_eq!(outputs('E'), ["gnv_base_1", "gnv_base_2", "grv_base_1_run"]);
    }

    #[test]
    fn snapshot_f_g_h() {
        check('F', &["co2", "temp_inside"], "co2=4430 temp_inside=23.9");
        assert_eq!(outputs('F'), ["grv_base_1_run", "heater_1", "alarm_relay"]);
        check(
            'G',
            &["pressure", "co2", "day_counter"],
            "pressure=break co2=break day_counter=39",
        );
        assert_eq!(bits('G', Group::ActiveAlarms), [24, 41]);
        check(
            'H',
            &["ventilation_scheme", "ventilation_level", "temp_inside"],
            "ventilation_scheme=tunnel ventilation_level=0.0 temp_inside=25.3",
        );
        assert_eq!(
            snapshot('h')
                .expect("H")
                .image()
                .group_mask(Group::ActiveAlarms),
            None
        );
    }
}
