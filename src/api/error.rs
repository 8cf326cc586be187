//! API errors and whether to retry them. *When* to retry lives in `pipeline/retry.rs`.

use std::time::Duration;

/// The API's message for the one retryable 400 (reference §0.1).
pub const LOCK_MESSAGE: &str = "Could not acquire lock";

/// 400s that refuse every request of the shop, not one order (reference §0.1): splitting a
/// chunk cannot isolate anything, and marking orders rejected would keep them from being sent
/// once the shop is active again. They stop the run like a 401.
pub const SHOP_ERRORS: [&str; 3] = [
    "API not active, contact support",
    "Shop not active",
    "Update not allowed for non-API Shop",
];

/// The 400 for an order that exists already at Komfortkasse but was sent with
/// `initialDunningLevel`, which only a creation may carry (reference §0.1).
pub const DUNNING_ON_UPDATE_MESSAGE: &str =
    "Parameter initialDunningLevel can only be given when creating a new order";

/// What went wrong with one request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 401: the API key is missing, unknown or a placeholder.
    #[error("401 {message}")]
    Unauthorized {
        /// The API's error text.
        message: String,
    },
    /// 400 `Could not acquire lock`: the order is being updated concurrently.
    #[error("400 {LOCK_MESSAGE}")]
    Locked,
    /// Any other 4xx with the API's error text: final for the orders concerned.
    #[error("{status} {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The API's error text.
        message: String,
    },
    /// 429, possibly with `Retry-After`.
    #[error("429 too many requests")]
    Throttled {
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
    },
    /// 5xx.
    #[error("{status} {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The body's error text, if any.
        message: String,
    },
    /// The request took longer than `--request-timeout`.
    #[error("request timed out")]
    Timeout,
    /// The connection could not be made.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The connection broke (reset, closed early, unreadable body).
    #[error("network error: {0}")]
    Network(String),
    /// An answer that says we are talking to the wrong thing (redirect, HTML page, non-JSON 200).
    #[error("{0}")]
    Unexpected(String),
}

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Try again after a backoff.
    Transient,
    /// Try again, not before the server's `Retry-After` (if given).
    Throttled(Option<Duration>),
    /// Final for the orders in this request; a chunk of several is split to find the bad one.
    Reject,
    /// Final for the whole run: nothing more may be sent.
    StopRun,
}

impl ApiError {
    /// Classifies the error (reference §8.4: lock, 5xx, 429 and network faults are retried;
    /// other 4xx are final; 401 stops everything).
    pub fn classify(&self) -> RetryClass {
        match self {
            ApiError::Locked
            | ApiError::Server { .. }
            | ApiError::Timeout
            | ApiError::Connect(_)
            | ApiError::Network(_) => RetryClass::Transient,
            ApiError::Throttled { retry_after } => RetryClass::Throttled(*retry_after),
            ApiError::Rejected { message, .. } if Self::refuses_the_shop(message) => {
                RetryClass::StopRun
            }
            ApiError::Rejected { .. } => RetryClass::Reject,
            ApiError::Unauthorized { .. } | ApiError::Unexpected(_) => RetryClass::StopRun,
        }
    }

    /// Whether a 400's message refuses every request of the shop ([`SHOP_ERRORS`]).
    pub fn refuses_the_shop(message: &str) -> bool {
        SHOP_ERRORS.contains(&message.trim())
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.classify(),
            RetryClass::Transient | RetryClass::Throttled(_)
        )
    }

    /// Whether the error says the service could not be reached at all (as opposed to a
    /// service that answers but refuses, e.g. with a lock error).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ApiError::Server { .. }
                | ApiError::Timeout
                | ApiError::Connect(_)
                | ApiError::Network(_)
        )
    }

    /// The API's own message, for `syncError`.
    pub fn api_message(&self) -> String {
        match self {
            ApiError::Rejected { message, .. } | ApiError::Unauthorized { message } => {
                message.clone()
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_reference() {
        let rejected = ApiError::Rejected {
            status: 400,
            message: "Parameter date is not valid".into(),
        };
        assert_eq!(rejected.classify(), RetryClass::Reject);
        assert_eq!(ApiError::Locked.classify(), RetryClass::Transient);
        assert_eq!(
            ApiError::Server {
                status: 503,
                message: String::new()
            }
            .classify(),
            RetryClass::Transient
        );
        assert_eq!(ApiError::Timeout.classify(), RetryClass::Transient);
        assert_eq!(
            ApiError::Network("reset".into()).classify(),
            RetryClass::Transient
        );
        let throttled = ApiError::Throttled {
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            throttled.classify(),
            RetryClass::Throttled(Some(Duration::from_secs(3)))
        );
        assert_eq!(
            ApiError::Unauthorized {
                message: "x".into()
            }
            .classify(),
            RetryClass::StopRun
        );
        assert_eq!(
            ApiError::Unexpected("redirect".into()).classify(),
            RetryClass::StopRun
        );
    }
}
