//! The one mapping from failures to HTTP answers: `application/problem+json` (RFC 9457).
//!
//! Bodies are safe for clients: a fixed title per kind, a detail that never contains a token,
//! a stack trace or an internal error message. The internal cause is logged here, with its
//! whole chain, and never sent. A store that cannot be reached is `503`, never `500`.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sessiond_core::json::DataError;
use sessiond_core::{SessionError, StoreError};
use sessiond_wire::ProblemDocument;

pub use sessiond_wire::problem::PROBLEM_JSON;

/// An error answer of the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Missing, malformed, expired or revoked credential: one answer for all.
    #[error("unauthorized")]
    Unauthorized,
    /// A backend route without a valid `X-Api-Key`.
    #[error("unauthorized backend")]
    NoApiKey,
    /// Malformed input; the detail says what to fix.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No such live session.
    #[error("not found")]
    NotFound,
    /// This deployment does not offer the resource; the detail says what would enable it.
    #[error("not configured: {0}")]
    NotConfigured(&'static str),
    /// The caller may not do this (a holder writing a backend-only part of `userData`); the
    /// detail says what.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// `If-Match` is stale.
    #[error("precondition failed")]
    PreconditionFailed {
        /// The current version.
        current: u64,
    },
    /// Too large; the detail names the limit.
    #[error("payload too large: {0}")]
    PayloadTooLarge(String),
    /// The request body is over the limit; the connection is closed after the answer, since
    /// the rest of the body may still be on its way.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request body stopped arriving before it was complete (`limits.body_timeout`); the
    /// connection is closed after the answer.
    #[error("request body timed out")]
    BodyTimeout,
    /// Body is not JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The request conflicts with the state (the per-user cap in reject mode).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The client presented too many invalid tokens (S19): retry after this many seconds.
    #[error("too many invalid tokens")]
    TooManyRequests {
        /// Seconds until the client's window ends.
        retry_after: u64,
    },
    /// The store cannot be reached or timed out: retry later.
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    /// The request took longer than the configured limit.
    #[error("request timed out")]
    Timeout,
    /// The gateway's check failed inside sessiond (logged as such): `503`, because a
    /// forward-auth answer may only be 200, 401 or 503, and failing closed is the only safe
    /// answer.
    #[error("the session could not be checked")]
    CheckFailed,
    /// Anything else. Fails closed.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized | ApiError::NoApiKey => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound | ApiError::NotConfigured(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) | ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Timeout | ApiError::CheckFailed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// For `GET /v1/auth`, which may answer only 200, 401 or 503 (a gateway turns anything
    /// else into an error page): everything that is not "no session" fails closed as 503.
    pub fn for_forward_auth(self) -> ApiError {
        match self {
            ApiError::Unauthorized
            | ApiError::NoApiKey
            | ApiError::Unavailable(_)
            | ApiError::Timeout
            | ApiError::CheckFailed => self,
            // Gateways accept only 200, 401 or 503 from a forward-auth check.
            ApiError::BadRequest(_) | ApiError::NotFound | ApiError::TooManyRequests { .. } => {
                ApiError::Unauthorized
            }
            other => {
                log_internal(&other);
                ApiError::CheckFailed
            }
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Unauthorized | ApiError::NoApiKey => {
                "A valid session token or API key is required for this request.".into()
            }
            ApiError::BadRequest(d)
            | ApiError::PayloadTooLarge(d)
            | ApiError::Conflict(d)
            | ApiError::Forbidden(d) => d.clone(),
            ApiError::NotFound => "No live session or resource at this address.".into(),
            ApiError::NotConfigured(what) => (*what).into(),
            ApiError::BodyTooLarge => "The request body is larger than the limit.".into(),
            ApiError::BodyTimeout => "The request body did not arrive in time.".into(),
            ApiError::PreconditionFailed { current } => {
                format!("The session is at version {current}; re-read it and retry.")
            }
            ApiError::UnsupportedMediaType => {
                "The request body must be JSON, sent with Content-Type: application/json.".into()
            }
            ApiError::Unavailable(_) => {
                "The session store cannot be reached; retry shortly.".into()
            }
            ApiError::Timeout => "The request could not be completed in time; retry.".into(),
            ApiError::CheckFailed => "The session could not be checked; retry shortly.".into(),
            ApiError::TooManyRequests { .. } => {
                "Too many invalid session tokens from this client; retry later.".into()
            }
            ApiError::Internal(_) => "An internal error occurred.".into(),
        }
    }
}

/// A problem+json response for `status` with `detail`.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = ProblemDocument {
        r#type: ProblemDocument::type_for(reason),
        title: reason.to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        log_internal(&self);
        let mut response = problem(self.status(), &self.detail());
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // RFC 9110 §11.6.1: a 401 names how to authenticate.
        let challenge = match self {
            ApiError::Unauthorized => Some(r#"Bearer realm="sessiond""#),
            ApiError::NoApiKey => Some(r#"ApiKey realm="sessiond", header="X-Api-Key""#),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if matches!(self, ApiError::BodyTooLarge | ApiError::BodyTimeout) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::TooManyRequests { retry_after } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

fn log_internal(e: &ApiError) {
    match e {
        ApiError::Internal(_) => tracing::error!(error = %chain(e), "request failed"),
        ApiError::Unavailable(_) => tracing::warn!(error = %chain(e), "session store unavailable"),
        _ => {}
    }
}

/// An error with all its causes, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let _ = write!(s, ": {cause}");
        cur = cause.source();
    }
    s
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl From<DataError> for ApiError {
    fn from(e: DataError) -> Self {
        if e.is_too_large() {
            ApiError::PayloadTooLarge(e.to_string())
        } else {
            ApiError::BadRequest(e.to_string())
        }
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Unauthenticated => ApiError::Unauthorized,
            SessionError::NotFound => ApiError::NotFound,
            SessionError::PreconditionFailed { current } => {
                ApiError::PreconditionFailed { current }
            }
            SessionError::AtCapacity => ApiError::Conflict(
                "The user already has the maximum number of live sessions.".into(),
            ),
            SessionError::InvalidData(d) => d.into(),
            SessionError::Contention => {
                ApiError::Conflict("The session was changed concurrently too often; retry.".into())
            }
            SessionError::Store(s) => s.into(),
            SessionError::NotWritable { allowed } if allowed.is_empty() => {
                ApiError::Forbidden("The session's holder may not write userData.".into())
            }
            SessionError::NotWritable { allowed } => ApiError::Forbidden(format!(
                "The session's holder may write only these userData keys: {}.",
                allowed.join(", ")
            )),
            other => ApiError::Internal(other.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(
            ProblemDocument::type_for("Unauthorized"),
            "urn:sessiond:problem:unauthorized"
        );
        assert_eq!(
            ProblemDocument::type_for("Payload Too Large"),
            "urn:sessiond:problem:payload-too-large"
        );
    }

    #[test]
    fn forward_auth_answers_only_401_or_503() {
        for e in [
            ApiError::BadRequest("x".into()),
            ApiError::NotFound,
            ApiError::Internal("boom".into()),
            ApiError::PayloadTooLarge("x".into()),
            ApiError::Conflict("x".into()),
        ] {
            let s = e.for_forward_auth().status();
            assert!(s == StatusCode::UNAUTHORIZED || s == StatusCode::SERVICE_UNAVAILABLE);
        }
    }
}
