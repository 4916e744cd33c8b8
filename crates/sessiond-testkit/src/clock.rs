//! A clock a test moves forward, so expiry tests advance time instead of sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sessiond_core::{Clock, Timestamp};

/// The wall clock as it read when the clock was made, run on by the monotonic clock, plus an
/// offset the test advances. It keeps running on its own (activity times still move between
/// requests), and [`advance`](Self::advance) jumps it forward: a session's expiry is reached at
/// once, on every engine, because every decision takes its `now` from this clock.
///
/// Only the test moves it. A step of the machine's wall clock while a test runs (a virtual
/// machine resumed, or its date set, after a pause) would otherwise expire every session the
/// test holds at once, and the test would fail for a reason that is not the code's.
#[derive(Debug)]
pub struct TestClock {
    wall_at_start: SystemTime,
    started: Instant,
    offset_ms: AtomicU64,
}

impl Default for TestClock {
    fn default() -> Self {
        TestClock {
            wall_at_start: SystemTime::now(),
            started: Instant::now(),
            offset_ms: AtomicU64::new(0),
        }
    }
}

impl TestClock {
    /// The wall clock, not yet advanced.
    pub fn new() -> Self {
        TestClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        let wall = (self.wall_at_start + self.started.elapsed())
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Timestamp::from_millis(wall.saturating_add(self.offset_ms.load(Ordering::SeqCst)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_now_forward_by_at_least_the_amount() {
        let clock = TestClock::new();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        let after = clock.now();
        assert!(after.saturating_since(before) >= Duration::from_secs(3600));
    }
}
