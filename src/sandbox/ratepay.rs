//! The sandbox's Ratepay payment API, refunds only, under `/ratepay`:
//!
//! * `POST /ratepay/oauth/token` `{client_id, client_secret, audience, grant_type}`: the client
//!   secret is the sandbox's `--api-key`; answers `{access_token, expires_in: 1800,
//!   token_type: "Bearer"}`, 401 for a wrong secret.
//! * `POST /ratepay/v2/transactions/{id}/refunds` (bearer token, optional `Idempotency-Key`
//!   ≤ 64 characters): `gross_amount` > 0 with ≤ 2 decimals, lines checked (a `RETURN_FEE`
//!   line must be negative, discounts ≤ 0, line totals and their sum must match
//!   `gross_amount`); 404 for an unknown transaction, 451 for one under a legal block, 422
//!   `UNPROCESSABLE_OPERATION` when nothing is captured or the refund exceeds what is left.
//!   201 `application/hal+json` with `ratepay_refund_id`.
//! * `GET /ratepay/v2/transactions/{id}/refunds`: `{"_embedded":{"refunds":[...]}}`.
//!
//! Idempotency follows the vendor's rules: the same key with an identical request gets the
//! **exact same answer** again (2xx and 4xx alike), a 5xx is run again, the same key with a
//! different request is **409**; requests are processed one at a time, so a retry arriving
//! while the first is running waits for it. Keys are kept until `POST
//! /_sandbox/ratepay/expire-keys` (standing in for the vendor's 24 hours). Decline bodies use
//! the reference's proposal, `{"decline_category":..,"decline_reasons":[{"reason":..}]}`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use super::Shared;
use super::hash::DetHasher;
use super::providers::json;
use crate::refunds::json::{decimal_from_json, decimal_places, number_text};

const HAL: &str = "application/hal+json";

#[derive(Debug, Clone)]
struct RefundRecord {
    id: String,
    gross_amount: Decimal,
    partner_operation_id: Option<String>,
    idempotency_key: Option<String>,
    created: String,
}

#[derive(Debug, Clone)]
struct Transaction {
    currency: String,
    captured: Decimal,
    legal_block: bool,
    refunds: Vec<RefundRecord>,
}

#[derive(Debug, Clone)]
struct Stored {
    fingerprint: u64,
    status: StatusCode,
    body: String,
    content_type: &'static str,
}

#[derive(Debug, Default)]
struct Inner {
    transactions: HashMap<String, Transaction>,
    keys: HashMap<String, Stored>,
    tokens: HashSet<String>,
    sequence: u64,
}

/// Ratepay transactions, refunds, idempotency keys and issued tokens.
#[derive(Debug, Default)]
pub(crate) struct RatepayStore {
    state: Mutex<Inner>,
}

impl RatepayStore {
    /// Control endpoint: a captured transaction (replaces one that exists, keeping its refunds).
    pub(crate) async fn set_transaction(
        &self,
        id: &str,
        currency: &str,
        captured: Decimal,
        legal_block: bool,
    ) {
        let mut state = self.state.lock().await;
        let refunds = state
            .transactions
            .remove(id)
            .map(|t| t.refunds)
            .unwrap_or_default();
        state.transactions.insert(
            id.to_string(),
            Transaction {
                currency: currency.to_string(),
                captured,
                legal_block,
                refunds,
            },
        );
    }

    /// Control endpoint: forgets every idempotency key; returns how many.
    pub(crate) async fn expire_keys(&self) -> usize {
        let mut state = self.state.lock().await;
        let count = state.keys.len();
        state.keys.clear();
        count
    }

    /// Every refund, for `GET /_sandbox/refunds`.
    pub(crate) async fn all_refunds(&self) -> Vec<serde_json::Value> {
        let state = self.state.lock().await;
        let mut all: Vec<serde_json::Value> = state
            .transactions
            .iter()
            .flat_map(|(id, t)| {
                t.refunds.iter().map(move |r| {
                    serde_json::json!({
                        "transaction": id,
                        "ratepay_refund_id": r.id,
                        "gross_amount": raw_number(r.gross_amount),
                        "currency": t.currency,
                        "partner_operation_id": r.partner_operation_id,
                        "idempotency_key": r.idempotency_key,
                        "created": r.created,
                    })
                })
            })
            .collect();
        all.sort_by(|a, b| {
            a["ratepay_refund_id"]
                .as_str()
                .cmp(&b["ratepay_refund_id"].as_str())
        });
        all
    }
}

fn raw_number(value: Decimal) -> serde_json::Value {
    serde_json::from_str(&number_text(value)).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/ratepay/oauth/token", post(token))
        .route(
            "/ratepay/v2/transactions/{id}/refunds",
            post(create_refund).get(list_refunds),
        )
}

fn decline(status: StatusCode, category: &str, reasons: &[&str]) -> Response {
    let reasons: Vec<serde_json::Value> = reasons
        .iter()
        .map(|r| serde_json::json!({ "reason": r }))
        .collect();
    json(
        status,
        serde_json::json!({ "decline_category": category, "decline_reasons": reasons }).to_string(),
        "application/problem+json",
    )
}

async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_request"}"#.into(),
            "application/json",
        );
    };
    let field = |name: &str| request.get(name).and_then(|v| v.as_str()).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"unsupported_grant_type"}"#.into(),
            "application/json",
        );
    }
    if field("client_id").is_empty() || field("client_secret") != shared.api_key {
        return json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"access_denied","error_description":"Unauthorized"}"#.into(),
            "application/json",
        );
    }
    let mut state = shared.providers.ratepay.state.lock().await;
    state.sequence += 1;
    let token = format!(
        "rp-token-{:016x}",
        DetHasher::new(state.sequence)
            .bytes(field("client_id").as_bytes())
            .finish()
    );
    state.tokens.insert(token.clone());
    json(
        StatusCode::OK,
        serde_json::json!({ "access_token": token, "expires_in": 1800, "token_type": "Bearer" })
            .to_string(),
        "application/json",
    )
}

fn bearer_ok(state: &Inner, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| state.tokens.contains(token.trim()))
}

fn unauthorized() -> Response {
    json(
        StatusCode::UNAUTHORIZED,
        r#"{"error":"invalid_token"}"#.into(),
        "application/json",
    )
}

/// Checks the body; returns gross amount and partner operation id, or the 400 reasons.
fn check_body(body: &Bytes) -> Result<(Decimal, Option<String>), Vec<&'static str>> {
    let Ok(request) = serde_json::from_slice::<HashMap<String, Box<RawValue>>>(body) else {
        return Err(vec!["INVALID_JSON"]);
    };
    let mut reasons = Vec::new();
    let gross = match request.get("gross_amount") {
        None => {
            reasons.push("GROSS_AMOUNT_MISSING");
            None
        }
        Some(raw) => match decimal_from_json(raw.get()).filter(|_| !raw.get().starts_with('"')) {
            Some(value) if value <= Decimal::ZERO => {
                reasons.push("GROSS_AMOUNT_NOT_POSITIVE");
                None
            }
            Some(value) if decimal_places(value) > 2 => {
                reasons.push("GROSS_AMOUNT_TOO_MANY_DECIMALS");
                None
            }
            Some(value) => Some(value),
            None => {
                reasons.push("GROSS_AMOUNT_INVALID");
                None
            }
        },
    };
    let mut lines_total = Decimal::ZERO;
    let mut any_lines = false;
    for field in ["items", "special_items"] {
        let Some(raw) = request.get(field) else {
            continue;
        };
        let Ok(items) = serde_json::from_str::<Vec<HashMap<String, Box<RawValue>>>>(raw.get())
        else {
            reasons.push("ITEMS_INVALID");
            continue;
        };
        for item in &items {
            any_lines = true;
            let number = |name: &str| item.get(name).and_then(|r| decimal_from_json(r.get()));
            let Some(price) = number("gross_unit_price") else {
                reasons.push("GROSS_UNIT_PRICE_MISSING");
                continue;
            };
            let discount = number("gross_unit_discount").unwrap_or_default();
            let quantity = number("quantity").unwrap_or(Decimal::ONE);
            let return_fee = item
                .get("type")
                .is_some_and(|t| t.get() == "\"RETURN_FEE\"");
            if return_fee && price >= Decimal::ZERO {
                reasons.push("RETURN_FEE_MUST_BE_NEGATIVE");
            }
            if discount > Decimal::ZERO {
                reasons.push("DISCOUNT_MUST_BE_NEGATIVE");
            }
            if quantity <= Decimal::ZERO {
                reasons.push("QUANTITY_NOT_POSITIVE");
            }
            if [price, discount].iter().any(|v| decimal_places(*v) > 2) {
                reasons.push("TOO_MANY_DECIMALS");
            }
            let computed = price
                .saturating_add(discount)
                .saturating_mul(quantity)
                .round_dp(2);
            let line = number("gross_total_price").unwrap_or(computed);
            if line != computed {
                reasons.push("GROSS_TOTAL_PRICE_MISMATCH");
            }
            if item
                .get("article_number")
                .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
                .is_some_and(|a| a.trim().is_empty())
            {
                reasons.push("ARTICLE_NUMBER_BLANK");
            }
            lines_total = lines_total.saturating_add(line);
        }
    }
    if let Some(gross) = gross
        && any_lines
        && lines_total != gross
    {
        reasons.push("GROSS_AMOUNT_MISMATCH");
    }
    let partner_operation_id = request
        .get("partner_operation_id")
        .and_then(|r| serde_json::from_str::<String>(r.get()).ok());
    if partner_operation_id
        .as_deref()
        .is_some_and(|p| p.chars().count() > 255)
    {
        reasons.push("PARTNER_OPERATION_ID_TOO_LONG");
    }
    match gross {
        Some(gross) if reasons.is_empty() => Ok((gross, partner_operation_id)),
        _ => Err(reasons),
    }
}

async fn create_refund(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // One request at a time: a retry that arrives while the first is running waits for it.
    let mut state = shared.providers.ratepay.state.lock().await;
    if !bearer_ok(&state, &headers) {
        return unauthorized();
    }
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) if !key.is_empty() && key.len() <= 64 && key.is_ascii() => {
            Some(key.to_string())
        }
        Some(_) => {
            return decline(
                StatusCode::BAD_REQUEST,
                "SYNTAX",
                &["IDEMPOTENCY_KEY_INVALID"],
            );
        }
    };
    let fingerprint = DetHasher::new(0)
        .bytes(b"POST")
        .bytes(id.as_bytes())
        .bytes(&body)
        .finish();
    if let Some(key) = &key
        && let Some(stored) = state.keys.get(key)
    {
        if stored.fingerprint != fingerprint {
            return decline(
                StatusCode::CONFLICT,
                "CONFLICT",
                &["IDEMPOTENCY_KEY_REUSED"],
            );
        }
        if !stored.status.is_server_error() {
            return json(stored.status, stored.body.clone(), stored.content_type);
        }
    }
    let (status, body, content_type) = process(&mut state, &id, &body, key.as_deref());
    if let Some(key) = key
        && !status.is_server_error()
    {
        state.keys.insert(
            key,
            Stored {
                fingerprint,
                status,
                body: body.clone(),
                content_type,
            },
        );
    }
    json(status, body, content_type)
}

/// Decides a refund request; returns status, body and content type (for storing and replay).
fn process(
    state: &mut Inner,
    id: &str,
    body: &Bytes,
    key: Option<&str>,
) -> (StatusCode, String, &'static str) {
    let problem = |status: StatusCode, category: &str, reasons: &[&str]| {
        let reasons: Vec<serde_json::Value> = reasons
            .iter()
            .map(|r| serde_json::json!({ "reason": r }))
            .collect();
        (
            status,
            serde_json::json!({ "decline_category": category, "decline_reasons": reasons })
                .to_string(),
            "application/problem+json",
        )
    };
    let (gross, partner_operation_id) = match check_body(body) {
        Ok(checked) => checked,
        Err(reasons) => return problem(StatusCode::BAD_REQUEST, "SYNTAX", &reasons),
    };
    state.sequence += 1;
    let sequence = state.sequence;
    let Some(transaction) = state.transactions.get_mut(id) else {
        return problem(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            &["TRANSACTION_NOT_FOUND"],
        );
    };
    if transaction.legal_block {
        return problem(
            StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            "LEGAL",
            &["REFUND_NOT_ALLOWED"],
        );
    }
    if transaction.captured <= Decimal::ZERO {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_OPERATION",
            &["TRANSACTION_NOT_CAPTURED"],
        );
    }
    let refunded = transaction
        .refunds
        .iter()
        .fold(Decimal::ZERO, |sum, r| sum.saturating_add(r.gross_amount));
    if refunded.saturating_add(gross) > transaction.captured {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_OPERATION",
            &["REFUND_AMOUNT_TOO_HIGH"],
        );
    }
    // A 20-character id like the vendor's example ("9FkZsddr-MaFFFx7gAs_").
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut h = DetHasher::new(sequence).bytes(id.as_bytes()).finish();
    let mut refund_id = String::with_capacity(20);
    for i in 0..20 {
        if i == 10 {
            h = DetHasher::new(h).finish();
        }
        refund_id.push(ALPHABET[(h & 63) as usize] as char);
        h >>= 6;
    }
    let created = crate::state::now_rfc3339();
    transaction.refunds.push(RefundRecord {
        id: refund_id.clone(),
        gross_amount: gross,
        partner_operation_id,
        idempotency_key: key.map(str::to_string),
        created: created.clone(),
    });
    let reply = serde_json::json!({
        "_links": { "self": { "href": format!("/v2/transactions/{id}/refunds/{refund_id}") } },
        "created": created,
        "ratepay_refund_id": refund_id,
        "ratepay_transaction_id": id,
    });
    (StatusCode::CREATED, reply.to_string(), HAL)
}

async fn list_refunds(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let state = shared.providers.ratepay.state.lock().await;
    if !bearer_ok(&state, &headers) {
        return unauthorized();
    }
    let Some(transaction) = state.transactions.get(&id) else {
        return decline(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_FOUND",
            &["TRANSACTION_NOT_FOUND"],
        );
    };
    let refunds: Vec<serde_json::Value> = transaction
        .refunds
        .iter()
        .map(|r| {
            serde_json::json!({
                "ratepay_refund_id": r.id,
                "gross_amount": raw_number(r.gross_amount),
                "partner_operation_id": r.partner_operation_id,
                "created": r.created,
            })
        })
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({
            "_embedded": { "refunds": refunds },
            "_links": { "self": { "href": format!("/v2/transactions/{id}/refunds") } },
            "ratepay_transaction_id": id,
        })
        .to_string(),
        HAL,
    )
}
