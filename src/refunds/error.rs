//! What can go wrong with a provider request, and whether trying again can help.
//!
//! *Whether* to retry is decided here (it knows HTTP); *when* is `pipeline::retry`'s backoff.
//! One distinction matters more for refunds than for the order sync: an error after which the
//! request **may have reached** the provider (a timeout, a connection that broke mid-way) is
//! retried only where a retry cannot refund twice: Komfortkasse (the external reference is
//! unique), Ratepay (same `Idempotency-Key`). AfterPay looks its refunds up first.

use std::time::Duration;

use super::model::Provider;
use crate::state::StateError;

/// One provider request that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// 401 (or the token endpoint refused the client credentials).
    #[error("{provider} refused the credentials: {message}")]
    Unauthorized {
        /// Which provider.
        provider: Provider,
        /// Its message.
        message: String,
    },
    /// Komfortkasse's retryable 400 `Could not acquire lock`.
    #[error("400 Could not acquire lock")]
    Locked,
    /// 429, possibly with `Retry-After`.
    #[error("429 too many requests")]
    Throttled {
        /// How long the provider asked us to wait.
        retry_after: Option<Duration>,
    },
    /// 5xx: the provider had a technical problem; nothing was changed, so it is retried.
    #[error("{status} {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The body's message.
        message: String,
    },
    /// The request took longer than `--request-timeout`; it may have been processed.
    #[error("request timed out (the provider may have processed it)")]
    Timeout,
    /// The connection could not be made; the request never left.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The connection broke; the request may have been processed.
    #[error("network error: {0}")]
    Network(String),
    /// The order or transaction is unknown to the provider (404).
    #[error("{0}")]
    NotFound(String),
    /// Refused for good: the request is wrong for this refund; nothing was created.
    #[error("{message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// A readable message (AfterPay: its `ResponseMessage` list).
        message: String,
    },
    /// Ratepay 409: this `Idempotency-Key` was already used with a different request.
    #[error(
        "Ratepay idempotency conflict (409 CONFLICT): a different request was already sent under this refund's Idempotency-Key, so a refund may exist; kksync sends nothing more for it{details}"
    )]
    IdempotencyConflict {
        /// The provider's details, prefixed with `: ` when present.
        details: String,
    },
    /// Ratepay 422: the refund was declined.
    #[error("refund declined by Ratepay (422 {category}{reasons})")]
    Declined {
        /// The decline category (`UNPROCESSABLE_OPERATION`, `CONTRACT`, ...).
        category: String,
        /// The decline reasons, prefixed with `: ` when present.
        reasons: String,
    },
    /// Ratepay 451 (or decline category `LEGAL`): the refund is legally not allowed.
    #[error("refund legally not allowed by Ratepay (451 LEGAL{reasons})")]
    LegallyNotAllowed {
        /// The decline reasons, prefixed with `: ` when present.
        reasons: String,
    },
    /// An answer that says we are talking to the wrong thing (redirect, HTML, bad JSON).
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The provider refuses every request of this shop (Komfortkasse: `API not active`,
    /// `Shop not active`, `Update not allowed for non-API Shop`).
    #[error("{0}")]
    ShopUnavailable(String),
}

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Try again after a backoff. `maybe_delivered`: the provider may have processed the request.
    Transient {
        /// Whether the request may have been processed.
        maybe_delivered: bool,
    },
    /// Try again, not before `Retry-After`.
    Throttled(Option<Duration>),
    /// Final for this refund; nothing was created.
    Final,
    /// Final for every refund of this provider in this run (credentials, wrong URL).
    StopProvider,
}

impl ProviderError {
    /// Classifies the error.
    pub fn classify(&self) -> RetryClass {
        match self {
            ProviderError::Locked | ProviderError::Server { .. } | ProviderError::Connect(_) => {
                RetryClass::Transient {
                    maybe_delivered: false,
                }
            }
            ProviderError::Timeout | ProviderError::Network(_) => RetryClass::Transient {
                maybe_delivered: true,
            },
            ProviderError::Throttled { retry_after } => RetryClass::Throttled(*retry_after),
            ProviderError::NotFound(_)
            | ProviderError::Rejected { .. }
            | ProviderError::IdempotencyConflict { .. }
            | ProviderError::Declined { .. }
            | ProviderError::LegallyNotAllowed { .. } => RetryClass::Final,
            ProviderError::Unauthorized { .. }
            | ProviderError::Unexpected(_)
            | ProviderError::ShopUnavailable(_) => RetryClass::StopProvider,
        }
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.classify(),
            RetryClass::Transient { .. } | RetryClass::Throttled(_)
        )
    }

    /// Whether the request may have been processed although no answer arrived.
    pub fn maybe_delivered(&self) -> bool {
        matches!(
            self.classify(),
            RetryClass::Transient {
                maybe_delivered: true
            }
        )
    }
}

/// Fatal problems of a refunds run (beyond those it shares with the order sync).
#[derive(Debug, thiserror::Error)]
pub enum RefundsError {
    /// The state store (journal, run history) could not be used; nothing more is sent.
    #[error(transparent)]
    State(#[from] StateError),
    /// A provider refused the credentials; its refunds were not sent.
    #[error("{0}; its remaining refunds were not sent, the source records what was done")]
    Unauthorized(String),
    /// A provider answered like something that is not its API, or refuses the whole shop; its
    /// remaining refunds were not sent.
    #[error("{0}; its remaining refunds were not sent, the source records what was done")]
    ProviderStopped(String),
    /// An HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// A dry run's scratch folder for an empty journal could not be created.
    #[error("cannot create a scratch folder for the dry run's journal: {0}")]
    Scratch(std::io::Error),
}

impl RefundsError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        crate::error::exit_code::FATAL
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_separates_safe_retries_from_unknown_outcomes() {
        assert_eq!(
            ProviderError::Locked.classify(),
            RetryClass::Transient {
                maybe_delivered: false
            }
        );
        assert!(ProviderError::Timeout.maybe_delivered());
        assert!(ProviderError::Network("reset".into()).maybe_delivered());
        assert!(!ProviderError::Connect("refused".into()).maybe_delivered());
        assert!(
            !ProviderError::Server {
                status: 500,
                message: String::new()
            }
            .maybe_delivered()
        );
        for final_error in [
            ProviderError::NotFound("x".into()),
            ProviderError::IdempotencyConflict {
                details: String::new(),
            },
            ProviderError::Declined {
                category: "CONTRACT".into(),
                reasons: String::new(),
            },
            ProviderError::LegallyNotAllowed {
                reasons: String::new(),
            },
        ] {
            assert_eq!(final_error.classify(), RetryClass::Final, "{final_error}");
        }
        assert_eq!(
            ProviderError::Unauthorized {
                provider: Provider::AfterPay,
                message: "x".into()
            }
            .classify(),
            RetryClass::StopProvider
        );
    }

    #[test]
    fn ratepay_errors_read_distinctly() {
        let declined = ProviderError::Declined {
            category: "UNPROCESSABLE_OPERATION".into(),
            reasons: ": REFUND_AMOUNT_TOO_HIGH".into(),
        };
        assert_eq!(
            declined.to_string(),
            "refund declined by Ratepay (422 UNPROCESSABLE_OPERATION: REFUND_AMOUNT_TOO_HIGH)"
        );
        let legal = ProviderError::LegallyNotAllowed {
            reasons: String::new(),
        };
        assert_eq!(
            legal.to_string(),
            "refund legally not allowed by Ratepay (451 LEGAL)"
        );
        assert!(
            ProviderError::IdempotencyConflict {
                details: String::new()
            }
            .to_string()
            .contains("409")
        );
    }
}
