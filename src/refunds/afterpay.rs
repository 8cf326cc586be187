//! AfterPay (Riverty) refunds: `POST /api/v3/orders/{orderNumber}/refunds` with `X-Auth-Key`,
//! against a capture, with the refunded lines.
//!
//! Exactly once: AfterPay documents **no idempotency** for refunds, so a blind retry after a
//! timeout could refund twice. kksync therefore
//!
//! * sends its external reference as `transactionReference` ("unique reference for this single
//!   transaction") and never re-sends a request that may have been processed without first
//!   reading the order's refunds (`GET /api/v3/orders/{orderNumber}/refunds`, the read-back the
//!   reference's "safe retry pattern" names);
//! * takes a refund as ours when its `transactionReference` is our reference; when the provider
//!   does not echo that field, when exactly one refund of the same capture and amount, created
//!   after our intent was recorded and not claimed by another intent in the journal, exists;
//! * waits `--afterpay-settle` (default 5 s) before that read-back, so a request the provider
//!   is still working on has finished and shows up;
//! * sends nothing and reports the refund **in doubt** when the read-back is unavailable or
//!   ambiguous: a human checks the merchant portal and either enters the refund number into the
//!   row (`refundId`) or, if no refund exists, gives the row a new external reference.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::Deserializer;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::error::ProviderError;
use super::http::{self, Answer};
use super::items::AfterPayItem;
use super::journal::{Confirmed, Intent, IntentState, NewIntent};
use super::json::JsonDecimal;
use super::model::{Details, Provider, Refund, RefundKey};
use super::outcome::{self, Outcome};
use super::retry::{Failure, Retrier};
use super::run::Ctx;
use crate::state::StateError;

/// The header carrying the AfterPay API key.
pub const AUTH_HEADER: &str = "X-Auth-Key";
/// The status written back for a refund AfterPay booked (it books synchronously).
pub const REFUNDED: &str = "REFUNDED";
/// How far before our intent a refund found in a read-back may have been created and still be
/// taken as ours (clock skew between us and the provider).
const CLOCK_SKEW: time::Duration = time::Duration::minutes(10);

/// One refund in AfterPay's read-back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApRefund {
    /// The refund number.
    #[serde(deserialize_with = "string_or_number")]
    pub refund_number: String,
    /// The capture it was made against.
    #[serde(default)]
    pub capture_number: Option<String>,
    /// Its amount.
    #[serde(default)]
    pub amount: Option<JsonDecimal>,
    /// When it was created.
    #[serde(default)]
    pub inserted_at: Option<String>,
    /// Our reference, if the provider echoes it (not documented).
    #[serde(default)]
    pub transaction_reference: Option<String>,
}

/// The documented read-back shape, `{"refunds":[...]}`.
#[derive(Debug, Deserialize)]
struct RefundList {
    refunds: Vec<ApRefund>,
}

/// Parses a read-back: `{"refunds":[...]}`, or a bare array. (Not an untagged enum: the
/// decimals are read from the raw JSON text, which serde's buffering of untagged enums loses.)
fn parse_list(body: &[u8]) -> Option<Vec<ApRefund>> {
    serde_json::from_slice::<RefundList>(body)
        .map(|list| list.refunds)
        .or_else(|_| serde_json::from_slice::<Vec<ApRefund>>(body))
        .ok()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundReply {
    #[serde(default)]
    refund_numbers: Vec<Box<RawValue>>,
}

/// One entry of AfterPay's 400 body (`ResponseMessage`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseMessage {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    field_reference: Option<String>,
    #[serde(default)]
    action_code: Option<String>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let raw = Box::<RawValue>::deserialize(d)?;
    Ok(raw_text(&raw))
}

fn raw_text(raw: &RawValue) -> String {
    serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_string())
}

/// AfterPay's `ResponseMessage` list as one readable line:
/// `400.002 Value is required (field captureNumber); 400.007 ...`.
pub fn readable_messages(body: &[u8]) -> Option<String> {
    let messages: Vec<ResponseMessage> = serde_json::from_slice::<Vec<ResponseMessage>>(body)
        .or_else(|_| serde_json::from_slice::<ResponseMessage>(body).map(|m| vec![m]))
        .ok()?;
    let parts: Vec<String> = messages
        .iter()
        .map(|m| {
            let mut text = [m.code.as_deref(), m.message.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if let Some(field) = &m.field_reference {
                text.push_str(&format!(" (field {field})"));
            }
            if let Some(action) = m.action_code.as_deref().filter(|a| *a != "Unavailable") {
                text.push_str(&format!(" [action {action}]"));
            }
            text
        })
        .filter(|t| !t.trim().is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn error(answer: &Answer, order: &str) -> ProviderError {
    if let Some(common) = answer.common_error() {
        return common;
    }
    let text = readable_messages(&answer.body).unwrap_or_else(|| answer.snippet());
    match answer.status.as_u16() {
        401 | 403 => ProviderError::Unauthorized {
            provider: Provider::AfterPay,
            message: format!("{} {text}", answer.status.as_u16()),
        },
        404 => ProviderError::NotFound(format!("AfterPay: order {order} not found ({text})")),
        status => ProviderError::Rejected {
            status,
            message: format!("rejected by AfterPay: {text}"),
        },
    }
}

/// The AfterPay client for refunds.
pub struct AfterPayClient {
    http: reqwest::Client,
    base: reqwest::Url,
    key: reqwest::header::HeaderValue,
}

impl std::fmt::Debug for AfterPayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterPayClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// The read-back could not tell (endpoint missing or not understood).
const UNAVAILABLE: &str = "the refund read-back (GET .../refunds) is not available";

impl AfterPayClient {
    /// A client for `base` (e.g. `https://api.bnpl.riverty.io`).
    pub fn new(
        base: reqwest::Url,
        key: &crate::secret::Secret,
        timeout: std::time::Duration,
    ) -> Result<Self, String> {
        Ok(AfterPayClient {
            http: http::client(timeout)?,
            base,
            key: http::sensitive(key.expose())?,
        })
    }

    /// `POST /api/v3/orders/{n}/refunds`; the refund numbers created.
    pub async fn create_refund(
        &self,
        order: &str,
        body: &str,
    ) -> Result<Vec<String>, ProviderError> {
        let url = http::url(&self.base, &["api", "v3", "orders", order, "refunds"])?;
        let answer = http::send(
            self.http
                .post(url)
                .header(AUTH_HEADER, self.key.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
        )
        .await?;
        if answer.status.is_success() {
            let reply: RefundReply = serde_json::from_slice(&answer.body).map_err(|e| {
                ProviderError::Unexpected(format!(
                    "{} with a body that is not a refund reply ({e}): {}",
                    answer.status,
                    answer.snippet()
                ))
            })?;
            return Ok(reply.refund_numbers.iter().map(|r| raw_text(r)).collect());
        }
        Err(error(&answer, order))
    }

    /// `GET /api/v3/orders/{n}/refunds`; `Ok(None)` when the read-back is not available.
    pub async fn list_refunds(&self, order: &str) -> Result<Option<Vec<ApRefund>>, ProviderError> {
        let url = http::url(&self.base, &["api", "v3", "orders", order, "refunds"])?;
        let answer = http::send(self.http.get(url).header(AUTH_HEADER, self.key.clone())).await?;
        if answer.status.is_success() {
            return Ok(parse_list(&answer.body));
        }
        match answer.status.as_u16() {
            // An order without refunds, an unknown order or a missing endpoint look alike here;
            // none of them lets kksync tell that a refund does not exist.
            404 | 405 | 501 => Ok(None),
            _ => Err(error(&answer, order)),
        }
    }
}

/// What a read-back says about our refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Our refund, with its refund numbers.
    Found(Vec<String>),
    /// Not there.
    Absent,
    /// Cannot tell.
    Unknown(String),
}

/// What identifies our refund in a read-back.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    /// Our external reference (`transactionReference`).
    pub reference: &'a str,
    /// The capture refunded against.
    pub capture: &'a str,
    /// Σ grossUnitPrice × quantity.
    pub amount: Decimal,
    /// When our intent was recorded; `None` for the pre-check of a refund never sent, which
    /// accepts only an exact reference match.
    pub since: Option<OffsetDateTime>,
    /// Refund numbers other intents already account for.
    pub claimed: &'a [String],
}

/// Finds our refund in a read-back (see the module documentation for the rules).
pub fn find_ours(list: &[ApRefund], wanted: &Wanted<'_>) -> Lookup {
    let exact: Vec<String> = list
        .iter()
        .filter(|r| r.transaction_reference.as_deref() == Some(wanted.reference))
        .map(|r| r.refund_number.clone())
        .collect();
    if !exact.is_empty() {
        return Lookup::Found(exact);
    }
    let Some(since) = wanted.since else {
        return Lookup::Absent;
    };
    let candidates: Vec<&ApRefund> = list
        .iter()
        .filter(|r| r.transaction_reference.is_none())
        .filter(|r| r.capture_number.as_deref() == Some(wanted.capture))
        .filter(|r| r.amount.map(|a| a.0) == Some(wanted.amount))
        .filter(|r| !wanted.claimed.contains(&r.refund_number))
        .filter(|r| {
            r.inserted_at
                .as_deref()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                .is_none_or(|at| at >= since - CLOCK_SKEW)
        })
        .collect();
    match candidates.as_slice() {
        [] => Lookup::Absent,
        [one] => Lookup::Found(vec![one.refund_number.clone()]),
        many => Lookup::Unknown(format!(
            "{} refunds of capture {} over {} were created since the request was recorded ({}); kksync cannot tell which is ours",
            many.len(),
            wanted.capture,
            wanted.amount,
            many.iter()
                .map(|r| r.refund_number.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Capture number and amount of a request body as it was sent.
fn sent_request(body: &str) -> Option<(String, Decimal)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sent {
        capture_number: String,
        #[serde(default)]
        order_items: Vec<AfterPayItem>,
    }
    let sent: Sent = serde_json::from_str(body).ok()?;
    let amount = sent.order_items.iter().fold(Decimal::ZERO, |sum, item| {
        let gross = item.gross_unit_price.map_or(Decimal::ZERO, |g| g.0);
        let quantity = item.quantity.map_or(Decimal::ZERO, |q| q.0);
        sum.saturating_add(gross.saturating_mul(quantity))
    });
    Some((sent.capture_number, amount.round_dp(2)))
}

/// What one send attempt came to.
enum Sent {
    Created(Vec<String>),
    Found(Vec<String>),
    Unknown(String),
}

/// AfterPay with its client and its retry budget.
#[derive(Debug)]
pub struct AfterPay {
    /// The client.
    pub client: AfterPayClient,
    /// Retries and rate limit.
    pub retrier: Retrier,
    /// How long to let a request that may still be processed settle before its refunds are
    /// read back (after a timeout or a broken connection, or for an intent just recorded).
    pub settle: std::time::Duration,
}

fn confirmed(numbers: &[String]) -> Confirmed {
    Confirmed {
        refund_id: numbers.join("|"),
        reference_number: None,
        status: REFUNDED.to_string(),
    }
}

impl AfterPay {
    async fn lookup(&self, order: &str, wanted: &Wanted<'_>) -> Result<Lookup, ProviderError> {
        Ok(match self.client.list_refunds(order).await? {
            Some(list) => find_ours(&list, wanted),
            None => Lookup::Unknown(UNAVAILABLE.to_string()),
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
        let Details::AfterPay { capture_number, .. } = &refund.details else {
            return Ok(Outcome::Rejected("not an afterpay refund".into()));
        };
        let claimed = ctx.journal(|j| {
            j.claimed_refund_ids(
                Provider::AfterPay,
                &refund.order_number,
                &refund.external_reference,
            )
        })?;
        match intent {
            Some(intent) if intent.state == IntentState::Pending => {
                // An earlier run sent this request (or was about to) and never learnt the
                // outcome: find out before anything is sent again.
                let (capture, amount) = sent_request(&intent.request)
                    .unwrap_or_else(|| (capture_number.clone(), refund.amount));
                let wanted = Wanted {
                    reference: &refund.external_reference,
                    capture: &capture,
                    amount,
                    since: OffsetDateTime::parse(&intent.created_at, &Rfc3339).ok(),
                    claimed: &claimed,
                };
                // An intent recorded moments ago (a run killed and started again at once) may
                // belong to a request the provider is still working on.
                if let Some(since) = wanted.since {
                    let age = OffsetDateTime::now_utc() - since;
                    let settle = time::Duration::try_from(self.settle).unwrap_or_default();
                    if age < settle {
                        let rest = std::time::Duration::try_from(settle - age).unwrap_or_default();
                        tokio::time::sleep(rest).await;
                    }
                }
                let order = intent.target.as_str();
                match self.retrier.run(|| self.lookup(order, &wanted)).await {
                    Ok(Lookup::Found(numbers)) => {
                        return Ok(Outcome::Found(outcome::record_done(
                            ctx,
                            &key,
                            confirmed(&numbers),
                        )?));
                    }
                    Ok(Lookup::Absent) => {}
                    Ok(Lookup::Unknown(why)) => {
                        return outcome::record_doubt(ctx, &key, in_doubt(&why));
                    }
                    Err(failure) => {
                        return Ok(Outcome::before_sending(
                            failure,
                            "checking whether the earlier request was refunded",
                        ));
                    }
                }
            }
            _ => {
                // Never sent by this journal: only an exact reference match counts (another
                // refund of the same amount may be a legitimate second return).
                let wanted = Wanted {
                    reference: &refund.external_reference,
                    capture: capture_number,
                    amount: refund.amount,
                    since: None,
                    claimed: &claimed,
                };
                match self
                    .retrier
                    .run(|| self.lookup(&refund.order_number, &wanted))
                    .await
                {
                    Ok(Lookup::Found(numbers)) => {
                        return Ok(Outcome::Found(outcome::record_done(
                            ctx,
                            &key,
                            confirmed(&numbers),
                        )?));
                    }
                    Ok(_) => {}
                    Err(Failure::Final(error))
                        if error.classify() == super::error::RetryClass::StopProvider =>
                    {
                        return Ok(Outcome::Stop(outcome::stop_reason(&error)));
                    }
                    // The pre-check is a courtesy; the send below is safe without it.
                    Err(Failure::Stopped) => return Ok(Outcome::NotSent),
                    Err(_) => {}
                }
            }
        }
        self.send(ctx, refund, &key, capture_number, &claimed).await
    }

    async fn send(
        &self,
        ctx: &Ctx,
        refund: &Refund,
        key: &RefundKey,
        capture_number: &str,
        claimed: &[String],
    ) -> Result<Outcome, StateError> {
        let body = refund.body(None);
        ctx.journal(|j| {
            j.record_pending(&NewIntent {
                provider: Provider::AfterPay,
                external_reference: &refund.external_reference,
                order_number: &refund.order_number,
                target: &refund.order_number,
                fingerprint: refund.fingerprint(),
                request: &body,
                idempotency_key: None,
                key_generation: 0,
            })
        })?;
        let since = ctx
            .journal(|j| j.get(Provider::AfterPay, &refund.external_reference))?
            .and_then(|i| OffsetDateTime::parse(&i.created_at, &Rfc3339).ok());
        let wanted = Wanted {
            reference: &refund.external_reference,
            capture: capture_number,
            amount: refund.amount,
            since: since.or(Some(OffsetDateTime::now_utc())),
            claimed,
        };
        // Set after an attempt that may have been processed: the next attempt lets it settle
        // once, then looks before it sends.
        let look_first = AtomicBool::new(false);
        let settled = AtomicBool::new(true);
        let tries = AtomicU32::new(0);
        let attempt = || async {
            if look_first.load(Ordering::Relaxed) {
                if !settled.swap(true, Ordering::Relaxed) {
                    tokio::time::sleep(self.settle).await;
                }
                match self.lookup(&refund.order_number, &wanted).await? {
                    Lookup::Found(numbers) => return Ok(Sent::Found(numbers)),
                    Lookup::Unknown(why) => return Ok(Sent::Unknown(why)),
                    Lookup::Absent => {}
                }
            }
            tries.fetch_add(1, Ordering::Relaxed);
            match self.client.create_refund(&refund.order_number, &body).await {
                Ok(numbers) => Ok(Sent::Created(numbers)),
                Err(error) => {
                    if error.maybe_delivered() {
                        look_first.store(true, Ordering::Relaxed);
                        settled.store(false, Ordering::Relaxed);
                    }
                    Err(error)
                }
            }
        };
        let result = self.retrier.run(attempt).await;
        let tries = tries.load(Ordering::Relaxed);
        ctx.journal(|j| j.add_attempts(Provider::AfterPay, &refund.external_reference, tries))?;
        match result {
            Ok(Sent::Created(numbers)) => {
                ctx.pause_point("refund-sent").await;
                Ok(Outcome::Created(outcome::record_done(
                    ctx,
                    key,
                    confirmed(&numbers),
                )?))
            }
            Ok(Sent::Found(numbers)) => Ok(Outcome::Found(outcome::record_done(
                ctx,
                key,
                confirmed(&numbers),
            )?)),
            Ok(Sent::Unknown(why)) => outcome::record_doubt(ctx, key, in_doubt(&why)),
            Err(Failure::Final(error)) if look_first.load(Ordering::Relaxed) => {
                // An earlier attempt may have been booked, and this refusal may be because of
                // it (e.g. "exceeds the captured amount"): not a safe "nothing was created".
                outcome::record_doubt(
                    ctx,
                    key,
                    in_doubt(&format!(
                        "an attempt timed out and a later one was refused ({error})"
                    )),
                )
            }
            Err(failure) => outcome::record_failure(ctx, key, failure),
        }
    }
}

fn in_doubt(why: &str) -> String {
    format!(
        "in doubt: AfterPay may have booked this refund and {why}; kksync sends nothing more for it. Check the order in the Riverty merchant portal: if the refund exists, enter its number in refundId; if not, give the row a new externalReference"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        number: &str,
        capture: &str,
        amount: i64,
        at: &str,
        reference: Option<&str>,
    ) -> ApRefund {
        ApRefund {
            refund_number: number.into(),
            capture_number: Some(capture.into()),
            amount: Some(JsonDecimal(Decimal::from(amount))),
            inserted_at: Some(at.into()),
            transaction_reference: reference.map(str::to_string),
        }
    }

    #[test]
    fn the_read_back_is_matched_exactly_or_not_at_all_when_ambiguous() {
        let since = OffsetDateTime::parse("2026-03-10T10:00:00Z", &Rfc3339).unwrap();
        let claimed = vec!["3".to_string()];
        let wanted = Wanted {
            reference: "RMA-1",
            capture: "C1",
            amount: Decimal::from(20),
            since: Some(since),
            claimed: &claimed,
        };
        let exact = [
            entry("1", "C1", 20, "2026-03-10T10:00:01Z", Some("RMA-0")),
            entry("2", "C1", 20, "2026-03-10T10:00:01Z", Some("RMA-1")),
        ];
        assert_eq!(find_ours(&exact, &wanted), Lookup::Found(vec!["2".into()]));
        assert_eq!(find_ours(&exact[..1], &wanted), Lookup::Absent);

        // Without the echoed reference: same capture and amount, recent, unclaimed.
        let old = entry("4", "C1", 20, "2026-03-01T00:00:00Z", None);
        let claimed_one = entry("3", "C1", 20, "2026-03-10T10:00:02Z", None);
        let other_amount = entry("5", "C1", 25, "2026-03-10T10:00:02Z", None);
        let ours = entry("6", "C1", 20, "2026-03-10T10:00:02Z", None);
        let list = vec![old, claimed_one, other_amount, ours.clone()];
        assert_eq!(find_ours(&list, &wanted), Lookup::Found(vec!["6".into()]));
        let mut twice = list.clone();
        twice.push(entry("7", "C1", 20, "2026-03-10T10:00:03Z", None));
        assert!(matches!(find_ours(&twice, &wanted), Lookup::Unknown(_)));
        // A refund never sent accepts only the exact reference.
        let precheck = Wanted {
            since: None,
            ..wanted
        };
        assert_eq!(find_ours(&[ours], &precheck), Lookup::Absent);
    }

    #[test]
    fn response_messages_become_one_readable_line() {
        let body = br#"[{"type":"ValidationError","code":"400.002","message":"Value is required","fieldReference":"captureNumber","actionCode":"AskConsumerToReEnterData"},
                       {"type":"BusinessError","code":"400.200","message":"Refund amount exceeds capture amount"}]"#;
        assert_eq!(
            readable_messages(body).unwrap(),
            "400.002 Value is required (field captureNumber) [action AskConsumerToReEnterData]; 400.200 Refund amount exceeds capture amount"
        );
        assert_eq!(readable_messages(b"<html>"), None);
    }

    #[test]
    fn both_read_back_shapes_parse_with_exact_decimals() {
        let wrapped = br#"{"refunds":[{"refundNumber":800000001,"captureNumber":"C1","amount":28.8,
            "insertedAt":"2026-03-10T10:00:00Z","transactionReference":"RMA-1","refundItems":[]}]}"#;
        let list = parse_list(wrapped).unwrap();
        assert_eq!(list[0].refund_number, "800000001");
        assert_eq!(list[0].amount, Some(JsonDecimal(Decimal::new(288, 1))));
        let bare = br#"[{"refundNumber":"7","amount":"1,50"}]"#;
        assert_eq!(
            parse_list(bare).unwrap()[0].amount,
            Some(JsonDecimal(Decimal::new(15, 1)))
        );
        assert_eq!(parse_list(b"<html>"), None);
    }

    #[test]
    fn the_sent_request_gives_capture_and_amount() {
        let body = r#"{"captureNumber":"C1","orderItems":[{"productId":"1","description":"d","netUnitPrice":10,"grossUnitPrice":12,"quantity":2,"vatPercent":20,"vatAmount":2}],"transactionReference":"R"}"#;
        assert_eq!(sent_request(body), Some(("C1".into(), Decimal::from(24))));
    }
}
