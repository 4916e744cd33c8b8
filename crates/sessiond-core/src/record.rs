//! The stored session record and its expiry arithmetic.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::{SessionId, UserId};
use crate::time::Timestamp;
use crate::token::SecretHash;

/// One session as a store keeps it.
///
/// The serde field names are short because engines persist this form: every byte is paid
/// once per live session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Public id; locates the record.
    #[serde(rename = "i")]
    pub id: SessionId,
    /// Whose session it is.
    #[serde(rename = "u")]
    pub user_id: UserId,
    /// SHA-256 of the token's secret; the token itself is never stored.
    #[serde(rename = "h")]
    pub secret_hash: SecretHash,
    /// When the session was created.
    #[serde(rename = "c")]
    pub created_at: Timestamp,
    /// Last recorded activity (recorded at most once per touch interval).
    #[serde(rename = "a")]
    pub last_activity: Timestamp,
    /// Idle timeout of this session in milliseconds (the policy's, or the creator's
    /// `ttlSeconds`, clamped).
    #[serde(rename = "t")]
    pub idle_timeout_ms: u64,
    /// Hard end of the session; no activity moves it.
    #[serde(rename = "x")]
    pub absolute_expires_at: Timestamp,
    /// Increases by one on every change of `user_data`.
    #[serde(rename = "v")]
    pub version: u64,
    /// Application data, a JSON object bounded by the policy's limits.
    #[serde(rename = "d", default)]
    pub user_data: Map<String, Value>,
    /// Login context (`ipAddress`, `userAgent`, `loginMethod`, ...), a JSON object.
    #[serde(rename = "m", default)]
    pub metadata: Map<String, Value>,
}

impl SessionRecord {
    /// The session's idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// When the session ends if nothing happens: the idle expiry, capped by the absolute one.
    pub fn expires_at(&self) -> Timestamp {
        self.last_activity
            .saturating_add(self.idle_timeout())
            .min(self.absolute_expires_at)
    }

    /// Whether the session may be served at `now`. Every read path checks this, so an expired
    /// record is never served even when its engine has not reclaimed it yet.
    pub fn is_live(&self, now: Timestamp) -> bool {
        now < self.expires_at()
    }

    /// The record with activity recorded at `at`. Activity never moves backwards, and never
    /// moves a session past its absolute expiry (that is computed in [`Self::expires_at`]).
    pub fn touched(mut self, at: Timestamp) -> Self {
        self.last_activity = self.last_activity.max(at);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;

    fn record(last: u64, idle: u64, abs: u64) -> SessionRecord {
        let t = Token::generate(&UserId::parse("u").unwrap()).unwrap();
        SessionRecord {
            id: t.session_id().clone(),
            user_id: UserId::parse("u").unwrap(),
            secret_hash: t.secret_hash(),
            created_at: Timestamp::from_millis(0),
            last_activity: Timestamp::from_millis(last),
            idle_timeout_ms: idle,
            absolute_expires_at: Timestamp::from_millis(abs),
            version: 1,
            user_data: Map::new(),
            metadata: Map::new(),
        }
    }

    #[test]
    fn s06_idle_expiry_slides_and_ends_at_the_exact_millisecond() {
        let r = record(1_000, 500, 10_000);
        assert_eq!(r.expires_at(), Timestamp::from_millis(1_500));
        assert!(r.is_live(Timestamp::from_millis(1_499)));
        assert!(!r.is_live(Timestamp::from_millis(1_500)));
        // Activity slides it.
        let r = r.touched(Timestamp::from_millis(1_400));
        assert_eq!(r.expires_at(), Timestamp::from_millis(1_900));
    }

    #[test]
    fn s07_no_activity_extends_a_session_past_its_absolute_expiry() {
        let r = record(9_800, 500, 10_000);
        assert_eq!(r.expires_at(), Timestamp::from_millis(10_000));
        // However late the activity, the absolute expiry holds.
        for at in [9_900, 9_999, 10_000, 20_000, u64::MAX] {
            let t = record(9_800, 500, 10_000).touched(Timestamp::from_millis(at));
            assert_eq!(
                t.expires_at(),
                Timestamp::from_millis(10_000),
                "touched at {at}"
            );
            assert!(
                !t.is_live(Timestamp::from_millis(10_000)),
                "touched at {at}"
            );
        }
        // An idle timeout longer than the whole lifetime changes nothing either.
        let r = record(0, u64::MAX, 10_000);
        assert_eq!(r.expires_at(), Timestamp::from_millis(10_000));
    }

    #[test]
    fn touch_never_goes_back() {
        let r = record(1_000, 500, 10_000).touched(Timestamp::from_millis(900));
        assert_eq!(r.last_activity, Timestamp::from_millis(1_000));
    }

    #[test]
    fn s23_the_stored_form_holds_only_the_hash_of_the_secret() {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let user = UserId::parse("u").unwrap();
        for _ in 0..100 {
            let token = Token::generate(&user).unwrap();
            let r = SessionRecord {
                secret_hash: token.secret_hash(),
                ..record(1, 2, 3)
            };
            let stored = serde_json::to_vec(&r).unwrap();
            let text = token.expose();
            let encoded = &text[SessionId::LEN + 1..];
            let raw = URL_SAFE_NO_PAD.decode(encoded).unwrap();
            let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
            assert!(!contains(text.as_bytes()), "the token in the stored form");
            assert!(
                !contains(encoded.as_bytes()),
                "the encoded secret in the stored form"
            );
            assert!(!contains(&raw), "the raw secret in the stored form");
            // What it does hold is the one-way hash, which verifies the token.
            assert!(r.secret_hash.verify(&Token::parse(&text).unwrap()));
        }
    }

    #[test]
    fn storage_form_round_trips() {
        let r = record(1, 2, 3);
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<SessionRecord>(&bytes).unwrap(), r);
    }
}
