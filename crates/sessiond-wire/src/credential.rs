//! How callers present themselves: a token holder by `Authorization: Bearer` or the session
//! cookie, a backend by `X-Api-Key`.
//!
//! Tokens are taken only from those two places, never from the URL, and their shape is checked
//! here, before anything asks a store: a malformed token costs nothing.

use http::{HeaderMap, header};
use sessiond_core::Token;

use crate::cookie::session_cookies;

/// The cookie sessiond sets by default.
pub const SESSION_COOKIE: &str = "__Host-sid";
/// A second cookie name accepted, for apps that cannot use the `__Host-` prefix.
pub const LEGACY_SESSION_COOKIE: &str = "sid";
/// Header of trusted backends.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Header of the forward-auth answer naming the session's user.
pub const USER_ID_HEADER: &str = "x-user-id";
/// Header of the forward-auth answer naming the session.
pub const SESSION_ID_HEADER: &str = "x-session-id";

/// How a token holder presented its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `Authorization: Bearer` alone.
    Bearer,
    /// A session cookie, by the name the client used (with or without the same token as a
    /// bearer token): the answer keeps that cookie up to date.
    Cookie(&'static str),
}

/// No usable session token: none at all, a malformed one, two `Authorization` headers, an
/// unknown scheme, or a bearer token and a cookie that differ. Deliberately one case: the
/// answer (`401`) must not tell a client which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoToken;

impl std::fmt::Display for NoToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no usable session token")
    }
}

impl std::error::Error for NoToken {}

/// Which cookie names carry a session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CookieNames {
    /// `__Host-sid` only (the default): a `sid` cookie is not a credential.
    #[default]
    HostOnly,
    /// `__Host-sid`, and `sid` for apps that cannot use the `__Host-` prefix; when both are
    /// sent, `__Host-sid` wins. A `sid` cookie can be planted by any subdomain (it has no
    /// `__Host-` guarantees), so it never decides over `__Host-sid`.
    AlsoLegacy,
}

/// The token presented with a request, shape-checked, and how it came (RFC 6750 §2: a client
/// uses one method, so a bearer token and a cookie that differ are refused).
pub fn session_token(
    headers: &HeaderMap,
    names: CookieNames,
) -> Result<(Token, Transport), NoToken> {
    let mut candidates: Vec<(&[u8], Transport)> = Vec::new();
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = auth.next() {
        if auth.next().is_some() {
            return Err(NoToken);
        }
        candidates.push((bearer_token(value.as_bytes())?, Transport::Bearer));
    }
    for (name, value) in session_cookies(headers, names) {
        candidates.push((value, Transport::Cookie(name)));
    }
    let (value, _) = *candidates.first().ok_or(NoToken)?;
    if candidates.iter().any(|(other, _)| *other != value) {
        return Err(NoToken);
    }
    // Sent by bearer and cookie alike, it is a browser's: a rotate renews the cookie and a
    // logout clears it.
    let transport = candidates
        .iter()
        .map(|(_, t)| *t)
        .find(|t| matches!(t, Transport::Cookie(_)))
        .unwrap_or(Transport::Bearer);
    let text = std::str::from_utf8(value).map_err(|_| NoToken)?;
    let token = Token::parse(text).map_err(|_| NoToken)?;
    Ok((token, transport))
}

/// The credential of `Authorization: Bearer <token>`: the scheme is case-insensitive
/// (RFC 9110 §11.1) and may be followed by several spaces (RFC 6750 §2.1).
fn bearer_token(value: &[u8]) -> Result<&[u8], NoToken> {
    let space = value.iter().position(|&b| b == b' ').ok_or(NoToken)?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(NoToken);
    }
    let credential = rest.trim_ascii_start();
    if credential.is_empty() || credential.contains(&b' ') {
        return Err(NoToken);
    }
    Ok(credential)
}

/// The `X-Api-Key` of a request, if exactly one was sent.
pub fn api_key(headers: &HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(API_KEY_HEADER).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_and_cookie() {
        let t = Token::generate(&sessiond_core::UserId::parse("u").unwrap())
            .unwrap()
            .expose();
        for (h, want) in [
            (
                vec![("authorization", format!("Bearer {t}"))],
                Transport::Bearer,
            ),
            (
                vec![("authorization", format!("bearer   {t}"))],
                Transport::Bearer,
            ),
            (
                vec![("authorization", format!("BEARER {t}"))],
                Transport::Bearer,
            ),
            (
                vec![("cookie", format!("a=b; __Host-sid={t}; c=d"))],
                Transport::Cookie(SESSION_COOKIE),
            ),
            (
                vec![("cookie", format!("sid={t}"))],
                Transport::Cookie(LEGACY_SESSION_COOKIE),
            ),
            (
                vec![
                    ("authorization", format!("Bearer {t}")),
                    ("cookie", format!("sid={t}")),
                ],
                Transport::Cookie(LEGACY_SESSION_COOKIE),
            ),
        ] {
            let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (tok, transport) =
                session_token(&headers(&pairs), CookieNames::AlsoLegacy).unwrap();
            assert_eq!(tok.expose(), t);
            assert_eq!(transport, want);
        }
    }

    #[test]
    fn refusals() {
        let t = Token::generate(&sessiond_core::UserId::parse("u").unwrap())
            .unwrap()
            .expose();
        let u = Token::generate(&sessiond_core::UserId::parse("u").unwrap())
            .unwrap()
            .expose();
        let cases: Vec<Vec<(&str, String)>> = vec![
            vec![],
            vec![("authorization", String::new())],
            vec![("authorization", "Bearer".into())],
            vec![("authorization", "Bearer ".into())],
            vec![("authorization", format!("Basic {t}"))],
            vec![("authorization", format!("Bearer {t} x"))],
            vec![
                ("authorization", format!("Bearer {t}")),
                ("authorization", format!("Bearer {t}")),
            ],
            vec![
                ("authorization", format!("Bearer {t}")),
                ("cookie", format!("sid={u}")),
            ],
            vec![("cookie", "sid=".into())],
            vec![("authorization", format!("Bearer {}", &t[1..]))],
        ];
        for case in cases {
            let pairs: Vec<(&str, &str)> = case.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert!(
                session_token(&headers(&pairs), CookieNames::AlsoLegacy).is_err(),
                "{case:?}"
            );
        }
    }
}

#[cfg(test)]
mod cookie_name_tests {
    use super::*;
    use http::HeaderValue;

    fn token() -> String {
        Token::generate(&sessiond_core::UserId::parse("u").unwrap())
            .unwrap()
            .expose()
    }

    fn cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn host_sid_wins_over_a_planted_sid_and_sid_is_off_by_default() {
        let (good, planted) = (token(), token());
        let both = cookie(&format!("sid={planted}; __Host-sid={good}"));
        for names in [CookieNames::HostOnly, CookieNames::AlsoLegacy] {
            let (t, transport) = session_token(&both, names).unwrap();
            assert_eq!(t.expose(), good, "{names:?}");
            assert_eq!(transport, Transport::Cookie(SESSION_COOKIE));
        }
        let legacy_only = cookie(&format!("sid={good}"));
        assert_eq!(
            session_token(&legacy_only, CookieNames::HostOnly).err(),
            Some(NoToken),
            "sid is not a credential unless configured"
        );
        let (t, transport) = session_token(&legacy_only, CookieNames::AlsoLegacy).unwrap();
        assert_eq!(t.expose(), good);
        assert_eq!(transport, Transport::Cookie(LEGACY_SESSION_COOKIE));
    }
}
