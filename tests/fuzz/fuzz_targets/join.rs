//! A join request as a stranger sends it, the joiner's view of a reply, and invite links and
//! TTLs as an operator pastes them.
#![no_main]

use constella_cluster::admission;
use constella_cluster::envelope::NetworkId;
use constella_cluster::invite::{self, Link};
use constella_cluster::shared::Shared;
use constella_cluster::wire::{self, Hello, JoinReply, Welcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = admission::check(
        data,
        NetworkId([7; 16]),
        &[3; 32],
        &Shared::default(),
        1_800_000_000,
    );
    let _ = wire::decode::<JoinReply>(data);
    let _ = wire::decode::<Hello>(data);
    let _ = wire::decode::<Welcome>(data);
    let _ = invite::open(&[3; 32], data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Link::parse(text);
        let _ = invite::parse_ttl(text);
    }
});
