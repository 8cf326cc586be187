//! The sandbox's AfterPay (Riverty) order management, refunds only, under `/afterpay`:
//!
//! * `POST /afterpay/api/v3/orders/{orderNumber}/refunds` (`X-Auth-Key`): checks the capture,
//!   the lines (`orderItems`, or `items` as other renderings name it), at most two decimals,
//!   gross = net + VAT per unit, and the amount still refundable on the capture; without lines
//!   it refunds what is left of the capture (a full refund). 200 with the totals and
//!   `refundNumbers`.
//! * `GET /afterpay/api/v3/orders/{orderNumber}/refunds/{refundNumber}` (documented) and
//!   `GET /afterpay/api/v3/orders/{orderNumber}/refunds` (the read-back the reference's safe
//!   retry pattern names; not documented): `{"refunds":[...]}`.
//!
//! Errors are the `ResponseMessage` array the vendor documents for 400. Codes from the
//! vendor's list are used where one fits (400.001, 400.002, 400.003, 400.005, 400.007,
//! 400.102); the over-refund, unknown-capture and unknown-order codes are invented here
//! (`400.200`, `400.201`, `404.000`) because the vendor's spreadsheet was not available.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::Shared;
use super::providers::json;
use crate::refunds::json::{decimal_from_json, decimal_places, number_text};

#[derive(Debug, Clone)]
struct Capture {
    number: String,
    amount: Decimal,
}

#[derive(Debug, Clone)]
struct RefundRecord {
    number: String,
    capture: String,
    amount: Decimal,
    items: String,
    inserted_at: String,
    transaction_reference: Option<String>,
}

#[derive(Debug, Clone)]
struct Order {
    currency: String,
    captures: Vec<Capture>,
    refunds: Vec<RefundRecord>,
}

impl Order {
    fn refunded(&self, capture: &str) -> Decimal {
        self.refunds
            .iter()
            .filter(|r| r.capture == capture)
            .fold(Decimal::ZERO, |sum, r| sum.saturating_add(r.amount))
    }

    /// What is still refundable on a capture.
    fn balance(&self, capture: &str) -> Decimal {
        self.captures
            .iter()
            .find(|c| c.number == capture)
            .map_or(Decimal::ZERO, |c| {
                c.amount.saturating_sub(self.refunded(&c.number))
            })
    }

    fn captured(&self) -> Decimal {
        self.captures
            .iter()
            .fold(Decimal::ZERO, |sum, c| sum.saturating_add(c.amount))
    }

    fn refunded_total(&self) -> Decimal {
        self.refunds
            .iter()
            .fold(Decimal::ZERO, |sum, r| sum.saturating_add(r.amount))
    }
}

/// AfterPay orders and their refunds.
#[derive(Debug)]
pub(crate) struct AfterPayStore {
    orders: Mutex<HashMap<String, Order>>,
    sequence: AtomicU64,
}

impl Default for AfterPayStore {
    fn default() -> Self {
        AfterPayStore {
            orders: Mutex::new(HashMap::new()),
            sequence: AtomicU64::new(800_000_001),
        }
    }
}

impl AfterPayStore {
    /// Control endpoint: an authorized, captured order.
    pub(crate) fn set_order(&self, number: &str, currency: &str, captures: Vec<(String, Decimal)>) {
        if let Ok(mut orders) = self.orders.lock() {
            orders.insert(
                number.to_string(),
                Order {
                    currency: currency.to_string(),
                    captures: captures
                        .into_iter()
                        .map(|(number, amount)| Capture { number, amount })
                        .collect(),
                    refunds: Vec::new(),
                },
            );
        }
    }

    /// Every refund, for `GET /_sandbox/refunds`.
    pub(crate) fn all_refunds(&self) -> Vec<serde_json::Value> {
        let Ok(orders) = self.orders.lock() else {
            return Vec::new();
        };
        let mut all: Vec<serde_json::Value> = orders
            .iter()
            .flat_map(|(number, order)| {
                order
                    .refunds
                    .iter()
                    .map(move |r| entry(number, &order.currency, r, order.balance(&r.capture)))
            })
            .collect();
        all.sort_by(|a, b| a["refundNumber"].as_str().cmp(&b["refundNumber"].as_str()));
        all
    }
}

fn entry(
    order: &str,
    currency: &str,
    refund: &RefundRecord,
    balance: Decimal,
) -> serde_json::Value {
    let items: serde_json::Value =
        serde_json::from_str(&refund.items).unwrap_or(serde_json::Value::Array(Vec::new()));
    serde_json::json!({
        "reservationId": "00000000-0000-4000-8000-000000000000",
        "customerNumber": "sandbox-customer",
        "refundNumber": refund.number,
        "orderNumber": order,
        "amount": raw_number(refund.amount),
        "balance": raw_number(balance),
        "currency": currency,
        "insertedAt": refund.inserted_at,
        "updatedAt": refund.inserted_at,
        "captureNumber": refund.capture,
        "refundItems": items,
        "transactionReference": refund.transaction_reference,
    })
}

/// A decimal as a JSON number without going through floating point.
fn raw_number(value: Decimal) -> serde_json::Value {
    serde_json::from_str(&number_text(value)).unwrap_or(serde_json::Value::Null)
}

pub(crate) fn routes() -> Router<std::sync::Arc<Shared>> {
    Router::new()
        .route(
            "/afterpay/api/v3/orders/{number}/refunds",
            post(create_refund).get(list_refunds),
        )
        .route(
            "/afterpay/api/v3/orders/{number}/refunds/{refund}",
            get(get_refund),
        )
}

/// One `ResponseMessage`.
fn message(kind: &str, code: &str, text: &str, field: Option<&str>) -> serde_json::Value {
    serde_json::json!({
        "type": kind,
        "code": code,
        "message": text,
        "customerFacingMessage": text,
        "actionCode": "Unavailable",
        "fieldReference": field,
    })
}

fn errors(status: StatusCode, messages: Vec<serde_json::Value>) -> Response {
    json(
        status,
        serde_json::Value::Array(messages).to_string(),
        "application/json",
    )
}

/// `None` when the key is right, else the 401 answer.
fn unauthorized(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    match headers.get("x-auth-key") {
        Some(key) if key.as_bytes() == shared.api_key.as_bytes() => None,
        _ => Some(errors(
            StatusCode::UNAUTHORIZED,
            vec![message(
                "AuthenticationError",
                "401.000",
                "API user is unauthorized. Make sure X-Auth-Key header is sent.",
                None,
            )],
        )),
    }
}

fn not_found(number: &str) -> Response {
    errors(
        StatusCode::NOT_FOUND,
        vec![message(
            "BusinessError",
            "404.000",
            &format!("Order {number} not found"),
            None,
        )],
    )
}

/// Reads a money field of an item: required, a number, at most two decimals.
fn money(
    item: &HashMap<String, Box<RawValue>>,
    field: &str,
    path: &str,
    problems: &mut Vec<serde_json::Value>,
) -> Option<Decimal> {
    let Some(raw) = item.get(field) else {
        problems.push(message(
            "ValidationError",
            "400.002",
            "Value is required",
            Some(&format!("{path}.{field}")),
        ));
        return None;
    };
    let Some(value) = decimal_from_json(raw.get()).filter(|_| !raw.get().starts_with('"')) else {
        problems.push(message(
            "ValidationError",
            "400.004",
            "Value has wrong format",
            Some(&format!("{path}.{field}")),
        ));
        return None;
    };
    if decimal_places(value) > 2 {
        problems.push(message(
            "ValidationError",
            "400.007",
            "A decimal value has more than allowed decimal digits",
            Some(&format!("{path}.{field}")),
        ));
    }
    Some(value)
}

fn text(item: &HashMap<String, Box<RawValue>>, field: &str) -> Option<String> {
    item.get(field)
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
}

/// Checks the lines; returns their gross total, or the messages.
fn check_items(
    items: &[HashMap<String, Box<RawValue>>],
    field: &str,
) -> Result<Decimal, Vec<serde_json::Value>> {
    let mut problems = Vec::new();
    if items.len() > 200 {
        problems.push(message(
            "ValidationError",
            "400.003",
            "Too many items (at most 200)",
            Some(field),
        ));
    }
    let mut total = Decimal::ZERO;
    for (i, item) in items.iter().enumerate() {
        let path = format!("{field}[{i}]");
        for (name, max) in [("productId", 100), ("description", usize::MAX)] {
            match text(item, name) {
                None => problems.push(message(
                    "ValidationError",
                    "400.002",
                    "Value is required",
                    Some(&format!("{path}.{name}")),
                )),
                Some(value) if value.chars().count() > max => problems.push(message(
                    "ValidationError",
                    "400.005",
                    "String is too long",
                    Some(&format!("{path}.{name}")),
                )),
                Some(_) => {}
            }
        }
        let net = money(item, "netUnitPrice", &path, &mut problems);
        let gross = money(item, "grossUnitPrice", &path, &mut problems);
        let vat = money(item, "vatAmount", &path, &mut problems);
        money(item, "vatPercent", &path, &mut problems);
        let quantity = match item
            .get("quantity")
            .and_then(|q| decimal_from_json(q.get()))
        {
            Some(q) if q > Decimal::ZERO => Some(q),
            _ => {
                problems.push(message(
                    "ValidationError",
                    "400.003",
                    "Value is out of range",
                    Some(&format!("{path}.quantity")),
                ));
                None
            }
        };
        if let (Some(net), Some(gross), Some(vat)) = (net, gross, vat)
            && gross.saturating_sub(net).saturating_sub(vat).abs() > Decimal::new(1, 2)
        {
            problems.push(message(
                "BusinessError",
                "400.102",
                "Gross unit price does not match net unit price and VAT amount",
                Some(&path),
            ));
        }
        if let (Some(gross), Some(quantity)) = (gross, quantity) {
            total = total.saturating_add(gross.saturating_mul(quantity));
        }
    }
    if problems.is_empty() {
        Ok(total.round_dp(2))
    } else {
        Err(problems)
    }
}

async fn create_refund(
    State(shared): State<std::sync::Arc<Shared>>,
    Path(number): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(response) = unauthorized(&shared, &headers) {
        return response;
    }
    let Ok(request) = serde_json::from_slice::<HashMap<String, Box<RawValue>>>(&body) else {
        return errors(
            StatusCode::BAD_REQUEST,
            vec![message(
                "ValidationError",
                "400.001",
                "Request body is missing or invalid",
                None,
            )],
        );
    };
    let capture_number = text(&request, "captureNumber").filter(|c| !c.trim().is_empty());
    let transaction_reference = text(&request, "transactionReference");
    let (field, items) = match (request.get("orderItems"), request.get("items")) {
        (Some(raw), _) => ("orderItems", Some(raw)),
        (None, Some(raw)) => ("items", Some(raw)),
        (None, None) => ("orderItems", None),
    };
    let items: Vec<HashMap<String, Box<RawValue>>> = match items {
        None => Vec::new(),
        Some(raw) => match serde_json::from_str(raw.get()) {
            Ok(items) => items,
            Err(_) => {
                return errors(
                    StatusCode::BAD_REQUEST,
                    vec![message(
                        "ValidationError",
                        "400.004",
                        "Value has wrong format",
                        Some(field),
                    )],
                );
            }
        },
    };
    let Some(capture_number) = capture_number else {
        return errors(
            StatusCode::BAD_REQUEST,
            vec![message(
                "ValidationError",
                "400.002",
                "Value is required",
                Some("captureNumber"),
            )],
        );
    };
    if capture_number.chars().count() > 50
        || transaction_reference
            .as_deref()
            .is_some_and(|t| t.chars().count() > 100)
    {
        return errors(
            StatusCode::BAD_REQUEST,
            vec![message(
                "ValidationError",
                "400.005",
                "String is too long",
                Some("captureNumber"),
            )],
        );
    }
    let lines_total = match check_items(&items, field) {
        Ok(total) => total,
        Err(problems) => return errors(StatusCode::BAD_REQUEST, problems),
    };
    let Ok(mut orders) = shared.providers.afterpay.orders.lock() else {
        return errors(StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
    };
    let Some(order) = orders.get_mut(&number) else {
        return not_found(&number);
    };
    let Some(capture) = order
        .captures
        .iter()
        .find(|c| c.number == capture_number)
        .cloned()
    else {
        return errors(
            StatusCode::BAD_REQUEST,
            vec![message(
                "BusinessError",
                "400.201",
                "Capture not found",
                Some("captureNumber"),
            )],
        );
    };
    let remaining = capture
        .amount
        .saturating_sub(order.refunded(&capture.number));
    // Without lines, the whole remaining capture is refunded.
    let amount = if items.is_empty() {
        remaining
    } else {
        lines_total
    };
    if amount <= Decimal::ZERO || amount > remaining {
        return errors(
            StatusCode::BAD_REQUEST,
            vec![message(
                "BusinessError",
                "400.200",
                "Refund amount exceeds capture amount",
                None,
            )],
        );
    }
    let refund_number = shared
        .providers
        .afterpay
        .sequence
        .fetch_add(1, Ordering::Relaxed)
        .to_string();
    let items_json = request
        .get(field)
        .map(|raw| raw.get().to_string())
        .unwrap_or_else(|| "[]".into());
    order.refunds.push(RefundRecord {
        number: refund_number.clone(),
        capture: capture.number.clone(),
        amount,
        items: items_json,
        inserted_at: crate::state::now_rfc3339(),
        transaction_reference,
    });
    let captured = order.captured();
    let refunded = order.refunded_total();
    let reply = serde_json::json!({
        "totalCapturedAmount": raw_number(captured),
        "totalAuthorizedAmount": raw_number(captured),
        "refundNumbers": [refund_number],
        "totalRefundedAmount": raw_number(refunded),
        "remainingAuthorizedAmount": raw_number(captured.saturating_sub(refunded)),
    });
    json(StatusCode::OK, reply.to_string(), "application/json")
}

async fn list_refunds(
    State(shared): State<std::sync::Arc<Shared>>,
    Path(number): Path<String>,
    headers: HeaderMap,
) -> Response {
    read_refunds(&shared, &headers, &number, None)
}

async fn get_refund(
    State(shared): State<std::sync::Arc<Shared>>,
    Path((number, refund)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    read_refunds(&shared, &headers, &number, Some(&refund))
}

fn read_refunds(
    shared: &Shared,
    headers: &HeaderMap,
    number: &str,
    only: Option<&str>,
) -> Response {
    if let Some(response) = unauthorized(shared, headers) {
        return response;
    }
    let Ok(orders) = shared.providers.afterpay.orders.lock() else {
        return errors(StatusCode::INTERNAL_SERVER_ERROR, Vec::new());
    };
    let Some(order) = orders.get(number) else {
        return not_found(number);
    };
    let refunds: Vec<serde_json::Value> = order
        .refunds
        .iter()
        .filter(|r| only.is_none_or(|n| r.number == n))
        .map(|r| entry(number, &order.currency, r, order.balance(&r.capture)))
        .collect();
    if only.is_some() && refunds.is_empty() {
        return errors(
            StatusCode::NOT_FOUND,
            vec![message(
                "BusinessError",
                "404.000",
                "Refund not found",
                None,
            )],
        );
    }
    json(
        StatusCode::OK,
        serde_json::json!({ "refunds": refunds }).to_string(),
        "application/json",
    )
}
