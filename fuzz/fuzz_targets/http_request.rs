//! Request path and header handling, on arbitrary requests.
//!
//! The input is a request in a loose text form, so seeds are readable and the fuzzer mutates
//! what matters:
//!
//! ```text
//! METHOD /path?query
//! Header-Name: value
//! ...
//!
//! body
//! ```
//!
//! Before parsing, `$TOKEN` becomes the token of a live session (created once, and again
//! whenever an input logged it out or rotated it), `$SID` its session id, `$OTHER` the token
//! of a second session, and `$KEY` the backend API key, so mutations reach the authenticated
//! handlers too.
//!
//! Two layers are checked on every input:
//!
//! 1. The pure extraction functions of `sessiond_server::extract` on the headers:
//!    `session_token` (bearer and cookie, conflicts), `api_key` and `if_match`. No panic; a
//!    token is only ever one that was presented, by the transport it was presented with; a
//!    version is only ever one an `If-Match` named.
//! 2. The whole axum router, in process (`tower::ServiceExt::oneshot`), over the embedded
//!    store in a temporary directory (on /dev/shm when it exists, so commits are cheap). No
//!    panic, no 500; `GET /v1/auth` answers only 200, 401 or 503; every answer carries
//!    `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`; every error is
//!    `application/problem+json` with a JSON object body; no answer shows the secret of a
//!    token (unless the request itself carried it in its body or URL, which stored JSON and
//!    error details may echo).
//!
//! `SESSIOND_FUZZ_TRACE=1` prints each request's method, path and status (to see which
//! handlers a corpus reaches: `SESSIOND_FUZZ_TRACE=1 fuzz/target/.../http_request -runs=0 DIR`).
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use sessiond_core::{Client, NewSession, Origin, Sessions, SystemClock, Token, UserId};
use sessiond_server::api_keys::ApiKeys;
use sessiond_server::extract::{
    API_KEY_HEADER, CookieNames, LEGACY_SESSION_COOKIE, SESSION_COOKIE, Transport, api_key,
    if_match, session_token,
};
use sessiond_server::metrics::Metrics;
use sessiond_server::{App, AppState};
use sessiond_store_embedded::{EmbeddedOptions, EmbeddedStore};
use tower::ServiceExt as _;

const KEY: &str = "fuzz-backend-key-0123456789abcdef";
const MAX_BODY: usize = 64 * 1024;

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    sessions: Sessions,
    /// The live session's token and the other session's token.
    tokens: Mutex<(Token, Token)>,
    /// `SESSIOND_FUZZ_TRACE` set: print each request's method, path and status.
    trace: bool,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory");
        let (router, sessions) = rt.block_on(async {
            let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
                .expect("embedded store");
            let store: Arc<dyn sessiond_core::SessionStore> = Arc::new(store);
            let mut config = sessiond_server::Config::default();
            config.limits.request_timeout = Duration::from_secs(10);
            config.limits.max_body_bytes = MAX_BODY;
            let sessions = Sessions::new(store, config.policy(), Arc::new(SystemClock));
            let state = AppState(Arc::new(App::new(
                &config,
                sessions.clone(),
                ApiKeys::from_config(&[KEY.to_owned()]).expect("api key"),
                Arc::new(Metrics::new()),
                "embedded",
            )));
            (sessiond_server::app(state), sessions)
        });
        // The database stays open; removing its directory now leaves nothing behind when
        // libFuzzer ends the process, however it ends.
        drop(dir);
        let first = rt.block_on(issue(&sessions, "fuzz-user"));
        let other = rt.block_on(issue(&sessions, "other-user"));
        Fixture {
            rt,
            router,
            sessions,
            tokens: Mutex::new((first, other)),
            trace: std::env::var_os("SESSIOND_FUZZ_TRACE").is_some(),
        }
    }
}

async fn issue(sessions: &Sessions, user: &str) -> Token {
    let mut data = Map::new();
    data.insert("cart".into(), serde_json::json!({"items": [1, 2]}));
    sessions
        .create(
            NewSession {
                user_id: UserId::parse(user).expect("user id"),
                user_data: data,
                metadata: Map::new(),
                ttl: None,
                replaces: None,
            },
            Origin::CLI,
        )
        .await
        .expect("create a session")
        .token
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(Fixture::new)
}

fn replace_all(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct Parsed<'a> {
    method: &'a [u8],
    target: &'a [u8],
    headers: HeaderMap,
    body: &'a [u8],
}

fn parse(data: &[u8]) -> Parsed<'_> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let (method, target) = match first.iter().position(|&b| b == b' ') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (first, &b"/"[..]),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii_start());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    Parsed {
        method,
        target,
        headers,
        body,
    }
}

/// Layer 1: the pure extraction functions.
fn check_extraction(headers: &HeaderMap) {
    if let Ok((token, transport)) = session_token(headers, CookieNames::AlsoLegacy) {
        let text = token.expose();
        match transport {
            Transport::Bearer => {
                let auth = headers
                    .get(header::AUTHORIZATION)
                    .expect("bearer without header");
                assert!(auth.as_bytes().ends_with(text.as_bytes()));
                assert_eq!(headers.get_all(header::AUTHORIZATION).iter().count(), 1);
            }
            Transport::Cookie(name) => {
                assert!(name == SESSION_COOKIE || name == LEGACY_SESSION_COOKIE);
                // With a bearer token as well, it is the same token.
                if let Some(auth) = headers.get(header::AUTHORIZATION) {
                    assert!(auth.as_bytes().ends_with(text.as_bytes()));
                }
                let pair = format!("{name}={text}");
                assert!(
                    headers
                        .get_all(header::COOKIE)
                        .iter()
                        .any(|v| contains(v.as_bytes(), pair.as_bytes())),
                    "a cookie token that no cookie carries"
                );
            }
        }
    }
    if let Some(key) = api_key(headers) {
        let all: Vec<_> = headers.get_all(API_KEY_HEADER).iter().collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].as_bytes(), key);
    }
    if let Ok(Some(versions)) = if_match(headers) {
        let text: Vec<&str> = headers
            .get_all(header::IF_MATCH)
            .iter()
            .map(|v| v.to_str().expect("versions from a non-text header"))
            .collect();
        assert!(!text.is_empty(), "versions without If-Match");
        for version in versions {
            assert!(
                text.iter().any(|t| t.contains(&version.to_string())),
                "a version that no If-Match names"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (token, other) = {
        let t = f.tokens.lock().expect("tokens");
        (t.0.expose(), t.1.expose())
    };
    let sid = token[..21].to_owned();
    let mut data = replace_all(data, b"$TOKEN", token.as_bytes());
    data = replace_all(&data, b"$OTHER", other.as_bytes());
    data = replace_all(&data, b"$SID", sid.as_bytes());
    data = replace_all(&data, b"$KEY", KEY.as_bytes());
    let req = parse(&data);
    check_extraction(&req.headers);

    let (Ok(method), Ok(uri)) = (Method::from_bytes(req.method), Uri::try_from(req.target)) else {
        return;
    };
    // Origin-form only, as the server sees it from hyper.
    if uri.scheme().is_some() || uri.authority().is_some() {
        return;
    }
    let path = uri.path().to_owned();
    let (sent_body, sent_target) = (req.body, req.target);
    let mut request = Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(Body::from(req.body.to_vec()))
        .expect("request");
    *request.headers_mut() = req.headers;
    // Every HTTP/1.1 request over a socket carries a Host (the router refuses one without, or
    // with two): add it when the input has none, so the input reaches the handlers.
    if !request.headers().contains_key(header::HOST) {
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("sessiond"));
    }

    f.rt.block_on(async {
        let response = f
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        if f.trace {
            eprintln!("{method} {path} -> {}", status.as_u16());
        }
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a response body")
            .to_bytes();
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "500 for {method} {path}: {body:?}"
        );
        if path == "/v1/auth" && (method == Method::GET || method == Method::HEAD) {
            assert!(
                matches!(status.as_u16(), 200 | 401 | 503),
                "GET /v1/auth answered {status}"
            );
        }
        assert_eq!(
            headers
                .get(header::CACHE_CONTROL)
                .map(HeaderValue::as_bytes),
            Some(&b"no-store"[..])
        );
        assert_eq!(
            headers
                .get(header::X_CONTENT_TYPE_OPTIONS)
                .map(HeaderValue::as_bytes),
            Some(&b"nosniff"[..])
        );
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(
                headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
                Some(&b"application/problem+json"[..]),
                "{status} without problem+json"
            );
            if method != Method::HEAD {
                let doc: Value = serde_json::from_slice(&body).expect("a JSON problem document");
                assert!(doc.is_object());
                assert_eq!(
                    doc.get("status").and_then(Value::as_u64),
                    Some(u64::from(status.as_u16()))
                );
            }
        }
        // No answer carries the secret of a token it was not sent in the body or the URL
        // (stored JSON and error details may echo what a client sent there).
        for presented in [&token, &other] {
            let secret = &presented.as_bytes()[22..];
            if contains(sent_body, secret) || contains(sent_target, secret) {
                continue;
            }
            let shown =
                contains(&body, secret) || headers.values().any(|v| contains(v.as_bytes(), secret));
            assert!(!shown, "an answer shows a token's secret: {method} {path}");
        }
    });

    // Keep both fixture sessions alive for the next input.
    let mut tokens = f.tokens.lock().expect("tokens");
    for (i, user) in [(0, "fuzz-user"), (1, "other-user")] {
        let t = if i == 0 { &tokens.0 } else { &tokens.1 };
        if f.rt
            .block_on(f.sessions.authenticate(t, Origin::holder(Client::NONE)))
            .is_err()
        {
            let fresh = f.rt.block_on(issue(&f.sessions, user));
            if i == 0 {
                tokens.0 = fresh;
            } else {
                tokens.1 = fresh;
            }
        }
    }
});
