//! One typed configuration, loaded in layers and validated once at start-up.
//!
//! Layers, each overriding the one before: built-in defaults → a TOML file (`--config` or
//! `SESSIOND_CONFIG`) → `SESSIOND_*` environment variables (`__` separates sections, e.g.
//! `SESSIOND_SESSION__IDLE_TIMEOUT=30m`) → command-line flags. Unknown keys and bad values
//! stop start-up with a message that names the key and where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sessiond_core::{AtCap, DataLimits, Policy, SessionLimit};

/// Environment variable naming the configuration file.
pub const CONFIG_FILE_ENV: &str = "SESSIOND_CONFIG";

/// The whole configuration of a sessiond process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory of the embedded store (and of the generated API key).
    pub data_dir: PathBuf,
    /// Keys accepted in `X-Api-Key`, as plain keys or `sha256:<hex>` digests. Unset: a key is
    /// generated into `<data_dir>/api-key` (mode 0600) on first start.
    pub api_keys: Option<ApiKeyList>,
    /// Redis URL; selects the Redis engine instead of the embedded store.
    pub redis_url: Option<RedisUrl>,
    /// Where Redis validations read from (`replica`, the default, or `primary`).
    pub redis_read_from: sessiond_store_redis::ReadFrom,
    /// Redis engine tuning.
    pub redis: RedisConfig,
    /// Log output.
    pub log: LogConfig,
    /// Session rules.
    pub session: SessionConfig,
    /// Bounds on what clients may send.
    pub limits: LimitsConfig,
    /// Embedded store tuning.
    pub embedded: EmbeddedConfig,
    /// The near cache in front of Redis (off by default).
    pub cache: CacheConfig,
    /// HTTPS on the listener.
    pub tls: TlsConfig,
    /// The session cookie sessiond sets.
    pub cookie: CookieConfig,
    /// Comparing each request's client with the login's (S20).
    pub binding: crate::binding::BindingConfig,
    /// Invalid-token attempts per client (S19).
    pub guard: GuardConfig,
    /// The durable tier (PostgreSQL): the audit trail and a durable copy of every session.
    pub tier: TierConfig,
    /// Longest wait for in-flight requests at shutdown.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// `SESSIOND_*` environment variables that name no setting and were left out, for the
    /// start-up warning (not a setting).
    #[serde(skip)]
    pub ignored_env: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7480)),
            data_dir: PathBuf::from("./sessiond-data"),
            api_keys: None,
            redis_url: None,
            redis_read_from: sessiond_store_redis::defaults::READ_FROM,
            redis: RedisConfig::default(),
            log: LogConfig::default(),
            session: SessionConfig::default(),
            limits: LimitsConfig::default(),
            embedded: EmbeddedConfig::default(),
            cache: CacheConfig::default(),
            tls: TlsConfig::default(),
            cookie: CookieConfig::default(),
            binding: crate::binding::BindingConfig::default(),
            guard: GuardConfig::default(),
            tier: TierConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            ignored_env: Vec::new(),
        }
    }
}

/// HTTPS: with both files set, the listener speaks only TLS (1.2 and 1.3, rustls).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate.
    pub key_file: Option<PathBuf>,
}

/// The session cookie (`__Host-sid`: `Secure`, `HttpOnly`, `SameSite=Lax`, `Path=/`, no
/// `Domain`), set on create when the backend asks, on rotate and cleared on logout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CookieConfig {
    /// Give the cookie a `Max-Age` (the session's absolute lifetime) so it survives a browser
    /// restart. Off by default: a session cookie ends with the browser (S15).
    pub persistent: bool,
    /// Also take a token from a `sid` cookie, for apps that cannot use the `__Host-` prefix.
    /// Off by default: any subdomain can plant a `sid` cookie, so it could keep a user logged
    /// out or log a user in as someone else; `__Host-sid` wins whenever both are sent.
    pub accept_legacy_sid: bool,
}

impl CookieConfig {
    /// The cookie names that carry a session token.
    pub fn names(&self) -> crate::extract::CookieNames {
        if self.accept_legacy_sid {
            crate::extract::CookieNames::AlsoLegacy
        } else {
            crate::extract::CookieNames::HostOnly
        }
    }
}

/// Counting invalid-token attempts per client (see `guard`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Invalid tokens one client may present per minute before it is reported (a warning and
    /// `sessiond_session_events_total{event="invalid_token_source_over_limit"}`); 0 turns
    /// the per-client count off.
    pub invalid_token_limit: u32,
    /// Once a client is over the limit, answer its refused tokens `429` for the rest of the
    /// minute (`401` from `GET /v1/auth`); its valid tokens are still served.
    pub reject_over_limit: bool,
    /// Header holding the client's address when sessiond sits behind a gateway that sets it
    /// (e.g. `X-Real-IP`, or `X-Forwarded-For`, whose rightmost untrusted entry is taken);
    /// empty: the TCP peer's address. Believed only from `trusted_proxies`.
    pub client_ip_header: Option<String>,
    /// Peers (addresses or CIDR networks) whose `client_ip_header` is believed; from any other
    /// peer the header is ignored. Default: loopback, where a gateway on the same host
    /// connects from.
    pub trusted_proxies: NameList,
}

impl GuardConfig {
    /// The trusted proxies, parsed (validated at load, so a bad entry cannot reach here).
    pub fn trusted(&self) -> crate::forwarded::TrustedProxies {
        crate::forwarded::TrustedProxies::parse(&self.trusted_proxies.names())
            .unwrap_or_else(|_| crate::forwarded::TrustedProxies::none())
    }
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            invalid_token_limit: 100,
            reject_over_limit: false,
            client_ip_header: None,
            trusted_proxies: NameList::List(vec!["127.0.0.0/8".into(), "::1".into()]),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` (default) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `sessiond=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines, coloured when writing to a terminal.
    Human,
    /// One JSON object per line.
    Json,
}

/// Session rules (see `Policy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Sliding idle timeout.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Absolute lifetime.
    #[serde(with = "duration")]
    pub absolute_timeout: Duration,
    /// Activity is written at most once per this interval.
    #[serde(with = "duration")]
    pub touch_interval: Duration,
    /// Smallest `ttlSeconds` accepted (smaller requests are raised to it).
    #[serde(with = "duration")]
    pub min_ttl: Duration,
    /// Most live sessions per user; 0 for no cap.
    pub max_per_user: u32,
    /// At the cap: `evict-oldest` or `reject`.
    pub at_cap: AtCap,
    /// The top-level `userData` keys a token holder may patch (`PATCH /v1/session`); any
    /// other key is the backend's alone (`403` from a holder). A TOML list, or comma-separated
    /// in `SESSIOND_SESSION__HOLDER_WRITABLE`; empty: a holder may patch nothing.
    pub holder_writable: NameList,
}

impl Default for SessionConfig {
    fn default() -> Self {
        let p = Policy::default();
        SessionConfig {
            idle_timeout: p.idle_timeout,
            absolute_timeout: p.absolute_timeout,
            touch_interval: p.touch_interval,
            min_ttl: p.min_ttl,
            max_per_user: p.limit.max_per_user.unwrap_or(0),
            at_cap: p.limit.at_cap,
            holder_writable: NameList::List(p.holder_writable),
        }
    }
}

/// Names as configured: a comma-separated string (the form an environment variable takes)
/// or a TOML list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum NameList {
    /// `a,b`.
    Joined(String),
    /// `["a", "b"]`.
    List(Vec<String>),
}

impl NameList {
    /// The names, trimmed, empty entries dropped.
    pub fn names(&self) -> Vec<String> {
        let raw: Vec<&str> = match self {
            NameList::Joined(s) => s.split(',').collect(),
            NameList::List(v) => v.iter().map(String::as_str).collect(),
        };
        raw.into_iter()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Serialize for NameList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

/// Bounds on client input and on time spent per request and connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Largest stored `userData` in bytes (413 beyond).
    pub max_user_data_bytes: usize,
    /// Largest stored `metadata` in bytes (413 beyond).
    pub max_metadata_bytes: usize,
    /// Deepest nesting of stored JSON (400 beyond).
    pub max_json_depth: usize,
    /// Largest request head (request line and headers) in bytes (431 beyond).
    pub max_header_bytes: usize,
    /// Most request headers (431 beyond).
    pub max_headers: usize,
    /// Longest a request may take end to end before it is answered 503.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Longest a client may take to send a request body once its head has arrived (408
    /// beyond: a body that stops arriving is the client's fault, never a 5xx). Capped at half
    /// of `request_timeout`, so a stalled body is always answered 408 before the request's own
    /// deadline answers 503.
    #[serde(with = "duration")]
    pub body_timeout: Duration,
    /// Longest a client may take to send a request head; also closes keep-alive connections
    /// that stay idle this long.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Most open client connections; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = DataLimits::default();
        LimitsConfig {
            max_body_bytes: 64 * 1024,
            max_user_data_bytes: d.max_user_data_bytes,
            max_metadata_bytes: d.max_metadata_bytes,
            max_json_depth: d.max_depth,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            request_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

/// The durable tier (`docs/design.md` §10). Off unless `postgres_url` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// PostgreSQL connection URL (`postgres://user:password@host:5432/db`); set, every
    /// lifecycle event and every session's latest state reach PostgreSQL through the store's
    /// outbox. Env `SESSIOND_TIER__POSTGRES_URL`.
    pub postgres_url: Option<PostgresUrl>,
    /// How often the shipper looks at an empty outbox (it ships at once while entries wait):
    /// the longest an event waits before PostgreSQL has it, when PostgreSQL is up.
    #[serde(with = "duration")]
    pub ship_interval: Duration,
    /// Most entries one shipment (one PostgreSQL transaction) carries.
    pub ship_batch: usize,
    /// Most entries the outbox holds while PostgreSQL cannot take them; past it, creates and
    /// `userData` changes answer 503 (revocations always work). On Redis Cluster the outbox
    /// is one stream per shard, each bounded by its share of this figure (at least 1,000, so
    /// one busy user has room): see `stack::outbox_per_stream`.
    pub max_outbox: u64,
    /// How long the audit trail keeps events (whole months are dropped once past it).
    #[serde(with = "duration")]
    pub retention: Duration,
    /// Most connections to PostgreSQL.
    pub pool_size: usize,
    /// Also record refused tokens and binding mismatches in the audit trail (best effort,
    /// bounded: under a flood of guesses, what does not fit is dropped and counted).
    pub audit_refusals: bool,
    /// PEM file of the certificate authorities trusted for TLS to PostgreSQL (a URL with
    /// `sslmode=require`); unset: the system's.
    pub tls_ca_file: Option<PathBuf>,
    /// Longest a logout, revocation or rotation waits for PostgreSQL to have it before it
    /// answers anyway (it is then shipped when PostgreSQL takes the outbox again).
    #[serde(with = "duration")]
    pub revocation_timeout: Duration,
    /// Sessions idle longer than this leave the hot store (kept in PostgreSQL); their next use
    /// brings them back with one PostgreSQL read. `0s` (the default) keeps every session hot.
    #[serde(with = "duration")]
    pub demote_after: Duration,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            postgres_url: None,
            ship_interval: Duration::from_millis(200),
            ship_batch: 1_000,
            max_outbox: 1_000_000,
            retention: Duration::from_secs(400 * 86_400),
            pool_size: 8,
            audit_refusals: false,
            tls_ca_file: None,
            revocation_timeout: Duration::from_secs(1),
            demote_after: Duration::ZERO,
        }
    }
}

/// A PostgreSQL URL. It may hold a password, so `Debug` shows only its scheme.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PostgresUrl(pub String);

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.0.split_once("://").map_or("?", |(s, _)| s);
        write!(f, "PostgresUrl({scheme}://<redacted>)")
    }
}

/// A Redis URL. It may hold a password, so `Debug` shows only its scheme.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self.0.split_once("://").map_or("?", |(s, _)| s);
        write!(f, "RedisUrl({scheme}://<redacted>)")
    }
}

/// Redis engine tuning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Prefix of every key sessiond writes.
    pub key_prefix: String,
    /// Longest wait for a Redis call before the request fails with 503.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long a write waits for every replica to acknowledge it; replicas that do not are
    /// not read from until they catch up.
    #[serde(with = "duration")]
    pub replica_sync_timeout: Duration,
    /// Replica acknowledgements create, rotate and revoke need before they answer (`WAIT`);
    /// with fewer they answer 503. 0: the primary is enough.
    pub min_replica_acks: usize,
    /// PEM file of the certificate authorities trusted for `rediss` URLs; unset: the system's.
    pub tls_ca_file: Option<PathBuf>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        use sessiond_store_redis::defaults;
        RedisConfig {
            key_prefix: defaults::KEY_PREFIX.into(),
            timeout: defaults::TIMEOUT,
            replica_sync_timeout: defaults::REPLICA_SYNC_TIMEOUT,
            min_replica_acks: defaults::MIN_REPLICA_ACKS,
            tls_ca_file: None,
        }
    }
}

/// Embedded store tuning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// How often the sweeper reclaims expired sessions from disk (each one an `expired`
    /// event). Expired sessions are never served in between; this bounds how long they take
    /// space. Redis reclaims its own by key expiry.
    #[serde(with = "duration")]
    pub sweep_interval: Duration,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            sweep_interval: Duration::from_secs(30),
        }
    }
}

/// The near cache: recently validated sessions answered from this process's memory, kept
/// true by Redis's invalidations (`CLIENT TRACKING`), with revocation still immediate on every
/// instance (`docs/design.md`, "The near cache"). Redis standalone or Sentinel only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Most sessions cached; `0` (the default) turns the cache off. Env
    /// `SESSIOND_CACHE__MAX_ENTRIES`.
    pub max_entries: usize,
    /// Most memory the cached records take, in bytes (records, keys and bookkeeping).
    pub max_bytes: usize,
    /// Time between heartbeats on the invalidation channel.
    #[serde(with = "duration")]
    pub heartbeat: Duration,
    /// The invalidation window: a revoke, logout, rotation or patch answers this long after
    /// Redis applied it, and a cache serves hits only while its channel answered a heartbeat
    /// sent within it. Longer than `heartbeat` plus a round trip to Redis.
    #[serde(with = "duration")]
    pub window: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        let d = sessiond_store_redis::CacheOptions::default();
        CacheConfig {
            max_entries: d.max_entries,
            max_bytes: d.max_bytes,
            heartbeat: d.heartbeat,
            window: d.window,
        }
    }
}

/// API keys as configured: a comma-separated string (the form `SESSIOND_API_KEYS` takes) or a
/// TOML list.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ApiKeyList {
    /// `key1,key2`.
    Joined(String),
    /// `["key1", "key2"]`.
    List(Vec<String>),
}

impl ApiKeyList {
    /// The individual keys, trimmed, empty entries dropped.
    pub fn keys(&self) -> Vec<String> {
        let raw: Vec<&str> = match self {
            ApiKeyList::Joined(s) => s.split(',').collect(),
            ApiKeyList::List(v) => v.iter().map(String::as_str).collect(),
        };
        raw.into_iter()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl std::fmt::Debug for ApiKeyList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeyList(<{} redacted>)", self.keys().len())
    }
}

impl Serialize for ApiKeyList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.keys().serialize(s)
    }
}

/// The environment keys (lowercase, after `SESSIOND_`, sections joined by `__`) of every
/// error in `e`, if each is an unknown key that came from the environment; `None` if any
/// error is something else (a bad value, an unknown key in the file).
fn unknown_env_keys(e: &figment::Error) -> Option<Vec<String>> {
    let mut keys = Vec::new();
    for error in e.clone() {
        let figment::error::Kind::UnknownField(field, _) = &error.kind else {
            return None;
        };
        let from_env = error
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment variable"));
        if !from_env {
            return None;
        }
        let mut path: Vec<String> = error.path.clone();
        if path.last() != Some(field) {
            path.push(field.clone());
        }
        keys.push(path.join("__").to_lowercase());
    }
    (!keys.is_empty()).then_some(keys)
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--log-format`, as `log.format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogOverride>,
}

/// `--log-format` in the shape of [`LogConfig`].
#[derive(Debug, Clone, Serialize)]
pub struct LogOverride {
    /// The format.
    pub format: LogFormat,
}

/// Configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key has a value of the wrong type, or is unknown (the message names it and its source).
    #[error(transparent)]
    Load(#[from] Box<figment::Error>),
    /// A value parsed but is not acceptable.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The offending key, as written in the TOML file.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Loads defaults, then `file` (if given, else `$SESSIOND_CONFIG` if set), then the
    /// process environment, then `overrides`; then validates.
    ///
    /// `SESSIOND_*` variables that name no setting are left out (and listed in
    /// [`Config::ignored_env`] for a warning once logging is up): the platform sets its own
    /// (Kubernetes sets `SESSIOND_PORT`, `SESSIOND_SERVICE_HOST` and more in every pod of a
    /// namespace with a Service named `sessiond`; wrapper scripts set `SESSIOND_BIN`). An
    /// unknown key in the TOML file still stops start-up: that file is sessiond's alone.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_FILE_ENV).map(PathBuf::from));
        Self::load_from(file.as_deref(), overrides, || Env::prefixed("SESSIOND_"))
    }

    /// [`load`](Self::load) with `env` as the environment layer (tests pass their own).
    pub fn load_from(
        file: Option<&Path>,
        overrides: &Overrides,
        env: impl Fn() -> Env,
    ) -> Result<Config, ConfigError> {
        // Keys (or whole sections) that name no setting.
        let mut ignored: Vec<String> = Vec::new();
        let skipped = |ignored: &[String], key: &str| {
            ignored.iter().any(|s| {
                key == s
                    || key
                        .strip_prefix(s.as_str())
                        .is_some_and(|r| r.starts_with("__"))
            })
        };
        loop {
            let skip = ignored.clone();
            // The filter sees keys as the environment spells them.
            let layer = env().filter(move |key| !skipped(&skip, &key.as_str().to_lowercase()));
            match Self::from_figment(&Self::figment(file, layer, overrides)) {
                Ok(mut config) => {
                    config.ignored_env = env()
                        .iter()
                        .map(|(key, _)| key.as_str().to_lowercase())
                        .filter(|key| skipped(&ignored, key))
                        .map(|key| format!("SESSIOND_{}", key.to_uppercase()))
                        .collect();
                    return Ok(config);
                }
                Err(ConfigError::Load(e)) => match unknown_env_keys(&e) {
                    // Each round leaves out at least one more variable, so this ends.
                    Some(keys) if keys.iter().any(|k| !ignored.contains(k)) => {
                        for key in keys {
                            if !ignored.contains(&key) {
                                ignored.push(key);
                            }
                        }
                    }
                    _ => return Err(ConfigError::Load(e)),
                },
                Err(e) => return Err(e),
            }
        }
    }

    /// The layered sources, with `env` as the environment layer.
    pub fn figment(file: Option<&Path>, env: Env, overrides: &Overrides) -> Figment {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            fig = fig.merge(Toml::file_exact(path));
        }
        fig.merge(env.ignore(&["config"]).split("__"))
            .merge(Serialized::defaults(overrides))
    }

    /// Extracts and validates.
    pub fn from_figment(fig: &Figment) -> Result<Config, ConfigError> {
        let config: Config = fig.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        };
        let s = &self.session;
        if s.idle_timeout < Duration::from_secs(1) {
            return invalid("session.idle_timeout", "must be at least 1s");
        }
        if s.absolute_timeout < s.idle_timeout {
            return invalid(
                "session.absolute_timeout",
                "must not be shorter than session.idle_timeout",
            );
        }
        if s.min_ttl.is_zero() || s.min_ttl > s.absolute_timeout {
            return invalid(
                "session.min_ttl",
                "must be between 1ms and session.absolute_timeout",
            );
        }
        let l = &self.limits;
        if l.max_body_bytes < 1024 {
            return invalid("limits.max_body_bytes", "must be at least 1024");
        }
        if l.max_header_bytes < 8192 {
            return invalid("limits.max_header_bytes", "must be at least 8192");
        }
        if l.max_headers == 0 {
            return invalid("limits.max_headers", "must be at least 1");
        }
        if l.max_json_depth == 0 || l.max_json_depth > 64 {
            return invalid("limits.max_json_depth", "must be between 1 and 64");
        }
        if l.request_timeout.is_zero()
            || l.header_read_timeout.is_zero()
            || l.body_timeout.is_zero()
        {
            return invalid(
                "limits.request_timeout",
                "timeouts must be greater than zero",
            );
        }
        if l.max_connections == 0 {
            return invalid("limits.max_connections", "must be at least 1");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid(
                "tls.cert_file",
                "tls.cert_file and tls.key_file go together",
            );
        }
        if self.embedded.sweep_interval.is_zero() {
            return invalid("embedded.sweep_interval", "must be greater than zero");
        }
        let c = &self.cache;
        if c.max_entries > 0 {
            if self.redis_url.is_none() {
                return invalid(
                    "cache.max_entries",
                    "the near cache is for Redis: the embedded store answers from memory already",
                );
            }
            if c.heartbeat.is_zero() || c.window <= c.heartbeat {
                return invalid(
                    "cache.window",
                    "cache.heartbeat must be greater than zero and cache.window longer",
                );
            }
            if c.max_bytes < 1024 * 1024 {
                return invalid("cache.max_bytes", "must be at least 1 MiB");
            }
        }
        if let Some(url) = &self.redis_url {
            sessiond_store_redis::Topology::parse(&url.0).map_err(|e| ConfigError::Invalid {
                key: "redis_url",
                reason: e.to_string(),
            })?;
        }
        crate::forwarded::TrustedProxies::parse(&self.guard.trusted_proxies.names()).map_err(
            |reason| ConfigError::Invalid {
                key: "guard.trusted_proxies",
                reason,
            },
        )?;
        if self.redis.key_prefix.is_empty() {
            // Revoke-everyone removes every key under the prefix's record and index
            // namespaces: with no prefix those are `s:*` and `u:*`, which other data may use.
            return invalid(
                "redis.key_prefix",
                "must not be empty (keys of other data could be taken for sessiond's)",
            );
        }
        if self.redis.key_prefix.contains(['{', '}']) {
            return invalid("redis.key_prefix", "must not contain { or }");
        }
        if self.redis.timeout.is_zero() {
            return invalid("redis.timeout", "must be greater than zero");
        }
        if let Some(ca) = &self.redis.tls_ca_file
            && !ca.is_file()
        {
            return invalid("redis.tls_ca_file", "is not a readable file");
        }
        if self.redis.replica_sync_timeout < Duration::from_millis(1) {
            // `WAIT` with 0 ms would wait forever.
            return invalid("redis.replica_sync_timeout", "must be at least 1ms");
        }
        let t = &self.tier;
        if t.ship_interval.is_zero() || t.ship_interval > Duration::from_secs(60) {
            return invalid("tier.ship_interval", "must be between 1ms and 60s");
        }
        if !(1..=10_000).contains(&t.ship_batch) {
            return invalid("tier.ship_batch", "must be between 1 and 10000");
        }
        if t.max_outbox < 1_000 {
            return invalid("tier.max_outbox", "must be at least 1000");
        }
        if t.retention < Duration::from_secs(86_400) {
            return invalid("tier.retention", "must be at least 1d");
        }
        if t.pool_size == 0 {
            return invalid("tier.pool_size", "must be at least 1");
        }
        if let Some(ca) = &t.tls_ca_file
            && !ca.is_file()
        {
            return invalid("tier.tls_ca_file", "is not a readable file");
        }
        if !t.demote_after.is_zero() && t.demote_after < Duration::from_secs(1) {
            return invalid("tier.demote_after", "must be 0s (off) or at least 1s");
        }
        if t.revocation_timeout > self.limits.request_timeout / 2 {
            return invalid(
                "tier.revocation_timeout",
                "must be at most half of limits.request_timeout",
            );
        }
        if let Some(keys) = &self.api_keys {
            let keys = keys.keys();
            if keys.is_empty() {
                return invalid("api_keys", "is set but holds no key");
            }
            for key in &keys {
                crate::api_keys::ApiKeys::parse_one(key).map_err(|reason| {
                    ConfigError::Invalid {
                        key: "api_keys",
                        reason,
                    }
                })?;
            }
        }
        tracing_subscriber_filter_check(&self.log.level).map_err(|reason| {
            ConfigError::Invalid {
                key: "log.level",
                reason,
            }
        })?;
        Ok(())
    }

    /// The session policy this configuration describes.
    pub fn policy(&self) -> Policy {
        let s = &self.session;
        let l = &self.limits;
        Policy {
            idle_timeout: s.idle_timeout,
            absolute_timeout: s.absolute_timeout,
            touch_interval: s.touch_interval,
            min_ttl: s.min_ttl,
            limit: SessionLimit {
                max_per_user: (s.max_per_user > 0).then_some(s.max_per_user),
                at_cap: s.at_cap,
            },
            data: DataLimits {
                max_user_data_bytes: l.max_user_data_bytes,
                max_metadata_bytes: l.max_metadata_bytes,
                max_depth: l.max_json_depth,
            },
            holder_writable: s.holder_writable.names(),
        }
    }
}

/// Log filter syntax is checked where logging is set up (the binary); here only emptiness.
fn tracing_subscriber_filter_check(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(())
    }
}

/// Durations as either whole seconds (`30`) or human-readable text (`30s`, `24h`, `500ms`).
pub(crate) mod duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format_args!(
                    "`{t}` is not a duration ({e}); write e.g. 30s, 15m, 24h or a number of seconds"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    #[allow(clippy::result_large_err)] // figment's own error type, in a test helper
    fn load_with(env: &[(&str, &str)], toml: Option<&str>) -> Result<Config, ConfigError> {
        let mut result = None;
        Jail::expect_with(|jail| {
            for (k, v) in env {
                jail.set_env(k, v);
            }
            let file = toml.map(|t| {
                jail.create_file("sessiond.toml", t)
                    .map(|_| PathBuf::from("sessiond.toml"))
            });
            let file = file.transpose()?;
            result = Some(Config::load_from(
                file.as_deref(),
                &Overrides::default(),
                || Env::prefixed("SESSIOND_"),
            ));
            Ok(())
        });
        result.expect("jail ran")
    }

    #[test]
    fn defaults_are_valid() {
        let c = load_with(&[], None).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.to_string(), "127.0.0.1:7480");
    }

    #[test]
    fn env_names_of_the_contract() {
        let c = load_with(
            &[
                ("SESSIOND_LISTEN", "0.0.0.0:9000"),
                ("SESSIOND_DATA_DIR", "/tmp/x"),
                (
                    "SESSIOND_API_KEYS",
                    "first-key-0123456789,second-key-0123456789",
                ),
                ("SESSIOND_SESSION__IDLE_TIMEOUT", "30m"),
                ("SESSIOND_SESSION__TOUCH_INTERVAL", "5"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.api_keys.unwrap().keys().len(), 2);
        assert_eq!(c.session.idle_timeout, Duration::from_secs(1800));
        assert_eq!(c.session.touch_interval, Duration::from_secs(5));
    }

    #[test]
    fn file_then_env() {
        let c = load_with(
            &[("SESSIOND_SESSION__MAX_PER_USER", "7")],
            Some("[session]\nmax_per_user = 3\nat_cap = \"reject\"\n"),
        )
        .unwrap();
        assert_eq!(c.session.max_per_user, 7);
        assert_eq!(c.session.at_cap, AtCap::Reject);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load_with(&[("SESSIOND_SESSION__IDLE_TIMEOUT", "soon")], None).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("idle_timeout"), "{e}");
        let e = load_with(&[("SESSIOND_LISTEN", "nowhere")], None).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("listen"), "{e}");
        let e = load_with(&[], Some("[sesion]\nidle_timeout = \"1h\"\n")).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("sesion"), "{e}");
        let e = load_with(&[], Some("[session]\nidle_timout = \"1h\"\n")).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("idle_timout"), "{e}");
        let e = load_with(&[("SESSIOND_API_KEYS", "short")], None).unwrap_err();
        assert!(e.to_string().to_lowercase().contains("api_keys"), "{e}");
        let e = load_with(&[("SESSIOND_SESSION__ABSOLUTE_TIMEOUT", "1m")], None).unwrap_err();
        assert!(
            e.to_string()
                .to_lowercase()
                .contains("session.absolute_timeout"),
            "{e}"
        );
    }

    #[test]
    fn the_near_cache_is_set_from_the_environment_and_needs_redis() {
        let c = load_with(
            &[
                ("SESSIOND_REDIS_URL", "redis://127.0.0.1:6379"),
                ("SESSIOND_CACHE__MAX_ENTRIES", "50000"),
                ("SESSIOND_CACHE__WINDOW", "40ms"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(c.cache.max_entries, 50_000);
        assert_eq!(c.cache.window, Duration::from_millis(40));
        assert_eq!(
            load_with(&[], None).unwrap().cache.max_entries,
            0,
            "off by default"
        );
        let e = load_with(&[("SESSIOND_CACHE__MAX_ENTRIES", "10")], None).unwrap_err();
        assert!(e.to_string().contains("cache.max_entries"), "{e}");
        let e = load_with(
            &[
                ("SESSIOND_REDIS_URL", "redis://127.0.0.1:6379"),
                ("SESSIOND_CACHE__MAX_ENTRIES", "10"),
                ("SESSIOND_CACHE__WINDOW", "5ms"),
            ],
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cache.window"), "{e}");
    }

    #[test]
    fn redis_settings() {
        let c = load_with(
            &[
                (
                    "SESSIOND_REDIS_URL",
                    "redis-sentinel://:pw@127.0.0.1:26379/?service=m",
                ),
                ("SESSIOND_REDIS_READ_FROM", "primary"),
                ("SESSIOND_REDIS__MIN_REPLICA_ACKS", "1"),
            ],
            None,
        )
        .unwrap();
        assert!(c.redis_url.is_some());
        assert!(
            !format!("{c:?}").contains("pw"),
            "the Redis password must not show in Debug"
        );
        assert_eq!(c.redis.min_replica_acks, 1);
        assert_eq!(c.redis_read_from, sessiond_store_redis::ReadFrom::Primary);
        let e = load_with(&[("SESSIOND_REDIS_URL", "http://x")], None).unwrap_err();
        assert!(e.to_string().contains("redis_url"), "{e}");
        let e = load_with(&[("SESSIOND_REDIS__KEY_PREFIX", "")], None).unwrap_err();
        assert!(e.to_string().contains("redis.key_prefix"), "{e}");
        let e = load_with(&[("SESSIOND_REDIS_READ_FROM", "nearest")], None).unwrap_err();
        assert!(
            e.to_string().to_lowercase().contains("redis_read_from"),
            "{e}"
        );
    }

    #[test]
    fn unknown_environment_variables_are_left_out_and_listed() {
        // What Kubernetes sets in every pod of a namespace with a Service named `sessiond`,
        // a wrapper script's own variable, and a misspelt nested key.
        let c = load_with(
            &[
                ("SESSIOND_SERVICE_HOST", "10.0.0.1"),
                ("SESSIOND_SERVICE_PORT", "7480"),
                ("SESSIOND_PORT", "tcp://10.0.0.1:7480"),
                ("SESSIOND_PORT_7480_TCP", "tcp://10.0.0.1:7480"),
                ("SESSIOND_PORT_7480_TCP_PROTO", "tcp"),
                ("SESSIOND_PORT_7480_TCP_PORT", "7480"),
                ("SESSIOND_PORT_7480_TCP_ADDR", "10.0.0.1"),
                ("SESSIOND_BIN", "/usr/local/bin/sessiond"),
                ("SESSIOND_SESION__IDLE_TIMEOUT", "1h"),
                ("SESSIOND_SESSION__IDLE_TIMEOUT", "30m"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            c.session.idle_timeout,
            Duration::from_secs(1800),
            "known keys apply"
        );
        let mut ignored = c.ignored_env.clone();
        ignored.sort();
        assert_eq!(
            ignored,
            vec![
                "SESSIOND_BIN",
                "SESSIOND_PORT",
                "SESSIOND_PORT_7480_TCP",
                "SESSIOND_PORT_7480_TCP_ADDR",
                "SESSIOND_PORT_7480_TCP_PORT",
                "SESSIOND_PORT_7480_TCP_PROTO",
                "SESSIOND_SERVICE_HOST",
                "SESSIOND_SERVICE_PORT",
                "SESSIOND_SESION__IDLE_TIMEOUT",
            ]
        );
        // A bad value of a known key still stops start-up.
        let e = load_with(
            &[("SESSIOND_PORT", "7480"), ("SESSIOND_LISTEN", "nowhere")],
            None,
        )
        .unwrap_err();
        assert!(e.to_string().to_lowercase().contains("listen"), "{e}");
    }

    #[test]
    fn api_keys_never_printed() {
        let list = ApiKeyList::Joined("secret-key-0123456789".into());
        assert!(!format!("{list:?}").contains("secret"));
    }
}
