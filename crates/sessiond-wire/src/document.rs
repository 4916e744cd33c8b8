//! The JSON documents of the API: the session document, and the bodies of requests and
//! answers. Request bodies refuse unknown fields and duplicate keys when read, so a client can
//! never choose its own token or session id, and two parsers can never read two documents.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sessiond_core::SessionRecord;
use sessiond_core::json::{StrictObject, StrictValue};

/// A session as clients see it. Never contains the token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionDocument {
    /// Public id of the session; not a credential.
    #[cfg_attr(feature = "openapi", schema(example = "sess_2Qk8vT0b6yJ3mXc1"))]
    pub session_id: String,
    /// The user the session belongs to.
    #[cfg_attr(feature = "openapi", schema(example = "user_12345"))]
    pub user_id: String,
    /// Creation time, RFC 3339 UTC.
    #[cfg_attr(feature = "openapi", schema(example = "2026-03-15T10:30:00Z"))]
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
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub user_data: Map<String, Value>,
    /// Login context.
    #[cfg_attr(feature = "openapi", schema(value_type = Object, example = json!({"ipAddress": "192.168.1.100", "loginMethod": "email"})))]
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

/// A session with its token: the only answers that carry a token (create and rotate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedSession {
    /// The credential. Shown once; sessiond keeps only a hash of its secret.
    pub token: String,
    /// The session.
    pub session: SessionDocument,
}

/// A user's live sessions, newest activity first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionList {
    /// The sessions.
    pub sessions: Vec<SessionDocument>,
}

/// The answer of revoke-all and revoke-everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Revoked {
    /// How many sessions were ended.
    pub revoked: u64,
}

/// What a session id looks like, as an OpenAPI (ECMA-262) pattern: `sess_` and 16 base64url
/// characters.
pub const SESSION_ID_PATTERN: &str = "^sess_[A-Za-z0-9_-]{16}$";

/// What a user id looks like, as an OpenAPI (ECMA-262) pattern, with lengths 1 to
/// [`USER_ID_MAX_LEN`]: printable ASCII without spaces, and not `.` or `..` (no URL path can
/// carry those). Written without look-ahead, which not every schema tool reads: the first
/// character is not a dot, or a dot is followed by another character, or two dots by a third.
pub const USER_ID_PATTERN: &str = r"^(?:[!-\-/-~]|\.[!-\-/-~]|\.\.[!-~])[!-~]*$";

/// The longest user id, in bytes.
pub const USER_ID_MAX_LEN: usize = 256;

/// The largest `ttlSeconds` a create accepts (it is clamped to the configured bounds anyway):
/// 2^53 − 1, the largest integer every JSON implementation reads exactly.
pub const MAX_TTL_SECONDS: u64 = (1 << 53) - 1;

/// A JSON integer, read as JSON Schema reads one: `40` and `40.0` are the same number (some
/// JSON encoders write every number with a fraction), `40.5`, negatives and numbers past
/// `u64` are refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    match Option::<serde_json::Number>::deserialize(d)? {
        None => Ok(None),
        Some(n) => {
            if let Some(v) = n.as_u64() {
                return Ok(Some(v));
            }
            match n.as_f64() {
                // Below 2^64 and whole: exact in u64 (f64 holds such values exactly).
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 =>
                {
                    #[allow(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "checked whole, non-negative and below 2^64 just above"
                    )]
                    Ok(Some(f as u64))
                }
                _ => Err(D::Error::custom(format_args!(
                    "invalid value: {n}, expected a whole number of seconds"
                ))),
            }
        }
    }
}

/// Body of `POST /v1/sessions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSession {
    /// The user the backend has authenticated: 1 to 256 bytes of printable ASCII without
    /// spaces, not `.` or `..`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "user_12345",
            min_length = 1,
            max_length = 256,
            pattern = r"^(?:[!-\-/-~]|\.[!-\-/-~]|\.\.[!-~])[!-~]*$"
        )
    )]
    pub user_id: String,
    /// Initial application data (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub user_data: Option<StrictObject>,
    /// Login context (a JSON object), e.g. `ipAddress`, `userAgent`, `loginMethod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<StrictObject>,
    /// Idle timeout of this session in seconds, clamped to the configured bounds; at most
    /// 2^53 − 1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole_number"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 9_007_199_254_740_991_u64)
    )]
    pub ttl_seconds: Option<u64>,
    /// Also answer with the session cookie (`Set-Cookie: __Host-sid=...; Secure; HttpOnly;
    /// SameSite=Lax; Path=/`), for a login handler that passes it on to the browser.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub set_cookie: bool,
    /// The session this login replaces (re-authentication on a device that still holds one):
    /// it ends once the new one exists, if it belongs to the same user (S3).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "sess_Xy9fK2abcdefghij",
            pattern = "^sess_[A-Za-z0-9_-]{16}$"
        )
    )]
    pub replaces_session_id: Option<String>,
}

/// Body of `PATCH /v1/session` and `PATCH /v1/sessions/{sessionId}`: an RFC 7396 merge patch
/// of `userData`. Only `userData` may be patched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchSession {
    /// The merge patch; `null` members delete keys.
    #[serde(default, skip_serializing_if = "PatchValue::is_absent")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub user_data: PatchValue,
}

/// A patch member that tells "absent" (no change) from `null` (delete everything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatchValue(pub Option<Value>);

impl PatchValue {
    /// Whether the member was absent.
    pub fn is_absent(&self) -> bool {
        self.0.is_none()
    }
}

impl<'de> Deserialize<'de> for PatchValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StrictValue::deserialize(d).map(|v| PatchValue(Some(v.0)))
    }
}

impl Serialize for PatchValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_seconds_is_any_whole_json_number() {
        let ttl = |text: &str| {
            serde_json::from_str::<CreateSession>(&format!(
                r#"{{"userId":"u","ttlSeconds":{text}}}"#
            ))
            .map(|b| b.ttl_seconds)
        };
        assert_eq!(ttl("40").ok(), Some(Some(40)));
        assert_eq!(ttl("40.0").ok(), Some(Some(40)));
        assert_eq!(ttl("4e1").ok(), Some(Some(40)));
        assert_eq!(ttl("null").ok(), Some(None));
        for refused in ["40.5", "-1", "1e20", "\"40\""] {
            assert!(ttl(refused).is_err(), "{refused}");
        }
        assert_eq!(
            serde_json::from_str::<CreateSession>(r#"{"userId":"u"}"#)
                .ok()
                .map(|b| b.ttl_seconds),
            Some(None)
        );
    }

    #[test]
    fn a_create_body_round_trips_and_refuses_what_a_client_may_not_choose() {
        let body = CreateSession {
            user_id: "user_12345".into(),
            ttl_seconds: Some(60),
            set_cookie: true,
            ..CreateSession::default()
        };
        let text = serde_json::to_string(&body).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"userId":"user_12345","ttlSeconds":60,"setCookie":true}"#
        );
        assert_eq!(
            serde_json::from_str::<CreateSession>(&text).ok(),
            Some(body)
        );
        assert!(serde_json::from_str::<CreateSession>(r#"{"userId":"u","token":"x"}"#).is_err());
        assert!(
            serde_json::from_str::<CreateSession>(r#"{"userId":"u","userData":{"a":1,"a":2}}"#)
                .is_err()
        );
    }

    #[test]
    fn a_patch_tells_absent_from_null() {
        let absent: PatchSession = serde_json::from_str("{}").unwrap_or_default();
        assert!(absent.user_data.is_absent());
        let null: PatchSession = serde_json::from_str(r#"{"userData":null}"#).unwrap_or_default();
        assert_eq!(null.user_data, PatchValue(Some(Value::Null)));
        assert_eq!(serde_json::to_string(&absent).unwrap_or_default(), "{}");
    }
}
