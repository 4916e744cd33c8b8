//! On Redis only: failing closed while Redis is down, recovering when it returns, and what the
//! keyspace holds after the API has been used.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::AsyncCommands as _;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::json;
use sessiond_testkit::redis::RedisServer;

use crate::helpers::{Backing, PROBLEM_JSON, TestApp, auth};

async fn app_on_own_redis(timeout: Duration) -> TestApp {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("start redis");
    TestApp::builder()
        .with_backing(Backing::Redis(server))
        .with_redis_timeout(timeout)
        .spawn()
        .await
}

fn server(app: &mut TestApp) -> &mut RedisServer {
    match &mut app.backing {
        Backing::Redis(server) => server,
        other => panic!("expected a standalone Redis, got {other:?}"),
    }
}

#[tokio::test]
async fn s21_redis_down_fails_closed_with_503_and_recovers_by_itself() {
    let mut app = app_on_own_redis(Duration::from_millis(500)).await;
    let (token, _) = app.create_session("user_down").await;
    assert_eq!(app.auth_status(&token).await, StatusCode::OK);

    server(&mut app).kill();

    for path in ["/v1/auth", "/v1/session"] {
        let started = Instant::now();
        let r = app
            .client
            .get(app.url(path))
            .header("authorization", auth(&token))
            .send()
            .await
            .expect("sessiond answers while Redis is down");
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{path} must fail closed"
        );
        assert_eq!(r.headers()[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        // A fixed detail: no stack trace, no client error text, no address of the store.
        let body = r.text().await.expect("body");
        let problem: serde_json::Value = serde_json::from_str(&body).expect("problem JSON");
        assert_eq!(problem["status"], 503, "{body}");
        for leak in [
            "redis",
            "127.0.0.1",
            "os error",
            "refused",
            "panicked",
            ".rs:",
            "backtrace",
        ] {
            assert!(
                !body.to_ascii_lowercase().contains(leak),
                "{path}: {leak:?} in the 503 body: {body}"
            );
        }
        // A hang detector, not a benchmark: the answer comes from the store timeout.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} hung: {:?}",
            started.elapsed()
        );
    }
    let create = app
        .backend(Method::POST, "/v1/sessions")
        .json(&json!({"userId": "user_down"}))
        .send()
        .await
        .expect("sessiond answers");
    assert_eq!(create.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let alive = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(
        alive.status(),
        StatusCode::OK,
        "the process itself stays alive"
    );

    server(&mut app).restart();

    // No restart of sessiond: its connection comes back by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz answers");
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessiond did not recover within 10 s of Redis"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (fresh, _) = app.create_session("user_down").await;
    assert_eq!(app.auth_status(&fresh).await, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn s23_every_key_has_a_ttl_and_no_key_or_value_holds_a_token_secret() {
    let app = app_on_own_redis(Duration::from_secs(2)).await;
    // Exercise every writing flow of the API.
    let (a, _) = app
        .create_session_with(&json!({
            "userId": "user_scan",
            "userData": {"preferences": {}, "cart": {}, "permissions": []},
            "metadata": {"ipAddress": "192.168.1.100", "userAgent": "Mozilla/5.0", "loginMethod": "email"},
            "ttlSeconds": 3600
        }))
        .await;
    let (b, b_doc) = app.create_session("user_scan").await;
    let (c, _) = app.create_session("user_other").await;
    app.send(
        app.req(Method::PATCH, "/v1/session")
            .header("authorization", auth(&a))
            .json(&json!({"userData": {"cart": {"items": 2}}})),
    )
    .await
    .expect_status(StatusCode::OK);
    let rotated = app
        .send(
            app.req(Method::POST, "/v1/session/rotate")
                .header("authorization", auth(&b)),
        )
        .await
        .expect_status(StatusCode::OK)
        .json();
    let b2 = rotated["token"].as_str().expect("new token").to_owned();
    app.send(
        app.req(Method::DELETE, "/v1/session")
            .header("authorization", auth(&c)),
    )
    .await
    .expect_status(StatusCode::NO_CONTENT);
    app.send(app.backend(Method::GET, "/v1/users/user_scan/sessions"))
        .await
        .expect_status(StatusCode::OK);
    let (d, _) = app.create_session("user_gone").await;
    app.send(app.backend(Method::DELETE, "/v1/users/user_gone/sessions"))
        .await
        .expect_status(StatusCode::OK);
    assert_eq!(app.auth_status(&b2).await, StatusCode::OK);
    assert_eq!(b_doc["userId"], "user_scan");

    let Backing::Redis(server) = &app.backing else {
        panic!("on Redis")
    };
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<Vec<u8>> = conn.keys("*").await.expect("KEYS");
    assert!(
        keys.len() >= 3,
        "records and indexes are in Redis: {} keys",
        keys.len()
    );

    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for token in [&a, &b, &b2, &c, &d] {
        let secret = token.split_once('.').expect("id.secret").1;
        secrets.push(token.as_bytes().to_vec());
        secrets.push(secret.as_bytes().to_vec());
        secrets.push(URL_SAFE_NO_PAD.decode(secret).expect("base64url secret"));
    }
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for key in &keys {
        let ttl: i64 = conn.pttl(key).await.expect("PTTL");
        assert!(
            ttl > 0,
            "key {:?} has no TTL ({ttl})",
            String::from_utf8_lossy(key)
        );
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("DUMP");
        for s in &secrets {
            assert!(!contains(key, s), "a token secret in a key name");
            assert!(
                !contains(&dump, s),
                "a token secret in the value of {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn s07_redis_ttls_never_exceed_the_absolute_time_remaining() {
    let app = app_on_own_redis(Duration::from_secs(2)).await;
    // The longest idle timeout a creator can ask for is the whole absolute lifetime.
    let (long, long_doc) = app
        .create_session_with(
            &json!({"userId": "user_ttl", "ttlSeconds": 9_007_199_254_740_991_u64}),
        )
        .await;
    assert_eq!(long_doc["expiresAt"], long_doc["absoluteExpiresAt"]);
    let (short, short_doc) = app.create_session("user_ttl").await;
    for t in [&long, &short] {
        assert_eq!(app.auth_status(t).await, StatusCode::OK);
    }
    let Backing::Redis(server) = &app.backing else {
        panic!("on Redis")
    };
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let keys: Vec<String> = conn.keys("*").await.expect("KEYS");
    assert_eq!(keys.len(), 3, "two records and one index: {keys:?}");
    let absolute = |doc: &serde_json::Value| {
        time::OffsetDateTime::parse(
            doc["absoluteExpiresAt"].as_str().expect("time"),
            &time::format_description::well_known::Rfc3339,
        )
        .expect("RFC 3339")
    };
    let remaining_ms = |at: time::OffsetDateTime| {
        i64::try_from((at - time::OffsetDateTime::now_utc()).whole_milliseconds())
            .expect("milliseconds")
    };
    // TTLs are durations computed from sessiond's clock (`expiresAt - now`), so a key can
    // outlive its session by the time the command took to reach Redis: the bound allows one
    // second for that. The user's index lives until its latest session's absolute expiry,
    // which it scores in whole seconds, rounded up. Neither is ever served past its expiry
    // (every read checks expiry at sessiond's `now`).
    let slack_ms = 1000;
    let index_until = {
        let latest = absolute(&long_doc).max(absolute(&short_doc));
        let whole = latest.replace_nanosecond(0).expect("a valid instant");
        if whole == latest {
            whole
        } else {
            whole + time::Duration::SECOND
        }
    };
    for key in &keys {
        // Read the time first: the TTL is read later, so it can only be smaller.
        let (doc, bound) = match [&long_doc, &short_doc]
            .into_iter()
            .find(|d| key.ends_with(&d["sessionId"].as_str().expect("id")[7..]))
        {
            Some(doc) => (doc, remaining_ms(absolute(doc)) + slack_ms),
            None => (&long_doc, remaining_ms(index_until) + slack_ms),
        };
        let ttl: i64 = conn.pttl(key).await.expect("PTTL");
        assert!(
            ttl > 0 && ttl <= bound,
            "key {key}: TTL {ttl} ms, absolute expiry of {} in {bound} ms",
            doc["sessionId"]
        );
    }
    // The record of the default session lives no longer than its idle expiry (24 h).
    let short_key = keys
        .iter()
        .find(|k| k.ends_with(&short_doc["sessionId"].as_str().expect("id")[7..]))
        .expect("the short session's record");
    let ttl: i64 = conn.pttl(short_key).await.expect("PTTL");
    assert!(ttl <= 24 * 3600 * 1000, "TTL {ttl} ms");
    app.shutdown().await;
}

/// A metric's value in the exposition (`None`: not exposed).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// With `cache.max_entries`, repeated validations are answered from memory and `/metrics`
/// says so; a logout still ends the session for the next validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_near_cache_answers_repeated_validations_and_reports_them() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("start redis");
    let app = TestApp::builder()
        .with_backing(Backing::Redis(server))
        .with_config(|c| c.cache.max_entries = 1_000)
        .spawn()
        .await;
    let (token, _) = app.create_session("cached-user").await;
    for _ in 0..50 {
        assert_eq!(app.auth_status(&token).await, StatusCode::OK);
    }
    let text = app.metrics_text().await;
    let hits = metric(&text, "sessiond_cache_hits_total").expect("cache hits exposed");
    let misses = metric(&text, "sessiond_cache_misses_total").expect("cache misses exposed");
    assert!(hits >= 25.0, "{hits} hits, {misses} misses");
    assert_eq!(metric(&text, "sessiond_cache_entries"), Some(1.0));
    assert!(metric(&text, "sessiond_cache_bytes").is_some_and(|b| b > 0.0));
    assert!(metric(&text, "sessiond_cache_invalidations_total").is_some());
    assert!(metric(&text, "sessiond_cache_flushes_total").is_some());
    app.send(app.holder(Method::DELETE, "/v1/session", &token))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    assert_eq!(app.auth_status(&token).await, StatusCode::UNAUTHORIZED);
    app.shutdown().await;
}

/// Without the cache there are no cache metrics at all.
#[tokio::test]
async fn without_the_near_cache_no_cache_metric_is_exposed() {
    let app = TestApp::builder()
        .with_backing(Backing::Embedded)
        .spawn()
        .await;
    assert!(!app.metrics_text().await.contains("sessiond_cache_"));
    app.shutdown().await;
}
