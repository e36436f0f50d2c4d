//! Exponential backoff, the one used everywhere Herald waits after a failure: delivery
//! retries (with full jitter), the Pub/Sub pull loop and the Google lifecycle's calls.
//!
//! A pure function of the attempt number rather than a retry loop (such as `backon`'s):
//! a delivery's attempts are counted in the journal and its next try is scheduled from
//! that count, possibly by another process after a restart.

use std::time::Duration;

use rand::Rng;

/// Waits of `initial · 2^(attempt-1)`, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The wait after failure number `attempt` (1 for the first failure).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A random wait between zero and [`ceiling`](Self::ceiling) ("full jitter"), which
    /// spreads the retries of many failures instead of synchronizing them.
    pub fn jittered(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let millis = u64::try_from(self.ceiling(attempt).as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rng.random_range(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn doubles_from_initial_up_to_max() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(10), Duration::from_secs(2));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2), "no overflow");
    }

    #[test]
    fn jitter_stays_under_the_ceiling_and_spreads() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut rng = StdRng::seed_from_u64(7);
        let samples: Vec<Duration> = (0..1000).map(|_| b.jittered(3, &mut rng)).collect();
        assert!(samples.iter().all(|d| *d <= Duration::from_millis(400)));
        let low = samples
            .iter()
            .filter(|d| **d < Duration::from_millis(100))
            .count();
        let high = samples
            .iter()
            .filter(|d| **d > Duration::from_millis(300))
            .count();
        assert!(
            low > 150 && high > 150,
            "spread over the whole range: {low} low, {high} high"
        );
    }
}
