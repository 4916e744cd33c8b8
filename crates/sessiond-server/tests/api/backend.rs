//! The trusted backend's flows (`X-Api-Key`): reading and patching any session, revoking one
//! or all of a user's sessions, listing them, and the per-user cap in both modes.

use std::time::Duration;

use reqwest::header::{ETAG, IF_MATCH};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sessiond_core::AtCap;

use crate::helpers::{TestApp, ts};

/// A well-formed session id that no session has.
const UNKNOWN_ID: &str = "sess_AAAAAAAAAAAAAAAA";

fn id_of(session: &Value) -> String {
    session["sessionId"].as_str().expect("sessionId").to_owned()
}

async fn list(app: &TestApp, user: &str) -> Vec<Value> {
    let body = app
        .send(app.backend(Method::GET, &format!("/v1/users/{user}/sessions")))
        .await
        .expect_status(StatusCode::OK)
        .json();
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["sessions"], "{body}");
    body["sessions"].as_array().expect("array").clone()
}

#[tokio::test]
async fn backend_reads_any_session() {
    let app = TestApp::spawn().await;
    let (token, created) = app
        .create_session_with(
            &json!({"userId": "u1", "userData": {"x": 1}, "metadata": {"loginMethod": "sso"}}),
        )
        .await;
    let id = id_of(&created);
    let r = app
        .send(app.backend(Method::GET, &format!("/v1/sessions/{id}")))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(r.header(ETAG.as_str()), Some("\"1\""));
    assert!(!r.text().contains(&token));
    assert_eq!(r.json(), created);
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_session_id_is_404_for_every_method() {
    let app = TestApp::spawn().await;
    let path = format!("/v1/sessions/{UNKNOWN_ID}");
    app.send(app.backend(Method::GET, &path))
        .await
        .problem(StatusCode::NOT_FOUND);
    app.send(app.backend(Method::DELETE, &path))
        .await
        .problem(StatusCode::NOT_FOUND);
    app.send(
        app.backend(Method::PATCH, &path)
            .json(&json!({"userData": {"a": 1}})),
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    app.shutdown().await;
}

#[tokio::test]
async fn d09_malformed_session_id_is_400_for_every_method() {
    let app = TestApp::spawn().await;
    let long = "a".repeat(10 * 1024);
    for bad in [
        "abc",
        "sess_",
        "sess_AAAAAAAAAAAAAAA",
        "sess_AAAAAAAAAAAAAAAAA",
        "sesx_AAAAAAAAAAAAAAAA",
        "sess_AAAAAAAAAAAAAAA%2A",
        "sess_AAAAAAAAAAAAAA%7B%7D",
        "sess_AAAAAAAAAAAAAAA%00",
        "..%2F..%2Fetc",
        &long,
    ] {
        let path = format!("/v1/sessions/{bad}");
        app.send(app.backend(Method::GET, &path))
            .await
            .problem(StatusCode::BAD_REQUEST);
        app.send(app.backend(Method::DELETE, &path))
            .await
            .problem(StatusCode::BAD_REQUEST);
        app.send(
            app.backend(Method::PATCH, &path)
                .json(&json!({"userData": {"a": 1}})),
        )
        .await
        .problem(StatusCode::BAD_REQUEST);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn d16_backend_patch_with_if_match() {
    let app = TestApp::spawn().await;
    let (token, created) = app
        .create_session_with(&json!({"userId": "u1", "userData": {"role": "user"}}))
        .await;
    let path = format!("/v1/sessions/{}", id_of(&created));
    let r = app
        .send(
            app.backend(Method::PATCH, &path)
                .header(IF_MATCH, "\"1\"")
                .json(&json!({"userData": {"role": "admin", "mfa": true}})),
        )
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(r.header(ETAG.as_str()), Some("\"2\""));
    let doc = r.json();
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["userData"], json!({"role": "admin", "mfa": true}));
    // The holder sees the backend's change.
    assert_eq!(app.own_session(&token).await["userData"]["role"], "admin");

    app.send(
        app.backend(Method::PATCH, &path)
            .header(IF_MATCH, "\"1\"")
            .json(&json!({"userData": {"role": "user"}})),
    )
    .await
    .problem(StatusCode::PRECONDITION_FAILED);
    // A bare number is read as the same version.
    let doc = app
        .send(
            app.backend(Method::PATCH, &path)
                .header(IF_MATCH, "2")
                .json(&json!({"userData": {"mfa": null}})),
        )
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(doc["version"], 3);
    assert_eq!(doc["userData"], json!({"role": "admin"}));
    app.shutdown().await;
}

#[tokio::test]
async fn s13_list_is_newest_activity_first() {
    let app = TestApp::builder()
        .with_touch_interval(Duration::ZERO)
        .spawn()
        .await;
    assert!(list(&app, "nobody").await.is_empty());
    let body = app
        .send(app.backend(Method::GET, "/v1/users/nobody/sessions"))
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(body, json!({"sessions": []}));

    let (a, sa) = app.create_session("u1").await;
    let (_, sb) = app.create_session("u1").await;
    let (_, sc) = app.create_session("u1").await;
    let (_, other) = app.create_session("u2").await;
    let newest_created = [&sa, &sb, &sc]
        .iter()
        .map(|s| ts(&s["lastActivity"]))
        .max()
        .expect("three");
    // Make A's activity strictly the newest.
    app.touch_until_after(&a, newest_created).await;

    let sessions = list(&app, "u1").await;
    assert_eq!(sessions.len(), 3);
    assert_eq!(sessions[0]["sessionId"], sa["sessionId"]);
    let mut ids: Vec<String> = sessions.iter().map(id_of).collect();
    ids.sort();
    let mut want = vec![id_of(&sa), id_of(&sb), id_of(&sc)];
    want.sort();
    assert_eq!(ids, want);
    assert!(!ids.contains(&id_of(&other)));
    for pair in sessions.windows(2) {
        assert!(
            ts(&pair[0]["lastActivity"]) >= ts(&pair[1]["lastActivity"]),
            "newest activity first: {pair:?}"
        );
    }
    for s in &sessions {
        assert!(s.get("token").is_none());
        assert_eq!(s["userId"], "u1");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn s13_a_backend_ends_one_session_of_a_user() {
    let app = TestApp::spawn().await;
    let (token, s) = app.create_session("u1").await;
    let (other, _) = app.create_session("u1").await;
    let path = format!("/v1/sessions/{}", id_of(&s));
    let r = app
        .send(app.backend(Method::DELETE, &path))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    assert_eq!(app.auth_status(&token).await, StatusCode::UNAUTHORIZED);
    app.send(app.backend(Method::DELETE, &path))
        .await
        .problem(StatusCode::NOT_FOUND);
    app.send(app.backend(Method::GET, &path))
        .await
        .problem(StatusCode::NOT_FOUND);
    assert_eq!(app.auth_status(&other).await, StatusCode::OK);
    assert_eq!(list(&app, "u1").await.len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn s10_s12_revoke_all_ends_every_session_of_the_user() {
    let app = TestApp::spawn().await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(app.create_session("u1").await.0);
    }
    let (bystander, _) = app.create_session("u2").await;
    let body = app
        .send(app.backend(Method::DELETE, "/v1/users/u1/sessions"))
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(body, json!({"revoked": 3}));
    for t in &tokens {
        assert_eq!(app.auth_status(t).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.auth_status(&bystander).await, StatusCode::OK);
    assert!(list(&app, "u1").await.is_empty());
    // Nothing left: zero revoked, still 200.
    let body = app
        .send(app.backend(Method::DELETE, "/v1/users/u1/sessions"))
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(body, json!({"revoked": 0}));
    app.shutdown().await;
}

#[tokio::test]
async fn s11_revoke_all_except_the_current_one() {
    let app = TestApp::spawn().await;
    let (t1, _) = app.create_session("u1").await;
    let (kept, kept_session) = app.create_session("u1").await;
    let (t3, _) = app.create_session("u1").await;
    let body = app
        .send(app.backend(
            Method::DELETE,
            &format!("/v1/users/u1/sessions?except={}", id_of(&kept_session)),
        ))
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(body, json!({"revoked": 2}));
    assert_eq!(app.auth_status(&t1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.auth_status(&t3).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.auth_status(&kept).await, StatusCode::OK);
    let sessions = list(&app, "u1").await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["sessionId"], kept_session["sessionId"]);
    // A malformed `except` is refused, and nothing is revoked.
    app.send(app.backend(Method::DELETE, "/v1/users/u1/sessions?except=nope"))
        .await
        .problem(StatusCode::BAD_REQUEST);
    assert_eq!(app.auth_status(&kept).await, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn s14_cap_evicts_the_oldest_activity() {
    let app = TestApp::builder()
        .with_max_per_user(2)
        .with_at_cap(AtCap::EvictOldest)
        .with_touch_interval(Duration::ZERO)
        .spawn()
        .await;
    let (oldest, s1) = app.create_session("u1").await;
    let (second, _) = app.create_session("u1").await;
    // Make the second session's activity strictly newer than the first's.
    app.touch_until_after(&second, ts(&s1["lastActivity"]))
        .await;
    let (third, _) = app.create_session("u1").await;
    assert_eq!(app.auth_status(&oldest).await, StatusCode::UNAUTHORIZED);
    assert_eq!(app.auth_status(&second).await, StatusCode::OK);
    assert_eq!(app.auth_status(&third).await, StatusCode::OK);
    assert_eq!(list(&app, "u1").await.len(), 2);
    // The cap is per user.
    app.create_session("u2").await;
    assert_eq!(app.auth_status(&second).await, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn s14_cap_rejects_when_configured() {
    let app = TestApp::builder()
        .with_max_per_user(2)
        .with_at_cap(AtCap::Reject)
        .spawn()
        .await;
    let (t1, s1) = app.create_session("u1").await;
    let (t2, _) = app.create_session("u1").await;
    app.create(&json!({"userId": "u1"}))
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(app.auth_status(&t1).await, StatusCode::OK);
    assert_eq!(app.auth_status(&t2).await, StatusCode::OK);
    assert_eq!(list(&app, "u1").await.len(), 2);
    // Once a session ends there is room again.
    app.send(app.backend(Method::DELETE, &format!("/v1/sessions/{}", id_of(&s1))))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    app.create_session("u1").await;
    app.shutdown().await;
}

#[tokio::test]
async fn d09_malformed_user_id_in_path_is_400() {
    let app = TestApp::spawn().await;
    let long = "u".repeat(257);
    for bad in ["a%20b", "caf%C3%A9", "a%0D%0Ab", "a%09b", &long] {
        let path = format!("/v1/users/{bad}/sessions");
        app.send(app.backend(Method::GET, &path))
            .await
            .problem(StatusCode::BAD_REQUEST);
        app.send(app.backend(Method::DELETE, &path))
            .await
            .problem(StatusCode::BAD_REQUEST);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn s11_revoke_all_except_by_either_query_name() {
    let app = TestApp::spawn().await;
    for name in ["except", "exceptSessionId"] {
        let (t1, _) = app.create_session("u1").await;
        let (kept, kept_session) = app.create_session("u1").await;
        let body = app
            .send(app.backend(
                Method::DELETE,
                &format!("/v1/users/u1/sessions?{name}={}", id_of(&kept_session)),
            ))
            .await
            .expect_status(StatusCode::OK)
            .json();
        assert_eq!(body, json!({"revoked": 1}), "{name}");
        assert_eq!(
            app.auth_status(&t1).await,
            StatusCode::UNAUTHORIZED,
            "{name}"
        );
        assert_eq!(app.auth_status(&kept).await, StatusCode::OK, "{name}");
        // Clean up for the next round.
        app.send(app.backend(Method::DELETE, "/v1/users/u1/sessions"))
            .await
            .expect_status(StatusCode::OK);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn s13_list_shows_only_live_sessions() {
    let app = TestApp::spawn().await;
    let (_, short) = app
        .create_session_with(&json!({"userId": "u1", "ttlSeconds": 1}))
        .await;
    let (live, live_session) = app.create_session("u1").await;
    let (ended, ended_session) = app.create_session("u1").await;
    app.send(app.holder(Method::DELETE, "/v1/session", &ended))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let ids: Vec<String> = list(&app, "u1").await.iter().map(id_of).collect();
    assert!(ids.contains(&id_of(&short)) && ids.contains(&id_of(&live_session)));
    assert!(
        !ids.contains(&id_of(&ended_session)),
        "a logged-out session is listed"
    );
    // Past the one-second session's end.
    app.advance(Duration::from_millis(1200));
    let sessions = list(&app, "u1").await;
    let ids: Vec<String> = sessions.iter().map(id_of).collect();
    assert_eq!(
        ids,
        [id_of(&live_session)],
        "only the live session is listed"
    );
    assert_eq!(app.auth_status(&live).await, StatusCode::OK);
    // The holder ends the remaining one from the list, as a "your devices" page does.
    app.send(app.backend(Method::DELETE, &format!("/v1/sessions/{}", ids[0])))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    assert!(list(&app, "u1").await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn d13_many_creates_for_one_user_stay_within_the_cap() {
    // 60 logins of one user against a cap of 5 (evict-oldest, the default mode).
    let app = TestApp::builder().with_max_per_user(5).spawn().await;
    let mut last = String::new();
    for _ in 0..60 {
        last = app.create_session("u1").await.0;
        assert!(list(&app, "u1").await.len() <= 5, "over the cap");
    }
    assert_eq!(list(&app, "u1").await.len(), 5);
    assert_eq!(app.auth_status(&last).await, StatusCode::OK);
    let body = app
        .send(app.backend(Method::DELETE, "/v1/users/u1/sessions"))
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(body, json!({"revoked": 5}));
    assert!(list(&app, "u1").await.is_empty());
    app.shutdown().await;
}

/// Without `tier.postgres_url` there is no audit trail: both reads say so with `404` (and
/// still want the backend key, and still refuse a malformed id first).
#[tokio::test]
async fn the_audit_trail_is_404_without_a_durable_tier() {
    let app = TestApp::spawn().await;
    let (_, session) = app.create_session("user_no_trail").await;
    let id = session["sessionId"].as_str().expect("session id");
    for path in [
        "/v1/users/user_no_trail/events".to_owned(),
        format!("/v1/sessions/{id}/events"),
    ] {
        let r = app
            .send(app.backend(Method::GET, &path))
            .await
            .expect_status(StatusCode::NOT_FOUND);
        assert!(
            r.json()["detail"]
                .as_str()
                .is_some_and(|d| d.contains("tier.postgres_url")),
            "{path}: the answer says what enables it"
        );
        app.send(app.req(Method::GET, &path))
            .await
            .expect_status(StatusCode::UNAUTHORIZED);
    }
    app.send(app.backend(Method::GET, "/v1/sessions/not-an-id/events"))
        .await
        .expect_status(StatusCode::BAD_REQUEST);
    app.send(app.backend(Method::GET, "/v1/users/u/events?limit=0"))
        .await
        .expect_status(StatusCode::BAD_REQUEST);
    app.shutdown().await;
}
