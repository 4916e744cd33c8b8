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
//! - [`connection`]: URL forms, connecting, and the mapping of client errors to store errors.
//! - `keys`: the key schema.
//! - `codec`: the record's byte layout, with the fixed header the scripts edit in place.
//! - `scripts`: the Lua scripts.
//! - `replication`: primary and replicas: read routing, `WAIT`, fencing of lagging replicas.
//! - `sentinel`: finding the primary through Sentinel.
//! - `purge`: revoke-everyone, walking each primary's keys of sessiond's own prefix.
//! - [`defaults`]: the engine's defaults (the server's configuration takes its own from here).

pub mod connection;

mod codec;
mod keys;
mod purge;
mod replication;
mod scripts;
mod sentinel;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands as _, Value};
use serde_json::{Map, Value as Json};
use sessiond_core::{
    AtCap, CreateOutcome, RotateOutcome, SecretHash, SessionId, SessionLimit, SessionRecord,
    SessionStore, StoreError, Timestamp, UpdateOutcome, UserId,
};

pub use connection::{ConnectError, TlsRoots, Topology};

use crate::codec::{decode, decode_with, encode, encode_object, parse_version, u48, version_bytes};
use crate::connection::{Connection, store_error};
use crate::keys::Keys;
use crate::keys::{expired_score, id_from_member, member, score};
use crate::replication::{FixedPrimary, PrimarySource, Replicated, ReplicationOptions};
use crate::sentinel::SentinelPrimary;

/// Pause between read attempts when every node failed.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How many sessions one revoke-all script removes before yielding, so a user with very many
/// sessions never blocks Redis for long.
const REVOKE_BATCH: usize = 500;

/// Where validations read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// Replicas, in turn (falling back to the primary on a miss or when none answers).
    #[default]
    Replica,
    /// The primary only.
    Primary,
}

/// The engine's defaults, the one place they are written (the server's configuration takes
/// its defaults from here).
pub mod defaults {
    use std::time::Duration;

    use crate::ReadFrom;

    /// Prefix of every key.
    pub const KEY_PREFIX: &str = "sd:";
    /// Longest wait for any Redis call.
    pub const TIMEOUT: Duration = Duration::from_secs(1);
    /// How long a write waits for every replica.
    pub const REPLICA_SYNC_TIMEOUT: Duration = Duration::from_millis(100);
    /// Replica acknowledgements a durable write needs.
    pub const MIN_REPLICA_ACKS: usize = 0;
    /// Where validations read from.
    pub const READ_FROM: ReadFrom = ReadFrom::Replica;
}

/// Settings of the Redis engine.
#[derive(Clone)]
pub struct RedisOptions {
    /// Where Redis is (see [`Topology::parse`]).
    pub topology: Topology,
    /// Prefix of every key sessiond writes, so it can share a Redis with other data.
    pub key_prefix: String,
    /// Longest wait for any Redis call; past it the call fails as unavailable (503).
    pub timeout: Duration,
    /// Where validations read from.
    pub read_from: ReadFrom,
    /// How long a write waits for every replica to acknowledge it before the replicas that
    /// did not are fenced off from reads.
    pub replica_sync_timeout: Duration,
    /// Replica acknowledgements that create, rotate and revoke need before they answer
    /// (`WAIT`); 0 answers once the primary has the write. Too few: the call fails with 503,
    /// and the write stays on the primary.
    pub min_replica_acks: usize,
    /// Certificate authorities for `rediss` URLs (PEM); `None` trusts the system's roots.
    pub tls_roots: TlsRoots,
}

impl RedisOptions {
    /// Options for `topology` with the [`defaults`].
    pub fn new(topology: Topology) -> Self {
        RedisOptions {
            topology,
            key_prefix: defaults::KEY_PREFIX.into(),
            timeout: defaults::TIMEOUT,
            read_from: defaults::READ_FROM,
            replica_sync_timeout: defaults::REPLICA_SYNC_TIMEOUT,
            min_replica_acks: defaults::MIN_REPLICA_ACKS,
            tls_roots: TlsRoots::default(),
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The topology holds URLs, which may hold passwords.
        f.debug_struct("RedisOptions")
            .field("topology", &self.topology.kind())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("read_from", &self.read_from)
            .field("replica_sync_timeout", &self.replica_sync_timeout)
            .field("min_replica_acks", &self.min_replica_acks)
            .field("tls_roots", &self.tls_roots)
            .finish()
    }
}

/// Where commands go.
#[derive(Debug)]
enum Backend {
    /// A primary (fixed or found through Sentinel) with its replicas.
    Replicated(Arc<Replicated>),
    /// A cluster: the client routes by key; reads go to primaries.
    Cluster(Connection),
}

/// How far a write must reach before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// The primary is enough (touches: losing one only ages `lastActivity`).
    Primary,
    /// Every read path, so the next request sees it (patches).
    Visible,
    /// Every read path, and the configured number of replica acknowledgements (create,
    /// rotate, revoke).
    Durable,
}

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

    /// Runs `f` on the primary (the cluster) with the store's timeout, then makes the write
    /// reach as far as `reach` says.
    async fn call_reaching<T, F>(
        &self,
        reach: Reach,
        f: impl FnOnce(Connection) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match &self.backend {
            Backend::Cluster(conn) => self.timed(f(conn.clone())).await.map_err(store_error),
            Backend::Replicated(r) => {
                let conn = r.primary().await?;
                let mut same = conn.clone();
                let value = match self.timed(f(conn)).await {
                    Ok(v) => v,
                    Err(e) => {
                        r.primary_failed(&e);
                        return Err(store_error(e));
                    }
                };
                if reach != Reach::Primary {
                    r.settle(&mut same, reach == Reach::Durable).await?;
                }
                Ok(value)
            }
        }
    }

    /// Runs `f` on the primary (the cluster): reads and index upkeep.
    async fn call<T, F>(&self, f: impl FnOnce(Connection) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        self.call_reaching(Reach::Primary, f).await
    }

    async fn timed<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "Redis did not answer in time",
            ))),
        }
    }

    /// The stored bytes of a record: from a replica when reads go there, else from the
    /// primary. A replica's miss is the answer: every write is made visible on the readable
    /// replicas before it is acknowledged (a replica that misses one is fenced), so an unknown
    /// token costs one read, not two (D14). Failed attempts are retried on the other nodes
    /// until the store's timeout, so a replica or primary connection killed by a failover does
    /// not fail a validation that another node can answer.
    /// The record of `id` if it is live at `now`, with `userData` decoded or left empty.
    async fn load_live(
        &self,
        id: &SessionId,
        now: Timestamp,
        user_data: bool,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(bytes) = self.read_record(self.keys.record(id)).await? else {
            return Ok(None);
        };
        let record = decode_with(id, &bytes, user_data)?;
        Ok(record.is_live(now).then_some(record))
    }

    /// `GET` on the primary, bounded by redis-rs's response timeout alone (one command).
    async fn get_on_primary(
        &self,
        r: &Replicated,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = r.primary().await?;
        conn.get(key).await.map_err(|e| {
            r.primary_failed(&e);
            store_error(e)
        })
    }

    async fn read_record(&self, key: String) -> Result<Option<Vec<u8>>, StoreError> {
        let Backend::Replicated(r) = &self.backend else {
            return self.call(|mut c| async move { c.get(key).await }).await;
        };
        let start = tokio::time::Instant::now();
        let deadline = start + self.timeout;
        let mut last = None;
        loop {
            let mut replicas_failed = false;
            if r.reads_from_replicas() {
                for mut conn in r.readable_replicas() {
                    // One command: redis-rs's response timeout (`redis.timeout`) bounds it, so
                    // the hot path arms no second timer.
                    match conn.get::<_, Option<Vec<u8>>>(&key).await {
                        Ok(v) => return Ok(v),
                        Err(e) => {
                            replicas_failed = true;
                            last = Some(store_error(e));
                        }
                    }
                }
            }
            // Replicas that fail are usually reconnecting (Sentinel kills their clients during
            // a failover), while a primary that fails at the same time can take the whole
            // budget to find again. So while replicas fail, retry them for half the budget
            // before asking the primary.
            let ask_primary =
                !replicas_failed || tokio::time::Instant::now() >= start + self.timeout / 2;
            if ask_primary {
                match self.get_on_primary(r, &key).await {
                    Ok(v) => return Ok(v),
                    Err(e) if e.is_unavailable() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                return Err(last.unwrap_or(StoreError::Timeout));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
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
        limit: SessionLimit,
        now: Timestamp,
    ) -> Result<CreateOutcome, StoreError> {
        let shard = record.user_id.shard();
        if record.id.shard() != shard {
            return Err(StoreError::internal(
                "session id was not issued for its user",
            ));
        }
        let value = encode(record)?;
        let reply: Vec<Value> = self
            .call_reaching(Reach::Durable, |mut c| async move {
                scripts::CREATE
                    .key(self.keys.record(&record.id))
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
                    .arg(expired_score(now))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        match reply.first().and_then(int) {
            Some(0) => Ok(CreateOutcome::IdTaken),
            Some(2) => Ok(CreateOutcome::AtCapacity),
            Some(1) => {
                let evicted = reply[1..]
                    .iter()
                    .filter_map(bytes)
                    .filter_map(|m| id_from_member(shard, m))
                    .collect();
                Ok(CreateOutcome::Created { evicted })
            }
            _ => Err(unexpected()),
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

    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        let reply: i64 = self
            .call(|mut c| async move {
                scripts::TOUCH
                    .key(self.keys.record(id))
                    .arg(at.as_millis())
                    .arg(&u48(at.as_millis())[..])
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(reply == 1)
    }

    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Json>,
        now: Timestamp,
    ) -> Result<UpdateOutcome, StoreError> {
        let data = encode_object(user_data)?;
        let expected = version_bytes(expected_version)?;
        let next = version_bytes(
            expected_version
                .checked_add(1)
                .ok_or_else(|| StoreError::internal("version overflow"))?,
        )?;
        let reply: Vec<Value> = self
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
        match (reply.first().and_then(int), reply.get(1).and_then(bytes)) {
            (Some(0), _) => Ok(UpdateOutcome::NotFound),
            (Some(2), Some(v)) => {
                let current = parse_version(v).ok_or_else(unexpected)?;
                Ok(UpdateOutcome::VersionMismatch { current })
            }
            (Some(1), Some(r)) => Ok(UpdateOutcome::Updated(decode(id, r)?)),
            _ => Err(unexpected()),
        }
    }

    async fn rotate(
        &self,
        id: &SessionId,
        expected: &SecretHash,
        replacement: &SecretHash,
        now: Timestamp,
    ) -> Result<RotateOutcome, StoreError> {
        let reply: Vec<Value> = self
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
        match (reply.first().and_then(int), reply.get(1).and_then(bytes)) {
            (Some(0), _) => Ok(RotateOutcome::NotFound),
            (Some(2), _) => Ok(RotateOutcome::Stale),
            (Some(1), Some(r)) => Ok(RotateOutcome::Rotated(decode(id, r)?)),
            _ => Err(unexpected()),
        }
    }

    async fn delete(&self, id: &SessionId, now: Timestamp) -> Result<Option<UserId>, StoreError> {
        let reply: (i64, String) = self
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
            (2, user) => UserId::parse(&user)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(e.into())),
            _ => Ok(None),
        }
    }

    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let shard = user.shard();
        let reply: Vec<Value> = self
            .call(|mut c| async move {
                scripts::LIST_USER
                    .key(self.keys.index_in(shard, user))
                    .arg(expired_score(now))
                    .arg(self.keys.record_prefix(shard.as_str()))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut out = Vec::with_capacity(reply.len() / 2);
        for pair in reply.chunks_exact(2) {
            let (Some(id), Some(value)) = (bytes(&pair[0]), bytes(&pair[1])) else {
                return Err(unexpected());
            };
            let id = id_from_member(shard, id).ok_or_else(unexpected)?;
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
    ) -> Result<u64, StoreError> {
        let keep = except.map(member).unwrap_or("");
        let shard = user.shard();
        let mut total = 0u64;
        loop {
            let reply: Vec<i64> = self
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
            let [removed, more] = reply[..] else {
                return Err(unexpected());
            };
            total += u64::try_from(removed).unwrap_or(0);
            if more == 0 {
                return Ok(total);
            }
        }
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        let records = format!("{}*", purge::glob_escape(&self.keys.record_prefix_all()));
        let indexes = format!("{}*", purge::glob_escape(&self.keys.index_prefix_all()));
        match &self.backend {
            Backend::Replicated(r) => {
                let mut conn = r.primary().await?;
                let mut removed = 0;
                for (pattern, counts) in [(&records, true), (&indexes, false)] {
                    match purge::unlink_matching(
                        &mut conn,
                        &purge::Node::Own,
                        pattern,
                        self.timeout,
                    )
                    .await
                    {
                        Ok(n) if counts => removed = n,
                        Ok(_) => {}
                        Err(e) => {
                            r.primary_failed(&e);
                            return Err(store_error(e));
                        }
                    }
                }
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
                    removed += purge::unlink_matching(&mut conn, node, &records, self.timeout)
                        .await
                        .map_err(store_error)?;
                    purge::unlink_matching(&mut conn, node, &indexes, self.timeout)
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
