//! The schema, as numbered migrations run at start-up.
//!
//! Each migration runs in its own transaction and is recorded in
//! `sessiond_schema_migrations`; every sessiond process runs the list at start-up under one
//! advisory lock, so two processes starting together apply each migration once. A process
//! refuses to start on a schema newer than it knows (a newer sessiond migrated it, and this
//! one could misread it).

use tokio_postgres::Client;

use crate::error::TierError;

/// The advisory lock that serialises migrations (and partition changes) across processes:
/// `'sessiond'` in ASCII.
pub(crate) const LOCK: i64 = 0x7365_7373_696f_6e64;

/// The migrations, in order; a migration's version is its place in the list, from 1.
/// Never edit one that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    // 1: the audit trail, the durable copy of sessions, and the watermark of revoke-everyone.
    r"
    CREATE TABLE sessiond_events (
        event_id    uuid        NOT NULL,
        at          timestamptz NOT NULL,
        position    bigint      NOT NULL,
        kind        text        NOT NULL,
        session_id  text,
        user_id     text,
        actor       text        NOT NULL,
        key_id      text,
        client_addr inet,
        user_agent  text,
        reason      text        NOT NULL,
        detail      jsonb,
        PRIMARY KEY (at, event_id)
    ) PARTITION BY RANGE (at);
    COMMENT ON TABLE sessiond_events IS
        'sessiond audit trail: one row per lifecycle event, never a token; monthly partitions, dropped past tier.retention';
    COMMENT ON COLUMN sessiond_events.position IS
        'the entry''s place in its outbox: orders the events of one session within a millisecond';
    CREATE INDEX sessiond_events_by_user
        ON sessiond_events (user_id, at DESC, position DESC, event_id DESC)
        WHERE user_id IS NOT NULL;
    CREATE INDEX sessiond_events_by_session
        ON sessiond_events (session_id, at DESC, position DESC, event_id DESC)
        WHERE session_id IS NOT NULL;

    CREATE TABLE sessiond_sessions (
        session_id          text        PRIMARY KEY,
        user_id             text,
        state               text        NOT NULL CHECK (state IN ('live', 'ended')),
        position            bigint      NOT NULL,
        secret_hash         bytea       CHECK (octet_length(secret_hash) = 32),
        created_at          timestamptz,
        last_activity       timestamptz,
        idle_timeout_ms     bigint,
        absolute_expires_at timestamptz,
        expires_at          timestamptz,
        version             bigint,
        user_data           json,
        metadata            json,
        ended_at            timestamptz,
        CHECK (state = 'ended' OR (secret_hash IS NOT NULL AND user_id IS NOT NULL
            AND created_at IS NOT NULL AND expires_at IS NOT NULL))
    );
    COMMENT ON TABLE sessiond_sessions IS
        'sessiond durable copy: the latest shipped record of each session; an ended row is final';
    CREATE INDEX sessiond_sessions_live_by_user ON sessiond_sessions (user_id)
        WHERE state = 'live';
    CREATE INDEX sessiond_sessions_live_expiry ON sessiond_sessions (expires_at)
        WHERE state = 'live';
    CREATE INDEX sessiond_sessions_ended ON sessiond_sessions (ended_at)
        WHERE state = 'ended';

    CREATE TABLE sessiond_watermarks (
        name text        PRIMARY KEY,
        at   timestamptz NOT NULL
    );
    COMMENT ON TABLE sessiond_watermarks IS
        'sessiond: every session created at or before ''everyone_ended'' has ended';
    ",
    // 2: cold sessions: which live rows the hot store still holds, and the demoter's index.
    r"
    ALTER TABLE sessiond_sessions ADD COLUMN hot boolean NOT NULL DEFAULT true;
    COMMENT ON COLUMN sessiond_sessions.hot IS
        'false once the demoter removed the session from the hot store; a shipped change sets it again';
    CREATE INDEX sessiond_sessions_idle ON sessiond_sessions (last_activity)
        WHERE state = 'live' AND hot;
    ",
    // 3: the leases of the processes sharing a hot store, so read-through in one trusts the
    // tier only while no other may hold revocations the tier lacks.
    r"
    CREATE TABLE sessiond_instances (
        instance        text        PRIMARY KEY,
        epoch           text        NOT NULL,
        journal_entries bigint      NOT NULL,
        started_at      timestamptz NOT NULL DEFAULT now(),
        renewed_at      timestamptz NOT NULL
    );
    COMMENT ON TABLE sessiond_instances IS
        'sessiond processes: each renews its row every second with the hot store''s epoch and its journal''s length';
    ",
];

/// The newest schema version this build knows.
pub(crate) const LATEST: i32 = MIGRATIONS.len() as i32;

/// Brings the schema up to [`LATEST`]. Returns the versions applied.
pub(crate) async fn run(client: &mut Client) -> Result<Vec<i32>, TierError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await?;
    let result = apply(client).await;
    // Released on every path; a broken connection releases it on its own.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await;
    result
}

async fn apply(client: &mut Client) -> Result<Vec<i32>, TierError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sessiond_schema_migrations (
                version    integer     PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let current: i32 = client
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM sessiond_schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    if current > LATEST {
        return Err(TierError::SchemaTooNew {
            found: current,
            known: LATEST,
        });
    }
    let mut applied = Vec::new();
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i32 + 1;
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO sessiond_schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tx.commit().await?;
        applied.push(version);
    }
    Ok(applied)
}
