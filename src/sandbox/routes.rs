//! The `/api/v2` routes, the request pipeline (stats, faults, auth, shop state) and the answers
//! for paths outside the API.

use std::borrow::Cow;
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, MatchedPath, Multipart, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use time::Date;

use super::error::{ApiError, ErrorMessage, json_response};
use super::faults::Fault;
use super::lock::LockGuard;
use super::order::{self, Context, Entries, Field, Include, PaymentStatus};
use super::server::ConnAbort;
use super::stats::FaultKind;
use super::store::{self, RefundOutcome};
use super::{Shared, ShopState};
use crate::dates::{add_months, berlin_today, parse_api_date};

type Api = Result<Response, ApiError>;
type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// Latency decided for this request; write handlers sleep it while holding their locks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency(Duration);

/// A tiny valid PNG (1×1 pixel), base64.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

const LOGIN_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Komfortkasse - Login</title></head>\
<body><h1>Komfortkasse merchant area login</h1><form method=\"post\" action=\"/login\">\
<label>E-mail <input name=\"email\"></label> <label>Password <input name=\"password\" type=\"password\">\
</label> <button>Login</button></form><p>(kksync sandbox)</p></body></html>\n";

/// The whole sandbox router: API, control endpoints, login page and redirects.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/v2/orders", get(get_orders).post(post_orders))
        .route("/api/v2/order/{number}", get(get_order).post(post_order))
        .route("/api/v2/order/remove/{number}", status_route(remove_rule))
        .route("/api/v2/order/{number}/cancel", status_route(cancel_rule))
        .route(
            "/api/v2/order/{number}/setpaid",
            status_route(set_paid_rule),
        )
        .route(
            "/api/v2/order/{number}/setunpaid",
            status_route(set_unpaid_rule),
        )
        .route("/api/v2/order/{number}/refund", post(create_refund))
        .route(
            "/api/v2/order/{number}/invoice/{invoice}",
            post(submit_invoice),
        )
        .route("/api/v2/ordersync", post(order_sync))
        .route("/api/v2/postings", get(get_postings))
        .route("/api/v2/image/{number}", get(get_image))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            api_layer,
        ));
    Router::new()
        .merge(api)
        .merge(super::control::router())
        .merge(super::providers::router(Arc::clone(&shared)))
        .route("/login", get(login_page))
        .fallback(fallback)
        .method_not_allowed_fallback(fallback)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn login_page() -> Response {
    html(StatusCode::OK, LOGIN_PAGE)
}

fn html(status: StatusCode, body: &'static str) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// Unknown paths: blank 404 under `/api`, a redirect to the login page elsewhere.
async fn fallback(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path();
    if path == "/api" || path.starts_with("/api/") {
        let _in_flight = shared.stats.begin("UNMATCHED");
        shared.stats.response(404, None);
        return html(StatusCode::NOT_FOUND, "");
    }
    let mut response = StatusCode::FOUND.into_response();
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/login"));
    response
}

/// Stats, body buffering, fault injection, auth and shop state for every matched API route.
async fn api_layer(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!(
            "{} {}",
            request.method(),
            path.as_str()
                .strip_prefix("/api/v2")
                .unwrap_or(path.as_str())
        ),
        None => "UNMATCHED".to_owned(),
    };
    let _in_flight = shared.stats.begin(&route);
    let post_orders = route == "POST /orders";
    let (parts, body) = request.into_parts();
    let response = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => {
            let mut orders = 0;
            if post_orders {
                orders = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&bytes)
                    .map(|v| v.len() as u64)
                    .unwrap_or(0);
                shared.stats.orders_received(orders);
                if orders > 100 {
                    tracing::warn!(orders, "POST /orders with more than 100 orders");
                    shared.stats.oversized();
                }
            }
            let response = pipeline(&shared, parts, bytes, next).await;
            if post_orders {
                shared.stats.post_orders(orders, response.status().as_u16());
            }
            response
        }
        Err(_) => ApiError::missing_body().into_response(),
    };
    let message = response
        .extensions()
        .get::<ErrorMessage>()
        .map(|m| m.0.as_ref());
    shared.stats.response(response.status().as_u16(), message);
    response
}

async fn pipeline(
    shared: &Shared,
    mut parts: axum::http::request::Parts,
    bytes: Bytes,
    next: Next,
) -> Response {
    let runtime = shared.runtime();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let decision = shared
        .faults
        .decide(&runtime.rates, parts.method.as_str(), target, &bytes);
    match decision.fault {
        Some(Fault::Reset) => {
            shared.stats.fault(FaultKind::Reset);
            if let Some(abort) = parts.extensions.get::<ConnAbort>() {
                abort.0.cancel();
                // The connection task drops this request together with the connection.
                std::future::pending::<()>().await;
            }
            return ApiError::server_error().into_response();
        }
        Some(Fault::Stall(duration)) => {
            shared.stats.fault(FaultKind::Stall);
            tokio::time::sleep(duration).await;
        }
        Some(Fault::ServerError) => {
            shared.stats.fault(FaultKind::ServerError);
            tokio::time::sleep(decision.latency).await;
            return ApiError::server_error().into_response();
        }
        Some(Fault::Lock) => {
            shared.stats.fault(FaultKind::Lock);
            tokio::time::sleep(decision.latency).await;
            return ApiError::lock().into_response();
        }
        None => {}
    }
    if let Err(error) = authorize(shared, &parts) {
        return error.into_response();
    }
    let shop = match runtime.shop_state {
        ShopState::Active => None,
        ShopState::ApiInactive => Some("API not active, contact support"),
        ShopState::Inactive => Some("Shop not active"),
        ShopState::ReadOnly if parts.method == Method::POST => {
            Some("Update not allowed for non-API Shop")
        }
        ShopState::ReadOnly => None,
    };
    if let Some(message) = shop {
        return ApiError::bad_request(message).into_response();
    }
    if parts.method == Method::GET {
        // Reads take no locks, so their latency can come first.
        tokio::time::sleep(decision.latency).await;
        parts.extensions.insert(Latency(Duration::ZERO));
    } else {
        parts.extensions.insert(Latency(decision.latency));
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn authorize(shared: &Shared, parts: &axum::http::request::Parts) -> Result<(), ApiError> {
    match parts.headers.get("x-komfortkasse-api-key") {
        None => Err(ApiError::unauthorized("Authentication header not present")),
        Some(key) if key.as_bytes() == b"[your API key]" => Err(ApiError::unauthorized(
            "Replace '[your API key]' with the API key from the merchant area",
        )),
        Some(key) if key.as_bytes() != shared.api_key.as_bytes() => {
            Err(ApiError::unauthorized("Invalid authentication header"))
        }
        Some(_) => Ok(()),
    }
}

/// Try-locks `numbers`, then sleeps the injected latency while holding them.
async fn lock_and_wait<'a>(
    shared: &Shared,
    numbers: impl IntoIterator<Item = &'a str>,
    latency: Latency,
) -> Result<LockGuard, ApiError> {
    let guard = shared
        .locks
        .try_lock_all(numbers)
        .ok_or_else(ApiError::lock)?;
    if !latency.0.is_zero() {
        tokio::time::sleep(latency.0).await;
    }
    Ok(guard)
}

fn params(query: Params) -> Result<Vec<(String, String)>, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|_| ApiError::invalid_request())
}

fn param<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn path_number(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(n)| n)
        .map_err(|_| ApiError::invalid_request())
}

/// The body as JSON text: empty → `Missing body`, HTML comments → the comments error.
fn json_text(body: &Bytes) -> Result<&str, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::missing_body());
    }
    if body.windows(4).any(|w| w == b"<!--") {
        return Err(ApiError::bad_request(
            "Invalid JSON, comments not allowed in JSON body",
        ));
    }
    std::str::from_utf8(body).map_err(|_| ApiError::missing_body())
}

/// Parses one JSON object body.
fn object_body(body: &Bytes) -> Result<Entries<'_>, ApiError> {
    let text = json_text(body)?;
    let raw: &RawValue = serde_json::from_str(text).map_err(|_| ApiError::missing_body())?;
    Entries::parse(raw.get()).ok_or_else(ApiError::invalid_request)
}

fn context<'c>(
    shared: &'c Shared,
    exists: &'c dyn Fn(&str) -> bool,
    rejection: &'c dyn Fn(&str) -> Option<String>,
) -> Context<'c> {
    let _ = shared;
    let today = berlin_today();
    Context {
        today,
        max_due: add_months(today, 6),
        exists,
        rejection,
    }
}

fn rejected(shared: &Shared, number: &str) -> Result<(), ApiError> {
    match shared.rejections.reason(number) {
        Some(reason) => Err(ApiError::bad_request(format!(
            "Could not update order ({reason})"
        ))),
        None => Ok(()),
    }
}

async fn post_orders(
    State(shared): State<Arc<Shared>>,
    Extension(latency): Extension<Latency>,
    query: Params,
    body: Bytes,
) -> Api {
    let include = Include::from_query(&params(query)?);
    let text = json_text(&body)?;
    let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| ApiError::missing_body())?;
    let parsed: Vec<Option<Entries>> = raws.iter().map(|r| Entries::parse(r.get())).collect();
    let numbers: Vec<Cow<str>> = parsed
        .iter()
        .filter_map(|e| e.as_ref().and_then(Entries::number))
        .collect();
    let _guard = lock_and_wait(&shared, numbers.iter().map(|n| &**n), latency).await?;
    let mode = shared.runtime().partial_mode;
    let exists = |n: &str| shared.store.contains(n);
    let rejection = |n: &str| shared.rejections.reason(n);
    let ctx = context(&shared, &exists, &rejection);
    let mut valid = Vec::with_capacity(parsed.len());
    for entries in &parsed {
        let result = match entries {
            Some(entries) => order::validate(entries, None, &ctx),
            None => Err(ApiError::invalid_request()),
        };
        match result {
            Ok(order) => valid.push(order),
            Err(error) if mode == super::PartialMode::Reject => return Err(error),
            Err(_) => {}
        }
    }
    let stored = valid.len() as u64;
    let mut out = String::with_capacity(body.len() + valid.len() * 64 + 2);
    out.push('[');
    for (i, order) in valid.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        shared.store.upsert(order, &mut out, include);
    }
    out.push(']');
    shared.stats.orders_stored(stored);
    Ok(json_response(out))
}

async fn post_order(
    State(shared): State<Arc<Shared>>,
    Extension(latency): Extension<Latency>,
    path: Result<Path<String>, PathRejection>,
    query: Params,
    body: Bytes,
) -> Api {
    let number = path_number(path)?;
    let include = Include::from_query(&params(query)?);
    let entries = object_body(&body)?;
    let _guard = lock_and_wait(&shared, [number.as_str()], latency).await?;
    let exists = |n: &str| shared.store.contains(n);
    let rejection = |n: &str| shared.rejections.reason(n);
    let ctx = context(&shared, &exists, &rejection);
    let order = order::validate(&entries, Some(&number), &ctx)?;
    let mut out = String::with_capacity(order.json.len() + 64);
    shared.store.upsert(order, &mut out, include);
    shared.stats.orders_stored(1);
    Ok(json_response(out))
}

async fn get_order(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    query: Params,
) -> Api {
    let number = path_number(path)?;
    let include = Include::from_query(&params(query)?);
    let mut out = String::new();
    shared
        .store
        .read(&number, |r| r.write_json(&mut out, include))
        .ok_or_else(|| ApiError::not_found(&number))?;
    Ok(json_response(out))
}

/// Shared shape of remove / cancel / setpaid / setunpaid.
async fn change_status(
    shared: &Shared,
    latency: Latency,
    number: &str,
    include: Include,
    change: impl FnOnce(&mut store::Record) -> Result<(), ApiError>,
) -> Api {
    let _guard = lock_and_wait(shared, [number], latency).await?;
    if !shared.store.contains(number) {
        return Err(ApiError::not_found(number));
    }
    rejected(shared, number)?;
    let mut out = String::new();
    shared
        .store
        .write(number, |record| {
            change(record)?;
            record.write_json(&mut out, include);
            Ok(())
        })
        .ok_or_else(|| ApiError::not_found(number))??;
    Ok(json_response(out))
}

/// What one of the status endpoints does to a stored order.
type StatusRule = fn(&mut store::Record) -> Result<(), ApiError>;

/// `POST /order/remove/{n}`, `/cancel`, `/setpaid`, `/setunpaid`: the same request handling,
/// each with its own rule.
fn status_route(rule: StatusRule) -> axum::routing::MethodRouter<Arc<Shared>> {
    post(
        move |State(shared): State<Arc<Shared>>,
              Extension(latency): Extension<Latency>,
              path: Result<Path<String>, PathRejection>,
              query: Params| async move {
            let number = path_number(path)?;
            let include = Include::from_query(&params(query)?);
            change_status(&shared, latency, &number, include, rule).await
        },
    )
}

fn remove_rule(record: &mut store::Record) -> Result<(), ApiError> {
    record.status = PaymentStatus::Disappeared;
    Ok(())
}

fn cancel_rule(record: &mut store::Record) -> Result<(), ApiError> {
    record.status = PaymentStatus::Cancelled;
    Ok(())
}

fn set_paid_rule(record: &mut store::Record) -> Result<(), ApiError> {
    if record.status == PaymentStatus::Paid {
        return Err(ApiError::bad_request("Order already in paymentStatus PAID"));
    }
    record.status = PaymentStatus::Paid;
    record.manual_paid = true;
    Ok(())
}

fn set_unpaid_rule(record: &mut store::Record) -> Result<(), ApiError> {
    if record.status != PaymentStatus::Paid {
        return Err(ApiError::bad_request("Order must have paymentStatus PAID"));
    }
    if !record.manual_paid {
        return Err(ApiError::bad_request(
            "Order must have manual paymentStatus",
        ));
    }
    record.manual_paid = false;
    record.status = record.computed_status();
    Ok(())
}

async fn create_refund(
    State(shared): State<Arc<Shared>>,
    Extension(latency): Extension<Latency>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Api {
    let number = path_number(path)?;
    let entries = object_body(&body)?;
    let _guard = lock_and_wait(&shared, [number.as_str()], latency).await?;
    if !shared.store.contains(&number) {
        return Err(ApiError::not_found(&number));
    }
    let mut fields = Vec::with_capacity(4);
    for name in ["externalReference", "amount", "currency", "plannedDate"] {
        let field = order::text(entries.get(name));
        if matches!(field, Field::Missing) {
            return Err(ApiError::bad_request(format!("Missing parameter {name}")));
        }
        fields.push(field);
    }
    let as_text = |field: &Field<'_>| match field {
        Field::Text(s) => Some(s.to_string()),
        _ => None,
    };
    let planned = as_text(&fields[3])
        .and_then(|s| parse_api_date(&s))
        .ok_or_else(ApiError::invalid_request)?;
    if planned <= berlin_today() {
        return Err(ApiError::bad_request("Planned date must be in the future"));
    }
    let (Some(reference), Some(currency)) = (as_text(&fields[0]), as_text(&fields[2])) else {
        return Err(ApiError::invalid_request());
    };
    rejected(&shared, &number)?;
    let amount = match &fields[1] {
        Field::Other(raw) => order::json_decimal(raw).unwrap_or(Decimal::ZERO),
        _ => Decimal::ZERO,
    };
    match shared
        .store
        .create_refund(&number, &reference, amount, &currency, planned)
    {
        RefundOutcome::Created(json) => Ok(json_response(json)),
        RefundOutcome::Exists => Err(ApiError::bad_request(format!(
            "Refund already exists: {reference}"
        ))),
        RefundOutcome::InvalidAmount => Err(ApiError::invalid_request()),
        RefundOutcome::NotFound => Err(ApiError::not_found(&number)),
    }
}

async fn submit_invoice(
    State(shared): State<Arc<Shared>>,
    Extension(latency): Extension<Latency>,
    path: Result<Path<(String, String)>, PathRejection>,
    request: Request,
) -> Api {
    let (number, invoice) = path
        .map(|Path(p)| p)
        .map_err(|_| ApiError::invalid_request())?;
    let _guard = lock_and_wait(&shared, [number.as_str()], latency).await?;
    if !shared.store.contains(&number) {
        return Err(ApiError::not_found(&number));
    }
    rejected(&shared, &number)?;
    let file_missing = || ApiError::bad_request("File missing");
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|_| file_missing())?;
    let mut file = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("file") {
            file = Some(field.bytes().await.map_err(|_| file_missing())?);
            break;
        }
    }
    let file = file.ok_or_else(file_missing)?;
    if file.is_empty() {
        return Err(ApiError::bad_request("File size 0"));
    }
    shared.store.write(&number, |record| {
        let extra = record.extra_mut();
        if !extra.invoices.iter().any(|(i, _)| **i == *invoice) {
            extra
                .invoices
                .push((invoice.into_boxed_str(), file.to_vec().into_boxed_slice()));
        }
    });
    Ok(StatusCode::OK.into_response())
}

async fn order_sync(
    State(shared): State<Arc<Shared>>,
    Extension(latency): Extension<Latency>,
    body: Bytes,
) -> Api {
    let text = json_text(&body)?;
    let numbers: Vec<String> = serde_json::from_str(text).map_err(|_| ApiError::missing_body())?;
    let keep: HashSet<&str> = numbers.iter().map(String::as_str).collect();
    let candidates = shared.store.sync_candidates(&keep);
    let _guard = lock_and_wait(&shared, candidates.iter().map(|n| &**n), latency).await?;
    let mut legacy = 0u64;
    for number in &candidates {
        let changed = shared.store.write(number, |r| {
            let open = r.status.is_open();
            if open {
                r.status = PaymentStatus::Legacy;
            }
            open
        });
        if changed == Some(true) {
            legacy += 1;
        }
    }
    Ok(json_response(legacy.to_string()))
}

fn query_date(value: &str) -> Result<Date, ApiError> {
    let strict = value.len() == 10 && value.as_bytes().get(2) == Some(&b'-');
    parse_api_date(value).filter(|_| strict).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid date: {value}, format should be dd-MM-yyyy"
        ))
    })
}

/// Filters of `GET /orders`.
#[derive(Debug, Clone, Copy)]
struct OrderFilter {
    min_date: Option<Date>,
    statuses: Option<u16>,
    min_posting: Option<Date>,
    include: Include,
}

impl OrderFilter {
    fn matches(&self, record: &store::Record) -> bool {
        if self.min_date.is_some_and(|min| record.date < min) {
            return false;
        }
        if self
            .statuses
            .is_some_and(|bits| bits & record.status.bit() == 0)
        {
            return false;
        }
        match self.min_posting {
            Some(min) => record.last_posting().is_some_and(|last| last >= min),
            None => true,
        }
    }
}

async fn get_orders(State(shared): State<Arc<Shared>>, query: Params) -> Api {
    let query = params(query)?;
    let today = berlin_today();
    let max_age = match param(&query, "maxAge") {
        None => Some(120),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.parse::<i64>().ok(),
        Some(_) => return Err(ApiError::invalid_request()),
    };
    // Beyond ~2700 years there is no bound (and `Duration::days` must not overflow).
    let min_date = max_age
        .filter(|days| *days <= 1_000_000)
        .and_then(|days| today.checked_sub(time::Duration::days(days)));
    let statuses = match param(&query, "paymentStatus") {
        None | Some("") => None,
        Some(list) => {
            let mut bits = 0u16;
            for name in list.split(',') {
                bits |= PaymentStatus::parse(name.trim())
                    .ok_or_else(ApiError::invalid_request)?
                    .bit();
            }
            Some(bits)
        }
    };
    let min_posting = param(&query, "minPostingDate")
        .map(query_date)
        .transpose()?;
    let filter = OrderFilter {
        min_date,
        statuses,
        min_posting,
        include: Include::from_query(&query),
    };
    Ok(json_response(Body::from_stream(order_stream(
        shared, filter,
    ))))
}

/// Streams the matching orders as one JSON array, ~64 KiB per chunk, taking each shard's read
/// lock only while one chunk is written.
fn order_stream(
    shared: Arc<Shared>,
    filter: OrderFilter,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    const CHUNK: usize = 64 * 1024;
    struct Cursor {
        shard: usize,
        pos: usize,
        any: bool,
        done: bool,
    }
    let start = Cursor {
        shard: 0,
        pos: 0,
        any: false,
        done: false,
    };
    futures::stream::unfold((shared, start), move |(shared, mut cur)| async move {
        if cur.done {
            return None;
        }
        let mut out = String::with_capacity(CHUNK + 4096);
        if cur.shard == 0 && cur.pos == 0 && !cur.any {
            out.push('[');
        }
        while out.len() < CHUNK && cur.shard < store::SHARDS {
            let Ok(shard) = shared.store.shards[cur.shard].read() else {
                cur.shard += 1;
                cur.pos = 0;
                continue;
            };
            while out.len() < CHUNK && cur.pos < shard.records.len() {
                let record = &shard.records[cur.pos];
                cur.pos += 1;
                if filter.matches(record) {
                    if cur.any {
                        out.push(',');
                    }
                    cur.any = true;
                    record.write_json(&mut out, filter.include);
                }
            }
            if cur.pos >= shard.records.len() {
                cur.shard += 1;
                cur.pos = 0;
            }
        }
        if cur.shard >= store::SHARDS {
            out.push(']');
            cur.done = true;
        }
        Some((Ok(Bytes::from(out)), (shared, cur)))
    })
}

async fn get_postings(State(shared): State<Arc<Shared>>, query: Params) -> Api {
    let query = params(query)?;
    let min = param(&query, "createdMin").map(query_date).transpose()?;
    let max = param(&query, "createdMax").map(query_date).transpose()?;
    let include_orders = param(&query, "includeOrders").is_some_and(order::flag);
    let postings: Vec<Arc<store::Posting>> = match shared.store.postings.read() {
        Ok(list) => list
            .iter()
            .filter(|p| min.is_none_or(|min| p.date >= min) && max.is_none_or(|max| p.date < max))
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut out = String::from("[");
    for (i, posting) in postings.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let orders = include_orders.then(|| {
            let mut orders = String::from("[");
            shared.store.read(&posting.order, |r| {
                r.write_json(&mut orders, Include::default())
            });
            orders.push(']');
            orders
        });
        store::write_posting(&mut out, posting, orders.as_deref());
    }
    out.push(']');
    Ok(json_response(out))
}

async fn get_image(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    query: Params,
) -> Api {
    let number = path_number(path)?;
    let query = params(query)?;
    let kind = param(&query, "type").unwrap_or("QRCODE");
    if !matches!(kind, "QRCODE" | "PAYMENTSLIP" | "PAYMENTSLIPPRINT") {
        return Err(ApiError::invalid_request());
    }
    let country = shared
        .store
        .read(&number, |r| r.country().to_owned())
        .ok_or_else(|| ApiError::not_found(&number))?;
    if kind == "PAYMENTSLIPPRINT" && country != "CH" {
        return Err(ApiError::invalid_request());
    }
    Ok(json_response(format!(
        "{{\"type\":\"{kind}\",\"format\":\"png\",\"data\":\"{PNG}\"}}"
    )))
}
