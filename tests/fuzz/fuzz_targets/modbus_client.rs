//! Bytes a device (or anything on the bus) answers the poller with, RTU or TCP.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&mode, reply)) = data.split_first() {
        constella::fuzzing::modbus_reply(mode & 1 == 1, reply);
    }
});
