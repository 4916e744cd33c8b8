//! sessiond's durable tier on PostgreSQL: the audit trail, and a durable copy of every
//! session behind the hot store (`docs/design.md` §10).
//!
//! [`PgTier`] implements [`DurableTier`]: it applies batches of outbox entries idempotently
//! (`ship`), answers the durable state of a session and a user's sessions, reads the audit
//! trail back newest first, and drops what retention no longer keeps.
//!
//! The driver is `tokio-postgres` with a `deadpool-postgres` pool: it pipelines, so the few
//! statements of a batch share round trips, and a batch of any size is a few statements
//! (arrays `unnest`ed into one `INSERT ... ON CONFLICT` each) instead of a statement a row.
//!
//! # Layout
//!
//! - [`PgOptions`]: the URL, pool size and timeouts.
//! - `migrations`: the schema as numbered migrations, run at start-up under an advisory lock.
//! - `partitions`: the audit trail's monthly partitions, made ahead and dropped past
//!   retention.
//! - `ship`: applying a batch, and why applying it twice is applying it once.
//! - `columns`: events and records as columns, and back.
//! - [`error`]: [`TierError`] and its mapping to [`StoreError`].
//!
//! The crate root holds [`PgTier`] and its [`DurableTier`] impl.

pub mod error;

mod columns;
mod migrations;
mod partitions;
mod ship;

use std::collections::BTreeSet;
use std::str::FromStr as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde_json::{Map, Value};
use sessiond_core::tier::{
    DurableSession, DurableTier, EventCursor, EventPage, EventQuery, EventsOf, Lease, LeaseTerms,
    OutboxEntry, Position, Purged, Retention,
};
use sessiond_core::{SecretHash, SessionId, SessionRecord, StoreError, Timestamp, UserId};
use tokio_postgres::{NoTls, Row};

pub use error::TierError;

use crate::columns::{EVENT_COLUMNS, from_sql_time, read_event, to_sql_time};
use crate::partitions::Month;

/// Settings of the PostgreSQL tier.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database?...` (libpq's URL form).
    pub url: String,
    /// Most connections the pool holds.
    pub pool_size: usize,
    /// Longest wait for a connection, and for a connection to be made.
    pub connect_timeout: Duration,
    /// Longest a statement may run (PostgreSQL's `statement_timeout`).
    pub statement_timeout: Duration,
    /// PEM certificates of the authorities trusted for TLS (`sslmode=require` in the URL);
    /// `None`: the system's roots.
    pub tls_ca: Option<Vec<u8>>,
}

impl PgOptions {
    /// The defaults, for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            tls_ca: None,
        }
    }
}

/// The durable tier on PostgreSQL.
pub struct PgTier {
    pool: Pool,
    /// Months whose partition is known to exist (made or seen by this process).
    months: Mutex<BTreeSet<Month>>,
}

impl std::fmt::Debug for PgTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's configuration holds the password: never printed.
        f.debug_struct("PgTier").finish_non_exhaustive()
    }
}

impl PgTier {
    /// Connects, runs the migrations, and makes the partitions of this month and the next.
    pub async fn connect(options: &PgOptions, now: Timestamp) -> Result<Self, TierError> {
        let mut config =
            tokio_postgres::Config::from_str(&options.url).map_err(TierError::BadUrl)?;
        config.connect_timeout(options.connect_timeout);
        config.application_name("sessiond");
        // Server notices ("already exists, skipping") are not worth a log line.
        config.options(format!(
            "-c statement_timeout={} -c client_min_messages=warning",
            options.statement_timeout.as_millis()
        ));
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        // TLS when the URL asks for it (`sslmode=require`): the server's certificate is
        // checked against `tls_ca` or the system's roots. `prefer`, libpq's default, stays
        // plain: a TLS failure would not fall back, and a local server's self-signed
        // certificate would then refuse every connection.
        let manager = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                options.tls_ca.as_deref(),
            )?);
            Manager::from_config(config, tls, manager_config)
        } else {
            Manager::from_config(config, NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|_| TierError::Closed)?;
        let tier = PgTier {
            pool,
            months: Mutex::new(BTreeSet::new()),
        };
        {
            let mut client = tier.pool.get().await?;
            let applied = migrations::run(&mut client).await?;
            if !applied.is_empty() {
                tracing::info!(
                    event = "tier.migrated",
                    versions = ?applied,
                    "PostgreSQL schema migrated"
                );
            }
            let existing = partitions::existing(&client).await?;
            if let Ok(mut months) = tier.months.lock() {
                months.extend(existing);
            }
        }
        let this_month = Month::of(now);
        let next_month = Month::of(now.saturating_add(Duration::from_secs(32 * 86_400)));
        tier.ensure_partitions([this_month, next_month].into_iter().collect())
            .await?;
        Ok(tier)
    }

    /// The schema version this build migrates to.
    pub fn schema_version() -> i32 {
        migrations::LATEST
    }

    async fn ensure_partitions(&self, wanted: BTreeSet<Month>) -> Result<(), TierError> {
        let missing: BTreeSet<Month> = match self.months.lock() {
            Ok(known) => wanted.difference(&known).copied().collect(),
            Err(_) => wanted,
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut client = self.pool.get().await?;
        partitions::ensure(&mut client, &missing).await?;
        if let Ok(mut known) = self.months.lock() {
            known.extend(missing);
        }
        Ok(())
    }

    async fn ship_batch(&self, batch: &[OutboxEntry]) -> Result<(), TierError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.ensure_partitions(ship::months(batch)).await?;
        let mut client = self.pool.get().await?;
        ship::ship(&mut client, batch).await
    }

    async fn load_session(&self, id: &SessionId) -> Result<Option<DurableSession>, TierError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessiond_sessions WHERE session_id = $1"
            ))
            .await?;
        let row = client.query_opt(&statement, &[&id.as_str()]).await?;
        row.map(|row| read_session(&row)).transpose()
    }

    async fn list(&self, user: &UserId, now: Timestamp) -> Result<Vec<SessionRecord>, TierError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessiond_sessions \
                 WHERE user_id = $1 AND state = 'live' AND expires_at > $2"
            ))
            .await?;
        let rows = client
            .query(&statement, &[&user.as_str(), &to_sql_time(now)])
            .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            if let DurableSession::Live { record, .. } = read_session(row)?
                && record.is_live(now)
            {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn read_events(&self, query: &EventQuery) -> Result<EventPage, TierError> {
        let limit = query.limit.clamp(1, EventQuery::MAX_LIMIT);
        let (column, value) = match &query.of {
            EventsOf::User(user) => ("user_id", user.as_str()),
            EventsOf::Session(id) => ("session_id", id.as_str()),
        };
        let since = query.since.map(to_sql_time);
        let (after_at, after_position, after_id) = match query.after {
            Some(c) => (
                Some(to_sql_time(c.at)),
                Some(i64::try_from(c.position.0).unwrap_or(i64::MAX)),
                Some(c.id.to_string()),
            ),
            None => (None, None, None),
        };
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM sessiond_events \
                 WHERE {column} = $1 \
                   AND ($2::timestamptz IS NULL OR at >= $2) \
                   AND ($3::timestamptz IS NULL \
                        OR (at, position, event_id) < ($3, $4::bigint, $5::text::uuid)) \
                 ORDER BY at DESC, position DESC, event_id DESC LIMIT $6"
            ))
            .await?;
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &statement,
                &[
                    &value,
                    &since,
                    &after_at,
                    &after_position,
                    &after_id,
                    &fetch,
                ],
            )
            .await?;
        let mut events = rows.iter().map(read_event).collect::<Result<Vec<_>, _>>()?;
        let next = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|(e, position)| EventCursor {
                at: e.at,
                position: *position,
                id: e.id,
            })
        } else {
            None
        };
        let events = events.into_iter().map(|(e, _)| e).collect();
        Ok(EventPage { events, next })
    }

    async fn purge_old(&self, now: Timestamp, retention: Retention) -> Result<Purged, TierError> {
        let events_cutoff = Timestamp::from_millis(
            now.as_millis()
                .saturating_sub(u64::try_from(retention.events.as_millis()).unwrap_or(u64::MAX)),
        );
        let sessions_cutoff = to_sql_time(Timestamp::from_millis(
            now.as_millis()
                .saturating_sub(u64::try_from(retention.sessions.as_millis()).unwrap_or(u64::MAX)),
        ));
        let mut client = self.pool.get().await?;
        let events = partitions::drop_before(&mut client, events_cutoff).await?;
        if let Ok(mut known) = self.months.lock() {
            let keep_from = Month::of(events_cutoff);
            known.retain(|m| *m >= keep_from);
        }
        // In batches, so no statement holds many row locks or runs past the timeout.
        let mut sessions = 0u64;
        loop {
            let removed = client
                .execute(
                    "DELETE FROM sessiond_sessions WHERE session_id IN (
                        SELECT session_id FROM sessiond_sessions
                        WHERE (state = 'live' AND expires_at < $1)
                           OR (state = 'ended' AND ended_at < $1)
                        LIMIT 5000)",
                    &[&sessions_cutoff],
                )
                .await?;
            sessions += removed;
            if removed < 5000 {
                break;
            }
        }
        Ok(Purged { events, sessions })
    }
}

/// The rustls client configuration: `ca` (PEM) if given, else the system's roots.
fn tls_config(ca: Option<&[u8]>) -> Result<rustls::ClientConfig, TierError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|_| TierError::Tls("tier.tls_ca_file holds no PEM certificate"))?;
                roots.add(cert).map_err(|_| {
                    TierError::Tls("tier.tls_ca_file holds an unusable certificate")
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(TierError::Tls(
            "no certificate authority to check PostgreSQL's certificate",
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| TierError::Tls("no TLS protocol version in common"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The columns [`read_session`] expects, in its order.
const SESSION_COLUMNS: &str = "session_id, user_id, state, position, secret_hash, created_at, \
     last_activity, idle_timeout_ms, absolute_expires_at, version, user_data::text, \
     metadata::text";

fn read_session(row: &Row) -> Result<DurableSession, TierError> {
    let state: String = row.try_get(2)?;
    if state == "ended" {
        return Ok(DurableSession::Ended);
    }
    let corrupt = TierError::Corrupt;
    let id: String = row.try_get(0)?;
    let user: Option<String> = row.try_get(1)?;
    let position: i64 = row.try_get(3)?;
    let hash: Option<Vec<u8>> = row.try_get(4)?;
    let created_at: Option<SystemTime> = row.try_get(5)?;
    let last_activity: Option<SystemTime> = row.try_get(6)?;
    let idle: Option<i64> = row.try_get(7)?;
    let absolute: Option<SystemTime> = row.try_get(8)?;
    let version: Option<i64> = row.try_get(9)?;
    let user_data: Option<String> = row.try_get(10)?;
    let metadata: Option<String> = row.try_get(11)?;
    let object =
        |text: Option<String>, what: &'static str| -> Result<Map<String, Value>, TierError> {
            match text {
                None => Ok(Map::new()),
                Some(t) => match serde_json::from_str(&t) {
                    Ok(Value::Object(map)) => Ok(map),
                    _ => Err(corrupt(what)),
                },
            }
        };
    let hash: [u8; 32] = hash
        .and_then(|h| h.try_into().ok())
        .ok_or(corrupt("secret hash"))?;
    let record = SessionRecord {
        id: SessionId::parse(&id).map_err(|_| corrupt("session id"))?,
        user_id: UserId::parse(user.as_deref().unwrap_or_default())
            .map_err(|_| corrupt("user id"))?,
        secret_hash: SecretHash::from_bytes(hash),
        created_at: from_sql_time(created_at.ok_or(corrupt("created_at"))?),
        last_activity: from_sql_time(last_activity.ok_or(corrupt("last_activity"))?),
        idle_timeout_ms: idle
            .and_then(|i| u64::try_from(i).ok())
            .ok_or(corrupt("idle timeout"))?,
        absolute_expires_at: from_sql_time(absolute.ok_or(corrupt("absolute expiry"))?),
        version: version
            .and_then(|v| u64::try_from(v).ok())
            .ok_or(corrupt("version"))?,
        user_data: object(user_data, "user_data")?,
        metadata: object(metadata, "metadata")?,
    };
    Ok(DurableSession::Live {
        record,
        position: Position(u64::try_from(position).unwrap_or(0)),
    })
}

impl PgTier {
    async fn idle_sessions(
        &self,
        before: Timestamp,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<SessionRecord>, TierError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessiond_sessions \
                 WHERE state = 'live' AND hot AND last_activity < $1 AND expires_at > $2 \
                 ORDER BY last_activity LIMIT $3"
            ))
            .await?;
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = client
            .query(
                &statement,
                &[&to_sql_time(before), &to_sql_time(now), &limit],
            )
            .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            if let DurableSession::Live { record, .. } = read_session(row)? {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn renew(
        &self,
        lease: &Lease,
        terms: LeaseTerms,
        idle_ok: bool,
    ) -> Result<Vec<Lease>, TierError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let entries = i64::try_from(lease.journal_entries).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO sessiond_instances (instance, epoch, journal_entries, renewed_at) \
             VALUES ($1, $2, $3, now()) \
             ON CONFLICT (instance) DO UPDATE \
             SET epoch = $2, journal_entries = $3, renewed_at = now()",
            &[&lease.instance, &lease.epoch, &entries],
        )
        .await?;
        let idle_ms = i64::try_from(terms.idle_after.as_millis()).unwrap_or(i64::MAX);
        let forget_ms = i64::try_from(terms.forget_after.as_millis()).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM sessiond_instances WHERE instance <> $1 AND ( \
               renewed_at < now() - $5::bigint * interval '1 millisecond' \
               OR ($4 AND epoch = $2 AND journal_entries = 0 \
                   AND renewed_at < now() - $3::bigint * interval '1 millisecond'))",
            &[
                &lease.instance,
                &lease.epoch,
                &idle_ms,
                &idle_ok,
                &forget_ms,
            ],
        )
        .await?;
        let rows = tx
            .query(
                "SELECT instance, epoch, journal_entries, renewed_at FROM sessiond_instances",
                &[],
            )
            .await?;
        tx.commit().await?;
        rows.iter().map(read_lease).collect()
    }

    async fn mark_cold(&self, ids: &[SessionId]) -> Result<(), TierError> {
        let client = self.pool.get().await?;
        let ids: Vec<&str> = ids.iter().map(SessionId::as_str).collect();
        client
            .execute(
                "UPDATE sessiond_sessions SET hot = false WHERE session_id = ANY($1)",
                &[&ids],
            )
            .await?;
        Ok(())
    }
}

#[async_trait]
impl DurableTier for PgTier {
    async fn idle(
        &self,
        before: Timestamp,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.idle_sessions(before, now, max).await?)
    }

    async fn cooled(&self, ids: &[SessionId]) -> Result<(), StoreError> {
        Ok(self.mark_cold(ids).await?)
    }

    async fn ship(&self, batch: &[OutboxEntry]) -> Result<(), StoreError> {
        Ok(self.ship_batch(batch).await?)
    }

    async fn load(&self, id: &SessionId) -> Result<Option<DurableSession>, StoreError> {
        Ok(self.load_session(id).await?)
    }

    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        Ok(self.list(user, now).await?)
    }

    async fn events(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        Ok(self.read_events(query).await?)
    }

    async fn purge(&self, now: Timestamp, retention: Retention) -> Result<Purged, StoreError> {
        Ok(self.purge_old(now, retention).await?)
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        terms: LeaseTerms,
        idle_ok: bool,
    ) -> Result<Vec<Lease>, StoreError> {
        Ok(self.renew(lease, terms, idle_ok).await?)
    }

    async fn release_lease(&self, instance: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(TierError::from)?;
        let n = client
            .execute(
                "DELETE FROM sessiond_instances WHERE instance = $1",
                &[&instance],
            )
            .await
            .map_err(TierError::from)?;
        Ok(n > 0)
    }

    async fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let client = self.pool.get().await.map_err(TierError::from)?;
        let rows = client
            .query(
                "SELECT instance, epoch, journal_entries, renewed_at FROM sessiond_instances \
                 ORDER BY instance",
                &[],
            )
            .await
            .map_err(TierError::from)?;
        Ok(rows.iter().map(read_lease).collect::<Result<_, _>>()?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(TierError::from)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(TierError::from)?;
        Ok(())
    }
}

/// A lease row.
fn read_lease(row: &Row) -> Result<Lease, TierError> {
    let entries: i64 = row.try_get(2)?;
    Ok(Lease {
        instance: row.try_get(0)?,
        epoch: row.try_get(1)?,
        journal_entries: u64::try_from(entries).unwrap_or(0),
        renewed_at: from_sql_time(row.try_get(3)?),
    })
}
