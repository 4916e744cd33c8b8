//! A bounded table of per-key time windows (the invalid-token guard's per-client counts, the
//! log's once-a-minute binding reports), whose ended windows are evicted oldest first in
//! constant amortized time.
//!
//! A table that had to scan itself for ended windows whenever it was full would make every new
//! key cost a walk over all of them under one lock: exactly what a spray from many addresses
//! does. Here every window's start is also queued in time order, so ending windows are popped
//! from the front as time passes, and a full table of live windows refuses a new key at once.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Keys with the start of their current window and a value, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct Windows<K, V> {
    length: Duration,
    capacity: usize,
    live: HashMap<K, (Instant, V)>,
    /// Every window start, oldest first; an entry whose key has since started a newer window
    /// is stale and skipped when it reaches the front.
    starts: VecDeque<(K, Instant)>,
}

impl<K: Hash + Eq + Clone, V> Windows<K, V> {
    /// Windows of `length`, for at most `capacity` keys at once.
    pub(crate) fn new(length: Duration, capacity: usize) -> Self {
        Windows {
            length,
            capacity,
            live: HashMap::new(),
            starts: VecDeque::new(),
        }
    }

    /// Drops every window that has ended by `now`.
    fn evict_ended(&mut self, now: Instant) {
        while let Some((key, started)) = self.starts.front() {
            if now.duration_since(*started) < self.length {
                break;
            }
            if self.live.get(key).is_some_and(|(s, _)| s == started) {
                self.live.remove(key);
            }
            self.starts.pop_front();
        }
    }

    /// The value of `key`'s window if it is still open at `now`.
    pub(crate) fn get(&self, key: &K, now: Instant) -> Option<&V> {
        self.live
            .get(key)
            .filter(|(started, _)| now.duration_since(*started) < self.length)
            .map(|(_, v)| v)
    }

    /// `key`'s open window (`false`: it was open already), or a new one starting at `now`
    /// with `fresh()` (`true`). `None` when the table is full of open windows: the key is
    /// not tracked until one ends.
    pub(crate) fn open(
        &mut self,
        key: &K,
        now: Instant,
        fresh: impl FnOnce() -> V,
    ) -> Option<(&mut V, bool)> {
        self.evict_ended(now);
        let open = self
            .live
            .get(key)
            .is_some_and(|(started, _)| now.duration_since(*started) < self.length);
        if !open {
            if !self.live.contains_key(key) && self.live.len() >= self.capacity {
                return None;
            }
            self.live.insert(key.clone(), (now, fresh()));
            self.starts.push_back((key.clone(), now));
        }
        self.live.get_mut(key).map(|(_, v)| (v, !open))
    }

    /// The start of `key`'s open window.
    pub(crate) fn started(&self, key: &K, now: Instant) -> Option<Instant> {
        self.live
            .get(key)
            .map(|(s, _)| *s)
            .filter(|s| now.duration_since(*s) < self.length)
    }

    /// How many keys are tracked (open windows, and ended ones not yet evicted).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_opens_counts_and_ends() {
        let mut w: Windows<u32, u32> = Windows::new(Duration::from_secs(60), 10);
        let t = Instant::now();
        let (v, new) = w.open(&1, t, || 0).unwrap();
        assert!(new);
        *v += 1;
        let (v, new) = w.open(&1, t + Duration::from_secs(59), || 0).unwrap();
        assert!(!new, "still open");
        *v += 1;
        assert_eq!(w.get(&1, t + Duration::from_secs(59)), Some(&2));
        assert_eq!(w.get(&1, t + Duration::from_secs(60)), None, "ended");
        let (v, new) = w.open(&1, t + Duration::from_secs(60), || 0).unwrap();
        assert!(new, "a new window");
        assert_eq!(*v, 0);
    }

    #[test]
    fn a_full_table_refuses_new_keys_until_windows_end_and_then_evicts_them() {
        let mut w: Windows<u32, ()> = Windows::new(Duration::from_secs(60), 3);
        let t = Instant::now();
        for k in 0..3 {
            assert!(w.open(&k, t, || ()).is_some());
        }
        assert!(
            w.open(&9, t + Duration::from_secs(1), || ()).is_none(),
            "full"
        );
        assert!(
            w.open(&0, t + Duration::from_secs(1), || ()).is_some(),
            "known keys stay"
        );
        assert!(
            w.open(&9, t + Duration::from_secs(60), || ()).is_some(),
            "ended ones left"
        );
        assert_eq!(w.len(), 1, "the three ended windows were evicted");
    }

    #[test]
    fn a_reopened_window_is_not_evicted_by_its_older_start() {
        let mut w: Windows<u32, ()> = Windows::new(Duration::from_secs(60), 10);
        let t = Instant::now();
        w.open(&1, t, || ());
        w.open(&1, t + Duration::from_secs(61), || ());
        // The first start reaches the front and is stale: the reopened window stays.
        w.open(&2, t + Duration::from_secs(62), || ());
        assert_eq!(
            w.started(&1, t + Duration::from_secs(62)),
            Some(t + Duration::from_secs(61))
        );
    }
}
