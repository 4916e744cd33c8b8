//! The durable tier: where every session and every lifecycle event has a home behind the hot
//! store (Redis or embedded), for the audit trail, cold sessions, and no mass logout when the
//! hot store loses its data (`docs/design.md` §10).
//!
//! The hot store records each change together with an [`OutboxEntry`] describing it, in the
//! same atomic write; a shipper hands batches of entries to a [`DurableTier`], which applies
//! them idempotently. Revocations are also handed over directly, before they answer. This
//! module is the seam: the entry, its parts, and the trait an engine (PostgreSQL first)
//! implements. It does no I/O.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::event::{
    Actor, BindingProperty, EventKind, EventName, InvalidReason, KeyId, SessionEvent,
};
use crate::id::{SessionId, UserId};
use crate::record::SessionRecord;
use crate::time::{Clock as _, Timestamp};
use crate::token::RandomnessUnavailable;

/// An event's id: 128 bits, unique, written as a UUID (version 8, RFC 9562's layout for ids
/// of an application's own making). Fixed when the event is written to the outbox, so every
/// replay of it carries the same id and is applied once.
///
/// Each process draws a random base once from the OS CSPRNG and numbers its events from it
/// (the count in the first 48 bits), so a create's event costs no system call: two processes
/// share an id only if their bases agree in the 74 random bits outside the count, but for the
/// small ordinal a derived id mixes into its last four bytes ([`EventId::derive`]). An event
/// id is no secret (the audit API shows it); it only has to be unique.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub [u8; 16]);

/// This process's random base for event ids, drawn at its first event.
static EVENT_BASE: std::sync::OnceLock<[u8; 16]> = std::sync::OnceLock::new();
/// Events this process has numbered.
static EVENTS_NUMBERED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl EventId {
    /// Length of the UUID text.
    pub const TEXT_LEN: usize = 36;

    /// A fresh id: this process's base (drawn from the OS CSPRNG at the first call), numbered.
    pub fn generate() -> Result<Self, RandomnessUnavailable> {
        let base = match EVENT_BASE.get() {
            Some(base) => *base,
            None => {
                let mut bytes = [0u8; 16];
                crate::token::fill_random(&mut bytes)?;
                bytes[6] = (bytes[6] & 0x0f) | 0x80;
                bytes[8] = (bytes[8] & 0x3f) | 0x80;
                *EVENT_BASE.get_or_init(|| bytes)
            }
        };
        let n = EVENTS_NUMBERED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut bytes = base;
        for (b, x) in bytes[..6].iter_mut().zip(&n.to_be_bytes()[2..]) {
            *b ^= x;
        }
        Ok(EventId(bytes))
    }

    /// The `n`th id derived from this one, for the several events of one write (a create
    /// that also evicts): distinct for distinct `n`, and `derive(0)` is the id itself.
    #[must_use]
    pub fn derive(self, n: u32) -> Self {
        let mut bytes = self.0;
        for (b, x) in bytes[12..].iter_mut().zip(n.to_be_bytes()) {
            *b ^= x;
        }
        EventId(bytes)
    }

    /// The UUID text, written without the formatting machinery (an event id is written for
    /// every create).
    pub fn text(&self) -> [u8; Self::TEXT_LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; Self::TEXT_LEN];
        let mut at = 0;
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            out[at] = HEX[usize::from(b >> 4)];
            out[at + 1] = HEX[usize::from(b & 0x0f)];
            at += 2;
        }
        out
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        // Only hex digits and dashes: always UTF-8.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        let text = std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = EventId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event id (a UUID)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<EventId, E> {
                s.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({self})")
    }
}

/// The text was not a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an event id (a UUID)")]
pub struct MalformedEventId;

impl FromStr for EventId {
    type Err = MalformedEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.as_bytes();
        if text.len() != Self::TEXT_LEN {
            return Err(MalformedEventId);
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(MalformedEventId),
        };
        let mut bytes = [0u8; 16];
        let mut at = 0;
        for (i, b) in bytes.iter_mut().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                if text.get(at) != Some(&b'-') {
                    return Err(MalformedEventId);
                }
                at += 1;
            }
            let (hi, lo) = (text.get(at).copied(), text.get(at + 1).copied());
            *b = (digit(hi.ok_or(MalformedEventId)?)? << 4) | digit(lo.ok_or(MalformedEventId)?)?;
            at += 2;
        }
        Ok(EventId(bytes))
    }
}

/// Where an entry sits in its outbox: later entries have greater positions. A session's
/// entries are all in one outbox (its shard's), so comparing positions orders its changes.
///
/// A position is a hybrid clock, `milliseconds << 20 | sequence`, the shape of a Redis stream
/// id: it keeps growing across a hot store that lost its data or a node replaced by a new
/// one, as long as clocks do not go back by more than the changes in between.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// Bits of the sequence within one millisecond.
    pub const SEQUENCE_BITS: u32 = 20;

    /// The position of the `sequence`th entry written in millisecond `ms` (a Redis stream id
    /// `ms-sequence`); a sequence past 2^20 − 1 saturates.
    pub fn from_parts(ms: u64, sequence: u64) -> Self {
        let max_seq = (1 << Self::SEQUENCE_BITS) - 1;
        Position(ms.saturating_mul(1 << Self::SEQUENCE_BITS) | sequence.min(max_seq))
    }

    /// The millisecond it was written in.
    pub fn millis(self) -> Timestamp {
        Timestamp::from_millis(self.0 >> Self::SEQUENCE_BITS)
    }

    /// The first position after both `self` and the start of millisecond `now`.
    #[must_use]
    pub fn next(self, now: Timestamp) -> Self {
        Position(
            self.0
                .saturating_add(1)
                .max(Self::from_parts(now.as_millis(), 0).0),
        )
    }
}

/// What an event says happened, owned (the audit trail keeps it; [`EventKind`] borrows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// See [`EventKind::Created`].
    Created,
    /// See [`EventKind::Rotated`].
    Rotated,
    /// See [`EventKind::Updated`].
    Updated,
    /// See [`EventKind::LoggedOut`].
    LoggedOut,
    /// See [`EventKind::Revoked`].
    Revoked,
    /// See [`EventKind::RevokedAll`].
    RevokedAll {
        /// How many live sessions ended.
        count: u64,
        /// The session spared.
        kept: Option<SessionId>,
    },
    /// See [`EventKind::Replaced`].
    Replaced {
        /// The session that replaced it.
        by: SessionId,
    },
    /// See [`EventKind::Evicted`].
    Evicted {
        /// The session created in its place.
        by: SessionId,
    },
    /// See [`EventKind::Expired`].
    Expired,
    /// See [`EventKind::InvalidToken`].
    InvalidToken {
        /// Why.
        reason: InvalidReason,
    },
    /// See [`EventKind::BindingMismatch`].
    BindingMismatch {
        /// What differs.
        property: BindingProperty,
        /// Whether the request was refused.
        refused: bool,
    },
    /// See [`EventKind::RevokedEveryone`].
    RevokedEveryone {
        /// How many stored sessions were removed.
        count: u64,
    },
}

impl AuditKind {
    /// Its name (the `kind` column, the metric label).
    pub fn name(&self) -> EventName {
        self.as_event_kind().name()
    }

    /// What it means, in words a person reads in a query result or a terminal.
    pub fn reason(&self) -> &'static str {
        match self {
            AuditKind::InvalidToken { reason } => reason.as_str(),
            other => other.name().describe(),
        }
    }

    /// Its data as a JSON object (`count`, `kept`, `by`, `reason`, `refused`), or `None` for a
    /// kind that has none. The audit trail stores this form and the API answers it.
    pub fn detail(&self) -> Option<serde_json::Value> {
        use serde_json::json;
        match self {
            AuditKind::RevokedAll { count, kept } => Some(match kept {
                Some(kept) => json!({ "count": count, "kept": kept.as_str() }),
                None => json!({ "count": count }),
            }),
            AuditKind::Replaced { by } | AuditKind::Evicted { by } => {
                Some(json!({ "by": by.as_str() }))
            }
            AuditKind::InvalidToken { reason } => Some(json!({ "reason": match reason {
                InvalidReason::Malformed => "malformed",
                InvalidReason::Unknown => "unknown",
            } })),
            AuditKind::BindingMismatch { refused, .. } => Some(json!({ "refused": refused })),
            AuditKind::RevokedEveryone { count } => Some(json!({ "count": count })),
            AuditKind::Created
            | AuditKind::Rotated
            | AuditKind::Updated
            | AuditKind::LoggedOut
            | AuditKind::Revoked
            | AuditKind::Expired => None,
        }
    }

    /// The borrowed form.
    pub fn as_event_kind(&self) -> EventKind<'_> {
        match self {
            AuditKind::Created => EventKind::Created,
            AuditKind::Rotated => EventKind::Rotated,
            AuditKind::Updated => EventKind::Updated,
            AuditKind::LoggedOut => EventKind::LoggedOut,
            AuditKind::Revoked => EventKind::Revoked,
            AuditKind::RevokedAll { count, kept } => EventKind::RevokedAll {
                count: *count,
                kept: kept.as_ref(),
            },
            AuditKind::Replaced { by } => EventKind::Replaced { by },
            AuditKind::Evicted { by } => EventKind::Evicted { by },
            AuditKind::Expired => EventKind::Expired,
            AuditKind::InvalidToken { reason } => EventKind::InvalidToken { reason: *reason },
            AuditKind::BindingMismatch { property, refused } => EventKind::BindingMismatch {
                property: *property,
                refused: *refused,
            },
            AuditKind::RevokedEveryone { count } => EventKind::RevokedEveryone { count: *count },
        }
    }
}

impl From<&EventKind<'_>> for AuditKind {
    fn from(kind: &EventKind<'_>) -> Self {
        match *kind {
            EventKind::Created => AuditKind::Created,
            EventKind::Rotated => AuditKind::Rotated,
            EventKind::Updated => AuditKind::Updated,
            EventKind::LoggedOut => AuditKind::LoggedOut,
            EventKind::Revoked => AuditKind::Revoked,
            EventKind::RevokedAll { count, kept } => AuditKind::RevokedAll {
                count,
                kept: kept.cloned(),
            },
            EventKind::Replaced { by } => AuditKind::Replaced { by: by.clone() },
            EventKind::Evicted { by } => AuditKind::Evicted { by: by.clone() },
            EventKind::Expired => AuditKind::Expired,
            EventKind::InvalidToken { reason } => AuditKind::InvalidToken { reason },
            EventKind::BindingMismatch { property, refused } => {
                AuditKind::BindingMismatch { property, refused }
            }
            EventKind::RevokedEveryone { count } => AuditKind::RevokedEveryone { count },
        }
    }
}

/// One event as the audit trail keeps it: a [`SessionEvent`], owned, with its id. Never a
/// token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Its id (the trail's unique key).
    pub id: EventId,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub kind: AuditKind,
    /// The session, where there is one.
    pub session_id: Option<SessionId>,
    /// Its user, where known.
    pub user_id: Option<UserId>,
    /// Who caused it.
    pub actor: Actor,
    /// The client's address, where known.
    pub client_addr: Option<IpAddr>,
    /// The client's `User-Agent`, where known (cut as [`crate::Client::new`] cuts it).
    pub user_agent: Option<String>,
}

impl AuditEvent {
    /// The owned form of `event`, with id `id`.
    pub fn from_event(id: EventId, event: &SessionEvent<'_>) -> Self {
        AuditEvent {
            id,
            at: event.at,
            kind: AuditKind::from(&event.kind),
            session_id: event.session_id.cloned(),
            user_id: event.user_id.cloned(),
            actor: event.actor,
            client_addr: event.client.address,
            user_agent: event.client.user_agent.map(str::to_owned),
        }
    }

    /// The borrowed form, to hand to an [`EventSink`](crate::EventSink).
    pub fn as_event(&self) -> SessionEvent<'_> {
        SessionEvent {
            kind: self.kind.as_event_kind(),
            at: self.at,
            session_id: self.session_id.as_ref(),
            user_id: self.user_id.as_ref(),
            actor: self.actor,
            client: crate::Client {
                address: self.client_addr,
                user_agent: self.user_agent.as_deref(),
            },
        }
    }

    /// The backend key of a backend actor, where there is one.
    pub fn key_id(&self) -> Option<KeyId> {
        self.actor.key_id()
    }
}

/// What a change did to the durable copy of sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurableChange {
    /// The session's record as it now is (created, touched, patched, rotated). Applied only
    /// over an older position, and never to a session that has ended.
    Live(SessionRecord),
    /// The session ended. Final: no later or replayed [`DurableChange::Live`] brings it back.
    Ended(SessionId),
    /// Every session of the event's user created at or before the event ended, but `kept`.
    /// `ended` names those the hot store removed, so each is final even if its durable copy
    /// has not arrived yet.
    UserEnded {
        /// The user.
        user_id: UserId,
        /// The session spared.
        kept: Option<SessionId>,
        /// The sessions the hot store ended.
        ended: Vec<SessionId>,
    },
    /// Every session created at or before the event ended (revoke-everyone).
    AllEnded,
    /// Nothing changes (a refused token, a binding mismatch).
    Nothing,
}

/// One outbox entry: an event and the change it describes, at its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// Its place in its outbox.
    pub position: Position,
    /// What happened, for the audit trail; `None` for a change that is no event of its own
    /// (a touch: activity recorded at most once per touch interval, kept in the durable copy
    /// only).
    pub event: Option<AuditEvent>,
    /// What it did to the durable copy.
    pub change: DurableChange,
}

/// What waits in an outbox: how many entries, and the position of the oldest (its age is the
/// shipper's lag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxBacklog {
    /// Entries waiting.
    pub entries: u64,
    /// The oldest entry's position, `None` when none waits.
    pub oldest: Option<Position>,
}

/// What a hot store shared by several processes says of their journals
/// ([`SessionStore::journal_marks`](crate::SessionStore::journal_marks)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalMarks {
    /// The store's epoch: `None` when it has none (it lost its data and no process has made
    /// a new one yet).
    pub epoch: Option<String>,
    /// How many processes have marked their journal as holding revocations.
    pub pending: u64,
}

impl JournalMarks {
    /// A new epoch for a hot store: the wall-clock time it is made (ms), so every process can
    /// tell how long ago the store lost its data, and a random part.
    pub fn new_epoch() -> Result<String, RandomnessUnavailable> {
        let now = crate::time::SystemClock.now();
        Ok(format!("{}-{}", now.as_millis(), EventId::generate()?))
    }

    /// When `epoch` was made, if it says.
    pub fn epoch_made(epoch: &str) -> Option<Timestamp> {
        let (ms, _) = epoch.split_once('-')?;
        ms.parse().ok().map(Timestamp::from_millis)
    }
}

/// A process's lease in the durable tier: what it last said of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The process (its data directory's instance id).
    pub instance: String,
    /// The hot store's epoch when it last renewed.
    pub epoch: String,
    /// Revocations its journal held then.
    pub journal_entries: u64,
    /// When it last renewed, on the tier's clock.
    pub renewed_at: Timestamp,
}

/// How long leases are kept ([`DurableTier::renew_lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTerms {
    /// A lease not renewed for this long, of the current epoch, with an empty journal and no
    /// journal marked in the hot store, is dropped: its process is gone, with nothing to ship.
    pub idle_after: Duration,
    /// A lease not renewed for this long is dropped whatever it said: every session its
    /// process could have revoked has expired since.
    pub forget_after: Duration,
}

/// A session as the durable tier holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum DurableSession {
    /// Its latest shipped record (which may have expired: callers check
    /// [`SessionRecord::is_live`]).
    Live {
        /// The record.
        record: SessionRecord,
        /// The position of the change that wrote it.
        position: Position,
    },
    /// It ended; nothing may serve it again.
    Ended,
}

/// Whose events to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsOf {
    /// A user's (every session of theirs, and their revoke-alls).
    User(UserId),
    /// One session's.
    Session(SessionId),
}

/// Where a page of events starts: just after the last event of the previous page. Opaque to
/// clients (base64url of the event's time, position and id), so its form may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    /// The last event's time.
    pub at: Timestamp,
    /// The last event's outbox position (orders events within a millisecond).
    pub position: Position,
    /// The last event's id.
    pub id: EventId,
}

/// The text was not a cursor sessiond issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor from a previous page")]
pub struct MalformedCursor;

impl EventCursor {
    /// Its text form.
    pub fn encode(&self) -> String {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&self.at.as_millis().to_be_bytes());
        bytes[8..16].copy_from_slice(&self.position.0.to_be_bytes());
        bytes[16..].copy_from_slice(&self.id.0);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The length of [`encode`](Self::encode)'s form.
    pub const ENCODED_LEN: usize = 43;

    /// Parses [`encode`](Self::encode)'s form. Any 43 base64url characters are a cursor (the
    /// last one's spare bits ignored): a cursor only names a place in the order of events,
    /// so one a client made up reads a page from some place, never anything it may not read.
    pub fn decode(s: &str) -> Result<Self, MalformedCursor> {
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &URL_SAFE,
            GeneralPurposeConfig::new()
                .with_encode_padding(false)
                .with_decode_padding_mode(DecodePaddingMode::RequireNone)
                .with_decode_allow_trailing_bits(true),
        );
        if s.len() != Self::ENCODED_LEN {
            return Err(MalformedCursor);
        }
        let bytes = LENIENT.decode(s).map_err(|_| MalformedCursor)?;
        let word = |range: std::ops::Range<usize>| -> Result<u64, MalformedCursor> {
            let part = bytes.get(range).ok_or(MalformedCursor)?;
            Ok(u64::from_be_bytes(
                part.try_into().map_err(|_| MalformedCursor)?,
            ))
        };
        let id = bytes.get(16..32).ok_or(MalformedCursor)?;
        Ok(EventCursor {
            at: Timestamp::from_millis(word(0..8)?),
            position: Position(word(8..16)?),
            id: EventId(id.try_into().map_err(|_| MalformedCursor)?),
        })
    }
}

/// A read of the audit trail, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    /// Whose.
    pub of: EventsOf,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events strictly older than this one (the previous page's cursor).
    pub after: Option<EventCursor>,
    /// At most this many ([`EventQuery::MAX_LIMIT`] at most).
    pub limit: usize,
}

impl EventQuery {
    /// The largest page.
    pub const MAX_LIMIT: usize = 1_000;
}

/// One page of events, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// The events.
    pub events: Vec<AuditEvent>,
    /// Where the next page starts, when there may be one.
    pub next: Option<EventCursor>,
}

/// How long the tier keeps what it no longer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events older than this are dropped.
    pub events: std::time::Duration,
    /// Sessions' durable copies are dropped once they have been expired or ended for this
    /// long; at least the longest absolute timeout, so an ended session stays final for as
    /// long as any copy of it could still be live.
    pub sessions: std::time::Duration,
}

/// What a [`DurableTier::purge`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// Events dropped.
    pub events: u64,
    /// Durable session copies dropped.
    pub sessions: u64,
}

/// A durable tier engine (PostgreSQL first).
///
/// Every method may fail with [`StoreError::Unavailable`] or [`StoreError::Timeout`] while the
/// tier is unreachable; the hot store keeps serving meanwhile, and the outbox keeps what has
/// not been shipped.
#[async_trait]
pub trait DurableTier: fmt::Debug + Send + Sync + 'static {
    /// Applies a batch, all or nothing: one row per event (an event already recorded, by id,
    /// is not recorded again) and each change (applying a change twice is applying it once).
    /// Entries of one session must come in position order, within a batch and across batches.
    async fn ship(&self, batch: &[OutboxEntry]) -> Result<(), StoreError>;

    /// The durable state of one session, if the tier has any.
    async fn load(&self, id: &SessionId) -> Result<Option<DurableSession>, StoreError>;

    /// The records of the user's sessions the tier holds as live and unexpired at `now`.
    async fn list_user(
        &self,
        user: &UserId,
        now: Timestamp,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Up to `max` sessions live at `now` that the hot store holds (as far as the tier knows)
    /// and that have been idle since before `before`, least recently active first: the
    /// demoter's candidates.
    async fn idle(
        &self,
        before: Timestamp,
        now: Timestamp,
        max: usize,
    ) -> Result<Vec<SessionRecord>, StoreError>;

    /// Records that the hot store no longer holds these sessions (the demoter removed them,
    /// or they were already gone); a shipped change of one marks it held again.
    async fn cooled(&self, ids: &[SessionId]) -> Result<(), StoreError>;

    /// A page of the audit trail.
    async fn events(&self, query: &EventQuery) -> Result<EventPage, StoreError>;

    /// Drops what `retention` no longer keeps, as of `now`.
    async fn purge(&self, now: Timestamp, retention: Retention) -> Result<Purged, StoreError>;

    /// Checks that the tier answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Renews `lease` (the tier's clock sets its time), drops the leases `terms` no longer
    /// keep (those of the current epoch idle only if `idle_ok`, i.e. the hot store marks no
    /// journal), and returns every lease kept, this one included.
    async fn renew_lease(
        &self,
        lease: &Lease,
        terms: LeaseTerms,
        idle_ok: bool,
    ) -> Result<Vec<Lease>, StoreError>;

    /// Drops `instance`'s lease (a clean shutdown with an empty journal, or an operator's
    /// `sessiond tier forget-instance`). Returns whether there was one.
    async fn release_lease(&self, instance: &str) -> Result<bool, StoreError>;

    /// Every lease, for an operator.
    async fn leases(&self) -> Result<Vec<Lease>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_uuids_and_parse_back() {
        let id = EventId::generate().unwrap_or(EventId([7; 16]));
        let text = id.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(text.as_bytes()[14], b'8', "version 8: {text}");
        assert_eq!(text.parse::<EventId>(), Ok(id));
        assert_eq!(text.to_uppercase().parse::<EventId>(), Ok(id));
        assert_eq!(
            serde_json::to_string(&id).ok(),
            Some(format!("\"{text}\"")),
            "JSON is the text"
        );
        assert_eq!(
            serde_json::from_str::<EventId>(&format!("\"{text}\"")).ok(),
            Some(id)
        );
        assert_eq!(
            EventId([0x0f; 16]).to_string(),
            "0f0f0f0f-0f0f-0f0f-0f0f-0f0f0f0f0f0f"
        );
        for bad in [
            "not-a-uuid",
            "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f",
            "0f0f0f0f-0f0f-0f0f-0f0f-0f0f0f0f0f0g",
            "0f0f0f0f-0f0f-0f0f-0f0f-0f0f0f0f0f0é",
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(MalformedEventId), "{bad}");
        }
        let ids: std::collections::HashSet<EventId> = (0..10_000)
            .map(|_| EventId::generate().unwrap_or(EventId([7; 16])))
            .collect();
        assert_eq!(ids.len(), 10_000, "every id is new");
        assert_ne!(id.derive(1), id);
        assert_eq!(id.derive(0), id);
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_text() {
        let cursor = EventCursor {
            at: Timestamp::from_millis(1_764_000_000_123),
            position: Position::from_parts(1_764_000_000_123, 7),
            id: EventId([0xab; 16]),
        };
        assert_eq!(cursor.encode().len(), EventCursor::ENCODED_LEN);
        assert_eq!(EventCursor::decode(&cursor.encode()), Ok(cursor));
        assert_eq!(EventCursor::decode("short"), Err(MalformedCursor));
        assert_eq!(
            EventCursor::decode(&"*".repeat(EventCursor::ENCODED_LEN)),
            Err(MalformedCursor),
            "not base64url"
        );
    }

    #[test]
    fn positions_grow_with_the_clock_and_within_a_millisecond() {
        let p = Position::from_parts(1_000, 5);
        assert!(
            p.next(Timestamp::from_millis(1_000)) > p,
            "same millisecond"
        );
        assert_eq!(
            p.next(Timestamp::from_millis(2_000)),
            Position::from_parts(2_000, 0),
            "a later millisecond starts its own sequence"
        );
        assert!(
            p.next(Timestamp::from_millis(10)) > p,
            "a clock that went back never moves a position back"
        );
        assert!(Position::from_parts(1, u64::MAX) < Position::from_parts(2, 0));
    }
}
