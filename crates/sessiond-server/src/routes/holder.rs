//! Endpoints of the token holder: the browser or app presenting its own session token.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::cookie;
use crate::credentials::{GatewayHolder, Holder};
use crate::document::{IssuedSession, PatchSession, ProblemDocument, SessionDocument};
use crate::error::ApiError;
use crate::extract::{JsonBody, Transport, if_match};
use crate::journal::Ended;
use crate::routes::{json, session_response};
use crate::state::AppState;

/// Forward-auth check for a gateway.
#[utoipa::path(
    get, path = "/v1/auth", operation_id = "forwardAuth", tag = "token holder",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "A live session; identity in the headers, empty body",
            headers(
                ("X-User-Id" = String, description = "The session's user"),
                ("X-Session-Id" = String, description = "The session's public id"),
            )),
        (status = 401, description = "Missing, malformed, expired or revoked token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot be reached (fail closed)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn forward_auth(holder: Result<GatewayHolder, ApiError>) -> Response {
    match holder {
        Ok(GatewayHolder(Holder { record, .. })) => {
            let (Ok(user), Ok(session)) = (
                HeaderValue::from_str(record.user_id.as_str()),
                HeaderValue::from_str(record.id.as_str()),
            ) else {
                return ApiError::Internal("identity not header-safe".into())
                    .for_forward_auth()
                    .into_response();
            };
            let mut r = StatusCode::OK.into_response();
            r.headers_mut().insert("x-user-id", user);
            r.headers_mut().insert("x-session-id", session);
            r
        }
        Err(e) => e.for_forward_auth().into_response(),
    }
}

/// Reads the caller's session and records activity.
#[utoipa::path(
    get, path = "/v1/session", operation_id = "readOwnSession", tag = "token holder",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The session", body = SessionDocument),
        (status = 401, description = "No live session for this token", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn read(holder: Holder) -> Response {
    session_response(StatusCode::OK, &holder.record)
}

/// JSON Merge Patch of the caller's `userData`, optionally conditional on `If-Match`.
#[utoipa::path(
    patch, path = "/v1/session", operation_id = "patchOwnSession", tag = "token holder",
    security(("bearer" = []), ("cookie" = [])),
    request_body(content = PatchSession, content_type = "application/json"),
    params(("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\"")),
    responses(
        (status = 200, description = "The patched session", body = SessionDocument),
        (status = 400, description = "Malformed patch or If-Match", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "No live session for this token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 403, description = "The patch writes a userData key only the backend may write (see session.holder_writable)", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Concurrent writers won every compare-and-set attempt of an unconditional patch; retry", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 412, description = "If-Match is not the current version", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "userData would exceed its limit", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    holder: Holder,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PatchSession>,
) -> Result<Response, ApiError> {
    let expected = if_match(&headers)?;
    // A body without `userData` changes nothing, but a stale `If-Match` is refused all the
    // same: the precondition is about the request, not about what it changes.
    let updated = match (&body.user_data.0, &expected) {
        (None, None) => holder.record,
        (patch, expected) => {
            state
                .sessions
                .patch(
                    &holder.record.id,
                    patch.as_ref(),
                    expected.as_deref(),
                    holder.origin(),
                )
                .await?
        }
    };
    Ok(session_response(StatusCode::OK, &updated))
}

/// Issues a new token for the caller's session; the presented token dies at once.
#[utoipa::path(
    post, path = "/v1/session/rotate", operation_id = "rotateOwnSession", tag = "token holder",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The new token and the session", body = IssuedSession),
        (status = 401, description = "No live session for this token", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn rotate(State(state): State<AppState>, holder: Holder) -> Result<Response, ApiError> {
    let issued = state
        .sessions
        .rotate(&holder.token, holder.origin())
        .await?;
    // The old secret is dead: the durable copy must not keep it.
    state.sessions_ended(Ended::Rotated(&issued.record)).await;
    let secret = issued.token.expose();
    let mut r = json(
        StatusCode::OK,
        &IssuedSession {
            token: secret.clone(),
            session: SessionDocument::from(&issued.record),
        },
    );
    // A browser keeps working with the new token under the cookie name it already uses.
    if let Transport::Cookie(name) = holder.transport {
        cookie::set(
            &mut r,
            name,
            &secret,
            &issued.record,
            state.persistent_cookie_start(),
        );
    }
    Ok(r)
}

/// Logout: ends the caller's session everywhere.
#[utoipa::path(
    delete, path = "/v1/session", operation_id = "logout", tag = "token holder",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "The session is gone"),
        (status = 401, description = "No live session for this token", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn logout(State(state): State<AppState>, holder: Holder) -> Result<Response, ApiError> {
    state
        .sessions
        .logout(&holder.record, holder.origin())
        .await?;
    state
        .sessions_ended(Ended::Session(&holder.record.id))
        .await;
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Transport::Cookie(name) = holder.transport {
        cookie::clear(&mut r, name);
    }
    Ok(r)
}
