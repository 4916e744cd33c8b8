//! The durable tier in the store stack: read-through and write-back (`docs/design.md` §10).
//!
//! A session the hot store does not have (Redis flushed, restarted without persistence, an
//! embedded node replaced) may still be live in the durable tier. When a read misses, this
//! store asks the tier; a session live there is written back to the hot store
//! ([`SessionStore::restore`], which refuses when a revocation left a tombstone moments ago)
//! and served, so its next validation is one hot read again. A backend's patch or revocation
//! of such a session by id finds it the same way, so its event is recorded as for any other.
//!
//! The tier is asked only on a miss: the hot path (a hit) is unchanged. While the tier cannot
//! answer, or a journal (this process's or another's, `crate::trust`) holds revocations the
//! tier does not have yet, a miss is `503` rather than `401`, so a user whose session only the
//! tier holds is asked to retry, not to log in again, and no revoked session is served.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sessiond_core::tier::{DurableSession, DurableTier};
use sessiond_core::wrap::StoreWrapper;
use sessiond_core::{
    Origin, SessionId, SessionRecord, SessionStore, StoreError, Timestamp, UpdateOutcome, UserId,
};

use crate::metrics::Metrics;
use crate::trust::{Distrust, Trust};

/// Longest a read-through waits for the tier (well inside a tombstone's life, so a
/// revocation racing it is always seen by its write-back).
const READ_THROUGH_TIMEOUT: Duration = Duration::from_secs(2);

/// The hot store with the durable tier behind it.
#[derive(Debug)]
pub struct TieredStore {
    inner: Arc<dyn SessionStore>,
    tier: Arc<dyn DurableTier>,
    trust: Arc<Trust>,
    metrics: Arc<Metrics>,
}

impl TieredStore {
    /// `inner` with `tier` behind it, trusted as `trust` says.
    pub fn new(
        inner: Arc<dyn SessionStore>,
        tier: Arc<dyn DurableTier>,
        trust: Arc<Trust>,
        metrics: Arc<Metrics>,
    ) -> Self {
        TieredStore {
            inner,
            tier,
            trust,
            metrics,
        }
    }

    /// The session `id` from the tier, if it is live there, written back to the hot store.
    /// `Ok(None)` when the tier has no live session of this id, or a revocation's tombstone
    /// refused the write-back.
    async fn read_through(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        if let Err(why) = self.trust.check().await {
            // A revocation answered while PostgreSQL was down is not in the tier yet (or may
            // not be): what the tier says of a session cannot be trusted until it ships.
            self.metrics
                .tier_read_through(match why {
                    Distrust::OwnJournal => "untrusted",
                    Distrust::OtherProcesses => "untrusted_elsewhere",
                })
                .inc();
            return Err(StoreError::unavailable(
                "the durable tier does not have every revocation yet",
            ));
        }
        let durable = match tokio::time::timeout(READ_THROUGH_TIMEOUT, self.tier.load(id)).await {
            Ok(Ok(durable)) => durable,
            Ok(Err(e)) => {
                self.metrics.tier_read_through("unavailable").inc();
                return Err(e);
            }
            Err(_) => {
                self.metrics.tier_read_through("unavailable").inc();
                return Err(StoreError::Timeout);
            }
        };
        let record = match durable {
            Some(DurableSession::Live { record, .. }) if record.is_live(now) => record,
            Some(DurableSession::Live { .. } | DurableSession::Ended) => {
                self.metrics.tier_read_through("ended").inc();
                return Ok(None);
            }
            None => {
                self.metrics.tier_read_through("absent").inc();
                return Ok(None);
            }
        };
        if self.inner.restore(&record, now).await? {
            self.metrics.tier_read_through("restored").inc();
            return Ok(Some(record));
        }
        // Refused: another request wrote it back first, or a revocation left a tombstone.
        // What the hot store holds now is the answer.
        let now_hot = self.inner.load(id, now).await?;
        let outcome = if now_hot.is_some() {
            "raced"
        } else {
            "refused"
        };
        self.metrics.tier_read_through(outcome).inc();
        Ok(now_hot)
    }
}

#[async_trait]
impl StoreWrapper for TieredStore {
    fn inner(&self) -> &dyn SessionStore {
        &*self.inner
    }

    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        match self.inner.load(id, now).await? {
            Some(record) => Ok(Some(record)),
            None => self.read_through(id, now).await,
        }
    }

    async fn load_identity(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        match self.inner.load_identity(id, now).await? {
            Some(record) => Ok(Some(record)),
            None => self.read_through(id, now).await,
        }
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
            .await?;
        if !matches!(outcome, UpdateOutcome::NotFound)
            || self.read_through(id, now).await?.is_none()
        {
            return Ok(outcome);
        }
        self.inner
            .update_data(id, expected_version, user_data, now, origin)
            .await
    }

    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let mut sessions = self.inner.list_user(user, now).await?;
        if self.trust.check().await.is_err() {
            // The tier may still hold as live a session a process revoked.
            return Ok(sessions);
        }
        // Sessions only the tier holds (the hot store lost them and they were not used
        // since) are the user's too. Without the tier, the hot store's are the answer.
        match tokio::time::timeout(READ_THROUGH_TIMEOUT, self.tier.list_user(user, now)).await {
            Ok(Ok(durable)) => {
                let hot: std::collections::HashSet<SessionId> =
                    sessions.iter().map(|r| r.id.clone()).collect();
                sessions.extend(
                    durable
                        .into_iter()
                        .filter(|r| r.is_live(now) && !hot.contains(&r.id)),
                );
            }
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "listing without the durable tier's sessions: it did not answer"
            ),
            Err(_) => tracing::warn!("listing without the durable tier's sessions: it timed out"),
        }
        Ok(sessions)
    }

    async fn delete(
        &self,
        id: &SessionId,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<Option<UserId>, StoreError> {
        // A session only the tier holds is brought back first, so the revocation below ends
        // it as it ends any other: its event, its end in the outbox, its tombstone.
        if self.inner.load_identity(id, now).await?.is_none() {
            let _ = self.read_through(id, now).await?;
        }
        self.inner.delete(id, now, origin).await
    }
}
