//! A lock-free latency histogram shared by the examples.

use std::sync::atomic::{AtomicU64, Ordering};

/// A lock-free latency histogram: 64 buckets per power of two of
/// nanoseconds (about 1.5 % resolution), up to 2^40 ns.
pub struct Histogram {
    buckets: [AtomicU64; Histogram::BUCKETS],
    max: AtomicU64,
}

impl Histogram {
    const SUB: u32 = 6;
    const BUCKETS: usize = 41 << Self::SUB;

    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; Histogram::BUCKETS],
            max: AtomicU64::new(0),
        }
    }

    fn index(ns: u64) -> usize {
        let ns = ns.max(1);
        let exp = 63 - ns.leading_zeros();
        let frac = if exp >= Self::SUB {
            (ns >> (exp - Self::SUB)) & ((1 << Self::SUB) - 1)
        } else {
            (ns << (Self::SUB - exp)) & ((1 << Self::SUB) - 1)
        };
        (((exp as usize) << Self::SUB) | frac as usize).min(Self::BUCKETS - 1)
    }

    fn lower_bound(index: usize) -> u64 {
        let exp = (index >> Self::SUB) as u32;
        let frac = (index & ((1 << Self::SUB) - 1)) as u64;
        if exp >= Self::SUB {
            ((1 << Self::SUB) | frac) << (exp - Self::SUB)
        } else {
            ((1 << Self::SUB) | frac) >> (Self::SUB - exp)
        }
    }

    pub fn record(&self, ns: u64) {
        self.buckets[Self::index(ns)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn percentile(&self, p: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::lower_bound(i);
            }
        }
        self.max()
    }

    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }
}
