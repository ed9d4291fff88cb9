//! The Modbus client layer: read plans (`plan`), per-bus scheduling with backoff (`schedule`),
//! connections and error classification (`link`), and the per-bus runner that ties them to the
//! device table (`bus`).

mod bus;
pub(crate) mod link;
mod schedule;

#[cfg(test)]
pub(crate) use bus::over_pipe;
pub(crate) use bus::start;
