//! The key schema (see `docs/design.md`, "Redis engine").
//!
//! - `<prefix>s:{<shard>}<sessionId>`: the record (a string, see `codec`), with a native TTL at
//!   the session's expiry.
//! - `<prefix>u:{<shard>}<userId>`: the user's index, a sorted set of session ids scored by
//!   absolute expiry, with a TTL at its longest-lived entry.
//!
//! `{<shard>}` is the Redis Cluster hash tag: the shard is derived from the user id and is the
//! first part of every session id issued for that user, so a record and its user's index are
//! always in one slot, and a key can be found from the session id alone. Ids are validated
//! before they get here, so they contain no `{`, `}`, `*` or other characters with a meaning.

use sessiond_core::{SessionId, UserId};

/// Key names under a fixed prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// Everything before the session id in a record key of `shard`.
    pub(crate) fn record_prefix(&self, shard: &str) -> String {
        format!("{}s:{{{shard}}}", self.prefix)
    }

    /// Everything before the user id in an index key of `shard`.
    pub(crate) fn index_prefix(&self, shard: &str) -> String {
        format!("{}u:{{{shard}}}", self.prefix)
    }

    pub(crate) fn record(&self, id: &SessionId) -> String {
        let mut k = self.record_prefix(id.shard().as_str());
        k.push_str(id.as_str());
        k
    }

    pub(crate) fn index(&self, user: &UserId) -> String {
        let mut k = self.index_prefix(user.shard().as_str());
        k.push_str(user.as_str());
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::Token;

    #[test]
    fn record_and_index_share_a_hash_tag() {
        let user = UserId::parse("user_12345").unwrap();
        let id = Token::generate(&user).unwrap().session_id().clone();
        let keys = Keys::new("sd:");
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        assert_eq!(tag(&keys.record(&id)), tag(&keys.index(&user)));
        assert!(keys.record(&id).starts_with("sd:s:{"));
        assert!(keys.index(&user).ends_with("}user_12345"));
    }
}
