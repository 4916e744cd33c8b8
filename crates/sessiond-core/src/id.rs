//! Identifiers: the public session id and the caller-supplied user id.
//!
//! Both are validated where they enter the system. A session id has sessiond's exact shape; a
//! user id is any printable ASCII (it is echoed in a header), and every engine keeps it as
//! data, safe in keys by construction rather than by refusing characters.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not a session id sessiond could have issued.
    #[error("not a well-formed session id")]
    MalformedSessionId,
    /// Empty, too long, containing a space, a control or a non-ASCII character, or `.` or
    /// `..`.
    #[error(
        "userId must be 1 to {max} bytes of printable ASCII without spaces, and not . or ..",
        max = UserId::MAX_LEN
    )]
    InvalidUserId,
}

/// The public id of a session: `sess_` and 16 base64url characters.
///
/// It locates the record and may be shown in a device list or a log line; it is not a
/// credential. The first two characters are the user's *shard* (12 bits of a hash of the user
/// id, see [`UserId::shard`]), the other fourteen are random (84 bits, so collisions stay
/// negligible at billions of sessions; a store still refuses to create over an existing id).
/// The shard lets an engine put a session next to its user's index knowing only the session
/// id: Redis Cluster uses it as the hash tag of both keys.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// The fixed prefix, so a session id is recognisable in logs and support tickets.
    pub const PREFIX: &'static str = "sess_";
    /// Random bytes behind an id.
    pub const RANDOM_BYTES: usize = 12;
    /// Length of the base64url part.
    pub const ENCODED_LEN: usize = 16;
    /// Total length in bytes.
    pub const LEN: usize = Self::PREFIX.len() + Self::ENCODED_LEN;

    /// Parses an id, accepting only the exact shape sessiond issues.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() == Self::LEN
            && s.starts_with(Self::PREFIX)
            && s.as_bytes()[Self::PREFIX.len()..]
                .iter()
                .all(|&b| is_base64url(b))
        {
            Ok(SessionId(s.to_owned()))
        } else {
            Err(IdError::MalformedSessionId)
        }
    }

    /// Builds an id from fresh random bytes, placed in `shard`.
    pub(crate) fn from_random(shard: Shard, bytes: &[u8; Self::RANDOM_BYTES]) -> Self {
        use base64::Engine as _;
        let mut s = String::with_capacity(Self::LEN + 2);
        s.push_str(Self::PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut s);
        // 12 random bytes encode to exactly 16 characters; the first two give way to the shard.
        s.replace_range(Self::PREFIX.len()..Self::PREFIX.len() + 2, shard.as_str());
        SessionId(s)
    }

    /// The shard this session was placed in (the first two characters after the prefix).
    pub fn shard(&self) -> Shard {
        let b = self.0.as_bytes();
        let p = Self::PREFIX.len();
        Shard([b[p], b[p + 1]])
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The id of the user a session belongs to, as the app's backend names them.
///
/// 1 to 256 bytes of printable ASCII without spaces (docs/api.md): it travels back in the
/// `X-User-Id` header, so no control character, space or non-ASCII byte may be in it. Every
/// other character is allowed, because identity providers issue ids such as
/// `urn:acme:user:42`, `tenants/acme/users/42`, `o'brien@example.com` and
/// `google-oauth2|1234`. Engines treat the id as data: it never becomes a pattern, a script or
/// a hash tag (the Redis keys put it after sessiond's own tag, see the engine's key schema).
/// Only `.` and `..` are refused: as a path segment of `/v1/users/{userId}` no client can send
/// them (URLs resolve them away), so such a user could never be listed or revoked.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// The longest user id accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validates a user id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| b.is_ascii_graphic())
            && s != "."
            && s != "..";
        if ok {
            Ok(UserId(s.to_owned()))
        } else {
            Err(IdError::InvalidUserId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shard of this user's sessions: 12 bits of SHA-256 of the id, as two base64url
    /// characters. Every session id issued for the user starts with it.
    pub fn shard(&self) -> Shard {
        use sha2::Digest as _;
        let d = sha2::Sha256::digest(self.0.as_bytes());
        let bits = (u16::from(d[0]) << 4) | (u16::from(d[1]) >> 4);
        Shard([
            B64URL[usize::from(bits >> 6)],
            B64URL[usize::from(bits & 0x3f)],
        ])
    }
}

/// Which of 4096 placement groups a user's sessions belong to (see [`SessionId`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Shard([u8; 2]);

impl Shard {
    /// The shard written as `chars` (two base64url characters), as it appears in a session id
    /// or a store key; `None` for anything else.
    pub fn from_chars(chars: [u8; 2]) -> Option<Shard> {
        chars
            .iter()
            .all(|&b| is_base64url(b))
            .then_some(Shard(chars))
    }

    /// Every shard, in alphabet order (the first is `AA`).
    pub fn all() -> impl Iterator<Item = Shard> {
        B64URL
            .iter()
            .flat_map(|&a| B64URL.iter().map(move |&b| Shard([a, b])))
    }

    /// How many shards there are.
    pub const COUNT: usize = 4096;

    /// The first shard (`AA`).
    pub const FIRST: Shard = Shard(*b"AA");

    /// The two base64url characters.
    pub fn as_str(&self) -> &str {
        // Both bytes come from the base64url alphabet (ASCII), checked when ids are parsed.
        std::str::from_utf8(&self.0).unwrap_or("AA")
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl TryFrom<String> for UserId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The base64url alphabet (RFC 4648 §5), without padding.
pub(crate) fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d09_session_id_shape() {
        let user = UserId::parse("user_12345").unwrap();
        let id = SessionId::from_random(user.shard(), &[7; 12]);
        assert_eq!(id.shard(), user.shard());
        assert_eq!(id.as_str().len(), SessionId::LEN);
        assert_eq!(SessionId::parse(id.as_str()), Ok(id.clone()));
        for bad in [
            "",
            "sess_",
            "sess_AAAAAAAAAAAAAAA",
            "sess_AAAAAAAAAAAAAAAAA",
            "sesx_AAAAAAAAAAAAAAAA",
            "sess_AAAAAAAAAAAAAAA*",
            "sess_AAAAAAAAAAAAAA\u{e9}",
        ] {
            assert_eq!(
                SessionId::parse(bad),
                Err(IdError::MalformedSessionId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shards_spread() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000 {
            seen.insert(UserId::parse(&format!("user_{i}")).unwrap().shard());
        }
        // 4096 shards; 20k users leave almost none empty.
        assert!(seen.len() > 4000, "{}", seen.len());
    }

    #[test]
    fn d08_d09_user_id_rules() {
        for good in [
            "user_12345",
            "a@example.com",
            "auth0|5f7c",
            "x",
            "urn:acme:user:42",
            "tenants/acme/users/42",
            "o'brien@example.com",
            "google-oauth2|1234",
            "a:b",
            "{tag}",
            "a*",
            "../x",
            "a%2F",
            "...",
            &"u".repeat(256),
        ] {
            assert!(UserId::parse(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            " ",
            "a b",
            "a\r\nb",
            "a\0",
            "caf\u{e9}",
            "a\tb",
            ".",
            "..",
            &"u".repeat(257),
        ] {
            assert_eq!(UserId::parse(bad), Err(IdError::InvalidUserId), "{bad:?}");
        }
    }
}
