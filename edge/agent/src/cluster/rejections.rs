//! Refused cluster input, counted by reason (shown in the cluster table and `constella status`)
//! and logged through a throttle: the listener's screen and the node's inbox both report here.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use constella_cluster::identity::NodeId;

use crate::throttle::Throttle;

#[derive(Default)]
pub(crate) struct Rejections {
    counts: Mutex<BTreeMap<String, u64>>,
    throttle: Throttle,
}

impl Rejections {
    /// Counts one refused message; logs at most one line per reason a minute.
    pub(crate) fn note(&self, code: &'static str, from: Option<NodeId>, why: &dyn Display) {
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(code.to_string())
            .or_default() += 1;
        if let Some(unlogged) = self.throttle.due(code, Instant::now()) {
            tracing::warn!(from = ?from, reason = %why, unlogged, "rejected a cluster message");
        }
    }

    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
