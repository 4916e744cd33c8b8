//! The `sessiond` binary as a user runs it: real processes, real HTTP, real signals.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on any setup error"
)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::Server;

const KEY: &str = "cli-test-key-0123456789";

async fn create(client: &reqwest::Client, base: &str, key: &str, user: &str) -> String {
    let res = client
        .post(format!("{base}/v1/sessions"))
        .header("x-api-key", key)
        .json(&serde_json::json!({"userId": user}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: serde_json::Value = res.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn auth_status(client: &reqwest::Client, base: &str, token: &str) -> u16 {
    client
        .get(format!("{base}/v1/auth"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn sessions_acknowledged_before_kill_9_are_valid_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SESSIOND_API_KEYS", KEY)];
    let client = reqwest::Client::new();
    let mut server = Server::start(dir.path(), &env);
    let mut tokens = Vec::new();
    for i in 0..20 {
        tokens.push(create(&client, &server.base, KEY, &format!("user_{i}")).await);
    }
    // SIGKILL: no shutdown path runs, only what was committed before each 201 survives.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let server = Server::start(dir.path(), &env);
    for token in &tokens {
        assert_eq!(auth_status(&client, &server.base, token).await, 200);
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("SESSIOND_API_KEYS", KEY)]);
    let client = reqwest::Client::new();
    let token = create(&client, &server.base, KEY, "user_1").await;
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sessiond did not exit within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let output = server.output();
    assert!(status.success(), "exit status {status}:\n{output}");
    assert!(output.contains("SIGTERM received"), "{output}");
    assert!(output.contains("sessiond stopped"), "{output}");
    assert!(!output.contains(&token), "a token reached the log");

    let server = Server::start(dir.path(), &[("SESSIOND_API_KEYS", KEY)]);
    assert_eq!(auth_status(&client, &server.base, &token).await, 200);
}

#[tokio::test]
async fn without_api_keys_a_private_key_file_is_generated() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    // A data directory sessiond creates itself is private to its owner.
    let data = parent.path().join("data");
    let mut server = Server::start(&data, &[]);
    let dir_mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700, "the data directory is owner-only");
    let path = data.join("api-key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the generated key must be readable by its owner only"
    );
    let key = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    let client = reqwest::Client::new();
    let token = create(&client, &server.base, &key, "user_1").await;
    assert_eq!(auth_status(&client, &server.base, &token).await, 200);
    let wrong = client
        .post(format!("{}/v1/sessions", server.base))
        .header("x-api-key", "some-other-key-0123456789")
        .json(&serde_json::json!({"userId": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let output = server.output();
    assert!(
        output.contains("api-key"),
        "start-up must say where the key is:\n{output}"
    );
    assert!(
        !output.contains(&key),
        "the key itself must never be logged"
    );
}

#[tokio::test]
async fn serves_from_redis_when_sessiond_redis_url_is_set() {
    let redis = tokio::task::spawn_blocking(sessiond_testkit::redis::RedisServer::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let mut server = Server::start(
        dir.path(),
        &[("SESSIOND_API_KEYS", KEY), ("SESSIOND_REDIS_URL", &url)],
    );
    let client = reqwest::Client::new();
    let token = create(&client, &server.base, KEY, "user_redis").await;
    assert_eq!(auth_status(&client, &server.base, &token).await, 200);
    let keys = redis.cli(&["--scan", "--pattern", "sd:*"]);
    assert!(keys.contains("sd:s:{"), "the session is in Redis: {keys}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let output = server.output();
    assert!(output.contains("store=\"standalone\""), "{output}");
    assert!(!output.contains(&token));
}

/// Runs `sessiond bench` with `args` against `server` and returns the JSON it printed.
fn bench(server: &Server, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["bench", "--json", "--url", &server.base, "--api-key", KEY])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bench prints one JSON object")
}

#[test]
fn bench_measures_a_running_sessiond_and_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("SESSIOND_API_KEYS", KEY)]);

    // Closed loop, a mix of every operation, two seconds.
    let r = bench(
        &server,
        &[
            "-d",
            "2",
            "-c",
            "4",
            "--sessions",
            "40",
            "--mix",
            "validate=8,create=1,patch=1",
        ],
    );
    assert_eq!(r["mode"], "closed");
    let requests = r["requests"].as_u64().unwrap();
    assert!(requests > 100, "a 2 s run makes requests: {r}");
    assert_eq!(
        r["ok"].as_u64().unwrap(),
        requests,
        "no errors against a healthy sessiond: {r}"
    );
    assert!(r["errors"].as_object().unwrap().is_empty());
    let duration = r["duration_s"].as_f64().unwrap();
    assert!(
        (1.9..4.0).contains(&duration),
        "stops by itself after about 2 s: {duration}"
    );
    let l = &r["latency_ms"];
    let (p50, p99, max) = (
        l["p50"].as_f64().unwrap(),
        l["p99"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max,
        "ordered percentiles: {l}"
    );
    for op in ["validate", "create", "patch"] {
        assert!(
            r["operations"][op]["requests"].as_u64().unwrap() > 0,
            "{op} ran: {r}"
        );
    }

    // Open loop at a fixed rate sends what it was asked to, no more.
    let r = bench(
        &server,
        &["-d", "2", "-c", "4", "--sessions", "10", "--rate", "200"],
    );
    assert_eq!(r["mode"], "open");
    let requests = r["requests"].as_u64().unwrap();
    assert!(
        (360..=400).contains(&requests),
        "200 req/s for 2 s: {requests}"
    );

    // A count bound stops the run before its duration.
    let r = bench(
        &server,
        &["-d", "30", "-c", "2", "--sessions", "5", "-n", "50"],
    );
    assert_eq!(r["requests"].as_u64().unwrap(), 50);

    // A wrong key is a clear error, not a run full of 401s.
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args([
            "bench",
            "--url",
            &server.base,
            "--api-key",
            "wrong-key-0123456789",
            "-d",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-key"));
}

/// Kubernetes sets these in every pod of a namespace with a Service named `sessiond`, and
/// wrapper scripts set their own: sessiond starts, serves, and names them in one warning.
#[tokio::test]
async fn starts_where_kubernetes_sets_its_own_sessiond_variables() {
    let dir = tempfile::tempdir().unwrap();
    let k8s = [
        ("SESSIOND_SERVICE_HOST", "10.96.0.12"),
        ("SESSIOND_SERVICE_PORT", "7480"),
        ("SESSIOND_SERVICE_PORT_HTTP", "7480"),
        ("SESSIOND_PORT", "tcp://10.96.0.12:7480"),
        ("SESSIOND_PORT_7480_TCP", "tcp://10.96.0.12:7480"),
        ("SESSIOND_PORT_7480_TCP_PROTO", "tcp"),
        ("SESSIOND_PORT_7480_TCP_PORT", "7480"),
        ("SESSIOND_PORT_7480_TCP_ADDR", "10.96.0.12"),
        ("SESSIOND_BIN", "/usr/local/bin/sessiond"),
        ("SESSIOND_API_KEYS", KEY),
    ];
    let mut server = Server::start(dir.path(), &k8s);
    let client = reqwest::Client::new();
    let token = create(&client, &server.base, KEY, "k8s_user").await;
    assert_eq!(auth_status(&client, &server.base, &token).await, 200);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let out = server.output();
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("ignoring SESSIOND_* environment variables"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning:\n{out}");
    for (name, _) in &k8s[..9] {
        assert!(warnings[0].contains(name), "{name} not named:\n{out}");
    }
    assert!(
        !warnings[0].contains("SESSIOND_API_KEYS") && !warnings[0].contains(KEY),
        "a known variable is not ignored, and no value is printed:\n{out}"
    );
}

#[test]
fn a_bad_setting_stops_start_up_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (name, value, expect) in [
        ("SESSIOND_SESSION__IDLE_TIMEOUT", "soon", "idle_timeout"),
        ("SESSIOND_LISTEN", "not-an-address", "listen"),
        ("SESSIOND_API_KEYS", "short", "api_keys"),
        ("SESSIOND_LIMITS__MAX_BODY_BYTES", "-5", "max_body_bytes"),
        ("SESSIOND_REDIS_URL", "memcached://localhost", "redis_url"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .arg("serve")
            .env_clear()
            .env("SESSIOND_DATA_DIR", dir.path())
            .env(name, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}={value} must stop start-up");
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(stderr.contains(expect), "{name}={value}: {stderr}");
    }
}

#[test]
fn help_and_version() {
    let help = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("serve"), "{text}");
    let version = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    let bench_help = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["bench", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&bench_help.stdout);
    for flag in [
        "--url",
        "--api-key",
        "--mix",
        "--sessions",
        "--connections",
        "--duration",
        "--requests",
        "--rate",
        "--timeout",
        "--json",
    ] {
        assert!(text.contains(flag), "{flag} missing from bench --help");
    }
    let serve_help = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&serve_help.stdout);
    for flag in ["--config", "--listen", "--data-dir", "--log-format"] {
        assert!(text.contains(flag), "{flag} missing from serve --help");
    }
}

/// `sessiond revoke` with `args`, on the embedded store in `data_dir`: its exit status and
/// output.
fn revoke(data_dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .arg("revoke")
        .args(args)
        .env_clear()
        .env("SESSIOND_DATA_DIR", data_dir)
        .env("SESSIOND_LOG__FORMAT", "json")
        .output()
        .expect("run sessiond revoke");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The fields of the one JSON log line of `event` in `output`.
fn one_event(output: &str, event: &str) -> serde_json::Value {
    let lines: Vec<serde_json::Value> = output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["event"] == event)
        .collect();
    assert_eq!(lines.len(), 1, "one {event} line in:\n{output}");
    lines[0]["fields"].clone()
}

#[tokio::test]
async fn s12_revoke_ends_one_users_or_everyones_sessions_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SESSIOND_API_KEYS", KEY)];
    let client = reqwest::Client::new();
    let mut server = Server::start(dir.path(), &env);
    let alice = create(&client, &server.base, KEY, "alice").await;
    let bob = create(&client, &server.base, KEY, "bob").await;
    let carol = create(&client, &server.base, KEY, "carol").await;

    // While a server holds the embedded store, the command says to use the API.
    let (ok, text) = revoke(dir.path(), &["--all", "--yes"]);
    assert!(!ok, "revoke must fail while the store is in use:\n{text}");
    assert!(text.contains("DELETE /v1/sessions"), "{text}");
    // --all needs --yes.
    let (ok, _) = revoke(dir.path(), &["--all"]);
    assert!(!ok, "--all without --yes must be refused");

    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let (ok, text) = revoke(dir.path(), &["--user", "alice"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("revoked 1 live sessions of user alice"),
        "{text}"
    );
    // The change is an event like any other: one line, by the CLI.
    let event = one_event(&text, "session.revoked_all");
    assert_eq!(event["user_id"], "alice", "{text}");
    assert_eq!(event["revoked"], 1, "{text}");
    assert_eq!(event["actor"], "cli", "{text}");
    let server = Server::start(dir.path(), &env);
    assert_eq!(auth_status(&client, &server.base, &alice).await, 401);
    assert_eq!(auth_status(&client, &server.base, &bob).await, 200);
    drop(server);

    let (ok, text) = revoke(dir.path(), &["--all", "--yes"]);
    assert!(ok, "{text}");
    assert!(text.contains("removed 2 sessions of every user"), "{text}");
    let event = one_event(&text, "session.revoked_everyone");
    assert_eq!(event["revoked"], 2, "{text}");
    assert_eq!(event["actor"], "cli", "{text}");
    let server = Server::start(dir.path(), &env);
    assert_eq!(auth_status(&client, &server.base, &bob).await, 401);
    assert_eq!(auth_status(&client, &server.base, &carol).await, 401);
}
