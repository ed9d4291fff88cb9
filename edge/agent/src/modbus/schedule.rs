//! Per-bus poll scheduling, sans-IO: which unit to poll next and when. A unit that fails backs off
//! alone (interval × 2^(failures-1), capped), so the others on the same bus keep their rate.
//!
//! Calling protocol: the shell asks [`Schedule::poll_timeout`] for the next deadline, sleeps until
//! then, takes units from [`Schedule::poll_due`] one at a time, and reports each poll's outcome with
//! [`Schedule::handle_success`] or [`Schedule::handle_failure`]. `now` is monotonic and never
//! decreases between calls.

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    slots: Vec<Slot>,
    max_backoff: Duration,
}

#[derive(Clone, Debug)]
struct Slot {
    interval: Duration,
    next_due: Instant,
    failures: u32,
}

impl Schedule {
    /// Every unit is due at `now`.
    pub(crate) fn new(intervals: &[Duration], max_backoff: Duration, now: Instant) -> Schedule {
        let slots = intervals
            .iter()
            .map(|&interval| Slot {
                interval,
                next_due: now,
                failures: 0,
            })
            .collect();
        Schedule { slots, max_backoff }
    }

    /// The earliest deadline of any unit.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.slots.iter().map(|s| s.next_due).min()
    }

    /// The unit that is most overdue at `now` (lowest index on ties), if any is due.
    pub(crate) fn poll_due(&self, now: Instant) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.next_due <= now)
            .min_by_key(|(i, s)| (s.next_due, *i))
            .map(|(i, _)| i)
    }

    /// Unit `i` answered a poll that started at `started`: back to its normal rate, measured from
    /// the start so that slow polls do not stretch the period.
    pub(crate) fn handle_success(&mut self, i: usize, started: Instant, now: Instant) {
        let slot = &mut self.slots[i];
        slot.failures = 0;
        slot.next_due = (started + slot.interval).max(now);
    }

    /// Unit `i` failed at `now`; returns how long it now waits.
    pub(crate) fn handle_failure(&mut self, i: usize, now: Instant) -> Duration {
        let slot = &mut self.slots[i];
        slot.failures = slot.failures.saturating_add(1);
        let factor = 1u32 << (slot.failures - 1).min(16);
        let wait = slot
            .interval
            .saturating_mul(factor)
            .min(self.max_backoff.max(slot.interval));
        slot.next_due = now + wait;
        wait
    }

    /// Makes unit `i` due at `now` (after a command changed its state).
    pub(crate) fn trigger(&mut self, i: usize, now: Instant) {
        self.slots[i].next_due = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a bus in virtual time: each poll costs `ok_cost` on success, or `timeout` when the
    /// unit is silent. Returns the number of polls per unit.
    fn drive(
        silent: &[bool],
        interval: Duration,
        timeout: Duration,
        run_for: Duration,
    ) -> Vec<u32> {
        let t0 = Instant::now();
        let intervals = vec![interval; silent.len()];
        let mut schedule = Schedule::new(&intervals, Duration::from_secs(60), t0);
        let mut now = t0;
        let mut polls = vec![0u32; silent.len()];
        while now < t0 + run_for {
            let Some(i) = schedule.poll_due(now) else {
                now = schedule.poll_timeout().expect("units exist").max(now);
                continue;
            };
            polls[i] += 1;
            let started = now;
            if silent[i] {
                now += timeout;
                schedule.handle_failure(i, now);
            } else {
                now += Duration::from_millis(500);
                schedule.handle_success(i, started, now);
            }
        }
        polls
    }

    #[test]
    fn a_silent_unit_backs_off_while_the_others_keep_their_rate() {
        let ten_minutes = Duration::from_secs(600);
        let polls = drive(
            &[false, true, false],
            Duration::from_secs(10),
            Duration::from_secs(2),
            ten_minutes,
        );
        let alone = drive(
            &[false, false],
            Duration::from_secs(10),
            Duration::from_secs(2),
            ten_minutes,
        );
        assert_eq!(
            alone,
            [60, 60],
            "one poll per 10 s without a silent neighbour"
        );
        // Silent unit: retries after 10, 20, 40 s, then every 60 s: about 13 attempts, not 60.
        assert!(polls[1] <= 14, "silent unit did not back off: {polls:?}");
        // Its timeouts hold the bus ~26 s in ten minutes, so the others keep ≥ 95 % of their rate.
        assert!(
            polls[0] >= 57 && polls[2] >= 57,
            "healthy units slowed down: {polls:?}"
        );
    }

    #[test]
    fn backoff_doubles_and_caps_and_success_resets() {
        let t0 = Instant::now();
        let mut s = Schedule::new(&[Duration::from_secs(5)], Duration::from_secs(30), t0);
        let waits: Vec<u64> = (0..6).map(|_| s.handle_failure(0, t0).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 30, 30, 30]);
        s.handle_success(0, t0, t0 + Duration::from_secs(1));
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(s.handle_failure(0, t0).as_secs(), 5);
    }

    #[test]
    fn most_overdue_goes_first_and_trigger_makes_due() {
        let t0 = Instant::now();
        let mut s = Schedule::new(
            &[Duration::from_secs(10), Duration::from_secs(3)],
            Duration::from_secs(60),
            t0,
        );
        assert_eq!(s.poll_due(t0), Some(0));
        s.handle_success(0, t0, t0);
        assert_eq!(s.poll_due(t0), Some(1));
        s.handle_success(1, t0, t0);
        assert_eq!(s.poll_due(t0 + Duration::from_secs(4)), Some(1));
        s.trigger(0, t0 + Duration::from_secs(4));
        assert_eq!(
            s.poll_due(t0 + Duration::from_secs(5)),
            Some(1),
            "1 was due at 3 s, 0 at 4 s"
        );
        assert_eq!(s.poll_due(t0 + Duration::from_secs(2)), None);
    }
}
