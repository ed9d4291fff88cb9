//! The KUB-1063 simulator behind `constella sim` and `constella demo`: units with realistic
//! behaviour (`model`), fault injection (`faults`) and the servers (`server`) over TCP, a pty pair
//! it owns, or any byte stream it is given. Framing comes from `constella_modbus::pdu`.

mod faults;
mod model;
mod pty;
mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use constella_kub1063::fixtures;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use faults::{BusKind, FaultSpec, Step, load_scenario};
pub use model::Undocumented;
use model::{Unit, UnitConfig};
pub use server::Pacing;
use server::{SharedBus, bus_name};

use constella_modbus::LineSettings;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where and how the simulator serves.
pub struct SimOptions {
    pub tcp: Option<SocketAddr>,
    pub tcp_units: Vec<u8>,
    /// A serial device to serve RTU on (a real port, or one end of a socat pty pair), opened by
    /// the caller: the library serves whatever byte stream it is given.
    pub rtu: Option<(PathBuf, SerialStream)>,
    /// Create a pty pair and serve RTU on it; `Some(Some(link))` also symlinks the slave there.
    pub rtu_pty: Option<Option<PathBuf>>,
    pub rtu_units: Vec<u8>,
    pub rtu_tcp: Option<SocketAddr>,
    pub rtu_tcp_units: Vec<u8>,
    pub line: LineSettings,
    /// Emulate the wire time of the line on RTU (a pty moves bytes instantly).
    pub pacing: Pacing,
    pub faults: Vec<FaultSpec>,
    pub scenario: Vec<Step>,
    pub snapshot: Option<char>,
    pub seed: u64,
    pub undocumented: Undocumented,
    pub fc03_on_input: Undocumented,
    /// Simulated seconds per real second.
    pub speed: f64,
    pub day_length: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            tcp: None,
            tcp_units: vec![1],
            rtu: None,
            rtu_pty: None,
            rtu_units: vec![1],
            rtu_tcp: None,
            rtu_tcp_units: vec![1],
            line: LineSettings::default(),
            pacing: Pacing::WireTime,
            faults: Vec::new(),
            scenario: Vec::new(),
            snapshot: None,
            seed: 1063,
            undocumented: Undocumented::Exception,
            fc03_on_input: Undocumented::Exception,
            speed: 1.0,
            day_length: Duration::from_secs(86_400),
        }
    }
}

/// A serial port or anything else that carries RTU frames.
pub trait RtuStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> RtuStream for S {}

/// An opened serial line to serve on.
pub type SerialStream = Box<dyn RtuStream>;

/// A running simulator; dropping it stops every task.
pub struct Running {
    pub tcp: Option<SocketAddr>,
    pub rtu_tcp: Option<SocketAddr>,
    pub rtu_path: Option<PathBuf>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Binds every configured endpoint and starts serving.
pub async fn start(options: SimOptions) -> anyhow::Result<Running> {
    let snapshot = match options.snapshot {
        Some(id) => Some(
            fixtures::snapshot(id).with_context(|| format!("no captured snapshot `{id}` (A–H)"))?,
        ),
        None => None,
    };
    let mut buses: BTreeMap<BusKind, SharedBus> = BTreeMap::new();
    let mut make_bus = |kind: BusKind, ids: &[u8]| -> SharedBus {
        let bus = units(kind, ids, &options, snapshot);
        buses.insert(kind, bus.clone());
        bus
    };

    let mut running = Running {
        tcp: None,
        rtu_tcp: None,
        rtu_path: None,
        tasks: Vec::new(),
    };
    if let Some(addr) = options.tcp {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("Failed to bind Modbus TCP on {addr}"))?;
        let local = listener.local_addr()?;
        let bus = make_bus(BusKind::Tcp, &options.tcp_units);
        running
            .tasks
            .push(tokio::spawn(server::serve_tcp(listener, bus)));
        running.tcp = Some(local);
        info!(addr = %local, units = ?options.tcp_units, "simulator: serving Modbus TCP");
    }
    if let Some(addr) = options.rtu_tcp {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("Failed to bind RTU-over-TCP on {addr}"))?;
        let local = listener.local_addr()?;
        let bus = make_bus(BusKind::RtuTcp, &options.rtu_tcp_units);
        let line = options.line;
        running.tasks.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let bus = bus.clone();
                tokio::spawn(async move {
                    let _ = server::serve_rtu(stream, bus, line, Pacing::Instant).await;
                });
            }
        }));
        running.rtu_tcp = Some(local);
        info!(addr = %local, units = ?options.rtu_tcp_units, "simulator: serving RTU over TCP");
    }
    if options.rtu.is_some() || options.rtu_pty.is_some() {
        let bus = make_bus(BusKind::Rtu, &options.rtu_units);
        let (line, pacing) = (options.line, options.pacing);
        if let Some((path, port)) = options.rtu {
            running.rtu_path = Some(path);
            running.tasks.push(tokio::spawn(async move {
                if let Err(e) = server::serve_rtu(port, bus, line, pacing).await {
                    warn!(error = %e, "simulator: serial port failed");
                }
            }));
        } else if let Some(link) = &options.rtu_pty {
            let pty = pty::PtyMaster::open(link.as_deref())?;
            running.rtu_path = Some(pty.path().to_path_buf());
            running.tasks.push(tokio::spawn(async move {
                if let Err(e) = server::serve_rtu(pty, bus, line, pacing).await {
                    warn!(error = %e, "simulator: pty failed");
                }
            }));
        }
        info!(path = ?running.rtu_path, units = ?options.rtu_units, baud = options.line.baud, "simulator: serving Modbus RTU");
    }
    running
        .tasks
        .push(tokio::spawn(drive(buses, options.scenario, options.speed)));
    Ok(running)
}

/// The simulated units `ids` of one bus, with the faults that apply to them, at their start.
fn units(
    kind: BusKind,
    ids: &[u8],
    options: &SimOptions,
    snapshot: Option<&'static fixtures::Snapshot>,
) -> SharedBus {
    let units = ids
        .iter()
        .map(|&id| {
            let config = UnitConfig {
                seed: options.seed ^ (u64::from(id) << 8) ^ kind as u64,
                undocumented: options.undocumented,
                fc03_on_input: options.fc03_on_input,
                day_length_s: options.day_length.as_secs_f64().max(1.0),
            };
            let mut unit = Unit::new(config, snapshot);
            for spec in options.faults.iter().filter(|s| s.matches(kind, id)) {
                spec.apply(&mut unit.faults);
                unit.unpin();
            }
            unit.tick(0.0);
            (id, unit)
        })
        .collect();
    Arc::new(Mutex::new(units))
}

/// Serves the RTU units `ids` (with `options`' faults, line settings and pacing) over `stream`
/// until it closes; the plant stands still (no clock drives it). For in-process tests of the
/// poller over an in-memory pipe.
pub fn serve_rtu_units<S>(
    stream: S,
    ids: &[u8],
    options: &SimOptions,
) -> impl Future<Output = std::io::Result<()>> + use<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let bus = units(BusKind::Rtu, ids, options, None);
    server::serve_rtu(stream, bus, options.line, options.pacing)
}

/// Advances every unit once a second and applies scenario steps when they fall due.
async fn drive(buses: BTreeMap<BusKind, SharedBus>, scenario: Vec<faults::Step>, speed: f64) {
    let start = tokio::time::Instant::now();
    let mut steps = scenario.into_iter().peekable();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = start;
    loop {
        let next_step = steps.peek().map(|s| start + s.at);
        tokio::select! {
            now = tick.tick() => {
                let dt = (now - last).as_secs_f64() * speed;
                last = now;
                for bus in buses.values() {
                    let mut units = bus.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    units.values_mut().for_each(|u| u.tick(dt));
                }
            }
            () = async { tokio::time::sleep_until(next_step.unwrap_or(start)).await }, if next_step.is_some() => {
                let Some(step) = steps.next() else { continue };
                for (kind, bus) in &buses {
                    let mut units = bus.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    for (id, unit) in units.iter_mut().filter(|(id, _)| step.fault.matches(*kind, **id)) {
                        step.fault.apply(&mut unit.faults);
                        unit.unpin();
                        info!(bus = bus_name(*kind), unit = id, "simulator: scenario step applied");
                    }
                }
            }
        }
    }
}
