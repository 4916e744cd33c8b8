//! sessiond's default engine: sessions on disk inside the process, on [redb].
//!
//! `sessiond serve` with no Redis configured serves from this store. Every write that the API
//! acknowledges is committed with fsync first, so a session acknowledged before a `kill -9` is
//! there after the restart. Touches (activity records) are the exception: they are committed
//! without fsync and made durable by the next durable commit or by the flusher within
//! [`EmbeddedOptions::flush_interval`]; losing one only makes `lastActivity` slightly older.
//!
//! # Layout
//!
//! - [`tables`](crate::tables): the table definitions and the record encoding (the on-disk
//!   format; `docs/design.md` describes it).
//! - [`ops`](crate::ops): each store operation as one redb transaction.
//! - [`outbox`](crate::outbox): each change's event and durable state, in the change's own
//!   transaction, for the durable tier (only when it is configured).
//! - [`tombstones`](crate::tombstones): revocations of the last moments, so a read-through's
//!   write-back ([`SessionStore::restore`]) never brings back a session one ended.
//! - [`background`](crate::background): the touch flusher, owned by a guard that stops it on
//!   close or drop. (Expired sessions are reclaimed through `reclaim_expired`, called by the
//!   service's sweeper so that each one is reported as an event.)
//! - [`release`](crate::release): dropping the store waits until the database file is closed.
//!
//! redb is synchronous. Writes, scans and reclaiming run on tokio's blocking pool so the
//! async runtime never waits on disk; a validation's read runs inline, because a redb read
//! transaction never waits for the writer and reads cached pages.
//!
//! [redb]: https://docs.rs/redb

mod background;
mod ops;
mod outbox;
mod release;
mod tables;
mod tombstones;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sessiond_core::tier::{OutboxBacklog, OutboxEntry, Position};
use sessiond_core::{
    CreateOutcome, Demoted, ExpiredSession, Origin, RotateOutcome, SecretHash, SessionId,
    SessionLimit, SessionRecord, SessionStore, StoreError, Timestamp, UpdateOutcome, UserId,
};

use crate::background::BackgroundTasks;
use crate::outbox::{Cause, OutboxState};

/// The file inside the data directory that holds the database.
pub const DATABASE_FILE: &str = "sessions.redb";

/// Tuning of the embedded engine. (Expired sessions are reclaimed by the service's sweeper,
/// `Sessions::sweep`, through [`SessionStore::reclaim_expired`], so that each one is reported.)
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedOptions {
    /// Longest time a touch may stay without fsync.
    pub flush_interval: Duration,
    /// Keep an outbox of at most this many entries for the durable tier (`None`: keep none,
    /// the default without a tier).
    pub outbox: Option<u64>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            flush_interval: Duration::from_secs(1),
            outbox: None,
        }
    }
}

/// Opening the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened (locked by another process, corrupt, unreadable).
    #[error("cannot open session database {path}")]
    Database {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: redb::Error,
    },
}

/// State shared by the store handle and its background tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The open database. redb serialises writers itself; readers never block.
    pub(crate) db: redb::Database,
    /// Set by [`SessionStore::close`]; later operations fail as unavailable.
    pub(crate) closed: AtomicBool,
    /// Whether a touch has been committed without fsync since the last durable commit.
    pub(crate) unflushed: AtomicBool,
    /// Durable writes share fsyncs (see [`ops::GroupCommit`]).
    pub(crate) group: ops::GroupCommit,
    /// The outbox's settings and last position.
    pub(crate) outbox: OutboxState,
    /// With the outbox: revocations of the last moments (see [`tombstones`]).
    pub(crate) tombstones: std::sync::Mutex<tombstones::Tombstones>,
    /// Fires once the database above has been dropped. Declared after it, so dropped after
    /// it (see [`release`]).
    _released: release::ReleaseSignal,
}

/// The embedded session store.
///
/// Dropping it stops the background tasks and returns only once the database file is closed,
/// so the directory can be opened again at once.
#[derive(Debug)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    path: PathBuf,
    /// The touch flusher; stopped by [`SessionStore::close`] or on drop.
    background: BackgroundTasks,
    /// Declared last, so dropped after `shared`: waits for every other owner of the database
    /// (work already on the blocking pool) to let go of it.
    _release: release::ReleaseWait,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // No new work starts; what is in flight finishes and drops its handle, then the
        // fields drop in order and `_release` waits for the last handle.
        self.shared.closed.store(true, Ordering::Release);
        self.background.stop();
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `dir`. Must be called inside a tokio runtime, which
    /// runs the touch flusher.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self, OpenError> {
        // Owner-only: the directory holds every session's data (and, unless keys are
        // configured, the generated API key). An existing directory keeps its mode.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(|source| OpenError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        let path = dir.join(DATABASE_FILE);
        let db = tables::open(&path).map_err(|source| OpenError::Database {
            path: path.clone(),
            source,
        })?;
        let outbox = match options.outbox {
            Some(max) => OutboxState::on(
                max,
                Position(ops::outbox_last(&db).map_err(|source| OpenError::Database {
                    path: path.clone(),
                    source,
                })?),
            ),
            None => OutboxState::off(),
        };
        let (signal, wait) = release::pair();
        let shared = Arc::new(Shared {
            db,
            closed: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            group: ops::GroupCommit::default(),
            outbox,
            tombstones: std::sync::Mutex::default(),
            _released: signal,
        });
        let background = BackgroundTasks::start(&shared, &options);
        Ok(EmbeddedStore {
            shared,
            path,
            background,
            _release: wait,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the blocking pool against the open database.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        if shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::unavailable("the embedded store is closed"));
        }
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(StoreError::internal)?
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn create(
        &self,
        record: &SessionRecord,
        replaces: Option<&SessionId>,
        limit: SessionLimit,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<CreateOutcome, StoreError> {
        let (record, replaces, cause) = (record.clone(), replaces.cloned(), Cause::of(origin));
        self.blocking(move |s| ops::create(s, &record, replaces, limit, now, cause))
            .await
    }

    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        // The hot path. A read transaction never waits for the writer (redb is MVCC) and reads
        // pages redb keeps cached, so it runs here, without the blocking pool's thread hop.
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::unavailable("the embedded store is closed"));
        }
        ops::load(&self.shared, id, now)
    }

    async fn touch(
        &self,
        id: &SessionId,
        at: Timestamp,
        _origin: Origin<'_>,
    ) -> Result<bool, StoreError> {
        let id = id.clone();
        self.blocking(move |s| ops::touch(s, &id, at)).await
    }

    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Value>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        let (id, data, cause) = (id.clone(), user_data.clone(), Cause::of(origin));
        self.blocking(move |s| ops::update_data(s, &id, expected_version, data, now, cause))
            .await
    }

    async fn rotate(
        &self,
        id: &SessionId,
        expected: &SecretHash,
        replacement: &SecretHash,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<RotateOutcome, StoreError> {
        let (id, expected, replacement) = (id.clone(), expected.clone(), replacement.clone());
        let cause = Cause::of(origin);
        self.blocking(move |s| ops::rotate(s, &id, &expected, replacement, now, cause))
            .await
    }

    async fn delete(
        &self,
        id: &SessionId,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<Option<UserId>, StoreError> {
        let (id, cause) = (id.clone(), Cause::of(origin));
        self.blocking(move |s| ops::delete(s, &id, now, cause))
            .await
    }

    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let user = user.clone();
        self.blocking(move |s| ops::list_user(s, &user, now)).await
    }

    async fn delete_user(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<u64, StoreError> {
        let (user, except, cause) = (user.clone(), except.cloned(), Cause::of(origin));
        self.blocking(move |s| ops::delete_user(s, &user, except.as_ref(), now, cause))
            .await
    }

    async fn delete_all(&self, now: Timestamp, origin: Origin<'_>) -> Result<u64, StoreError> {
        let cause = Cause::of(origin);
        self.blocking(move |s| ops::delete_all(s, now, &cause))
            .await
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        self.blocking(ops::count).await.map(Some)
    }

    async fn restore(&self, record: &SessionRecord, now: Timestamp) -> Result<bool, StoreError> {
        // Tombstones are kept only with the outbox (the durable tier): without them a
        // write-back could race a revocation.
        if !self.shared.outbox.enabled() || !record.is_live(now) {
            return Ok(false);
        }
        let record = record.clone();
        self.blocking(move |s| ops::restore(s, record, now)).await
    }

    async fn demote(&self, record: &SessionRecord) -> Result<Demoted, StoreError> {
        if !self.shared.outbox.enabled() {
            return Ok(Demoted::Changed);
        }
        let record = record.clone();
        self.blocking(move |s| ops::demote(s, &record)).await
    }

    async fn outbox_read(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        if !self.shared.outbox.enabled() {
            return Ok(Vec::new());
        }
        self.blocking(move |s| ops::outbox_read(s, max)).await
    }

    async fn outbox_remove(&self, shipped: &[OutboxEntry]) -> Result<(), StoreError> {
        let positions: Vec<u64> = shipped.iter().map(|e| e.position.0).collect();
        self.blocking(move |s| ops::outbox_remove(s, &positions))
            .await
    }

    async fn outbox_backlog(&self) -> Result<Option<OutboxBacklog>, StoreError> {
        if !self.shared.outbox.enabled() {
            return Ok(None);
        }
        self.blocking(ops::outbox_backlog).await.map(Some)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(ops::ping).await
    }

    async fn reclaim_expired(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<ExpiredSession>, StoreError> {
        self.blocking(move |s| ops::reclaim_expired(s, now, max))
            .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Refuse new work and stop the flusher first, so nothing is written after the final
        // flush.
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.background.stop();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || ops::flush(&shared))
            .await
            .map_err(StoreError::internal)?
    }
}
