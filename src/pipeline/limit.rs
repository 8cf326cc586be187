//! The rate limiter shared by every in-flight request, built on governor.
//!
//! It runs on tokio's clock rather than governor's default one, so that tests with paused
//! tokio time can check the rate exactly, and it waits with `tokio::time::sleep`.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// A clock that reads tokio's (pausable) time.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// One permit per request attempt, at most `rate` per second after a burst of `burst`.
pub struct Limiter {
    inner: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Instant>>,
}

impl Limiter {
    /// A limiter for `rate_per_second` (> 0) with the given burst. The configuration checks
    /// both ([`crate::config::parse_rate_and_burst`]); a value out of range is clamped here
    /// rather than panicking.
    pub fn new(rate_per_second: f64, burst: NonZeroU32) -> Self {
        // One permit every 1/rate seconds; at least a nanosecond so the quota is valid, and
        // short enough that a full burst (burst × period) fits governor's nanosecond clock.
        let period = Duration::try_from_secs_f64(1.0 / rate_per_second)
            .unwrap_or(Duration::MAX)
            .clamp(
                Duration::from_nanos(1),
                crate::config::MAX_LIMITER_WINDOW / burst.get(),
            );
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Limiter {
            inner: RateLimiter::direct_with_clock(quota, TokioClock),
        }
    }

    /// Waits until a permit is available and takes it.
    pub async fn until_ready(&self) {
        loop {
            match self.inner.check() {
                Ok(()) => return,
                Err(not_until) => {
                    tokio::time::sleep(not_until.wait_time_from(TokioClock.now())).await
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// With paused time, 4 tasks sharing a 2/s limiter with burst 1 get 21 permits in the first
    /// 10 virtual seconds (one at t=0, then one every 500 ms), never more.
    #[tokio::test(start_paused = true)]
    async fn limiter_holds_the_rate_across_tasks() {
        let limiter = Arc::new(Limiter::new(2.0, NonZeroU32::MIN));
        let start = tokio::time::Instant::now();
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (limiter, times) = (limiter.clone(), times.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    limiter.until_ready().await;
                    times.lock().unwrap().push(start.elapsed());
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let mut times = times.lock().unwrap().clone();
        times.sort();
        assert_eq!(times.len(), 40);
        // Every pair of consecutive permits is at least 500 ms apart.
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(500), "{pair:?}");
        }
        let in_first_10s = times
            .iter()
            .filter(|t| **t <= Duration::from_secs(10))
            .count();
        assert_eq!(in_first_10s, 21);
    }

    /// A rate too low for a `Duration` (1e-20/s) or a burst that would overflow governor's
    /// nanosecond clock is clamped, not a panic.
    #[tokio::test(start_paused = true)]
    async fn extreme_rates_and_bursts_do_not_panic() {
        for (rate, burst) in [
            (1e-20, NonZeroU32::MIN),
            (1e-10, NonZeroU32::MAX),
            (0.0, NonZeroU32::MIN),
            (f64::NAN, NonZeroU32::MIN),
            (1e300, NonZeroU32::MAX),
        ] {
            let limiter = Limiter::new(rate, burst);
            // The first permit is free; the limiter's arithmetic runs on the second check.
            limiter.until_ready().await;
            assert!(limiter.inner.check().is_err() || burst.get() > 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_allows_that_many_at_once() {
        let limiter = Limiter::new(1.0, NonZeroU32::new(5).unwrap());
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            limiter.until_ready().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.until_ready().await;
        assert!(start.elapsed() >= Duration::from_secs(1));
    }
}
