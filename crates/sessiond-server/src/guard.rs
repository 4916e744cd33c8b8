//! Invalid-token attempts counted per source (S19, D14).
//!
//! A source is the client's address: the TCP peer, or, behind a gateway, the address the
//! gateway forwards in `guard.client_ip_header` (e.g. `X-Real-IP`), believed only from a peer
//! in `guard.trusted_proxies` (see `forwarded`). Each source has a one-minute window. A request that presented
//! a session token and got `401` counts against its source. When a source passes
//! `guard.invalid_token_limit` in a window, that is logged once (a warning naming the source,
//! never a token) and counted as `sessiond_guard_events_total{event="invalid_token_source_over_limit"}`,
//! an alert signal.
//! With `guard.reject_over_limit`, the source's refused tokens are then answered `429` with
//! `Retry-After` until its window ends, except from `GET /v1/auth`, which answers `401`
//! because gateways accept only 200, 401 or 503 from it. A valid token from the same source is
//! still served: a client behind a shared address (or a gateway that does not forward the
//! client's) must not lock out everyone with a live session because someone else guessed.
//!
//! The table is bounded (`MAX_SOURCES`); when it is full of live windows, new sources are not
//! tracked until a window ends, so memory stays flat under a spray from many addresses, and
//! ended windows are evicted oldest first in constant time (`windows`), so a full table costs
//! a new source no scan.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

use crate::config::GuardConfig;
use crate::error::ApiError;
use crate::extract::CookieNames;
use crate::forwarded::{TrustedProxies, client_address};
use crate::windows::Windows;

/// Length of a source's counting window.
const WINDOW: Duration = Duration::from_secs(60);
/// Most sources tracked at once.
const MAX_SOURCES: usize = 100_000;

/// Per-source counts of invalid-token attempts.
#[derive(Debug)]
pub struct InvalidTokenGuard {
    limit: u32,
    reject: bool,
    client_ip_header: Option<header::HeaderName>,
    /// The peers whose `client_ip_header` is believed.
    trusted_proxies: TrustedProxies,
    /// Which cookies carry a session token (only those count as presented).
    cookie_names: CookieNames,
    /// Invalid tokens per source in its current window.
    sources: Mutex<Windows<IpAddr, u32>>,
}

/// What recording an attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Under the limit, or not tracked.
    Counted,
    /// This attempt took the source over the limit (reported once per window).
    CrossedLimit,
}

impl InvalidTokenGuard {
    /// A guard as configured, counting requests that present a token in `Authorization` or
    /// in a cookie of `cookie_names`.
    pub fn new(config: &GuardConfig, cookie_names: CookieNames) -> Self {
        InvalidTokenGuard {
            limit: config.invalid_token_limit,
            reject: config.reject_over_limit && config.invalid_token_limit > 0,
            client_ip_header: config
                .client_ip_header
                .as_deref()
                .filter(|h| !h.is_empty())
                .and_then(|h| header::HeaderName::from_bytes(h.as_bytes()).ok()),
            trusted_proxies: config.trusted(),
            cookie_names,
            sources: Mutex::new(Windows::new(WINDOW, MAX_SOURCES)),
        }
    }

    /// The source of a request: the client address a trusted proxy forwarded in the
    /// configured header (see `forwarded`), else the TCP peer.
    pub fn source(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        client_address(
            headers,
            peer,
            self.client_ip_header.as_ref(),
            &self.trusted_proxies,
        )
    }

    /// Whether `source` is over the limit in its current window, at `now`.
    pub fn is_over(&self, source: IpAddr, now: Instant) -> bool {
        let Ok(sources) = self.sources.lock() else {
            return false;
        };
        sources
            .get(&source, now)
            .is_some_and(|count| *count > self.limit)
    }

    /// Counts one invalid-token attempt from `source` at `now`. When the table is full of
    /// live windows, a new source is not tracked until one ends (constant time either way).
    pub fn record(&self, source: IpAddr, now: Instant) -> Recorded {
        let Ok(mut sources) = self.sources.lock() else {
            return Recorded::Counted;
        };
        let Some((count, _)) = sources.open(&source, now, || 0) else {
            return Recorded::Counted;
        };
        *count = count.saturating_add(1);
        if self.limit > 0 && *count == self.limit.saturating_add(1) {
            Recorded::CrossedLimit
        } else {
            Recorded::Counted
        }
    }

    /// Seconds until `source`'s window ends, for `Retry-After`.
    pub fn retry_after(&self, source: IpAddr, now: Instant) -> u64 {
        let Ok(sources) = self.sources.lock() else {
            return WINDOW.as_secs();
        };
        sources
            .started(&source, now)
            .map_or(WINDOW.as_secs(), |started| {
                WINDOW
                    .saturating_sub(now.duration_since(started))
                    .as_secs()
                    .max(1)
            })
    }
}

/// Whether a request carries a session credential (a token to count if it is refused).
fn presents_token(headers: &HeaderMap, names: CookieNames) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || crate::cookie::session_cookies(headers, names)
            .next()
            .is_some()
}

impl InvalidTokenGuard {
    /// For a request whose token was refused: `429` when `source` was already over the limit
    /// and refusal is configured (call it before [`refused`](Self::refused) counts this one).
    /// A valid token is never refused for its source's earlier guesses: it is checked like
    /// any other (one store read at most, as for any well-formed guess) and served.
    pub fn rejection(
        &self,
        metrics: &crate::metrics::Metrics,
        source: Option<IpAddr>,
    ) -> Option<ApiError> {
        let ip = source.filter(|_| self.reject)?;
        let now = Instant::now();
        if !self.is_over(ip, now) {
            return None;
        }
        metrics.guard(crate::metrics::GuardEvent::Rejected);
        Some(ApiError::TooManyRequests {
            retry_after: self.retry_after(ip, now),
        })
    }

    /// After a presented token was refused: counts it against the client, and reports the
    /// client once when it passes the limit.
    pub fn refused(
        &self,
        metrics: &crate::metrics::Metrics,
        headers: &HeaderMap,
        source: Option<IpAddr>,
    ) {
        let Some(ip) = source else { return };
        if !presents_token(headers, self.cookie_names) {
            return;
        }
        if self.record(ip, Instant::now()) == Recorded::CrossedLimit {
            metrics.guard(crate::metrics::GuardEvent::SourceOverLimit);
            tracing::warn!(
                event = "session.invalid_token_source",
                source = %ip,
                limit = self.limit,
                window_s = WINDOW.as_secs(),
                "a client passed the invalid-token limit"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn guard(limit: u32) -> InvalidTokenGuard {
        InvalidTokenGuard::new(
            &GuardConfig {
                invalid_token_limit: limit,
                reject_over_limit: true,
                client_ip_header: Some("x-real-ip".into()),
                ..GuardConfig::default()
            },
            CookieNames::AlsoLegacy,
        )
    }

    #[test]
    fn a_source_crosses_the_limit_once_per_window() {
        let g = guard(3);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(g.record(ip, t), Recorded::Counted);
        }
        assert!(!g.is_over(ip, t));
        assert_eq!(g.record(ip, t), Recorded::CrossedLimit);
        assert!(g.is_over(ip, t));
        assert_eq!(g.record(ip, t), Recorded::Counted);
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(!g.is_over(other, t), "sources are counted apart");
        let later = t + WINDOW;
        assert!(!g.is_over(ip, later), "the window ends");
        assert_eq!(g.record(ip, later), Recorded::Counted);
    }

    #[test]
    fn the_source_comes_from_the_configured_header_or_the_peer() {
        let g = guard(1);
        // A gateway on the same host: loopback is trusted by default.
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(g.source(&h, Some(peer)), Some(peer.ip()));
        h.insert("x-real-ip", HeaderValue::from_static("203.0.113.7"));
        assert_eq!(g.source(&h, Some(peer)), "203.0.113.7".parse().ok());
        h.insert("x-real-ip", HeaderValue::from_static("not an address"));
        assert_eq!(g.source(&h, Some(peer)), Some(peer.ip()));
        // From a peer that is no trusted proxy, the header means nothing.
        let stranger: SocketAddr = "198.51.100.9:5000".parse().unwrap();
        h.insert("x-real-ip", HeaderValue::from_static("203.0.113.7"));
        assert_eq!(g.source(&h, Some(stranger)), Some(stranger.ip()));
    }

    #[test]
    fn only_requests_with_a_session_credential_count() {
        let mut h = HeaderMap::new();
        assert!(!presents_token(&h, CookieNames::AlsoLegacy));
        h.insert(header::COOKIE, HeaderValue::from_static("theme=dark"));
        assert!(!presents_token(&h, CookieNames::AlsoLegacy));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; sid=x"),
        );
        assert!(presents_token(&h, CookieNames::AlsoLegacy));
        assert!(
            !presents_token(&h, CookieNames::HostOnly),
            "sid is no credential unless configured"
        );
    }
}
