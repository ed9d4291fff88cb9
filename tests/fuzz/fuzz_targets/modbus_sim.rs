//! Bytes a master sends the simulator: RTU through its real server loop (framing, CRC, request
//! parsing, answers, faults off), and the MBAP header and PDU parsers of its TCP server.
#![no_main]

use constella_modbus::pdu::{self, Mbap, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Request::parse(data);
    let _ = pdu::rtu_request_len(data);
    let _ = pdu::rtu_open(data);
    if let Some(header) = data.first_chunk::<7>() {
        let _ = Mbap::parse(header);
        let _ = Request::parse(&data[7..]);
    }
    constella::fuzzing::simulator_rtu(data);
});
