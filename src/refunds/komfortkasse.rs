//! Komfortkasse refunds: `POST /order/{n}/refund`, a bank transfer planned for a future date.
//!
//! Exactly once: Komfortkasse refuses a second refund with the same `externalReference`
//! (`Refund already exists: <ref>`, reference §0.1), so sending can never refund twice. Before
//! sending, the order is read with `includeRefunds=true&includePostings=true`: a refund with
//! our reference that already exists is taken as it is (this is how a run that died after
//! sending is reconciled), and the amount is checked against the cap (twice the order amount,
//! or the amount paid if that is higher) and the currency against the order's. A duplicate
//! answer to the POST itself (a race) is resolved the same way.

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::Deserializer;
use serde_json::value::RawValue;

use super::error::ProviderError;
use super::http::{self, Answer};
use super::journal::{Confirmed, IntentState, NewIntent};
use super::json::JsonDecimal;
use super::model::{Provider, Refund, RefundKey};
use super::outcome::{self, Outcome};
use super::retry::{Failure, Retrier};
use super::run::Ctx;
use crate::api::ApiError;
use crate::state::StateError;

/// The header carrying the API key.
const API_KEY_HEADER: &str = "X-Komfortkasse-API-Key";
/// The message of the one retryable 400 (reference §0.1).
const LOCK_MESSAGE: &str = "Could not acquire lock";

/// Statuses after which a refund never changes again; the others are read again by later runs.
/// `RETURNED` is not final: the customer is asked for new bank details and it is sent again.
pub const FINAL_STATUSES: [&str; 3] = ["PROCESSED", "CANCELLED", "LEGACY"];

/// Whether a Komfortkasse refund status can still change.
pub fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}

/// A refund as Komfortkasse returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KkRefund {
    /// Our reference.
    pub external_reference: String,
    /// Komfortkasse's id (documented as a string; a number is accepted too).
    #[serde(default, deserialize_with = "string_or_number")]
    pub id: Option<String>,
    /// `KKBT...`.
    #[serde(default)]
    pub reference_number: Option<String>,
    /// `NEW`, `BANKDETAILS_MISSING`, ... (open list).
    #[serde(default)]
    pub status: Option<String>,
}

impl KkRefund {
    fn confirmed(&self) -> Confirmed {
        Confirmed {
            refund_id: self.id.clone().unwrap_or_default(),
            reference_number: self.reference_number.clone(),
            status: self.status.clone().unwrap_or_else(|| "UNKNOWN".into()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Posting {
    amount: JsonDecimal,
}

/// The parts of an order a refund needs.
#[derive(Debug, Clone, Deserialize)]
pub struct KkOrder {
    amount: JsonDecimal,
    currency: String,
    #[serde(default)]
    postings: Vec<Posting>,
    /// `None` when the answer has no `refunds` at all (`includeRefunds` not honoured).
    #[serde(default)]
    refunds: Option<Vec<KkRefund>>,
}

impl KkOrder {
    /// The refund with this reference, if the order has it.
    pub fn refund(&self, external_reference: &str) -> Option<&KkRefund> {
        self.refunds
            .iter()
            .flatten()
            .find(|r| r.external_reference == external_reference)
    }

    /// Whether the answer listed the order's refunds.
    pub fn lists_refunds(&self) -> bool {
        self.refunds.is_some()
    }

    /// The most one refund may be: twice the order amount, or the amount paid if higher.
    pub fn cap(&self) -> Decimal {
        let paid = self
            .postings
            .iter()
            .fold(Decimal::ZERO, |sum, p| sum.saturating_add(p.amount.0));
        self.amount.0.saturating_mul(Decimal::TWO).max(paid)
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let raw = Option::<Box<RawValue>>::deserialize(d)?;
    Ok(raw.and_then(|raw| {
        let text = raw.get();
        if text.starts_with('"') {
            serde_json::from_str::<String>(text).ok()
        } else if text == "null" {
            None
        } else {
            Some(text.to_string())
        }
    }))
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// The answer to a create-refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The new refund.
    Refund(KkRefund),
    /// `Refund already exists: <ref>`.
    AlreadyExists(String),
}

/// The Komfortkasse client for refunds.
pub struct KkClient {
    http: reqwest::Client,
    base: reqwest::Url,
    key: reqwest::header::HeaderValue,
}

impl std::fmt::Debug for KkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KkClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl KkClient {
    /// A client for `base` (e.g. `https://ssl.komfortkasse.eu/api/v2/`).
    pub fn new(
        base: reqwest::Url,
        key: &crate::secret::Secret,
        timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(KkClient {
            http: http::client(timeout)?,
            base,
            key: http::sensitive(key.expose())?,
        })
    }

    /// `GET /order/{n}?includeRefunds=true&includePostings=true`; `None` for an unknown order.
    pub async fn get_order(&self, number: &str) -> Result<Option<KkOrder>, ProviderError> {
        let mut url = http::url(&self.base, &["order", number])?;
        url.set_query(Some("includeRefunds=true&includePostings=true"));
        let answer =
            http::send(self.http.get(url).header(API_KEY_HEADER, self.key.clone())).await?;
        if answer.status == reqwest::StatusCode::OK {
            return serde_json::from_slice(&answer.body).map(Some).map_err(|e| {
                ProviderError::Unexpected(format!(
                    "200 with a body that is not an order ({e}): {}",
                    answer.snippet()
                ))
            });
        }
        match error(&answer) {
            ProviderError::NotFound(_) => Ok(None),
            other => Err(other),
        }
    }

    /// `POST /order/{n}/refund` with the prepared body.
    pub async fn create_refund(&self, number: &str, body: &str) -> Result<Created, ProviderError> {
        let url = http::url(&self.base, &["order", number, "refund"])?;
        let answer = http::send(
            self.http
                .post(url)
                .header(API_KEY_HEADER, self.key.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
        )
        .await?;
        if answer.status == reqwest::StatusCode::OK {
            return serde_json::from_slice(&answer.body)
                .map(Created::Refund)
                .map_err(|e| {
                    ProviderError::Unexpected(format!(
                        "200 with a body that is not a refund ({e}): {}",
                        answer.snippet()
                    ))
                });
        }
        if answer.status == reqwest::StatusCode::BAD_REQUEST
            && let Ok(body) = serde_json::from_slice::<ErrorBody>(&answer.body)
            && is_duplicate(&body.error)
        {
            return Ok(Created::AlreadyExists(body.error));
        }
        Err(error(&answer))
    }
}

/// `Refund already exists: <ref>` (§0.1); older wording "... with this external reference
/// already exists" is recognised too.
fn is_duplicate(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.starts_with("refund") && lower.contains("already exists")
}

/// Maps an error answer (reference §0.1: the lock error is a retryable 400; a 404 without the
/// API's JSON means a wrong URL, not an unknown order).
fn error(answer: &Answer) -> ProviderError {
    if let Some(common) = answer.common_error() {
        return common;
    }
    let message = serde_json::from_slice::<ErrorBody>(&answer.body)
        .ok()
        .map(|b| b.error);
    let text = message.clone().unwrap_or_else(|| answer.snippet());
    match answer.status.as_u16() {
        401 => ProviderError::Unauthorized {
            provider: Provider::Komfortkasse,
            message: text,
        },
        400 if message.as_deref() == Some(LOCK_MESSAGE) => ProviderError::Locked,
        400 if message.as_deref().is_some_and(ApiError::refuses_the_shop) => {
            ProviderError::ShopUnavailable(format!("Komfortkasse: {text}"))
        }
        404 if message.is_none() => ProviderError::Unexpected(format!(
            "404 without the API's JSON error ({}); check --api-url",
            answer.snippet()
        )),
        404 => ProviderError::NotFound(format!("Komfortkasse: {text}")),
        status => ProviderError::Rejected {
            status,
            message: format!("rejected by Komfortkasse: {text}"),
        },
    }
}

/// Komfortkasse with its client and its retry budget.
#[derive(Debug)]
pub struct Komfortkasse {
    /// The client.
    pub client: KkClient,
    /// Retries and rate limit.
    pub retrier: Retrier,
}

impl Komfortkasse {
    async fn read_order(&self, number: &str) -> Result<Option<KkOrder>, Failure> {
        self.retrier.run(|| self.client.get_order(number)).await
    }

    /// Sends (or reconciles) one refund.
    pub async fn refund(&self, ctx: &Ctx, refund: &Refund) -> Result<Outcome, StateError> {
        let key = refund.key();
        // Refused before sending: the order shows no refund with our reference, so an earlier
        // pending intent (if any) created nothing either.
        let refuse = |message: String| -> Result<Outcome, StateError> {
            ctx.journal(|j| {
                j.mark(
                    Provider::Komfortkasse,
                    &refund.external_reference,
                    IntentState::Rejected,
                    &message,
                )
            })?;
            Ok(Outcome::Rejected(message))
        };
        let order = match self.read_order(&refund.order_number).await {
            Ok(Some(order)) => order,
            Ok(None) => {
                return refuse(format!(
                    "order {} not found at Komfortkasse (sync the order first)",
                    refund.order_number
                ));
            }
            Err(failure) => return Ok(Outcome::before_sending(failure, "reading the order")),
        };
        // Already there: sent by an earlier run that died before writing back, or by someone
        // else with the same reference. Never send it again.
        if let Some(existing) = order.refund(&refund.external_reference) {
            return Ok(Outcome::Found(outcome::record_done(
                ctx,
                &key,
                existing.confirmed(),
            )?));
        }
        if !order.currency.eq_ignore_ascii_case(&refund.currency) {
            return refuse(format!(
                "currency {} differs from the order's currency {}",
                refund.currency, order.currency
            ));
        }
        let cap = order.cap();
        if refund.amount > cap {
            return refuse(format!(
                "amount {} exceeds the most Komfortkasse refunds for order {} ({cap:.2}: twice the order amount {}, or the amount paid if higher)",
                refund.amount, refund.order_number, order.amount.0
            ));
        }
        let Some(planned) = refund.planned_date(ctx.today, ctx.waiting_days) else {
            return refuse("plannedDate is out of range".into());
        };
        let body = refund.body(Some(planned));
        ctx.journal(|j| {
            j.record_pending(&NewIntent {
                provider: Provider::Komfortkasse,
                external_reference: &refund.external_reference,
                order_number: &refund.order_number,
                target: &refund.order_number,
                fingerprint: refund.fingerprint(),
                request: &body,
                idempotency_key: None,
                key_generation: 0,
            })
        })?;
        let sent = self
            .retrier
            .run(|| self.client.create_refund(&refund.order_number, &body))
            .await;
        match sent {
            Ok(Created::Refund(created)) => {
                ctx.pause_point("refund-sent").await;
                Ok(Outcome::Created(outcome::record_done(
                    ctx,
                    &key,
                    created.confirmed(),
                )?))
            }
            Ok(Created::AlreadyExists(message)) => self.resolve_duplicate(ctx, &key, message).await,
            Err(failure) => outcome::record_failure(ctx, &key, failure),
        }
    }

    /// `Refund already exists`: the refund is read back from the order.
    async fn resolve_duplicate(
        &self,
        ctx: &Ctx,
        key: &RefundKey,
        message: String,
    ) -> Result<Outcome, StateError> {
        match self.read_order(&key.order_number).await {
            Ok(Some(order)) => match order.refund(&key.external_reference) {
                Some(existing) => Ok(Outcome::Found(outcome::record_done(
                    ctx,
                    key,
                    existing.confirmed(),
                )?)),
                None => {
                    // The reference is unique per shop: it belongs to another order's refund (or
                    // Komfortkasse did not list the refunds). Either way a refund with it exists,
                    // and Komfortkasse refuses a second one.
                    let text = if order.lists_refunds() {
                        format!(
                            "{message}, but not on order {}: the reference is used by a refund of another order",
                            key.order_number
                        )
                    } else {
                        format!(
                            "{message}; Komfortkasse did not list the refunds of order {} (includeRefunds), so its id cannot be written back",
                            key.order_number
                        )
                    };
                    ctx.journal(|j| {
                        j.mark(
                            Provider::Komfortkasse,
                            &key.external_reference,
                            IntentState::Rejected,
                            &text,
                        )
                    })?;
                    Ok(Outcome::Rejected(text))
                }
            },
            Ok(None) => Ok(Outcome::Rejected(format!(
                "{message}, and order {} cannot be read",
                key.order_number
            ))),
            Err(failure) => outcome::record_failure(ctx, key, failure),
        }
    }

    /// Reads the status of a confirmed refund again.
    pub async fn refresh(&self, ctx: &Ctx, key: &RefundKey) -> Result<Outcome, StateError> {
        let order = match self.read_order(&key.order_number).await {
            Ok(Some(order)) => order,
            Ok(None) => {
                return Ok(Outcome::Rejected(format!(
                    "cannot refresh the refund status: order {} not found at Komfortkasse",
                    key.order_number
                )));
            }
            Err(failure) => {
                return Ok(Outcome::before_sending(
                    failure,
                    "cannot refresh the refund status",
                ));
            }
        };
        let Some(refund) = order.refund(&key.external_reference) else {
            return Ok(Outcome::Rejected(format!(
                "cannot refresh the refund status: order {} has no refund {}",
                key.order_number, key.external_reference
            )));
        };
        // Also gives a refund the journal did not know yet (lost state store) its row.
        Ok(Outcome::Refreshed(outcome::record_done(
            ctx,
            key,
            refund.confirmed(),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            body: bytes::Bytes::from(body.to_string()),
            is_json: true,
            retry_after: None,
            location: None,
        }
    }

    #[test]
    fn error_answers_follow_the_error_table() {
        assert_eq!(
            error(&answer(400, r#"{"error":"Could not acquire lock"}"#)),
            ProviderError::Locked
        );
        assert!(matches!(
            error(&answer(404, r#"{"error":"Order 'X' not found"}"#)),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            error(&answer(404, "")),
            ProviderError::Unexpected(_)
        ));
        assert!(matches!(
            error(&answer(401, r#"{"error":"Invalid authentication header"}"#)),
            ProviderError::Unauthorized { .. }
        ));
        assert_eq!(
            error(&answer(
                400,
                r#"{"error":"Planned date must be in the future"}"#
            ))
            .to_string(),
            "rejected by Komfortkasse: Planned date must be in the future"
        );
        assert!(matches!(
            error(&answer(400, r#"{"error":"Shop not active"}"#)),
            ProviderError::ShopUnavailable(_)
        ));
        assert!(is_duplicate("Refund already exists: RMA-1"));
        assert!(is_duplicate(
            "Refund with this external reference already exists"
        ));
        assert!(!is_duplicate("Order already in paymentStatus PAID"));
    }

    #[test]
    fn the_cap_is_twice_the_amount_or_the_amount_paid() {
        let order: KkOrder = serde_json::from_str(
            r#"{"number":"A","amount":10.00,"currency":"EUR","postings":[{"amount":15.5},{"amount":9}],
                "refunds":[{"externalReference":"R","id":30001,"referenceNumber":"KKBT00030001","status":"NEW",
                "amount":1.00,"currency":"EUR","plannedDate":"01-01-2030","executionDate":null}]}"#,
        )
        .unwrap();
        assert_eq!(order.cap(), Decimal::new(245, 1));
        let refund = order.refund("R").unwrap();
        assert_eq!(refund.id.as_deref(), Some("30001"));
        let plain: KkOrder = serde_json::from_str(r#"{"amount":10,"currency":"EUR"}"#).unwrap();
        assert_eq!(plain.cap(), Decimal::from(20));
        assert!(order.lists_refunds() && !plain.lists_refunds());
        assert!(is_final("PROCESSED") && !is_final("BANKDETAILS_MISSING") && !is_final("RETURNED"));
    }
}
