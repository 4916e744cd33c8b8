//! Session lifecycle events: what happened to which session, when, caused by whom, from where.
//!
//! [`Sessions`](crate::Sessions) emits a [`SessionEvent`] for every change it makes (and the
//! HTTP edge for the refusals only it sees: a malformed token, a client that differs from the
//! login's) to one [`EventSink`]. Sinks fan out ([`Fanout`]): the Prometheus counters and the
//! log are the first two, an audit trail the next. An event borrows what it describes, so
//! emitting one allocates nothing; a sink that keeps events copies what it keeps.
//!
//! No event carries a token, nor anything from which one could be rebuilt: the session id is
//! public and the secret never leaves [`Token`](crate::Token).
//!
//! [`EventName`] is the closed list of kinds: metric label values and their help text come
//! from it, so no kind can be emitted without a counter, nor a counter documented without a
//! kind.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::id::{SessionId, UserId};
use crate::time::Timestamp;

/// The first four bytes of a backend API key's SHA-256 digest: names the key in events and
/// logs without revealing it (an operator finds it with `sha256sum` of the key, or in the
/// `sha256:` form of the configuration).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// The token holder (the browser or app), acting on its own session.
    Holder,
    /// A backend, by the API key it presented.
    Backend(KeyId),
    /// An operator, through `sessiond revoke`.
    Cli,
    /// The expiry sweeper.
    Sweeper,
}

impl Actor {
    /// Its name in logs and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Holder => "holder",
            Actor::Backend(_) => "backend",
            Actor::Cli => "cli",
            Actor::Sweeper => "sweeper",
        }
    }

    /// The backend key, for [`Actor::Backend`].
    pub fn key_id(self) -> Option<KeyId> {
        match self {
            Actor::Backend(id) => Some(id),
            _ => None,
        }
    }
}

/// The client a request came from, as far as sessiond can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Client<'a> {
    /// Its address: the TCP peer, or what a trusted gateway said.
    pub address: Option<IpAddr>,
    /// Its `User-Agent`, cut to [`Client::MAX_USER_AGENT`] bytes.
    pub user_agent: Option<&'a str>,
}

impl<'a> Client<'a> {
    /// Longest user agent kept in an event; longer ones are cut (at a character boundary).
    pub const MAX_USER_AGENT: usize = 256;

    /// No client (the CLI, the sweeper).
    pub const NONE: Client<'static> = Client {
        address: None,
        user_agent: None,
    };

    /// A client at `address` sending `user_agent`.
    pub fn new(address: Option<IpAddr>, user_agent: Option<&'a str>) -> Self {
        Client {
            address,
            user_agent: user_agent.map(|ua| {
                let mut end = ua.len().min(Self::MAX_USER_AGENT);
                while !ua.is_char_boundary(end) {
                    end -= 1;
                }
                &ua[..end]
            }),
        }
    }
}

/// Who asks for an operation, and from where: what every event of it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// Who.
    pub actor: Actor,
    /// From where, when it came over HTTP.
    pub client: Client<'a>,
}

impl Origin<'static> {
    /// An operator at `sessiond revoke`.
    pub const CLI: Origin<'static> = Origin {
        actor: Actor::Cli,
        client: Client::NONE,
    };
    /// The expiry sweeper.
    pub const SWEEPER: Origin<'static> = Origin {
        actor: Actor::Sweeper,
        client: Client::NONE,
    };
}

impl<'a> Origin<'a> {
    /// The token holder, from `client`.
    pub fn holder(client: Client<'a>) -> Self {
        Origin {
            actor: Actor::Holder,
            client,
        }
    }

    /// A backend with key `key`, from `client`.
    pub fn backend(key: KeyId, client: Client<'a>) -> Self {
        Origin {
            actor: Actor::Backend(key),
            client,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvalidReason {
    /// Missing, or not the shape of a sessiond token: no store was asked.
    Malformed,
    /// Well-formed, but no live session has it: unknown, expired, revoked or rotated away
    /// (deliberately one reason: the answer must not tell an attacker which).
    Unknown,
}

impl InvalidReason {
    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::Malformed => "missing or malformed",
            InvalidReason::Unknown => "unknown, expired or revoked",
        }
    }
}

/// A property of the client that differs from the login's (S20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindingProperty {
    /// The `User-Agent` header.
    UserAgent,
    /// The client's address.
    Ip,
}

impl BindingProperty {
    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingProperty::UserAgent => "user_agent",
            BindingProperty::Ip => "ip",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind<'a> {
    /// A session was created at login.
    Created,
    /// The session's token was replaced; the old one is dead.
    Rotated,
    /// The session's `userData` was changed (a merge patch that changed something).
    Updated,
    /// The holder ended its own session.
    LoggedOut,
    /// A backend ended one session.
    Revoked,
    /// Every session of a user was ended, but `kept`.
    RevokedAll {
        /// How many live sessions ended.
        count: u64,
        /// The session spared (the one the user is using), if any.
        kept: Option<&'a SessionId>,
    },
    /// A new login ended the session it replaces (`replacesSessionId`).
    Replaced {
        /// The session that replaced it.
        by: &'a SessionId,
    },
    /// The per-user cap ended the user's oldest session to make room.
    Evicted {
        /// The session created in its place.
        by: &'a SessionId,
    },
    /// An expired session's record was reclaimed.
    Expired,
    /// A token was refused.
    InvalidToken {
        /// Why.
        reason: InvalidReason,
    },
    /// A live session was presented by another client than the one that logged in.
    BindingMismatch {
        /// What differs.
        property: BindingProperty,
        /// Whether the request was refused (`enforce`).
        refused: bool,
    },
    /// Every session of every user was ended (S12).
    RevokedEveryone {
        /// How many stored sessions were removed.
        count: u64,
    },
}

impl EventKind<'_> {
    /// Its name (the metric label).
    pub fn name(&self) -> EventName {
        match self {
            EventKind::Created => EventName::Created,
            EventKind::Rotated => EventName::Rotated,
            EventKind::Updated => EventName::Updated,
            EventKind::LoggedOut => EventName::LoggedOut,
            EventKind::Revoked => EventName::Revoked,
            EventKind::RevokedAll { .. } => EventName::RevokedAll,
            EventKind::Replaced { .. } => EventName::Replaced,
            EventKind::Evicted { .. } => EventName::Evicted,
            EventKind::Expired => EventName::Expired,
            EventKind::InvalidToken { .. } => EventName::InvalidToken,
            EventKind::BindingMismatch {
                property: BindingProperty::UserAgent,
                ..
            } => EventName::BindingMismatchUserAgent,
            EventKind::BindingMismatch {
                property: BindingProperty::Ip,
                ..
            } => EventName::BindingMismatchIp,
            EventKind::RevokedEveryone { .. } => EventName::RevokedEveryone,
        }
    }
}

/// The kinds of event, without their data: the metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventName {
    /// See [`EventKind::Created`].
    Created,
    /// See [`EventKind::Rotated`].
    Rotated,
    /// See [`EventKind::Updated`].
    Updated,
    /// See [`EventKind::LoggedOut`].
    LoggedOut,
    /// See [`EventKind::Revoked`].
    Revoked,
    /// See [`EventKind::RevokedAll`].
    RevokedAll,
    /// See [`EventKind::Replaced`].
    Replaced,
    /// See [`EventKind::Evicted`].
    Evicted,
    /// See [`EventKind::Expired`].
    Expired,
    /// See [`EventKind::InvalidToken`].
    InvalidToken,
    /// [`EventKind::BindingMismatch`] of the user agent.
    BindingMismatchUserAgent,
    /// [`EventKind::BindingMismatch`] of the address.
    BindingMismatchIp,
    /// See [`EventKind::RevokedEveryone`].
    RevokedEveryone,
}

impl EventName {
    /// Every kind, in the order of the metric's help text.
    pub const ALL: [EventName; 13] = [
        EventName::Created,
        EventName::Rotated,
        EventName::Updated,
        EventName::LoggedOut,
        EventName::Revoked,
        EventName::RevokedAll,
        EventName::Replaced,
        EventName::Evicted,
        EventName::Expired,
        EventName::InvalidToken,
        EventName::BindingMismatchUserAgent,
        EventName::BindingMismatchIp,
        EventName::RevokedEveryone,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Created => "created",
            EventName::Rotated => "rotated",
            EventName::Updated => "updated",
            EventName::LoggedOut => "logged_out",
            EventName::Revoked => "revoked",
            EventName::RevokedAll => "revoked_all",
            EventName::Replaced => "replaced",
            EventName::Evicted => "evicted",
            EventName::Expired => "expired",
            EventName::InvalidToken => "invalid_token",
            EventName::BindingMismatchUserAgent => "binding_mismatch_user_agent",
            EventName::BindingMismatchIp => "binding_mismatch_ip",
            EventName::RevokedEveryone => "revoked_everyone",
        }
    }

    /// The `event` field of its log line.
    pub fn log_event(self) -> &'static str {
        match self {
            EventName::Created => "session.created",
            EventName::Rotated => "session.rotated",
            EventName::Updated => "session.updated",
            EventName::LoggedOut => "session.logged_out",
            EventName::Revoked => "session.revoked",
            EventName::RevokedAll => "session.revoked_all",
            EventName::Replaced => "session.replaced",
            EventName::Evicted => "session.evicted",
            EventName::Expired => "session.expired",
            EventName::InvalidToken => "session.invalid_token",
            EventName::BindingMismatchUserAgent | EventName::BindingMismatchIp => {
                "session.binding_mismatch"
            }
            EventName::RevokedEveryone => "session.revoked_everyone",
        }
    }

    /// What it counts, for the metric's help text and the log line's message.
    pub fn describe(self) -> &'static str {
        match self {
            EventName::Created => "session created",
            EventName::Rotated => "session token rotated",
            EventName::Updated => "session userData changed",
            EventName::LoggedOut => "session ended by its holder",
            EventName::Revoked => "session revoked by a backend",
            EventName::RevokedAll => "every session of a user revoked",
            EventName::Replaced => "session replaced by a new login",
            EventName::Evicted => "session ended by the per-user cap",
            EventName::Expired => "expired session reclaimed",
            EventName::InvalidToken => "token refused",
            EventName::BindingMismatchUserAgent => {
                "session used with another user agent than the login's"
            }
            EventName::BindingMismatchIp => "session used from another address than the login's",
            EventName::RevokedEveryone => "every session of every user ended",
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened to a session (or, for the bulk kinds, to many).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionEvent<'a> {
    /// What.
    pub kind: EventKind<'a>,
    /// When, by the service's clock.
    pub at: Timestamp,
    /// The session, except for the bulk kinds and a token too malformed to name one.
    pub session_id: Option<&'a SessionId>,
    /// Its user, where known (not for an unknown token, nor revoke-everyone).
    pub user_id: Option<&'a UserId>,
    /// Who caused it.
    pub actor: Actor,
    /// The client of the request that caused it.
    pub client: Client<'a>,
}

/// Where events go. Called inline, on the request's task: an implementation must not block
/// (a sink that writes somewhere slow queues and returns).
pub trait EventSink: fmt::Debug + Send + Sync + 'static {
    /// Takes one event.
    fn emit(&self, event: &SessionEvent<'_>);
}

/// Drops every event (a [`Sessions`](crate::Sessions) nobody listens to).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn emit(&self, _: &SessionEvent<'_>) {}
}

/// Hands every event to each of several sinks, in order.
#[derive(Debug, Default, Clone)]
pub struct Fanout(Vec<Arc<dyn EventSink>>);

impl Fanout {
    /// No sinks yet.
    pub fn new() -> Self {
        Fanout(Vec::new())
    }

    /// Adds a sink after the others.
    #[must_use]
    pub fn with(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.0.push(sink);
        self
    }
}

impl EventSink for Fanout {
    fn emit(&self, event: &SessionEvent<'_>) {
        for sink in &self.0 {
            sink.emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_name_has_its_own_label_and_a_description() {
        let labels: HashSet<_> = EventName::ALL.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            labels.len(),
            EventName::ALL.len(),
            "labels must be distinct"
        );
        for name in EventName::ALL {
            assert!(!name.describe().is_empty(), "{name} has no description");
            assert!(
                name.log_event().starts_with("session."),
                "{name}'s log event"
            );
        }
    }

    #[test]
    fn a_long_user_agent_is_cut_at_a_character_boundary() {
        let long = "é".repeat(200);
        let client = Client::new(None, Some(&long));
        let kept = client.user_agent.unwrap_or_default();
        assert!(kept.len() <= Client::MAX_USER_AGENT, "cut to the limit");
        assert!(kept.len() >= Client::MAX_USER_AGENT - 1, "not cut shorter");
        assert!(long.starts_with(kept), "a prefix of the original");
    }

    #[test]
    fn key_ids_print_as_eight_hex_digits() {
        assert_eq!(KeyId([0x0a, 0xbc, 0xde, 0xf0]).to_string(), "0abcdef0");
    }
}
