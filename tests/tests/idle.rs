//! Idle cost of a node: with nothing due, a node sleeps until something is. A one-node network
//! whose node has no bot token once woke about 400 times a second (the lease's deadline stayed in
//! the past); the bound here leaves room for the legitimate timers (membership, anti-entropy,
//! telemetry) and catches any return of polling.

use std::time::{Duration, Instant};

use constella_tests::lab::{Lab, start_network};
use constella_tests::{Scratch, Switches};

/// The measurement window: a stretch of time the node is left alone, not a wait for an event.
const WINDOW: Duration = Duration::from_secs(10);

#[test]
fn a_node_without_a_bot_token_sleeps_when_idle() {
    let lab = Lab::new(1);
    let scratch = Scratch::new("idle-no-bot");
    let dirs = vec![scratch.0.join("n1")];
    let nodes = start_network(&lab, &dirs, &["n1"], "", None);
    let pid = nodes[0].agent.as_ref().expect("running").pid();
    let before = Switches::of(pid);
    let began = Instant::now();
    std::thread::sleep(WINDOW);
    let per_second = Switches::of(pid).since(&before) as f64 / began.elapsed().as_secs_f64();
    assert!(
        per_second <= 20.0,
        "an idle node without a bot token woke {per_second:.1} times a second"
    );
}
