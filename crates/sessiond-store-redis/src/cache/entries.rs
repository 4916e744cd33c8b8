//! The near cache's entries: session records by Redis key, bounded by count and by bytes.
//!
//! A read that misses first leaves a placeholder ([`Entries::reserve`]), then reads Redis,
//! then fills the placeholder ([`Entries::fill`]) only if it is still there. An invalidation
//! or a flush removes placeholders with the values, so a value read before a write whose
//! invalidation arrived first is never stored (it would otherwise stay until the session
//! expires). A placeholder also carries the channel's epoch: one left by a read on a channel
//! that has since been replaced is refused, because that channel's invalidations will never
//! come.
//!
//! The map is split into shards, each behind its own mutex, so validations of different
//! sessions rarely wait for each other. A full shard evicts in insertion order, giving an
//! entry read since its last pass a second chance (the CLOCK approximation of least recently
//! used).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Map;
use sessiond_core::{SessionRecord, Timestamp};

/// Number of shards. A power of two well above the worker count: two cores contend on one
/// shard one time in 64.
const SHARDS: usize = 64;

/// What an entry costs beyond its stored bytes and key: the map slot, the record's fixed
/// fields, the queue entry.
const ENTRY_OVERHEAD: usize = 256;

/// A placeholder's claim: only the read that left it may fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    id: u64,
    epoch: u64,
}

#[derive(Debug)]
enum Slot {
    /// A read is in flight.
    Pending(Ticket),
    /// A live record, as Redis held it when it was read.
    Ready {
        record: SessionRecord,
        bytes: usize,
        referenced: bool,
    },
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, Slot>,
    /// Keys in insertion order, for eviction; may name keys already gone (skipped).
    order: VecDeque<String>,
    bytes: usize,
    ready: usize,
}

impl Shard {
    fn remove(&mut self, key: &str) -> bool {
        match self.map.remove(key) {
            Some(Slot::Ready { bytes, .. }) => {
                self.bytes -= bytes;
                self.ready -= 1;
                true
            }
            Some(Slot::Pending(_)) => true,
            None => false,
        }
    }

    /// Evicts until one more entry of `incoming` bytes fits.
    fn make_room(&mut self, incoming: usize, max_entries: usize, max_bytes: usize) {
        let mut passes = self.order.len() * 2;
        while (self.ready + 1 > max_entries || self.bytes + incoming > max_bytes) && passes > 0 {
            passes -= 1;
            let Some(key) = self.order.pop_front() else {
                return;
            };
            match self.map.get_mut(&key) {
                Some(Slot::Ready { referenced, .. }) if *referenced => {
                    *referenced = false;
                    self.order.push_back(key);
                }
                Some(Slot::Ready { .. }) => {
                    self.remove(&key);
                }
                _ => {}
            }
        }
    }

    /// Drops queue entries for keys no longer cached, once they outnumber the cached ones.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.ready + 64 {
            let map = &self.map;
            self.order
                .retain(|k| matches!(map.get(k), Some(Slot::Ready { .. })));
        }
    }
}

/// The entries, and the counts the metrics report.
#[derive(Debug)]
pub(crate) struct Entries {
    shards: Box<[Mutex<Shard>]>,
    max_entries: usize,
    max_bytes: usize,
    epoch: AtomicU64,
    tickets: AtomicU64,
}

/// `record` as a read answers it: whole, or (`user_data` false, the gateway's check, which needs
/// only the identity) without its `userData`, which is then never copied.
pub(crate) fn answer(record: &SessionRecord, user_data: bool) -> SessionRecord {
    if user_data {
        return record.clone();
    }
    SessionRecord {
        id: record.id.clone(),
        user_id: record.user_id.clone(),
        secret_hash: record.secret_hash.clone(),
        created_at: record.created_at,
        last_activity: record.last_activity,
        idle_timeout_ms: record.idle_timeout_ms,
        absolute_expires_at: record.absolute_expires_at,
        version: record.version,
        user_data: Map::new(),
        metadata: record.metadata.clone(),
    }
}

/// What [`Entries::get`] found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A live record.
    Hit(SessionRecord),
    /// Nothing usable: not cached, a read in flight, or a record no longer live at `now`.
    Miss,
}

impl Entries {
    /// Entries bounded by `max_entries` and `max_bytes` in all (each shard holds its share).
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Entries {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            max_entries: max_entries.div_ceil(SHARDS).max(1),
            max_bytes: max_bytes.div_ceil(SHARDS).max(ENTRY_OVERHEAD),
            epoch: AtomicU64::new(0),
            tickets: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        // FNV-1a: the key ends in the session id's random part, so any hash spreads it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let i = usize::try_from(h % SHARDS as u64).unwrap_or(0);
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The channel's epoch now (see [`Entries::flush`]).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The record cached for `key` if it is live at `now`, as [`answer`] gives it.
    pub(crate) fn get(&self, key: &str, now: Timestamp, user_data: bool) -> Lookup {
        let mut shard = self.shard(key);
        match shard.map.get_mut(key) {
            Some(Slot::Ready {
                record, referenced, ..
            }) if record.is_live(now) => {
                *referenced = true;
                Lookup::Hit(answer(record, user_data))
            }
            _ => Lookup::Miss,
        }
    }

    /// Leaves a placeholder for a read about to be sent on the channel of `epoch`, unless
    /// that channel is already replaced or another read is in flight for `key` (then this
    /// read is served but not stored).
    pub(crate) fn reserve(&self, key: &str, epoch: u64) -> Option<Ticket> {
        let mut shard = self.shard(key);
        // Checked under the shard's lock: a flush moves the epoch before it clears the
        // shards, so either this sees the new epoch or the flush clears this placeholder.
        if self.epoch() != epoch {
            return None;
        }
        let ticket = Ticket {
            id: self.tickets.fetch_add(1, Ordering::Relaxed),
            epoch,
        };
        match shard.map.get(key) {
            Some(Slot::Pending(_)) => None,
            Some(Slot::Ready { .. }) => {
                // Cached but no longer live at the reader's `now`: read it again.
                shard.remove(key);
                shard.map.insert(key.to_owned(), Slot::Pending(ticket));
                Some(ticket)
            }
            None => {
                shard.map.insert(key.to_owned(), Slot::Pending(ticket));
                Some(ticket)
            }
        }
    }

    /// Stores `record` in place of the placeholder `ticket` left, if it is still there and
    /// its channel still current; `stored` is the record's size in Redis.
    pub(crate) fn fill(&self, key: &str, ticket: Ticket, record: SessionRecord, stored: usize) {
        let mut shard = self.shard(key);
        if !matches!(shard.map.get(key), Some(Slot::Pending(t)) if *t == ticket)
            || self.epoch() != ticket.epoch
        {
            return;
        }
        let bytes = stored + key.len() + ENTRY_OVERHEAD;
        shard.map.remove(key);
        if bytes > self.max_bytes {
            return;
        }
        shard.make_room(bytes, self.max_entries, self.max_bytes);
        shard.map.insert(
            key.to_owned(),
            Slot::Ready {
                record,
                bytes,
                referenced: false,
            },
        );
        shard.ready += 1;
        shard.bytes += bytes;
        shard.order.push_back(key.to_owned());
        shard.compact();
    }

    /// Takes back a placeholder whose read stored nothing (no live record, or an error).
    pub(crate) fn cancel(&self, key: &str, ticket: Ticket) {
        let mut shard = self.shard(key);
        if matches!(shard.map.get(key), Some(Slot::Pending(t)) if *t == ticket) {
            shard.map.remove(key);
        }
    }

    /// Drops `key`, value or placeholder: an invalidation, or this process's own write.
    /// Returns whether anything was there.
    pub(crate) fn invalidate(&self, key: &str) -> bool {
        let mut shard = self.shard(key);
        shard.remove(key)
    }

    /// Drops everything and moves the epoch, so no read in flight stores what it gets.
    pub(crate) fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for shard in &*self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *shard = Shard::default();
        }
    }

    /// Cached records and their bytes, for the metrics: kept per shard on every change and
    /// summed only here, so the hot path never touches a counter shared by all shards.
    pub(crate) fn totals(&self) -> (usize, usize) {
        let (mut entries, mut bytes) = (0, 0);
        for shard in &*self.shards {
            let shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            entries += shard.ready;
            bytes += shard.bytes;
        }
        (entries, bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sessiond_core::{SessionId, Token, UserId};

    use super::*;

    fn record() -> SessionRecord {
        let user = UserId::parse("u").unwrap();
        let token = Token::generate(&user).unwrap();
        let now = Timestamp::from_millis(1_000);
        SessionRecord {
            id: SessionId::parse(token.session_id().as_str()).unwrap(),
            user_id: user,
            secret_hash: token.secret_hash(),
            created_at: now,
            last_activity: now,
            idle_timeout_ms: 60_000,
            absolute_expires_at: now.saturating_add(Duration::from_secs(3600)),
            version: 1,
            user_data: Map::new(),
            metadata: Map::new(),
        }
    }

    const NOW: Timestamp = Timestamp::from_millis(2_000);

    #[test]
    fn a_read_fills_its_placeholder_and_is_then_a_hit() {
        let e = Entries::new(100, 1 << 20);
        let t = e.reserve("k", e.epoch()).unwrap();
        assert!(matches!(e.get("k", NOW, true), Lookup::Miss));
        e.fill("k", t, record(), 100);
        assert!(matches!(e.get("k", NOW, true), Lookup::Hit(_)));
        assert_eq!(e.totals().0, 1);
    }

    #[test]
    fn an_invalidation_before_the_reply_keeps_the_reply_out() {
        let e = Entries::new(100, 1 << 20);
        let t = e.reserve("k", e.epoch()).unwrap();
        // The write's invalidation arrives before the (now stale) read reply is stored.
        assert!(e.invalidate("k"));
        e.fill("k", t, record(), 100);
        assert!(matches!(e.get("k", NOW, true), Lookup::Miss));
        // A later read's placeholder is not the earlier read's to fill.
        let later = e.reserve("k", e.epoch()).unwrap();
        e.fill("k", t, record(), 100);
        assert!(matches!(e.get("k", NOW, true), Lookup::Miss));
        e.fill("k", later, record(), 100);
        assert!(matches!(e.get("k", NOW, true), Lookup::Hit(_)));
    }

    #[test]
    fn a_flush_keeps_out_every_read_in_flight_and_reads_of_the_old_channel() {
        let e = Entries::new(100, 1 << 20);
        let old = e.epoch();
        let t = e.reserve("k", old).unwrap();
        e.flush();
        e.fill("k", t, record(), 100);
        assert!(matches!(e.get("k", NOW, true), Lookup::Miss));
        // A read that took the old channel before the flush leaves no placeholder.
        assert!(e.reserve("k", old).is_none());
        assert!(e.reserve("k", e.epoch()).is_some());
    }

    #[test]
    fn a_second_read_in_flight_is_served_but_not_stored() {
        let e = Entries::new(100, 1 << 20);
        let first = e.reserve("k", e.epoch()).unwrap();
        assert!(e.reserve("k", e.epoch()).is_none());
        e.fill("k", first, record(), 100);
        assert!(matches!(e.get("k", NOW, true), Lookup::Hit(_)));
    }

    #[test]
    fn an_expired_record_is_a_miss() {
        let e = Entries::new(100, 1 << 20);
        let t = e.reserve("k", e.epoch()).unwrap();
        e.fill("k", t, record(), 100);
        let later = NOW.saturating_add(Duration::from_secs(61));
        assert!(matches!(e.get("k", later, true), Lookup::Miss));
    }

    #[test]
    fn the_bounds_hold_and_recently_read_entries_survive() {
        // 64 shards of 2 entries each.
        let e = Entries::new(128, 1 << 30);
        for i in 0..2_000 {
            let key = format!("k{i}");
            let t = e.reserve(&key, e.epoch()).unwrap();
            e.fill(&key, t, record(), 100);
            // k0 is read between every insertion: its second chance keeps it.
            let _ = e.get("k0", NOW, true);
        }
        let (entries, _) = e.totals();
        assert!(entries <= 128, "{entries} entries");
        assert!(matches!(e.get("k0", NOW, true), Lookup::Hit(_)));
        let by_bytes = Entries::new(1_000_000, 64 * 4 * (ENTRY_OVERHEAD + 200));
        for i in 0..2_000 {
            let key = format!("k{i}");
            let t = by_bytes.reserve(&key, by_bytes.epoch()).unwrap();
            by_bytes.fill(&key, t, record(), 200);
        }
        let (entries, bytes) = by_bytes.totals();
        assert!(bytes <= 64 * 4 * (ENTRY_OVERHEAD + 200), "{bytes} bytes");
        assert!(entries <= 64 * 4, "{entries} entries");
    }

    #[test]
    fn identity_reads_leave_user_data_out() {
        let e = Entries::new(100, 1 << 20);
        let t = e.reserve("k", e.epoch()).unwrap();
        let mut r = record();
        r.user_data.insert("cart".into(), serde_json::json!([1]));
        e.fill("k", t, r, 100);
        let Lookup::Hit(full) = e.get("k", NOW, true) else {
            panic!("a hit")
        };
        let Lookup::Hit(identity) = e.get("k", NOW, false) else {
            panic!("a hit")
        };
        assert_eq!(full.user_data.len(), 1);
        assert!(identity.user_data.is_empty());
        assert_eq!(identity.id, full.id);
    }
}
