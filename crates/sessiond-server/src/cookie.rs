//! The session cookie sessiond sets (S15).
//!
//! `__Host-sid=<token>; Path=/; Secure; HttpOnly; SameSite=Lax`: the `__Host-` prefix makes
//! browsers refuse it unless it is `Secure`, has `Path=/` and no `Domain`, so no subdomain can
//! plant or read it. It has no `Max-Age` (it ends with the browser) unless `cookie.persistent`
//! is on, when it lasts until the session's absolute expiry. Name and value come to about 80
//! bytes, far below the 4096 browsers keep (ASVS 5 3.3.5).

use axum::http::{HeaderValue, header};
use axum::response::Response;
use sessiond_core::{SessionRecord, Timestamp};

const ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Lax";

/// Adds `Set-Cookie` for `name` carrying `token` for `record`'s session.
pub fn set(r: &mut Response, name: &str, token: &str, record: &SessionRecord, persistent: bool) {
    let value = if persistent {
        let now = Timestamp::from_millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        );
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
