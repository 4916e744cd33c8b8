//! How an event and a session record are written as columns, and read back.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sessiond_core::tier::{AuditEvent, AuditKind, EventId, Position};
use sessiond_core::{
    Actor, BindingProperty, EventName, InvalidReason, KeyId, SessionId, Timestamp, UserId,
};
use tokio_postgres::Row;

use crate::error::TierError;

/// A timestamp as PostgreSQL's `timestamptz` (microseconds: milliseconds are exact).
pub(crate) fn to_sql_time(at: Timestamp) -> SystemTime {
    // PostgreSQL's range ends in year 294276; sessiond's far-future times are clamped there.
    const MAX_MS: u64 = 9_000_000_000_000_000 / 1000;
    UNIX_EPOCH + Duration::from_millis(at.as_millis().min(MAX_MS))
}

/// `timestamptz` back to a timestamp (times before the epoch, which sessiond never writes,
/// read as the epoch).
pub(crate) fn from_sql_time(t: SystemTime) -> Timestamp {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Timestamp::from_millis(ms)
}

/// A `u64` as a `bigint`, saturating (versions and timeouts never come near 2^63).
pub(crate) fn to_bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The `key_id` column of a backend actor.
pub(crate) fn key_id(actor: Actor) -> Option<String> {
    actor.key_id().map(|k| k.to_string())
}

/// The columns `read_event` expects, in its order.
pub(crate) const EVENT_COLUMNS: &str = "event_id::text, at, kind, session_id, user_id, actor, \
     key_id, host(client_addr), user_agent, detail::text, position";

/// An event from a row of [`EVENT_COLUMNS`], with its position.
pub(crate) fn read_event(row: &Row) -> Result<(AuditEvent, Position), TierError> {
    let id: String = row.try_get(0)?;
    let at: SystemTime = row.try_get(1)?;
    let kind: String = row.try_get(2)?;
    let session_id: Option<String> = row.try_get(3)?;
    let user_id: Option<String> = row.try_get(4)?;
    let actor: String = row.try_get(5)?;
    let key: Option<String> = row.try_get(6)?;
    let addr: Option<String> = row.try_get(7)?;
    let user_agent: Option<String> = row.try_get(8)?;
    let detail: Option<String> = row.try_get(9)?;
    let position: i64 = row.try_get(10)?;
    let detail: Value = match detail {
        Some(text) => {
            serde_json::from_str(&text).map_err(|_| TierError::Corrupt("event detail"))?
        }
        None => Value::Null,
    };
    let name = EventName::ALL
        .into_iter()
        .find(|n| n.as_str() == kind)
        .ok_or(TierError::Corrupt("event kind"))?;
    let event = AuditEvent {
        id: id
            .parse::<EventId>()
            .map_err(|_| TierError::Corrupt("event id"))?,
        at: from_sql_time(at),
        kind: read_kind(name, &detail)?,
        session_id: session_id
            .map(|s| SessionId::parse(&s))
            .transpose()
            .map_err(|_| TierError::Corrupt("event session id"))?,
        user_id: user_id
            .map(|u| UserId::parse(&u))
            .transpose()
            .map_err(|_| TierError::Corrupt("event user id"))?,
        actor: read_actor(&actor, key.as_deref())?,
        client_addr: addr
            .map(|a| a.parse::<IpAddr>())
            .transpose()
            .map_err(|_| TierError::Corrupt("event client address"))?,
        user_agent,
    };
    Ok((event, Position(u64::try_from(position).unwrap_or(0))))
}

fn read_kind(name: EventName, detail: &Value) -> Result<AuditKind, TierError> {
    let count = || {
        detail
            .get("count")
            .and_then(Value::as_u64)
            .ok_or(TierError::Corrupt("event count"))
    };
    let session = |field: &'static str| -> Result<Option<SessionId>, TierError> {
        detail
            .get(field)
            .and_then(Value::as_str)
            .map(SessionId::parse)
            .transpose()
            .map_err(|_| TierError::Corrupt("event detail session id"))
    };
    let by = || session("by")?.ok_or(TierError::Corrupt("event detail by"));
    let refused = || {
        detail
            .get("refused")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    Ok(match name {
        EventName::Created => AuditKind::Created,
        EventName::Rotated => AuditKind::Rotated,
        EventName::Updated => AuditKind::Updated,
        EventName::LoggedOut => AuditKind::LoggedOut,
        EventName::Revoked => AuditKind::Revoked,
        EventName::RevokedAll => AuditKind::RevokedAll {
            count: count()?,
            kept: session("kept")?,
        },
        EventName::Replaced => AuditKind::Replaced { by: by()? },
        EventName::Evicted => AuditKind::Evicted { by: by()? },
        EventName::Expired => AuditKind::Expired,
        EventName::InvalidToken => AuditKind::InvalidToken {
            reason: match detail.get("reason").and_then(Value::as_str) {
                Some("malformed") => InvalidReason::Malformed,
                _ => InvalidReason::Unknown,
            },
        },
        EventName::BindingMismatchUserAgent => AuditKind::BindingMismatch {
            property: BindingProperty::UserAgent,
            refused: refused(),
        },
        EventName::BindingMismatchIp => AuditKind::BindingMismatch {
            property: BindingProperty::Ip,
            refused: refused(),
        },
        EventName::RevokedEveryone => AuditKind::RevokedEveryone { count: count()? },
    })
}

fn read_actor(actor: &str, key: Option<&str>) -> Result<Actor, TierError> {
    Ok(match actor {
        "holder" => Actor::Holder,
        "cli" => Actor::Cli,
        "sweeper" => Actor::Sweeper,
        "backend" => {
            let key = key.ok_or(TierError::Corrupt("backend key id"))?;
            let mut bytes = [0u8; 4];
            if key.len() != 8 {
                return Err(TierError::Corrupt("backend key id"));
            }
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = key
                    .get(2 * i..2 * i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(TierError::Corrupt("backend key id"))?;
            }
            Actor::Backend(KeyId(bytes))
        }
        _ => return Err(TierError::Corrupt("event actor")),
    })
}
