//! When to retry: exponential backoff with jitter. Knows nothing about HTTP; whether to retry
//! is `ApiError::classify`'s job.

use std::time::Duration;

use backon::ExponentialBuilder;

/// Backoff timing for one chunk.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Longest delay between two attempts.
    pub max_delay: Duration,
    /// Randomise delays so that concurrent chunks do not retry in lockstep.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// The backon builder: unbounded attempts (the chunk's deadline ends the retrying).
    pub fn builder(&self) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .without_max_times();
        if self.jitter {
            builder.with_jitter()
        } else {
            builder
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    #[test]
    fn delays_double_up_to_the_maximum() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            jitter: false,
        };
        let delays: Vec<Duration> = policy.builder().build().take(6).collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_one_extra_delay() {
        let policy = RetryPolicy {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            jitter: true,
        };
        for (i, delay) in policy.builder().build().take(5).enumerate() {
            let base = 100u128 << i;
            assert!(
                delay.as_millis() >= base && delay.as_millis() <= 2 * base,
                "{i}: {delay:?}"
            );
        }
    }
}
