//! Bad input (docs/requirements.md (d)): malformed and hostile JSON, oversized bodies and documents,
//! wrong media types, invalid numbers and identifiers, fields clients may not set, unsupported
//! methods and unknown paths. Every case is a `4xx` problem, and the server keeps serving.
//!
//! The cases about the HTTP framing itself (endless bodies, slow or oversized request heads,
//! smuggling) talk raw HTTP/1.1 over a socket, since a well-behaved client cannot send them.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, ALLOW, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{KEY, Resp, TestApp};

/// `POST /v1/sessions` with a raw body sent as JSON.
async fn create_raw(app: &TestApp, body: impl Into<reqwest::Body>) -> Resp {
    app.send(
        app.backend(Method::POST, "/v1/sessions")
            .header(CONTENT_TYPE, "application/json")
            .body(body),
    )
    .await
}

/// `PATCH /v1/session` with a raw body sent as JSON.
async fn patch_raw(app: &TestApp, token: &str, body: impl Into<reqwest::Body>) -> Resp {
    app.send(
        app.holder(Method::PATCH, "/v1/session", token)
            .header(CONTENT_TYPE, "application/json")
            .body(body),
    )
    .await
}

async fn assert_alive(app: &TestApp, token: &str) {
    app.send(app.req(Method::GET, "/healthz"))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(app.auth_status(token).await, StatusCode::OK);
}

#[tokio::test]
async fn d03_malformed_json_and_invalid_utf8_are_400() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{".to_vec(),
        b"not json".to_vec(),
        b"{\"userId\":}".to_vec(),
        b"{\"userId\":\"u1\",}".to_vec(),
        b"{'userId':'u1'}".to_vec(),
        b"{\"userId\":\"u1\"} trailing".to_vec(),
        b"{\"userId\":\"u1\"}{\"userId\":\"u2\"}".to_vec(),
        b"null".to_vec(),
        b"\"u1\"".to_vec(),
        // Invalid UTF-8, an overlong encoding, a lone surrogate, a byte-order mark.
        b"{\"userId\":\"u\xff1\"}".to_vec(),
        b"{\"userId\":\"u\xc0\xaf1\"}".to_vec(),
        b"{\"userId\":\"u1\",\"userData\":{\"k\":\"\\ud800\"}}".to_vec(),
        b"\xef\xbb\xbf{\"userId\":\"u1\"}".to_vec(),
        b"{\"userId\":\"u1\",\"userData\":{\"k\":NaN}}".to_vec(),
    ];
    for body in &bodies {
        let shown = String::from_utf8_lossy(body).into_owned();
        let r = create_raw(&app, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "create {shown:?}: {}",
            r.text()
        );
        let r = patch_raw(&app, &token, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "patch {shown:?}: {}",
            r.text()
        );
    }
    assert!(
        app.send(app.backend(Method::GET, "/v1/users/u1/sessions"))
            .await
            .json()["sessions"]
            .as_array()
            .is_some_and(|s| s.len() == 1)
    );
    assert_alive(&app, &token).await;
    app.shutdown().await;
}

#[tokio::test]
async fn d16_array_bodies_are_400() {
    let app = TestApp::spawn().await;
    let (token, _) = app
        .create_session_with(&json!({"userId": "u1", "userData": {"a": 1}}))
        .await;
    // A create body is an object: the positional form of its fields is not one.
    for body in [
        r#"["u2"]"#,
        r#"["u2", {"role": "admin"}]"#,
        r#"["u2", {}, {}, 60]"#,
    ] {
        let r = create_raw(&app, body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "create {body}: {}",
            r.text()
        );
    }
    // A patch body is `{"userData": {...}}`: an array (or a JSON Patch document) is not one.
    for body in [
        "[]",
        r#"[{"b": 2}]"#,
        r#"[{"op": "replace", "path": "/userData/a", "value": 2}]"#,
    ] {
        let r = patch_raw(&app, &token, body).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "patch {body}: {}",
            r.text()
        );
    }
    let doc = app.own_session(&token).await;
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["userData"], json!({"a": 1}));
    let sessions = app
        .send(app.backend(Method::GET, "/v1/users/u2/sessions"))
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(sessions, json!({"sessions": []}));
    app.shutdown().await;
}

#[tokio::test]
async fn d04_duplicate_keys_are_400() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    for body in [
        r#"{"userId":"u1","userId":"admin"}"#,
        r#"{"userId":"u1","userData":{"role":"user","role":"admin"}}"#,
        r#"{"userId":"u1","userData":{"a":{"b":1,"b":2}}}"#,
        r#"{"userId":"u1","metadata":{"ip":"1","ip":"2"}}"#,
        r#"{"userId":"u1","userData":{},"userData":{}}"#,
    ] {
        create_raw(&app, body)
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    for body in [
        r#"{"userData":{"role":"user","role":"admin"}}"#,
        r#"{"userData":{"a":1},"userData":{"b":1}}"#,
        r#"{"userData":{"a":[{"x":1,"x":2}]}}"#,
    ] {
        patch_raw(&app, &token, body)
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    assert_eq!(app.own_session(&token).await["version"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn d02_absurd_nesting_within_the_body_limit_is_400() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    // Under the default 64 KiB body limit, so the parser sees them.
    let n = 12_000;
    let brackets = "[".repeat(n);
    let objects = "{\"a\":".repeat(n);
    for body in [
        brackets.clone(),
        objects.clone(),
        format!("{{\"userId\":\"u1\",\"userData\":{{\"x\":{brackets}"),
        format!("{{\"userId\":\"u1\",\"userData\":{objects}"),
        format!("{{\"userId\":\"u1\",\"metadata\":{objects}"),
    ] {
        create_raw(&app, body)
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    for body in [
        brackets.clone(),
        format!("{{\"userData\":{{\"x\":{brackets}"),
        format!("{{\"userData\":{objects}"),
    ] {
        patch_raw(&app, &token, body)
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    // Well-formed but deeper than the stored-document cap (32): refused before storage.
    let deep = |levels: usize| {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    };
    app.create(&json!({"userId": "u1", "userData": deep(40)}))
        .await
        .problem(StatusCode::BAD_REQUEST);
    app.send(
        app.holder(Method::PATCH, "/v1/session", &token)
            .json(&json!({"userData": deep(40)})),
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
    // Comfortably shallow documents are fine.
    app.create_session_with(&json!({"userId": "u1", "userData": deep(10)}))
        .await;
    // At 100 000 levels the body itself is over the default 64 KiB limit, which is checked
    // first (see `d02_absurd_nesting_of_100000_levels_is_400` for the parser's answer).
    let n = 100_000;
    for body in [
        format!("{{\"userId\":\"u1\",\"userData\":{{\"x\":{}", "[".repeat(n)),
        format!("{{\"userId\":\"u1\",\"userData\":{}", "{\"a\":".repeat(n)),
    ] {
        create_raw(&app, body)
            .await
            .problem(StatusCode::PAYLOAD_TOO_LARGE);
    }
    assert_alive(&app, &token).await;
    app.shutdown().await;
}

#[tokio::test]
async fn d02_absurd_nesting_of_100000_levels_is_400() {
    // A body limit large enough that 100 000 levels reach the JSON parser.
    let app = TestApp::builder()
        .with_max_body_bytes(2 * 1024 * 1024)
        .spawn()
        .await;
    let (token, _) = app.create_session("u1").await;
    let n = 100_000;
    let brackets = "[".repeat(n);
    let objects = "{\"a\":".repeat(n);
    for body in [
        brackets.clone(),
        objects.clone(),
        format!("{{\"userId\":\"u1\",\"userData\":{{\"x\":{brackets}"),
        format!("{{\"userId\":\"u1\",\"userData\":{objects}"),
    ] {
        create_raw(&app, body)
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    for body in [
        format!("{{\"userData\":{{\"x\":{brackets}"),
        format!("{{\"userData\":{objects}"),
    ] {
        patch_raw(&app, &token, body)
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    assert_alive(&app, &token).await;
    app.shutdown().await;
}

#[tokio::test]
async fn d01_body_over_the_limit_gets_413() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    let filler = "x".repeat(4 * 1024 * 1024);
    let body = format!(r#"{{"userId":"u1","userData":{{"blob":"{filler}"}}}}"#);
    create_raw(&app, body)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    let body = format!(r#"{{"userData":{{"blob":"{filler}"}}}}"#);
    patch_raw(&app, &token, body)
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.own_session(&token).await["version"], 1);
    assert_alive(&app, &token).await;
    app.shutdown().await;
}

#[tokio::test]
async fn d01_documents_over_their_limits_get_413() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    // Within the 64 KiB body limit, over the 16 KiB userData and 4 KiB metadata limits.
    let blob = "x".repeat(17 * 1024);
    app.create(&json!({"userId": "u1", "userData": {"blob": blob}}))
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    app.create(&json!({"userId": "u1", "metadata": {"userAgent": "x".repeat(5 * 1024)}}))
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    app.send(
        app.holder(Method::PATCH, "/v1/session", &token)
            .json(&json!({"userData": {"blob": blob}})),
    )
    .await
    .problem(StatusCode::PAYLOAD_TOO_LARGE);
    // Growing past the limit in steps is refused too, leaving the last good state.
    let half = "y".repeat(9 * 1024);
    app.send(
        app.holder(Method::PATCH, "/v1/session", &token)
            .json(&json!({"userData": {"one": half}})),
    )
    .await
    .expect_status(StatusCode::OK);
    app.send(
        app.holder(Method::PATCH, "/v1/session", &token)
            .json(&json!({"userData": {"two": half}})),
    )
    .await
    .problem(StatusCode::PAYLOAD_TOO_LARGE);
    let doc = app.own_session(&token).await;
    assert_eq!(doc["version"], 2);
    assert!(doc["userData"].get("two").is_none());
    // Just under the limit is accepted.
    app.create_session_with(&json!({"userId": "u1", "userData": {"blob": "z".repeat(15 * 1024)}}))
        .await;
    app.shutdown().await;
}

#[tokio::test]
async fn d05_body_without_json_content_type_is_415() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    let body = r#"{"userId":"u1"}"#;
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonp"),
        Some("text/json"),
    ] {
        let mut req = app.backend(Method::POST, "/v1/sessions").body(body);
        if let Some(ct) = ct {
            req = req.header(CONTENT_TYPE, ct);
        }
        app.send(req)
            .await
            .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let mut req = app
            .holder(Method::PATCH, "/v1/session", &token)
            .body(r#"{"userData":{"a":1}}"#);
        if let Some(ct) = ct {
            req = req.header(CONTENT_TYPE, ct);
        }
        app.send(req)
            .await
            .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    // Parameters and case do not matter.
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        app.send(
            app.backend(Method::POST, "/v1/sessions")
                .header(CONTENT_TYPE, ct)
                .body(body),
        )
        .await
        .expect_status(StatusCode::CREATED);
    }
    assert_eq!(app.own_session(&token).await["version"], 1);
    app.shutdown().await;
}

/// `ttlSeconds` is a whole number from 1 to 2^53 − 1, as the OpenAPI document declares it
/// (`integer`, so `60.0` and `6e1` are 60 too, as JSON Schema reads them); anything else is 400.
#[tokio::test]
async fn d06_bad_ttl_seconds_are_400() {
    let app = TestApp::spawn().await;
    for ttl in ["60", "60.0", "6e1", "9007199254740991"] {
        let body = format!(r#"{{"userId":"u1","ttlSeconds":{ttl}}}"#);
        let r = create_raw(&app, body).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "ttlSeconds {ttl}: {}",
            r.text()
        );
    }
    for ttl in [
        "-1",
        "0",
        "1.5",
        "1e400",
        "\"60\"",
        "null",
        "true",
        "9007199254740992",
        "18446744073709551615",
        "18446744073709551616",
    ] {
        let body = format!(r#"{{"userId":"u1","ttlSeconds":{ttl}}}"#);
        let r = create_raw(&app, body).await;
        if ttl == "null" {
            // `null` is the same as leaving the field out.
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
            continue;
        }
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "ttlSeconds {ttl}: {}",
            r.text()
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn d08_d09_invalid_user_ids_are_400() {
    let app = TestApp::spawn().await;
    let long = "u".repeat(257);
    for user in [
        json!("a b"),
        json!("a\r\nb"),
        json!("a\nX-Admin: 1"),
        json!("a\u{0}b"),
        json!("caf\u{e9}"),
        json!(long),
        json!("."),
        json!(".."),
        json!(""),
        json!(" "),
        json!(null),
        json!(12345),
        json!(["u1"]),
    ] {
        app.create(&json!({"userId": user}))
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    app.create(&json!({"userData": {}}))
        .await
        .problem(StatusCode::BAD_REQUEST);
    // The longest allowed id works, and travels unchanged in X-User-Id.
    let max = "u".repeat(256);
    let (token, _) = app.create_session(&max).await;
    let r = app.send(app.holder(Method::GET, "/v1/auth", &token)).await;
    assert_eq!(r.header("x-user-id"), Some(max.as_str()));
    app.shutdown().await;
}

/// `s` as one URL path segment: every byte but RFC 3986's unreserved ones percent-encoded.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// D8, D9: user ids as identity providers issue them, and ids made of the characters that mean
/// something to a store, a URL or a header, each create a session, travel unchanged in
/// `X-User-Id`, list alone at `/v1/users/{userId}/sessions` (percent-encoded) and revoke alone.
#[tokio::test]
async fn d08_d09_any_printable_user_id_creates_lists_and_revokes_only_its_own() {
    let app = TestApp::spawn().await;
    let ids = [
        "urn:acme:user:42",
        "tenants/acme/users/42",
        "o'brien@example.com",
        "google-oauth2|1234",
        "*",
        "u*",
        "u?",
        "u[1]",
        "{u}",
        "u}{",
        "u:1",
        "../u",
        "u%2F1",
        "u\\1",
        "\"u\"",
        "<u>",
        "`u`",
        "u#1",
        "u?x=1&y",
        "u+1",
    ];
    let mut tokens = Vec::new();
    for id in ids {
        let (token, session) = app.create_session(id).await;
        assert_eq!(session["userId"], id);
        let r = app.send(app.holder(Method::GET, "/v1/auth", &token)).await;
        assert_eq!(r.header("x-user-id"), Some(id), "X-User-Id of {id}");
        tokens.push((id, token, session["sessionId"].clone()));
    }
    for (id, _, session_id) in &tokens {
        let listed = app
            .send(app.backend(
                Method::GET,
                &format!("/v1/users/{}/sessions", path_segment(id)),
            ))
            .await
            .expect_status(StatusCode::OK)
            .json();
        let listed: Vec<&Value> = listed["sessions"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|s| &s["sessionId"])
            .collect();
        assert_eq!(listed, [session_id], "{id} lists exactly its own session");
    }
    for (i, (id, _, _)) in tokens.iter().enumerate() {
        let revoked = app
            .send(app.backend(
                Method::DELETE,
                &format!("/v1/users/{}/sessions", path_segment(id)),
            ))
            .await
            .expect_status(StatusCode::OK)
            .json();
        assert_eq!(revoked["revoked"], 1, "revoking {id} ends its one session");
        for (j, (other, token, _)) in tokens.iter().enumerate() {
            let expected = if j > i {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(
                app.auth_status(token).await,
                expected,
                "after revoking {id}, {other}'s session"
            );
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn d04_clients_cannot_choose_server_owned_fields() {
    let app = TestApp::spawn().await;
    let (token, session) = app.create_session("u1").await;
    for (field, value) in [
        ("token", json!(token)),
        ("sessionId", session["sessionId"].clone()),
        ("version", json!(7)),
        ("createdAt", json!("2020-01-01T00:00:00Z")),
        ("expiresAt", json!("2999-01-01T00:00:00Z")),
        ("absoluteExpiresAt", json!("2999-01-01T00:00:00Z")),
        ("user_id", json!("u1")),
    ] {
        let mut body = json!({"userId": "u1"});
        body[field] = value;
        app.create(&body).await.problem(StatusCode::BAD_REQUEST);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn d04_d16_patch_of_anything_but_user_data_is_400() {
    let app = TestApp::spawn().await;
    let (token, session) = app
        .create_session_with(&json!({"userId": "u1", "userData": {"a": 1}}))
        .await;
    let id = session["sessionId"].as_str().expect("id");
    let bodies: Vec<Value> = vec![
        json!({"version": 5}),
        json!({"sessionId": "sess_AAAAAAAAAAAAAAAA"}),
        json!({"userId": "admin"}),
        json!({"expiresAt": "2999-01-01T00:00:00Z"}),
        json!({"absoluteExpiresAt": "2999-01-01T00:00:00Z"}),
        json!({"metadata": {"ipAddress": "1.2.3.4"}}),
        json!({"userData": {"b": 1}, "version": 1}),
        json!({"userData": [1, 2]}),
        json!({"userData": "string"}),
        json!({"userData": 5}),
        json!({"userData": true}),
        json!("userData"),
    ];
    for body in &bodies {
        let r = app
            .send(app.holder(Method::PATCH, "/v1/session", &token).json(body))
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "holder {body}: {}",
            r.text()
        );
        let r = app
            .send(
                app.backend(Method::PATCH, &format!("/v1/sessions/{id}"))
                    .json(body),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "backend {body}: {}",
            r.text()
        );
    }
    let doc = app.own_session(&token).await;
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["userData"], json!({"a": 1}));
    assert_eq!(doc["sessionId"], session["sessionId"]);
    assert_eq!(doc["expiresAt"], session["expiresAt"]);
    app.shutdown().await;
}

#[tokio::test]
async fn d17_unsupported_methods_are_405_with_allow() {
    let app = TestApp::spawn().await;
    let (token, session) = app.create_session("u1").await;
    let id = session["sessionId"].as_str().expect("id");
    let cases: Vec<(Method, String, &[&str])> = vec![
        (
            Method::PUT,
            "/v1/session".into(),
            &["GET", "PATCH", "DELETE"],
        ),
        (
            Method::POST,
            "/v1/session".into(),
            &["GET", "PATCH", "DELETE"],
        ),
        (
            Method::TRACE,
            "/v1/session".into(),
            &["GET", "PATCH", "DELETE"],
        ),
        (Method::POST, "/v1/auth".into(), &["GET"]),
        (Method::GET, "/v1/session/rotate".into(), &["POST"]),
        (Method::GET, "/v1/sessions".into(), &["POST"]),
        (
            Method::PUT,
            format!("/v1/sessions/{id}"),
            &["GET", "PATCH", "DELETE"],
        ),
        (
            Method::POST,
            "/v1/users/u1/sessions".into(),
            &["GET", "DELETE"],
        ),
        (Method::DELETE, "/healthz".into(), &["GET"]),
    ];
    for (method, path, allowed) in &cases {
        let r = app
            .send(app.holder(method.clone(), path, &token))
            .await
            .expect_status(StatusCode::METHOD_NOT_ALLOWED);
        let allow = r
            .header(ALLOW.as_str())
            .unwrap_or_else(|| panic!("Allow on {method} {path}"));
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for m in *allowed {
            assert!(
                listed.contains(m),
                "{method} {path}: Allow {allow} lacks {m}"
            );
        }
        assert!(
            !listed.contains(&method.as_str()),
            "{method} {path}: Allow {allow}"
        );
        assert!(!r.text().contains(&token));
    }
    assert_eq!(app.auth_status(&token).await, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/nope"),
        (Method::GET, "/v1"),
        (Method::GET, "/v1/nope"),
        (Method::GET, "/v2/session"),
        (Method::GET, "/v1/session/extra"),
        (Method::POST, "/v1/sessions/sess_AAAAAAAAAAAAAAAA/rotate"),
        (Method::GET, "/v1/users/u1"),
        (Method::GET, "/v1/users/u1/sessions/extra"),
        (Method::GET, "/.env"),
    ] {
        let p = app
            .send(app.backend(method.clone(), path))
            .await
            .problem(StatusCode::NOT_FOUND);
        assert_eq!(p["status"], 404, "{method} {path}");
    }
    app.shutdown().await;
}

/// What the server sent on a raw connection, and how the connection ended.
#[derive(Debug)]
struct RawExchange {
    /// Everything received, lossily as text.
    received: String,
    /// The server closed the connection (EOF or reset) before `wait` ran out.
    closed: bool,
    /// Time from the first byte sent until the connection closed (or `wait` ran out).
    elapsed: Duration,
    /// Time from the first byte sent until the first byte of the answer, if one came.
    answered_after: Option<Duration>,
}

impl RawExchange {
    /// The status code of the first response, if one arrived.
    fn status(&self) -> Option<u16> {
        self.received
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
    }
}

/// Sends `parts` on a fresh connection, pausing `pause` between them (a write that fails
/// because the server already closed ends the sending), then reads until the server closes
/// the connection or `wait` has passed since the first byte.
async fn raw_exchange(
    addr: SocketAddr,
    parts: Vec<Vec<u8>>,
    pause: Duration,
    wait: Duration,
) -> RawExchange {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("write timeout");
        let start = Instant::now();
        let mut received = Vec::new();
        let mut closed = false;
        let mut answered_after = None;
        for (i, part) in parts.iter().enumerate() {
            if i > 0 && !pause.is_zero() {
                std::thread::sleep(pause);
            }
            if stream.write_all(part).is_err() {
                break;
            }
        }
        let mut buf = [0u8; 8192];
        while let Some(left) = wait.checked_sub(start.elapsed()).filter(|d| !d.is_zero()) {
            stream.set_read_timeout(Some(left)).expect("read timeout");
            match stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    answered_after.get_or_insert(start.elapsed());
                    received.extend_from_slice(&buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break;
                }
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        RawExchange {
            received: String::from_utf8_lossy(&received).into_owned(),
            closed,
            elapsed: start.elapsed(),
            answered_after,
        }
    })
    .await
    .expect("raw exchange")
}

/// Sends a whole request (head and body) before reading anything, as Python's urllib and many
/// HTTP libraries do, then reads the answer to its end.
async fn write_all_then_read(addr: SocketAddr, head: String, body: Vec<u8>) -> String {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .expect("write timeout");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        stream
            .write_all(head.as_bytes())
            .expect("the server reads the request head");
        stream
            .write_all(&body)
            .expect("the server reads the whole body instead of resetting the connection");
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .expect("the answer arrives, then the server closes");
        String::from_utf8_lossy(&answer).into_owned()
    })
    .await
    .expect("raw exchange")
}

/// A body over the limit gets its 413 problem document even when the client writes all of
/// it before reading: 3, 4 and 8 MiB, to a create and to a patch.
#[tokio::test]
async fn d01_an_oversized_body_sent_whole_before_reading_gets_its_413() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    for mib in [3, 4, 8] {
        let filler = "x".repeat(mib * 1024 * 1024);
        for (method, path, credential, body) in [
            (
                "POST",
                "/v1/sessions",
                format!("X-Api-Key: {KEY}"),
                format!(r#"{{"userId":"u1","userData":{{"blob":"{filler}"}}}}"#),
            ),
            (
                "PATCH",
                "/v1/session",
                format!("Authorization: Bearer {token}"),
                format!(r#"{{"userData":{{"blob":"{filler}"}}}}"#),
            ),
        ] {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: sessiond\r\n{credential}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let answer = write_all_then_read(app.addr, head, body.into_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 413"),
                "{method} of {mib} MiB: {}",
                answer.lines().next().unwrap_or_default()
            );
            assert!(
                answer
                    .to_ascii_lowercase()
                    .contains("content-type: application/problem+json"),
                "{method} of {mib} MiB: a problem document"
            );
        }
    }
    assert_eq!(
        app.own_session(&token).await["version"],
        1,
        "nothing written"
    );
    app.shutdown().await;
}

/// A body that is slow, stalled or declared too large never costs the client a 5xx, and never
/// waits for a body before the credentials are checked: no API key is 401 at once (the body
/// is never read), a `Content-Length` over the limit is 413 at once (before any of the body
/// is sent), and a body that stops arriving is 408 once `limits.body_timeout` has passed, well
/// before the request's own deadline would answer 503.
#[tokio::test]
async fn d01_a_stalled_or_oversized_body_gets_401_413_or_408_never_503() {
    let app = TestApp::builder()
        .with_config(|c| {
            c.limits.body_timeout = Duration::from_millis(1500);
            c.limits.request_timeout = Duration::from_secs(30);
        })
        .spawn()
        .await;
    let head = |key: &str, length: usize| {
        format!(
            "POST /v1/sessions HTTP/1.1\r\nHost: sessiond\r\n{key}\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
        .into_bytes()
    };
    let with_key = format!("X-Api-Key: {KEY}\r\n");
    let partial = br#"{"userId":"u1""#.to_vec();
    let wait = Duration::from_secs(10);
    for (what, parts, status, within) in [
        (
            "no API key, 14 of 60000 bytes",
            vec![head("", 60_000), partial.clone()],
            "401",
            Duration::from_secs(1),
        ),
        (
            "Content-Length over the limit, no body yet",
            vec![head(&with_key, 100_000)],
            "413",
            Duration::from_secs(1),
        ),
        (
            "a valid key, 14 of 60000 bytes, then nothing",
            vec![head(&with_key, 60_000), partial.clone()],
            "408",
            Duration::from_secs(5),
        ),
    ] {
        let exchange = raw_exchange(app.addr, parts, Duration::ZERO, wait).await;
        assert!(
            exchange.received.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {exchange:?}"
        );
        assert!(
            exchange
                .received
                .to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{what}: a problem document"
        );
        // The answer does not wait for the body (401, 413) or for the request's own
        // deadline (408).
        assert!(
            exchange.answered_after.is_some_and(|t| t < within),
            "{what}: answered after {:?}",
            exchange.answered_after
        );
        assert!(
            exchange.closed,
            "{what}: the connection is closed after the answer"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn d01_an_endless_chunked_body_gets_413_and_the_connection_closed() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    let addr = app.addr;
    // Chunks of 16 KiB, up to 64 MiB: a thousand times the default 64 KiB limit. The writer
    // stops as soon as the server stops taking bytes.
    let (written, exchange) = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("write timeout");
        let mut reader = stream.try_clone().expect("clone the socket");
        let writer = std::thread::spawn(move || {
            let head = format!(
                "POST /v1/sessions HTTP/1.1\r\nHost: sessiond\r\nX-Api-Key: {KEY}\r\n\
                 Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let mut written = 0usize;
            if stream.write_all(head.as_bytes()).is_err() {
                return written;
            }
            let opening = br#"{"userId":"u1","userData":{"x":""#;
            let mut chunk = format!("{:x}\r\n", opening.len()).into_bytes();
            chunk.extend_from_slice(opening);
            chunk.extend_from_slice(b"\r\n");
            if stream.write_all(&chunk).is_err() {
                return written;
            }
            let filler = format!("4000\r\n{}\r\n", "a".repeat(0x4000));
            while written < 64 * 1024 * 1024 {
                if stream.write_all(filler.as_bytes()).is_err() {
                    break;
                }
                written += 0x4000;
            }
            written
        });
        reader
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut received = Vec::new();
        let mut buf = [0u8; 8192];
        let mut closed = false;
        let start = Instant::now();
        loop {
            match reader.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break;
                }
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let elapsed = start.elapsed();
        let written = writer.join().expect("writer thread");
        (
            written,
            RawExchange {
                received: String::from_utf8_lossy(&received).into_owned(),
                closed,
                elapsed,
                answered_after: None,
            },
        )
    })
    .await
    .expect("raw exchange");
    assert_eq!(exchange.status(), Some(413), "{exchange:?}");
    assert!(
        exchange
            .received
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{exchange:?}"
    );
    assert!(exchange.closed, "the connection is closed: {exchange:?}");
    assert!(
        written < 64 * 1024 * 1024,
        "the server read the whole 64 MiB ({written} bytes written)"
    );
    assert_alive(&app, &token).await;
    app.shutdown().await;
}

#[tokio::test]
async fn d05_accept_text_html_still_gets_json() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    let r = app
        .send(
            app.holder(Method::GET, "/v1/session", &token)
                .header(ACCEPT, "text/html"),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(r.header(CONTENT_TYPE.as_str()), Some("application/json"));
    assert_eq!(r.json()["userId"], "u1");
    let r = app
        .send(
            app.backend(Method::POST, "/v1/sessions")
                .header(ACCEPT, "text/html, application/xhtml+xml")
                .json(&json!({"userId": "u2"})),
        )
        .await
        .expect_status(StatusCode::CREATED);
    assert_eq!(r.header(CONTENT_TYPE.as_str()), Some("application/json"));
    // Errors too stay problem+json (checked for every error by `send`), never HTML.
    let r = app
        .send(
            app.req(Method::GET, "/v1/session")
                .header(ACCEPT, "text/html"),
        )
        .await
        .expect_status(StatusCode::UNAUTHORIZED);
    assert!(!r.text().contains('<'), "{}", r.text());
    app.shutdown().await;
}

#[tokio::test]
async fn d08_identity_headers_come_only_from_the_stored_session() {
    let app = TestApp::spawn().await;
    let (token, session) = app
        .create_session_with(&json!({
            "userId": "user_12345",
            "metadata": {
                "userAgent": "Mozilla/5.0\r\nX-User-Id: admin",
                "ipAddress": "1.2.3.4\nX-Injected: 1",
                "loginMethod": "email\u{0}\u{e9}",
            },
        }))
        .await;
    // Control characters in metadata are data: stored and returned as JSON, never a header.
    assert_eq!(
        session["metadata"]["userAgent"],
        "Mozilla/5.0\r\nX-User-Id: admin"
    );
    let r = app
        .send(
            app.holder(Method::GET, "/v1/auth", &token)
                .header("x-user-id", "admin")
                .header("x-session-id", "sess_AAAAAAAAAAAAAAAA")
                .header("x-forwarded-user", "admin")
                .header("x-forwarded-for", "10.0.0.1"),
        )
        .await
        .expect_status(StatusCode::OK);
    let users: Vec<&str> = r
        .headers
        .get_all("x-user-id")
        .iter()
        .map(|v| v.to_str().expect("text"))
        .collect();
    assert_eq!(users, ["user_12345"], "exactly the stored user id");
    let sessions: Vec<&str> = r
        .headers
        .get_all("x-session-id")
        .iter()
        .map(|v| v.to_str().expect("text"))
        .collect();
    assert_eq!(sessions, [session["sessionId"].as_str().expect("id")]);
    for name in ["x-injected", "x-forwarded-user", "x-forwarded-for"] {
        assert!(r.header(name).is_none(), "{name} in the answer");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn d10_a_slow_or_idle_request_head_is_cut_off_at_the_header_read_timeout() {
    let timeout = Duration::from_secs(1);
    let app = TestApp::builder()
        .with_config(|c| c.limits.header_read_timeout = timeout)
        .spawn()
        .await;
    let (token, _) = app.create_session("u1").await;
    // A head trickled one byte every 200 ms (slowloris), and a connection that sends nothing.
    let mut trickle: Vec<Vec<u8>> = vec![b"GET /healthz HTTP/1.1\r\n".to_vec()];
    trickle.extend((0..40).map(|_| b"X".to_vec()));
    let slow = raw_exchange(
        app.addr,
        trickle,
        Duration::from_millis(200),
        Duration::from_secs(10),
    );
    let idle = raw_exchange(app.addr, vec![], Duration::ZERO, Duration::from_secs(10));
    // Other clients are served meanwhile.
    let served = async {
        for _ in 0..5 {
            assert_eq!(app.auth_status(&token).await, StatusCode::OK);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (slow, idle, ()) = tokio::join!(slow, idle, served);
    for (name, exchange) in [("trickled head", &slow), ("idle connection", &idle)] {
        assert!(exchange.closed, "{name}: not closed: {exchange:?}");
        // The trickle would take 8 s; the timeout is 1 s, with slack for a loaded machine.
        assert!(
            exchange.elapsed < Duration::from_secs(5),
            "{name}: closed after {:?}",
            exchange.elapsed
        );
        assert!(
            !exchange.received.contains(" 200 "),
            "{name}: the request was served: {exchange:?}"
        );
    }
    assert_alive(&app, &token).await;
    app.shutdown().await;
}

#[tokio::test]
async fn d11_oversized_request_heads_get_431() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    let head = |extra: &str| {
        format!("GET /v1/auth HTTP/1.1\r\nHost: sessiond\r\nAuthorization: Bearer {token}\r\n{extra}\r\n")
            .into_bytes()
    };
    // 101 headers in all with Host and Authorization (hyper's default cap is 100).
    let many: String = (0..99).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    // A 64 KiB cookie, over the 16 KiB head limit.
    let cookie = format!("Cookie: big={}\r\n", "c".repeat(64 * 1024));
    // A 20 KiB head sent in 200-byte pieces, so no single read sees it whole (hyper #4081).
    let split_head = head(&format!("X-Big: {}\r\n", "s".repeat(20 * 1024)));
    let pieces: Vec<Vec<u8>> = split_head.chunks(200).map(<[u8]>::to_vec).collect();
    for (name, parts, pause) in [
        ("101 headers", vec![head(&many)], Duration::ZERO),
        ("64 KiB cookie", vec![head(&cookie)], Duration::ZERO),
        ("head split across reads", pieces, Duration::from_millis(1)),
    ] {
        let exchange = raw_exchange(app.addr, parts, pause, Duration::from_secs(10)).await;
        assert_eq!(exchange.status(), Some(431), "{name}: {exchange:?}");
        assert!(
            exchange.closed,
            "{name}: connection left open: {exchange:?}"
        );
    }
    // Just under the limits is served.
    let few: String = (0..90).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    let exchange = raw_exchange(
        app.addr,
        vec![head(&format!("{few}Connection: close\r\n"))],
        Duration::ZERO,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(exchange.status(), Some(200), "{exchange:?}");
    assert_alive(&app, &token).await;
    app.shutdown().await;
}

/// RFC 9112 §3.2 (finding 10 of the hardening review): an HTTP/1.1 request with no `Host`
/// header, or with two, is answered `400` (a problem document; `401` from the gateway's
/// check, which may answer nothing else), and does nothing; HTTP/1.0 needs none.
#[tokio::test]
async fn d12_an_http_1_1_request_needs_exactly_one_host() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("user_host").await;
    for (what, head, status) in [
        ("no Host", "GET /v1/session HTTP/1.1\r\n".to_owned(), 400),
        (
            "two Hosts",
            "GET /v1/session HTTP/1.1\r\nHost: a\r\nHost: b\r\n".to_owned(),
            400,
        ),
        (
            "one Host",
            "GET /v1/session HTTP/1.1\r\nHost: a\r\n".to_owned(),
            200,
        ),
        (
            "HTTP/1.0 without Host",
            "GET /v1/session HTTP/1.0\r\n".to_owned(),
            200,
        ),
        // The gateway's check answers only 200, 401 or 503: refused, it is a 401.
        (
            "no Host, forward-auth",
            "GET /v1/auth HTTP/1.1\r\n".to_owned(),
            401,
        ),
    ] {
        let request = format!("{head}Authorization: Bearer {token}\r\nConnection: close\r\n\r\n");
        let exchange = raw_exchange(
            app.addr,
            vec![request.into_bytes()],
            Duration::ZERO,
            Duration::from_secs(5),
        )
        .await;
        let answered = exchange
            .received
            .get(9..12)
            .and_then(|code| code.parse::<u16>().ok());
        assert_eq!(answered, Some(status), "{what}: {exchange:?}");
        if status != 200 {
            assert!(
                exchange
                    .received
                    .to_ascii_lowercase()
                    .contains("content-type: application/problem+json"),
                "{what}: a problem document"
            );
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn d12_ambiguous_message_framing_is_refused_or_ends_the_connection() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    let post = |user: &str, framing: &str, rest: &str| {
        let body = format!(r#"{{"userId":"{user}"}}"#);
        let chunked = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
        let rest = rest.replace("{body}", &body).replace("{chunked}", &chunked);
        let framing = framing
            .replace("{body_len}", &body.len().to_string())
            .replace("{chunked_len}", &chunked.len().to_string());
        format!(
            "POST /v1/sessions HTTP/1.1\r\nHost: sessiond\r\nX-Api-Key: {KEY}\r\n\
             Content-Type: application/json\r\n{framing}\r\n{rest}"
        )
        .into_bytes()
    };
    // After the ambiguous request, a second one that a desynchronised server would answer.
    let follow = format!(
        "GET /v1/users/smuggled/sessions HTTP/1.1\r\nHost: sessiond\r\nX-Api-Key: {KEY}\r\n\r\n"
    );
    let refused = [
        (
            "two different Content-Lengths",
            post(
                "smuggled",
                "Content-Length: {body_len}\r\nContent-Length: 5\r\n",
                &format!("{{body}}{follow}"),
            ),
        ),
        (
            "Transfer-Encoding not ending in chunked",
            post(
                "smuggled",
                "Transfer-Encoding: chunked, identity\r\n",
                &format!("{{chunked}}{follow}"),
            ),
        ),
        (
            "unknown Transfer-Encoding",
            post(
                "smuggled",
                "Transfer-Encoding: xchunked\r\n",
                &format!("{{chunked}}{follow}"),
            ),
        ),
        (
            "space before the colon",
            post(
                "smuggled",
                "Transfer-Encoding : chunked\r\n",
                &format!("{{chunked}}{follow}"),
            ),
        ),
    ];
    for (name, bytes) in refused {
        let exchange = raw_exchange(
            app.addr,
            vec![bytes],
            Duration::ZERO,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(exchange.status(), Some(400), "{name}: {exchange:?}");
        assert!(
            exchange.closed,
            "{name}: connection left open: {exchange:?}"
        );
        assert_eq!(
            exchange.received.matches("HTTP/1.1 ").count(),
            1,
            "{name}: the smuggled request was answered: {exchange:?}"
        );
    }
    let list = app
        .send(app.backend(Method::GET, "/v1/users/smuggled/sessions"))
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(
        list,
        json!({"sessions": []}),
        "no refused request created a session"
    );

    // Both Content-Length and Transfer-Encoding: hyper takes the other option RFC 9112 §6.3
    // allows, reading the body by Transfer-Encoding alone, and closes the connection after
    // answering, so whatever follows in the stream is never read as a request.
    let exchange = raw_exchange(
        app.addr,
        vec![post(
            "te_wins",
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            &format!("{{chunked}}{follow}"),
        )],
        Duration::ZERO,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        matches!(exchange.status(), Some(201 | 400)),
        "Content-Length and Transfer-Encoding: {exchange:?}"
    );
    assert!(
        exchange.closed && exchange.elapsed < Duration::from_secs(5),
        "the connection is closed after the answer: {exchange:?}"
    );
    assert_eq!(
        exchange.received.matches("HTTP/1.1 ").count(),
        1,
        "the smuggled request was answered: {exchange:?}"
    );
    assert_alive(&app, &token).await;
    app.shutdown().await;
}
