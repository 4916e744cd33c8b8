//! The key schema (see `docs/design.md`, "Redis engine").
//!
//! - `<prefix>s:{<shard>}<member>`: the record (a string, see `codec`), with a native TTL at
//!   the session's expiry.
//! - `<prefix>u:{<shard>}<userId>`: the user's index, a sorted set of members scored by
//!   absolute expiry in whole seconds (rounded up), with a TTL at its longest-lived entry. A
//!   cold session (with the durable tier, once the demoter took its record out) is there as
//!   `~<member>`, scored by its exact expiry (see `scripts`).
//!
//! - `<prefix>t:{<shard>}<member>`: a tombstone, left by a revocation for a short while
//!   (with the durable tier only), so a read-through racing it cannot write the session back.
//! - `<prefix>r:{<shard>}<userId>`: the same for a revoke-all: its time (ms) and the member it
//!   kept.
//! - `<prefix>o`: the outbox for the durable tier on standalone and Sentinel (a stream, kept
//!   only with the tier; see `outbox`), no TTL: entries leave when the tier has them. On
//!   Cluster, where a script may only touch keys of its own slot, each shard has its own,
//!   `<prefix>o:{<shard>}`.
//! - `<prefix>shipper`: the id of the process whose turn it is to ship the one outbox stream,
//!   with a TTL of a few ship intervals, renewed while it ships (see `outbox`).
//! - `<prefix>epoch`: a random value made once (no TTL), so processes see that Redis lost its
//!   data when it changes; `<prefix>journals`: the set of processes whose journal holds
//!   revocations the durable tier does not have yet (`docs/design.md` §10). Both only with
//!   the tier.
//!
//! A session's *member* is its id without the `sess_` prefix and the shard: both are already
//! in the key, and every byte of a key name is paid for in every session's memory. Seconds
//! keep the score a 32-bit integer, which Redis packs in 5 bytes instead of 9.
//!
//! `{<shard>}` is the Redis Cluster hash tag: the shard is derived from the user id and is the
//! first part of every session id issued for that user, so a record and its user's index are
//! always in one slot, and a key can be found from the session id alone.
//!
//! User ids are data, safe here by construction: a user id may hold any printable ASCII (`{`,
//! `}`, `*`, `:`, `/` included), and it only ever comes last in an index key, after the fixed
//! prefix, the `u:` namespace and sessiond's own tag. Redis takes the hash tag from the first
//! `{` to the first `}` after it, which is always `{<shard>}` (two base64url characters, and the
//! key prefix may not hold braces), so no id can move its key to another slot; no other key
//! kind lives under `u:`, so no id can name another kind of key; and ids are never part of a
//! `SCAN MATCH` pattern or of script source (scripts get them as arguments).

use sessiond_core::{SessionId, Shard, Timestamp, UserId};

/// Where the outbox's entries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutboxLayout {
    /// One stream for every shard: every key is on one primary (standalone, Sentinel), so any
    /// script may append to it, and the shipper reads and trims it with one command each.
    One,
    /// A stream per shard, sharing the shard's hash tag: on Cluster a script may only touch
    /// keys of its own slot.
    PerShard,
}

/// Key names under a fixed prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
    outboxes: OutboxLayout,
}

impl Keys {
    pub(crate) fn new(prefix: &str, outboxes: OutboxLayout) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            outboxes,
        }
    }

    /// Everything before the session id in a record key of `shard`.
    pub(crate) fn record_prefix(&self, shard: &str) -> String {
        format!("{}s:{{{shard}}}", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every record key: the prefix taken literally, then the
    /// record's exact length. [`Keys::is_record`] decides on each key found.
    pub(crate) fn record_pattern(&self) -> String {
        let member_len = SessionId::ENCODED_LEN - 2;
        format!(
            "{}s:{{??}}{}",
            crate::purge::glob_escape(&self.prefix),
            "?".repeat(member_len)
        )
    }

    /// A `SCAN MATCH` pattern for every index key; [`Keys::is_index`] decides on each key.
    pub(crate) fn index_pattern(&self) -> String {
        format!("{}u:{{??}}?*", crate::purge::glob_escape(&self.prefix))
    }

    /// Whether `key` is a session record of this store: the prefix, `s:`, a shard and the
    /// member of a session id sessiond could have issued. Keys that share the prefix but not
    /// this shape belong to someone else and are never touched by a purge.
    pub(crate) fn is_record(&self, key: &[u8]) -> bool {
        let Some((shard, rest)) = self.tagged(key, b"s:") else {
            return false;
        };
        id_from_member(shard, rest).is_some()
    }

    /// Whether `key` is a user index of this store: the prefix, `u:`, a shard, and a user id
    /// whose own shard is that one.
    pub(crate) fn is_index(&self, key: &[u8]) -> bool {
        let Some((shard, rest)) = self.tagged(key, b"u:") else {
            return false;
        };
        std::str::from_utf8(rest)
            .ok()
            .and_then(|id| UserId::parse(id).ok())
            .is_some_and(|user| user.shard() == shard)
    }

    /// The shard and what follows it, for a key `<prefix><kind>{<shard>}<rest>`.
    fn tagged<'k>(&self, key: &'k [u8], kind: &[u8]) -> Option<(Shard, &'k [u8])> {
        let rest = key
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(kind)?;
        let (tag, rest) = rest.split_at_checked(4)?;
        let [b'{', a, b, b'}'] = *tag else {
            return None;
        };
        Some((Shard::from_chars([a, b])?, rest))
    }

    /// Everything before the user id in an index key of `shard`.
    pub(crate) fn index_prefix(&self, shard: &str) -> String {
        format!("{}u:{{{shard}}}", self.prefix)
    }

    /// Everything before the member in a tombstone key of `shard`.
    pub(crate) fn tombstone_prefix(&self, shard: Shard) -> String {
        format!("{}t:{{{}}}", self.prefix, shard.as_str())
    }

    /// The tombstone of `id`.
    pub(crate) fn tombstone(&self, id: &SessionId) -> String {
        let mut k = self.tombstone_prefix(id.shard());
        k.push_str(member(id));
        k
    }

    /// The revoke-all tombstone of `user`.
    pub(crate) fn user_tombstone(&self, shard: Shard, user: &UserId) -> String {
        format!("{}r:{{{}}}{}", self.prefix, shard.as_str(), user.as_str())
    }

    /// The store's epoch.
    pub(crate) fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// Which process ships the one outbox stream now.
    pub(crate) fn ship_turn(&self) -> String {
        format!("{}shipper", self.prefix)
    }

    /// The set of processes whose journal holds revocations.
    pub(crate) fn journals(&self) -> String {
        format!("{}journals", self.prefix)
    }

    /// The outbox stream that changes of `shard` go to.
    pub(crate) fn outbox(&self, shard: Shard) -> String {
        match self.outboxes {
            OutboxLayout::One => format!("{}o", self.prefix),
            OutboxLayout::PerShard => format!("{}o:{{{}}}", self.prefix, shard.as_str()),
        }
    }

    /// Built by hand, not with `format!`: it runs on every validation.
    pub(crate) fn record(&self, id: &SessionId) -> String {
        let (shard, member) = (id.shard(), member(id));
        let mut k = String::with_capacity(self.prefix.len() + 5 + 2 + member.len());
        k.push_str(&self.prefix);
        k.push_str("s:{");
        k.push_str(shard.as_str());
        k.push('}');
        k.push_str(member);
        k
    }

    #[cfg(test)]
    pub(crate) fn index(&self, user: &UserId) -> String {
        self.index_in(user.shard(), user)
    }

    /// The index key of `user`, whose shard the caller has already computed (a SHA-256).
    pub(crate) fn index_in(&self, shard: Shard, user: &UserId) -> String {
        let mut k = self.index_prefix(shard.as_str());
        k.push_str(user.as_str());
        k
    }
}

/// The part of a session id that names it within its shard.
pub(crate) fn member(id: &SessionId) -> &str {
    id.as_str()
        .get(SessionId::PREFIX.len() + 2..)
        .unwrap_or_default()
}

/// A session id without its `sess_` prefix: its shard, then its member. What the outbox names a
/// session by, so an entry says which session it is about whatever stream holds it.
pub(crate) fn unprefixed(id: &SessionId) -> &str {
    id.as_str()
        .get(SessionId::PREFIX.len()..)
        .unwrap_or_default()
}

/// The session id an [`unprefixed`] id stands for.
pub(crate) fn id_from_unprefixed(unprefixed: &[u8]) -> Option<SessionId> {
    let unprefixed = std::str::from_utf8(unprefixed).ok()?;
    SessionId::parse(&format!("{}{unprefixed}", SessionId::PREFIX)).ok()
}

/// The session id an index member of `shard` stands for.
pub(crate) fn id_from_member(shard: Shard, member: &[u8]) -> Option<SessionId> {
    let member = std::str::from_utf8(member).ok()?;
    SessionId::parse(&format!("{}{}{member}", SessionId::PREFIX, shard.as_str())).ok()
}

/// A score of the index: an absolute expiry in whole seconds, rounded up.
pub(crate) fn score(expires_at: Timestamp) -> u64 {
    expires_at.as_millis().div_ceil(1000)
}

/// The score of a cold session's index entry: its exact expiry, in seconds with three
/// decimals (an entry scored at or below `expired_score(now)` has expired, as for any other).
pub(crate) fn cold_score(expires_at: Timestamp) -> String {
    let ms = expires_at.as_millis();
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// The score at or below which an index entry has expired at `now`.
pub(crate) fn expired_score(now: Timestamp) -> u64 {
    now.as_millis() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::Token;

    #[test]
    fn record_and_index_share_a_hash_tag() {
        let user = UserId::parse("user_12345").unwrap();
        let id = Token::generate(&user).unwrap().session_id().clone();
        let keys = Keys::new("sd:", OutboxLayout::PerShard);
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        assert_eq!(tag(&keys.record(&id)), tag(&keys.index(&user)));
        assert!(keys.record(&id).starts_with("sd:s:{"));
        assert_eq!(keys.record(&id).len(), "sd:s:{}".len() + 16);
        assert!(keys.index(&user).ends_with("}user_12345"));
        assert_eq!(
            id_from_member(id.shard(), member(&id).as_bytes()),
            Some(id.clone())
        );
        assert_eq!(id_from_member(user.shard(), b"short"), None);
        assert_eq!(
            id_from_unprefixed(unprefixed(&id).as_bytes()),
            Some(id.clone())
        );
        assert_eq!(
            unprefixed(&id),
            format!("{}{}", id.shard().as_str(), member(&id))
        );
    }

    #[test]
    fn a_user_id_with_braces_keeps_sessionds_hash_tag() {
        let keys = Keys::new("sd:", OutboxLayout::PerShard);
        for raw in ["{x}", "}{", "a}b{c}", "{", "*?[]:/"] {
            let user = UserId::parse(raw).unwrap();
            let key = keys.index(&user);
            let open = key.find('{').unwrap();
            let close = open + key[open..].find('}').unwrap();
            assert_eq!(&key[open + 1..close], user.shard().as_str(), "{raw}");
            assert!(key.ends_with(raw), "the id comes last, unchanged: {key}");
        }
    }

    #[test]
    fn only_keys_of_sessionds_exact_shapes_are_its_own() {
        let keys = Keys::new("sd:", OutboxLayout::PerShard);
        let user = UserId::parse("user_12345").unwrap();
        let id = Token::generate(&user).unwrap().session_id().clone();
        assert!(keys.is_record(keys.record(&id).as_bytes()));
        assert!(keys.is_index(keys.index(&user).as_bytes()));
        let other_shard = if user.shard().as_str() == "AA" {
            "AB"
        } else {
            "AA"
        };
        for foreign in [
            "sd:s:".to_owned(),
            "sd:s:other-app-key".to_owned(),
            "sd:s:{ab}short".to_owned(),
            format!("sd:s:{{{}}}{}x", id.shard().as_str(), member(&id)),
            format!("sd:s:{{!!}}{}", &member(&id)),
            format!("sd:u:{{{other_shard}}}user_12345"),
            "sd:u:{ab}".to_owned(),
            "sd:u:plain".to_owned(),
            "sd:x:{ab}user".to_owned(),
            "other:s:{ab}AAAAAAAAAAAAAA".to_owned(),
        ] {
            assert!(!keys.is_record(foreign.as_bytes()), "{foreign}");
            assert!(!keys.is_index(foreign.as_bytes()), "{foreign}");
        }
        assert_eq!(keys.record_pattern(), "sd:s:{??}??????????????");
        assert_eq!(keys.index_pattern(), "sd:u:{??}?*");
        let odd = Keys::new("a*[b]:", OutboxLayout::PerShard);
        assert_eq!(odd.index_pattern(), "a\\*\\[b\\]:u:{??}?*");
    }

    #[test]
    fn scores_round_expiry_up_and_now_down() {
        assert_eq!(score(Timestamp::from_millis(1_000)), 1);
        assert_eq!(score(Timestamp::from_millis(1_001)), 2);
        assert_eq!(expired_score(Timestamp::from_millis(1_999)), 1);
    }
}
