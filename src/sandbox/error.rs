//! API error answers: `{"error":"<message>"}` with the §0.1 texts.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer; the message is copied into the response extensions for the statistics.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: Cow<'static, str>,
}

/// The `error` message of an answer, for the statistics.
#[derive(Debug, Clone)]
pub(crate) struct ErrorMessage(pub(crate) Cow<'static, str>);

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn invalid_request() -> Self {
        Self::bad_request("Invalid request")
    }

    pub(crate) fn missing_body() -> Self {
        Self::bad_request("Missing body")
    }

    pub(crate) fn lock() -> Self {
        Self::bad_request("Could not acquire lock")
    }

    pub(crate) fn unauthorized(message: &'static str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(number: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("Order '{number}' not found").into(),
        }
    }

    pub(crate) fn server_error() -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "Internal server error".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = String::with_capacity(self.message.len() + 12);
        body.push_str("{\"error\":");
        super::order::write_str(&mut body, &self.message);
        body.push('}');
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response.extensions_mut().insert(ErrorMessage(self.message));
        response
    }
}

/// A JSON success answer from already serialized text.
pub(crate) fn json_response(body: impl Into<axum::body::Body>) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
