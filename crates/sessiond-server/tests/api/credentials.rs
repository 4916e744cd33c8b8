//! Refused credentials (docs/requirements.md D7, D18): missing, malformed, unknown, revoked,
//! rotated-away and conflicting session tokens, and wrong API keys. All get `401` with one and
//! the same body, and `GET /v1/auth` never answers anything but `200` or `401` for them. Also
//! what a client can never do with a token: choose it (S2), pass it in the URL (S16), see it
//! echoed in an error (S17), or make a malformed one cost a store operation (S24).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{KEY, Resp, TestApp};

/// The sum of the `/metrics` samples of `family` (the name before `{`) whose labels contain
/// every one of `labels`.
async fn metric(app: &TestApp, family: &str, labels: &[&str]) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Store operations requests have made so far: of any kind but those a scrape of `/metrics`
/// makes itself (`count`, `ping`) and the sweeper's, which runs on its own timer
/// (`reclaim_expired`).
async fn store_operations(app: &TestApp) -> f64 {
    let text = app.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with("sessiond_store_operation_duration_seconds_count{"))
        .filter(|l| {
            !["count", "ping", "reclaim_expired"]
                .iter()
                .any(|op| l.contains(&format!("op=\"{op}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A token of exactly the shape sessiond issues, chosen by the client instead.
const CHOSEN_ID: &str = "sess_ChosenByClient00";
fn chosen_token() -> String {
    format!("{CHOSEN_ID}.{}", "A".repeat(43))
}

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
            cookie(&format!("__Host-sid={valid}; __Host-sid={other}")),
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
async fn d07_every_refused_token_gets_the_same_401() {
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
async fn d07_forward_auth_never_answers_400() {
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
async fn s16_a_token_in_the_url_is_not_taken() {
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
async fn d18_wrong_api_keys_get_401() {
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

#[tokio::test]
async fn s02_a_client_supplied_token_or_session_id_is_never_adopted() {
    let app = TestApp::spawn().await;
    let chosen = chosen_token();
    let invalid_before = metric(&app, "sessiond_session_events_total", &["invalid_token"]).await;
    // Strict mode: a create body naming its own token or session id is refused, and nothing
    // is created.
    for body in [
        json!({"userId": "u1", "token": chosen}),
        json!({"userId": "u1", "sessionId": CHOSEN_ID}),
        json!({"userId": "u1", "token": chosen, "sessionId": CHOSEN_ID}),
        json!({"userId": "u1", "session": {"sessionId": CHOSEN_ID}}),
    ] {
        app.create(&body).await.problem(StatusCode::BAD_REQUEST);
    }
    let list = app
        .send(app.backend(Method::GET, "/v1/users/u1/sessions"))
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(list, json!({"sessions": []}));
    // The chosen token, well-formed but never issued, is nobody's credential.
    assert_eq!(app.auth_status(&chosen).await, StatusCode::UNAUTHORIZED);
    app.send(
        app.req(Method::GET, "/v1/session")
            .header(COOKIE, format!("__Host-sid={chosen}")),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED);
    app.send(app.backend(Method::GET, &format!("/v1/sessions/{CHOSEN_ID}")))
        .await
        .problem(StatusCode::NOT_FOUND);
    // ... and each refusal is counted.
    let invalid_after = metric(&app, "sessiond_session_events_total", &["invalid_token"]).await;
    assert!(
        invalid_after >= invalid_before + 2.0,
        "invalid_token counted: {invalid_before} -> {invalid_after}"
    );
    // A login that arrives carrying the chosen token (as a stale cookie or bearer) still gets
    // a token and session id of sessiond's own making.
    let r = app
        .send(
            app.backend(Method::POST, "/v1/sessions")
                .header(AUTHORIZATION, format!("Bearer {chosen}"))
                .header(COOKIE, format!("__Host-sid={chosen}"))
                .json(&json!({"userId": "u1"})),
        )
        .await
        .expect_status(StatusCode::CREATED)
        .json();
    let issued = r["token"].as_str().expect("token");
    assert_ne!(issued, chosen);
    assert_ne!(r["session"]["sessionId"], CHOSEN_ID);
    assert_eq!(app.auth_status(issued).await, StatusCode::OK);
    assert_eq!(app.auth_status(&chosen).await, StatusCode::UNAUTHORIZED);
    app.shutdown().await;
}

#[tokio::test]
async fn s17_error_bodies_never_contain_the_token() {
    let app = TestApp::builder()
        .with_max_per_user(2)
        .with_at_cap(sessiond_core::AtCap::Reject)
        .spawn()
        .await;
    let (token, session) = app.create_session("u1").await;
    let (revoked, _) = app.create_session("u1").await;
    app.send(app.holder(Method::DELETE, "/v1/session", &revoked))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    // At the cap of two again.
    app.create_session("u1").await;
    let id = session["sessionId"].as_str().expect("id");
    let cookie = |t: &str| format!("__Host-sid={t}");
    let requests = vec![
        // 401: a revoked token, as bearer and as cookie; a token as an API key.
        app.holder(Method::GET, "/v1/session", &revoked),
        app.req(Method::GET, "/v1/auth")
            .header(COOKIE, cookie(&revoked)),
        app.holder(Method::GET, "/v1/auth", &format!("{token}x")),
        app.req(Method::GET, &format!("/v1/sessions/{id}"))
            .header("x-api-key", &token),
        app.req(Method::GET, "/v1/auth")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(COOKIE, cookie(&revoked)),
        // 404, 405.
        app.holder(Method::GET, "/v1/nope", &token),
        app.holder(Method::PUT, "/v1/session", &token),
        // 400: a malformed body, a malformed If-Match.
        app.holder(Method::PATCH, "/v1/session", &token)
            .header(CONTENT_TYPE, "application/json")
            .body("{\"userData\":"),
        app.holder(Method::PATCH, "/v1/session", &token)
            .header(IF_MATCH, "\"1")
            .json(&json!({"userData": {"a": 1}})),
        // 412, 413, 415.
        app.holder(Method::PATCH, "/v1/session", &token)
            .header(IF_MATCH, "\"7\"")
            .json(&json!({"userData": {"a": 1}})),
        app.holder(Method::PATCH, "/v1/session", &token)
            .json(&json!({"userData": {"a": "x".repeat(20 * 1024)}})),
        app.holder(Method::PATCH, "/v1/session", &token)
            .header(CONTENT_TYPE, "text/plain")
            .body("{}"),
        // 409: the cap, from a login that carries the token.
        app.backend(Method::POST, "/v1/sessions")
            .header(COOKIE, cookie(&token))
            .json(&json!({"userId": "u1"})),
        // 400: a malformed session id in a path.
        app.holder(Method::GET, &format!("/v1/sessions/{token}"), &token),
    ];
    let (_, secret) = token.split_once('.').expect("id.secret");
    let raw = URL_SAFE_NO_PAD.decode(secret).expect("base64url secret");
    let mut statuses = Vec::new();
    for req in requests {
        let r = app.send(req).await;
        assert!(r.status.is_client_error(), "{}: {}", r.status, r.text());
        statuses.push(r.status.as_u16());
        for t in [&token, &revoked] {
            let s = t.split_once('.').expect("id.secret").1;
            assert!(!r.text().contains(s), "{}: {}", r.status, r.text());
        }
        assert!(!r.body.windows(raw.len()).any(|w| w == raw.as_slice()));
        for (name, value) in &r.headers {
            let v = value.to_str().unwrap_or_default();
            assert!(!v.contains(secret), "header {name} of a {}: {v}", r.status);
        }
    }
    statuses.sort_unstable();
    statuses.dedup();
    assert_eq!(
        statuses,
        [400, 401, 404, 405, 409, 412, 413, 415],
        "every kind of refusal was seen"
    );
    app.shutdown().await;
}

/// A token a client put in a body field does not come back in the `400`'s detail: serde's
/// message quotes string values and unknown field names, and sessiond redacts them.
#[tokio::test]
async fn s17_a_token_in_a_malformed_body_is_not_echoed() {
    let app = TestApp::spawn().await;
    let (token, _) = app.create_session("u1").await;
    let secret = token.split_once('.').expect("id.secret").1.to_owned();
    for body in [
        json!({"userId": "u1", "ttlSeconds": token}),
        json!({"userId": "u1", token.clone(): 1}),
    ] {
        let r = app
            .create(&body)
            .await
            .expect_status(StatusCode::BAD_REQUEST);
        assert!(!r.text().contains(&secret), "{}", r.text());
    }
    let r = app
        .send(
            app.holder(Method::PATCH, "/v1/session", &token)
                .json(&json!({token.clone(): 1})),
        )
        .await
        .expect_status(StatusCode::BAD_REQUEST);
    assert!(!r.text().contains(&secret), "{}", r.text());
    app.shutdown().await;
}

#[tokio::test]
async fn s24_d07_a_malformed_token_costs_no_store_operation() {
    let app = TestApp::spawn().await;
    let (valid, _) = app.create_session("u1").await;
    let huge = "A".repeat(8 * 1024);
    let malformed = [
        String::new(),
        " ".into(),
        "not-a-token".into(),
        valid[..valid.len() - 1].to_owned(),
        format!("{valid}A"),
        valid.replace('.', "!"),
        valid.replace("sess_", "sesx_"),
        format!("{}=", &valid[..valid.len() - 1]),
        huge.clone(),
        format!("{valid}{huge}"),
    ];
    let before = store_operations(&app).await;
    let mut refused = 0;
    for bad in &malformed {
        for headers in [
            vec![(AUTHORIZATION, format!("Bearer {bad}"))],
            vec![(COOKIE, format!("__Host-sid={bad}"))],
            vec![(AUTHORIZATION, format!("Token {valid}"))],
            vec![
                (AUTHORIZATION, format!("Bearer {valid}")),
                (COOKIE, format!("__Host-sid={bad}")),
            ],
        ] {
            for (method, path) in [
                (Method::GET, "/v1/auth"),
                (Method::GET, "/v1/session"),
                (Method::POST, "/v1/session/rotate"),
                (Method::DELETE, "/v1/session"),
            ] {
                let mut req = app.req(method.clone(), path);
                for (name, value) in &headers {
                    req = req.header(name, value);
                }
                app.send(req).await.problem(StatusCode::UNAUTHORIZED);
                refused += 1;
            }
        }
    }
    let after = store_operations(&app).await;
    assert!(
        (after - before).abs() < f64::EPSILON,
        "{refused} malformed tokens cost {} store operations",
        after - before
    );
    // The counter does move for a well-formed token: one load (and perhaps a touch).
    assert_eq!(app.auth_status(&valid).await, StatusCode::OK);
    assert!(store_operations(&app).await > after);
    app.shutdown().await;
}
