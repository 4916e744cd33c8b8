//! The on-disk format (see `docs/design.md`, "Embedded store").
//!
//! Six tables in one redb file:
//! - `sessions`: session id → encoded record;
//! - `by_user`: user id → session ids (a multimap), for list and revoke-all;
//! - `expiry`: (expires-at in ms, session id) → (), ordered by time, so the sweeper reads only
//!   what has expired;
//! - `cold`: session id → (expires-at in ms, last activity in ms, user id) of each session the demoter
//!   took out of `sessions` (the durable tier holds its record). A cold session keeps its
//!   `by_user` and `expiry` entries, so the per-user cap and revoke-all count it and the
//!   sweeper ends it when it expires;
//! - `outbox`: position → encoded outbox entry, written only when the durable tier is
//!   configured (see `outbox`);
//! - `meta`: what the store keeps about itself (the last outbox position removed).
//!
//! A record is one format byte followed by the record's JSON. The format byte lets a later
//! version change the encoding without a migration step at start-up.

use std::path::Path;

use redb::{MultimapTableDefinition, TableDefinition};
use sessiond_core::{SessionRecord, StoreError};

pub(crate) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
pub(crate) const BY_USER: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("by_user");
pub(crate) const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");
pub(crate) const COLD: TableDefinition<&str, (u64, u64, &str)> = TableDefinition::new("cold");
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Small values the store keeps about itself: the last outbox position removed
/// ([`OUTBOX_LAST`]), so positions go on after an emptied outbox is reopened.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const OUTBOX_LAST: &str = "outbox_last";

/// The only record format so far: JSON of [`SessionRecord`].
const FORMAT_JSON: u8 = 1;

/// Opens or creates the database and makes sure every table exists, so read transactions
/// never meet a missing table.
pub(crate) fn open(path: &Path) -> Result<redb::Database, redb::Error> {
    let db = redb::Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(SESSIONS)?;
    txn.open_multimap_table(BY_USER)?;
    txn.open_table(EXPIRY)?;
    txn.open_table(COLD)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(META)?;
    txn.commit()?;
    Ok(db)
}

pub(crate) fn encode(record: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_JSON);
    serde_json::to_writer(&mut out, record).map_err(StoreError::internal)?;
    Ok(out)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_JSON, json)) => {
            serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(e.into()))
        }
        _ => Err(StoreError::Corrupt("unknown session record format".into())),
    }
}
