//! Revoking everyone (`SessionStore::delete_all`) on Redis removes sessiond's records and
//! indexes and nothing else: keys of another application under the same prefix, or that merely
//! look like sessiond's, survive it and are not counted as sessions. Standalone and Cluster.
#![allow(clippy::expect_used, reason = "test set-up fails the test")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use sessiond_core::{
    NewSession, Origin, Policy, SessionStore, Sessions, SystemClock, Token, UserId,
};
use sessiond_store_redis::{RedisOptions, RedisStore, Topology};
use sessiond_testkit::redis::{RedisCluster, RedisServer, cli};

/// Keys under sessiond's prefix (`sd:`) that are not its own: a plain key, a short record, a
/// record one character too long, a bad shard, an index whose shard is not its user's, an empty
/// index, another namespace.
fn foreign_keys(user: &UserId) -> Vec<String> {
    let other_shard = if user.shard().as_str() == "AA" {
        "AB"
    } else {
        "AA"
    };
    vec![
        "sd:s:other-app".to_owned(),
        "sd:s:{ab}short".to_owned(),
        "sd:s:{ab}AAAAAAAAAAAAAAA".to_owned(),
        "sd:s:{!!}AAAAAAAAAAAAAA".to_owned(),
        format!("sd:u:{{{other_shard}}}{}", user.as_str()),
        "sd:u:{ab}".to_owned(),
        "sd:u:plain-user".to_owned(),
        "sd:x:{ab}AAAAAAAAAAAAAA".to_owned(),
    ]
}

async fn create_three(store: Arc<dyn SessionStore>) -> (Sessions, Vec<Token>) {
    let sessions = Sessions::new(store, Policy::default(), Arc::new(SystemClock));
    let mut tokens = Vec::new();
    for user in ["alice", "bob", "urn:acme:user:42"] {
        let issued = sessions
            .create(
                NewSession {
                    user_id: UserId::parse(user).expect("valid user id"),
                    user_data: Map::new(),
                    metadata: Map::new(),
                    ttl: None,
                    replaces: None,
                },
                Origin::CLI,
            )
            .await
            .expect("create");
        tokens.push(issued.token);
    }
    (sessions, tokens)
}

fn options(url: &str) -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_secs(2),
        ..RedisOptions::new(Topology::parse(url).expect("a valid URL"))
    }
}

/// Creates three sessions and the foreign keys (through `set`), revokes everyone, and checks
/// the count, the sessions and the foreign keys (through `exists`).
async fn revoke_everyone_spares_foreign_keys(
    store: Arc<dyn SessionStore>,
    set: impl Fn(&str),
    exists: impl Fn(&str) -> bool,
) {
    let user = UserId::parse("alice").expect("valid user id");
    let foreign = foreign_keys(&user);
    for key in &foreign {
        set(key);
    }
    let (sessions, tokens) = create_three(store.clone()).await;
    let removed = store
        .delete_all(
            sessiond_core::Timestamp::from_millis(0),
            sessiond_core::Origin::CLI,
        )
        .await
        .expect("revoke everyone");
    assert_eq!(removed, 3, "only sessiond's records are counted");
    for token in &tokens {
        assert!(
            sessions.authenticate(token, Origin::CLI).await.is_err(),
            "every session is gone"
        );
    }
    for key in &foreign {
        assert!(exists(key), "{key} is not sessiond's and survives");
    }
}

#[tokio::test]
async fn revoke_everyone_deletes_only_sessionds_keys_on_standalone() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&options(&server.url()))
        .await
        .expect("connect");
    revoke_everyone_spares_foreign_keys(
        Arc::new(store),
        |key| {
            server.cli(&["set", key, "other"]);
        },
        |key| server.cli(&["exists", key]).trim() == "1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_everyone_deletes_only_sessionds_keys_on_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .expect("start the cluster");
    let store = RedisStore::connect(&options(&cluster.url()))
        .await
        .expect("connect");
    let port = cluster.nodes[0].port();
    revoke_everyone_spares_foreign_keys(
        Arc::new(store),
        |key| {
            cli(port, &["-c", "set", key, "other"]);
        },
        |key| cli(port, &["-c", "exists", key]).trim() == "1",
    )
    .await;
}
