//! Applying a batch of outbox entries: one transaction, a few statements whatever the batch's
//! size (each takes the whole batch as arrays and `unnest`s them), pipelined on one
//! connection.
//!
//! Idempotent by construction, so a batch shipped twice (a shipper killed between commit and
//! the outbox trim, two shippers, a replay) leaves what one shipment leaves:
//!
//! - an event is inserted `ON CONFLICT DO NOTHING` on its key (its time and id);
//! - a session's record is written only over an older position, and never over an ended row;
//! - an end is final: it sets `state = 'ended'` whatever it finds, and inserts an ended row
//!   for a session the tier has not seen yet, so a record shipped later cannot bring it back;
//! - revoke-everyone raises a watermark: a record created at or before it is written ended.

use std::collections::{BTreeSet, HashMap};
use std::time::SystemTime;

use sessiond_core::tier::{AuditEvent, DurableChange, OutboxEntry, Position};
use sessiond_core::{SessionId, SessionRecord, Timestamp, UserId};

use crate::columns::{key_id, to_bigint, to_sql_time};
use crate::error::TierError;
use crate::partitions::Month;

const INSERT_EVENTS: &str = "\
INSERT INTO sessiond_events
    (event_id, at, position, kind, session_id, user_id, actor, key_id, client_addr, user_agent,
     reason, detail)
SELECT e.id::uuid, e.at, e.position, e.kind, e.session_id, e.user_id, e.actor, e.key_id,
       e.addr::inet, e.user_agent, e.reason, e.detail::jsonb
FROM unnest($1::text[], $2::timestamptz[], $12::bigint[], $3::text[], $4::text[], $5::text[],
            $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
     AS e(id, at, position, kind, session_id, user_id, actor, key_id, addr, user_agent, reason,
          detail)
ON CONFLICT DO NOTHING";

const UPSERT_LIVE: &str = "\
INSERT INTO sessiond_sessions AS s
    (session_id, user_id, state, position, secret_hash, created_at, last_activity,
     idle_timeout_ms, absolute_expires_at, expires_at, version, user_data, metadata, ended_at)
SELECT r.session_id, r.user_id,
       CASE WHEN r.created_at <= w.at THEN 'ended' ELSE 'live' END,
       r.position,
       CASE WHEN r.created_at <= w.at THEN NULL ELSE r.secret_hash END,
       r.created_at, r.last_activity, r.idle_timeout_ms, r.absolute_expires_at, r.expires_at,
       r.version, r.user_data::json, r.metadata::json,
       CASE WHEN r.created_at <= w.at THEN w.at END
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::timestamptz[],
            $6::timestamptz[], $7::bigint[], $8::timestamptz[], $9::timestamptz[], $10::bigint[],
            $11::text[], $12::text[])
     AS r(session_id, user_id, position, secret_hash, created_at, last_activity,
          idle_timeout_ms, absolute_expires_at, expires_at, version, user_data, metadata)
LEFT JOIN sessiond_watermarks w ON w.name = 'everyone_ended'
ON CONFLICT (session_id) DO UPDATE SET
    state = EXCLUDED.state, position = EXCLUDED.position, secret_hash = EXCLUDED.secret_hash,
    user_id = EXCLUDED.user_id, created_at = EXCLUDED.created_at,
    last_activity = EXCLUDED.last_activity, idle_timeout_ms = EXCLUDED.idle_timeout_ms,
    absolute_expires_at = EXCLUDED.absolute_expires_at, expires_at = EXCLUDED.expires_at,
    version = EXCLUDED.version, user_data = EXCLUDED.user_data, metadata = EXCLUDED.metadata,
    ended_at = EXCLUDED.ended_at, hot = true
WHERE s.state = 'live' AND s.position < EXCLUDED.position";

const UPSERT_ENDED: &str = "\
INSERT INTO sessiond_sessions AS s (session_id, user_id, state, position, ended_at)
SELECT e.session_id, e.user_id, 'ended', e.position, e.ended_at
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[])
     AS e(session_id, user_id, position, ended_at)
ON CONFLICT (session_id) DO UPDATE SET
    state = 'ended', secret_hash = NULL,
    user_id = COALESCE(s.user_id, EXCLUDED.user_id),
    position = GREATEST(s.position, EXCLUDED.position),
    ended_at = LEAST(COALESCE(s.ended_at, EXCLUDED.ended_at), EXCLUDED.ended_at)";

const END_USER: &str = "\
UPDATE sessiond_sessions
SET state = 'ended', secret_hash = NULL, ended_at = $2
WHERE user_id = $1 AND state = 'live' AND created_at <= $2
  AND session_id IS DISTINCT FROM $3";

const RAISE_WATERMARK: &str = "\
INSERT INTO sessiond_watermarks (name, at) VALUES ('everyone_ended', $1)
ON CONFLICT (name) DO UPDATE SET at = GREATEST(sessiond_watermarks.at, EXCLUDED.at)";

const END_EVERYONE: &str = "\
UPDATE sessiond_sessions
SET state = 'ended', secret_hash = NULL, ended_at = $1
WHERE state = 'live' AND created_at <= $1";

/// The months a batch's events fall in (their partitions must exist before the insert).
pub(crate) fn months(batch: &[OutboxEntry]) -> BTreeSet<Month> {
    batch
        .iter()
        .filter_map(|e| e.event.as_ref())
        .map(|e| Month::of(e.at))
        .collect()
}

/// The events' columns, as arrays.
#[derive(Default)]
struct EventColumns {
    id: Vec<String>,
    at: Vec<SystemTime>,
    position: Vec<i64>,
    kind: Vec<&'static str>,
    session_id: Vec<Option<String>>,
    user_id: Vec<Option<String>>,
    actor: Vec<&'static str>,
    key_id: Vec<Option<String>>,
    addr: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    reason: Vec<&'static str>,
    detail: Vec<Option<String>>,
}

/// The live records' columns, as arrays.
#[derive(Default)]
struct LiveColumns {
    session_id: Vec<String>,
    user_id: Vec<String>,
    position: Vec<i64>,
    secret_hash: Vec<Vec<u8>>,
    created_at: Vec<SystemTime>,
    last_activity: Vec<SystemTime>,
    idle_timeout_ms: Vec<i64>,
    absolute_expires_at: Vec<SystemTime>,
    expires_at: Vec<SystemTime>,
    version: Vec<i64>,
    user_data: Vec<String>,
    metadata: Vec<String>,
}

/// The ended sessions' columns, as arrays.
#[derive(Default)]
struct EndedColumns {
    session_id: Vec<String>,
    user_id: Vec<Option<String>>,
    position: Vec<i64>,
    ended_at: Vec<SystemTime>,
}

impl EventColumns {
    fn push(&mut self, e: &AuditEvent, position: Position) {
        self.id.push(e.id.to_string());
        self.at.push(to_sql_time(e.at));
        self.position.push(position_sql(position));
        self.kind.push(e.kind.name().as_str());
        self.session_id
            .push(e.session_id.as_ref().map(|s| s.as_str().to_owned()));
        self.user_id
            .push(e.user_id.as_ref().map(|u| u.as_str().to_owned()));
        self.actor.push(e.actor.as_str());
        self.key_id.push(key_id(e.actor));
        self.addr.push(e.client_addr.map(|a| a.to_string()));
        self.user_agent.push(e.user_agent.clone());
        self.reason.push(e.kind.reason());
        self.detail.push(e.kind.detail().map(|d| d.to_string()));
    }
}

impl EndedColumns {
    fn push(&mut self, id: &SessionId, user: Option<&UserId>, position: Position, at: Timestamp) {
        self.session_id.push(id.as_str().to_owned());
        self.user_id.push(user.map(|u| u.as_str().to_owned()));
        self.position.push(position_sql(position));
        self.ended_at.push(to_sql_time(at));
    }
}

/// An object as JSON text, written straight from the record (no copy of it first).
fn json_text(object: &serde_json::Map<String, serde_json::Value>) -> Result<String, TierError> {
    serde_json::to_string(object).map_err(|_| TierError::Corrupt("session document"))
}

fn position_sql(p: Position) -> i64 {
    to_bigint(p.0)
}

/// Applies `batch` in one transaction.
pub(crate) async fn ship(
    client: &mut deadpool_postgres::Client,
    batch: &[OutboxEntry],
) -> Result<(), TierError> {
    let mut events = EventColumns::default();
    // Only the newest record of each session in the batch: one statement may not write a row
    // twice, and the older ones would lose to it anyway.
    let mut live: HashMap<&SessionId, (Position, &SessionRecord)> = HashMap::new();
    let mut ended = EndedColumns::default();
    let mut user_ends = Vec::new();
    let mut everyone_ends = Vec::new();
    for entry in batch {
        // When the change happened: its event's time, else its position's (a hybrid clock).
        let at = entry
            .event
            .as_ref()
            .map_or(entry.position.millis(), |e| e.at);
        let user = entry.event.as_ref().and_then(|e| e.user_id.as_ref());
        if let Some(e) = &entry.event {
            events.push(e, entry.position);
        }
        match &entry.change {
            DurableChange::Live(record) => {
                let newer = live
                    .get(&record.id)
                    .is_none_or(|(seen, _)| *seen < entry.position);
                if newer {
                    live.insert(&record.id, (entry.position, record));
                }
            }
            DurableChange::Ended(id) => {
                ended.push(id, user, entry.position, at);
            }
            DurableChange::UserEnded {
                user_id,
                kept,
                ended: gone,
            } => {
                for id in gone {
                    ended.push(id, Some(user_id), entry.position, at);
                }
                user_ends.push((user_id, kept.as_ref(), at));
            }
            DurableChange::AllEnded => everyone_ends.push(at),
            DurableChange::Nothing => {}
        }
    }
    let mut records = LiveColumns::default();
    for (position, r) in live.values() {
        records.session_id.push(r.id.as_str().to_owned());
        records.user_id.push(r.user_id.as_str().to_owned());
        records.position.push(position_sql(*position));
        records.secret_hash.push(r.secret_hash.as_bytes().to_vec());
        records.created_at.push(to_sql_time(r.created_at));
        records.last_activity.push(to_sql_time(r.last_activity));
        records.idle_timeout_ms.push(to_bigint(r.idle_timeout_ms));
        records
            .absolute_expires_at
            .push(to_sql_time(r.absolute_expires_at));
        records.expires_at.push(to_sql_time(r.expires_at()));
        records.version.push(to_bigint(r.version));
        records.user_data.push(json_text(&r.user_data)?);
        records.metadata.push(json_text(&r.metadata)?);
    }

    let tx = client.transaction().await?;
    // Prepared once per connection (deadpool keeps the statement cache), sent pipelined: the
    // futures below are polled together, in order, so their statements share round trips.
    let (insert_events, upsert_live, upsert_ended) = tokio::try_join!(
        tx.prepare_cached(INSERT_EVENTS),
        tx.prepare_cached(UPSERT_LIVE),
        tx.prepare_cached(UPSERT_ENDED),
    )?;
    // Everyone's end first: a record in this batch created before it is then written ended.
    for at in &everyone_ends {
        let at = to_sql_time(*at);
        tx.execute(RAISE_WATERMARK, &[&at]).await?;
        tx.execute(END_EVERYONE, &[&at]).await?;
    }
    let event_params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] = [
        &events.id,
        &events.at,
        &events.kind,
        &events.session_id,
        &events.user_id,
        &events.actor,
        &events.key_id,
        &events.addr,
        &events.user_agent,
        &events.reason,
        &events.detail,
        &events.position,
    ];
    let insert_events = tx.execute(&insert_events, &event_params);
    let upsert_live = async {
        if records.session_id.is_empty() {
            return Ok(0);
        }
        tx.execute(
            &upsert_live,
            &[
                &records.session_id,
                &records.user_id,
                &records.position,
                &records.secret_hash,
                &records.created_at,
                &records.last_activity,
                &records.idle_timeout_ms,
                &records.absolute_expires_at,
                &records.expires_at,
                &records.version,
                &records.user_data,
                &records.metadata,
            ],
        )
        .await
    };
    let upsert_ended = async {
        if ended.session_id.is_empty() {
            return Ok(0);
        }
        tx.execute(
            &upsert_ended,
            &[
                &ended.session_id,
                &ended.user_id,
                &ended.position,
                &ended.ended_at,
            ],
        )
        .await
    };
    // Records before ends: an end in the same batch as its session's record wins either way
    // (the record is not written over an ended row), but this order needs no such reasoning.
    tokio::try_join!(insert_events, upsert_live, upsert_ended)?;
    for (user, kept, at) in &user_ends {
        let kept = kept.map(SessionId::as_str);
        tx.execute(END_USER, &[&user.as_str(), &to_sql_time(*at), &kept])
            .await?;
    }
    tx.commit().await?;
    Ok(())
}
