//! The audit trail as clients read it: `GET /v1/users/{userId}/events` and
//! `GET /v1/sessions/{sessionId}/events` answer an [`EventPage`] of [`EventDocument`]s, newest
//! first.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sessiond_core::tier::AuditEvent;

/// One lifecycle event. Never a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventDocument {
    /// The event's id (a UUID), unique in the trail.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "0b7e4a52-93c1-4b7e-9d4e-6f1f7c2a8e10")
    )]
    pub event_id: String,
    /// When it happened, RFC 3339 UTC.
    #[cfg_attr(feature = "openapi", schema(example = "2026-03-15T10:30:00Z"))]
    pub at: String,
    /// What happened: `created`, `rotated`, `updated`, `logged_out`, `revoked`,
    /// `revoked_all`, `replaced`, `evicted`, `expired`, `revoked_everyone`.
    #[cfg_attr(feature = "openapi", schema(example = "logged_out"))]
    pub kind: String,
    /// The session, except for revoke-all and revoke-everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Its user, except for revoke-everyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Who caused it: `holder` (the session's own token), `backend`, `cli` or `sweeper`.
    pub actor: String,
    /// For a backend: its API key's id (the first 8 hex digits of the key's SHA-256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The client's address, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
    /// The client's `User-Agent`, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// What it means, in words.
    pub reason: String,
    /// The kind's data: `count` and `kept` (revoke-all), `by` (the replacing or evicting
    /// session), `count` (revoke-everyone).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub detail: Option<Value>,
}

impl From<&AuditEvent> for EventDocument {
    fn from(e: &AuditEvent) -> Self {
        EventDocument {
            event_id: e.id.to_string(),
            at: e.at.to_rfc3339(),
            kind: e.kind.name().as_str().to_owned(),
            session_id: e.session_id.as_ref().map(ToString::to_string),
            user_id: e.user_id.as_ref().map(ToString::to_string),
            actor: e.actor.as_str().to_owned(),
            key_id: e.actor.key_id().map(|k| k.to_string()),
            client_address: e.client_addr.map(|a| a.to_string()),
            user_agent: e.user_agent.clone(),
            reason: e.kind.reason().to_owned(),
            detail: e.kind.detail(),
        }
    }
}

/// A page of events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    /// The events.
    pub events: Vec<EventDocument>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
