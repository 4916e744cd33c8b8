//! Stores that wrap a store: [`StoreWrapper`] and [`Wrapped`].
//!
//! A cache in front, a durable tier behind, instrumentation around: each is a store over a
//! store (the store stack, built once at start-up). Forwarding every [`SessionStore`] method
//! by hand invites the bug where one is forgotten and silently falls back to its default (a
//! wrapper without `load_identity` would turn every gateway check into a full `load`). So a
//! wrapper implements [`StoreWrapper`] instead: it names its inner store and overrides only
//! the operations it changes; every other one goes to the inner store's own implementation.
//! [`Wrapped`] turns it into a [`SessionStore`]; its impl is the one place that lists every
//! method, and the compiler keeps it complete.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use sessiond_core::wrap::{StoreWrapper, Wrapped};
//! use sessiond_core::{SessionId, SessionRecord, SessionStore, StoreError, Timestamp};
//!
//! /// Counts full loads; everything else, `load_identity` included, passes through.
//! #[derive(Debug)]
//! struct CountLoads {
//!     inner: Arc<dyn SessionStore>,
//!     loads: AtomicU64,
//! }
//!
//! #[async_trait::async_trait]
//! impl StoreWrapper for CountLoads {
//!     fn inner(&self) -> &dyn SessionStore {
//!         &*self.inner
//!     }
//!
//!     async fn load(
//!         &self,
//!         id: &SessionId,
//!         now: Timestamp,
//!     ) -> Result<Option<SessionRecord>, StoreError> {
//!         self.loads.fetch_add(1, Ordering::Relaxed);
//!         self.inner.load(id, now).await
//!     }
//! }
//!
//! fn counted(inner: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
//!     Arc::new(Wrapped(CountLoads { inner, loads: AtomicU64::new(0) }))
//! }
//! ```

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::event::Origin;
use crate::id::{SessionId, UserId};
use crate::policy::SessionLimit;
use crate::record::SessionRecord;
use crate::store::{
    CreateOutcome, Demoted, ExpiredSession, RotateOutcome, SessionStore, UpdateOutcome,
};
use crate::tier::{JournalMarks, OutboxBacklog, OutboxEntry};
use crate::time::Timestamp;
use crate::token::SecretHash;

/// A store over another store. Every method defaults to the inner store's; override the
/// ones the wrapper changes. The contract of each is [`SessionStore`]'s.
#[async_trait]
#[allow(missing_docs, reason = "each method is documented on SessionStore")]
pub trait StoreWrapper: Debug + Send + Sync + 'static {
    /// The store this one wraps.
    fn inner(&self) -> &dyn SessionStore;

    async fn create(
        &self,
        record: &SessionRecord,
        replaces: Option<&SessionId>,
        limit: SessionLimit,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<CreateOutcome, StoreError> {
        self.inner()
            .create(record, replaces, limit, now, origin)
            .await
    }

    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.inner().load(id, now).await
    }

    async fn load_identity(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.inner().load_identity(id, now).await
    }

    async fn touch(
        &self,
        id: &SessionId,
        at: Timestamp,
        origin: Origin<'_>,
    ) -> Result<bool, StoreError> {
        self.inner().touch(id, at, origin).await
    }

    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Value>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        self.inner()
            .update_data(id, expected_version, user_data, now, origin)
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
        self.inner()
            .rotate(id, expected, replacement, now, origin)
            .await
    }

    async fn delete(
        &self,
        id: &SessionId,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<Option<UserId>, StoreError> {
        self.inner().delete(id, now, origin).await
    }

    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.inner().list_user(user, now).await
    }

    async fn delete_user(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<u64, StoreError> {
        self.inner().delete_user(user, except, now, origin).await
    }

    async fn delete_all(&self, now: Timestamp, origin: Origin<'_>) -> Result<u64, StoreError> {
        self.inner().delete_all(now, origin).await
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        self.inner().count().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner().ping().await
    }

    async fn reclaim_expired(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<ExpiredSession>, StoreError> {
        self.inner().reclaim_expired(now, max).await
    }

    async fn restore(&self, record: &SessionRecord, now: Timestamp) -> Result<bool, StoreError> {
        self.inner().restore(record, now).await
    }

    async fn demote(&self, record: &SessionRecord) -> Result<Demoted, StoreError> {
        self.inner().demote(record).await
    }

    async fn outbox_read(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner().outbox_read(max).await
    }

    async fn outbox_turn(&self, hold: Duration) -> Result<bool, StoreError> {
        self.inner().outbox_turn(hold).await
    }

    async fn outbox_remove(&self, shipped: &[OutboxEntry]) -> Result<(), StoreError> {
        self.inner().outbox_remove(shipped).await
    }

    async fn outbox_backlog(&self) -> Result<Option<OutboxBacklog>, StoreError> {
        self.inner().outbox_backlog().await
    }

    async fn journal_marks(
        &self,
        mark: Option<(&str, bool)>,
    ) -> Result<Option<JournalMarks>, StoreError> {
        self.inner().journal_marks(mark).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner().close().await
    }
}

/// A [`StoreWrapper`] as a [`SessionStore`].
#[derive(Debug)]
pub struct Wrapped<W>(pub W);

#[async_trait]
impl<W: StoreWrapper> SessionStore for Wrapped<W> {
    async fn create(
        &self,
        record: &SessionRecord,
        replaces: Option<&SessionId>,
        limit: SessionLimit,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<CreateOutcome, StoreError> {
        self.0.create(record, replaces, limit, now, origin).await
    }

    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.0.load(id, now).await
    }

    async fn load_identity(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.0.load_identity(id, now).await
    }

    async fn touch(
        &self,
        id: &SessionId,
        at: Timestamp,
        origin: Origin<'_>,
    ) -> Result<bool, StoreError> {
        self.0.touch(id, at, origin).await
    }

    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Value>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        self.0
            .update_data(id, expected_version, user_data, now, origin)
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
        self.0.rotate(id, expected, replacement, now, origin).await
    }

    async fn delete(
        &self,
        id: &SessionId,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<Option<UserId>, StoreError> {
        self.0.delete(id, now, origin).await
    }

    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.0.list_user(user, now).await
    }

    async fn delete_user(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<u64, StoreError> {
        self.0.delete_user(user, except, now, origin).await
    }

    async fn delete_all(&self, now: Timestamp, origin: Origin<'_>) -> Result<u64, StoreError> {
        self.0.delete_all(now, origin).await
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        self.0.count().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn reclaim_expired(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<ExpiredSession>, StoreError> {
        self.0.reclaim_expired(now, max).await
    }

    async fn restore(&self, record: &SessionRecord, now: Timestamp) -> Result<bool, StoreError> {
        self.0.restore(record, now).await
    }

    async fn demote(&self, record: &SessionRecord) -> Result<Demoted, StoreError> {
        self.0.demote(record).await
    }

    async fn outbox_read(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.0.outbox_read(max).await
    }

    async fn outbox_turn(&self, hold: Duration) -> Result<bool, StoreError> {
        self.0.outbox_turn(hold).await
    }

    async fn outbox_remove(&self, shipped: &[OutboxEntry]) -> Result<(), StoreError> {
        self.0.outbox_remove(shipped).await
    }

    async fn outbox_backlog(&self) -> Result<Option<OutboxBacklog>, StoreError> {
        self.0.outbox_backlog().await
    }

    async fn journal_marks(
        &self,
        mark: Option<(&str, bool)>,
    ) -> Result<Option<JournalMarks>, StoreError> {
        self.0.journal_marks(mark).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.0.close().await
    }
}
