//! Entry points for the fuzz targets (`tests/fuzz`), behind the `fuzzing` feature: each runs one
//! of the agent's parsers of outside input the way the agent runs it. A panic is the finding.

use std::sync::OnceLock;
use std::time::Duration;

use constella_kub1063::{RegisterAddr, Table};
use constella_modbus::plan::Block;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::modbus::link::{Framing, Link};

/// The configuration file's checks.
pub fn config(text: &str) {
    let _ = crate::config::Config::parse(std::path::Path::new("fuzz.toml"), text);
}

/// The history, metrics and events query parsers.
pub fn api_query(query: &str) {
    crate::api::parse_queries(query);
}

/// The Modbus client reading a block of holding registers from a device that answers `reply`
/// (then closes the line): tokio-modbus's decoding, the garbled-reply tap and the word checks.
/// `rtu` picks RTU framing over TCP's MBAP.
pub fn modbus_reply(rtu: bool, reply: &[u8]) {
    let reply = reply.to_vec();
    runtime().block_on(async move {
        let (ours, mut device) = tokio::io::duplex(4096);
        let answer = tokio::spawn(async move {
            let mut request = [0u8; 12];
            let wanted = if rtu { 8 } else { 12 };
            if device.read_exact(&mut request[..wanted]).await.is_ok() {
                let _ = device.write_all(&reply).await;
            }
        });
        let framing = if rtu { Framing::Rtu } else { Framing::Tcp };
        let mut link = Link::attach(Box::new(ours), framing);
        let block = Block {
            table: Table::Holding,
            start: RegisterAddr(0),
            count: 8,
        };
        let unit = constella_modbus::UnitId::try_from(1u8).expect("1 is a unit id");
        let _ = link.read(unit, block, Duration::from_millis(100)).await;
        let _ = answer.await;
    });
}

/// The simulator's RTU server loop (framing, CRC, request parsing, answers) fed `request` by a
/// master that then closes the line.
pub fn simulator_rtu(request: &[u8]) {
    let request = request.to_vec();
    runtime().block_on(async move {
        let (sim, mut master) = tokio::io::duplex(1 << 16);
        let options = constella_sim::SimOptions::default();
        let served = tokio::spawn(constella_sim::serve_rtu_units(sim, &[1, 2], &options));
        let _ = master.write_all(&request).await;
        let _ = master.shutdown().await;
        // Drain the answers until the simulator sees the line close.
        let _ = tokio::io::copy(&mut master, &mut tokio::io::sink()).await;
        let _ = served.await;
    });
}

/// A single-threaded runtime with a paused clock: timeouts pass at once when nothing else can
/// run, so an incomplete reply costs no wall time.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a current-thread runtime")
    })
}
