//! What became of one refund, and the steps every provider's flow shares: recording a
//! confirmed refund, a refusal, or a failure in the journal before the source learns of it.

use super::error::RetryClass;
use super::journal::{Confirmed, IntentState};
use super::model::RefundKey;
use super::retry::Failure;
use super::run::Ctx;
use crate::state::StateError;

/// A refund the provider confirmed, as the source gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// What the provider reported.
    pub confirmed: Confirmed,
    /// When it was sent (RFC 3339, UTC).
    pub sent_at: String,
}

/// Why a provider's remaining refunds are not sent in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// It refused the credentials.
    Unauthorized(String),
    /// It answered like something that is not its API, or refuses the whole shop.
    Unavailable(String),
}

/// What became of one refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Created by the provider in this run.
    Created(Done),
    /// It existed already (found at the provider, or replayed); nothing new was created.
    Found(Done),
    /// A confirmed refund whose status was read again.
    Refreshed(Done),
    /// Refused for good; nothing was created. The message goes to the source.
    Rejected(String),
    /// Transient failures until the budget ran out; the intent stays pending and the next run
    /// reconciles it before sending anything.
    GaveUp(String),
    /// A refund may exist but kksync cannot tell; nothing more is sent until a human decides.
    Doubt(String),
    /// The provider cannot be used in this run.
    Stop(StopReason),
    /// Not sent: the run is stopping.
    NotSent,
}

impl Outcome {
    /// A failure of a request made *before* anything was sent for this refund: nothing can
    /// have been created by it.
    pub fn before_sending(failure: Failure, what: &str) -> Outcome {
        match failure {
            Failure::Final(error) => match error.classify() {
                RetryClass::StopProvider => Outcome::Stop(stop_reason(&error)),
                _ => Outcome::Rejected(format!("{what}: {error}")),
            },
            Failure::GaveUp { .. } => Outcome::GaveUp(format!("{what}: {}", failure.message())),
            Failure::Stopped => Outcome::NotSent,
        }
    }
}

/// The stop reason for an error classified as `StopProvider`.
pub fn stop_reason(error: &super::error::ProviderError) -> StopReason {
    match error {
        super::error::ProviderError::Unauthorized { .. } => {
            StopReason::Unauthorized(error.to_string())
        }
        super::error::ProviderError::Unexpected(_) => {
            StopReason::Unavailable(format!("{error} (check its URL option)"))
        }
        other => StopReason::Unavailable(other.to_string()),
    }
}

/// Records a confirmed refund and returns it with its sent-at time.
pub fn record_done(ctx: &Ctx, key: &RefundKey, confirmed: Confirmed) -> Result<Done, StateError> {
    let sent_at = ctx.journal(|j| {
        j.mark_done(
            key.provider,
            &key.external_reference,
            &key.order_number,
            &confirmed,
        )
    })?;
    Ok(Done { confirmed, sent_at })
}

/// Records what a failed send means for the intent, and turns it into an outcome. A final
/// refusal created nothing (the intent may be tried again by a later run); a transient failure
/// leaves the intent pending, to be reconciled; a stop leaves it pending too.
pub fn record_failure(ctx: &Ctx, key: &RefundKey, failure: Failure) -> Result<Outcome, StateError> {
    let message = failure.message();
    let (provider, reference) = (key.provider, key.external_reference.as_str());
    match failure {
        Failure::Final(error) => {
            ctx.journal(|j| j.mark(provider, reference, IntentState::Rejected, &message))?;
            Ok(match error.classify() {
                RetryClass::StopProvider => Outcome::Stop(stop_reason(&error)),
                _ => Outcome::Rejected(message),
            })
        }
        Failure::GaveUp { .. } => {
            ctx.journal(|j| j.note_error(provider, reference, &message))?;
            Ok(Outcome::GaveUp(format!(
                "{message}; the next run checks with {provider} before sending again"
            )))
        }
        Failure::Stopped => Ok(Outcome::NotSent),
    }
}

/// Records a refund kksync can no longer be sure about.
pub fn record_doubt(ctx: &Ctx, key: &RefundKey, message: String) -> Result<Outcome, StateError> {
    ctx.journal(|j| {
        j.mark(
            key.provider,
            &key.external_reference,
            IntentState::Doubt,
            &message,
        )
    })?;
    Ok(Outcome::Doubt(message))
}
