//! The JSON shapes of the API (API.md, "The session document"), with their OpenAPI schemas.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use sessiond_core::SessionRecord;
use sessiond_core::json::{StrictObject, StrictValue};
use utoipa::ToSchema;

/// A session as clients see it. Never contains the token.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionDocument {
    /// Public id of the session; not a credential.
    #[schema(example = "sess_2Qk8vT0b6yJ3mXc1")]
    pub session_id: String,
    /// The user the session belongs to.
    #[schema(example = "user_12345")]
    pub user_id: String,
    /// Creation time, RFC 3339 UTC.
    #[schema(example = "2026-03-15T10:30:00Z")]
    pub created_at: String,
    /// Last recorded activity (recorded at most once per touch interval), RFC 3339 UTC.
    pub last_activity: String,
    /// Idle expiry: last activity plus the idle timeout, capped by `absoluteExpiresAt`.
    pub expires_at: String,
    /// The hard end of the session, which no activity extends.
    pub absolute_expires_at: String,
    /// Increases on every change of `userData`; use it in `If-Match`.
    pub version: u64,
    /// Application data.
    #[schema(value_type = Object)]
    pub user_data: Map<String, Value>,
    /// Login context.
    #[schema(value_type = Object, example = json!({"ipAddress": "192.168.1.100", "loginMethod": "email"}))]
    pub metadata: Map<String, Value>,
}

impl From<&SessionRecord> for SessionDocument {
    fn from(r: &SessionRecord) -> Self {
        SessionDocument {
            session_id: r.id.to_string(),
            user_id: r.user_id.to_string(),
            created_at: r.created_at.to_rfc3339(),
            last_activity: r.last_activity.to_rfc3339(),
            expires_at: r.expires_at().to_rfc3339(),
            absolute_expires_at: r.absolute_expires_at.to_rfc3339(),
            version: r.version,
            user_data: r.user_data.clone(),
            metadata: r.metadata.clone(),
        }
    }
}

/// A session with its token: the only answers that carry a token.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedSession {
    /// The credential. Shown once; sessiond keeps only a hash of its secret.
    pub token: String,
    /// The session.
    pub session: SessionDocument,
}

/// A user's live sessions, newest activity first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// The sessions.
    pub sessions: Vec<SessionDocument>,
}

/// Result of revoke-all.
#[derive(Debug, Serialize, ToSchema)]
pub struct Revoked {
    /// How many live sessions were ended.
    pub revoked: u64,
}

/// Body of `POST /v1/sessions`. Unknown fields are refused, so a client can never choose its
/// own token or session id.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSession {
    /// The user the backend has authenticated.
    #[schema(example = "user_12345")]
    pub user_id: String,
    /// Initial application data (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub user_data: Option<StrictObject>,
    /// Login context (a JSON object), e.g. `ipAddress`, `userAgent`, `loginMethod`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<StrictObject>,
    /// Idle timeout of this session in seconds, clamped to the configured bounds.
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
    /// Also answer with the session cookie (`Set-Cookie: __Host-sid=...; Secure; HttpOnly;
    /// SameSite=Lax; Path=/`), for a login handler that passes it on to the browser.
    #[serde(default)]
    pub set_cookie: bool,
    /// The session this login replaces (re-authentication on a device that still holds one):
    /// it ends once the new one exists, if it belongs to the same user (S3).
    #[schema(example = "sess_Xy9fK2abcdefghij")]
    pub replaces_session_id: Option<String>,
}

/// Body of `PATCH /v1/session` and `PATCH /v1/sessions/{sessionId}`: an RFC 7396 merge patch
/// of `userData`. Only `userData` may be patched.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchSession {
    /// The merge patch; `null` members delete keys.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub user_data: PatchValue,
}

/// A patch member that distinguishes "absent" (no change) from `null` (delete).
#[derive(Debug, Default)]
pub struct PatchValue(pub Option<Value>);

impl<'de> Deserialize<'de> for PatchValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StrictValue::deserialize(d).map(|v| PatchValue(Some(v.0)))
    }
}

/// An RFC 9457 problem document, the body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDocument {
    /// A URI naming the kind of problem, e.g. `urn:sessiond:problem:unauthorized`.
    pub r#type: String,
    /// Short summary.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened and what to do; never contains a token.
    pub detail: String,
}
