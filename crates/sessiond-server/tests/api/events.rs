//! Session events: every lifecycle path, driven over HTTP, reports its event exactly once,
//! with the session, the user and the actor, and no token (the helpers' drop check looks for
//! every issued token in every event). `sessiond revoke` is the CLI's own test
//! (`crates/sessiond/tests/cli.rs`).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Recorded, TestApp};

fn id_of(session: &Value) -> String {
    session["sessionId"].as_str().expect("sessionId").to_owned()
}

/// The events of `name` so far.
fn named<'a>(events: &'a [Recorded], name: &str) -> Vec<&'a Recorded> {
    events.iter().filter(|e| e.name == name).collect()
}

/// Exactly one event of `name` for `session`, by `actor`, about `user`.
#[track_caller]
fn once(events: &[Recorded], name: &str, session: Option<&str>, user: Option<&str>, actor: &str) {
    let matching: Vec<&Recorded> = events
        .iter()
        .filter(|e| e.name == name && e.session_id.as_deref() == session)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "one {name} event for {session:?}; all events: {events:#?}"
    );
    assert_eq!(matching[0].user_id.as_deref(), user, "{name}'s user");
    assert_eq!(matching[0].actor, actor, "{name}'s actor");
}

#[tokio::test]
async fn every_lifecycle_path_reports_its_event_once_without_a_token() {
    let app = TestApp::builder()
        .with_max_per_user(2)
        .with_config(|c| c.embedded.sweep_interval = Duration::from_millis(20))
        .spawn()
        .await;

    // Created, and Evicted at the cap.
    let (_, e1) = app.create_session("user_ev_cap").await;
    let (_, e2) = app.create_session("user_ev_cap").await;
    let (_, e3) = app.create_session("user_ev_cap").await;

    // Replaced by a new login.
    let (_, m1) = app.create_session("user_ev_main").await;
    let (m2_token, m2) = app
        .create_session_with(&json!({
            "userId": "user_ev_main",
            "replacesSessionId": id_of(&m1),
            "metadata": {"userAgent": "login-agent"},
        }))
        .await;

    // Rotated, then a binding mismatch (another user agent than the login's), then LoggedOut.
    let rotated = app
        .send(
            app.holder(Method::POST, "/v1/session/rotate", &m2_token)
                .header("user-agent", "login-agent"),
        )
        .await
        .expect_status(StatusCode::OK)
        .json();
    let m2_new = rotated["token"].as_str().expect("token").to_owned();
    // Updated: a patch that changes userData; the same patch again changes nothing, and is
    // no event.
    for _ in 0..2 {
        app.send(
            app.holder(Method::PATCH, "/v1/session", &m2_new)
                .header("user-agent", "login-agent")
                .json(&json!({"userData": {"cart": ["A-1"]}})),
        )
        .await
        .expect_status(StatusCode::OK);
    }
    app.send(
        app.holder(Method::GET, "/v1/auth", &m2_new)
            .header("user-agent", "another-agent"),
    )
    .await
    .expect_status(StatusCode::OK);
    app.send(
        app.holder(Method::DELETE, "/v1/session", &m2_new)
            .header("user-agent", "login-agent"),
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);

    // Invalid tokens: one malformed (no session named), one well-formed but dead.
    assert_eq!(
        app.auth_status("not-a-token").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.auth_status(&m2_new).await, StatusCode::UNAUTHORIZED);

    // Revoked by a backend, RevokedAll.
    let (_, m3) = app.create_session("user_ev_main").await;
    app.send(app.backend(Method::DELETE, &format!("/v1/sessions/{}", id_of(&m3))))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let (_, m4) = app.create_session("user_ev_main").await;
    let (_, m5) = app.create_session("user_ev_main").await;
    let revoked_all = app
        .send(app.backend(
            Method::DELETE,
            &format!("/v1/users/user_ev_main/sessions?except={}", id_of(&m5)),
        ))
        .await
        .expect_status(StatusCode::OK)
        .json();
    assert_eq!(revoked_all["revoked"], 1);

    // Expired: a one-second session, the clock moved past it, the sweeper's turn.
    let (_, x1) = app
        .create_session_with(&json!({"userId": "user_ev_expiry", "ttlSeconds": 1}))
        .await;
    app.advance(Duration::from_secs(2));
    let reclaims = app.sessions_reclaimed_by_sweeper();
    if reclaims {
        let mut waited = 0;
        while named(&app.events.all(), "expired").is_empty() {
            assert!(
                waited < 500,
                "the sweeper never reclaimed the expired session"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
    }

    // RevokedEveryone.
    app.send(app.backend(Method::DELETE, "/v1/sessions?confirm=all-sessions"))
        .await
        .expect_status(StatusCode::OK);

    let events = app.events.all();
    let (cap, main) = (Some("user_ev_cap"), Some("user_ev_main"));
    for created in [&e1, &e2, &e3, &m1, &m2, &m3, &m4, &m5, &x1] {
        once(
            &events,
            "created",
            Some(&id_of(created)),
            created["userId"].as_str(),
            "backend",
        );
    }
    once(&events, "evicted", Some(&id_of(&e1)), cap, "backend");
    once(&events, "replaced", Some(&id_of(&m1)), main, "backend");
    once(&events, "rotated", Some(&id_of(&m2)), main, "holder");
    once(
        &events,
        "binding_mismatch_user_agent",
        Some(&id_of(&m2)),
        main,
        "holder",
    );
    once(&events, "updated", Some(&id_of(&m2)), main, "holder");
    once(&events, "logged_out", Some(&id_of(&m2)), main, "holder");
    once(&events, "invalid_token", None, None, "holder");
    once(&events, "invalid_token", Some(&id_of(&m2)), None, "holder");
    once(&events, "revoked", Some(&id_of(&m3)), main, "backend");
    once(&events, "revoked_all", None, main, "backend");
    if reclaims {
        once(
            &events,
            "expired",
            Some(&id_of(&x1)),
            Some("user_ev_expiry"),
            "sweeper",
        );
    } else {
        // Redis reclaims expired keys itself (their TTL), so its sweeper finds none.
        assert!(named(&events, "expired").is_empty(), "{events:#?}");
    }
    once(&events, "revoked_everyone", None, None, "backend");
    assert_eq!(
        events.len(),
        9 + 8 + 2 + 1 + usize::from(reclaims),
        "no other event: {events:#?}"
    );
    // Every kind of event is counted under its name on /metrics.
    let metrics = app.metrics_text().await;
    for name in ["created", "logged_out", "replaced", "revoked_everyone"] {
        assert!(
            metrics.contains(&format!(
                "sessiond_session_events_total{{event=\"{name}\"}}"
            )),
            "{name} is not on /metrics"
        );
    }
    app.shutdown().await;
}
