//! Bounded retries for one provider request: a rate-limiter permit for every attempt,
//! exponential backoff with jitter (backon, `pipeline::retry::RetryPolicy`), at most
//! `max_attempts` attempts within `deadline`, never sooner than a `Retry-After`.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::Retryable;
use tokio_util::sync::CancellationToken;

use super::error::{ProviderError, RetryClass};
use crate::pipeline::limit::Limiter;
use crate::pipeline::retry::RetryPolicy;

/// Requests and retries of a run, for the summary.
#[derive(Debug, Default)]
pub struct RequestCounters {
    /// Requests sent (every attempt).
    pub requests: AtomicU64,
    /// Attempts after the first of a request.
    pub retries: AtomicU64,
}

/// How one request ended when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A final error (or one that stops the provider); no retry can help.
    Final(ProviderError),
    /// Transient errors until the attempts or the deadline ran out.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error, or why the deadline passed.
        last_error: String,
        /// Whether any failed attempt may have been processed by the provider.
        maybe_delivered: bool,
    },
    /// The run is stopping; the request was abandoned.
    Stopped,
}

impl Failure {
    /// The message for the source row.
    pub fn message(&self) -> String {
        match self {
            Failure::Final(error) => error.to_string(),
            Failure::GaveUp {
                attempts,
                last_error,
                ..
            } => format!("gave up after {attempts} attempts: {last_error}"),
            Failure::Stopped => "not sent: the run was stopped".to_string(),
        }
    }
}

/// Retries requests to one provider.
pub struct Retrier {
    limiter: Limiter,
    policy: RetryPolicy,
    max_attempts: u32,
    deadline: Duration,
    counters: Arc<RequestCounters>,
    abort: CancellationToken,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier")
            .field("max_attempts", &self.max_attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Retrier {
    /// A retrier with its own limiter.
    pub fn new(
        limiter: Limiter,
        policy: RetryPolicy,
        max_attempts: u32,
        deadline: Duration,
        counters: Arc<RequestCounters>,
        abort: CancellationToken,
    ) -> Self {
        Retrier {
            limiter,
            policy,
            max_attempts: max_attempts.max(1),
            deadline,
            counters,
            abort,
        }
    }

    /// Runs `attempt` until it succeeds, fails for good, or the budget is used up.
    pub async fn run<T, F, Fut>(&self, attempt: F) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let attempts = AtomicU32::new(0);
        let delivered = std::sync::atomic::AtomicBool::new(false);
        let last: Mutex<Option<ProviderError>> = Mutex::new(None);
        let one = || async {
            self.limiter.until_ready().await;
            if attempts.fetch_add(1, Ordering::Relaxed) > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let result = attempt().await;
            if let Err(error) = &result {
                tracing::debug!(%error, "provider request failed");
                if error.maybe_delivered() {
                    delivered.store(true, Ordering::Relaxed);
                }
                if let Ok(mut slot) = last.lock() {
                    *slot = Some(error.clone());
                }
            }
            result
        };
        let backoff = self
            .policy
            .builder()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        let retrying = one
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(ProviderError::is_retryable)
            .adjust(|error, delay| match error.classify() {
                RetryClass::Throttled(Some(wait)) => delay.map(|d| d.max(wait)),
                _ => delay,
            });
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(self.deadline, retrying) => outcome,
            () = self.abort.cancelled() => return Err(Failure::Stopped),
        };
        let gave_up = |last_error: String| Failure::GaveUp {
            attempts: attempts.load(Ordering::Relaxed),
            last_error,
            maybe_delivered: delivered.load(Ordering::Relaxed),
        };
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if error.is_retryable() => Err(gave_up(error.to_string())),
            Ok(Err(error)) => Err(Failure::Final(error)),
            Err(_deadline) => {
                let last = last.lock().ok().and_then(|l| l.clone());
                Err(gave_up(last.map_or_else(
                    || "no answer before the deadline".to_string(),
                    |e| e.to_string(),
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn retrier(max_attempts: u32) -> (Retrier, Arc<RequestCounters>) {
        let counters = Arc::new(RequestCounters::default());
        let retrier = Retrier::new(
            Limiter::new(1000.0, NonZeroU32::new(100).unwrap()),
            RetryPolicy {
                min_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                jitter: true,
            },
            max_attempts,
            Duration::from_secs(60),
            Arc::clone(&counters),
            CancellationToken::new(),
        );
        (retrier, counters)
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let (retrier, counters) = retrier(5);
        let calls = AtomicU32::new(0);
        let result = retrier
            .run(|| async {
                match calls.fetch_add(1, Ordering::Relaxed) {
                    0 => Err(ProviderError::Locked),
                    1 => Err(ProviderError::Server {
                        status: 503,
                        message: String::new(),
                    }),
                    _ => Ok("done"),
                }
            })
            .await;
        assert_eq!(result, Ok("done"));
        assert_eq!(counters.requests.load(Ordering::Relaxed), 3);
        assert_eq!(counters.retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded_and_final_errors_are_not_retried() {
        let (retrier, counters) = retrier(3);
        let result: Result<(), _> = retrier.run(|| async { Err(ProviderError::Timeout) }).await;
        assert_eq!(
            result,
            Err(Failure::GaveUp {
                attempts: 3,
                last_error: ProviderError::Timeout.to_string(),
                maybe_delivered: true,
            })
        );
        let rejected = ProviderError::Rejected {
            status: 400,
            message: "bad".into(),
        };
        let result: Result<(), _> = retrier.run(|| async { Err(rejected.clone()) }).await;
        assert_eq!(result, Err(Failure::Final(rejected)));
        assert_eq!(counters.requests.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_lower_bound_on_the_wait() {
        let (retrier, _) = retrier(2);
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let result = retrier
            .run(|| async {
                if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                    Err(ProviderError::Throttled {
                        retry_after: Some(Duration::from_secs(7)),
                    })
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(result, Ok(()));
        assert!(start.elapsed() >= Duration::from_secs(7));
    }
}
