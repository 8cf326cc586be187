//! Ratepay refunds: `POST /v2/transactions/{ratepay_transaction_id}/refunds` with a bearer
//! token (OAuth client credentials) and an `Idempotency-Key`.
//!
//! Exactly once: the key is **derived from the external reference** (a UUIDv8 over xxh3-128 of
//! `kksync/ratepay-refund/<generation>/<reference>`; no randomness), so every retry, and every
//! later run, sends the same request under the same key. Ratepay answers a repeated key with
//! the original result for 24 hours and with 409 when the body differs. The journal keeps the
//! exact body sent, so a reconciliation replays it byte for byte even if the row was edited.
//! The generation starts at 0 and is bumped only after Ratepay *refused* a request (400, 404,
//! 422, 451: nothing was created), because the same key would only replay that refusal.
//! A pending intent older than 23 hours is not replayed (its key may have expired); the
//! transaction's refunds are read instead and matched on `partner_operation_id`, which carries
//! the external reference.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Mutex;

use super::error::{ProviderError, RetryClass};
use super::http::{self, Answer};
use super::journal::{Confirmed, Intent, IntentState, NewIntent};
use super::model::{Details, Provider, Refund};
use super::outcome::{self, Outcome};
use super::retry::Failure;
use super::retry::Retrier;
use super::run::Ctx;
use crate::secret::Secret;
use crate::state::StateError;

/// The status written back for a refund Ratepay created (it books synchronously).
pub const REFUNDED: &str = "REFUNDED";
/// Ratepay honours an idempotency key for 24 hours; kksync replays only within this margin.
const REPLAY_WINDOW: time::Duration = time::Duration::hours(23);

/// The `Idempotency-Key` for a refund: a UUIDv8 (RFC 9562, custom) from xxh3-128 of the
/// external reference and the key generation. Deterministic: the same reference always gives
/// the same key.
pub fn idempotency_key(external_reference: &str, generation: i64) -> String {
    let input = format!("kksync/ratepay-refund/{generation}/{external_reference}");
    let mut bytes = xxhash_rust::xxh3::xxh3_128(input.as_bytes()).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The OAuth client credentials.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret` (never printed).
    pub client_secret: Secret,
    /// `audience`: the API base, e.g. `https://api.ratepay.com/transaction/management`.
    pub audience: String,
    /// The token endpoint.
    pub token_url: reqwest::Url,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct CreatedReply {
    #[serde(default)]
    ratepay_refund_id: Option<Box<RawValue>>,
}

/// One refund in the transaction's list.
#[derive(Debug, Clone, Deserialize)]
pub struct RpRefund {
    /// Ratepay's id.
    #[serde(default)]
    pub ratepay_refund_id: Option<Box<RawValue>>,
    /// Our reference, if listed (the field is not documented for the list).
    #[serde(default)]
    pub partner_operation_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Embedded {
    #[serde(default)]
    refunds: Vec<RpRefund>,
}

#[derive(Debug, Deserialize)]
struct RefundList {
    #[serde(rename = "_embedded", default)]
    embedded: Option<Embedded>,
}

fn raw_text(raw: &RawValue) -> String {
    serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string())
}

/// A decline body: category and reasons. The property names are not documented; the sandbox's
/// proposal (`decline_category`, `decline_reasons[].reason`) is read, with plain alternatives.
fn decline(body: &[u8]) -> (Option<String>, String) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, String::new());
    };
    let category = ["decline_category", "category"]
        .iter()
        .find_map(|k| value.get(k).and_then(|v| v.as_str()))
        .map(str::to_string);
    let reasons: Vec<String> = ["decline_reasons", "reasons"]
        .iter()
        .find_map(|k| value.get(k).and_then(|v| v.as_array()))
        .map(|list| {
            list.iter()
                .filter_map(|r| match r {
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => ["reason", "code", "message"]
                        .iter()
                        .find_map(|k| other.get(k).and_then(|v| v.as_str()))
                        .map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default();
    let reasons = if reasons.is_empty() {
        value
            .get("message")
            .and_then(|v| v.as_str())
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    } else {
        format!(": {}", reasons.join(", "))
    };
    (category, reasons)
}

fn error(answer: &Answer, transaction: &str) -> ProviderError {
    if let Some(common) = answer.common_error() {
        return match common {
            ProviderError::Server { status, .. } => ProviderError::Server {
                status,
                message: format!("Ratepay technical problem{}", decline(&answer.body).1),
            },
            other => other,
        };
    }
    let (category, reasons) = decline(&answer.body);
    match answer.status.as_u16() {
        400 => ProviderError::Rejected {
            status: 400,
            message: format!("Ratepay refused the request as malformed (400 SYNTAX{reasons})"),
        },
        401 | 403 => ProviderError::Unauthorized {
            provider: Provider::Ratepay,
            message: format!("{} (bearer token refused){reasons}", answer.status.as_u16()),
        },
        404 => ProviderError::NotFound(format!(
            "Ratepay transaction {transaction} not found (404 RESOURCE_NOT_FOUND)"
        )),
        409 => ProviderError::IdempotencyConflict { details: reasons },
        422 if category.as_deref() == Some("LEGAL") => ProviderError::LegallyNotAllowed { reasons },
        422 => ProviderError::Declined {
            category: category.unwrap_or_else(|| "declined".into()),
            reasons,
        },
        451 => ProviderError::LegallyNotAllowed { reasons },
        status => ProviderError::Rejected {
            status,
            message: format!(
                "rejected by Ratepay ({status}){reasons}: {}",
                answer.snippet()
            ),
        },
    }
}

/// The Ratepay client for refunds; the token is fetched once and re-used until it expires.
pub struct RatepayClient {
    http: reqwest::Client,
    base: reqwest::Url,
    credentials: Credentials,
    token: Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for RatepayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RatepayClient")
            .field("base", &self.base.as_str())
            .field("client_id", &self.credentials.client_id)
            .finish_non_exhaustive()
    }
}

impl RatepayClient {
    /// A client for `base` (e.g. `https://api.ratepay.com/transaction/management`).
    pub fn new(
        base: reqwest::Url,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Self, String> {
        Ok(RatepayClient {
            http: http::client(timeout)?,
            base,
            credentials,
            token: Mutex::new(None),
        })
    }

    async fn token(&self, renew: bool) -> Result<reqwest::header::HeaderValue, ProviderError> {
        let mut slot = self.token.lock().await;
        if renew {
            *slot = None;
        }
        if let Some((token, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return bearer(token);
        }
        let body = serde_json::json!({
            "client_id": self.credentials.client_id,
            "client_secret": self.credentials.client_secret.expose(),
            "audience": self.credentials.audience,
            "grant_type": "client_credentials",
        });
        let answer = http::send(
            self.http
                .post(self.credentials.token_url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
        )
        .await?;
        if !answer.status.is_success() {
            if let Some(common) = answer.common_error() {
                return Err(common);
            }
            return Err(ProviderError::Unauthorized {
                provider: Provider::Ratepay,
                message: format!(
                    "the token endpoint refused the client credentials ({})",
                    answer.status
                ),
            });
        }
        let reply: TokenReply = serde_json::from_slice(&answer.body).map_err(|_| {
            ProviderError::Unexpected("the token endpoint answered without access_token".into())
        })?;
        // Renew a minute early so a token does not expire between check and use; a lifetime
        // beyond a day is not believed.
        let seconds = reply.expires_in.unwrap_or(300).min(86_400);
        let lifetime = Duration::from_secs(seconds.saturating_sub(60));
        let token = Secret::new(reply.access_token);
        let header = bearer(&token)?;
        *slot = Some((token, Instant::now() + lifetime));
        Ok(header)
    }

    /// `POST /v2/transactions/{id}/refunds` with the key; a 401 renews the token once.
    pub async fn create_refund(
        &self,
        transaction: &str,
        body: &str,
        key: &str,
    ) -> Result<String, ProviderError> {
        let url = http::url(&self.base, &["v2", "transactions", transaction, "refunds"])?;
        let mut renew = false;
        loop {
            let token = self.token(renew).await?;
            let answer = http::send(
                self.http
                    .post(url.clone())
                    .header(reqwest::header::AUTHORIZATION, token)
                    .header("Idempotency-Key", key)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string()),
            )
            .await?;
            if answer.status.is_success() {
                let reply: CreatedReply = serde_json::from_slice(&answer.body).map_err(|e| {
                    ProviderError::Unexpected(format!(
                        "{} with a body that is not a refund ({e}): {}",
                        answer.status,
                        answer.snippet()
                    ))
                })?;
                return Ok(reply
                    .ratepay_refund_id
                    .as_deref()
                    .map(raw_text)
                    .unwrap_or_default());
            }
            if answer.status == reqwest::StatusCode::UNAUTHORIZED && !renew {
                renew = true;
                continue;
            }
            return Err(error(&answer, transaction));
        }
    }

    /// `GET /v2/transactions/{id}/refunds`; `None` when the list cannot be read.
    pub async fn list_refunds(
        &self,
        transaction: &str,
    ) -> Result<Option<Vec<RpRefund>>, ProviderError> {
        let url = http::url(&self.base, &["v2", "transactions", transaction, "refunds"])?;
        let token = self.token(false).await?;
        let answer = http::send(
            self.http
                .get(url)
                .header(reqwest::header::AUTHORIZATION, token),
        )
        .await?;
        if answer.status.is_success() {
            return Ok(serde_json::from_slice::<RefundList>(&answer.body)
                .ok()
                .map(|list| list.embedded.map(|e| e.refunds).unwrap_or_default()));
        }
        match answer.status.as_u16() {
            404 | 405 | 501 => Ok(None),
            _ => Err(error(&answer, transaction)),
        }
    }
}

fn bearer(token: &Secret) -> Result<reqwest::header::HeaderValue, ProviderError> {
    http::sensitive(&format!("Bearer {}", token.expose())).map_err(ProviderError::Unexpected)
}

/// What the transaction's refund list says about ours.
enum Listed {
    Found(String),
    Absent,
    Unknown,
}

fn find_listed(list: &[RpRefund], reference: &str) -> Listed {
    if let Some(ours) = list
        .iter()
        .find(|r| r.partner_operation_id.as_deref() == Some(reference))
    {
        return Listed::Found(
            ours.ratepay_refund_id
                .as_deref()
                .map(raw_text)
                .unwrap_or_default(),
        );
    }
    // Only a list that names every refund's operation id can prove ours is not there.
    if list.iter().all(|r| r.partner_operation_id.is_some()) {
        Listed::Absent
    } else {
        Listed::Unknown
    }
}

/// Ratepay with its client and its retry budget.
#[derive(Debug)]
pub struct Ratepay {
    /// The client.
    pub client: RatepayClient,
    /// Retries and rate limit.
    pub retrier: Retrier,
}

fn confirmed(id: String) -> Confirmed {
    Confirmed {
        refund_id: id,
        reference_number: None,
        status: REFUNDED.to_string(),
    }
}

/// How a request is sent: as new, or as a replay of the recorded one.
struct Plan {
    transaction: String,
    body: String,
    key: String,
    generation: i64,
    replay: bool,
}

impl Ratepay {
    async fn listed(&self, transaction: &str, reference: &str) -> Result<Listed, Failure> {
        let list = self
            .retrier
            .run(|| self.client.list_refunds(transaction))
            .await?;
        Ok(match list {
            Some(list) => find_listed(&list, reference),
            None => Listed::Unknown,
        })
    }

    /// Sends (or reconciles) one refund; `intent` is what the journal knows of it.
    pub async fn refund(
        &self,
        ctx: &Ctx,
        refund: &Refund,
        intent: Option<&Intent>,
    ) -> Result<Outcome, StateError> {
        let key = refund.key();
        let Details::Ratepay { transaction_id, .. } = &refund.details else {
            return Ok(Outcome::Rejected("not a ratepay refund".into()));
        };
        let fresh = |generation: i64| Plan {
            transaction: transaction_id.clone(),
            body: refund.body(None),
            key: idempotency_key(&refund.external_reference, generation),
            generation,
            replay: false,
        };
        let plan = match intent {
            Some(intent) if intent.state == IntentState::Pending => {
                let sent = intent.sent_at.as_deref().unwrap_or(&intent.created_at);
                let recent = OffsetDateTime::parse(sent, &Rfc3339)
                    .is_ok_and(|at| OffsetDateTime::now_utc() - at < REPLAY_WINDOW);
                match (&intent.idempotency_key, recent) {
                    (Some(stored), true) => Plan {
                        transaction: intent.target.clone(),
                        body: intent.request.clone(),
                        key: stored.clone(),
                        generation: intent.key_generation,
                        replay: true,
                    },
                    _ => match self
                        .listed(&intent.target, &refund.external_reference)
                        .await
                    {
                        Ok(Listed::Found(id)) => {
                            return Ok(Outcome::Found(outcome::record_done(
                                ctx,
                                &key,
                                confirmed(id),
                            )?));
                        }
                        Ok(Listed::Absent) => fresh(intent.key_generation + 1),
                        Ok(Listed::Unknown) => {
                            return outcome::record_doubt(
                                ctx,
                                &key,
                                "in doubt: a request for this refund was sent more than 23 hours ago without a known outcome, its Idempotency-Key may have expired, and Ratepay's refund list does not tell; kksync sends nothing more for it. Check the transaction at Ratepay: if the refund exists, enter its id in refundId; if not, give the row a new externalReference".to_string(),
                            );
                        }
                        Err(failure) => {
                            return Ok(Outcome::before_sending(
                                failure,
                                "checking whether the earlier request was refunded",
                            ));
                        }
                    },
                }
            }
            Some(intent) if intent.state == IntentState::Rejected => {
                fresh(intent.key_generation + 1)
            }
            _ => {
                // Never sent by this journal (or the journal was lost): a refund listed with our
                // reference is ours. Otherwise the deterministic key makes the send safe anyway.
                match self
                    .listed(transaction_id, &refund.external_reference)
                    .await
                {
                    Ok(Listed::Found(id)) => {
                        return Ok(Outcome::Found(outcome::record_done(
                            ctx,
                            &key,
                            confirmed(id),
                        )?));
                    }
                    Err(Failure::Final(error)) if error.classify() == RetryClass::StopProvider => {
                        return Ok(Outcome::Stop(outcome::stop_reason(&error)));
                    }
                    Err(Failure::Stopped) => return Ok(Outcome::NotSent),
                    _ => fresh(0),
                }
            }
        };
        if !plan.replay {
            ctx.journal(|j| {
                j.record_pending(&NewIntent {
                    provider: Provider::Ratepay,
                    external_reference: &refund.external_reference,
                    order_number: &refund.order_number,
                    target: &plan.transaction,
                    fingerprint: refund.fingerprint(),
                    request: &plan.body,
                    idempotency_key: Some(&plan.key),
                    key_generation: plan.generation,
                })
            })?;
        }
        let tries = AtomicU32::new(0);
        let result = self
            .retrier
            .run(|| {
                tries.fetch_add(1, Ordering::Relaxed);
                self.client
                    .create_refund(&plan.transaction, &plan.body, &plan.key)
            })
            .await;
        let tries = tries.load(Ordering::Relaxed);
        ctx.journal(|j| j.add_attempts(Provider::Ratepay, &refund.external_reference, tries))?;
        match result {
            Ok(id) => {
                ctx.pause_point("refund-sent").await;
                let done = outcome::record_done(ctx, &key, confirmed(id))?;
                Ok(if plan.replay {
                    Outcome::Found(done)
                } else {
                    Outcome::Created(done)
                })
            }
            Err(Failure::Final(error @ ProviderError::IdempotencyConflict { .. })) => {
                outcome::record_doubt(ctx, &key, error.to_string())
            }
            Err(failure) => outcome::record_failure(ctx, &key, failure),
        }
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
    fn the_idempotency_key_is_a_stable_uuid_of_the_reference() {
        let key = idempotency_key("RMA-2024-001", 0);
        assert_eq!(key, idempotency_key("RMA-2024-001", 0));
        assert_ne!(key, idempotency_key("RMA-2024-002", 0));
        assert_ne!(key, idempotency_key("RMA-2024-001", 1));
        assert_eq!(key.len(), 36);
        assert_eq!(key.as_bytes()[14], b'8', "version 8: {key}");
        assert!(
            matches!(key.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{key}"
        );
        // Pinned: a change of the derivation would break replays of refunds in flight.
        assert_eq!(key, "416b3ec9-4192-81ac-bf6d-65c12d006c75");
    }

    #[test]
    fn each_status_reads_differently() {
        let body = r#"{"decline_category":"UNPROCESSABLE_OPERATION","decline_reasons":[{"reason":"REFUND_AMOUNT_TOO_HIGH"}]}"#;
        let messages: Vec<String> = [400, 404, 409, 422, 451, 500]
            .iter()
            .map(|s| error(&answer(*s, body), "tx-1").to_string())
            .collect();
        let mut unique = messages.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), messages.len(), "{messages:#?}");
        assert!(messages[0].contains("400 SYNTAX"));
        assert!(messages[1].contains("transaction tx-1 not found"));
        assert!(messages[2].contains("409"));
        assert_eq!(
            messages[3],
            "refund declined by Ratepay (422 UNPROCESSABLE_OPERATION: REFUND_AMOUNT_TOO_HIGH)"
        );
        assert!(messages[4].contains("legally not allowed"));
        let legal = error(
            &answer(422, r#"{"decline_category":"LEGAL","decline_reasons":[]}"#),
            "tx-1",
        );
        assert!(matches!(legal, ProviderError::LegallyNotAllowed { .. }));
        assert!(error(&answer(503, ""), "tx-1").is_retryable());
    }

    #[test]
    fn only_a_complete_list_proves_absence() {
        let list: RefundList = serde_json::from_str(
            r#"{"_embedded":{"refunds":[{"ratepay_refund_id":"r1","partner_operation_id":"RMA-1"},
                                        {"ratepay_refund_id":"r2","partner_operation_id":"RMA-2"}]}}"#,
        )
        .unwrap();
        let refunds = list.embedded.unwrap().refunds;
        assert!(matches!(find_listed(&refunds, "RMA-2"), Listed::Found(id) if id == "r2"));
        assert!(matches!(find_listed(&refunds, "RMA-3"), Listed::Absent));
        let partial: Vec<RpRefund> =
            serde_json::from_str(r#"[{"ratepay_refund_id":"r1"}]"#).unwrap();
        assert!(matches!(find_listed(&partial, "RMA-3"), Listed::Unknown));
    }
}
