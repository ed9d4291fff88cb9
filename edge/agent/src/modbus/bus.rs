//! The per-bus I/O shell: one task per bus owns the link, so exactly one request is in flight per
//! bus and reads and writes are serialised. It sleeps until the schedule's next deadline, polls the
//! due unit block by block, keeps the line quiet between frames, and records results in the device
//! table.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use constella_kub1063::{RESET_ALARMS, RegisterAddr, register};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::link::{ByteStream, Framing, Link};
use super::schedule::Schedule;
use crate::config::{self, Config};
use crate::devices::{Command, Counters, DeviceState, Registry, Sample};
use crate::outcome::Health;
use crate::outcome::PollError;
use constella_modbus::UnitId;
use constella_modbus::plan::{Block, full_poll};

/// The runner's clock: tokio's, so that tests under paused time see it advance (in production it
/// is the monotonic clock).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Builds the device table and one runner per bus that has devices. Spawn every runner. After
/// each poll a runner sends the device's index on `polls` (dropped if the receiver lags: the
/// device table always holds the latest state).
pub(crate) fn start(config: &Config, polls: mpsc::Sender<usize>) -> (Registry, Vec<BusRunner>) {
    let now = now();
    let mut states = Vec::new();
    let mut senders = Vec::new();
    let mut runners = Vec::new();
    // Devices keep config order in the table; each bus serves its own subset.
    let mut channels = Vec::new();
    for bus in &config.buses {
        let (tx, rx) = mpsc::channel(8);
        channels.push((bus, tx, rx));
    }
    for device in &config.devices {
        // Config::parse guarantees the bus exists; a device without one would get a closed
        // channel (commands fail) rather than shifting every later device's index.
        let bus = channels.iter().find(|(b, _, _)| b.name == device.bus);
        states.push(DeviceState {
            name: device.name.clone(),
            bus: device.bus.clone(),
            link: bus.map(|(b, _, _)| b.link.to_string()).unwrap_or_default(),
            unit: device.unit,
            poll_interval: device.poll_interval,
            words: Default::default(),
            last_poll: None,
            last_ok: None,
            consecutive_failures: 0,
            last_error: None,
            counters: Counters::default(),
        });
        senders.push(bus.map_or_else(|| mpsc::channel(1).0, |(_, tx, _)| tx.clone()));
    }
    let registry = Registry::new(states, senders);
    for (bus, _tx, rx) in channels {
        let devices: Vec<(usize, UnitId, Duration)> = config
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.bus == bus.name)
            .map(|(i, d)| (i, d.unit, d.poll_interval))
            .collect();
        if devices.is_empty() {
            continue;
        }
        let intervals: Vec<Duration> = devices.iter().map(|d| d.2).collect();
        runners.push(BusRunner {
            schedule: Schedule::new(&intervals, bus.max_backoff, now),
            plan: full_poll(bus.max_block, bus.max_gap),
            devices: devices.iter().map(|&(i, unit, _)| (i, unit)).collect(),
            bus: bus.clone(),
            dial: Dial::Configured,
            link: None,
            quiet_until: now,
            commands: rx,
            registry: registry.clone(),
            polls: polls.clone(),
        });
    }
    (registry, runners)
}

/// Where a runner gets its connections from.
pub(crate) enum Dial {
    /// The bus's configured serial port or TCP address.
    Configured,
    /// Streams handed in, one per (re)connect: in-memory pipes in tests; the overlay issue dials
    /// Modbus TCP through userspace WireGuard streams the same way.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "only tests hand in streams until the overlay does"
        )
    )]
    Given(VecDeque<Box<dyn ByteStream>>, Framing),
}

pub(crate) struct BusRunner {
    bus: config::Bus,
    dial: Dial,
    /// (index in the device table, unit id), in schedule-slot order.
    devices: Vec<(usize, UnitId)>,
    plan: Vec<Block>,
    schedule: Schedule,
    link: Option<Link>,
    /// No frame may start before this instant (inter-frame silence and reply gap).
    quiet_until: Instant,
    commands: mpsc::Receiver<Command>,
    registry: Registry,
    polls: mpsc::Sender<usize>,
}

enum Op {
    Read(Block),
    Write { addr: u16, value: u16 },
}

impl BusRunner {
    /// Polls forever; returns only when the task is aborted.
    pub(crate) async fn run(mut self) {
        let mut commands_open = true;
        loop {
            let deadline = self
                .schedule
                .poll_timeout()
                .unwrap_or_else(|| now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                command = self.commands.recv(), if commands_open => match command {
                    Some(command) => self.execute(command).await,
                    None => commands_open = false,
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    if let Some(slot) = self.schedule.poll_due(now()) {
                        self.poll(slot).await;
                    }
                }
            }
        }
    }

    async fn poll(&mut self, slot: usize) {
        let (device, unit) = self.devices[slot];
        let started = now();
        let mut failure = None;
        let mut requests = 0;
        for block in self.plan.clone() {
            requests += 1;
            match self.transact(unit, Op::Read(block)).await {
                Ok(words) => {
                    let at = SystemTime::now();
                    self.registry.update(device, |d| {
                        for (offset, raw) in (0u16..).zip(words) {
                            let addr = RegisterAddr(block.start.0 + offset);
                            if register(block.table, addr).is_some() {
                                d.words.insert((block.table, addr), Sample { raw, at });
                            }
                        }
                    });
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let now = now();
        let mut before = Health::Pending;
        let mut after = Health::Pending;
        self.registry.update(device, |d| {
            before = d.health();
            d.last_poll = Some(SystemTime::now());
            d.counters.requests += requests;
            match &failure {
                None => {
                    d.counters.polls_ok += 1;
                    d.consecutive_failures = 0;
                    d.last_ok = d.last_poll;
                    d.last_error = None;
                }
                Some(error) => {
                    d.counters.polls_failed += 1;
                    d.counters.count(error);
                    d.consecutive_failures += 1;
                    d.last_error = Some(error.to_string());
                }
            }
            after = d.health();
        });
        let _ = self.polls.try_send(device);
        let name = self.registry.find_name(device);
        match failure {
            None => {
                self.schedule.handle_success(slot, started, now);
                if before != after {
                    info!(device = %name, elapsed_ms = now.duration_since(started).as_millis() as u64, "device online");
                }
            }
            Some(error) => {
                let wait = self.schedule.handle_failure(slot, now);
                match (before, after) {
                    (_, Health::Offline) if before != Health::Offline => {
                        warn!(device = %name, %error, retry_in_s = wait.as_secs(), "device offline");
                    }
                    _ => debug!(device = %name, %error, retry_in_s = wait.as_secs(), "poll failed"),
                }
            }
        }
    }

    async fn execute(&mut self, command: Command) {
        match command {
            Command::ResetAlarms { device, done } => {
                let Some(slot) = self.devices.iter().position(|&(d, _)| d == device) else {
                    let _ = done.send(Err(PollError::Io("device is not on this bus".into())));
                    return;
                };
                let unit = self.devices[slot].1;
                let result = self
                    .transact(
                        unit,
                        Op::Write {
                            addr: RESET_ALARMS.0,
                            value: 1,
                        },
                    )
                    .await
                    .map(drop);
                self.registry.update(device, |d| {
                    d.counters.requests += 1;
                    if let Err(error) = &result {
                        d.counters.count(error);
                    }
                });
                if result.is_ok() {
                    // Re-read at once so the API shows the cleared registers.
                    self.schedule.trigger(slot, now());
                }
                info!(device = %self.registry.find_name(device), ok = result.is_ok(), "reset alarms");
                let _ = done.send(result);
            }
        }
    }

    /// One request on the bus: connects if needed, keeps the inter-frame silence, and drops the
    /// link when the error leaves it unusable.
    async fn transact(&mut self, unit: UnitId, op: Op) -> Result<Vec<u16>, PollError> {
        // Only sleep when the line must stay quiet: tokio rounds every timer up to the next
        // millisecond, which would cost a TCP bus (no gap) a millisecond per request.
        if self.quiet_until > now() {
            tokio::time::sleep_until(self.quiet_until.into()).await;
        }
        let timing = self.bus.timing;
        if self.link.is_none() {
            let connected = match &mut self.dial {
                Dial::Configured => Link::connect(&self.bus.link, timing.timeout).await,
                Dial::Given(streams, framing) => streams
                    .pop_front()
                    .map(|stream| Link::attach(stream, *framing))
                    .ok_or_else(|| anyhow::anyhow!("no stream left to attach")),
            };
            match connected {
                Ok(link) => self.link = Some(link),
                Err(error) => {
                    self.quiet_until = now() + timing.frame_gap;
                    return Err(PollError::Io(format!("{error:#}")));
                }
            }
        }
        let Some(link) = self.link.as_mut() else {
            return Err(PollError::Io("not connected".into()));
        };
        let result = match op {
            Op::Read(block) => link.read(unit, block, timing.timeout).await,
            Op::Write { addr, value } => link
                .write_single(unit, addr, value, timing.timeout)
                .await
                .map(|()| Vec::new()),
        };
        let quiet = match &result {
            Ok(_) | Err(PollError::Exception(_)) => timing.frame_gap + timing.reply_gap,
            Err(PollError::Timeout(_)) => timing.frame_gap + link.late_reply_guard(timing.timeout),
            Err(_) => timing.frame_gap,
        };
        self.quiet_until = now() + quiet;
        if let Err(error) = &result
            && !link.survives(error)
        {
            debug!(bus = %self.bus.name, %error, "closing link");
            self.link = None;
        }
        result
    }
}

/// A bus runner whose one connection is an in-memory pipe to simulated units, for the
/// in-process tests of the shells that consume polls (the runner itself, the recorder).
#[cfg(test)]
pub(crate) fn over_pipe(
    config: &Config,
    units: &[u8],
    options: &constella_sim::SimOptions,
    polls: mpsc::Sender<usize>,
) -> Registry {
    let (registry, mut runners) = start(config, polls);
    let (ours, theirs) = tokio::io::duplex(4096);
    tokio::spawn(constella_sim::serve_rtu_units(theirs, units, options));
    let mut runner = runners.pop().expect("one bus");
    runner.dial = Dial::Given(
        VecDeque::from([Box::new(ours) as Box<dyn ByteStream>]),
        Framing::Rtu,
    );
    tokio::spawn(runner.run());
    registry
}

#[cfg(test)]
mod tests {
    //! The bus runner against the simulator over an in-memory pipe, in tokio's paused time: ten
    //! simulated minutes of RTU polling (with wire-time pacing and a silent neighbour) run in
    //! milliseconds, deterministically. What crosses a real wire stays in the process-level tests.
    use std::path::Path;

    use constella_kub1063::REGISTERS;
    use constella_sim::{FaultSpec, SimOptions};

    use super::*;

    const CONFIG: &str = r#"
[[bus]]
name = "rs485"
rtu = "/dev/ttyUSB-in-memory"

[[device]]
name = "house-1"
model = "kub1063"
bus = "rs485"
unit = 1

[[device]]
name = "house-2"
model = "kub1063"
bus = "rs485"
unit = 2
"#;

    /// A runner for `CONFIG` polling simulated units 1 and 2, unit 2 silent.
    fn bus_with_a_silent_neighbour() -> Registry {
        let config = Config::parse(Path::new("test.toml"), CONFIG).expect("a valid config");
        let (polls, _) = mpsc::channel(256);
        let options = SimOptions {
            faults: vec![FaultSpec::parse("2=silent").expect("a fault")],
            ..SimOptions::default()
        };
        over_pipe(&config, &[1, 2], &options, polls)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_unit_backs_off_and_its_neighbour_keeps_its_rate() {
        let registry = bus_with_a_silent_neighbour();
        tokio::time::sleep(Duration::from_secs(600)).await;
        let (_, good) = registry.find("house-1").expect("house-1");
        let (_, silent) = registry.find("house-2").expect("house-2");
        // Every 10 s for 600 s is 60 polls; the neighbour's timeouts may cost it one or two.
        assert!(
            good.counters.polls_ok >= 57 && good.counters.polls_failed == 0,
            "{:?}",
            good.counters
        );
        assert_eq!(good.health(), Health::Online);
        let polled = REGISTERS
            .iter()
            .filter(|r| r.kind != constella_kub1063::Kind::Command);
        assert_eq!(
            good.words.len(),
            polled.count(),
            "every polled register is stored"
        );
        // The silent unit times out on its first block each time and backs off to the cap.
        assert_eq!(silent.health(), Health::Offline);
        assert_eq!(silent.counters.polls_ok, 0);
        assert_eq!(silent.counters.timeouts, silent.counters.polls_failed);
        assert!(
            (5..=20).contains(&silent.counters.polls_failed),
            "backed off: {:?}",
            silent.counters
        );
    }
}
