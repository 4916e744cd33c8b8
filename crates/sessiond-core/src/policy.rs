//! The rules a deployment chooses: timeouts, touch interval, the per-user cap, and limits on
//! the JSON a session may carry.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What happens when a user already has the maximum number of live sessions and logs in again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AtCap {
    /// End the session with the oldest activity and create the new one. Logging in on a new
    /// device always works; the longest-unused device is signed out.
    #[default]
    EvictOldest,
    /// Refuse the new session (`409`) until one ends.
    Reject,
}

/// The per-user cap an engine enforces atomically on create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimit {
    /// Most live sessions a user may hold; `None` for no cap.
    pub max_per_user: Option<u32>,
    /// What to do at the cap.
    pub at_cap: AtCap,
}

/// Bounds on the JSON a session stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataLimits {
    /// Largest `userData`, in bytes of compact JSON.
    pub max_user_data_bytes: usize,
    /// Largest `metadata`, in bytes of compact JSON.
    pub max_metadata_bytes: usize,
    /// Deepest nesting of a stored document (an object holding an object is depth 2). Kept well
    /// below the parser's own limit so nothing that walks stored data can recurse deeply.
    pub max_depth: usize,
}

impl Default for DataLimits {
    fn default() -> Self {
        DataLimits {
            max_user_data_bytes: 16 * 1024,
            max_metadata_bytes: 4 * 1024,
            max_depth: 32,
        }
    }
}

/// Session rules for a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Sliding idle timeout (default 24 h).
    pub idle_timeout: Duration,
    /// Absolute lifetime from creation (default 7 days).
    pub absolute_timeout: Duration,
    /// Activity is written at most once per interval (default 60 s), so validations stay reads.
    pub touch_interval: Duration,
    /// Smallest `ttlSeconds` a creator may ask for.
    pub min_ttl: Duration,
    /// The per-user cap.
    pub limit: SessionLimit,
    /// Bounds on stored JSON.
    pub data: DataLimits,
    /// The top-level `userData` keys a token holder may patch on its own session (default
    /// `preferences` and `cart`; `*` for every key). Every other key is the backend's alone: a
    /// holder cannot grant itself `permissions` or a `role` that the backend then reads.
    pub holder_writable: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            idle_timeout: Duration::from_secs(24 * 3600),
            absolute_timeout: Duration::from_secs(7 * 24 * 3600),
            touch_interval: Duration::from_secs(60),
            min_ttl: Duration::from_secs(1),
            limit: SessionLimit {
                max_per_user: Some(100),
                at_cap: AtCap::EvictOldest,
            },
            data: DataLimits::default(),
            holder_writable: vec!["preferences".into(), "cart".into()],
        }
    }
}

impl Policy {
    /// The idle timeout for a new session: the creator's request clamped to
    /// `[min_ttl, absolute_timeout]`, or the default.
    pub fn idle_timeout_for(&self, requested: Option<Duration>) -> Duration {
        match requested {
            Some(d) => d.clamp(self.min_ttl, self.absolute_timeout.max(self.min_ttl)),
            None => self.idle_timeout.min(self.absolute_timeout),
        }
    }

    /// Whether a token holder may write the top-level `userData` key `key` (with `"*"`:
    /// whether it may write every key).
    pub fn holder_may_write(&self, key: &str) -> bool {
        self.holder_writable.iter().any(|k| k == key || k == "*")
    }

    /// How stale recorded activity may get before a validation writes it. Never more than half
    /// the session's idle timeout, so a session in steady use cannot idle out between touches.
    pub fn touch_interval_for(&self, idle_timeout: Duration) -> Duration {
        self.touch_interval.min(idle_timeout / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d06_ttl_is_clamped() {
        let p = Policy::default();
        assert_eq!(p.idle_timeout_for(None), Duration::from_secs(86_400));
        assert_eq!(
            p.idle_timeout_for(Some(Duration::ZERO)),
            Duration::from_secs(1)
        );
        assert_eq!(p.idle_timeout_for(Some(Duration::MAX)), p.absolute_timeout);
    }

    /// The defaults SECURITY.md and README.md document (S8), and the settings they give for
    /// NIST SP 800-63B-4 AAL2 and AAL3 behave as documented.
    #[test]
    fn s08_default_timeouts_are_the_documented_ones_and_configurable() {
        let p = Policy::default();
        assert_eq!(p.idle_timeout, Duration::from_secs(24 * 3600));
        assert_eq!(p.absolute_timeout, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(p.touch_interval, Duration::from_secs(60));
        assert_eq!(p.limit.max_per_user, Some(100));
        assert_eq!(p.limit.at_cap, AtCap::EvictOldest);
        for (idle, absolute) in [(3600, 24 * 3600), (15 * 60, 12 * 3600)] {
            let p = Policy {
                idle_timeout: Duration::from_secs(idle),
                absolute_timeout: Duration::from_secs(absolute),
                ..Policy::default()
            };
            assert_eq!(p.idle_timeout_for(None), Duration::from_secs(idle));
            // The touch lag only ever ends a session earlier: the interval is at most half
            // the idle timeout.
            assert!(p.touch_interval_for(p.idle_timeout) <= p.idle_timeout / 2);
        }
        // An idle timeout above the absolute one is cut to it.
        let p = Policy {
            idle_timeout: Duration::from_secs(48 * 3600),
            absolute_timeout: Duration::from_secs(12 * 3600),
            ..Policy::default()
        };
        assert_eq!(p.idle_timeout_for(None), Duration::from_secs(12 * 3600));
    }

    #[test]
    fn a_holder_may_write_only_the_configured_keys() {
        let p = Policy::default();
        assert!(p.holder_may_write("preferences") && p.holder_may_write("cart"));
        assert!(!p.holder_may_write("permissions") && !p.holder_may_write("role"));
        let open = Policy {
            holder_writable: vec!["*".into()],
            ..Policy::default()
        };
        assert!(open.holder_may_write("permissions"));
        let closed = Policy {
            holder_writable: vec![],
            ..Policy::default()
        };
        assert!(!closed.holder_may_write("preferences"));
    }

    #[test]
    fn touch_interval_fits_short_sessions() {
        let p = Policy::default();
        assert_eq!(
            p.touch_interval_for(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
        assert_eq!(
            p.touch_interval_for(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
    }
}
