//! Refused credentials (RELIABILITY.md D7, D18): missing, malformed, unknown, revoked,
//! rotated-away and conflicting session tokens, and wrong API keys. All get `401` with one and
//! the same body, and `GET /v1/auth` never answers anything but `200` or `401` for them.

use reqwest::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{KEY, Resp, TestApp};

/// Every way of presenting a token that must be refused, as header sets.
async fn refused_token_cases(app: &TestApp) -> Vec<(String, HeaderMap)> {
    let (valid, _) = app.create_session("u1").await;
    let (other, _) = app.create_session("u2").await;
    let (revoked, _) = app.create_session("u1").await;
    app.send(app.holder(Method::DELETE, "/v1/session", &revoked))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let (rotated_away, _) = app.create_session("u1").await;
    app.rotate(&rotated_away)
        .await
        .expect_status(StatusCode::OK);
    let (id, secret) = valid.split_once('.').expect("token has two parts");
    // The same session id with another (well-formed) secret.
    let wrong_secret = format!("{id}.{}", "A".repeat(secret.len()));
    let unknown = format!("sess_AAAAAAAAAAAAAAAA.{secret}");
    let huge = "A".repeat(8 * 1024);

    let auth = |v: &str| {
        let mut h = HeaderMap::new();
        h.append(AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        h
    };
    let cookie = |v: &str| {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_str(v).expect("header"));
        h
    };
    let mut cases = vec![
        ("no credential".to_owned(), HeaderMap::new()),
        ("empty Authorization".into(), auth("")),
        ("scheme only".into(), auth("Bearer")),
        ("scheme and space".into(), auth("Bearer ")),
        ("garbage".into(), auth("Bearer not-a-token")),
        (
            "truncated".into(),
            auth(&format!("Bearer {}", &valid[..valid.len() - 1])),
        ),
        (
            "one char too long".into(),
            auth(&format!("Bearer {valid}A")),
        ),
        ("8 KiB token".into(), auth(&format!("Bearer {huge}"))),
        (
            "8 KiB valid-prefixed".into(),
            auth(&format!("Bearer {valid}{huge}")),
        ),
        (
            "non-base64url".into(),
            auth(&format!("Bearer {}", valid.replace('.', "!"))),
        ),
        (
            "wrong secret".into(),
            auth(&format!("Bearer {wrong_secret}")),
        ),
        ("unknown session".into(), auth(&format!("Bearer {unknown}"))),
        ("revoked".into(), auth(&format!("Bearer {revoked}"))),
        (
            "rotated away".into(),
            auth(&format!("Bearer {rotated_away}")),
        ),
        ("Basic scheme".into(), auth(&format!("Basic {valid}"))),
        ("Token scheme".into(), auth(&format!("Token {valid}"))),
        ("no scheme".into(), auth(&valid)),
        ("scheme glued".into(), auth(&format!("Bearer{valid}"))),
        ("trailing junk".into(), auth(&format!("Bearer {valid} x"))),
        ("api key as bearer".into(), auth(&format!("Bearer {KEY}"))),
        ("empty cookie".into(), cookie("__Host-sid=")),
        ("garbage cookie".into(), cookie("sid=garbage")),
        (
            "other cookie name".into(),
            cookie(&format!("session={valid}")),
        ),
        (
            "two cookies differ".into(),
            cookie(&format!("__Host-sid={valid}; sid={other}")),
        ),
    ];
    let mut two = HeaderMap::new();
    two.append(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {valid}")).expect("h"),
    );
    two.append(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {valid}")).expect("h"),
    );
    cases.push(("two Authorization headers, same token".into(), two));
    let mut two = HeaderMap::new();
    two.append(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {valid}")).expect("h"),
    );
    two.append(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {other}")).expect("h"),
    );
    cases.push(("two Authorization headers, two tokens".into(), two));
    let mut mixed = HeaderMap::new();
    mixed.append(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {valid}")).expect("h"),
    );
    mixed.append(
        COOKIE,
        HeaderValue::from_str(&format!("__Host-sid={other}")).expect("h"),
    );
    cases.push(("bearer and cookie differ".into(), mixed));
    let mut obs = HeaderMap::new();
    obs.append(
        AUTHORIZATION,
        HeaderValue::from_bytes(b"Bearer \xff\xfe\x80token").expect("obs-text header"),
    );
    cases.push(("non-ASCII bytes".into(), obs));
    // The valid token itself still works: the refusals are about the cases, not the server.
    assert_eq!(app.auth_status(&valid).await, StatusCode::OK);
    assert_eq!(app.auth_status(&other).await, StatusCode::OK);
    cases
}

#[tokio::test]
async fn every_refused_token_gets_the_same_401() {
    let app = TestApp::spawn().await;
    let cases = refused_token_cases(&app).await;
    let mut reference: Option<Vec<u8>> = None;
    for (name, headers) in &cases {
        for (method, path) in [
            (Method::GET, "/v1/auth"),
            (Method::GET, "/v1/session"),
            (Method::DELETE, "/v1/session"),
            (Method::POST, "/v1/session/rotate"),
        ] {
            let r: Resp = app
                .send(app.req(method.clone(), path).headers(headers.clone()))
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{name}: {method} {path}: {}",
                r.text()
            );
            match &reference {
                None => reference = Some(r.body.clone()),
                Some(body) => assert_eq!(
                    &r.body, body,
                    "{name}: {method} {path}: the same body for every refusal"
                ),
            }
        }
        let r = app
            .send(
                app.req(Method::PATCH, "/v1/session")
                    .headers(headers.clone())
                    .json(&json!({"userData": {"a": 1}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: PATCH");
        assert_eq!(Some(&r.body), reference.as_ref(), "{name}: PATCH body");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn forward_auth_never_answers_400() {
    let app = TestApp::spawn().await;
    let (valid, _) = app.create_session("u1").await;
    let mut cases = refused_token_cases(&app).await;
    let mut cookie = HeaderMap::new();
    cookie.append(COOKIE, HeaderValue::from_static("a; b=; ==; sid"));
    cases.push(("malformed cookie header".into(), cookie));
    for (name, headers) in &cases {
        let status = app
            .send(app.req(Method::GET, "/v1/auth").headers(headers.clone()))
            .await
            .status;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}");
    }
    // Odd but harmless request parts do not turn into a 400 either.
    for path in [
        "/v1/auth?",
        "/v1/auth?x=%ZZ",
        "/v1/auth?a=1&a=2",
        "/v1/auth?token=garbage",
    ] {
        let status = app.send(app.holder(Method::GET, path, &valid)).await.status;
        assert_eq!(status, StatusCode::OK, "{path}");
        let status = app.send(app.req(Method::GET, path)).await.status;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let status = app
        .send(
            app.holder(Method::GET, "/v1/auth", &valid)
                .header("content-type", "text/html")
                .body("{{{"),
        )
        .await
        .status;
    assert_eq!(status, StatusCode::OK, "a body on GET /v1/auth is ignored");
    app.shutdown().await;
}

#[tokio::test]
async fn token_in_the_query_string_is_not_a_credential() {
    let app = TestApp::spawn().await;
    let (valid, _) = app.create_session("u1").await;
    for path in [
        format!("/v1/auth?token={valid}"),
        format!("/v1/auth?access_token={valid}"),
        format!("/v1/session?access_token={valid}"),
    ] {
        app.send(app.req(Method::GET, &path))
            .await
            .problem(StatusCode::UNAUTHORIZED);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn wrong_api_keys_get_401() {
    let app = TestApp::spawn().await;
    let (token, session) = app.create_session("u1").await;
    let id = session["sessionId"].as_str().expect("id");
    let (_, reference) = {
        let r = app.send(app.req(Method::GET, "/v1/session")).await;
        (r.status, r.body)
    };
    let prefix = &KEY[..KEY.len() - 1];
    let longer = format!("{KEY}x");
    let upper = KEY.to_uppercase();
    let variants: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing", vec![]),
        (
            "wrong",
            vec![("x-api-key", "wrong-key-0123456789abcdef".into())],
        ),
        ("prefix", vec![("x-api-key", prefix.to_owned())]),
        ("longer", vec![("x-api-key", longer)]),
        ("other case", vec![("x-api-key", upper)]),
        ("empty", vec![("x-api-key", String::new())]),
        (
            "as bearer",
            vec![("authorization", format!("Bearer {KEY}"))],
        ),
        ("session token as key", vec![("x-api-key", token.clone())]),
        (
            "session token as bearer",
            vec![("authorization", format!("Bearer {token}"))],
        ),
        (
            "two keys",
            vec![("x-api-key", KEY.to_owned()), ("x-api-key", KEY.to_owned())],
        ),
    ];
    let requests: Vec<(Method, String, bool)> = vec![
        (Method::POST, "/v1/sessions".into(), true),
        (Method::GET, format!("/v1/sessions/{id}"), false),
        (Method::PATCH, format!("/v1/sessions/{id}"), true),
        (Method::DELETE, format!("/v1/sessions/{id}"), false),
        (Method::GET, "/v1/users/u1/sessions".into(), false),
        (Method::DELETE, "/v1/users/u1/sessions".into(), false),
    ];
    for (name, headers) in &variants {
        for (method, path, with_body) in &requests {
            let mut req = app.req(method.clone(), path);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if *with_body {
                req = req.json(&json!({"userId": "u1"}));
            }
            let r = app.send(req).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{name}: {method} {path}"
            );
            assert_eq!(r.body, reference, "{name}: {method} {path}: same 401 body");
        }
    }
    // Nothing above changed anything.
    assert_eq!(app.auth_status(&token).await, StatusCode::OK);
    assert_eq!(
        app.send(app.backend(Method::GET, &format!("/v1/sessions/{id}")))
            .await
            .expect_status(StatusCode::OK)
            .json()["version"],
        1
    );
    app.shutdown().await;
}
