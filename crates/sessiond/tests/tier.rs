//! The durable tier with the `sessiond` binary as a user runs it: the embedded store or Redis,
//! a real PostgreSQL, `kill -9` and a PostgreSQL restart under load, the audit trail read back
//! through the API and `sessiond audit`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on any setup error"
)]

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sessiond_testkit::postgres::PostgresServer;
use sessiond_testkit::redis::RedisServer;
use support::Server;

const KEY: &str = "tier-test-key-0123456789abcdef";

fn env(pg: &PostgresServer) -> Vec<(&'static str, String)> {
    vec![
        ("SESSIOND_API_KEYS", KEY.to_owned()),
        ("SESSIOND_TIER__POSTGRES_URL", pg.url()),
        ("SESSIOND_TIER__SHIP_INTERVAL", "20ms".to_owned()),
        ("SESSIOND_TIER__SHIP_BATCH", "50".to_owned()),
    ]
}

fn start_with(data_dir: &Path, pg: &PostgresServer, extra: &[(&str, &str)]) -> Server {
    let env = env(pg);
    let mut pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    pairs.extend_from_slice(extra);
    Server::start(data_dir, &pairs)
}

/// The server's `/readyz` body.
async fn readyz(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits until the server's outbox is empty and its shipper reaches the tier.
async fn drained(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = readyz(client, base).await;
        if ready["tier"]["status"] == "up" && ready["tier"]["outboxEntries"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain within 30 s: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (10 s at most) until the `tier` part of the server's `/readyz` satisfies `ready`.
async fn tier_until(
    client: &reqwest::Client,
    base: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = readyz(client, base).await;
        if ready(&body["tier"]) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}, after 10 s: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the server's read-through trusts the tier again: after Redis loses its data,
/// for up to a lease renewal and the grace of a new epoch (`docs/design.md` §10), misses
/// answer `503` while every process gets the chance to mark its journal again.
async fn read_through_trusted(client: &reqwest::Client, base: &str) {
    tier_until(client, base, "read-through still refused", |t| {
        t["readThrough"] == "trusted"
    })
    .await;
}

/// What a checker attempted: the event it expects, for which session (or user), and whether
/// the server acknowledged it.
#[derive(Debug, Clone)]
struct Attempt {
    kind: &'static str,
    subject: String,
    acknowledged: bool,
}

/// One worker: sessions of its own users, each taken through create, a patch, a rotation and a
/// logout or a revocation, with a revoke-all now and then, until a request fails (the server
/// was killed) or `until`.
async fn work(base: String, worker: usize, until: Instant, log: Arc<Mutex<Vec<Attempt>>>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let record = |kind, subject: &str, acknowledged| {
        log.lock().unwrap().push(Attempt {
            kind,
            subject: subject.to_owned(),
            acknowledged,
        });
    };
    let mut n = 0u32;
    while Instant::now() < until {
        n += 1;
        let user = format!("worker{worker}-user{}", n % 4);
        let created = client
            .post(format!("{base}/v1/sessions"))
            .header("x-api-key", KEY)
            .json(&json!({"userId": user}))
            .send()
            .await;
        // A create whose answer never came may still have happened: it has no id to expect
        // an event for, and the final comparison allows unexpected creates of these users.
        let Ok(created) = created else { return };
        if created.status() != 201 {
            return;
        }
        let body: Value = created.json().await.unwrap();
        let id = body["session"]["sessionId"].as_str().unwrap().to_owned();
        let mut token = body["token"].as_str().unwrap().to_owned();
        record("created", &id, true);

        let patched = client
            .patch(format!("{base}/v1/sessions/{id}"))
            .header("x-api-key", KEY)
            .json(&json!({"userData": {"n": n}}))
            .send()
            .await;
        let ok = matches!(&patched, Ok(r) if r.status() == 200);
        record("updated", &id, ok);
        if !ok {
            return;
        }

        let rotated = client
            .post(format!("{base}/v1/session/rotate"))
            .bearer_auth(&token)
            .send()
            .await;
        match rotated {
            Ok(r) if r.status() == 200 => {
                let body: Value = r.json().await.unwrap();
                token = body["token"].as_str().unwrap().to_owned();
                record("rotated", &id, true);
            }
            _ => {
                record("rotated", &id, false);
                return;
            }
        }

        let (kind, ended) = if n.is_multiple_of(2) {
            let r = client
                .delete(format!("{base}/v1/session"))
                .bearer_auth(&token)
                .send()
                .await;
            ("logged_out", matches!(&r, Ok(r) if r.status() == 204))
        } else {
            let r = client
                .delete(format!("{base}/v1/sessions/{id}"))
                .header("x-api-key", KEY)
                .send()
                .await;
            ("revoked", matches!(&r, Ok(r) if r.status() == 204))
        };
        record(kind, &id, ended);
        if !ended {
            return;
        }
        if n.is_multiple_of(5) {
            let r = client
                .delete(format!("{base}/v1/users/{user}/sessions"))
                .header("x-api-key", KEY)
                .send()
                .await;
            let ok = matches!(&r, Ok(r) if r.status() == 200);
            record("revoked_all", &user, ok);
            if !ok {
                return;
            }
        }
    }
}

/// Runs two workers against `base` for `for_at_most`, or until `kill` kills the server.
async fn load(base: &str, for_at_most: Duration, log: &Arc<Mutex<Vec<Attempt>>>) {
    let until = Instant::now() + for_at_most;
    let workers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(work(base.to_owned(), w, until, log.clone())))
        .collect();
    for w in workers {
        w.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_change_is_one_audit_row_through_kill_9_and_a_postgres_restart() {
    exactly_once(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_every_acknowledged_change_is_one_audit_row_through_kill_9_and_a_postgres_restart()
{
    let redis = RedisServer::start();
    exactly_once(&[("SESSIOND_REDIS_URL", &redis.url())]).await;
}

/// The exactly-once checker on the engine `engine` names (the embedded store when empty).
async fn exactly_once(engine: &[(&str, &str)]) {
    let mut pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = Arc::new(Mutex::new(Vec::new()));

    // Three kill -9s, each in the middle of the load.
    for _ in 0..3 {
        let mut server = start_with(&data, &pg, engine);
        let base = server.base.clone();
        let running = {
            let log = log.clone();
            tokio::spawn(async move { load(&base, Duration::from_secs(30), &log).await })
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        running.await.unwrap();
    }

    // PostgreSQL stops under load and comes back: the outbox holds what it could not take.
    let server = start_with(&data, &pg, engine);
    let base = server.base.clone();
    load(&base, Duration::from_millis(400), &log).await;
    pg.stop(true);
    load(&base, Duration::from_millis(600), &log).await;
    let client = reqwest::Client::new();
    let ready = readyz(&client, &base).await;
    assert_eq!(ready["status"], "ready", "the hot store serves: {ready}");
    assert_eq!(ready["tier"]["status"], "down", "{ready}");
    assert!(ready["tier"]["outboxEntries"].as_u64() > Some(0), "{ready}");
    pg.start_again();
    load(&base, Duration::from_millis(400), &log).await;
    drained(&client, &base).await;

    let attempts = log.lock().unwrap().clone();
    let acknowledged = attempts.iter().filter(|a| a.acknowledged).count();
    assert!(
        acknowledged > 100,
        "the load made too few changes to prove anything: {acknowledged}"
    );
    let rows = pg.psql(
        "sessiond",
        "SELECT kind, coalesce(session_id, user_id) FROM sessiond_events \
         ORDER BY at, position, event_id",
    );
    let mut found: HashMap<(String, String), usize> = HashMap::new();
    let mut order: HashMap<String, Vec<String>> = HashMap::new();
    for line in rows.lines() {
        let (kind, subject) = line.split_once('|').unwrap();
        *found
            .entry((kind.to_owned(), subject.to_owned()))
            .or_default() += 1;
        order
            .entry(subject.to_owned())
            .or_default()
            .push(kind.to_owned());
    }
    // Per (kind, subject): every acknowledged attempt has its row, and an unanswered one
    // at most one (a revoke-all of one user is attempted many times).
    let mut expected: HashMap<(String, String), (usize, usize)> = HashMap::new();
    for a in &attempts {
        let (acked, tried) = expected
            .entry((a.kind.to_owned(), a.subject.clone()))
            .or_default();
        *acked += usize::from(a.acknowledged);
        *tried += 1;
    }
    for (key, (acked, tried)) in &expected {
        let rows = found.get(key).copied().unwrap_or(0);
        assert!(
            *acked <= rows && rows <= *tried,
            "{key:?}: {rows} rows for {acked} acknowledged of {tried} attempts"
        );
    }
    // No row for anything the checker did not attempt (but creates whose answer was lost to
    // a kill, which have no id the checker knows).
    for (kind, subject) in found.keys() {
        let attempted = attempts
            .iter()
            .any(|a| a.kind == kind && a.subject == *subject);
        assert!(
            attempted || kind == "created",
            "a row nobody asked for: {kind} {subject}"
        );
    }
    // In order per session: created, updated, rotated, then its end.
    for (subject, kinds) in &order {
        if !subject.starts_with("sess_") {
            continue;
        }
        let rank = |k: &str| match k {
            "created" => 0,
            "updated" => 1,
            "rotated" => 2,
            _ => 3,
        };
        assert!(
            kinds.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
            "events of {subject} out of order: {kinds:?}"
        );
    }
    eprintln!(
        "{} attempts, {acknowledged} acknowledged, {} audit rows",
        attempts.len(),
        rows.lines().count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_reads_back_newest_first_through_the_api_and_the_cli() {
    let pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_with(&data, &pg, &[("SESSIOND_TIER__AUDIT_REFUSALS", "true")]);
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{base}/v1/sessions"))
        .header("x-api-key", KEY)
        .header("user-agent", "login-service/3.1")
        .json(&json!({"userId": "audit:user/1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["session"]["sessionId"].as_str().unwrap().to_owned();
    let token = created["token"].as_str().unwrap().to_owned();
    let patched = client
        .patch(format!("{base}/v1/session"))
        .bearer_auth(&token)
        .json(&json!({"userData": {"cart": ["A-1"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let out = client
        .delete(format!("{base}/v1/session"))
        .bearer_auth(&token)
        .header("user-agent", "Browser/9")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    // A refused token, with tier.audit_refusals: the dead token presented once more.
    let refused = client
        .get(format!("{base}/v1/auth"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    drained(&client, &base).await;
    // Refusals ship on their own queue: wait for the row.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg
        .psql(
            "sessiond",
            "SELECT count(*) FROM sessiond_events WHERE kind = 'invalid_token'",
        )
        .trim()
        != "1"
    {
        assert!(
            Instant::now() < deadline,
            "the refusal never reached the trail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let page = |path: String| {
        let (client, url) = (client.clone(), format!("{base}{path}"));
        async move {
            let r = client
                .get(&url)
                .header("x-api-key", KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{url}");
            r.json::<Value>().await.unwrap()
        }
    };
    let of_session = page(format!("/v1/sessions/{id}/events")).await;
    assert_eq!(of_session["events"][0]["kind"], "invalid_token");
    assert_eq!(of_session["events"][0]["detail"]["reason"], "unknown");
    let all = page("/v1/users/audit%3Auser%2F1/events".into()).await;
    let kinds: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["logged_out", "updated", "created"], "newest first");
    let logout = &all["events"][0];
    assert_eq!(logout["actor"], "holder");
    assert_eq!(logout["sessionId"], id.as_str());
    assert_eq!(logout["userId"], "audit:user/1");
    assert_eq!(logout["clientAddress"], "127.0.0.1");
    assert_eq!(logout["userAgent"], "Browser/9");
    let create = &all["events"][2];
    assert_eq!(create["actor"], "backend");
    assert_eq!(create["keyId"].as_str().map(str::len), Some(8));
    assert!(all.get("nextCursor").is_none(), "one page: {all}");
    assert!(
        !all.to_string().contains(token.split('.').nth(1).unwrap()),
        "no token in the trail"
    );

    // Pages of one, following the cursor.
    let mut kinds = Vec::new();
    let mut cursor = String::new();
    for _ in 0..3 {
        let one = page(format!("/v1/sessions/{id}/events?limit=1{cursor}")).await;
        kinds.push(one["events"][0]["kind"].as_str().unwrap().to_owned());
        cursor = format!("&cursor={}", one["nextCursor"].as_str().unwrap());
    }
    assert_eq!(kinds, ["invalid_token", "logged_out", "updated"]);
    let later = page(format!(
        "/v1/users/audit%3Auser%2F1/events?since={}",
        "2999-01-01T00:00:00Z"
    ))
    .await;
    assert_eq!(later["events"], json!([]));
    for bad in ["limit=0", "limit=1001", "cursor=nope", "since=yesterday"] {
        let r = client
            .get(format!("{base}/v1/sessions/{id}/events?{bad}"))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = client
        .get(format!("{base}/v1/sessions/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the backend key is required");

    // The same trail at a terminal, straight from PostgreSQL.
    let audit = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .arg("audit")
            .args(args)
            .env_clear()
            .env("SESSIOND_TIER__POSTGRES_URL", pg.url())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sessiond audit {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = audit(&["--user", "audit:user/1"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three events:\n{table}");
    assert!(lines[0].starts_with("TIME"));
    assert!(lines[1].contains("logged_out") && lines[1].contains("holder"));
    assert!(lines[3].contains("created") && lines[3].contains(&id));
    let json_lines = audit(&["--session", &id, "--json", "--limit", "2", "--since", "1h"]);
    let events: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["kind"], "invalid_token");
    assert_eq!(events[1]["kind"], "logged_out");
}

async fn create(client: &reqwest::Client, base: &str, user: &str) -> (String, String) {
    let body: Value = client
        .post(format!("{base}/v1/sessions"))
        .header("x-api-key", KEY)
        .json(&json!({"userId": user}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        body["session"]["sessionId"].as_str().unwrap().to_owned(),
        body["token"].as_str().unwrap().to_owned(),
    )
}

fn durable(pg: &PostgresServer, id: &str, column: &str) -> String {
    pg.psql(
        "sessiond",
        &format!("SELECT {column} FROM sessiond_sessions WHERE session_id = '{id}'"),
    )
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_in_postgres_when_it_answers_and_answers_while_postgres_is_down() {
    written_through(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_revocation_is_in_postgres_when_it_answers_and_answers_while_postgres_is_down() {
    let redis = RedisServer::start();
    written_through(&[("SESSIOND_REDIS_URL", &redis.url())]).await;
}

/// Revocations written through, on the engine `engine` names (embedded when empty).
async fn written_through(engine: &[(&str, &str)]) {
    let mut pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    // A ship interval far longer than the test: only the write-through can be what ships.
    let mut env = vec![("SESSIOND_TIER__SHIP_INTERVAL", "60s")];
    env.extend_from_slice(engine);
    let server = start_with(&dir.path().join("data"), &pg, &env);
    let base = server.base.clone();
    let client = reqwest::Client::new();

    let (id, token) = create(&client, &base, "wt-user").await;
    let r = client
        .delete(format!("{base}/v1/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        durable(&pg, &id, "state"),
        "ended",
        "logout is in PostgreSQL when it answers"
    );

    let (a, _) = create(&client, &base, "wt-user").await;
    let (b, token_b) = create(&client, &base, "wt-user").await;
    let rotated = client
        .post(format!("{base}/v1/session/rotate"))
        .bearer_auth(&token_b)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let secret = |token: &str| token.split('.').nth(1).unwrap().to_owned();
    let new_token = rotated.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(secret(&new_token), secret(&token_b));
    let stored = durable(&pg, &b, "encode(secret_hash, 'hex')");
    let expected: String = sessiond_core::Token::parse(&new_token)
        .unwrap()
        .secret_hash()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        stored, expected,
        "the rotated record, with the new secret's hash, is in PostgreSQL when rotate answers"
    );
    let r = client
        .delete(format!("{base}/v1/users/wt-user/sessions"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(durable(&pg, &a, "state"), "ended");
    assert_eq!(
        durable(&pg, &b, "state"),
        "ended",
        "revoke-all is in PostgreSQL when it answers"
    );

    // PostgreSQL down: a logout still answers, once the write-through gives up (1 s).
    let (c, token_c) = create(&client, &base, "wt-other").await;
    pg.stop(true);
    let started = Instant::now();
    let r = client
        .delete(format!("{base}/v1/session"))
        .bearer_auth(&token_c)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "logout works while PostgreSQL is down");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it waited {:?}",
        started.elapsed()
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sessiond_tier_revocations_late_total") && !l.ends_with(" 0")),
        "the late revocation is counted"
    );
    pg.start_again();
    // The next write-through (or the 60 s interval) ships it: ask with a revocation.
    let (_, token_d) = create(&client, &base, "wt-other").await;
    let r = client
        .delete(format!("{base}/v1/session"))
        .bearer_auth(&token_d)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(15);
    while durable(&pg, &c, "state") != "ended" {
        assert!(
            Instant::now() < deadline,
            "the late logout never reached PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessiond_revoke_puts_its_revocation_in_postgres_before_it_returns() {
    revoke_ships(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_sessiond_revoke_puts_its_revocation_in_postgres_before_it_returns() {
    let redis = RedisServer::start();
    revoke_ships(&[("SESSIOND_REDIS_URL", &redis.url())]).await;
}

/// `sessiond revoke` shipping before it exits, on the engine `engine` names.
async fn revoke_ships(engine: &[(&str, &str)]) {
    let pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ids = {
        let mut server = start_with(&data, &pg, engine);
        let client = reqwest::Client::new();
        let (a, _) = create(&client, &server.base, "cli-user").await;
        let (b, _) = create(&client, &server.base, "cli-user").await;
        drained(&client, &server.base).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        [a, b]
    };
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["revoke", "--user", "cli-user"])
        .env_clear()
        .env("SESSIOND_DATA_DIR", &data)
        .env("SESSIOND_TIER__POSTGRES_URL", pg.url())
        .envs(engine.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in &ids {
        assert_eq!(durable(&pg, id, "state"), "ended", "{id}");
    }
    assert_eq!(
        pg.psql(
            "sessiond",
            "SELECT actor || ' ' || (detail->>'count') FROM sessiond_events \
             WHERE kind = 'revoked_all' AND user_id = 'cli-user'",
        )
        .trim(),
        "cli 2"
    );
}

/// Each token's `/v1/auth` status, asked `concurrency` at a time.
async fn validate_all(base: &str, tokens: &[String], concurrency: usize) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let chunk = tokens.len().div_ceil(concurrency);
    let tasks: Vec<_> = tokens
        .chunks(chunk)
        .map(|part| {
            let (client, base, part) = (client.clone(), base.to_owned(), part.to_vec());
            tokio::spawn(async move {
                let mut statuses = Vec::with_capacity(part.len());
                for token in &part {
                    let status = client
                        .get(format!("{base}/v1/auth"))
                        .bearer_auth(token)
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16());
                    statuses.push(status);
                }
                statuses
            })
        })
        .collect();
    let mut all = Vec::with_capacity(tokens.len());
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// One labelled sample of `/metrics`, 0 when absent.
async fn metric(client: &reqwest::Client, base: &str, line_start: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Session records in Redis now.
fn records_in_redis(redis: &RedisServer) -> usize {
    redis
        .cli(&["--scan", "--pattern", "sd:s:*"])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_no_mass_logout_when_redis_is_flushed_or_restarted_empty() {
    const SESSIONS: usize = 10_000;
    let mut redis = RedisServer::start();
    let pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        &dir.path().join("data"),
        &pg,
        &[("SESSIOND_REDIS_URL", &redis.url())],
    );
    let base = server.base.clone();
    let client = reqwest::Client::new();
    // 10,000 live sessions of 1,000 users, made 32 at a time.
    let per_task = SESSIONS.div_ceil(32);
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let mut tokens = Vec::with_capacity(per_task);
                for i in 0..per_task {
                    let user = format!("nml-{}", (t * per_task + i) % 1_000);
                    tokens.push(create(&client, &base, &user).await.1);
                }
                tokens
            })
        })
        .collect();
    let mut tokens = Vec::with_capacity(SESSIONS);
    for t in tasks {
        tokens.extend(t.await.unwrap());
    }
    let made = tokens.len();
    // Older than the ship interval: the outbox is empty.
    drained(&client, &base).await;

    let restored = |c: &reqwest::Client| {
        let (c, base) = (c.clone(), base.clone());
        async move {
            metric(
                &c,
                &base,
                "sessiond_tier_read_throughs_total{outcome=\"restored\"}",
            )
            .await
        }
    };
    for (loss, mut lose) in [
        (
            "FLUSHALL",
            Box::new(|r: &mut RedisServer| {
                r.cli(&["FLUSHALL"]);
            }) as Box<dyn FnMut(&mut RedisServer)>,
        ),
        (
            "a restart without persistence",
            Box::new(|r: &mut RedisServer| r.restart()),
        ),
    ] {
        lose(&mut redis);
        assert_eq!(records_in_redis(&redis), 0, "{loss}: Redis is empty");
        // Reconnected (after a restart, the first command on the old connection fails).
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map_or(true, |r| r.status() != 200)
        {
            assert!(
                Instant::now() < deadline,
                "{loss}: sessiond never reconnected"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        read_through_trusted(&client, &base).await;
        // A user's devices are all listed before any is used again (the tier's copies).
        let listed: Value = client
            .get(format!("{base}/v1/users/nml-999/sessions"))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            listed["sessions"].as_array().map(Vec::len),
            Some((0..made).filter(|i| i % 1_000 == 999).count()),
            "{loss}: the user's sessions are listed from the tier"
        );
        let before = restored(&client).await;
        let started = Instant::now();
        let statuses = validate_all(&base, &tokens, 32).await;
        let took = started.elapsed();
        let ok = statuses.iter().filter(|s| **s == 200).count();
        eprintln!("after {loss}: {ok} of {made} sessions validate, read through in {took:?}");
        assert!(
            ok * 1000 >= made * 999,
            "after {loss}: {ok} of {made} validate (≥ 99.9% must); statuses: {:?}",
            statuses
                .iter()
                .fold(HashMap::<u16, usize>::new(), |mut m, s| {
                    *m.entry(*s).or_default() += 1;
                    m
                })
        );
        let back = records_in_redis(&redis);
        assert!(
            back >= ok,
            "after {loss}: {back} records back in Redis for {ok} validated"
        );
        let read_through = restored(&client).await - before;
        // A second use is a hot read: nothing more is read through.
        let again = validate_all(&base, &tokens, 32).await;
        assert_eq!(
            again.iter().filter(|s| **s == 200).count(),
            ok,
            "after {loss}: the same sessions validate again"
        );
        assert_eq!(
            restored(&client).await - before,
            read_through,
            "after {loss}: each session was read through once, then served by Redis"
        );
        assert!(
            read_through as usize >= ok,
            "{read_through} read-throughs for {ok}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_embedded_node_logs_nobody_out_and_brings_back_nobody_revoked() {
    let pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (live, revoked) = {
        let mut server = start_with(&dir.path().join("old-node"), &pg, &[]);
        let mut live = Vec::new();
        for i in 0..200 {
            live.push(
                create(&client, &server.base, &format!("node-{}", i % 20))
                    .await
                    .1,
            );
        }
        // Ended every way a session ends: logout, revocation, revoke-all, rotation.
        let mut revoked = Vec::new();
        let (_, t) = create(&client, &server.base, "node-gone").await;
        let r = client
            .delete(format!("{}/v1/session", server.base))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        revoked.push(t);
        let (id, t) = create(&client, &server.base, "node-gone").await;
        let r = client
            .delete(format!("{}/v1/sessions/{id}", server.base))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        revoked.push(t);
        let (_, t) = create(&client, &server.base, "node-all").await;
        let r = client
            .delete(format!("{}/v1/users/node-all/sessions", server.base))
            .header("x-api-key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        revoked.push(t);
        let (_, t) = create(&client, &server.base, "node-gone").await;
        let r = client
            .post(format!("{}/v1/session/rotate", server.base))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        revoked.push(t);
        drained(&client, &server.base).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        (live, revoked)
    };
    // A new node with an empty data directory, the same PostgreSQL.
    let server = start_with(&dir.path().join("new-node"), &pg, &[]);
    let statuses = validate_all(&server.base, &live, 8).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every live session validates on the new node: {statuses:?}"
    );
    let statuses = validate_all(&server.base, &revoked, 1).await;
    assert_eq!(
        statuses,
        vec![401; revoked.len()],
        "no ended session or rotated-away token comes back"
    );
}

/// `/v1/auth` statuses of `tokens`, counted by status.
async fn tally(base: &str, tokens: &[String]) -> HashMap<u16, usize> {
    validate_all(base, tokens, 16)
        .await
        .into_iter()
        .fold(HashMap::new(), |mut m, s| {
            *m.entry(s).or_default() += 1;
            m
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_revoked_tokens_stay_dead_through_postgres_down_a_flush_and_a_replay() {
    let redis = RedisServer::start();
    let mut pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("SESSIOND_REDIS_URL", redis.url()),
        ("SESSIOND_TIER__REVOCATION_TIMEOUT", "100ms".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = start_with(&data, &pg, &env);
    let base = server.base.clone();
    let client = reqwest::Client::new();

    // 1,000 sessions to end, 30 users' worth to end by revoke-all, 200 to keep.
    let mut to_logout = Vec::new();
    let mut to_revoke = Vec::new();
    let mut to_rotate = Vec::new();
    let mut of_revoked_users = Vec::new();
    let mut kept = Vec::new();
    for i in 0..300 {
        to_logout.push(create(&client, &base, &format!("fr-a{}", i % 50)).await.1);
        to_revoke.push(create(&client, &base, &format!("fr-b{}", i % 50)).await);
        to_rotate.push(create(&client, &base, &format!("fr-c{}", i % 50)).await.1);
    }
    for i in 0..100 {
        of_revoked_users.push(create(&client, &base, &format!("fr-d{}", i % 10)).await.1);
    }
    for i in 0..200 {
        kept.push(create(&client, &base, &format!("fr-k{}", i % 50)).await.1);
    }
    drained(&client, &base).await;

    // PostgreSQL is down during every revocation: each answers after the write-through gives
    // up, its end waiting in the outbox and in the journal.
    pg.stop(true);
    let ended = |url: String, bearer: Option<String>, method: reqwest::Method| {
        let client = client.clone();
        async move {
            let mut req = client.request(method, url).header("x-api-key", KEY);
            if let Some(t) = bearer {
                req = req.bearer_auth(t);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    // Logouts and rotations by token, revocations by id, 25 at a time.
    let calls: Vec<(String, Option<String>, reqwest::Method)> = to_logout
        .iter()
        .map(|t| {
            let url = format!("{base}/v1/session");
            (url, Some(t.clone()), reqwest::Method::DELETE)
        })
        .chain(to_revoke.iter().map(|(id, _)| {
            let url = format!("{base}/v1/sessions/{id}");
            (url, None, reqwest::Method::DELETE)
        }))
        .chain(to_rotate.iter().map(|t| {
            let url = format!("{base}/v1/session/rotate");
            (url, Some(t.clone()), reqwest::Method::POST)
        }))
        .collect();
    let mut answers = Vec::new();
    for chunk in calls.chunks(25) {
        let running: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|(url, bearer, method)| tokio::spawn(ended(url, bearer, method)))
            .collect();
        for c in running {
            answers.push(c.await.unwrap());
        }
    }
    for u in 0..10 {
        answers.push(
            ended(
                format!("{base}/v1/users/fr-d{u}/sessions"),
                None,
                reqwest::Method::DELETE,
            )
            .await,
        );
    }
    assert!(
        answers.iter().all(|s| matches!(s, 200 | 204)),
        "every revocation answers while PostgreSQL is down: {answers:?}"
    );
    let mut dead: Vec<String> = to_logout;
    dead.extend(to_revoke.into_iter().map(|(_, t)| t));
    dead.extend(to_rotate);
    dead.extend(of_revoked_users);
    assert!(dead.len() >= 1_000);
    let ready = readyz(&client, &base).await;
    assert!(
        ready["tier"]["journalEntries"].as_u64() >= Some(910),
        "the late revocations are in the journal: {ready}"
    );

    // Redis loses everything, the outbox with it, while PostgreSQL is still down.
    redis.cli(&["FLUSHALL"]);
    let seen = tally(&base, &dead).await;
    assert_eq!(
        seen.get(&200),
        None,
        "none accepted, PostgreSQL down: {seen:?}"
    );

    // PostgreSQL is back: until the journal has shipped, read-through does not trust it; after,
    // it knows the ends. No token is accepted at any moment.
    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = tally(&base, &dead).await;
        assert_eq!(
            seen.get(&200),
            None,
            "none accepted after PostgreSQL is back: {seen:?}"
        );
        if seen.get(&401) == Some(&dead.len()) {
            break;
        }
        assert!(Instant::now() < deadline, "still not all 401: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(readyz(&client, &base).await["tier"]["journalEntries"], 0);

    // The process killed and started again: what it replays changes nothing.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = start_with(&data, &pg, &env);
    let seen = tally(&server.base, &dead).await;
    assert_eq!(
        seen.get(&401),
        Some(&dead.len()),
        "after a restart: {seen:?}"
    );
    // And the sessions nobody ended are all still there, read through from PostgreSQL.
    let seen = tally(&server.base, &kept).await;
    assert_eq!(
        seen.get(&200),
        Some(&kept.len()),
        "the kept sessions: {seen:?}"
    );
    eprintln!(
        "{} ended tokens stayed 401; {} kept sessions validate",
        dead.len(),
        kept.len()
    );
}

/// Redis's `used_memory`.
fn used_memory(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_idle_sessions_leave_redis_and_come_back_on_use() {
    const SESSIONS: usize = 5_000;
    let redis = RedisServer::start();
    let pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        &dir.path().join("data"),
        &pg,
        &[
            ("SESSIOND_REDIS_URL", &redis.url()),
            ("SESSIOND_TIER__DEMOTE_AFTER", "1s"),
            ("SESSIOND_SESSION__MAX_PER_USER", "10"),
        ],
    );
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let empty = used_memory(&redis);
    // 5,000 sessions of 500 users (10 each), made 16 at a time.
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let mut made = Vec::new();
                for i in (t..SESSIONS).step_by(16) {
                    made.push((
                        i,
                        create(&client, &base, &format!("cold-{}", i % 500)).await.1,
                    ));
                }
                made
            })
        })
        .collect();
    let mut made = Vec::new();
    for t in tasks {
        made.extend(t.await.unwrap());
    }
    made.sort();
    let tokens: Vec<String> = made.into_iter().map(|(_, t)| t).collect();
    drained(&client, &base).await;
    let hot = used_memory(&redis);
    // Idle for longer than tier.demote_after: they leave Redis.
    let deadline = Instant::now() + Duration::from_secs(30);
    while records_in_redis(&redis) > 0 {
        assert!(Instant::now() < deadline, "idle sessions still in Redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A Redis this server found empty got its epoch at start-up, which read-through lets
    // settle first (the grace of a new epoch).
    read_through_trusted(&client, &base).await;
    let cold = used_memory(&redis);
    let per_session = |bytes: u64| bytes as f64 / SESSIONS as f64;
    eprintln!(
        "Redis bytes per session: {:.0} hot, {:.0} once demoted",
        per_session(hot.saturating_sub(empty)),
        per_session(cold.saturating_sub(empty))
    );
    // What stays is each user's index (a cold session keeps its entry there, so the cap and
    // revoke-all count it) and the emptied outbox stream, not the records.
    assert!(
        per_session(cold.saturating_sub(empty)) < per_session(hot.saturating_sub(empty)) / 2.0,
        "demoted sessions free their records: {hot} → {cold} bytes"
    );
    assert_eq!(
        metric(&client, &base, "sessiond_tier_demoted_sessions_total").await,
        SESSIONS as u64
    );
    // Cold, they are still the user's: listed, and ended by a revoke-all.
    let listed: Value = client
        .get(format!("{base}/v1/users/cold-7/sessions"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(10));
    let r = client
        .delete(format!("{base}/v1/users/cold-7/sessions"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["revoked"], 10, "revoke-all counts the cold ones");
    let of_user = |u: usize| -> Vec<String> {
        tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 500 == u)
            .map(|(_, t)| t.clone())
            .collect()
    };
    let seen = tally(&base, &of_user(7)).await;
    assert_eq!(
        seen.get(&401),
        Some(&10),
        "revoke-all ended the cold ones: {seen:?}"
    );
    let others: Vec<String> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 500 != 7 && i % 500 != 8)
        .map(|(_, t)| t.clone())
        .collect();
    // Used again, each comes back, paying one PostgreSQL read once.
    let seen = tally(&base, &others).await;
    assert_eq!(seen.get(&200), Some(&others.len()), "{seen:?}");
    assert_eq!(records_in_redis(&redis), others.len(), "back in Redis");
    // At the cap of 10, a user's next login evicts one of their cold sessions (the idlest).
    let before_login = of_user(8);
    let _ = create(&client, &base, "cold-8").await;
    let seen = tally(&base, &before_login).await;
    assert_eq!(
        (seen.get(&401), seen.get(&200)),
        (Some(&1), Some(&9)),
        "the cap counted the cold sessions: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_ended_tokens_stay_dead_through_demotion_and_promotion() {
    let redis = RedisServer::start();
    let pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(
        &dir.path().join("data"),
        &pg,
        &[
            ("SESSIOND_REDIS_URL", &redis.url()),
            ("SESSIOND_TIER__DEMOTE_AFTER", "1s"),
        ],
    );
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let mut sessions = Vec::new();
    for i in 0..300 {
        sessions.push(create(&client, &base, &format!("cycle-{}", i % 30)).await);
    }
    let all_cold = || async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while records_in_redis(&redis) > 0 {
            assert!(Instant::now() < deadline, "sessions still in Redis");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    all_cold().await;
    // The epoch this server made at start-up has settled (read-through waits for it).
    read_through_trusted(&client, &base).await;

    // Ended while cold: each is brought back by its own request, then ended.
    let mut dead = Vec::new();
    let mut renewed = Vec::new();
    for (i, (id, token)) in sessions.iter().take(100).enumerate() {
        let status = match i % 3 {
            0 => client
                .delete(format!("{base}/v1/session"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status(),
            1 => client
                .delete(format!("{base}/v1/sessions/{id}"))
                .header("x-api-key", KEY)
                .send()
                .await
                .unwrap()
                .status(),
            _ => {
                let r = client
                    .post(format!("{base}/v1/session/rotate"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let body: Value = r.json().await.unwrap();
                renewed.push(body["token"].as_str().unwrap().to_owned());
                status
            }
        };
        assert!(status.is_success(), "ending a cold session: {status}");
        dead.push(token.clone());
    }
    let untouched: Vec<String> = sessions.iter().skip(100).map(|(_, t)| t.clone()).collect();
    // The rotated ones are hot again, then idle: demoted once more.
    all_cold().await;
    let seen = tally(&base, &dead).await;
    assert_eq!(
        seen.get(&401),
        Some(&dead.len()),
        "after a demotion: {seen:?}"
    );
    // Promoted by use, the live ones come back; the ended ones never do.
    let seen = tally(&base, &renewed).await;
    assert_eq!(
        seen.get(&200),
        Some(&renewed.len()),
        "rotated tokens: {seen:?}"
    );
    let seen = tally(&base, &untouched).await;
    assert_eq!(
        seen.get(&200),
        Some(&untouched.len()),
        "untouched: {seen:?}"
    );
    let seen = tally(&base, &dead).await;
    assert_eq!(
        seen.get(&401),
        Some(&dead.len()),
        "after the promotions: {seen:?}"
    );
    redis.cli(&["FLUSHALL"]);
    let seen = tally(&base, &dead).await;
    assert_eq!(seen.get(&200), None, "right after a flush: {seen:?}");
    read_through_trusted(&client, &base).await;
    let seen = tally(&base, &dead).await;
    assert_eq!(seen.get(&401), Some(&dead.len()), "after a flush: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_one_process_journal_holds_back_read_through_in_every_process() {
    let mut redis = RedisServer::start();
    let mut pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (data_a, data_b, data_c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let env = [
        ("SESSIOND_REDIS_URL", redis.url()),
        ("SESSIOND_TIER__REVOCATION_TIMEOUT", "100ms".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut a = start_with(&data_a, &pg, &env);
    let b = start_with(&data_b, &pg, &env);
    let client = reqwest::Client::new();
    let mut dead = Vec::new();
    let mut kept = Vec::new();
    for i in 0..100 {
        let (_, token) = create(&client, &a.base, &format!("lease-{}", i % 10)).await;
        if i % 2 == 0 {
            dead.push(token);
        } else {
            kept.push(token);
        }
    }
    drained(&client, &a.base).await;
    read_through_trusted(&client, &b.base).await;
    assert_eq!(readyz(&client, &b.base).await["tier"]["leases"], 2);

    // A logs 50 users out while PostgreSQL is down: the ends are in A's journal only.
    pg.stop(true);
    for token in &dead {
        let status = client
            .delete(format!("{}/v1/session", a.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204);
    }
    let ready = readyz(&client, &b.base).await;
    assert_eq!(
        ready["tier"]["readThrough"], "refused",
        "B sees A's journal marked in Redis at once: {ready}"
    );
    // A is killed, and Redis loses everything (A's mark with it) before PostgreSQL is back.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    redis.restart();
    pg.start_again();
    tier_until(&client, &b.base, "B never saw A's lease", |t| {
        t["blockingLeases"] == 1
    })
    .await;
    // Well past the idle time of a lease with nothing to ship, A's (of the lost epoch) still
    // holds B back: no ended token is accepted, no kept one logged out (503, not 401).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let seen = tally(&b.base, &dead).await;
    assert_eq!(seen.get(&503), Some(&dead.len()), "ended, on B: {seen:?}");
    let seen = tally(&b.base, &kept).await;
    assert_eq!(seen.get(&503), Some(&kept.len()), "kept, on B: {seen:?}");

    // A comes back on its data directory and ships its journal: B trusts the tier again.
    let a = start_with(&data_a, &pg, &env);
    read_through_trusted(&client, &b.base).await;
    let seen = tally(&b.base, &dead).await;
    assert_eq!(seen.get(&401), Some(&dead.len()), "ended, on B: {seen:?}");
    let seen = tally(&b.base, &kept).await;
    assert_eq!(seen.get(&200), Some(&kept.len()), "kept, on B: {seen:?}");

    // A process killed for good with nothing in its journal holds nobody back while Redis
    // keeps its data; after Redis loses it, its lease (of the old epoch) does, until an
    // operator forgets it.
    let mut c = start_with(&data_c, &pg, &env);
    let c_id = readyz(&client, &c.base).await["tier"]["instance"]
        .as_str()
        .unwrap()
        .to_owned();
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    read_through_trusted(&client, &b.base).await;
    redis.cli(&["FLUSHALL"]);
    tier_until(
        &client,
        &b.base,
        "B never saw C's lease of the old epoch",
        |t| t["blockingLeases"] == 1,
    )
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .args(["tier", "forget-instance", &c_id, "--yes"])
        .env_clear()
        .env("SESSIOND_DATA_DIR", &data_c)
        .env("SESSIOND_TIER__POSTGRES_URL", pg.url())
        .env("SESSIOND_REDIS_URL", redis.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_through_trusted(&client, &b.base).await;
    let seen = tally(&b.base, &kept).await;
    assert_eq!(seen.get(&200), Some(&kept.len()), "kept, on B: {seen:?}");
    drop(a);
}
