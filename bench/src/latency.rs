//! Latency recording: an HDR histogram of microseconds per measured quantity, merged across
//! client tasks at the end of a run, and the percentile summary the reports print.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track exactly: anything longer is recorded as this.
const HIGHEST_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds (1 µs to 1 h, three significant digits).
#[derive(Debug, Clone)]
pub struct Latency {
    /// The histogram; values are microseconds.
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2 × low,
        // 3 significant figures), so this cannot fail.
        let histogram = Histogram::new_with_bounds(1, HIGHEST_MICROS, 3)
            .unwrap_or_else(|e| unreachable!("constant histogram bounds rejected: {e}"));
        Self { histogram }
    }

    /// Records one latency (longer than an hour counts as an hour).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram
            .saturating_record(micros.clamp(1, HIGHEST_MICROS));
    }

    /// Adds every value of `other` to this histogram.
    pub fn merge(&mut self, other: &Latency) {
        // Both have the same bounds, so adding cannot fail; saturate rather than panic.
        let _ = self.histogram.add(&other.histogram);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The latency at quantile `q` (0.0–1.0), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// The percentile summary.
    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: self.count(),
            mean_ms: self.histogram.mean() / 1000.0,
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: ms(self.histogram.max()),
        }
    }
}

/// A latency distribution in milliseconds, as the reports print it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl LatencySummary {
    /// One line for a table cell: `p50 1.20  p90 3.40  p99 9.10  max 20.0 ms (n=1234)`.
    pub fn line(&self) -> String {
        if self.count == 0 {
            return "no samples".into();
        }
        format!(
            "p50 {}  p90 {}  p99 {}  max {} ms  (n={})",
            ms(self.p50_ms),
            ms(self.p90_ms),
            ms(self.p99_ms),
            ms(self.max_ms),
            self.count
        )
    }
}

/// Latencies by when they ended: a run's interval after interval, so that a stall can be
/// placed in time (and set beside the server's own logs and metrics) instead of only
/// raising a percentile.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The interval's length.
    slot: Duration,
    slots: Vec<Slot>,
}

/// One interval of a [`Timeline`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Slot {
    /// Latencies that ended in the interval.
    pub count: u64,
    /// Of those, longer than 1 ms.
    pub over_1ms: u64,
    /// Of those, longer than 4 ms.
    pub over_4ms: u64,
    /// The longest, µs.
    pub max_us: u64,
}

impl Timeline {
    /// An empty timeline of `slot`-long intervals (at least 1 ms).
    pub fn new(slot: Duration) -> Self {
        Self {
            slot: slot.max(Duration::from_millis(1)),
            slots: Vec::new(),
        }
    }

    /// Records a latency that ended `since_start` into the run.
    pub fn record(&mut self, since_start: Duration, latency: Duration) {
        let index =
            usize::try_from(since_start.as_nanos() / self.slot.as_nanos()).unwrap_or(usize::MAX);
        // A run lasts at most ten minutes, so this bounds the vector long before memory does.
        if index >= 1 << 20 {
            return;
        }
        if self.slots.len() <= index {
            self.slots.resize(index + 1, Slot::default());
        }
        let slot = &mut self.slots[index];
        slot.count += 1;
        slot.over_1ms += u64::from(latency > Duration::from_millis(1));
        slot.over_4ms += u64::from(latency > Duration::from_millis(4));
        slot.max_us = slot
            .max_us
            .max(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds `other`'s intervals to this one's (both with the same interval length).
    pub fn merge(&mut self, other: &Timeline) {
        if self.slots.len() < other.slots.len() {
            self.slots.resize(other.slots.len(), Slot::default());
        }
        for (mine, theirs) in self.slots.iter_mut().zip(&other.slots) {
            mine.count += theirs.count;
            mine.over_1ms += theirs.over_1ms;
            mine.over_4ms += theirs.over_4ms;
            mine.max_us = mine.max_us.max(theirs.max_us);
        }
    }

    /// The interval's length.
    pub fn slot(&self) -> Duration {
        self.slot
    }

    /// The intervals, from the run's start.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }
}

/// Milliseconds with a precision that suits their size.
pub fn ms(value: f64) -> String {
    if value < 10.0 {
        format!("{value:.2}")
    } else if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_recorded_latencies() {
        let mut a = Latency::new();
        for ms in 1..=100 {
            a.record(Duration::from_millis(ms));
        }
        let mut total = Latency::new();
        total.merge(&a);
        total.record(Duration::from_secs(7200));
        let s = total.summary();
        assert_eq!(s.count, 101);
        assert!((s.p50_ms - 51.0).abs() < 0.5, "{s:?}");
        assert!((s.max_ms - 3_600_000.0).abs() < 3_600.0, "{s:?}");
        assert!(s.line().contains("p99"));
        assert_eq!(Latency::new().summary().line(), "no samples");
    }

    #[test]
    fn a_timeline_places_each_latency_in_its_interval() {
        let ms = Duration::from_millis;
        let mut a = Timeline::new(ms(100));
        a.record(ms(50), ms(2));
        a.record(ms(250), ms(5));
        let mut b = Timeline::new(ms(100));
        b.record(ms(99), Duration::from_micros(300));
        b.record(ms(260), Duration::from_micros(4200));
        let mut total = Timeline::new(ms(100));
        total.merge(&a);
        total.merge(&b);
        let slot = |count, over_1ms, over_4ms, max_us| Slot {
            count,
            over_1ms,
            over_4ms,
            max_us,
        };
        assert_eq!(
            total.slots(),
            [slot(2, 1, 0, 2000), Slot::default(), slot(2, 2, 2, 5000)]
        );
        assert_eq!(total.slot(), ms(100));
    }
}
