//! Control endpoints under `/_sandbox` (no authentication, JSON in and out).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, json_response};
use super::order::Include;
use super::{PartialMode, Shared, ShopState};

type Control = Result<Response, ApiError>;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/stats/reset", post(stats_reset))
        .route("/_sandbox/tick", post(tick))
        .route("/_sandbox/lock/{number}", post(lock))
        .route("/_sandbox/unlock/{number}", post(unlock))
        .route("/_sandbox/reject/{number}", post(reject))
        .route("/_sandbox/pay/{number}", post(pay))
        .route("/_sandbox/orders/{number}", get(order))
        .route("/_sandbox/faults", get(faults).put(set_faults))
}

fn json<T: Serialize>(value: &T) -> Control {
    serde_json::to_string(value)
        .map(json_response)
        .map_err(|_| ApiError::server_error())
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message.into())
}

async fn stats(State(shared): State<Arc<Shared>>) -> Control {
    json(&shared.stats.snapshot())
}

async fn stats_reset(State(shared): State<Arc<Shared>>) -> Control {
    shared.stats.reset();
    json(&serde_json::json!({"reset": true}))
}

async fn tick(State(shared): State<Arc<Shared>>) -> Control {
    let changed = shared.tick();
    json(&serde_json::json!({ "changed": changed }))
}

async fn lock(State(shared): State<Arc<Shared>>, Path(number): Path<String>) -> Control {
    shared.locks.control_lock(&number);
    json(&serde_json::json!({ "locked": number }))
}

async fn unlock(State(shared): State<Arc<Shared>>, Path(number): Path<String>) -> Control {
    let was = shared.locks.control_unlock(&number);
    json(&serde_json::json!({ "unlocked": number, "was_locked": was }))
}

#[derive(Deserialize)]
struct RejectBody {
    reason: Option<String>,
}

async fn reject(
    State(shared): State<Arc<Shared>>,
    Path(number): Path<String>,
    body: Bytes,
) -> Control {
    let body: RejectBody =
        serde_json::from_slice(&body).map_err(|_| bad("expected {\"reason\":\"...\"}"))?;
    shared.rejections.set(&number, body.reason.clone());
    json(&serde_json::json!({ "number": number, "reason": body.reason }))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Text(String),
    Number(serde_json::Number),
}

#[derive(Deserialize)]
struct PayBody {
    amount: Amount,
}

async fn pay(
    State(shared): State<Arc<Shared>>,
    Path(number): Path<String>,
    body: Bytes,
) -> Control {
    let body: PayBody =
        serde_json::from_slice(&body).map_err(|_| bad("expected {\"amount\":\"12.34\"}"))?;
    let text = match &body.amount {
        Amount::Text(s) => s.clone(),
        Amount::Number(n) => n.to_string(),
    };
    let amount = text
        .trim()
        .parse::<Decimal>()
        .ok()
        .filter(|a| *a > Decimal::ZERO)
        .ok_or_else(|| bad("amount must be a positive decimal"))?;
    let status = shared
        .store
        .pay(&number, amount.round_dp(2), crate::dates::berlin_today())
        .ok_or_else(|| ApiError::not_found(&number))?;
    json(&serde_json::json!({ "number": number, "paymentStatus": status }))
}

async fn order(State(shared): State<Arc<Shared>>, Path(number): Path<String>) -> Control {
    let view = shared
        .store
        .read(&number, |r| {
            let mut order = String::new();
            r.write_json(&mut order, Include::all());
            let invoices: Vec<serde_json::Value> = r
                .extra
                .as_ref()
                .map(|e| {
                    e.invoices
                        .iter()
                        .map(|(i, f)| serde_json::json!({"invoiceNumber": &**i, "size": f.len()}))
                        .collect()
                })
                .unwrap_or_default();
            (
                order,
                r.manual_paid,
                r.dunning,
                r.paid().to_string(),
                r.amount.to_string(),
                invoices,
            )
        })
        .ok_or_else(|| ApiError::not_found(&number))?;
    let (order, manual_paid, dunning, paid, amount, invoices) = view;
    let order: serde_json::Value =
        serde_json::from_str(&order).map_err(|_| ApiError::server_error())?;
    json(&serde_json::json!({
        "order": order,
        "amount": amount,
        "paid": paid,
        "manual_paid": manual_paid,
        "initial_dunning_level": dunning,
        "invoices": invoices,
        "locked": shared.locks.is_locked(&number),
        "reject_reason": shared.rejections.reason(&number),
    }))
}

/// The run-time settings as `GET`/`PUT /_sandbox/faults` show and take them (all optional on
/// `PUT`; durations in milliseconds).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSettings {
    pay_rate: Option<f64>,
    lock_error_rate: Option<f64>,
    server_error_rate: Option<f64>,
    reset_rate: Option<f64>,
    stall_rate: Option<f64>,
    latency_ms: Option<u64>,
    latency_jitter_ms: Option<u64>,
    stall_duration_ms: Option<u64>,
    partial_mode: Option<PartialMode>,
    shop_state: Option<ShopState>,
}

fn current(shared: &Shared) -> FaultSettings {
    let rt = shared.runtime();
    let ms = |d: Duration| Some(d.as_millis().min(u128::from(u64::MAX)) as u64);
    FaultSettings {
        pay_rate: Some(rt.rates.pay_rate),
        lock_error_rate: Some(rt.rates.lock_error_rate),
        server_error_rate: Some(rt.rates.server_error_rate),
        reset_rate: Some(rt.rates.reset_rate),
        stall_rate: Some(rt.rates.stall_rate),
        latency_ms: ms(rt.rates.latency),
        latency_jitter_ms: ms(rt.rates.latency_jitter),
        stall_duration_ms: ms(rt.rates.stall_duration),
        partial_mode: Some(rt.partial_mode),
        shop_state: Some(rt.shop_state),
    }
}

async fn faults(State(shared): State<Arc<Shared>>) -> Control {
    json(&current(&shared))
}

async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Control {
    let update: FaultSettings =
        serde_json::from_slice(&body).map_err(|e| bad(format!("invalid settings: {e}")))?;
    for (name, rate) in [
        ("pay_rate", update.pay_rate),
        ("lock_error_rate", update.lock_error_rate),
        ("server_error_rate", update.server_error_rate),
        ("reset_rate", update.reset_rate),
        ("stall_rate", update.stall_rate),
    ] {
        if rate.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            return Err(bad(format!("{name} must be between 0 and 1")));
        }
    }
    {
        let mut rt = match shared.runtime.write() {
            Ok(rt) => rt,
            Err(poisoned) => poisoned.into_inner(),
        };
        let rates = &mut rt.rates;
        if let Some(v) = update.pay_rate {
            rates.pay_rate = v;
        }
        if let Some(v) = update.lock_error_rate {
            rates.lock_error_rate = v;
        }
        if let Some(v) = update.server_error_rate {
            rates.server_error_rate = v;
        }
        if let Some(v) = update.reset_rate {
            rates.reset_rate = v;
        }
        if let Some(v) = update.stall_rate {
            rates.stall_rate = v;
        }
        if let Some(v) = update.latency_ms {
            rates.latency = Duration::from_millis(v);
        }
        if let Some(v) = update.latency_jitter_ms {
            rates.latency_jitter = Duration::from_millis(v);
        }
        if let Some(v) = update.stall_duration_ms {
            rates.stall_duration = Duration::from_millis(v);
        }
        if let Some(v) = update.partial_mode {
            rt.partial_mode = v;
        }
        if let Some(v) = update.shop_state {
            rt.shop_state = v;
        }
    }
    json(&current(&shared))
}
