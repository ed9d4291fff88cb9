//! The cluster's sans-IO core: everything a node decides, as plain state machines fed bytes and
//! time. No tokio, no sockets, no files, no clock of its own: the agent's shell
//! (`edge/agent/src/cluster/`) owns I/O and passes `now` in.
//!
//! - `identity`: node keys and ids; `envelope`: the signed envelope and its replay window;
//!   `datagram`: the sealed datagram for small one-way messages; `wire`: requests, replies,
//!   datagram bodies, calls and join messages.
//! - `membership`: foca (SWIM); `lease`: election and the bot lease.
//! - `shared`: the gossiped state and its merge; `sync`: anti-entropy.
//! - `inbox`: which inbound envelopes are accepted; `admission`: joins and invite redemption;
//!   `invite`: join links and the handshake's crypto; `names`: the node-name rule; `table`: the
//!   cluster as a node sees it.

pub mod admission;
pub mod datagram;
pub mod envelope;
pub mod identity;
pub mod inbox;
pub mod invite;
pub mod lease;
pub mod membership;
pub mod shared;
pub mod sync;
pub mod table;
pub mod wire;
