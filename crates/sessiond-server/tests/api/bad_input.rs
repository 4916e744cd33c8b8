//! Bad input (RELIABILITY.md (d)): malformed and hostile JSON, oversized bodies and documents,
//! wrong media types, invalid numbers and identifiers, fields clients may not set, unsupported
//! methods and unknown paths. Every case is a `4xx` problem, and the server keeps serving.

use reqwest::header::{ALLOW, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Resp, TestApp};

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
async fn malformed_json_is_400() {
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
async fn array_bodies_are_400() {
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
async fn duplicate_keys_are_400() {
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
async fn absurd_nesting_within_the_body_limit_is_400() {
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
    // first (see `absurd_nesting_of_100000_levels_is_400` for the parser's answer).
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
async fn absurd_nesting_of_100000_levels_is_400() {
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
async fn oversized_body_is_413() {
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
async fn oversized_documents_are_413() {
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
async fn body_without_json_content_type_is_415() {
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

#[tokio::test]
async fn bad_ttl_seconds_are_400() {
    let app = TestApp::spawn().await;
    for ttl in [
        "-1",
        "0",
        "1.5",
        "1e400",
        "1e3",
        "\"60\"",
        "null",
        "true",
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
async fn invalid_user_ids_are_400() {
    let app = TestApp::spawn().await;
    let long = "u".repeat(257);
    for user in [
        json!("a b"),
        json!("a\r\nb"),
        json!("a\nX-Admin: 1"),
        json!("a\u{0}b"),
        json!("caf\u{e9}"),
        json!(long),
        json!("{"),
        json!("{tag}"),
        json!("*"),
        json!("a:b"),
        json!("../x"),
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

#[tokio::test]
async fn clients_cannot_choose_server_owned_fields() {
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
async fn patch_of_anything_but_user_data_is_400() {
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
async fn unsupported_methods_are_405_with_allow() {
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
