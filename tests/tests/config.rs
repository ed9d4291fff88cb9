//! `constella run` with a bad configuration stops at once with a message naming the file, the
//! field and the reason, and a non-zero exit code.

use constella_tests::{Proc, Scratch, constella};

#[track_caller]
fn run_with(text: &str, expect: &str) {
    let dir = Scratch::new("config");
    let path = dir.0.join("constella.toml");
    std::fs::write(&path, text).expect("write");
    let (status, output) = Proc::spawn(
        constella(),
        &["run", "--config", &path.display().to_string()],
    )
    .wait_exit();
    assert_eq!(status.code(), Some(1), "{output}");
    let expect = format!("Error: {}: {expect}", path.display());
    assert!(output.contains(&expect), "wanted `{expect}` in:\n{output}");
}

#[test]
fn bad_configurations_are_refused_with_file_field_and_reason() {
    let bus = "[[bus]]\nname = \"gw\"\ntcp = \"127.0.0.1:1502\"\n";
    run_with(
        &format!("{bus}[[device]]\nname = \"h\"\nmodel = \"kub1063\"\nbus = \"gw\"\nunit = 0\n"),
        "device[0].unit: 0 is not a Modbus unit id (1–247)",
    );
    run_with(
        &format!("{bus}timeout = \"soon\"\n"),
        "bus[0].timeout: `soon` is not a duration like 500ms or 10s",
    );
    run_with(
        "[[bus]]\nname = \"gw\"\ntcp = \"127.0.0.1:1502\"\nspeed = 3\n",
        "bus[0].speed: unknown field `speed`",
    );
    run_with("[api\nlisten = 1", "(syntax):");
    run_with(
        "state_dir = \"/etc/passwd\"\n",
        "state_dir: /etc/passwd is not a directory",
    );
}

#[test]
fn a_missing_file_is_named() {
    let (status, output) = Proc::spawn(
        constella(),
        &["run", "--config", "/nonexistent/constella.toml"],
    )
    .wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(
        output.contains("Error: /nonexistent/constella.toml: (file): cannot be read"),
        "{output}"
    );
}
