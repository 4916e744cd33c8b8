//! The session cookie on responses (S15): `__Host-sid=<token>; Path=/; Secure; HttpOnly;
//! SameSite=Lax` (the format, and the one `Cookie` parser, are `sessiond_wire::cookie`'s). It
//! has no `Max-Age` (it ends with the browser) unless `cookie.persistent` is on, when it lasts
//! until the session's absolute expiry.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use sessiond_core::{SessionRecord, Timestamp};
use sessiond_wire::cookie::{clear_cookie, set_cookie};
use sessiond_wire::credential::CookieNames;

/// The session cookies of a request (see [`sessiond_wire::cookie::session_cookies`]).
pub fn session_cookies(
    headers: &HeaderMap,
    names: CookieNames,
) -> impl Iterator<Item = (&'static str, &[u8])> {
    sessiond_wire::cookie::session_cookies(headers, names)
}

/// Adds `Set-Cookie` for `name` carrying `token` for `record`'s session; a persistent cookie
/// lasts from `now` until the session's absolute expiry.
pub fn set(
    r: &mut Response,
    name: &str,
    token: &str,
    record: &SessionRecord,
    persistent: Option<Timestamp>,
) {
    let max_age = persistent.map(|now| record.absolute_expires_at.saturating_since(now).as_secs());
    append(r, &set_cookie(name, token, max_age));
}

/// Adds a `Set-Cookie` that makes the browser drop cookie `name`.
pub fn clear(r: &mut Response, name: &str) {
    append(r, &clear_cookie(name));
}

fn append(r: &mut Response, value: &str) {
    // Tokens and cookie names are ASCII without control characters, so this cannot fail.
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}
