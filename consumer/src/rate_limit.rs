//! The rows-per-second budget (governor). The deployment sets one global
//! budget; each consumer takes the share of it that matches the share of
//! partitions it owns, recomputed whenever its assignment changes, so the
//! group as a whole stays within the budget as consumers come and go.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

#[derive(Debug)]
pub struct RowBudget {
    global_per_second: u32,
    max_batch_rows: u32,
    owned: usize,
    total: usize,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl RowBudget {
    /// `global_per_second == 0` disables the limit.
    pub fn new(global_per_second: u32, max_batch_rows: u32) -> RowBudget {
        RowBudget {
            global_per_second,
            max_batch_rows,
            owned: 0,
            total: 0,
            limiter: None,
        }
    }

    /// This consumer's rows per second for `owned` of `total` partitions (at least 1 when limited).
    pub fn share(&self) -> u32 {
        if self.global_per_second == 0 {
            return 0;
        }
        if self.total == 0 {
            // The topics' partitions are not known yet (the first metadata
            // sample is on its way): only a consumer that owns some may write.
            return if self.owned == 0 {
                1
            } else {
                self.global_per_second
            };
        }
        let share = u64::from(self.global_per_second) * self.owned as u64 / self.total as u64;
        u32::try_from(share).unwrap_or(u32::MAX).max(1)
    }

    /// Updates the partition share; rebuilds the limiter when it changed.
    /// Owning nothing keeps the share in force: an eager rebalance revokes
    /// every partition before it assigns the new ones, and a batch gathered
    /// just before must not wait at a trickle for the next assignment.
    pub fn set_partitions(&mut self, owned: usize, total: usize) {
        if owned == 0 && self.limiter.is_some() {
            return;
        }
        if (owned, total) == (self.owned, self.total)
            && (self.limiter.is_some() || self.global_per_second == 0)
        {
            return;
        }
        self.owned = owned;
        self.total = total;
        self.limiter = NonZeroU32::new(self.share()).map(|rate| {
            // A batch may be larger than a second's budget: allow bursts of one batch.
            let burst = NonZeroU32::new(rate.get().max(self.max_batch_rows)).unwrap_or(rate);
            let limiter = RateLimiter::direct(Quota::per_second(rate).allow_burst(burst));
            // A new limiter starts full: without draining it, every rebalance
            // would grant a whole burst (a batch, up to --batch-max-rows) for free.
            let _ = limiter.check_n(burst);
            limiter
        });
        if self.global_per_second > 0 {
            tracing::info!(
                owned,
                total,
                rows_per_second = self.share(),
                "rate-limit share"
            );
        }
    }

    /// Waits until `rows` may be written; returns how long it waited.
    pub async fn acquire(&self, rows: usize) -> Duration {
        let Some(limiter) = &self.limiter else {
            return Duration::ZERO;
        };
        let started = Instant::now();
        let mut left = u32::try_from(rows).unwrap_or(u32::MAX);
        // Take the budget in burst-sized pieces, so a huge batch waits instead of failing.
        while left > 0 {
            let piece = left.min(self.max_batch_rows.max(1));
            if let Some(n) = NonZeroU32::new(piece)
                && limiter.until_n_ready(n).await.is_err()
            {
                break; // larger than the burst: cannot happen with pieces of max_batch_rows
            }
            left -= piece;
        }
        started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_follows_the_owned_partitions() {
        let mut budget = RowBudget::new(10_000, 1_000);
        budget.set_partitions(4, 4);
        assert_eq!(budget.share(), 10_000);
        budget.set_partitions(1, 4);
        assert_eq!(budget.share(), 2_500);
        budget.set_partitions(0, 4);
        assert_eq!(
            budget.share(),
            2_500,
            "a rebalance in progress (nothing owned) keeps the share in force"
        );
        assert_eq!(RowBudget::new(0, 10).share(), 0, "0 = unlimited");
        let mut starting = RowBudget::new(10_000, 1_000);
        starting.set_partitions(0, 0);
        assert_eq!(
            starting.share(),
            1,
            "nothing owned, nothing known: a trickle"
        );
    }

    #[tokio::test]
    async fn writes_beyond_the_budget_wait_also_right_after_a_new_share() {
        let mut budget = RowBudget::new(2_000, 100);
        budget.set_partitions(1, 1);
        // The bucket starts empty: 500 rows take ~0.25 s at 2,000 rows/s.
        let waited = budget.acquire(500).await;
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        // A rebalance (new share) grants nothing for free either.
        budget.set_partitions(1, 2);
        let waited = budget.acquire(500).await;
        assert!(waited >= Duration::from_millis(450), "{waited:?}");
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let budget = RowBudget::new(0, 100);
        assert_eq!(budget.acquire(1_000_000).await, Duration::ZERO);
    }
}
