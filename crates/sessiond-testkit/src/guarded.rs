//! A store that owns whatever it runs on, so a test's Redis server or data directory lives
//! exactly as long as the store.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sessiond_core::{
    CreateOutcome, RotateOutcome, SecretHash, SessionId, SessionLimit, SessionRecord, SessionStore,
    StoreError, Timestamp, UpdateOutcome, UserId,
};

/// `store`, keeping `guard` alive until the store is dropped.
#[derive(Debug)]
pub struct Guarded<G: std::fmt::Debug + Send + Sync + 'static> {
    store: Arc<dyn SessionStore>,
    _guard: G,
}

impl<G: std::fmt::Debug + Send + Sync + 'static> Guarded<G> {
    /// Wraps `store` with `guard`, as a store.
    pub fn wrap(store: Arc<dyn SessionStore>, guard: G) -> Arc<dyn SessionStore> {
        Arc::new(Guarded {
            store,
            _guard: guard,
        })
    }
}

#[async_trait]
impl<G: std::fmt::Debug + Send + Sync + 'static> SessionStore for Guarded<G> {
    async fn create(
        &self,
        record: &SessionRecord,
        limit: SessionLimit,
        now: Timestamp,
    ) -> Result<CreateOutcome, StoreError> {
        self.store.create(record, limit, now).await
    }
    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.store.load(id, now).await
    }
    async fn touch(&self, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
        self.store.touch(id, at).await
    }
    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Value>,
        now: Timestamp,
    ) -> Result<UpdateOutcome, StoreError> {
        self.store
            .update_data(id, expected_version, user_data, now)
            .await
    }
    async fn rotate(
        &self,
        id: &SessionId,
        expected: &SecretHash,
        replacement: &SecretHash,
        now: Timestamp,
    ) -> Result<RotateOutcome, StoreError> {
        self.store.rotate(id, expected, replacement, now).await
    }
    async fn delete(&self, id: &SessionId, now: Timestamp) -> Result<bool, StoreError> {
        self.store.delete(id, now).await
    }
    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        self.store.list_user(user, now).await
    }
    async fn delete_user(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        self.store.delete_user(user, except, now).await
    }
    async fn load_identity(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.store.load_identity(id, now).await
    }
    async fn delete_all(&self) -> Result<u64, StoreError> {
        self.store.delete_all().await
    }
    async fn count(&self) -> Result<Option<u64>, StoreError> {
        self.store.count().await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
    async fn close(&self) -> Result<(), StoreError> {
        self.store.close().await
    }
}
