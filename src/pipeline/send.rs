//! Sending one chunk: a limiter permit for every attempt, retries until the chunk's deadline,
//! and splitting a rejected chunk in halves until the bad orders are isolated.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::Retryable;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::limit::Limiter;
use super::retry::RetryPolicy;
use crate::api::{Ack, ApiClient, ApiError, DUNNING_ON_UPDATE_MESSAGE, RetryClass};
use crate::order::PreparedOrder;

/// What became of one order of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    /// Stored; the API reported this payment status.
    Stored(String),
    /// Rejected by the API, or given up on; the text goes to `syncError`.
    Failed {
        /// The text for `syncError`.
        error: String,
        /// Whether sending the same payload again may succeed (given up, unconfirmed).
        transient: bool,
    },
    /// Not sent because the run is stopping.
    NotSent,
    /// Not sent: the chunk waited for a rate-limit permit until its deadline. Its rows get
    /// [`NO_ATTEMPT`] and are sent again by the next run.
    NoAttempt,
}

/// The `syncError` of an order whose chunk never got a rate-limit permit before its deadline.
pub const NO_ATTEMPT: &str = "not sent: the rate limit allowed no attempt before the deadline";

/// Counters shared by all chunks, for the summary.
#[derive(Debug, Default)]
pub struct SendCounters {
    /// Requests sent (every attempt).
    pub requests: AtomicU64,
    /// Retries (attempts after the first of a request).
    pub retries: AtomicU64,
    /// Requests answered with 200.
    pub chunks_ok: AtomicU64,
    /// Requests given up on at their deadline.
    pub chunks_gave_up: AtomicU64,
    /// Of those, how many failed because the service could not be reached.
    pub chunks_unreachable: AtomicU64,
}

/// Why the run must stop.
#[derive(Debug, Clone)]
pub enum StopReason {
    /// The API key was refused.
    Unauthorized(String),
    /// The API refuses every request of the shop (API access off, shop inactive, read-only).
    ShopRefused(String),
    /// The API answered like something that is not the API.
    Unexpected(ApiError),
    /// Chunk after chunk gave up because the service could not be reached.
    Unreachable(String),
    /// A signal (SIGTERM, SIGINT) asked the run to stop.
    Interrupted(&'static str),
}

/// Sends chunks; shared by every in-flight chunk.
pub struct Sender {
    client: ApiClient,
    limiter: Arc<Limiter>,
    policy: RetryPolicy,
    deadline: Duration,
    counters: Arc<SendCounters>,
    /// No new attempt starts once this is cancelled; requests in flight may still finish.
    draining: CancellationToken,
    /// Requests in flight are abandoned once this is cancelled.
    stop: CancellationToken,
    stop_reason: Mutex<Option<StopReason>>,
    /// Chunks that may give up (unreachable) before any success, before the run stops.
    unreachable_limit: u64,
}

/// A request sent with [`Sender::call`] that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// Retried until the deadline without success.
    GaveUp(String),
    /// Refused by the API for good (its message).
    Rejected(String),
    /// The run is stopping (signal, 401, ...); see [`Sender::stop_reason`].
    Stopped,
}

/// A request that did not succeed.
enum Failure {
    GaveUp {
        attempts: u64,
        last_error: String,
        unreachable: bool,
    },
    Rejected(String),
    Stop,
}

impl Sender {
    /// A sender for the given client, limiter and budget.
    pub fn new(
        client: ApiClient,
        limiter: Arc<Limiter>,
        policy: RetryPolicy,
        deadline: Duration,
        concurrency: usize,
        counters: Arc<SendCounters>,
    ) -> Self {
        Sender {
            client,
            limiter,
            policy,
            deadline,
            counters,
            draining: CancellationToken::new(),
            stop: CancellationToken::new(),
            stop_reason: Mutex::new(None),
            unreachable_limit: concurrency.max(2) as u64,
        }
    }

    /// The shared counters.
    pub fn counters(&self) -> &SendCounters {
        &self.counters
    }

    /// Set once the run must stop; no request starts after that.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stop_reason.lock().ok().and_then(|r| r.clone())
    }

    fn record_reason(&self, reason: StopReason) {
        if let Ok(mut slot) = self.stop_reason.lock()
            && slot.is_none()
        {
            *slot = Some(reason);
        }
    }

    /// Stops at once: nothing new is sent and requests in flight are abandoned (401, ...).
    fn stop_run(&self, reason: StopReason) {
        self.record_reason(reason);
        self.draining.cancel();
        self.stop.cancel();
    }

    /// Stops gracefully: no new chunk or retry starts, requests in flight may finish until
    /// [`Sender::abort`].
    pub fn interrupt(&self, signal: &'static str) {
        self.record_reason(StopReason::Interrupted(signal));
        self.draining.cancel();
    }

    /// Abandons the requests still in flight (the grace period is over).
    pub fn abort(&self) {
        self.draining.cancel();
        self.stop.cancel();
    }

    /// The API client.
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    /// Any other request, with the same permits, retries and deadline as a chunk: `op` is
    /// called once per attempt. A 401 or an answer from something that is not the API stops
    /// the run as it does for chunks.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, CallFailure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.with_retry(op).await.map_err(|failure| match failure {
            Failure::GaveUp { attempts: 0, .. } => CallFailure::GaveUp(NO_ATTEMPT.to_string()),
            Failure::GaveUp {
                attempts,
                last_error,
                ..
            } => CallFailure::GaveUp(format!("gave up after {attempts} attempts: {last_error}")),
            Failure::Rejected(message) => CallFailure::Rejected(message),
            Failure::Stop => CallFailure::Stopped,
        })
    }

    /// Sends one chunk and returns an outcome per order, in the chunk's order.
    pub async fn send_chunk(&self, orders: &[&PreparedOrder]) -> Vec<OrderOutcome> {
        if orders.is_empty() {
            return Vec::new();
        }
        if self.draining.is_cancelled() {
            return vec![OrderOutcome::NotSent; orders.len()];
        }
        let body = chunk_body(orders);
        match self
            .with_retry(|| self.client.submit_orders(body.clone()))
            .await
        {
            Ok(reply) => match reply.acks() {
                Ok(acks) => {
                    tracing::debug!(orders = orders.len(), stored = acks.len(), "chunk accepted");
                    self.counters.chunks_ok.fetch_add(1, Ordering::Relaxed);
                    match_acks(orders, &acks)
                }
                Err(error) => {
                    // A 200 that is not a list of orders: not the API we think it is.
                    self.stop_run(StopReason::Unexpected(error));
                    vec![OrderOutcome::NotSent; orders.len()]
                }
            },
            Err(Failure::Rejected(message)) if orders.len() == 1 => {
                match orders[0].without_creation_fields() {
                    // The order exists at Komfortkasse already (sent by an earlier run whose
                    // answer was lost, by a shop plugin, or kksync's state was deleted): send
                    // it as the update it is.
                    Some(update) if message.trim() == DUNNING_ON_UPDATE_MESSAGE => {
                        tracing::debug!(number = %update.number, "exists already; resent without initialDunningLevel");
                        Box::pin(self.send_chunk(&[&update])).await
                    }
                    _ => vec![OrderOutcome::Failed {
                        error: format!("rejected by the API: {message}"),
                        transient: false,
                    }],
                }
            }
            Err(Failure::Rejected(message)) => {
                // Only orders that carry `initialDunningLevel` can cause this 400: send the
                // others at once and halve only among those (a shop whose orders a plugin sent
                // before would otherwise halve every chunk down to single orders).
                let creation_only = |o: &&&PreparedOrder| o.creation_only_at.is_some();
                let suspects = orders.iter().filter(creation_only).count();
                if message.trim() == DUNNING_ON_UPDATE_MESSAGE
                    && (1..orders.len()).contains(&suspects)
                {
                    return Box::pin(
                        self.send_partitioned(orders, |o| o.creation_only_at.is_some()),
                    )
                    .await;
                }
                // One bad order makes the API refuse the whole chunk: resend the halves until
                // each rejection is pinned on the order that caused it.
                let (left, right) = orders.split_at(orders.len() / 2);
                let mut outcomes = Box::pin(self.send_chunk(left)).await;
                outcomes.extend(Box::pin(self.send_chunk(right)).await);
                outcomes
            }
            Err(Failure::GaveUp { attempts: 0, .. }) => {
                // Nothing was sent, so nothing was learnt about the API either: neither a
                // chunk given up on nor a sign that the API is unreachable.
                tracing::warn!(orders = orders.len(), "{NO_ATTEMPT}");
                vec![OrderOutcome::NoAttempt; orders.len()]
            }
            Err(Failure::GaveUp {
                attempts,
                last_error,
                unreachable,
            }) => {
                self.counters.chunks_gave_up.fetch_add(1, Ordering::Relaxed);
                if unreachable {
                    let failed = self
                        .counters
                        .chunks_unreachable
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    // The API looks down: stop instead of waiting out every chunk's deadline.
                    if failed >= self.unreachable_limit
                        && self.counters.chunks_ok.load(Ordering::Relaxed) == 0
                    {
                        self.stop_run(StopReason::Unreachable(last_error.clone()));
                    }
                }
                tracing::warn!(orders = orders.len(), attempts, %last_error, "chunk given up at its deadline");
                let error = format!("gave up after {attempts} attempts: {last_error}");
                vec![
                    OrderOutcome::Failed {
                        error,
                        transient: true
                    };
                    orders.len()
                ]
            }
            Err(Failure::Stop) => vec![OrderOutcome::NotSent; orders.len()],
        }
    }

    /// Sends the orders `picked` selects and the others as two chunks; the outcomes come back
    /// in the order of `orders`.
    async fn send_partitioned(
        &self,
        orders: &[&PreparedOrder],
        picked: impl Fn(&PreparedOrder) -> bool,
    ) -> Vec<OrderOutcome> {
        let (first, second): (Vec<&PreparedOrder>, Vec<&PreparedOrder>) =
            orders.iter().copied().partition(|o| picked(o));
        let mut first = self.send_chunk(&first).await.into_iter();
        let mut second = self.send_chunk(&second).await.into_iter();
        orders
            .iter()
            .map(|o| match picked(o) {
                true => first.next(),
                false => second.next(),
            })
            .map(|outcome| outcome.unwrap_or(OrderOutcome::NotSent))
            .collect()
    }

    /// One request with retries: a limiter permit per attempt, backoff with jitter between
    /// attempts (at least `Retry-After` when the server sends one), until the deadline.
    async fn with_retry<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let attempts = AtomicU64::new(0);
        let last_error: Mutex<Option<ApiError>> = Mutex::new(None);
        let attempt = || async {
            if self.draining.is_cancelled() {
                return Err(None);
            }
            // A chunk still waiting for its permit is not in flight: a stop ends the wait.
            tokio::select! {
                () = self.limiter.until_ready() => {}
                () = self.draining.cancelled() => return Err(None),
            }
            if attempts.fetch_add(1, Ordering::Relaxed) > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let result = op().await;
            if let Err(error) = &result {
                tracing::debug!(%error, "request failed");
                if let Ok(mut last) = last_error.lock() {
                    *last = Some(error.clone());
                }
            }
            result.map_err(Some)
        };
        let draining = self.draining.clone();
        let retrying = attempt
            .retry(self.policy.builder())
            .sleep(move |delay| {
                // A backoff pause is not a request in flight either: a stop ends it.
                let draining = draining.clone();
                async move {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = draining.cancelled() => {}
                    }
                }
            })
            .when(|error: &Option<ApiError>| error.as_ref().is_some_and(ApiError::is_retryable))
            .adjust(|error, delay| next_delay(error.as_ref(), delay));
        let outcome = tokio::select! {
            result = tokio::time::timeout(self.deadline, retrying) => result,
            () = self.stop.cancelled() => return Err(Failure::Stop),
        };
        match outcome {
            Ok(Ok(acks)) => Ok(acks),
            Ok(Err(None)) => Err(Failure::Stop),
            Ok(Err(Some(error))) => match error.classify() {
                RetryClass::Reject => Err(Failure::Rejected(error.api_message())),
                RetryClass::StopRun => {
                    let reason = match error {
                        ApiError::Unauthorized { message } => StopReason::Unauthorized(message),
                        ApiError::Rejected { message, .. } => StopReason::ShopRefused(message),
                        other => StopReason::Unexpected(other),
                    };
                    self.stop_run(reason);
                    Err(Failure::Stop)
                }
                // Retrying ended without the deadline (cannot happen with unbounded attempts).
                RetryClass::Transient | RetryClass::Throttled(_) => Err(Failure::GaveUp {
                    attempts: attempts.load(Ordering::Relaxed),
                    unreachable: error.is_unreachable(),
                    last_error: error.to_string(),
                }),
            },
            Err(_deadline) => {
                let last = last_error.lock().ok().and_then(|l| l.clone());
                Err(Failure::GaveUp {
                    attempts: attempts.load(Ordering::Relaxed),
                    unreachable: last.as_ref().is_none_or(ApiError::is_unreachable),
                    last_error: last.map_or_else(
                        || "no answer before the deadline".to_string(),
                        |e| e.to_string(),
                    ),
                })
            }
        }
    }
}

/// The wait before the next attempt: the backoff's delay, but never less than the server's
/// `Retry-After`.
fn next_delay(error: Option<&ApiError>, backoff: Option<Duration>) -> Option<Duration> {
    match error.map(ApiError::classify) {
        Some(RetryClass::Throttled(Some(retry_after))) => {
            Some(retry_after.max(backoff.unwrap_or_default()))
        }
        _ => backoff,
    }
}

/// `[order,order,...]` from orders serialized once, so splitting a chunk costs no re-encoding.
pub fn chunk_body(orders: &[&PreparedOrder]) -> Bytes {
    let size = orders.iter().map(|o| o.json.len() + 1).sum::<usize>() + 2;
    let mut body = Vec::with_capacity(size);
    body.push(b'[');
    for (i, order) in orders.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&order.json);
    }
    body.push(b']');
    Bytes::from(body)
}

/// Maps the reply to the chunk by order number; an order missing from a 200 reply is not
/// counted as synced.
fn match_acks(orders: &[&PreparedOrder], acks: &[Ack]) -> Vec<OrderOutcome> {
    let outcome = |ack: Option<&Ack>| match ack {
        Some(Ack {
            payment_status: Some(status),
            ..
        }) => OrderOutcome::Stored(status.to_string()),
        Some(Ack {
            payment_status: None,
            ..
        }) => OrderOutcome::Failed {
            error: "not confirmed by the API: the reply has no paymentStatus for this order".into(),
            transient: true,
        },
        None => OrderOutcome::Failed {
            error: "not confirmed by the API: the order is missing from its reply".into(),
            transient: true,
        },
    };
    // The API answers in the order it was sent; check that cheaply before building a map.
    let same_order = acks.len() == orders.len()
        && acks
            .iter()
            .zip(orders)
            .all(|(ack, order)| ack.number == order.number.as_str());
    if same_order {
        return acks.iter().map(|ack| outcome(Some(ack))).collect();
    }
    let by_number: HashMap<&str, &Ack> = acks.iter().map(|a| (a.number.as_ref(), a)).collect();
    orders
        .iter()
        .map(|order| outcome(by_number.get(order.number.as_str()).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(number: &str) -> PreparedOrder {
        PreparedOrder {
            number: number.into(),
            json: format!(r#"{{"number":"{number}"}}"#).into_bytes(),
            date: time::macros::date!(2026 - 01 - 01),
            fingerprint: 0,
            row_fingerprint: 0,
            creation_only_at: None,
        }
    }

    #[test]
    fn retry_after_is_a_lower_bound_on_the_wait() {
        let throttled = ApiError::Throttled {
            retry_after: Some(Duration::from_secs(7)),
        };
        let short = Some(Duration::from_millis(400));
        assert_eq!(
            next_delay(Some(&throttled), short),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            next_delay(Some(&throttled), Some(Duration::from_secs(20))),
            Some(Duration::from_secs(20))
        );
        let without = ApiError::Throttled { retry_after: None };
        assert_eq!(next_delay(Some(&without), short), short);
        assert_eq!(next_delay(Some(&ApiError::Locked), short), short);
    }

    #[test]
    fn body_is_a_json_array_of_the_orders() {
        let (a, b) = (order("1"), order("2"));
        let body = chunk_body(&[&a, &b]);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed[1]["number"], "2");
    }

    #[test]
    fn replies_in_another_order_are_matched_by_number() {
        let (a, b) = (order("1"), order("2"));
        let ack = |n: &'static str, s: &'static str| Ack {
            number: n.into(),
            payment_status: Some(s.into()),
        };
        let outcomes = match_acks(&[&a, &b], &[ack("2", "PAID"), ack("1", "UNPAID")]);
        assert_eq!(
            outcomes,
            vec![
                OrderOutcome::Stored("UNPAID".into()),
                OrderOutcome::Stored("PAID".into())
            ]
        );
    }

    #[test]
    fn orders_missing_from_the_reply_are_not_confirmed() {
        let (a, b) = (order("1"), order("2"));
        let acks = vec![Ack {
            number: "1".into(),
            payment_status: Some("PAID".into()),
        }];
        let outcomes = match_acks(&[&a, &b], &acks);
        assert_eq!(outcomes[0], OrderOutcome::Stored("PAID".into()));
        assert!(
            matches!(&outcomes[1], OrderOutcome::Failed { error, transient: true } if error.starts_with("not confirmed by the API"))
        );
    }
}
