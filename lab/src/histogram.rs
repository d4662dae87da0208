//! A fixed-size log-linear histogram of non-negative integers (nanoseconds, usually).
//!
//! Values are grouped by their power of two and, inside it, into [`SUB_BUCKETS`] equal slices,
//! so a quantile is exact to better than 1/[`SUB_BUCKETS`] of its value (< 0.8 %) whatever the
//! range, in constant memory (64 x 128 counters). Values below [`SUB_BUCKETS`] are exact.

/// Slices per power of two.
pub const SUB_BUCKETS: usize = 128;
const SUB_BITS: u32 = 7;
const GROUPS: usize = 64 - SUB_BITS as usize + 1;

/// Counts of values in log-linear buckets; see the module doc.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn bucket_of(v: u64) -> usize {
    if v < SUB_BUCKETS as u64 {
        return v as usize;
    }
    let top = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = top - SUB_BITS + 1;
    let group = shift as usize; // 1..
    let sub = (v >> shift) as usize - SUB_BUCKETS / 2; // 0..64 (the top bit is implied)
    SUB_BUCKETS + (group - 1) * (SUB_BUCKETS / 2) + sub
}

/// Lowest and highest value that fall in bucket `b`.
fn bucket_range(b: usize) -> (u64, u64) {
    if b < SUB_BUCKETS {
        return (b as u64, b as u64);
    }
    let group = (b - SUB_BUCKETS) / (SUB_BUCKETS / 2) + 1;
    let sub = (b - SUB_BUCKETS) % (SUB_BUCKETS / 2) + SUB_BUCKETS / 2;
    let lo = (sub as u64) << group;
    let hi = lo + ((1u64 << group) - 1);
    (lo, hi)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; SUB_BUCKETS + GROUPS * (SUB_BUCKETS / 2)],
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
        self.sum += v as u128;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Largest value recorded (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Smallest value recorded (exact), 0 when empty.
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Mean of the values recorded (exact), 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// The value at quantile `q` in 0..=1 (the middle of its bucket, clamped to the recorded
    /// min/max), or 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bucket_range(b);
                return (lo + (hi - lo) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_in_order() {
        let mut last = 0;
        for v in (0u64..5000).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            let (lo, hi) = bucket_range(b);
            assert!(lo <= v && v <= hi, "v={v} b={b} lo={lo} hi={hi}");
            assert!(b >= last);
            last = b;
        }
    }

    #[test]
    fn quantiles_within_one_percent() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for q in [0.5, 0.9, 0.99] {
            let want = q * 100_000_000.0;
            let got = h.quantile(q) as f64;
            assert!(
                (got - want).abs() / want < 0.01,
                "q={q} got={got} want={want}"
            );
        }
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.count(), 100_000);
        assert!((h.mean() - 50_000_500.0).abs() < 1.0);
    }

    #[test]
    fn empty_and_small_values() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), 0);
        h.record(3);
        h.record(5);
        assert_eq!(h.quantile(0.5), 3);
        assert_eq!(h.quantile(1.0), 5);
    }
}
