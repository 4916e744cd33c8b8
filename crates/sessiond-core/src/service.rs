//! [`Sessions`]: session semantics on top of any [`SessionStore`].
//!
//! Token checks, the touch interval, expiry, merge patch with compare-and-set, rotation and
//! revocation are decided here, once, so the embedded engine and Redis cannot drift apart.
//! Every change is reported here too, as a [`SessionEvent`] to the configured [`EventSink`],
//! whichever caller (HTTP, the CLI, the sweeper) asked for it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::event::{Actor, EventKind, EventSink, InvalidReason, NoEvents, Origin, SessionEvent};
use crate::id::{SessionId, UserId};
use crate::json::{DataError, check_object, merge_patch};
use crate::policy::Policy;
use crate::record::SessionRecord;
use crate::store::{CreateOutcome, RotateOutcome, SessionStore, UpdateOutcome};
use crate::time::{Clock, Timestamp};
use crate::token::{RandomnessUnavailable, Token};

/// How many fresh ids a create tries before giving up. With 84 random bits per id a single
/// collision is already astronomically unlikely; a second one means the random source is
/// broken.
const CREATE_ATTEMPTS: usize = 3;
/// How often an unconditional `PATCH` retries its compare-and-set under contention.
const PATCH_ATTEMPTS: usize = 32;
/// Most expired sessions reclaimed per store call of a sweep.
const SWEEP_BATCH: usize = 1_000;

/// Why a session operation did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The token is unknown, expired, revoked or rotated away. Deliberately one case: the
    /// answer must not tell an attacker which.
    #[error("no live session for this credential")]
    Unauthenticated,
    /// No live session with this id.
    #[error("no live session with this id")]
    NotFound,
    /// `If-Match` names a version that is no longer current.
    #[error("session version is {current}, not the expected one")]
    PreconditionFailed {
        /// The version now stored.
        current: u64,
    },
    /// The user is at the session cap and the policy rejects new sessions.
    #[error("the user already has the maximum number of sessions")]
    AtCapacity,
    /// A document exceeds the limits or has the wrong shape.
    #[error(transparent)]
    InvalidData(#[from] DataError),
    /// A token holder tried to write a part of `userData` only the backend may write. The
    /// key it tried is not kept: it is client text, and error details repeat none (S17).
    #[error("the session's holder may write only these userData keys: {}", allowed.join(", "))]
    NotWritable {
        /// The keys a holder may write ([`Policy::holder_writable`]).
        allowed: Vec<String>,
    },
    /// A concurrent writer kept winning; the client may retry.
    #[error("the session changed concurrently too often; retry")]
    Contention,
    /// No credential could be generated.
    #[error(transparent)]
    Randomness(#[from] RandomnessUnavailable),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a backend asks for when a user logs in.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// The authenticated user.
    pub user_id: UserId,
    /// Initial application data.
    pub user_data: Map<String, Value>,
    /// Login context (`ipAddress`, `userAgent`, `loginMethod`, ...).
    pub metadata: Map<String, Value>,
    /// Requested idle timeout; clamped by the policy.
    pub ttl: Option<Duration>,
    /// The session this login replaces (`replacesSessionId`): ended in the same store
    /// operation that writes the new one, if it is live and the same user's. Another user's session id is ignored, so a backend bug
    /// cannot let one user log another out.
    pub replaces: Option<SessionId>,
}

/// A session just created or rotated: the only moment its token is known.
#[derive(Debug)]
pub struct Issued {
    /// The credential, to hand to the holder once.
    pub token: Token,
    /// The stored record.
    pub record: SessionRecord,
    /// Sessions ended by the per-user cap to make room (create only).
    pub evicted: Vec<SessionId>,
    /// Whether the session the create replaces (`replacesSessionId`) was ended with it.
    pub replaced: bool,
}

/// Session logic over a store.
#[derive(Debug, Clone)]
pub struct Sessions {
    store: Arc<dyn SessionStore>,
    policy: Arc<Policy>,
    clock: Arc<dyn Clock>,
    events: Arc<dyn EventSink>,
}

impl Sessions {
    /// Session logic over `store` with `policy`, reading time from `clock`, reporting to no
    /// one until [`with_events`](Self::with_events).
    pub fn new(store: Arc<dyn SessionStore>, policy: Policy, clock: Arc<dyn Clock>) -> Self {
        Sessions {
            store,
            policy: Arc::new(policy),
            clock,
            events: Arc::new(NoEvents),
        }
    }

    /// Reports every event to `sink` (a [`Fanout`](crate::event::Fanout) for several).
    #[must_use]
    pub fn with_events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = sink;
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The rules in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The clock every decision reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Reports an event the caller detected itself (the HTTP edge: a malformed token, a
    /// binding mismatch), stamped with the current time.
    pub fn report(&self, kind: EventKind<'_>, session: Option<&SessionRecord>, origin: Origin<'_>) {
        self.emit(
            kind,
            self.clock.now(),
            session.map(|r| &r.id),
            session.map(|r| &r.user_id),
            origin,
        );
    }

    fn emit(
        &self,
        kind: EventKind<'_>,
        at: Timestamp,
        session_id: Option<&SessionId>,
        user_id: Option<&UserId>,
        origin: Origin<'_>,
    ) {
        self.events.emit(&SessionEvent {
            kind,
            at,
            session_id,
            user_id,
            actor: origin.actor,
            client: origin.client,
        });
    }

    /// Creates a session for a user whose credentials the backend has verified. Every call
    /// issues a new token (a login never adopts an existing one). With
    /// [`NewSession::replaces`], the replaced session (if it is live and the same user's) is
    /// ended in the same store operation that writes the new one: a login either ends its
    /// predecessor and stands, or changes nothing.
    pub async fn create(
        &self,
        new: NewSession,
        origin: Origin<'_>,
    ) -> Result<Issued, SessionError> {
        let limits = &self.policy.data;
        check_object(
            "userData",
            &new.user_data,
            limits.max_user_data_bytes,
            limits,
        )?;
        check_object("metadata", &new.metadata, limits.max_metadata_bytes, limits)?;
        let now = self.clock.now();
        let idle = self.policy.idle_timeout_for(new.ttl);
        let replaces = new.replaces;
        let mut token = Token::generate(&new.user_id)?;
        let mut record = SessionRecord {
            id: token.session_id().clone(),
            user_id: new.user_id,
            secret_hash: token.secret_hash(),
            created_at: now,
            last_activity: now,
            idle_timeout_ms: u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
            absolute_expires_at: now.saturating_add(self.policy.absolute_timeout),
            version: 1,
            user_data: new.user_data,
            metadata: new.metadata,
        };
        // A session of another shard cannot be this user's: it is left alone.
        let replaces = replaces.filter(|old| old.shard() == record.user_id.shard());
        for attempt in 0..CREATE_ATTEMPTS {
            if attempt > 0 {
                token = Token::generate(&record.user_id)?;
                record.id = token.session_id().clone();
                record.secret_hash = token.secret_hash();
            }
            match self
                .store
                .create(&record, replaces.as_ref(), self.policy.limit, now, origin)
                .await?
            {
                CreateOutcome::Created { evicted, replaced } => {
                    self.emit(
                        EventKind::Created,
                        now,
                        Some(&record.id),
                        Some(&record.user_id),
                        origin,
                    );
                    for old in &evicted {
                        self.emit(
                            EventKind::Evicted { by: &record.id },
                            now,
                            Some(old),
                            Some(&record.user_id),
                            origin,
                        );
                    }
                    if let Some(old) = replaces.as_ref().filter(|_| replaced) {
                        self.emit(
                            EventKind::Replaced { by: &record.id },
                            now,
                            Some(old),
                            Some(&record.user_id),
                            origin,
                        );
                    }
                    return Ok(Issued {
                        token,
                        record,
                        evicted,
                        replaced: replaced && replaces.is_some(),
                    });
                }
                CreateOutcome::AtCapacity => return Err(SessionError::AtCapacity),
                CreateOutcome::IdTaken => continue,
            }
        }
        Err(StoreError::internal("fresh session ids collided repeatedly").into())
    }

    /// Validates a token: the live session it belongs to, with activity recorded if the touch
    /// interval has passed. One store read, plus one write at most once per touch interval.
    /// A refusal is reported as [`EventKind::InvalidToken`].
    pub async fn authenticate(
        &self,
        token: &Token,
        origin: Origin<'_>,
    ) -> Result<SessionRecord, SessionError> {
        self.authenticate_as(token, true, origin).await
    }

    /// [`authenticate`](Self::authenticate) for the gateway's check: the record's `user_data`
    /// may be left empty (see [`SessionStore::load_identity`]); everything else is the same.
    pub async fn authenticate_identity(
        &self,
        token: &Token,
        origin: Origin<'_>,
    ) -> Result<SessionRecord, SessionError> {
        self.authenticate_as(token, false, origin).await
    }

    async fn authenticate_as(
        &self,
        token: &Token,
        documents: bool,
        origin: Origin<'_>,
    ) -> Result<SessionRecord, SessionError> {
        let result = self.check_token(token, documents, origin).await;
        if let Err(SessionError::Unauthenticated) = &result {
            self.emit(
                EventKind::InvalidToken {
                    reason: InvalidReason::Unknown,
                },
                self.clock.now(),
                Some(token.session_id()),
                None,
                origin,
            );
        }
        result
    }

    async fn check_token(
        &self,
        token: &Token,
        documents: bool,
        origin: Origin<'_>,
    ) -> Result<SessionRecord, SessionError> {
        let now = self.clock.now();
        let id = token.session_id();
        let loaded = if documents {
            self.store.load(id, now).await?
        } else {
            self.store.load_identity(id, now).await?
        };
        let record = loaded.ok_or(SessionError::Unauthenticated)?;
        if !record.secret_hash.verify(token) {
            return Err(SessionError::Unauthenticated);
        }
        let interval = self.policy.touch_interval_for(record.idle_timeout());
        if now.saturating_since(record.last_activity) >= interval {
            match self.store.touch(id, now, origin).await {
                Ok(true) => return Ok(record.touched(now)),
                Ok(false) => return Err(SessionError::Unauthenticated),
                // The session was read live; recording activity is best effort, so a store
                // that can be read but not written (a primary failing over) still validates.
                Err(e) if e.is_unavailable() => return Ok(record),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(record)
    }

    /// Reads a live session by id without recording activity (trusted backends).
    pub async fn get(&self, id: &SessionId) -> Result<SessionRecord, SessionError> {
        self.store
            .load(id, self.clock.now())
            .await?
            .ok_or(SessionError::NotFound)
    }

    /// Applies an RFC 7396 merge patch to `userData`, as compare-and-set on `version`.
    ///
    /// With `if_match`, the patch applies only to one of those versions (else
    /// [`SessionError::PreconditionFailed`]; an empty list matches nothing). Without it, the
    /// read-merge-write loop retries until it wins, so concurrent patches never lose each
    /// other's changes. A patch that changes nothing (or no patch at all, `None`) leaves
    /// `version` as it is, and is still refused when `if_match` is stale.
    ///
    /// A token holder (`origin`'s actor) may only touch the top-level keys of
    /// [`Policy::holder_writable`]; a patch of any other key is refused whole
    /// ([`SessionError::NotWritable`]) before anything is read or written.
    pub async fn patch(
        &self,
        id: &SessionId,
        patch: Option<&Value>,
        if_match: Option<&[u64]>,
        origin: Origin<'_>,
    ) -> Result<SessionRecord, SessionError> {
        if origin.actor == Actor::Holder
            && let Some(Value::Object(members)) = patch
            && members.keys().any(|k| !self.policy.holder_may_write(k))
        {
            return Err(self.not_writable());
        }
        if origin.actor == Actor::Holder
            && matches!(patch, Some(v) if !v.is_object())
            && !self.policy.holder_may_write("*")
        {
            // Replacing the whole of `userData` (a non-object patch) writes every key.
            return Err(self.not_writable());
        }
        // A holder names its session by its token: a session that ended after the token was
        // checked (a revoke-all racing the patch) leaves the holder unauthenticated, as on
        // every holder route, where a backend naming an id learns that the id is gone.
        let gone = if origin.actor == Actor::Holder {
            SessionError::Unauthenticated
        } else {
            SessionError::NotFound
        };
        let limits = &self.policy.data;
        for _ in 0..PATCH_ATTEMPTS {
            let now = self.clock.now();
            let Some(current) = self.store.load(id, now).await? else {
                return Err(gone);
            };
            if let Some(expected) = if_match
                && !expected.contains(&current.version)
            {
                return Err(SessionError::PreconditionFailed {
                    current: current.version,
                });
            }
            let Some(patch) = patch else {
                return Ok(current);
            };
            let mut merged = Value::Object(current.user_data.clone());
            merge_patch(&mut merged, patch);
            let Value::Object(user_data) = merged else {
                return Err(DataError::NotAnObject { field: "userData" }.into());
            };
            if user_data == current.user_data {
                return Ok(current);
            }
            check_object("userData", &user_data, limits.max_user_data_bytes, limits)?;
            match self
                .store
                .update_data(id, current.version, &user_data, now, origin)
                .await?
            {
                UpdateOutcome::Updated(record) => {
                    self.emit(
                        EventKind::Updated,
                        now,
                        Some(&record.id),
                        Some(&record.user_id),
                        origin,
                    );
                    return Ok(record);
                }
                UpdateOutcome::NotFound => return Err(gone),
                UpdateOutcome::VersionMismatch { current } => {
                    if if_match.is_some() {
                        return Err(SessionError::PreconditionFailed { current });
                    }
                }
            }
        }
        Err(SessionError::Contention)
    }

    fn not_writable(&self) -> SessionError {
        SessionError::NotWritable {
            allowed: self.policy.holder_writable.clone(),
        }
    }

    /// Issues a new token for the session `token` belongs to. The old token is dead once this
    /// returns; of two racing rotations with the same token, one wins and the other gets
    /// [`SessionError::Unauthenticated`].
    pub async fn rotate(&self, token: &Token, origin: Origin<'_>) -> Result<Issued, SessionError> {
        let fresh = Token::new_secret_for(token.session_id().clone())?;
        let now = self.clock.now();
        let outcome = self
            .store
            .rotate(
                token.session_id(),
                &token.secret_hash(),
                &fresh.secret_hash(),
                now,
                origin,
            )
            .await?;
        match outcome {
            RotateOutcome::Rotated(record) => {
                self.emit(
                    EventKind::Rotated,
                    now,
                    Some(&record.id),
                    Some(&record.user_id),
                    origin,
                );
                Ok(Issued {
                    token: fresh,
                    record,
                    evicted: Vec::new(),
                    replaced: false,
                })
            }
            RotateOutcome::Stale | RotateOutcome::NotFound => Err(SessionError::Unauthenticated),
        }
    }

    /// The holder ends its own session (logout). Returns whether it was still live.
    pub async fn logout(
        &self,
        session: &SessionRecord,
        origin: Origin<'_>,
    ) -> Result<bool, SessionError> {
        let now = self.clock.now();
        let ended = self.store.delete(&session.id, now, origin).await?.is_some();
        if ended {
            self.emit(
                EventKind::LoggedOut,
                now,
                Some(&session.id),
                Some(&session.user_id),
                origin,
            );
        }
        Ok(ended)
    }

    /// Ends one session (a backend or an operator). Returns whether it existed.
    pub async fn revoke(&self, id: &SessionId, origin: Origin<'_>) -> Result<bool, SessionError> {
        let now = self.clock.now();
        let Some(user) = self.store.delete(id, now, origin).await? else {
            return Ok(false);
        };
        self.emit(EventKind::Revoked, now, Some(id), Some(&user), origin);
        Ok(true)
    }

    /// A user's live sessions, newest activity first.
    pub async fn list(&self, user: &UserId) -> Result<Vec<SessionRecord>, SessionError> {
        let mut sessions = self.store.list_user(user, self.clock.now()).await?;
        sessions.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then(b.created_at.cmp(&a.created_at))
        });
        Ok(sessions)
    }

    /// Ends every session of a user except `except`. Returns how many ended.
    pub async fn revoke_user(
        &self,
        user: &UserId,
        except: Option<&SessionId>,
        origin: Origin<'_>,
    ) -> Result<u64, SessionError> {
        let now = self.clock.now();
        let count = self.store.delete_user(user, except, now, origin).await?;
        self.emit(
            EventKind::RevokedAll {
                count,
                kept: except,
            },
            now,
            None,
            Some(user),
            origin,
        );
        Ok(count)
    }

    /// Ends every session of every user: the emergency path (S12). Returns how many stored
    /// sessions were removed.
    pub async fn revoke_everyone(&self, origin: Origin<'_>) -> Result<u64, SessionError> {
        let now = self.clock.now();
        let count = self.store.delete_all(now, origin).await?;
        self.emit(
            EventKind::RevokedEveryone { count },
            now,
            None,
            None,
            origin,
        );
        Ok(count)
    }

    /// Reclaims the records of sessions expired by now, reporting each as
    /// [`EventKind::Expired`], and returns how many. Engines whose records expire on their own
    /// (Redis keys carry TTLs) reclaim nothing here. Expired sessions are never served either
    /// way; this only frees their space.
    pub async fn sweep(&self) -> Result<u64, SessionError> {
        let mut total = 0u64;
        loop {
            let now = self.clock.now();
            let reclaimed = self.store.reclaim_expired(now, SWEEP_BATCH).await?;
            for gone in &reclaimed {
                self.emit(
                    EventKind::Expired,
                    now,
                    Some(&gone.id),
                    Some(&gone.user_id),
                    Origin::SWEEPER,
                );
            }
            total += reclaimed.len() as u64;
            if reclaimed.len() < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}
