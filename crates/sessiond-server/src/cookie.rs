//! The session cookie sessiond sets (S15).
//!
//! `__Host-sid=<token>; Path=/; Secure; HttpOnly; SameSite=Lax`: the `__Host-` prefix makes
//! browsers refuse it unless it is `Secure`, has `Path=/` and no `Domain`, so no subdomain can
//! plant or read it. It has no `Max-Age` (it ends with the browser) unless `cookie.persistent`
//! is on, when it lasts until the session's absolute expiry. Name and value come to about 80
//! bytes, far below the 4096 browsers keep (ASVS 5 3.3.5).

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use sessiond_core::{SessionRecord, Timestamp};

use crate::extract::{LEGACY_SESSION_COOKIE, SESSION_COOKIE};

/// The session cookies of a request, by the name they were sent under, in the order sent:
/// every `name=value` pair of every `Cookie` header whose name is a session cookie's. Read as
/// bytes, so a non-UTF-8 byte in another cookie hides nothing (the token extraction and the
/// invalid-token guard both read cookies through this one parser).
pub fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = (&'static str, &[u8])> {
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

const ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Lax";

/// Adds `Set-Cookie` for `name` carrying `token` for `record`'s session; a persistent cookie
/// lasts from `now` until the session's absolute expiry.
pub fn set(
    r: &mut Response,
    name: &str,
    token: &str,
    record: &SessionRecord,
    persistent: Option<Timestamp>,
) {
    let value = if let Some(now) = persistent {
        let max_age = record.absolute_expires_at.saturating_since(now).as_secs();
        format!("{name}={token}; {ATTRIBUTES}; Max-Age={max_age}")
    } else {
        format!("{name}={token}; {ATTRIBUTES}")
    };
    append(r, &value);
}

/// Adds a `Set-Cookie` that makes the browser drop cookie `name`.
pub fn clear(r: &mut Response, name: &str) {
    append(r, &format!("{name}=; {ATTRIBUTES}; Max-Age=0"));
}

fn append(r: &mut Response, value: &str) {
    // Tokens and cookie names are ASCII without control characters, so this cannot fail.
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookies_are_read_as_bytes_past_any_other_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(b"lang=\xe9; sid=a.b").unwrap_or(HeaderValue::from_static("")),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark;__Host-sid=c.d"),
        );
        let found: Vec<(&str, &[u8])> = session_cookies(&h).collect();
        assert_eq!(
            found,
            vec![
                ("sid", b"a.b".as_slice()),
                ("__Host-sid", b"c.d".as_slice())
            ]
        );
    }
}
