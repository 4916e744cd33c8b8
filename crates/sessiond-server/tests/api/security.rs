//! Security requirements of docs/requirements.md (a) that need a server set up for them: the session
//! cookie (S15), per-client counting of invalid tokens (S19) and what a malformed token costs
//! the store (D7, counted by Redis itself).

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sessiond_testkit::redis::RedisServer;

use crate::helpers::{Backing, TestApp, captured_logs};

fn set_cookies(r: &crate::helpers::Resp) -> Vec<String> {
    r.headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ASCII cookie").to_owned())
        .collect()
}

#[tokio::test]
async fn s15_the_session_cookie_is_set_on_create_and_rotate_and_cleared_on_logout() {
    let app = TestApp::spawn().await;

    // Without the flag the backend gets the token in the body only.
    let r = app.create(&json!({"userId": "user_s15"})).await;
    assert!(set_cookies(&r).is_empty(), "no cookie unless asked");

    let r = app
        .create(&json!({"userId": "user_s15", "setCookie": true}))
        .await
        .expect_status(StatusCode::CREATED);
    let token = r.json()["token"].as_str().expect("token").to_owned();
    let cookies = set_cookies(&r);
    assert_eq!(
        cookies,
        vec![format!(
            "__Host-sid={token}; Path=/; Secure; HttpOnly; SameSite=Lax"
        )],
        "a __Host- cookie, Secure, HttpOnly, SameSite, Path=/, no Domain, not persistent"
    );
    assert!(cookies[0].len() <= 4096, "ASVS 5 3.3.5");

    // The browser sends it back.
    let cookie = format!("__Host-sid={token}");
    let r = app
        .send(app.req(Method::GET, "/v1/auth").header(COOKIE, &cookie))
        .await
        .expect_status(StatusCode::OK);
    assert!(set_cookies(&r).is_empty(), "validation sets no cookie");

    // Rotation replaces it under the same name; the old one is dead.
    let r = app
        .send(
            app.req(Method::POST, "/v1/session/rotate")
                .header(COOKIE, &cookie),
        )
        .await
        .expect_status(StatusCode::OK);
    let new = r.json()["token"].as_str().expect("token").to_owned();
    assert_eq!(
        set_cookies(&r),
        vec![format!(
            "__Host-sid={new}; Path=/; Secure; HttpOnly; SameSite=Lax"
        )]
    );
    assert_eq!(app.auth_status(&token).await, StatusCode::UNAUTHORIZED);

    // Logout clears it.
    let r = app
        .send(
            app.req(Method::DELETE, "/v1/session")
                .header(COOKIE, format!("__Host-sid={new}")),
        )
        .await
        .expect_status(StatusCode::NO_CONTENT);
    assert_eq!(
        set_cookies(&r),
        vec!["__Host-sid=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0".to_owned()]
    );
    assert_eq!(app.auth_status(&new).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn s15_a_persistent_cookie_lasts_until_the_absolute_expiry() {
    let app = TestApp::builder()
        .with_config(|c| c.cookie.persistent = true)
        .spawn()
        .await;
    let r = app
        .create(&json!({"userId": "user_s15p", "setCookie": true}))
        .await
        .expect_status(StatusCode::CREATED);
    let cookie = set_cookies(&r).pop().expect("a cookie");
    let max_age: u64 = cookie
        .rsplit_once("Max-Age=")
        .and_then(|(_, v)| v.parse().ok())
        .expect("a Max-Age");
    let week = 7 * 24 * 3600;
    assert!(
        (week - 5..=week).contains(&max_age),
        "Max-Age {max_age} is the absolute lifetime"
    );
}

fn bogus_token() -> String {
    // Well-formed, never issued.
    format!("sess_AAAAAAAAAAAAAAAA.{}", "A".repeat(43))
}

#[tokio::test]
async fn s19_invalid_tokens_are_counted_per_client_and_over_the_limit_refused() {
    let app = TestApp::builder()
        .with_config(|c| {
            c.guard.invalid_token_limit = 3;
            c.guard.reject_over_limit = true;
            c.guard.client_ip_header = Some("x-real-ip".into());
        })
        .spawn()
        .await;
    let (token, _) = app.create_session("user_s19").await;
    let attacker = "203.0.113.9";
    let neighbour = "203.0.113.10";

    for _ in 0..4 {
        app.send(
            app.holder(Method::GET, "/v1/auth", &bogus_token())
                .header("x-real-ip", attacker),
        )
        .await
        .expect_status(StatusCode::UNAUTHORIZED);
    }
    // Over the limit: the client's guesses are refused with 429 (401 from the gateway's
    // check, which answers nothing else)...
    let r = app
        .send(
            app.holder(Method::GET, "/v1/session", &bogus_token())
                .header("x-real-ip", attacker),
        )
        .await
        .expect_status(StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry));
    app.send(
        app.holder(Method::GET, "/v1/auth", &bogus_token())
            .header("x-real-ip", attacker),
    )
    .await
    .expect_status(StatusCode::UNAUTHORIZED);
    // ...but a valid token from the same address is served (finding 2 of the hardening
    // review: behind a shared address, one guesser must not log everyone out).
    app.send(
        app.holder(Method::GET, "/v1/session", &token)
            .header("x-real-ip", attacker),
    )
    .await
    .expect_status(StatusCode::OK);
    app.send(
        app.holder(Method::GET, "/v1/auth", &token)
            .header("x-real-ip", attacker),
    )
    .await
    .expect_status(StatusCode::OK);
    // Other clients are not affected.
    app.send(
        app.holder(Method::GET, "/v1/session", &bogus_token())
            .header("x-real-ip", neighbour),
    )
    .await
    .expect_status(StatusCode::UNAUTHORIZED);

    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"event="invalid_token_source_over_limit"} 1"#),
        "one report for the client that crossed the limit:\n{metrics}"
    );
}

#[tokio::test]
async fn s19_by_default_invalid_tokens_are_counted_but_not_refused() {
    let app = TestApp::builder()
        .with_config(|c| c.guard.invalid_token_limit = 2)
        .spawn()
        .await;
    let (token, _) = app.create_session("user_s19d").await;
    for _ in 0..5 {
        app.send(app.holder(Method::GET, "/v1/auth", &bogus_token()))
            .await
            .expect_status(StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.auth_status(&token).await, StatusCode::OK);
    let metrics = app.metrics_text().await;
    assert!(metrics.contains(r#"event="invalid_token_source_over_limit"} 1"#));
    assert!(metrics.contains(r#"event="invalid_token"} 5"#), "{metrics}");
}

/// A non-UTF-8 byte in another cookie of the `Cookie` header hides nothing from the guard:
/// the guesses in `sid` are counted and, over the limit, refused (one byte-level cookie parser
/// serves the token extraction and the guard).
#[tokio::test]
async fn s19_a_non_ascii_byte_in_another_cookie_hides_no_guess_from_the_guard() {
    let app = TestApp::builder()
        .with_config(|c| {
            c.guard.invalid_token_limit = 5;
            c.guard.reject_over_limit = true;
        })
        .spawn()
        .await;
    let guess = || {
        let mut bytes = b"lang=\xe9; __Host-sid=".to_vec();
        bytes.extend_from_slice(bogus_token().as_bytes());
        reqwest::header::HeaderValue::from_bytes(&bytes).expect("obs-text is a valid value")
    };
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = app
            .send(
                app.req(Method::GET, "/v1/session")
                    .header("cookie", guess()),
            )
            .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 401, 429, 429],
        "the sixth guess crosses the limit of 5; later ones are refused"
    );
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains(r#"event="invalid_token_source_over_limit"} 1"#),
        "{metrics}"
    );
}

/// Calls Redis has served since its stats were reset, background `ROLE` and the test's own
/// `INFO`/`CONFIG` left out.
fn redis_calls(server: &RedisServer) -> u64 {
    server
        .cli(&["info", "commandstats"])
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter(|l| {
            // The scrape and health checks, and connection set-up (the near cache's channel
            // may open while the test runs): none is a store command of a request.
            !["info", "config", "role", "ping", "hello", "client"]
                .iter()
                .any(|c| l.starts_with(c))
        })
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[tokio::test]
async fn d07_s24_a_malformed_token_costs_no_store_command() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("start redis");
    let app = TestApp::builder()
        .with_backing(Backing::Redis(server))
        .spawn()
        .await;
    let Backing::Redis(server) = &app.backing else {
        panic!("on Redis");
    };
    server.cli(&["config", "resetstat"]);
    let malformed = [
        "x".to_owned(),
        "sess_AAAAAAAAAAAAAAAA".to_owned(),
        format!("sess_AAAAAAAAAAAAAAAA.{}", "A".repeat(42)),
        format!("sess_AAAAAAAAAAAAAA*A.{}", "A".repeat(43)),
        format!("sess_AAAAAAAAAAAAAAAA.{}", "A".repeat(4000)),
        format!("sess_AAAAAAAAAAAAAAAA:{}", "A".repeat(43)),
    ];
    for token in &malformed {
        for path in ["/v1/auth", "/v1/session"] {
            app.send(app.holder(Method::GET, path, token))
                .await
                .expect_status(StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(redis_calls(server), 0, "malformed tokens reached Redis");

    // The counter works: a well-formed unknown token costs exactly one read (D14).
    app.send(app.holder(Method::GET, "/v1/auth", &bogus_token()))
        .await
        .expect_status(StatusCode::UNAUTHORIZED);
    assert_eq!(redis_calls(server), 1);
}

#[tokio::test]
async fn s12_an_operator_ends_every_session_of_every_user() {
    let app = TestApp::spawn().await;
    let mut tokens = Vec::new();
    for user in ["user_s12a", "user_s12b", "user_s12c"] {
        tokens.push(app.create_session(user).await.0);
    }
    // Not without the confirmation, and not without an API key.
    app.send(app.backend(Method::DELETE, "/v1/sessions"))
        .await
        .expect_status(StatusCode::BAD_REQUEST);
    app.send(app.req(Method::DELETE, "/v1/sessions?confirm=all-sessions"))
        .await
        .expect_status(StatusCode::UNAUTHORIZED);
    for t in &tokens {
        assert_eq!(app.auth_status(t).await, StatusCode::OK);
    }

    let r = app
        .send(app.backend(Method::DELETE, "/v1/sessions?confirm=all-sessions"))
        .await
        .expect_status(StatusCode::OK);
    assert!(r.json()["revoked"].as_u64().expect("a count") >= 3);
    for t in &tokens {
        assert_eq!(app.auth_status(t).await, StatusCode::UNAUTHORIZED);
    }
    // Logins work again at once.
    let (fresh, _) = app.create_session("user_s12a").await;
    assert_eq!(app.auth_status(&fresh).await, StatusCode::OK);
}

/// An HTTPS request to `addr`, trusting only `ca_pem`: the status, headers and body.
async fn https(
    addr: std::net::SocketAddr,
    ca_pem: &[u8],
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with sessiond");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
    tokio::spawn(conn);
    let res = sender.send_request(req).await.expect("HTTPS request");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes().to_vec();
    (
        StatusCode::from_u16(parts.status.as_u16()).expect("status"),
        parts.headers,
        body,
    )
}

#[tokio::test]
async fn tls_sessiond_serves_https_from_the_configured_certificate() {
    use sessiond_server::config::{ApiKeyList, Config, TlsConfig};
    use sessiond_testkit::certs::TestCerts;

    let certs = tokio::task::spawn_blocking(TestCerts::generate)
        .await
        .expect("certificates");
    let dir = tempfile::tempdir().expect("data directory");
    let key = "tls-test-key-0123456789abcdef";
    let config = Config {
        data_dir: dir.path().join("data"),
        api_keys: Some(ApiKeyList::Joined(key.into())),
        tls: TlsConfig {
            cert_file: Some(certs.cert.clone()),
            key_file: Some(certs.key.clone()),
        },
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sessiond_server::run(config, listener, async move {
        let _ = stopped.await;
    }));

    let ca = certs.ca_pem();
    let create = http::Request::post("/v1/sessions")
        .header("host", "localhost")
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(http_body_util::Full::from(r#"{"userId":"user_tls"}"#))
        .expect("request");
    let (status, _, body) = https(addr, &ca, create).await;
    assert_eq!(status, StatusCode::CREATED);
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let token = doc["token"].as_str().expect("token");
    let auth = http::Request::get("/v1/auth")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::default())
        .expect("request");
    let (status, headers, _) = https(addr, &ca, auth).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get("x-user-id").and_then(|v| v.to_str().ok()),
        Some("user_tls")
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");

    let _ = stop.send(());
    server.await.expect("server task").expect("clean stop");
}

#[tokio::test]
async fn s20_a_user_agent_change_is_counted_and_refused_when_enforced() {
    use sessiond_server::binding::BindingMode;

    for enforce in [false, true] {
        let app = TestApp::builder()
            .with_config(|c| {
                if enforce {
                    c.binding.user_agent = BindingMode::Enforce;
                }
            })
            .spawn()
            .await;
        let (token, _) = app
            .create_session_with(&json!({
                "userId": "user_s20",
                "metadata": {"userAgent": "Mozilla/5.0 (X11)", "ipAddress": "192.0.2.1"},
            }))
            .await;
        let with_ua = |ua: &str| {
            app.holder(Method::GET, "/v1/auth", &token)
                .header("user-agent", ua)
        };
        app.send(with_ua("Mozilla/5.0 (X11)"))
            .await
            .expect_status(StatusCode::OK);
        app.send(with_ua("curl/8.5"))
            .await
            .expect_status(if enforce {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            });
        // The login's client still gets in: enforcement refuses requests, it does not end the
        // session.
        app.send(with_ua("Mozilla/5.0 (X11)"))
            .await
            .expect_status(StatusCode::OK);
        let metrics = app.metrics_text().await;
        assert!(
            metrics.contains(r#"event="binding_mismatch_user_agent"} 1"#),
            "one mismatch counted:\n{metrics}"
        );
        assert!(
            metrics.contains(r#"event="binding_mismatch_ip"} 0"#),
            "addresses are not compared by default:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn t03_s17_the_suite_logs_at_trace_level_and_the_scan_sees_them() {
    // Every TestApp checks the captured logs for its tokens when dropped (helpers.rs); this
    // test shows the capture is real: the server's lifecycle lines are in it.
    let app = TestApp::spawn().await;
    let (token, session) = app.create_session("user_t03").await;
    let id = session["sessionId"].as_str().expect("id").to_owned();
    app.send(app.holder(Method::DELETE, "/v1/session", &token))
        .await
        .expect_status(StatusCode::NO_CONTENT);
    let logs = captured_logs();
    for line in ["session.created", "session.logged_out"] {
        assert!(
            logs.lines().any(|l| l.contains(line) && l.contains(&id)),
            "no {line} line for {id} in the captured logs"
        );
    }
    let secret = token.split_once('.').expect("id.secret").1;
    assert!(!logs.contains(secret));
}
