//! `constella demo`, the README's first command: three simulated units, two on a pty RTU bus and
//! one on Modbus TCP, polled and served by the API, until the process is stopped.

use constella_tests::{Api, Proc, constella, counter};

#[test]
fn the_demo_serves_three_polled_units() {
    let demo = Proc::spawn(
        constella(),
        &["demo", "--listen", "127.0.0.1:0", "--poll-seconds", "1"],
    );
    let addr = demo.wait_line("the API address", |line| {
        line.strip_prefix("API:")?
            .trim()
            .strip_prefix("http://")?
            .split('/')
            .next()?
            .parse()
            .ok()
    });
    let token = demo.wait_line("the token", |line| {
        Some(line.strip_prefix("Token:")?.trim().to_string())
    });
    let api = Api::new(addr, token, demo.log.clone());
    for (id, link) in [
        ("house-1", "rtu "),
        ("house-2", "rtu "),
        ("house-3", "tcp "),
    ] {
        let device = api.wait_device(id, "online", |d| d["status"] == "online");
        assert!(
            device["link"].as_str().is_some_and(|l| l.starts_with(link)),
            "{device:#}"
        );
        assert_eq!(
            counter(&device, "timeouts") + counter(&device, "crc_framing"),
            0,
            "{device:#}"
        );
    }
    let summary = demo.wait_line("a summary line", |line| {
        line.starts_with("house-3  online")
            .then(|| line.to_string())
    });
    assert!(
        summary.contains("°C") && summary.contains("alarms:"),
        "{summary}"
    );
}
