//! CPU samples of one (pod, window): `samples` draws over the stacks with Zipf
//! weights, so counts are whole numbers of samples, a few stacks carry most of
//! the time, and tail stacks drawn 0 times have no row — as a 100 Hz sampler
//! on two busy cores produces them.

use super::rng::SplitMix64;

/// Stream tags: each draw family gets its own generators from the run seed.
const RANKING_STREAM: u64 = 1;
const WINDOW_STREAM: u64 = 2;

/// How far a pod's ranking may move a stack from its global rank: pods run the
/// same code but not the same mix of requests.
const RANK_JITTER: u64 = 8;

/// The cumulative Zipf distribution over ranks `0..n`: `P(rank r) ∝ (r + 1)^-s`.
#[derive(Debug, Clone)]
pub struct ZipfTable {
    cdf: Vec<f64>,
}

impl ZipfTable {
    pub fn new(ranks: usize, exponent: f64) -> ZipfTable {
        let mut cdf = Vec::with_capacity(ranks);
        let mut sum = 0.0;
        for r in 0..ranks {
            sum += ((r + 1) as f64).powf(-exponent);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        ZipfTable { cdf }
    }

    pub fn ranks(&self) -> usize {
        self.cdf.len()
    }

    /// One rank (0 is the heaviest).
    pub fn draw(&self, rng: &mut SplitMix64) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.ranks().saturating_sub(1))
    }
}

/// Which stack holds each rank on `pod`: the global order with every rank
/// swapped with one of its next [`RANK_JITTER`] neighbours.
pub fn pod_ranking(stacks: usize, seed: u64, pod: u32) -> Vec<u32> {
    let mut ranking: Vec<u32> = (0..stacks as u32).collect();
    let mut rng = SplitMix64::derived(seed, &[RANKING_STREAM, u64::from(pod)]);
    for i in 0..stacks {
        let j = (i + rng.below(RANK_JITTER) as usize).min(stacks - 1);
        ranking.swap(i, j);
    }
    ranking
}

/// Samples per stack (indexed by stack) of one (pod, window): exactly
/// `samples` draws, ranks mapped to stacks through the pod's `ranking`.
pub fn window_counts(
    table: &ZipfTable,
    ranking: &[u32],
    samples: u32,
    seed: u64,
    pod: u32,
    window: u32,
) -> Vec<u32> {
    let mut counts = vec![0u32; ranking.len()];
    let mut rng = SplitMix64::derived(seed, &[WINDOW_STREAM, u64::from(pod), u64::from(window)]);
    for _ in 0..samples {
        let rank = table.draw(&mut rng);
        counts[ranking[rank] as usize] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_window_gets_exactly_its_samples_and_some_stacks_none() {
        let table = ZipfTable::new(1500, 1.1);
        for pod in 0..3 {
            let ranking = pod_ranking(1500, 42, pod);
            for window in 0..3 {
                let counts = window_counts(&table, &ranking, 12_000, 42, pod, window);
                assert_eq!(counts.iter().map(|&c| u64::from(c)).sum::<u64>(), 12_000);
                let empty = counts.iter().filter(|&&c| c == 0).count();
                assert!(empty > 0 && empty < 1500, "{empty} stacks without samples");
            }
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds() {
        let table = ZipfTable::new(300, 1.1);
        let ranking = pod_ranking(300, 9, 4);
        assert_eq!(ranking, pod_ranking(300, 9, 4));
        let a = window_counts(&table, &ranking, 5_000, 9, 4, 17);
        assert_eq!(a, window_counts(&table, &ranking, 5_000, 9, 4, 17));
        assert_ne!(a, window_counts(&table, &ranking, 5_000, 10, 4, 17));
        assert_ne!(a, window_counts(&table, &ranking, 5_000, 9, 4, 18));
    }

    #[test]
    fn a_pod_ranking_is_a_permutation_close_to_the_global_order() {
        let ranking = pod_ranking(1500, 42, 3);
        let mut sorted = ranking.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1500).collect::<Vec<u32>>());
        assert_ne!(ranking, sorted);
        let moved: f64 = ranking
            .iter()
            .enumerate()
            .map(|(rank, &stack)| (rank as f64 - f64::from(stack)).abs())
            .sum::<f64>()
            / 1500.0;
        assert!(moved < 2.0 * RANK_JITTER as f64, "mean move {moved}");
    }

    /// Counts by rank fall as a power law of exponent ≈ s: the least-squares
    /// slope of log(count) over log(rank) for ranks 1..=50, and the head ratio.
    #[test]
    fn rank_frequencies_are_zipf_like() {
        let s = 1.1;
        let table = ZipfTable::new(1500, s);
        let mut rng = SplitMix64::new(5);
        let mut by_rank = vec![0u64; table.ranks()];
        for _ in 0..1_000_000 {
            by_rank[table.draw(&mut rng)] += 1;
        }
        assert!(by_rank.windows(2).take(10).all(|w| w[0] > w[1]));
        let head = by_rank[0] as f64 / by_rank[9] as f64;
        let expected = 10f64.powf(s);
        assert!(
            (head / expected - 1.0).abs() < 0.1,
            "rank 1 / rank 10 = {head}, expected {expected}"
        );
        let points: Vec<(f64, f64)> = (0..50)
            .map(|r| (((r + 1) as f64).ln(), (by_rank[r] as f64).ln()))
            .collect();
        let n = points.len() as f64;
        let (mx, my) = (
            points.iter().map(|p| p.0).sum::<f64>() / n,
            points.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let slope = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / points.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        assert!((slope + s).abs() < 0.05, "slope {slope}, expected {}", -s);
    }
}
