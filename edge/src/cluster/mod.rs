//! The cluster: identity, signed messages, membership, the bot lease and node-to-node calls.

mod envelope;
mod identity;
mod lease;
