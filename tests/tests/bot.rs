//! The Telegram bot across real processes: three nodes in network namespaces and a local Bot API
//! server on the network's service address. The bot runs only on the lease holder, answers only
//! the owner, and answers every update exactly once through partitions, healing and failover;
//! a second poller on the same token fences it (409).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use constella_tests::lab::{Lab, Node, start_network};
use constella_tests::telegram::FakeTelegram;
use constella_tests::{Scratch, wait_until};

const TOKEN: &str = "123456:farm-bot";

fn holder(node: &Node) -> Option<String> {
    node.nodes()["lease_holder"].as_str().map(str::to_string)
}

/// The owner writes, waits for the answer, and writes again until `done` holds: a conversation
/// across a change of holder. Returns the messages sent.
fn converse(telegram: &FakeTelegram, mut done: impl FnMut() -> bool) -> Vec<i64> {
    let mut sent = Vec::new();
    loop {
        let id = telegram.send("farm_owner", "/help");
        sent.push(id);
        wait_until("the owner's message is answered", || {
            !telegram.replies_to(id).is_empty()
        });
        if done() {
            return sent;
        }
    }
}

fn node_dirs(scratch: &Scratch, size: usize) -> Vec<PathBuf> {
    (1..=size)
        .map(|i| scratch.0.join(format!("n{i}")))
        .collect()
}

/// A network whose nodes all carry the bot's token and reach Telegram at `telegram`.
fn bot_network<'a>(
    lab: &'a Lab,
    telegram: &FakeTelegram,
    dirs: &'a [PathBuf],
    names: &[&'static str],
) -> Vec<Node<'a>> {
    let extra = format!("[cluster]\nbot_api = \"{}\"\n", telegram.url());
    start_network(lab, dirs, names, &extra, Some(TOKEN))
}

/// Every message in `ids` got exactly one reply.
fn assert_answered_once(telegram: &FakeTelegram, ids: impl IntoIterator<Item = i64>) {
    for id in ids {
        let replies = telegram.replies_to(id);
        assert_eq!(
            replies.len(),
            1,
            "message {id} answered {} times: {replies:?}\npolls: {:?}",
            replies.len(),
            telegram.polls()
        );
    }
}

#[test]
fn the_bot_runs_on_the_holder_answers_the_owner_once_and_yields_to_a_409() {
    let lab = Lab::new(3);
    let telegram = FakeTelegram::serve(lab.service_listener(8081), TOKEN);
    let scratch = Scratch::new("bot");
    let dirs = node_dirs(&scratch, 3);
    let nodes = bot_network(&lab, &telegram, &dirs, &["alpha", "bravo", "charlie"]);
    let Ok([mut alpha, mut bravo, mut charlie]) = <[Node; 3]>::try_from(nodes) else {
        panic!("three nodes")
    };
    for node in [&alpha, &bravo, &charlie] {
        wait_until(&format!("{} sees alpha hold the lease", node.name), || {
            holder(node).as_deref() == Some("alpha")
        });
    }
    let ip = |i: usize| lab.addr(i).parse::<IpAddr>().expect("ip");

    // Only the owner is answered, only by the holder, and commands reach other nodes.
    let stranger = telegram.send("mallory", "/status");
    let status = telegram.send("farm_owner", "/status");
    wait_until("the owner gets the status", || {
        !telegram.replies_to(status).is_empty()
    });
    let reply = &telegram.replies_to(status)[0];
    assert_eq!(reply.from, ip(1), "answered by the holder");
    for name in ["alpha", "bravo", "charlie"] {
        assert!(reply.text.contains(name), "{}", reply.text);
    }
    assert!(
        reply.text.contains("alpha (10.77.0.1:7300) [leader, bot]"),
        "{}",
        reply.text
    );
    let stats = telegram.send("farm_owner", "/stats bravo");
    wait_until("bravo's stats arrive", || {
        !telegram.replies_to(stats).is_empty()
    });
    assert!(telegram.replies_to(stats)[0].text.contains("CPU"));
    assert!(
        telegram.replies_to(stranger).is_empty(),
        "the stranger got nothing"
    );
    let polls_from = |i: usize| telegram.polls().iter().filter(|p| p.from == ip(i)).count();
    assert_eq!(polls_from(2) + polls_from(3), 0, "only the holder polls");

    // Alpha loses its peers but not Telegram: it stops, bravo takes over, healing hands back.
    lab.cut_between(1, 2, true);
    lab.cut_between(1, 3, true);
    let mut conversation = converse(&telegram, || holder(&bravo).as_deref() == Some("bravo"));
    assert_eq!(alpha.nodes()["bot_running"], false);
    lab.cut_between(1, 2, false);
    lab.cut_between(1, 3, false);
    conversation.extend(converse(&telegram, || {
        holder(&bravo).as_deref() == Some("alpha") && alpha.nodes()["bot_running"] == true
    }));

    // Kill the holder with messages waiting: the next holder answers each of them once.
    let killed = Instant::now();
    alpha.kill();
    let waiting: Vec<i64> = (0..5)
        .map(|_| telegram.send("farm_owner", "/help"))
        .collect();
    // Bravo is the best survivor, but on a loaded machine charlie may briefly see bravo down
    // and take the lease first; either way each waiting message is answered once, by a survivor.
    let survivor = |from: IpAddr| from == ip(2) || from == ip(3);
    for id in &waiting {
        wait_until("a survivor answers what waited", || {
            !telegram.replies_to(*id).is_empty()
        });
        let from = telegram.replies_to(*id)[0].from;
        assert!(survivor(from), "answered by {from}");
    }
    let polling_again = telegram
        .polls()
        .iter()
        .find(|p| survivor(p.from) && p.at > killed)
        .map(|p| p.at - killed)
        .expect("a survivor polls");
    eprintln!("holder killed -> bot polling again: {polling_again:?}");
    assert!(polling_again < Duration::from_secs(8), "{polling_again:?}");

    let all = [status, stats]
        .into_iter()
        .chain(conversation)
        .chain(waiting);
    assert_answered_once(&telegram, all);
    let terminated = telegram.polls().iter().filter(|p| p.terminated).count();
    assert_eq!(terminated, 0, "no two pollers overlapped");

    wait_until(
        "bravo, the best survivor, holds the lease and runs the bot",
        || holder(&bravo).as_deref() == Some("bravo") && bravo.nodes()["bot_running"] == true,
    );

    // Another program polls with the same token. Whichever call is older gets the 409: once
    // bravo's does, bravo stops and backs off, so the intruder's next poll is left alone.
    wait_until("bravo's poll is terminated by the intruder's", || {
        telegram.poll_as_intruder(Duration::from_millis(500));
        bravo.nodes()["bot_fenced"] == true
    });
    let intruder_terminated = telegram.poll_as_intruder(Duration::from_secs(5));
    assert!(!intruder_terminated, "nobody polled again during the fence");
    let view = bravo.nodes();
    assert_eq!(view["bot_fenced"], true, "{view}");
    assert_eq!(view["bot_running"], false, "{view}");
    assert_eq!(
        charlie.nodes()["bot_running"],
        false,
        "charlie defers to bravo"
    );
    let log = bravo.agent.as_ref().expect("running").output();
    assert!(log.contains("another getUpdates poller is active"), "{log}");
    assert!(!log.contains(TOKEN), "the token is never logged");
    bravo.kill();
    charlie.kill();
}

/// Two nodes cannot tell a partition from a crash, so each side keeps a lease of its own (a
/// quorum of one). Telegram's 409 is then the fence: the newer poller wins, the older one stops
/// and claims nothing for ten lease durations, and an update is answered only by the node that
/// confirmed it, so no update is answered twice.
#[test]
fn a_two_node_partition_is_fenced_by_telegram() {
    let lab = Lab::new(2);
    let telegram = FakeTelegram::serve(lab.service_listener(8081), TOKEN);
    let scratch = Scratch::new("bot-pair");
    let dirs = node_dirs(&scratch, 2);
    let nodes = bot_network(&lab, &telegram, &dirs, &["alpha", "bravo"]);
    let Ok([mut alpha, mut bravo]) = <[Node; 2]>::try_from(nodes) else {
        panic!("two nodes")
    };
    wait_until("bravo sees alpha hold the lease", || {
        holder(&bravo).as_deref() == Some("alpha")
    });
    let bravo_ip = lab.addr(2).parse::<std::net::IpAddr>().expect("ip");

    lab.cut_between(1, 2, true);
    let mut conversation = converse(&telegram, || {
        telegram.sent().last().is_some_and(|s| s.from == bravo_ip)
    });
    wait_until("alpha was fenced by bravo's poll", || {
        alpha.nodes()["bot_fenced"] == true
    });
    assert_eq!(alpha.nodes()["bot_running"], false);
    conversation.extend(converse(&telegram, || true));
    lab.cut_between(1, 2, false);
    for node in [&alpha, &bravo] {
        wait_until(
            &format!("{} sees one holder after healing", node.name),
            || {
                let views = [alpha.nodes(), bravo.nodes()];
                let running = views.iter().filter(|v| v["bot_running"] == true).count();
                running == 1
                    && views
                        .iter()
                        .all(|v| v["lease_holder"] == views[0]["lease_holder"])
            },
        );
    }
    conversation.extend(converse(&telegram, || true));
    assert_answered_once(&telegram, conversation);
    alpha.kill();
    bravo.kill();
}
