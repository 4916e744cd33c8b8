//! Each store operation as one redb transaction: all of its reads and writes commit together
//! or not at all, which is what makes create + index, revoke-all and compare-and-set atomic.

use redb::{
    Durability, MultimapTable, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, Table, WriteTransaction,
};
use serde_json::{Map, Value};
use sessiond_core::tier::{AuditKind, DurableChange, OutboxBacklog, OutboxEntry, Position};
use sessiond_core::{
    Actor, AtCap, CreateOutcome, Demoted, ExpiredSession, RotateOutcome, SecretHash, SessionId,
    SessionLimit, SessionRecord, StoreError, Timestamp, UpdateOutcome, UserId,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::Shared;
use crate::outbox::{self, Cause};
use crate::tables::{BY_USER, COLD, EXPIRY, META, OUTBOX, OUTBOX_LAST, SESSIONS, decode, encode};

/// Most expired sessions reclaimed in one sweep transaction, so a sweep never holds the write
/// lock long enough to delay API writes noticeably.
const SWEEP_BATCH: usize = 1_000;

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::internal(e.into())
}

/// The four tables, open inside one write transaction.
pub(crate) struct Tables<'txn> {
    sessions: Table<'txn, &'static str, &'static [u8]>,
    by_user: MultimapTable<'txn, &'static str, &'static str>,
    expiry: Table<'txn, (u64, &'static str), ()>,
    cold: Table<'txn, &'static str, (u64, u64, &'static str)>,
    outbox: outbox::Writer<'txn>,
    tombstones: &'txn Mutex<crate::tombstones::Tombstones>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction, shared: &'txn Shared) -> Result<Self, StoreError> {
        Ok(Tables {
            sessions: txn.open_table(SESSIONS).map_err(db_err)?,
            by_user: txn.open_multimap_table(BY_USER).map_err(db_err)?,
            expiry: txn.open_table(EXPIRY).map_err(db_err)?,
            cold: txn.open_table(COLD).map_err(db_err)?,
            outbox: outbox::Writer {
                table: txn.open_table(OUTBOX).map_err(db_err)?,
                state: &shared.outbox,
            },
            tombstones: &shared.tombstones,
        })
    }

    /// Runs `f` on the tombstones, when this store keeps them (with the outbox).
    fn tombstones(&self, f: impl FnOnce(&mut crate::tombstones::Tombstones)) {
        if self.outbox.state.enabled() {
            let mut t = self
                .tombstones
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut t);
        }
    }

    fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        match self.sessions.get(id).map_err(db_err)? {
            Some(bytes) => decode(bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Writes a record. `previous` is the stored version, if any, whose expiry entry moves.
    fn put(
        &mut self,
        record: &SessionRecord,
        previous: Option<&SessionRecord>,
    ) -> Result<(), StoreError> {
        let id = record.id.as_str();
        let expires = record.expires_at().as_millis();
        match previous {
            Some(prev) if prev.expires_at().as_millis() == expires => {}
            Some(prev) => {
                self.expiry
                    .remove((prev.expires_at().as_millis(), id))
                    .map_err(db_err)?;
                self.expiry.insert((expires, id), ()).map_err(db_err)?;
            }
            None => {
                self.expiry.insert((expires, id), ()).map_err(db_err)?;
                self.by_user
                    .insert(record.user_id.as_str(), id)
                    .map_err(db_err)?;
            }
        }
        self.sessions
            .insert(id, encode(record)?.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    /// Removes a record with its index and expiry entries.
    fn remove(&mut self, record: &SessionRecord) -> Result<(), StoreError> {
        let id = record.id.as_str();
        self.sessions.remove(id).map_err(db_err)?;
        self.by_user
            .remove(record.user_id.as_str(), id)
            .map_err(db_err)?;
        self.expiry
            .remove((record.expires_at().as_millis(), id))
            .map_err(db_err)?;
        Ok(())
    }

    /// A cold session's expiry and last activity (ms), if the demoter left it cold.
    fn cold(&self, id: &str) -> Result<Option<Cold>, StoreError> {
        Ok(self.cold.get(id).map_err(db_err)?.map(|v| {
            let (expires, last_activity, user) = v.value();
            Cold {
                expires,
                last_activity,
                user: user.to_owned(),
            }
        }))
    }

    /// Takes a record out and leaves the session cold: its index and expiry entries stay.
    fn make_cold(&mut self, record: &SessionRecord) -> Result<(), StoreError> {
        let id = record.id.as_str();
        self.sessions.remove(id).map_err(db_err)?;
        let value = (
            record.expires_at().as_millis(),
            record.last_activity.as_millis(),
            record.user_id.as_str(),
        );
        self.cold.insert(id, value).map_err(db_err)?;
        Ok(())
    }

    /// Forgets a cold session: its cold, index and expiry entries.
    fn remove_cold(&mut self, id: &str, cold: &Cold) -> Result<(), StoreError> {
        self.cold.remove(id).map_err(db_err)?;
        self.by_user
            .remove(cold.user.as_str(), id)
            .map_err(db_err)?;
        self.expiry.remove((cold.expires, id)).map_err(db_err)?;
        Ok(())
    }

    /// Removes a session a create ends, hot or cold.
    fn end(&mut self, ending: &Ending) -> Result<(), StoreError> {
        match ending {
            Ending::Hot(r) => self.remove(r),
            Ending::Cold(id, c) => self.remove_cold(id.as_str(), c),
        }
    }

    fn user_session_ids(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for entry in self.by_user.get(user).map_err(db_err)? {
            ids.push(entry.map_err(db_err)?.value().to_owned());
        }
        Ok(ids)
    }
}

/// A live session a create ends (evicts or replaces): a record, or a cold session.
enum Ending {
    Hot(SessionRecord),
    Cold(SessionId, Cold),
}

impl Ending {
    fn id(&self) -> &SessionId {
        match self {
            Ending::Hot(r) => &r.id,
            Ending::Cold(id, _) => id,
        }
    }

    /// Eviction order: least recently active first (ties by creation for hot sessions, by
    /// id for all).
    fn age_key(&self) -> (u64, u64, &str) {
        match self {
            Ending::Hot(r) => (
                r.last_activity.as_millis(),
                r.created_at.as_millis(),
                r.id.as_str(),
            ),
            Ending::Cold(id, c) => (c.last_activity, 0, id.as_str()),
        }
    }
}

/// What the store keeps of a cold session.
#[derive(Debug, Clone)]
struct Cold {
    /// Expiry, ms.
    expires: u64,
    /// Last activity, ms.
    last_activity: u64,
    /// Whose it is.
    user: String,
}

impl Cold {
    fn is_live(&self, now: Timestamp) -> bool {
        now.as_millis() < self.expires
    }
}

/// Runs `f` in a write transaction with fsync on commit. `f` returns the result and whether
/// it wrote anything (a transaction that wrote nothing is aborted, costing no fsync).
fn write<T>(
    shared: &Shared,
    durability: Durability,
    f: impl FnOnce(&mut Tables<'_>) -> Result<(T, bool), StoreError>,
) -> Result<T, StoreError> {
    let mut txn = shared.db.begin_write().map_err(db_err)?;
    txn.set_durability(durability)
        .map_err(StoreError::internal)?;
    let (result, wrote) = {
        let mut tables = Tables::open(&txn, shared)?;
        f(&mut tables)?
    };
    if wrote {
        txn.commit().map_err(db_err)?;
        match durability {
            Durability::None => shared.unflushed.store(true, Ordering::Release),
            // A durable commit persists every earlier non-durable one too.
            _ => shared.unflushed.store(false, Ordering::Release),
        }
    } else {
        txn.abort().map_err(db_err)?;
    }
    Ok(result)
}

/// A durable write waiting for the next group commit: it runs inside the leader's transaction
/// and leaves its outcome in its caller's slot. Re-runnable, because a batch in which one
/// write fails is rolled back and each of its writes is run again on its own.
pub(crate) struct Job {
    run: RunJob,
    fail: Box<dyn FnMut(&str) + Send>,
}

/// Runs a queued write in the leader's transaction: whether it wrote, or that it failed (its
/// error is already in its caller's slot).
type RunJob = Box<dyn FnMut(&mut Tables<'_>) -> Result<bool, ()> + Send>;

/// Durable writes waiting to be committed, and the lock whoever commits them holds.
///
/// Every create, patch, rotation and revocation must be on disk before it is answered, and an
/// fsync costs milliseconds, so one fsync per write caps writes at a few hundred to a few
/// thousand per second whatever the CPU. Group commit shares it: a writer queues its write,
/// then takes the commit lock; if a leader committed its write meanwhile, it returns the
/// outcome; otherwise it becomes the leader, runs every queued write in one transaction in
/// queue order (the same result as running them one after another), and commits once.
#[derive(Default)]
pub(crate) struct GroupCommit {
    pending: Mutex<Vec<Job>>,
    commit: Mutex<()>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

type Slot<T> = Arc<Mutex<Option<Result<T, StoreError>>>>;

fn put_slot<T>(slot: &Slot<T>, value: Result<T, StoreError>) {
    if let Ok(mut s) = slot.lock() {
        *s = Some(value);
    }
}

fn take_slot<T>(slot: &Slot<T>) -> Option<Result<T, StoreError>> {
    slot.lock().ok().and_then(|mut s| s.take())
}

/// Runs `f` as a durable write through group commit (see [`GroupCommit`]).
fn write_grouped<T: Send + 'static>(
    shared: &Shared,
    mut f: impl FnMut(&mut Tables<'_>) -> Result<(T, bool), StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let (ran, failed) = (slot.clone(), slot.clone());
    let job = Job {
        run: Box::new(move |t| match f(t) {
            Ok((value, wrote)) => {
                put_slot(&ran, Ok(value));
                Ok(wrote)
            }
            Err(e) => {
                put_slot(&ran, Err(e));
                Err(())
            }
        }),
        fail: Box::new(move |why| put_slot(&failed, Err(StoreError::internal(why.to_owned())))),
    };
    let group = &shared.group;
    group
        .pending
        .lock()
        .map_err(|_| StoreError::internal("group commit queue poisoned"))?
        .push(job);
    let _leader = group
        .commit
        .lock()
        .map_err(|_| StoreError::internal("group commit lock poisoned"))?;
    if let Some(done) = take_slot(&slot) {
        return done;
    }
    let batch = std::mem::take(
        &mut *group
            .pending
            .lock()
            .map_err(|_| StoreError::internal("group commit queue poisoned"))?,
    );
    commit_batch(shared, batch);
    take_slot(&slot).unwrap_or_else(|| Err(StoreError::internal("a grouped write got no outcome")))
}

/// Runs `batch` in one durable transaction; if a write fails, rolls back and runs each on its
/// own, so one failing write never takes the others' effects with it or leaves its own half
/// done.
fn commit_batch(shared: &Shared, mut batch: Vec<Job>) {
    match run_together(shared, &mut batch) {
        Ok(true) => {}
        Ok(false) => {
            for job in &mut batch {
                if let Err(e) = run_together(shared, std::slice::from_mut(job)) {
                    (job.fail)(&e.to_string());
                }
            }
        }
        Err(e) => {
            let why = e.to_string();
            for job in &mut batch {
                (job.fail)(&why);
            }
        }
    }
}

/// One transaction over `jobs`: `Ok(true)` committed (or nothing to write), `Ok(false)` a
/// write failed and everything was rolled back.
fn run_together(shared: &Shared, jobs: &mut [Job]) -> Result<bool, StoreError> {
    let mut txn = shared.db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::Immediate)
        .map_err(StoreError::internal)?;
    let mut wrote = false;
    {
        let mut tables = Tables::open(&txn, shared)?;
        for job in jobs.iter_mut() {
            match (job.run)(&mut tables) {
                Ok(w) => wrote |= w,
                Err(()) => {
                    drop(tables);
                    txn.abort().map_err(db_err)?;
                    return Ok(jobs.len() == 1);
                }
            }
        }
    }
    if wrote {
        txn.commit().map_err(db_err)?;
        // A durable commit persists every earlier non-durable one too.
        shared.unflushed.store(false, Ordering::Release);
    } else {
        txn.abort().map_err(db_err)?;
    }
    Ok(true)
}

pub(crate) fn create(
    shared: &Shared,
    record: &SessionRecord,
    replaces: Option<SessionId>,
    limit: SessionLimit,
    now: Timestamp,
    cause: Cause,
) -> Result<CreateOutcome, StoreError> {
    let record = record.clone();
    write_grouped(shared, move |t| {
        let record = &record;
        if t.get(record.id.as_str())?.is_some() {
            return Ok((CreateOutcome::IdTaken, false));
        }
        t.outbox.check_room()?;
        let user = record.user_id.as_str();
        // The session this login replaces, if it is live and the same user's (hot, or cold
        // in the user's index): it leaves in this transaction, and does not count against
        // the cap.
        let replaced = match &replaces {
            Some(old) if *old != record.id => match t.get(old.as_str())? {
                Some(r) => {
                    (r.is_live(now) && r.user_id == record.user_id).then_some(Ending::Hot(r))
                }
                None => t
                    .cold(old.as_str())?
                    .filter(|c| c.is_live(now) && c.user == user)
                    .map(|c| Ending::Cold(old.clone(), c)),
            },
            _ => None,
        };
        let mut evicted = Vec::new();
        if let Some(max) = limit.max_per_user {
            // Prune the user's index of dead entries while counting the live ones, hot and
            // cold alike.
            let mut live = Vec::new();
            for id in t.user_session_ids(user)? {
                if replaced.as_ref().is_some_and(|r| r.id().as_str() == id) {
                    continue;
                }
                match t.get(&id)? {
                    Some(r) if r.is_live(now) => live.push(Ending::Hot(r)),
                    Some(r) => t.remove(&r)?,
                    None => match t.cold(&id)? {
                        Some(c) if c.is_live(now) => {
                            let id = SessionId::parse(&id)
                                .map_err(|_| StoreError::Corrupt("a malformed cold id".into()))?;
                            live.push(Ending::Cold(id, c));
                        }
                        Some(c) => t.remove_cold(&id, &c)?,
                        None => {
                            t.by_user.remove(user, id.as_str()).map_err(db_err)?;
                        }
                    },
                }
            }
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            if live.len() >= max {
                if limit.at_cap == AtCap::Reject {
                    return Ok((CreateOutcome::AtCapacity, false));
                }
                live.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
                for old in live.iter().take(live.len() + 1 - max.max(1)) {
                    t.end(old)?;
                    evicted.push(old.id().clone());
                }
            }
        }
        if let Some(old) = &replaced {
            t.end(old)?;
        }
        t.put(record, None)?;
        let user = Some(&record.user_id);
        let event = cause.event(AuditKind::Created, now, Some(&record.id), user)?;
        t.outbox
            .record(now, Some(event), DurableChange::Live(record.clone()))?;
        let by = &record.id;
        let ended = evicted
            .iter()
            .map(|old| (old, AuditKind::Evicted { by: by.clone() }))
            .chain(
                replaced
                    .iter()
                    .map(|old| (old.id(), AuditKind::Replaced { by: by.clone() })),
            );
        for (old, kind) in ended {
            t.tombstones(|tombs| tombs.session_ended(old, now));
            let event = cause.event(kind, now, Some(old), user)?;
            t.outbox
                .record(now, Some(event), DurableChange::Ended(old.clone()))?;
        }
        Ok((
            CreateOutcome::Created {
                evicted,
                replaced: replaced.is_some(),
            },
            true,
        ))
    })
}

pub(crate) fn load(
    shared: &Shared,
    id: &SessionId,
    now: Timestamp,
) -> Result<Option<SessionRecord>, StoreError> {
    let txn = shared.db.begin_read().map_err(db_err)?;
    let sessions = txn.open_table(SESSIONS).map_err(db_err)?;
    let record = match sessions.get(id.as_str()).map_err(db_err)? {
        Some(bytes) => decode(bytes.value())?,
        None => return Ok(None),
    };
    Ok(record.is_live(now).then_some(record))
}

pub(crate) fn touch(shared: &Shared, id: &SessionId, at: Timestamp) -> Result<bool, StoreError> {
    write(shared, Durability::None, |t| match t.get(id.as_str())? {
        Some(r) if r.is_live(at) => {
            let touched = r.clone().touched(at);
            t.put(&touched, Some(&r))?;
            // Activity is no event of its own (it is recorded at most once per touch
            // interval); the durable copy gets the new last activity.
            t.outbox.record(at, None, DurableChange::Live(touched))?;
            Ok((true, true))
        }
        _ => Ok((false, false)),
    })
}

pub(crate) fn update_data(
    shared: &Shared,
    id: &SessionId,
    expected_version: u64,
    user_data: Map<String, Value>,
    now: Timestamp,
    cause: Cause,
) -> Result<UpdateOutcome, StoreError> {
    let id = id.clone();
    write_grouped(shared, move |t| match t.get(id.as_str())? {
        Some(r) if r.is_live(now) => {
            if r.version != expected_version {
                return Ok((UpdateOutcome::VersionMismatch { current: r.version }, false));
            }
            t.outbox.check_room()?;
            let mut updated = r.clone();
            updated.user_data = user_data.clone();
            updated.version = r.version.saturating_add(1);
            t.put(&updated, Some(&r))?;
            let event = cause.event(AuditKind::Updated, now, Some(&r.id), Some(&r.user_id))?;
            t.outbox
                .record(now, Some(event), DurableChange::Live(updated.clone()))?;
            Ok((UpdateOutcome::Updated(updated), true))
        }
        _ => Ok((UpdateOutcome::NotFound, false)),
    })
}

pub(crate) fn rotate(
    shared: &Shared,
    id: &SessionId,
    expected: &SecretHash,
    replacement: SecretHash,
    now: Timestamp,
    cause: Cause,
) -> Result<RotateOutcome, StoreError> {
    let (id, expected) = (id.clone(), expected.clone());
    write_grouped(shared, move |t| match t.get(id.as_str())? {
        Some(r) if r.is_live(now) => {
            if !r.secret_hash.ct_matches(&expected) {
                return Ok((RotateOutcome::Stale, false));
            }
            let mut rotated = r.clone();
            rotated.secret_hash = replacement.clone();
            t.put(&rotated, Some(&r))?;
            let event = cause.event(AuditKind::Rotated, now, Some(&r.id), Some(&r.user_id))?;
            t.outbox
                .record(now, Some(event), DurableChange::Live(rotated.clone()))?;
            Ok((RotateOutcome::Rotated(rotated), true))
        }
        _ => Ok((RotateOutcome::NotFound, false)),
    })
}

pub(crate) fn delete(
    shared: &Shared,
    id: &SessionId,
    now: Timestamp,
    cause: Cause,
) -> Result<Option<UserId>, StoreError> {
    let id = id.clone();
    write_grouped(shared, move |t| {
        // Left whether or not the session is here: it may be only in the durable tier.
        t.tombstones(|tombs| tombs.session_ended(&id, now));
        delete_in(t, &id, now, &cause)
    })
}

fn delete_in(
    t: &mut Tables<'_>,
    id: &SessionId,
    now: Timestamp,
    cause: &Cause,
) -> Result<(Option<UserId>, bool), StoreError> {
    // A cold session ends as a hot one does (its user is in its cold entry).
    let (user, live) = match t.get(id.as_str())? {
        Some(r) => {
            t.remove(&r)?;
            (r.user_id.clone(), r.is_live(now))
        }
        None => match t.cold(id.as_str())? {
            Some(c) => {
                t.remove_cold(id.as_str(), &c)?;
                let user = UserId::parse(&c.user)
                    .map_err(|_| StoreError::Corrupt("a cold session's user id".into()))?;
                (user, c.is_live(now))
            }
            None => return Ok((None, false)),
        },
    };
    // The holder's own end is a logout; anyone else's a revocation. A session that had
    // already expired ends without an event (nobody ended a live session).
    let kind = if cause.actor() == Actor::Holder {
        AuditKind::LoggedOut
    } else {
        AuditKind::Revoked
    };
    let event = live
        .then(|| cause.event(kind, now, Some(id), Some(&user)))
        .transpose()?;
    t.outbox
        .record(now, event, DurableChange::Ended(id.clone()))?;
    Ok((live.then_some(user), true))
}

/// Removes an idle record the durable tier holds, if it is still the one the tier holds,
/// leaving the session cold (`tables`).
pub(crate) fn demote(shared: &Shared, record: &SessionRecord) -> Result<Demoted, StoreError> {
    write(shared, Durability::None, |t| {
        match t.get(record.id.as_str())? {
            None => Ok((Demoted::Absent, false)),
            Some(r)
                if r.last_activity == record.last_activity
                    && r.version == record.version
                    && r.secret_hash.ct_matches(&record.secret_hash) =>
            {
                t.make_cold(&r)?;
                Ok((Demoted::Removed, true))
            }
            Some(_) => Ok((Demoted::Changed, false)),
        }
    })
}

/// Writes back a record read from the durable tier, unless one is here or a revocation of the
/// last moments left a tombstone of it or of its user. No outbox entry: the tier has it.
pub(crate) fn restore(
    shared: &Shared,
    record: SessionRecord,
    now: Timestamp,
) -> Result<bool, StoreError> {
    write_grouped(shared, move |t| {
        if t.get(record.id.as_str())?.is_some() {
            return Ok((false, false));
        }
        let mut ended = false;
        t.tombstones(|tombs| {
            ended = tombs.ended(&record.id, &record.user_id, record.created_at, now);
        });
        if ended {
            return Ok((false, false));
        }
        if let Some(c) = t.cold(record.id.as_str())? {
            // Back from cold: the record's own expiry entry replaces the cold one.
            t.cold.remove(record.id.as_str()).map_err(db_err)?;
            t.expiry
                .remove((c.expires, record.id.as_str()))
                .map_err(db_err)?;
        }
        t.put(&record, None)?;
        Ok((true, true))
    })
}

pub(crate) fn list_user(
    shared: &Shared,
    user: &UserId,
    now: Timestamp,
) -> Result<Vec<SessionRecord>, StoreError> {
    let txn = shared.db.begin_read().map_err(db_err)?;
    let sessions = txn.open_table(SESSIONS).map_err(db_err)?;
    let by_user = txn.open_multimap_table(BY_USER).map_err(db_err)?;
    let mut out = Vec::new();
    for entry in by_user.get(user.as_str()).map_err(db_err)? {
        let entry = entry.map_err(db_err)?;
        if let Some(bytes) = sessions.get(entry.value()).map_err(db_err)? {
            let record = decode(bytes.value())?;
            if record.is_live(now) {
                out.push(record);
            }
        }
    }
    Ok(out)
}

pub(crate) fn delete_user(
    shared: &Shared,
    user: &UserId,
    except: Option<&SessionId>,
    now: Timestamp,
    cause: Cause,
) -> Result<u64, StoreError> {
    let (user, except) = (user.clone(), except.cloned());
    write_grouped(shared, move |t| {
        t.tombstones(|tombs| tombs.user_ended(&user, except.as_ref(), now));
        let mut revoked = 0u64;
        let mut wrote = false;
        let mut ended = Vec::new();
        for id in t.user_session_ids(user.as_str())? {
            if except.as_ref().is_some_and(|keep| keep.as_str() == id) {
                continue;
            }
            wrote = true;
            match t.get(&id)? {
                Some(r) => {
                    t.remove(&r)?;
                    revoked += u64::from(r.is_live(now));
                    ended.push(r.id);
                }
                None => {
                    if let Some(c) = t.cold(&id)? {
                        t.remove_cold(&id, &c)?;
                        revoked += u64::from(c.is_live(now));
                        if let Ok(id) = SessionId::parse(&id) {
                            ended.push(id);
                        }
                    } else {
                        t.by_user
                            .remove(user.as_str(), id.as_str())
                            .map_err(db_err)?;
                    }
                }
            }
        }
        // One event however many ended, and the end of every session of the user in the
        // durable copy (cold ones included), written even when none was here.
        let kind = AuditKind::RevokedAll {
            count: revoked,
            kept: except.clone(),
        };
        let event = cause.event(kind, now, None, Some(&user))?;
        let change = DurableChange::UserEnded {
            user_id: user.clone(),
            kept: except.clone(),
            ended,
        };
        t.outbox.record(now, Some(event), change)?;
        Ok((revoked, wrote || t.outbox.state.enabled()))
    })
}

/// Drops the four session tables and creates them empty, in one durable commit: freeing
/// whole trees takes time in proportion to their pages, not a delete per record. The outbox
/// stays (what it holds has not reached the tier yet), and records the end of everyone.
pub(crate) fn delete_all(
    shared: &Shared,
    now: Timestamp,
    cause: &Cause,
) -> Result<u64, StoreError> {
    let txn = shared.db.begin_write().map_err(db_err)?;
    let removed = txn
        .open_table(SESSIONS)
        .map_err(db_err)?
        .len()
        .map_err(db_err)?;
    txn.delete_table(SESSIONS).map_err(db_err)?;
    txn.delete_multimap_table(BY_USER).map_err(db_err)?;
    txn.delete_table(EXPIRY).map_err(db_err)?;
    txn.delete_table(COLD).map_err(db_err)?;
    txn.open_table(SESSIONS).map_err(db_err)?;
    txn.open_multimap_table(BY_USER).map_err(db_err)?;
    txn.open_table(EXPIRY).map_err(db_err)?;
    txn.open_table(COLD).map_err(db_err)?;
    {
        let mut outbox = outbox::Writer {
            table: txn.open_table(OUTBOX).map_err(db_err)?,
            state: &shared.outbox,
        };
        let event = cause.event(
            AuditKind::RevokedEveryone { count: removed },
            now,
            None,
            None,
        )?;
        outbox.record(now, Some(event), DurableChange::AllEnded)?;
    }
    txn.commit().map_err(db_err)?;
    shared.unflushed.store(false, Ordering::Release);
    Ok(removed)
}

/// The oldest `max` outbox entries.
pub(crate) fn outbox_read(shared: &Shared, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
    let txn = shared.db.begin_read().map_err(db_err)?;
    let table = txn.open_table(OUTBOX).map_err(db_err)?;
    let mut entries = Vec::new();
    for item in table.iter().map_err(db_err)?.take(max) {
        let (_, bytes) = item.map_err(db_err)?;
        entries.push(outbox::decode(bytes.value())?);
    }
    Ok(entries)
}

/// Removes shipped entries. Not fsynced: an entry that comes back after a crash is shipped
/// again, which the tier applies once.
pub(crate) fn outbox_remove(shared: &Shared, positions: &[u64]) -> Result<(), StoreError> {
    let mut txn = shared.db.begin_write().map_err(db_err)?;
    txn.set_durability(Durability::None)
        .map_err(StoreError::internal)?;
    {
        let mut outbox = txn.open_table(OUTBOX).map_err(db_err)?;
        for p in positions {
            outbox.remove(*p).map_err(db_err)?;
        }
        let mut meta = txn.open_table(META).map_err(db_err)?;
        let last = meta
            .get(OUTBOX_LAST)
            .map_err(db_err)?
            .map_or(0, |v| v.value());
        let highest = positions.iter().copied().max().unwrap_or(0);
        if highest > last {
            meta.insert(OUTBOX_LAST, highest).map_err(db_err)?;
        }
    }
    txn.commit().map_err(db_err)?;
    shared.unflushed.store(true, Ordering::Release);
    Ok(())
}

/// How many entries wait, and the oldest one's position.
pub(crate) fn outbox_backlog(shared: &Shared) -> Result<OutboxBacklog, StoreError> {
    let txn = shared.db.begin_read().map_err(db_err)?;
    let table = txn.open_table(OUTBOX).map_err(db_err)?;
    Ok(OutboxBacklog {
        entries: table.len().map_err(db_err)?,
        oldest: table
            .first()
            .map_err(db_err)?
            .map(|(k, _)| Position(k.value())),
    })
}

/// The last position the outbox gave, to go on from when the store opens: its last entry's,
/// or the last one removed.
pub(crate) fn outbox_last(db: &redb::Database) -> Result<u64, redb::Error> {
    let txn = db.begin_read()?;
    let in_table = txn
        .open_table(OUTBOX)?
        .last()?
        .map_or(0, |(k, _)| k.value());
    let removed = txn
        .open_table(META)?
        .get(OUTBOX_LAST)?
        .map_or(0, |v| v.value());
    Ok(in_table.max(removed))
}

pub(crate) fn count(shared: &Shared) -> Result<u64, StoreError> {
    let txn = shared.db.begin_read().map_err(db_err)?;
    txn.open_table(SESSIONS)
        .map_err(db_err)?
        .len()
        .map_err(db_err)
}

pub(crate) fn ping(shared: &Shared) -> Result<(), StoreError> {
    shared.db.begin_read().map(drop).map_err(db_err)
}

/// Makes every earlier non-durable commit durable.
pub(crate) fn flush(shared: &Shared) -> Result<(), StoreError> {
    if shared.unflushed.swap(false, Ordering::AcqRel) {
        let txn = shared.db.begin_write().map_err(db_err)?;
        txn.commit().map_err(db_err)?;
    }
    Ok(())
}

/// Reclaims up to `max` sessions expired at `now` in one transaction, so a sweep never holds
/// the write lock for long; the caller repeats while a full batch comes back.
pub(crate) fn reclaim_expired(
    shared: &Shared,
    now: Timestamp,
    max: usize,
) -> Result<Vec<ExpiredSession>, StoreError> {
    let max = max.min(SWEEP_BATCH);
    write(shared, Durability::Immediate, |t| {
        let mut due = Vec::new();
        // Every entry with expires-at <= now: a session is expired at its expiry instant.
        let bound = (now.as_millis().saturating_add(1), "");
        for entry in t.expiry.range::<(u64, &str)>(..bound).map_err(db_err)? {
            let (key, _) = entry.map_err(db_err)?;
            let (at, id) = key.value();
            due.push((at, id.to_owned()));
            if due.len() == max {
                break;
            }
        }
        let mut reclaimed = Vec::new();
        for (at, id) in &due {
            match t.get(id)? {
                Some(r) if !r.is_live(now) => {
                    t.remove(&r)?;
                    let event = Cause::sweeper().event(
                        AuditKind::Expired,
                        now,
                        Some(&r.id),
                        Some(&r.user_id),
                    )?;
                    t.outbox
                        .record(now, Some(event), DurableChange::Ended(r.id.clone()))?;
                    reclaimed.push(ExpiredSession {
                        id: r.id,
                        user_id: r.user_id,
                    });
                }
                // A cold session ends here too when it expires, with its event.
                None => match t.cold(id)? {
                    Some(c) if c.expires == *at && !c.is_live(now) => {
                        t.remove_cold(id, &c)?;
                        let (Ok(id), Ok(user_id)) = (SessionId::parse(id), UserId::parse(&c.user))
                        else {
                            continue;
                        };
                        let event = Cause::sweeper().event(
                            AuditKind::Expired,
                            now,
                            Some(&id),
                            Some(&user_id),
                        )?;
                        t.outbox
                            .record(now, Some(event), DurableChange::Ended(id.clone()))?;
                        reclaimed.push(ExpiredSession { id, user_id });
                    }
                    _ => {
                        t.expiry.remove((*at, id.as_str())).map_err(db_err)?;
                    }
                },
                // A live record's current expiry entry is a different key; this one is
                // stale (it should not exist, but never let it pin the sweeper).
                _ => {
                    t.expiry.remove((*at, id.as_str())).map_err(db_err)?;
                }
            }
        }
        // A batch with stale entries comes back short, so the sweep ends early; what remains
        // is reclaimed at the next sweep.
        Ok((reclaimed, !due.is_empty()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn shared(dir: &std::path::Path) -> Arc<Shared> {
        Arc::new(Shared {
            db: crate::tables::open(&dir.join("t.redb")).unwrap(),
            closed: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
            group: GroupCommit::default(),
            outbox: crate::outbox::OutboxState::off(),
            tombstones: Mutex::default(),
            _released: crate::release::pair().0,
        })
    }

    fn stored(shared: &Shared, key: &str) -> bool {
        let txn = shared.db.begin_read().unwrap();
        let table = txn.open_table(SESSIONS).unwrap();
        table.get(key).unwrap().is_some()
    }

    #[test]
    fn concurrent_writes_all_commit_and_a_failing_one_takes_nothing_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let shared = shared(dir.path());
        let threads: Vec<_> = (0..32)
            .map(|i| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let key = format!("k{i}");
                    let fails = i % 8 == 0;
                    write_grouped(&shared, move |t| {
                        t.sessions
                            .insert(key.as_str(), b"v".as_slice())
                            .map_err(db_err)?;
                        if fails {
                            // Wrote, then failed: the write must not survive.
                            return Err(StoreError::internal("refused"));
                        }
                        Ok((i, true))
                    })
                })
            })
            .collect();
        for (i, thread) in threads.into_iter().enumerate() {
            let outcome = thread.join().unwrap();
            if i % 8 == 0 {
                assert!(outcome.is_err(), "write {i} failed");
                assert!(
                    !stored(&shared, &format!("k{i}")),
                    "a failed write left data"
                );
            } else {
                assert_eq!(outcome.unwrap(), i, "write {i} got its own outcome");
                assert!(stored(&shared, &format!("k{i}")), "write {i} was committed");
            }
        }
    }
}
