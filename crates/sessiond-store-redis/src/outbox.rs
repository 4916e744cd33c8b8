//! The outbox on Redis (`docs/design.md` §10): what each change did, for the shipper to hand
//! to the durable tier, written by the same script as the change.
//!
//! # Layout
//!
//! On standalone and Sentinel, one stream, `<prefix>o`: every key is on one primary, so every
//! script may append to it, and the shipper reads a batch with one `XRANGE` and removes it
//! with one `XTRIM … MINID`, whatever the number of sessions the batch touches. On Cluster a script
//! may only touch keys of its own slot, so each shard has its own stream, `<prefix>o:{<shard>}`,
//! sharing the hash tag of the shard's records and indexes. Either way an entry's position is
//! its stream id (`ms-seq`, Redis's clock), which keeps growing after a flush as long as
//! Redis's clock does. An entry is a few fields:
//!
//! | field | meaning |
//! |---|---|
//! | `c` | the change: `l` live (with `m`, `r`), `x` one session ended (`m`), `u` the user's sessions ended (`m`: the sessions removed, space-separated; `k`: the session kept, or empty), `a` everyone's ended |
//! | `m` | the session, by its id without the `sess_` prefix (its shard, then its index member) |
//! | `u` | the user of a session ended by id (the event was built before the script read it) |
//! | `r` | the record's bytes as the script left them (`codec`) |
//! | `e` | the event (JSON of `AuditEvent`), built by sessiond before the script runs; absent for a change that is no event (a touch, an expired record removed, the earlier batches of a revoke-all) |
//! | `j`, `i` | the event is the `i`th derived from `e`: `ev` the session `m` evicted by `e`'s, `rp` replaced by it |
//! | `n` | a revoke-all's count, known only to its last batch |
//!
//! # One shipper at a time on one stream
//!
//! Every process reading the head of the one stream would ship each entry once per process.
//! So the processes take turns: the one named in `<prefix>shipper` ships, renewing its turn
//! each time it looks at the outbox; another takes the turn once the holder has not renewed it
//! for its hold (a few ship intervals: it died, or stopped). A process that must empty the
//! outbox now (a revocation waiting for PostgreSQL, a shutdown) ships out of turn; shipments
//! are idempotent, so two at once cost work, never correctness.
//!
//! # Finding entries on Cluster
//!
//! Reading 4096 streams on every shipment would cost Redis more than the changes do, so each
//! process keeps the shards it wrote to (or found entries in) as *dirty*, and reads only
//! those; a shard leaves the set when a read finds its stream empty and nothing marked it
//! meanwhile. A sweep of every shard runs at the first read and every [`SWEEP_EVERY`] after,
//! for what other processes left (one killed before its shipper ran, `sessiond revoke`). The
//! backlog a process reports is that of its dirty shards, read live.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::Value;
use sessiond_core::tier::{
    AuditEvent, AuditKind, DurableChange, EventId, OutboxBacklog, OutboxEntry, Position,
};
use sessiond_core::{Origin, SessionId, Shard, StoreError, Timestamp, UserId};
use tokio::task::JoinSet;

use crate::RedisStore;
use crate::codec::decode;
use crate::connection::{Connection, store_error};
use crate::keys::{OutboxLayout, id_from_unprefixed};
use crate::routing::{Backend, timed};

/// How often every shard's stream is read, for entries no process has marked.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Shards read at once.
const CHUNK: usize = 64;
/// Most entries read from one stream at a time.
const PER_STREAM: usize = 256;

/// The stream revoke-everyone records in (it belongs to no shard of its own).
pub(crate) fn everyone_stream() -> Shard {
    Shard::FIRST
}

/// The outbox of one process: its bound and what it knows of the streams.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Most entries one stream holds before changes that add data are refused.
    pub(crate) bound: u64,
    layout: OutboxLayout,
    /// What this process knows of the shards' streams (Cluster only).
    state: Mutex<State>,
    /// This process's id in the shipping turn (made at its first turn).
    turn_id: std::sync::OnceLock<String>,
}

#[derive(Debug, Default)]
struct State {
    /// Dirty shards, each with the mark it got when it became dirty (the order they are read
    /// in: a shard written to all the time is not pushed back behind the others) and the mark
    /// it was last given.
    dirty: HashMap<Shard, (u64, u64)>,
    /// The last mark given.
    marks: u64,
    /// When the last sweep of every stream ended.
    swept: Option<Instant>,
    /// While a sweep is under way (a read filled up before it reached the last shard): the
    /// index of the next shard it reads.
    sweeping: Option<usize>,
}

impl Outbox {
    /// An outbox of at most `bound` entries per stream, laid out as `layout`.
    pub(crate) fn new(bound: u64, layout: OutboxLayout) -> Self {
        Outbox {
            bound: bound.max(1),
            layout,
            state: Mutex::new(State::default()),
            turn_id: std::sync::OnceLock::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding it leaves nothing half-done: recover the guard.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `shard` as possibly holding entries (after every write to it, answered or not).
    /// The one stream of standalone and Sentinel is always read: nothing to mark.
    pub(crate) fn mark(&self, shard: Shard) {
        if self.layout == OutboxLayout::One {
            return;
        }
        let mut s = self.state();
        s.marks += 1;
        let mark = s.marks;
        s.dirty
            .entry(shard)
            .and_modify(|(_, last)| *last = mark)
            .or_insert((mark, mark));
    }

    /// The mark `shard` has now, 0 when it is not dirty.
    fn mark_of(&self, shard: Shard) -> u64 {
        self.state().dirty.get(&shard).map_or(0, |(_, last)| *last)
    }

    /// Forgets `shard` if nothing marked it since `mark`: its stream was just found empty.
    fn clean(&self, shard: Shard, mark: u64) {
        let mut s = self.state();
        if s.dirty.get(&shard).is_some_and(|(_, last)| *last == mark) {
            s.dirty.remove(&shard);
        }
    }

    /// The dirty shards with their last marks, longest dirty first.
    fn dirty(&self) -> Vec<(Shard, u64)> {
        let s = self.state();
        let mut dirty: Vec<(u64, Shard, u64)> = s
            .dirty
            .iter()
            .map(|(shard, (since, last))| (*since, *shard, *last))
            .collect();
        dirty.sort_unstable_by_key(|(since, _, _)| *since);
        dirty
            .into_iter()
            .map(|(_, shard, last)| (shard, last))
            .collect()
    }

    /// The shards a sweep still has to read, from where it stands (none when no sweep is
    /// due or under way).
    fn to_sweep(&self) -> Vec<Shard> {
        let mut s = self.state();
        let from = match s.sweeping {
            Some(next) => next,
            None if s.swept.is_none_or(|at| at.elapsed() >= SWEEP_EVERY) => 0,
            None => return Vec::new(),
        };
        s.sweeping = Some(from);
        Shard::all().skip(from).collect()
    }

    /// The sweep read `n` more shards.
    fn swept(&self, n: usize) {
        let mut s = self.state();
        let Some(next) = s.sweeping else {
            return;
        };
        if next + n >= Shard::COUNT {
            s.sweeping = None;
            s.swept = Some(Instant::now());
        } else {
            s.sweeping = Some(next + n);
        }
    }
}

/// The stream an entry was read from (and is removed from).
fn stream_of(entry: &OutboxEntry) -> Shard {
    match &entry.change {
        DurableChange::Live(record) => record.id.shard(),
        DurableChange::Ended(id) => id.shard(),
        DurableChange::UserEnded { user_id, .. } => user_id.shard(),
        DurableChange::AllEnded | DurableChange::Nothing => everyone_stream(),
    }
}

/// A stream id `ms-seq` as a position.
fn position(id: &[u8]) -> Option<Position> {
    let (ms, seq) = std::str::from_utf8(id).ok()?.split_once('-')?;
    Some(Position::from_parts(ms.parse().ok()?, seq.parse().ok()?))
}

/// A position as the stream id it came from.
fn stream_id(p: Position) -> String {
    let seq = p.0 & ((1 << Position::SEQUENCE_BITS) - 1);
    format!("{}-{seq}", p.0 >> Position::SEQUENCE_BITS)
}

/// The least stream id after position `p`'s (`XTRIM … MINID` keeps it and what follows).
fn stream_id_after(p: Position) -> String {
    let seq = p.0 & ((1 << Position::SEQUENCE_BITS) - 1);
    format!("{}-{}", p.0 >> Position::SEQUENCE_BITS, seq + 1)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("an outbox entry {what}").into())
}

fn bulk(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// One stream entry as read: its id and the fields the scripts write (the table above).
/// Fields it does not know are skipped, so an entry written by a newer sessiond still reads.
#[derive(Debug, Default)]
struct RawEntry {
    id: Vec<u8>,
    c: Option<Vec<u8>>,
    m: Option<Vec<u8>>,
    u: Option<Vec<u8>>,
    r: Option<Vec<u8>>,
    e: Option<Vec<u8>>,
    j: Option<Vec<u8>>,
    i: Option<Vec<u8>>,
    n: Option<Vec<u8>>,
    k: Option<Vec<u8>>,
}

impl RawEntry {
    /// Keeps `value` as field `name`.
    fn set(&mut self, name: &[u8], value: Vec<u8>) {
        let slot = match name {
            b"c" => &mut self.c,
            b"m" => &mut self.m,
            b"u" => &mut self.u,
            b"r" => &mut self.r,
            b"e" => &mut self.e,
            b"j" => &mut self.j,
            b"i" => &mut self.i,
            b"n" => &mut self.n,
            b"k" => &mut self.k,
            _ => return,
        };
        *slot = Some(value);
    }
}

/// The entries of an `XRANGE` reply, in its order. The shipper reads thousands a second, so
/// each field's bytes are moved out of the reply, never copied or put in a map.
fn stream_entries(reply: Value) -> Result<Vec<RawEntry>, StoreError> {
    let Value::Array(entries) = reply else {
        return Err(corrupt("stream reply is not an array"));
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err(corrupt("is not an array"));
        };
        let mut parts = parts.into_iter();
        let mut raw = RawEntry {
            id: parts
                .next()
                .and_then(bulk)
                .ok_or_else(|| corrupt("has no id"))?,
            ..RawEntry::default()
        };
        let mut field = |k: Value, v: Value| match (k, bulk(v)) {
            (Value::BulkString(k), Some(v)) => {
                raw.set(&k, v);
                Ok(())
            }
            (Value::SimpleString(k), Some(v)) => {
                raw.set(k.as_bytes(), v);
                Ok(())
            }
            _ => Err(corrupt("has a field that is not a string")),
        };
        match parts.next() {
            Some(Value::Array(flat)) => {
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    field(k, v)?;
                }
            }
            Some(Value::Map(pairs)) => {
                for (k, v) in pairs {
                    field(k, v)?;
                }
            }
            _ => return Err(corrupt("has no fields")),
        }
        out.push(raw);
    }
    Ok(out)
}

/// One stream entry as the entry it records.
fn decode_entry(raw: &RawEntry) -> Result<OutboxEntry, StoreError> {
    let session = |unprefixed: &[u8]| {
        id_from_unprefixed(unprefixed).ok_or_else(|| corrupt("names no session"))
    };
    let position = position(&raw.id).ok_or_else(|| corrupt("has an id that is no position"))?;
    let mut event = match &raw.e {
        Some(json) => Some(
            serde_json::from_slice::<AuditEvent>(json)
                .map_err(|e| StoreError::Corrupt(e.into()))?,
        ),
        None => None,
    };
    let member = raw.m.as_deref().unwrap_or_default();
    if let Some(ev) = &mut event {
        let derived = match raw.j.as_deref() {
            Some(b"ev") => Some(true),
            Some(b"rp") => Some(false),
            Some(_) => return Err(corrupt("derives an unknown event")),
            None => None,
        };
        if let Some(evicted) = derived {
            let by = ev
                .session_id
                .take()
                .ok_or_else(|| corrupt("derives from an event of no session"))?;
            let n = raw
                .i
                .as_deref()
                .and_then(|i| std::str::from_utf8(i).ok()?.parse::<u32>().ok())
                .ok_or_else(|| corrupt("has no index"))?;
            ev.id = ev.id.derive(n);
            ev.session_id = Some(session(member)?);
            ev.kind = if evicted {
                AuditKind::Evicted { by }
            } else {
                AuditKind::Replaced { by }
            };
        }
        if let (Some(n), AuditKind::RevokedAll { count, .. }) = (&raw.n, &mut ev.kind) {
            *count = std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| corrupt("has a count that is no number"))?;
        }
    }
    let change = match raw.c.as_deref() {
        Some(b"l") => {
            let record = raw.r.as_deref().ok_or_else(|| corrupt("has no record"))?;
            DurableChange::Live(decode(&session(member)?, record)?)
        }
        Some(b"x") => DurableChange::Ended(session(member)?),
        Some(b"u") => {
            let user_id = event
                .as_ref()
                .and_then(|e| e.user_id.clone())
                .ok_or_else(|| corrupt("ends the sessions of no user"))?;
            let kept = match raw.k.as_deref() {
                Some(k) if !k.is_empty() => Some(session(k)?),
                _ => None,
            };
            let ended = member
                .split(|&b| b == b' ')
                .filter(|m| !m.is_empty())
                .map(session)
                .collect::<Result<_, _>>()?;
            DurableChange::UserEnded {
                user_id,
                kept,
                ended,
            }
        }
        Some(b"a") => DurableChange::AllEnded,
        _ => return Err(corrupt("records an unknown change")),
    };
    // The user of an event sessiond built from the session id alone is in the record (a
    // patch, a rotation) or was read by the script (`u`: a logout, a revocation).
    if let Some(ev) = event.as_mut().filter(|e| e.user_id.is_none()) {
        ev.user_id = match (&change, raw.u.as_deref()) {
            (DurableChange::Live(record), _) => Some(record.user_id.clone()),
            (_, Some(user)) => std::str::from_utf8(user)
                .ok()
                .and_then(|u| UserId::parse(u).ok()),
            _ => None,
        };
    }
    Ok(OutboxEntry {
        position,
        event,
        change,
    })
}

impl RedisStore {
    /// A connection to where the outbox streams are: the primary, or the cluster.
    async fn outbox_connection(&self) -> Result<Connection, StoreError> {
        match &self.backend {
            Backend::Replicated(r) => r.primary().await,
            Backend::Cluster(c) => Ok(c.clone()),
        }
    }

    fn outbox_failed(&self, e: redis::RedisError) -> StoreError {
        if let Backend::Replicated(r) = &self.backend {
            r.primary_failed(&e);
        }
        store_error(e)
    }

    /// Sends every pipeline of `pipes` (each on one stream) at once, each bounded by the
    /// store's timeout (the connection writes them together), and gives the replies in order.
    async fn per_stream(&self, pipes: Vec<redis::Pipeline>) -> Result<Vec<Vec<Value>>, StoreError> {
        let conn = self.outbox_connection().await?;
        let mut tasks = JoinSet::new();
        let n = pipes.len();
        for (i, pipe) in pipes.into_iter().enumerate() {
            let (mut conn, timeout) = (conn.clone(), self.timeout);
            tasks.spawn(async move {
                let reply = timed(timeout, pipe.query_async::<Vec<Value>>(&mut conn)).await;
                (i, reply)
            });
        }
        let mut replies = vec![Vec::new(); n];
        let mut failed = None;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((i, Ok(reply))) => {
                    if let Some(slot) = replies.get_mut(i) {
                        *slot = reply;
                    }
                }
                Ok((_, Err(e))) => failed = Some(self.outbox_failed(e)),
                Err(e) => failed = Some(StoreError::internal(e)),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(replies),
        }
    }

    /// See [`SessionStore::outbox_read`](sessiond_core::SessionStore::outbox_read).
    pub(crate) async fn read_outbox(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let Some(outbox) = &self.outbox else {
            return Ok(Vec::new());
        };
        if outbox.layout == OutboxLayout::One {
            return self.read_one(max).await;
        }
        let mut out = Vec::new();
        // The dirty shards first, then (when one is due) the sweep, as far as `max` allows.
        let dirty = outbox.dirty();
        let mut read = HashSet::new();
        for chunk in dirty.chunks(CHUNK) {
            if out.len() >= max {
                break;
            }
            self.read_streams(outbox, chunk, max, &mut out).await?;
            read.extend(chunk.iter().map(|(s, _)| *s));
        }
        let sweep = outbox.to_sweep();
        for chunk in sweep.chunks(CHUNK) {
            if out.len() >= max {
                break;
            }
            // Found by the sweep: another process's entries, or those of one that died. A
            // stream read above is not read twice.
            let unmarked: Vec<(Shard, u64)> = chunk
                .iter()
                .filter(|s| !read.contains(s))
                .map(|s| (*s, 0))
                .collect();
            self.read_streams(outbox, &unmarked, max, &mut out).await?;
            outbox.swept(chunk.len());
        }
        // Each stream's entries are in order; across streams, by Redis's clock.
        out.sort_by_key(|e| e.position);
        out.truncate(max);
        Ok(out)
    }

    /// The oldest `max` entries of the one stream (which every shard's name gives).
    async fn read_one(&self, max: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XRANGE")
            .arg(self.keys.outbox(everyone_stream()))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(max);
        let reply = self.per_stream(vec![pipe]).await?;
        let entries = match reply.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(v) => stream_entries(v)?,
            None => Vec::new(),
        };
        entries.iter().map(decode_entry).collect()
    }

    /// Reads the oldest entries of the streams of `shards` into `out`, up to `max` in all:
    /// all streams at once, then again those that had more. Marks the streams found holding
    /// entries, and forgets those found empty.
    async fn read_streams(
        &self,
        outbox: &Outbox,
        shards: &[(Shard, u64)],
        max: usize,
        out: &mut Vec<OutboxEntry>,
    ) -> Result<(), StoreError> {
        if shards.is_empty() {
            return Ok(());
        }
        let want = max.saturating_sub(out.len()).min(PER_STREAM);
        let range = |shard: Shard, after: Option<&[u8]>, count: usize| {
            let mut p = redis::pipe();
            let cmd = p.cmd("XRANGE").arg(self.keys.outbox(shard));
            match after {
                Some(id) => cmd.arg([b"(", id].concat()),
                None => cmd.arg("-"),
            };
            cmd.arg("+").arg("COUNT").arg(count);
            p
        };
        let pipes = shards.iter().map(|(s, _)| range(*s, None, want)).collect();
        let replies = self.per_stream(pipes).await?;
        let mut more = Vec::new();
        for ((shard, mark), reply) in shards.iter().zip(replies) {
            let entries = match reply.into_iter().next() {
                Some(v) => stream_entries(v)?,
                None => Vec::new(),
            };
            if entries.is_empty() {
                outbox.clean(*shard, *mark);
                continue;
            }
            if *mark == 0 {
                outbox.mark(*shard);
            }
            for raw in &entries {
                out.push(decode_entry(raw)?);
            }
            if entries.len() == want
                && let Some(last) = entries.last()
            {
                more.push((*shard, last.id.clone()));
            }
        }
        // A stream with a backlog of its own (one busy user) is read on, one at a time.
        for (shard, mut last) in more {
            while out.len() < max {
                let count = max - out.len();
                let reply = self
                    .per_stream(vec![range(shard, Some(&last), count)])
                    .await?
                    .into_iter()
                    .next()
                    .and_then(|r| r.into_iter().next());
                let entries = match reply {
                    Some(v) => stream_entries(v)?,
                    None => Vec::new(),
                };
                for raw in &entries {
                    out.push(decode_entry(raw)?);
                }
                match entries.last() {
                    Some(raw) if entries.len() == count => last = raw.id.clone(),
                    _ => break,
                }
            }
        }
        Ok(())
    }

    /// See [`SessionStore::outbox_turn`](sessiond_core::SessionStore::outbox_turn): on the one
    /// stream, whether this process holds the turn (taking it when free); with a stream per
    /// shard, each process reads the shards it wrote to, so always.
    pub(crate) async fn outbox_turn_now(&self, hold: Duration) -> Result<bool, StoreError> {
        let Some(outbox) = &self.outbox else {
            return Ok(true);
        };
        if outbox.layout == OutboxLayout::PerShard {
            return Ok(true);
        }
        let me = match outbox.turn_id.get() {
            Some(id) => id.clone(),
            None => {
                let id = EventId::generate()
                    .map_err(StoreError::internal)?
                    .to_string();
                outbox.turn_id.get_or_init(|| id).clone()
            }
        };
        let (me, key) = (&me, &self.keys.ship_turn());
        let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1);
        let held: i64 = self
            .call(|mut c| async move {
                crate::scripts::SHIP_TURN
                    .key(key)
                    .arg(me)
                    .arg(hold_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(held == 1)
    }

    /// See [`SessionStore::outbox_remove`](sessiond_core::SessionStore::outbox_remove).
    pub(crate) async fn remove_from_outbox(
        &self,
        shipped: &[OutboxEntry],
    ) -> Result<(), StoreError> {
        let Some(outbox) = &self.outbox else {
            return Ok(());
        };
        if shipped.is_empty() {
            return Ok(());
        }
        if outbox.layout == OutboxLayout::One {
            // `shipped` is the head of the stream as `read_one` found it, and an entry added
            // since has a greater id than every entry there was: trimming below the newest
            // shipped id removes exactly the shipped entries (and any another shipper removed
            // already), freeing whole nodes of the stream instead of marking ids one by one.
            let Some(newest) = shipped.iter().map(|e| e.position).max() else {
                return Ok(());
            };
            let mut pipe = redis::pipe();
            pipe.cmd("XTRIM")
                .arg(self.keys.outbox(everyone_stream()))
                .arg("MINID")
                .arg(stream_id_after(newest))
                .ignore();
            self.per_stream(vec![pipe]).await?;
            return Ok(());
        }
        let mut by_stream: HashMap<Shard, Vec<String>> = HashMap::new();
        for entry in shipped {
            by_stream
                .entry(stream_of(entry))
                .or_default()
                .push(stream_id(entry.position));
        }
        // The marks before the removal: a stream found empty right after it is forgotten,
        // unless a write marked it since (its entry would then be there, or come after).
        let streams: Vec<(Shard, u64, Vec<String>)> = by_stream
            .into_iter()
            .map(|(shard, ids)| (shard, outbox.mark_of(shard), ids))
            .collect();
        for chunk in streams.chunks(CHUNK) {
            let pipes = chunk
                .iter()
                .map(|(shard, _, ids)| {
                    let key = self.keys.outbox(*shard);
                    let mut p = redis::pipe();
                    p.cmd("XDEL").arg(&key).arg(ids).ignore();
                    p.cmd("XLEN").arg(&key);
                    p
                })
                .collect();
            let replies = self.per_stream(pipes).await?;
            for ((shard, mark, _), reply) in chunk.iter().zip(replies) {
                if matches!(reply.first(), Some(Value::Int(0))) && *mark != 0 {
                    outbox.clean(*shard, *mark);
                }
            }
        }
        Ok(())
    }

    /// See [`SessionStore::outbox_backlog`](sessiond_core::SessionStore::outbox_backlog).
    pub(crate) async fn outbox_backlog_now(&self) -> Result<Option<OutboxBacklog>, StoreError> {
        let Some(outbox) = &self.outbox else {
            return Ok(None);
        };
        let mut backlog = OutboxBacklog::default();
        let streams = match outbox.layout {
            OutboxLayout::One => vec![(everyone_stream(), 0)],
            OutboxLayout::PerShard => outbox.dirty(),
        };
        for chunk in streams.chunks(CHUNK) {
            let pipes = chunk
                .iter()
                .map(|(shard, _)| {
                    let key = self.keys.outbox(*shard);
                    let mut p = redis::pipe();
                    p.cmd("XLEN").arg(&key);
                    p.cmd("XRANGE")
                        .arg(&key)
                        .arg("-")
                        .arg("+")
                        .arg("COUNT")
                        .arg(1);
                    p
                })
                .collect();
            let replies = self.per_stream(pipes).await?;
            for ((shard, mark), reply) in chunk.iter().zip(replies) {
                let mut reply = reply.into_iter();
                let len = match reply.next() {
                    Some(Value::Int(n)) => u64::try_from(n).unwrap_or(0),
                    _ => 0,
                };
                if len == 0 {
                    outbox.clean(*shard, *mark);
                    continue;
                }
                backlog.entries += len;
                let first = match reply.next() {
                    Some(v) => stream_entries(v)?,
                    None => Vec::new(),
                };
                if let Some(p) = first.first().and_then(|raw| position(&raw.id)) {
                    backlog.oldest = Some(backlog.oldest.map_or(p, |o| o.min(p)));
                }
            }
        }
        Ok(Some(backlog))
    }

    /// Marks `shard`'s stream as possibly holding entries, if there is an outbox.
    pub(crate) fn outbox_mark(&self, shard: Shard) {
        if let Some(outbox) = &self.outbox {
            outbox.mark(shard);
        }
    }

    /// The bound the scripts get: 0 keeps no outbox.
    pub(crate) fn outbox_bound(&self) -> u64 {
        self.outbox.as_ref().map_or(0, |o| o.bound)
    }

    /// The event a script records, as the JSON it stores (empty when there is no outbox: the
    /// scripts then record nothing, and the hot path builds nothing).
    pub(crate) fn event(
        &self,
        origin: Origin<'_>,
        kind: AuditKind,
        at: Timestamp,
        session: Option<&SessionId>,
        user: Option<&UserId>,
    ) -> Result<String, StoreError> {
        if self.outbox.is_none() {
            return Ok(String::new());
        }
        let event = AuditEvent {
            id: EventId::generate().map_err(StoreError::internal)?,
            at,
            kind,
            session_id: session.cloned(),
            user_id: user.cloned(),
            actor: origin.actor,
            client_addr: origin.client.address,
            user_agent: origin.client.user_agent.map(str::to_owned),
        };
        serde_json::to_string(&event).map_err(StoreError::internal)
    }
}

/// The error a change refused by a full outbox answers (503: the tier has not taken entries
/// for a while).
pub(crate) fn full() -> StoreError {
    StoreError::unavailable(
        "the outbox is full: the durable tier has not taken entries for a while",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_stream_ids_are_one_another() {
        for id in ["1700000000000-0", "1700000000000-17", "0-1"] {
            let p = position(id.as_bytes()).unwrap_or_default();
            assert_eq!(stream_id(p), id);
        }
        let p = position(b"1700000000000-17").unwrap_or_default();
        assert_eq!(stream_id_after(p), "1700000000000-18");
        assert!(position(stream_id_after(p).as_bytes()) > Some(p));
        assert!(position(b"12").is_none());
        assert!(position(b"a-1").is_none());
        assert!(
            position(b"1-0") < position(b"1-1") && position(b"1-1") < position(b"2-0"),
            "stream order is position order"
        );
    }

    #[test]
    fn revoke_everyone_has_a_stream() {
        assert_eq!(everyone_stream().as_str(), "AA");
        assert_eq!(Shard::all().count(), Shard::COUNT);
    }

    #[test]
    fn an_entry_of_unknown_shape_is_corrupt_not_a_panic() {
        let mut raw = RawEntry {
            id: b"1-0".to_vec(),
            ..RawEntry::default()
        };
        assert!(decode_entry(&raw).is_err(), "no change");
        raw.set(b"c", b"x".to_vec());
        assert!(decode_entry(&raw).is_err(), "no member");
        raw.set(b"m", b"short".to_vec());
        assert!(decode_entry(&raw).is_err(), "not a member");
        raw.set(b"c", b"a".to_vec());
        raw.set(b"zz", b"a field of a later version".to_vec());
        assert!(matches!(
            decode_entry(&raw).map(|e| e.change),
            Ok(DurableChange::AllEnded)
        ));
        raw.set(b"e", b"{not json".to_vec());
        assert!(decode_entry(&raw).is_err(), "bad event");
        raw.id = b"not-an-id".to_vec();
        assert!(decode_entry(&raw).is_err(), "bad id");
    }
}
