//! sessiond's production engine: sessions in Redis — standalone, a primary with read
//! replicas, Sentinel, or Cluster.
//!
//! One [`RedisStore`] serves every topology through the same key schema and scripts:
//!
//! - a validation is one `GET` of the record (the token's session id names the key), and a
//!   touch (at most once per touch interval) one small script that rewrites 15 bytes in place;
//! - every key has a native TTL: a record expires with its session, an index with its
//!   longest-lived entry; nothing relies on keyspace notifications or a cleanup job;
//! - every multi-key change (create with its index entry and the per-user cap, revoke,
//!   revoke-all, rotate, compare-and-set patch) is one server-side script, atomic on every
//!   topology because a record and its user's index share a Cluster hash tag;
//! - a script that changes a session first checks that it exists and is live, so no write can
//!   bring back a deleted session;
//! - with replicas, validations may read from them, and every write but a touch is made
//!   visible on every read path before it is acknowledged (see `replication`).
//!
//! # Layout
//!
//! - [`options`](RedisOptions): the settings, [`ReadFrom`], and the engine's [`defaults`]
//!   (the server's configuration takes its own from there).
//! - [`connection`]: URL forms, connecting, and the mapping of client errors to store errors.
//! - `routing`: where each command goes (primary, replica, Cluster) and how far a write must
//!   reach before it is acknowledged.
//! - `primary`: the primary's connection, fixed or found through Sentinel, in one cache.
//! - `replication`: primary and replicas: `WAIT`, fencing of lagging replicas, the refresher.
//! - `sentinel`: finding the primary through Sentinel.
//! - `keys`: the key schema.
//! - `codec`: the record's byte layout, with the fixed header the scripts edit in place.
//! - `scripts`: the Lua scripts, and `replies`: what each script's reply means, as types.
//! - `purge`: revoke-everyone, walking each primary for keys of sessiond's exact shapes.
//! - `outbox`: with the durable tier, what each script records for it, per shard's stream,
//!   and how the shipper finds and removes it.
//! - [`cache`]: the near cache, a store over this one that answers recent validations from
//!   memory, kept true by Redis's invalidations (`CLIENT TRACKING`).
//!
//! The crate root holds [`RedisStore`] and its [`SessionStore`] impl: each operation names its
//! script, its keys and arguments, how far it must reach, and what its reply means.

pub mod cache;
pub mod connection;

mod codec;
mod keys;
mod options;
mod outbox;
mod primary;
mod purge;
mod replication;
mod replies;
mod routing;
mod scripts;
mod sentinel;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value as Json};
use sessiond_core::tier::{AuditKind, JournalMarks, OutboxBacklog, OutboxEntry};
use sessiond_core::{
    Actor, AtCap, CreateOutcome, Demoted, Origin, RotateOutcome, SecretHash, SessionId,
    SessionLimit, SessionRecord, SessionStore, StoreError, Timestamp, UpdateOutcome, UserId,
};

pub use cache::{CacheOptions, CacheProbe, CacheStats, CachingStore};
pub use connection::{ConnectError, TlsRoots, Topology};
pub use options::{ReadFrom, RedisOptions, defaults};

use crate::codec::{decode, encode, encode_object, parse_version, u48, version_bytes};
use crate::connection::store_error;
use crate::keys::{Keys, OutboxLayout};
use crate::keys::{cold_score, expired_score, id_from_member, member, score, unprefixed};
use crate::outbox::Outbox;
use crate::primary::{FixedPrimary, PrimarySource};
use crate::replication::{Replicated, ReplicationOptions};
use crate::replies::{
    CreateReply, DeleteReply, DeleteUserReply, ListReply, RotateReply, UpdateReply,
};
use crate::routing::{Backend, Reach};
use crate::sentinel::SentinelPrimary;

/// How many sessions one revoke-all script removes before yielding, so a user with very many
/// sessions never blocks Redis for long.
const REVOKE_BATCH: usize = 500;

/// The Redis session store.
#[derive(Debug)]
pub struct RedisStore {
    backend: Backend,
    keys: Keys,
    timeout: Duration,
    /// With the durable tier: the outbox this process writes and ships.
    outbox: Option<Outbox>,
    /// How long a revocation's tombstone stays, in ms.
    tombstone_ms: u64,
}

impl RedisStore {
    /// Connects to the topology in `options`.
    pub async fn connect(options: &RedisOptions) -> Result<Self, ConnectError> {
        if options.key_prefix.contains(['{', '}']) {
            return Err(ConnectError::InvalidOption(
                "redis.key_prefix must not contain { or } (they select the Cluster slot)".into(),
            ));
        }
        let replication = ReplicationOptions {
            roots: options.tls_roots.clone(),
            fence_prefix: format!("{}fence:", options.key_prefix),
            read_from_replicas: options.read_from == ReadFrom::Replica,
            sync_timeout: options.replica_sync_timeout,
            min_acks: options.min_replica_acks,
            timeout: options.timeout,
        };
        let backend = match &options.topology {
            Topology::Standalone(url) => {
                let node = replication::node_template(url)?;
                let primary =
                    FixedPrimary::new(node.clone(), options.tls_roots.clone(), options.timeout);
                Backend::Replicated(Replicated::start(
                    PrimarySource::Fixed(Box::new(primary)),
                    node,
                    replication,
                ))
            }
            Topology::Sentinel {
                sentinels,
                service,
                node_url,
            } => {
                let node = replication::node_template(node_url)?;
                let primary = SentinelPrimary::new(
                    sentinels.clone(),
                    service.clone(),
                    node.clone(),
                    options.tls_roots.clone(),
                    options.timeout,
                );
                Backend::Replicated(Replicated::start(
                    PrimarySource::Sentinel(Box::new(primary)),
                    node,
                    replication,
                ))
            }
            Topology::Cluster(_) if options.min_replica_acks > 0 => {
                return Err(ConnectError::InvalidOption(
                    "redis.min_replica_acks is not available on Cluster yet".into(),
                ));
            }
            Topology::Cluster(nodes) => Backend::Cluster(
                connection::cluster(nodes, &options.tls_roots, options.timeout).await?,
            ),
        };
        let outboxes = match backend {
            Backend::Replicated(_) => OutboxLayout::One,
            Backend::Cluster(_) => OutboxLayout::PerShard,
        };
        Ok(RedisStore {
            backend,
            keys: Keys::new(&options.key_prefix, outboxes),
            timeout: options.timeout,
            outbox: options
                .outbox_per_stream
                .map(|bound| Outbox::new(bound, outboxes)),
            tombstone_ms: u64::try_from(options.tombstone_ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        })
    }

    /// How many replicas validations may read from now (connected and not fenced); 0 on
    /// Cluster, where reads go to the primaries.
    pub fn readable_replicas(&self) -> usize {
        match &self.backend {
            Backend::Replicated(r) => r.readable_replicas().len(),
            Backend::Cluster(_) => 0,
        }
    }
}

fn unexpected() -> StoreError {
    StoreError::internal("unexpected reply from a sessiond script")
}

/// Milliseconds from `now` until the session's expiry, at least 1 (Redis refuses 0).
fn ttl_ms(record: &SessionRecord, now: Timestamp) -> u64 {
    record
        .expires_at()
        .saturating_since(now)
        .as_millis()
        .clamp(1, u128::from(u32::MAX) * 1000) as u64
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(
        &self,
        record: &SessionRecord,
        replaces: Option<&SessionId>,
        limit: SessionLimit,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<CreateOutcome, StoreError> {
        let shard = record.user_id.shard();
        if record.id.shard() != shard {
            return Err(StoreError::internal(
                "session id was not issued for its user",
            ));
        }
        // A session of another shard cannot be this user's (and its key is in another slot).
        let replaces = replaces.filter(|old| old.shard() == shard);
        let value = encode(record)?;
        let event = self.event(
            origin,
            AuditKind::Created,
            now,
            Some(&record.id),
            Some(&record.user_id),
        )?;
        let event = &event;
        let reply = self
            .call_reaching(Reach::Durable, |mut c| async move {
                let mut invocation = scripts::CREATE.key(self.keys.record(&record.id));
                invocation
                    .key(self.keys.index_in(shard, &record.user_id))
                    .key(self.keys.outbox(shard))
                    .arg(value)
                    .arg(ttl_ms(record, now))
                    .arg(score(record.absolute_expires_at))
                    .arg(member(&record.id))
                    .arg(now.as_millis())
                    .arg(limit.max_per_user.unwrap_or(0))
                    .arg(if limit.at_cap == AtCap::Reject {
                        "r"
                    } else {
                        "e"
                    })
                    .arg(self.keys.record_prefix(shard.as_str()))
                    .arg(expired_score(now))
                    .arg(self.outbox_bound())
                    .arg(event.as_str())
                    .arg(self.keys.tombstone_prefix(shard))
                    .arg(self.tombstone_ms);
                if let Some(old) = replaces {
                    invocation
                        .key(self.keys.record(old))
                        .arg(member(old))
                        .arg(record.user_id.as_str());
                }
                invocation.invoke_async::<CreateReply>(&mut c).await
            })
            .await;
        self.outbox_mark(shard);
        match reply? {
            CreateReply::IdTaken => Ok(CreateOutcome::IdTaken),
            CreateReply::AtCapacity => Ok(CreateOutcome::AtCapacity),
            CreateReply::OutboxFull => Err(outbox::full()),
            CreateReply::Created { replaced, evicted } => Ok(CreateOutcome::Created {
                evicted: evicted
                    .iter()
                    .filter_map(|m| id_from_member(shard, m))
                    .collect(),
                replaced,
            }),
        }
    }

    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.load_live(id, now, true).await
    }

    async fn load_identity(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.load_live(id, now, false).await
    }

    async fn touch(
        &self,
        id: &SessionId,
        at: Timestamp,
        _origin: Origin<'_>,
    ) -> Result<bool, StoreError> {
        let touched = self
            .call(|mut c| async move {
                scripts::TOUCH
                    .key(self.keys.record(id))
                    .key(self.keys.outbox(id.shard()))
                    .arg(at.as_millis())
                    .arg(&u48(at.as_millis())[..])
                    .arg(self.outbox_bound())
                    .arg(unprefixed(id))
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await;
        if !matches!(touched, Ok(0 | 1)) {
            self.outbox_mark(id.shard());
        }
        Ok(touched? > 0)
    }

    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Json>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        let data = encode_object(user_data)?;
        let expected = version_bytes(expected_version)?;
        let next = version_bytes(
            expected_version
                .checked_add(1)
                .ok_or_else(|| StoreError::internal("version overflow"))?,
        )?;
        // The user is in the record, not known here: the event names the session, and the
        // record the entry carries names its user (the shipper's decode fills it in).
        let event = self.event(origin, AuditKind::Updated, now, Some(id), None)?;
        let event = &event;
        let reply = self
            .call_reaching(Reach::Visible, |mut c| async move {
                scripts::UPDATE_DATA
                    .key(self.keys.record(id))
                    .key(self.keys.outbox(id.shard()))
                    .arg(&expected[..])
                    .arg(now.as_millis())
                    .arg(data)
                    .arg(&next[..])
                    .arg(self.outbox_bound())
                    .arg(event.as_str())
                    .arg(unprefixed(id))
                    .invoke_async::<UpdateReply>(&mut c)
                    .await
            })
            .await;
        if !matches!(reply, Ok(UpdateReply::NotFound | UpdateReply::Mismatch(_))) {
            self.outbox_mark(id.shard());
        }
        match reply? {
            UpdateReply::NotFound => Ok(UpdateOutcome::NotFound),
            UpdateReply::OutboxFull => Err(outbox::full()),
            UpdateReply::Mismatch(v) => {
                let current = parse_version(&v).ok_or_else(unexpected)?;
                Ok(UpdateOutcome::VersionMismatch { current })
            }
            UpdateReply::Updated(r) => Ok(UpdateOutcome::Updated(decode(id, &r)?)),
        }
    }

    async fn rotate(
        &self,
        id: &SessionId,
        expected: &SecretHash,
        replacement: &SecretHash,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<RotateOutcome, StoreError> {
        let event = self.event(origin, AuditKind::Rotated, now, Some(id), None)?;
        let event = &event;
        let reply = self
            .call_reaching(Reach::Durable, |mut c| async move {
                scripts::ROTATE
                    .key(self.keys.record(id))
                    .key(self.keys.outbox(id.shard()))
                    .arg(now.as_millis())
                    .arg(&expected.as_bytes()[..])
                    .arg(&replacement.as_bytes()[..])
                    .arg(self.outbox_bound())
                    .arg(event.as_str())
                    .arg(unprefixed(id))
                    .invoke_async::<RotateReply>(&mut c)
                    .await
            })
            .await;
        if !matches!(reply, Ok(RotateReply::NotFound | RotateReply::Stale)) {
            self.outbox_mark(id.shard());
        }
        match reply? {
            RotateReply::NotFound => Ok(RotateOutcome::NotFound),
            RotateReply::Stale => Ok(RotateOutcome::Stale),
            RotateReply::Rotated(r) => Ok(RotateOutcome::Rotated(decode(id, &r)?)),
        }
    }

    async fn delete(
        &self,
        id: &SessionId,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<Option<UserId>, StoreError> {
        // The holder's own end is a logout; anyone else's a revocation.
        let kind = if origin.actor == Actor::Holder {
            AuditKind::LoggedOut
        } else {
            AuditKind::Revoked
        };
        let event = self.event(origin, kind, now, Some(id), None)?;
        let event = &event;
        let reply = self
            .call_reaching(Reach::Durable, |mut c| async move {
                scripts::DELETE
                    .key(self.keys.record(id))
                    .key(self.keys.outbox(id.shard()))
                    .key(self.keys.tombstone(id))
                    .arg(now.as_millis())
                    .arg(self.keys.index_prefix(id.shard().as_str()))
                    .arg(member(id))
                    .arg(self.outbox_bound())
                    .arg(event.as_str())
                    .arg(self.tombstone_ms)
                    .invoke_async::<DeleteReply>(&mut c)
                    .await
            })
            .await;
        self.outbox_mark(id.shard());
        match reply? {
            DeleteReply::RemovedLive(user) => std::str::from_utf8(&user)
                .ok()
                .and_then(|u| UserId::parse(u).ok())
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt("a stored user id is not one".into())),
            DeleteReply::NothingLive => Ok(None),
        }
    }

    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let shard = user.shard();
        let ListReply(pairs) = self
            .call(|mut c| async move {
                scripts::LIST_USER
                    .key(self.keys.index_in(shard, user))
                    .arg(expired_score(now))
                    .arg(self.keys.record_prefix(shard.as_str()))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::with_capacity(pairs.len());
        for (member, value) in &pairs {
            let id = id_from_member(shard, member).ok_or_else(unexpected)?;
            let record = decode(&id, value)?;
            if record.is_live(now) {
                out.push(record);
            }
        }
        Ok(out)
    }

    async fn delete_user(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<u64, StoreError> {
        let keep = except.map(member).unwrap_or("");
        let shard = user.shard();
        let kind = AuditKind::RevokedAll {
            count: 0,
            kept: except.cloned(),
        };
        let event = self.event(origin, kind, now, None, Some(user))?;
        let event = &event;
        let mut total = 0u64;
        loop {
            let batch = self
                .call_reaching(Reach::Durable, |mut c| async move {
                    scripts::DELETE_USER
                        .key(self.keys.index_in(shard, user))
                        .key(self.keys.outbox(shard))
                        .key(self.keys.user_tombstone(shard, user))
                        .arg(now.as_millis())
                        .arg(self.keys.record_prefix(shard.as_str()))
                        .arg(keep)
                        .arg(REVOKE_BATCH)
                        .arg(self.outbox_bound())
                        .arg(event.as_str())
                        .arg(total)
                        .arg(self.tombstone_ms)
                        .invoke_async::<DeleteUserReply>(&mut c)
                        .await
                })
                .await;
            self.outbox_mark(shard);
            let batch = batch?;
            total += batch.removed;
            if !batch.more {
                return Ok(total);
            }
        }
    }

    async fn delete_all(&self, now: Timestamp, origin: Origin<'_>) -> Result<u64, StoreError> {
        if self.outbox.is_none() {
            return self.purge_all().await;
        }
        // The end of everyone is in the outbox before the first key goes, so a walk cut short
        // still ends, in the durable tier, every session it may have removed here.
        let stream = self.keys.outbox(outbox::everyone_stream());
        let stream = &stream;
        let marker: String = self
            .call(|mut c| async move {
                redis::cmd("XADD")
                    .arg(stream)
                    .arg("*")
                    .arg("c")
                    .arg("a")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        self.outbox_mark(outbox::everyone_stream());
        let removed = self.purge_all().await?;
        let event = self.event(
            origin,
            AuditKind::RevokedEveryone { count: removed },
            now,
            None,
            None,
        )?;
        let (event, marker) = (&event, &marker);
        self.call_reaching(Reach::Durable, |mut c| async move {
            scripts::ALL_ENDED
                .key(stream)
                .arg(event.as_str())
                .arg(marker.as_str())
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await?;
        Ok(removed)
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        // Counting sessions would mean scanning the keyspace; Redis reports key counts itself.
        Ok(None)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    async fn restore(&self, record: &SessionRecord, now: Timestamp) -> Result<bool, StoreError> {
        // Only with the tier are tombstones left: without them a write-back could race a
        // revocation.
        if self.outbox.is_none() || !record.is_live(now) {
            return Ok(false);
        }
        let shard = record.user_id.shard();
        if record.id.shard() != shard {
            return Err(StoreError::Corrupt(
                "a durable session is not in its user's shard".into(),
            ));
        }
        let value = encode(record)?;
        let index_ms = (score(record.absolute_expires_at) * 1000)
            .saturating_sub(now.as_millis())
            .max(1);
        let restored: i64 = self
            .call_reaching(Reach::Visible, |mut c| async move {
                scripts::RESTORE
                    .key(self.keys.record(&record.id))
                    .key(self.keys.index_in(shard, &record.user_id))
                    .key(self.keys.tombstone(&record.id))
                    .key(self.keys.user_tombstone(shard, &record.user_id))
                    .arg(value)
                    .arg(ttl_ms(record, now))
                    .arg(score(record.absolute_expires_at))
                    .arg(member(&record.id))
                    .arg(record.created_at.as_millis())
                    .arg(index_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(restored == 1)
    }

    async fn demote(&self, record: &SessionRecord) -> Result<Demoted, StoreError> {
        if self.outbox.is_none() {
            return Ok(Demoted::Changed);
        }
        let value = encode(record)?;
        let header = value
            .get(..codec::HEADER_LEN)
            .ok_or_else(|| StoreError::internal("a record shorter than its header"))?;
        let id = &record.id;
        let reply: i64 = self
            .call_reaching(Reach::Visible, |mut c| async move {
                scripts::DEMOTE
                    .key(self.keys.record(id))
                    .arg(header)
                    .arg(self.keys.index_prefix(id.shard().as_str()))
                    .arg(member(id))
                    .arg(cold_score(record.expires_at()))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match reply {
            1 => Demoted::Removed,
            0 => Demoted::Absent,
            _ => Demoted::Changed,
        })
    }

    async fn journal_marks(
        &self,
        mark: Option<(&str, bool)>,
    ) -> Result<Option<JournalMarks>, StoreError> {
        // Without the tier there is no journal. The two keys are in different Cluster slots:
        // separate calls, each on the primary (a replica could miss a mark just made).
        if self.outbox.is_none() {
            return Ok(None);
        }
        let (epoch, journals) = (&self.keys.epoch(), &self.keys.journals());
        if let Some((instance, pending)) = mark {
            let fresh = JournalMarks::new_epoch().map_err(StoreError::internal)?;
            let fresh = &fresh;
            self.call_reaching(Reach::Durable, |mut c| async move {
                redis::cmd("SET")
                    .arg(epoch)
                    .arg(fresh)
                    .arg("NX")
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
            self.call_reaching(Reach::Durable, |mut c| async move {
                redis::cmd(if pending { "SADD" } else { "SREM" })
                    .arg(journals)
                    .arg(instance)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        }
        let current: Option<String> = self
            .call(|mut c| async move { redis::cmd("GET").arg(epoch).query_async(&mut c).await })
            .await?;
        let pending: u64 = self
            .call(
                |mut c| async move { redis::cmd("SCARD").arg(journals).query_async(&mut c).await },
            )
            .await?;
        Ok(Some(JournalMarks {
            epoch: current,
            pending,
        }))
    }

    async fn outbox_read(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read_outbox(max).await
    }

    async fn outbox_turn(&self, hold: Duration) -> Result<bool, StoreError> {
        self.outbox_turn_now(hold).await
    }

    async fn outbox_remove(&self, shipped: &[OutboxEntry]) -> Result<(), StoreError> {
        self.remove_from_outbox(shipped).await
    }

    async fn outbox_backlog(&self) -> Result<Option<OutboxBacklog>, StoreError> {
        self.outbox_backlog_now().await
    }
}

impl RedisStore {
    /// Removes every record and index, walking each primary; returns how many records.
    async fn purge_all(&self) -> Result<u64, StoreError> {
        let (records, indexes) = (self.keys.record_pattern(), self.keys.index_pattern());
        let is_record = |k: &[u8]| self.keys.is_record(k);
        let is_index = |k: &[u8]| self.keys.is_index(k);
        match &self.backend {
            Backend::Replicated(r) => {
                let mut conn = r.primary().await?;
                let own = purge::Node::Own;
                let walked = async {
                    let removed =
                        purge::unlink_matching(&mut conn, &own, &records, is_record, self.timeout)
                            .await?;
                    purge::unlink_matching(&mut conn, &own, &indexes, is_index, self.timeout)
                        .await?;
                    Ok::<_, redis::RedisError>(removed)
                }
                .await;
                let removed = match walked {
                    Ok(n) => n,
                    Err(e) => {
                        r.primary_failed(&e);
                        return Err(store_error(e));
                    }
                };
                // Every unlink went over this connection: one WAIT covers them all.
                r.settle(&mut conn, true).await?;
                Ok(removed)
            }
            Backend::Cluster(conn) => {
                let mut conn = conn.clone();
                let nodes = purge::cluster_primaries(&mut conn, self.timeout)
                    .await
                    .map_err(store_error)?;
                let mut removed = 0;
                for node in &nodes {
                    removed +=
                        purge::unlink_matching(&mut conn, node, &records, is_record, self.timeout)
                            .await
                            .map_err(store_error)?;
                    purge::unlink_matching(&mut conn, node, &indexes, is_index, self.timeout)
                        .await
                        .map_err(store_error)?;
                }
                Ok(removed)
            }
        }
    }
}
