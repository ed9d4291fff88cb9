//! Query strings of the history, metrics and events endpoints.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data) {
        constella::fuzzing::api_query(query);
    }
});
