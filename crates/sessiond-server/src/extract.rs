//! Reading credentials and bodies off requests, with our error shape for every rejection.
//!
//! The parsing itself (tokens only from `Authorization: Bearer` and the session cookie, never
//! from the URL, shape-checked before any store access) is `sessiond_wire`'s, shared with
//! clients; this module maps its refusals to [`ApiError`] and reads bounded JSON bodies.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, header};
use bytes::BytesMut;
use http_body_util::BodyExt as _;
use serde::de::DeserializeOwned;
use sessiond_core::Token;

use crate::error::ApiError;
use crate::state::AppState;

pub use sessiond_wire::credential::{
    API_KEY_HEADER, CookieNames, LEGACY_SESSION_COOKIE, SESSION_COOKIE, Transport, api_key,
};

/// The token presented with a request, shape-checked (see
/// [`sessiond_wire::credential::session_token`]); every refusal is one `401`.
pub fn session_token(
    headers: &HeaderMap,
    names: CookieNames,
) -> Result<(Token, Transport), ApiError> {
    sessiond_wire::credential::session_token(headers, names).map_err(|_| ApiError::Unauthorized)
}

/// `If-Match` (RFC 9110 §13.1.1): `None` for no header or `*` (any version), else the versions
/// that match: the strong entity tags `"<version>"` of every listed member, over every
/// `If-Match` line. A weak tag (`W/"3"`) never matches under the strong comparison `If-Match`
/// uses, nor does a tag that is no version, so a list of only those matches nothing (`412`).
/// A bare number (`3`) is read as `"3"`. Anything that is not a list of entity tags is `400`,
/// and so is a header with no member at all (empty, or only commas): a client that sends one
/// has a bug to hear about, not a `412` to retry on.
pub fn if_match(headers: &HeaderMap) -> Result<Option<Vec<u64>>, ApiError> {
    let bad = || {
        ApiError::BadRequest(
            "If-Match must be * or entity tags, such as \"3\" or \"3\", \"4\".".into(),
        )
    };
    let mut versions = Vec::new();
    let mut any = false;
    let mut present = false;
    let mut members = 0usize;
    for value in headers.get_all(header::IF_MATCH) {
        present = true;
        let mut rest = value.to_str().map_err(|_| bad())?;
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                break;
            }
            members += 1;
            if let Some(after) = rest.strip_prefix('*') {
                any = true;
                rest = after;
                continue;
            }
            let (weak, tag) = match rest.strip_prefix("W/") {
                Some(after) => (true, after),
                None => (false, rest),
            };
            let (opaque, after) = if let Some(quoted) = tag.strip_prefix('"') {
                let close = quoted.find('"').ok_or_else(bad)?;
                (&quoted[..close], &quoted[close + 1..])
            } else if !weak {
                // A bare number, read as its strong tag.
                let end = tag.find([',', ' ', '\t']).unwrap_or(tag.len());
                let digits = &tag[..end];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                (digits, &tag[end..])
            } else {
                return Err(bad());
            };
            if !after.is_empty() && !after.starts_with([',', ' ', '\t']) {
                return Err(bad());
            }
            if !weak
                && opaque.len() <= 20
                && !opaque.is_empty()
                && opaque.bytes().all(|b| b.is_ascii_digit())
                && let Ok(v) = opaque.parse::<u64>()
            {
                versions.push(v);
            }
            rest = after;
        }
    }
    if !present {
        return Ok(None);
    }
    if members == 0 {
        return Err(bad());
    }
    if any {
        return Ok(None);
    }
    Ok(Some(versions))
}

/// A JSON request body: `Content-Type: application/json` (or RFC 7396's
/// `application/merge-patch+json`) required, 415 otherwise; at most `limits.max_body_bytes`
/// (413, see [`read_body`]); parsed with serde_json's recursion limit on (400).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T> FromRequest<AppState> for JsonBody<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limits = BodyLimits {
            max_bytes: state.max_body_bytes,
            timeout: state.body_timeout,
        };
        let bytes = read_body(req, limits).await?;
        // Every body of the API is an object. serde would also read a struct from an array of
        // its fields, so a JSON Patch document (`[{"op": ...}]`) could pass as a merge patch.
        if bytes.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::BadRequest(
                "The JSON body must be an object.".into(),
            ));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// How much of a body over the limit is read and thrown away after the 413 is sent.
///
/// A client that writes its whole body before it reads (Python's urllib, many HTTP
/// libraries) only sees the answer if the server reads what it sends: closing a socket with
/// unread data makes the kernel reset the connection, and the client gets a broken pipe
/// instead of the problem document. Up to this much is drained; past it the connection is
/// closed without reading on (a body that large is an attack, not a mistake).
pub const DISCARD_LIMIT: u64 = 16 * 1024 * 1024;

/// The bounds on one request body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Largest body in bytes (413 beyond).
    pub max_bytes: usize,
    /// Longest the whole body may take to arrive (408 beyond); also bounds the drain after a
    /// 413.
    pub timeout: std::time::Duration,
}

/// Reads the body of `req`, at most `limits.max_bytes` of it, within `limits.timeout`.
///
/// A `Content-Length` over the limit is refused at once, before a byte is read; a body found
/// over the limit while reading is refused at that point. Either way the 413 is answered
/// without waiting for the rest: a task drains up to [`DISCARD_LIMIT`] more bytes (for at
/// most `limits.timeout`) while the answer goes out, so it reaches a client that is still
/// writing, and the connection closes when the drain ends. A client that sent
/// `Expect: 100-continue` has not sent its body and is not drained: the 413 is its answer.
/// A body that stops arriving is answered 408 when `limits.timeout` runs out.
pub async fn read_body(req: Request, limits: BodyLimits) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expects_continue = req.headers().contains_key(header::EXPECT);
    let body = req.into_body();
    let limit_u64 = u64::try_from(limits.max_bytes).unwrap_or(u64::MAX);
    if declared.is_some_and(|n| n > limit_u64) {
        if !expects_continue && declared.is_some_and(|n| n <= DISCARD_LIMIT) {
            drain_in_background(body, DISCARD_LIMIT, limits.timeout);
        }
        return Err(ApiError::BodyTooLarge);
    }
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut body = body;
    let capacity = declared.map_or(1024, |n| usize::try_from(n).unwrap_or(limits.max_bytes));
    let mut buf = BytesMut::with_capacity(capacity);
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_elapsed) => return Err(ApiError::BodyTimeout),
        };
        let frame = frame
            .map_err(|_| ApiError::BadRequest("The request body could not be read.".into()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limits.max_bytes {
            let read = u64::try_from(buf.len() + data.len()).unwrap_or(u64::MAX);
            drain_in_background(body, DISCARD_LIMIT.saturating_sub(read), limits.timeout);
            return Err(ApiError::BodyTooLarge);
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Reads and drops up to `budget` more bytes of `body` for at most `time`, on a task of its
/// own, so the answer does not wait for it. hyper goes on reading the connection for as long
/// as the body is held, and closes it once the body is dropped.
fn drain_in_background(body: axum::body::Body, budget: u64, time: std::time::Duration) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(time, discard(body, budget)).await;
    });
}

/// Reads and drops up to `budget` more bytes of `body`.
async fn discard(mut body: axum::body::Body, mut budget: u64) {
    while budget > 0 {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    budget = budget.saturating_sub(u64::try_from(data.len()).unwrap_or(u64::MAX));
                }
            }
            _ => return,
        }
    }
}

/// Parses a body, turning serde's message into a client-facing detail.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        if msg.contains("recursion limit") {
            ApiError::BadRequest("The JSON body is nested too deeply.".into())
        } else {
            ApiError::BadRequest(format!("Invalid JSON body: {}", redact_quotes(&msg)))
        }
    })
}

/// Field names of the API, the only quoted text an error detail may repeat.
const API_FIELDS: &[&str] = &[
    "userId",
    "userData",
    "metadata",
    "ttlSeconds",
    "setCookie",
    "replacesSessionId",
];

/// serde's messages quote what the client sent (`invalid type: string "…"`, ``unknown field
/// `…` ``), and a client may have sent a token there (S17): every quoted part that is not one of
/// the API's field names becomes `…`.
fn redact_quotes(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            out.push('…');
            out.push(quote);
            return out;
        };
        let inner = &after[..close];
        out.push_str(if API_FIELDS.contains(&inner) {
            inner
        } else {
            "…"
        });
        out.push(quote);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/merge-patch+json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn s17_error_details_repeat_only_the_api_field_names() {
        let token = "sess_AAAAAAAAAAAAAAAA.secretsecretsecret";
        let r = redact_quotes(&format!(
            "unknown field `{token}`, expected one of `userId`, `userData` at line 1 column 9"
        ));
        assert_eq!(
            r,
            "unknown field `…`, expected one of `userId`, `userData` at line 1 column 9"
        );
        let r = redact_quotes(&format!("invalid type: string \"{token}\", expected u64"));
        assert_eq!(r, "invalid type: string \"…\", expected u64");
        assert_eq!(redact_quotes("no quotes"), "no quotes");
        assert_eq!(redact_quotes("dangling \"abc"), "dangling \"…\"");
    }

    #[test]
    fn if_match_forms() {
        let parse = |v: &str| if_match(&headers(&[("if-match", v)]));
        assert_eq!(if_match(&headers(&[])).unwrap(), None);
        assert_eq!(parse("\"3\"").unwrap(), Some(vec![3]));
        assert_eq!(parse("3").unwrap(), Some(vec![3]));
        assert_eq!(parse("*").unwrap(), None);
        assert_eq!(parse("\"1\", \"2\"").unwrap(), Some(vec![1, 2]));
        assert_eq!(parse("\"1\",\"2\"").unwrap(), Some(vec![1, 2]));
        // Weak tags and tags that are no version match nothing (412, not 400).
        assert_eq!(parse("W/\"3\"").unwrap(), Some(vec![]));
        assert_eq!(parse("W/\"3\", \"4\"").unwrap(), Some(vec![4]));
        assert_eq!(parse("\"x\"").unwrap(), Some(vec![]));
        assert_eq!(parse("\"\"").unwrap(), Some(vec![]));
        assert_eq!(parse("\"99999999999999999999999\"").unwrap(), Some(vec![]));
        // Two lines are one list.
        assert_eq!(
            if_match(&headers(&[("if-match", "\"1\""), ("if-match", "\"5\"")])).unwrap(),
            Some(vec![1, 5])
        );
        for bad in ["\"3", "x", "W/3", "\"3\"x", "3x", "", " ", ", ,"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
