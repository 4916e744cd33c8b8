//! Test support: a real sessiond server on an ephemeral port with a data directory of its own,
//! and request helpers that check, on every answer, what docs/api.md and docs/requirements.md
//! (d) require of all answers (`Cache-Control: no-store`, `X-Content-Type-Options: nosniff`, a
//! well-formed `application/problem+json` body on every error, a `WWW-Authenticate` challenge
//! on every 401).
//!
//! Every server of the suite logs at `trace` level into one buffer, and when a [`TestApp`] is
//! dropped it checks that no token it was issued (nor the token's secret half) appears in it
//! (T3, S17): the whole API suite, on whichever engine it runs, is the log scan.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use sessiond_core::AtCap;
use sessiond_core::Clock as _;
use sessiond_core::{EventSink, SessionEvent};
use sessiond_server::config::{ApiKeyList, NameList, RedisUrl};
use sessiond_server::{Config, Hooks};
use sessiond_testkit::clock::TestClock;
use sessiond_testkit::redis::{RedisCluster, RedisSentinel, RedisServer};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What every server of this test binary has logged, at `trace` level.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// A `tracing` writer appending to [`LOGS`].
#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged so far by the servers of this test binary.
pub(crate) fn captured_logs() -> String {
    LOGS.get().map_or_else(String::new, |b| {
        String::from_utf8_lossy(&b.lock().expect("log buffer")).into_owned()
    })
}

/// Sends every log line of this process, at `trace` level, to [`LOGS`] (once).
fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink(buffer.clone());
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init();
        buffer
    });
}

/// The backend API key every test server accepts.
pub(crate) const KEY: &str = "test-backend-key-0123456789abcdef";

/// The media type of every error body.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// `Authorization` value for a session token.
pub(crate) fn auth(token: &str) -> String {
    format!("Bearer {token}")
}

/// Parses an RFC 3339 UTC time of a session document.
pub(crate) fn ts(v: &Value) -> OffsetDateTime {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a string time: {v}"));
    assert!(s.ends_with('Z'), "time is not written in UTC: {s}");
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("not RFC 3339: {s}: {e}"))
}

/// An event as a test reads it: owned, with the whole event as `Debug` text (for the check
/// that no token is in it).
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// The metric label of its kind (`created`, `logged_out`, ...).
    pub(crate) name: &'static str,
    /// Its session.
    pub(crate) session_id: Option<String>,
    /// Its user.
    pub(crate) user_id: Option<String>,
    /// `holder`, `backend`, `cli` or `sweeper`.
    pub(crate) actor: &'static str,
    /// The whole event.
    pub(crate) debug: String,
}

/// An event sink that keeps every event of one server.
#[derive(Debug, Default)]
pub(crate) struct EventLog(Mutex<Vec<Recorded>>);

impl EventSink for EventLog {
    fn emit(&self, event: &SessionEvent<'_>) {
        self.0.lock().expect("event log").push(Recorded {
            name: event.kind.name().as_str(),
            session_id: event.session_id.map(|s| s.as_str().to_owned()),
            user_id: event.user_id.map(|u| u.as_str().to_owned()),
            actor: event.actor.as_str(),
            debug: format!("{event:?}"),
        });
    }
}

impl EventLog {
    /// Every event so far, in order.
    pub(crate) fn all(&self) -> Vec<Recorded> {
        self.0.lock().expect("event log").clone()
    }
}

/// Configures a [`TestApp`] before it starts.
pub(crate) struct TestAppBuilder {
    config: Config,
    backing: Option<Backing>,
    holder_writable_set: bool,
}

impl TestAppBuilder {
    /// The default idle timeout of sessions created without `ttlSeconds`.
    pub(crate) fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.config.session.idle_timeout = idle;
        self
    }

    /// The per-user cap.
    pub(crate) fn with_max_per_user(mut self, max: u32) -> Self {
        self.config.session.max_per_user = max;
        self
    }

    /// What happens at the per-user cap.
    pub(crate) fn with_at_cap(mut self, at_cap: AtCap) -> Self {
        self.config.session.at_cap = at_cap;
        self
    }

    /// How stale recorded activity may get before a validation writes it (zero: every
    /// validation records activity).
    pub(crate) fn with_touch_interval(mut self, interval: Duration) -> Self {
        self.config.session.touch_interval = interval;
        self
    }

    /// The `userData` keys a holder may patch, as configured (the suite's default is every
    /// key; this leaves the setting at the product's default when `keys` is `None`).
    pub(crate) fn holder_writable_keys(mut self, keys: Option<&str>) -> Self {
        if let Some(keys) = keys {
            self.config.session.holder_writable = NameList::Joined(keys.into());
        }
        self.holder_writable_set = true;
        self
    }

    /// Runs on `backing` instead of the store `SESSIOND_TEST_STORE` names.
    pub(crate) fn with_backing(mut self, backing: Backing) -> Self {
        self.backing = Some(backing);
        self
    }

    /// The Redis call timeout.
    pub(crate) fn with_redis_timeout(mut self, timeout: Duration) -> Self {
        self.config.redis.timeout = timeout;
        self
    }

    /// The request body limit.
    pub(crate) fn with_max_body_bytes(mut self, max: usize) -> Self {
        self.config.limits.max_body_bytes = max;
        self
    }

    /// Any other setting, for a test that needs one no `with_*` method covers (the absolute
    /// timeout, the header-read timeout).
    pub(crate) fn with_config(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(&mut self.config);
        self
    }

    /// Starts the server, on the store `SESSIOND_TEST_STORE` names.
    pub(crate) async fn spawn(self) -> TestApp {
        capture_logs();
        let dir = tempfile::tempdir().expect("temporary data directory");
        let mut config = self.config;
        let backing = match self.backing {
            Some(b) => b,
            None => Backing::from_env().await,
        };
        config.redis_url = backing.url().map(RedisUrl);
        // The whole suite once more with the near cache in front of Redis: every contract
        // holds through it.
        if config.redis_url.is_some()
            && config.cache.max_entries == 0
            && std::env::var("SESSIOND_TEST_STORE").as_deref() == Ok("redis-cached")
        {
            config.cache.max_entries = 10_000;
        }
        config.data_dir = dir.path().join("data");
        config.api_keys = Some(ApiKeyList::Joined(KEY.into()));
        config.shutdown_timeout = Duration::from_secs(10);
        // The suite tests merge patch, If-Match and limits through the holder's route with
        // keys of its own choosing, so holders may write every key here unless a test says
        // otherwise (`holder_writable_keys`);
        // `holder.rs::a_token_holder_cannot_grant_itself_permissions` tests the default.
        if !self.holder_writable_set {
            config.session.holder_writable = NameList::Joined("*".into());
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding an ephemeral port");
        let addr = listener.local_addr().expect("listener address");
        let (tx, rx) = oneshot::channel::<()>();
        let clock = Arc::new(TestClock::new());
        let events = Arc::new(EventLog::default());
        let hooks = Hooks {
            clock: clock.clone(),
            events: vec![events.clone()],
        };
        let task = tokio::spawn(sessiond_server::run_with(
            config,
            hooks,
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        let client = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let app = TestApp {
            addr,
            client,
            clock,
            events,
            shutdown_tx: Some(tx),
            task: Some(task),
            tokens: Mutex::new(Vec::new()),
            backing,
            _dir: dir,
        };
        // The listener is bound before `run` starts, so requests queue in the backlog; this
        // one also proves the store opened.
        app.send(app.req(Method::GET, "/healthz"))
            .await
            .expect_status(StatusCode::OK);
        app
    }
}

/// A running sessiond with a fresh store.
pub(crate) struct TestApp {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// A plain HTTP client.
    pub(crate) client: Client,
    /// The server's clock: [`TestApp::advance`] moves it.
    clock: Arc<TestClock>,
    /// Every event the server emitted.
    pub(crate) events: Arc<EventLog>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    tokens: Mutex<Vec<String>>,
    /// The Redis processes behind the server, if the suite runs on Redis.
    pub(crate) backing: Backing,
    // Last, so the server's files go only after everything else.
    _dir: TempDir,
}

/// The store the suite runs on, chosen by `SESSIOND_TEST_STORE`: `embedded` (the default),
/// `redis` (a standalone server per test), `redis-sentinel` (a primary, two replicas and three
/// sentinels per test) or `redis-cluster` (three primaries per test). The same tests run on
/// each; `scripts/test` runs them all.
#[derive(Debug)]
pub(crate) enum Backing {
    /// The embedded store in the test's data directory.
    Embedded,
    /// A standalone `redis-server`.
    Redis(RedisServer),
    /// A Redis Cluster.
    Cluster(RedisCluster),
    /// A primary, two replicas and three sentinels.
    Sentinel(RedisSentinel),
}

impl Backing {
    async fn from_env() -> Backing {
        let choice = std::env::var("SESSIOND_TEST_STORE").unwrap_or_default();
        match choice.as_str() {
            "" | "embedded" => Backing::Embedded,
            "redis" | "redis-cached" => Backing::Redis(
                tokio::task::spawn_blocking(RedisServer::start)
                    .await
                    .expect("start redis"),
            ),
            "redis-cluster" => Backing::Cluster(
                tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
                    .await
                    .expect("start the cluster"),
            ),
            "redis-sentinel" => Backing::Sentinel(
                tokio::task::spawn_blocking(|| RedisSentinel::start(2))
                    .await
                    .expect("start primary, replicas and sentinels"),
            ),
            other => panic!(
                "SESSIOND_TEST_STORE={other}: use embedded, redis, redis-cached, redis-sentinel or redis-cluster"
            ),
        }
    }

    fn url(&self) -> Option<String> {
        match self {
            Backing::Embedded => None,
            Backing::Redis(server) => Some(server.url()),
            Backing::Cluster(cluster) => Some(cluster.url()),
            Backing::Sentinel(deployment) => Some(deployment.url()),
        }
    }
}

impl TestApp {
    /// A builder with the default configuration.
    pub(crate) fn builder() -> TestAppBuilder {
        TestAppBuilder {
            config: Config::default(),
            backing: None,
            holder_writable_set: false,
        }
    }

    /// A server with the default configuration.
    pub(crate) async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    /// Whether this server's engine has its sweeper reclaim expired sessions (the embedded
    /// store; Redis expires its own keys).
    pub(crate) fn sessions_reclaimed_by_sweeper(&self) -> bool {
        matches!(self.backing, Backing::Embedded)
    }

    /// Moves the server's clock forward (expiry without sleeping).
    pub(crate) fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The server's clock, read from the test: what a test compares with the times the server
    /// answers (the machine's wall clock may step while the test runs; this one does not).
    pub(crate) fn now(&self) -> time::OffsetDateTime {
        let ms = i128::from(self.clock.now().as_millis());
        time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).expect("a time in range")
    }

    /// Absolute URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request without any credential.
    pub(crate) fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// A request of a trusted backend (`X-Api-Key`).
    pub(crate) fn backend(&self, method: Method, path: &str) -> RequestBuilder {
        self.req(method, path).header("x-api-key", KEY)
    }

    /// A request of a token holder (`Authorization: Bearer`).
    pub(crate) fn holder(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.req(method, path).header(AUTHORIZATION, auth(token))
    }

    /// Sends, reads the whole answer, and checks what every answer must carry.
    pub(crate) async fn send(&self, req: RequestBuilder) -> Resp {
        let r = req.send().await.expect("request answered");
        let resp = Resp {
            status: r.status(),
            headers: r.headers().clone(),
            body: r.bytes().await.expect("response body").to_vec(),
        };
        resp.check_common();
        // Every token the server hands out, whichever helper asked, is looked for in the logs.
        if let Ok(doc) = serde_json::from_slice::<Value>(&resp.body)
            && let Some(token) = doc["token"].as_str()
        {
            self.remember(token);
        }
        resp
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics_text(&self) -> String {
        self.send(self.req(Method::GET, "/metrics"))
            .await
            .expect_status(StatusCode::OK)
            .text()
    }

    /// `POST /v1/sessions` with `body` (`send` records the token of a success).
    pub(crate) async fn create(&self, body: &Value) -> Resp {
        self.send(self.backend(Method::POST, "/v1/sessions").json(body))
            .await
    }

    /// Creates a session for `user_id`: its token and session document.
    pub(crate) async fn create_session(&self, user_id: &str) -> (String, Value) {
        self.create_session_with(&json!({ "userId": user_id }))
            .await
    }

    /// Creates a session from a full create body: its token and session document.
    pub(crate) async fn create_session_with(&self, body: &Value) -> (String, Value) {
        let r = self.create(body).await.expect_status(StatusCode::CREATED);
        let mut doc = r.json();
        let token = doc["token"].as_str().expect("token").to_owned();
        (token, doc["session"].take())
    }

    /// `POST /v1/session/rotate` with `token` (`send` records the new token of a success).
    pub(crate) async fn rotate(&self, token: &str) -> Resp {
        self.send(self.holder(Method::POST, "/v1/session/rotate", token))
            .await
    }

    /// The status `GET /v1/auth` gives `token`.
    pub(crate) async fn auth_status(&self, token: &str) -> StatusCode {
        self.send(self.holder(Method::GET, "/v1/auth", token))
            .await
            .status
    }

    /// `GET /v1/session` with `token`, which must be live: the session document.
    pub(crate) async fn own_session(&self, token: &str) -> Value {
        self.send(self.holder(Method::GET, "/v1/session", token))
            .await
            .expect_status(StatusCode::OK)
            .json()
    }

    /// Validates `token` (which must be live) until its recorded activity is later than
    /// `after`. Needs a zero touch interval. Times have millisecond resolution, so this
    /// makes activity order strict without sleeping; it gives up after many tries.
    pub(crate) async fn touch_until_after(&self, token: &str, after: OffsetDateTime) -> Value {
        for _ in 0..10_000 {
            let doc = self.own_session(token).await;
            if ts(&doc["lastActivity"]) > after {
                return doc;
            }
        }
        panic!("lastActivity never moved past {after}");
    }

    /// Every token this server has issued through the helpers.
    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        self.tokens.lock().expect("token list").clone()
    }

    fn remember(&self, token: &str) {
        self.tokens
            .lock()
            .expect("token list")
            .push(token.to_owned());
    }

    /// Signals shutdown and waits for `run` to return, which must be `Ok`.
    pub(crate) async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            tx.send(())
                .expect("server still waiting for the shutdown signal");
        }
        let task = self.task.take().expect("server task");
        let result = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("server stopped within 15 s")
            .expect("server task did not panic");
        assert!(result.is_ok(), "run returned an error: {result:?}");
    }
}

impl Drop for TestApp {
    /// T3: none of this server's tokens reached a log line of any server of the suite, nor
    /// any event this server emitted.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let Some(buffer) = LOGS.get() else { return };
        let logs = String::from_utf8_lossy(&buffer.lock().expect("log buffer")).into_owned();
        let events = self.events.all();
        for token in self.tokens.lock().expect("token list").iter() {
            let secret = token.split_once('.').map_or(token.as_str(), |(_, s)| s);
            assert!(
                !logs.contains(secret),
                "T3: a token this test was issued appears in the trace-level logs"
            );
            assert!(
                !events.iter().any(|e| e.debug.contains(secret)),
                "a token this test was issued appears in an event"
            );
        }
    }
}

/// A whole answer.
#[derive(Debug)]
pub(crate) struct Resp {
    /// Status.
    pub(crate) status: StatusCode,
    /// Headers.
    pub(crate) headers: reqwest::header::HeaderMap,
    /// Body.
    pub(crate) body: Vec<u8>,
}

impl Resp {
    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub(crate) fn expect_status(self, status: StatusCode) -> Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }

    /// Asserts an error answer of `status` and returns its problem document (its shape is
    /// checked for every error by [`TestApp::send`]).
    #[track_caller]
    pub(crate) fn problem(self, status: StatusCode) -> Value {
        self.expect_status(status).json()
    }

    /// The body as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text, if present once or more (the first value).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("header value is text"))
    }

    /// What every answer must carry.
    #[track_caller]
    fn check_common(&self) {
        assert_eq!(
            self.header(CACHE_CONTROL.as_str()),
            Some("no-store"),
            "Cache-Control on a {} answer",
            self.status
        );
        assert_eq!(
            self.header(X_CONTENT_TYPE_OPTIONS.as_str()),
            Some("nosniff"),
            "X-Content-Type-Options on a {} answer",
            self.status
        );
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1 (finding 10 of the hardening review): every 401 says how to
            // authenticate.
            let challenge = self.header("www-authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer realm=") || challenge.starts_with("ApiKey realm="),
                "a 401 without a WWW-Authenticate challenge: {challenge:?}"
            );
        }
        if self.status.is_client_error() || self.status.is_server_error() {
            assert_eq!(
                self.header(CONTENT_TYPE.as_str()),
                Some(PROBLEM_JSON),
                "content type of a {} answer: {}",
                self.status,
                self.text()
            );
            let p = self.json();
            for field in ["type", "title", "detail"] {
                assert!(
                    p[field].as_str().is_some_and(|s| !s.is_empty()),
                    "problem member `{field}` missing or not a string: {p}"
                );
            }
            assert_eq!(
                p["status"].as_u64(),
                Some(u64::from(self.status.as_u16())),
                "problem `status` member: {p}"
            );
        }
    }
}
