//! Bytes a master sends the simulator: RTU through its real server loop (framing, CRC, request
//! parsing, answers, faults off), and the MBAP header and PDU parsers of its TCP server.
#![no_main]

use std::sync::OnceLock;

use constella_modbus::pdu::{self, Mbap, Request};
use constella_sim::SimOptions;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt as _;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = Request::parse(data);
    let _ = pdu::rtu_request_len(data);
    let _ = pdu::rtu_open(data);
    if let Some(header) = data.first_chunk::<7>() {
        let _ = Mbap::parse(header);
        let _ = Request::parse(&data[7..]);
    }
    let bytes = data.to_vec();
    runtime().block_on(async move {
        let (sim, mut master) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(constella_sim::serve_rtu_units(
            sim,
            &[1, 2],
            &SimOptions::default(),
        ));
        let _ = master.write_all(&bytes).await;
        let _ = master.shutdown().await;
        // Drain answers until the simulator sees the line close.
        let mut sink = tokio::io::sink();
        let _ = tokio::io::copy(&mut master, &mut sink).await;
        let _ = served.await;
    });
});
