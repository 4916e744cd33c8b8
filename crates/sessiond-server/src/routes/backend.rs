//! Endpoints of trusted backends (`X-Api-Key`): create sessions at login, read, patch and
//! revoke any session, list and revoke a user's sessions.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sessiond_core::{NewSession, SessionId, UserId};

use crate::credentials::Backend;

use crate::document::{
    CreateSession, IssuedSession, MAX_TTL_SECONDS, PatchSession, ProblemDocument, Revoked,
    SessionDocument, SessionList,
};
use crate::error::ApiError;
use crate::extract::{JsonBody, SESSION_COOKIE, if_match};
use crate::journal::Ended;
use crate::routes::{json, session_response};
use crate::state::AppState;

pub(crate) fn session_id(raw: &str) -> Result<SessionId, ApiError> {
    SessionId::parse(raw).map_err(|e| ApiError::BadRequest(format!("sessionId: {e}")))
}

pub(crate) fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Path segments that fail to decode are a client error in our shape, not axum's.
pub(crate) fn path_param(
    p: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    p.map(|Path(s)| s)
        .map_err(|_| ApiError::BadRequest("Malformed path parameter.".into()))
}

/// Creates a session for a user the backend has authenticated.
#[utoipa::path(
    post, path = "/v1/sessions", operation_id = "createSession", tag = "backend",
    security(("api_key" = [])),
    request_body(content = CreateSession, content_type = "application/json"),
    responses(
        (status = 201, description = "The session and its token (shown once)", body = IssuedSession,
            headers(("Location" = String, description = "/v1/sessions/{sessionId}"))),
        (status = 400, description = "Malformed body or userId", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "The user is at the session cap and the cap rejects", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body, userData or metadata too large", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot be reached", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    backend: Backend,
    JsonBody(body): JsonBody<CreateSession>,
) -> Result<Response, ApiError> {
    let ttl = match body.ttl_seconds {
        Some(s) if (1..=MAX_TTL_SECONDS).contains(&s) => Some(Duration::from_secs(s)),
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "ttlSeconds must be between 1 and {MAX_TTL_SECONDS}."
            )));
        }
        None => None,
    };
    let replaces = match body.replaces_session_id.as_deref() {
        Some(raw) => Some(session_id(raw)?),
        None => None,
    };
    let new = NewSession {
        user_id: user_id(&body.user_id)?,
        user_data: body.user_data.map(|o| o.0).unwrap_or_default(),
        metadata: body.metadata.map(|o| o.0).unwrap_or_default(),
        ttl,
        replaces: replaces.clone(),
    };
    let issued = state.sessions.create(new, backend.origin()).await?;
    if !issued.evicted.is_empty() || issued.replaced {
        let mut ended = issued.evicted.clone();
        ended.extend(replaces.filter(|_| issued.replaced));
        state.sessions_ended(Ended::Sessions(&ended)).await;
    }
    let mut r = json(
        StatusCode::CREATED,
        &IssuedSession {
            token: issued.token.expose(),
            session: SessionDocument::from(&issued.record),
        },
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/sessions/{}", issued.record.id)) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    if body.set_cookie {
        crate::cookie::set(
            &mut r,
            SESSION_COOKIE,
            &issued.token.expose(),
            &issued.record,
            state.persistent_cookie_start(),
        );
    }
    Ok(r)
}

/// Reads any session without recording activity.
#[utoipa::path(
    get, path = "/v1/sessions/{sessionId}", operation_id = "readSession", tag = "backend",
    security(("api_key" = [])),
    params(("sessionId" = String, Path, description = "Public session id")),
    responses(
        (status = 200, description = "The session", body = SessionDocument),
        (status = 400, description = "Malformed session id", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No live session with this id", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    _: Backend,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(&path_param(id)?)?;
    let record = state.sessions.get(&id).await?;
    Ok(session_response(StatusCode::OK, &record))
}

/// JSON Merge Patch of any session's `userData`.
#[utoipa::path(
    patch, path = "/v1/sessions/{sessionId}", operation_id = "patchSession", tag = "backend",
    security(("api_key" = [])),
    params(
        ("sessionId" = String, Path, description = "Public session id"),
        ("If-Match" = Option<String>, Header, description = "Expected version, e.g. \"3\""),
    ),
    request_body(content = PatchSession, content_type = "application/json"),
    responses(
        (status = 200, description = "The patched session", body = SessionDocument),
        (status = 400, description = "Malformed id, patch or If-Match", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No live session with this id", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 409, description = "Concurrent writers won every compare-and-set attempt of an unconditional patch; retry", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 412, description = "If-Match is not the current version", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    backend: Backend,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    JsonBody(body): JsonBody<PatchSession>,
) -> Result<Response, ApiError> {
    let id = session_id(&path_param(id)?)?;
    let expected = if_match(&headers)?;
    let record = match (&body.user_data.0, &expected) {
        (None, None) => state.sessions.get(&id).await?,
        (patch, expected) => {
            state
                .sessions
                .patch(&id, patch.as_ref(), expected.as_deref(), backend.origin())
                .await?
        }
    };
    Ok(session_response(StatusCode::OK, &record))
}

/// Ends one session.
#[utoipa::path(
    delete, path = "/v1/sessions/{sessionId}", operation_id = "revokeSession", tag = "backend",
    security(("api_key" = [])),
    params(("sessionId" = String, Path, description = "Public session id")),
    responses(
        (status = 204, description = "The session is gone"),
        (status = 400, description = "Malformed session id", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "No live session with this id", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    backend: Backend,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(&path_param(id)?)?;
    if !state.sessions.revoke(&id, backend.origin()).await? {
        return Err(ApiError::NotFound);
    }
    state.sessions_ended(Ended::Session(&id)).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Lists a user's live sessions, newest activity first.
#[utoipa::path(
    get, path = "/v1/users/{userId}/sessions", operation_id = "listUserSessions", tag = "backend",
    security(("api_key" = [])),
    params(("userId" = String, Path, description = "The user")),
    responses(
        (status = 200, description = "The user's live sessions (empty when none)", body = SessionList),
        (status = 400, description = "Malformed userId", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn list_user(
    State(state): State<AppState>,
    _: Backend,
    user: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Response, ApiError> {
    let user = user_id(&path_param(user)?)?;
    let sessions = state.sessions.list(&user).await?;
    let list = SessionList {
        sessions: sessions.iter().map(SessionDocument::from).collect(),
    };
    Ok(json(StatusCode::OK, &list))
}

/// Query of revoke-all.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RevokeAllQuery {
    /// A session to keep (the one the user is using).
    #[param(pattern = "^sess_[A-Za-z0-9_-]{16}$")]
    except: Option<String>,
    /// Same as `except`.
    #[param(pattern = "^sess_[A-Za-z0-9_-]{16}$")]
    except_session_id: Option<String>,
}

/// Ends all of a user's sessions, optionally but one.
#[utoipa::path(
    delete, path = "/v1/users/{userId}/sessions", operation_id = "revokeUserSessions", tag = "backend",
    security(("api_key" = [])),
    params(("userId" = String, Path, description = "The user"), RevokeAllQuery),
    responses(
        (status = 200, description = "How many sessions ended", body = Revoked),
        (status = 400, description = "Malformed userId or except", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_user(
    State(state): State<AppState>,
    backend: Backend,
    user: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<RevokeAllQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let user = user_id(&path_param(user)?)?;
    let Query(query) = query.map_err(|_| ApiError::BadRequest("Malformed query string.".into()))?;
    let except = match query
        .except
        .as_deref()
        .or(query.except_session_id.as_deref())
    {
        Some(raw) => Some(session_id(raw)?),
        None => None,
    };
    let revoked = state
        .sessions
        .revoke_user(&user, except.as_ref(), backend.origin())
        .await?;
    state
        .sessions_ended(Ended::User {
            user: &user,
            kept: except.as_ref(),
        })
        .await;
    Ok(json(StatusCode::OK, &Revoked { revoked }))
}

/// Query of the emergency revoke-everything call.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevokeEveryoneQuery {
    /// Must be `all-sessions`: a typo or a stray `DELETE` must not log everyone out. Required:
    /// without it the call is refused with `400`.
    #[param(required = true, value_type = String, pattern = "^all-sessions$")]
    confirm: Option<String>,
}

/// The value `confirm` must have.
const CONFIRM_ALL: &str = "all-sessions";

/// The emergency path (S12): ends every session of every user, for a leaked token database or
/// a compromised backend. Also `sessiond revoke --all`.
#[utoipa::path(
    delete, path = "/v1/sessions", operation_id = "revokeEveryone", tag = "backend",
    security(("api_key" = [])),
    params(RevokeEveryoneQuery),
    responses(
        (status = 200, description = "How many stored sessions were removed", body = Revoked),
        (status = 400, description = "`confirm=all-sessions` is missing", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong API key", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The store cannot be reached", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn revoke_everyone(
    State(state): State<AppState>,
    backend: Backend,
    query: Result<Query<RevokeEveryoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::BadRequest("Malformed query string.".into()))?;
    if query.confirm.as_deref() != Some(CONFIRM_ALL) {
        return Err(ApiError::BadRequest(format!(
            "Ending every session of every user needs ?confirm={CONFIRM_ALL}."
        )));
    }
    tracing::warn!(
        event = "session.revoking_everyone",
        "ending every session of every user"
    );
    let revoked = state.sessions.revoke_everyone(backend.origin()).await?;
    state.sessions_ended(Ended::Everyone).await;
    Ok(json(StatusCode::OK, &Revoked { revoked }))
}
