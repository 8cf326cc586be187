//! HTTP client for the Komfortkasse API v2.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::error::{ApiError, LOCK_MESSAGE};
use crate::config::ApiSettings;

/// The header carrying the API key.
pub const API_KEY_HEADER: &str = "X-Komfortkasse-API-Key";

/// What the API reports back for one stored order.
pub type Ack = super::stream::OrderStatus;

/// The body of a successful `POST /orders`: the stored orders, parsed on demand.
#[derive(Debug, Clone)]
pub struct Reply {
    body: Bytes,
}

impl Reply {
    /// The orders in the reply.
    pub fn acks(&self) -> Result<Vec<Ack>, ApiError> {
        super::stream::order_statuses(&self.body).map_err(|e| {
            ApiError::Unexpected(format!(
                "200 with a body that is not a list of orders ({e}): {}",
                snippet(&self.body)
            ))
        })
    }
}

/// The API client. Cheap to share: it holds one connection pool.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    orders_url: Url,
    api_key: HeaderValue,
    request_timeout: Duration,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("orders_url", &self.orders_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl ApiClient {
    /// Builds a client for the given settings (rustls, no redirects followed).
    pub fn new(settings: &ApiSettings, pool_size: usize) -> Result<Self, ApiError> {
        let mut api_key = HeaderValue::from_str(settings.api_key.expose()).map_err(|_| {
            ApiError::Unexpected("the API key contains characters not allowed in a header".into())
        })?;
        // Keeps the key out of reqwest's and hyper's debug output.
        api_key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(30)))
            // A redirect means the URL is wrong (the real service sends the merchant login page).
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(pool_size)
            .tcp_nodelay(true)
            .user_agent(concat!("kksync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApiError::Unexpected(format!("cannot build the HTTP client: {e}")))?;
        let orders_url = settings
            .base_url
            .join("orders")
            .map_err(|e| ApiError::Unexpected(format!("cannot build the orders URL: {e}")))?;
        Ok(ApiClient {
            http,
            orders_url,
            api_key,
            request_timeout: settings.request_timeout,
        })
    }

    /// `POST /orders` with a JSON array body; returns the stored orders as the API re-read them.
    pub async fn submit_orders(&self, body: Bytes) -> Result<Reply, ApiError> {
        let request = self
            .http
            .post(self.orders_url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let response = self.send(request).await?;
        let body = response.bytes().await.map_err(transport_error)?;
        Ok(Reply { body })
    }

    /// `GET /orders` with these query parameters; the answer is returned unread, so a large
    /// list can be read as a stream ([`super::stream`]).
    pub async fn get_orders(
        &self,
        query: &[(&str, String)],
    ) -> Result<reqwest::Response, ApiError> {
        self.send(self.http.get(self.orders_url.clone()).query(query))
            .await
    }

    /// `GET /order/{number}`: the order as the API has it, or `None` when it does not know
    /// the number (404).
    pub async fn get_order(&self, number: &str) -> Result<Option<Bytes>, ApiError> {
        let mut url = self.orders_url.clone();
        url.path_segments_mut()
            .map_err(|()| ApiError::Unexpected("the API URL cannot take a path".into()))?
            .pop()
            .push("order")
            .push(number);
        match self.send(self.http.get(url)).await {
            Ok(response) => Ok(Some(response.bytes().await.map_err(transport_error)?)),
            Err(ApiError::Rejected { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `POST /ordersync` with the JSON array of open order numbers; returns how many orders
    /// became `LEGACY`. The vendor asks for a timeout of at least ten minutes.
    pub async fn order_sync(&self, body: Bytes) -> Result<u64, ApiError> {
        let url = self
            .orders_url
            .join("ordersync")
            .map_err(|e| ApiError::Unexpected(format!("cannot build the ordersync URL: {e}")))?;
        let request = self
            .http
            .post(url)
            .timeout(self.request_timeout.max(ORDERSYNC_MIN_TIMEOUT))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let response = self.send(request).await?;
        let body = response.bytes().await.map_err(transport_error)?;
        serde_json::from_slice::<u64>(&body).map_err(|_| {
            ApiError::Unexpected(format!(
                "POST /ordersync answered {:?} instead of a number",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })
    }

    /// Sends a request with the API key; a 200 answer is returned, anything else becomes an
    /// [`ApiError`].
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let response = request
            .header(super::client::API_KEY_HEADER, self.api_key.clone())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(parse_retry_after);
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let body = response.bytes().await.map_err(transport_error)?;
        Err(status_error(status, &body, is_json, retry_after, location))
    }
}

/// `/ordersync` may take long on the vendor's side (reference §3.10).
const ORDERSYNC_MIN_TIMEOUT: Duration = Duration::from_secs(600);

fn transport_error(error: reqwest::Error) -> ApiError {
    let error = error.without_url();
    if error.is_timeout() {
        ApiError::Timeout
    } else if error.is_connect() {
        ApiError::Connect(error_chain(&error))
    } else {
        ApiError::Network(error_chain(&error))
    }
}

/// reqwest's top-level message is generic ("error sending request"); the cause says what
/// happened (connection refused, reset by peer...).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn status_error(
    status: StatusCode,
    body: &[u8],
    is_json: bool,
    retry_after: Option<Duration>,
    location: Option<String>,
) -> ApiError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let text = message.clone().unwrap_or_else(|| snippet(body));
    match status.as_u16() {
        401 => ApiError::Unauthorized { message: text },
        429 => ApiError::Throttled { retry_after },
        400 if message.as_deref() == Some(LOCK_MESSAGE) => ApiError::Locked,
        300..=399 => ApiError::Unexpected(format!(
            "{status} redirect to {} (the real service redirects URLs without /api to its login page)",
            location.unwrap_or_else(|| "?".into())
        )),
        500..=599 => ApiError::Server {
            status: status.as_u16(),
            message: text,
        },
        // A 404 without the API's JSON error is a wrong URL, not an unknown order.
        404 if message.is_none() => ApiError::Unexpected(format!(
            "404 without a JSON error body ({})",
            if is_json { "JSON" } else { "not JSON" }
        )),
        code => ApiError::Rejected {
            status: code,
            message: text,
        },
    }
}

/// The start of a body, for messages; never the whole of a large page.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text.to_string()
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = when - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_errors() {
        let lock = status_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"Could not acquire lock"}"#,
            true,
            None,
            None,
        );
        assert!(matches!(lock, ApiError::Locked));
        let rejected = status_error(
            StatusCode::BAD_REQUEST,
            br#"{"error":"Parameter date is not valid"}"#,
            true,
            None,
            None,
        );
        assert_eq!(rejected.api_message(), "Parameter date is not valid");
        let unauthorized = status_error(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"Invalid authentication header"}"#,
            true,
            None,
            None,
        );
        assert!(
            matches!(unauthorized, ApiError::Unauthorized { ref message } if message == "Invalid authentication header")
        );
        let blank = status_error(StatusCode::NOT_FOUND, b"", false, None, None);
        assert!(matches!(blank, ApiError::Unexpected(_)));
        let redirect = status_error(
            StatusCode::FOUND,
            b"<html>",
            false,
            None,
            Some("/login".into()),
        );
        assert!(redirect.to_string().contains("/login"));
        let server = status_error(
            StatusCode::BAD_GATEWAY,
            b"<html>bad gateway</html>",
            false,
            None,
            None,
        );
        assert!(matches!(server, ApiError::Server { status: 502, .. }));
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }
}
