//! The store stack, built once at start-up from typed configuration.
//!
//! ```text
//! Sessions (rules, events)
//!   → instrumentation (store operation latency)          stack::build_store
//!     → read-through to the durable tier, on a miss       crate::tiered (with the tier)
//!       → near cache, on Redis with cache.max_entries     sessiond_store_redis::cache
//!         → engine: embedded | Redis (standalone, Sentinel, Cluster)   stack::open_engine
//!             └ outbox ──(shipper, crate::tier)──→ durable tier (PostgreSQL)
//! ```
//!
//! With a durable tier the engine keeps an outbox: each change writes its event and the
//! session's new state in the same atomic write, and the shipper moves them to the tier.
//!
//! Each capability over the engine is a store that wraps a store
//! ([`StoreWrapper`](sessiond_core::wrap::StoreWrapper)), stacked here and nowhere else. The
//! near cache sits right on the Redis engine, because it reads with the engine's keys and
//! codec on a connection of its own; the operator's commands open it too, so their
//! revocations wait out its invalidation window like the service's.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use sessiond_core::SessionStore;
use sessiond_core::tier::DurableTier;
use sessiond_core::wrap::Wrapped;
use sessiond_store_embedded::{EmbeddedOptions, EmbeddedStore};
use sessiond_store_redis::{
    CacheOptions, CacheProbe, CachingStore, RedisOptions, RedisStore, TlsRoots, Topology,
};

use crate::config::Config;
use crate::instrumented::InstrumentedStore;
use crate::metrics::Metrics;
use crate::tiered::TieredStore;
use crate::trust::Trust;

/// Which engine holds the sessions, with everything it needs to open.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded store in a data directory.
    Embedded {
        /// The directory.
        data_dir: PathBuf,
        /// Its tuning.
        options: EmbeddedOptions,
    },
    /// Redis, in any topology, with the near cache in front when it is configured.
    Redis(Box<RedisOptions>, Option<CacheOptions>),
}

impl StoreConfig {
    /// The engine `config` describes: Redis when `redis_url` is set, else the embedded store.
    /// Reads `redis.tls_ca_file`.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let Some(url) = &config.redis_url else {
            return Ok(StoreConfig::Embedded {
                data_dir: config.data_dir.clone(),
                options: EmbeddedOptions {
                    // With a durable tier, every change is also written to the outbox.
                    outbox: config
                        .tier
                        .postgres_url
                        .is_some()
                        .then_some(config.tier.max_outbox),
                    ..EmbeddedOptions::default()
                },
            });
        };
        let topology = Topology::parse(&url.0).context("redis_url")?;
        let tls_roots = match &config.redis.tls_ca_file {
            Some(path) => {
                TlsRoots(Some(std::fs::read(path).with_context(|| {
                    format!("reading redis.tls_ca_file {}", path.display())
                })?))
            }
            None => TlsRoots::default(),
        };
        let cache = (config.cache.max_entries > 0).then_some(CacheOptions {
            max_entries: config.cache.max_entries,
            max_bytes: config.cache.max_bytes,
            heartbeat: config.cache.heartbeat,
            window: config.cache.window,
        });
        Ok(StoreConfig::Redis(
            Box::new(RedisOptions {
                key_prefix: config.redis.key_prefix.clone(),
                timeout: config.redis.timeout,
                read_from: config.redis_read_from,
                replica_sync_timeout: config.redis.replica_sync_timeout,
                min_replica_acks: config.redis.min_replica_acks,
                tls_roots,
                outbox_per_stream: config
                    .tier
                    .postgres_url
                    .is_some()
                    .then(|| outbox_per_stream(config.tier.max_outbox, &topology)),
                ..RedisOptions::new(topology)
            }),
            cache,
        ))
    }

    /// The engine's name in logs and metrics: `embedded`, `standalone`, `sentinel` or
    /// `cluster`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::Embedded { .. } => "embedded",
            StoreConfig::Redis(options, _) => options.topology.kind(),
        }
    }
}

/// The bound of each outbox stream on Redis, for `tier.max_outbox` in all. Standalone and
/// Sentinel keep one stream: all of it. Cluster keeps one per shard: its share of the whole
/// (users spread evenly over the 4096 shards), and at least 1,000 entries, so one user making
/// many changes while PostgreSQL is slow is not refused long before the outbox as a whole is
/// full.
pub fn outbox_per_stream(max_outbox: u64, topology: &Topology) -> u64 {
    match topology {
        Topology::Cluster(_) => max_outbox
            .div_ceil(sessiond_core::Shard::COUNT as u64)
            .max(1_000),
        Topology::Standalone(_) | Topology::Sentinel { .. } => max_outbox,
    }
}

/// The engine, with the near cache in front of it when configured: what the operator's
/// commands (`sessiond revoke`) act on, and what [`build_store`] stacks the rest on.
#[derive(Debug)]
pub struct Engine {
    /// The store.
    pub store: Arc<dyn SessionStore>,
    /// The near cache's counters, when there is one.
    pub cache: Option<CacheProbe>,
}

/// Opens the engine (and the near cache over Redis when it is configured).
pub async fn open_engine(config: &StoreConfig) -> anyhow::Result<Engine> {
    Ok(match config {
        StoreConfig::Embedded { data_dir, options } => Engine {
            store: Arc::new(
                EmbeddedStore::open(data_dir, *options)
                    .context("opening the embedded session store")?,
            ),
            cache: None,
        },
        StoreConfig::Redis(options, cache) => {
            let redis = RedisStore::connect(options)
                .await
                .context("connecting to Redis")?;
            match cache {
                None => Engine {
                    store: Arc::new(redis),
                    cache: None,
                },
                Some(cache) => {
                    let cached = CachingStore::new(Arc::new(redis), *cache)
                        .context("starting the near cache")?;
                    let probe = cached.probe();
                    Engine {
                        store: Arc::new(Wrapped(cached)),
                        cache: Some(probe),
                    }
                }
            }
        }
    })
}

/// The stack over `engine`, as the service uses it, with `tier` behind it when there is one
/// (read through while `trust` says the tier can be trusted).
pub fn build_store(
    engine: Arc<dyn SessionStore>,
    tier: Option<(Arc<dyn DurableTier>, Arc<Trust>)>,
    metrics: Arc<Metrics>,
) -> Arc<dyn SessionStore> {
    let engine: Arc<dyn SessionStore> = match tier {
        Some((tier, trust)) => Arc::new(Wrapped(TieredStore::new(
            engine,
            tier,
            trust,
            metrics.clone(),
        ))),
        None => engine,
    };
    Arc::new(Wrapped(InstrumentedStore::new(engine, metrics)))
}
