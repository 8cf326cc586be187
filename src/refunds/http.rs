//! What the three provider clients share: the reqwest client, the path builder, transport
//! errors, `Retry-After`, and reading an answer without assuming it is JSON.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use super::error::ProviderError;

/// An HTTP client for one provider: rustls, no redirects followed (a redirect means a wrong
/// URL), a timeout per request.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(30)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kksync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// `base` + path segments, each percent-encoded (order numbers may hold `/` or spaces).
pub fn url(base: &Url, segments: &[&str]) -> Result<Url, ProviderError> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| ProviderError::Unexpected(format!("{base} cannot be a base URL")))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A header value that must never be printed (API keys, tokens).
pub fn sensitive(value: &str) -> Result<HeaderValue, String> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| "the credential contains characters not allowed in a header".to_string())?;
    header.set_sensitive(true);
    Ok(header)
}

/// An answer, read completely.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its body.
    pub body: Bytes,
    /// Whether it says it is JSON.
    pub is_json: bool,
    /// `Retry-After`, if given.
    pub retry_after: Option<Duration>,
    /// `Location`, if given.
    pub location: Option<String>,
}

impl Answer {
    /// The start of the body, for messages.
    pub fn snippet(&self) -> String {
        snippet(&self.body)
    }

    /// The errors every provider shares: redirects, 429 and 5xx. `None` for the rest.
    pub fn common_error(&self) -> Option<ProviderError> {
        let status = self.status.as_u16();
        match status {
            300..=399 => Some(ProviderError::Unexpected(format!(
                "{} redirect to {}",
                self.status,
                self.location.as_deref().unwrap_or("?")
            ))),
            429 => Some(ProviderError::Throttled {
                retry_after: self.retry_after,
            }),
            500..=599 => Some(ProviderError::Server {
                status,
                message: self.snippet(),
            }),
            _ => None,
        }
    }
}

/// Sends a request and reads the whole answer; transport failures become [`ProviderError`]s.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
    let response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    let headers = response.headers();
    let retry_after = headers.get(RETRY_AFTER).and_then(parse_retry_after);
    let location = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let body = response.bytes().await.map_err(transport_error)?;
    Ok(Answer {
        status,
        body,
        is_json,
        retry_after,
        location,
    })
}

/// Maps a reqwest error; the URL is dropped (it is in our own messages already).
pub fn transport_error(error: reqwest::Error) -> ProviderError {
    use crate::api::client::error_chain;
    let error = error.without_url();
    if error.is_timeout() {
        ProviderError::Timeout
    } else if error.is_connect() {
        ProviderError::Connect(error_chain(&error))
    } else {
        ProviderError::Network(error_chain(&error))
    }
}

/// The start of a body, never the whole of a large page.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
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
    Some(Duration::try_from(when - time::OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_and_appended() {
        let base = Url::parse("https://api.example/api/v2/").unwrap();
        let url = url(&base, &["order", "2025/00 7", "refund"]).unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.example/api/v2/order/2025%2F00%207/refund"
        );
        let bare = Url::parse("http://127.0.0.1:9/afterpay").unwrap();
        assert_eq!(
            super::url(&bare, &["api", "v3"]).unwrap().as_str(),
            "http://127.0.0.1:9/afterpay/api/v3"
        );
    }

    #[test]
    fn sensitive_headers_do_not_print() {
        let header = sensitive("secret-token").unwrap();
        assert!(!format!("{header:?}").contains("secret-token"));
    }
}
