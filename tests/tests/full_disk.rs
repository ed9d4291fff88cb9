//! A full state disk, made for real: node alpha's state directory sits on a small tmpfs that
//! the test fills. A mutating call is refused without running (its replay floor cannot be
//! saved), an invite that cannot be saved is an error, and an agent started on the full disk
//! runs (API, cluster) and saves its state once there is room again.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use constella_tests::lab::{Lab, start_network};
use constella_tests::{Scratch, wait_until};
use serde_json::Value;

/// A tmpfs of `mb` MiB mounted at `at`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mb: u32) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mb}m,mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }

    /// Writes a filler file until the disk refuses more.
    fn fill(&self) {
        let mut file = std::fs::File::create(self.0.join("filler")).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        // A page may be left; take it byte-sized.
        while file.write_all(&[0u8; 512]).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.0.join("filler")).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn reboots(marker: &Path) -> usize {
    std::fs::read_to_string(marker)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

fn counter_reserved(state_dir: &str) -> u64 {
    let text = std::fs::read_to_string(Path::new(state_dir).join("network_state.json"))
        .expect("network state");
    let state: Value = serde_json::from_str(&text).expect("json");
    state["counter_reserved"]
        .as_u64()
        .expect("counter_reserved")
}

#[test]
fn a_full_disk_refuses_what_it_cannot_save_and_never_stops_the_agent() {
    let lab = Lab::new(2);
    let scratch = Scratch::new("full-disk");
    let marker = scratch.0.join("reboots");
    let dirs = [scratch.0.join("alpha"), scratch.0.join("bravo")];
    // The whole of alpha's directory (config, state, history) is on the small disk.
    let disk = Tmpfs::mount(&dirs[0], 16);
    let extra = format!(
        "[history]\nflush_interval = \"2s\"\n[cluster]\nreboot_command = [\"sh\", \"-c\", \"echo reboot >> {}\"]\n",
        marker.display()
    );
    let mut nodes = start_network(&lab, &dirs, &["alpha", "bravo"], &extra, None);

    disk.fill();
    let refused = nodes[1].api("POST", "/api/v1/nodes/alpha/reboot");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot save its state") && m.contains("nothing was run")),
        "{refused}"
    );
    assert_eq!(reboots(&marker), 0, "the reboot did not run");
    let invite = nodes[0].api("POST", "/api/v1/cluster/invites");
    assert_eq!(
        invite["error"]["code"].as_str(),
        Some("invite_failed"),
        "an invite that cannot be saved is not handed out: {invite}"
    );

    disk.free();
    let done = nodes[1].api("POST", "/api/v1/nodes/alpha/reboot");
    assert_eq!(done["rebooting"], true, "{done}");
    assert_eq!(reboots(&marker), 1);

    // Started on a full disk after a clean stop (so SQLite must create its write-ahead log),
    // the agent runs: cluster and API at once, history and its counter reservation once it can.
    let agent = nodes[0].agent.take().expect("running");
    let stopped = Command::new("kill")
        .args(["-s", "TERM", &agent.pid().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let _ = agent.wait_exit();
    assert!(
        !Path::new(&nodes[0].state()).join("history.db-wal").exists(),
        "a clean stop removes the log"
    );
    let before = counter_reserved(&nodes[0].state());
    disk.fill();
    nodes[0].start();
    let health = nodes[0].api("GET", "/api/v1/nodes");
    assert!(
        health["nodes"].as_array().is_some_and(|n| n.len() == 2),
        "{health}"
    );
    let log = nodes[0].agent.as_ref().expect("running").output();
    assert!(
        log.contains("cannot save the network state at start"),
        "the failure is reported:\n{log}"
    );
    assert_eq!(
        counter_reserved(&nodes[0].state()),
        before,
        "nothing saved yet"
    );
    let metrics = nodes[0].api("GET", "/api/v1/node/metrics?series=cpu");
    assert_eq!(
        metrics["error"]["code"].as_str(),
        Some("history_unavailable"),
        "{metrics}"
    );
    disk.free();
    wait_until("history opened once there is room", || {
        nodes[0].api("GET", "/api/v1/node/metrics?series=cpu")["series"].is_array()
    });
    wait_until("the reservation saved once there is room", || {
        counter_reserved(&nodes[0].state()) > before
    });
    wait_until("bravo sees alpha alive again", || {
        nodes[1].nodes()["nodes"]
            .as_array()
            .is_some_and(|rows| rows.iter().filter(|r| r["status"] == "alive").count() == 2)
    });
    nodes[0].kill();
    nodes[1].kill();
}
