//! Configuration files as an operator might write them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        constella::fuzzing::config(text);
    }
});
