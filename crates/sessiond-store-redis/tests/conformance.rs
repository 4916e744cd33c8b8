//! The store conformance suite on Redis: standalone, Sentinel, a three-primary Cluster, and
//! the near cache over standalone and over Sentinel.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test set-up fails the test"
)]

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::SessionStore;
use sessiond_core::wrap::Wrapped;
use sessiond_store_redis::{CacheOptions, CachingStore, RedisOptions, RedisStore, Topology};
use sessiond_testkit::guarded::Guarded;
use sessiond_testkit::redis::{RedisCluster, RedisServer};

fn options(url: &str) -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_secs(2),
        ..RedisOptions::new(Topology::parse(url).expect("a valid URL"))
    }
}

mod standalone {
    use super::*;

    async fn store() -> Arc<dyn SessionStore> {
        let server = RedisServer::start();
        let store = RedisStore::connect(&options(&server.url()))
            .await
            .expect("connect");
        Guarded::wrap(Arc::new(store), server)
    }

    sessiond_testkit::store_conformance_tests!(store);
}

mod sentinel {
    use super::*;
    use sessiond_testkit::redis::RedisSentinel;

    async fn store() -> Arc<dyn SessionStore> {
        let deployment = tokio::task::spawn_blocking(|| RedisSentinel::start(2))
            .await
            .expect("start primary, replicas and sentinels");
        let store = RedisStore::connect(&options(&deployment.url()))
            .await
            .expect("connect");
        Guarded::wrap(Arc::new(store), deployment)
    }

    sessiond_testkit::store_conformance_tests!(store);
}

mod cluster {
    use super::*;

    async fn store() -> Arc<dyn SessionStore> {
        let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
            .await
            .expect("start the cluster");
        let store = RedisStore::connect(&options(&cluster.url()))
            .await
            .expect("connect");
        Guarded::wrap(Arc::new(store), cluster)
    }

    sessiond_testkit::store_conformance_tests!(store);
}

/// The near cache over the store at `url`, once it serves hits (so the suite runs through
/// the cache, not around it while its channel opens).
async fn cached(url: &str) -> Arc<dyn SessionStore> {
    let redis = RedisStore::connect(&options(url)).await.expect("connect");
    let cache = CachingStore::new(
        Arc::new(redis),
        CacheOptions {
            max_entries: 10_000,
            ..CacheOptions::default()
        },
    )
    .expect("start the cache");
    for _ in 0..500 {
        if cache.serving() {
            return Arc::new(Wrapped(cache));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the near cache's channel did not answer a heartbeat in 5 s");
}

mod cached_standalone {
    use super::*;

    async fn store() -> Arc<dyn SessionStore> {
        let server = RedisServer::start();
        let store = cached(&server.url()).await;
        Guarded::wrap(store, server)
    }

    sessiond_testkit::store_conformance_tests!(store);
}

mod cached_sentinel {
    use super::*;
    use sessiond_testkit::redis::RedisSentinel;

    async fn store() -> Arc<dyn SessionStore> {
        let deployment = tokio::task::spawn_blocking(|| RedisSentinel::start(2))
            .await
            .expect("start primary, replicas and sentinels");
        let store = cached(&deployment.url()).await;
        Guarded::wrap(store, deployment)
    }

    sessiond_testkit::store_conformance_tests!(store);
}
