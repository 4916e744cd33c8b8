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
//!
//! The crate root holds [`RedisStore`] and its [`SessionStore`] impl: each operation names its
//! script, its keys and arguments, how far it must reach, and what its reply means.

pub mod connection;

mod codec;
mod keys;
mod options;
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
use sessiond_core::{
    AtCap, CreateOutcome, Origin, RotateOutcome, SecretHash, SessionId, SessionLimit,
    SessionRecord, SessionStore, StoreError, Timestamp, UpdateOutcome, UserId,
};

pub use connection::{ConnectError, TlsRoots, Topology};
pub use options::{ReadFrom, RedisOptions, defaults};

use crate::codec::{decode, encode, encode_object, parse_version, u48, version_bytes};
use crate::connection::store_error;
use crate::keys::Keys;
use crate::keys::{expired_score, id_from_member, member, score};
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
        Ok(RedisStore {
            backend,
            keys: Keys::new(&options.key_prefix),
            timeout: options.timeout,
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
        _origin: Origin<'_>,
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
        let reply: CreateReply = self
            .call_reaching(Reach::Durable, |mut c| async move {
                let mut invocation = scripts::CREATE.key(self.keys.record(&record.id));
                invocation
                    .key(self.keys.index_in(shard, &record.user_id))
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
                    .arg(expired_score(now));
                if let Some(old) = replaces {
                    invocation
                        .key(self.keys.record(old))
                        .arg(member(old))
                        .arg(record.user_id.as_str());
                }
                invocation.invoke_async(&mut c).await
            })
            .await?;
        match reply {
            CreateReply::IdTaken => Ok(CreateOutcome::IdTaken),
            CreateReply::AtCapacity => Ok(CreateOutcome::AtCapacity),
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
        let touched: bool = self
            .call(|mut c| async move {
                scripts::TOUCH
                    .key(self.keys.record(id))
                    .arg(at.as_millis())
                    .arg(&u48(at.as_millis())[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(touched)
    }

    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Json>,
        now: Timestamp,
        _origin: Origin<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        let data = encode_object(user_data)?;
        let expected = version_bytes(expected_version)?;
        let next = version_bytes(
            expected_version
                .checked_add(1)
                .ok_or_else(|| StoreError::internal("version overflow"))?,
        )?;
        let reply: UpdateReply = self
            .call_reaching(Reach::Visible, |mut c| async move {
                scripts::UPDATE_DATA
                    .key(self.keys.record(id))
                    .arg(&expected[..])
                    .arg(now.as_millis())
                    .arg(data)
                    .arg(&next[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply {
            UpdateReply::NotFound => Ok(UpdateOutcome::NotFound),
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
        _origin: Origin<'_>,
    ) -> Result<RotateOutcome, StoreError> {
        let reply: RotateReply = self
            .call_reaching(Reach::Durable, |mut c| async move {
                scripts::ROTATE
                    .key(self.keys.record(id))
                    .arg(now.as_millis())
                    .arg(&expected.as_bytes()[..])
                    .arg(&replacement.as_bytes()[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply {
            RotateReply::NotFound => Ok(RotateOutcome::NotFound),
            RotateReply::Stale => Ok(RotateOutcome::Stale),
            RotateReply::Rotated(r) => Ok(RotateOutcome::Rotated(decode(id, &r)?)),
        }
    }

    async fn delete(
        &self,
        id: &SessionId,
        now: Timestamp,
        _origin: Origin<'_>,
    ) -> Result<Option<UserId>, StoreError> {
        let reply: DeleteReply = self
            .call_reaching(Reach::Durable, |mut c| async move {
                scripts::DELETE
                    .key(self.keys.record(id))
                    .arg(now.as_millis())
                    .arg(self.keys.index_prefix(id.shard().as_str()))
                    .arg(member(id))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply {
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
        _origin: Origin<'_>,
    ) -> Result<u64, StoreError> {
        let keep = except.map(member).unwrap_or("");
        let shard = user.shard();
        let mut total = 0u64;
        loop {
            let batch: DeleteUserReply = self
                .call_reaching(Reach::Durable, |mut c| async move {
                    scripts::DELETE_USER
                        .key(self.keys.index_in(shard, user))
                        .arg(now.as_millis())
                        .arg(self.keys.record_prefix(shard.as_str()))
                        .arg(keep)
                        .arg(REVOKE_BATCH)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            total += batch.removed;
            if !batch.more {
                return Ok(total);
            }
        }
    }

    async fn delete_all(&self, _now: Timestamp, _origin: Origin<'_>) -> Result<u64, StoreError> {
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

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        // Counting sessions would mean scanning the keyspace; Redis reports key counts itself.
        Ok(None)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }
}
