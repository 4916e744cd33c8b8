//! The storage contract every engine implements.
//!
//! Engines are deliberately simple: they keep records, the per-user index and expiry, and make
//! each operation atomic. Session logic (token checks, when to touch, merge patch) lives in
//! [`crate::Sessions`] above them, so every engine behaves the same. Every engine runs the one
//! conformance suite in `sessiond-testkit`.

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::event::Origin;
use crate::id::{SessionId, UserId};
use crate::policy::SessionLimit;
use crate::record::SessionRecord;
use crate::tier::{JournalMarks, OutboxBacklog, OutboxEntry};
use crate::time::Timestamp;
use crate::token::SecretHash;

/// Result of [`SessionStore::create`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum CreateOutcome {
    /// Stored, together with its entry in the user's index.
    Created {
        /// Sessions of the same user ended to make room under the cap.
        evicted: Vec<SessionId>,
        /// Whether the session named as replaced was live, the same user's, and ended in the
        /// same operation.
        replaced: bool,
    },
    /// A record with this id already exists; nothing was written.
    IdTaken,
    /// The user is at the cap and the limit says reject; nothing was written.
    AtCapacity,
}

/// Result of [`SessionStore::update_data`].
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum UpdateOutcome {
    /// Written; the record as it now is.
    Updated(SessionRecord),
    /// The stored version differs from the expected one; nothing was written.
    VersionMismatch {
        /// The stored version.
        current: u64,
    },
    /// No live session with this id.
    NotFound,
}

/// Result of [`SessionStore::rotate`].
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum RotateOutcome {
    /// The secret hash was replaced; the record as it now is.
    Rotated(SessionRecord),
    /// The stored hash is not the expected one (another rotation won); nothing was written.
    Stale,
    /// No live session with this id.
    NotFound,
}

/// What [`SessionStore::demote`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demoted {
    /// Removed from the hot store.
    Removed,
    /// Not in the hot store (already gone).
    Absent,
    /// Kept: the hot store's record differs from the tier's (or the engine does not demote).
    Changed,
}

/// A session whose expired record [`SessionStore::reclaim_expired`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredSession {
    /// The session.
    pub id: SessionId,
    /// Its user.
    pub user_id: UserId,
}

/// A session storage engine.
///
/// Every operation that changes sessions takes the [`Origin`] of the request that asked for
/// it: an engine that keeps an outbox for the durable tier records the change's event (who,
/// from where) in the same atomic write as the change (`docs/design.md` §10); one that keeps
/// none ignores it.
///
/// Callers pass `now` to every operation that depends on time; engines never consult a clock
/// for expiry decisions, so all engines agree on when a session ends. Every read returns only
/// records that are live at `now` ([`SessionRecord::is_live`]); every write to a session that
/// is not live behaves as if it did not exist. No operation may bring back a deleted session.
#[async_trait]
pub trait SessionStore: Debug + Send + Sync + 'static {
    /// Stores a new record and indexes it under its user, atomically, enforcing `limit` over
    /// the user's live sessions. Must not overwrite an existing record with the same id. The
    /// record's id was issued for its user (`Token::generate`), so it is in the user's shard.
    ///
    /// With `replaces`, the session a login replaces is ended in the same atomic operation if
    /// it is live and the same user's (and left alone otherwise): it does not count against
    /// the cap, and it is never ended when the create is refused, so a login either ends its
    /// predecessor and stands, or changes nothing. Its id is in the user's shard (a caller
    /// passes no id of another shard: it cannot be the same user's).
    async fn create(
        &self,
        record: &SessionRecord,
        replaces: Option<&SessionId>,
        limit: SessionLimit,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<CreateOutcome, StoreError>;

    /// The live record with this id, if any.
    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError>;

    /// Like [`load`](Self::load), for a caller that needs the session's identity, times and
    /// `metadata` but not its `userData` (the gateway's check, on every request): an engine
    /// may leave `user_data` empty instead of decoding it. By default it is `load`.
    async fn load_identity(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.load(id, now).await
    }

    /// Records activity at `at` (never moving it backwards) and extends the engine's own expiry
    /// to match. Returns `false`, writing nothing, when no live session has this id.
    async fn touch(
        &self,
        id: &SessionId,
        at: Timestamp,
        origin: Origin<'_>,
    ) -> Result<bool, StoreError>;

    /// Compare-and-set of `user_data`: writes it and increments `version` only if the stored
    /// version is `expected_version`.
    async fn update_data(
        &self,
        id: &SessionId,
        expected_version: u64,
        user_data: &Map<String, Value>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<UpdateOutcome, StoreError>;

    /// Compare-and-set of the secret hash: replaces `expected` by `replacement`, so of two
    /// racing rotations exactly one succeeds and the old token is dead once this returns.
    async fn rotate(
        &self,
        id: &SessionId,
        expected: &SecretHash,
        replacement: &SecretHash,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<RotateOutcome, StoreError>;

    /// Deletes a session and its index entry. Returns the user of the session when one live at
    /// `now` was removed (an expired record is removed too, but reported as absent).
    async fn delete(
        &self,
        id: &SessionId,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<Option<UserId>, StoreError>;

    /// The user's live sessions, in no particular order. Index entries of expired or missing
    /// sessions met on the way may be pruned.
    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Deletes every session of the user but `except`, and returns how many live sessions were
    /// removed. Sessions created after the call started may survive; none created before it.
    async fn delete_user(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        now: Timestamp,
        origin: Origin<'_>,
    ) -> Result<u64, StoreError>;

    /// Deletes every session of every user (the operator's emergency: a leaked signing key, a
    /// compromised store) and returns how many records were removed, expired ones not yet
    /// reclaimed included. `now` is the time of its event: every session created at or
    /// before it ends. Every session that existed when the call started is gone when it
    /// returns, on every read path; sessions created meanwhile may survive.
    async fn delete_all(&self, now: Timestamp, origin: Origin<'_>) -> Result<u64, StoreError>;

    /// Number of stored sessions, including expired ones not yet reclaimed (for metrics), or
    /// `None` where the engine cannot count without scanning (Redis).
    async fn count(&self) -> Result<Option<u64>, StoreError>;

    /// Checks that the store answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Removes up to `max` records of sessions expired at `now`, with their index entries, and
    /// says which. [`Sessions::sweep`](crate::Sessions::sweep) calls it until fewer than `max`
    /// come back. By default nothing is reclaimed: for an engine whose records expire on their
    /// own (Redis keys carry TTLs).
    async fn reclaim_expired(
        &self,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<ExpiredSession>, StoreError> {
        let _ = (now, max);
        Ok(Vec::new())
    }

    /// Writes back a session read from the durable tier (read-through, `docs/design.md` §10),
    /// so its next validation is one hot read again. Writes nothing and returns `false` when
    /// the hot store has a record with this id, or when a revocation made moments ago left a
    /// tombstone of the session or of its user (a revoke-all): a read-through racing a
    /// revocation never brings the session back. The caller passes only a record live at
    /// `now`. By default nothing is written: an engine that keeps no tombstones must not take
    /// sessions back.
    async fn restore(&self, record: &SessionRecord, now: Timestamp) -> Result<bool, StoreError> {
        let _ = (record, now);
        Ok(false)
    }

    /// Removes a session from the hot store because the durable tier holds it and it is
    /// idle (the demoter, `docs/design.md` §10), only if the stored record is still the one
    /// the tier holds: same last activity, version and secret hash. A change the tier does not
    /// have yet keeps the session hot. By default nothing is removed.
    async fn demote(&self, record: &SessionRecord) -> Result<Demoted, StoreError> {
        let _ = record;
        Ok(Demoted::Changed)
    }

    /// The oldest entries of the store's outbox (`docs/design.md` §10), at most `max`, in
    /// position order per session. Empty for a store that keeps no outbox (the default).
    async fn outbox_read(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let _ = max;
        Ok(Vec::new())
    }

    /// Whether this process is the one to ship the outbox now, holding that turn for `hold`
    /// unless it asks again before then. A store whose outbox several processes share as one
    /// queue (Redis standalone and Sentinel: one stream) gives the turn to one process at a
    /// time, so the entries are not shipped once per process; when the holder stops asking
    /// (it died), another gets the turn once `hold` has passed. Shipping out of turn is never
    /// wrong (shipments are idempotent): a shipper that must empty the outbox now (a
    /// revocation waiting, a shutdown) ships whatever this says. By default always `true` (one
    /// process per store, or each process reading what it wrote).
    async fn outbox_turn(&self, hold: Duration) -> Result<bool, StoreError> {
        let _ = hold;
        Ok(true)
    }

    /// Removes entries the durable tier has committed: `shipped` is what
    /// [`outbox_read`](Self::outbox_read) returned, or its oldest part (a store whose outbox
    /// is one queue removes up to the newest of them). Removing one already removed is no
    /// error (two shippers may race).
    async fn outbox_remove(&self, shipped: &[OutboxEntry]) -> Result<(), StoreError> {
        let _ = shipped;
        Ok(())
    }

    /// The journal marks of a hot store shared by several processes (`docs/design.md` §10,
    /// "other processes' journals"): the store's epoch (a random value that changes when the
    /// store loses its data) and how many processes have marked their journal as holding
    /// revocations the durable tier does not have. With `mark`, first records this process's
    /// journal (`instance`) as holding some (`true`) or none (`false`), creating the epoch if
    /// the store has none. `None` for a store only one process uses (the default: the embedded
    /// store), where the process's own journal is the whole answer.
    async fn journal_marks(
        &self,
        mark: Option<(&str, bool)>,
    ) -> Result<Option<JournalMarks>, StoreError> {
        let _ = mark;
        Ok(None)
    }

    /// What waits in the outbox, or `None` for a store that keeps none. An engine whose
    /// outbox is spread over many keys (Redis) may answer from its own running count, kept
    /// exact for what this process wrote and removed and refreshed from the store now and then.
    async fn outbox_backlog(&self) -> Result<Option<OutboxBacklog>, StoreError> {
        Ok(None)
    }

    /// Flushes and releases resources at shutdown. Later calls may fail with
    /// [`StoreError::Unavailable`].
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
