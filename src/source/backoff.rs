//! Exponential backoff with full jitter: a pure policy, tested without I/O.

use std::time::Duration;

use rand::Rng;

/// Delays between retries: `random(0, min(max, base * 2^attempt))`, never zero.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A policy starting at `base`, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next retry, drawing the jitter from `rng`.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ceiling_ms = ceiling.as_millis().max(1) as u64;
        Duration::from_millis(rng.random_range((ceiling_ms / 2).max(1)..=ceiling_ms))
    }

    /// Retries made since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    proptest! {
        #[test]
        fn delays_grow_but_stay_under_the_cap(seed in any::<u64>(), base_ms in 1u64..500, max_ms in 500u64..20_000) {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut backoff = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let mut ceiling = base_ms;
            for _ in 0..40 {
                let d = backoff.next_delay(&mut rng).as_millis() as u64;
                prop_assert!(d >= 1 && d <= ceiling.min(max_ms), "{d} > {ceiling}");
                prop_assert!(d >= ceiling.min(max_ms) / 2);
                ceiling = ceiling.saturating_mul(2);
            }
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
        assert!(backoff.next_delay(&mut rng) <= Duration::from_millis(100));
    }
}
