//! Binding a session to the client that logged in (S20): a signal, not a defence.
//!
//! The backend records the login's `ipAddress` and `userAgent` in the session's `metadata`
//! (the seed's session document does). On every token-holder request, sessiond compares them
//! with the request's `User-Agent` and client address (the same address the invalid-token
//! guard uses: the TCP peer, or `guard.client_ip_header` behind a gateway). A difference is
//! logged (`session.binding_mismatch`, with the session id and which property changed, never
//! the token) and counted; with `binding.user_agent = "enforce"` (or `binding.ip`) the request
//! is refused with `401` as if the token were unknown. Each difference is a
//! [`BindingMismatch`](sessiond_core::EventKind::BindingMismatch) event: counted on every
//! request, logged at most once a minute per session (`events::LogSink`), so a stolen token in
//! steady use does not flood the log.
//!
//! The user agent is compared by default. The address is not: behind a gateway sessiond sees
//! the gateway's address unless `guard.client_ip_header` names the header carrying the
//! client's, so turn `binding.ip` on together with that.
//!
//! Addresses change for honest reasons (mobile networks, VPNs, dual-stack clients) and a user
//! agent is whatever the attacker says it is, so the defaults only log: the token's secrecy is
//! the defence, this is for alerting.

use std::net::IpAddr;

use axum::http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sessiond_core::{BindingProperty, SessionRecord};

/// What to do when a property differs from the login's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingMode {
    /// Do not compare.
    Off,
    /// Log and count the difference; serve the request.
    #[default]
    Log,
    /// Log, count and refuse with `401`.
    Enforce,
}

/// The modes of both properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BindingConfig {
    /// Compare the request's `User-Agent` with `metadata.userAgent` (default `log`).
    pub user_agent: BindingMode,
    /// Compare the client's address with `metadata.ipAddress` (default `off`).
    pub ip: BindingMode,
}

impl Default for BindingConfig {
    fn default() -> Self {
        BindingConfig {
            user_agent: BindingMode::Log,
            ip: BindingMode::Off,
        }
    }
}

impl BindingConfig {
    /// The differences between the request and the login, with whether any is enforced.
    /// Properties the login did not record are not compared.
    pub fn check(
        &self,
        record: &SessionRecord,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> (Vec<BindingProperty>, bool) {
        let mut found = Vec::new();
        let mut refuse = false;
        if self.user_agent != BindingMode::Off
            && let Some(recorded) = record.metadata.get("userAgent").and_then(|v| v.as_str())
        {
            let sent = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if sent != recorded {
                found.push(BindingProperty::UserAgent);
                refuse |= self.user_agent == BindingMode::Enforce;
            }
        }
        if self.ip != BindingMode::Off
            && let Some(recorded) = record
                .metadata
                .get("ipAddress")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse::<IpAddr>().ok())
            && let Some(client) = client
            && canonical(client) != canonical(recorded)
        {
            found.push(BindingProperty::Ip);
            refuse |= self.ip == BindingMode::Enforce;
        }
        (found, refuse)
    }
}

/// An IPv4-mapped IPv6 address as IPv4, so `::ffff:192.0.2.1` matches `192.0.2.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;
    use sessiond_core::{Timestamp, Token, UserId};

    fn record(metadata: &serde_json::Value) -> SessionRecord {
        let user = UserId::parse("u").unwrap();
        let t = Token::generate(&user).unwrap();
        SessionRecord {
            id: t.session_id().clone(),
            user_id: user,
            secret_hash: t.secret_hash(),
            created_at: Timestamp::from_millis(0),
            last_activity: Timestamp::from_millis(0),
            idle_timeout_ms: 1,
            absolute_expires_at: Timestamp::from_millis(1),
            version: 1,
            user_data: serde_json::Map::new(),
            metadata: metadata.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn differences_are_found_and_enforced_only_when_asked() {
        let r = record(&json!({"userAgent": "Mozilla/5.0", "ipAddress": "192.0.2.1"}));
        let mut h = HeaderMap::new();
        h.insert(header::USER_AGENT, HeaderValue::from_static("Mozilla/5.0"));
        let same: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        let log = BindingConfig {
            user_agent: BindingMode::Log,
            ip: BindingMode::Log,
        };
        assert_eq!(log.check(&r, &h, Some(same)), (vec![], false));
        h.insert(header::USER_AGENT, HeaderValue::from_static("curl/8"));
        assert_eq!(
            log.check(&r, &h, Some(other)),
            (vec![BindingProperty::UserAgent, BindingProperty::Ip], false)
        );
        let enforce_ua = BindingConfig {
            user_agent: BindingMode::Enforce,
            ip: BindingMode::Log,
        };
        assert_eq!(
            enforce_ua.check(&r, &h, Some(same)),
            (vec![BindingProperty::UserAgent], true)
        );
        let off = BindingConfig {
            user_agent: BindingMode::Off,
            ip: BindingMode::Off,
        };
        assert_eq!(off.check(&r, &h, Some(other)), (vec![], false));
        // Nothing recorded, nothing compared.
        assert_eq!(
            log.check(&record(&json!({})), &h, Some(other)),
            (vec![], false)
        );
    }
}
