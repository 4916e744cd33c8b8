//! The session cookie on the wire: reading it from `Cookie`, and the `Set-Cookie` values
//! sessiond sends (S15).
//!
//! `__Host-sid=<token>; Path=/; Secure; HttpOnly; SameSite=Lax`: the `__Host-` prefix makes
//! browsers refuse it unless it is `Secure`, has `Path=/` and no `Domain`, so no subdomain can
//! plant or read it. It has no `Max-Age` (it ends with the browser) unless the server is
//! configured for persistent cookies. Name and value come to about 80 bytes, far below the
//! 4096 browsers keep (ASVS 5 3.3.5).

use http::{HeaderMap, header};

use crate::credential::{CookieNames, LEGACY_SESSION_COOKIE, SESSION_COOKIE};

/// The attributes of every session cookie sessiond sets.
pub const ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Lax";

/// The session cookies of a request, by the name they were sent under, in the order sent:
/// every `name=value` pair of every `Cookie` header whose name carries a session token under
/// `names` (with [`CookieNames::AlsoLegacy`], `sid` only when no `__Host-sid` was sent). Read
/// as bytes, so a non-UTF-8 byte in another cookie hides nothing (the token extraction and the
/// server's invalid-token guard both read cookies through this one parser).
pub fn session_cookies(
    headers: &HeaderMap,
    names: CookieNames,
) -> impl Iterator<Item = (&'static str, &[u8])> {
    let host_sent = all_session_cookies(headers).any(|(name, _)| name == SESSION_COOKIE);
    all_session_cookies(headers).filter(move |(name, _)| {
        *name == SESSION_COOKIE || (names == CookieNames::AlsoLegacy && !host_sent)
    })
}

/// Every `__Host-sid` and `sid` pair, whatever the configuration.
fn all_session_cookies(headers: &HeaderMap) -> impl Iterator<Item = (&'static str, &[u8])> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (name, value) = (&pair[..eq], &pair[eq + 1..]);
            if name == SESSION_COOKIE.as_bytes() {
                Some((SESSION_COOKIE, value))
            } else if name == LEGACY_SESSION_COOKIE.as_bytes() {
                Some((LEGACY_SESSION_COOKIE, value))
            } else {
                None
            }
        })
}

/// The `Set-Cookie` value carrying `token` under `name`; with `max_age` (seconds) a persistent
/// cookie, else one that ends with the browser.
pub fn set_cookie(name: &str, token: &str, max_age: Option<u64>) -> String {
    match max_age {
        Some(secs) => format!("{name}={token}; {ATTRIBUTES}; Max-Age={secs}"),
        None => format!("{name}={token}; {ATTRIBUTES}"),
    }
}

/// The `Set-Cookie` value that makes a browser drop cookie `name`.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; {ATTRIBUTES}; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn session_cookies_are_read_as_bytes_past_any_other_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"lang=\xe9; sid=a.b").unwrap(),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark;__Host-sid=c.d"),
        );
        let found: Vec<(&str, &[u8])> = all_session_cookies(&h).collect();
        assert_eq!(
            found,
            vec![
                ("sid", b"a.b".as_slice()),
                ("__Host-sid", b"c.d".as_slice())
            ]
        );
    }

    #[test]
    fn set_and_clear() {
        assert_eq!(
            set_cookie("__Host-sid", "t", None),
            "__Host-sid=t; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        assert!(set_cookie("sid", "t", Some(60)).ends_with("; Max-Age=60"));
        assert!(clear_cookie("sid").starts_with("sid=; "));
    }
}
