//! Identifiers: the public session id and the caller-supplied user id.
//!
//! Both are validated where they enter the system, so every engine can put them in keys and
//! headers as they are: no glob, hash-tag, namespace or control character ever reaches a store.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Not a session id sessiond could have issued.
    #[error("not a well-formed session id")]
    MalformedSessionId,
    /// Empty, too long, or containing a character a user id may not have.
    #[error(
        "userId must be 1 to {max} bytes of printable ASCII without spaces or any of {forbidden}",
        max = UserId::MAX_LEN,
        forbidden = UserId::FORBIDDEN
    )]
    InvalidUserId,
}

/// The public id of a session: `sess_` and 16 base64url characters (96 random bits).
///
/// It locates the record and may be shown in a device list or a log line; it is not a
/// credential. 96 bits keeps collisions negligible at billions of sessions, and a store still
/// refuses to create over an existing id.
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

    /// Builds an id from fresh random bytes.
    pub(crate) fn from_random(bytes: &[u8; Self::RANDOM_BYTES]) -> Self {
        use base64::Engine as _;
        let mut s = String::with_capacity(Self::LEN);
        s.push_str(Self::PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, &mut s);
        SessionId(s)
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
/// 1 to 256 bytes of printable ASCII without spaces (API.md), because it travels back in the
/// `X-User-Id` header. sessiond also refuses the characters that mean something to a store or
/// a URL (`* ? [ ] { } : / \ % " ' < >` and backtick): Redis globs and hash tags, key
/// namespaces, path segments. E-mail addresses and ids like `auth0|1234` pass.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// The longest user id accepted, in bytes.
    pub const MAX_LEN: usize = 256;
    /// Printable characters a user id may not contain.
    pub const FORBIDDEN: &'static str = "*?[]{}:/\\%\"'<>`";

    /// Validates a user id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes()
                .all(|b| b.is_ascii_graphic() && !Self::FORBIDDEN.as_bytes().contains(&b));
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
}

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
    fn session_id_shape() {
        let id = SessionId::from_random(&[7; 12]);
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
    fn user_id_rules() {
        for good in [
            "user_12345",
            "a@example.com",
            "auth0|5f7c",
            "x",
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
            "a:b",
            "{tag}",
            "a*",
            "../x",
            "a%2F",
            &"u".repeat(257),
        ] {
            assert_eq!(UserId::parse(bad), Err(IdError::InvalidUserId), "{bad:?}");
        }
    }
}
