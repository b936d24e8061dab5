//! A seeded generator (SplitMix64): the same seed gives the same profiles on
//! every machine and every run, without a dependency for a few lines.

/// SplitMix64 (Steele, Lea and Flood, 2014): one 64-bit state, full period,
/// good enough statistics for synthetic data.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// A generator for one item of a family (`seed`, `parts`): independent
    /// streams for every (pod, window), every stack, … from one run seed.
    pub fn derived(seed: u64, parts: &[u64]) -> SplitMix64 {
        let mut state = SplitMix64::new(seed);
        let mut mixed = state.next_u64();
        for &p in parts {
            state = SplitMix64(mixed ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            mixed = state.next_u64();
        }
        SplitMix64(mixed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` (53 bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (0 when `n` is 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// One of `items`, by their weights (the first when all weigh 0).
    pub fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> &'a T {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut pick = self.below(total);
        for (item, w) in items {
            if pick < u64::from(*w) {
                return item;
            }
            pick -= u64::from(*w);
        }
        &items[0].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_derived_streams_differ() {
        let a: Vec<u64> = (0..4).map(|_| SplitMix64::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let (mut x, mut y) = (
            SplitMix64::derived(7, &[1, 2]),
            SplitMix64::derived(7, &[2, 1]),
        );
        assert_ne!(x.next_u64(), y.next_u64());
        let mut r = SplitMix64::new(1);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            let b = r.between(15, 120);
            assert!((15..=120).contains(&b));
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }
}
