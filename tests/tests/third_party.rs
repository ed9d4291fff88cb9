//! A Modbus master we did not write (Debian's mbpoll, built on libmodbus) reads and writes the
//! simulator over TCP and over RTU on a pty pair, and sees the captured snapshot's words.

use std::process::Command;

use constella_tests::{PtyPair, Sim};

/// Runs mbpoll once and returns `(reference, value)` pairs from its output.
fn mbpoll(args: &[&str]) -> Vec<(u32, u16)> {
    let output = Command::new("mbpoll")
        .args(args)
        .output()
        .expect("mbpoll is installed (Debian package mbpoll)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "mbpoll {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| {
            let (reference, value) = line.trim().strip_prefix('[')?.split_once("]:")?;
            let value = value.split_whitespace().next()?;
            Some((reference.parse().ok()?, value.parse().ok()?))
        })
        .collect()
}

#[test]
fn mbpoll_reads_the_simulator_over_tcp() {
    let sim = Sim::start(&[
        "--tcp",
        "127.0.0.1:0",
        "--tcp-units",
        "1,5",
        "--speed",
        "0",
        "--snapshot",
        "A",
    ]);
    let tcp = sim.tcp.expect("tcp");
    let port = tcp.port().to_string();
    // -0: references are protocol addresses; -t 3: input registers (FC04); -1: poll once.
    let base = ["-m", "tcp", "-p", &port, "-0", "-1"];
    let sensors = mbpoll(
        &[
            &base[..],
            &["-a", "5", "-t", "3", "-r", "131", "-c", "4", "127.0.0.1"],
        ]
        .concat(),
    );
    assert_eq!(
        sensors,
        [(131, 257), (132, 481), (133, 2600), (134, 0xFFFC)]
    );
    let version = mbpoll(
        &[
            &base[..],
            &["-a", "1", "-t", "3", "-r", "769", "-c", "1", "127.0.0.1"],
        ]
        .concat(),
    );
    assert_eq!(version, [(769, 414)]);
    let alarms = mbpoll(
        &[
            &base[..],
            &["-a", "1", "-t", "3", "-r", "192", "-c", "8", "127.0.0.1"],
        ]
        .concat(),
    );
    assert_eq!(
        alarms.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        [0, 0, 0, 0, 0, 0x0100, 0, 0]
    );
    // Holding registers (FC03): time zone and the first relay assignments.
    let holding = mbpoll(
        &[
            &base[..],
            &["-a", "1", "-t", "4", "-r", "63", "-c", "1", "127.0.0.1"],
        ]
        .concat(),
    );
    assert_eq!(holding, [(63, 180)]);
}

#[test]
fn mbpoll_reads_and_resets_over_rtu_on_a_pty_pair() {
    let pty = PtyPair::new();
    let _sim = Sim::on_pty(
        &pty,
        &["--rtu-units", "1,2", "--speed", "0", "--snapshot", "A"],
    );
    let device = pty.b.display().to_string();
    let base = [
        "-m", "rtu", "-b", "9600", "-d", "8", "-P", "none", "-s", "1", "-0", "-1",
    ];
    // 0x00D0–0x00D5: ventilation target and level, scheme, day, target and control temperature.
    let words = mbpoll(
        &[
            &base[..],
            &["-a", "2", "-t", "3", "-r", "208", "-c", "6", &device],
        ]
        .concat(),
    );
    assert_eq!(
        words,
        [
            (208, 289),
            (209, 289),
            (210, 0),
            (211, 41),
            (212, 248),
            (213, 255)
        ]
    );
    let registered = || -> Vec<u16> {
        let read = [
            "-a",
            "2",
            "-t",
            "3",
            "-r",
            "196",
            "-c",
            "4",
            device.as_str(),
        ];
        mbpoll(&[&base[..], &read[..]].concat())
            .iter()
            .map(|(_, v)| *v)
            .collect()
    };
    assert_eq!(registered(), [0, 0x0100, 0, 0]);
    // FC06 0x0020 ← 1 from a third-party master clears the registered alarms.
    mbpoll(&[&base[..], &["-a", "2", "-t", "4", "-r", "32", &device, "1"]].concat());
    assert_eq!(registered(), [0, 0, 0, 0]);
}
