//! The near cache: a store that wraps the Redis engine and answers validations of recently
//! read sessions from this process's memory, without a round trip, while a revoked session
//! stays dead everywhere once its revoke has answered.
//!
//! - [`entries`]: the bounded map, with the placeholder a read leaves before it asks Redis.
//! - [`channel`]: the tracking connection that reads, receives Redis's invalidations, and
//!   proves by heartbeat that it has received them up to a recent moment.
//!
//! The rules (the argument is in `docs/design.md`, "The near cache"):
//!
//! - A hit is served only while the channel is fresh (its latest answered heartbeat was sent
//!   less than the window `W` ago) and only for a record live at `now`; anything else reads
//!   Redis. A missing or expired session is never cached, so a create is seen at once.
//! - A miss reads on the channel, so Redis tracks the key for this process; its reply is
//!   stored only if no invalidation or flush came first.
//! - A write that ends a session or changes what a validation returns (revoke, logout,
//!   revoke-all, revoke-everyone, rotation, a patch, a create that evicts or replaces) answers
//!   only `W` after Redis applied it. By then every fresh cache, this process's included, has
//!   dropped the old record: a hit at `t` needs a heartbeat sent after `t - W`, so after the
//!   write, so answered after the write's invalidation arrived.
//! - A touch or a create that ends nothing does not wait: this process drops its own entry,
//!   and other processes learn of the new activity from the invalidation (a record they hold
//!   with older activity expires no sooner there than here, and an expired one is read again).
//!
//! Cluster is not supported yet: each shard's primary would need a channel of its own.

mod channel;
mod entries;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands as _;
use serde_json::{Map, Value};
use sessiond_core::wrap::StoreWrapper;
use sessiond_core::{
    CreateOutcome, Demoted, Origin, RotateOutcome, SecretHash, SessionId, SessionLimit,
    SessionRecord, SessionStore, StoreError, Timestamp, UpdateOutcome, UserId,
};
use tokio::task::JoinHandle;

use self::channel::Channel;
use self::entries::{Entries, Lookup};
use crate::RedisStore;
use crate::codec::decode_with;
use crate::connection::ConnectError;
use crate::replication::Replicated;
use crate::routing::{Backend, timed};

/// The near cache's settings.
#[derive(Debug, Clone, Copy)]
pub struct CacheOptions {
    /// Most sessions cached (each of the 64 shards holds its share, rounded up).
    pub max_entries: usize,
    /// Most bytes cached (records, keys and bookkeeping).
    pub max_bytes: usize,
    /// Time between heartbeats on the invalidation channel.
    pub heartbeat: Duration,
    /// The invalidation window `W`: how long a write that ends or changes a session waits
    /// before it answers, and how recent a heartbeat must be for a hit. Larger than the
    /// heartbeat interval plus a round trip, or hits stop between heartbeats.
    pub window: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_entries: 0,
            max_bytes: 64 * 1024 * 1024,
            heartbeat: Duration::from_millis(5),
            window: Duration::from_millis(25),
        }
    }
}

/// What the cache has done, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Validations and reads answered from memory.
    pub hits: u64,
    /// Reads that went to Redis.
    pub misses: u64,
    /// Entries dropped by an invalidation from Redis.
    pub invalidations: u64,
    /// Times the whole cache was dropped (its channel in doubt).
    pub flushes: u64,
    /// Sessions cached now.
    pub entries: u64,
    /// Bytes cached now.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
}

/// State shared by the store and its maintenance task.
#[derive(Debug)]
struct Shared {
    entries: Entries,
    channel: Channel,
    counters: Counters,
    replicated: Arc<Replicated>,
    timeout: Duration,
    window: Duration,
}

/// Reads a [`CachingStore`]'s [`CacheStats`] (zeros once the store is gone).
#[derive(Debug, Clone)]
pub struct CacheProbe(std::sync::Weak<Shared>);

impl CacheProbe {
    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        let Some(shared) = self.0.upgrade() else {
            return CacheStats::default();
        };
        let c = &shared.counters;
        let (entries, bytes) = shared.entries.totals();
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            entries: entries as u64,
            bytes: bytes as u64,
        }
    }
}

/// The Redis engine with the near cache in front of it.
#[derive(Debug)]
pub struct CachingStore {
    inner: Arc<RedisStore>,
    shared: Arc<Shared>,
    maintenance: JoinHandle<()>,
}

impl Drop for CachingStore {
    fn drop(&mut self) {
        self.maintenance.abort();
    }
}

impl CachingStore {
    /// The cache over `inner`, with its channel opening in the background (until it has
    /// answered a heartbeat, every read goes to Redis). Must be called inside a tokio runtime.
    pub fn new(inner: Arc<RedisStore>, options: CacheOptions) -> Result<Self, ConnectError> {
        let Backend::Replicated(replicated) = &inner.backend else {
            return Err(ConnectError::InvalidOption(
                "cache.max_entries is not available on Cluster yet".into(),
            ));
        };
        if options.window <= options.heartbeat {
            return Err(ConnectError::InvalidOption(
                "cache.window must be longer than cache.heartbeat".into(),
            ));
        }
        let shared = Arc::new(Shared {
            entries: Entries::new(options.max_entries, options.max_bytes),
            channel: Channel::new(),
            counters: Counters::default(),
            replicated: replicated.clone(),
            timeout: inner.timeout,
            window: options.window,
        });
        let maintenance = tokio::spawn(channel::maintain(
            Arc::downgrade(&shared),
            options.heartbeat,
        ));
        Ok(CachingStore {
            inner,
            shared,
            maintenance,
        })
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> CacheStats {
        self.probe().stats()
    }

    /// A handle that reads [`CachingStore::stats`] while the store lives, for the metrics,
    /// which are registered apart from the store.
    pub fn probe(&self) -> CacheProbe {
        CacheProbe(Arc::downgrade(&self.shared))
    }

    /// Whether hits are being served now (the channel answered a heartbeat within the window).
    pub fn serving(&self) -> bool {
        self.shared.channel.fresh()
    }

    async fn read(
        &self,
        id: &SessionId,
        now: Timestamp,
        user_data: bool,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let shared = &self.shared;
        let key = self.inner.keys.record(id);
        let live = shared.channel.live();
        if let Some(live) = &live
            && shared.channel.fresh()
            && let Lookup::Hit(record) = shared.entries.get(&key, now, user_data)
        {
            // The channel's heartbeat checks the primary connection count; between
            // heartbeats a failover this process followed is caught here.
            if shared.channel.follows(live, &shared.replicated) {
                shared.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(record));
            }
        }
        shared.counters.misses.fetch_add(1, Ordering::Relaxed);
        let Some(mut live) = live else {
            return self.inner.load_live(id, now, user_data).await;
        };
        let ticket = shared.entries.reserve(&key, live.epoch);
        let got = timed(shared.timeout, live.conn.get::<_, Option<Vec<u8>>>(&key)).await;
        let bytes = match got {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                if let Some(t) = ticket {
                    shared.entries.cancel(&key, t);
                }
                return Ok(None);
            }
            Err(_) => {
                if let Some(t) = ticket {
                    shared.entries.cancel(&key, t);
                }
                shared.doubt(Some(live.epoch), "a read on the channel failed");
                // The engine's own read path retries on every node it knows.
                return self.inner.load_live(id, now, user_data).await;
            }
        };
        let record = match decode_with(id, &bytes, true) {
            Ok(record) if record.is_live(now) => record,
            other => {
                if let Some(t) = ticket {
                    shared.entries.cancel(&key, t);
                }
                return other.map(|_| None);
            }
        };
        let answer = entries::answer(&record, user_data);
        if let Some(t) = ticket {
            shared.entries.fill(&key, t, record, bytes.len());
        }
        Ok(Some(answer))
    }

    /// Drops this process's own entry for `id` (value or a read's placeholder in flight).
    fn forget(&self, id: &SessionId) {
        self.shared.entries.invalidate(&self.inner.keys.record(id));
    }

    /// Waits out the invalidation window after a write Redis has applied (see the module
    /// doc), so that no fresh cache still holds what it changed when it answers.
    async fn settle(&self) {
        tokio::time::sleep(self.shared.window).await;
    }
}

#[async_trait]
impl StoreWrapper for CachingStore {
    fn inner(&self) -> &dyn SessionStore {
        &*self.inner
    }

    async fn create(
        &self,
        record: &SessionRecord,
        replaces: Option<&SessionId>,
        limit: SessionLimit,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<CreateOutcome, StoreError> {
        let outcome = self
            .inner
            .create(record, replaces, limit, now, origin)
            .await?;
        if let CreateOutcome::Created { evicted, replaced } = &outcome
            && (*replaced || !evicted.is_empty())
        {
            for id in evicted.iter().chain(replaces) {
                self.forget(id);
            }
            self.settle().await;
        }
        Ok(outcome)
    }

    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.read(id, now, true).await
    }

    async fn load_identity(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.read(id, now, false).await
    }

    async fn touch(
        &self,
        id: &SessionId,
        at: Timestamp,
        origin: Origin<'_>,
    ) -> Result<bool, StoreError> {
        let touched = self.inner.touch(id, at, origin).await;
        self.forget(id);
        touched
    }

    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Value>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        let outcome = self
            .inner
            .update_data(id, expected_version, user_data, now, origin)
            .await;
        // A version mismatch means the cached record was stale: the retry reads Redis.
        self.forget(id);
        // A session found gone may have been ended by a call still waiting out the window.
        if matches!(
            outcome,
            Ok(UpdateOutcome::Updated(_) | UpdateOutcome::NotFound)
        ) {
            self.settle().await;
        }
        outcome
    }

    async fn rotate(
        &self,
        id: &SessionId,
        expected: &SecretHash,
        replacement: &SecretHash,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<RotateOutcome, StoreError> {
        let outcome = self
            .inner
            .rotate(id, expected, replacement, now, origin)
            .await;
        self.forget(id);
        // Whatever the outcome: a rotation that lost, or found the session gone, lost to a
        // call that may still be waiting out the window, and its caller takes the old token
        // for dead from this answer on.
        if outcome.is_ok() {
            self.settle().await;
        }
        outcome
    }

    async fn delete(
        &self,
        id: &SessionId,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<Option<UserId>, StoreError> {
        let deleted = self.inner.delete(id, now, origin).await;
        self.forget(id);
        // Also when nothing was deleted: the session may have been ended by a concurrent call
        // (a revoke-all, another logout) still waiting out the window, and this caller takes
        // it for dead from this answer on.
        if deleted.is_ok() {
            self.settle().await;
        }
        deleted
    }

    async fn delete_user(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<u64, StoreError> {
        let deleted = self.inner.delete_user(user, except, now, origin).await;
        // Which sessions went is not known here; the window covers this process too, and a
        // count of 0 may follow a concurrent end still waiting out its window.
        if deleted.is_ok() {
            self.settle().await;
        }
        deleted
    }

    async fn delete_all(&self, now: Timestamp, origin: Origin<'_>) -> Result<u64, StoreError> {
        let deleted = self.inner.delete_all(now, origin).await;
        if deleted.is_ok() {
            self.settle().await;
        }
        deleted
    }

    async fn restore(&self, record: &SessionRecord, now: Timestamp) -> Result<bool, StoreError> {
        let restored = self.inner.restore(record, now).await;
        self.forget(&record.id);
        restored
    }

    async fn demote(&self, record: &SessionRecord) -> Result<Demoted, StoreError> {
        let demoted = self.inner.demote(record).await;
        self.forget(&record.id);
        demoted
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.maintenance.abort();
        self.shared.close_channel();
        self.inner.close().await
    }
}
