//! Bounded in-memory time series: the last `capacity` values of each series, with summaries over
//! any window. Memory stays fixed however long the agent runs.

use std::collections::{BTreeMap, VecDeque};

/// min, avg, max and last of a series over a window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Summary {
    pub(crate) min: f64,
    pub(crate) avg: f64,
    pub(crate) max: f64,
    pub(crate) last: f64,
    pub(crate) count: usize,
}

#[derive(Debug)]
pub(crate) struct Rings {
    capacity: usize,
    series: BTreeMap<String, VecDeque<(i64, f64)>>,
}

impl Rings {
    pub(crate) fn new(capacity: usize) -> Rings {
        Rings {
            capacity: capacity.max(1),
            series: BTreeMap::new(),
        }
    }

    /// Appends `value` at `ts` (Unix ms) to `series`, dropping the oldest value when full.
    pub(crate) fn push(&mut self, series: &str, ts: i64, value: f64) {
        let ring = self.series.entry(series.to_string()).or_default();
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back((ts, value));
    }

    /// Summary of `series` over values with `ts >= since`.
    pub(crate) fn summary(&self, series: &str, since: i64) -> Option<Summary> {
        let values: Vec<f64> = self
            .series
            .get(series)?
            .iter()
            .filter(|(ts, _)| *ts >= since)
            .map(|(_, v)| *v)
            .collect();
        let last = *values.last()?;
        Some(Summary {
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            avg: values.iter().sum::<f64>() / values.len() as f64,
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            last,
            count: values.len(),
        })
    }

    /// Names of all series, sorted.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.series.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_stay_bounded_and_summarise_windows() {
        let mut rings = Rings::new(3);
        for (ts, v) in [(1, 5.0), (2, 1.0), (3, 3.0), (4, 8.0)] {
            rings.push("cpu.total", ts, v);
        }
        let all = rings.summary("cpu.total", 0).expect("values");
        assert_eq!(
            (all.count, all.min, all.max, all.last, all.avg),
            (3, 1.0, 8.0, 8.0, 4.0),
            "oldest dropped"
        );
        let recent = rings.summary("cpu.total", 3).expect("values");
        assert_eq!((recent.count, recent.avg), (2, 5.5));
        assert_eq!(rings.summary("cpu.total", 5), None);
        assert_eq!(rings.summary("mem.used", 0), None);
        assert_eq!(rings.names().collect::<Vec<_>>(), ["cpu.total"]);
    }
}
