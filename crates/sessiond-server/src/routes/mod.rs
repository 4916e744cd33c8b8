//! Handlers, one module per kind of caller.
//!
//! - [`holder`]: the token holder's own session (`/v1/auth`, `/v1/session`).
//! - [`backend`]: trusted backends with an API key (`/v1/sessions`, `/v1/users`).
//! - [`audit`]: the audit trail, for backends (`/v1/users/{userId}/events`,
//!   `/v1/sessions/{sessionId}/events`).
//! - [`operations`]: health, readiness, metrics and the OpenAPI document.

pub mod audit;
pub mod backend;
pub mod holder;
pub mod operations;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => crate::error::ApiError::Internal(e.into()).into_response(),
    }
}

/// A session document answer, with its version as the entity tag for `If-Match`.
pub(crate) fn session_response(
    status: StatusCode,
    record: &sessiond_core::SessionRecord,
) -> Response {
    let mut r = json(status, &crate::document::SessionDocument::from(record));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", record.version)) {
        r.headers_mut().insert(header::ETAG, etag);
    }
    r
}
