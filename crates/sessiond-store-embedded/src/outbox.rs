//! The outbox: each change's event and the session's new durable state, written in the same
//! transaction as the change, for the shipper to hand to the durable tier
//! (`docs/design.md` §10). Kept only when the tier is configured.
//!
//! Entries are keyed by [`Position`], a hybrid clock (milliseconds and a sequence), so they
//! read back in the order they were written, and a store reopened on an empty outbox (or a
//! node replaced by a new one) goes on with positions later than every earlier one.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{ReadableTable, ReadableTableMetadata, Table};
use sessiond_core::tier::{AuditEvent, AuditKind, DurableChange, EventId, OutboxEntry, Position};
use sessiond_core::{Actor, Origin, SessionId, StoreError, Timestamp, UserId};

/// The only entry format so far: JSON of [`OutboxEntry`].
const FORMAT_JSON: u8 = 1;

/// Whether this store keeps an outbox, how large it may grow, and the last position given.
#[derive(Debug)]
pub(crate) struct OutboxState {
    /// Most entries kept; past it, changes that add data are refused.
    max: Option<u64>,
    /// The last position given out (a floor for the next, even once the table is empty).
    last: AtomicU64,
}

impl OutboxState {
    /// No outbox.
    pub(crate) fn off() -> Self {
        OutboxState {
            max: None,
            last: AtomicU64::new(0),
        }
    }

    /// An outbox of at most `max` entries, going on after `last`.
    pub(crate) fn on(max: u64, last: Position) -> Self {
        OutboxState {
            max: Some(max),
            last: AtomicU64::new(last.0),
        }
    }

    /// Whether entries are kept.
    pub(crate) fn enabled(&self) -> bool {
        self.max.is_some()
    }
}

/// Who caused a change, owned: a grouped write may run twice and outlives the request.
#[derive(Debug, Clone)]
pub(crate) struct Cause {
    actor: Actor,
    client_addr: Option<IpAddr>,
    user_agent: Option<String>,
}

impl Cause {
    pub(crate) fn of(origin: Origin<'_>) -> Self {
        Cause {
            actor: origin.actor,
            client_addr: origin.client.address,
            user_agent: origin.client.user_agent.map(str::to_owned),
        }
    }

    /// The expiry sweeper.
    pub(crate) fn sweeper() -> Self {
        Cause::of(Origin::SWEEPER)
    }

    /// The actor.
    pub(crate) fn actor(&self) -> Actor {
        self.actor
    }

    /// The event of `kind` at `at` about a session and its user, caused by this.
    pub(crate) fn event(
        &self,
        kind: AuditKind,
        at: Timestamp,
        session: Option<&SessionId>,
        user: Option<&UserId>,
    ) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            id: EventId::generate().map_err(StoreError::internal)?,
            at,
            kind,
            session_id: session.cloned(),
            user_id: user.cloned(),
            actor: self.actor,
            client_addr: self.client_addr,
            user_agent: self.user_agent.clone(),
        })
    }
}

/// The outbox table, open in a write transaction.
pub(crate) struct Writer<'txn> {
    pub(crate) table: Table<'txn, u64, &'static [u8]>,
    pub(crate) state: &'txn OutboxState,
}

impl Writer<'_> {
    /// Appends an entry, if this store keeps an outbox.
    pub(crate) fn record(
        &mut self,
        now: Timestamp,
        event: Option<AuditEvent>,
        change: DurableChange,
    ) -> Result<(), StoreError> {
        if !self.state.enabled() {
            return Ok(());
        }
        let last_in_table = self
            .table
            .last()
            .map_err(db_err)?
            .map_or(0, |(k, _)| k.value());
        let floor = self.state.last.load(Ordering::Acquire).max(last_in_table);
        let position = Position(floor).next(now);
        // Writers are serialised by redb, so no other position is given out meanwhile. A
        // transaction that aborts leaves a gap, which is harmless.
        self.state.last.store(position.0, Ordering::Release);
        let entry = OutboxEntry {
            position,
            event,
            change,
        };
        self.table
            .insert(position.0, encode(&entry)?.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Refuses a change that adds data while the outbox is full, so an unreachable tier never
    /// fills the disk; revocations are always accepted (`docs/design.md` §10).
    pub(crate) fn check_room(&self) -> Result<(), StoreError> {
        match self.state.max {
            Some(max) if self.table.len().map_err(db_err)? >= max => Err(StoreError::unavailable(
                "the outbox is full: the durable tier has not taken entries for a while",
            )),
            _ => Ok(()),
        }
    }
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::internal(e.into())
}

pub(crate) fn encode(entry: &OutboxEntry) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(512);
    out.push(FORMAT_JSON);
    serde_json::to_writer(&mut out, entry).map_err(StoreError::internal)?;
    Ok(out)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<OutboxEntry, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_JSON, json)) => {
            serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(e.into()))
        }
        _ => Err(StoreError::Corrupt("unknown outbox entry format".into())),
    }
}
