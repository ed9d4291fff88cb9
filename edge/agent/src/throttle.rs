//! Log lines about outside input, throttled: what a stranger sends decides how often something
//! happens, so it must not decide how much is logged (a full disk is one of its effects). Each
//! reason gets at most one line a minute; the line says how many went unlogged before it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one line per reason in this long.
pub(crate) const PERIOD: Duration = Duration::from_secs(60);

/// Per-reason throttles.
#[derive(Default)]
pub(crate) struct Throttle {
    reasons: Mutex<HashMap<&'static str, Reason>>,
}

struct Reason {
    logged_at: Instant,
    unlogged: u64,
}

impl Throttle {
    /// Notes one occurrence of `reason` at `now`; `Some(n)` if a line is due now, `n` being the
    /// occurrences since the last line that were not logged.
    pub(crate) fn due(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut reasons = self.reasons.lock().unwrap_or_else(PoisonError::into_inner);
        match reasons.get_mut(reason) {
            Some(r) if now.saturating_duration_since(r.logged_at) < PERIOD => {
                r.unlogged += 1;
                None
            }
            Some(r) => {
                let unlogged = r.unlogged;
                *r = Reason {
                    logged_at: now,
                    unlogged: 0,
                };
                Some(unlogged)
            }
            None => {
                reasons.insert(
                    reason,
                    Reason {
                        logged_at: now,
                        unlogged: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_period_with_the_count_it_skipped() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(throttle.due("bad_signature", t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(
                throttle.due("bad_signature", t0 + Duration::from_millis(i)),
                None
            );
        }
        assert_eq!(throttle.due("replayed", t0), Some(0), "reasons are apart");
        assert_eq!(throttle.due("bad_signature", t0 + PERIOD), Some(1000));
        assert_eq!(throttle.due("bad_signature", t0 + PERIOD), None);
    }
}
