//! The first two event sinks: the Prometheus counters and the log.
//!
//! [`Sessions`](sessiond_core::Sessions) reports every lifecycle event to one sink; `run`
//! fans it out to [`MetricsSink`] and [`LogSink`] (and whatever the embedding process adds).
//! Neither sees a token: events carry none.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiond_core::{EventKind, EventSink, SessionEvent, SessionId};

use crate::metrics::Metrics;
use crate::windows::Windows;

/// Counts every event under `sessiond_session_events_total{event}`.
#[derive(Debug)]
pub struct MetricsSink(pub Arc<Metrics>);

impl EventSink for MetricsSink {
    fn emit(&self, event: &SessionEvent<'_>) {
        self.0.event(event.kind.name());
    }
}

/// How often one session's binding mismatch is logged: a stolen token in steady use must not
/// flood the log (the counter still counts every request).
const MISMATCH_LOG_EVERY: Duration = Duration::from_secs(60);
/// Most sessions remembered as recently logged for a mismatch.
const MAX_MISMATCH_REMEMBERED: usize = 100_000;

/// Writes every event as one log line (`event = "session.<kind>"`, with the session, user,
/// actor and client): changes at `info`, revoke-everyone and binding mismatches at `warn`
/// (the latter at most once a minute per session), refused tokens at `debug` (an attacker
/// controls how many there are; the counter and the guard's warning are the signal).
#[derive(Debug)]
pub struct LogSink {
    /// Sessions whose mismatch was logged in the last minute.
    mismatch_logged: Mutex<Windows<SessionId, ()>>,
}

impl Default for LogSink {
    fn default() -> Self {
        LogSink {
            mismatch_logged: Mutex::new(Windows::new(MISMATCH_LOG_EVERY, MAX_MISMATCH_REMEMBERED)),
        }
    }
}

impl LogSink {
    /// A log sink.
    pub fn new() -> Self {
        LogSink::default()
    }

    /// Whether a mismatch of session `id` at `now` should be logged (not in the last minute;
    /// always, when too many sessions were logged lately to remember another).
    fn should_log_mismatch(&self, id: &SessionId, now: Instant) -> bool {
        let Ok(mut logged) = self.mismatch_logged.lock() else {
            return true;
        };
        logged.open(id, now, || ()).is_none_or(|(_, new)| new)
    }
}

impl EventSink for LogSink {
    fn emit(&self, e: &SessionEvent<'_>) {
        // Every field is written inside the macros: they evaluate their arguments only when
        // the level is enabled, so a filtered-out event costs no formatting.
        let name = e.kind.name();
        let event = name.log_event();
        let session_id = e.session_id.map(SessionId::as_str);
        match e.kind {
            EventKind::InvalidToken { reason } => tracing::debug!(
                event,
                reason = reason.as_str(),
                session_id,
                actor = e.actor.as_str(),
                client_ip = e.client.address.map(tracing::field::display),
                "{}",
                name.describe()
            ),
            EventKind::BindingMismatch { property, refused } => {
                if let Some(id) = e.session_id
                    && !self.should_log_mismatch(id, Instant::now())
                {
                    return;
                }
                tracing::warn!(
                    event,
                    property = property.as_str(),
                    refused,
                    session_id,
                    user_id = e.user_id.map(|u| u.as_str()),
                    client_ip = e.client.address.map(tracing::field::display),
                    user_agent = e.client.user_agent,
                    "a session is used by another client than the one that logged in"
                );
            }
            // As frequent as the app's writes (a cart, preferences): debug, like refusals.
            EventKind::Updated => tracing::debug!(
                event,
                session_id,
                user_id = e.user_id.map(|u| u.as_str()),
                actor = e.actor.as_str(),
                key_id = e.actor.key_id().map(tracing::field::display),
                "{}",
                name.describe()
            ),
            EventKind::RevokedEveryone { count } => tracing::warn!(
                event,
                revoked = count,
                actor = e.actor.as_str(),
                key_id = e.actor.key_id().map(tracing::field::display),
                client_ip = e.client.address.map(tracing::field::display),
                "{}",
                name.describe()
            ),
            EventKind::RevokedAll { count, kept } => tracing::info!(
                event,
                user_id = e.user_id.map(|u| u.as_str()),
                revoked = count,
                kept = kept.map(SessionId::as_str),
                actor = e.actor.as_str(),
                key_id = e.actor.key_id().map(tracing::field::display),
                client_ip = e.client.address.map(tracing::field::display),
                "{}",
                name.describe()
            ),
            EventKind::Replaced { by } | EventKind::Evicted { by } => tracing::info!(
                event,
                session_id,
                user_id = e.user_id.map(|u| u.as_str()),
                by = by.as_str(),
                actor = e.actor.as_str(),
                key_id = e.actor.key_id().map(tracing::field::display),
                "{}",
                name.describe()
            ),
            EventKind::Created
            | EventKind::Rotated
            | EventKind::LoggedOut
            | EventKind::Revoked
            | EventKind::Expired => tracing::info!(
                event,
                session_id,
                user_id = e.user_id.map(|u| u.as_str()),
                actor = e.actor.as_str(),
                key_id = e.actor.key_id().map(tracing::field::display),
                client_ip = e.client.address.map(tracing::field::display),
                user_agent = e.client.user_agent,
                "{}",
                name.describe()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sessions_mismatch_is_logged_once_a_minute() {
        let sink = LogSink::new();
        let Ok(id) = SessionId::parse("sess_AAAAAAAAAAAAAAAA") else {
            panic!("a well-formed id");
        };
        let t = Instant::now();
        assert!(sink.should_log_mismatch(&id, t));
        assert!(!sink.should_log_mismatch(&id, t + Duration::from_secs(59)));
        assert!(sink.should_log_mismatch(&id, t + MISMATCH_LOG_EVERY));
    }
}
