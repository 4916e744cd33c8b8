//! The sessiond HTTP service: configuration, the v1 API of API.md, errors, metrics, serving.
//!
//! The binary parses flags, sets up logging and binds the listener; everything else starts
//! at [`run`].
//!
//! # Layout
//!
//! - [`config`]: the typed, layered, validated [`Config`].
//! - [`api_keys`]: backend API keys, held as digests and compared in constant time.
//! - [`state`]: [`AppState`], what every handler shares.
//! - [`app`]: the router and the layers every request passes (timeouts, limits, headers).
//! - [`routes`]: the handlers, one module per kind of caller.
//! - [`extract`]: credentials and bodies, shape-checked before any store access.
//! - [`document`]: the JSON shapes of the API.
//! - [`error`]: [`ApiError`], the single mapping to problem+json answers.
//! - [`metrics`]: every exported metric, and the request-tracking middleware.
//! - [`instrumented`]: a store wrapper that times store operations.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers.
//! - [`serve`]: the accept loop with connection limits and graceful shutdown.

pub mod api_keys;
pub mod app;
pub mod binding;
pub mod config;
pub mod cookie;
pub mod document;
pub mod error;
pub mod extract;
pub mod guard;
pub mod instrumented;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod state;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use sessiond_core::{SessionStore, Sessions, SystemClock};
use sessiond_store_embedded::{EmbeddedOptions, EmbeddedStore};
use sessiond_store_redis::{RedisOptions, RedisStore, TlsRoots, Topology};
use tokio::net::TcpListener;

pub use app::app;
pub use config::Config;
pub use error::ApiError;
pub use state::{App, AppState};

/// Opens the configured store: Redis when `redis_url` is set, else the embedded store. Also
/// what the operator's commands (`sessiond revoke`) act on. Returns the store and the name of
/// its engine (`embedded`, `standalone`, `sentinel`, `cluster`).
pub async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn SessionStore>, &'static str)> {
    let options = EmbeddedOptions {
        sweep_interval: config.embedded.sweep_interval,
        ..EmbeddedOptions::default()
    };
    let (engine, engine_name): (Arc<dyn SessionStore>, &'static str) = match &config.redis_url {
        Some(url) => {
            let topology = Topology::parse(&url.0)?;
            let kind = topology.kind();
            let options = RedisOptions {
                key_prefix: config.redis.key_prefix.clone(),
                timeout: config.redis.timeout,
                read_from_replicas: config.redis_read_from.as_deref() != Some("primary"),
                replica_sync_timeout: config.redis.replica_sync_timeout,
                min_replica_acks: config.redis.min_replica_acks,
                tls_roots: TlsRoots(match &config.redis.tls_ca_file {
                    Some(path) => Some(std::fs::read(path).with_context(|| {
                        format!("reading redis.tls_ca_file {}", path.display())
                    })?),
                    None => None,
                }),
                ..RedisOptions::new(topology)
            };
            let store = RedisStore::connect(&options)
                .await
                .context("connecting to Redis")?;
            (Arc::new(store), kind)
        }
        None => {
            let store = EmbeddedStore::open(&config.data_dir, options)
                .context("opening the embedded session store")?;
            (Arc::new(store), "embedded")
        }
    };
    Ok((engine, engine_name))
}

/// Opens the configured store, serves the API on `listener` until `shutdown` completes, then
/// drains in-flight requests and closes the store cleanly.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::new());
    let (engine, engine_name) = open_store(&config).await?;
    let store = Arc::new(instrumented::InstrumentedStore::new(
        engine.clone(),
        metrics.clone(),
    ));
    let api_keys = match &config.api_keys {
        Some(list) => api_keys::ApiKeys::from_config(&list.keys())
            .map_err(|reason| anyhow::anyhow!("api_keys: {reason}"))?,
        None => {
            let (keys, path) = api_keys::ApiKeys::load_or_generate(&config.data_dir)
                .context("preparing the generated API key")?;
            tracing::info!(
                path = %path.display(),
                "SESSIOND_API_KEYS is not set: backends authenticate with the key in this file"
            );
            keys
        }
    };
    let sessions = Sessions::new(store, config.policy(), Arc::new(SystemClock));
    let state = AppState(Arc::new(App {
        sessions,
        api_keys,
        metrics,
        engine: engine_name,
        request_timeout: config.limits.request_timeout,
        guard: guard::InvalidTokenGuard::new(&config.guard),
        persistent_cookies: config.cookie.persistent,
        binding: binding::Binding::new(config.binding),
    }));
    let router = app(state, config.limits.max_body_bytes);
    let tls = tls::acceptor(&config.tls)?;
    tracing::info!(
        listen = %listener.local_addr().context("reading the listener's address")?,
        scheme = if tls.is_some() { "https" } else { "http" },
        store = engine_name,
        data_dir = %config.data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "sessiond is serving"
    );
    serve::serve(
        listener,
        router,
        &config.limits,
        tls,
        shutdown,
        config.shutdown_timeout,
    )
    .await
    .context("serving HTTP")?;
    engine.close().await.context("closing the session store")?;
    tracing::info!("sessiond stopped");
    Ok(())
}
