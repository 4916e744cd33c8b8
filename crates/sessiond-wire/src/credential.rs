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
    /// `Authorization: Bearer`.
    Bearer,
    /// A session cookie, by the name the client used.
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

/// The token presented with a request, shape-checked, and how it came (RFC 6750 §2: a client
/// uses one method, so a bearer token and a cookie that differ are refused).
pub fn session_token(headers: &HeaderMap) -> Result<(Token, Transport), NoToken> {
    let mut candidates: Vec<(&[u8], Transport)> = Vec::new();
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = auth.next() {
        if auth.next().is_some() {
            return Err(NoToken);
        }
        candidates.push((bearer_token(value.as_bytes())?, Transport::Bearer));
    }
    for (name, value) in session_cookies(headers) {
        candidates.push((value, Transport::Cookie(name)));
    }
    let (value, transport) = *candidates.first().ok_or(NoToken)?;
    if candidates.iter().any(|(other, _)| *other != value) {
        return Err(NoToken);
    }
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
                Transport::Bearer,
            ),
        ] {
            let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (tok, transport) = session_token(&headers(&pairs)).unwrap();
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
            vec![("cookie", format!("sid={t}; __Host-sid={u}"))],
            vec![("cookie", "sid=".into())],
            vec![("authorization", format!("Bearer {}", &t[1..]))],
        ];
        for case in cases {
            let pairs: Vec<(&str, &str)> = case.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert!(session_token(&headers(&pairs)).is_err(), "{case:?}");
        }
    }
}
