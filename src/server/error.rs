//! The one shape of an API error answer: `{"error":{"code","message"}}` with the status
//! and the headers that status calls for. It never carries internals.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// A 401 that basic auth would also answer: the challenge names both schemes.
    basic: bool,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            basic: false,
        }
    }

    /// The status and the message, for answers in another shape (OTLP's `Status`).
    pub(super) fn status_and_message(&self) -> (StatusCode, &str) {
        (self.status, &self.message)
    }

    /// Offers basic auth in the 401's `WWW-Authenticate` (a browser then asks for a login).
    pub(super) fn basic_challenge(mut self) -> Self {
        self.basic = true;
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // One challenge per header line: browsers (Chromium) ignore a Basic challenge
            // that shares its line with another scheme, and then never ask for a login.
            if self.basic {
                resp.headers_mut().append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"ratewarden\", charset=\"UTF-8\""),
                );
            }
            resp.headers_mut()
                .append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            // RFC 9110 §12.5.3: say which codings would have been accepted.
            resp.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("gzip, deflate, zstd"),
            );
        }
        resp
    }
}
