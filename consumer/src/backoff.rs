//! Capped exponential backoff with full jitter: how every retry of the
//! consumer waits (ClickHouse writes, the dead-letter topic, replay).

use std::time::Duration;

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// The policy of every retry of ClickHouse and of the dead-letter topic:
    /// 200 ms doubling up to 30 s, so a long outage costs a request every
    /// 15–30 s and a blip a fraction of a second.
    pub fn standard() -> Backoff {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
    }

    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            initial,
            max,
            attempt: 0,
            seed,
        }
    }

    /// The next delay: uniformly random in [cap/2, cap], cap = min(max, initial·2^attempt).
    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: jitter needs no cryptographic quality.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = cap / 2;
        half + Duration::from_nanos(self.seed % (half.as_nanos() as u64 + 1))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        assert!(
            delays[11] >= Duration::from_millis(2500),
            "{:?}",
            delays[11]
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
