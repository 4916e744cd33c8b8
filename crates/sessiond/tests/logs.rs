//! What sessiond writes about sessions, read the way an operator reads it: the process's own
//! output at trace level, and `/metrics`.
//!
//! - T3 / S17: every token the API issued, its secret half, and the API key appear nowhere in
//!   the logs or the metrics, after a run through every endpoint, the refused-token paths and
//!   the bad-input paths.
//! - S18: lifecycle events (create, rotate, logout, revoke, revoke-all, invalid tokens) are
//!   logged as structured JSON lines with UTC timestamps, and a client-supplied `\r\n` cannot
//!   forge a line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on any setup error"
)]

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const KEY: &str = "logs-test-key-0123456789abcdef";

/// `sessiond serve` at trace level with JSON logs into `log`, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &Path, log: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = File::create(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .arg("serve")
            .env_clear()
            .env("SESSIOND_DATA_DIR", data_dir)
            .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"))
            .env("SESSIOND_API_KEYS", KEY)
            .env("SESSIOND_LOG__FORMAT", "json")
            .env("SESSIOND_LOG__LEVEL", "trace")
            .env("SESSIOND_GUARD__INVALID_TOKEN_LIMIT", "3")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start sessiond");
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let addr = server.base.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !healthz(&addr) {
            std::thread::sleep(Duration::from_millis(25));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /healthz` at `addr` answers 200 (a probe that needs no runtime).
fn healthz(addr: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// Collects every token and secret the server hands out, and every body it answers.
struct Flow {
    client: reqwest::Client,
    base: String,
    secrets: Vec<String>,
    /// Every answer's body and `Set-Cookie`, but those of creates and rotations (which
    /// carry the token by design).
    bodies: String,
}

impl Flow {
    async fn send(&mut self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if doc["token"].is_null() {
            self.bodies.push_str(&text);
        }
        if let Some(token) = doc["token"].as_str() {
            self.secrets.push(token.to_owned());
            let secret = token.split_once('.').unwrap().1.to_owned();
            self.secrets.push(secret);
        }
        (status, doc)
    }

    fn backend(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", KEY)
    }

    fn holder(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    async fn create(&mut self, body: Value) -> (String, String) {
        let (status, doc) = self
            .send(
                self.backend(reqwest::Method::POST, "/v1/sessions")
                    .json(&body),
            )
            .await;
        assert_eq!(status, 201, "{doc}");
        (
            doc["token"].as_str().unwrap().to_owned(),
            doc["session"]["sessionId"].as_str().unwrap().to_owned(),
        )
    }
}

#[tokio::test]
async fn t03_s17_s18_no_token_in_logs_or_metrics_and_lifecycle_logged_as_json_lines() {
    use reqwest::Method;

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sessiond.log");
    let server = Server::start(&dir.path().join("data"), &log);
    let mut f = Flow {
        client: reqwest::Client::new(),
        base: server.base.clone(),
        secrets: vec![KEY.to_owned()],
        bodies: String::new(),
    };

    // Create, with a user agent that tries to forge a log line.
    let forged = "Mozilla/5.0\r\n{\"level\":\"INFO\",\"fields\":{\"message\":\"forged\"}}";
    let (a, a_id) = f
        .create(json!({
            "userId": "user_logs_a",
            "userData": {"cart": {"n": 1}},
            "metadata": {"userAgent": forged, "ipAddress": "192.0.2.1"},
            "setCookie": true,
        }))
        .await;
    let (b, _) = f.create(json!({"userId": "user_logs_a"})).await;
    let (c, c_id) = f.create(json!({"userId": "user_logs_c"})).await;

    // Every token-holder endpoint, by bearer and by cookie; a user-agent change.
    assert_eq!(f.send(f.holder(Method::GET, "/v1/auth", &a)).await.0, 200);
    let by_cookie = f
        .client
        .get(format!("{}/v1/session", f.base))
        .header("cookie", format!("__Host-sid={b}"));
    assert_eq!(f.send(by_cookie).await.0, 200);
    let patch = f
        .holder(Method::PATCH, "/v1/session", &a)
        .json(&json!({"userData": {"cart": {"n": 2}}}));
    assert_eq!(f.send(patch).await.0, 200);
    let (status, rotated) = f
        .send(f.holder(Method::POST, "/v1/session/rotate", &a))
        .await;
    assert_eq!(status, 200);
    let a2 = rotated["token"].as_str().unwrap().to_owned();
    assert_eq!(f.send(f.holder(Method::GET, "/v1/auth", &a)).await.0, 401);
    assert_eq!(
        f.send(f.holder(Method::DELETE, "/v1/session", &a2)).await.0,
        204
    );

    // The backend's endpoints.
    let path = format!("/v1/sessions/{c_id}");
    assert_eq!(f.send(f.backend(Method::GET, &path)).await.0, 200);
    let patch = f
        .backend(Method::PATCH, &path)
        .json(&json!({"userData": {"x": 1}}));
    assert_eq!(f.send(patch).await.0, 200);
    assert_eq!(
        f.send(f.backend(Method::GET, "/v1/users/user_logs_a/sessions"))
            .await
            .0,
        200
    );
    assert_eq!(f.send(f.backend(Method::DELETE, &path)).await.0, 204);
    assert_eq!(
        f.send(f.backend(Method::DELETE, "/v1/users/user_logs_a/sessions"))
            .await
            .0,
        200
    );
    assert_eq!(
        f.send(f.backend(Method::GET, &format!("/v1/sessions/{a_id}")))
            .await
            .0,
        404
    );

    // Refused credentials: dead tokens, guessed and malformed ones, a token in the URL, a
    // wrong API key (a prefix of the right one), a key sent as a bearer token.
    for dead in [&a, &a2, &b, &c] {
        assert_eq!(f.send(f.holder(Method::GET, "/v1/auth", dead)).await.0, 401);
    }
    let guessed = format!("sess_AAAAAAAAAAAAAAAA.{}", "B".repeat(43));
    for _ in 0..5 {
        assert_eq!(
            f.send(f.holder(Method::GET, "/v1/auth", &guessed)).await.0,
            401
        );
    }
    let malformed = format!("{a}x");
    assert_eq!(
        f.send(f.holder(Method::GET, "/v1/auth", &malformed))
            .await
            .0,
        401
    );
    let in_url = f.client.get(format!("{}/v1/auth?token={b}", f.base));
    assert_eq!(f.send(in_url).await.0, 401);
    let prefix = f
        .client
        .post(format!("{}/v1/sessions", f.base))
        .header("x-api-key", &KEY[..KEY.len() - 1])
        .json(&json!({"userId": "u"}));
    assert_eq!(f.send(prefix).await.0, 401);
    let key_as_bearer = f.holder(Method::GET, "/v1/auth", KEY);
    assert_eq!(f.send(key_as_bearer).await.0, 401);
    // Bad input that echoes nothing back.
    let bad = f
        .backend(Method::POST, "/v1/sessions")
        .header("content-type", "application/json")
        .body(format!(r#"{{"userId":"{b}","userId":"x"}}"#));
    assert_eq!(f.send(bad).await.0, 400);

    let metrics = f
        .client
        .get(format!("{}/metrics", f.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    drop(server);
    let logs = std::fs::read_to_string(&log).unwrap();

    // T3 / S17: no token, secret or key anywhere but where the API hands it out.
    for secret in &f.secrets {
        assert!(!logs.contains(secret.as_str()), "a secret in the logs");
    }
    for secret in &f.secrets {
        assert!(!metrics.contains(secret.as_str()), "a secret in /metrics");
    }
    // Nor in an error body or a header the API sent (tokens are only in create and rotate).
    assert!(!f.bodies.contains(&guessed), "a refused token echoed back");
    assert!(!f.bodies.contains(KEY), "the API key echoed back");

    // S18: one JSON object per line, UTC timestamps, the lifecycle events present, and the
    // forged line nowhere.
    let mut events = Vec::new();
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        let ts = entry["timestamp"].as_str().expect("a timestamp");
        assert!(ts.ends_with('Z'), "timestamps are UTC: {ts}");
        assert_ne!(entry["fields"]["message"], "forged", "a forged log line");
        if let Some(event) = entry["fields"]["event"].as_str() {
            events.push(event.to_owned());
        }
    }
    for expected in [
        "session.created",
        "session.rotated",
        "session.logged_out",
        "session.revoked",
        "session.revoked_all",
        "session.invalid_token",
        "session.invalid_token_source",
        "session.binding_mismatch",
    ] {
        assert!(
            events.iter().any(|e| e == expected),
            "no {expected} event in the log; events: {events:?}"
        );
    }
}
