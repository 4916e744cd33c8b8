//! The sessiond HTTP service: configuration, the v1 API of docs/api.md, errors, metrics, serving.
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
//! - [`credentials`]: the caller as an extractor ([`credentials::Holder`],
//!   [`credentials::Backend`], [`credentials::ClientAddr`]): the invalid-token guard, the key
//!   check and the binding check, with their events, before any body byte is read.
//! - [`extract`]: token, key and `If-Match` parsing, and JSON bodies, shape-checked before any
//!   store access.
//! - [`cookie`]: the session cookie: one parser of the `Cookie` header, and `Set-Cookie`.
//! - [`guard`]: invalid-token attempts counted per client (S19).
//! - [`forwarded`]: the client's address, from the peer or a trusted proxy's header.
//! - [`binding`]: comparing each request's client with the login's (S20).
//! - [`document`]: the JSON shapes of the API, re-exported from `sessiond_wire` (shared with
//!   clients).
//! - [`error`]: [`ApiError`], the single mapping to problem+json answers.
//! - [`events`]: the metrics and log event sinks.
//! - [`metrics`]: every exported metric, and the request-tracking middleware.
//! - [`stack`]: the store stack, built once from typed configuration.
//! - [`instrumented`]: the stack's layer that times store operations.
//! - [`sweeper`]: reclaims expired sessions, each reported as an event.
//! - [`tier`]: the durable tier: connecting it, the shipper of the outbox, retention.
//! - [`journal`]: revocations the durable tier did not get in time, on local disk.
//! - [`tiered`]: the stack's layer that reads through to the durable tier on a miss.
//! - [`trust`]: whether read-through may trust the durable tier: the journal marks in Redis
//!   and the processes' leases in PostgreSQL.
//! - [`tls`]: HTTPS on the listener.
//! - `windows`: bounded per-key time windows with constant-time eviction (the guard, the log).
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers.
//! - [`serve`]: the accept loop with connection limits and graceful shutdown.

pub mod api_keys;
pub mod app;
pub mod binding;
pub mod config;
pub mod cookie;
pub mod credentials;
pub mod error;
pub mod events;
pub mod extract;
pub mod forwarded;
pub mod guard;
pub mod instrumented;
pub mod journal;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod serve;
pub mod stack;
pub mod state;
pub mod sweeper;
pub mod tier;
pub mod tiered;
pub mod tls;
pub mod trust;
mod windows;

/// The JSON documents of the API and the problem document, shared with clients
/// (`sessiond_wire`).
pub mod document {
    pub use sessiond_wire::ProblemDocument;
    pub use sessiond_wire::document::*;
}

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use sessiond_core::{Clock, EventSink, Fanout, SessionStore, Sessions, SystemClock};
use tokio::net::TcpListener;

pub use app::app;
pub use config::Config;
pub use error::ApiError;
pub use state::{App, AppState};

/// Opens the configured engine (with the near cache in front when it is configured, so a
/// revocation waits out its window), with nothing else stacked on it: what the operator's
/// commands (`sessiond revoke`) act on. Returns the store and the name of its engine (`embedded`,
/// `standalone`, `sentinel`, `cluster`).
pub async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn SessionStore>, &'static str)> {
    let store_config = stack::StoreConfig::from_config(config)?;
    let engine = stack::open_engine(&store_config).await?;
    Ok((engine.store, store_config.kind()))
}

/// What a process embedding sessiond (or a test) supplies beyond the configuration.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// Where every decision reads the time (expiry, activity, the sweeper, cookies).
    pub clock: Arc<dyn Clock>,
    /// Event sinks besides the metrics and the log, in order.
    pub events: Vec<Arc<dyn EventSink>>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            clock: Arc::new(SystemClock),
            events: Vec::new(),
        }
    }
}

/// Opens the configured store, serves the API on `listener` until `shutdown` completes, then
/// drains in-flight requests and closes the store cleanly.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with(config, Hooks::default(), listener, shutdown).await
}

/// [`run`] with the clock and extra event sinks of `hooks`.
pub async fn run_with(
    config: Config,
    hooks: Hooks,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::new());
    let store_config = stack::StoreConfig::from_config(&config)?;
    let engine_name = store_config.kind();
    let durable = tier::connect(&config, &*hooks.clock).await?;
    let stack::Engine {
        store: engine,
        cache,
    } = stack::open_engine(&store_config).await?;
    if let Some(cache) = cache {
        metrics.watch_cache(cache);
    }
    let trust = match &durable {
        Some(durable) => {
            let journal = Arc::new(
                journal::Journal::open(&config.data_dir).context("opening the tier journal")?,
            );
            // Every session a process could have revoked has expired once this has passed.
            let forget_after = config.session.absolute_timeout + trust::RENEW_EVERY;
            let trust = trust::Trust::new(
                &config.data_dir,
                journal,
                engine.clone(),
                durable.clone(),
                forget_after,
            )
            .context("reading this process's instance id")?;
            if let Err(e) = trust.renew().await {
                tracing::warn!(
                    error = %e,
                    "the first lease renewal failed: read-through waits for the next"
                );
            }
            Some(Arc::new(trust))
        }
        None => None,
    };
    let store = stack::build_store(engine, durable.clone().zip(trust.clone()), metrics.clone());
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
    let mut sinks = Fanout::new()
        .with(Arc::new(events::MetricsSink(metrics.clone())))
        .with(Arc::new(events::LogSink::new()));
    if let Some(tier) = durable.as_ref().filter(|_| config.tier.audit_refusals) {
        sinks = sinks.with(Arc::new(tier::RefusalSink::start(
            tier.clone(),
            metrics.clone(),
        )));
    }
    for sink in hooks.events {
        sinks = sinks.with(sink);
    }
    let sessions = Sessions::new(store.clone(), config.policy(), hooks.clock.clone())
        .with_events(Arc::new(sinks));
    let sweeper = sweeper::Sweeper::start(sessions.clone(), config.embedded.sweep_interval);
    let tier = durable
        .zip(trust)
        .map(|(durable, trust)| tier::Tier::new(durable, trust));
    // An ended session's durable copy stays final for as long as any copy of it could still
    // be live: a day past the longest absolute timeout.
    let sessions_kept = config.session.absolute_timeout + std::time::Duration::from_secs(86_400);
    let shipper = tier.as_ref().map(|t| {
        tier::Shipper::start(
            store.clone(),
            t,
            &config.tier,
            sessions_kept,
            hooks.clock.clone(),
            metrics.clone(),
        )
    });
    let state = AppState(Arc::new(
        App::new(&config, sessions, api_keys, metrics, engine_name).with_tier(tier.clone()),
    ));
    let router = app(state);
    let tls = tls::acceptor(&config.tls)?;
    tracing::info!(
        listen = %listener.local_addr().context("reading the listener's address")?,
        scheme = if tls.is_some() { "https" } else { "http" },
        store = engine_name,
        tier = if tier.is_some() { "postgres" } else { "none" },
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
    drop(sweeper);
    if let Some(shipper) = shipper {
        shipper.stop().await;
    }
    store.close().await.context("closing the session store")?;
    tracing::info!("sessiond stopped");
    Ok(())
}
