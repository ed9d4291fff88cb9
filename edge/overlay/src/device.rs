//! The smoltcp side of the tunnel: an IP-level `phy::Device` over two bounded queues.
//!
//! It never drops. When the outbound queue is full `transmit` says so, smoltcp keeps the data in
//! its socket buffers, and writers wait: backpressure instead of the loss that makes smoltcp
//! slow down (smoltcp issue 949) and instead of the unbounded growth onetun shows under load.

use std::collections::VecDeque;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// WireGuard's usual inner MTU: 1500 minus 80 bytes of outer IPv6, UDP and WireGuard headers.
pub const MTU: usize = 1420;

pub(crate) struct QueueDevice {
    /// Decrypted packets for this node, oldest first.
    pub(crate) inbound: VecDeque<Vec<u8>>,
    /// Packets smoltcp emitted, waiting to be encrypted.
    pub(crate) outbound: VecDeque<Vec<u8>>,
    capacity: usize,
}

impl QueueDevice {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            inbound: VecDeque::with_capacity(capacity),
            outbound: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub(crate) fn inbound_room(&self) -> usize {
        self.capacity.saturating_sub(self.inbound.len())
    }

    fn outbound_has_room(&self) -> bool {
        self.outbound.len() < self.capacity
    }
}

pub(crate) struct RxToken(Vec<u8>);

pub(crate) struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::Device for QueueDevice {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        // Taking a packet in may need a reply (an ACK); hold it back until there is room.
        if !self.outbound_has_room() {
            return None;
        }
        let packet = self.inbound.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.outbound)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        self.outbound_has_room()
            .then_some(TxToken(&mut self.outbound))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = MTU;
        capabilities
    }
}

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, length: usize, f: F) -> R {
        let mut packet = vec![0; length];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}
