//! The BNPL providers of the sandbox: AfterPay (Riverty) under `/afterpay` and Ratepay under
//! `/ratepay`, with the same fault injection as the Komfortkasse routes (resets, stalls, 500s
//! and latency decided by the seed; lock errors are Komfortkasse's own and do not apply).
//!
//! Control endpoints (no authentication):
//!
//! * `POST /_sandbox/afterpay/orders/{n}` `{"currency":"EUR","captures":[{"captureNumber":"C-1",
//!   "amount":"100.00"}]}`: an authorized and captured AfterPay order (replaces one that exists).
//! * `POST /_sandbox/ratepay/transactions/{id}` `{"currency":"EUR","captured_amount":"100.00",
//!   "legal_block":false}`: a captured Ratepay transaction; `legal_block` makes refunds 451.
//! * `POST /_sandbox/ratepay/expire-keys`: forgets every idempotency key (as 24 hours would).
//! * `GET /_sandbox/refunds`: every refund of the three providers, to count them.
//!
//! The sandbox's `--api-key` is also AfterPay's `X-Auth-Key` and Ratepay's client secret.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::Shared;
use super::faults::Fault;
use super::server::ConnAbort;
use super::stats::FaultKind;

/// The state of both providers.
#[derive(Debug, Default)]
pub(crate) struct ProviderStores {
    pub(crate) afterpay: super::afterpay::AfterPayStore,
    pub(crate) ratepay: super::ratepay::RatepayStore,
}

/// Which provider a route belongs to (for the shape of injected errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    AfterPay,
    Ratepay,
}

/// The provider routes and their control endpoints.
pub(crate) fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    let api = super::afterpay::routes()
        .merge(super::ratepay::routes())
        .route_layer(middleware::from_fn_with_state(shared, provider_layer));
    Router::new()
        .merge(api)
        .route("/_sandbox/afterpay/orders/{number}", post(afterpay_order))
        .route(
            "/_sandbox/ratepay/transactions/{id}",
            post(ratepay_transaction),
        )
        .route("/_sandbox/ratepay/expire-keys", post(expire_keys))
        .route("/_sandbox/refunds", get(all_refunds))
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Stats, body buffering and fault injection, as `routes::api_layer` does for Komfortkasse.
async fn provider_layer(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| format!("{} {}", request.method(), p.as_str()))
        .unwrap_or_else(|| "UNMATCHED".to_owned());
    let which = if route.contains("/ratepay/") {
        Which::Ratepay
    } else {
        Which::AfterPay
    };
    let _in_flight = shared.stats.begin(&route);
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        let response = json(StatusCode::BAD_REQUEST, "{}".into(), "application/json");
        shared.stats.response(400, None);
        return response;
    };
    let runtime = shared.runtime();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let decision = shared
        .faults
        .decide(&runtime.rates, parts.method.as_str(), target, &bytes);
    let response = match decision.fault {
        Some(Fault::Reset) => {
            shared.stats.fault(FaultKind::Reset);
            if let Some(abort) = parts.extensions.get::<ConnAbort>() {
                abort.0.cancel();
                std::future::pending::<()>().await;
            }
            server_error(which)
        }
        Some(Fault::ServerError) => {
            shared.stats.fault(FaultKind::ServerError);
            tokio::time::sleep(decision.latency).await;
            server_error(which)
        }
        fault => {
            if let Some(Fault::Stall(duration)) = fault {
                shared.stats.fault(FaultKind::Stall);
                tokio::time::sleep(duration).await;
            }
            tokio::time::sleep(decision.latency).await;
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    };
    shared.stats.response(response.status().as_u16(), None);
    response
}

fn server_error(which: Which) -> Response {
    match which {
        Which::AfterPay => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"[{"type":"TechnicalError","code":"500.000","message":"Request failed due internal error. Retry request later."}]"#.into(),
            "application/json",
        ),
        Which::Ratepay => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"decline_category":"TECHNICAL_ERROR","decline_reasons":[{"reason":"TECHNICAL_ERROR"}]}"#.into(),
            "application/json",
        ),
    }
}

fn bad(message: &str) -> Response {
    json(
        StatusCode::BAD_REQUEST,
        serde_json::json!({ "error": message }).to_string(),
        "application/json",
    )
}

/// An amount given as a JSON string or number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Text(String),
    Number(serde_json::Number),
}

impl Amount {
    fn decimal(&self) -> Option<Decimal> {
        let text = match self {
            Amount::Text(s) => s.clone(),
            Amount::Number(n) => n.to_string(),
        };
        crate::order::parse_decimal(text.trim())
            .ok()
            .filter(|a| *a >= Decimal::ZERO)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaptureSetup {
    capture_number: String,
    amount: Amount,
}

#[derive(Deserialize)]
struct AfterPaySetup {
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    captures: Vec<CaptureSetup>,
}

async fn afterpay_order(
    State(shared): State<Arc<Shared>>,
    Path(number): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(setup) = serde_json::from_slice::<AfterPaySetup>(&body) else {
        return bad(
            r#"expected {"currency":"EUR","captures":[{"captureNumber":"C-1","amount":"100.00"}]}"#,
        );
    };
    let mut captures = Vec::new();
    for capture in setup.captures {
        let Some(amount) = capture.amount.decimal() else {
            return bad("capture amounts must be decimals ≥ 0");
        };
        captures.push((capture.capture_number, amount));
    }
    let currency = setup.currency.unwrap_or_else(|| "EUR".into());
    shared
        .providers
        .afterpay
        .set_order(&number, &currency, captures);
    json(
        StatusCode::OK,
        serde_json::json!({ "order": number }).to_string(),
        "application/json",
    )
}

#[derive(Deserialize)]
struct RatepaySetup {
    #[serde(default)]
    currency: Option<String>,
    captured_amount: Amount,
    #[serde(default)]
    legal_block: bool,
}

async fn ratepay_transaction(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(setup) = serde_json::from_slice::<RatepaySetup>(&body) else {
        return bad(
            r#"expected {"currency":"EUR","captured_amount":"100.00","legal_block":false}"#,
        );
    };
    let Some(captured) = setup.captured_amount.decimal() else {
        return bad("captured_amount must be a decimal ≥ 0");
    };
    let currency = setup.currency.unwrap_or_else(|| "EUR".into());
    shared
        .providers
        .ratepay
        .set_transaction(&id, &currency, captured, setup.legal_block)
        .await;
    json(
        StatusCode::OK,
        serde_json::json!({ "transaction": id }).to_string(),
        "application/json",
    )
}

async fn expire_keys(State(shared): State<Arc<Shared>>) -> Response {
    let forgotten = shared.providers.ratepay.expire_keys().await;
    json(
        StatusCode::OK,
        serde_json::json!({ "forgotten": forgotten }).to_string(),
        "application/json",
    )
}

/// Every refund at the three providers.
async fn all_refunds(State(shared): State<Arc<Shared>>) -> Response {
    let mut komfortkasse = Vec::new();
    for shard in shared.store.shards.iter() {
        let Ok(shard) = shard.read() else { continue };
        for record in &shard.records {
            for refund in record.extra.iter().flat_map(|e| e.refunds.iter()) {
                let mut text = String::new();
                super::store::write_refund(&mut text, refund);
                let mut value: serde_json::Value =
                    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
                if let Some(object) = value.as_object_mut() {
                    object.insert("order".into(), serde_json::Value::from(&*record.number));
                }
                komfortkasse.push(value);
            }
        }
    }
    let body = serde_json::json!({
        "komfortkasse": komfortkasse,
        "afterpay": shared.providers.afterpay.all_refunds(),
        "ratepay": shared.providers.ratepay.all_refunds().await,
    });
    json(StatusCode::OK, body.to_string(), "application/json")
}
