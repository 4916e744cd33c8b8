//! The audit trail, for trusted backends (`X-Api-Key`): a user's events and a session's
//! events, newest first, a page at a time. Read from the durable tier; a deployment without
//! one (`tier.postgres_url` unset) answers `404` saying so.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use sessiond_core::Timestamp;
use sessiond_core::tier::{EventCursor, EventQuery, EventsOf};

use crate::credentials::Backend;
use crate::document::ProblemDocument;
use crate::error::ApiError;
use crate::routes::backend::{path_param, session_id, user_id};
use crate::routes::json;
use crate::state::AppState;
use sessiond_wire::{EventDocument, EventPage};

/// Events on a page when the caller does not say.
const DEFAULT_LIMIT: usize = 100;

/// Query of an audit read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Most events on the page, 1 to 1000 (100 when absent).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Where the page starts: the `nextCursor` of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{43}$")]
    cursor: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
}

/// The query as the tier takes it.
fn query(of: EventsOf, q: &EventsQuery) -> Result<EventQuery, ApiError> {
    let limit = match q.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=1000).contains(&n) => n as usize,
        Some(_) => return Err(ApiError::BadRequest("limit must be 1 to 1000.".into())),
    };
    let after = q
        .cursor
        .as_deref()
        .map(EventCursor::decode)
        .transpose()
        .map_err(|_| ApiError::BadRequest("cursor is not one this server issued.".into()))?;
    let since = q
        .since
        .as_deref()
        .map(|s| {
            Timestamp::parse_rfc3339(s)
                .ok_or_else(|| ApiError::BadRequest("since must be an RFC 3339 time.".into()))
        })
        .transpose()?;
    Ok(EventQuery {
        of,
        since,
        after,
        limit,
    })
}

async fn page(
    state: &AppState,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    of: EventsOf,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|_| ApiError::BadRequest("Malformed query string.".into()))?;
    let query = self::query(of, &q)?;
    let Some(tier) = &state.tier else {
        return Err(ApiError::NotConfigured(
            "This sessiond keeps no audit trail: set tier.postgres_url to keep one.",
        ));
    };
    let page = tier.tier.events(&query).await?;
    Ok(json(
        StatusCode::OK,
        &EventPage {
            events: page.events.iter().map(EventDocument::from).collect(),
            next_cursor: page.next.map(|c| c.encode()),
        },
    ))
}

/// A user's lifecycle events (every session of theirs, and their revoke-alls), newest first.
#[utoipa::path(
    get, path = "/v1/users/{userId}/events", operation_id = "listUserEvents", tag = "backend",
    security(("api_key" = [])),
    params(("userId" = String, Path, description = "The user"), EventsQuery),
    responses(
        (status = 200, description = "A page of events, newest first", body = EventPage),
        (status = 400, description = "Malformed userId, limit, cursor or since", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "This deployment keeps no audit trail (no tier.postgres_url)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn user_events(
    State(state): State<AppState>,
    _: Backend,
    user: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let user = user_id(&path_param(user)?)?;
    page(&state, query, EventsOf::User(user)).await
}

/// One session's lifecycle events, newest first.
#[utoipa::path(
    get, path = "/v1/sessions/{sessionId}/events", operation_id = "listSessionEvents", tag = "backend",
    security(("api_key" = [])),
    params(("sessionId" = String, Path, description = "The session"), EventsQuery),
    responses(
        (status = 200, description = "A page of events, newest first", body = EventPage),
        (status = 400, description = "Malformed sessionId, limit, cursor or since", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 404, description = "This deployment keeps no audit trail (no tier.postgres_url)", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
pub async fn session_events(
    State(state): State<AppState>,
    _: Backend,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let id = session_id(&path_param(id)?)?;
    page(&state, query, EventsOf::Session(id)).await
}
