//! Endpoints of the token holder: the browser or app presenting its own session token.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sessiond_core::{SessionError, SessionRecord, Token};

use crate::binding::Mismatch;
use crate::cookie;
use crate::document::{IssuedSession, PatchSession, ProblemDocument, SessionDocument};
use crate::error::ApiError;
use crate::extract::{JsonBody, Transport, if_match, session_token};
use crate::routes::{json, session_response};
use crate::state::AppState;

/// Validates the presented token: the live session, with activity recorded.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<(SessionRecord, Token, Transport), ApiError> {
    authenticate_as(state, headers, peer, true).await
}

/// [`authenticate`], with `documents: false` for the gateway's check, which returns no
/// `userData` and so need not decode it.
async fn authenticate_as(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    documents: bool,
) -> Result<(SessionRecord, Token, Transport), ApiError> {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr);
    let client = state.guard.admit(&state.metrics, headers, peer)?;
    let (token, transport) = session_token(headers).inspect_err(|_| {
        state.metrics.event("invalid_token");
        state.guard.refused(&state.metrics, headers, client);
        tracing::debug!(
            event = "session.invalid_token",
            reason = "missing or malformed",
            "token refused"
        );
    })?;
    let authenticated = if documents {
        state.sessions.authenticate(&token).await
    } else {
        state.sessions.authenticate_identity(&token).await
    };
    match authenticated {
        Ok(record) => {
            let (mismatches, refuse) = state.binding.config.check(&record, headers, client);
            let report = !mismatches.is_empty()
                && state
                    .binding
                    .should_report(&record.id, std::time::Instant::now());
            for m in &mismatches {
                state.metrics.event(match m {
                    Mismatch::UserAgent => "binding_mismatch_user_agent",
                    Mismatch::Ip => "binding_mismatch_ip",
                });
            }
            for m in mismatches.iter().filter(|_| report) {
                tracing::warn!(
                    event = "session.binding_mismatch",
                    session_id = %record.id,
                    user_id = %record.user_id,
                    property = m.as_str(),
                    refused = refuse,
                    "a session is used by another client than the one that logged in"
                );
            }
            if refuse {
                return Err(ApiError::Unauthorized);
            }
            Ok((record, token, transport))
        }
        Err(SessionError::Unauthenticated) => {
            state.metrics.event("invalid_token");
            state.guard.refused(&state.metrics, headers, client);
            tracing::debug!(
                event = "session.invalid_token",
                reason = "unknown, expired or revoked",
                session_id = %token.session_id(),
                "token refused"
            );
            Err(ApiError::Unauthorized)
        }
        Err(e) => Err(e.into()),
    }
}

/// Forward-auth check for a gateway.
#[utoipa::path(
    get, path = "/v1/auth", tag = "token holder",
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
pub async fn forward_auth(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    match authenticate_as(&state, &headers, peer, false).await {
        Ok((record, _, _)) => {
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
    get, path = "/v1/session", tag = "token holder",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The session", body = SessionDocument),
        (status = 401, description = "No live session for this token", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (record, _, _) = authenticate(&state, &headers, peer).await?;
    Ok(session_response(StatusCode::OK, &record))
}

/// JSON Merge Patch of the caller's `userData`, optionally conditional on `If-Match`.
#[utoipa::path(
    patch, path = "/v1/session", tag = "token holder",
    security(("bearer" = []), ("cookie" = [])),
    request_body(content = PatchSession, content_type = "application/json"),
    params(("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\"")),
    responses(
        (status = 200, description = "The patched session", body = SessionDocument),
        (status = 400, description = "Malformed patch or If-Match", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "No live session for this token", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 412, description = "If-Match is not the current version", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "userData would exceed its limit", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Result<JsonBody<PatchSession>, ApiError>,
) -> Result<Response, ApiError> {
    let (record, _, _) = authenticate(&state, &headers, peer).await?;
    let JsonBody(body) = body?;
    let expected = if_match(&headers)?;
    let Some(patch) = body.user_data.0 else {
        return Ok(session_response(StatusCode::OK, &record));
    };
    let updated = state.sessions.patch(&record.id, &patch, expected).await?;
    Ok(session_response(StatusCode::OK, &updated))
}

/// Issues a new token for the caller's session; the presented token dies at once.
#[utoipa::path(
    post, path = "/v1/session/rotate", tag = "token holder",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The new token and the session", body = IssuedSession),
        (status = 401, description = "No live session for this token", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn rotate(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, token, transport) = authenticate(&state, &headers, peer).await?;
    let issued = state.sessions.rotate(&token).await?;
    state.metrics.event("rotated");
    tracing::info!(event = "session.rotated", session_id = %issued.record.id, user_id = %issued.record.user_id, "session token rotated");
    let secret = issued.token.expose();
    let mut r = json(
        StatusCode::OK,
        &IssuedSession {
            token: secret.clone(),
            session: SessionDocument::from(&issued.record),
        },
    );
    // A browser keeps working with the new token under the cookie name it already uses.
    if let Transport::Cookie(name) = transport {
        cookie::set(
            &mut r,
            name,
            &secret,
            &issued.record,
            state.persistent_cookies,
        );
    }
    Ok(r)
}

/// Logout: ends the caller's session everywhere.
#[utoipa::path(
    delete, path = "/v1/session", tag = "token holder",
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "The session is gone"),
        (status = 401, description = "No live session for this token", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (record, _, transport) = authenticate(&state, &headers, peer).await?;
    state.sessions.revoke(&record.id).await?;
    state.metrics.event("revoked");
    tracing::info!(event = "session.logout", session_id = %record.id, user_id = %record.user_id, "session ended by its holder");
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Transport::Cookie(name) = transport {
        cookie::clear(&mut r, name);
    }
    Ok(r)
}
