//! The store conformance suite on Redis: standalone, and a three-primary Cluster.
#![allow(clippy::expect_used, reason = "test set-up fails the test")]

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::SessionStore;
use sessiond_store_redis::{RedisOptions, RedisStore, Topology};
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
