//! Operations endpoints and process behaviour: health, readiness, metrics (with no secret in
//! them), the OpenAPI document, the hardening headers on every kind of answer, and graceful
//! shutdown.

use std::time::Duration;

use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, IF_MATCH, X_CONTENT_TYPE_OPTIONS};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{Backing, KEY, TestApp};

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    app.send(app.req(Method::GET, "/healthz"))
        .await
        .expect_status(StatusCode::OK);
    app.send(app.req(Method::GET, "/readyz"))
        .await
        .expect_status(StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn s17_metrics_count_requests_and_sessions_and_hold_no_secret() {
    let app = TestApp::spawn().await;
    let (t1, _) = app.create_session("u1").await;
    let (t2, _) = app.create_session("u2").await;
    let rotated = app.rotate(&t2).await.expect_status(StatusCode::OK).json();
    let t2_new = rotated["token"].as_str().expect("token").to_owned();
    assert_eq!(app.auth_status(&t1).await, StatusCode::OK);
    assert_eq!(app.auth_status(&t2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.auth_status(&t2_new).await, StatusCode::OK);
    app.send(app.holder(Method::GET, "/v1/session", &t1)).await;

    let r = app
        .send(app.req(Method::GET, "/metrics"))
        .await
        .expect_status(StatusCode::OK);
    let ct = r.header(CONTENT_TYPE.as_str()).expect("content type");
    assert!(
        ct.starts_with("text/plain") || ct.starts_with("application/openmetrics-text"),
        "{ct}"
    );
    let text = r.text();
    let auth_lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("sessiond_http_requests_total{") && l.contains("route=\"/v1/auth\"")
        })
        .collect();
    assert!(
        !auth_lines.is_empty(),
        "no /v1/auth request counter:\n{text}"
    );
    assert!(
        auth_lines
            .iter()
            .any(|l| l.contains("status=\"200\"") && l.ends_with(" 2")),
        "two successful /v1/auth requests counted: {auth_lines:?}"
    );
    assert!(
        auth_lines.iter().any(|l| l.contains("status=\"401\"")),
        "{auth_lines:?}"
    );
    match app.backing {
        Backing::Embedded => assert!(
            text.lines()
                .any(|l| l == "sessiond_live_sessions{store=\"embedded\"} 2"),
            "two live sessions:\n{text}"
        ),
        // Redis cannot count sessions without scanning: no sample rather than a wrong one.
        _ => assert!(
            !text
                .lines()
                .any(|l| l.starts_with("sessiond_live_sessions{")),
            "no live-session sample on Redis:\n{text}"
        ),
    }

    let tokens = app.issued_tokens();
    assert_eq!(tokens.len(), 3);
    for token in &tokens {
        let secret = token.split_once('.').expect("two parts").1;
        assert!(!text.contains(token.as_str()), "a token in /metrics");
        assert!(!text.contains(secret), "a token secret in /metrics");
    }
    assert!(!text.contains(KEY), "the API key in /metrics");
    assert!(
        !text.contains("u1") && !text.contains("sess_"),
        "no ids as labels"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn openapi_document_lists_every_path() {
    let app = TestApp::spawn().await;
    let doc = app
        .send(app.req(Method::GET, "/openapi.json"))
        .await
        .expect_status(StatusCode::OK)
        .json();
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "{version}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/auth", &["get"][..]),
        ("/v1/session", &["get", "patch", "delete"][..]),
        ("/v1/session/rotate", &["post"][..]),
        ("/v1/sessions", &["post"][..]),
        ("/v1/sessions/{sessionId}", &["get", "patch", "delete"][..]),
        ("/v1/users/{userId}/sessions", &["get", "delete"][..]),
        ("/healthz", &["get"][..]),
        ("/readyz", &["get"][..]),
        ("/metrics", &["get"][..]),
    ] {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing");
        }
    }
    app.shutdown().await;
}

/// The document says what the server does (checked against the running server by
/// `scripts/openapi-fuzz` in CI; these are the points a fuzzer finds only by luck): the query
/// parameters are in the query, the emergency call's `confirm` is required, ids have their
/// shape, every operation id is unique, every body may be refused as 408, 413 or 415, and the
/// gateway's check declares only 200, 401 and 503.
#[tokio::test]
async fn openapi_document_declares_what_the_server_answers() {
    let app = TestApp::spawn().await;
    let doc = app
        .send(app.req(Method::GET, "/openapi.json"))
        .await
        .expect_status(StatusCode::OK)
        .json();
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let param = |op: &serde_json::Value, name: &str| {
        op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no parameter {name}"))
    };
    let everyone = op("/v1/sessions", "delete");
    let confirm = param(&everyone, "confirm");
    assert_eq!(confirm["in"], "query");
    assert_eq!(confirm["required"], true);
    let revoke_user = op("/v1/users/{userId}/sessions", "delete");
    for name in ["except", "exceptSessionId"] {
        let p = param(&revoke_user, name);
        assert_eq!(p["in"], "query", "{name}");
        assert_ne!(p["required"], true, "{name} is optional");
        assert_eq!(p["schema"]["pattern"], "^sess_[A-Za-z0-9_-]{16}$", "{name}");
    }
    let user = param(&revoke_user, "userId");
    assert_eq!(user["schema"]["maxLength"], 256);
    assert_eq!(user["schema"]["minLength"], 1);
    let read = op("/v1/sessions/{sessionId}", "get");
    assert_eq!(
        param(&read, "sessionId")["schema"]["pattern"],
        "^sess_[A-Za-z0-9_-]{16}$"
    );
    let ttl = &doc["components"]["schemas"]["CreateSession"]["properties"]["ttlSeconds"];
    assert_eq!(ttl["minimum"], 1);
    assert_eq!(ttl["maximum"], 9_007_199_254_740_991_u64);

    let mut ids = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            let statuses: Vec<&str> = operation["responses"]
                .as_object()
                .expect("responses")
                .keys()
                .map(String::as_str)
                .collect();
            ids.push(
                operation["operationId"]
                    .as_str()
                    .expect("an operation id")
                    .to_owned(),
            );
            if operation.get("requestBody").is_some() {
                for status in ["400", "408", "413", "415", "503"] {
                    assert!(statuses.contains(&status), "{method} {path}: {status}");
                }
            }
            if path == "/v1/auth" {
                assert_eq!(statuses, ["200", "401", "503"], "the gateway's check");
            } else if path.starts_with("/v1/") {
                for status in ["401", "503"] {
                    assert!(statuses.contains(&status), "{method} {path}: {status}");
                }
            }
        }
    }
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids are unique: {ids:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn s22_every_kind_of_answer_carries_the_hardening_headers() {
    // `TestApp::send` asserts `Cache-Control: no-store`, `X-Content-Type-Options: nosniff`
    // and, on errors, the problem+json shape; this walks one answer of each status.
    let app = TestApp::builder()
        .with_max_per_user(1)
        .with_at_cap(sessiond_core::AtCap::Reject)
        .spawn()
        .await;
    let (token, session) = app.create_session("u1").await; // 201
    let id = session["sessionId"].as_str().expect("id");
    let checks = [
        (app.req(Method::GET, "/healthz"), StatusCode::OK),
        (app.req(Method::GET, "/metrics"), StatusCode::OK),
        (app.req(Method::GET, "/openapi.json"), StatusCode::OK),
        (app.holder(Method::GET, "/v1/auth", &token), StatusCode::OK),
        (app.req(Method::GET, "/v1/auth"), StatusCode::UNAUTHORIZED),
        (
            app.holder(Method::GET, "/v1/session", &token),
            StatusCode::OK,
        ),
        (
            app.backend(Method::GET, "/v1/sessions/bad"),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.backend(Method::GET, "/v1/sessions/sess_AAAAAAAAAAAAAAAA"),
            StatusCode::NOT_FOUND,
        ),
        (
            app.req(Method::PUT, "/v1/session"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            app.backend(Method::POST, "/v1/sessions")
                .json(&json!({"userId": "u1"})),
            StatusCode::CONFLICT,
        ),
        (
            app.holder(Method::PATCH, "/v1/session", &token)
                .header(IF_MATCH, "\"9\"")
                .json(&json!({"userData": {"a": 1}})),
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            app.holder(Method::PATCH, "/v1/session", &token)
                .json(&json!({"userData": {"a": "x".repeat(20 * 1024)}})),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            app.holder(Method::PATCH, "/v1/session", &token).body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            app.backend(Method::DELETE, &format!("/v1/sessions/{id}")),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (req, status) in checks {
        app.send(req).await.expect_status(status);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_stops_serving() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    assert_eq!(app.auth_status(&token).await, StatusCode::OK);
    let addr = app.addr;
    app.shutdown().await;
    let refused =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect attempt finished");
    assert!(
        refused.is_err(),
        "the port still accepts connections after shutdown"
    );
}

#[tokio::test]
async fn independent_servers_share_nothing() {
    // Two servers have independent stores: a token of one means nothing to the other.
    let a = TestApp::spawn().await;
    let b = TestApp::spawn().await;
    let (token, _) = a.create_session("u1").await;
    assert_eq!(a.auth_status(&token).await, StatusCode::OK);
    assert_eq!(b.auth_status(&token).await, StatusCode::UNAUTHORIZED);
    a.shutdown().await;
    b.shutdown().await;
}

/// S22 on every route and method of docs/api.md, success and error alike: `Cache-Control:
/// no-store`, `X-Content-Type-Options: nosniff`, and a `Content-Type` on every body that names
/// its charset where the media type has one (ASVS 5.0 4.1.1: `text/*` and XML types; JSON has
/// no charset parameter, RFC 8259 §11).
#[tokio::test]
async fn s22_every_endpoint_answers_with_no_store_nosniff_and_a_declared_content_type() {
    let app = TestApp::builder()
        .with_max_per_user(2)
        .with_at_cap(sessiond_core::AtCap::Reject)
        .spawn()
        .await;
    let (token, session) = app.create_session("u1").await;
    let (other, other_session) = app.create_session("u1").await;
    let id = session["sessionId"].as_str().expect("id").to_owned();
    let other_id = other_session["sessionId"].as_str().expect("id").to_owned();
    let one = format!("/v1/sessions/{id}");
    let checks = vec![
        // Operations.
        (app.req(Method::GET, "/healthz"), StatusCode::OK),
        (app.req(Method::HEAD, "/healthz"), StatusCode::OK),
        (app.req(Method::GET, "/readyz"), StatusCode::OK),
        (app.req(Method::GET, "/metrics"), StatusCode::OK),
        (app.req(Method::GET, "/openapi.json"), StatusCode::OK),
        // Token holder.
        (app.holder(Method::GET, "/v1/auth", &token), StatusCode::OK),
        (app.holder(Method::HEAD, "/v1/auth", &token), StatusCode::OK),
        (app.req(Method::GET, "/v1/auth"), StatusCode::UNAUTHORIZED),
        (
            app.holder(Method::GET, "/v1/session", &token),
            StatusCode::OK,
        ),
        (
            app.holder(Method::PATCH, "/v1/session", &token)
                .json(&json!({"userData": {"a": 1}})),
            StatusCode::OK,
        ),
        (
            app.holder(Method::PATCH, "/v1/session", &token)
                .header(IF_MATCH, "\"1\"")
                .json(&json!({"userData": {"a": 2}})),
            StatusCode::PRECONDITION_FAILED,
        ),
        (
            app.req(Method::OPTIONS, "/v1/session"),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        // Backend.
        (
            app.backend(Method::POST, "/v1/sessions")
                .json(&json!({"userId": "u1"})),
            StatusCode::CONFLICT,
        ),
        (
            app.backend(Method::POST, "/v1/sessions")
                .json(&json!({"userId": "u2"})),
            StatusCode::CREATED,
        ),
        (
            app.backend(Method::POST, "/v1/sessions")
                .json(&json!({"userId": "u2", "userData": {"a": "x".repeat(20 * 1024)}})),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            app.backend(Method::POST, "/v1/sessions").body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (app.backend(Method::GET, &one), StatusCode::OK),
        (
            app.backend(Method::PATCH, &one)
                .json(&json!({"userData": {"b": 1}})),
            StatusCode::OK,
        ),
        (app.req(Method::GET, &one), StatusCode::UNAUTHORIZED),
        (
            app.backend(Method::GET, "/v1/sessions/bad"),
            StatusCode::BAD_REQUEST,
        ),
        (
            app.backend(Method::GET, "/v1/sessions/sess_AAAAAAAAAAAAAAAA"),
            StatusCode::NOT_FOUND,
        ),
        (
            app.backend(Method::GET, "/v1/users/u1/sessions"),
            StatusCode::OK,
        ),
        (app.backend(Method::GET, "/nope"), StatusCode::NOT_FOUND),
        // Rotation and the three kinds of ending, last.
        (
            app.req(Method::POST, "/v1/session/rotate")
                .header(COOKIE, format!("__Host-sid={token}")),
            StatusCode::OK,
        ),
        (
            app.holder(Method::DELETE, "/v1/session", &other),
            StatusCode::NO_CONTENT,
        ),
        (
            app.backend(Method::DELETE, &format!("/v1/sessions/{other_id}")),
            StatusCode::NOT_FOUND,
        ),
        (app.backend(Method::DELETE, &one), StatusCode::NO_CONTENT),
        (
            app.backend(Method::DELETE, "/v1/users/u2/sessions"),
            StatusCode::OK,
        ),
    ];
    for (req, status) in checks {
        let (client, built) = req.build_split();
        let built = built.expect("request");
        let what = format!("{} {}", built.method(), built.url().path());
        let r = app
            .send(reqwest::RequestBuilder::from_parts(client, built))
            .await;
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.header(CACHE_CONTROL.as_str()), Some("no-store"), "{what}");
        assert_eq!(
            r.header(X_CONTENT_TYPE_OPTIONS.as_str()),
            Some("nosniff"),
            "{what}"
        );
        if r.body.is_empty() {
            continue;
        }
        let ct = r
            .header(CONTENT_TYPE.as_str())
            .unwrap_or_else(|| panic!("{what}: a body without Content-Type"))
            .to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim().to_owned();
        match essence.as_str() {
            "application/json" | "application/problem+json" => {
                serde_json::from_slice::<serde_json::Value>(&r.body)
                    .unwrap_or_else(|e| panic!("{what}: {essence} that is not JSON: {e}"));
            }
            "application/openmetrics-text" => {
                assert!(ct.contains("charset=utf-8"), "{what}: {ct}");
            }
            other if other.starts_with("text/") || other.ends_with("xml") => {
                assert!(ct.contains("charset="), "{what}: {ct}");
            }
            other => panic!("{what}: unexpected Content-Type {other}"),
        }
    }
    app.shutdown().await;
}
