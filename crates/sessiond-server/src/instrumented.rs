//! A store that wraps a store and times every operation into the metrics (a layer of the
//! store stack, see `stack`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sessiond_core::wrap::StoreWrapper;
use sessiond_core::{
    CreateOutcome, ExpiredSession, Origin, RotateOutcome, SecretHash, SessionId, SessionLimit,
    SessionRecord, SessionStore, StoreError, Timestamp, UpdateOutcome, UserId,
};

use crate::metrics::{Metrics, StoreLabels};

/// Times each call to the inner store under `sessiond_store_operation_duration_seconds`.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
}

impl InstrumentedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn SessionStore>, metrics: Arc<Metrics>) -> Self {
        InstrumentedStore { inner, metrics }
    }

    fn record<T>(&self, op: &'static str, start: Instant, r: &Result<T, StoreError>) {
        let outcome = if r.is_ok() { "ok" } else { "error" };
        self.metrics
            .store_duration
            .get_or_create(&StoreLabels { op, outcome })
            .observe(start.elapsed().as_secs_f64());
    }
}

macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {{
        let start = Instant::now();
        let result = $call.await;
        $self.record($op, start, &result);
        result
    }};
}

#[async_trait]
impl StoreWrapper for InstrumentedStore {
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
        timed!(
            self,
            "create",
            self.inner.create(record, replaces, limit, now, origin)
        )
    }

    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        timed!(self, "load", self.inner.load(id, now))
    }

    async fn touch(
        &self,
        id: &SessionId,
        at: Timestamp,
        origin: Origin<'_>,
    ) -> Result<bool, StoreError> {
        timed!(self, "touch", self.inner.touch(id, at, origin))
    }

    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Value>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<UpdateOutcome, StoreError> {
        timed!(
            self,
            "update_data",
            self.inner
                .update_data(id, expected_version, user_data, now, origin)
        )
    }

    async fn rotate(
        &self,
        id: &SessionId,
        expected: &SecretHash,
        replacement: &SecretHash,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<RotateOutcome, StoreError> {
        timed!(
            self,
            "rotate",
            self.inner.rotate(id, expected, replacement, now, origin)
        )
    }

    async fn delete(
        &self,
        id: &SessionId,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<Option<UserId>, StoreError> {
        timed!(self, "delete", self.inner.delete(id, now, origin))
    }

    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        timed!(self, "list_user", self.inner.list_user(user, now))
    }

    async fn delete_user(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<u64, StoreError> {
        timed!(
            self,
            "delete_user",
            self.inner.delete_user(user, except, now, origin)
        )
    }

    async fn load_identity(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        timed!(self, "load_identity", self.inner.load_identity(id, now))
    }

    async fn delete_all(&self, now: Timestamp, origin: Origin<'_>) -> Result<u64, StoreError> {
        timed!(self, "delete_all", self.inner.delete_all(now, origin))
    }

    async fn count(&self) -> Result<Option<u64>, StoreError> {
        timed!(self, "count", self.inner.count())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed!(self, "ping", self.inner.ping())
    }

    async fn reclaim_expired(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<ExpiredSession>, StoreError> {
        timed!(
            self,
            "reclaim_expired",
            self.inner.reclaim_expired(now, max)
        )
    }
}
